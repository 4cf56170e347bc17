"""HTTP(S) downloads into a resumable ``.part`` file: Range resume, retries, mirrors, progress.

:func:`fetch` streams a URL (or the first of several mirrors that works) into a
partial file while hashing it in the same pass. A transfer that breaks keeps its
``.part`` file and a small ``.part.json`` beside it (URL, ETag, Last-Modified,
length), so the next attempt - in this process or a later one - asks for the
rest with ``Range`` + ``If-Range`` instead of starting from zero. Transient
failures (connection errors, truncated bodies, 408/429/5xx) are retried with
bounded exponential backoff; a permanent one (other 4xx, wrong digest) moves to
the next mirror. All failures end in one :class:`~dacstyle.errors.DownloadError`
(or ``DigestMismatchError``) that lists what each mirror answered.

The partial file is only ever reopened when it is this user's own regular file
(``O_NOFOLLOW``, one link); anything else there (a planted symlink, a hard link
to someone's file) is removed, not followed, and a fresh file is created with
``O_EXCL|O_NOFOLLOW``. A failed write (full disk, read-only folder, quota) is a
:class:`~dacstyle.errors.CacheError` (the caller, :func:`~dacstyle.images.pull`, deletes the partial file).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import queue
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import requests
import urllib3

from ..config import config
from ..errors import ConfigError, DigestMismatchError, DownloadError
from .cachefs import open_existing, replace_file, write_error

__all__ = ["RetryPolicy", "fetch", "drop_partial", "progress_enabled", "make_progress"]

CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try one mirror: ``attempts`` tries, sleeping ``backoff * factor**n`` (capped)."""

    attempts: int = 4
    backoff: float = 0.5
    factor: float = 2.0
    max_backoff: float = 10.0
    timeout: float = 30.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (0-based)."""
        return min(self.max_backoff, self.backoff * self.factor**attempt)


class _Transient(Exception):
    """Worth retrying on the same mirror."""


class _Permanent(Exception):
    """Move on to the next mirror."""


def progress_enabled(setting: str | bool | None = None) -> bool:
    """Whether to draw a progress bar: ``always``/``never``/``auto`` (terminal or notebook)."""
    value = config.progress if setting is None else setting
    if isinstance(value, bool):
        return value
    if value == "always":
        return True
    if value == "never":
        return False
    if value != "auto":
        raise ConfigError(f"progress={value!r}: use auto, always or never")
    if "ipykernel" in sys.modules:
        return True
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


def make_progress(total: int | None, desc: str, initial: int = 0, enabled: bool = False) -> Any:
    """A tqdm bar (terminal or notebook) counting bytes, or a silent stand-in."""
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                miniters=1, leave=False)


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def reset(self, total: int | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def fetch(
    urls: str | Sequence[str],
    part: Path,
    *,
    sha256: str | None = None,
    size: int | None = None,
    session: requests.Session | None = None,
    retry: RetryPolicy | None = None,
    progress: str | bool | None = None,
    desc: str = "",
) -> str:
    """Download the first working mirror of ``urls`` into ``part``; return its sha256 hex.

    On success ``part`` holds the whole body, checked against ``sha256`` and ``size``
    when given. On failure ``part`` is kept if it may be resumed (or deleted when its
    content is known to be wrong) and DownloadError / DigestMismatchError is raised.
    """
    mirrors = [urls] if isinstance(urls, str) else list(urls)
    if not mirrors:
        raise DownloadError("no URL to download from")
    retry = retry or RetryPolicy()
    own_session = session is None
    session = session or requests.Session()
    try:
        part.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(part.parent, exc) from exc
    failures: list[str] = []
    mismatches = 0
    bar = make_progress(size, desc or part.name, enabled=progress_enabled(progress))
    try:
        for url in mirrors:
            for attempt in range(retry.attempts):
                try:
                    digest, length = _attempt(session, url, part, sha256, size, retry.timeout, bar)
                except _Transient as exc:
                    failures.append(f"{url}: {exc}")
                    if attempt + 1 < retry.attempts:
                        time.sleep(retry.delay(attempt))
                    continue
                except _Permanent as exc:
                    failures.append(f"{url}: {exc}")
                    break
                if size is not None and length != size:
                    drop_partial(part)
                    failures.append(f"{url}: got {length} bytes, expected {size}")
                    mismatches += 1
                    break
                if sha256 is not None and digest != sha256:
                    drop_partial(part)
                    failures.append(f"{url}: sha256 {digest}, expected {sha256}")
                    mismatches += 1
                    break
                _meta_path(part).unlink(missing_ok=True)
                return digest
    finally:
        bar.close()
        if own_session:
            session.close()
    detail = "\n  ".join(failures)
    if mismatches == len(mirrors):
        raise DigestMismatchError(f"every source served other content than pinned:\n  {detail}")
    raise DownloadError(f"download failed after {retry.attempts} attempt(s) per mirror:\n  {detail}")


def _meta_path(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def drop_partial(part: Path) -> None:
    """Delete a partial download and its resume record (unlink never follows a symlink)."""
    for path in (part, _meta_path(part)):
        try:
            path.unlink()
        except OSError:
            pass  # missing, or another user's entry we may not remove (never ours to clean)


def _read_meta(part: Path) -> dict:
    fd = open_existing(_meta_path(part))
    if fd is None:
        return {}
    with os.fdopen(fd, "rb") as handle:
        try:
            meta = json.loads(handle.read(1 << 16))
        except ValueError:
            return {}
    return meta if isinstance(meta, dict) else {}


def _write_meta(part: Path, meta: dict) -> None:
    path = _meta_path(part)
    with os.fdopen(replace_file(path), "w") as handle:
        try:
            handle.write(json.dumps(meta))
        except OSError as exc:
            raise write_error(path, exc) from exc


def _open_part(part: Path) -> int:
    """``part`` opened read-write: this user's own regular file to resume, else a new empty one."""
    fd = open_existing(part, os.O_RDWR, own=True)
    if fd is None:
        _meta_path(part).unlink(missing_ok=True)
        fd = replace_file(part)
    return fd


def _attempt(session: requests.Session, url: str, part: Path, sha256: str | None, size: int | None,
             timeout: float, bar: Any) -> tuple[str, int]:
    """One request: resume ``part`` if possible, append the body, return (sha256 hex, length)."""
    fd = _open_part(part)
    try:
        return _attempt_into(fd, session, url, part, sha256, size, timeout, bar)
    finally:
        os.close(fd)


def _attempt_into(fd: int, session: requests.Session, url: str, part: Path, sha256: str | None,
                  size: int | None, timeout: float, bar: Any) -> tuple[str, int]:
    offset = os.fstat(fd).st_size
    meta = _read_meta(part)
    headers = {"Accept-Encoding": "identity"}
    if offset and meta.get("url") != url and sha256 is None:
        offset = 0  # another source and no digest: nothing proves the bytes belong together
    if offset:
        headers["Range"] = f"bytes={offset}-"
        validator = meta.get("etag") if not str(meta.get("etag", "")).startswith("W/") else None
        validator = validator or meta.get("last_modified")
        if validator and meta.get("url") == url:
            headers["If-Range"] = validator
    try:
        response = session.get(url, headers=headers, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    with response:
        status = response.status_code
        if status == 416 and offset and offset in (size, meta.get("total")):
            return _hash_prefix(fd, offset).hexdigest(), offset  # the part was already complete
        if status == 416:
            drop_partial(part)
            raise _Transient("416 range not satisfiable; restarting from zero")
        if status in (408, 429) or status >= 500:
            raise _Transient(f"HTTP {status} {response.reason}")
        if status >= 400:
            raise _Permanent(f"HTTP {status} {response.reason}")
        if status not in (200, 206):
            raise _Permanent(f"unexpected HTTP {status} {response.reason}")
        length = response.headers.get("Content-Length")
        expected_body = int(length) if length and length.isdigit() else None
        if status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
            total = int(match.group(3)) if match and match.group(3) != "*" else None
            if not match or int(match.group(1)) != offset or (meta.get("total") and total != meta["total"]):
                drop_partial(part)
                raise _Transient("server answered a different range; restarting from zero")
        else:
            offset = 0
            total = expected_body
        if size is not None and total is not None and total != size:
            raise _Permanent(f"server offers {total} bytes, expected {size}")
        _write_meta(part, {"url": url, "etag": response.headers.get("ETag"),
                           "last_modified": response.headers.get("Last-Modified"), "total": total})
        state = _hash_prefix(fd, offset) if offset else hashlib.sha256()
        hasher = _Hasher(state) if _SPARE_CORES else _InlineHasher(state)
        bar.reset(total=total)
        bar.update(offset)
        received = 0
        raw = response.raw
        with hasher:
            try:
                os.ftruncate(fd, offset)
            except OSError as exc:
                raise write_error(part, exc) from exc
            position = offset
            while True:
                try:
                    chunk = raw.read(CHUNK, decode_content=False)
                except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as exc:
                    raise _Transient(f"transfer broke after {offset + received} bytes ({type(exc).__name__})") from exc
                if not chunk:
                    break
                hasher.update(chunk)
                try:
                    view = memoryview(chunk)
                    while view:
                        written = os.pwrite(fd, view, position)
                        view, position = view[written:], position + written
                except OSError as exc:
                    raise write_error(part, exc) from exc
                received += len(chunk)
                bar.update(len(chunk))
        if expected_body is not None and received != expected_body:
            raise _Transient(f"body truncated: {received} of {expected_body} bytes")
        return hasher.hexdigest(), offset + received


def _hash_prefix(fd: int, length: int) -> "hashlib._Hash":
    """sha256 state over the first ``length`` bytes already in the open partial file."""
    digest = hashlib.sha256()
    done = 0
    while done < length and (chunk := os.pread(fd, min(CHUNK, length - done), done)):
        digest.update(chunk)
        done += len(chunk)
    return digest


# A second core lets hashing overlap receiving and writing (measured on 2 cores: 0.36-0.52 of a plain
# GET with the helper thread against 0.30-0.36 inline, perf/bench_download.py on raw loopback).
_SPARE_CORES = len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1) > 1


class _InlineHasher:
    """sha256 in the receiving thread (on one core a helper thread only adds contention)."""

    def __init__(self, digest: "hashlib._Hash") -> None:
        self._digest = digest
        self.update = digest.update

    def __enter__(self) -> "_InlineHasher":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def hexdigest(self) -> str:
        return self._digest.hexdigest()


class _Hasher:
    """sha256 in a helper thread, so hashing overlaps receiving and writing (hashlib drops the GIL).

    Chunks are hashed in order; ``hexdigest()`` is valid after the ``with`` block.
    """

    def __init__(self, digest: "hashlib._Hash") -> None:
        self._digest = digest
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self._thread = threading.Thread(target=self._run, name="dacstyle-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (chunk := self._queue.get()) is not None:
            self._digest.update(chunk)

    def update(self, chunk: bytes) -> None:
        self._queue.put(chunk)

    def __enter__(self) -> "_Hasher":
        return self

    def __exit__(self, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()

    def hexdigest(self) -> str:
        return self._digest.hexdigest()
