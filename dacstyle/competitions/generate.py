"""Small synthetic competitions, generated deterministically.

``make_competition(name, out_dir, seed)`` writes ``out_dir/name/`` with
``competition.json``, ``public/{train,test,sample_submission}.csv``,
``public/description.md`` and ``private/answers.csv``. The same name and seed
give byte-identical files. Each task has a few hundred rows whose features
carry real signal, so a simple model beats the sample submission.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BenchmarkError
from . import metrics
from .schema import METRICS

__all__ = ["make_competition", "list_competitions"]

N_TRAIN, N_TEST = 400, 200


@dataclass
class _Table:
    """What a generator produces; make_competition writes it out."""

    title: str
    summary: str
    metric: str
    id_column: str
    target_columns: list[str]
    train_header: list[str]
    train_rows: list[list[str]]
    test_header: list[str]
    test_rows: list[list[str]]
    answers: list[list[str]]  # id + target columns, like the sample submission
    default: list[str]  # the sample submission's value(s) for every row
    oracle: float  # the score of the true probabilities / noise-free values
    labels: list[str] | None = None


def _blank(rng: np.random.Generator, values: list[str], rate: float = 0.03) -> list[str]:
    """Blank out a few cells, as real data has missing values."""
    return [v if rng.random() >= rate else "" for v in values]


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _spaceship(rng: np.random.Generator) -> _Table:
    n = N_TRAIN + N_TEST
    planet = rng.choice(["Earth", "Europa", "Mars"], n, p=[0.5, 0.25, 0.25])
    cryo = rng.random(n) < 0.35
    dest = rng.choice(["TRAPPIST-1e", "55 Cancri e", "PSO J318.5-22"], n, p=[0.6, 0.25, 0.15])
    age = np.clip(rng.normal(29, 13, n), 0, 79).round()
    spend = np.where(cryo, 0.0, rng.exponential(600, (3, n)))
    z = 2.2 * cryo + 0.9 * (planet == "Europa") - 0.4 * (planet == "Earth") + 0.5 * (dest == "55 Cancri e")
    z = z - 0.0012 * (spend[0] + spend[2]) + 0.0006 * spend[1] - 0.01 * (age - 29) - 0.3
    p = _sigmoid(z)
    y = rng.random(n) < p
    ids = [f"{i // 3 + 1:04d}_{i % 3 + 1:02d}" for i in range(n)]
    header = ["PassengerId", "HomePlanet", "CryoSleep", "Destination", "Age", "RoomService", "FoodCourt", "Spa"]
    rows = []
    for i in range(n):
        cells = [planet[i], str(bool(cryo[i])), dest[i], f"{age[i]:.0f}"] + [f"{s:.1f}" for s in spend[:, i]]
        rows.append([ids[i]] + _blank(rng, cells))
    truth = ["True" if v else "False" for v in y]
    test = slice(N_TRAIN, n)
    oracle = metrics.score("accuracy", truth[test], ["True" if v > 0.5 else "False" for v in p[test]])
    return _Table(
        title="Spaceship Titanic (lite)",
        summary="Predict whether each passenger was transported to another dimension (`Transported`, True/False).",
        metric="accuracy", id_column="PassengerId", target_columns=["Transported"],
        train_header=header + ["Transported"], train_rows=[r + [truth[i]] for i, r in enumerate(rows[:N_TRAIN])],
        test_header=header, test_rows=rows[N_TRAIN:],
        answers=[[ids[i], truth[i]] for i in range(N_TRAIN, n)], default=["False"], oracle=oracle,
        labels=["False", "True"],
    )


def _churn(rng: np.random.Generator) -> _Table:
    n = N_TRAIN + N_TEST
    tenure = rng.integers(1, 73, n)
    charges = rng.uniform(18, 120, n)
    contract = rng.choice(["month-to-month", "one-year", "two-year"], n, p=[0.55, 0.25, 0.2])
    calls = rng.poisson(1.5, n)
    paperless = rng.choice(["yes", "no"], n)
    z = -0.045 * (tenure - 30) + 0.02 * (charges - 65) + 0.45 * calls - 1.2
    z = z + 1.0 * (contract == "month-to-month") - 1.0 * (contract == "two-year") + 0.3 * (paperless == "yes")
    p = _sigmoid(z)
    y = (rng.random(n) < p).astype(int)
    ids = [str(1000 + i) for i in range(n)]
    header = ["customer_id", "tenure_months", "monthly_charges", "contract", "support_calls", "paperless_billing"]
    rows = [
        [ids[i]] + _blank(rng, [str(tenure[i]), f"{charges[i]:.2f}", contract[i], str(calls[i]), paperless[i]])
        for i in range(n)
    ]
    oracle = metrics.score("roc_auc", y[N_TRAIN:, None].astype(float), p[N_TRAIN:, None])
    return _Table(
        title="Customer churn (ROC AUC)",
        summary="Predict the probability that each customer churns (`churn`, a number in [0, 1]).",
        metric="roc_auc", id_column="customer_id", target_columns=["churn"],
        train_header=header + ["churn"], train_rows=[r + [str(y[i])] for i, r in enumerate(rows[:N_TRAIN])],
        test_header=header, test_rows=rows[N_TRAIN:],
        answers=[[ids[i], str(y[i])] for i in range(N_TRAIN, n)], default=["0.5"], oracle=oracle,
    )


def _houses(rng: np.random.Generator) -> _Table:
    n = N_TRAIN + N_TEST
    hoods = ["Riverside", "OldTown", "Hilltop", "Meadows", "Docklands"]
    effect = dict(zip(hoods, [0.15, -0.1, 0.3, 0.0, -0.2]))
    hood = rng.choice(hoods, n)
    area = rng.uniform(50, 300, n)
    quality = rng.integers(1, 11, n)
    year = rng.integers(1900, 2021, n)
    lot = rng.uniform(100, 2000, n)
    log_mean = 10.8 + 0.005 * area + 0.08 * quality + 0.003 * (year - 1960) + 0.0001 * lot
    log_mean = log_mean + np.array([effect[h] for h in hood])
    price = np.exp(log_mean + rng.normal(0, 0.12, n))
    ids = [str(i + 1) for i in range(n)]
    header = ["Id", "LivingArea", "OverallQual", "YearBuilt", "LotArea", "Neighborhood"]
    rows = [
        [ids[i]] + _blank(rng, [f"{area[i]:.1f}", str(quality[i]), str(year[i]), f"{lot[i]:.0f}", hood[i]])
        for i in range(n)
    ]
    prices = [f"{v:.0f}" for v in price]
    test_truth = np.array([float(v) for v in prices[N_TRAIN:]])[:, None]
    oracle = metrics.score("rmsle", test_truth, np.exp(log_mean[N_TRAIN:])[:, None])
    median = float(np.median([float(v) for v in prices[:N_TRAIN]]))
    return _Table(
        title="House prices (RMSLE)",
        summary="Predict the sale price of each house (`SalePrice`, a positive number).",
        metric="rmsle", id_column="Id", target_columns=["SalePrice"],
        train_header=header + ["SalePrice"], train_rows=[r + [prices[i]] for i, r in enumerate(rows[:N_TRAIN])],
        test_header=header, test_rows=rows[N_TRAIN:],
        answers=[[ids[i], prices[i]] for i in range(N_TRAIN, n)], default=[f"{median:.0f}"], oracle=oracle,
    )


def _plants(rng: np.random.Generator) -> _Table:
    n = N_TRAIN + N_TEST
    species = ["alba", "borealis", "caerulea"]
    means = np.array([[5.0, 3.4, 1.5, 0.3], [6.0, 2.8, 4.3, 1.3], [6.6, 3.0, 5.5, 2.0]])
    cls = rng.integers(0, 3, n)
    feats = means[cls] + rng.normal(0, 0.55, (n, 4))
    habitat = np.where(rng.random(n) < 0.6, np.array(["wetland", "forest", "meadow"])[cls], rng.choice(["wetland", "forest", "meadow"], n))
    ids = [f"p{i:04d}" for i in range(n)]
    header = ["id", "sepal_length", "sepal_width", "petal_length", "petal_width", "habitat"]
    rows = [[ids[i]] + _blank(rng, [f"{v:.2f}" for v in feats[i]] + [habitat[i]]) for i in range(n)]
    onehot = np.eye(3)[cls]
    # oracle: Gaussian class likelihoods (habitat ignored), a strong but beatable reference
    d2 = ((feats[:, None, :] - means[None]) ** 2).sum(-1) / (2 * 0.55**2)
    post = np.exp(-(d2 - d2.min(1, keepdims=True)))
    post /= post.sum(1, keepdims=True)
    oracle = metrics.score("log_loss", onehot[N_TRAIN:], np.clip(post[N_TRAIN:], 1e-6, 1))
    return _Table(
        title="Plant species (multi-class log loss)",
        summary="Predict the probability of each species (`alba`, `borealis`, `caerulea`) for every plant; "
        "each row's probabilities must sum to 1.",
        metric="log_loss", id_column="id", target_columns=species,
        train_header=header + ["species"], train_rows=[r + [species[cls[i]]] for i, r in enumerate(rows[:N_TRAIN])],
        test_header=header, test_rows=rows[N_TRAIN:],
        answers=[[ids[i]] + [str(int(v)) for v in onehot[i]] for i in range(N_TRAIN, n)],
        default=[repr(1 / 3)] * 3, oracle=oracle,
    )


_GENERATORS: dict[str, Callable[[np.random.Generator], _Table]] = {
    "spaceship-titanic-lite": _spaceship,
    "customer-churn-auc": _churn,
    "house-prices-rmsle": _houses,
    "plant-species-logloss": _plants,
}


def list_competitions() -> list[str]:
    """Names accepted by :func:`make_competition`."""
    return sorted(_GENERATORS)


def _medals(oracle: float, higher_is_better: bool) -> dict[str, float]:
    if higher_is_better:
        return {"gold": round(oracle - 0.01, 4), "silver": round(oracle - 0.03, 4), "bronze": round(oracle - 0.05, 4)}
    return {"gold": round(oracle * 1.05, 4), "silver": round(oracle * 1.2, 4), "bronze": round(oracle * 1.5, 4)}


def _write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _description(name: str, table: _Table, higher: bool) -> str:
    direction = "higher is better" if higher else "lower is better"
    columns = ",".join([table.id_column] + table.target_columns)
    return (
        f"# {table.title}\n\n{table.summary}\n\n"
        f"Competition: {name}\n"
        f"Metric: {table.metric} ({direction})\n\n"
        "## Files\n\n"
        f"- `train.csv`: {len(table.train_rows)} rows with features and the target.\n"
        f"- `test.csv`: {len(table.test_rows)} rows with features only; predict these.\n"
        "- `sample_submission.csv`: a valid submission in the right format.\n\n"
        "Some feature values are missing (empty cells).\n\n"
        "## Submission\n\n"
        f"A CSV file with the header `{columns}` and exactly one row per `{table.id_column}` in `test.csv`.\n"
    )


def make_competition(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write the competition ``name`` into ``out_dir/name`` and return that folder."""
    if name not in _GENERATORS:
        raise BenchmarkError(f"unknown competition {name!r}; known: {', '.join(list_competitions())}")
    index = list_competitions().index(name)
    table = _GENERATORS[name](np.random.default_rng([int(seed), index]))
    higher = METRICS[table.metric]
    root = Path(out_dir) / name
    (root / "public").mkdir(parents=True, exist_ok=True)
    (root / "private").mkdir(parents=True, exist_ok=True)
    spec = {
        "id": name,
        "title": table.title,
        "metric": table.metric,
        "id_column": table.id_column,
        "target_columns": table.target_columns,
        "higher_is_better": higher,
        "medals": _medals(table.oracle, higher),
        "seed": int(seed),
    }
    if table.labels:
        spec["labels"] = table.labels
    (root / "competition.json").write_text(json.dumps(spec, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _write_csv(root / "public" / "train.csv", table.train_header, table.train_rows)
    _write_csv(root / "public" / "test.csv", table.test_header, table.test_rows)
    sample = [[row[0]] + table.default for row in table.test_rows]
    _write_csv(root / "public" / "sample_submission.csv", [table.id_column] + table.target_columns, sample)
    (root / "public" / "description.md").write_text(_description(name, table, higher), encoding="utf-8")
    _write_csv(root / "private" / "answers.csv", [table.id_column] + table.target_columns, table.answers)
    return root
