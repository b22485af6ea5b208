"""Hypothesis strategies for the fuzz harness: random and mutated layercast inputs.

Mutations start from valid inputs (real bitstreams and images of the shipped codec, well-formed
protobuf messages) and damage them at two levels:

* inside a field: a bitstream with flipped bits, cut short or extended, a forged header whose CRC
  still matches (so the checks after the CRC are reached: sizes up to 65535x65535, the wrong
  model id, a size whose latent shape the payload does not fit), a forged payload that only the
  entropy decoder can refuse;
  an image cut short or claiming 100000x100000 in a header whose CRC matches;
* on the wire: the serialized message bit-flipped, truncated, extended with unknown or malformed
  fields (bad UTF-8 in a string, a varint that never ends), or replaced by random bytes.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from hypothesis import strategies as st
from PIL import Image

from layercast.cloud.results.records import MAX_SEQUENCE
from layercast.shared.codec import bitstream
from layercast.shared.codec.api import EncodedFrame, ScalableCodec

T = TypeVar("T")
U64_MAX = (1 << 64) - 1
U32_MAX = (1 << 32) - 1

#: The container header's fields (see shared/codec/bitstream.py), so single fields can be forged.
HEAD = bitstream.FIELDS
#: Header field → (index in HEAD, largest value).
HEADER_FIELDS = {
    "version": (1, 0xFF),
    "kind": (2, 0xFF),
    "width": (4, 0xFFFF),
    "height": (5, 0xFFFF),
    "payload_length": (6, U32_MAX),
    "symbols_crc": (7, U32_MAX),
}


def header_size(data: bytes) -> int | None:
    """The header size a container's kind byte announces, or None for an unknown kind."""
    try:
        return bitstream.header_size_of(data)
    except (IndexError, ValueError):
        return None


def reseal(fields: Sequence[object], payload: bytes, frame_ref: bytes = b"") -> bytes:
    """A container with these header fields (and the enhancement's frame reference, if given) and
    this payload, with a CRC that matches."""
    return bitstream.seal(HEAD.pack(*fields) + frame_ref, payload)


def _refield(data: bytes, payload: bytes, **changes: int) -> bytes:
    size = header_size(data)
    assert size is not None, "not a well-formed container"
    fields = list(HEAD.unpack_from(data))
    for name, value in changes.items():
        fields[HEADER_FIELDS[name][0]] = value
    return reseal(fields, payload, data[HEAD.size : size - 4])


def forge_payload(data: bytes, payload: bytes) -> bytes:
    """``data``'s header with another payload (length and CRC fixed): only decoding can refuse it."""
    return _refield(data, payload, payload_length=len(payload))


def claim_size(data: bytes, width: int, height: int) -> bytes:
    """``data`` with a header claiming ``width`` x ``height`` pixels and a matching CRC."""
    return _refield(data, bitstream.payload(data), width=width, height=height)


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width`` x ``height`` (CRC fixed), with a tiny IDAT: a decompression bomb's header."""
    buf = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = 8 + 8  # signature, then length + type of the first chunk
    data[ihdr : ihdr + 8] = struct.pack(">II", width, height)
    data[ihdr + 13 : ihdr + 17] = struct.pack(">I", zlib.crc32(bytes(data[ihdr - 4 : ihdr + 13])))
    return bytes(data)


def smooth(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    small = rng.uniform(0, 255, size=(2, 2, 3)).astype(np.float32)
    img = np.asarray(Image.fromarray(small.astype(np.uint8)).resize((w, h), Image.BILINEAR), np.float32)
    return np.clip(img + rng.normal(0, 8, img.shape), 0, 255).astype(np.uint8)


def encode_image(arr: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    im = Image.fromarray(arr)
    if mode is not None:
        im = im.convert(mode)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


@dataclass(frozen=True)
class Samples:
    """Valid inputs of the server's codec that strategies start from."""

    frames: list[EncodedFrame]
    foreign_base: bytes  # a valid base bitstream of a model the server lacks
    images: list[bytes]  # readable PNG and JPEG images within the pixel limit, in several modes
    other_formats: list[bytes]  # images Pillow reads but the API does not take (GIF, BMP, TIFF, WebP)
    over_limit_image: bytes  # a real image above the pixel limit
    model_id: str
    enhancement_model_id: str

    @property
    def bases(self) -> list[bytes]:
        return [f.base for f in self.frames]


def build_samples(codec: ScalableCodec, foreign: ScalableCodec, max_pixels: int) -> Samples:
    rng = np.random.default_rng(20261125)
    sizes = [(32, 32), (48, 64), (16, 16), (64, 40), (24, 56), (64, 64), (8, 72), (40, 40)]
    frames = codec.encode_batch([smooth(rng, h, w) for h, w in sizes])
    foreign_base = foreign.encode_batch([smooth(rng, 32, 32)], layers="base")[0].base
    images = [
        encode_image(smooth(rng, 32, 32), "PNG"),
        encode_image(smooth(rng, 17, 45), "JPEG"),
        encode_image(smooth(rng, 1, 1), "PNG"),
        encode_image(smooth(rng, 20, 20), "PNG", "L"),
        encode_image(smooth(rng, 20, 20), "PNG", "RGBA"),
        encode_image(smooth(rng, 20, 20), "PNG", "I;16"),
        encode_image(smooth(rng, 20, 20), "PNG", "P"),
        encode_image(smooth(rng, 20, 20), "PNG", "1"),
        encode_image(smooth(rng, 12, 30), "JPEG", "CMYK"),
    ]
    other_formats = [encode_image(smooth(rng, 12, 30), fmt) for fmt in ("GIF", "BMP", "TIFF", "WEBP")]
    side = int(max_pixels**0.5) + 8
    return Samples(
        frames=frames,
        foreign_base=foreign_base,
        images=images,
        other_formats=other_formats,
        over_limit_image=encode_image(smooth(rng, side, side), "PNG"),
        model_id=codec.base_model_id,
        enhancement_model_id=codec.enhancement_model_id or "",
    )


def weighted(*options: tuple[int, st.SearchStrategy[T]]) -> st.SearchStrategy[T]:
    """One of ``options`` with the given integer weights (``st.one_of`` favours its first branches)."""
    index = st.sampled_from([i for i, (w, _) in enumerate(options) for _ in range(w)])
    return index.flatmap(lambda i: options[i][1])


def rarely(weight: int = 30) -> st.SearchStrategy[bool]:
    """True about once in ``weight`` draws (last in the list: hypothesis favours the first elements)."""
    return st.sampled_from([False] * (weight - 1) + [True])


# -- scalars ---------------------------------------------------------------------------------------

u32s = st.one_of(st.sampled_from([0, 1, 2, 5, 100, 501, 65535, U32_MAX]), st.integers(0, U32_MAX))
i64s = st.one_of(
    st.sampled_from([0, -1, 1, -(1 << 63), (1 << 63) - 1]), st.integers(-(1 << 63), (1 << 63) - 1)
)
#: Sequence numbers and cursors: small, the edges of the valid range, and above it (uint64 > int64).
u64s = st.one_of(
    st.sampled_from([0, 1, 2, 3, 7, MAX_SEQUENCE, MAX_SEQUENCE + 1, U64_MAX]),
    st.integers(0, 1000),
    st.integers(0, U64_MAX),
)
hex_ids = st.binary(min_size=8, max_size=8).map(bytes.hex)


def texts(known: Sequence[str] = ()) -> st.SearchStrategy[str]:
    """Names and ids: known ones, well-shaped unknown ones, empty, odd characters, long."""
    options = [
        st.just(""),
        st.text(max_size=40),
        st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=70),
        st.builds(
            lambda c, n: c * n, st.sampled_from(["a", "é", "\x00", "/", "🎥", "%s"]), st.integers(60, 4000)
        ),
    ]
    if known:
        options.insert(0, st.sampled_from(list(known)))
    return st.one_of(*options)


# -- bitstreams ------------------------------------------------------------------------------------


@dataclass(frozen=True, repr=False)
class Bits:
    """A bitstream to send and how it was made (``valid`` = an unmodified sample)."""

    how: str
    data: bytes

    def __repr__(self) -> str:
        head = self.data[:64].hex()
        return f"Bits({self.how!r}, {len(self.data)} bytes: {head}{'…' if len(self.data) > 64 else ''})"

    @property
    def valid(self) -> bool:
        return self.how == "valid"


@st.composite
def bitstreams(draw: st.DrawFn, samples: Samples, *, oversize: int = 0) -> Bits:
    """Valid, mutated, forged and random base bitstreams (``oversize``: a size above the frame limit)."""
    frame = draw(st.sampled_from(samples.frames))
    src = frame.base
    how = draw(
        st.sampled_from(
            [
                *["valid"] * 6,
                "enhancement",
                "foreign",
                "flip",
                "truncate",
                "extend",
                "header",
                "forge_header",
                "forge_payload",
                "huge_claim",
                "random",
                "magic_random",
                "empty",
                *(["oversize"] if oversize else []),
            ]
        )
    )
    data = bytearray(src)
    if how == "enhancement":
        data = bytearray(frame.enhancement)
    elif how == "foreign":
        data = bytearray(samples.foreign_base)
    elif how == "flip":
        for _ in range(draw(st.integers(1, 5))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif how == "header":  # raw header bytes overwritten (CRC now wrong or magic broken)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, bitstream.BASE_HEADER_SIZE - 1))] = draw(st.integers(0, 255))
    elif how == "forge_header":  # one field changed, CRC recomputed: the checks after the CRC must catch it
        fields = list(HEAD.unpack_from(src))
        name = draw(st.sampled_from([*HEADER_FIELDS, "model_id"]))
        if name == "model_id":
            fields[3] = draw(
                st.one_of(st.binary(min_size=8, max_size=8), st.just(bytes.fromhex(samples.model_id)))
            )
        else:
            index, top = HEADER_FIELDS[name]
            fields[index] = draw(st.one_of(st.sampled_from([0, 1, top]), st.integers(0, top)))
        data = bytearray(reseal(fields, bitstream.payload(src), src[HEAD.size : header_size(src) - 4]))
    elif (
        how == "forge_payload"
    ):  # header intact, payload replaced, CRC recomputed: the entropy decoder sees garbage
        data = bytearray(forge_payload(src, draw(st.binary(max_size=3 * len(src)))))
    elif how == "huge_claim":
        w, h = draw(st.sampled_from([(65535, 65535), (65535, 1), (1, 65535), (4097, 4096), (300, 300)]))
        data = bytearray(claim_size(src, w, h))
    elif how == "random":
        data = bytearray(draw(st.binary(max_size=200)))
    elif how == "magic_random":
        data = bytearray(bitstream.MAGIC + bytes([bitstream.FORMAT_VERSION]) + draw(st.binary(max_size=120)))
    elif how == "empty":
        data = bytearray()
    elif how == "oversize":
        data = bytearray(src + bytes(oversize + 1 - len(src)))
    if how != "valid" and bytes(data) == src:
        how = "valid"  # a mutation that changed nothing
    return Bits(how, bytes(data))


@st.composite
def images(draw: st.DrawFn, samples: Samples) -> tuple[str, bytes]:
    """Image files: readable ones, damaged ones, ones claiming huge sizes, random bytes."""
    src = draw(st.sampled_from(samples.images))
    how = draw(
        st.sampled_from(
            [
                "valid",
                "valid",
                "other_format",
                "truncate",
                "flip",
                "extend",
                "claim_huge",
                "over_limit",
                "random",
                "empty",
                "text",
            ]
        )
    )
    data = bytearray(src)
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        for _ in range(draw(st.integers(1, 6))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif how == "claim_huge":
        w, h = draw(st.sampled_from([(100_000, 100_000), (1 << 31, 1), (257, 256), (0, 5)]))
        data = bytearray(png_claiming(w, h))
    elif how == "other_format":
        data = bytearray(draw(st.sampled_from(samples.other_formats)))
    elif how == "over_limit":
        data = bytearray(samples.over_limit_image)
    elif how == "random":
        data = bytearray(draw(st.binary(max_size=300)))
    elif how == "empty":
        data = bytearray()
    elif how == "text":
        data = bytearray(draw(st.text(max_size=60)).encode())
    return how, bytes(data)


# -- wire-level mutation ---------------------------------------------------------------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


@st.composite
def wire_mutations(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` (a serialized message) damaged on the wire; the result may or may not still parse."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(
            st.sampled_from(
                ["flip", "truncate", "insert", "delete", "duplicate", "unknown_field", "bad_field", "random"]
            )
        )
        if op == "flip" and data:
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate" and data:
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif op == "insert":
            i = draw(st.integers(0, len(data)))
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and data:
            i = draw(st.integers(0, len(data) - 1))
            del data[i : i + draw(st.integers(1, 8))]
        elif op == "duplicate":
            data += bytes(data)
        elif op == "unknown_field":  # a well-formed field this schema does not have: must be ignored
            number = draw(st.integers(100, 536_870_911))
            data += _varint(number << 3 | 0) + _varint(draw(st.integers(0, U64_MAX)))
        elif op == "bad_field":  # a known field number with a wrong wire type, bad UTF-8 or a runaway varint
            number = draw(st.integers(1, 8))
            kind = draw(st.sampled_from(["utf8", "wiretype", "varint", "length"]))
            if kind == "utf8":
                bad = draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"ok\xfe"]))
                data += _varint(number << 3 | 2) + _varint(len(bad)) + bad
            elif kind == "wiretype":
                data += _varint(number << 3 | draw(st.sampled_from([1, 3, 4, 5, 6, 7]))) + bytes(8)
            elif kind == "varint":
                data += _varint(number << 3 | 0) + b"\xff" * 11
            else:  # a length running past the end
                data += _varint(number << 3 | 2) + _varint(draw(st.integers(1, 1 << 30)))
        elif op == "random":
            data = bytearray(draw(st.binary(max_size=120)))
    return bytes(data)


def maybe_mutated(messages: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """Serialized messages: mostly well-formed, some damaged on the wire, some random bytes."""
    serialized = messages.map(lambda m: m.SerializeToString())
    return st.one_of(
        serialized,
        serialized,
        serialized.flatmap(wire_mutations),
        st.binary(max_size=200),
    )


def mutate_bytes(data: bytes, seed: int) -> bytes:
    """``data`` (a container) damaged by 1-3 seeded operations, for inputs built when a case runs
    (an enhancement layer the test's fake camera sends back). Always differs from ``data``."""
    rng = np.random.default_rng(seed)
    out = bytearray(data)
    for _ in range(int(rng.integers(1, 4))):
        op = int(rng.integers(0, 5))
        if op == 0 and out:  # flip bits
            i = int(rng.integers(0, len(out)))
            out[i] ^= 1 << int(rng.integers(0, 8))
        elif op == 1 and out:  # truncate
            out = out[: int(rng.integers(0, len(out)))]
        elif op == 2:  # extend
            out += rng.integers(0, 256, int(rng.integers(1, 32)), dtype=np.uint8).tobytes()
        elif op == 3 and (size := header_size(out)) and len(out) >= size:  # one header byte, CRC recomputed
            head = bytearray(out[: size - 4])
            head[int(rng.integers(2, size - 4))] = int(rng.integers(0, 256))
            out = bytearray(bitstream.seal(bytes(head), bytes(out[size:])))
        elif (size := header_size(out)) and len(out) >= size:  # payload replaced, CRC recomputed
            payload = rng.integers(0, 256, int(rng.integers(0, 2 * len(out))), dtype=np.uint8).tobytes()
            out = bytearray(forge_payload(bytes(out), payload))
    if bytes(out) == data:
        out += b"\x00"
    return bytes(out)
