"""``dacstyle submit`` and ``dacstyle jobs``: long-lived servers as Slurm jobs that clients attach to."""

from __future__ import annotations

import argparse
import json
import os
import sys

from .args import at_least, json_object

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add submit and jobs."""
    submit = subparsers.add_parser(
        "submit", help="start a benchmark's server as a Slurm job; prints the job id as its last line",
        description="Submit a long-lived server for BENCH as a Slurm job and wait until it serves. Clients on any "
        "node then use RemoteRunner.attach('auto:JOBID'). The job runs until 'dacstyle jobs cancel JOBID', "
        "scancel or its time limit. Needs the setting shared_dir (DACSTYLE_SHARED_DIR): a folder of yours that "
        "every node sees.")
    submit.add_argument("benchmark", help="a bundled benchmark (sigmoid, luby), gym:ENV_ID or module:callable")
    submit.add_argument("--config", type=json_object, default={}, metavar="JSON", help="the benchmark's keyword arguments")
    submit.add_argument("--seed", type=at_least(0), default=0, metavar="N", help="benchmark seed (default 0)")
    submit.add_argument("--partition", help="Slurm partition (default: the cluster's default)")
    submit.add_argument("--time", help="Slurm time limit, e.g. 30 or 02:00:00 (default: the partition's)")
    submit.add_argument("--cpus", type=at_least(1), default=1, help="CPUs for the server (default 1)")
    submit.add_argument("--mem", help="memory, e.g. 4G (default: the partition's)")
    submit.add_argument("--gpus", type=at_least(0), default=0, help="GPUs (default 0)")
    submit.add_argument("--sbatch", action="append", default=[], metavar="OPTION",
                        help="a further sbatch option such as --account=abc (repeatable)")
    submit.add_argument("--runtime", default=None, help="apptainer, singularity, bwrap or process (default: config)")
    submit.add_argument("--image", help="image reference (default: the benchmark's)")
    submit.set_defaults(func=_submit)

    jobs = subparsers.add_parser(
        "jobs", help="list your dacstyle Slurm jobs, or cancel one",
        description="Without arguments: your dacstyle jobs with their state and published address. "
        "'dacstyle jobs cancel JOBID' cancels one and removes its folder.")
    jobs.add_argument("action", nargs="?", choices=["list", "cancel"], default="list")
    jobs.add_argument("job_id", nargs="?", help="the job to cancel")
    jobs.add_argument("--json", action="store_true", help="print JSON")
    jobs.set_defaults(func=_jobs)


def _submit(args: argparse.Namespace) -> int:
    from dacstyle.slurm import Slurm
    from dacstyle.slurm.job import submit

    from .core import named_benchmark

    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        placement = Slurm(partition=args.partition, time=args.time, cpus=args.cpus, mem=args.mem, gpus=args.gpus,
                          extra=args.sbatch)
    except ValueError as exc:
        raise SystemExit(f"dacstyle submit: error: {exc}") from exc
    bench = named_benchmark(args.benchmark, args.config).set_seed(args.seed)
    job_id = submit(bench, placement, runtime=args.runtime, image=args.image)
    print(f"{bench.name} serves in Slurm job {job_id}; attach with RemoteRunner.attach('auto:{job_id}'), "
          f"end with 'dacstyle jobs cancel {job_id}'")
    print(job_id)
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from dacstyle.slurm import commands
    from dacstyle.slurm.job import cancel
    from dacstyle.slurm.shared import published, shared_root

    if args.action == "cancel":
        if not args.job_id or not args.job_id.isdigit():
            raise SystemExit("dacstyle jobs cancel: error: give the job id, e.g. 'dacstyle jobs cancel 123456'")
        removed = cancel(args.job_id)
        print(f"cancelled job {args.job_id}" + (f"; removed {len(removed)} folder(s)" if removed else ""))
        return 0
    addresses: dict[str, str] = {}
    for folder in (shared_root() / "servers").iterdir():
        try:
            address = published(folder)
        except Exception:
            continue
        if address:
            addresses[str(address.get("job_id"))] = str(address.get("host"))
    rows = [{**job, "address": addresses.get(job["job_id"].split("+")[0], "")} for job in commands.my_jobs()]
    if args.json:
        print(json.dumps(rows))
    elif not rows:
        print("no dacstyle jobs")
    else:
        print(f"{'JOBID':<12} {'STATE':<11} {'TIME':>10}  {'NODES':<10} {'NAME':<24} ADDRESS")
        for row in rows:
            print(f"{row['job_id']:<12} {row['state']:<11} {row['time']:>10}  {row['nodes']:<10} {row['name']:<24} "
                  f"{row['address']}")
    return 0
