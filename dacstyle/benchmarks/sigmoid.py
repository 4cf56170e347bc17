"""Sigmoid: trace sigmoid curves with discrete actions (DACBench's Sigmoid benchmark).

From Biedenkapp et al., "Dynamic Algorithm Configuration: Foundation of a New
Meta-Algorithmic Framework" (ECAI 2020), as defined in DACBench
(``dacbench/envs/sigmoid.py``, ``dacbench/benchmarks/sigmoid_benchmark.py``):

* an instance for ``n`` action dimensions is ``[shift_1..shift_n, slope_1..slope_n]``;
* the action is a ``MultiDiscrete(action_values)`` vector (default ``[5, 10]``);
* step ``t`` (1-based, counted before the reward) earns
  ``prod_i (1 - |sigmoid(t; slope_i, shift_i) - a_i / (action_values[i] - 1)|)``
  with ``sigmoid(t; s, h) = 1 / (1 + exp(-s (t - h)))``, a reward in [0, 1];
* the observation is ``[cutoff - t, shift_1, slope_1, ..., shift_n, slope_n,
  a_1..a_n]`` (float32, the previous action, ``-1`` before the first step;
  bounded by the instance set's range where DACBench declares +-inf);
* an episode is truncated (never terminated) after ``cutoff`` steps (default 10).

Instance sets are generated from the seed, ``n_instances`` of them (default 100),
instead of read from DACBench's CSV files. ``instance_distribution="truncnorm"``
(default) draws like DACBench's ``instance_sets/sigmoid/Sample Sigmoid
Instances.ipynb``, whose parameters match ``sigmoid_2D3M_train.csv``: shift ~
truncnorm(a=-5, b=5, loc=4, scale=2), slope ~ truncnorm(a=-5, b=5, loc=2, scale=4).
``"paper"`` draws like ``SigmoidBenchmark.get_benchmark``'s sampler: shift ~
N(cutoff/2, cutoff/4), slope ~ ±U(0, 1) * slope_multiplier. An explicit
``instance_set`` overrides generation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from ._dac import (
    DACEnv,
    check_choice,
    check_int,
    normalize_instance_set,
    plain_instance_set,
    spec_config,
    truncated_normal,
)
from .spec import Benchmark

__all__ = ["SigmoidEnv", "SigmoidBenchmark", "SIGMOID_DEFAULTS", "sigmoid", "generate_sigmoid_instances"]

SIGMOID_DEFAULTS: dict[str, Any] = {
    "action_values": [5, 10],
    "cutoff": 10,
    "slope_multiplier": 2.0,
    "n_instances": 100,
    "instance_distribution": "truncnorm",
    "instance_order": "sequential",
    "instance_set": None,
}
DISTRIBUTIONS = ("truncnorm", "paper")


def sigmoid(x: float | np.ndarray, slope: float | np.ndarray, shift: float | np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-slope * (x - shift)))``, computed without overflow.

    Written as ``(1 + tanh(z / 2)) / 2``, which is the same function.
    """
    z = np.asarray(slope, dtype=np.float64) * (np.asarray(x, dtype=np.float64) - shift)
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def generate_sigmoid_instances(
    seed: int | None, n_instances: int, n_dims: int, cutoff: int, slope_multiplier: float, distribution: str
) -> dict[int, list[float]]:
    """Draw ``n_instances`` instances ``[shifts..., slopes...]`` from ``default_rng(seed)``.

    See the module docstring for the two distributions and where they come from.
    """
    rng = np.random.default_rng(seed)
    size = n_instances * n_dims
    if distribution == "truncnorm":
        shifts = truncated_normal(rng, -5.0, 5.0, 4.0, 2.0, size)
        slopes = truncated_normal(rng, -5.0, 5.0, 2.0, 4.0, size)
    else:
        shifts = rng.normal(cutoff / 2, cutoff / 4, size)
        slopes = rng.choice([-1.0, 1.0], size) * rng.uniform(size=size) * slope_multiplier
    shifts, slopes = shifts.reshape(n_instances, n_dims), slopes.reshape(n_instances, n_dims)
    return {i: [float(v) for v in (*shifts[i], *slopes[i])] for i in range(n_instances)}


def sigmoid_config(
    action_values: Any,
    cutoff: Any,
    slope_multiplier: Any,
    n_instances: Any,
    instance_distribution: Any,
    instance_order: Any,
    instance_set: Any,
) -> dict[str, Any]:
    """Validate a Sigmoid config and return it JSON-plain; raises ValueError."""
    if isinstance(action_values, (str, bytes)) or not hasattr(action_values, "__len__") or not len(action_values):
        raise ValueError(f"action_values must be a non-empty list of ints, not {action_values!r}")
    values = [check_int("each of action_values", v, 2) for v in action_values]
    if isinstance(slope_multiplier, bool) or not isinstance(slope_multiplier, (int, float)) or slope_multiplier <= 0:
        raise ValueError(f"slope_multiplier must be a positive number, not {slope_multiplier!r}")
    config = {
        "action_values": values,
        "cutoff": check_int("cutoff", cutoff, 1),
        "slope_multiplier": float(slope_multiplier),
        "n_instances": check_int("n_instances", n_instances, 1),
        "instance_distribution": check_choice("instance_distribution", instance_distribution, DISTRIBUTIONS),
        "instance_order": check_choice("instance_order", instance_order, ("sequential", "random")),
        "instance_set": None,
    }
    if instance_set is not None:
        normalized = normalize_instance_set(instance_set, 2 * len(values))
        config["instance_set"] = plain_instance_set(instance_set, normalized)
    return config


class SigmoidEnv(DACEnv):
    """DACBench's Sigmoid environment as a gymnasium 1.x ``Env`` (see the module docstring).

    ``info`` carries ``instance_id`` and ``step``; rewards are python floats.
    """

    def __init__(
        self,
        action_values: list[int] | tuple[int, ...] = (5, 10),
        cutoff: int = 10,
        slope_multiplier: float = 2.0,
        n_instances: int = 100,
        instance_distribution: str = "truncnorm",
        instance_order: str = "sequential",
        instance_set: Any = None,
        seed: int | None = 0,
    ) -> None:
        config = sigmoid_config(
            action_values, cutoff, slope_multiplier, n_instances, instance_distribution, instance_order, instance_set
        )
        self.action_values: list[int] = config["action_values"]
        self.n_actions = len(self.action_values)
        self.cutoff: int = config["cutoff"]
        self.slope_multiplier: float = config["slope_multiplier"]
        self.action_space = spaces.MultiDiscrete(self.action_values)
        if instance_set is not None:
            instances = normalize_instance_set(instance_set, 2 * self.n_actions)
        else:
            instances = generate_sigmoid_instances(
                seed, config["n_instances"], self.n_actions, self.cutoff, self.slope_multiplier,
                config["instance_distribution"],
            )
        self.observation_space = self._observation_space(instances)
        super().__init__(instances, config["instance_order"], seed)
        self.shifts = np.zeros(self.n_actions)
        self.slopes = np.zeros(self.n_actions)
        self.last_action: np.ndarray | None = None

    def _observation_space(self, instances: dict[int, list[float]]) -> spaces.Box:
        # DACBench declares (-inf, inf); finite bounds (budget, the instance set's
        # range rounded outwards, -1..n-1 for actions) keep check_env quiet.
        values = [v for instance in instances.values() for v in instance]
        lo = float(np.floor(min(values)))
        hi = max(lo + 1.0, float(np.ceil(max(values))))
        low = [0.0, *([lo] * 2 * self.n_actions), *([-1.0] * self.n_actions)]
        high = [float(self.cutoff), *([hi] * 2 * self.n_actions), *(v - 1.0 for v in self.action_values)]
        return spaces.Box(np.array(low, dtype=np.float32), np.array(high, dtype=np.float32), dtype=np.float32)

    def _start_episode(self) -> np.ndarray:
        assert self.instance is not None
        self.shifts = np.array(self.instance[: self.n_actions], dtype=np.float64)
        self.slopes = np.array(self.instance[self.n_actions :], dtype=np.float64)
        self.last_action = None
        return self._observation()

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Take one action vector; returns ``(obs, reward, terminated, truncated, info)``."""
        self._require_reset()
        act = np.asarray(action)
        if not self.action_space.contains(act):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        self.last_action = act.astype(np.int64).reshape(self.n_actions)
        self.c_step += 1
        reward = self.reward(self.c_step, self.last_action)
        truncated = self.c_step >= self.cutoff
        self.episode_over = truncated
        return self._observation(), reward, False, truncated, self._info()

    def reward(self, t: float, action: np.ndarray) -> float:
        """The reward of ``action`` at step ``t`` on the current instance."""
        targets = sigmoid(t, self.slopes, self.shifts)
        chosen = np.asarray(action, dtype=np.float64) / (np.asarray(self.action_values, dtype=np.float64) - 1)
        value = float(np.prod(1.0 - np.abs(targets - chosen)))
        return min(1.0, max(0.0, value))

    def _observation(self) -> np.ndarray:
        pairs = np.column_stack([self.shifts, self.slopes]).reshape(-1)
        actions = -np.ones(self.n_actions) if self.last_action is None else self.last_action
        obs = np.concatenate([[self.cutoff - self.c_step], pairs, actions])
        return obs.astype(np.float32)


class SigmoidBenchmark(Benchmark):
    """The Sigmoid benchmark spec: ``SigmoidBenchmark(cutoff=20).set_seed(1)``.

    Keyword overrides are checked against :data:`SIGMOID_DEFAULTS`; unknown keys or
    bad values raise :class:`~dacstyle.errors.BenchmarkError`.
    """

    def __init__(self, **config_overrides: Any) -> None:
        config = spec_config("sigmoid", SIGMOID_DEFAULTS, config_overrides, sigmoid_config)
        super().__init__(name="sigmoid", entry_point="dacstyle.benchmarks.sigmoid:SigmoidEnv", config=config)
