"""The 14-byte header of a predicted layer: checked without its reference, bound to it after."""

from __future__ import annotations

import struct
import zlib

import pytest

from layercast.shared.codec import bitstream
from layercast.shared.codec.bitstream import LayerKind
from layercast.shared.errors import (
    CorruptBitstream,
    ImageTooLarge,
    LayercastError,
    NotABitstream,
    ReferenceMismatch,
    TruncatedBitstream,
    UnsupportedVersion,
)

MODEL = "0123456789abcdef"
SYMBOLS = 0xDEADBEEF


def _intra(width: int = 256, height: int = 192, payload: bytes = b"intra payload words.") -> bytes:
    return bitstream.pack_layer(LayerKind.BASE, MODEL, width, height, payload, 0x11223344)


def _predicted(reference: bytes, payload: bytes = b"p-frame payload!") -> bytes:
    return bitstream.pack_predicted(zlib.crc32(reference), payload, SYMBOLS)


def test_the_header_is_14_bytes_and_round_trips():
    intra = _intra()
    p = _predicted(intra)
    assert bitstream.PREDICTED_HEADER_SIZE == 14 and len(p) == 14 + len(b"p-frame payload!")
    assert p[:4] == b"LC\x05\x03"
    assert struct.unpack(">IHI", p[4:14]) == (
        zlib.crc32(intra),
        SYMBOLS & 0xFFFF,
        zlib.crc32(p[14:], zlib.crc32(p[:10])),
    )
    h = bitstream.parse_header(p)
    assert (h.kind, h.version, h.frame_ref, h.symbols_crc) == (
        LayerKind.PREDICTED,
        5,
        zlib.crc32(intra),
        0xBEEF,
    )
    assert (h.payload_length, h.total_bytes, h.layer_ref) == (16, len(p), zlib.crc32(p))
    assert not h.bound and (h.width, h.height, h.model_id) == (0, 0, "")
    with pytest.raises(ValueError, match="bind"):
        h.bpp  # noqa: B018
    assert h.symbols_match(SYMBOLS) and h.symbols_match(0x0000BEEF) and not h.symbols_match(SYMBOLS ^ 1)
    assert bitstream.payload(p) == b"p-frame payload!"
    # intra and enhancement headers keep their 28 / 32 bytes
    assert len(intra) - 20 == bitstream.BASE_HEADER_SIZE == 28
    assert bitstream.ENHANCEMENT_HEADER_SIZE == 32


def test_a_predicted_header_binds_to_the_size_and_model_of_its_reference_chain():
    intra = _intra(640, 360)
    p1 = _predicted(intra)
    p2 = _predicted(p1, b"second")
    h0 = bitstream.parse_header(intra)
    h1 = bitstream.parse_header(p1).bind(h0)
    assert (h1.width, h1.height, h1.model_id, h1.bound) == (640, 360, MODEL, True)
    assert h1.bpp == 8 * len(p1) / (640 * 360)
    h2 = bitstream.parse_header(p2, reference=h1)  # a P-frame's reference may be a P-frame
    assert (h2.width, h2.height, h2.model_id, h2.frame_ref) == (640, 360, MODEL, h1.layer_ref)
    with pytest.raises(ImageTooLarge, match="reference is a 640x360"):
        bitstream.parse_header(p2, reference=h1, max_pixels=640 * 359)


def test_a_predicted_header_refuses_any_other_reference():
    intra, other = _intra(), _intra(payload=b"another frame's data")
    p = _predicted(intra)
    h = bitstream.parse_header(p)
    with pytest.raises(ReferenceMismatch, match=f"refers to base layer {zlib.crc32(intra):08x}"):
        h.bind(bitstream.parse_header(other))
    with pytest.raises(ReferenceMismatch):
        bitstream.parse_header(p, reference=bitstream.parse_header(other))
    with pytest.raises(ValueError, match="bound header of a base layer"):
        h.bind(bitstream.parse_header(_predicted(other)))  # an unbound reference says no size
    enh = bitstream.pack_layer(LayerKind.ENHANCEMENT, MODEL, 256, 192, b"e", 1, frame_ref=zlib.crc32(intra))
    with pytest.raises(ValueError, match="bound header of a base layer"):
        h.bind(bitstream.parse_header(enh))
    with pytest.raises(ValueError, match="its own size"):
        bitstream.parse_header(intra).bind(bitstream.parse_header(other))


def test_a_truncated_predicted_layer_is_refused():
    p = _predicted(_intra())
    for n in range(14):
        with pytest.raises((TruncatedBitstream, NotABitstream)):
            bitstream.parse_header(p[:n])
    # a shorter payload is the rest of the byte string: the CRC32 refuses it
    for n in (14, 15, len(p) - 1):
        with pytest.raises(CorruptBitstream, match="CRC32"):
            bitstream.parse_header(p[:n])
    with pytest.raises(CorruptBitstream, match="CRC32"):
        bitstream.parse_header(p + b"\x00")


def test_every_flipped_bit_of_a_predicted_layer_is_refused():
    p = _predicted(_intra())
    for pos in range(len(p)):
        for bit in range(8):
            data = bytearray(p)
            data[pos] ^= 1 << bit
            with pytest.raises(LayercastError) as exc:
                bitstream.parse_header(bytes(data))
            if pos >= 4:  # past magic, version and kind: the CRC32 catches it
                assert "CRC32" in str(exc.value)


@pytest.mark.parametrize("version", [3, 4])
def test_older_predicted_layers_are_refused_and_older_intra_layers_read(version):
    intra = _intra()
    head = bytearray(intra[:24])
    head[2] = version
    old_intra = bitstream.seal(bytes(head), bitstream.payload(intra))
    h = bitstream.parse_header(old_intra)
    assert (h.version, h.kind, h.width, h.height, h.model_id) == (version, LayerKind.BASE, 256, 192, MODEL)
    body = b"p-frame payload!"
    old_p = bitstream.seal(
        bitstream.FIELDS.pack(b"LC", version, 3, bytes.fromhex(MODEL), 256, 192, len(body), SYMBOLS)
        + struct.pack(">I", zlib.crc32(intra)),
        body,
    )
    with pytest.raises(UnsupportedVersion, match=f"version {version} predicted layer .*re-encode the video"):
        bitstream.parse_header(old_p)
