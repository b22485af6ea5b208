"""The bitstream parser/decoder fuzz at nightly scale (the default suite runs 600 cases in
tests/shared/codec/test_fuzz.py): mutated, truncated and forged bitstreams end in a typed error or
a valid decode, never a crash, a hang or unbounded memory. Each night draws a new seed (printed,
and settable with LAYERCAST_FUZZ_SEED to replay a night)."""

from __future__ import annotations

import os
import time

import pytest

from tests.fuzz.harness import nightly_cases, nightly_timeout
from tests.shared.codec.test_fuzz import run_fuzzer


@pytest.mark.nightly
@pytest.mark.timeout(nightly_timeout())
def test_fuzz_bitstreams_nightly() -> None:
    cases = nightly_cases()
    seed = int(os.environ.get("LAYERCAST_FUZZ_SEED", time.time_ns() % 1_000_000_007))
    t0 = time.perf_counter()
    stats = run_fuzzer(cases, seed=seed)
    print(f"\nFUZZ bitstreams seed={seed} {stats} in {time.perf_counter() - t0:.1f} s")
    assert stats["cases"] == cases
    assert stats["worst_s"] < 2.0, stats
    assert stats["rss_growth_mb"] < 200, stats
    for name in ("CorruptBitstream", "TruncatedBitstream", "DecodeMismatch"):
        assert stats["errors"].get(name, 0) > 0, stats
