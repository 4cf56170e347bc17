"""The image cache distrusts its folder: another real user (a second uid) plants symlinks, swaps content,
makes folders writable; hostile SIF headers; a full or read-only disk (a real tmpfs mounted here)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import stat
import struct
import subprocess
import tempfile
import traceback
import tracemalloc
from pathlib import Path
from typing import Callable

import pytest

from dacstyle.errors import CacheError, CacheTrustError, ImageFormatError
from dacstyle.images import ImageCache, hash_file, pull
from dacstyle.images.sif import open_image, verify_image

from _servers import fast_retry

OTHER = "dacstyle-other"
VICTIM_TEXT = b"root's precious file\n"


@pytest.fixture(scope="module")
def other_user() -> pwd.struct_passwd:
    """A second, unprivileged user (created with useradd when missing; CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip("acting as a second user needs root (CI runs as root)")
    try:
        return pwd.getpwnam(OTHER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--user-group", "--shell",
                        "/usr/sbin/nologin", OTHER], check=True, capture_output=True, timeout=60)
        return pwd.getpwnam(OTHER)


def as_user(user: pwd.struct_passwd, action: Callable[[], None]) -> None:
    """Run ``action`` in a forked child that has dropped to ``user`` (no groups kept); fail if it fails."""
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, act, exit without running pytest's cleanup
        code = 1
        try:
            signal.alarm(20)  # a hung child dies, so the parent's wait below is bounded
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            action()
            code = 0
        except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the other user's action failed (see stderr)"


@pytest.fixture
def public_dir():
    """A folder under /tmp that a second user can reach (tmp_path's parents are 0700)."""
    root = Path(tempfile.mkdtemp(prefix="dx-trust-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def victim(public_dir: Path) -> Path:
    """A file of root's that a planted symlink points at; it must never change."""
    path = public_dir / "victim.txt"
    path.write_bytes(VICTIM_TEXT)
    path.chmod(0o644)
    return path


def _shared_cache(root: Path, group: int) -> ImageCache:
    """A cache folder of root's that a group (here: the other user's) may write, set up as an admin would."""
    root.mkdir(mode=0o775)
    os.chown(root, 0, group)
    root.chmod(0o2775)
    cache = ImageCache(root, shared=True)
    cache.prune()  # creates the subfolders: setgid + sticky, group writable
    return cache


def _plant(link: Path, target: Path) -> Callable[[], None]:
    return lambda: os.symlink(target, link)


# -- who may change the folder -------------------------------------------------------------------
def test_a_cache_folder_of_another_user_is_refused(other_user, public_dir, file_server, big_sif):
    public_dir.chmod(0o1777)  # like /tmp: anyone may create a folder here first
    root = public_dir / "cache"
    as_user(other_user, lambda: os.mkdir(root, 0o755))
    url = file_server.add("big.sif", big_sif)
    with pytest.raises(CacheTrustError, match=f"belongs to uid {other_user.pw_uid}, not to you"):
        pull(url, cache=ImageCache(root), retry=fast_retry())
    with pytest.raises(CacheTrustError):
        ImageCache(root).lookup(url)
    assert list(root.iterdir()) == [] and file_server.requests == []


@pytest.mark.parametrize("sub", ["", "tmp", "locks", "blobs/sha256"])
def test_a_world_writable_cache_is_refused_and_what_was_planted_is_untouched(
        other_user, public_dir, victim, file_server, big_sif, sub):
    cache = ImageCache(public_dir / "cache")
    cache.prune()  # the folders, created properly
    (cache.root / sub).chmod(0o777)  # an admin's mistake: now anyone can plant files
    url = file_server.add("big.sif", big_sif)
    index = cache.index_path
    plant = {"": lambda: (index.unlink(), os.symlink(victim, index)),
             "tmp": _plant(cache.part_path(url), victim),
             "locks": _plant(cache.root / "locks" / (cache.part_path(url).stem + ".lock"), victim),
             "blobs/sha256": _plant(cache.blob_path(hash_file(big_sif)), victim)}[sub]
    as_user(other_user, plant)
    with pytest.raises(CacheTrustError, match="writable by every user") as info:
        pull(url, cache=cache, retry=fast_retry())
    assert "SHARED_CACHE" not in str(info.value), "a shared cache may not be world-writable either"
    assert victim.read_bytes() == VICTIM_TEXT and file_server.requests == []


def test_a_group_writable_private_cache_is_refused_with_advice(public_dir):
    cache = ImageCache(public_dir / "cache")
    cache.prune()
    cache.root.chmod(0o775)
    with pytest.raises(CacheTrustError, match="writable by its group.*DACSTYLE_SHARED_CACHE=1"):
        cache.lookup("anything")
    cache.root.chmod(0o755)
    (cache.root / "tmp").chmod(0o775)
    with pytest.raises(CacheTrustError, match="tmp is writable by its group"):
        cache.prune()


def test_a_cache_under_a_world_writable_folder_without_sticky_bit_is_refused(public_dir):
    public_dir.chmod(0o777)
    with pytest.raises(CacheTrustError, match="above it is writable by every user"):
        ImageCache(public_dir / "cache").prune()
    assert not (public_dir / "cache").exists()


# -- a shared (group) cache: members may write, nobody is followed, every use is re-hashed --------
def test_a_planted_part_symlink_is_removed_not_followed(other_user, public_dir, victim, file_server, big_sif):
    cache = _shared_cache(public_dir / "cache", other_user.pw_gid)
    url = file_server.add("big.sif", big_sif)
    part = cache.part_path(url)
    as_user(other_user, lambda: (os.symlink(victim, part),
                                 os.symlink(victim, part.with_name(part.name + ".json"))))
    image = pull(url, cache=cache, retry=fast_retry())
    assert victim.read_bytes() == VICTIM_TEXT, "the download was written through the planted symlink"
    assert image.path.read_bytes() == big_sif.read_bytes()
    assert list((cache.root / "tmp").iterdir()) == []
    assert stat.S_IMODE(os.stat(cache.root / "tmp").st_mode) == 0o3775


def test_members_share_images_and_cannot_delete_each_others(other_user, public_dir, file_server, big_sif,
                                                            sif_file):
    cache = _shared_cache(public_dir / "cache", other_user.pw_gid)
    url = file_server.add("big.sif", big_sif)
    as_user(other_user, lambda: pull(url, cache=ImageCache(cache.root, shared=True), retry=fast_retry()))
    image = pull(url, cache=cache, retry=fast_retry())  # the member's download, re-hashed, no request
    assert image.path.stat().st_uid == other_user.pw_uid and len(file_server.gets("big.sif")) == 1
    mine = cache.add(sif_file, ref="small@1")
    with open(mine.path, "r+b") as handle:  # bit rot in root's image
        handle.seek(mine.size - 8)
        handle.write(b"rotten!!")

    def member_uses_it() -> None:
        with pytest.raises(CacheTrustError, match="cannot remove .* belongs to uid 0"):
            ImageCache(cache.root, shared=True).lookup("small@1")
    as_user(other_user, member_uses_it)
    assert cache.lookup("small@1") is None and not mine.path.exists()  # its owner can drop it


def test_a_resumable_part_of_someone_else_is_not_resumed(other_user, public_dir, file_server, big_sif):
    cache = _shared_cache(public_dir / "cache", other_user.pw_gid)
    url = file_server.add("big.sif", big_sif)
    part, size = cache.part_path(url), big_sif.stat().st_size

    def plant_prefix() -> None:  # a resumable-looking partial download with the wrong bytes
        part.write_bytes(b"\xee" * 1_000_000)
        part.with_name(part.name + ".json").write_text(json.dumps({"url": url, "total": size}))
    as_user(other_user, plant_prefix)
    image = pull(url, cache=cache, retry=fast_retry())
    assert image.path.read_bytes() == big_sif.read_bytes()
    assert file_server.gets("big.sif")[0]["range"] in (None, ""), "resumed from another user's bytes"


def test_a_hard_link_to_someone_elses_file_is_not_written_through(other_user, public_dir, victim, file_server,
                                                                   big_sif):
    # fs.protected_hardlinks=0 lets anyone link another user's file; root plants it here to stand in
    cache = _shared_cache(public_dir / "cache", other_user.pw_gid)
    url = file_server.add("big.sif", big_sif)
    os.link(victim, cache.part_path(url))
    assert pull(url, cache=cache, retry=fast_retry()).path.read_bytes() == big_sif.read_bytes()
    assert victim.read_bytes() == VICTIM_TEXT and os.stat(victim).st_nlink == 1


def test_the_shared_setting_comes_from_the_configuration(other_user, public_dir, monkeypatch):
    from dacstyle.config import config

    root = public_dir / "cache"
    _shared_cache(root, other_user.pw_gid)
    with pytest.raises(CacheTrustError, match="writable by its group"):
        ImageCache(root).lookup("x")
    monkeypatch.setenv("DACSTYLE_SHARED_CACHE", "1")
    config.reset()
    assert ImageCache(root).shared and ImageCache(root).lookup("x") is None


def test_a_planted_lock_symlink_is_a_typed_error(other_user, public_dir, victim, file_server, big_sif):
    cache = _shared_cache(public_dir / "cache", other_user.pw_gid)
    url = file_server.add("big.sif", big_sif)
    lock = cache.root / "locks" / (cache.part_path(url).stem + ".lock")
    as_user(other_user, _plant(lock, victim))
    with pytest.raises(CacheTrustError, match="lock file .* is a symlink"):
        pull(url, cache=cache, retry=fast_retry())
    assert victim.read_bytes() == VICTIM_TEXT and file_server.requests == []


def test_swapped_content_with_restored_mtime_is_caught_in_a_shared_cache(
        other_user, public_dir, file_server, big_sif):
    cache = _shared_cache(public_dir / "cache", other_user.pw_gid)
    url = file_server.add("big.sif", big_sif)
    digest = hash_file(big_sif)
    image = pull(url, sha256=digest, cache=cache, retry=fast_retry())
    os.chown(image.path, other_user.pw_uid, other_user.pw_gid)  # a member's own upload, as if they had pulled it

    def swap_and_cover_up() -> None:  # same size, mtime put back, the index's fingerprint rewritten
        before = os.stat(image.path)
        with open(image.path, "r+b") as handle:
            handle.seek(4 << 20)
            handle.write(b"trojan")
        os.utime(image.path, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(image.path)
        index = json.loads(cache.index_path.read_text())
        index["blobs"][digest].update(size=after.st_size, mtime_ns=after.st_mtime_ns,
                                      ctime_ns=after.st_ctime_ns, ino=after.st_ino)
        forged = cache.root / "forged.json"
        forged.write_text(json.dumps(index))
        os.replace(forged, cache.index_path)
    as_user(other_user, swap_and_cover_up)
    again = pull(url, sha256=digest, cache=cache, retry=fast_retry())
    assert again.path.read_bytes() == big_sif.read_bytes(), "the swapped image was served as the pinned one"
    assert len(file_server.gets("big.sif")) == 2


def test_a_forged_index_cannot_point_outside_the_cache(other_user, public_dir, sif_file):
    cache = _shared_cache(public_dir / "cache", other_user.pw_gid)
    cache.add(sif_file, ref="small@1")
    elsewhere = public_dir / "experiment.sif"  # root's own file outside the cache: not a valid image
    elsewhere.write_bytes(b"results of a week")

    def forge() -> None:
        index = json.loads(cache.index_path.read_text())
        index["refs"]["small@1"] = "../../experiment"
        index["blobs"]["../../experiment"] = {"refs": ["small@1"]}
        forged = cache.root / "forged.json"
        forged.write_text(json.dumps(index))
        os.replace(forged, cache.index_path)
    as_user(other_user, forge)
    assert cache.lookup("small@1") is None
    cache.prune()
    assert elsewhere.read_bytes() == b"results of a week", "a forged index made root delete a file"
    with pytest.raises(CacheTrustError, match="not a sha256 digest"):
        cache.get("../../experiment")


def test_swapped_content_with_restored_mtime_is_caught_in_a_private_cache(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    digest = hash_file(big_sif)
    image = pull(url, sha256=digest, retry=fast_retry())
    before = os.stat(image.path)
    with open(image.path, "r+b") as handle:
        handle.seek(4 << 20)
        handle.write(b"trojan")
    os.utime(image.path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert pull(url, sha256=digest, retry=fast_retry()).path.read_bytes() == big_sif.read_bytes()
    assert len(file_server.gets("big.sif")) == 2


# -- hostile SIF headers -------------------------------------------------------------------------
_FIELDS = {"descriptors_total": 88, "descriptors_offset": 96, "data_offset": 112}


def _patched(source: Path, out: Path, field: str, value: int) -> Path:
    data = bytearray(source.read_bytes())
    struct.pack_into("<q", data, _FIELDS[field], value)
    if field == "descriptors_total":
        struct.pack_into("<q", data, 104, (value * 585) % (1 << 63))  # a consistent table size
    out.write_bytes(bytes(data))
    return out


HOSTILE = [("descriptors_total", 2**62), ("descriptors_total", 10**15), ("descriptors_total", 10**6),
           ("descriptors_offset", 2**62), ("data_offset", 2**62), ("descriptors_total", -1)]


@pytest.mark.parametrize("field,value", HOSTILE)
def test_a_hostile_header_is_rejected_with_bounded_memory(tmp_path, big_sif, field, value):
    bad = _patched(big_sif, tmp_path / "bad.sif", field, value)
    tracemalloc.start()
    try:
        with pytest.raises(ImageFormatError, match="corrupt header|truncated"):
            verify_image(bad)
        with pytest.raises(ImageFormatError):
            open_image(bad) if field != "data_offset" else verify_image(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"rejecting the header allocated {peak} bytes"


@pytest.mark.parametrize("field,value", HOSTILE[:4])
def test_a_hostile_header_from_a_server_leaves_no_partial_file(images_env, file_server, tmp_path, big_sif,
                                                               field, value):
    url = file_server.add("bad.sif", _patched(big_sif, tmp_path / "bad.sif", field, value))
    with pytest.raises(ImageFormatError, match="did not serve a SIF"):
        pull(url, retry=fast_retry())
    assert list((images_env.root / "tmp").iterdir()) == []
    assert list(images_env.entries()) == []


def test_a_fifo_is_never_read_as_an_image(tmp_path):
    fifo = tmp_path / "image.sif"
    os.mkfifo(fifo)
    writer = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # junk waiting in it: reading it would not block
    try:
        os.write(writer, b"\0" * 4096)
        with pytest.raises(ImageFormatError, match="not a regular file"):
            open_image(fifo)
    finally:
        os.close(writer)


def test_an_oversized_metadata_object_is_refused_not_read(tmp_path, big_sif):
    from dacstyle.images.sif import MAX_METADATA_BYTES
    from dacstyle.images.sifwrite import ObjectInput, partition_extra, write_sif

    labels = tmp_path / "labels.json"
    labels.write_bytes(b'{"a": "' + b"x" * MAX_METADATA_BYTES + b'"}')
    squashfs, image = tmp_path / "rootfs", tmp_path / "labelled.sif"
    part = open_image(big_sif).primary_partition()
    with open(big_sif, "rb") as handle:
        handle.seek(part.offset)
        squashfs.write_bytes(handle.read(part.size))
    write_sif(image, [ObjectInput("partition", squashfs, name="rootfs", extra=partition_extra()),
                      ObjectInput("labels", labels)])
    tracemalloc.start()
    try:
        with pytest.raises(ImageFormatError, match="more than the .* allowed"):
            verify_image(image).labels()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, f"refusing the labels allocated {peak} bytes"


# -- a full or read-only disk (a real, small tmpfs) ----------------------------------------------
@pytest.fixture
def small_disk(public_dir: Path):
    """A 2 MiB tmpfs mounted for this test (root only), unmounted afterwards."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = public_dir / "disk"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mountpoint)],
                   check=True, capture_output=True, timeout=30)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False, capture_output=True, timeout=30)


def _files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if not p.is_dir())


def test_a_full_disk_is_a_typed_error_and_leaves_no_half_made_file(small_disk, file_server, big_sif):
    cache = ImageCache(small_disk / "cache")
    url = file_server.add("big.sif", big_sif)  # 6 MiB into 2 MiB
    with pytest.raises(CacheError, match="the disk is full"):
        pull(url, cache=cache, retry=fast_retry())
    with pytest.raises(CacheError, match="the disk is full"):
        cache.add(big_sif, ref="big@1")
    leftovers = [p for p in _files_under(cache.root) if p.parent.name != "locks" and p.name != "index.json"]
    assert leftovers == []


def test_a_read_only_cache_is_a_typed_error_and_leaves_nothing(small_disk, file_server, big_sif, sif_file):
    cache = ImageCache(small_disk / "cache")
    small = cache.add(sif_file, ref="small@1")
    cache._update_index(lambda index: index["blobs"][small.sha256].update(ino=0))  # as if copied: re-hash due
    before = _files_under(cache.root)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True, capture_output=True, timeout=30)
    url = file_server.add("big.sif", big_sif)
    with pytest.raises(CacheError, match="read-only"):
        pull(url, cache=cache, retry=fast_retry())
    with pytest.raises(CacheError, match="read-only"):
        cache.add(big_sif, ref="big@1")
    assert _files_under(cache.root) == before
    assert file_server.requests == []
    assert cache.lookup("small@1").path == small.path  # re-hashed, not re-recorded, still served
