"""Packing directories and the Python environment into SIF images (real mksquashfs)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import dacstyle
from dacstyle.errors import ImageError
from dacstyle.images.pack import pack_directory, pack_environment, pack_squashfs
from dacstyle.images.sif import open_image, verify_image

from conftest import dacstyle_inside

TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "sif-testdata"
needs_mksquashfs = pytest.mark.skipif(shutil.which("mksquashfs") is None,
                                      reason="mksquashfs (squashfs-tools) is not installed")
needs_golden = pytest.mark.skipif(not TESTDATA.is_dir(),
                                  reason=f"SIF golden images not found at {TESTDATA}")
_RUN_TOOLS = ("squashfuse", "fusermount3", "bwrap", "mksquashfs")


def _comparable(descriptor) -> dict:
    d = descriptor.to_dict()
    for key in ("id", "created_at", "modified_at", "index"):
        d.pop(key)
    return d


@needs_golden
def test_wrapping_reference_squashfs_matches_golden_layout(tmp_path):
    """Same squashfs in, same header/descriptor fields out (ids, times, uuid aside)."""
    out = pack_squashfs(TESTDATA / "input" / "root.squashfs", tmp_path / "p.sif", arch="386")
    ours, ref = verify_image(out), open_image(TESTDATA / "images" / "one-group.sif")
    ours_prim, ref_prim = ours.primary_partition(), ref.primary_partition()
    ref_prim_fields = _comparable(ref_prim)
    # one-group.sif has a raw partition first; the squashfs still lands on a page boundary
    assert _comparable(ours_prim) | {"offset": 0, "size_with_padding": 0} == \
        ref_prim_fields | {"offset": 0, "size_with_padding": 0}
    assert ours_prim.offset % 4096 == 0 and ours_prim.offset == ours.header.data_offset + 592
    assert ours.read_object(ours_prim) == ref.read_object(ref_prim)
    h, r = ours.header.to_dict(), ref.header.to_dict()
    for key in ("magic", "version", "arch", "descriptors_total", "descriptors_offset",
                "descriptors_size", "data_offset"):
        assert h[key] == r[key], key
    assert h["launch_script"] == "#!/usr/bin/env run-singularity\n"
    assert h["descriptors_free"] == 47
    assert h["data_offset"] + h["data_size"] == ours.file_size


@needs_mksquashfs
def test_pack_directory_structure_deffile_and_labels(tmp_path):
    src = tmp_path / "root"
    (src / "opt").mkdir(parents=True)
    (src / "opt" / "hello.txt").write_text("hello\n")
    deffile = "Bootstrap: scratch\n%files\n    hello.txt /opt/hello.txt\n"
    res = pack_directory(src, tmp_path / "d.sif", deffile=deffile,
                         labels={"org.example.name": "demo"})
    img = verify_image(res.path)
    assert [d.data_type for d in img.descriptors] == ["deffile", "generic-json", "partition"]
    assert img.deffile() == deffile
    assert img.labels() == {"org.example.name": "demo"}
    meta = json.loads(img.read_object(img.find("generic-json", "inspect-metadata.json")[0]))
    assert meta["type"] == "container" and meta["data"]["attributes"]["deffile"] == deffile
    prim = img.primary_partition()
    assert prim.extra["part_type"] == "primary-system" and prim.extra["fs_type"] == "squashfs"
    assert prim.offset % 4096 == 0 and res.squashfs_offset == prim.offset
    assert img.header.arch == prim.extra["arch"] == "amd64"
    assert res.size == img.file_size and res.seconds > 0
    listing = subprocess.run(["unsquashfs", "-o", str(prim.offset), "-lls", str(res.path)],
                             capture_output=True, text=True, check=True).stdout
    assert "squashfs-root/opt/hello.txt" in listing and "root/root" in listing


@needs_mksquashfs
def test_pack_directory_rejects_a_file(tmp_path):
    from dacstyle.errors import ImageError

    (tmp_path / "f").write_text("x")
    with pytest.raises(ImageError, match="not a directory"):
        pack_directory(tmp_path / "f", tmp_path / "o.sif")


# -- the packed Python environment, run under bubblewrap ----------------------------------

@pytest.fixture(scope="session")
def env_image(tmp_path_factory):
    missing = [t for t in _RUN_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (bubblewrap, squashfuse, fuse3, squashfs-tools)")
    out = tmp_path_factory.mktemp("envpack") / "env.sif"
    result = pack_environment(out, processors=2)
    print(f"\npack_environment: {result.summary()}", file=sys.stderr)
    return result


@contextmanager
def mounted(image: Path, offset: int, where: Path):
    where.mkdir()
    proc = subprocess.run(["squashfuse", "-o", f"offset={offset}", str(image), str(where)],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        pytest.skip(f"squashfuse cannot mount here: {proc.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["fusermount3", "-u", str(where)], capture_output=True, timeout=60)
        where.rmdir()


def _bwrap(root: Path, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bwrap", "--ro-bind", str(root), "/", "--proc", "/proc",
                           "--dev", "/dev", "--tmpfs", "/tmp", "--clearenv",
                           "--setenv", "PATH", "/usr/bin:/bin", *argv],
                          capture_output=True, text=True, timeout=120)


@pytest.mark.container
def test_packed_environment_metadata(env_image):
    img = verify_image(env_image.path)
    labels = img.labels()
    assert labels["org.dacstyle.version"] == dacstyle.__version__
    assert labels["org.dacstyle.python"] == os.path.realpath(sys.executable)
    assert labels["org.dacstyle.prefix"] == os.path.realpath(sys.prefix)
    assert labels["org.dacstyle.packed-from"] == "environment"
    assert "Bootstrap: scratch" in img.deffile() and "numpy==" in img.deffile()


@pytest.mark.container
def test_packed_environment_runs_python_under_bwrap(env_image, tmp_path):
    with mounted(env_image.path, env_image.squashfs_offset, tmp_path / "m") as root:
        assert os.readlink(root / "opt/dacstyle/env/bin/python3") == os.path.realpath(sys.executable)
        assert (root / "usr/bin/python3").read_text() == '#!/bin/sh\nexec /opt/dacstyle/env/bin/python3 "$@"\n'
        assert not list((root / "opt/dacstyle/env").rglob("__editable__*"))
        assert not list((root / "opt/dacstyle/env").rglob("*.pth"))[1:], "only the launcher's own .pth"
        assert (root / "etc/passwd").read_text().startswith("root:x:0:0:")
        for d in ("tmp", "home", "run/dacstyle", "proc", "dev", "sys"):
            assert (root / d).is_dir(), d
        start = time.monotonic()
        proc = _bwrap(root, "/usr/bin/python3", "-c",
                      "import dacstyle, numpy, gymnasium, Pyro5, sklearn; print('ok')")
        heavy = time.monotonic() - start
        assert (proc.returncode, proc.stdout.strip()) == (0, "ok"), proc.stderr
        code = ("import dacstyle, dacstyle.container.server, sys; "
                "print(dacstyle.__file__, dacstyle.container.__file__, sys.prefix)")
        start = time.monotonic()
        proc = _bwrap(root, "/usr/local/bin/python3", "-c", code)
        light = time.monotonic() - start
        assert proc.returncode == 0, proc.stderr
        pkg_file, container_file, prefix = proc.stdout.split()
        assert pkg_file == f"{dacstyle_inside()}/__init__.py"
        assert container_file == f"{dacstyle_inside()}/container/__init__.py"
        assert prefix == "/opt/dacstyle/env"
        print(f"\nimport numpy+sklearn+gymnasium: {heavy:.2f}s, dacstyle.container.server: "
              f"{light:.2f}s", file=sys.stderr)
        assert light < 5  # generous for loaded CI machines; ~0.1 s measured


@needs_mksquashfs
def test_packing_onto_a_full_disk_is_an_image_error_and_leaves_nothing(tmp_path):
    """A 1 MiB tmpfs (root only): the environment and a folder bigger than it both fail cleanly."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True, timeout=30)
    try:
        folder = tmp_path / "big"
        folder.mkdir()
        (folder / "noise.bin").write_bytes(os.urandom(4 << 20))
        with pytest.raises(ImageError, match="cannot write the image|No space left on device"):
            pack_directory(folder, disk / "dir.sif")
        with pytest.raises(ImageError, match="cannot write the image|No space left on device"):
            pack_environment(disk / "env.sif", progress=False)
        assert list(disk.iterdir()) == []
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False, timeout=30)
