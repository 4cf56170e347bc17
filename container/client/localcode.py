"""Benchmark code that lives beside the user rather than in the environment.

A benchmark whose entry point is ``mybench:make_env`` with ``mybench.py`` in the
working folder (or in any folder put on ``sys.path``) imports here but is not
installed, so no image holds it. :func:`local_modules` finds such modules; the
runner binds each read-only into the container (at :data:`CODE_INSIDE`, which
goes on the server's ``PYTHONPATH``) and records its files and their digests
in the run manifest. Nothing is packed, so editing the module re-packs nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from dacstyle.runtimes import Bind, Runtime

__all__ = ["CODE_INSIDE", "LocalModule", "local_modules", "code_environment"]

CODE_INSIDE = "/opt/dacstyle/code"


@dataclass(frozen=True)
class LocalModule:
    """A top-level module (a ``.py`` file or a package folder) found outside the environment."""

    name: str
    path: Path

    def files(self) -> dict[str, str]:
        """``{path relative to the module's folder: sha256}`` of its Python files."""
        paths = [self.path] if self.path.is_file() else sorted(self.path.rglob("*.py"))
        return {str(p.relative_to(self.path.parent)): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}

    def record(self) -> dict[str, Any]:
        """What a run manifest says about this module."""
        return {"module": self.name, "path": str(self.path), "files": self.files()}


def _installed_roots() -> list[str]:
    from dacstyle.images.envtree import package_dirs

    stdlib = [sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib")]
    return [os.path.realpath(p) + os.sep for p in [*stdlib, *package_dirs()]]


def local_modules(entry_points: Iterable[str]) -> list[LocalModule]:
    """The top-level modules of ``entry_points`` ("module:attr") importable here but not installed."""
    from dacstyle.images.envtree import editable_sources

    found: dict[str, LocalModule] = {}
    roots: list[str] | None = None
    editable = editable_sources()
    for entry in entry_points:
        top = entry.split(":", 1)[0].split(".", 1)[0]
        if not top or top in found or top in editable or top in sys.builtin_module_names:
            continue
        spec = importlib.util.find_spec(top)
        if spec is None or not spec.has_location or not spec.origin:
            continue  # missing here too (the image may hold it), built in, or a namespace package
        path = Path(spec.origin).resolve()
        if spec.submodule_search_locations:
            path = path.parent
        roots = roots if roots is not None else _installed_roots()
        if not any(str(path).startswith(root) for root in roots):
            found[top] = LocalModule(top, path)
    return list(found.values())


def code_environment(runtime: Runtime, binds: list[Bind], env: dict[str, str]) -> dict[str, str]:
    """``env`` for a server: the bound local code's folders first on PYTHONPATH (the host's too, unless isolated)."""
    code = [runtime.path_inside(b) for b in binds if b.dst.startswith(CODE_INSIDE + "/")]
    if not code:
        return env
    folders = list(dict.fromkeys(os.path.dirname(path) for path in code))
    inherited = [env.get("PYTHONPATH", "")] + ([] if runtime.isolated else [os.environ.get("PYTHONPATH", "")])
    return {**env, "PYTHONPATH": os.pathsep.join([*folders, *filter(None, inherited)])}
