"""Synthetic competitions: layout, determinism, public metadata, the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dacstyle.cli import main
from dacstyle.competitions import METRICS, CompetitionInfo, list_competitions, make_competition
from dacstyle.errors import BenchmarkError

FILES = [
    "competition.json",
    "public/train.csv",
    "public/test.csv",
    "public/sample_submission.csv",
    "public/description.md",
    "private/answers.csv",
]


def _rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def test_bundled_competitions_cover_the_required_metrics(tmp_path: Path) -> None:
    names = list_competitions()
    assert len(names) >= 4
    metrics = {CompetitionInfo.load(make_competition(n, tmp_path)).metric for n in names}
    assert {"accuracy", "roc_auc", "log_loss"} <= metrics
    assert metrics & {"rmse", "rmsle"}
    assert metrics <= set(METRICS)


@pytest.mark.parametrize("name", list_competitions())
def test_layout_and_consistency(tmp_path: Path, name: str) -> None:
    root = make_competition(name, tmp_path)
    assert root == tmp_path / name
    for rel in FILES:
        assert (root / rel).is_file(), rel
    info = CompetitionInfo.load(root)
    assert info.id == name
    assert info.higher_is_better == METRICS[info.metric]
    assert set(info.medals or {}) == {"gold", "silver", "bronze"}
    train_h, train = _rows(root / "public/train.csv")
    test_h, test = _rows(root / "public/test.csv")
    sample_h, sample = _rows(root / "public/sample_submission.csv")
    answers_h, answers = _rows(root / "private/answers.csv")
    assert sample_h == answers_h == [info.id_column, *info.target_columns]
    test_ids = [r[test_h.index(info.id_column)] for r in test]
    assert [r[0] for r in sample] == [r[0] for r in answers] == test_ids
    assert len(set(test_ids)) == len(test_ids)
    assert 100 <= len(train) <= 1000 and 50 <= len(test) <= 1000
    assert len([c for c in train_h if c not in test_h]) == 1  # exactly one target column in train
    assert not set(test_h) & set(info.target_columns) - {info.id_column}
    description = (root / "public/description.md").read_text()
    assert f"Metric: {info.metric}" in description


@pytest.mark.parametrize("name", list_competitions())
def test_same_seed_gives_byte_identical_files(tmp_path: Path, name: str) -> None:
    first = make_competition(name, tmp_path / "a", seed=7)
    second = make_competition(name, tmp_path / "b", seed=7)
    other = make_competition(name, tmp_path / "c", seed=8)
    for rel in FILES:
        assert (first / rel).read_bytes() == (second / rel).read_bytes(), rel
    assert (first / "public/train.csv").read_bytes() != (other / "public/train.csv").read_bytes()


def test_unknown_competition_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="known:"):
        make_competition("no-such-task", tmp_path)


def test_broken_competition_json_is_a_clear_error(tmp_path: Path) -> None:
    root = make_competition("house-prices-rmsle", tmp_path)
    spec = json.loads((root / "competition.json").read_text())
    spec["metric"] = "f1_weird"
    (root / "competition.json").write_text(json.dumps(spec))
    with pytest.raises(BenchmarkError, match="unknown metric"):
        CompetitionInfo.load(root)
    (root / "competition.json").write_text("{")
    with pytest.raises(BenchmarkError):
        CompetitionInfo.load(root)


def test_cli_list_make_and_grade(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["competition", "list"]) == 0
    assert capsys.readouterr().out.split() == list_competitions()
    assert main(["competition", "make", "customer-churn-auc", "--out", str(tmp_path), "--seed", "3"]) == 0
    root = Path(capsys.readouterr().out.strip())
    assert root == tmp_path / "customer-churn-auc"
    assert main(["grade", str(root), str(root / "public/sample_submission.csv"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["valid"] and result["score"] == pytest.approx(0.5)
    bad = tmp_path / "bad.csv"
    bad.write_text("customer_id,churn\n1,2\n")
    assert main(["grade", str(root), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "invalid submission" in out and "[missing_ids]" in out
