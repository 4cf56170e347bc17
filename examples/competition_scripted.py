"""Solve a synthetic competition with the scripted baseline agent, then grade it.

Run:  python examples/competition_scripted.py [COMPETITION] [--seed N] [--runtime R]

RemoteRunner starts two containers: the grader (it alone sees private/answers.csv)
and the task environment the agent acts in (it sees public/ and may only
*validate*). After the episode the host grades the submission.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from pathlib import Path

from dacstyle import RemoteRunner
from dacstyle.agents.scripted import ScriptedCompetitionAgent
from dacstyle.competitions import list_competitions, make_competition
from dacstyle.competitions.task import CompetitionTask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("competition", nargs="?", default="spaceship-titanic-lite", choices=list_competitions())
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic competition (default 0)")
    parser.add_argument("--runtime", default="auto", help="auto (default), apptainer, singularity, bwrap or process")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    with tempfile.TemporaryDirectory(prefix="dacstyle-competition-") as tmp:
        root = Path(tmp)
        competition = make_competition(args.competition, root / "competitions", seed=args.seed)
        task = CompetitionTask(competition, workdir=root / "work", time_limit=120)
        with RemoteRunner(task, runtime=args.runtime) as runner:
            env = runner.get_environment()                        # agent side: TaskEnv proxy
            results = runner.run(ScriptedCompetitionAgent(env), 1)  # graded by its grader companion
            baseline = runner.companions["grader"].grade((competition / "public" / "sample_submission.csv").read_bytes())
        report = results.extra["grade"]
        print("--- report")
        print(json.dumps(report, indent=2, sort_keys=True))
        print(f"sample submission scores {baseline['score']:.4f}; the agent scores {report['score']:.4f} "
              f"({'higher' if report['higher_is_better'] else 'lower'} is better); run folder {results.path}")


if __name__ == "__main__":
    main()
