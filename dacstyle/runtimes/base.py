"""The one runtime interface: start the server entry point somewhere, stop it.

Every backend runs the same ``python -m dacstyle.container.server`` with the
same arguments; backends differ only in how they wrap that command (nothing, a
bubblewrap sandbox, ``apptainer exec``) and what they must undo afterwards (a
squashfuse mount). Tests on one backend therefore exercise the others' server.
"""

from __future__ import annotations

import abc
import os
import select
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..config import config
from ..errors import ServerStartError
from .rundir import RunDir

__all__ = ["Bind", "LaunchSpec", "Runtime", "ServerProcess", "RUN_DIR_INSIDE", "AGENT_DIR_INSIDE"]

RUN_DIR_INSIDE = "/run/dacstyle"
AGENT_DIR_INSIDE = "/run/dacstyle-agent"
GRADER_DIR_INSIDE = "/run/dacstyle-grader"  # a grader's agent endpoint, seen from the task container
SERVER_MODULE = "dacstyle.container.server"


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
    """Everything a runtime needs to start one server."""

    run: RunDir
    image: Path | None = None
    binds: list[Bind] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    gpu: bool = False
    tcp: str | None = None  # "HOST:PORT" to listen on TCP instead of the run folder's socket


class ServerProcess:
    """A started server: its process, its ready line, its log and its teardown."""

    def __init__(self, popen: subprocess.Popen, run: RunDir, teardown: list[Callable[[], None]] | None = None) -> None:
        self.popen = popen
        self.run = run
        self.teardown = teardown or []

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, timeout: float) -> str:
        """Wait for the server's ready line (or its death); returns the line's JSON text."""
        from dacstyle.container.protocol import READY_PREFIX

        deadline = time.monotonic() + timeout
        stdout = self.popen.stdout
        assert stdout is not None
        buffer = b""
        while b"\n" not in buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ServerStartError(f"server did not become ready within {timeout:.0f} s", self.run.log_tail())
            readable, _, _ = select.select([stdout], [], [], remaining)
            if readable:
                chunk = os.read(stdout.fileno(), 4096)
                if not chunk:
                    code = self.wait_exit(2.0)
                    raise ServerStartError(f"server exited during start-up (exit code {code})", self.run.log_tail())
                buffer += chunk
        line = buffer.split(b"\n", 1)[0].decode("utf-8", "replace")
        if not line.startswith(READY_PREFIX):
            raise ServerStartError(f"server printed {line[:200]!r} instead of its ready line", self.run.log_tail())
        stdout.close()
        return line[len(READY_PREFIX):]

    def wait_exit(self, timeout: float) -> int | None:
        """The exit code once the process ended within ``timeout`` seconds, else None."""
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> None:
        """Close the lifeline, then terminate, then kill; always run the teardown."""
        try:
            if self.popen.stdin and not self.popen.stdin.closed:
                try:
                    self.popen.stdin.close()
                except OSError:
                    pass
            if self.wait_exit(timeout / 2) is None:
                self._signal(signal.SIGTERM)
                if self.wait_exit(timeout / 2) is None:
                    self._signal(signal.SIGKILL)
                    self.popen.wait()
        finally:
            if self.popen.stdout and not self.popen.stdout.closed:
                self.popen.stdout.close()
            errors = []
            for undo in reversed(self.teardown):
                try:
                    undo()
                except Exception as exc:  # keep undoing the rest
                    errors.append(exc)
            self.teardown.clear()
            if errors:
                raise errors[0]

    def _signal(self, sig: int) -> None:
        try:
            os.killpg(self.popen.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


class Runtime(abc.ABC):
    """A way to run the server: ``process``, ``bwrap``, ``apptainer``, ``singularity``."""

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
        """The interpreter that runs the server, as the server's side sees it."""
        return "python3"

    def command(self, spec: LaunchSpec) -> list[str]:
        """The argv that starts the server: the same entry point for every runtime."""
        return self.exec_argv(spec, [self.python(spec), *self.server_args(spec)])

    def prepare(self, spec: LaunchSpec) -> list[Callable[[], None]]:
        """Set up what the command needs (mounts); returns the undo steps."""
        return []

    def run_dir_inside(self, spec: LaunchSpec) -> str:
        """Where the run folder's host/ part appears to the server."""
        return RUN_DIR_INSIDE

    def server_args(self, spec: LaunchSpec) -> list[str]:
        """The server's own arguments, with paths as the server sees them."""
        inside = self.run_dir_inside(spec)
        args = ["-m", SERVER_MODULE, "--token-file", f"{inside}/token", "--max-message-size", str(config.max_message_size)]
        args += ["--tcp", spec.tcp] if spec.tcp else ["--socket", f"{inside}/server.sock"]
        if spec.run.has_agent:
            agent = self.agent_dir_inside(spec)
            args += ["--agent-socket", f"{agent}/agent.sock", "--agent-token-file", f"{agent}/token"]
        return args

    def agent_dir_inside(self, spec: LaunchSpec) -> str:
        return AGENT_DIR_INSIDE

    def path_inside(self, bind: Bind) -> str:
        """Where a bound host folder appears to the server."""
        return bind.dst

    def start(self, spec: LaunchSpec) -> ServerProcess:
        """Prepare, then start the server as a direct child with a stdin lifeline."""
        teardown = self.prepare(spec)
        try:
            argv = self.command(spec)
            with open(spec.run.log_path, "ab") as log:
                popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=self.host_env(spec),
                    start_new_session=True,  # its own process group, so stop() can kill all of it
                    close_fds=True,
                )
        except BaseException:
            for undo in reversed(teardown):
                undo()
            raise
        spec.run.record(server_pid=popen.pid, server_pgid=popen.pid, runtime=self.name)
        return ServerProcess(popen, spec.run, teardown)

    def host_env(self, spec: LaunchSpec) -> dict[str, str]:
        """The environment of the runtime command itself on the host."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", **spec.env}

    def describe(self) -> dict[str, Any]:
        """What the run manifest records about this runtime."""
        return {"name": self.name, "isolated": self.isolated}
