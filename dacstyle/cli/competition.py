"""``dacstyle grade`` and ``dacstyle competition list|make``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .args import at_least

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Add the ``grade`` and ``competition`` subcommands."""
    grade = subparsers.add_parser(
        "grade",
        help="grade a submission CSV against a competition's private answers",
        description="Grade SUBMISSION.csv for the competition folder COMPETITION_DIR (which holds "
        "competition.json, public/ and private/). Exit status 0 when the submission is valid, 1 when not.",
    )
    grade.add_argument("competition_dir", metavar="COMPETITION_DIR", type=Path, help="the competition folder")
    grade.add_argument("submission", metavar="SUBMISSION.csv", type=Path, help="the submission file")
    grade.add_argument("--json", action="store_true", help="print the full result as JSON")
    grade.set_defaults(func=_grade)

    competition = subparsers.add_parser(
        "competition",
        help="list or generate the bundled synthetic competitions",
        description="The bundled synthetic MLE-bench-style competitions.",
    )
    actions = competition.add_subparsers(dest="competition_command", metavar="ACTION")
    listing = actions.add_parser("list", help="list the competitions that 'make' can generate")
    listing.set_defaults(func=_list)
    make = actions.add_parser(
        "make",
        help="generate a competition folder",
        description="Write the competition NAME into DIR/NAME (same seed, byte-identical files).",
    )
    make.add_argument("name", metavar="NAME", help="a name from 'dacstyle competition list'")
    make.add_argument("--out", metavar="DIR", type=Path, required=True, help="the folder to write into")
    make.add_argument("--seed", metavar="N", type=at_least(0), default=0, help="random seed (default 0)")
    make.set_defaults(func=_make)
    competition.set_defaults(func=lambda args: (competition.print_help(), 2)[1])


def _grade(args: argparse.Namespace) -> int:
    from ..competitions import Grader

    submission = args.submission.resolve()  # the host user is trusted: follow their symlinks
    grader = Grader(args.competition_dir, submissions_root=submission.parent)
    result = grader.grade(Path(submission.name))
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif result["valid"]:
        direction = "higher" if result["higher_is_better"] else "lower"
        report = result["report"]
        print(f"{report['competition']}: {report['metric']} = {result['score']:.6g} ({direction} is better)")
        print(f"medal: {result['medal'] or 'none'}")
    else:
        print("invalid submission:")
        for item in result["errors"]:
            print(f"  [{item['code']}] {item['message']}")
    return 0 if result["valid"] else 1


def _list(args: argparse.Namespace) -> int:
    from ..competitions import list_competitions

    for name in list_competitions():
        print(name)
    return 0


def _make(args: argparse.Namespace) -> int:
    from ..competitions import make_competition

    print(make_competition(args.name, args.out, seed=args.seed))
    return 0
