"""What a runtime returns: a handle on a started payload, with one lifeline and one cleanup.

:class:`Handle` is the interface (a local process tree today; a Slurm job can be
another kind). :class:`LocalProcess` starts the payload under the per-run reaper
(:mod:`dacstyle.runtimes.reaper`) and holds the host's end of the socket pair
that the reaper watches, so that every way the host ends cleans the same things:

* ``stop()``: close the payload's stdin lifeline, then SIGTERM, then SIGKILL the
  tree, each after a grace period; then close the socket pair, and the reaper
  unmounts and removes the server folder before it exits;
* a handle never stopped: ``weakref.finalize`` stops it when it is collected or
  at interpreter exit;
* SIGTERM: while handles are live, a handler (installed then, chained to the
  previous one, removed after the last stop) stops them all, then lets the
  previous handler (or the default, death by SIGTERM) run;
* SIGKILL: the socket pair closes with the host and the reaper cleans up.

A forked child of the host never stops its parent's handles: it closes its
copies of their lifelines at fork, so the reaper still sees the host die.
"""

from __future__ import annotations

import abc
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from typing import IO, Any, Callable

from ..errors import ServerStartError
from . import reaper
from .serverdir import ServerDir

__all__ = ["Handle", "LocalProcess"]

_STARTED_TIMEOUT_S = 30.0
_LIVE: "dict[weakref.finalize, _State]" = {}
_LIVE_LOCK = threading.RLock()
_PREVIOUS: list[Any] = []  # the SIGTERM handler we replaced, while ours is installed
_FORK_HOOK: list[bool] = []


class Handle(abc.ABC):
    """A started payload, wherever it runs: query it, wait for it, stop it (which cleans its run)."""

    server_dir: ServerDir
    owned: bool = True  # False: a payload someone else started (an attached Slurm job); stop() only lets go

    @property
    @abc.abstractmethod
    def id(self) -> str:
        """What names the payload where it runs (a pid; a Slurm job id)."""

    @abc.abstractmethod
    def alive(self) -> bool:
        """True while the payload runs."""

    @abc.abstractmethod
    def wait(self, timeout: float | None) -> int | None:
        """The payload's exit code once it ended within ``timeout`` seconds, else None."""

    @abc.abstractmethod
    def stop(self, timeout: float = 5.0) -> None:
        """End the payload and remove everything of its run (processes, mounts, server folder); idempotent."""

    def __enter__(self) -> "Handle":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _State:
    """What stopping needs, kept apart from the handle so that its finalizer can hold it."""

    def __init__(self, popen: subprocess.Popen, control: socket.socket, server_dir: ServerDir,
                 teardown: list[Callable[[], None]]) -> None:
        self.popen = popen
        self.control = control
        self.server_dir = server_dir
        self.teardown = teardown
        self.owner = os.getpid()
        self.code: int | None = None
        self.ended = False
        self.buffer = b""
        self.grace = 5.0
        self.lock = threading.Lock()  # one reader of the reaper's lines at a time

    def message(self, timeout: float | None) -> str | None:
        """The reaper's next line within ``timeout`` seconds (None: nothing yet); '' when it is gone."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.control.fileno() < 0:
                return ""
            if not select.select([self.control], [], [], remaining)[0]:
                return None
            try:
                chunk = self.control.recv(4096)
            except OSError:
                chunk = b""
            if not chunk:
                return ""
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def wait(self, timeout: float | None) -> int | None:
        """The payload's exit code (from the reaper's ``exit`` line) within ``timeout``, else None."""
        if not self.lock.acquire(timeout=-1 if timeout is None else timeout):
            return None
        try:
            return self._wait(timeout)
        finally:
            self.lock.release()

    def _wait(self, timeout: float | None) -> int | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.ended:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            line = self.message(remaining)
            if line is None:
                return None
            if line.startswith("exit ") or line == "":
                self.ended = True
                self.code = int(line.split()[1]) if line else self.popen.poll()
            elif deadline is not None and time.monotonic() >= deadline:
                return None
        return self.code

    def send(self, command: bytes) -> None:
        try:
            self.control.sendall(command)
        except OSError:
            pass


def _close_lifeline(state: _State) -> None:
    lifeline = state.popen.stdin
    if lifeline is not None and not lifeline.closed:
        try:
            lifeline.close()
        except OSError:
            pass


def _stop(state: _State) -> None:
    """Stop one payload and clean its run (the finalizer; see the module doc for the steps)."""
    if os.getpid() != state.owner:  # a forked child: the run belongs to its parent
        return
    try:
        if state.popen.stdin is not None:  # a payload with a lifeline ends by itself when it closes
            _close_lifeline(state)
            if state.wait(state.grace / 2) is None:
                state.send(b"t")
        elif state.wait(0) is None:
            state.send(b"t")
        if state.wait(state.grace / 2) is None:
            state.send(b"k")
            state.wait(reaper.KILL_DEADLINE_S + 1.0)
    finally:
        state.control.close()  # the reaper kills what is left, unmounts, removes the server folder, exits
        try:
            state.popen.wait(10.0)
        except subprocess.TimeoutExpired:
            state.popen.kill()
            state.popen.wait()
        for stream in (state.popen.stdout, state.popen.stderr):
            if stream is not None:
                stream.close()
        errors = []
        for undo in reversed(state.teardown):  # what only the host can undo; already done by the reaper
            try:
                undo()
            except Exception as exc:
                errors.append(exc)
        state.server_dir.remove()
        _forget(state)
        if errors:
            raise errors[0]


class LocalProcess(Handle):
    """A payload on this machine, started under its per-run reaper (see the module doc)."""

    def __init__(self, argv: list[str], server_dir: ServerDir, *, env: dict[str, str], teardown: list[Callable[[], None]],
                 stdin: int | None = None, stdout: int | IO[Any] | None = None, stderr: int | IO[Any] | None = None,
                 session: bool = True) -> None:
        self.server_dir = server_dir
        host_end, reaper_end = socket.socketpair()
        command = [sys.executable, "-I", "-S", reaper.__file__, str(server_dir.path), str(reaper_end.fileno()), "--", *argv]
        try:
            popen = subprocess.Popen(command, stdin=stdin, stdout=stdout, stderr=stderr, env=env, close_fds=True,
                                     pass_fds=(reaper_end.fileno(),), start_new_session=session)
        except BaseException:
            host_end.close()
            raise
        finally:
            reaper_end.close()
        self._state = _State(popen, host_end, server_dir, teardown)
        self._stopper = weakref.finalize(self, _stop, self._state)
        _remember(self._stopper, self._state)
        server_dir.record(reaper_pid=popen.pid, reaper_start=reaper.start_time(popen.pid))
        line = self._state.message(_STARTED_TIMEOUT_S)
        if not line or not line.startswith("started "):
            self._state.ended, self._state.code = True, 127  # nothing to wait for
            self.stop(timeout=1.0)
            why = line[len("error "):] if line and line.startswith("error ") else "the reaper did not start it"
            raise ServerStartError(f"cannot start the command: {why}")
        _, pid, started = line.split()
        self.pid = int(pid)
        server_dir.record(pid=self.pid, pid_start=int(started) if started.isdigit() else None)

    @property
    def id(self) -> str:
        return str(self.pid)

    @property
    def stdout(self) -> IO[bytes] | None:
        """The payload's stdout, when it was started with ``stdout=PIPE``."""
        return self._state.popen.stdout

    @property
    def reaper_pid(self) -> int:
        """The pid of this run's reaper (the payload's parent)."""
        return self._state.popen.pid

    def alive(self) -> bool:
        return self._stopper.alive and self._state.wait(0) is None

    def wait(self, timeout: float | None) -> int | None:
        return self._state.wait(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self._state.grace = timeout
        self._stopper()


def _remember(stopper: weakref.finalize, state: _State) -> None:
    with _LIVE_LOCK:
        _LIVE[stopper] = state
        if not _FORK_HOOK:
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _FORK_HOOK.append(True)
        if not _PREVIOUS and threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGTERM)
            if previous is not signal.SIG_IGN:  # a host that ignores SIGTERM keeps doing so
                signal.signal(signal.SIGTERM, _on_sigterm)
                _PREVIOUS.append(previous)


def _forget(state: _State) -> None:
    with _LIVE_LOCK:
        for stopper in [s for s, known in _LIVE.items() if known is state]:
            del _LIVE[stopper]
        if not _LIVE:
            _restore_sigterm()


def _restore_sigterm() -> None:
    if _PREVIOUS and threading.current_thread() is threading.main_thread():
        previous = _PREVIOUS.pop()
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:  # a handler someone set after ours stays
            signal.signal(signal.SIGTERM, previous)


def _on_sigterm(signum: int, frame: Any) -> None:
    """Stop every live handle, then do what the previous handler would have done."""
    previous = _PREVIOUS[-1] if _PREVIOUS else signal.SIG_DFL
    with _LIVE_LOCK:
        live = list(_LIVE.items())
    for _, state in live:  # every payload winds down at once, then each is stopped
        state.grace = min(state.grace, 1.0)
        _close_lifeline(state)
    for stopper, _ in live:
        stopper()
    _restore_sigterm()
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _after_fork_in_child() -> None:
    """A forked child drops its copies of the parent's lifelines, so the reapers still see the parent die."""
    for stopper, state in list(_LIVE.items()):
        stopper.detach()
        state.control.close()
        if state.popen.stdin is not None:
            try:
                state.popen.stdin.close()
            except OSError:
                pass
    _LIVE.clear()
    _PREVIOUS.clear()  # an inherited handler of ours finds nothing to stop and chains to the default
