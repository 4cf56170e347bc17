"""Grader and validator: MLE-bench submission rules, structured errors, isolation of the answers."""

from __future__ import annotations

import csv
import io
import logging
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

from dacstyle.competitions import Grader, SubmissionValidator, list_competitions, make_competition
from dacstyle.competitions.metrics import medal_for
from dacstyle.config import config
from dacstyle.errors import BenchmarkError


@pytest.fixture(scope="module")
def comps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("comps")
    return {name: make_competition(name, root) for name in list_competitions()}


def _table(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return rows[0], rows[1:]


def _csv(header: list[str], rows: list[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def _sample(comp: Path) -> tuple[list[str], list[list[str]]]:
    return _table(comp / "public/sample_submission.csv")


def _codes(result: dict) -> set[str]:
    return {e["code"] for e in result["errors"]}


def sklearn_score(comp: Path, submission: Path | str) -> float:
    """The metric computed directly from the private answers, independently of the grader."""
    header, answers = _table(comp / "private/answers.csv")
    _, sub = _table(submission) if isinstance(submission, Path) else (None, list(csv.reader(io.StringIO(submission)))[1:])
    pred = {r[0]: r[1:] for r in sub}
    metric = (comp / "public/description.md").read_text().split("Metric: ")[1].split()[0]
    truth = [r[1:] for r in answers]
    guess = [pred[r[0]] for r in answers]
    if metric == "accuracy":
        return skm.accuracy_score([t[0] for t in truth], [g[0] for g in guess])
    t, g = np.array(truth, dtype=float), np.array(guess, dtype=float)
    if metric == "roc_auc":
        return skm.roc_auc_score(t[:, 0], g[:, 0])
    if metric == "rmse":
        return float(np.sqrt(skm.mean_squared_error(t[:, 0], g[:, 0])))
    if metric == "rmsle":
        return float(np.sqrt(skm.mean_squared_log_error(t[:, 0], g[:, 0])))
    return skm.log_loss(t.argmax(1), g / g.sum(1, keepdims=True), labels=list(range(t.shape[1])))


@pytest.mark.parametrize("name", list_competitions())
def test_sample_submission_is_valid_and_scored_like_sklearn(comps: dict[str, Path], name: str) -> None:
    comp = comps[name]
    grader = Grader(comp)
    text = (comp / "public/sample_submission.csv").read_text()
    assert grader.validate(text) == {"valid": True, "errors": []}
    result = grader.grade(text)
    assert result["valid"] and result["errors"] == []
    assert result["score"] == pytest.approx(sklearn_score(comp, comp / "public/sample_submission.csv"), rel=1e-12)
    assert result["higher_is_better"] == grader.info()["higher_is_better"]
    assert result["medal"] in (None, "bronze", "silver", "gold")
    assert result["report"]["n_rows"] == len(text.splitlines()) - 1


def _mutations(comp: Path) -> dict[str, tuple[str, str]]:
    """name -> (submission text, expected code)."""
    header, rows = _sample(comp)
    target = header[1]
    out = {
        "missing_column": (_csv(header[:1], [r[:1] for r in rows]), "missing_column"),
        "extra_column": (_csv(header + ["x"], [r + ["1"] for r in rows]), "extra_column"),
        "duplicate_column": (_csv(header + [target], [r + [r[1]] for r in rows]), "duplicate_column"),
        "duplicate_id": (_csv(header, rows + rows[:2]), "duplicate_id"),
        "missing_ids": (_csv(header, rows[:-5]), "missing_ids"),
        "extra_ids": (_csv(header, rows + [["zz-not-an-id"] + r[1:] for r in rows[:1]]), "extra_ids"),
        "ragged": (_csv(header, rows[:3] + [rows[3][:1]] + rows[4:]), "bad_csv"),
        "header_only": (_csv(header, []), "empty"),
        "empty": ("", "empty"),
        "nul": ("\x00\x00" + _csv(header, rows), "bad_csv"),
    }
    return out


@pytest.mark.parametrize("name", list_competitions())
def test_structural_problems_are_structured_errors(comps: dict[str, Path], name: str) -> None:
    grader = Grader(comps[name])
    for case, (text, code) in _mutations(comps[name]).items():
        for result in (grader.validate(text), grader.grade(text)):
            assert result["valid"] is False, case
            assert code in _codes(result), (case, result)
            assert all(set(e) == {"code", "message"} and isinstance(e["message"], str) for e in result["errors"])
        assert grader.grade(text)["score"] is None


def test_value_rules_per_metric(comps: dict[str, Path]) -> None:
    def with_value(name: str, value: str, column: int = 1) -> str:
        header, rows = _sample(comps[name])
        rows = [list(r) for r in rows]
        rows[0][column] = value
        return _csv(header, rows)

    churn = Grader(comps["customer-churn-auc"])
    assert _codes(churn.validate(with_value("customer-churn-auc", "abc"))) == {"not_numeric"}
    assert _codes(churn.validate(with_value("customer-churn-auc", "nan"))) == {"not_numeric"}
    assert _codes(churn.validate(with_value("customer-churn-auc", "inf"))) == {"not_numeric"}
    assert _codes(churn.validate(with_value("customer-churn-auc", "1.5"))) == {"probability_range"}
    plants = Grader(comps["plant-species-logloss"])
    assert "probability_sum" in _codes(plants.validate(with_value("plant-species-logloss", "0.9")))
    assert "probability_range" in _codes(plants.validate(with_value("plant-species-logloss", "-0.1")))
    houses = Grader(comps["house-prices-rmsle"])
    assert _codes(houses.validate(with_value("house-prices-rmsle", "-3"))) == {"negative_value"}
    ship = Grader(comps["spaceship-titanic-lite"])
    assert _codes(ship.validate(with_value("spaceship-titanic-lite", "maybe"))) == {"bad_label"}


def test_bytes_size_and_encoding(comps: dict[str, Path], tmp_path: Path) -> None:
    comp = comps["house-prices-rmsle"]
    config.max_submission_bytes = 1024 * 1024  # the setting is the default cap
    grader = Grader(comp, submissions_root=tmp_path)
    sample = (comp / "public/sample_submission.csv").read_bytes()
    assert grader.validate(sample)["valid"]
    assert grader.validate(b"\xef\xbb\xbf" + sample)["valid"]  # a UTF-8 BOM is fine
    assert _codes(grader.validate(os.urandom(4096) + b"\xff")) <= {"not_utf8", "bad_csv"}
    assert _codes(grader.validate(b"\xff\xfe\x00garbage")) == {"not_utf8"}
    big = b"a" * (1024 * 1024 + 1)
    assert _codes(grader.validate(big)) == {"too_large"}
    assert _codes(grader.validate(big.decode())) == {"too_large"}
    (tmp_path / "big.csv").write_bytes(big)
    assert _codes(grader.validate(Path("big.csv"))) == {"too_large"}
    with open(tmp_path / "sparse.csv", "wb") as handle:
        handle.truncate(1024**3)  # no disk blocks: refused by fstat before a byte is read
    assert _codes(grader.validate(Path("sparse.csv"))) == {"too_large"}
    assert _codes(grader.validate(12345)) == {"bad_type"}
    assert _codes(grader.validate(["a"])) == {"bad_type"}
    assert _codes(Grader(comp, max_bytes=100).validate(sample)) == {"too_large"}


def test_paths_stay_inside_the_submissions_root(comps: dict[str, Path], tmp_path: Path) -> None:
    comp = comps["spaceship-titanic-lite"]
    root = tmp_path / "subs"
    (root / "inner").mkdir(parents=True)
    shutil.copy(comp / "public/sample_submission.csv", root / "inner/ok.csv")
    outside = tmp_path / "outside.csv"
    shutil.copy(comp / "public/sample_submission.csv", outside)
    (root / "escape.csv").symlink_to(outside)
    (root / "inside_link.csv").symlink_to(root / "inner/ok.csv")
    grader = Grader(comp, submissions_root=root)
    assert grader.validate(Path("inner/ok.csv"))["valid"]
    assert grader.validate({"path": "inner/ok.csv"})["valid"]
    assert grader.validate(root / "inner/ok.csv")["valid"]
    (root / "linked").symlink_to(root / "inner")
    os.mkfifo(root / "fifo.csv")
    for bad in (Path("../outside.csv"), outside, Path("escape.csv"), {"path": "../../etc/passwd"},
                Path("/etc/passwd"), Path("inner"), {"path": ""}, {"path": 3}, {"path": "a\x00b"},
                Path("inside_link.csv"), Path("linked/ok.csv"), Path("fifo.csv"), Path("inner/../inner/ok.csv/x")):
        result = grader.grade(bad)  # no link is followed, not even one that stays inside
        assert _codes(result) == {"bad_path"}, (bad, result)
        assert result["score"] is None
    assert _codes(grader.grade(Path("missing.csv"))) == {"missing"}
    # without a root, paths are refused altogether
    assert _codes(Grader(comp).validate(Path("inner/ok.csv"))) == {"bad_path"}


def test_validate_never_reveals_a_score_and_never_logs_one(comps: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    comp = comps["house-prices-rmsle"]
    grader = Grader(comp)
    text = (comp / "public/sample_submission.csv").read_text()
    score = grader.grade(text)["score"]
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        result = grader.validate(text)
        for case, _ in _mutations(comp).values():
            grader.validate(case)
    assert set(result) == {"valid", "errors"}
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "score" not in logged.lower() and f"{score:.4f}"[:6] not in logged


def test_error_messages_never_contain_private_answers(comps: dict[str, Path]) -> None:
    comp = comps["house-prices-rmsle"]
    _, answers = _table(comp / "private/answers.csv")
    secrets = {r[1] for r in answers if len(r[1]) >= 5}
    grader = Grader(comp)
    messages = []
    for text, _ in _mutations(comp).values():
        messages += [e["message"] for e in grader.grade(text)["errors"]]
    header, rows = _sample(comp)
    wrong = _csv(header, [[r[0], "x"] for r in rows])
    messages += [e["message"] for e in grader.grade(wrong)["errors"]]
    text = "\n".join(messages)
    assert messages and not any(s in text for s in secrets)


def test_validate_works_without_private_answers(comps: dict[str, Path], tmp_path: Path) -> None:
    public_only = tmp_path / "comp"
    shutil.copytree(comps["plant-species-logloss"], public_only, ignore=shutil.ignore_patterns("private"))
    assert not (public_only / "private").exists()
    validator = SubmissionValidator(public_only)
    sample = (public_only / "public/sample_submission.csv").read_text()
    assert validator.validate(sample) == {"valid": True, "errors": []}
    assert not hasattr(validator, "grade")
    assert "private" not in repr(vars(validator))
    grader = Grader(public_only)
    assert grader.validate(sample)["valid"]
    with pytest.raises(BenchmarkError, match="private answers"):
        grader.grade(sample)


def test_grader_keeps_working_after_garbage_and_across_threads(comps: dict[str, Path]) -> None:
    comp = comps["customer-churn-auc"]
    grader = Grader(comp)
    text = (comp / "public/sample_submission.csv").read_text()
    garbage = [os.urandom(1000), b"\x00" * 10, "\n\n\n", '"unterminated', "a," * 100000, text[: len(text) // 2]]
    expected = grader.grade(text)["score"]
    results: list[object] = []

    def work(i: int) -> None:
        for j in range(10):
            item = garbage[(i + j) % len(garbage)]
            results.append(grader.validate(item)["valid"])
            results.append(grader.grade(text)["score"])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert results.count(expected) == 80 and results.count(False) == 80
    assert grader.grade(text)["score"] == expected


def test_info_is_public_metadata(comps: dict[str, Path]) -> None:
    info = Grader(comps["spaceship-titanic-lite"]).info()
    assert info["metric"] == "accuracy" and info["id_column"] == "PassengerId"
    assert info["submission_columns"] == ["PassengerId", "Transported"]
    assert info["n_test_rows"] == 200 and info["labels"] == ["False", "True"]


def test_medals() -> None:
    medals = {"gold": 0.9, "silver": 0.8, "bronze": 0.7}
    assert medal_for(0.95, medals, True) == "gold"
    assert medal_for(0.75, medals, True) == "bronze"
    assert medal_for(0.5, medals, True) is None
    low = {"gold": 0.1, "silver": 0.2, "bronze": 0.3}
    assert medal_for(0.15, low, False) == "silver"
    assert medal_for(0.5, low, False) is None
    assert medal_for(0.5, None, False) is None
