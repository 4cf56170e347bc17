"""Download throughput of ``dacstyle.images.pull`` next to a plain streamed ``requests`` GET.

Generates a valid ~200 MB SIF (the reference squashfs padded with random bytes)
in a temporary folder, serves it from a loopback HTTP server in a subprocess,
and measures, interleaved in one run (medians of ``--runs``):

* ``requests GET``: streamed GET of the same URL into a file, 1 MiB chunks, no checks;
* ``pull``: dacstyle's full path: stream + sha256 in one pass, SIF check, atomic
  rename into a fresh cache, index update;
* ``resolve cached``: ``resolve_image(url)`` on a warm cache (target < 50 ms).

each over raw loopback and over loopback paced to 1000 and 400 MB/s (what a
fast data-centre link delivers), where the cost of hashing shows differently.

Run: ``python perf/bench_download.py [--size-mb 200] [--runs 5]`` (about a minute).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _servers import ServerProcess, make_sif  # noqa: E402

from dacstyle.images import ImageCache, hash_file, pull, resolve_image  # noqa: E402


def plain_get(url: str, dest: Path) -> None:
    """The baseline: what a hand-written download would do."""
    with requests.get(url, stream=True, timeout=60) as response, open(dest, "wb") as out:
        response.raise_for_status()
        for chunk in response.iter_content(1 << 20):
            out.write(chunk)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--resolves", type=int, default=200)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dacstyle-bench-"))
    try:
        image = make_sif(work / "bench.sif", args.size_mb << 20)
        size = image.stat().st_size
        digest = hash_file(image)
        print(f"image: {size / 1e6:.0f} MB valid SIF; loopback HTTP server in a subprocess; "
              f"medians of {args.runs} interleaved runs; {len(os.sched_getaffinity(0))} CPU cores")
        print(f"{'link':<16} {'requests GET MB/s':>18} {'dacstyle pull MB/s':>19} {'ratio':>6}")
        cache = None
        for label, rate in (("loopback", None), ("paced 1000 MB/s", 1e9), ("paced 400 MB/s", 4e8)):
            plain, pulled_rate, cache = _compare(work, image, size, digest, rate, args.runs)
            print(f"{label:<16} {plain:>18.0f} {pulled_rate:>19.0f} {pulled_rate / plain:>6.2f}")
        print("target: ratio >= 0.80 (pull hashes every byte with sha256 and checks the SIF; the GET does not)")
        started = time.perf_counter()
        hash_file(image)
        hashing = size / (time.perf_counter() - started) / 1e6
        print(f"sha256 alone on this CPU: {hashing:.0f} MB/s (no download can be verified faster than this)")
        url, cache = cache
        resolve_times = []
        for _ in range(args.resolves):
            start = time.perf_counter()
            resolve_image(url, cache=cache)
            resolve_times.append(time.perf_counter() - start)
        print(f"resolve_image on a cached {size / 1e6:.0f} MB image: median {statistics.median(resolve_times) * 1e3:.2f} ms, "
              f"max {max(resolve_times) * 1e3:.2f} ms over {args.resolves} calls (target < 50 ms)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _compare(work: Path, image: Path, size: int, digest: str, rate: float | None, runs: int):
    """Median MB/s of the plain GET and of pull, interleaved, against one server process."""
    server = ServerProcess({"bench.sif": image}, work / "requests.jsonl", rate=rate)
    try:
        url = f"http://127.0.0.1:{server.port}/bench.sif"
        plain_get(url, work / "warmup.bin")  # page cache warm for both contenders
        plain_times: list[float] = []
        pull_times: list[float] = []
        for run in range(runs):
            dest = work / "plain.bin"
            start = time.perf_counter()
            plain_get(url, dest)
            plain_times.append(time.perf_counter() - start)
            dest.unlink()
            cache = ImageCache(work / f"cache-{rate}-{run}")
            start = time.perf_counter()
            pulled = pull(url, sha256=digest, cache=cache, progress=False)
            pull_times.append(time.perf_counter() - start)
            assert pulled.sha256 == digest
            if run < runs - 1:
                shutil.rmtree(cache.root)
        return (size / statistics.median(plain_times) / 1e6, size / statistics.median(pull_times) / 1e6,
                (url, cache))
    finally:
        server.kill()

if __name__ == "__main__":
    sys.exit(main())
