"""The one command-line runner: build a parser from ``register`` functions, configure logging,
run the chosen command and turn LayercastError into a one-line message and exit status 1.

Used by ``layercast`` itself and by the ``python -m layercast.commands.cloud`` style entry points.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Callable, Iterable

Register = Callable[[argparse._SubParsersAction], None]


def build_parser(registers: Iterable[Register], description: str | None = None, version: str | None = None):
    parser = argparse.ArgumentParser(prog="layercast", description=description)
    if version:
        parser.add_argument("--version", action="version", version=f"layercast {version}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for register in registers:
        register(sub)
    return parser


def run(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # compressai imports torch_geometric, which calls torch.jit.script at import time; torch then
    # warns on every command about a call that is not ours (pytest ignores it the same way)
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated", category=FutureWarning)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from layercast.shared.errors import LayercastError

    try:
        return int(args.func(args) or 0)
    except LayercastError as exc:
        print(f"layercast {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
