"""Scores from scikit-learn, one function per metric name.

Each takes the true values and a checked prediction, both aligned to the same
ids: for ``accuracy`` label lists; for ``roc_auc`` a 0/1 vector and
probabilities; for ``rmse``/``rmsle`` float vectors; for ``log_loss`` one-hot
truth and a probability matrix whose columns follow ``target_columns``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

__all__ = ["score", "medal_for", "SCORERS"]


def _accuracy(truth: Sequence[str], pred: Sequence[str]) -> float:
    return float(skm.accuracy_score(np.asarray(truth, dtype=object), np.asarray(pred, dtype=object)))


def _roc_auc(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(skm.roc_auc_score(truth[:, 0], pred[:, 0]))


def _rmse(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(skm.mean_squared_error(truth[:, 0], pred[:, 0])))


def _rmsle(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(skm.mean_squared_log_error(truth[:, 0], pred[:, 0])))


def _log_loss(truth: np.ndarray, pred: np.ndarray) -> float:
    # rows were checked to sum to 1 within a tolerance; renormalise exactly for sklearn
    probs = pred / pred.sum(axis=1, keepdims=True)
    labels = np.argmax(truth, axis=1)
    return float(skm.log_loss(labels, probs, labels=list(range(truth.shape[1]))))


SCORERS: dict[str, Callable[[Any, Any], float]] = {
    "accuracy": _accuracy,
    "roc_auc": _roc_auc,
    "rmse": _rmse,
    "rmsle": _rmsle,
    "log_loss": _log_loss,
}


def score(metric: str, truth: Any, pred: Any) -> float:
    """The metric's value for aligned truth and prediction."""
    return SCORERS[metric](truth, pred)


def medal_for(value: float, medals: dict[str, float] | None, higher_is_better: bool) -> str | None:
    """``gold``/``silver``/``bronze`` for a score, or None (also when no thresholds)."""
    if not medals:
        return None
    for name in ("gold", "silver", "bronze"):
        threshold = medals[name]
        if (value >= threshold) if higher_is_better else (value <= threshold):
            return name
    return None
