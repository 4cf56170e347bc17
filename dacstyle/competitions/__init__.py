"""MLE-bench-style competitions: synthetic tasks, submission checks, the grader.

A competition is a folder with ``competition.json``, ``public/`` (train.csv,
test.csv, sample_submission.csv, description.md) and ``private/`` (answers.csv).
"""

from .generate import list_competitions, make_competition
from .grader import Grader, SubmissionValidator
from .schema import METRICS, CompetitionInfo
from .task import CompetitionTask
from .taskenv import SHELL_PREFIX, SUBMIT, VALIDATE, TaskEnv

__all__ = [
    "METRICS",
    "CompetitionInfo",
    "CompetitionTask",
    "Grader",
    "SHELL_PREFIX",
    "SUBMIT",
    "TaskEnv",
    "VALIDATE",
    "SubmissionValidator",
    "list_competitions",
    "make_competition",
]
