"""From a reference or catalogue identifier to a verified local SIF: :func:`pull`, :func:`resolve_image`.

Order of work for a remote reference: cache hit (no network) -> offline? say what
is missing -> take the reference's lock -> look again (another process may have
fetched it meanwhile) -> fetch each source in turn (reference, then mirrors) into
``tmp/<key>.part`` -> sha256 + SIF check -> atomic rename into ``blobs/`` and
record ``ref -> digest``. Nothing unverified ever lands under ``blobs/``.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

from ..config import config
from ..errors import CacheError, DigestMismatchError, DownloadError, ImageError, ImageFormatError, ImageNotFoundError
from .cache import CachedImage, ImageCache, hash_file, verify_sif
from .catalogue import Catalogue, CatalogueEntry, is_catalogue_id, load_catalogue
from .download import RetryPolicy, drop_partial, fetch
from .oras import OrasClient
from .refs import ImageRef, normalize_sha256, parse_ref

__all__ = ["pull", "resolve_image", "find_apptainer"]


def find_apptainer() -> str | None:
    """The ``apptainer`` binary, else ``singularity``, else None (the runtime's own lookup)."""
    from ..runtimes.apptainer import find_binary

    return find_binary()


def resolve_image(ref: str | os.PathLike[str], *, sha256: str | None = None, offline: bool | None = None,
                  **options: Any) -> Path:
    """A verified local SIF for a path, a remote reference or a catalogue identifier.

    Local paths are verified in place (hashed only when ``sha256`` is given); remote
    references come from the cache, downloading them once. ``options`` go to :func:`pull`.
    """
    if isinstance(ref, os.PathLike) or (isinstance(ref, str) and "://" not in ref
                                         and not _catalogue_target(ref, options.get("catalogue"))):
        path = Path(ref).expanduser()
        _verify_local(path, normalize_sha256(sha256) if sha256 else None)
        return path.absolute()
    return pull(ref, sha256=sha256, offline=offline, **options).path


def pull(
    ref: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    offline: bool | None = None,
    cache: ImageCache | None = None,
    catalogue: Catalogue | Mapping[str, Any] | None = None,
    mirrors: tuple[str, ...] = (),
    retry: RetryPolicy | None = None,
    progress: str | bool | None = None,
    refresh: bool = False,
    full_check: bool = False,
) -> CachedImage:
    """Make sure the image is in the cache and return it.

    ``sha256`` pins the content; ``offline`` (default ``config.offline``) forbids the
    network; ``mirrors`` are tried after the reference; ``refresh`` ignores a cached
    ``ref -> digest`` record (a moved tag); ``full_check`` re-hashes a cached hit.
    """
    cache = cache or ImageCache()
    offline = config.offline if offline is None else offline
    pinned = normalize_sha256(sha256) if sha256 else None
    keys: tuple[str, ...] = ()
    size = None
    if isinstance(ref, str) and "://" not in ref and (entry := _catalogue_target(ref, catalogue)):
        if entry.kind == "local-build":
            return _local_build(entry, cache, pinned, full_check)
        keys, pinned, size = (entry.id,), pinned or entry.sha256, entry.size
        mirrors = entry.mirrors + tuple(mirrors)
        ref = entry.reference  # type: ignore[assignment]
    image_ref = parse_ref(ref)
    if image_ref.kind == "local":
        assert image_ref.path is not None
        digest = _verify_local(image_ref.path, pinned) or hash_file(image_ref.path)
        return CachedImage(image_ref.path, digest, image_ref.path.stat().st_size)
    keys = (image_ref.key, *keys)
    sources = [image_ref, *(parse_ref(m) for m in mirrors)]

    hit = _cached(cache, keys, pinned, refresh, full_check)
    if hit is not None:
        return hit
    if offline:
        raise ImageNotFoundError(
            f"offline: {image_ref} is not in the image cache {cache.root}"
            + (f" (sha256 {pinned})" if pinned else "")
            + "; pull it once with network access (`dacstyle pull REF`), or unset DACSTYLE_OFFLINE")
    with cache.lock(keys[0]):
        hit = _cached(cache, keys, pinned, refresh, full_check)
        if hit is not None:
            return hit
        return _fetch_sources(cache, sources, keys, pinned, size, retry, progress)


def _catalogue_target(ref: str, catalogue: Catalogue | Mapping[str, Any] | None) -> CatalogueEntry | None:
    """The catalogue entry ``ref`` names, unless ``ref`` is an existing file or not an identifier."""
    if not is_catalogue_id(ref) or Path(ref).exists():
        return None
    known = load_catalogue(catalogue)
    if ref in known:
        return known.get(ref)
    if "@" in ref or not ref.endswith(".sif"):
        raise ImageNotFoundError(f"{ref!r} is neither an image file nor a catalogue entry; "
                                 f"known entries: {', '.join(known.ids) or 'none'}")
    return None


def _verify_local(path: Path, pinned: str | None) -> str:
    if not path.is_file():
        raise ImageNotFoundError(f"no such image file: {path}")
    verify_sif(path)
    if pinned is None:
        return ""
    actual = hash_file(path)
    if actual != pinned:
        raise DigestMismatchError(f"{path} has sha256 {actual}, expected {pinned}")
    return actual


def _cached(cache: ImageCache, keys: tuple[str, ...], pinned: str | None, refresh: bool,
            full: bool) -> CachedImage | None:
    """A sound cache entry for ``pinned`` or for the first key, recording the other keys."""
    if pinned:
        hit = cache.get(pinned, full=full)
    elif refresh:
        hit = None
    else:
        hit = next((h for k in keys if (h := cache.lookup(k, full=full)) is not None), None)
    if hit is not None and any(k not in hit.refs for k in keys):
        for key in keys:
            cache.record(key, hit.sha256)
    return hit


def _local_build(entry: CatalogueEntry, cache: ImageCache, pinned: str | None, full: bool) -> CachedImage:
    hit = cache.get(pinned, full=full) if pinned else cache.lookup(entry.id, full=full)
    if hit is None:
        raise ImageNotFoundError(
            f"{entry.id} has no published image yet and none was built here: build it with "
            f"`{entry.build}` and record it with dacstyle.images.ImageCache().add(path, ref={entry.id!r}), "
            f"or point the catalogue at an image ($DACSTYLE_CATALOGUE or catalogue=...)")
    return hit


def _fetch_sources(cache: ImageCache, sources: list[ImageRef], keys: tuple[str, ...], pinned: str | None,
                   size: int | None, retry: RetryPolicy | None, progress: str | bool | None) -> CachedImage:
    """Try each source in turn; the first that yields a verified SIF is committed."""
    part = cache.part_path(keys[0])
    errors: list[ImageError] = []
    for source in sources:
        try:
            if source.kind == "http":
                assert source.url is not None
                digest = fetch(source.url, part, sha256=pinned, size=size, retry=retry, progress=progress,
                               desc=source.url.rsplit("/", 1)[-1])
            elif source.kind == "oras":
                digest = _fetch_oras(cache, source, part, pinned, retry, progress, keys)
                if digest is None:  # the blob was already cached under another name
                    hit = _cached(cache, keys, pinned or cache.digest_for(keys[0]), False, False)
                    if hit is not None:
                        return hit
                    continue
            elif source.kind == "apptainer":
                digest = _fetch_apptainer(source, part)
            else:
                raise ImageError(f"a mirror must be remote, not {source}")
            if pinned and digest != pinned:
                raise DigestMismatchError(f"{source} has sha256 {digest}, expected {pinned}")
            try:
                verify_sif(part)
            except ImageFormatError as exc:
                raise ImageFormatError(f"{source} did not serve a SIF image: {exc}") from exc
            return cache.commit(part, digest, refs=keys)
        except (DigestMismatchError, ImageFormatError) as exc:
            drop_partial(part)  # wrong content: never resume from it
            errors.append(exc)
        except CacheError:
            drop_partial(part)  # the cache itself failed (full, read-only, untrusted): no mirror helps
            raise
        except ImageError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    kinds = {type(e) for e in errors}
    cls = kinds.pop() if len(kinds) == 1 else DownloadError
    raise cls(f"every source of {keys[0]} failed:\n" + "\n".join(f"- {e}" for e in errors))


def _fetch_oras(cache: ImageCache, source: ImageRef, part: Path, pinned: str | None,
                retry: RetryPolicy | None, progress: str | bool | None, keys: tuple[str, ...]) -> str | None:
    """Download the SIF layer of an oras artifact; None when that blob is already cached."""
    policy = retry or RetryPolicy()
    with OrasClient(source, timeout=policy.timeout) as client:
        for attempt in range(policy.attempts):  # the manifest: retried like a blob on 5xx/connection errors
            try:
                layer = client.sif_layer()
                break
            except DownloadError:
                if attempt + 1 == policy.attempts:
                    raise
                time.sleep(policy.delay(attempt))
        blob = normalize_sha256(layer["digest"])
        if pinned and blob != pinned:
            raise DigestMismatchError(f"{source} holds a SIF with sha256 {blob}, expected {pinned}")
        if cache.get(blob) is not None:
            for key in keys:
                cache.record(key, blob)
            return None
        title = layer.get("annotations", {}).get("org.opencontainers.image.title", source.repository)
        return fetch(client.blob_url(layer["digest"]), part, sha256=blob, size=layer.get("size"),
                     session=client.session, retry=retry, progress=progress, desc=title)


def _fetch_apptainer(source: ImageRef, part: Path) -> str:
    """``apptainer pull`` (argv list) into ``part``; ImageError naming alternatives without it."""
    binary = find_apptainer()
    if binary is None:
        raise ImageError(
            f"{source} can only be fetched by Apptainer/Singularity, which is not installed here; "
            "use an oras://, https:// or local .sif reference instead, or build locally with `dacstyle pack`")
    with tempfile.TemporaryDirectory(dir=part.parent) as scratch:
        dest = Path(scratch) / "image.sif"
        result = subprocess.run([binary, "pull", str(dest), str(source.url)], capture_output=True, text=True)
        if result.returncode != 0 or not dest.is_file():
            tail = (result.stderr or result.stdout).strip()[-2000:]
            raise DownloadError(f"{os.path.basename(binary)} pull {source.url} failed "
                                f"(exit {result.returncode}): {tail}")
        os.replace(dest, part)
    return hash_file(part)
