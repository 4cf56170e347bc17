"""PPO from stable-baselines3 on 8 CartPole envs served by a remote vector env.

Needs the optional extra: pip install "dacstyle[sb3]". The envs run in a SIF container
when a container runtime is installed (the first run packs this Python environment into
an image and caches it); the policy trains here, on the CPU. Each step of the 8 envs is
one round trip per server.

    python examples/sb3_ppo.py [--runtime auto|bwrap|apptainer|process] [--steps N] [--servers K]
"""

from __future__ import annotations

import argparse
import logging

from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import VecMonitor

from dacstyle import RemoteRunner
from dacstyle.benchmarks import GymnasiumBenchmark
from dacstyle.integrations.sb3 import as_sb3_vec_env

PPO_SETTINGS = {"n_steps": 32, "batch_size": 256, "n_epochs": 20, "gamma": 0.98, "gae_lambda": 0.8,
                "learning_rate": 1e-3, "ent_coef": 0.0}
"""Tuned for CartPole with 8 envs (after the RL Zoo's): short rollouts, so stepping weighs as much as learning."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", default="auto", help="auto (default), apptainer, singularity, bwrap or process")
    parser.add_argument("--steps", type=int, default=50_000, help="env steps to train for (default 50000)")
    parser.add_argument("--servers", type=int, default=1, help="servers the 8 envs are spread over (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the envs and the policy (default 0)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with RemoteRunner(GymnasiumBenchmark("CartPole-v1"), runtime=args.runtime) as runner:
        # SB3 resets an episode in the step that ends it: SameStep
        vector = runner.make_vector_env(8, num_servers=args.servers, autoreset_mode="SameStep")
        env = VecMonitor(as_sb3_vec_env(vector))
        print(f"runtime: {runner.runtime.name} | {vector!r}")
        model = PPO("MlpPolicy", env, seed=args.seed, device="cpu", **PPO_SETTINGS)
        model.set_logger(Logger(folder=None, output_formats=[]))  # quiet, and no log folder left in /tmp
        model.learn(total_timesteps=args.steps)
        mean, std = evaluate_policy(model, env, n_eval_episodes=16)
        print(f"PPO after {model.num_timesteps} steps: mean return {mean:.1f} +/- {std:.1f} over 16 episodes "
              "(500 is CartPole-v1's best)")
        env.close()


if __name__ == "__main__":
    main()
