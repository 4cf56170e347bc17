"""One run of a sweep: ``python -m dacstyle.slurm.sweeptask OUT`` (an array task), or :func:`run_task` locally.

The sweep's request is ``OUT/sweep.json``, plain JSON written by the host: the
agent's name, the episodes, the runtime and one entry per task (a benchmark spec,
a seed and the run folder's name). An array task takes its index from
``SLURM_ARRAY_TASK_ID`` and runs exactly what a local sweep runs: a
:class:`~dacstyle.RemoteRunner` with this node's runtime, into a scratch folder
that becomes ``OUT/runs/NAME`` only once every episode is logged, so a run folder
under that name is always a complete run.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..benchmarks.spec import Benchmark
from ..errors import RunFolderError

__all__ = ["SweepRequest", "SweepTask", "REQUEST_FILE", "read_request", "run_task", "complete", "main"]

REQUEST_FILE = "sweep.json"
FORMAT = "dacstyle-sweep/1"


@dataclass(frozen=True)
class SweepTask:
    """One run: a benchmark spec (as JSON data), its seed, and its run folder's name under ``OUT/runs``."""

    benchmark: dict[str, Any]
    seed: int
    folder: str


@dataclass(frozen=True)
class SweepRequest:
    """What every task of a sweep reads: the agent, the episodes, the runtime and image, and the tasks."""

    agent: str
    episodes: int
    tasks: list[SweepTask]
    action: Any = None
    runtime: str | None = None
    image: str | None = None
    log_steps: bool | int = True
    format: str = field(default=FORMAT)

    def to_json(self) -> str:
        """The request as the JSON text of ``OUT/sweep.json``."""
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "SweepRequest":
        """Read a request back; anything but this format's fields is a RunFolderError."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT:
                raise ValueError(f"format {data.get('format')!r}, not {FORMAT!r}")
            tasks = [SweepTask(**task) for task in data.pop("tasks")]
            return cls(tasks=tasks, **data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RunFolderError(f"{REQUEST_FILE} is not a dacstyle sweep request: {exc}") from exc


def read_request(out: Path) -> SweepRequest:
    """The request in ``out`` (RunFolderError when missing or malformed)."""
    try:
        text = (Path(out) / REQUEST_FILE).read_text()
    except OSError as exc:
        raise RunFolderError(f"{out} holds no readable {REQUEST_FILE}: {exc.strerror}") from exc
    return SweepRequest.from_json(text)


def complete(folder: Path, episodes: int) -> bool:
    """Whether ``folder`` is a run folder whose manifest says all ``episodes`` were logged."""
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("episodes_completed") == episodes


def run_task(out: Path, index: int) -> Path:
    """Run task ``index`` of the sweep in ``out``; returns its run folder (already there: nothing runs again)."""
    from dacstyle.agents.named import agent_factory
    from dacstyle.container.client.runner import RemoteRunner

    out = Path(out)
    request = read_request(out)
    if not 0 <= index < len(request.tasks):
        raise RunFolderError(f"task {index} is not in the sweep ({len(request.tasks)} tasks)")
    task = request.tasks[index]
    final = out / "runs" / task.folder
    if complete(final, request.episodes):  # a requeued task, or a resumed sweep
        return final
    bench = Benchmark.from_json(json.dumps(task.benchmark)).set_seed(task.seed)
    make_agent = agent_factory(request.agent, task.seed, request.action)
    scratch = out / "runs" / f".task-{index}"
    shutil.rmtree(scratch, ignore_errors=True)  # what an earlier, failed attempt left
    with RemoteRunner(bench, runtime=request.runtime, image=request.image, runs_dir=scratch) as runner:
        env = runner.get_environment()
        agent = make_agent(env)
        env.close()
        results = runner.run(agent, request.episodes, log_steps=request.log_steps, progress=False)
    assert results.path is not None
    shutil.rmtree(final, ignore_errors=True)  # an incomplete folder under the final name (never made by us)
    results.path.rename(final)
    scratch.rmdir()
    return final


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of an array task: run task ``$SLURM_ARRAY_TASK_ID`` of the sweep in ``argv[0]``."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1 or "SLURM_ARRAY_TASK_ID" not in os.environ:
        print("usage: SLURM_ARRAY_TASK_ID=N python -m dacstyle.slurm.sweeptask OUT", file=sys.stderr)
        return 2
    index = int(os.environ["SLURM_ARRAY_TASK_ID"])
    try:
        folder = run_task(Path(args[0]), index)
    except Exception:  # the log is all the host will see: the whole traceback goes there
        traceback.print_exc()
        print(f"dacstyle sweep: task {index} failed", file=sys.stderr, flush=True)
        return 1
    print(f"dacstyle sweep: task {index} done: {folder}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
