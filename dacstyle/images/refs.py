"""Image references: what a user may write where an image is expected.

========================================  =========  ==========================================
written as                                kind       fetched by
========================================  =========  ==========================================
``/path/x.sif``, ``x.sif``, ``file://..``  local      nothing: verified in place
``https://host/x.sif``                    http       :mod:`.download` (``http://`` only on loopback)
``oras://host[:port]/repo[:tag][@sha256:..]``  oras  :mod:`.oras` (OCI distribution API)
``library://...``, ``docker://...``       apptainer  ``apptainer pull`` when Apptainer is installed
========================================  =========  ==========================================

A catalogue identifier such as ``sigmoid@0.1.0`` is not a reference; the
catalogue turns it into one (see :mod:`.catalogue`).
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from ..errors import ImageError

__all__ = ["ImageRef", "parse_ref", "is_loopback", "APPTAINER_SCHEMES"]

APPTAINER_SCHEMES = ("library", "docker", "docker-archive", "shub")
"""Schemes only Apptainer/Singularity itself can fetch."""

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_REPO = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1 (plain http is allowed only there)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def normalize_sha256(value: str) -> str:
    """``'sha256:AB..'`` or ``'ab..'`` -> 64 lower-case hex digits; ImageError otherwise."""
    text = value.strip().lower()
    text = text[len("sha256:"):] if text.startswith("sha256:") else text
    if not _SHA256.match(text):
        raise ImageError(f"not a sha256 digest: {value!r} (expected 64 hex digits, optionally 'sha256:')")
    return text


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference.

    ``kind`` is ``local``, ``http``, ``oras`` or ``apptainer``. For ``oras``,
    ``registry`` is ``host[:port]``, ``repository`` the path, ``tag`` and/or
    ``digest`` (64 hex digits) name the artifact. ``insecure`` is True when plain
    http is used (loopback only).
    """

    text: str
    kind: str
    path: Path | None = None
    url: str | None = None
    registry: str | None = None
    repository: str | None = None
    tag: str | None = None
    digest: str | None = None
    insecure: bool = False

    @property
    def key(self) -> str:
        """The canonical string the cache index files this reference under."""
        if self.kind == "local":
            return str(self.path)
        if self.kind == "oras":
            key = f"oras://{self.registry}/{self.repository}"
            if self.tag:
                key += f":{self.tag}"
            if self.digest:
                key += f"@sha256:{self.digest}"
            return key
        return self.url or self.text

    @property
    def is_remote(self) -> bool:
        """True unless the reference is a local file."""
        return self.kind != "local"

    def __str__(self) -> str:
        return self.key


def parse_ref(text: str | os.PathLike[str]) -> ImageRef:
    """Parse ``text`` into an :class:`ImageRef`; ImageError says what is wrong."""
    if isinstance(text, os.PathLike):
        return ImageRef(text=os.fspath(text), kind="local", path=Path(text).expanduser().absolute())
    if not isinstance(text, str) or not text.strip():
        raise ImageError(f"an image reference must be a non-empty string or path, not {text!r}")
    text = text.strip()
    scheme, sep, _ = text.partition("://")
    if not sep:
        return ImageRef(text=text, kind="local", path=Path(text).expanduser().absolute())
    scheme = scheme.lower()
    if scheme == "file":
        return ImageRef(text=text, kind="local", path=Path(unquote(urlsplit(text).path)).absolute())
    if scheme in ("http", "https"):
        return _parse_http(text, scheme)
    if scheme == "oras":
        return _parse_oras(text)
    if scheme in APPTAINER_SCHEMES:
        return ImageRef(text=text, kind="apptainer", url=text)
    raise ImageError(
        f"unsupported image reference {text!r}: use a local path, https://, oras://, "
        f"or {', '.join(s + '://' for s in APPTAINER_SCHEMES)} (needs Apptainer)"
    )


def _parse_http(text: str, scheme: str) -> ImageRef:
    parts = urlsplit(text)
    if not parts.hostname:
        raise ImageError(f"image URL {text!r} has no host")
    if scheme == "http" and not is_loopback(parts.hostname):
        raise ImageError(
            f"refusing plain http for {parts.hostname!r} in {text!r}: images are fetched over https "
            "(plain http is allowed only for loopback hosts: 127.0.0.0/8, ::1, localhost)"
        )
    return ImageRef(text=text, kind="http", url=text, insecure=scheme == "http")


def _parse_oras(text: str) -> ImageRef:
    rest = text[len("oras://"):]
    host, slash, path = rest.partition("/")
    if not host or not slash or not path:
        raise ImageError(f"oras reference {text!r} must look like oras://host[:port]/repo[:tag][@sha256:HEX]")
    digest = None
    if "@" in path:
        path, _, digest_text = path.partition("@")
        if not digest_text.startswith("sha256:"):
            raise ImageError(f"oras reference {text!r}: only sha256 digests are supported")
        digest = normalize_sha256(digest_text)
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
        if not _TAG.match(tag):
            raise ImageError(f"oras reference {text!r}: invalid tag {tag!r}")
    if not _REPO.match(path):
        raise ImageError(f"oras reference {text!r}: invalid repository name {path!r} (lower-case, digits, ._-/)")
    if tag is None and digest is None:
        tag = "latest"
    hostname = urlsplit(f"//{host}").hostname or host
    return ImageRef(text=text, kind="oras", registry=host.lower(), repository=path, tag=tag, digest=digest,
                    insecure=is_loopback(hostname))
