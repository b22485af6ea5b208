"""`layercast bench codec|service`: benchmarks that print figures."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("bench", help="benchmarks that print figures")
    bsub = b.add_subparsers(dest="bench_kind", metavar="WHAT", required=True)
    p = bsub.add_parser("codec", help="encode/decode speed vs CompressAI models; actual bytes vs estimate")
    p.add_argument("--configs", nargs="+", default=["tiny", "small", "paper"])
    p.add_argument("--trained", default=None, help="registry name of a trained model to add as 'trained'")
    p.add_argument("--repeat", type=int, default=5)
    p.set_defaults(func=_codec)


def _codec(args: argparse.Namespace) -> int:
    from layercast.bench.codec import run

    configs = list(args.configs) + (["trained"] if args.trained else [])
    run(configs, args.repeat, args.trained)
    return 0
