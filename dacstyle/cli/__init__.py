"""The ``dacstyle`` command: one subcommand module per concern.

Each module in ``_COMMAND_MODULES`` provides ``register(subparsers)`` that adds
its subcommands with ``set_defaults(func=handler)``; ``handler(args) -> int``.
Bad input never ends in a traceback: a bad argument is one line and status 2;
an error of the project's tree, a ValueError or an OSError is one line and
status 1 (``--debug`` shows the traceback); output piped into a reader that
stops early (``| head``) ends quietly.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shlex
import sys
import warnings
from typing import NoReturn, Sequence

from ..errors import DacstyleError

__all__ = ["main", "build_parser"]

_COMMAND_MODULES = ("core", "sif", "images", "containers", "competition", "runs", "slurm", "sweep")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line, not the usage text."""

    def error(self, message: str) -> "NoReturn":
        """Print ``PROG: error: MESSAGE`` and a pointer to --help; exit with status 2."""
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand has its own --help)."""
    from .. import __version__

    parser = _Parser(
        prog="dacstyle",
        description="Run benchmarks inside Apptainer/Singularity images and use them as local Python objects.",
        epilog="Run 'dacstyle COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"dacstyle {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    subparsers = parser.add_subparsers(dest="subcommand", metavar="COMMAND")
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
    """Entry point of the ``dacstyle`` console script; returns the exit status."""
    try:
        code = _dispatch(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # a closed pipe is reported here, not at interpreter exit
        return code
    except BrokenPipeError:  # the reader (``| head``) has had enough
        _discard_stdout()
        return 128 + 13  # as if killed by SIGPIPE, like other tools in a pipe


def _dispatch(argv: list[str]) -> int:
    """Parse ``argv`` and run the subcommand; every error the user can cause becomes one line."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            _unrecognized(parser, args, argv, extra)
    except SystemExit as exc:  # --help, --version and argument errors
        return exc.code if isinstance(exc.code, int) else 2
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO, format="%(message)s", stream=sys.stderr)
    warnings.showwarning = _show_warning
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        raise
    except (DacstyleError, ValueError, OSError) as exc:
        if args.debug:
            raise
        print(f"dacstyle: error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dacstyle: interrupted", file=sys.stderr)
        return 130


def _unrecognized(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str],
                  extra: list[str]) -> None:
    """Report arguments no parser took, by the subcommand's parser; for ``exec``, say where ``--`` goes."""
    while True:  # down to the innermost subcommand that was chosen
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        chosen = action.choices.get(getattr(args, action.dest, None)) if action else None
        if chosen is None:
            break
        parser = chosen
    if parser.prog == "dacstyle exec" and args.image in argv:
        command = shlex.join(argv[argv.index(args.image) + 1:])
        parser.exit(2, f"dacstyle exec: error: the command has options of its own; put '--' before it: "
                       f"dacstyle exec [OPTIONS] {shlex.quote(args.image)} -- {command}\n")
    parser.error(f"unrecognized arguments: {shlex.join(extra)}")


def _one_line(exc: BaseException) -> str:
    """The message of ``exc`` as users need it: a file error names the file."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, DacstyleError):
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return str(exc) or type(exc).__name__


def _discard_stdout() -> None:
    """Point stdout at /dev/null so that nothing more is written to the closed pipe."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)


def _show_warning(message: Warning | str, category: type[Warning], *_args: object, **_kwargs: object) -> None:
    print(f"dacstyle: warning: {message}", file=sys.stderr)
