"""Bad bitstreams and images get typed errors with a message, before any large allocation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from layercast.shared.codec import bitstream
from layercast.shared.errors import (
    CorruptBitstream,
    DecodeMismatch,
    ImageTooLarge,
    InvalidImage,
    NotABitstream,
    TruncatedBitstream,
    UnknownModel,
    UnsupportedVersion,
)
from tests.conftest import make_untrained_codec, smooth_image


@pytest.fixture(scope="module")
def frame(untrained_codec):
    return untrained_codec.encode(smooth_image(np.random.default_rng(7), 80, 120))


def test_truncated(untrained_codec, frame):
    for n in (0, 1, 3, 10, bitstream.BASE_HEADER_SIZE - 1, bitstream.BASE_HEADER_SIZE, len(frame.base) - 1):
        with pytest.raises((TruncatedBitstream, NotABitstream)) as exc:
            untrained_codec.decode_base(frame.base[:n])
        assert str(exc.value)


def test_bit_flip_detected_by_crc(untrained_codec, frame):
    for pos in (bitstream.BASE_HEADER_SIZE + 1, len(frame.base) - 1, 20, 24):
        data = bytearray(frame.base)
        data[pos] ^= 0x10
        with pytest.raises(CorruptBitstream, match="CRC32"):
            untrained_codec.decode_base(bytes(data))


def test_foreign_file(untrained_codec):
    png = b"\x89PNG\r\n\x1a\n" + bytes(100)
    with pytest.raises(NotABitstream, match="magic"):
        untrained_codec.decode_base(png)


def test_trailing_bytes(untrained_codec, frame):
    with pytest.raises(CorruptBitstream, match="unexpected bytes"):
        untrained_codec.decode_base(frame.base + b"\x00")


def _repack(data: bytes, **changes) -> bytes:
    header = dataclasses.replace(bitstream.parse_header(data), **changes)
    return bitstream.pack(header, bitstream.payload(data))


def test_wrong_model_id(untrained_codec, frame):
    data = _repack(frame.base, model_id="00112233445566ff")
    with pytest.raises(UnknownModel, match="00112233445566ff"):
        untrained_codec.decode_base(data)


def test_wrong_version(untrained_codec, frame):
    data = bytearray(frame.base)
    data[2] = 9
    with pytest.raises(UnsupportedVersion, match="version 9"):
        untrained_codec.decode_base(bytes(data))


def test_version_2_rans_stream_refused_with_re_encode_hint(untrained_codec, frame):
    """Version 2 (the same header over CompressAI's rANS payload) is refused before decoding."""
    data = bytearray(frame.base)
    data[2] = 2
    with pytest.raises(UnsupportedVersion, match="version 2 .*reads 5.*re-encode"):
        untrained_codec.decode_base(bytes(data))


def test_version_1_refused_by_name(untrained_codec, frame):
    """A version-1 container (44-byte header, magic LCST) is recognised, not called foreign."""
    v1 = (
        b"LCST\x01\x01"
        + bytes.fromhex(untrained_codec.base_model_id)
        + bytes(30)
        + bitstream.payload(frame.base)
    )
    with pytest.raises(UnsupportedVersion, match="version 1 .*re-encode"):
        untrained_codec.decode_base(v1)


def test_absurd_dimensions_refused_from_header(untrained_codec, frame):
    data = _repack(frame.base, width=60000, height=60000)
    with pytest.raises(ImageTooLarge, match="60000x60000"):
        untrained_codec.decode_base(data)


def test_size_of_another_frame(untrained_codec, frame):
    """A header claiming another (valid) size makes the decoder expect another latent shape: the
    payload then fails to decode or its symbols CRC disagrees; never a silent wrong image."""
    for w, h in ((64, 64), (1000, 1000), (300, 200)):
        data = _repack(frame.base, width=w, height=h)
        with pytest.raises((CorruptBitstream, DecodeMismatch)):
            untrained_codec.decode_base(data)


def test_enhancement_given_as_base(untrained_codec, frame):
    with pytest.raises(CorruptBitstream, match="expected a base bitstream"):
        untrained_codec.decode_base(frame.enhancement)


def test_unknown_layer_kind(untrained_codec, frame):
    head = bytearray(frame.base[: bitstream.BASE_HEADER_SIZE - 4])
    head[3] = 7
    data = bitstream.seal(bytes(head), bitstream.payload(frame.base))
    with pytest.raises(CorruptBitstream, match="layer kind 7"):
        untrained_codec.decode_base(data)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((32, 32), np.uint8), "8-bit RGB"),
        (np.zeros((32, 32, 3), np.uint16), "uint16"),
        (np.zeros((32, 32, 4), np.uint8), "8-bit RGB"),
        (np.zeros((0, 32, 3), np.uint8), "empty"),
    ],
)
def test_bad_images(untrained_codec, image, message):
    with pytest.raises(InvalidImage, match=message):
        untrained_codec.encode(image)


def test_huge_image_refused_before_allocation():
    codec = make_untrained_codec(max_pixels=64 * 64)
    # a broadcast view: no 1e8-pixel buffer exists, and none may be made
    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (10000, 10000, 3))
    with pytest.raises(ImageTooLarge):
        codec.encode(huge)
