"""Throughput, measured side by side in one run; prints medians, ratios and where one step's time goes.

Rows: 16 remote Sigmoid envs on 2 servers (``runner.make_vector_env``) against one
local Sigmoid env, in env steps per second (target, issue 11: >= 1.0x); one remote
``env.step`` against a bare Pyro5 JSON daemon that steps the same env itself and
answers a reply of the same size (dacstyle's own share, target <= 25 us); the
server's memory per sub-env (32 envs on one server); a 1 MiB float32 array echoed
through the server's shared area (target >= 1 GB/s), next to what base64 encoding alone
allows inline; then a profile of remote steps on the host, grouped by where the time goes.

    python perf/bench_throughput.py [--steps 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import warnings

import numpy as np

from dacstyle import RemoteRunner, codec
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.errors import IsolationWarning
from dacstyle.testing import probe_benchmark

from bench_channel import echo_server, timed  # perf/ is on the path when a script here runs

BARE_SERVER = r"""
import sys
import numpy as np
from Pyro5.api import Daemon, config, expose
from dacstyle.benchmarks import SigmoidBenchmark
config.SERIALIZER = "json"
env = SigmoidBenchmark().set_seed(0).get_environment()
env.reset(seed=0)
action = np.array([2, 5])
@expose
class Bare:
    def call(self, method, args, kwargs):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
        return REPLY
REPLY = None
@expose
class Setup:
    def set_reply(self, reply):
        global REPLY
        REPLY = reply
daemon = Daemon(unixsocket=sys.argv[1])
daemon.register(Bare(), "bare")
daemon.register(Setup(), "setup")
print("ready", flush=True)
daemon.requestLoop()
"""


def stepper(env, batch: bool):
    """A zero-argument step of ``env`` that resets (a single env) at episode ends."""
    action = np.array([[2, 5]] * env.num_envs) if batch else np.array([2, 5])
    env.reset(seed=0)

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(action)
        if not batch and (terminated or truncated):
            env.reset()

    return step


def bare_step(steps: int, reply: dict, action_args: tuple) -> list[float]:
    """bare Pyro5 + the env's own step: the same frames as a remote step, nothing of dacstyle."""
    from Pyro5.api import Proxy

    with echo_server(BARE_SERVER) as path:  # a bare Pyro5 daemon stepping a local env: no token, guard or codec
        setup = Proxy(f"PYRO:setup@./u:{path}")
        setup._pyroSerializer = "json"
        setup.set_reply(reply)
        setup._pyroRelease()
        proxy = Proxy(f"PYRO:bare@./u:{path}")
        proxy._pyroSerializer = "json"
        try:
            return timed(lambda: proxy.call(*action_args), steps)
        finally:
            proxy._pyroRelease()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def profile_steps(env, steps: int) -> list[tuple[str, float]]:
    """Host-side time per remote step (us), grouped: waiting for the server, Pyro5, JSON, codec, proxies."""
    step = stepper(env, batch=False)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    groups: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(profiler).stats.items():
        if "recv" in name or "sendall" in name or "select" in name or "poll" in name:
            group = "socket send/receive (includes the server's time)"
        elif "Pyro5" in filename:
            group = "Pyro5 (framing, proxy, serializer calls)"
        elif filename.endswith(("json/encoder.py", "json/decoder.py", "json/__init__.py")) or "json" in name:
            group = "JSON (Pyro5's serializer)"
        elif filename.endswith("dacstyle/codec.py") or "base64" in filename or "b64" in name:
            group = "dacstyle codec (encode/decode, base64)"
        elif "container/client" in filename:
            group = "dacstyle proxies and channel"
        elif "gymnasium" in filename:
            group = "gymnasium (Env.reset bookkeeping on the host)"
        else:
            group = "other (threading, numpy, builtins)"
        groups[group] = groups.get(group, 0.0) + tottime
    return sorted(((g, t / steps * 1e6) for g, t in groups.items()), key=lambda item: -item[1])


def echo_rate(repeats: int) -> tuple[float, float]:
    """MB/s of a 1 MiB float32 echo (both directions) through the shared area, and of its base64 JSON encoding alone."""
    array = np.random.default_rng(0).random(256 * 1024, dtype=np.float32)
    with RemoteRunner(probe_benchmark(), runtime="process") as runner:
        probe = runner.get_object()
        shared = statistics.median(timed(lambda: probe.echo(array), repeats))
    inline = statistics.median(timed(lambda: codec.decode(codec.encode(array)), repeats))  # no area: inline
    return 2 * array.nbytes / shared / 1e6, 2 * array.nbytes / inline / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per measurement (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="measurements per row; the median is shown (default 5)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", IsolationWarning)
    bench = SigmoidBenchmark().set_seed(0)
    median = statistics.median

    local_env = bench.get_environment()
    local = median([median(timed(stepper(local_env, False), args.steps)) for _ in range(args.repeats)])
    with RemoteRunner(bench, runtime="process") as runner:
        vec = runner.make_vector_env(16, num_servers=2)
        vector = median([median(timed(stepper(vec, True), args.steps // 4)) for _ in range(args.repeats)])
        vec.close()

        env = runner.get_environment()
        remote = median([median(timed(stepper(env, False), args.steps)) for _ in range(args.repeats)])
        obs, info = env.reset(seed=0)
        reply = {"ok": codec.encode((obs, 0.5, False, False, info))}
        action_args = ("step", codec.encode([np.array([2, 5])]), codec.encode({}))
        breakdown = profile_steps(env, args.steps)
        env.close()

        before = rss_kib(runner.server.process.pid)
        many = runner.make_vector_env(32)
        many.reset(seed=0)
        per_env_kib = (rss_kib(runner.server.process.pid) - before) / 32
        many.close()
    bare = median([median(bare_step(args.steps, reply, action_args)) for _ in range(args.repeats)])
    shared_rate, inline_rate = echo_rate(100)
    own_step = median(timed(stepper(local_env, False), args.steps))

    local_rate, vector_rate = 1 / local, 16 / vector
    share = (remote - bare) * 1e6
    rows = [
        ("one local Sigmoid env", f"{local_rate:,.0f} steps/s", ""),
        ("16 remote Sigmoid envs on 2 servers", f"{vector_rate:,.0f} steps/s",
         f"{vector_rate / local_rate:.2f}x local (target >= 1.0x)"),
        ("  one vector step (16 sub-envs)", f"{vector * 1e6:.0f} us", ""),
        ("env's own step (local)", f"{own_step * 1e6:.1f} us", ""),
        ("bare Pyro5 + env's own step", f"{bare * 1e6:.1f} us", ""),
        ("remote env.step (dacstyle)", f"{remote * 1e6:.1f} us", ""),
        ("  dacstyle's own share", f"{share:.1f} us", "target <= 25 us"),
        ("server memory per sub-env (32 on one server)", f"{per_env_kib:.0f} KiB", ""),
        ("1 MiB float32 echo, shared area", f"{shared_rate:,.0f} MB/s", "target >= 1000 MB/s"),
        ("  inline: base64 encode + decode alone, no channel", f"{inline_rate:,.0f} MB/s", "an upper bound for inline"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'measurement (median of ' + str(args.repeats) + ')':<{width}}  {'value':>16}  ratio")
    for name, value, ratio in rows:
        print(f"{name:<{width}}  {value:>16}  {ratio}")
    print(f"\nwhere one remote env.step's time goes on the host (cProfile, {args.steps} steps; profiling inflates it):")
    for group, us in breakdown:
        print(f"  {group:<52} {us:8.1f} us")


if __name__ == "__main__":
    main()
