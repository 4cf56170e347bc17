"""``dacstyle exec``, ``dacstyle build`` and ``dacstyle recipe convert``: images by hand.

``exec`` runs any command inside an image with a runtime's isolation (the same
sandbox the server gets), for users and for debugging images. ``build`` drives
``apptainer build`` with an argv list; ``recipe convert`` turns a Dockerfile into
an Apptainer definition file with spython's converter.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ContainerError, RuntimeUnavailableError

if TYPE_CHECKING:
    from ..runtimes import Bind, Handle

__all__ = ["register", "convert_dockerfile", "docker_runscript"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``exec``, ``build`` and ``recipe`` subcommands."""
    p = subparsers.add_parser(
        "exec", help="run a command inside an image (like 'apptainer exec')",
        description="Run CMD inside IMAGE with the chosen runtime's isolation: the same read-only image, "
                    "private /tmp, cleared environment and binds the benchmark server gets. stdin, stdout "
                    "and stderr are passed through; the exit status is CMD's.",
        epilog="examples:\n"
               "  dacstyle exec bench.sif -- python3 -c 'import dacstyle; print(dacstyle.__version__)'\n"
               "  dacstyle exec --runtime bwrap --bind ./data:/data --env OMP_NUM_THREADS=1 bench.sif -- ls /data\n"
               "Binds are read-only unless they end in ':rw' (Apptainer's own default is read-write).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runtime", default=None, metavar="R",
                   help="auto (default: the configured runtime), apptainer, singularity, bwrap or process")
    p.add_argument("--bind", action="append", default=[], metavar="SRC:DST[:ro|rw]", type=_bind,
                   help="make a host path visible inside (read-only unless :rw); repeatable")
    p.add_argument("--env", action="append", default=[], metavar="K=V", type=_env_item,
                   help="set a variable inside (visible in 'ps': never a secret); repeatable")
    p.add_argument("--gpu", action="store_true", help="make NVIDIA GPUs visible (apptainer --nv)")
    p.add_argument("image", metavar="IMAGE", help="a .sif path, URL or catalogue identifier")
    p.add_argument("command", nargs="+", metavar="CMD", help="the command and its arguments, after '--'")
    p.set_defaults(func=_exec)

    p = subparsers.add_parser(
        "build", help="build a SIF image from an Apptainer definition file (needs Apptainer)",
        description="Run 'apptainer build OUT.sif RECIPE' (or singularity's). Paths in the recipe's %files "
                    "are relative to the current directory. Without Apptainer, 'dacstyle pack --from-env "
                    "OUT.sif' packs the running Python environment instead.",
        epilog="example:\n  dacstyle build container/recipes/benchmark.def benchmark.sif",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", metavar="RECIPE", type=Path, help="the definition file (.def)")
    p.add_argument("out", metavar="OUT.sif", type=Path, help="where to write the image")
    p.add_argument("--fakeroot", action=argparse.BooleanOptionalAction, default=None,
                   help="build as a fake root user (default: when not running as root)")
    p.add_argument("--force", action="store_true", help="overwrite OUT.sif if it exists")
    p.set_defaults(func=_build)

    p = subparsers.add_parser("recipe", help="work with definition files",
                              description="Work with Apptainer definition files.")
    actions = p.add_subparsers(dest="recipe_command", metavar="ACTION", required=True)
    p = actions.add_parser(
        "convert", help="convert a Dockerfile into an Apptainer definition file",
        description="Translate a Dockerfile into an Apptainer definition file with spython: FROM becomes the "
                    "header, COPY/ADD %files, RUN %post, ENV %environment, LABEL %labels and "
                    "ENTRYPOINT/CMD %runscript (run as Docker runs them). Review the result before building.")
    p.add_argument("dockerfile", metavar="DOCKERFILE", type=Path, help="the Dockerfile to read")
    p.add_argument("-o", "--output", metavar="OUT.def", type=Path, help="write here instead of stdout")
    p.set_defaults(func=_convert)


def _bind(text: str) -> "Bind":
    from ..runtimes import Bind

    try:
        return Bind.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _env_item(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not K=V")
    return key, value


# -- exec ------------------------------------------------------------------------------------

def _exec(args: argparse.Namespace) -> int:
    from ..config import config
    from ..runtimes import LaunchSpec, get_runtime
    from ..runtimes.serverdir import ServerDir

    runtime = get_runtime(args.runtime or config.runtime)
    image = Path(args.image)  # unresolved for 'process', which only warns that it ignores it
    if runtime.needs_image:
        from ..images import resolve_image

        image = resolve_image(args.image)
    folder = ServerDir.create()
    spec = LaunchSpec(server_dir=folder, image=image, binds=list(args.bind), env=dict(args.env), gpu=args.gpu)
    try:  # the one launch path: recorded for 'dacstyle cleanup', reaped if this process dies
        handle = runtime.launch(spec, list(args.command), session=False)
    except BaseException:
        folder.remove()
        raise
    try:
        code = _wait(handle)
    finally:
        handle.stop()
    return 128 - code if code < 0 else code


def _wait(handle: "Handle", grace: float = 10.0) -> int:
    """Wait for the command; on Ctrl-C (which it got too) give it ``grace`` seconds, then stop it."""
    try:
        code = handle.wait(None)
    except KeyboardInterrupt:
        code = handle.wait(grace)
        if code is None:
            handle.stop(grace)
            code = handle.wait(0)
    return code if code is not None else 1


# -- build -----------------------------------------------------------------------------------

def _build(args: argparse.Namespace) -> int:
    from ..runtimes.apptainer import find_binary

    binary = find_binary()
    if binary is None:
        raise RuntimeUnavailableError(
            "building from a recipe needs Apptainer ('apptainer' or 'singularity' on PATH), which is not "
            f"installed here; pack the running Python environment instead: dacstyle pack --from-env {args.out}")
    if not args.recipe.is_file():
        raise ContainerError(f"recipe {args.recipe} does not exist")
    if args.out.exists() and not args.force:
        raise ContainerError(f"{args.out} exists; pass --force to overwrite it")
    fakeroot = args.fakeroot if args.fakeroot is not None else os.geteuid() != 0
    argv = [binary, "build", *(["--fakeroot"] if fakeroot else []), *(["--force"] if args.force else []),
            str(args.out), str(args.recipe)]
    print(f"dacstyle: running {' '.join(argv)}", file=sys.stderr)
    code = subprocess.run(argv, check=False).returncode
    if code == 0:
        print(f"built {args.out}; record it in the cache with: dacstyle images add {args.out}", file=sys.stderr)
    return code


# -- recipe convert --------------------------------------------------------------------------

def convert_dockerfile(dockerfile: Path) -> str:
    """The Apptainer definition file spython writes for ``dockerfile``, with a runscript that works.

    spython copies ``LABEL a=1 b="x y"`` into %labels as it stands, which Apptainer
    reads as one key ``a=1`` with the value ``b="x y"``; such lines are rewritten as
    one ``key value`` line per label first. Its runscript puts ``/bin/bash`` before a
    lone CMD and joins exec-form words unquoted; :func:`docker_runscript` replaces it.
    A single-stage result loses spython's ``Stage: spython-base`` line (spython's own
    parser cannot read it back).
    """
    from spython.main.parse.parsers import DockerParser
    from spython.main.parse.writers import SingularityWriter

    class Writer(SingularityWriter):
        def _create_runscript(self, default: str = "", force: bool = False) -> str:
            recipe = self.recipe[self.stage]
            return docker_runscript(recipe.entrypoint, recipe.cmd) or _NO_RUNSCRIPT

    if not dockerfile.is_file():
        raise ContainerError(f"Dockerfile {dockerfile} {'is not a file' if dockerfile.exists() else 'does not exist'}")
    try:
        recipes = DockerParser(str(dockerfile)).recipe
    except UnicodeDecodeError as exc:
        raise ContainerError(f"{dockerfile} is not a text file: {exc.reason}") from exc
    if not recipes or any(recipe.fromHeader is None for recipe in recipes.values()):
        raise ContainerError(f"{dockerfile} has no FROM line; is it a Dockerfile?")
    for recipe in recipes.values():
        recipe.labels = [[line] for group in recipe.labels for entry in group for line in _label_lines(entry)]
    text = Writer(recipes).convert()
    if len(recipes) == 1:
        text = text.replace(f"\nStage: {next(iter(recipes))}\n", "\n", 1)
    return _drop_sections(text, _NO_RUNSCRIPT)


_NO_RUNSCRIPT = "# (no ENTRYPOINT or CMD)"


def docker_runscript(entrypoint: list[str] | str | None, cmd: list[str] | str | None) -> str | None:
    """A runscript that runs what ``docker run IMAGE [ARGS]`` runs, or None when neither is set.

    Exec-form words are quoted; a shell-form string runs with ``/bin/sh -c``; the
    run's arguments replace CMD, as in Docker. A shell-form ENTRYPOINT ignores
    CMD and the arguments, as in Docker.
    """
    def words(value: list[str] | str) -> list[str]:
        return [str(word) for word in value] if isinstance(value, list) else ["/bin/sh", "-c", value]

    if isinstance(entrypoint, str) and entrypoint.strip():
        return f"exec {shlex.join(words(entrypoint))}"
    lines = [f'if [ "$#" -eq 0 ]; then set -- {shlex.join(words(cmd))}; fi'] if cmd else []
    if entrypoint:
        return "\n".join([*lines, f'exec {shlex.join(words(entrypoint))} "$@"'])
    return "\n".join([*lines, 'exec "$@"']) if lines else None


def _drop_sections(text: str, marker: str) -> str:
    """``text`` without the %sections whose body holds ``marker`` (Apptainer then keeps the base image's)."""
    sections: list[list[str]] = [[]]
    for line in text.splitlines():
        if line.startswith("%"):
            sections.append([])
        sections[-1].append(line)
    return "\n".join(line for section in sections if marker not in section for line in section) + "\n"


def _label_lines(entry: str) -> list[str]:
    """``a=1 b="x y"`` -> ``["a 1", "b x y"]``; the legacy ``key value`` form stays."""
    try:
        tokens = shlex.split(entry)
    except ValueError:
        return [entry]
    if not tokens or not all("=" in token for token in tokens):
        return [entry]
    return [f"{key} {value}" for key, _, value in (token.partition("=") for token in tokens)]


def _convert(args: argparse.Namespace) -> int:
    text = convert_dockerfile(args.dockerfile)
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    return 0
