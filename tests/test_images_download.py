"""Pulling over HTTP from a real loopback server with Range support, and every fault we promise to survive."""

from __future__ import annotations

import os
import stat
import sys
import threading
from pathlib import Path

import pytest

from dacstyle.config import config
from dacstyle.errors import DigestMismatchError, DownloadError, ImageError, ImageFormatError, ImageNotFoundError
from dacstyle.images import hash_file, pull, resolve_image

from _servers import ServerProcess, fast_retry


def _no_bad_entry(cache) -> None:
    """Nothing unverified under blobs/, no index entry."""
    assert list(cache.entries()) == []
    blobs = cache.root / "blobs" / "sha256"
    assert not blobs.exists() or not list(blobs.iterdir())


def test_pull_then_cache_hit_without_request(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    image = pull(url, retry=fast_retry())
    assert image.path.read_bytes() == big_sif.read_bytes()
    assert image.sha256 == hash_file(big_sif)
    assert len(file_server.requests) == 1
    assert resolve_image(url) == image.path
    assert pull(url, sha256=image.sha256).path == image.path
    assert len(file_server.requests) == 1, "a cache hit must not touch the server"
    assert oct(stat.S_IMODE(image.path.stat().st_mode)) == "0o644"
    assert not list((images_env.root / "tmp").iterdir()), "no partial files left after success"


def test_wrong_digest_leaves_no_entry(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    with pytest.raises(DigestMismatchError, match="expected " + "0" * 64):
        pull(url, sha256="0" * 64, retry=fast_retry())
    _no_bad_entry(images_env)
    assert not list((images_env.root / "tmp").glob("*.part")), "wrong content is never kept for resume"


def test_truncated_body_keeps_part_and_resumes(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    size = big_sif.stat().st_size
    file_server.fail_next("big.sif", "truncate:2500000")  # Content-Length says `size`, 2.5 MB arrive
    with pytest.raises(DownloadError, match="truncated|broke"):
        pull(url, retry=fast_retry(attempts=1))
    _no_bad_entry(images_env)
    part = images_env.part_path(url)
    assert part.stat().st_size == 2_500_000
    image = pull(url, retry=fast_retry(attempts=1))
    assert image.path.read_bytes() == big_sif.read_bytes()
    second = file_server.gets("big.sif")[-1]
    assert second["range"] == "bytes=2500000-" and second["status"] == 206
    assert second["sent"] == size - 2_500_000
    assert second["if_range"], "the resume is validated with If-Range (ETag)"


def test_server_error_then_success_is_retried(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    file_server.fail_next("big.sif", "500", "500")
    image = pull(url, retry=fast_retry(attempts=3))
    assert image.sha256 == hash_file(big_sif)
    assert [r["status"] for r in file_server.gets("big.sif")] == [500, 500, 200]


def test_persistent_server_error_is_one_clear_error(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    file_server.fail_next("big.sif", "500", "500", "500")
    with pytest.raises(DownloadError, match="HTTP 500") as info:
        pull(url, retry=fast_retry(attempts=3))
    assert str(info.value).count("HTTP 500") == 3 and url in str(info.value)
    _no_bad_entry(images_env)


def test_server_killed_mid_stream_then_restarted_resumes(images_env, tmp_path, big_sif):
    size = big_sif.stat().st_size
    stall_at = 3 << 20
    log1, log2 = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    server = ServerProcess({"big.sif": big_sif}, log1, faults=[f"big.sif=stall:{stall_at}"])
    url = f"http://127.0.0.1:{server.port}/big.sif"
    outcome: dict = {}

    def run() -> None:
        try:
            pull(url, retry=fast_retry(attempts=1))
        except Exception as exc:  # noqa: BLE001 - handed to the main thread
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    try:
        worker.start()
        server.wait_for_event("stalled")   # the first 3 MiB are on the wire and the server hangs
    finally:
        server.kill()                      # SIGKILL mid-stream
        worker.join(30)
    assert isinstance(outcome.get("error"), DownloadError)
    _no_bad_entry(images_env)
    assert images_env.part_path(url).stat().st_size == stall_at
    restarted = ServerProcess({"big.sif": big_sif}, log2, port=server.port)
    try:
        image = pull(url, retry=fast_retry(attempts=2))
    finally:
        restarted.kill()
    assert image.path.read_bytes() == big_sif.read_bytes()
    gets = [e for e in restarted.entries() if e["method"] == "GET"]
    assert len(gets) == 1
    assert gets[0]["range"] == f"bytes={stall_at}-" and gets[0]["status"] == 206
    assert gets[0]["sent"] == size - stall_at, "resumed, not restarted from zero"


def test_changed_file_on_server_restarts_instead_of_mixing(images_env, file_server, big_sif, tmp_path):
    url = file_server.add("big.sif", big_sif)
    file_server.fail_next("big.sif", "truncate:1000000")
    with pytest.raises(DownloadError):
        pull(url, retry=fast_retry(attempts=1))
    other = tmp_path / "other.sif"
    other.write_bytes(big_sif.read_bytes()[:-8] + b"newbytes")
    file_server.add("big.sif", other)     # new ETag: If-Range fails, server sends all of it
    image = pull(url, retry=fast_retry(attempts=1))
    assert image.path.read_bytes() == other.read_bytes()
    last = file_server.gets("big.sif")[-1]
    assert last["range"] and last["status"] == 200


def test_non_sif_file_is_rejected(images_env, file_server, tmp_path):
    fake = tmp_path / "fake.sif"
    fake.write_bytes(os.urandom(300_000))
    url = file_server.add("image.sif", fake)
    with pytest.raises(ImageFormatError, match="did not serve a SIF"):
        pull(url, retry=fast_retry())
    _no_bad_entry(images_env)
    assert not list((images_env.root / "tmp").glob("*.part"))


def test_corrupted_cache_entry_is_fetched_again(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    image = pull(url, retry=fast_retry())
    with open(image.path, "r+b") as handle:
        handle.seek(4 << 20)
        handle.write(b"bit rot")
    again = pull(url, retry=fast_retry())
    assert again.path == image.path and again.path.read_bytes() == big_sif.read_bytes()
    assert len(file_server.gets("big.sif")) == 2


def test_next_mirror_when_the_first_fails(images_env, file_server, big_sif):
    good = file_server.add("good.sif", big_sif)
    bad = file_server.url("missing.sif")          # 404: permanent, no retries
    image = pull(bad, mirrors=(good,), retry=fast_retry())
    assert image.sha256 == hash_file(big_sif)
    assert [r["status"] for r in file_server.requests] == [404, 200]
    flaky = file_server.add("flaky.sif", big_sif)
    file_server.fail_next("flaky.sif", "500", "500")
    catalogue = {"demo@1.0": {"reference": flaky, "mirrors": [good], "sha256": image.sha256}}
    images_env.remove(image.sha256)
    assert pull("demo@1.0", catalogue=catalogue, retry=fast_retry(attempts=2)).sha256 == image.sha256
    assert [r["status"] for r in file_server.gets("flaky.sif")] == [500, 500]


def test_all_mirrors_failing_lists_each(images_env, file_server, big_sif):
    a, b = file_server.url("a.sif"), file_server.url("b.sif")
    with pytest.raises(DownloadError) as info:
        pull(a, mirrors=(b,), retry=fast_retry())
    assert a in str(info.value) and b in str(info.value)


def test_offline_with_and_without_cache_entry(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    with pytest.raises(ImageNotFoundError, match=r"offline: .*big.sif.* is not in the image cache"):
        pull(url, offline=True)
    assert file_server.requests == []
    image = pull(url)
    config.offline = True
    assert resolve_image(url) == image.path
    assert pull(url, sha256=image.sha256).path == image.path
    with pytest.raises(ImageNotFoundError, match="offline"):
        pull(file_server.url("other.sif"))
    assert len(file_server.requests) == 1


def test_catalogue_entry_pins_digest_and_is_available_offline(images_env, file_server, big_sif):
    url = file_server.add("big.sif", big_sif)
    digest = hash_file(big_sif)
    catalogue = {"demo@2.0": {"reference": url, "sha256": digest, "size": big_sif.stat().st_size}}
    path = resolve_image("demo@2.0", catalogue=catalogue)
    assert images_env.digest_for("demo@2.0") == digest
    assert resolve_image("demo@2.0", catalogue=catalogue, offline=True) == path
    with pytest.raises(DigestMismatchError):
        pull("demo@3.0", catalogue={"demo@3.0": {"reference": file_server.url("big.sif?x"), "sha256": "1" * 64}},
             retry=fast_retry())


def test_progress_bar_when_asked(images_env, file_server, big_sif, capsys):
    url = file_server.add("big.sif", big_sif)
    pull(url, progress="always")
    err = capsys.readouterr().err
    assert "big.sif" in err and "B/s" in err
    images_env.prune(everything=True)
    pull(url)  # config.progress == "never": quiet
    assert capsys.readouterr().err == ""


def test_apptainer_schemes_use_apptainer_when_present(images_env, tmp_path, sif_file, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ImageError, match=r"not installed here; use an oras://, https:// or local"):
        pull("docker://example/image:1")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "argv.txt"
    fake = bindir / "apptainer"
    fake.write_text(f"#!{sys.executable}\nimport shutil, sys\n"
                    f"open({str(calls)!r}, 'w').write(repr(sys.argv[1:]))\n"
                    f"shutil.copyfile({str(sif_file)!r}, sys.argv[2])\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(bindir))
    image = pull("library://sylabs/default/alpine:3")
    assert image.sha256 == hash_file(sif_file)
    argv = eval(calls.read_text())  # noqa: S307 - our own repr
    assert argv[0] == "pull" and argv[2] == "library://sylabs/default/alpine:3" and argv[1].endswith(".sif")
    assert Path(resolve_image("library://sylabs/default/alpine:3")) == image.path


@pytest.mark.parametrize("spare_cores", [True, False])
def test_hashing_in_a_helper_thread_or_inline_agrees(images_env, file_server, big_sif, monkeypatch, spare_cores):
    from dacstyle.images import download

    monkeypatch.setattr(download, "_SPARE_CORES", spare_cores)
    url = file_server.add("big.sif", big_sif)
    file_server.fail_next("big.sif", "truncate:1500000")
    image = pull(url, sha256=hash_file(big_sif), retry=fast_retry(attempts=2))
    assert image.path.read_bytes() == big_sif.read_bytes()
    assert file_server.gets("big.sif")[-1]["range"] == "bytes=1500000-"


def test_lock_held_elsewhere_times_out_with_a_clear_error(images_env, file_server, big_sif):
    from dacstyle.images import ImageCache

    url = file_server.add("big.sif", big_sif)
    impatient = ImageCache(images_env.root, lock_timeout=0.05)
    with images_env.lock(url):  # flock is per open file: a second open in this process waits too
        with pytest.raises(DownloadError, match="another process fetching"):
            pull(url, cache=impatient)
    assert file_server.requests == []
    assert pull(url, cache=impatient, retry=fast_retry()).sha256 == hash_file(big_sif)
