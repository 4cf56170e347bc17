"""Lifecycle speed: from a host's death to nothing left of its runs; prints one table of medians.

Rows, per runtime (process; bwrap when it is available here):

* SIGKILL -> nothing left: a host script starts a RemoteRunner (the probe
  object), prints its ready line and is SIGKILLed; timed until no process of
  its runs (reaper, server, container), no mount and no server folder remains.
  The target (issue 8) is under 2 s: the per-run reaper sees the end of file at
  once, kills the tree, unmounts and removes the folder.
* SIGTERM -> host exited: the host's handler stops every run, then dies of
  SIGTERM; nothing is left at that moment (checked on every repeat).
* launch overhead: ``Runtime.launch`` of a trivial payload (the reaper's start)
  next to a bare ``subprocess.Popen`` of the same payload.

    python perf/bench_lifecycle.py [--repeats 10] [--image IMAGE.sif]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

from dacstyle.errors import IsolationWarning
from dacstyle.runtimes import LaunchSpec, get_runtime
from dacstyle.runtimes.bwrap import BwrapRuntime
from dacstyle.runtimes.serverdir import ServerDir, process_alive

HOST = r"""
import json, os, sys, warnings
warnings.simplefilter("ignore")
from dacstyle import RemoteRunner
from dacstyle.competitions.sandbox import descendants
from dacstyle.testing import probe_benchmark
runner = RemoteRunner(probe_benchmark(), runtime=sys.argv[1], image=sys.argv[2] or None).start()
assert runner.get_object().echo(1) == 1
print(json.dumps({"runs": [str(runner.server.server_dir.path)], "pids": sorted(descendants(os.getpid()))}), flush=True)
sys.stdin.read()
"""


def left(ready: dict, root: Path) -> bool:
    """True while a process, mount or folder of the host's runs remains."""
    with open("/proc/self/mounts") as handle:
        mounts = [line.split()[1] for line in handle if line.split()[1].startswith(str(root))]
    return bool(mounts) or any(os.path.exists(r) for r in ready["runs"]) or any(process_alive(p) for p in ready["pids"])


def one_host(runtime: str, image: str, sig: int, root: Path) -> float:
    """Start a host, send ``sig``, return the seconds until nothing is left (SIGKILL) or it exited (SIGTERM)."""
    host = subprocess.Popen([sys.executable, "-c", HOST, runtime, image], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = host.stdout.readline()
        if not line:
            raise RuntimeError(f"the host did not start: {host.communicate(timeout=30)[1].strip().splitlines()[-1:]}")
        ready = json.loads(line)
        start = time.perf_counter()
        host.send_signal(sig)
        if sig == signal.SIGTERM:
            host.wait(30)
            took = time.perf_counter() - start
            if left(ready, root):
                raise SystemExit("SIGTERM: something was left when the host exited")
            return took
        deadline = start + 30
        while left(ready, root):
            if time.perf_counter() > deadline:
                raise SystemExit("SIGKILL: leftovers after 30 s")
            time.sleep(0.001)  # measuring: poll /proc and the mount table at 1 ms
        return time.perf_counter() - start
    finally:
        host.kill()
        host.wait(30)


def launch_overhead(repeats: int) -> tuple[float, float]:
    """Median seconds: Runtime.launch of `true` until its exit, and a bare Popen of it."""
    runtime = get_runtime("process")
    launched, bare = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        handle = runtime.launch(LaunchSpec(server_dir=ServerDir.create()), ["true"])
        handle.wait(30)
        handle.stop()
        launched.append(time.perf_counter() - start)
        start = time.perf_counter()
        subprocess.run(["true"], check=True)
        bare.append(time.perf_counter() - start)
    return statistics.median(launched), statistics.median(bare)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--image", help="a SIF packed from this environment (default: pack one)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", IsolationWarning)
    xdg = Path(tempfile.mkdtemp(prefix="dxb-", dir="/tmp"))
    os.environ["XDG_RUNTIME_DIR"] = str(xdg)
    root = xdg / "dacstyle"
    rows = []
    try:
        runtimes = [("process", "")]
        if BwrapRuntime.available():
            image = args.image
            if image is None:
                from dacstyle.images.pack import pack_environment

                image = str(xdg / "env.sif")
                pack_environment(Path(image), progress=False)
            runtimes.append(("bwrap", image))
        for runtime, image in runtimes:
            for sig in (signal.SIGKILL, signal.SIGTERM):
                what = "SIGKILL -> nothing left" if sig == signal.SIGKILL else "SIGTERM -> host exited, clean"
                try:
                    times = [one_host(runtime, image, sig, root) for _ in range(args.repeats)]
                except RuntimeError as exc:
                    print(f"{runtime}: skipped: {exc}", file=sys.stderr)
                    break
                rows.append((f"{runtime}: {what}", statistics.median(times), max(times)))
        launched, bare = launch_overhead(args.repeats)
        rows.append(("Runtime.launch(true) until exit", launched, launched))
        rows.append(("subprocess.run(true)", bare, bare))
    finally:
        shutil.rmtree(xdg, ignore_errors=True)
    print(f"{'measure':<42} {'median ms':>10} {'max ms':>8}   ({args.repeats} repeats, {os.cpu_count()} cores)")
    for name, median, worst in rows:
        print(f"{name:<42} {median * 1000:>10.1f} {worst * 1000:>8.1f}")
    print(f"reaper overhead per launch: {(launched - bare) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
