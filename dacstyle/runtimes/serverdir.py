"""Private per-server folders on the host, and cleanup of what a killed host left.

A server folder is created 0700 under ``$XDG_RUNTIME_DIR/dacstyle`` or
``/tmp/dacstyle-$UID`` with a short random name (Unix socket paths must stay
under 108 bytes). Layout::

    RUN/host/          token (0600) and server.sock; bound into the container
    RUN/agent/         agent token and agent.sock (only for an agent endpoint)
    RUN/server.log     the server's stderr (host side only)
    RUN/owner.json     node; host, reaper and payload pids (with start times); mounts, cgroups: what ``cleanup`` needs

While the host lives, the run's reaper (:mod:`dacstyle.runtimes.reaper`) removes
the folder when the host stops the run or dies; :func:`cleanup_stale` removes
what is left when even the reaper could not (``dacstyle cleanup``, and every
new launch sweeps).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ContainerError
from .reaper import clean_server_dir, kill_tree, same_process, start_time, unmount

__all__ = ["ServerDir", "servers_root", "cleanup_stale", "process_alive", "unmount", "write_private"]

_NEW_RUN_GRACE_S = 60.0
"""A folder without owner.json younger than this is a run being created, not a leftover."""


def servers_root() -> Path:
    """The per-user folder that holds server folders (created 0700, ownership checked).

    ContainerError when it cannot be made or belongs to someone else.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base) and os.access(base, os.W_OK):
        root = Path(base) / "dacstyle"
    else:
        root = Path(tempfile.gettempdir()) / f"dacstyle-{os.getuid()}"
    try:
        root.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(root)
    except OSError as exc:
        raise ContainerError(f"cannot make the server folders' root {root}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise ContainerError(f"{root} is not a folder owned by you; refusing to use it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        os.chmod(root, 0o700)
    return root


@dataclass
class ServerDir:
    """One run's private folder with its tokens, sockets, log and owner record."""

    path: Path
    owner: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def create(cls, root: Path | None = None, agent: bool = False) -> "ServerDir":
        """Make a new server folder with fresh random tokens.

        ContainerError when it cannot be made (full or read-only disk); nothing half-made stays.
        """
        root = root or servers_root()
        path = root / secrets.token_hex(4)
        try:
            path.mkdir(mode=0o700)
        except OSError as exc:
            raise ContainerError(f"cannot make a server folder in {root}: {exc.strerror}") from exc
        folder = cls(path)
        try:
            for side in ("host", "agent") if agent else ("host",):
                (path / side).mkdir(mode=0o700)
                folder.write_secret(f"{side}/token", secrets.token_urlsafe(32))
            folder.record(node=os.uname().nodename, host_pid=os.getpid(), host_start=start_time(os.getpid()), mounts=[])
        except OSError as exc:
            folder.remove()
            raise ContainerError(f"cannot write the server folder {path}: {exc.strerror}") from exc
        return folder

    @classmethod
    def open(cls, path: str | Path) -> "ServerDir":
        """The existing server folder at ``path`` (a Slurm job's, made by its host), with its owner record.

        ContainerError when it is not a folder of this user that only they can enter.
        """
        path = Path(path)
        try:
            info = os.lstat(path)
            owner = json.loads((path / "owner.json").read_text())
        except (OSError, ValueError) as exc:
            raise ContainerError(f"{path} is not a dacstyle server folder: {exc}") from exc
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise ContainerError(f"{path} must be a folder of yours with mode 0700")
        return cls(path, owner)

    def write_secret(self, name: str, value: str) -> Path:
        """Create ``name`` in the server folder, mode 0600 from the start, holding ``value``."""
        target = self.path / name
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(value)
        return target

    @property
    def has_agent(self) -> bool:
        return (self.path / "agent").is_dir()

    def token(self, side: str = "host") -> str:
        """The token of one endpoint (read from its 0600 file)."""
        return (self.path / side / "token").read_text().strip()

    @property
    def log_path(self) -> Path:
        """The server's stderr: ``server.log`` inside, or the job's log a Slurm job's folder names."""
        return Path(self.owner["log"]) if self.owner.get("log") else self.path / "server.log"

    def record(self, **fields: Any) -> None:
        """Update owner.json atomically (what cleanup reads after a crash)."""
        self.owner.update(fields)
        tmp = self.path / "owner.json.tmp"
        tmp.write_text(json.dumps(self.owner))
        os.replace(tmp, self.path / "owner.json")

    def log_tail(self, max_bytes: int = 4000) -> str:
        """The last part of the server's stderr."""
        try:
            with open(self.log_path, "rb") as handle:
                handle.seek(0, os.SEEK_END)
                handle.seek(max(0, handle.tell() - max_bytes))
                return handle.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""

    def remove(self) -> None:
        """Delete the folder and everything in it."""
        shutil.rmtree(self.path, ignore_errors=True)


def process_alive(pid: int | None) -> bool:
    """True when ``pid`` runs and is not a zombie."""
    return same_process(pid, None)


def cleanup_stale(root: Path | None = None, force: bool = False) -> list[str]:
    """Remove runs whose host process is gone: kill their processes, unmount, delete folders.

    Returns one line per thing removed. ``force`` also removes runs whose host is
    alive (use only when no dacstyle run is in progress). Runs another node
    recorded (a shared folder) are never touched: their pids mean nothing here.
    """
    root = root or servers_root()
    node = os.uname().nodename
    done: list[str] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        try:
            owner = json.loads((folder / "owner.json").read_text())
        except (OSError, ValueError):
            try:
                if not force and time.time() - folder.stat().st_mtime < _NEW_RUN_GRACE_S:
                    continue
            except OSError:
                continue
            owner = {}
        if owner.get("node", node) != node:
            continue
        if not force and same_process(owner.get("host_pid"), owner.get("host_start")):
            continue
        for role, pid, started in (("reaper", owner.get("reaper_pid"), owner.get("reaper_start")),
                                   ("payload", owner.get("pid"), owner.get("pid_start"))):
            if same_process(pid, started):
                kill_tree(pid, include_root=True)
                done.append(f"killed {role} process {pid} and its children")
        done += clean_server_dir(folder)
    return done


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (tmp + rename), mode 0600 from the start, replacing an older file."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(tmp, path)
