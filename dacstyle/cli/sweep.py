"""``dacstyle sweep``: one agent on a benchmark over many seeds, here or as one Slurm array job."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .args import at_least, json_object, json_value

__all__ = ["register"]

_DESCRIPTION = """\
Run an agent on a benchmark once per seed (each run seeds the benchmark and the random agent
with its seed) and gather one table, OUT/results.csv, with a run folder per seed under OUT/runs.
Without --slurm the runs happen here, one after another. With --slurm they are ONE Slurm array
job, a task per seed, each task a whole run on its node with that node's runtime; OUT must be on
a file system every node sees. Running the same sweep again into the same OUT resumes it (only
missing or failed runs run); a different sweep into it is refused."""

_EPILOG = """\
examples:
  dacstyle sweep sigmoid --seeds 0-9 --episodes 10 --out sweep-sigmoid
  dacstyle sweep sigmoid --seeds 0-99 --slurm partition=cpu,time=10 --out $WORK/sweep-sigmoid
  dacstyle sweep gym:CartPole-v1 --seeds 0-3,7 --agent mypkg.agents:Greedy --out sweep-cartpole"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add sweep."""
    parser = subparsers.add_parser("sweep", help="run an agent on a benchmark over many seeds (locally or as a "
                                   "Slurm array job) and gather one results table",
                                   description=_DESCRIPTION, epilog=_EPILOG,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("benchmark", help="a bundled benchmark (sigmoid, luby), gym:ENV_ID or module:callable "
                        "(as for 'dacstyle run')")
    parser.add_argument("--seeds", type=_seeds, required=True, metavar="SEEDS",
                        help="seeds as ranges and lists, e.g. 0-99 or 0-3,7")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR",
                        help="the sweep's folder: results.csv, runs/, logs/ (new or empty, or this sweep's own "
                        "to resume it)")
    parser.add_argument("--agent", default="random", metavar="AGENT",
                        help="random (default, seeded with each run's seed), static, or module:Class built as "
                        "Class(env)")
    parser.add_argument("--action", type=json_value, metavar="JSON", help="the static agent's action as JSON")
    parser.add_argument("--episodes", type=at_least(1), default=10, metavar="N", help="episodes per run (default 10)")
    parser.add_argument("--config", type=json_object, default={}, metavar="JSON",
                        help="keyword arguments for the benchmark as a JSON object")
    parser.add_argument("--slurm", type=_placement, metavar="KEY=VALUE,...",
                        help="run as one Slurm array job placed like this: partition, time, cpus, mem, gpus, "
                        "account, qos, e.g. partition=cpu,time=10 (time in Slurm's format: minutes, H:MM:SS)")
    parser.add_argument("--max-parallel", type=at_least(1), metavar="N",
                        help="with --slurm: at most N tasks run at once (the array's %%N)")
    parser.add_argument("--timeout", type=at_least(1), default=86400, metavar="S",
                        help="with --slurm: cancel the job after S seconds, queueing included (default 86400)")
    parser.add_argument("--runtime", help="auto, apptainer, singularity, bwrap or process (default: the config "
                        "of wherever a run runs)")
    parser.add_argument("--image", help="image reference for every run (default: the benchmark's catalogue entry)")
    parser.set_defaults(func=_sweep)


def _seeds(text: str) -> list[int]:
    from dacstyle.slurm.sweep import parse_seeds

    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _placement(text: str) -> Any:
    from dacstyle.slurm import Slurm

    try:
        return Slurm.parse(text)
    except (ValueError, TypeError) as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _sweep(args: argparse.Namespace) -> int:
    from dacstyle.slurm.sweep import sweep

    from .core import named_benchmark

    if (args.max_parallel or args.timeout != 86400) and args.slurm is None:
        raise ValueError("--max-parallel and --timeout are for --slurm sweeps")
    if os.getcwd() not in sys.path:  # benchmarks and agents in the working folder import, as with 'python -m'
        sys.path.append(os.getcwd())
    bench = named_benchmark(args.benchmark, args.config)
    results = sweep(bench, args.seeds, agent=args.agent, episodes=args.episodes, out=args.out,
                    placement=args.slurm, runtime=args.runtime, action=args.action, image=args.image,
                    max_parallel=args.max_parallel, timeout=float(args.timeout))
    print(results.table())
    for index, error in sorted(results.errors.items()):
        row = results.rows[index]
        print(f"\n{row['benchmark']} seed {row['seed']} failed: {error}", file=sys.stderr)
    if results.job_id:
        print(f"array job: {results.job_id} (logs in {args.out / 'logs'})")
    print(f"results: {results.csv}")
    return 1 if results.failed else 0
