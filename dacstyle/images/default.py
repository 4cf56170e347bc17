"""Which image a benchmark runs in when the user names none.

A benchmark's own ``image`` or the runner's ``image=`` wins; else its catalogue
entry. Until images are published, bundled entries are "build locally": the
image is then this Python environment packed into a SIF (``dacstyle pack
--from-env``), built once per environment under the cache lock and recorded in
the cache under a fingerprint of what it contains, so an edited dacstyle or an
upgraded package gives a new image, never a stale one, and two environments
(a venv and its base interpreter, say) each keep their own.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import sys
import tempfile
from pathlib import Path
from typing import Any

from .. import __version__
from .cache import ImageCache, hash_file
from .catalogue import load_catalogue
from .pull import resolve_image

__all__ = ["environment_key", "default_image", "image_for", "describe_image"]

log = logging.getLogger(__name__)


def environment_key() -> str:
    """A cache key naming what this environment's image would contain.

    The interpreter, the prefix, the package folders in import order, every
    distribution installed there, and the sources of editable installs (their
    files' sizes and times): two environments never share or evict a key.
    Costs about 0.2 s (it asks the interpreter for its import path).
    """
    from .envtree import editable_sources, package_dirs

    dirs = package_dirs()
    digest = hashlib.sha256(f"{os.path.realpath(sys.executable)}|{platform.python_version()}|"
                            f"{os.path.realpath(sys.prefix)}|{dirs}".encode())
    for dist in sorted(f"{d.metadata['Name']}=={d.version}" for d in importlib.metadata.distributions(path=dirs)):
        digest.update(dist.encode())
    for root in sorted(editable_sources().values()):
        for path in sorted(Path(root).rglob("*.py")):
            info = path.stat()
            digest.update(f"{path}|{info.st_size}|{info.st_mtime_ns}".encode())
    return f"dacstyle-env@{__version__}+{digest.hexdigest()[:16]}"


def default_image(cache: ImageCache | None = None, progress: bool | None = None) -> Path:
    """The packed image of this environment, built on first use and cached."""
    from .pack import pack_environment

    cache = cache or ImageCache()
    key = environment_key()
    hit = cache.lookup(key)
    if hit is not None:
        return hit.path
    with cache.lock(key):
        hit = cache.lookup(key)
        if hit is not None:
            return hit.path
        log.info("packing this Python environment into an image (once per environment) ...")
        (cache.root / "tmp").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache.root / "tmp") as tmp:
            result = pack_environment(Path(tmp) / "env.sif", progress=progress)
            log.info("%s", result.summary())
            built = cache.add(result.path, ref=key)
        _drop_superseded(cache, built.sha256)
        return built.path


def _drop_superseded(cache: ImageCache, keep: str) -> None:
    """Remove older packs of this same environment (interpreter and prefix) that only local-build keys name.

    Every change to an environment packs a new image; the old ones can always be
    rebuilt, so they do not pile up. Another environment's image (a venv of the
    same interpreter, say) is never touched.
    """
    from .sif import open_image

    interpreter, prefix = os.path.realpath(sys.executable), os.path.realpath(sys.prefix)
    local_ids = {entry.id for entry in load_catalogue(None) if entry.kind == "local-build"}
    for item in cache.entries():
        if item.sha256 == keep or not item.refs:
            continue
        if not all(ref.startswith("dacstyle-env@") or ref in local_ids for ref in item.refs):
            continue  # also a pulled or user-named image: keep it
        try:
            labels = open_image(item.path).labels()
        except Exception:  # an unreadable entry is for `dacstyle images prune`, not for us
            continue
        if (labels.get("org.dacstyle.packed-from") == "environment" and labels.get("org.dacstyle.python") == interpreter
                and labels.get("org.dacstyle.prefix") == prefix):
            cache.remove(item.sha256)
            log.info("removed the superseded environment image sha256:%s", item.sha256[:12])


def image_for(benchmark: Any, ref: str | os.PathLike[str] | None = None) -> Path:
    """The verified local image to run ``benchmark`` in (see the module docstring)."""
    ref = ref if ref is not None else getattr(benchmark, "image", None)
    if ref is not None:
        return resolve_image(ref)
    catalogue = load_catalogue(None)
    identifier = f"{benchmark.name}@{__version__}"
    if identifier in catalogue and catalogue.get(identifier).kind == "remote":
        return resolve_image(identifier)
    path = default_image()
    cache = ImageCache()
    if identifier in catalogue and cache.digest_for(identifier) != path.stem:
        cache.record(identifier, path.stem)  # the digest a local build gave this identifier
    return path


def describe_image(path: Path) -> dict[str, Any]:
    """What a run manifest records about an image: path, sha256, size and labels."""
    from .sif import open_image

    path = Path(path)
    sha256 = path.stem if path.parent.name == "sha256" and len(path.stem) == 64 else hash_file(path)
    return {"path": str(path), "sha256": sha256, "size": path.stat().st_size, "labels": open_image(path).labels()}
