"""Turn what a caller passes as a submission into CSV text, safely.

A submission is one of:

* ``str`` — the CSV text itself;
* ``bytes`` / ``bytearray`` — the CSV file's bytes (UTF-8, an optional BOM);
* ``os.PathLike`` (e.g. ``pathlib.Path``) or ``{"path": "relative/path"}``
  (the JSON-friendly form for remote calls) — a file inside the submissions
  root, opened relative to it one component at a time with ``O_NOFOLLOW``: no
  symlink is followed anywhere on the way, and only a regular file is read, its
  size checked with ``fstat`` before a byte is read, then read in bounded chunks.

Every failure becomes a :class:`~dacstyle.errors.SubmissionError` carrying one
``{code, message}`` item; messages never echo file contents.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path, PurePosixPath
from typing import Any, Union

from ..errors import SubmissionError
from .schema import error

__all__ = ["Submission", "open_beneath", "read_submission_file", "submission_text"]

Submission = Union[str, bytes, bytearray, "os.PathLike[str]", dict]
_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


def _fail(code: str, message: str) -> SubmissionError:
    return SubmissionError(message, [error(code, message)])


def _relative_parts(raw: Any, root: Path) -> list[str]:
    """The components of ``raw`` below ``root``, lexically (nothing on disk is looked at)."""
    try:
        text = os.fspath(raw)
    except TypeError as exc:
        raise _fail("bad_path", "the path must be a string") from exc
    if not isinstance(text, str) or not text or "\x00" in text:
        raise _fail("bad_path", "the path is empty or not a valid path")
    path = PurePosixPath(os.path.normpath(text))
    if path.is_absolute():
        try:
            path = path.relative_to(os.path.normpath(os.path.abspath(root)))
        except ValueError:
            raise _fail("bad_path", "the path leaves the submissions folder") from None
    parts = [part for part in path.parts if part != "."]
    if not parts or ".." in parts:
        raise _fail("bad_path", "the path leaves the submissions folder")
    return parts


def open_beneath(root: Path, parts: list[str]) -> int:
    """An fd of the regular file ``root/parts...``, following no symlink below ``root``.

    Each folder is opened with ``O_DIRECTORY|O_NOFOLLOW`` relative to the one
    above it, and the file with ``O_NOFOLLOW|O_NONBLOCK`` (a FIFO never blocks);
    anything but a regular file is refused before it is read.
    """
    try:
        current = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise _fail("bad_path", "the submissions folder cannot be opened") from exc
    try:
        for name in parts[:-1]:
            try:
                below = os.open(name, _DIR_FLAGS, dir_fd=current)
            except OSError as exc:
                raise _refusal(exc) from exc
            os.close(current)
            current = below
        try:
            mode = os.stat(parts[-1], dir_fd=current, follow_symlinks=False).st_mode
        except OSError as exc:
            raise _refusal(exc) from exc
        if not stat.S_ISREG(mode):  # never open a device or FIFO, not even to look at it
            raise _fail("bad_path", "the submission is not a regular file (a link, folder, FIFO or device)")
        try:
            return os.open(parts[-1], _FILE_FLAGS, dir_fd=current)
        except OSError as exc:
            raise _refusal(exc) from exc
    finally:
        os.close(current)


def _refusal(exc: OSError) -> SubmissionError:
    if exc.errno == errno.ENOENT:
        return _fail("missing", "the submission file does not exist")
    if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
        return _fail("bad_path", "the path goes through a symbolic link or a non-folder")
    return _fail("bad_path", "the submission file cannot be opened")


def read_submission_file(raw: Any, root: Path | None, limit: int) -> bytes:
    """The bytes of a regular file below ``root`` (no symlink followed), else SubmissionError."""
    if root is None:
        raise _fail("bad_path", "submitting by path is not enabled here; pass the CSV text or bytes")
    fd = open_beneath(root, _relative_parts(raw, root))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):  # swapped between the check and the open
            raise _fail("bad_path", "the submission is not a regular file (a link, folder, FIFO or device)")
        if info.st_size > limit:
            raise _fail("too_large", f"the submission is larger than {limit} bytes")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(_CHUNK, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:  # grew after the fstat
            raise _fail("too_large", f"the submission is larger than {limit} bytes")
        return b"".join(chunks)
    except OSError as exc:
        raise _fail("bad_path", "the submission file cannot be read") from exc
    finally:
        os.close(fd)


def submission_text(submission: Any, root: Path | None, limit: int) -> str:
    """Return the submission's CSV text, or raise SubmissionError with one structured item."""
    if isinstance(submission, str):
        if len(submission) > limit:  # a character is at least one byte
            raise _fail("too_large", f"the submission is larger than {limit} bytes")
        if len(submission.encode("utf-8", "surrogatepass")) > limit:
            raise _fail("too_large", f"the submission is larger than {limit} bytes")
        text = submission
    else:
        if isinstance(submission, (bytes, bytearray, memoryview)):
            data = bytes(submission)
        elif isinstance(submission, dict) and set(submission) == {"path"}:
            data = read_submission_file(submission["path"], root, limit)
        elif isinstance(submission, os.PathLike):
            data = read_submission_file(submission, root, limit)
        else:
            raise _fail("bad_type", "a submission is CSV text, bytes, a path or {'path': ...}")
        if len(data) > limit:
            raise _fail("too_large", f"the submission is larger than {limit} bytes")
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise _fail("not_utf8", f"the submission is not UTF-8 text (bad byte at offset {exc.start})") from exc
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text:
        raise _fail("bad_csv", "the submission contains NUL characters; is it a binary file?")
    return text
