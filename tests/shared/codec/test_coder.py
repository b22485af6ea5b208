"""The ANS entropy coder (shared/codec/coder.py): exact round trips, escapes, rate, bad input,
and bit-exact images through the shipped models at any thread count and batch size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from compressai.ans import BufferedRansEncoder
from PIL import Image

from layercast.shared.codec import load_codec
from layercast.shared.codec.coder import Decoder, Encoder
from layercast.shared.codec.entropy import CdfTables, SteGaussianConditional
from layercast.shared.errors import CorruptBitstream

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def tables() -> CdfTables:
    g = SteGaussianConditional()
    g.update()
    return CdfTables.of(g)


def _steps(rng: np.random.Generator, tables: CdfTables, n_steps: int = 6):
    """Steps of (symbols, indexes) shaped like a codec's: symbols follow each table's scale, plus
    values far outside every table (the escape path) and empty steps."""
    steps = []
    for k in range(n_steps):
        n = 0 if k == 2 else int(rng.integers(1, 3000))
        indexes = rng.integers(0, len(tables.cdfs), n).astype(np.int32)
        scale = np.exp(np.linspace(np.log(0.11), np.log(256), 64))[indexes]
        symbols = np.round(rng.normal(0, 1, n) * scale).astype(np.int64)
        far = rng.random(n) < 0.02
        symbols[far] = rng.choice([-(2**30), -70_000, -5000, 5000, 65_537, 2**30 - 1], far.sum())
        steps.append((symbols.astype(np.int32), indexes))
    return steps


def test_round_trip_symbol_for_symbol_including_escapes_and_empty_steps(tables):
    rng = np.random.default_rng(0)
    for _ in range(5):
        steps = _steps(rng, tables)
        enc = Encoder()
        for symbols, indexes in steps:
            enc.encode(symbols, indexes, tables)
        data = enc.flush()
        dec = Decoder(data)
        for symbols, indexes in steps:
            np.testing.assert_array_equal(dec.decode(indexes, tables), symbols)


def test_every_escape_bit_length_round_trips(tables):
    """Values just below/above each power of two, on both sides of a table."""
    idx = 10
    top = int(tables.lengths[idx]) - 2 + int(tables.offsets[idx])
    low = int(tables.offsets[idx])
    dist = np.array([(1 << b) + d for b in range(31) for d in (-1, 0, 1) if (1 << b) + d >= 0])
    symbols = np.concatenate([low - 1 - dist // 2, top + dist // 2]).astype(np.int64)
    symbols = symbols[(symbols >= -(2**31)) & (symbols < 2**31)].astype(np.int32)
    indexes = np.full(symbols.shape, idx, dtype=np.int32)
    enc = Encoder()
    enc.encode(symbols, indexes, tables)
    np.testing.assert_array_equal(Decoder(enc.flush()).decode(indexes, tables), symbols)


def test_rate_matches_compressai_rans_on_the_same_symbols(tables):
    """Same tables, same symbols: the ANS payload is within 1 % of CompressAI's rANS."""
    rng = np.random.default_rng(1)
    indexes = rng.integers(0, 64, 50_000).astype(np.int32)
    scale = np.exp(np.linspace(np.log(0.11), np.log(256), 64))[indexes]
    symbols = np.round(rng.normal(0, 1, indexes.size) * scale).astype(np.int32)
    enc = Encoder()
    enc.encode(symbols, indexes, tables)
    ours = len(enc.flush())
    ref = BufferedRansEncoder()
    ref.encode_with_indexes(symbols.tolist(), *tables.select(indexes))
    theirs = len(ref.flush())
    assert abs(ours - theirs) <= 0.01 * theirs, (ours, theirs)


@pytest.mark.parametrize("data", [b"", b"\x01\x02\x03", bytes(8), b"\xff" * 64])
def test_garbage_is_a_corrupt_bitstream_or_wrong_symbols(tables, data):
    """Never another exception type: bad lengths and exhausted streams raise CorruptBitstream;
    a decodable garbage stream yields symbols (which the container's symbol CRC rejects)."""
    indexes = np.arange(64, dtype=np.int32).repeat(20)
    try:
        out = Decoder(data).decode(indexes, tables)
    except CorruptBitstream:
        return
    assert out.shape == indexes.shape and out.dtype == np.int32


def test_symbols_and_indexes_must_pair_up(tables):
    with pytest.raises(ValueError, match="one table index per symbol"):
        Encoder().encode(np.zeros(3, np.int32), np.zeros(2, np.int32), tables)


def _real_frames() -> list[np.ndarray]:
    """Rendered scenes of the synthetic data set (docs/img): 1142×720 and an odd size."""
    img = np.asarray(Image.open(ROOT / "docs/img/synth_examples.png").convert("RGB"))
    return [img[:720], img[300:541, 17:380]]


def test_shipped_models_round_trip_real_images_bit_exactly():
    codec = load_codec("det-tiny", device="cpu")
    for img in _real_frames():
        frame = codec.encode(img)
        x = codec._pad(codec._to_tensor(img)[None])
        with torch.no_grad():
            enc = codec.base.latent_codec.compress(codec.base.g_a(x))
        dec = codec.decode_base(frame.base)  # raises DecodeMismatch if a symbol differed
        assert torch.equal(dec.y_hat, enc["y_hat"])
        rec = codec.reconstruct(dec, frame.enhancement)
        assert rec.shape == img.shape
        err = np.abs(rec.astype(np.float64) - img).mean()
        assert err < 20, err  # a picture, not garbage


def test_bytes_identical_across_threads_and_batch_sizes():
    codec = load_codec("det-tiny", device="cpu")
    frames = [f[:192, :256] for f in _real_frames()] * 2
    frames[2] = frames[2][::-1].copy()
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = [codec.encode(f) for f in frames]
        torch.set_num_threads(2)
        batched = codec.encode_batch(frames)
        decoded = codec.decode_base_batch([f.base for f in batched])
        torch.set_num_threads(1)
        single = [codec.decode_base(f.base) for f in one]
    finally:
        torch.set_num_threads(before)
    assert [(f.base, f.enhancement) for f in one] == [(f.base, f.enhancement) for f in batched]
    for a, b in zip(decoded, single, strict=True):
        assert torch.equal(a.y_hat, b.y_hat)
