"""Channel speed, measured side by side in one run; prints one table of medians.

Rows: local ``env.step`` vs remote ``env.step`` (process and bwrap runtimes) vs a
raw JSON echo over the same kind of Unix socket (a bare server process, no
Pyro5, no codec); start to first ``reset``; cold start in a SIF under bwrap; a
1 MiB float32 observation round trip. Targets (issues 2 and 3): remote step p50
<= 3x the raw echo; process start to first reset < 1 s; bwrap cold start < 1 s;
bwrap step within 10% of the process runtime. The step rows are measured in rounds,
every row once per round, and each shows the median of its rounds.

    python perf/bench_channel.py [--steps 15000] [--rounds 5] [--starts 5] [--image IMAGE.sif]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from dacstyle import RemoteRunner
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.errors import IsolationWarning
from dacstyle.testing import probe_benchmark

ECHO_SERVER = r"""
import json, os, socket, struct, sys
path = sys.argv[1]
srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(1)
print("ready", flush=True)
conn, _ = srv.accept()
def recv(n):
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk: raise SystemExit(0)
        buf += chunk
    return buf
while True:
    size, = struct.unpack("!I", recv(4))
    reply = json.dumps(json.loads(recv(size))).encode()
    conn.sendall(struct.pack("!I", len(reply)) + reply)
"""


PYRO_SERVER = r"""
import sys
from Pyro5.api import Daemon, config, expose
config.SERIALIZER = "json"
@expose
class Echo:
    def echo(self, value):
        return value
daemon = Daemon(unixsocket=sys.argv[1])
daemon.register(Echo(), "echo")
print("ready", flush=True)
daemon.requestLoop()
"""


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def time_steps(env, steps: int) -> list[float]:
    """Seconds per ``env.step`` (fixed action), ``steps`` of them; episodes reset in between, untimed."""
    env.reset(seed=0)
    action = np.array([2, 5])
    samples = []
    for _ in range(steps):
        started = time.perf_counter()
        _, _, terminated, truncated, _ = env.step(action)
        samples.append(time.perf_counter() - started)
        if terminated or truncated:
            env.reset()
    return samples


@contextlib.contextmanager
def echo_server(script: str) -> Iterator[str]:
    """Run an echo server ``script`` in a subprocess on a fresh Unix socket; yields its path."""
    folder = tempfile.mkdtemp(prefix="dxperf-")
    path = os.path.join(folder, "echo.sock")
    server = subprocess.Popen([sys.executable, "-c", script, path], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout.readline().strip() == "ready"
        yield path
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def timed(call: Callable[[], object], steps: int) -> list[float]:
    call()
    samples = []
    for _ in range(steps):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


@contextlib.contextmanager
def raw_echo(payload: dict) -> Iterator[Callable[[], None]]:
    """A call that sends the payload as one length-prefixed JSON frame each way, no Pyro5."""
    message = json.dumps(payload).encode()
    frame = struct.pack("!I", len(message)) + message
    with echo_server(ECHO_SERVER) as path, socket.socket(socket.AF_UNIX) as conn:
        conn.connect(path)

        def call() -> None:
            conn.sendall(frame)
            size, = struct.unpack("!I", conn.recv(4, socket.MSG_WAITALL))
            json.loads(conn.recv(size, socket.MSG_WAITALL))

        yield call


@contextlib.contextmanager
def pyro_echo(payload: dict) -> Iterator[Callable[[], None]]:
    """A call that sends the same payload through a bare Pyro5 JSON daemon: no token, codec or guard."""
    from Pyro5.api import Proxy

    with echo_server(PYRO_SERVER) as path:
        proxy = Proxy(f"PYRO:echo@./u:{path}")
        proxy._pyroSerializer = "json"
        try:
            yield lambda: proxy.echo(payload)
        finally:
            proxy._pyroRelease()


def start_to_reset(runtime: str, image, starts: int) -> list[float]:
    samples = []
    for _ in range(starts):
        started = time.perf_counter()
        with RemoteRunner(SigmoidBenchmark().set_seed(0), runtime=runtime, image=image) as runner:
            runner.get_environment().reset()
            samples.append(time.perf_counter() - started)
    return samples


def big_round_trip(runtime: str, image, repeats: int) -> float:
    array = np.random.default_rng(0).random(256 * 1024, dtype=np.float32)  # 1 MiB
    with RemoteRunner(probe_benchmark(), runtime=runtime, image=image) as runner:
        probe = runner.get_object()
        samples = timed(lambda: probe.echo(array), repeats)
    return 2 * array.nbytes / statistics.median(samples) / 1e6  # MB/s, both directions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15000, help="steps per step row, over all rounds (default 15000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds; each step row shows the median (default 5)")
    parser.add_argument("--starts", type=int, default=5, help="runner starts per start measurement (default 5)")
    parser.add_argument("--image", help="SIF for the bwrap rows (default: the packed environment image)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", IsolationWarning)

    from dacstyle.runtimes.bwrap import BwrapRuntime

    image = None
    if BwrapRuntime.available():
        from dacstyle.images.default import default_image

        image = Path(args.image) if args.image else default_image(progress=False)

    bench = SigmoidBenchmark().set_seed(0)
    local_env = bench.get_environment()
    with contextlib.ExitStack() as stack:
        env = stack.enter_context(RemoteRunner(bench, runtime="process")).get_environment()
        obs, *_ = env.reset(seed=0)
        reply_like = {"ok": {"__tuple__": [obs.tolist(), 0.5, False, False, {"instance_id": 0, "step": 1}]}}
        echo, pyro = stack.enter_context(raw_echo(reply_like)), stack.enter_context(pyro_echo(reply_like))
        rows_of: dict[str, Callable[[int], list[float]]] = {
            "local": lambda n: time_steps(local_env, n), "echo": lambda n: timed(echo, n),
            "pyro": lambda n: timed(pyro, n), "process": lambda n: time_steps(env, n)}
        if image is not None:
            bwrap_env = stack.enter_context(RemoteRunner(bench, runtime="bwrap", image=image)).get_environment()
            rows_of["bwrap"] = lambda n: time_steps(bwrap_env, n)
        samples: dict[str, list[float]] = {}
        for _ in range(args.rounds):  # every row once per round: a busy moment hits all rows alike
            for name, measure in rows_of.items():
                samples.setdefault(name, []).append(statistics.median(measure(args.steps // args.rounds)))
    local, echo, pyro, process_step = (statistics.median(samples[k]) * 1e6 for k in ("local", "echo", "pyro", "process"))
    rows = [
        ("local env.step", f"{local:.1f} us", ""),
        ("raw JSON echo, Unix socket", f"{echo:.1f} us", "1.00x echo"),
        ("bare Pyro5 JSON echo (the channel's floor)", f"{pyro:.1f} us", f"{pyro / echo:.2f}x echo"),
        ("remote env.step (process)", f"{process_step:.1f} us", f"{process_step / echo:.2f}x echo (target <= 3x)"),
    ]
    if image is not None:
        bwrap_step = statistics.median(samples["bwrap"]) * 1e6
        rows.append(("remote env.step (bwrap)", f"{bwrap_step:.1f} us",
                     f"{bwrap_step / process_step:.2f}x process (target <= 1.10x)"))
    process_start = statistics.median(start_to_reset("process", None, args.starts))
    rows.append(("start to first reset (process)", f"{process_start * 1000:.0f} ms", "target < 1000 ms"))
    if image is not None:
        cold = statistics.median(start_to_reset("bwrap", image, args.starts))
        rows.append(("cold start: mount+start+handshake+reset (bwrap)", f"{cold * 1000:.0f} ms", "target < 1000 ms"))
    rows.append(("1 MiB float32 round trip (process)", f"{big_round_trip('process', None, 30):.0f} MB/s", ""))
    if image is not None:
        rows.append(("1 MiB float32 round trip (bwrap)", f"{big_round_trip('bwrap', image, 30):.0f} MB/s", ""))

    width = max(len(r[0]) for r in rows)
    print(f"{'measurement (median)':<{width}}  {'value':>10}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>10}  {ratio}")


if __name__ == "__main__":
    main()
