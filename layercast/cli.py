"""The `layercast` command line.

Each sub-command lives in its own module exposing ``register(subparsers)``,
which adds a parser and sets ``func`` (called with the parsed arguments and
returning an exit code). ``main()`` only builds the parser and dispatches;
heavy imports happen inside the commands so ``layercast --help`` is instant.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from layercast import __version__
from layercast.shared.cli import build_parser as build_parser_from
from layercast.shared.cli import run

#: Modules that each register one or more sub-commands.
COMMAND_MODULES = [
    "layercast.commands.codec",
    "layercast.commands.data",
    "layercast.commands.train",
    "layercast.commands.service",
    "layercast.commands.bench",
    "layercast.commands.certs",
]


def _registers():
    for name in COMMAND_MODULES:
        yield importlib.import_module(name).register


def build_parser() -> argparse.ArgumentParser:
    return build_parser_from(_registers(), description=__doc__.splitlines()[0], version=__version__)


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
