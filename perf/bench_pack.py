"""How long the default image of this environment takes to pack, and how big it is.

Run it from the environment you want measured (CI's: a fresh venv with
``.[test]``). Prints the median of ``--repeat`` packs, the collect step (finding
files and their shared libraries) apart from mksquashfs, the image size, and the
time to start a server in it and reset an env (cold, the image just packed).

    python perf/bench_pack.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from dacstyle import RemoteRunner
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.images.envtree import collect_environment, package_dirs
from dacstyle.images.pack import pack_environment


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    collect, pack, sizes, starts = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="dacstyle-bench-pack-") as tmp:
        for i in range(args.repeat):
            started = time.perf_counter()
            tree = collect_environment()
            collect.append(time.perf_counter() - started)
            result = pack_environment(Path(tmp) / f"env{i}.sif", progress=False)
            pack.append(result.seconds)
            sizes.append(result.size)
            started = time.perf_counter()
            with warnings.catch_warnings(), RemoteRunner(SigmoidBenchmark(), runtime="bwrap", image=result.path) as run:
                run.get_environment().reset(seed=0)
            starts.append(time.perf_counter() - started)
            Path(result.path).unlink()
    files = sum(1 for e in tree.entries() if e.kind == "file")
    print(f"environment: {sys.prefix} ({len(package_dirs())} package folders, {files} files, "
          f"{tree.total_bytes() / 1e6:.0f} MB before compression)")
    print("| measurement (median of %d) | value |" % args.repeat)
    print("|---|---|")
    print(f"| collect (files + shared libraries) | {statistics.median(collect):.1f} s |")
    print(f"| pack --from-env, whole environment (collect + mksquashfs lz4) | {statistics.median(pack):.1f} s |")
    print(f"| image size | {statistics.median(sizes) / 1e6:.0f} MB |")
    print(f"| first server start + reset in the new image (bwrap) | {statistics.median(starts) * 1000:.0f} ms |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
