"""Sweep speed: the same seeds run here one after another, and as one array job on a private Slurm.

Each repeat runs the Sigmoid sweep (random agent, process runtime) both ways, interleaved,
into fresh folders, timed from the call to the gathered ``results.csv``; the array job's time
includes submission, scheduling (``bf_interval=1``), the tasks and the host's polling. The
private single-host Slurm of the tests (tests/slurmcluster.py, needs root, slurm-wlm and munge)
declares 4 CPUs per node entry, so up to 4 tasks share this machine's cores. Prints medians
and the array / local ratio, for one seed (the fixed cost of a job) and for ``--seeds``.

    python perf/bench_sweep.py [--seeds 8] [--episodes 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.errors import IsolationWarning
from dacstyle.slurm import Slurm
from dacstyle.slurm.sweep import sweep

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import slurmcluster  # noqa: E402  (the tests' private Slurm)


def timed(seeds: int, episodes: int, out: Path, placement: Slurm | None) -> float:
    """Seconds for one sweep into ``out``; every run must succeed."""
    started = time.perf_counter()
    results = sweep(SigmoidBenchmark(), range(seeds), episodes=episodes, out=out, runtime="process",
                    placement=placement, timeout=600, progress=False)
    elapsed = time.perf_counter() - started
    assert not results.failed, results.errors
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reason = slurmcluster.missing()
    if reason:
        sys.exit(f"no private Slurm here: {reason}")
    warnings.simplefilter("ignore", IsolationWarning)
    place = Slurm(partition="cpu", time="10")
    with tempfile.TemporaryDirectory(prefix="dx-sweep-") as scratch:
        cluster = slurmcluster.start(Path(scratch) / "slurm")
        os.environ.update(cluster.env)
        try:
            times: dict[tuple[int, str], list[float]] = {}
            for repeat in range(args.repeats):
                for seeds in (1, args.seeds):
                    for kind, placement in (("local", None), ("array", place)):
                        out = Path(scratch) / f"{kind}-{seeds}-{repeat}"
                        times.setdefault((seeds, kind), []).append(timed(seeds, args.episodes, out, placement))
        finally:
            cluster.stop()
    print(f"sweep of Sigmoid, {args.episodes} episodes per run, process runtime; medians of {args.repeats}")
    print(f"{'seeds':>5}  {'local (sequential)':>18}  {'array job':>10}  {'array / local':>13}")
    for seeds in (1, args.seeds):
        local = statistics.median(times[(seeds, "local")])
        array = statistics.median(times[(seeds, "array")])
        print(f"{seeds:>5}  {local:>16.2f} s  {array:>8.2f} s  {array / local:>12.2f}x")


if __name__ == "__main__":
    main()
