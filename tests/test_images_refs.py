"""Image references, the catalogue, the cache and the public surface of dacstyle.images."""

from __future__ import annotations

import json
import os
import types
from pathlib import Path

import pytest

import dacstyle.images as images
from dacstyle.config import config
from dacstyle.errors import ConfigError, DigestMismatchError, ImageError, ImageFormatError, ImageNotFoundError
from dacstyle.images import Catalogue, ImageCache, load_catalogue, parse_ref, resolve_image
from dacstyle.images import cache as cache_module



def test_exported_members_are_complete():
    public = {n for n, v in vars(images).items() if not n.startswith("_") and not isinstance(v, types.ModuleType)}
    assert public - {"annotations"} == set(images.__all__)
    for name in images.__all__:
        assert hasattr(images, name), name


@pytest.mark.parametrize("text, kind", [
    ("img.sif", "local"), ("/abs/img.sif", "local"), ("file:///abs/img.sif", "local"),
    ("https://example.org/x.sif", "http"), ("http://127.0.0.1:8000/x.sif", "http"),
    ("http://127.8.9.1/x.sif", "http"), ("http://localhost/x.sif", "http"), ("http://[::1]:80/x.sif", "http"),
    ("oras://ghcr.io/org/img:1.0", "oras"), ("library://sylabs/default/alpine", "apptainer"),
    ("docker://python:3.11", "apptainer"),
])
def test_reference_kinds(text, kind):
    assert parse_ref(text).kind == kind


@pytest.mark.parametrize("text", ["http://example.org/x.sif", "http://10.0.0.1/x.sif", "http://128.0.0.1/x"])
def test_plain_http_only_on_loopback(text):
    with pytest.raises(ImageError, match="loopback"):
        parse_ref(text)


def test_oras_references():
    ref = parse_ref("oras://127.0.0.1:5000/dacstyle/sigmoid:0.1.0")
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.insecure) == (
        "127.0.0.1:5000", "dacstyle/sigmoid", "0.1.0", None, True)
    digest = "ab" * 32
    ref = parse_ref(f"oras://ghcr.io/org/img@sha256:{digest}")
    assert (ref.tag, ref.digest, ref.insecure) == (None, digest, False)
    assert parse_ref("oras://ghcr.io/org/img").tag == "latest"
    assert parse_ref(f"oras://ghcr.io/org/img:v1@sha256:{digest}").key == f"oras://ghcr.io/org/img:v1@sha256:{digest}"
    for bad in ("oras://host", "oras://host/UPPER:1", "oras://host/a@md5:00", "oras://h/a:bad tag"):
        with pytest.raises(ImageError):
            parse_ref(bad)


def test_unsupported_scheme_names_the_alternatives():
    with pytest.raises(ImageError, match="oras://"):
        parse_ref("ftp://host/x.sif")


# -- catalogue ------------------------------------------------------------------------
def test_bundled_catalogue_names_no_unpublished_registry_or_digest(images_env):
    bundled = Catalogue.bundled()
    assert {"sigmoid@0.1.0", "luby@0.1.0"} <= set(bundled.ids)
    for entry in bundled:
        assert entry.kind == "local-build"
        assert entry.reference is None and entry.sha256 is None and not entry.mirrors
        assert "dacstyle pack" in entry.build


def test_identifier_pins_one_entry_and_bare_name_picks_newest():
    cat = Catalogue.bundled().merged({"sigmoid@0.10.0": {"reference": "https://example.org/s.sif"},
                                      "sigmoid@0.9.0": {"reference": "https://example.org/t.sif"}})
    assert cat.get("sigmoid@0.1.0").kind == "local-build"
    assert cat.get("sigmoid").version == "0.10.0"
    assert cat.get("sigmoid@0.10.0").kind == "remote"
    with pytest.raises(ImageNotFoundError, match="known: .*luby@0.1.0"):
        cat.get("sigmoid@9.9.9")


def test_catalogue_overrides_from_env_file_and_dict(images_env, tmp_path, monkeypatch):
    digest = "cd" * 32
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps({"images": {"sigmoid@0.1.0": {
        "reference": "oras://127.0.0.1:5000/d/sigmoid:0.1.0", "sha256": digest, "size": 10,
        "mirrors": ["https://example.org/sigmoid.sif"]}}}))
    monkeypatch.setenv("DACSTYLE_CATALOGUE", str(path))
    config.reset()  # settings are read from the environment at reset, as at import
    entry = load_catalogue().get("sigmoid@0.1.0")
    assert (entry.kind, entry.sha256, entry.size) == ("remote", digest, 10)
    assert entry.sources == ("oras://127.0.0.1:5000/d/sigmoid:0.1.0", "https://example.org/sigmoid.sif")
    entry = load_catalogue({"sigmoid@0.1.0": {"reference": "https://example.org/other.sif"}}).get("sigmoid@0.1.0")
    assert entry.reference == "https://example.org/other.sif" and entry.sha256 == digest
    assert Catalogue().override("new@1", reference="https://example.org/n.sif").get("new").kind == "remote"


def test_bad_catalogues_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="kind"):
        Catalogue().merged({"x@1": {"kind": "magic"}})
    with pytest.raises(ConfigError, match="needs a reference"):
        Catalogue().merged({"x@1": {"kind": "remote"}})
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(ConfigError, match="not valid JSON"):
        Catalogue.from_file(tmp_path / "bad.json")
    with pytest.raises(ImageError, match="loopback"):
        Catalogue().merged({"x@1": {"reference": "http://example.org/x.sif"}})


# -- cache and local images -----------------------------------------------------------
def test_local_build_is_recorded_and_resolved(images_env, sif_file):
    with pytest.raises(ImageNotFoundError, match="dacstyle pack"):
        resolve_image("sigmoid@0.1.0")
    added = images_env.add(sif_file, ref="sigmoid@0.1.0")
    assert added.sha256 == images.hash_file(sif_file)
    assert added.path == images_env.blob_path(added.sha256) and added.path.read_bytes() == sif_file.read_bytes()
    assert resolve_image("sigmoid@0.1.0") == added.path
    assert resolve_image("sigmoid") == added.path
    assert images.pull("sigmoid@0.1.0").sha256 == added.sha256
    assert resolve_image("sigmoid@0.1.0", sha256=added.sha256) == added.path
    with pytest.raises(ImageNotFoundError):
        resolve_image("sigmoid@0.1.0", sha256="0" * 64)


def test_add_rejects_non_sif_and_wrong_digest(images_env, tmp_path, sif_file):
    junk = tmp_path / "junk.sif"
    junk.write_bytes(b"not a sif" * 100)
    with pytest.raises(ImageFormatError):
        images_env.add(junk)
    with pytest.raises(DigestMismatchError):
        images_env.add(sif_file, sha256="0" * 64)
    assert list(images_env.entries()) == []
    assert not list((images_env.root / "blobs" / "sha256").glob("*"))


def test_local_paths_are_verified_in_place(images_env, tmp_path, sif_file):
    assert resolve_image(sif_file) == sif_file
    assert resolve_image(str(sif_file), sha256=images.hash_file(sif_file)) == sif_file
    with pytest.raises(DigestMismatchError):
        resolve_image(sif_file, sha256="1" * 64)
    with pytest.raises(ImageNotFoundError):
        resolve_image(tmp_path / "missing.sif")
    with pytest.raises(ImageNotFoundError, match="neither an image file nor a catalogue entry"):
        resolve_image("no-such-benchmark")
    junk = tmp_path / "junk.sif"
    junk.write_bytes(b"\0" * 4096)
    with pytest.raises(ImageFormatError):
        resolve_image(junk)


def test_cache_hit_does_not_rehash_unless_the_file_changed(images_env, big_sif, monkeypatch):
    added = images_env.add(big_sif, ref="big@1")
    calls = []
    real = cache_module._hash_handle
    monkeypatch.setattr(cache_module, "_hash_handle", lambda h: calls.append(h) or real(h))
    assert images_env.lookup("big@1") is not None and calls == []
    assert images_env.lookup("big@1", full=True) is not None and len(calls) == 1
    os.utime(added.path, ns=(0, 12345))  # same bytes, other mtime: re-hashed once, then trusted again
    assert images_env.lookup("big@1") is not None and len(calls) == 2
    assert images_env.lookup("big@1") is not None and len(calls) == 2


def test_corrupted_entry_is_detected_and_dropped(images_env, big_sif):
    added = images_env.add(big_sif, ref="big@1")
    with open(added.path, "r+b") as handle:
        handle.seek(3 << 20)
        handle.write(b"corrupt!")
    assert images_env.lookup("big@1") is None
    assert not added.path.exists()
    assert images_env.digest_for("big@1") == added.sha256  # the ref stays: the next pull fetches it again
    added = images_env.add(big_sif, ref="big@1")
    added.path.chmod(0o644)
    with open(added.path, "r+b") as handle:  # a broken SIF header is caught without hashing
        handle.write(b"\0" * 64)
    os.utime(added.path, ns=(0, images_env._read_index()["blobs"][added.sha256]["mtime_ns"]))
    assert images_env.lookup("big@1") is None


def test_remove_and_prune(images_env, sif_file, big_sif):
    a = images_env.add(sif_file, ref="a@1")
    images_env.record("a@2", a.sha256)
    b = images_env.add(big_sif, ref="b@1")
    assert images_env.remove("a@1") == []            # a@2 still points to it
    assert images_env.remove("a@2") == [a.sha256]
    assert not a.path.exists()
    with pytest.raises(ImageNotFoundError):
        images_env.remove("nothing")
    (images_env.root / "tmp" / "stale.part").write_bytes(b"x")
    orphan = images_env.blob_path("e" * 64)
    orphan.write_bytes(b"x")
    deleted = images_env.prune()
    assert orphan in deleted and not orphan.exists() and b.path.exists()
    assert images_env.remove(f"sha256:{b.sha256[:12]}") == [b.sha256]
    images_env.add(sif_file, ref="a@1")
    images_env.prune(everything=True)
    assert list(images_env.entries()) == []


def test_damaged_index_is_rebuilt(images_env, sif_file):
    images_env.add(sif_file, ref="a@1")
    images_env.index_path.write_text("{garbage")
    assert images_env.lookup("a@1") is None
    assert images_env.add(sif_file, ref="a@1").path.exists()


def test_cache_defaults_to_config_cache_dir(images_env):
    assert ImageCache().root == images_env.root
    assert isinstance(ImageCache().root, Path)


def test_pull_of_a_local_path_reports_its_digest(images_env, sif_file):
    image = images.pull(sif_file)
    assert image.path == sif_file and image.sha256 == images.hash_file(sif_file)
    assert list(images_env.entries()) == [], "a local path is used in place, not copied"
