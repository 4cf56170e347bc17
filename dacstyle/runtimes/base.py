"""The one runtime interface: run an argv somewhere, get back a handle.

A runtime knows nothing about what the argv is (the benchmark server's argv and
ready line belong to ``dacstyle.container.client``): backends differ only in how
they wrap it (nothing, a bubblewrap sandbox, ``apptainer exec``) and what they
must undo afterwards (a squashfuse mount). :meth:`Runtime.launch` is the one way
the product starts a process, so each gets the same reaper, lifeline, signal
handling and ``cleanup`` record (see :mod:`dacstyle.runtimes.handle`).
"""

from __future__ import annotations

import abc
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, ClassVar

from .handle import Handle, LocalProcess
from .serverdir import ServerDir, cleanup_stale

__all__ = ["Bind", "LaunchSpec", "Runtime", "SERVER_DIR_INSIDE", "AGENT_DIR_INSIDE", "PIPE"]

PIPE = subprocess.PIPE

SERVER_DIR_INSIDE = "/run/dacstyle"
AGENT_DIR_INSIDE = "/run/dacstyle-agent"
COMPANION_DIR_INSIDE = "/run/dacstyle-companion"  # NAME/: a companion's agent endpoint, seen from the main server


@dataclass(frozen=True)
class Bind:
    """A host path made visible inside the container (read-only by default)."""

    src: str
    dst: str
    readonly: bool = True

    @classmethod
    def parse(cls, text: str) -> "Bind":
        """Parse ``SRC:DST[:ro|rw]`` (or ``SRC`` for the same path inside)."""
        parts = text.split(":")
        mode = parts.pop() if len(parts) > 1 and parts[-1] in ("ro", "rw") else "ro"
        if len(parts) == 1:
            parts.append(parts[0])
        if len(parts) != 2 or not parts[0] or not parts[1].startswith("/"):
            raise ValueError(f"bind {text!r} is not SRC:DST[:ro|rw] with an absolute DST")
        return cls(os.path.abspath(parts[0]), parts[1], mode == "ro")


@dataclass
class LaunchSpec:
    """Where and how to run an argv: its server folder, image, binds, environment and devices."""

    server_dir: ServerDir
    image: Path | None = None
    binds: list[Bind] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    gpu: bool = False
    network: bool = True  # False: a private network namespace with only a loopback, where the runtime has one


class Runtime(abc.ABC):
    """A way to run an argv: ``process``, ``bwrap``, ``apptainer``, ``singularity``."""

    name: ClassVar[str]
    isolated: ClassVar[bool] = True
    needs_image: ClassVar[bool] = True

    @classmethod
    @abc.abstractmethod
    def available(cls) -> bool:
        """True when this runtime can run on this machine."""

    @classmethod
    def unavailable_reason(cls) -> str:
        """Why :meth:`available` is false, for the error message."""
        return f"runtime {cls.name!r} is not available on this machine"

    @abc.abstractmethod
    def exec_argv(self, spec: LaunchSpec, command: list[str]) -> list[str]:
        """The argv that runs ``command`` inside this runtime (a list, never a shell string)."""

    def python(self, spec: LaunchSpec) -> str:
        """The interpreter inside, as the inside sees it."""
        return "python3"

    def prepare(self, spec: LaunchSpec) -> list[Callable[[], None]]:
        """Set up what the argv needs (mounts, recorded in the server folder first); returns the undo steps."""
        return []

    def run_dir_inside(self, spec: LaunchSpec) -> str:
        """Where the server folder's host/ part appears inside."""
        return SERVER_DIR_INSIDE

    def agent_dir_inside(self, spec: LaunchSpec) -> str:
        """Where the server folder's agent/ part appears inside."""
        return AGENT_DIR_INSIDE

    def path_inside(self, bind: Bind) -> str:
        """Where a bound host folder appears inside."""
        return bind.dst

    def launch(self, spec: LaunchSpec, argv: list[str], *, stdin: int | None = None,
               stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
               session: bool = True) -> Handle:
        """Start ``argv`` (paths as the inside sees them) in this runtime; the handle owns the run from now on.

        First sweeps runs whose host died (``cleanup_stale``). ``session`` puts the
        payload in a session of its own (servers); without it, it shares the
        terminal's signals (``dacstyle exec``). Stopping the handle removes the server folder.
        """
        cleanup_stale()
        teardown = self.prepare(spec)
        try:
            spec.server_dir.record(runtime=self.name)
            return LocalProcess(self.exec_argv(spec, argv), spec.server_dir, env=self.host_env(spec), teardown=teardown,
                                stdin=stdin, stdout=stdout, stderr=stderr, session=session)
        except BaseException:
            for undo in reversed(teardown):
                undo()
            raise

    def host_env(self, spec: LaunchSpec) -> dict[str, str]:
        """The environment of the runtime command itself on the host."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **spec.env}

    def describe(self) -> dict[str, Any]:
        """What the run manifest records about this runtime."""
        return {"name": self.name, "isolated": self.isolated}
