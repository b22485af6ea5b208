"""The layercast container: one self-describing byte string per layer of a frame.

All integers big-endian. Format version 1 (documented in docs/bitstream.md)::

    off size field
      0   4  magic            b"LCST"
      4   1  format version   1
      5   1  layer kind       1 = base, 2 = enhancement
      6   8  model id         first 8 bytes of the SHA-256 of the weights that coded this layer
     14   4  frame reference  enhancement: CRC32 of the whole base bitstream of the same frame; base: 0
     18   2  width            original image width, pixels (1..65535)
     20   2  height           original image height, pixels
     22   1  pad right        columns added to reach a multiple of the codec's stride
     23   1  pad bottom       rows added
     24   2  latent channels  M of ŷ
     26   2  latent height    rows of ŷ
     28   2  latent width     columns of ŷ
     30   2  hyper channels   channels of ẑ (ẑ is ŷ's size / 4, rounded up)
     32   4  payload length   bytes after the header
     36   4  symbols CRC32    CRC32 of every coded symbol in coding order (cross-machine determinism check)
     40   4  CRC32            over bytes 0..39 and the payload
     44      payload          one rANS stream: ẑ then ŷ (2 checkerboard steps per channel group)

``parse`` validates everything that can be checked without decoding and
before any allocation proportional to the claimed sizes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from layercast.shared.errors import (
    CorruptBitstream,
    ImageTooLarge,
    NotABitstream,
    TruncatedBitstream,
    UnsupportedVersion,
)

MAGIC = b"LCST"
FORMAT_VERSION = 1
_HEAD = struct.Struct(">4sBB8sIHHBBHHHHII")
_CRC = struct.Struct(">I")
HEADER_SIZE = _HEAD.size + _CRC.size  # 44
#: Default limit on decoded image size, checked from the header alone.
DEFAULT_MAX_PIXELS = 4096 * 4096


class LayerKind(IntEnum):
    BASE = 1
    ENHANCEMENT = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Header:
    kind: LayerKind
    model_id: str  # 16 hex characters
    frame_ref: int
    width: int
    height: int
    pad_right: int
    pad_bottom: int
    latent_shape: tuple[int, int, int]  # (M, h, w) of ŷ
    hyper_channels: int
    payload_length: int
    symbols_crc: int
    version: int = FORMAT_VERSION

    @property
    def layer(self) -> str:
        return self.kind.label

    @property
    def padded_size(self) -> tuple[int, int]:
        """(height, width) after padding."""
        return self.height + self.pad_bottom, self.width + self.pad_right

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def total_bytes(self) -> int:
        return HEADER_SIZE + self.payload_length

    @property
    def bpp(self) -> float:
        return 8.0 * self.total_bytes / self.pixels


def pack(header: Header, payload: bytes) -> bytes:
    if len(payload) != header.payload_length:
        raise ValueError("payload length does not match the header")
    head = _HEAD.pack(
        MAGIC,
        header.version,
        int(header.kind),
        bytes.fromhex(header.model_id),
        header.frame_ref,
        header.width,
        header.height,
        header.pad_right,
        header.pad_bottom,
        *header.latent_shape,
        header.hyper_channels,
        header.payload_length,
        header.symbols_crc,
    )
    crc = zlib.crc32(payload, zlib.crc32(head))
    return head + _CRC.pack(crc) + payload


def parse_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Parse and validate the header; checks sizes, lengths and the CRC but decodes nothing."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise NotABitstream(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < 4 or data[:4] != MAGIC:
        raise NotABitstream("not a layercast bitstream (bad magic; expected b'LCST')")
    if len(data) < HEADER_SIZE:
        raise TruncatedBitstream(f"bitstream truncated: {len(data)} bytes, the header alone is {HEADER_SIZE}")
    (_, version, kind, model_id, frame_ref, width, height, pad_r, pad_b, m, lh, lw, hc, plen, scrc) = (
        _HEAD.unpack_from(data)
    )
    if version != FORMAT_VERSION:
        raise UnsupportedVersion(
            f"bitstream format version {version} is not supported (this build reads {FORMAT_VERSION})"
        )
    try:
        kind = LayerKind(kind)
    except ValueError:
        raise CorruptBitstream(f"unknown layer kind {kind}") from None
    if width == 0 or height == 0:
        raise CorruptBitstream(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"bitstream claims a {width}x{height} image, above the limit of {max_pixels} pixels"
        )
    if len(data) < HEADER_SIZE + plen:
        raise TruncatedBitstream(
            f"bitstream truncated: payload has {len(data) - HEADER_SIZE} of {plen} bytes"
        )
    if len(data) > HEADER_SIZE + plen:
        raise CorruptBitstream(f"{len(data) - HEADER_SIZE - plen} unexpected bytes after the payload")
    (crc,) = _CRC.unpack_from(data, _HEAD.size)
    if zlib.crc32(data[HEADER_SIZE:], zlib.crc32(data[: _HEAD.size])) != crc:
        raise CorruptBitstream("bitstream CRC32 mismatch: the bytes were altered or truncated in transit")
    return Header(
        kind=kind,
        model_id=model_id.hex(),
        frame_ref=frame_ref,
        width=width,
        height=height,
        pad_right=pad_r,
        pad_bottom=pad_b,
        latent_shape=(m, lh, lw),
        hyper_channels=hc,
        payload_length=plen,
        symbols_crc=scrc,
        version=version,
    )


def payload(data: bytes) -> bytes:
    return bytes(data[HEADER_SIZE:])


def frame_ref_of(base_bitstream: bytes) -> int:
    """The reference an enhancement layer carries to its base layer."""
    return zlib.crc32(base_bitstream)
