"""The layercast container: one self-describing byte string per layer of a frame.

All integers big-endian. Format version 4 (documented in docs/bitstream.md)::

    off size field
      0   2  magic            b"LC"
      2   1  format version   4 (3 is read for intra and enhancement layers)
      3   1  layer kind       1 = base (intra), 2 = enhancement, 3 = predicted base (P-frame)
      4   8  model id         first 8 bytes of the SHA-256 of the weights that coded this layer
     12   2  width            original image width, pixels (1..65535)
     14   2  height           original image height, pixels
     16   4  payload length   bytes after the header
     20   4  symbols CRC32    CRC32 of every coded symbol in coding order (cross-machine determinism check)
    (24   4  frame reference  enhancement: CRC32 of the whole base bitstream of the same frame;
                              predicted: CRC32 of the whole base bitstream of the previous frame)
  24/28   4  CRC32            over every header byte before it and the payload
  28/32      payload          one ANS stream (little-endian 32-bit words, shared/codec/coder.py):
                               ẑ, [predicted: the skip mask, shared/codec/skip.py], then ŷ
                               (2 checkerboard steps per channel group)

The header is 28 bytes for an intra base layer and 32 for an enhancement or a predicted layer.
Padding and the latent shape are not stored: the model named by the id fixes them for a given
image size. Version 3 differs only in its predicted layers (no skip mask): its intra and
enhancement layers are read, its predicted layers refused. Version 2 (the same header over CompressAI's rANS stream, no predicted layers) is
refused with ``UnsupportedVersion``; version 1
(``b"LCST"``, a 44-byte header that also carried them) is recognised and refused by name.

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

MAGIC = b"LC"
FORMAT_VERSION = 4
#: Older versions still read, and the layer kinds they are read for (the payload is unchanged).
READ_OLDER = {3: frozenset({1, 2})}
#: The magic of format version 1, which this build refuses with a clear message.
V1_MAGIC = b"LCST"
#: The fields every layer carries (before the enhancement's frame reference and the CRC32).
FIELDS = struct.Struct(">2sBB8sHHII")
_U32 = struct.Struct(">I")


class LayerKind(IntEnum):
    BASE = 1  # an intra base layer
    ENHANCEMENT = 2
    PREDICTED = 3  # a base layer coded against the previous frame's (a P-frame)

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def has_reference(self) -> bool:
        return self is not LayerKind.BASE

    @property
    def is_base(self) -> bool:
        """Whether this layer is a frame's base layer (intra or predicted)."""
        return self is not LayerKind.ENHANCEMENT

    @property
    def header_size(self) -> int:
        """Header bytes of this kind of layer: the fields, the frame reference if any, the CRC32."""
        return FIELDS.size + (_U32.size if self.has_reference else 0) + _U32.size


BASE_HEADER_SIZE = LayerKind.BASE.header_size  # 28
ENHANCEMENT_HEADER_SIZE = LayerKind.ENHANCEMENT.header_size  # 32
PREDICTED_HEADER_SIZE = LayerKind.PREDICTED.header_size  # 32
#: Default limit on decoded image size, checked from the header alone.
DEFAULT_MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class Header:
    kind: LayerKind
    model_id: str  # 16 hex characters
    frame_ref: int  # what the layer refers to (see LayerKind); 0 for an intra base layer (not stored)
    width: int
    height: int
    payload_length: int
    symbols_crc: int
    version: int = FORMAT_VERSION

    @property
    def layer(self) -> str:
        return self.kind.label

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def header_size(self) -> int:
        return self.kind.header_size

    @property
    def total_bytes(self) -> int:
        return self.header_size + self.payload_length

    @property
    def bpp(self) -> float:
        return 8.0 * self.total_bytes / self.pixels


@dataclass(frozen=True)
class Bitstream:
    """A layer whose header has been parsed and checked, with its bytes (header and payload):
    what the decoders take, so a header is parsed once however many hands the bytes pass through."""

    header: Header
    data: bytes

    @property
    def payload(self) -> bytes:
        return bytes(self.data[self.header.header_size :])


def pack(header: Header, payload: bytes) -> bytes:
    if len(payload) != header.payload_length:
        raise ValueError("payload length does not match the header")
    if header.kind is LayerKind.BASE and header.frame_ref:
        raise ValueError("an intra base layer has no frame reference")
    head = FIELDS.pack(
        MAGIC,
        header.version,
        int(header.kind),
        bytes.fromhex(header.model_id),
        header.width,
        header.height,
        header.payload_length,
        header.symbols_crc,
    )
    if header.kind.has_reference:
        head += _U32.pack(header.frame_ref)
    return seal(head, payload)


def pack_layer(
    kind: LayerKind,
    model_id: str,
    width: int,
    height: int,
    payload: bytes,
    symbols_crc: int,
    *,
    frame_ref: int = 0,
) -> bytes:
    """A layer's container: its header (built from these fields) and ``payload``."""
    header = Header(
        kind=kind,
        model_id=model_id,
        frame_ref=frame_ref,
        width=width,
        height=height,
        payload_length=len(payload),
        symbols_crc=symbols_crc,
    )
    return pack(header, payload)


def expect_kind(header: Header, kind: LayerKind) -> None:
    """Raise CorruptBitstream unless ``header`` is of a ``kind`` layer (``BASE``: intra or predicted)."""
    if header.kind is not kind and not (kind is LayerKind.BASE and header.kind.is_base):
        raise CorruptBitstream(f"expected a {kind.label} bitstream, got a {header.layer} bitstream")


def seal(head: bytes, payload: bytes) -> bytes:
    """Header bytes (without the CRC32), the CRC32 over them and the payload, the payload."""
    return head + _U32.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def parse_header(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Header:
    """Parse and validate the header; checks sizes, lengths and the CRC but decodes nothing."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise NotABitstream(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:4] == V1_MAGIC:
        raise UnsupportedVersion(
            f"bitstream format version 1 is not supported (this build reads {FORMAT_VERSION}); "
            "re-encode the image with this build"
        )
    if data[:2] != MAGIC:
        raise NotABitstream(f"not a layercast bitstream (bad magic; expected {MAGIC!r})")
    if len(data) < 4:
        raise TruncatedBitstream(
            f"bitstream truncated: {len(data)} bytes, the header alone is at least {BASE_HEADER_SIZE}"
        )
    version, kind = data[2], data[3]
    if version in READ_OLDER and kind == 3:
        raise UnsupportedVersion(
            f"a format version {version} predicted layer (P-frame) is not supported (this build reads "
            f"{FORMAT_VERSION}: P-frames carry a skip mask); re-encode the video with this build"
        )
    if version != FORMAT_VERSION and version not in READ_OLDER:
        hint = "; re-encode the image with this build" if version < FORMAT_VERSION else ""
        raise UnsupportedVersion(
            f"bitstream format version {version} is not supported (this build reads {FORMAT_VERSION}){hint}"
        )
    try:
        kind = LayerKind(kind)
    except ValueError:
        raise CorruptBitstream(f"unknown layer kind {kind}") from None
    size = kind.header_size
    if len(data) < size:
        raise TruncatedBitstream(
            f"bitstream truncated: {len(data)} bytes, the {kind.label} header alone is {size}"
        )
    (_, _, _, model_id, width, height, plen, scrc) = FIELDS.unpack_from(data)
    frame_ref = _U32.unpack_from(data, FIELDS.size)[0] if kind.has_reference else 0
    if width == 0 or height == 0:
        raise CorruptBitstream(f"invalid image size {width}x{height}")
    if width * height > max_pixels:
        raise ImageTooLarge(
            f"bitstream claims a {width}x{height} image, above the limit of {max_pixels} pixels"
        )
    if len(data) < size + plen:
        raise TruncatedBitstream(f"bitstream truncated: payload has {len(data) - size} of {plen} bytes")
    if len(data) > size + plen:
        raise CorruptBitstream(f"{len(data) - size - plen} unexpected bytes after the payload")
    (crc,) = _U32.unpack_from(data, size - _U32.size)
    if zlib.crc32(data[size:], zlib.crc32(data[: size - _U32.size])) != crc:
        raise CorruptBitstream("bitstream CRC32 mismatch: the bytes were altered or truncated in transit")
    return Header(
        kind=kind,
        model_id=model_id.hex(),
        frame_ref=frame_ref,
        width=width,
        height=height,
        payload_length=plen,
        symbols_crc=scrc,
        version=version,
    )


def header_size_of(data: bytes) -> int:
    """The header size of a well-formed container (its kind byte decides)."""
    return LayerKind(data[3]).header_size


def payload(data: bytes) -> bytes:
    return bytes(data[header_size_of(data) :])


def frame_ref_of(base_bitstream: bytes) -> int:
    """The reference an enhancement layer carries to its base layer, and a predicted frame to the
    previous frame's base layer (intra or predicted)."""
    return zlib.crc32(base_bitstream)
