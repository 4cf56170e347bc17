"""Run one command under a wall-clock limit and an output cap, leaving nothing behind.

The limit is enforced from outside the command:

* it starts in a new session (its own process group);
* output (stdout and stderr, merged) is read in chunks; the first
  ``output_limit`` bytes are kept, the rest is drained and counted;
* at the deadline the whole process group gets SIGKILL;
* after the command ends, for whatever reason, every remaining descendant is
  killed too — also those that double-forked or called ``setsid`` to escape
  the group. For that the calling process makes itself a *child subreaper*
  (``prctl(PR_SET_CHILD_SUBREAPER)``), so orphans are re-parented to it and
  not to init, and walks ``/proc`` for its descendants.

Being a subreaper is process-wide, so :func:`run_limited` holds it only while
a command runs (and its leftovers are killed) and then restores the previous
setting: other code in the same process (a notebook, a test suite) does not
inherit the orphans of unrelated programs. Processes that were already
descendants of this process before a command started are never touched; one
that another thread starts *during* a command may be, so run agent code from a
process that does little else (the task-environment server).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ActionResult", "become_subreaper", "descendants", "is_subreaper", "run_limited", "subreaper"]

PR_SET_CHILD_SUBREAPER = 36
PR_GET_CHILD_SUBREAPER = 37
_CHUNK = 65536
_CLEANUP_SECONDS = 5.0


@dataclass
class ActionResult:
    """What one limited run produced."""

    output: str
    exit_code: int | None  # negative: killed by that signal; None: unknown
    timed_out: bool
    duration_s: float
    output_bytes: int  # everything written, also what was dropped
    truncated: bool
    leftovers_killed: int  # descendants still alive after the command ended
    subreaper: bool = False  # whether escaped (re-parented) processes could be caught


def _prctl(option: int, value: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def is_subreaper() -> bool:
    """Whether this process is a child subreaper now."""
    flag = ctypes.c_int(0)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        ok = libc.prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False
    return ok and bool(flag.value)


def become_subreaper(enable: bool = True) -> bool:
    """Make this process a child subreaper (or stop being one); False where not allowed."""
    return _prctl(PR_SET_CHILD_SUBREAPER, 1 if enable else 0)


@contextlib.contextmanager
def subreaper() -> Iterator[bool]:
    """Be a child subreaper inside the block; yields whether that worked."""
    was = is_subreaper()
    ok = was or become_subreaper(True)
    try:
        yield ok
    finally:
        if ok and not was:
            become_subreaper(False)


def _stat(pid: int) -> tuple[int, str] | None:
    """(ppid, state) of a process from /proc, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    return int(fields[1]), fields[0]


def descendants(root: int | None = None) -> dict[int, tuple[int, str]]:
    """All descendants of ``root`` (default: this process) as pid -> (ppid, state)."""
    root = os.getpid() if root is None else root
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(int(entry))
            if info is not None:
                table[int(entry)] = info
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found: dict[int, tuple[int, str]] = {}
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            if child not in found:
                found[child] = table[child]
                stack.append(child)
    return found


def _kill_leftovers(protected: set[int], deadline: float) -> int:
    """SIGKILL every descendant not under a protected child; reap our zombies. Returns how many."""
    me = os.getpid()
    killed: set[int] = set()
    while time.monotonic() < deadline:
        tree = descendants(me)
        skip = set()
        for pid in protected:  # pre-existing children and everything below them
            if pid in tree:
                skip.add(pid)
                skip.update(descendants(pid))
        targets = {pid: info for pid, info in tree.items() if pid not in skip}
        if not targets:
            break
        for pid, (_, state) in targets.items():
            if state != "Z":
                try:
                    os.kill(pid, signal.SIGKILL)
                    killed.add(pid)
                except (ProcessLookupError, PermissionError):
                    pass
        for pid, (ppid, _) in targets.items():
            if ppid == me:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
        time.sleep(0.005)  # let the kernel deliver the signals and re-parent orphans
    return len(killed)


def _sanitize(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def run_limited(
    argv: Sequence[str],
    *,
    cwd: str | Path,
    env: dict[str, str] | None = None,
    time_limit: float = 60.0,
    output_limit: int = 64 * 1024,
) -> ActionResult:
    """Run ``argv`` (never through a shell) under a time limit and an output cap."""
    with subreaper() as reaping:
        result = _run(argv, cwd, env, time_limit, output_limit)
    result.subreaper = reaping
    return result


def _run(argv: Sequence[str], cwd: str | Path, env: dict[str, str] | None, time_limit: float, output_limit: int) -> ActionResult:
    protected = set(descendants())
    start = time.monotonic()
    deadline = start + time_limit
    proc = subprocess.Popen(
        list(argv),
        cwd=str(cwd),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    kept = bytearray()
    total = 0
    timed_out = False
    eof = False
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)

        def drain(wait: float) -> bool:
            """Read what is there (waiting up to ``wait``); True at end of file."""
            nonlocal total
            if not selector.select(max(wait, 0.0)):
                return False
            while True:
                try:
                    chunk = os.read(fd, _CHUNK)
                except BlockingIOError:
                    return False
                if not chunk:
                    return True
                total += len(chunk)
                if len(kept) < output_limit:
                    kept.extend(chunk[: output_limit - len(kept)])

        while not eof:
            now = time.monotonic()
            if now >= deadline:
                timed_out = proc.poll() is None
                break
            eof = drain(min(0.05, deadline - now))
            if proc.poll() is not None:
                # the command ended: take what is buffered, do not wait for
                # descendants that still hold the pipe open
                for _ in range(64):
                    if eof or not selector.select(0):
                        break
                    eof = drain(0)
                break
        if not timed_out and proc.poll() is None:  # closed its output but still runs
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                timed_out = True
        if timed_out:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            exit_code = proc.wait(timeout=_CLEANUP_SECONDS)
        except subprocess.TimeoutExpired:  # pragma: no cover - SIGKILL is not ignorable
            exit_code = None
        leftovers = _kill_leftovers(protected, time.monotonic() + _CLEANUP_SECONDS)
        # every writer is gone now: collect the rest of the buffered output
        end = time.monotonic() + 1.0
        while not eof and time.monotonic() < end:
            eof = drain(0.05)
    proc.stdout.close()
    return ActionResult(
        output=_sanitize(bytes(kept)),
        exit_code=exit_code,
        timed_out=timed_out,
        duration_s=time.monotonic() - start,
        output_bytes=total,
        truncated=total > len(kept),
        leftovers_killed=leftovers,
    )
