"""Throughput, measured side by side in one run; prints medians, ratios and where one step's time goes.

Every timed row is measured once per round, all rows in each round, and the median of
the rounds is shown (so a busy moment on the machine hits every row alike):

- 16 remote Sigmoid envs on 2 servers (``runner.make_vector_env``), and on 1 server, in env
  steps per second against one local Sigmoid env (target, issue 11: >= 1.0x); then the CPU
  one vector step costs the host and each server, and what that allows on this machine's
  cores at best (total CPU / cores per vector step);
- one remote ``env.step`` against a bare Pyro5 JSON daemon (no token, guard or codec) that
  answers a reply of the same size, without and with stepping the same env itself: the bare
  round trip, the env's own step, and dacstyle's own share (target <= 25 us);
- the server's memory for 32 envs on one server (8, then 24 more), per env;
- a 1 MiB float32 array echoed through the server's shared area (target >= 1 GB/s), next to
  what base64 encoding alone allows inline; then a profile of remote steps on the host.

    python perf/bench_throughput.py [--steps 2000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import resource
import statistics
import warnings
from typing import Any, Callable

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
REPLY = None
@expose
class Bare:
    def call(self, method, args, kwargs):
        _, _, terminated, truncated, _ = env.step(action)
        if terminated or truncated:
            env.reset()
        return REPLY
    def echo(self, method, args, kwargs):
        return REPLY
    def set_reply(self, reply):
        global REPLY
        REPLY = reply
daemon = Daemon(unixsocket=sys.argv[1])
daemon.register(Bare(), "bare")
print("ready", flush=True)
daemon.requestLoop()
"""


def stepper(env: Any, batch: bool) -> Callable[[], None]:
    """A zero-argument step of ``env`` that resets (a single env) at episode ends."""
    action = np.array([[2, 5]] * env.num_envs) if batch else np.array([2, 5])
    env.reset(seed=0)

    def step() -> None:
        _, _, terminated, truncated, _ = env.step(action)
        if not batch and (terminated or truncated):
            env.reset()

    return step


def server_pids() -> list[int]:
    """The dacstyle servers this process started (``python -m dacstyle.container.server``), found in /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parents[int(entry)] = int(handle.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    mine, frontier = set(), {os.getpid()}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - mine
        mine |= frontier
    servers = []
    for pid in sorted(mine):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                argv = handle.read().split(b"\0")
        except OSError:
            continue
        if argv[1:3] == [b"-m", b"dacstyle.container.server"]:
            servers.append(pid)
    return servers


def bare_server_pid(path: str) -> int:
    """The bare daemon serving the Unix socket ``path`` (its argv ends with the path)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as handle:
                    if handle.read().split(b"\0")[-2:-1] == [os.fsencode(path)]:
                        return int(entry)
            except OSError:
                continue
    raise RuntimeError(f"no process serves {path}")


class one_core:  # noqa: N801 - used like a function: ``with one_core(pids): ...``
    """Pin every thread of this process and of ``pids`` to one core for the block: no cross-core wake-ups."""

    def __init__(self, pids: list[int]) -> None:
        self.threads = [int(tid) for pid in (os.getpid(), *pids) for tid in os.listdir(f"/proc/{pid}/task")]

    def __enter__(self) -> None:
        self.saved = [os.sched_getaffinity(tid) for tid in self.threads]
        core = {max(self.saved[0])}
        for tid in self.threads:
            os.sched_setaffinity(tid, core)

    def __exit__(self, *exc: object) -> None:
        for tid, cores in zip(self.threads, self.saved):
            os.sched_setaffinity(tid, cores)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_per_call(call: Callable[[], None], calls: int, pids: list[int]) -> tuple[float, list[float]]:
    """CPU seconds per ``call()`` in this process and in each of ``pids``."""
    def host() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    call()
    host0, servers0 = host(), [cpu_seconds(pid) for pid in pids]
    for _ in range(calls):
        call()
    host1, servers1 = host(), [cpu_seconds(pid) for pid in pids]
    return (host1 - host0) / calls, [(b - a) / calls for a, b in zip(servers0, servers1)]


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def profile_steps(env: Any, steps: int) -> list[tuple[str, float]]:
    """Host-side time per remote step (us), grouped: waiting for the server, JSON, codec, dacstyle's call path."""
    step = stepper(env, batch=False)
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    groups: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in pstats.Stats(profiler).stats.items():
        if "recv" in name or "sendall" in name or "select" in name or "poll" in name:
            group = "socket send/receive (waiting: includes the server's time)"
        elif filename.endswith(("json/encoder.py", "json/decoder.py", "json/__init__.py")) or "json" in name:
            group = "JSON text (encode, parse)"
        elif filename.endswith("dacstyle/codec.py") or "b2a_base64" in name or "a2b_base64" in name:
            group = "dacstyle codec (encode/decode, base64)"
        elif "container/" in filename:
            group = "dacstyle proxies, channel, frames"
        elif "Pyro5" in filename:
            group = "Pyro5"
        elif "gymnasium" in filename:
            group = "gymnasium (Env.reset bookkeeping on the host)"
        else:
            group = "other (numpy, struct, builtins)"
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


def memory_per_env(runner: RemoteRunner) -> tuple[float, float, float]:
    """KiB the server grows per sub-env: over 32 envs on it, over the first 8, over the next 24."""
    pid = runner.server.process.pid
    before = rss_kib(pid)
    first = runner.make_vector_env(8)
    first.reset(seed=0)
    after_8 = rss_kib(pid)
    more = runner.make_vector_env(24)
    more.reset(seed=0)
    after_32 = rss_kib(pid)
    more.close()
    first.close()
    return (after_32 - before) / 32, (after_8 - before) / 8, (after_32 - after_8) / 24


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2000, help="steps per measurement (default 2000)")
    parser.add_argument("--repeats", type=int, default=5, help="rounds; each row shows the median (default 5)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", IsolationWarning)
    bench = SigmoidBenchmark().set_seed(0)
    median = statistics.median
    local_env = bench.get_environment()
    cores = len(os.sched_getaffinity(0))

    with RemoteRunner(bench, runtime="process") as runner, echo_server(BARE_SERVER) as bare_path:
        from Pyro5.api import Proxy

        env = runner.get_environment()
        obs, info = env.reset(seed=0)
        bare = Proxy(f"PYRO:bare@./u:{bare_path}")
        bare._pyroSerializer = "json"
        bare.set_reply({"ok": codec.encode((obs, 0.5, False, False, info))})
        action_args = ("step", codec.encode([np.array([2, 5])]), codec.encode({}))
        vec_2 = runner.make_vector_env(16, num_servers=2)
        vec_1 = runner.make_vector_env(16)
        rows: dict[str, list[float]] = {}
        timers = {
            "local": stepper(local_env, False),
            "vector 16/2": stepper(vec_2, True),
            "vector 16/1": stepper(vec_1, True),
            "remote": stepper(env, False),
            "bare+env": lambda: bare.call(*action_args),
            "bare": lambda: bare.echo(*action_args),
        }
        pinned = [runner.server.process.pid, bare_server_pid(bare_path)]
        for _ in range(args.repeats):
            for name, call in timers.items():
                steps = args.steps // 8 if name.startswith("vector") else args.steps
                rows.setdefault(name, []).append(median(timed(call, steps)))
            with one_core(pinned):
                for name in ("remote", "bare+env", "bare"):
                    rows.setdefault(f"{name}, one core", []).append(median(timed(timers[name], args.steps)))
        results = {name: median(samples) for name, samples in rows.items()}
        own_cpu = cpu_per_call(stepper(local_env, False), args.steps * 5, [])[0]
        vec_cpu = cpu_per_call(stepper(vec_2, True), args.steps // 2, server_pids())
        breakdown = profile_steps(env, args.steps)
        bare._pyroRelease()
        vec_1.close()
        vec_2.close()
        env.close()
        per_env, first_8, next_24 = memory_per_env(runner)
    shared_rate, inline_rate = echo_rate(100)

    local, vector, remote = results["local"], results["vector 16/2"], results["remote"]
    local_rate, vector_rate, one_server_rate = 1 / local, 16 / vector, 16 / results["vector 16/1"]
    host_cpu, server_cpu = vec_cpu
    total_cpu = host_cpu + sum(server_cpu)
    bound = 16 / (total_cpu / cores)  # steps/s if every core did nothing else
    share = (remote - results["bare+env"]) * 1e6
    share_one_core = (results["remote, one core"] - results["bare+env, one core"]) * 1e6

    def one(name: str) -> str:
        return f"one core: {results[name + ', one core'] * 1e6:.1f} us"

    table = [
        ("one local Sigmoid env", f"{local_rate:,.0f} steps/s", ""),
        ("16 remote Sigmoid envs on 2 servers", f"{vector_rate:,.0f} steps/s",
         f"{vector_rate / local_rate:.2f}x local (target >= 1.0x)"),
        ("  one vector step (16 sub-envs)", f"{vector * 1e6:.0f} us", f"16 local steps: {16 * local * 1e6:.0f} us"),
        ("  CPU per vector step: host / each server", f"{host_cpu * 1e6:.0f} / "
         + " / ".join(f"{c * 1e6:.0f}" for c in server_cpu) + " us", f"local step: {own_cpu * 1e6:.1f} us CPU"),
        (f"  best possible on {cores} cores (total CPU / {cores})", f"{bound:,.0f} steps/s",
         f"{bound / local_rate:.2f}x local"),
        ("16 remote Sigmoid envs on 1 server", f"{one_server_rate:,.0f} steps/s", f"{one_server_rate / local_rate:.2f}x local"),
        ("bare Pyro5 round trip (same frames, no env)", f"{results['bare'] * 1e6:.1f} us", one("bare")),
        ("env's own step (local)", f"{local * 1e6:.1f} us", ""),
        ("bare Pyro5 + env's own step", f"{results['bare+env'] * 1e6:.1f} us", one("bare+env")),
        ("remote env.step (dacstyle)", f"{remote * 1e6:.1f} us", one("remote")),
        ("  dacstyle's own share", f"{share:.1f} us", f"one core: {share_one_core:.1f} us (target <= 25 us)"),
        ("server memory per sub-env (32 on one server)", f"{per_env:.0f} KiB",
         f"first 8: {first_8:.0f} KiB each, next 24: {next_24:.0f} KiB each"),
        ("1 MiB float32 echo, shared area", f"{shared_rate:,.0f} MB/s", "target >= 1000 MB/s"),
        ("  inline: base64 encode + decode alone, no channel", f"{inline_rate:,.0f} MB/s", "an upper bound for inline"),
    ]
    width = max(len(r[0]) for r in table)
    print(f"{'measurement (median of ' + str(args.repeats) + ' rounds)':<{width}}  {'value':>18}  ratio")
    for name, value, ratio in table:
        print(f"{name:<{width}}  {value:>18}  {ratio}")
    print(f"\nload average {os.getloadavg()[0]:.1f} on {cores} cores")
    print(f"\nwhere one remote env.step's time goes on the host (cProfile, {args.steps} steps; profiling inflates it):")
    for group, us in breakdown:
        print(f"  {group:<58} {us:8.1f} us")


if __name__ == "__main__":
    main()
