"""The `layercast` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``,
which adds a parser and sets ``func`` (called with the parsed arguments and
returning an exit code). ``main()`` only builds the parser and dispatches;
heavy imports happen inside the commands so ``layercast --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from layercast import __version__

#: Modules that each register one or more sub-commands.
COMMAND_MODULES = [
    "layercast.commands.codec",
    "layercast.commands.data",
    "layercast.commands.train",
    "layercast.commands.service",
    "layercast.commands.bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="layercast", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"layercast {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:  # a command group not built yet
            if exc.name != name:
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=[logging.WARNING, logging.INFO, logging.DEBUG][min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
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


if __name__ == "__main__":
    sys.exit(main())
