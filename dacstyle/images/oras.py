"""SIF images as OCI artifacts (``oras://``), spoken directly over the distribution API.

The artifact is what ``oras push`` and ``apptainer push oras://`` write: an OCI
image manifest whose config is the empty JSON object ``{}`` with media type
``application/vnd.sylabs.sif.config.v1+json`` and whose single layer is the SIF
file (``application/vnd.sylabs.sif.layer.v1.sif``) with an
``org.opencontainers.image.title`` annotation. No ``oras`` binary is needed.

Plain http is used only for loopback registries. Anonymous bearer tokens
(``WWW-Authenticate: Bearer realm=...``) are fetched when a registry asks.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urljoin

import requests

from ..errors import DigestMismatchError, DownloadError, ImageError, ImageNotFoundError
from .cache import hash_file
from .refs import ImageRef, parse_ref

__all__ = [
    "OrasClient", "push", "sif_manifest", "SIF_LAYER_MEDIA_TYPE", "SIF_CONFIG_MEDIA_TYPE", "OCI_MANIFEST_MEDIA_TYPE",
]

SIF_LAYER_MEDIA_TYPE = "application/vnd.sylabs.sif.layer.v1.sif"
SIF_CONFIG_MEDIA_TYPE = "application/vnd.sylabs.sif.config.v1+json"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
_LEGACY_LAYER_TYPES = ("appliciation/vnd.sylabs.sif.layer.tar",)  # Singularity < 3.7 (sic)
_MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST_MEDIA_TYPE, "application/vnd.docker.distribution.manifest.v2+json"])
_EMPTY_CONFIG = b"{}"
_BEARER = re.compile(r'(\w+)="([^"]*)"')


class OrasClient:
    """A tiny OCI distribution client for one registry (``host[:port]``)."""

    def __init__(self, ref: ImageRef, *, session: requests.Session | None = None, timeout: float = 30.0) -> None:
        if ref.kind != "oras":
            raise ImageError(f"{ref} is not an oras:// reference")
        self.ref = ref
        self.base = f"{'http' if ref.insecure else 'https'}://{ref.registry}/v2/{ref.repository}"
        self.session = session or requests.Session()
        self.timeout = timeout

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "OrasClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ----------------------------------------------------------------
    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        """Send a request, fetching an anonymous bearer token once if the registry asks."""
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.session.request(method, url, **kwargs)
            if response.status_code == 401 and self._authenticate(response):
                if hasattr(kwargs.get("data"), "seek"):
                    kwargs["data"].seek(0)
                response = self.session.request(method, url, **kwargs)
        except requests.RequestException as exc:
            raise DownloadError(f"registry {self.ref.registry}: {method} {url}: {exc}") from exc
        return response

    def _authenticate(self, response: requests.Response) -> bool:
        challenge = response.headers.get("WWW-Authenticate", "")
        if not challenge.lower().startswith("bearer "):
            return False
        params = dict(_BEARER.findall(challenge))
        if "realm" not in params:
            return False
        query = {k: v for k, v in params.items() if k in ("service", "scope")}
        query.setdefault("scope", f"repository:{self.ref.repository}:pull,push")
        token = self.session.get(params["realm"], params=query, timeout=self.timeout)
        if token.status_code != 200:
            return False
        body = token.json()
        value = body.get("token") or body.get("access_token")
        if not value:
            return False
        self.session.headers["Authorization"] = f"Bearer {value}"
        return True

    def _fail(self, response: requests.Response, what: str) -> ImageError:
        detail = response.text[:300].strip()
        if response.status_code == 404:
            return ImageNotFoundError(f"{self.ref}: {what}: not found in the registry ({detail})")
        return DownloadError(f"{self.ref}: {what}: HTTP {response.status_code} {response.reason} ({detail})")

    # -- pull ----------------------------------------------------------------------
    def manifest(self) -> dict:
        """The artifact's manifest (checked against the reference's digest when it has one)."""
        target = f"sha256:{self.ref.digest}" if self.ref.digest else self.ref.tag
        response = self.request("GET", f"{self.base}/manifests/{target}", headers={"Accept": _MANIFEST_ACCEPT})
        if response.status_code != 200:
            raise self._fail(response, f"manifest {target}")
        if self.ref.digest and hashlib.sha256(response.content).hexdigest() != self.ref.digest:
            raise DigestMismatchError(f"{self.ref}: the registry's manifest does not hash to the pinned digest")
        try:
            return response.json()
        except ValueError as exc:
            raise ImageError(f"{self.ref}: the manifest is not JSON") from exc

    def sif_layer(self) -> dict:
        """The descriptor (mediaType, digest, size, annotations) of the one SIF layer."""
        manifest = self.manifest()
        layers = [l for l in manifest.get("layers", [])
                  if l.get("mediaType") in (SIF_LAYER_MEDIA_TYPE, *_LEGACY_LAYER_TYPES)]
        if len(layers) != 1:
            kinds = [l.get("mediaType") for l in manifest.get("layers", [])]
            raise ImageError(f"{self.ref} is not a SIF artifact: expected one layer of type "
                             f"{SIF_LAYER_MEDIA_TYPE}, found {kinds}")
        digest = str(layers[0].get("digest", ""))
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
            raise ImageError(f"{self.ref}: unsupported layer digest {digest!r}")
        return layers[0]

    def blob_url(self, digest: str) -> str:
        """Where the blob with ``digest`` (``sha256:...``) is served."""
        return f"{self.base}/blobs/{digest}"

    # -- push ----------------------------------------------------------------------
    def blob_exists(self, digest: str) -> bool:
        return self.request("HEAD", self.blob_url(digest)).status_code == 200

    def upload_blob(self, data: Path | bytes, digest: str, size: int, *, chunk_size: int | None = None,
                    on_progress: Callable[[int], None] | None = None) -> None:
        """Upload a blob unless the registry has it: monolithic PUT, or PATCH chunks then PUT."""
        if self.blob_exists(digest):
            return
        start = self.request("POST", f"{self.base}/blobs/uploads/")
        if start.status_code != 202 or "Location" not in start.headers:
            raise self._fail(start, "starting a blob upload")
        location = urljoin(start.url, start.headers["Location"])
        if chunk_size:
            offset = 0
            for chunk in _chunks(data, chunk_size):
                headers = {"Content-Type": "application/octet-stream",
                           "Content-Range": f"{offset}-{offset + len(chunk) - 1}"}
                response = self.request("PATCH", location, data=chunk, headers=headers)
                if response.status_code != 202:
                    raise self._fail(response, f"uploading bytes {offset}.. of {digest}")
                location = urljoin(response.url, response.headers.get("Location", location))
                offset += len(chunk)
                if on_progress:
                    on_progress(len(chunk))
            body: Any = b""
        else:
            body = open(data, "rb") if isinstance(data, Path) else data
        sep = "&" if "?" in location else "?"
        try:
            response = self.request("PUT", f"{location}{sep}digest={digest}", data=body,
                                    headers={"Content-Type": "application/octet-stream"})
        finally:
            if hasattr(body, "close"):
                body.close()
        if response.status_code != 201:
            raise self._fail(response, f"completing the upload of {digest}")
        if not chunk_size and on_progress:
            on_progress(size)

    def put_manifest(self, manifest: dict, reference: str) -> str:
        """Store ``manifest`` under a tag (or digest); returns the manifest digest."""
        raw = json.dumps(manifest, separators=(",", ":")).encode()
        response = self.request("PUT", f"{self.base}/manifests/{reference}", data=raw,
                                headers={"Content-Type": OCI_MANIFEST_MEDIA_TYPE})
        if response.status_code != 201:
            raise self._fail(response, f"storing the manifest as {reference}")
        return f"sha256:{hashlib.sha256(raw).hexdigest()}"


def _chunks(data: Path | bytes, size: int) -> Iterator[bytes]:
    if isinstance(data, bytes):
        for start in range(0, len(data), size):
            yield data[start:start + size]
        return
    with open(data, "rb") as handle:
        while chunk := handle.read(size):
            yield chunk


def sif_manifest(sha256: str, size: int, title: str) -> dict:
    """The OCI manifest Apptainer writes for one SIF file."""
    return {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": SIF_CONFIG_MEDIA_TYPE,
                   "digest": f"sha256:{hashlib.sha256(_EMPTY_CONFIG).hexdigest()}", "size": len(_EMPTY_CONFIG)},
        "layers": [{"mediaType": SIF_LAYER_MEDIA_TYPE, "digest": f"sha256:{sha256}", "size": size,
                    "annotations": {"org.opencontainers.image.title": title}}],
    }


def push(image: Path | str, target: str | ImageRef, *, chunk_size: int | None = None,
         session: requests.Session | None = None, on_progress: Callable[[int], None] | None = None) -> str:
    """Upload a verified SIF as an OCI artifact to ``oras://host[:port]/repo[:tag]``.

    Returns the pinned reference ``oras://host/repo@sha256:<manifest digest>``.
    ``chunk_size`` switches from one monolithic PUT to PATCH chunks of that size.
    """
    from .cache import verify_sif

    path = Path(image)
    if not path.is_file():
        raise ImageNotFoundError(f"no such image file: {path}")
    verify_sif(path)
    ref = target if isinstance(target, ImageRef) else parse_ref(target)
    if ref.kind != "oras":
        raise ImageError(f"push needs an oras://host[:port]/repo:tag target, not {target!r}")
    if ref.digest:
        raise ImageError(f"push to a tag, not a digest: {target!r} (the digest is computed)")
    sha256 = hash_file(path)
    size = path.stat().st_size
    with OrasClient(ref, session=session) as client:
        client.upload_blob(path, f"sha256:{sha256}", size, chunk_size=chunk_size, on_progress=on_progress)
        client.upload_blob(_EMPTY_CONFIG, f"sha256:{hashlib.sha256(_EMPTY_CONFIG).hexdigest()}",
                           len(_EMPTY_CONFIG))
        manifest_digest = client.put_manifest(sif_manifest(sha256, size, path.name), ref.tag or "latest")
    return f"oras://{ref.registry}/{ref.repository}@{manifest_digest}"

