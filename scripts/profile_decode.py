"""Where a decode's thread CPU time goes, through the facade (docs/speed.md).

    .venv/bin/python scripts/profile_decode.py --size 1280x720 --calls 9

The shipped det-tiny, default runtime, 1 thread, the bench's frame. For the base decode and the
enhancement decode, the median over ``--calls`` calls (after 2 warm-ups) of: the integer networks'
chunked matrix products (``intfast._Products.run``: ``torch.mm`` / ``addmm_`` and their slices), their compiled
requantisation passes and heads, the ŷ scatter, the ANS decoder, g_s_e (enhancement), the rest
(gathers, allocations, Python and torch dispatch), the total, and the page faults per call; then
g_s_e stage by stage (ms, GFLOP counted by ``torch.utils.flop_counter``, GFLOPS).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections import defaultdict


def _timed(owner, name: str, key: str, acc: dict) -> None:
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            acc[key] += time.thread_time() - t

    setattr(owner, name, wrapper)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1280x720", help="WxH")
    p.add_argument("--calls", type=int, default=9)
    args = p.parse_args()
    w, h = (int(v) for v in args.size.split("x"))

    import torch

    torch.set_num_threads(1)
    from torch.utils.flop_counter import FlopCounterMode

    from layercast.bench.codec import _image
    from layercast.shared.codec import ans, intfast, intkernels, load_codec

    codec = load_codec("det-tiny", device="cpu")
    image = _image(h, w)
    frame = codec.encode(image)
    dec = codec.decode_base(frame.base)
    g_s_e = codec._g_s_e  # the placed module (channels_last), before it is timed
    acc: dict[str, float] = defaultdict(float)
    for name in ("requant", "head", "scatter"):
        _timed(intkernels, name, name, acc)
    _timed(ans, "decode_step", "ANS", acc)
    _timed(codec, "_g_s_e", "g_s_e", acc)
    _timed(intfast._Products, "run", "products", acc)
    calls = {
        "decode base": lambda: codec.decode_base(frame.base),
        "enhancement decode": lambda: codec.decode_enhancement(dec, frame.enhancement),
    }
    print(f"{w}x{h}, 1 thread, load average {os.getloadavg()[0]:.1f}")
    for label, fn in calls.items():
        fn()
        fn()
        rows: dict[str, list[float]] = defaultdict(list)
        for _ in range(args.calls):
            acc.clear()
            faults = resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
            t = time.thread_time()
            fn()
            total = time.thread_time() - t
            rows["page faults"].append(resource.getrusage(resource.RUSAGE_THREAD).ru_minflt - faults)
            for key, value in acc.items():
                rows[key].append(1000 * value)
            rows["rest"].append(1000 * (total - sum(acc.values())))
            rows["total"].append(1000 * total)
        cells = [f"{k} {statistics.median(v):.1f}" for k, v in rows.items() if k != "page faults"]
        print(f"{label} (ms): {', '.join(cells)}; page faults {statistics.median(rows['page faults']):.0f}")
    print("g_s_e stage by stage:")
    x = torch.randn(1, codec.enhancement.g_s.net[0].in_channels, *dec.y_hat.shape[2:])
    x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for name, stage in g_s_e.nhwc_module.net.named_children():
            with FlopCounterMode(display=False) as flops:
                y = stage(x)
            times = []
            for _ in range(args.calls):
                t = time.thread_time()
                stage(x)
                times.append(time.thread_time() - t)
            ms = 1000 * statistics.median(times)
            gflop = flops.get_total_flops() / 1e9
            print(
                f"  {name} {type(stage).__name__} -> {tuple(y.shape)}: {ms:.1f} ms, {gflop:.2f} GFLOP, {gflop / ms * 1000:.0f} GFLOPS"
            )
            x = y
    print(f"load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
