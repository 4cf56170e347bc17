"""PPO (stable-baselines3, CPU) on 8 remote CartPole envs against the same training on a local DummyVecEnv.

Both train with the same seed and settings (those of examples/sb3_ppo.py: short rollouts,
so stepping the envs weighs as much as it can), alternating local and remote in one run;
the wall time of ``model.learn`` is compared, median over the repeats (target, issue 11:
remote <= 1.3x local). The time spent stepping the envs is shown apart from the rest.

    python perf/bench_sb3.py [--steps 20000] [--repeats 3] [--runtime process] [--servers 1] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import warnings

import torch
from stable_baselines3 import PPO
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecEnvWrapper

from dacstyle import RemoteRunner
from dacstyle.benchmarks import GymnasiumBenchmark
from dacstyle.integrations.sb3 import as_sb3_vec_env
from dacstyle.errors import IsolationWarning

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples"))
from sb3_ppo import PPO_SETTINGS  # noqa: E402  (the example's settings, so the figure is the example's)

NUM_ENVS = 8


class StepClock(VecEnvWrapper):
    """Adds up the wall time spent in the wrapped env's step and reset."""

    def __init__(self, venv: VecEnv) -> None:
        super().__init__(venv)
        self.seconds = 0.0

    def reset(self):
        start = time.perf_counter()
        try:
            return self.venv.reset()
        finally:
            self.seconds += time.perf_counter() - start

    def step_wait(self):
        start = time.perf_counter()
        try:
            return self.venv.step_wait()
        finally:
            self.seconds += time.perf_counter() - start


def train(env: VecEnv, steps: int) -> tuple[float, float]:
    """Seconds of ``PPO.learn`` for ``steps`` env steps, and of that the seconds spent stepping the envs."""
    clock = StepClock(env)
    model = PPO("MlpPolicy", clock, seed=0, device="cpu", **PPO_SETTINGS)
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default logger makes a folder in /tmp
    start = time.perf_counter()
    model.learn(total_timesteps=steps)
    return time.perf_counter() - start, clock.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000, help="env steps per training (default 20000)")
    parser.add_argument("--repeats", type=int, default=3, help="trainings of each kind; medians shown (default 3)")
    parser.add_argument("--runtime", default="process", help="runtime of the remote envs (default process)")
    parser.add_argument("--servers", type=int, default=1, help="servers the 8 remote envs are spread over (default 1)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="torch's threads (default 1: a small MLP on 2 busy cores runs 3-8x slower with 2)")
    args = parser.parse_args()
    warnings.simplefilter("ignore", IsolationWarning)
    torch.set_num_threads(args.torch_threads)
    bench = GymnasiumBenchmark("CartPole-v1")
    local: list[tuple[float, float]] = []
    remote: list[tuple[float, float]] = []
    with RemoteRunner(bench, runtime=args.runtime) as runner:
        for _ in range(args.repeats):  # alternating, so both see the same machine load
            local.append(train(DummyVecEnv([bench.get_environment for _ in range(NUM_ENVS)]), args.steps))
            vector = runner.make_vector_env(NUM_ENVS, num_servers=args.servers, autoreset_mode="SameStep")
            remote.append(train(as_sb3_vec_env(vector), args.steps))
            vector.close()
    median = statistics.median
    total_local, total_remote = median(t for t, _ in local), median(t for t, _ in remote)
    step_local, step_remote = median(s for _, s in local), median(s for _, s in remote)
    vector_steps = args.steps / NUM_ENVS
    print(f"PPO on {NUM_ENVS} CartPole envs, {args.steps} env steps, torch threads {torch.get_num_threads()}, "
          f"remote: {args.runtime} runtime, {args.servers} server(s); medians of {args.repeats}, side by side")
    rows = [
        ("local DummyVecEnv: PPO.learn", f"{total_local:.2f} s", ""),
        ("remote vector env: PPO.learn", f"{total_remote:.2f} s",
         f"{total_remote / total_local:.2f}x local (target <= 1.3x)"),
        ("  stepping the envs, local", f"{step_local:.2f} s", f"{step_local / vector_steps * 1e6:.0f} us a step of 8"),
        ("  stepping the envs, remote", f"{step_remote:.2f} s",
         f"{step_remote / vector_steps * 1e6:.0f} us a step of 8"),
        ("  the rest (policy, learning), local / remote", f"{total_local - step_local:.2f} s",
         f"{total_remote - step_remote:.2f} s"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, note in rows:
        print(f"{name:<{width}}  {value:>10}  {note}")


if __name__ == "__main__":
    main()
