"""Files in a folder someone else might reach: trust checks, no-follow opens, exclusive creation, locks.

The image cache's rules. A private cache (the default) must be a real folder
owned by you and writable by nobody else, down to each subfolder; anything
else is refused with :class:`~dacstyle.errors.CacheTrustError`. A shared
(group) cache, asked for explicitly (``config.shared_cache``), may be group
writable, but never world writable, and its group-writable subfolders must be
sticky (``chmod +t``) so that members cannot rename or delete each other's
files. Either way every file is created with ``O_CREAT|O_EXCL|O_NOFOLLOW`` and
every existing file is opened with ``O_NOFOLLOW|O_NONBLOCK`` and checked with
``fstat`` (a regular file, one link, owned by you when it will be written), so
a planted symlink, hard link or FIFO is never followed into someone else's file.
A failed write (read-only folder, full disk, quota, file-size limit) is a
:class:`~dacstyle.errors.CacheError`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import time
from pathlib import Path
from typing import Iterator

from ..errors import CacheError, CacheTrustError

__all__ = ["check_root", "make_folder", "create_file", "replace_file", "open_existing", "flocked",
           "write_error"]

_NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
_ADVICE = "chmod go-w {path}, or set DACSTYLE_SHARED_CACHE=1 if a group shares it on purpose"


def write_error(path: Path, exc: OSError) -> CacheError:
    """The typed error for a failed create or write under the cache (read-only, full, quota)."""
    if exc.errno in (errno.ELOOP, errno.EEXIST, errno.EPERM):
        return CacheTrustError(f"refusing {path}: something else is there ({exc.strerror}); "
                               "another user may have planted it")
    reason = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is exhausted",
              errno.EFBIG: "the file-size limit was reached", errno.EROFS: "the file system is read-only",
              errno.EACCES: "permission denied"}.get(exc.errno or 0, exc.strerror or str(exc))
    return CacheError(f"cannot write {path}: {reason}")


def _trust_problem(path: Path, info: os.stat_result, shared: bool, sticky_needed: bool) -> str | None:
    mode = stat.S_IMODE(info.st_mode)
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    if mode & stat.S_IWOTH:
        return f"is writable by every user (mode {mode:o})"
    if shared:
        if sticky_needed and mode & stat.S_IWGRP and not mode & stat.S_ISVTX:
            return f"is group writable without the sticky bit (mode {mode:o}): chmod +t {path}"
        return None
    if info.st_uid != os.geteuid():
        return f"belongs to uid {info.st_uid}, not to you (uid {os.geteuid()})"
    if mode & stat.S_IWGRP:
        return f"is writable by its group (mode {mode:o})"
    return None


def check_root(root: Path, *, shared: bool) -> None:
    """Refuse (CacheTrustError) a cache folder, or a folder above it, that others could change.

    Folders above the cache may be writable by others only when sticky (like /tmp).
    """
    for parent in reversed(root.parents):
        try:
            info = os.stat(parent)
        except FileNotFoundError:
            break
        if info.st_mode & stat.S_IWOTH and not info.st_mode & stat.S_ISVTX:
            raise CacheTrustError(f"image cache {root}: the folder {parent} above it is writable by every "
                                  "user without the sticky bit; use a cache folder elsewhere")
    try:
        info = os.lstat(root)
    except FileNotFoundError:
        return
    problem = _trust_problem(root, info, shared, sticky_needed=False)
    if problem:
        advice = ("" if "symlink" in problem or "folder" in problem
                  else f"; chmod o-w {root} (no cache may be world-writable)" if "every user" in problem
                  else "; " + _ADVICE.format(path=root))
        raise CacheTrustError(f"image cache {root} {problem}{advice}")


def make_folder(path: Path, *, shared: bool, sticky: bool = True) -> None:
    """Create ``path`` (and missing parents up to the cache root) if needed, then check it.

    In a shared cache the group inherits the folder (setgid) and, with ``sticky``, members
    cannot rename or delete each other's files; the root is not sticky, since every member
    replaces the one index file there.
    """
    mode = (0o3775 if sticky else 0o2775) if shared else 0o755
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(path, exc) from exc
    info = os.lstat(path)
    if shared and info.st_uid == os.geteuid() and stat.S_IMODE(info.st_mode) != mode:
        os.chmod(path, mode)  # mkdir's mode passes through the umask and never sets the sticky bit
        info = os.lstat(path)
    problem = _trust_problem(path, info, shared, sticky_needed=sticky)
    if problem:
        raise CacheTrustError(f"image cache folder {path} {problem}")


def create_file(path: Path, mode: int = 0o600) -> int:
    """A new file at ``path`` opened read-write; never follows or reuses what is there."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    except OSError as exc:
        raise write_error(path, exc) from exc


def replace_file(path: Path, mode: int = 0o600) -> int:
    """Remove whatever entry ``path`` names (a symlink is removed, not followed), then create_file."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise CacheTrustError(f"cannot remove {path} ({exc.strerror}); another user may own it") from exc
    return create_file(path, mode)


def open_existing(path: Path, flags: int = os.O_RDONLY, *, own: bool = False) -> int | None:
    """An existing regular file opened without following a symlink, or None when it is unusable.

    Unusable: missing, a symlink, not a regular file, hard-linked elsewhere, or (with
    ``own``, for files that will be written) owned by someone else.
    """
    try:
        fd = os.open(path, flags | _NOFOLLOW)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENXIO, errno.EACCES, errno.EISDIR):
            return None
        raise write_error(path, exc) from exc
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or (own and info.st_uid != os.geteuid()):
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def flocked(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path``; a symlink or non-file there is a CacheTrustError.

    Raises TimeoutError after ``timeout`` seconds (flock has no timeout: it is polled).
    """
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o644)
    except FileExistsError:
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        except OSError as exc:
            raise CacheTrustError(f"lock file {path} is a symlink or unreadable ({exc.strerror}); "
                                  "remove it if nobody planted it on purpose") from exc
    except OSError as exc:
        raise write_error(path, exc) from exc
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise CacheTrustError(f"lock file {path} is not a regular file; remove it")
        deadline, pause = time.monotonic() + timeout, 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{path} is held by another process") from None
                time.sleep(pause)  # flock offers no timeout; poll with a growing pause
                pause = min(pause * 2, 0.05)
        yield
    finally:
        os.close(fd)
