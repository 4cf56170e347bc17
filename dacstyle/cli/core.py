"""Core subcommands: ``run`` (any agent on any benchmark), ``serve``, ``cleanup`` and ``config``."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from .args import at_least, json_object, json_value

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add run, serve, cleanup and config."""
    run = subparsers.add_parser(
        "run",
        help="run an agent (a baseline or yours) on a benchmark and print a results table",
        description="Run an agent on a benchmark served by RemoteRunner; prints a results table "
        "and writes a run folder (manifest.json, episodes.jsonl, server.log).",
    )
    run.add_argument("benchmark", help="a bundled benchmark (sigmoid, luby), gym:ENV_ID (e.g. gym:CartPole-v1) "
                     "or the entry point module:callable of a function that returns a gymnasium.Env")
    run.add_argument("--config", type=json_object, default={}, metavar="JSON",
                     help="keyword arguments for the benchmark as a JSON object, e.g. '{\"cutoff\": 5}' (sigmoid) "
                     "or '{\"max_episode_steps\": 50}' (gym:ENV_ID)")
    run.add_argument("--agent", default="random", metavar="AGENT",
                     help="random (default), static, or the entry point module:Class of an agent built as Class(env)")
    run.add_argument("--action", type=json_value, metavar="JSON",
                     help="the static agent's action as JSON, e.g. '[2, 5]' (default: the lowest action)")
    run.add_argument("--episodes", type=at_least(1), default=1, metavar="N", help="number of episodes (default 1)")
    run.add_argument("--seed", type=at_least(0), default=0, metavar="N", help="benchmark and agent seed (default 0)")
    run.add_argument("--runtime", default=None, help="auto, apptainer, singularity, bwrap or process (default: config)")
    run.add_argument("--image", help="image reference (path, https://, oras://); default: the benchmark's catalogue "
                     "entry; not with the process runtime, which runs on the host")
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


def named_benchmark(name: str, config: dict[str, Any]) -> Any:
    """The bundled benchmark ``name``, ``gym:ENV_ID`` or an environment entry point, with ``config``."""
    from dacstyle.benchmarks import BENCHMARKS, GymnasiumBenchmark
    from dacstyle.errors import BenchmarkError

    try:
        if name.startswith("gym:"):
            return GymnasiumBenchmark(name[4:], **config)
        if ":" in name:
            return GymnasiumBenchmark(name, **config)
        if name in BENCHMARKS:
            return BENCHMARKS[name](**config)
    except TypeError as exc:  # a config key the benchmark does not take
        raise BenchmarkError(f"--config for {name!r}: {exc}") from exc
    raise BenchmarkError(f"unknown benchmark {name!r}; bundled: {', '.join(BENCHMARKS)}, gym:ENV_ID or module:callable")


def _agent_factory(args: argparse.Namespace) -> Any:
    """A function ``env -> agent`` for what ``--agent`` names; checked before anything starts."""
    from dacstyle.agents.named import agent_factory

    return agent_factory(args.agent, args.seed, args.action)


def _run(args: argparse.Namespace) -> int:
    from dacstyle.container.client import RemoteRunner
    from dacstyle.errors import ContainerError

    if os.getcwd() not in sys.path:  # benchmarks and agents in the working folder import, as with 'python -m'
        sys.path.append(os.getcwd())
    make_agent = _agent_factory(args)
    bench = named_benchmark(args.benchmark, args.config).set_seed(args.seed)
    runner = RemoteRunner(bench, runtime=args.runtime, image=args.image, runs_dir=args.runs_dir)
    if args.image and not runner.runtime.needs_image:
        raise ContainerError(f"--image {args.image}: runtime {runner.runtime.name!r} runs the benchmark on the host "
                             "and cannot use an image; choose --runtime bwrap, apptainer or singularity")
    with runner:
        env = runner.get_environment()
        agent = make_agent(env)
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
    from dacstyle.runtimes.serverdir import cleanup_stale

    done = cleanup_stale(force=args.force)
    print("\n".join(done) if done else "nothing to clean up")
    return 0


def _config(args: argparse.Namespace) -> int:
    from dacstyle.config import config

    print(config.describe())
    config.check()  # a bad DACSTYLE_* value is shown as INVALID above, then named in the error line
    return 0
