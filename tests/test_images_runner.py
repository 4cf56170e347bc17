"""Pulled images run through RemoteRunner: over HTTP, over oras://, and from the catalogue."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dacstyle import RemoteRunner
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.config import config
from dacstyle.images import ImageCache, hash_file, push
from dacstyle.images.default import environment_key


pytestmark = pytest.mark.container


def first_steps(runner: RemoteRunner) -> list:
    env = runner.get_environment()
    obs, _ = env.reset(seed=3)
    out = [obs]
    for _ in range(3):
        out.append(env.step(np.array([1, 2]))[0])
    env.close()
    return out


def expected_steps() -> list:
    env = SigmoidBenchmark().set_seed(3).get_environment()
    obs, _ = env.reset(seed=3)
    return [obs] + [env.step(np.array([1, 2]))[0] for _ in range(3)]


def same(a: list, b: list) -> bool:
    return all(x.tobytes() == y.tobytes() for x, y in zip(a, b)) and len(a) == len(b)


def test_image_pulled_over_http_runs_and_is_recorded(packed_image, file_server, tmp_path, no_leftovers):
    url = file_server.add("env.sif", packed_image)
    digest = hash_file(packed_image)
    with RemoteRunner(SigmoidBenchmark().set_seed(3), runtime="bwrap", image=url) as runner:
        assert same(first_steps(runner), expected_steps())
        results = runner.run(lambda obs: np.array([0, 0]), 1)
    assert runner.image == ImageCache().blob_path(digest)
    manifest = json.loads((results.path / "manifest.json").read_text())
    assert manifest["image"]["sha256"] == digest
    assert manifest["image"]["labels"]["org.dacstyle.packed-from"] == "environment"
    gets = len(file_server.gets("env.sif"))
    with RemoteRunner(SigmoidBenchmark().set_seed(3), runtime="bwrap", image=url) as runner:
        assert same(first_steps(runner), expected_steps())
    assert len(file_server.gets("env.sif")) == gets, "a second run must be a cache hit"


def test_image_pushed_and_pulled_over_oras_runs(packed_image, registry, no_leftovers):
    pinned = push(packed_image, f"oras://{registry.host}/dacstyle/env:test")
    with RemoteRunner(SigmoidBenchmark().set_seed(3), runtime="bwrap", image=pinned) as runner:
        assert same(first_steps(runner), expected_steps())


def test_catalogue_entry_pins_the_image_the_runner_pulls(packed_image, file_server, tmp_path, no_leftovers):
    url = file_server.add("sigmoid.sif", packed_image)
    catalogue = tmp_path / "catalogue.json"
    catalogue.write_text(json.dumps({"images": {"sigmoid@0.1.0": {"reference": url, "sha256": hash_file(packed_image)}}}))
    config.catalogue = catalogue
    with RemoteRunner(SigmoidBenchmark().set_seed(3), runtime="bwrap") as runner:
        assert same(first_steps(runner), expected_steps())
    assert len(file_server.gets("sigmoid.sif")) == 1
    config.catalogue = None
    catalogue.write_text(json.dumps({"images": {"sigmoid@0.1.0": {"reference": url, "sha256": "0" * 64}}}))
    config.catalogue = catalogue
    from dacstyle.errors import ImageError

    with pytest.raises(ImageError):
        RemoteRunner(SigmoidBenchmark(), runtime="bwrap").start()


def test_local_build_entry_uses_the_environment_image_from_the_cache(packed_image, no_leftovers):
    ImageCache().add(packed_image, ref=environment_key())  # what a first run would have packed
    with RemoteRunner(SigmoidBenchmark().set_seed(3), runtime="bwrap") as runner:
        assert same(first_steps(runner), expected_steps())
        assert runner.image == ImageCache().lookup(environment_key()).path
    assert ImageCache().lookup("sigmoid@0.1.0").sha256 == hash_file(packed_image)
