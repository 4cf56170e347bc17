"""Large arrays through the server's shared area: bit for bit, one-shot 0600 files, references validated."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dacstyle import RemoteRunner, codec
from dacstyle.sharedarrays import THRESHOLD, ArrayArea, using
from dacstyle.testing import probe_benchmark

ARRAYS = [
    np.random.default_rng(0).random(256 * 1024, dtype=np.float32),  # 1 MiB
    np.random.default_rng(1).integers(0, 255, (400, 600, 3), dtype=np.uint8),  # a CartPole frame
    np.arange(THRESHOLD, dtype=">f8").reshape(-1, 8)[:, ::2],  # big-endian, not contiguous
    np.zeros((THRESHOLD // 4, 2), dtype=[("a", "<i2"), ("b", "<f4")]),  # structured
]


@pytest.fixture
def area(tmp_path):
    return ArrayArea(tmp_path / "arrays", create=True)  # the server's side: makes the folder on first use


def same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.dtype == b.dtype and a.shape == b.shape and np.ascontiguousarray(a).tobytes() == b.tobytes()


@pytest.mark.parametrize("array", ARRAYS, ids=["f32-1MiB", "u8-frame", "be-strided", "structured"])
def test_a_large_array_travels_as_a_private_one_shot_file(array, area):
    with using(area):
        tree = codec.encode({"obs": array, "small": np.ones(3)})
    name = tree["obs"]["__shm__"][0]
    assert "__nd__" in tree["small"]  # small arrays stay inline
    assert os.stat(area.folder / name).st_mode & 0o777 == 0o600
    with using(area):
        back = codec.decode(tree)
    same(array, back["obs"])
    assert back["obs"].flags.writeable
    assert os.listdir(area.folder) == []  # read once, then gone


def test_without_an_area_arrays_stay_inline_and_references_are_refused(area, tmp_path):
    tree = codec.encode(ARRAYS[0])
    assert "__nd__" in tree
    with using(ArrayArea(tmp_path / "not-made")):  # the host's side before the server made the area
        assert "__nd__" in codec.encode(ARRAYS[0])
    assert not (tmp_path / "not-made").exists()
    with using(area):
        ref = codec.encode(ARRAYS[0])
    with pytest.raises(ValueError, match="no shared area"):
        codec.decode(ref)


def _reference(area: ArrayArea, **change) -> dict:
    with using(area):
        body = codec.encode(ARRAYS[0])["__shm__"]
    fields = dict(zip(("name", "descr", "shape", "size"), body), **change)
    return {"__shm__": [fields["name"], fields["descr"], fields["shape"], fields["size"]]}


def test_references_outside_the_area_or_to_other_files_are_refused(area, tmp_path):
    outside = tmp_path / "outside"
    outside.write_bytes(b"\0" * ARRAYS[0].nbytes)
    os.chmod(outside, 0o600)
    cases = {
        "outside the area": _reference(area, name="../outside"),
        "outside the area ": _reference(area, name=str(outside)),
        "cannot be opened": _reference(area, name="0" * 32),
    }
    link = area.folder / ("1" * 32)
    link.symlink_to(outside)  # a valid name that leads out of the area
    cases["cannot be opened  "] = _reference(area, name=link.name)
    loose = _reference(area)
    os.chmod(area.folder / loose["__shm__"][0], 0o644)
    cases["not a private file"] = loose
    cases["holds"] = _reference(area, size=ARRAYS[0].nbytes * 2, shape=[ARRAYS[0].size * 2])
    cases["not its dtype times its shape"] = _reference(area, shape=[ARRAYS[0].size + 1])
    cases["bad dtype"] = _reference(area, descr="|O")
    small = ArrayArea(area.folder, max_bytes=ARRAYS[0].nbytes - 1)
    for message, tree in {"over the": _reference(area)}.items():
        with using(small), pytest.raises(ValueError, match=message):
            codec.decode(tree)
    for message, tree in cases.items():
        with using(area), pytest.raises(ValueError, match=message.strip()):
            codec.decode(tree)


def test_remote_echo_through_the_area_and_a_server_that_refuses_the_token_file(no_leftovers):
    with RemoteRunner(probe_benchmark(), runtime="process") as runner:
        probe = runner.get_object()
        area_folder = runner.server.server_dir.path / "host" / "arrays"
        assert not area_folder.exists()  # made with the server's first large array
        for array in ARRAYS:
            same(array, probe.echo(array))
        assert os.listdir(area_folder) == [] and os.stat(area_folder).st_mode & 0o777 == 0o700
        stolen = {"__shm__": ["../token", "<u1", [43], 43]}  # the server's own token file, as an argument
        with pytest.raises(ValueError, match="outside the area"):
            probe._remote.invoke("call", "echo", ("echo", [stolen], {}))
        probe.release()


def test_the_area_is_shared_with_a_server_in_a_bwrap_container(packed_image, no_leftovers):
    with RemoteRunner(probe_benchmark(), runtime="bwrap", image=packed_image) as runner:
        probe = runner.get_object()
        assert runner.server.channel.arrays is not None
        for array in ARRAYS[:2]:
            same(array, probe.echo(array))
        assert os.listdir(runner.server.server_dir.path / "host" / "arrays") == []
        probe.release()
