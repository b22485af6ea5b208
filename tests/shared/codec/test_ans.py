"""The compiled entropy coder (shared/codec/ans.py behind coder.py) against the same layout on
constriction's Python ANS (layercast.bench.constriction_coder): the same bytes for random steps over
many tables, escapes at both ends, empty steps, uniform symbols and the shipped models' real frames;
the same symbols from any payload, garbage included; bad input as CorruptBitstream / ValueError."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np
import pytest

from layercast.bench import constriction_coder as reference
from layercast.shared.codec import ans
from layercast.shared.codec.coder import Decoder, Encoder
from layercast.shared.codec.entropy import CdfTables, SteGaussianConditional
from layercast.shared.errors import CorruptBitstream

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def gaussian() -> CdfTables:
    g = SteGaussianConditional()
    g.update()
    return CdfTables.of(g)


def random_tables(rng: np.random.Generator, n_tables: int) -> CdfTables:
    """CompressAI-shaped tables (0 .. 2**16, last entry the escape) of 3 to 1500 entries: flat,
    peaked (one symbol with nearly all the mass, tails of frequency 1) and with zero frequencies."""
    rows, lengths = [], []
    for r in range(n_tables):
        n = int(rng.choice([2, 3, int(rng.integers(4, 40)), int(rng.integers(40, 1500))]))
        kind = r % 3
        if kind == 0:
            freq = rng.integers(1, 1000, n)
        elif kind == 1:
            freq = np.ones(n, np.int64)
            freq[rng.integers(0, n)] = 10**6
        else:
            freq = rng.integers(0, 5, n) * rng.integers(1, 3000, n)
            freq[-1] = max(freq[-1], 1)
        cdf = np.concatenate([[0], np.cumsum(freq)]).astype(np.float64)
        cdf = np.round(cdf / cdf[-1] * 65536).astype(np.int64)
        rows.append(cdf)
        lengths.append(n + 1)
    table = np.zeros((n_tables, max(lengths)), np.int64)
    for r, row in enumerate(rows):
        table[r, : row.size] = row
    offsets = -rng.integers(0, np.array(lengths) // 2 + 1)
    return CdfTables.from_arrays(table, np.array(lengths), offsets)


def random_step(rng: np.random.Generator, tables: CdfTables, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Symbols mostly inside their tables, some just outside either end, some far outside
    (every escape bit length up to 32, the int32 extremes included)."""
    idx = rng.integers(0, len(tables.cdfs), n)
    low = tables.offsets[idx].astype(np.int64)
    top = low + tables.lengths[idx] - 2  # the escape value, the first one above the table
    sym = low + (rng.random(n) * (top - low)).astype(np.int64)
    edge = rng.random(n) < 0.05
    sym[edge] = np.where(
        rng.random(edge.sum()) < 0.5,
        low[edge] - rng.integers(1, 3, edge.sum()),
        top[edge] + rng.integers(0, 2, edge.sum()),
    )
    far = rng.random(n) < 0.02
    bits = rng.integers(0, 31, far.sum())
    dist = (np.int64(1) << bits) + rng.integers(-1, 2, far.sum())
    sym[far] = np.where(rng.random(far.sum()) < 0.5, low[far] - 1 - dist, top[far] + dist)
    sym = np.clip(sym, -(2**31), 2**31 - 1)
    sym[rng.random(n) < 0.002] = rng.choice([-(2**31), 2**31 - 1])
    return sym.astype(np.int32), idx.astype(np.int32)


def code_both(ops) -> tuple[bytes, bytes]:
    """Run the same encoder calls on ours and on the reference; both payloads."""
    ours, ref = Encoder(), reference.Encoder()
    for op in ops:
        for enc in (ours, ref):
            if op[0] == "step":
                enc.encode(op[1], op[2], op[3])
            else:
                enc.encode_uniform(op[1], op[2])
    return ours.flush(), ref.flush()


def decode_ops(decoder, ops) -> list:
    return [decoder.decode(op[2], op[3]) if op[0] == "step" else decoder.decode_uniform(op[2]) for op in ops]


def random_ops(rng: np.random.Generator, tables: list[CdfTables], n_ops: int) -> list:
    ops = []
    for k in range(n_ops):
        if rng.random() < 0.2:
            size = int(rng.choice([2, 3, 33, int(rng.integers(2, 1 << 24)), (1 << 24) - 1]))
            ops.append(("uniform", int(rng.integers(0, size)), size))
            continue
        t = tables[int(rng.integers(0, len(tables)))]
        n = 0 if k % 7 == 3 else int(rng.choice([1, 5, int(rng.integers(1, 5000))]))
        ops.append(("step", *random_step(rng, t, n), t))
    return ops


def test_random_steps_give_constrictions_bytes_and_round_trip(gaussian):
    rng = np.random.default_rng(0)
    tables = [gaussian, random_tables(rng, 256), random_tables(rng, 7), random_tables(rng, 1)]
    for _ in range(25):
        ops = random_ops(rng, tables, int(rng.integers(1, 12)))
        ours, ref = code_both(ops)
        assert ours == ref
        got = decode_ops(Decoder(ours), ops)
        for op, value in zip(ops, got, strict=True):
            if op[0] == "step":
                np.testing.assert_array_equal(value, op[1])
            else:
                assert value == op[1]


def test_every_symbol_of_every_table_gives_constrictions_bytes(gaussian):
    """Each table's every value, in a step of its own and all mixed in one step: the quantised
    models are constriction's for every entry (its ``Categorical(perfect=False)``)."""
    rng = np.random.default_rng(1)
    for tables in (gaussian, random_tables(rng, 64)):
        steps = []
        for r in range(len(tables.cdfs)):
            values = np.arange(int(tables.lengths[r]) + 1, dtype=np.int32) + tables.offsets[r] - 1
            steps.append(("step", values, np.full(values.size, r, np.int32), tables))
        mixed = np.concatenate([s[1] for s in steps]), np.concatenate([s[2] for s in steps])
        perm = rng.permutation(mixed[0].size)
        steps.append(("step", mixed[0][perm], mixed[1][perm], tables))
        ours, ref = code_both(steps)
        assert ours == ref
        for op, got in zip(steps, decode_ops(Decoder(ours), steps), strict=True):
            np.testing.assert_array_equal(got, op[1])


def test_quantised_tables_are_constrictions_models(gaussian):
    """Each entry's 24-bit frequency, read back from constriction by coding the symbol alone onto
    a known state: the state grows by ``state // f << 24``, so f is the one that reproduces it."""
    import constriction

    rng = np.random.default_rng(2)
    tables = random_tables(rng, 16)
    for t in (gaussian, tables):
        q = t.quantised
        models = reference.models(t)
        for r in range(len(t.cdfs)):
            cdf = q.cdf[q.start[r] : q.start[r] + q.lengths[r]].astype(np.int64)
            assert cdf[0] == 0 and cdf[-1] == 1 << 24 and (np.diff(cdf) > 0).all()
            for s in rng.choice(cdf.size - 1, min(cdf.size - 1, 8), replace=False):
                coder = constriction.stream.stack.AnsCoder(
                    np.array([0x12345, 1], np.uint32)
                )  # state 2**32 + 0x12345
                coder.encode_reverse(np.array([s], np.int32), models[r])
                words = coder.get_compressed().astype(np.uint64)
                state = int(words[-1]) << 32 | int(words[-2])
                x, f = (1 << 32) + 0x12345, int(cdf[s + 1] - cdf[s])
                assert state == (x // f) << 24 | (int(cdf[s]) + x % f)


@pytest.mark.parametrize("seed", range(6))
def test_any_payload_decodes_to_constrictions_symbols(gaussian, seed):
    """Garbage, truncated and bit-flipped streams: both decoders give the same symbols (decoding
    past the end included), or ours raises CorruptBitstream where constriction refuses the words."""
    rng = np.random.default_rng(100 + seed)
    tables = [gaussian, random_tables(rng, 32)]
    ops = random_ops(rng, tables, 8)
    good, _ = code_both(ops)
    payloads = [
        rng.integers(0, 2**32, int(rng.integers(0, 40)), dtype=np.uint64).astype("<u4").tobytes(),
        good[: len(good) // 8 * 4],
        good[len(good) // 8 * 4 :],
        bytes(8),
        b"\xff" * 64,
    ]
    flipped = bytearray(good)
    if flipped:
        flipped[int(rng.integers(0, len(flipped)))] ^= 1 << int(rng.integers(0, 8))
    payloads.append(bytes(flipped))
    for data in payloads:
        try:
            ref_dec = reference.Decoder(data)
        except CorruptBitstream:
            with pytest.raises(CorruptBitstream):
                Decoder(data)
            continue
        want = decode_ops(ref_dec, ops)
        got = decode_ops(Decoder(data), ops)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


def test_bad_input_is_refused(gaussian):
    with pytest.raises(CorruptBitstream, match="whole 32-bit words"):
        Decoder(b"\x01\x02\x03")
    with pytest.raises(CorruptBitstream, match="zero word"):
        Decoder(bytes(4))
    dec = Decoder(b"\x01\x00\x00\x00" * 3)
    for bad in (np.array([0, 64]), np.array([-1, 0]), np.array([2**40])):
        with pytest.raises(CorruptBitstream, match="table index out of range"):
            dec.decode(bad, gaussian)
    with pytest.raises(CorruptBitstream):
        dec.decode(np.array([0.5]), gaussian)
    with pytest.raises(CorruptBitstream, match="uniform size"):
        dec.decode_uniform(1)
    enc = Encoder()
    with pytest.raises(ValueError, match="table index out of range"):
        enc.encode(np.zeros(2, np.int32), np.array([0, 64]), gaussian)
    with pytest.raises(ValueError, match="too far outside"):
        enc.encode(np.array([2**40]), np.array([0]), gaussian)
    with pytest.raises(ValueError, match="too far outside"):
        reference.Encoder().encode(np.array([2**40]), np.array([0]), gaussian)
    for value, size in ((0, 1), (3, 3), (-1, 5), (0, 1 << 24)):
        with pytest.raises(ValueError, match="not within"):
            enc.encode_uniform(value, size)
    assert enc.flush() == reference.Encoder().flush() == b""  # refused calls code nothing


def test_int64_and_strided_inputs_code_like_int32(gaussian):
    rng = np.random.default_rng(3)
    sym, idx = random_step(rng, gaussian, 3000)
    ours, ref = code_both([("step", sym, idx, gaussian)])
    enc = Encoder()
    enc.encode(sym.astype(np.int64)[::-1][::-1], np.stack([idx, idx])[0].astype(np.int16), gaussian)
    assert enc.flush() == ours == ref


class _Checked(Encoder):
    """The codec's encoder, also feeding constriction's: ``flush`` asserts the same bytes."""

    payloads = 0

    def __init__(self) -> None:
        super().__init__()
        self._ref = reference.Encoder()

    def encode(self, symbols, indexes, tables) -> None:
        super().encode(symbols, indexes, tables)
        self._ref.encode(symbols, indexes, tables)

    def encode_uniform(self, value: int, size: int) -> None:
        super().encode_uniform(value, size)
        self._ref.encode_uniform(value, size)

    def flush(self) -> bytes:
        data = super().flush()
        assert data == self._ref.flush()
        type(self).payloads += 1
        return data


def test_shipped_models_code_constrictions_bytes_on_real_frames():
    """det-tiny's both layers of rendered scenes, and depth-tiny's intra and P-frames (the skip
    mask's uniform count and binary models): every payload the codec writes is constriction's."""
    from PIL import Image

    from layercast.shared.codec import load_codec
    from layercast.shared.codec.video import VideoEncoder
    from layercast.shared.data.synth import SyntheticCamera

    img = np.asarray(Image.open(ROOT / "docs/img/synth_examples.png").convert("RGB"))
    with ExitStack() as stack:
        for mod in ("latent_codecs.hyperprior", "latent_codecs.context", "temporal"):
            stack.enter_context(mock.patch(f"layercast.shared.codec.{mod}.Encoder", _Checked))
        codec = load_codec("det-tiny", device="cpu")
        for frame in (img[:720], img[300:541, 17:380]):
            coded = codec.encode(frame)
            codec.decode_base(coded.base)  # DecodeMismatch if a symbol differed
        video = VideoEncoder(load_codec("depth-tiny", enhancement=None, device="cpu"), intra_period=20)
        cam = SyntheticCamera(5, 256, 192, 10.0)
        for i in range(4):
            video.encode(cam.frame(i).image, layers="base")
    assert _Checked.payloads >= 2 * 2 + 4


def test_bucket_lookup_bounds_every_quantile(gaussian):
    """The decoder's bucket entries (ans.Quantised.lut) hold or bound the symbol of every quantile."""
    rng = np.random.default_rng(4)
    for t in (gaussian, random_tables(rng, 32)):
        q = t.quantised
        for r in range(len(t.cdfs)):
            cdf = q.cdf[q.start[r] : q.start[r] + q.lengths[r]].astype(np.int64)
            quantiles = np.concatenate([cdf[:-1], cdf[1:] - 1, rng.integers(0, 1 << 24, 200)])
            want = np.searchsorted(cdf, quantiles, side="right") - 1
            entry = q.lut[r, quantiles >> ans.LUT_SHIFT]
            pure = entry >> np.uint64(63) == 1
            sym = (entry >> np.uint64(49)) & np.uint64(0x3FFF)
            np.testing.assert_array_equal(sym[pure], want[pure])
            np.testing.assert_array_equal((entry & np.uint64(ans.ONE - 1))[pure], cdf[want[pure]])
            first, end = entry & np.uint64(0xFFFFFFFF), entry >> np.uint64(32)
            assert ((first[~pure] <= want[~pure]) & (want[~pure] < end[~pure])).all()
