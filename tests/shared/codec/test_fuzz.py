"""Fuzz the parser and decoder: mutated, truncated and forged bitstreams end in a
typed error or a valid decode, never a crash, a hang (> 2 s of CPU time for one case) or unbounded
memory. CPU time, not wall time: a case that waits for a core on a loaded machine is not a hang.

The default suite runs 600 cases in a subprocess (so a crash in native code
fails the test instead of killing pytest): every pairing of frame (3 sizes), layer (base or
enhancement) and damage (5 kinds) recurs every 60 cases, so each is tried at least ten times;
LAYERCAST_FUZZ_CASES raises it. The nightly
run (10,000 cases, a new seed each night) is tests/fuzz/test_fuzz_bitstream.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

FUZZER = r"""
import dataclasses, json, resource, sys, time, zlib
import numpy as np
sys.path.insert(0, ROOT)
from tests.conftest import make_untrained_codec, smooth_image
from layercast.shared.codec import bitstream
from layercast.shared.errors import LayercastError

codec = make_untrained_codec()
rng = np.random.default_rng(SEED)
frames = [codec.encode(smooth_image(rng, int(h), int(w))) for h, w in [(64, 64), (96, 128), (37, 90)]]
decoded_bases = [codec.decode_base(f.base) for f in frames]
for f, b in zip(frames, decoded_bases):  # compile every decode kernel before the clock runs (a cold cache is no hang)
    codec.reconstruct(b, f.enhancement)
H = bitstream.BASE_HEADER_SIZE
stats = {"cases": 0, "errors": {}, "decoded": 0, "worst_s": 0.0}
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
for n in range(CASES):
    f = frames[n % len(frames)]
    data = bytearray(f.base if n % 4 else f.enhancement)
    mode = n % 5
    if mode == 0:  # flip bits anywhere
        for _ in range(rng.integers(1, 6)):
            data[rng.integers(0, len(data))] ^= 1 << int(rng.integers(0, 8))
    elif mode == 1:  # truncate
        data = data[: rng.integers(0, len(data))]
    elif mode == 2:  # overwrite header bytes with random values
        for _ in range(rng.integers(1, 4)):
            data[rng.integers(0, H)] = int(rng.integers(0, 256))
    elif mode == 3:  # forge: mutate the payload and fix the CRC so the entropy decoder sees garbage
        hdr = bitstream.parse_header(bytes(data))
        p = bytearray(bitstream.payload(bytes(data)))
        if rng.random() < 0.5 and p:
            for _ in range(rng.integers(1, 10)):
                p[rng.integers(0, len(p))] = int(rng.integers(0, 256))
        else:
            p = bytearray(rng.integers(0, 256, int(rng.integers(0, 3 * len(p) + 2)), dtype=np.uint8).tobytes())
        data = bytearray(bitstream.pack(dataclasses.replace(hdr, payload_length=len(p)), bytes(p)))
    else:  # random bytes with a valid magic
        data = bytearray(bitstream.MAGIC + bytes([bitstream.FORMAT_VERSION]) + rng.integers(0, 256, int(rng.integers(0, 80)), dtype=np.uint8).tobytes())
    t = time.process_time()
    try:
        if bitstream.parse_header(bytes(data), max_pixels=codec.max_pixels).layer == "enhancement":
            codec.reconstruct(decoded_bases[n % len(frames)], bytes(data))
        else:
            codec.decode_base(bytes(data))
        stats["decoded"] += 1
    except LayercastError as exc:
        stats["errors"][type(exc).__name__] = stats["errors"].get(type(exc).__name__, 0) + 1
        assert str(exc), "error without a message"
    stats["worst_s"] = max(stats["worst_s"], time.process_time() - t)
    stats["cases"] += 1
stats["rss_growth_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
print(json.dumps(stats))
"""


def run_fuzzer(cases: int, seed: int) -> dict:
    code = FUZZER.replace("ROOT", repr(str(ROOT))).replace("SEED", str(seed)).replace("CASES", str(cases))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60 + cases)
    assert proc.returncode == 0, f"fuzzer died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_fuzz_bitstreams():
    cases = int(os.environ.get("LAYERCAST_FUZZ_CASES", "600"))
    stats = run_fuzzer(cases, seed=20261125)
    print(stats)
    assert stats["cases"] == cases
    assert stats["worst_s"] < 2.0, stats
    assert stats["rss_growth_mb"] < 200, stats
    # every class of damage was seen and named
    for name in ("CorruptBitstream", "TruncatedBitstream"):
        assert stats["errors"].get(name, 0) > 0, stats
