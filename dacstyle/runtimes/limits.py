"""Process and memory limits for a container, applied before its runtime is exec'd.

Two mechanisms, both inherited by everything the container starts:

* rlimits, set by a tiny launcher (this file run as a script with ``python -I -S``,
  stdlib only) that then execs the runtime: ``RLIMIT_NPROC`` (counted in the
  container's user namespace, and, as Linux does, against all the user's tasks
  on the host too), ``RLIMIT_DATA`` and ``RLIMIT_FSIZE``;
* a ``pids`` cgroup, where the host delegates one to us (we may create a child
  of our own cgroup): the launcher joins it before the exec. The kernel does not
  apply ``RLIMIT_NPROC`` to processes whose host uid is 0, so for a root host
  (whose container uid maps to 0) the cgroup is what stops a fork flood.

The launcher is a separate exec, not ``preexec_fn``: it works for any caller
that starts an argv (the runtimes, ``dacstyle exec``, the Apptainer stand-in).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from pathlib import Path

__all__ = ["Limits", "launcher_argv", "make_cgroup", "remove_cgroup"]

_RLIMITS = {"--nproc": resource.RLIMIT_NPROC, "--data": resource.RLIMIT_DATA, "--fsize": resource.RLIMIT_FSIZE}
_CGROUP_ROOT = Path("/sys/fs/cgroup")


class Limits:
    """The limits of one container: processes, data bytes per process, file size, cgroup."""

    def __init__(self, processes: int, memory: int, file_size: int, cgroup: Path | None = None) -> None:
        self.processes, self.memory, self.file_size, self.cgroup = processes, memory, file_size, cgroup

    @classmethod
    def from_config(cls, cgroup: Path | None = None) -> "Limits":
        """The limits named by the ``sandbox_*`` settings."""
        from ..config import config

        return cls(config.sandbox_max_processes, config.sandbox_max_memory, config.sandbox_max_file_size, cgroup)


def launcher_argv(limits: Limits) -> list[str]:
    """The argv prefix that applies ``limits`` and then execs what follows ``--``."""
    argv = [sys.executable, "-I", "-S", str(Path(__file__).resolve()),
            "--nproc", str(limits.processes), "--data", str(limits.memory), "--fsize", str(limits.file_size)]
    if limits.cgroup is not None:
        argv += ["--cgroup", str(limits.cgroup)]
    return [*argv, "--"]


def _own_cgroup_dirs() -> list[Path]:
    """Folders of this process's cgroups that have a pids controller: v1 first, then v2."""
    found = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "pids" in controllers.split(","):
            found.append(_CGROUP_ROOT / "pids" / path.lstrip("/"))
        elif controllers == "":
            for base in (_CGROUP_ROOT, _CGROUP_ROOT / "unified"):
                own = base / path.lstrip("/")
                try:
                    delegated = "pids" in (own / "cgroup.subtree_control").read_text().split()
                except OSError:
                    continue
                if delegated:
                    found.append(own)
    return found


def make_cgroup(name: str, processes: int) -> Path | None:
    """A child ``pids`` cgroup of our own with ``pids.max = processes``, or None where not delegated.

    Empty ``dacstyle-*`` siblings older than a minute (left by a killed host) are removed first.
    """
    for parent in _own_cgroup_dirs():
        if not os.access(parent, os.W_OK):
            continue
        _sweep(parent)
        child = parent / name
        try:
            child.mkdir()
        except OSError:
            continue
        try:
            (child / "pids.max").write_text(str(processes))
            return child
        except OSError:
            remove_cgroup(child)
    return None


def _sweep(parent: Path, age: float = 60.0) -> None:
    for stale in parent.glob("dacstyle-*"):
        try:
            if time.time() - stale.stat().st_mtime > age:
                stale.rmdir()  # refused while a process is in it
        except OSError:
            pass


def remove_cgroup(path: Path, timeout: float = 2.0) -> None:
    """Kill what is still in a cgroup made by :func:`make_cgroup`, then remove it (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # tasks still exiting after the container's pid 1 died
            if time.monotonic() >= deadline:
                return  # an empty one is swept by the next make_cgroup
        try:
            pids = [int(pid) for pid in (path / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)  # the kernel gives no event for "cgroup now empty" on v1


def _main(args: list[str]) -> None:
    """``launcher --nproc N --data BYTES --fsize BYTES [--cgroup DIR] -- COMMAND...``."""
    split = args.index("--")
    options, command = args[:split], args[split + 1:]
    pairs = dict(zip(options[::2], options[1::2]))
    cgroup = pairs.pop("--cgroup", None)
    if cgroup is not None:
        with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    for flag, value in pairs.items():
        hard = resource.getrlimit(_RLIMITS[flag])[1]
        limit = int(value) if hard == resource.RLIM_INFINITY else min(int(value), hard)  # never raise one
        resource.setrlimit(_RLIMITS[flag], (limit, limit))
    os.execvp(command[0], command)


if __name__ == "__main__":
    _main(sys.argv[1:])
