"""The coder's fast paths give exactly CompressAI's integers and bytes.

``SteGaussianConditional.build_indexes`` replaces CompressAI's 64-step Python loop with a binary
search, and ``CdfTables.select`` hands the rANS coder only the tables a step uses. Both must code
the very same bytes, or streams written before and after would not decode.
"""

from __future__ import annotations

import torch
from compressai.ans import BufferedRansEncoder, RansDecoder
from compressai.entropy_models import GaussianConditional

from layercast.shared.codec.entropy import CdfTables, SteGaussianConditional, scale_table


def _model() -> SteGaussianConditional:
    g = SteGaussianConditional()
    g.update()
    return g


def test_build_indexes_matches_compressai_including_the_table_levels_themselves():
    g = _model()
    levels = g.scale_table.double()
    scales = torch.cat(
        [
            torch.exp(torch.empty(5000, dtype=torch.float64).uniform_(-4, 7)),  # below, inside and above
            levels,  # exactly on each level: the <= comparison decides
            torch.nextafter(levels, levels + 1),
            torch.nextafter(levels, levels - 1),
            torch.tensor([0.0, -1.0, 1e9], dtype=torch.float64),
        ]
    ).reshape(1, 1, -1)
    for dtype in (torch.float64, torch.float32):
        s = scales.to(dtype)
        want = GaussianConditional.build_indexes(g, s)
        got = g.build_indexes(s)
        assert got.dtype == want.dtype and torch.equal(got, want), dtype


def test_selected_tables_code_the_same_bytes_as_all_tables():
    g = _model()
    t = CdfTables.of(g)
    assert len(t.cdfs) == len(scale_table()) and all(
        len(c) == n for c, n in zip(t.cdfs, t.lengths, strict=True)
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        n = int(torch.randint(1, 400, (1,), generator=gen))
        indexes = torch.randint(0, 64, (n,), generator=gen, dtype=torch.int32)
        if n % 3 == 0:
            indexes = indexes % 4  # few tables used: the common case on a small frame
        # symbols within and beyond each table's range (the coder's bypass path)
        symbols = (torch.randn(n, generator=gen) * 40).round().int().tolist()

        full, sel = BufferedRansEncoder(), BufferedRansEncoder()
        full.encode_with_indexes(symbols, indexes.tolist(), t.cdfs, t.lengths, t.offsets)
        sel.encode_with_indexes(symbols, *t.select(indexes))
        data = full.flush()
        assert sel.flush() == data

        dec = RansDecoder()
        dec.set_stream(data)
        assert dec.decode_stream(*t.select(indexes)) == symbols
