"""Large arrays between host and server on one node: one file each in the server's shared area.

The area is a 0700 folder ``arrays`` beside the server's Unix socket, inside the server
folder's ``host/`` (so it is bound into the container); the server makes it with the
first large array it sends, and the host writes there only once it exists. While an
area is in use (:func:`using`), :func:`dacstyle.codec.encode` writes an array of at least
:data:`THRESHOLD` bytes there as one 0600 file with a random name, and the frame
carries ``{"__shm__": [name, descr, shape, size]}``; the other side's
:meth:`ArrayArea.take` validates the reference before reading a byte (a plain
random name in this area, no link, a regular file of this user that nobody else can
read, exactly ``size`` bytes, ``size`` equal to dtype x shape) and removes the file.
Without an area (a TCP channel across nodes) arrays travel inline in the frame.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
import secrets
import stat
from pathlib import Path

import numpy as np

__all__ = ["ArrayArea", "THRESHOLD", "using", "current_area", "area_for"]

THRESHOLD = 64 * 1024
"""Arrays of at least this many bytes travel through the area when one is in use."""

_NAME = re.compile(r"[0-9a-f]{32}")
_current: contextvars.ContextVar["ArrayArea | None"] = contextvars.ContextVar("dacstyle_array_area", default=None)


class ArrayArea:
    """A folder of one-shot array files shared by the host and one server."""

    def __init__(self, folder: str | Path, create: bool = False, max_bytes: int = 256 * 1024 * 1024) -> None:
        self.folder = Path(folder)
        self.max_bytes = max_bytes  # the channel's frame limit: larger arrays go inline, and are refused there
        self._create = create  # the server's side makes the folder with its first large array
        self._ready = False

    def put(self, array: np.ndarray) -> str | None:
        """Write ``array`` (C order) to a new 0600 file; returns its name, or None to send it inline.

        The host's side uses the area only once the server has made it: a server (or an
        endpoint) that makes none never receives a reference it cannot read.
        """
        if not self._ready:
            if self._create:
                self.folder.mkdir(mode=0o700, exist_ok=True)
            elif not self.folder.is_dir():
                return None
            self._ready = True
        name = secrets.token_hex(16)
        fd = os.open(self.folder / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            view = memoryview(np.ascontiguousarray(array)).cast("B")
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
        return name

    def take(self, name: object, size: int) -> bytearray:
        """The ``size`` bytes of the array file ``name``, validated, then removed.

        ValueError when the reference points outside the area or the file is not what it claims.
        """
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ValueError(f"shared array reference {str(name)[:80]!r} points outside the area")
        if type(size) is not int or not 0 <= size <= self.max_bytes:
            raise ValueError(f"shared array {name} of {size} bytes is over the {self.max_bytes}-byte limit")
        path = self.folder / name
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as exc:
            raise ValueError(f"shared array {name} cannot be opened: {exc.strerror}") from exc
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
                raise ValueError(f"shared array {name} is not a private file of this user")
            if info.st_size != size:
                raise ValueError(f"shared array {name} holds {info.st_size} bytes, the reference says {size}")
            data = bytearray(size)
            view, done = memoryview(data), 0
            while done < size:
                read = os.readv(fd, [view[done:]])
                if read == 0:
                    raise ValueError(f"shared array {name} ended early")
                done += read
            return data
        finally:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(path)


def area_for(location: str, max_bytes: int) -> ArrayArea | None:
    """The area beside the Unix socket of a channel ``location`` (used once the server made it); None over TCP."""
    kind, _, address = location.partition(":")
    return ArrayArea(Path(address).parent / "arrays", max_bytes=max_bytes) if kind == "unix" else None


def current_area() -> ArrayArea | None:
    """The area the codec uses in this thread or task, if any."""
    return _current.get()


class using:  # noqa: N801 - used like a function: ``with using(area): ...``
    """Let the codec use ``area`` (None: inline arrays) within the block; a plain class, it costs well under 1 us."""

    __slots__ = ("_area", "_token")

    def __init__(self, area: ArrayArea | None) -> None:
        self._area = area

    def __enter__(self) -> None:
        self._token = _current.set(self._area)

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)
