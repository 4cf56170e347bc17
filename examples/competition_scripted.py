"""Solve a synthetic competition with the scripted baseline agent, then grade it.

Run:  python examples/competition_scripted.py [COMPETITION] [--seed N]

Three parts, each a few lines, so that each can move into its own container:
the grader (host side: it alone reads private/answers.csv), the task
environment the agent acts in (it sees public/ and may only *validate*), and
the episode loop.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from dacstyle.agents.loop import run_episodes
from dacstyle.agents.scripted import ScriptedCompetitionAgent
from dacstyle.competitions import Grader, TaskEnv, list_competitions, make_competition


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("competition", nargs="?", default="spaceship-titanic-lite", choices=list_competitions())
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dacstyle-competition-") as tmp:
        root = Path(tmp)
        competition = make_competition(args.competition, root / "competitions", seed=args.seed)
        submissions = root / "submission"

        # 1. the grader (later: a grader container with only private/ bound)
        grader = Grader(competition, submissions_root=submissions)

        # 2. the task environment; the agent gets the validate capability only
        env = TaskEnv(
            competition / "public",
            workspace_dir=root / "workspace",
            submission_dir=submissions,
            time_limit=120,
            validator=grader.validator,
        )

        # 3. the episode
        def show(episode, t, action, reward, terminated, truncated, info):  # noqa: ANN001
            print(f"--- step {t}: {info['kind']}")
            print(info.get("output") or json.dumps(info.get("validation")))

        run_episodes(env, ScriptedCompetitionAgent(), number_of_episodes=1, on_step=show)
        env.close()

        # the host grades after the episode
        result = grader.grade(Path("submission.csv"))
        baseline = grader.grade((competition / "public" / "sample_submission.csv").read_bytes())
        print("--- report")
        print(json.dumps(result, indent=2, sort_keys=True))
        print(f"sample submission scores {baseline['score']:.4f}; the agent scores {result['score']:.4f}")


if __name__ == "__main__":
    main()
