"""Sigmoid with a random and a static agent, through RemoteRunner.

The benchmark runs in a SIF container when a container runtime is installed
(Apptainer, or bubblewrap + squashfuse); the first run packs this Python
environment into an image (a few seconds) and caches it.

    python examples/sigmoid_baselines.py [--runtime auto|bwrap|apptainer|process] [--episodes N]
"""

from __future__ import annotations

import argparse
import logging

import numpy as np

from dacstyle import RemoteRunner
from dacstyle.agents import RandomAgent, StaticAgent
from dacstyle.benchmarks import SigmoidBenchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="auto", help="auto (default), apptainer, singularity, bwrap or process")
    parser.add_argument("--episodes", type=int, default=5, help="episodes per agent (default 5)")
    parser.add_argument("--seed", type=int, default=42, help="benchmark and agent seed (default 42)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    bench = SigmoidBenchmark()
    bench.set_seed(args.seed)
    with RemoteRunner(bench, runtime=args.runtime) as runner:
        env = runner.get_environment()
        print(f"runtime: {runner.runtime.name} | image: {runner.image or '(none: plain subprocess)'}")
        print(f"observation space: {env.observation_space}\naction space: {env.action_space}\n")
        agents = {
            "random": RandomAgent(env),  # no seed given: it takes the benchmark's
            "static [2, 5]": StaticAgent(env, np.array([2, 5])),
        }
        for name, agent in agents.items():
            results = runner.run(agent, number_of_episodes=args.episodes)
            print(f"== {name} agent: mean return {results.mean_return:.3f} (run folder {results.path})")
            print(results.table())
            print(f"re-run and compare step by step: dacstyle rerun {results.path}\n")


if __name__ == "__main__":
    main()
