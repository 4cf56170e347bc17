"""Slurm placement, measured side by side in one run; prints one table of medians.

Rows: time from ``RemoteRunner.start()`` to the first ``reset`` for a server on
this node (Unix socket) and for one placed by Slurm (queue wait included, and
excluded: from the moment Slurm reports the job RUNNING); and one ``env.step``
over TCP with mutual TLS vs over the Unix socket (both servers on this node, so
the difference is the channel). Without a Slurm (SLURM_CONF), it starts the
private single-host one the tests use (root only).

    python perf/bench_slurm.py [--starts 5] [--steps 2000]
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

from dacstyle import RemoteRunner
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.config import config
from dacstyle.container.client import Server
from dacstyle.errors import IsolationWarning
from dacstyle.runtimes.process import ProcessRuntime
from dacstyle.slurm import Slurm
from dacstyle.slurm.commands import job_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_channel import median_us, time_steps  # noqa: E402


def slurm_starts(starts: int) -> tuple[list[float], list[float]]:
    """Seconds from start() to the first reset: in all, and from the job running."""
    total, running = [], []
    for seed in range(starts):
        began = time.perf_counter()
        with RemoteRunner(SigmoidBenchmark().set_seed(seed), runtime="process", placement=Slurm(partition="cpu")) as runner:
            env = runner.get_environment()
            env.reset(seed=seed)
            done = time.perf_counter()
            info = job_info(runner.job_id)[0]
            start = info.fields.get("StartTime", "") if info.fields else ""
        total.append(done - began)
        # Slurm's StartTime has 1 s resolution: the queue wait is the part before it
        queued = _queue_wait(start, began)
        running.append(done - began - queued)
    return total, running


def _queue_wait(start_time: str, began: float) -> float:
    import datetime as dt

    try:
        started = dt.datetime.fromisoformat(start_time).timestamp()
    except ValueError:
        return 0.0
    wall_began = time.time() - (time.perf_counter() - began)
    return max(0.0, started - wall_began)


def local_starts(starts: int) -> list[float]:
    out = []
    for seed in range(starts):
        began = time.perf_counter()
        with RemoteRunner(SigmoidBenchmark().set_seed(seed), runtime="process") as runner:
            runner.get_environment().reset(seed=seed)
            out.append(time.perf_counter() - began)
    return out


def step_times(tcp: bool, steps: int) -> list[float]:
    with Server.start(ProcessRuntime(), tcp="127.0.0.1:0" if tcp else None) as server:
        env = server.create(SigmoidBenchmark().set_seed(0))
        env.reset(seed=0)
        return time_steps(env, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=5)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    warnings.simplefilter("ignore", IsolationWarning)
    cluster = None
    if not os.environ.get("SLURM_CONF"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        import slurmcluster

        cluster = slurmcluster.start(Path(tempfile.mkdtemp(prefix="dacstyle-perf-slurm-")))
        os.environ.update(cluster.env)
    shared = tempfile.mkdtemp(prefix="dacstyle-perf-shared-")
    os.chmod(shared, 0o700)
    config.shared_dir = shared
    try:
        local = local_starts(args.starts)
        total, running = slurm_starts(args.starts)
        unix, tls = [], []
        for _ in range(3):  # interleaved, so drift hits both alike
            unix += step_times(False, args.steps)
            tls += step_times(True, args.steps)
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"{'measure':<52} {'median':>10}")
    print(f"{'start -> first reset, this node (Unix socket)':<52} {statistics.median(local):>9.2f}s")
    print(f"{'start -> first reset, Slurm job, queue wait included':<52} {statistics.median(total):>9.2f}s")
    print(f"{'start -> first reset, Slurm job, queue wait excluded':<52} {statistics.median(running):>9.2f}s")
    print(f"{'env.step over the Unix socket':<52} {median_us(unix):>8.0f}us")
    print(f"{'env.step over TCP with mutual TLS':<52} {median_us(tls):>8.0f}us")
    print(f"{'TLS / Unix':<52} {median_us(tls) / median_us(unix):>9.2f}x")


if __name__ == "__main__":
    main()
