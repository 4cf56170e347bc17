"""The public side of a competition: its metadata and the submission rules.

Everything here is built from ``competition.json`` and ``public/`` only
(test ids from ``public/test.csv``, columns from ``public/sample_submission.csv``),
so the agent-side check can run where the private answers do not exist.

Checks follow MLE-bench's rules: one row per test id, no duplicate, missing or
extra ids, exactly the sample submission's columns, numbers where the metric
needs them, probabilities in [0, 1] and (log loss) rows summing to one.
Problems are ``{"code", "message"}`` dicts; messages quote at most a few
submitted or public values, never a private answer.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BenchmarkError

__all__ = ["METRICS", "CompetitionInfo", "PublicSchema", "ParsedSubmission", "error", "read_csv_text"]

METRICS: dict[str, bool] = {
    "accuracy": True,
    "roc_auc": True,
    "rmse": False,
    "rmsle": False,
    "log_loss": False,
}
"""Supported metric names -> whether higher is better."""

PROBABILITY_SUM_TOLERANCE = 1e-4
_EXAMPLES = 3


def error(code: str, message: str) -> dict[str, str]:
    """One structured problem item."""
    return {"code": code, "message": message}


def _show(values: list[str]) -> str:
    """A few values, quoted and shortened, for a message."""
    shown = [repr(v if len(v) <= 40 else v[:37] + "...") for v in values[:_EXAMPLES]]
    more = f" and {len(values) - _EXAMPLES} more" if len(values) > _EXAMPLES else ""
    return ", ".join(shown) + more


def read_csv_text(text: str) -> tuple[list[str], list[list[str]]]:
    """Parse CSV text into a header and rows (csv.Error on malformed input)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    rows: list[list[str]] = []
    for row in reader:
        if header is None:
            header = [cell.strip() for cell in row]
        elif row:  # skip blank lines
            rows.append(row)
    return header or [], rows


def _read_csv_file(path: Path) -> tuple[list[str], list[list[str]]]:
    try:
        return read_csv_text(path.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise BenchmarkError(f"cannot read {path}: {exc}") from exc


@dataclass(frozen=True)
class CompetitionInfo:
    """The contents of ``competition.json`` (all public)."""

    id: str
    metric: str
    id_column: str
    target_columns: tuple[str, ...]
    higher_is_better: bool
    medals: dict[str, float] | None = None
    labels: tuple[str, ...] | None = None
    title: str = ""

    @classmethod
    def load(cls, competition_dir: str | Path) -> "CompetitionInfo":
        """Read and check ``competition_dir/competition.json``."""
        path = Path(competition_dir) / "competition.json"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BenchmarkError(f"cannot read {path}: {exc}") from exc
        try:
            info = cls(
                id=str(raw["id"]),
                metric=str(raw["metric"]),
                id_column=str(raw["id_column"]),
                target_columns=tuple(str(c) for c in raw["target_columns"]),
                higher_is_better=bool(raw["higher_is_better"]),
                medals={k: float(v) for k, v in raw["medals"].items()} if raw.get("medals") else None,
                labels=tuple(str(v) for v in raw["labels"]) if raw.get("labels") else None,
                title=str(raw.get("title", "")),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BenchmarkError(f"{path}: missing or bad field: {exc}") from exc
        if info.metric not in METRICS:
            raise BenchmarkError(f"{path}: unknown metric {info.metric!r}; known: {', '.join(METRICS)}")
        if info.medals and set(info.medals) != {"gold", "silver", "bronze"}:
            raise BenchmarkError(f"{path}: medals must have exactly gold, silver and bronze")
        return info

    def as_dict(self) -> dict[str, Any]:
        """JSON-friendly form, the same keys as competition.json."""
        out: dict[str, Any] = {
            "id": self.id,
            "title": self.title,
            "metric": self.metric,
            "id_column": self.id_column,
            "target_columns": list(self.target_columns),
            "higher_is_better": self.higher_is_better,
        }
        if self.medals:
            out["medals"] = dict(self.medals)
        if self.labels:
            out["labels"] = list(self.labels)
        return out


@dataclass
class ParsedSubmission:
    """A submission that passed every public check, aligned to the test ids."""

    ids: list[str]
    values: np.ndarray | list[str]  # float matrix (n, k), or labels for accuracy
    columns: tuple[str, ...] = field(default_factory=tuple)


class PublicSchema:
    """Submission rules built from public files only; immutable, thread-safe."""

    def __init__(self, competition_dir: str | Path) -> None:
        root = Path(competition_dir)
        self.info = CompetitionInfo.load(root)
        header, rows = _read_csv_file(root / "public" / "sample_submission.csv")
        self.columns: tuple[str, ...] = tuple(header)
        if not header or header[0] != self.info.id_column:
            raise BenchmarkError(f"{root}: sample_submission.csv must start with {self.info.id_column!r}")
        if tuple(header[1:]) != self.info.target_columns:
            raise BenchmarkError(f"{root}: sample_submission.csv columns differ from target_columns")
        test_header, test_rows = _read_csv_file(root / "public" / "test.csv")
        if self.info.id_column not in test_header:
            raise BenchmarkError(f"{root}: public/test.csv has no {self.info.id_column!r} column")
        col = test_header.index(self.info.id_column)
        self.test_ids: tuple[str, ...] = tuple(r[col].strip() for r in test_rows)
        self._test_id_set = frozenset(self.test_ids)

    # -- the check ---------------------------------------------------------

    def check(self, text: str) -> tuple[list[dict[str, str]], ParsedSubmission | None]:
        """Check decoded CSV text; return (errors, parsed) with parsed None when invalid."""
        try:
            header, rows = read_csv_text(text)
        except csv.Error as exc:
            return [error("bad_csv", f"not valid CSV: {exc}")], None
        if not header and not rows:
            return [error("empty", "the submission is empty")], None
        errors = self._check_header(header)
        if errors:
            return errors, None
        if not rows:
            return [error("empty", "the submission has a header but no rows")], None
        width = len(header)
        bad = [i + 2 for i, r in enumerate(rows) if len(r) != width]
        if bad:
            lines = ", ".join(str(n) for n in bad[:_EXAMPLES])
            return [error("bad_csv", f"{len(bad)} row(s) do not have {width} fields (line {lines})")], None
        errors = self._check_ids(header, rows)
        index = {name: i for i, name in enumerate(header)}
        values, value_errors = self._check_values(rows, index)
        errors += value_errors
        if errors:
            return errors, None
        ids = [r[index[self.info.id_column]].strip() for r in rows]
        return [], ParsedSubmission(ids=ids, values=values, columns=self.info.target_columns)

    def _check_header(self, header: list[str]) -> list[dict[str, str]]:
        errors = []
        seen: set[str] = set()
        for name in header:
            if name in seen:
                errors.append(error("duplicate_column", f"column {name[:40]!r} appears more than once"))
            seen.add(name)
        for name in self.columns:
            if name not in seen:
                errors.append(error("missing_column", f"required column {name!r} is missing"))
        extra = [name for name in header if name not in self.columns]
        if extra:
            errors.append(error("extra_column", f"unexpected column(s): {_show(extra)}"))
        return errors

    def _check_ids(self, header: list[str], rows: list[list[str]]) -> list[dict[str, str]]:
        col = header.index(self.info.id_column)
        ids = [r[col].strip() for r in rows]
        errors = []
        seen: set[str] = set()
        dups: list[str] = []
        for value in ids:
            if value in seen and value not in dups:
                dups.append(value)
            seen.add(value)
        if dups:
            errors.append(error("duplicate_id", f"{len(dups)} id(s) appear more than once: {_show(dups)}"))
        missing = [v for v in self.test_ids if v not in seen]
        if missing:
            errors.append(error("missing_ids", f"{len(missing)} test id(s) have no row: {_show(missing)}"))
        extra = [v for v in dict.fromkeys(ids) if v not in self._test_id_set]
        if extra:
            errors.append(error("extra_ids", f"{len(extra)} id(s) are not in test.csv: {_show(extra)}"))
        return errors

    def _check_values(self, rows: list[list[str]], index: dict[str, int]) -> tuple[Any, list[dict[str, str]]]:
        metric = self.info.metric
        if metric == "accuracy":
            labels = [r[index[self.info.target_columns[0]]].strip() for r in rows]
            if self.info.labels:
                allowed = set(self.info.labels)
                bad = [v for v in dict.fromkeys(labels) if v not in allowed]
                if bad:
                    return None, [error("bad_label", f"label(s) {_show(bad)} not among {list(self.info.labels)}")]
            return labels, []
        matrix = np.empty((len(rows), len(self.info.target_columns)), dtype=float)
        errors = []
        for j, name in enumerate(self.info.target_columns):
            cells = [r[index[name]].strip() for r in rows]
            column, bad = _parse_floats(cells)
            if bad:
                errors.append(error("not_numeric", f"column {name!r}: {len(bad)} value(s) are not finite numbers: {_show(bad)}"))
            matrix[:, j] = column
        if errors:
            return None, errors
        if metric in ("roc_auc", "log_loss") and ((matrix < 0) | (matrix > 1)).any():
            errors.append(error("probability_range", "probabilities must lie in [0, 1]"))
        if metric == "log_loss":
            off = np.abs(matrix.sum(axis=1) - 1.0) > PROBABILITY_SUM_TOLERANCE
            if off.any():
                errors.append(
                    error("probability_sum", f"{int(off.sum())} row(s) do not sum to 1 (tolerance {PROBABILITY_SUM_TOLERANCE})")
                )
        if metric == "rmsle" and (matrix < 0).any():
            errors.append(error("negative_value", "rmsle needs predictions >= 0"))
        return matrix, errors


def _parse_floats(cells: list[str]) -> tuple[np.ndarray, list[str]]:
    """Floats for cells; also the cells that are not finite numbers."""
    out = np.zeros(len(cells), dtype=float)
    bad: list[str] = []
    for i, cell in enumerate(cells):
        try:
            out[i] = float(cell)
        except ValueError:
            bad.append(cell)
            continue
        if not np.isfinite(out[i]):
            bad.append(cell)
    return out, bad
