"""The ``dacstyle`` command: one subcommand module per concern.

Each module in ``_COMMAND_MODULES`` provides ``register(subparsers)`` that adds
its subcommands with ``set_defaults(func=handler)``; ``handler(args) -> int``.
Errors of the project's tree are printed as one line (``--debug`` shows the
traceback) and exit with status 1.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import warnings
from typing import Sequence

from ..errors import DacstyleError

__all__ = ["main", "build_parser"]

_COMMAND_MODULES = ("core", "sif", "images", "containers", "competition", "runs")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand has its own --help)."""
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="dacstyle",
        description="Run benchmarks inside Apptainer/Singularity images and use them as local Python objects.",
        epilog="Run 'dacstyle COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"dacstyle {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in _COMMAND_MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dacstyle`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s", stream=sys.stderr)
    warnings.showwarning = _show_warning
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except DacstyleError as exc:
        if args.debug:
            raise
        print(f"dacstyle: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dacstyle: interrupted", file=sys.stderr)
        return 130


def _show_warning(message: Warning | str, category: type[Warning], *_args: object, **_kwargs: object) -> None:
    print(f"dacstyle: warning: {message}", file=sys.stderr)
