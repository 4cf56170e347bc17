"""The per-user image cache: content-addressed, atomic, shared safely between processes.

Layout under ``config.cache_dir`` (``DACSTYLE_CACHE`` or the platform cache folder)::

    blobs/sha256/<hex>.sif     verified images, never modified once renamed in place
    tmp/<key>.part[.json]      downloads in progress (kept on failure, for resume)
    locks/<key>.lock           one lock per reference: N processes download once
    index.json                 ref -> digest, digest -> size, mtime, refs (replaced atomically)

Trust (see :mod:`dacstyle.images.cachefs`): a private cache must be yours and
writable by nobody else, or it is refused; a shared (group) cache is allowed
only when configured (``config.shared_cache``). In a private cache a hit costs
one small JSON read, one ``lstat`` and a SIF header check: the sha256 is
recomputed only when the file's size, mtime, ctime or inode differ from the
recorded ones (a swapped file or one rewritten in place, even with its mtime
restored, changes its ctime), or when asked. In a shared cache another member
can rewrite the index, so every use re-hashes the image.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..config import config
from ..errors import CacheError, CacheTrustError, DigestMismatchError, DownloadError, ImageFormatError, ImageNotFoundError
from .cachefs import check_root, flocked, make_folder, open_existing, write_error

__all__ = ["CachedImage", "ImageCache", "hash_file", "verify_sif", "CHUNK"]

CHUNK = 1 << 20
_INDEX_VERSION = 1
_INDEX_LIMIT = 64 << 20  # a larger index is treated as damaged (bounded memory)
_DIGEST = re.compile(r"[0-9a-f]{64}")


def hash_file(path: Path) -> str:
    """The sha256 of a file as 64 hex digits (1 MiB reads)."""
    with open(path, "rb") as handle:
        return _hash_handle(handle)


def _hash_handle(handle) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _fingerprint(info: os.stat_result) -> dict:
    """What a private cache compares instead of re-hashing: ctime and inode cannot be set back."""
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns,
            "ino": info.st_ino}


def verify_sif(path: Path) -> None:
    """Check the SIF structure (header + descriptors, no hashing); ImageFormatError if bad."""
    from .sif import verify_image  # lazy: the SIF reader is a sibling module

    verify_image(path)


@dataclass(frozen=True)
class CachedImage:
    """One verified image in the cache."""

    path: Path
    sha256: str
    size: int
    refs: tuple[str, ...] = ()

    @property
    def digest(self) -> str:
        """``sha256:<hex>``, the OCI spelling."""
        return f"sha256:{self.sha256}"


class ImageCache:
    """Content-addressed SIF cache rooted at ``root`` (default: ``config.cache_dir``).

    ``shared`` (default: ``config.shared_cache``) allows a group-writable folder and
    re-hashes every image on every use.
    """

    def __init__(self, root: Path | str | None = None, *, lock_timeout: float = 3600.0,
                 shared: bool | None = None) -> None:
        self.root = Path(os.path.realpath(root if root is not None else config.cache_dir))
        self.lock_timeout = lock_timeout
        self.shared = config.shared_cache if shared is None else shared

    # -- paths -------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def blob_path(self, sha256: str) -> Path:
        """Where the image with this digest lives (whether or not it exists); never outside the cache."""
        if not _DIGEST.fullmatch(sha256):
            raise CacheTrustError(f"{sha256!r} is not a sha256 digest; refusing it as a path in {self.root}")
        return self.root / "blobs" / "sha256" / f"{sha256}.sif"

    def part_path(self, key: str) -> Path:
        """The resumable partial download for a reference key."""
        return self.root / "tmp" / f"{_key_hash(key)}.part"

    @contextlib.contextmanager
    def lock(self, key: str) -> Iterator[None]:
        """Hold the inter-process lock of one reference (flock: also across nodes of a shared FS)."""
        self._ensure()
        path = self.root / "locks" / f"{_key_hash(key)}.lock"
        try:
            with flocked(path, self.lock_timeout):
                yield
        except TimeoutError as exc:
            raise DownloadError(f"waited {self.lock_timeout:.0f} s for another process fetching {key} "
                                f"(lock {path}); if none is running, delete the lock file") from exc

    def _ensure(self) -> None:
        """Create the cache's folders where missing and check that nobody else can change them."""
        check_root(self.root, shared=self.shared)
        make_folder(self.root, shared=self.shared, sticky=False)
        for sub in ("blobs", "blobs/sha256", "tmp", "locks"):
            make_folder(self.root / sub, shared=self.shared)

    # -- index -------------------------------------------------------------------
    def _read_index(self) -> dict:
        check_root(self.root, shared=self.shared)
        data: dict = {}
        fd = open_existing(self.index_path)
        if fd is not None:
            with os.fdopen(fd, "rb") as handle:
                raw = handle.read(_INDEX_LIMIT + 1)
            try:
                data = json.loads(raw) if len(raw) <= _INDEX_LIMIT else {}
            except ValueError:
                data = {}  # a damaged index is rebuilt from scratch; blobs stay content-addressed
        if not isinstance(data, dict) or data.get("version") != _INDEX_VERSION:
            data = {}
        refs, blobs = data.get("refs"), data.get("blobs")
        return {"version": _INDEX_VERSION,  # only digests, never paths: a shared index is someone else's text
                "refs": {k: v for k, v in refs.items() if isinstance(v, str) and _DIGEST.fullmatch(v)}
                if isinstance(refs, dict) else {},
                "blobs": {k: v for k, v in blobs.items() if _DIGEST.fullmatch(k) and isinstance(v, dict)}
                if isinstance(blobs, dict) else {}}

    def _update_index(self, change) -> dict:
        """Apply ``change(index)`` under the index lock, then replace the file atomically."""
        self._ensure()
        try:
            with flocked(self.root / "locks" / "index.lock", 60):
                index = self._read_index()
                change(index)
                self._write_index(index)
        except TimeoutError as exc:
            raise CacheError(f"waited 60 s for the index lock of {self.root}") from exc
        return index

    def _write_index(self, index: dict) -> None:
        try:
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".index.", suffix=".tmp")  # O_EXCL|O_NOFOLLOW
        except OSError as exc:
            raise write_error(self.root / ".index.tmp", exc) from exc
        try:
            os.fchmod(fd, 0o644)  # readable by a shared cache's group
            with os.fdopen(fd, "w") as handle:
                json.dump(index, handle, indent=1, sort_keys=True)
            os.replace(tmp, self.index_path)
        except OSError as exc:
            os.unlink(tmp)
            raise write_error(self.index_path, exc) from exc

    # -- lookups -----------------------------------------------------------------
    def digest_for(self, key: str) -> str | None:
        """The digest recorded for a reference key, or None."""
        return self._read_index()["refs"].get(key)

    def get(self, sha256: str, *, full: bool = False) -> CachedImage | None:
        """The cached image with this digest if present and sound, else None.

        Sound means: a regular file whose SIF header checks out; the sha256 is
        recomputed when ``full``, in a shared cache, or when the file's fingerprint
        (size, mtime, ctime, inode) differs from the recorded one. A corrupt entry is
        deleted so that the next pull fetches it again.
        """
        record = self._read_index()["blobs"].get(sha256, {})
        path = self.blob_path(sha256)
        fd = open_existing(path)
        if fd is None:
            if os.path.lexists(path):
                self._discard(sha256)  # a symlink, FIFO or hard link where an image belongs
            return None
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            unchanged = all(record.get(k) == v for k, v in _fingerprint(info).items())
            try:
                verify_sif(path)
                if full or self.shared or not unchanged:
                    if _hash_handle(handle) != sha256:
                        raise DigestMismatchError(f"cached {path} does not hash to {sha256}")
                    if not unchanged:
                        with contextlib.suppress(CacheError):  # a read-only cache still serves it
                            self._record_blob(sha256, path)
            except (ImageFormatError, DigestMismatchError, ImageNotFoundError):
                self._discard(sha256)
                return None
        return CachedImage(path, sha256, info.st_size, tuple(record.get("refs", ())))

    def lookup(self, key: str, *, full: bool = False) -> CachedImage | None:
        """The cached image recorded under a reference key, or None."""
        sha256 = self.digest_for(key)
        return self.get(sha256, full=full) if sha256 else None

    def entries(self) -> Iterator[CachedImage]:
        """Every recorded image whose blob exists (no verification)."""
        for sha256, record in sorted(self._read_index()["blobs"].items()):
            path = self.blob_path(sha256)
            if path.exists():
                yield CachedImage(path, sha256, record.get("size", 0), tuple(record.get("refs", ())))

    # -- adding ------------------------------------------------------------------
    def commit(self, tmp: Path, sha256: str, *, refs: tuple[str, ...] = ()) -> CachedImage:
        """Move a fully verified file (in this cache's folder) into place and record it."""
        self._ensure()
        target = self.blob_path(sha256)
        fd = open_existing(tmp, own=True)
        if fd is None:
            raise CacheError(f"{tmp} is no longer the file that was verified; not adding it")
        try:
            os.fchmod(fd, 0o644)  # through the descriptor: a chmod by path could follow a symlink
            os.replace(tmp, target)
        except OSError as exc:
            raise write_error(target, exc) from exc
        finally:
            os.close(fd)
        self._record_blob(sha256, target, refs)
        return CachedImage(target, sha256, os.lstat(target).st_size, tuple(refs))

    def add(self, path: Path | str, *, ref: str | None = None, sha256: str | None = None) -> CachedImage:
        """Copy a local (e.g. locally built) SIF into the cache and record its digest.

        ``ref`` (e.g. a catalogue id like ``"sigmoid@0.1.0"``) is recorded as pointing to
        it; ``sha256`` pins what the file must hash to.
        """
        source = Path(path)
        if not source.is_file():
            raise ImageNotFoundError(f"no such image file: {source}")
        verify_sif(source)
        self._ensure()
        try:
            fd, tmp_name = tempfile.mkstemp(dir=self.root / "tmp", suffix=".sif.tmp")  # O_EXCL|O_NOFOLLOW
        except OSError as exc:
            raise write_error(self.root / "tmp", exc) from exc
        tmp = Path(tmp_name)
        try:
            digest = hashlib.sha256()
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                while chunk := src.read(CHUNK):
                    digest.update(chunk)
                    try:
                        dst.write(chunk)
                    except OSError as exc:
                        raise write_error(tmp, exc) from exc
            actual = digest.hexdigest()
            if sha256 and actual != sha256:
                raise DigestMismatchError(f"{source} has sha256 {actual}, expected {sha256}")
            if self.get(actual) is not None:
                if ref:
                    self.record(ref, actual)
                return CachedImage(self.blob_path(actual), actual, self.blob_path(actual).stat().st_size,
                                   (ref,) if ref else ())
            return self.commit(tmp, actual, refs=(ref,) if ref else ())
        finally:
            tmp.unlink(missing_ok=True)

    def record(self, key: str, sha256: str) -> None:
        """Point a reference key at a digest already in the cache."""
        self._record_blob(sha256, self.blob_path(sha256), (key,))

    def _record_blob(self, sha256: str, path: Path, refs: tuple[str, ...] = ()) -> None:
        info = os.lstat(path)

        def change(index: dict) -> None:
            record = index["blobs"].setdefault(sha256, {"added": time.time(), "refs": []})
            record.update(_fingerprint(info))
            for key in refs:
                old = index["refs"].get(key)
                if old and old != sha256 and old in index["blobs"]:
                    index["blobs"][old]["refs"] = [r for r in index["blobs"][old]["refs"] if r != key]
                index["refs"][key] = sha256
                if key not in record["refs"]:
                    record["refs"].append(key)

        self._update_index(change)

    # -- removing ----------------------------------------------------------------
    def _discard(self, sha256: str) -> None:
        """Forget a blob's stat record and delete the file (its refs stay, so it is refetched)."""
        _unlink(self.blob_path(sha256))
        self._update_index(lambda index: index["blobs"].pop(sha256, None))

    def remove(self, ref_or_digest: str) -> list[str]:
        """Remove a reference (and its image if no other reference uses it), or a digest.

        Returns the digests whose files were deleted.
        """
        removed: list[str] = []

        def change(index: dict) -> None:
            target = ref_or_digest.removeprefix("sha256:")
            if target in index["blobs"]:
                for key in index["blobs"][target].get("refs", []):
                    index["refs"].pop(key, None)
                victims = [target]
            elif ref_or_digest in index["refs"]:
                sha = index["refs"].pop(ref_or_digest)
                record = index["blobs"].get(sha, {})
                record["refs"] = [r for r in record.get("refs", []) if r != ref_or_digest]
                victims = [sha] if not record["refs"] else []
            else:
                matches = [s for s in index["blobs"] if s.startswith(target)] if len(target) >= 8 else []
                if len(matches) != 1:
                    raise ImageNotFoundError(f"{ref_or_digest!r} is neither a cached reference nor a digest")
                victims = matches
                for key in index["blobs"][matches[0]].get("refs", []):
                    index["refs"].pop(key, None)
            for sha in victims:
                index["blobs"].pop(sha, None)
                _unlink(self.blob_path(sha))
                removed.append(sha)

        self._update_index(change)
        return removed

    def prune(self, *, everything: bool = False) -> list[Path]:
        """Delete partial downloads, unrecorded blobs and dangling refs (all images if ``everything``)."""
        deleted: list[Path] = []
        if everything:
            for item in self.entries():
                self.remove(item.sha256)
                deleted.append(item.path)
        for part in sorted((self.root / "tmp").glob("*")) if (self.root / "tmp").exists() else []:
            with contextlib.suppress(PermissionError):  # another member's download in a shared cache
                part.unlink(missing_ok=True)
                deleted.append(part)
        index = self._read_index()
        blob_dir = self.root / "blobs" / "sha256"
        for blob in sorted(blob_dir.glob("*.sif")) if blob_dir.exists() else []:
            if blob.stem not in index["blobs"]:
                blob.unlink(missing_ok=True)
                deleted.append(blob)

        def change(index: dict) -> None:
            for key, sha in list(index["refs"].items()):
                if not self.blob_path(sha).exists():
                    index["refs"].pop(key)
            for sha in list(index["blobs"]):
                if not self.blob_path(sha).exists():
                    index["blobs"].pop(sha)

        self._update_index(change)
        return deleted

    def __repr__(self) -> str:
        return f"ImageCache({str(self.root)!r})"


def _unlink(blob: Path) -> None:
    """Delete an image file; CacheTrustError when it is another member's (sticky folder)."""
    try:
        blob.unlink(missing_ok=True)
    except OSError as exc:
        if exc.errno != errno.EPERM:
            raise write_error(blob, exc) from exc
        raise CacheTrustError(f"cannot remove {blob} ({exc.strerror}): it belongs to uid "
                              f"{os.lstat(blob).st_uid}; ask them or the cache's owner to delete it") from exc


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:32]

