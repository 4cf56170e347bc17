"""Turn what a caller passes as a submission into CSV text, safely.

A submission is one of:

* ``str`` — the CSV text itself;
* ``bytes`` / ``bytearray`` — the CSV file's bytes (UTF-8, an optional BOM);
* ``os.PathLike`` (e.g. ``pathlib.Path``) or ``{"path": "relative/or/absolute"}``
  (the JSON-friendly form for remote calls) — a file that must lie inside the
  allowed submissions root once every symlink is resolved.

Every failure becomes a :class:`~dacstyle.errors.SubmissionError` carrying one
``{code, message}`` item; messages never echo file contents.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Union

from ..errors import SubmissionError
from .schema import error

__all__ = ["MAX_SUBMISSION_BYTES", "Submission", "read_submission_file", "submission_text"]

MAX_SUBMISSION_BYTES = 16 * 1024 * 1024
"""Largest submission accepted, in bytes."""

Submission = Union[str, bytes, bytearray, "os.PathLike[str]", dict]


def _fail(code: str, message: str) -> SubmissionError:
    return SubmissionError(message, [error(code, message)])


def read_submission_file(raw: Any, root: Path | None, limit: int = MAX_SUBMISSION_BYTES) -> bytes:
    """The bytes of a regular file inside ``root`` (symlinks resolved), else SubmissionError."""
    if root is None:
        raise _fail("bad_path", "submitting by path is not enabled here; pass the CSV text or bytes")
    try:
        text = os.fspath(raw)
    except TypeError as exc:
        raise _fail("bad_path", "the path must be a string") from exc
    if not isinstance(text, str) or not text or "\x00" in text:
        raise _fail("bad_path", "the path is empty or not a valid path")
    base = root.resolve()
    candidate = Path(text) if os.path.isabs(text) else base / text
    try:
        resolved = candidate.resolve(strict=True)
    except (OSError, RuntimeError) as exc:
        raise _fail("bad_path", "the submission file does not exist") from exc
    if resolved != base and base not in resolved.parents:
        raise _fail("bad_path", "the path leaves the submissions folder")
    try:
        fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise _fail("bad_path", "the submission file cannot be opened") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _fail("bad_path", "the submission is not a regular file")
        if info.st_size > limit:
            raise _fail("too_large", f"the submission is larger than {limit} bytes")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError as exc:
        raise _fail("bad_path", "the submission file cannot be read") from exc
    finally:
        os.close(fd)


def submission_text(submission: Any, root: Path | None = None, limit: int = MAX_SUBMISSION_BYTES) -> str:
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
