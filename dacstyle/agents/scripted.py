"""A scripted baseline for competition task environments (no LLM).

:class:`ScriptedCompetitionAgent` follows the DACBench agent protocol. In a
:class:`~dacstyle.competitions.TaskEnv` episode it acts three times: Python code
that fits a scikit-learn model (median-imputed numbers plus one-hot categories)
on ``train.csv`` and writes ``submission.csv`` for ``test.csv``; ``validate``;
``submit``. The metric is read from the instructions' ``Metric:`` line.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["ScriptedCompetitionAgent", "solution_code"]

_METRIC = re.compile(r"^Metric:\s*([a-z_]+)", re.MULTILINE)

_TEMPLATE = r'''
import csv, os
import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

METRIC = __METRIC__
public = os.environ["DACSTYLE_PUBLIC_DIR"]
out = os.path.join(os.environ["DACSTYLE_SUBMISSION_DIR"], "submission.csv")

def read(name):
    with open(os.path.join(public, name), newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]

train_h, train = read("train.csv")
test_h, test = read("test.csv")
sub_h, _ = read("sample_submission.csv")
id_col, targets = sub_h[0], sub_h[1:]
features = [c for c in test_h if c != id_col]
label_col = [c for c in train_h if c not in test_h][0]

def column(rows, header, name):
    i = header.index(name)
    return [r[i].strip() for r in rows]

def is_number(text):
    try:
        float(text)
        return True
    except ValueError:
        return False

blocks_train, blocks_test = [], []
for name in features:
    a, b = column(train, train_h, name), column(test, test_h, name)
    if all(v == "" or is_number(v) for v in a + b):
        xa = np.array([float(v) if v else np.nan for v in a])
        xb = np.array([float(v) if v else np.nan for v in b])
        fill = np.nanmedian(xa)
        blocks_train.append(np.where(np.isnan(xa), fill, xa)[:, None])
        blocks_test.append(np.where(np.isnan(xb), fill, xb)[:, None])
    else:
        levels = sorted(set(a + b))
        blocks_train.append(np.array([[v == lv for lv in levels] for v in a], dtype=float))
        blocks_test.append(np.array([[v == lv for lv in levels] for v in b], dtype=float))
X, X_test = np.hstack(blocks_train), np.hstack(blocks_test)
y = column(train, train_h, label_col)
ids = column(test, test_h, id_col)

if METRIC in ("rmse", "rmsle"):
    target = np.array([float(v) for v in y])
    if METRIC == "rmsle":
        target = np.log1p(target)
    model = GradientBoostingRegressor(random_state=0).fit(X, target)
    pred = model.predict(X_test)
    if METRIC == "rmsle":
        pred = np.clip(np.expm1(pred), 0, None)
    rows = [[i, repr(float(p))] for i, p in zip(ids, pred)]
else:
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X, y)
    classes = list(model.classes_)
    if METRIC == "accuracy":
        rows = [[i, p] for i, p in zip(ids, model.predict(X_test))]
    elif METRIC == "roc_auc":
        proba = model.predict_proba(X_test)[:, classes.index("1")]
        rows = [[i, repr(float(p))] for i, p in zip(ids, proba)]
    else:  # log_loss: one probability column per class, named like the classes
        proba = model.predict_proba(X_test)
        rows = [[i] + [repr(float(p[classes.index(t)])) for t in targets] for i, p in zip(ids, proba)]

with open(out, "w", newline="", encoding="utf-8") as f:
    writer = csv.writer(f, lineterminator="\n")
    writer.writerow(sub_h)
    writer.writerows(rows)
print("wrote", len(rows), "rows to", out)
'''


def solution_code(metric: str) -> str:
    """The Python program the agent runs for a competition with this metric."""
    return _TEMPLATE.replace("__METRIC__", repr(metric)).lstrip()


class ScriptedCompetitionAgent:
    """Fit a simple model, validate, submit. DACBench protocol: act/train/end_episode."""

    def __init__(self, env: Any = None, default_metric: str = "accuracy") -> None:
        self.default_metric = default_metric
        self.history: list[str] = []
        self._step = 0

    def act(self, state: Any, reward: float) -> str:
        """Code on the first step, then ``validate``, then ``submit``."""
        self._step += 1
        if self._step == 1:
            match = _METRIC.search(str(state))
            action = solution_code(match.group(1) if match else self.default_metric)
        elif self._step == 2:
            action = "validate"
        else:
            action = "submit"
        self.history.append(action)
        return action

    def train(self, next_state: Any, reward: float) -> None:
        """Nothing to learn."""

    def end_episode(self, state: Any, reward: float) -> None:
        """Start the next episode from the first step."""
        self._step = 0
