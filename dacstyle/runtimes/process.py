"""The ``process`` runtime: the server as a plain subprocess of this interpreter.

Same entry point and protocol as the container runtimes, no isolation at all
(files, privileges, network, process and memory limits: all the host's): for
laptops without a container system, teaching and debugging.
"""

from __future__ import annotations

import os
import sys
import warnings

from ..errors import IsolationWarning
from .base import Bind, LaunchSpec, Runtime

__all__ = ["ProcessRuntime"]


class ProcessRuntime(Runtime):
    """Run the server with ``sys.executable``; nothing is isolated."""

    name = "process"
    isolated = False
    needs_image = False

    @classmethod
    def available(cls) -> bool:
        return True

    def run_dir_inside(self, spec: LaunchSpec) -> str:
        return str(spec.server_dir.path / "host")

    def agent_dir_inside(self, spec: LaunchSpec) -> str:
        return str(spec.server_dir.path / "agent")

    def path_inside(self, bind: Bind) -> str:
        return bind.src

    def python(self, spec: LaunchSpec) -> str:
        return sys.executable

    def exec_argv(self, spec: LaunchSpec, command: list[str]) -> list[str]:
        return list(command)

    def prepare(self, spec: LaunchSpec) -> list:
        ignored = " (the image is ignored; binds are the host folders themselves)" if spec.image is not None else ""
        warnings.warn(
            f"runtime 'process' isolates nothing: the benchmark runs as a plain subprocess of this "
            f"Python environment, with your files, privileges, network and no limits{ignored}",
            IsolationWarning,
            stacklevel=2,
        )
        return []

    def host_env(self, spec: LaunchSpec) -> dict[str, str]:
        return {**os.environ, **spec.env}
