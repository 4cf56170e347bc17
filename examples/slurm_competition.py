"""A competition on a Slurm cluster: the grader on a CPU node, the task on a GPU node, one job.

Run on a login node:  DACSTYLE_SHARED_DIR=$HOME/.dacstyle-shared python examples/slurm_competition.py \\
                          [--task-partition gpu] [--grader-partition cpu] [--gpus 1] [--runtime apptainer]

RemoteRunner submits ONE heterogeneous job: component 0 is the grader (it alone
binds the competition's private answers), component 1 the task environment the
agent acts in (public/ and the grader's agent endpoint only). Both servers publish
their address only once they listen, the host reaches them over mutual TLS, and
the host grades after the episode. Ctrl-C or the end of the script cancels the job.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from dacstyle import RemoteRunner
from dacstyle.agents.scripted import ScriptedCompetitionAgent
from dacstyle.competitions import list_competitions, make_competition
from dacstyle.competitions.task import CompetitionTask
from dacstyle.config import config
from dacstyle.slurm import Slurm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("competition", nargs="?", default="spaceship-titanic-lite", choices=list_competitions())
    parser.add_argument("--task-partition", default="gpu", help="partition of the task (agent side), default gpu")
    parser.add_argument("--grader-partition", default="cpu", help="partition of the grader, default cpu")
    parser.add_argument("--gpus", type=int, default=1, help="GPUs for the task component (default 1)")
    parser.add_argument("--time", default="00:30:00", help="the job's time limit (default 00:30:00)")
    parser.add_argument("--runtime", default="auto", help="apptainer on a cluster; bwrap or process elsewhere")
    args = parser.parse_args()
    if config.shared_dir is None:
        parser.error("set DACSTYLE_SHARED_DIR to a folder of yours that every node sees")

    root = Path(config.shared_dir) / "examples"  # the competition and workdir must be visible on the nodes too
    competition = make_competition(args.competition, root / "competitions", seed=0)
    task = CompetitionTask(competition, workdir=root / "work", time_limit=120,
                           placement=Slurm(partition=args.task_partition, gpus=args.gpus, time=args.time),
                           grader_placement=Slurm(partition=args.grader_partition, time=args.time))
    with RemoteRunner(task, runtime=args.runtime) as runner:
        print(f"Slurm job {runner.job_id}: grader and task are up")
        results = runner.run(ScriptedCompetitionAgent(runner.get_environment()), 1)
        sample = runner.companions["grader"].grade((competition / "public" / "sample_submission.csv").read_bytes())
    report = results.extra["grade"]
    print(json.dumps(report, indent=2, sort_keys=True))
    print(f"sample submission scores {sample['score']:.4f}; the agent scores {report['score']:.4f}; "
          f"run folder {results.path}")


if __name__ == "__main__":
    main()
