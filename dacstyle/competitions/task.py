"""A competition as a remote task: the grader and the agent's environment in two containers.

:class:`CompetitionTask` is a :class:`~dacstyle.benchmarks.Benchmark` for
``RemoteRunner``. The runner starts the grader (a companion) first, in its own container with
only the competition folder bound read-only, serving ``grade`` to the host and
``validate``/``info`` on a separate agent endpoint with its own token, and the
submission folder bound read-only: the grader opens ``submission.csv`` itself,
following no link, so no host path is opened on the agent's behalf. The task
environment runs in a second container with ``public/`` read-only, a writable
submission folder, its workspace on the container's sized ``/tmp`` (gone with
the container), no network, and only the grader's agent endpoint bound in::

    task = CompetitionTask("competitions/spaceship-titanic-lite")
    with RemoteRunner(task) as runner:
        env = runner.get_environment()       # TaskEnv proxy (agent side)
        results = runner.run(agent, 1)       # graded by the grader companion (host side)
    print(results.extra["grade"])
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from ..benchmarks.spec import Benchmark
from ..config import config
from ..errors import BenchmarkError
from .schema import CompetitionInfo
from .taskenv import TaskEnv

__all__ = ["CompetitionTask", "make_task_env", "GRADER_METHODS", "AGENT_METHODS"]

GRADER_METHODS = ["grade", "validate", "info"]
AGENT_METHODS = ["validate", "info"]


class CompetitionTask(Benchmark):
    """The spec of a competition task: the TaskEnv, with its grader as a companion that grades each run.

    ``workdir`` (default: a temporary folder that goes with this object) holds
    ``submission/``; after a run, ``submission/submission.csv`` is what was graded.
    ``max_submission_bytes`` (default: the setting of that name) caps what the grader
    reads. ``placement``/``grader_placement`` (``Slurm(...)``) put the task and the
    grader on a cluster, as one heterogeneous job.
    """

    def __init__(self, competition_dir: str | Path, *, workdir: str | Path | None = None, time_limit: float = 60.0,
                 max_steps: int = 30, output_limit: int = 16 * 1024, max_submission_bytes: int | None = None,
                 placement: Any = None, grader_placement: Any = None) -> None:
        competition = Path(competition_dir).resolve()
        info = CompetitionInfo.load(competition)
        if not (competition / "public").is_dir():
            raise BenchmarkError(f"{competition} has no public/ folder")
        self._tempdir = None if workdir else tempfile.TemporaryDirectory(prefix=f"dacstyle-{info.id}-")
        work = Path(workdir).resolve() if workdir else Path(self._tempdir.name)  # type: ignore[union-attr]
        (work / "submission").mkdir(parents=True, exist_ok=True)
        grader = Benchmark(
            name="grader",
            entry_point="dacstyle.competitions.grader:Grader",
            config={"competition_dir": "{bind:competition}", "submissions_root": "{bind:submission}",
                    "max_bytes": max_submission_bytes or config.max_submission_bytes},
            seed_key="",
            methods=GRADER_METHODS,
            agent_methods=AGENT_METHODS,
            binds={"competition": f"{competition}:/competition:ro", "submission": f"{work / 'submission'}:/submission:ro"},
        )
        super().__init__(
            name=f"task-{info.id}",
            entry_point="dacstyle.competitions.task:make_task_env",
            config={
                "public_dir": "{bind:public}",
                "workspace_dir": None,
                "submission_dir": "{bind:submission}",
                "grader_dir": "{companion:grader}",
                "time_limit": time_limit,
                "max_steps": max_steps,
                "output_limit": output_limit,
            },
            seed_key="",
            binds={
                "public": f"{competition / 'public'}:/competition/public:ro",
                "submission": f"{work / 'submission'}:/submission:rw",
            },
            companions={"grader": json.loads(grader.to_json())},
            finish="grader.grade",  # the host asks; the grader reads submission.csv itself, following no link
        )
        self.workdir = work
        self.placement = placement
        self.companion_placements = {"grader": grader_placement} if grader_placement is not None else {}


def make_task_env(public_dir: str, workspace_dir: str | None, submission_dir: str, grader_dir: str | None = None,
                  **options: Any) -> TaskEnv:
    """Build the TaskEnv inside its container, validating through the grader's agent endpoint."""
    validator = None
    info = None
    if grader_dir:
        from dacstyle.container.client.attach import attach

        validator = attach(grader_dir, "grader", AGENT_METHODS)
        info = validator.info()
    return TaskEnv(public_dir, workspace_dir, submission_dir, validator=validator, info=info, **options)
