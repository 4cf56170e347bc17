"""HPOBench-style objectives: a configuration space, a fidelity space, an objective function.

:class:`DigitsForestObjective` tunes a random forest on scikit-learn's bundled
digits data, as HPOBench's ``rf`` benchmarks do: ``objective_function(configuration,
fidelity)`` returns ``{"function_value": validation error, "cost": fit seconds,
"info": {...}}``; the fidelities are the number of trees and the fraction of the
training data used. :func:`DigitsForestBenchmark` is its spec for ``RemoteRunner``
(the proxy is callable, like an HPOBench benchmark). :func:`branin` is a plain
function objective, served as itself with ``Benchmark(..., factory=False)``.
Needs ConfigSpace: ``pip install "dacstyle[hpo]"``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np

from ..errors import BenchmarkError, MissingDependencyError
from .spec import Benchmark

try:
    import ConfigSpace as CS
except ImportError as exc:  # pragma: no cover - exercised where ConfigSpace is missing
    raise MissingDependencyError('dacstyle.benchmarks.hpo needs ConfigSpace: pip install "dacstyle[hpo]"') from exc

__all__ = ["DigitsForestObjective", "DigitsForestBenchmark", "OBJECTIVE_METHODS", "branin",
           "branin_configuration_space"]

OBJECTIVE_METHODS = ["__call__", "objective_function", "objective_function_test", "get_configuration_space",
                     "get_fidelity_space", "get_meta_information"]
"""What an HPOBench-style objective serves to the host."""


def _checked(space: CS.ConfigurationSpace, values: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    """``values`` (a Configuration or a dict, defaults filled in) checked against ``space``."""
    given = dict(values or {})
    full = {**dict(space.get_default_configuration()), **given} if what == "fidelity" else given
    try:
        return dict(CS.Configuration(space, values=full))
    except (ValueError, KeyError, TypeError) as exc:
        raise BenchmarkError(f"invalid {what} {given}: {str(exc).splitlines()[0]}") from exc


class DigitsForestObjective:
    """A random forest on the digits data: validation error by hyperparameters and fidelity.

    ``seed`` fixes the train/validation/test split and the forest's randomness,
    so the same configuration and fidelity give the same ``function_value``
    wherever the objective runs.
    """

    def __init__(self, seed: int = 0) -> None:
        from sklearn.datasets import load_digits

        self.seed = seed
        data, target = load_digits(return_X_y=True)
        order = np.random.default_rng(seed).permutation(len(target))
        train, valid = int(0.6 * len(order)), int(0.8 * len(order))
        self._splits = {
            "train": (data[order[:train]], target[order[:train]]),
            "valid": (data[order[train:valid]], target[order[train:valid]]),
            "test": (data[order[valid:]], target[order[valid:]]),
        }

    @staticmethod
    def get_configuration_space(seed: int | None = None) -> CS.ConfigurationSpace:
        """The forest's hyperparameters (HPOBench's ``rf`` space, scaled to this data)."""
        return CS.ConfigurationSpace(name="digits-forest", seed=seed, space={
            "max_depth": CS.Integer("max_depth", (1, 50), log=True, default=50),
            "min_samples_split": CS.Integer("min_samples_split", (2, 128), log=True, default=2),
            "min_samples_leaf": CS.Integer("min_samples_leaf", (1, 20), default=1),
            "max_features": CS.Float("max_features", (0.05, 1.0), default=0.5),
        })

    @staticmethod
    def get_fidelity_space(seed: int | None = None) -> CS.ConfigurationSpace:
        """The fidelities: ``n_estimators`` (trees) and ``subsample`` (fraction of the training data)."""
        return CS.ConfigurationSpace(name="digits-forest-fidelity", seed=seed, space={
            "n_estimators": CS.Integer("n_estimators", (1, 128), log=True, default=128),
            "subsample": CS.Float("subsample", (0.1, 1.0), default=1.0),
        })

    def objective_function(self, configuration: Mapping[str, Any], fidelity: Mapping[str, Any] | None = None,
                           rng: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """Train on (a fraction of) the training split, score on the validation split.

        Returns ``function_value`` (1 - accuracy), ``cost`` (seconds to fit) and ``info``.
        """
        return self._evaluate(configuration, fidelity, rng, "train", "valid")

    def objective_function_test(self, configuration: Mapping[str, Any], fidelity: Mapping[str, Any] | None = None,
                                rng: int | None = None, **kwargs: Any) -> dict[str, Any]:
        """Train on the training and validation splits, score on the held-out test split."""
        return self._evaluate(configuration, fidelity, rng, "train+valid", "test")

    __call__ = objective_function

    def _evaluate(self, configuration: Mapping[str, Any], fidelity: Mapping[str, Any] | None, rng: int | None,
                  train: str, score: str) -> dict[str, Any]:
        from sklearn.ensemble import RandomForestClassifier

        config = _checked(self.get_configuration_space(), configuration, "configuration")
        fid = _checked(self.get_fidelity_space(), fidelity, "fidelity")
        parts = [self._splits[name] for name in train.split("+")]
        data, target = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        size = max(10, int(round(fid["subsample"] * len(target))))
        model = RandomForestClassifier(n_estimators=int(fid["n_estimators"]), max_depth=int(config["max_depth"]),
                                       min_samples_split=int(config["min_samples_split"]),
                                       min_samples_leaf=int(config["min_samples_leaf"]),
                                       max_features=float(config["max_features"]),
                                       random_state=self.seed if rng is None else rng, n_jobs=1)
        started = time.perf_counter()
        model.fit(data[:size], target[:size])
        cost = time.perf_counter() - started
        accuracy = float(model.score(*self._splits[score]))
        return {"function_value": 1.0 - accuracy, "cost": cost,
                "info": {"accuracy": accuracy, "fidelity": fid, "train_size": size, "scored_on": score}}

    def get_meta_information(self) -> dict[str, Any]:
        """Name, data and references of the objective."""
        return {"name": "Random forest on the digits data", "data": "sklearn.datasets.load_digits (1797 x 64)",
                "splits": "60/20/20 train/valid/test, shuffled by seed", "seed": self.seed,
                "references": ["Eggensperger et al., HPOBench, NeurIPS Datasets and Benchmarks 2021"]}


def DigitsForestBenchmark(seed: int = 0) -> Benchmark:  # noqa: N802 - a spec factory named like the others
    """The spec serving :class:`DigitsForestObjective`; ``runner.get_object()`` is then callable."""
    return Benchmark(name="digits-forest", entry_point="dacstyle.benchmarks.hpo:DigitsForestObjective",
                     methods=list(OBJECTIVE_METHODS)).set_seed(seed)


def branin_configuration_space(seed: int | None = None) -> CS.ConfigurationSpace:
    """Branin's domain: ``x1`` in [-5, 10], ``x2`` in [0, 15]."""
    return CS.ConfigurationSpace(name="branin", seed=seed, space={"x1": (-5.0, 10.0), "x2": (0.0, 15.0)})


def branin(configuration: Mapping[str, float], fidelity: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The Branin function as an HPOBench-style result (minimum 0.397887 at three points)."""
    x1, x2 = float(configuration["x1"]), float(configuration["x2"])
    value = (x2 - 5.1 / (4 * math.pi**2) * x1**2 + 5 / math.pi * x1 - 6) ** 2 \
        + 10 * (1 - 1 / (8 * math.pi)) * math.cos(x1) + 10
    return {"function_value": value, "cost": 0.0, "info": {"fidelity": dict(fidelity or {})}}
