"""The default image: this environment packed once per fingerprint, older packs dropped."""

from __future__ import annotations

import os
import shutil
import sys

import pytest

from dacstyle.images import ImageCache, hash_file
from dacstyle.images.default import default_image, environment_key, image_for
from dacstyle.images.pack import pack_directory
from dacstyle.benchmarks import SigmoidBenchmark

pytestmark = pytest.mark.container


def test_default_image_is_built_once_and_supersedes_older_packs(packed_image, tmp_path, monkeypatch):
    from dacstyle.images import default

    key = environment_key()  # fixed for the test: a source edited meanwhile would give a new key
    monkeypatch.setattr(default, "environment_key", lambda: key)
    cache = ImageCache(tmp_path / "cache")
    old = cache.add(packed_image, ref="dacstyle-env@0.0.1+0123456789abcdef")
    cache.record("sigmoid@0.1.0", old.sha256)
    kept_copy = tmp_path / "mine.sif"
    shutil.copyfile(packed_image, kept_copy)
    with open(kept_copy, "ab") as handle:
        handle.write(b"\0" * 4096)  # same image, other digest: a user's own copy
    mine = cache.add(kept_copy, ref="my-experiment")
    small = tmp_path / "small"
    small.mkdir()
    (small / "hello.txt").write_text("hi")
    other = cache.add(pack_directory(small, tmp_path / "small.sif").path, ref="https://example.org/small.sif")
    venv_labels = {"org.dacstyle.packed-from": "environment", "org.dacstyle.python": os.path.realpath(sys.executable),
                   "org.dacstyle.prefix": "/elsewhere/.venv"}  # the same interpreter packed from a venv
    venv = cache.add(pack_directory(small, tmp_path / "venv.sif", labels=venv_labels).path,
                     ref="dacstyle-env@0.1.0+00000000000000aa")

    path = default_image(cache, progress=False)
    assert cache.lookup(key).path == path
    digests = {item.sha256 for item in cache.entries()}
    assert old.sha256 not in digests, "the superseded environment pack was kept"
    assert {mine.sha256, other.sha256, venv.sha256, hash_file(path)} <= digests, "another environment's pack was dropped"
    assert default_image(cache, progress=False) == path  # a cache hit, no second pack


def test_image_for_prefers_the_given_reference(packed_image, tmp_path):
    assert image_for(SigmoidBenchmark(), packed_image) == packed_image.absolute()
    bench = SigmoidBenchmark()
    bench.image = str(packed_image)
    assert image_for(bench) == packed_image.absolute()
