"""Run-folder subcommands: ``rerun``, ``report`` and ``runs list|show``."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add rerun, report and runs."""
    rerun = subparsers.add_parser(
        "rerun",
        help="re-run a run from its manifest and check it comes out the same",
        description="Rebuild the benchmark, agent, runtime and image (by digest) from RUN_DIR/manifest.json, "
        "re-run the episodes and compare every step with the logged run. Prints 'identical' and exits 0, "
        "or names the first episode and step that differ and exits 1.",
    )
    rerun.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    rerun.add_argument("--runtime", help="run under another runtime than the manifest's (e.g. bwrap for apptainer)")
    rerun.add_argument("--keep", type=Path, metavar="DIR", help="keep the re-run's folder under DIR")
    rerun.set_defaults(func=_rerun)

    report = subparsers.add_parser(
        "report",
        help="write one self-contained HTML page for one or several runs",
        description="Plots (returns, rolling mean, episode lengths, step times), grades and manifests of the "
        "runs, in one HTML file that makes no network request.",
    )
    report.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    report.add_argument("-o", "--output", type=Path, default=Path("report.html"), help="default report.html")
    report.set_defaults(func=_report)

    runs = subparsers.add_parser("runs", help="list the runs under the runs folder, or show one",
                                 description="'list' (the default) or 'show RUN_DIR'.")
    runs.add_argument("action", nargs="?", choices=("list", "show"), default="list")
    runs.add_argument("run_dir", nargs="?", type=Path, metavar="RUN_DIR", help="the run to show")
    runs.add_argument("--runs-dir", type=Path, help="where to look (default: config 'runs', ./runs)")
    runs.set_defaults(func=_runs)


def _rerun(args: argparse.Namespace) -> int:
    from dacstyle.results import rerun

    outcome = rerun(args.run_dir, runtime=args.runtime, out=args.keep, progress=None)
    print(outcome)
    if outcome.rerun_path is not None:
        print(f"re-run folder: {outcome.rerun_path}")
    return 0 if outcome.identical else 1


def _report(args: argparse.Namespace) -> int:
    from dacstyle.results import write_report

    print(write_report(args.run_dirs, args.output))
    return 0


def _runs(args: argparse.Namespace) -> int:
    from dacstyle.errors import DacstyleError
    from dacstyle.results import RunResults

    if args.action == "show":
        if args.run_dir is None:
            raise ValueError("'dacstyle runs show' needs a RUN_DIR (see 'dacstyle runs --help')")
        results = RunResults.load(args.run_dir)
        for key, value in results.summary().items():
            print(f"{key:>13}: {value}")
        print(results.table())
        return 0
    from dacstyle.config import config

    root = args.runs_dir or Path(config.runs)
    folders = sorted(p for p in root.iterdir() if (p / "manifest.json").is_file()) if root.is_dir() else []
    if not folders:
        print(f"no runs under {root}")
        return 0
    print(f"{'run':<40} {'benchmark':<14} {'seed':>6} {'episodes':>8} {'mean return':>12}")
    for folder in folders:
        try:
            facts = _facts(folder)
        except DacstyleError as exc:
            print(f"{folder.name:<40} unreadable: {exc}")
            continue
        print(f"{folder.name:<40} {facts[0]:<14} {facts[1]!s:>6} {facts[2]:>8} {facts[3]:>12.4f}")
    return 0


def _facts(folder: Path) -> tuple[str, object, int, float]:
    """Benchmark, seed, episodes and mean return from the manifest alone (the log is not read)."""
    from dacstyle.results import read_manifest

    manifest = read_manifest(folder)
    episodes = manifest.get("episodes") or []
    returns = [e["return"] for e in episodes]
    mean = sum(returns) / len(returns) if returns else float("nan")
    return manifest["benchmark"]["name"], manifest.get("seed"), len(episodes), mean
