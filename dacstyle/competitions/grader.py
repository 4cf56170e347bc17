"""Validate (agent side) and grade (host side) competition submissions.

Two objects with two capabilities:

* :class:`SubmissionValidator` knows only the public schema
  (``competition.json``, ``public/test.csv`` ids, ``public/sample_submission.csv``
  columns). It has no reference to ``private/`` at all, so it is what the agent's
  token may reach: ``validate(submission) -> {"valid", "errors"}``, never a score.
* :class:`Grader` wraps a validator and adds ``grade(submission)``: it loads
  ``private/answers.csv`` lazily (on the first grade, under a lock) and returns
  the score, medal and a report. Only the host may reach it.

A submission is CSV text (``str``), the file's ``bytes``, or a path
(``pathlib.Path`` or ``{"path": "..."}``) inside ``submissions_root``, opened
with no symlink followed and read only up to ``max_bytes`` (default: the
``max_submission_bytes`` setting); see :mod:`dacstyle.competitions.sources`. Malformed input never raises out of
``validate``/``grade``: it yields ``valid: False`` and ``{code, message}`` items.
Both objects are safe to call from several threads.
"""

from __future__ import annotations

import csv
import logging
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..config import config
from ..errors import BenchmarkError, SubmissionError
from . import metrics
from .schema import ParsedSubmission, PublicSchema, error, read_csv_text
from .sources import submission_text

__all__ = ["SubmissionValidator", "Grader"]

log = logging.getLogger(__name__)


class SubmissionValidator:
    """The agent-side capability: checks a submission against the public schema only."""

    def __init__(
        self,
        competition_dir: str | Path,
        submissions_root: str | Path | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._schema = PublicSchema(competition_dir)
        self._root = Path(submissions_root) if submissions_root is not None else None
        self._max_bytes = int(max_bytes) if max_bytes is not None else config.max_submission_bytes

    def info(self) -> dict[str, Any]:
        """Public metadata: competition.json's fields plus the submission rules."""
        out = self._schema.info.as_dict()
        out["submission_columns"] = list(self._schema.columns)
        out["n_test_rows"] = len(self._schema.test_ids)
        out["max_submission_bytes"] = self._max_bytes
        return out

    def validate(self, submission: Any) -> dict[str, Any]:
        """``{"valid": bool, "errors": [{code, message}]}`` — never a score."""
        errors, _ = self.check(submission)
        log.debug("validate: %d problem(s)", len(errors))
        return {"valid": not errors, "errors": errors}

    def check(self, submission: Any) -> tuple[list[dict[str, str]], ParsedSubmission | None]:
        """Errors and, when valid, the parsed submission (used by the grader)."""
        try:
            text = submission_text(submission, self._root, self._max_bytes)
            return self._schema.check(text)
        except SubmissionError as exc:
            return list(exc.errors), None
        except Exception:  # never let malformed input escape as a raw exception
            log.exception("unexpected failure while checking a submission")
            return [error("internal_error", "the submission could not be checked")], None


class Grader:
    """The host-side capability: validate, then score against the private answers."""

    def __init__(
        self,
        competition_dir: str | Path,
        submissions_root: str | Path | None = None,
        max_bytes: int | None = None,
    ) -> None:
        self._dir = Path(competition_dir)
        self.validator = SubmissionValidator(competition_dir, submissions_root, max_bytes)
        self._answers: dict[str, Any] | None = None
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        """Public metadata (the same as the validator's)."""
        return self.validator.info()

    def validate(self, submission: Any) -> dict[str, Any]:
        """The agent-side check; see :meth:`SubmissionValidator.validate`."""
        return self.validator.validate(submission)

    def grade(self, submission: Any = None) -> dict[str, Any]:
        """Score a submission (default: ``submission.csv`` in the submissions folder, as after a run).

        Returns ``{"score", "higher_is_better", "medal", "valid", "errors", "report"}``;
        ``score`` and ``medal`` are None when the submission is invalid. Raises
        :class:`~dacstyle.errors.BenchmarkError` only when the competition's own
        answers are missing or broken (a host problem, not the submission's).
        """
        info = self.validator._schema.info
        errors, parsed = self.validator.check({"path": "submission.csv"} if submission is None else submission)
        result: dict[str, Any] = {
            "score": None,
            "higher_is_better": info.higher_is_better,
            "medal": None,
            "valid": False,
            "errors": errors,
            "report": {"competition": info.id, "metric": info.metric, "n_rows": 0, "medal_thresholds": info.medals},
        }
        if parsed is None:
            return result
        answers = self._load_answers()
        truth = self._aligned(answers, parsed.ids)
        try:
            value = metrics.score(info.metric, truth, parsed.values)
        except Exception as exc:  # e.g. roc_auc needs both classes; reported, not raised
            log.warning("metric %s failed: %s", info.metric, type(exc).__name__)
            result["errors"] = [error("grading_failed", f"the {info.metric} metric could not be computed")]
            return result
        medal = metrics.medal_for(value, info.medals, info.higher_is_better)
        result.update(score=value, medal=medal, valid=True)
        result["report"].update(n_rows=len(parsed.ids), score=value, medal=medal)
        return result

    # -- private answers: only ever touched by grade ------------------------

    def _load_answers(self) -> dict[str, Any]:
        with self._lock:
            if self._answers is None:
                self._answers = self._read_answers()
            return self._answers

    def _read_answers(self) -> dict[str, Any]:
        path = self._dir / "private" / "answers.csv"
        schema = self.validator._schema
        try:
            header, rows = read_csv_text(path.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise BenchmarkError(f"cannot read the private answers of {schema.info.id!r}: {type(exc).__name__}") from None
        if tuple(header) != schema.columns:
            raise BenchmarkError(f"the private answers of {schema.info.id!r} do not have the submission columns")
        by_id: dict[str, Any] = {}
        try:
            for row in rows:
                values = [cell.strip() for cell in row[1:]]
                if schema.info.metric == "accuracy":
                    by_id[row[0].strip()] = values[0]
                else:
                    by_id[row[0].strip()] = [float(v) for v in values]
        except (IndexError, ValueError):
            raise BenchmarkError(f"the private answers of {schema.info.id!r} are malformed") from None
        if set(by_id) != set(schema.test_ids):
            raise BenchmarkError(f"the private answers of {schema.info.id!r} do not cover exactly the test ids")
        return by_id

    def _aligned(self, answers: dict[str, Any], ids: list[str]) -> Any:
        if self.validator._schema.info.metric == "accuracy":
            return [answers[i] for i in ids]
        return np.asarray([answers[i] for i in ids], dtype=float)
