"""The layercast container: one self-describing byte string per layer of a frame.

All integers big-endian. Format version 5 (documented in docs/bitstream.md). Intra base and
enhancement layers::

    off size field
      0   2  magic            b"LC"
      2   1  format version   5 (3 and 4 are read for these two kinds)
      3   1  layer kind       1 = base (intra), 2 = enhancement
      4   8  model id         first 8 bytes of the SHA-256 of the weights that coded this layer
     12   2  width            original image width, pixels (1..65535)
     14   2  height           original image height, pixels
     16   4  payload length   bytes after the header
     20   4  symbols CRC32    CRC32 of every coded symbol in coding order (cross-machine determinism check)
    (24   4  frame reference  enhancement: CRC32 of the whole base bitstream of the same frame)
  24/28   4  CRC32            over every header byte before it and the payload
  28/32      payload          one ANS stream (little-endian 32-bit words, shared/codec/coder.py):
                              ẑ, then ŷ (2 checkerboard steps per channel group)

A predicted base layer (a P-frame, kind 3) has a 14-byte header::

      0   2  magic            b"LC"
      2   1  format version   5
      3   1  layer kind       3
      4   4  frame reference  CRC32 of the whole base bitstream of the previous frame
      8   2  symbols check    low 16 bits of the CRC32 of every coded symbol
     10   4  CRC32            over the 10 bytes before it and the payload
     14      payload          the rest of the byte string: ẑ, the skip mask (shared/codec/skip.py), ŷ

It stores no model id, size or payload length: the reference it names fixes its image size and base
model (a decoder holds one reference per camera, and the chain starts at an intra frame), the
connection names the temporal model, and the payload is what follows the header. So a P-frame's
header is parsed in two steps: :func:`parse_header` checks its bytes (magic, version, kind, CRC32)
and gives an *unbound* header (``width == height == 0``, ``model_id == ""``);
:meth:`Header.bind` (or ``parse_header(data, reference=...)``) takes the size and model from the
header of the layer it names, refusing any other layer with ``ReferenceMismatch``.

Padding and the latent shape are not stored: the base model fixes them for a given image size.
Versions 3 and 4 differ only in their predicted layers: their intra and enhancement layers are
read, their predicted layers refused ("re-encode the video"). Version 2 (the same header over
CompressAI's rANS stream, no predicted layers) is refused with ``UnsupportedVersion``; version 1
(``b"LCST"``, a 44-byte header) is recognised and refused by name.

``parse_header`` validates everything that can be checked without decoding and
before any allocation proportional to the claimed sizes.
"""

from __future__ import annotations

import dataclasses
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from layercast.shared.errors import (
    CorruptBitstream,
    ImageTooLarge,
    NotABitstream,
    ReferenceMismatch,
    TruncatedBitstream,
    UnsupportedVersion,
)

MAGIC = b"LC"
FORMAT_VERSION = 5
#: Older versions still read, and the layer kinds they are read for (their header and payload are
#: those of this version for these kinds).
READ_OLDER = {3: frozenset({1, 2}), 4: frozenset({1, 2})}
#: The magic of format version 1, which this build refuses with a clear message.
V1_MAGIC = b"LCST"
#: The fields of an intra or enhancement layer (before the enhancement's frame reference and the CRC32).
FIELDS = struct.Struct(">2sBB8sHHII")
#: The fields of a predicted layer (before the CRC32): magic, version, kind, frame reference, symbols check.
PREDICTED_FIELDS = struct.Struct(">2sBBIH")
#: The bits of the symbols CRC32 a predicted layer keeps.
PREDICTED_SYMBOLS_MASK = 0xFFFF
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
        """Header bytes of this kind of layer (the CRC32 included)."""
        if self is LayerKind.PREDICTED:
            return PREDICTED_FIELDS.size + _U32.size
        return FIELDS.size + (_U32.size if self.has_reference else 0) + _U32.size


BASE_HEADER_SIZE = LayerKind.BASE.header_size  # 28
ENHANCEMENT_HEADER_SIZE = LayerKind.ENHANCEMENT.header_size  # 32
PREDICTED_HEADER_SIZE = LayerKind.PREDICTED.header_size  # 14
#: Default limit on decoded image size, checked from the header alone.
DEFAULT_MAX_PIXELS = 4096 * 4096


@dataclass(frozen=True)
class Header:
    kind: LayerKind
    model_id: str  # 16 hex characters; a predicted layer's is its reference's ("" until bound)
    frame_ref: int  # what the layer refers to (see LayerKind); 0 for an intra base layer (not stored)
    width: int  # a predicted layer's is its reference's (0 until bound)
    height: int
    payload_length: int
    symbols_crc: int  # a predicted layer keeps the low 16 bits
    version: int = FORMAT_VERSION
    #: The CRC32 of this layer's whole byte string, which names it (an enhancement layer's or the next
    #: P-frame's frame reference); set by :func:`parse_header`, 0 for a header not parsed from bytes.
    layer_ref: int = 0

    @property
    def layer(self) -> str:
        return self.kind.label

    @property
    def bound(self) -> bool:
        """Whether the size and model are known: always, except for a predicted layer not yet
        bound to its reference (:meth:`bind`)."""
        return self.width > 0

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
        if not self.bound:
            raise ValueError("a predicted layer's size is its reference's: bind the header first")
        return 8.0 * self.total_bytes / self.pixels

    def symbols_match(self, symbols_crc: int) -> bool:
        """Whether the CRC32 of the decoded symbols is the one the header carries (all of it, or
        for a predicted layer its low 16 bits)."""
        if self.kind is LayerKind.PREDICTED:
            symbols_crc &= PREDICTED_SYMBOLS_MASK
        return symbols_crc == self.symbols_crc

    def bind(self, reference: Header) -> Header:
        """This predicted layer's header with the size and model of ``reference``: the parsed
        header of the base layer it names (intra, or predicted and bound). Raises
        ReferenceMismatch when ``reference`` is not that layer."""
        if self.kind is not LayerKind.PREDICTED:
            raise ValueError(f"a {self.layer} layer carries its own size and model")
        if not reference.kind.is_base or not reference.bound or not reference.layer_ref:
            raise ValueError("the reference must be the parsed, bound header of a base layer")
        if reference.layer_ref != self.frame_ref:
            raise ReferenceMismatch(
                f"the predicted frame refers to base layer {self.frame_ref:08x}, "
                f"the reference is {reference.layer_ref:08x}: the sender must send an intra frame"
            )
        return dataclasses.replace(
            self, width=reference.width, height=reference.height, model_id=reference.model_id
        )


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
    """A layer's bytes. A predicted layer stores only its frame reference and the low 16 bits of
    ``symbols_crc`` (its model, size and payload length are not stored)."""
    if len(payload) != header.payload_length:
        raise ValueError("payload length does not match the header")
    if header.kind is LayerKind.BASE and header.frame_ref:
        raise ValueError("an intra base layer has no frame reference")
    if header.kind is LayerKind.PREDICTED:
        head = PREDICTED_FIELDS.pack(
            MAGIC,
            header.version,
            int(header.kind),
            header.frame_ref,
            header.symbols_crc & PREDICTED_SYMBOLS_MASK,
        )
        return seal(head, payload)
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


def pack_predicted(frame_ref: int, payload: bytes, symbols_crc: int) -> bytes:
    """A predicted layer's container: it names its reference, the rest follows from it."""
    return pack_layer(LayerKind.PREDICTED, "", 0, 0, payload, symbols_crc, frame_ref=frame_ref)


def is_predicted(data: bytes) -> bool:
    """Whether ``data`` is a predicted base layer: decodable only after the frame just before it."""
    return len(data) > 3 and data[:2] == MAGIC and data[3] == LayerKind.PREDICTED


def expect_kind(header: Header, kind: LayerKind) -> None:
    """Raise CorruptBitstream unless ``header`` is of a ``kind`` layer (``BASE``: intra or predicted)."""
    if header.kind is not kind and not (kind is LayerKind.BASE and header.kind.is_base):
        raise CorruptBitstream(f"expected a {kind.label} bitstream, got a {header.layer} bitstream")


def seal(head: bytes, payload: bytes) -> bytes:
    """Header bytes (without the CRC32), the CRC32 over them and the payload, the payload."""
    return head + _U32.pack(zlib.crc32(payload, zlib.crc32(head))) + payload


def parse_header(
    data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, reference: Header | None = None
) -> Header:
    """Parse and validate the header; checks sizes, lengths and the CRC but decodes nothing.

    A predicted layer's header comes back unbound (no size, no model), or, given ``reference``
    (the parsed header of the base layer it names), bound to it (:meth:`Header.bind`)."""
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
            f"bitstream truncated: {len(data)} bytes, the header alone is at least {PREDICTED_HEADER_SIZE}"
        )
    version, kind = data[2], data[3]
    if version in READ_OLDER and kind == LayerKind.PREDICTED:
        raise UnsupportedVersion(
            f"a format version {version} predicted layer (P-frame) is not supported (this build reads "
            f"{FORMAT_VERSION}: P-frames carry a 14-byte header); re-encode the video with this build"
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
    if kind is LayerKind.PREDICTED:
        header = _parse_predicted(data, version)
        return header if reference is None else _limit(header.bind(reference), max_pixels)
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
    _check_crc(data, size)
    return Header(
        kind=kind,
        model_id=model_id.hex(),
        frame_ref=frame_ref,
        width=width,
        height=height,
        payload_length=plen,
        symbols_crc=scrc,
        version=version,
        layer_ref=zlib.crc32(data),
    )


def _parse_predicted(data: bytes, version: int) -> Header:
    size = PREDICTED_HEADER_SIZE
    (_, _, _, frame_ref, check) = PREDICTED_FIELDS.unpack_from(data)
    _check_crc(data, size)
    return Header(
        kind=LayerKind.PREDICTED,
        model_id="",
        frame_ref=frame_ref,
        width=0,
        height=0,
        payload_length=len(data) - size,
        symbols_crc=check,
        version=version,
        layer_ref=zlib.crc32(data),
    )


def _check_crc(data: bytes, size: int) -> None:
    (crc,) = _U32.unpack_from(data, size - _U32.size)
    if zlib.crc32(data[size:], zlib.crc32(data[: size - _U32.size])) != crc:
        raise CorruptBitstream("bitstream CRC32 mismatch: the bytes were altered or truncated in transit")


def _limit(header: Header, max_pixels: int) -> Header:
    if header.pixels > max_pixels:
        raise ImageTooLarge(
            f"bitstream's reference is a {header.width}x{header.height} image, above the limit of "
            f"{max_pixels} pixels"
        )
    return header


def header_size_of(data: bytes) -> int:
    """The header size of a well-formed container (its kind byte decides)."""
    return LayerKind(data[3]).header_size


def payload(data: bytes) -> bytes:
    return bytes(data[header_size_of(data) :])


def frame_ref_of(base_bitstream: bytes) -> int:
    """The reference an enhancement layer carries to its base layer, and a predicted frame to the
    previous frame's base layer (intra or predicted)."""
    return zlib.crc32(base_bitstream)
