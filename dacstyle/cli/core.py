"""Core subcommands: ``run`` (the baseline script), ``serve``, ``cleanup`` and ``config``."""

from __future__ import annotations

import argparse
import json
from typing import Any

import numpy as np

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add run, serve, cleanup and config."""
    run = subparsers.add_parser(
        "run",
        help="run a baseline agent on a benchmark and print a results table",
        description="Run a baseline agent on a benchmark served by RemoteRunner; prints a results table "
        "and writes a run folder (manifest.json, episodes.jsonl, server.log).",
    )
    run.add_argument("benchmark", help="a bundled benchmark (sigmoid, luby) or gym:ENV_ID (e.g. gym:CartPole-v1)")
    run.add_argument("--agent", choices=("random", "static"), default="random", help="baseline agent (default random)")
    run.add_argument("--action", help="the static agent's action as JSON, e.g. '[2, 5]' (default: the lowest action)")
    run.add_argument("--episodes", type=int, default=1, help="number of episodes (default 1)")
    run.add_argument("--seed", type=int, default=0, help="benchmark and agent seed (default 0)")
    run.add_argument("--runtime", default=None, help="auto, apptainer, singularity, bwrap or process (default: config)")
    run.add_argument("--image", help="image reference (path, https://, oras://); default: the benchmark's catalogue entry")
    run.add_argument("--runs-dir", help="where the run folder is written (default: config 'runs')")
    run.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    run.set_defaults(func=_run)

    serve = subparsers.add_parser(
        "serve",
        help="the server entry point (what every runtime starts inside the image)",
        description="Serve benchmarks over the Pyro5 JSON channel; the same as "
        "'python -m dacstyle.container.server'. Normally started by RemoteRunner, not by hand.",
    )
    from dacstyle.container.server.main import build_parser

    build_parser(serve)
    serve.set_defaults(func=_serve)

    cleanup = subparsers.add_parser(
        "cleanup",
        help="remove what a killed host left behind: server processes, mounts, run folders",
        description="Kill server processes, unmount images and delete run folders whose host process is gone.",
    )
    cleanup.add_argument("--force", action="store_true", help="also remove runs whose host is alive")
    cleanup.set_defaults(func=_cleanup)

    cfg = subparsers.add_parser("config", help="print the effective configuration",
                                description="Print every setting, its value and its DACSTYLE_* variable.")
    cfg.set_defaults(func=_config)


def _benchmark(name: str) -> Any:
    from dacstyle.benchmarks import BENCHMARKS, GymnasiumBenchmark
    from dacstyle.errors import BenchmarkError

    if name.startswith("gym:"):
        return GymnasiumBenchmark(name[4:])
    if name not in BENCHMARKS:
        raise BenchmarkError(f"unknown benchmark {name!r}; bundled: {', '.join(BENCHMARKS)}, or gym:ENV_ID")
    return BENCHMARKS[name]()


def _lowest_action(space: Any) -> Any:
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return space.start
    if isinstance(space, spaces.MultiDiscrete):
        return np.array(space.start, dtype=space.dtype)
    if isinstance(space, spaces.Box):
        return np.where(np.isfinite(space.low), space.low, 0).astype(space.dtype)
    space.seed(0)
    return space.sample()


def _run(args: argparse.Namespace) -> int:
    from dacstyle.agents import RandomAgent, StaticAgent
    from dacstyle.container.client import RemoteRunner

    bench = _benchmark(args.benchmark).set_seed(args.seed)
    with RemoteRunner(bench, runtime=args.runtime, image=args.image, runs_dir=args.runs_dir) as runner:
        env = runner.get_environment()
        if args.agent == "random":
            agent: Any = RandomAgent(env, seed=args.seed)
        else:
            action = json.loads(args.action) if args.action else _lowest_action(env.action_space)
            agent = StaticAgent(env, np.asarray(action) if isinstance(action, list) else action)
        env.close()
        results = runner.run(agent, number_of_episodes=args.episodes)
    if args.json:
        print(json.dumps({"benchmark": results.benchmark, "episodes": results.episodes, "path": str(results.path)}))
    else:
        print(f"{bench.name} | agent {args.agent} | seed {args.seed} | runtime {runner.runtime.name}")
        print(results.table())
        print(f"run folder: {results.path}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from dacstyle.container.server.main import serve

    return serve(args)


def _cleanup(args: argparse.Namespace) -> int:
    from dacstyle.runtimes.rundir import cleanup_stale

    done = cleanup_stale(force=args.force)
    print("\n".join(done) if done else "nothing to clean up")
    return 0


def _config(args: argparse.Namespace) -> int:
    from dacstyle.config import config

    print(config.describe())
    return 0
