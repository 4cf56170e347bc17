"""The per-run reaper: the parent of every process the product starts, outside any container.

::

    host ──socket pair──> reaper (python -I -S reaper.py RUN FD -- ARGV...) ──> payload (ARGV)

The reaper starts the payload as its child and makes itself a child subreaper,
so whatever the payload forks (also what calls ``setsid`` or double-forks) stays
in its tree. It tells the host ``started PID`` and, when the payload ends,
``exit CODE``; it kills what the payload left behind then. The host may send
``t`` (SIGTERM to the tree) or ``k`` (SIGKILL to the tree). End of file on the
socket pair means the run is over, because the host closed it or died
(SIGKILL included): the reaper kills the whole tree, unmounts what the run
folder's ``owner.json`` lists, removes the run's cgroups and folder, and exits.

Standard library only, no package imports, and the heavier modules only when
cleaning up: it starts as a plain script in a few tens of milliseconds, and
``cleanup_stale`` reuses its functions.
"""

from __future__ import annotations

import os
import select
import signal
import sys
import time

__all__ = ["descendants", "kill_tree", "clean_server_dir", "unmount", "start_time", "same_process"]

PR_SET_CHILD_SUBREAPER = 36
KILL_DEADLINE_S = 1.5
"""How long killing a tree may take before the reaper moves on to unmounting."""


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first), None if gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            text = handle.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """When ``pid`` started (clock ticks since boot): with the pid, it names one process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


def same_process(pid: int | None, started: int | None) -> bool:
    """True when ``pid`` runs, is not a zombie, and is the process that started at ``started``."""
    fields = _stat(pid) if pid else None
    return bool(fields) and fields[0] != "Z" and (started is None or int(fields[19]) == started)


def descendants(root: int) -> list[int]:
    """Live (non-zombie) descendants of ``root``, parents before children."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields and fields[0] != "Z":
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, stack = [], [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _reap() -> None:
    """Collect every exited child of this process (orphans re-parented to a subreaper too)."""
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def signal_tree(root: int, sig: int) -> int:
    """Send ``sig`` to every live descendant of ``root``; returns how many got it."""
    sent = 0
    for pid in descendants(root):
        try:
            os.kill(pid, sig)
            sent += 1
        except (ProcessLookupError, PermissionError):
            pass
    return sent


def kill_tree(root: int, include_root: bool = False, deadline_s: float = KILL_DEADLINE_S) -> bool:
    """SIGKILL ``root``'s descendants (and ``root``) until none is left; False at the deadline.

    Rescans after each round, so processes forked meanwhile are caught too. Killed
    processes have no event to wait on: the rescan polls /proc, within a deadline.
    """
    end = time.monotonic() + deadline_s
    while True:
        targets = descendants(root) + ([root] if include_root and same_process(root, None) else [])
        if not targets:
            return True
        for pid in targets:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        if root == os.getpid():
            _reap()
        if time.monotonic() >= end:
            return False
        time.sleep(0.002)


def unmount(mountpoint: str) -> None:
    """Unmount a FUSE mount, lazily if it is busy; missing mounts are ignored."""
    import shutil
    import subprocess

    for argv in (["fusermount3", "-u", mountpoint], ["fusermount3", "-uz", mountpoint], ["umount", "-l", mountpoint]):
        if not os.path.ismount(mountpoint):
            return
        if shutil.which(argv[0]):
            subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _disconnected(path: str) -> bool:
    """True for a FUSE mount whose daemon is gone (``ismount`` says False: its stat fails with ENOTCONN)."""
    import errno

    try:
        os.stat(path)
    except OSError as exc:
        return exc.errno == errno.ENOTCONN
    return False


def clean_server_dir(run: str | os.PathLike[str]) -> list[str]:
    """Unmount what the server folder's owner.json lists, then remove the folder; one line per action."""
    import json
    import shutil

    done = []
    try:
        with open(os.path.join(run, "owner.json")) as handle:
            owner = json.load(handle)
    except (OSError, ValueError):
        owner = {}
    for mount in owner.get("mounts", []):
        if os.path.ismount(mount) or _disconnected(mount):
            unmount(mount)
            done.append(f"unmounted {mount}")
    for cgroup in owner.get("cgroups", []):  # empty once the tree is dead; a task may take a moment to leave
        deadline = time.monotonic() + KILL_DEADLINE_S
        while os.path.isdir(cgroup):
            try:
                os.rmdir(cgroup)
                done.append(f"removed cgroup {cgroup}")
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    break
                time.sleep(0.005)
    if os.path.lexists(run):
        shutil.rmtree(run, ignore_errors=True)
        done.append(f"removed {run}")
    return done


def _become_subreaper() -> None:
    import ctypes

    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass  # without it, orphans of the payload go to init; the payload's own tree is still killed


def _send(control: int, line: str) -> None:
    try:
        os.write(control, line.encode() + b"\n")
    except OSError:
        pass  # the host is gone: the end-of-file branch cleans up


def serve(run: str, control: int, argv: list[str]) -> int:
    """Run ``argv`` as a child and watch the host until the socket pair closes (see module doc)."""
    me = os.getpid()
    os.set_inheritable(control, False)  # the payload never sees the host's line
    _become_subreaper()
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the poll through wake_w
    signal.signal(signal.SIGINT, lambda *_: None)  # Ctrl-C is the payload's business; the reaper stays to clean
    for sig in (signal.SIGTERM, signal.SIGHUP):  # passed on to the tree; the reaper stays until the host's line ends
        signal.signal(sig, lambda *_: signal_tree(me, signal.SIGTERM))
    child: int | None = None
    try:  # posix_spawnp, not subprocess: a lighter start; what Python ignores is reset to the default
        child = os.posix_spawnp(argv[0], argv, os.environ, setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        _send(control, f"started {child} {start_time(child)}")
    except OSError as exc:
        _send(control, f"error {exc.strerror}: {exc.filename or argv[0]}")
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)  # the payload holds the pipes now: its exit alone closes them for the host
    os.dup2(null, 1)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_r, select.POLLIN)
    while True:
        for fd, _ in poller.poll():
            if fd == wake_r:
                while True:
                    try:
                        if not os.read(wake_r, 512):
                            break
                    except BlockingIOError:
                        break
                child = _child_exit(control, child, me)
                continue
            try:
                data = os.read(control, 64)
            except OSError:
                data = b""
            if not data:
                kill_tree(me)
                clean_server_dir(run)
                return 0
            if b"t" in data:
                signal_tree(me, signal.SIGTERM)
            if b"k" in data:
                kill_tree(me)
                child = _child_exit(control, child, me)


def _child_exit(control: int, child: int | None, me: int) -> int | None:
    """Reap exited children; when the payload is among them, kill its leftovers and report its status."""
    try:
        while True:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            if pid == child:
                kill_tree(me)  # what the payload left behind
                _send(control, f"exit {os.waitstatus_to_exitcode(status)}")
                child = None
    except ChildProcessError:
        pass
    return child


def main(args: list[str]) -> int:
    """``reaper.py RUN FD -- ARGV...``: RUN is the server folder, FD this side of the socket pair."""
    if len(args) < 4 or args[2] != "--":
        print("usage: reaper.py RUN FD -- ARGV...", file=sys.stderr)
        return 2
    return serve(args[0], int(args[1]), args[3:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
