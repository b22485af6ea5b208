"""A/B of the facade calls between source trees of this repository, in one run.

    git archive main | tar -x -C /tmp/main     # another tree (weights included)
    .venv/bin/python scripts/ab_facade.py main=/tmp/main branch=. --rounds 2

Each round runs every tree in a fresh process, in turn (so load on a shared machine falls on all
of them alike): the shipped det-tiny, default runtime, 1 thread, the bench's 1280×720 frame; per
call the median of ``--calls`` calls after 2 warm-ups, wall and thread CPU time, and a digest of
the frame's bytes (equal digests: the trees write the same streams). The trees are imported
through this checkout's editable install (``pip install -e``), its package map pointed at each
tree in turn.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

CALLS = ("decode base (entropy path)", "encode base only", "enhancement decode")


def _worker(tree: str, calls: int) -> dict:
    import __editable___layercast_0_1_0_finder as finder  # the editable install's package map

    here = str(Path(__file__).resolve().parents[1])
    for name, path in finder.MAPPING.items():
        finder.MAPPING[name] = path.replace(here, tree)
    for name, paths in finder.NAMESPACES.items():
        finder.NAMESPACES[name] = [p.replace(here, tree) for p in paths]
    import torch

    torch.set_num_threads(1)
    import layercast.shared.codec as package
    from layercast.bench.codec import _image
    from layercast.shared.codec import load_codec

    assert package.__file__ is not None and package.__file__.startswith(tree), package.__file__
    codec = load_codec("det-tiny", device="cpu")
    image = _image(720, 1280)
    frame = codec.encode(image)
    dec = codec.decode_base(frame.base)
    fns = dict(
        zip(
            CALLS,
            (
                lambda: codec.decode_base(frame.base),
                lambda: codec.encode(image, layers="base"),
                lambda: codec.decode_enhancement(dec, frame.enhancement),
            ),
            strict=True,
        )
    )
    out: dict = {
        "load": os.getloadavg()[0],
        "digest": hashlib.sha256(frame.base + frame.enhancement).hexdigest()[:16],
    }
    for name, fn in fns.items():
        fn()
        fn()
        wall, cpu = [], []
        for _ in range(calls):
            t, c = time.perf_counter(), time.thread_time()
            fn()
            cpu.append(1000 * (time.thread_time() - c))
            wall.append(1000 * (time.perf_counter() - t))
        out[name] = [statistics.median(wall), statistics.median(cpu)]
    out["load_end"] = os.getloadavg()[0]
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trees", nargs="*", help="name=path of a source tree of this repository")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--calls", type=int, default=7)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker, args.calls)))
        return
    trees = dict(t.split("=", 1) for t in args.trees)
    runs: dict[str, list[dict]] = {name: [] for name in trees}
    for _ in range(args.rounds):
        for name, path in trees.items():
            tree = str(Path(path).resolve())
            cmd = [sys.executable, __file__, "--worker", tree, "--calls", str(args.calls)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[name].append(json.loads(res.stdout.strip().splitlines()[-1]))
    print(
        f"| 1280×720, 1 thread, det-tiny | {' | '.join(f'{n}, round {r + 1}' for r in range(args.rounds) for n in trees)} |"
    )
    print(f"|---|{'---:|' * (args.rounds * len(trees))}")
    for call in CALLS:
        cells = [
            f"{runs[n][r][call][0]:.0f} ms ({runs[n][r][call][1]:.0f} CPU)"
            for r in range(args.rounds)
            for n in trees
        ]
        print(f"| {call} | {' | '.join(cells)} |")
    loads = [
        f"{runs[n][r]['load']:.1f}–{runs[n][r]['load_end']:.1f}" for r in range(args.rounds) for n in trees
    ]
    print(f"| load average | {' | '.join(loads)} |")
    digests = {runs[n][r]["digest"] for r in range(args.rounds) for n in trees}
    print(
        f"\nstream digests: {', '.join(sorted(digests))} ({'the same bytes' if len(digests) == 1 else 'DIFFERENT bytes'})"
    )


if __name__ == "__main__":
    main()
