"""The ``apptainer`` and ``singularity`` runtimes: ``<binary> exec`` as a direct child.

The server is started with::

    apptainer exec --containall --cleanenv --no-home --no-privs [--net --network none] \\
        --bind RUN/host:/run/dacstyle [--bind RUN/agent:/run/dacstyle-agent] \\
        [--bind SRC:DST[:ro]]... [--nv] [--env K=V]... IMAGE.sif python3 -m dacstyle.container.server ...

as an argv list (never a shell string). The token is never in argv: the server
reads it from the bound server folder. ``--env`` values *are* in argv (visible in
``ps``), so ``LaunchSpec.env`` must never carry a secret.

Why not spython's ``Client.execute``/``instance``: it only ever calls
``singularity`` (not ``apptainer``), silently ignores ``contain=``, and a failed
``instance start`` only logs instead of raising; it also hides the child process,
so there is no stdin lifeline and no ready line. We call the CLI ourselves.

Sandbox flags, matched to the bwrap runtime where Apptainer has them: ``--no-privs``
(no capabilities, no-new-privileges, also for a root caller; an unprivileged
container has none anyway) and, for a server that does not listen on TCP unless
``sandbox_network`` is set, ``--net --network none`` (a network namespace with only
a loopback; allowed to unprivileged users). Where it has none: the size of the
container's /tmp is the administrator's ``sessiondir max size`` in apptainer.conf,
not a per-run flag; process and memory limits (``--pids-limit``, ``--memory``)
need cgroups v2 delegated to the user, so they are not passed; the caller's
rlimits are inherited.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable, ClassVar

from ..errors import ImageNotFoundError, RuntimeUnavailableError
from .base import AGENT_DIR_INSIDE, SERVER_DIR_INSIDE, LaunchSpec, Runtime

__all__ = ["ApptainerRuntime", "SingularityRuntime", "find_binary"]

ISOLATION_FLAGS = ("--containall", "--cleanenv", "--no-home", "--no-privs")
"""What makes ``exec`` match the other backends: private /tmp, PID and IPC; no host env; no $HOME; no capability."""
NO_NETWORK = ("--net", "--network", "none")
"""A private network namespace with only a loopback: a server's channel is its bound socket."""

# Passed to the binary itself: where Apptainer keeps its cache and scratch space. Nothing that changes
# what the container sees (APPTAINER_BIND, APPTAINERENV_*, ...) is passed.
_HOST_ENV_KEEP = ("PATH", "HOME", "USER", "LOGNAME", "XDG_RUNTIME_DIR", "TMPDIR",
                  *(f"{tool}_{key}" for tool in ("APPTAINER", "SINGULARITY")
                    for key in ("CACHEDIR", "TMPDIR", "CONFIGDIR")))


def find_binary(names: tuple[str, ...] = ("apptainer", "singularity")) -> str | None:
    """The first of ``names`` found on PATH, as an absolute path, else None."""
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


class _ExecRuntime(Runtime):
    """Shared by both names: only the binaries searched for differ."""

    binaries: ClassVar[tuple[str, ...]]

    @classmethod
    def binary(cls) -> str | None:
        """The binary this runtime would run, else None."""
        return find_binary(cls.binaries)

    @classmethod
    def available(cls) -> bool:
        return cls.binary() is not None

    @classmethod
    def unavailable_reason(cls) -> str:
        """Why this runtime cannot run here, naming what to use instead."""
        names = " or ".join(f"'{b}'" for b in cls.binaries)
        none = "neither is" if len(cls.binaries) > 1 else "it is not"
        return (f"runtime {cls.name!r} needs {names} on PATH and {none} installed here; install Apptainer "
                f"(https://apptainer.org/docs/admin/main/installation.html), or use runtime='bwrap' "
                f"(bubblewrap + squashfuse, same isolation) or runtime='process' (no isolation)")

    def _require_binary(self) -> str:
        found = self.binary()
        if found is None:
            raise RuntimeUnavailableError(self.unavailable_reason())
        return found

    def _require_image(self, spec: LaunchSpec, exists: bool = False) -> Path:
        if spec.image is None:
            raise ImageNotFoundError(f"runtime {self.name!r} needs an image (a .sif file); none was given")
        image = Path(spec.image)
        if exists and not image.is_file():
            raise ImageNotFoundError(f"runtime {self.name!r}: image {image} does not exist")
        return image

    def exec_argv(self, spec: LaunchSpec, command: list[str]) -> list[str]:
        """``<binary> exec <isolation> <binds> [--nv] <env> IMAGE COMMAND...``."""
        return self._argv(spec, command, network=spec.network)

    def _argv(self, spec: LaunchSpec, command: list[str], network: bool) -> list[str]:
        image = self._require_image(spec)
        argv = [self._require_binary(), "exec", *ISOLATION_FLAGS, *([] if network else NO_NETWORK),
                "--bind", f"{spec.server_dir.path}/host:{SERVER_DIR_INSIDE}"]
        if spec.server_dir.has_agent:
            argv += ["--bind", f"{spec.server_dir.path}/agent:{AGENT_DIR_INSIDE}"]
        for bind in spec.binds:
            argv += ["--bind", f"{bind.src}:{bind.dst}:ro" if bind.readonly else f"{bind.src}:{bind.dst}"]
        if spec.gpu:
            argv.append("--nv")
        for key, value in sorted(spec.env.items()):
            argv += ["--env", f"{key}={value}"]
        return [*argv, str(image), *command]

    def prepare(self, spec: LaunchSpec) -> list[Callable[[], None]]:
        self._require_binary()
        self._require_image(spec, exists=True)
        return []  # nothing to undo: apptainer mounts and unmounts the image itself

    def host_env(self, spec: LaunchSpec) -> dict[str, str]:
        """PATH, HOME and Apptainer's cache/tmp settings; never ``APPTAINERENV_*`` or ``APPTAINER_BIND``."""
        env = {k: v for k, v in os.environ.items() if k in _HOST_ENV_KEEP}
        env.setdefault("PATH", "/usr/bin:/bin")
        env["LANG"] = "C.UTF-8"
        return env

    def describe(self) -> dict[str, object]:
        return {**super().describe(), "binary": self.binary()}


class ApptainerRuntime(_ExecRuntime):
    """``apptainer exec`` (falls back to a ``singularity`` binary, as Apptainer installs one)."""

    name = "apptainer"
    binaries = ("apptainer", "singularity")


class SingularityRuntime(_ExecRuntime):
    """``singularity exec``: SingularityCE, or Apptainer's ``singularity`` link."""

    name = "singularity"
    binaries = ("singularity",)
