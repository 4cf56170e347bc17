"""oras:// push and pull against a real OCI registry (Debian's docker-registry) on loopback."""

from __future__ import annotations

import hashlib
import json

import pytest
import requests

from dacstyle.errors import DigestMismatchError, ImageError, ImageNotFoundError
from dacstyle.images import (
    SIF_CONFIG_MEDIA_TYPE, SIF_LAYER_MEDIA_TYPE, OrasClient, hash_file, parse_ref, pull, push, resolve_image,
)

from _servers import fast_retry

try:
    from dacstyle.cli import main as cli_main
except ImportError:  # the CLI may not exist yet
    cli_main = None


def _push(image, target, *extra: str) -> str:
    """Push through the CLI when it exists (its stdout is the pinned reference), else the function."""
    if cli_main is None:
        return push(image, target)
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli_main(["push", str(image), target, *extra]) == 0
    return out.getvalue().strip()


def test_push_writes_the_artifact_apptainer_and_oras_write(images_env, registry, sif_file):
    pinned = _push(sif_file, f"oras://{registry.host}/dacstyle/one-group:1.0")
    assert pinned.startswith(f"oras://{registry.host}/dacstyle/one-group@sha256:")
    response = requests.get(f"http://{registry.host}/v2/dacstyle/one-group/manifests/1.0",
                            headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}, timeout=10)
    manifest = response.json()
    assert response.headers["Content-Type"] == "application/vnd.oci.image.manifest.v1+json"
    assert "sha256:" + hashlib.sha256(response.content).hexdigest() == pinned.rsplit("@", 1)[1]
    assert manifest["schemaVersion"] == 2
    assert manifest["config"] == {"mediaType": SIF_CONFIG_MEDIA_TYPE, "size": 2,
                                  "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()}
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == SIF_LAYER_MEDIA_TYPE == "application/vnd.sylabs.sif.layer.v1.sif"
    assert layer["digest"] == "sha256:" + hash_file(sif_file) and layer["size"] == sif_file.stat().st_size
    assert layer["annotations"] == {"org.opencontainers.image.title": "one-group.sif"}
    config = requests.get(f"http://{registry.host}/v2/dacstyle/one-group/blobs/{manifest['config']['digest']}",
                          timeout=10)
    assert config.content == b"{}"


def test_pull_by_tag_and_by_digest_then_cache_hit(images_env, registry, big_sif):
    pinned = _push(big_sif, f"oras://{registry.host}/dacstyle/big:2.0")
    by_tag = pull(f"oras://{registry.host}/dacstyle/big:2.0", retry=fast_retry())
    assert by_tag.path.read_bytes() == big_sif.read_bytes()
    blob_gets = registry.access_lines(f"GET /v2/dacstyle/big/blobs/{by_tag.digest}")
    assert len(blob_gets) == 1
    by_digest = pull(pinned, retry=fast_retry())          # manifest fetched once, blob already cached
    assert by_digest.path == by_tag.path
    assert len(registry.access_lines(f"GET /v2/dacstyle/big/blobs/{by_tag.digest}")) == 1
    before = len(registry.access_lines())
    assert resolve_image(f"oras://{registry.host}/dacstyle/big:2.0") == by_tag.path
    assert resolve_image(pinned, offline=True) == by_tag.path
    assert pull(pinned, sha256=by_tag.sha256).path == by_tag.path
    assert len(registry.access_lines()) == before, "cache hits must not touch the registry"


def test_chunked_push_then_pull(images_env, registry, big_sif):
    pinned = _push(big_sif, f"oras://{registry.host}/dacstyle/chunked:1", "--chunk-size", str(1 << 20))
    assert len(registry.access_lines("PATCH /v2/dacstyle/chunked/blobs/uploads/")) >= 6
    assert pull(pinned, retry=fast_retry()).sha256 == hash_file(big_sif)


def test_pinned_sha_mismatch_and_missing_tag(images_env, registry, sif_file):
    _push(sif_file, f"oras://{registry.host}/dacstyle/pinned:1")
    with pytest.raises(DigestMismatchError, match="expected " + "0" * 64):
        pull(f"oras://{registry.host}/dacstyle/pinned:1", sha256="0" * 64, retry=fast_retry())
    with pytest.raises(ImageNotFoundError, match="not found in the registry"):
        pull(f"oras://{registry.host}/dacstyle/pinned:nope", retry=fast_retry())
    bad_digest = f"oras://{registry.host}/dacstyle/pinned@sha256:" + "1" * 64
    with pytest.raises(ImageNotFoundError):
        pull(bad_digest, retry=fast_retry())
    assert list(images_env.entries()) == []


def test_artifact_without_a_sif_layer_is_refused(images_env, registry):
    ref = parse_ref(f"oras://{registry.host}/dacstyle/notsif:1")
    data = b"hello"
    with OrasClient(ref) as client:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        client.upload_blob(data, digest, len(data))
        client.upload_blob(b"{}", "sha256:" + hashlib.sha256(b"{}").hexdigest(), 2)
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": 2,
                               "digest": "sha256:" + hashlib.sha256(b"{}").hexdigest()},
                    "layers": [{"mediaType": "text/plain", "digest": digest, "size": len(data)}]}
        client.put_manifest(manifest, "1")
    with pytest.raises(ImageError, match="not a SIF artifact"):
        pull(str(ref), retry=fast_retry())


def test_push_refuses_non_sif_and_bad_targets(images_env, registry, tmp_path, sif_file):
    junk = tmp_path / "junk.sif"
    junk.write_bytes(b"junk" * 1000)
    with pytest.raises(ImageError):
        push(junk, f"oras://{registry.host}/dacstyle/junk:1")
    with pytest.raises(ImageError, match="oras://"):
        push(sif_file, "https://example.org/x.sif")
    with pytest.raises(ImageError, match="not a digest"):
        push(sif_file, f"oras://{registry.host}/dacstyle/x@sha256:" + "2" * 64)
    assert json.loads(requests.get(f"http://{registry.host}/v2/_catalog", timeout=10).text)["repositories"] \
        .count("dacstyle/junk") == 0


def test_unreachable_registry_is_one_download_error(images_env):
    from _servers import free_port

    from dacstyle.errors import DownloadError

    with pytest.raises(DownloadError, match="registry 127.0.0.1"):
        pull(f"oras://127.0.0.1:{free_port()}/dacstyle/x:1", retry=fast_retry(attempts=2))
    assert list(images_env.entries()) == []
