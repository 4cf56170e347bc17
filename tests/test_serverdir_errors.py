"""A server folder that cannot be made is a typed error and leaves nothing (a real, tiny tmpfs mounted here)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from dacstyle.errors import ContainerError
from dacstyle.runtimes.serverdir import ServerDir


@pytest.fixture
def tiny_disk():
    """Mount a tmpfs with room for ``inodes`` entries (root only); unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = Path(tempfile.mkdtemp(prefix="dx-disk-", dir="/tmp"))
    mounted = []

    def mount(options: str) -> Path:
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mountpoint)],
                       check=True, capture_output=True, timeout=30)
        mounted.append(mountpoint)
        return mountpoint

    try:
        yield mount
    finally:
        for path in mounted:
            subprocess.run(["umount", "-l", str(path)], check=False, capture_output=True, timeout=30)
        shutil.rmtree(mountpoint, ignore_errors=True)


# inodes 1: no room for the server folder; 2: its host/ folder; 3: the host token; ... 6: owner.json
@pytest.mark.parametrize("inodes", [1, 2, 3, 4, 5, 6])
def test_a_full_disk_at_any_step_is_a_typed_error_and_leaves_nothing(tiny_disk, inodes):
    root = tiny_disk(f"size=1m,mode=0700,nr_inodes={inodes}")
    with pytest.raises(ContainerError, match="No space left on device"):
        ServerDir.create(root, agent=True)
    assert list(root.iterdir()) == [], "a half-made server folder was left behind"


def test_with_room_the_run_folder_is_complete(tiny_disk):
    run = ServerDir.create(tiny_disk("size=1m,mode=0700,nr_inodes=100"), agent=True)
    assert {p.name for p in run.path.iterdir()} == {"host", "agent", "owner.json"}
    run.remove()


def test_a_read_only_disk_is_a_typed_error(tiny_disk):
    root = tiny_disk("size=1m,mode=0700,ro")
    with pytest.raises(ContainerError, match="cannot make a server folder .*Read-only file system"):
        ServerDir.create(root)


def test_a_runs_root_of_someone_else_is_refused(servers_root):
    if os.geteuid() != 0:
        pytest.skip("giving a folder to another uid needs root")
    servers_root.mkdir(mode=0o700)
    os.chown(servers_root, 12345, 12345)
    with pytest.raises(ContainerError, match="not a folder owned by you"):
        ServerDir.create()
