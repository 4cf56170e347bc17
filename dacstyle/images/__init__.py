"""SIF images: references, the catalogue, the per-user cache, downloads and OCI (oras://) transfer.

The runner calls :func:`resolve_image` (``ref or "name@version" -> verified local Path``);
the CLI's ``dacstyle pull/images/push`` are thin wrappers around :func:`pull`,
:class:`ImageCache` and :func:`push`. Reading and verifying SIF files lives in
:mod:`dacstyle.images.sif`.
"""

from __future__ import annotations

from .cache import CachedImage, ImageCache, hash_file
from .catalogue import CATALOGUE_ENV, Catalogue, CatalogueEntry, load_catalogue
from .download import RetryPolicy, fetch
from .oras import SIF_CONFIG_MEDIA_TYPE, SIF_LAYER_MEDIA_TYPE, OrasClient, push
from .pull import find_apptainer, pull, resolve_image
from .refs import ImageRef, is_loopback, parse_ref
from .sif import SifImage, open_image, verify_image

__all__ = [
    "resolve_image",
    "pull",
    "push",
    "ImageRef",
    "parse_ref",
    "is_loopback",
    "Catalogue",
    "CatalogueEntry",
    "load_catalogue",
    "CATALOGUE_ENV",
    "ImageCache",
    "CachedImage",
    "hash_file",
    "RetryPolicy",
    "fetch",
    "OrasClient",
    "SIF_LAYER_MEDIA_TYPE",
    "SIF_CONFIG_MEDIA_TYPE",
    "find_apptainer",
    "SifImage",
    "open_image",
    "verify_image",
]
