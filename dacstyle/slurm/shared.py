"""The shared folder Slurm jobs and their host meet in, and the files they publish there.

``shared_dir`` (checked by :func:`shared_root`) holds a private folder per job
component; a job publishes its address there (:func:`publish_file`, read back
by :func:`published`) and the host of an LLM service rewrites its heartbeat
file there. Only the standard library and dacstyle's settings: the job imports
this before anything else.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

from ..config import config
from ..errors import SlurmError
from ..runtimes.serverdir import write_private

__all__ = ["shared_root", "published", "publish_file", "ADDRESS_FILE", "HEARTBEAT_FILE"]

ADDRESS_FILE = "address.json"
HEARTBEAT_FILE = "heartbeat"
"""What a host rewrites while it needs an LLM service (a model server has no dacstyle call to count)."""


def shared_root() -> Path:
    """The ``shared_dir`` setting, checked: set, a folder of this user, nobody else may write, not node-local.

    SlurmError saying what to set otherwise.
    """
    if config.shared_dir is None:
        raise SlurmError("Slurm placement needs the setting shared_dir (DACSTYLE_SHARED_DIR): a folder of yours "
                         "that every node of the cluster sees, e.g. on $HOME or the cluster's work file system")
    root = Path(config.shared_dir).expanduser().absolute()
    try:
        root.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(root)
    except OSError as exc:
        raise SlurmError(f"shared_dir {root}: {exc.strerror}") from exc
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise SlurmError(f"shared_dir {root} must be a folder owned by you (not a link, not someone else's)")
    if info.st_mode & 0o022:
        raise SlurmError(f"shared_dir {root} is writable by others (mode {stat.S_IMODE(info.st_mode):o}): chmod go-w it")
    fstype = _fs_type(root)
    if fstype in ("tmpfs", "ramfs", "devtmpfs"):
        raise SlurmError(f"shared_dir {root} is on {fstype}, which only this node sees: use a shared file system")
    for sub in ("servers", "logs"):
        (root / sub).mkdir(mode=0o700, exist_ok=True)
    return root


def _fs_type(path: Path) -> str:
    """The file-system type of the mount holding ``path`` (from /proc/mounts; '' when unknown)."""
    best, kind = "", ""
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return ""
    target = str(path.resolve())
    for line in lines:
        parts = line.split()
        if len(parts) >= 3 and (target == parts[1] or target.startswith(parts[1].rstrip("/") + "/")) \
                and len(parts[1]) >= len(best):
            best, kind = parts[1], parts[2]
    return kind


def published(folder: Path) -> dict[str, Any] | None:
    """The address a job published in ``folder`` (a 0600 file of this user), or None while there is none."""
    path = folder / ADDRESS_FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd) as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise SlurmError(f"{path} is not a 0600 file of yours: refusing an address someone else could have written")
        return dict(json.loads(handle.read()))


def publish_file(path: Path, data: Any) -> None:
    """Write ``data`` as JSON to ``path`` atomically (tmp + rename), mode 0600 from the start."""
    write_private(path, json.dumps(data).encode())
