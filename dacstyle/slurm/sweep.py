"""Sweeps: one agent on benchmarks x seeds, one run each, gathered into one table.

::

    from dacstyle.slurm import Slurm
    from dacstyle.slurm.sweep import sweep
    table = sweep(SigmoidBenchmark(), range(100), agent="random", episodes=10, out="sweep-out",
                  placement=Slurm(partition="cpu", time="10"))
    print(table.table())                      # also sweep-out/results.csv

Without a placement the runs happen here, one after another. With one, the sweep
is ONE Slurm array job, a task per (benchmark, seed), each task a whole run on its
node (:mod:`.sweeptask`, the same code a local sweep runs). The host waits for the
job with a deadline and backoff, reading its tasks' states; a failed task is
reported with its log's tail and the others' runs are kept. ``OUT`` holds::

    sweep.json            the request (plain JSON) every task reads
    sweep.sbatch          the array job's batch script (Slurm only)
    logs/JOB-TASK.log     each array task's output
    runs/NAME-seedN/      each run's folder (manifest.json, episodes.jsonl, server.log)
    results.csv           one row per run

Running a sweep again into the same ``OUT`` resumes it: complete runs are kept and
only the missing ones run. Another sweep (other benchmarks, seeds, agent, episodes,
runtime) into that ``OUT`` is refused, as is a folder that holds something else.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from ..benchmarks.spec import Benchmark
from ..config import config
from ..errors import BenchmarkError, JobPendingError, RunFolderError, SlurmError
from . import commands
from .placement import Slurm
from .script import Component, render
from .sweeptask import REQUEST_FILE, SweepRequest, SweepTask, complete, read_request, run_task

__all__ = ["sweep", "SweepResults", "batch_script", "parse_seeds", "COLUMNS"]

log = logging.getLogger(__name__)

COLUMNS = ("benchmark", "seed", "episodes", "mean_return", "std_return", "mean_length", "wall_s", "status",
           "run_folder")
_JOB_FILE = "slurm-jobs"  # the ids of the array jobs submitted into OUT, one a line
_POLL_FIRST_S, _POLL_MAX_S = 0.2, 10.0
_TAIL_LINES = 20
_MISSES = 3  # scontrol failures in a row that a wait tolerates
_CANCEL_GRACE_S = 60.0  # how long cancelled tasks may take to end


@dataclass
class SweepResults:
    """One row per run (the columns of ``results.csv``), the CSV's path, and the array job's id (Slurm)."""

    rows: list[dict[str, Any]]
    csv: Path
    job_id: str | None = None
    errors: dict[int, str] = field(default_factory=dict)  # task index -> why it failed, with the log's tail

    @property
    def failed(self) -> list[dict[str, Any]]:
        """The rows of runs that did not complete."""
        return [row for row in self.rows if row["status"] != "ok"]

    def table(self) -> str:
        """A plain-text table: benchmark, seed, episodes, mean and std of the return, status."""
        lines = [f"{'benchmark':<16} {'seed':>6} {'episodes':>8} {'mean return':>12} {'std':>9}  status"]
        for row in self.rows:
            mean, std = (f"{row[k]:.4f}" if isinstance(row[k], float) else "-" for k in ("mean_return", "std_return"))
            lines.append(f"{row['benchmark']:<16} {row['seed']:>6} {row['episodes']:>8} {mean:>12} {std:>9}  "
                         f"{row['status']}")
        return "\n".join(lines)

    def to_frame(self) -> Any:
        """The rows as a pandas DataFrame (needs pandas)."""
        import pandas as pd

        return pd.DataFrame(self.rows, columns=list(COLUMNS))

    def __repr__(self) -> str:
        return f"SweepResults({len(self.rows)} runs, {len(self.failed)} failed, csv={str(self.csv)!r})"


def parse_seeds(text: str) -> list[int]:
    """``"0-3,7"`` -> ``[0, 1, 2, 3, 7]``: ranges and lists of non-negative seeds, each once (ValueError else)."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        low, dash, high = part.partition("-")
        if not low.isdigit() or (dash and not high.isdigit()):
            raise ValueError(f"{part!r} in {text!r} is not a seed or a range of seeds like 0-99")
        first, last = int(low), int(high) if dash else int(low)
        if last < first:
            raise ValueError(f"the range {part!r} runs backwards")
        seeds.extend(range(first, last + 1))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"{text!r} names a seed twice")
    return seeds


def sweep(benchmark: Benchmark | Sequence[Benchmark], seeds: Iterable[int], agent: str = "random",
          episodes: int = 10, out: str | Path | None = None, placement: Slurm | None = None, runtime: str | None = None,
          *, action: Any = None, image: str | None = None, log_steps: bool | int = True,
          max_parallel: int | None = None, timeout: float = 86400.0, progress: bool | None = None) -> SweepResults:
    """Run ``agent`` (random, static or module:Class) on each benchmark with each seed; gather ``OUT/results.csv``.

    ``out`` defaults to a new ``sweep-DATE-TIME`` folder under the runs folder (config ``runs``).
    ``placement``: None runs here one run after another; a :class:`Slurm` makes one array job
    (``max_parallel`` caps its running tasks, ``timeout`` bounds the wait, queueing included).
    """
    from dacstyle.agents.named import agent_factory

    request = _request(benchmark, seeds, agent, episodes, runtime, action, image, log_steps)
    agent_factory(agent, 0, action)  # an unknown agent fails here, before anything runs
    if placement is not None and not commands.available():
        raise SlurmError("--slurm needs Slurm's commands (sbatch, scontrol, squeue, scancel) on PATH: run the "
                         "sweep on a login node of the cluster, or without a placement to run it here")
    out = Path(out if out is not None else Path(config.runs) / time.strftime("sweep-%Y%m%d-%H%M%S")).absolute()
    todo = _claim(out, request)
    if len(todo) < len(request.tasks):
        log.info("sweep: %d of %d runs already in %s, running the other %d", len(request.tasks) - len(todo),
                 len(request.tasks), out, len(todo))
    if placement is None:
        errors = _run_here(out, todo, progress)
        job_id = None
    else:
        job_id, errors = _run_array(out, request, todo, placement, max_parallel, timeout, progress)
    return _gather(out, request, job_id, errors)


# -- the request and OUT ------------------------------------------------------------------------------------------
def _request(benchmark: Benchmark | Sequence[Benchmark], seeds: Iterable[int], agent: str, episodes: int,
             runtime: str | None, action: Any, image: str | None, log_steps: bool | int) -> SweepRequest:
    """The sweep as data; bad benchmarks, seeds or episodes are errors here."""
    benches = [benchmark] if isinstance(benchmark, Benchmark) else list(benchmark)
    seeds = list(seeds)
    if not benches or not all(isinstance(b, Benchmark) for b in benches):
        raise BenchmarkError("sweep() takes a Benchmark or a list of them")
    names = [b.name for b in benches]
    if len(set(names)) != len(names):
        raise BenchmarkError(f"the sweep's benchmarks share a name ({names}): give each its own (run folders are "
                             "named by it)")
    for bench in benches:
        if not bench.is_environment:
            raise BenchmarkError(f"{bench.name!r} serves an object, not an environment: a sweep runs agents on "
                                 "environments")
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds):
        raise ValueError(f"seeds must be non-negative whole numbers, at least one, not {seeds!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError("the sweep names a seed twice")
    if not isinstance(episodes, int) or isinstance(episodes, bool) or episodes < 1:
        raise ValueError(f"episodes must be at least 1, not {episodes!r}")
    tasks = [SweepTask(json.loads(bench.to_json()) | {"seed": None}, seed, f"{bench.name}-seed{seed}")
             for bench in benches for seed in seeds]
    if runtime is not None and not isinstance(runtime, str):
        raise ValueError(f"a sweep names its runtime (auto, apptainer, bwrap, process, ...), not {runtime!r}")
    request = SweepRequest(agent=agent, episodes=episodes, tasks=tasks, action=action, runtime=runtime,
                           image=None if image is None else str(image), log_steps=log_steps)
    try:
        return SweepRequest.from_json(request.to_json())  # as the tasks will read it (tuples become lists)
    except TypeError as exc:
        raise ValueError(f"the sweep's action must be plain JSON data: {exc}") from exc


def _claim(out: Path, request: SweepRequest) -> list[int]:
    """Make ``out`` this sweep's folder, or resume the same sweep in it; returns the tasks left to run.

    Refused: a folder that holds something else, another sweep, or this sweep while its array job still runs.
    """
    if (out / REQUEST_FILE).is_file():
        if read_request(out) != request:
            raise RunFolderError(f"{out} holds another sweep (its {REQUEST_FILE} differs: other benchmarks, seeds, "
                                 "agent, episodes or runtime): choose another --out")
        for job_id in _jobs(out) if commands.available() else []:
            if any(info.active for info in commands.job_info(job_id)):
                raise RunFolderError(f"{out} is being written by array job {job_id}, which still runs: wait for it "
                                     f"or scancel {job_id}")
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunFolderError(f"{out} is not empty and holds no sweep: choose an empty or new folder for --out")
    else:
        (out / "runs").mkdir(parents=True, exist_ok=True)
        tmp = out / f"{REQUEST_FILE}.tmp"
        tmp.write_text(request.to_json())
        tmp.replace(out / REQUEST_FILE)
    (out / "logs").mkdir(exist_ok=True)
    return [i for i, task in enumerate(request.tasks)
            if not complete(out / "runs" / task.folder, request.episodes)]


def _jobs(out: Path) -> list[str]:
    try:
        return (out / _JOB_FILE).read_text().split()
    except FileNotFoundError:
        return []


# -- running here ---------------------------------------------------------------------------------------------------
def _run_here(out: Path, todo: list[int], progress: bool | None) -> dict[int, str]:
    """Run the tasks one after another in this process; a failed run is recorded and the sweep goes on."""
    from dacstyle.results.progress import episode_bar

    errors: dict[int, str] = {}
    bar = episode_bar(len(todo), progress, "sweep", unit="run")
    try:
        for index in todo:
            try:
                run_task(out, index)
            except Exception as exc:  # one run's failure is a row of the table, not the sweep's end
                tail = getattr(exc, "stderr_tail", "") or ""
                errors[index] = f"{type(exc).__name__}: {exc}" + (f"\n{tail}" if tail else "")
                log.warning("sweep: task %d failed: %s", index, exc)
            bar.update(1)
    finally:
        bar.close()
    return errors


# -- running as an array job ----------------------------------------------------------------------------------------
def batch_script(out: Path, indices: list[int], placement: Slurm, python: str = sys.executable,
                 max_parallel: int | None = None, name: str = "dacstyle-sweep") -> str:
    """The array job's batch script: task ``i`` runs ``python -m dacstyle.slurm.sweeptask OUT``."""
    array = _ranges(indices) + (f"%{max_parallel}" if max_parallel else "")
    argv = [python, "-m", "dacstyle.slurm.sweeptask", str(out)]
    return render(name, f"dacstyle sweep: {len(indices)} runs into {out}", [Component(placement, argv)],
                  str(out / "logs" / "%A-%a.log"), array=array)


def _ranges(indices: list[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2,5,7-8"`` (Slurm's --array syntax)."""
    runs: list[list[int]] = []
    for index in sorted(indices):
        if runs and index == runs[-1][1] + 1:
            runs[-1][1] = index
        else:
            runs.append([index, index])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _run_array(out: Path, request: SweepRequest, todo: list[int], placement: Slurm, max_parallel: int | None,
               timeout: float, progress: bool | None) -> tuple[str | None, dict[int, str]]:
    """Submit the tasks in ``todo`` as one array job and wait for it; returns the job id and the failures."""
    if not todo:
        return None, {}
    script = out / "sweep.sbatch"
    script.write_text(batch_script(out, todo, placement, max_parallel=max_parallel))
    job_id = commands.sbatch(script)
    with open(out / _JOB_FILE, "a") as handle:
        handle.write(job_id + "\n")
    log.info("sweep: array job %s, %d tasks, logs in %s", job_id, len(todo), out / "logs")
    try:
        states = _wait(job_id, todo, timeout, progress)
    except BaseException:  # interrupted, a pending job, Slurm gone: the job must not outlive the wait
        commands.scancel(job_id)
        raise
    errors = {}
    for index in todo:
        if complete(out / "runs" / request.tasks[index].folder, request.episodes):
            continue
        state = states.get(index, "gone (Slurm no longer knows the task)")
        errors[index] = f"task {job_id}_{index} {state}: no complete run folder (is {out} on a file system every " \
                        f"node sees?)\n{_tail(out / 'logs' / f'{job_id}-{index}.log')}"
    return job_id, errors


def _wait(job_id: str, todo: list[int], timeout: float, progress: bool | None) -> dict[int, str]:
    """Poll the array's task states with backoff until none is active; returns how each task ended.

    A job none of whose tasks started within ``pending_timeout`` is a JobPendingError; at
    ``timeout`` the job is cancelled and the tasks still active are reported as such.
    """
    from dacstyle.results.progress import episode_bar

    started, delay, misses = time.monotonic(), _POLL_FIRST_S, 0
    last: dict[int, commands.JobInfo] = {}  # a finished task's record may vanish (MinJobAge): keep the last seen
    cancelled: list[int] = []  # the tasks still active at the deadline
    bar, shown = episode_bar(len(todo), progress, f"sweep {job_id}", unit="run"), 0
    try:
        while True:
            try:
                infos = commands.job_info(job_id)
                misses = 0
            except SlurmError:  # slurmctld busy for a moment: a few misses in a row are not the sweep's end
                misses += 1
                if misses > _MISSES:
                    raise
                infos = [commands.JobInfo(job_id, "RUNNING")]
            last.update({index: info for info in infos for index in _task_ids(info.fields or {})})
            active = [i for i in todo if i in last and last[i].active]
            bar.update(len(todo) - len(active) - shown)
            shown = len(todo) - len(active)
            if not infos or not active:
                ended = {i: _ended(last[i]) for i in todo if i in last}
                return ended | {i: f"{ended.get(i, 'gone')}, cancelled at the sweep's {timeout:.0f} s deadline"
                                for i in cancelled}
            waited = time.monotonic() - started
            if waited > config.pending_timeout and all(last[i].state == "PENDING" for i in todo):
                reason = last[todo[0]].reason or "none given"
                raise JobPendingError(f"array job {job_id}: no task started within {config.pending_timeout:.0f} s "
                                      f"(the setting pending_timeout; Slurm's reason: {reason}); it was cancelled")
            if waited > timeout and not cancelled:  # cancel, then wait for the tasks to end, so none writes on
                commands.scancel(job_id)
                cancelled = active
                log.warning("sweep: array job %s passed its %.0f s deadline and was cancelled", job_id, timeout)
            elif waited > timeout + _CANCEL_GRACE_S:
                raise SlurmError(f"array job {job_id} was cancelled at the sweep's deadline but its tasks "
                                 f"{_ranges(active)} did not end within {_CANCEL_GRACE_S:.0f} s")
            time.sleep(delay if cancelled else min(delay, timeout - waited + 0.05))  # Slurm offers no event
            delay = min(delay * 1.5, _POLL_MAX_S, max(_POLL_FIRST_S, waited / 10))  # overshoot <= 10%
    finally:
        bar.close()


def _ended(info: commands.JobInfo) -> str:
    """``FAILED (exit 1:0, reason NonZeroExitCode)``: a task's end without its job id."""
    return info.describe().removeprefix(f"job {info.job_id} ")


def _task_ids(fields: dict[str, str]) -> list[int]:
    """The array task indices one ``scontrol`` record stands for: ``3``, ``0-5``, ``1,4-7%2``."""
    text = fields.get("ArrayTaskId", "").split("%")[0]
    indices: list[int] = []
    for part in filter(None, text.split(",")):
        low, _, high = part.partition("-")
        high, _, step = high.partition(":")
        if low.isdigit() and (not high or high.isdigit()):
            indices.extend(range(int(low), int(high or low) + 1, int(step) if step.isdigit() else 1))
    return indices


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").splitlines()[-_TAIL_LINES:]
    except OSError:
        return f"(no log at {path})"
    return "\n".join(lines)


# -- gathering --------------------------------------------------------------------------------------------------------
def _gather(out: Path, request: SweepRequest, job_id: str | None, errors: dict[int, str]) -> SweepResults:
    """One row per task from its run folder (read back and checked); the table goes to ``OUT/results.csv``."""
    from dacstyle.results import RunResults

    rows = []
    for index, task in enumerate(request.tasks):
        folder = out / "runs" / task.folder
        row: dict[str, Any] = {"benchmark": task.benchmark["name"], "seed": task.seed, "episodes": 0,
                               "mean_return": "", "std_return": "", "mean_length": "", "wall_s": "",
                               "status": "failed", "run_folder": ""}
        if complete(folder, request.episodes):
            try:
                results = RunResults.load(folder)
            except RunFolderError as exc:
                errors[index] = f"{folder}: {exc}"
            else:
                summary = results.summary()
                row.update(episodes=len(results.episodes), mean_return=summary["mean return"],
                           std_return=summary["std return"], mean_length=summary["mean length"],
                           wall_s=round(sum(e["wall_time_s"] for e in results.episodes), 6), status="ok",
                           run_folder=str(folder.relative_to(out)))
        elif index not in errors:
            errors[index] = f"{folder} is missing or incomplete"
        rows.append(row)
    path = out / "results.csv"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(v) for k, v in row.items()} for row in rows)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(text.getvalue())
    tmp.replace(path)
    return SweepResults(rows, path, job_id, {i: e for i, e in errors.items() if rows[i]["status"] != "ok"})


def _cell(value: Any) -> Any:
    """A CSV cell: floats as repr (they read back bit for bit), NaN as empty."""
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    return value
