"""What the DACBench-style environments share: instance sets and their iteration.

A DAC environment is a ``gymnasium.Env`` that runs one *instance* per episode.
Instances are lists of floats; an instance set is either given explicitly
(JSON: a list, or a mapping from integer ids) or generated from the seed.
Like DACBench's ``AbstractEnv`` the set is walked round robin, one instance per
reset ("sequential") or drawn at random ("random", from the env's seeded rng).
Unlike DACBench, whose first reset already advances to the second instance, the
first reset here runs the first instance; ``reset(seed=...)`` restarts the walk
so a seeded reset is reproducible; ``options={"instance_id": k}`` picks one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["DACEnv", "normalize_instance_set", "truncated_normal", "check_int", "check_choice"]

INSTANCE_ORDERS = ("sequential", "random")


def check_int(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an int, or raise ValueError if it is not an int >= minimum.

    Booleans and floats are refused so that a typo in a config fails loudly.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, not {value!r}")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of ``choices``, else raise ValueError."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, not {value!r}")
    return str(value)


def normalize_instance_set(instance_set: Any, width: int) -> dict[int, list[float]]:
    """Turn a JSON instance set into ``{id: [float, ...]}``, each of length ``width``.

    A list gets ids 0..n-1; a mapping keeps its keys (strings of digits are
    accepted, since JSON object keys are strings).
    """
    if isinstance(instance_set, Mapping):
        items = list(instance_set.items())
    elif isinstance(instance_set, (list, tuple, np.ndarray)):
        items = list(enumerate(instance_set))
    else:
        raise ValueError(f"instance_set must be a list or a mapping, not {type(instance_set).__name__}")
    if not items:
        raise ValueError("instance_set is empty")
    result: dict[int, list[float]] = {}
    for key, instance in items:
        try:
            inst_id = int(key)
            values = [float(v) for v in instance]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"instance {key!r} is not a list of numbers: {instance!r}") from exc
        if len(values) != width:
            raise ValueError(f"instance {key!r} has {len(values)} values, expected {width}")
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"instance {key!r} has a non-finite value: {values}")
        if inst_id in result:
            raise ValueError(f"instance id {inst_id} appears twice")
        result[inst_id] = values
    return dict(sorted(result.items()))


def truncated_normal(
    rng: np.random.Generator, a: float, b: float, loc: float, scale: float, size: int
) -> np.ndarray:
    """Draw like ``scipy.stats.truncnorm(a, b, loc, scale).rvs(size)``, by rejection.

    ``a`` and ``b`` are in standard deviations, as in scipy; the draw depends only
    on ``rng``, so a seeded generator gives the same values on every platform.
    """
    out = np.empty(size, dtype=np.float64)
    filled = 0
    while filled < size:
        z = rng.standard_normal(size - filled)
        z = z[(z >= a) & (z <= b)]
        out[filled : filled + z.size] = z
        filled += z.size
    return loc + scale * out


class DACEnv(gym.Env):
    """Base of the DAC environments: instance set, instance walk, step counter.

    Subclasses set ``observation_space``/``action_space`` and implement
    ``_start_episode()`` and ``step()``; ``self.instance``/``self.instance_id``
    hold the current instance and ``self.c_step`` the steps taken in the episode.
    Stepping before a reset or after the episode ended raises ``ResetNeeded``.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, instance_set: Mapping[int, list[float]], instance_order: str, seed: int | None) -> None:
        self.instance_set = dict(instance_set)
        self.instance_ids = list(self.instance_set)
        self.instance_order = check_choice("instance_order", instance_order, INSTANCE_ORDERS)
        self.initial_seed = seed
        self.instance_id: int | None = None
        self.instance: list[float] | None = None
        self.c_step = 0
        self.episode_over = False  # set by step() at truncation/termination
        self._cursor = 0  # index into instance_ids of the next sequential instance
        gym.Env.reset(self, seed=seed)  # seeds self.np_random (used by "random" order)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray | Any, dict[str, Any]]:
        """Start an episode on the next instance; returns ``(observation, info)``.

        ``seed`` re-seeds the env and restarts the instance walk at the first
        instance; ``options={"instance_id": k}`` runs instance ``k``.
        """
        super().reset(seed=seed)
        if seed is not None:
            self._cursor = 0
        options = options or {}
        if options.get("instance_id") is not None:
            inst_id = int(options["instance_id"])
            if inst_id not in self.instance_set:
                raise ValueError(f"no instance with id {inst_id}; ids are {self.instance_ids[:10]}...")
            self._cursor = (self.instance_ids.index(inst_id) + 1) % len(self.instance_ids)
        elif self.instance_order == "random":
            inst_id = self.instance_ids[int(self.np_random.integers(len(self.instance_ids)))]
        else:
            inst_id = self.instance_ids[self._cursor]
            self._cursor = (self._cursor + 1) % len(self.instance_ids)
        self.instance_id = inst_id
        self.instance = list(self.instance_set[inst_id])
        self.c_step = 0
        self.episode_over = False
        return self._start_episode(), self._info()

    def _start_episode(self) -> Any:
        """Set up the episode for ``self.instance`` and return the first observation."""
        raise NotImplementedError

    def _require_reset(self) -> None:
        if self.instance is None:
            raise gym.error.ResetNeeded("call reset() before step()")
        if self.episode_over:
            raise gym.error.ResetNeeded("the episode is over; call reset() before step()")

    def _info(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "step": self.c_step}

    def get_instance_set(self) -> dict[int, list[float]]:
        """The instance set as ``{id: instance}`` (a copy)."""
        return {k: list(v) for k, v in self.instance_set.items()}


def spec_config(
    name: str, defaults: Mapping[str, Any], overrides: Mapping[str, Any], check: Any
) -> dict[str, Any]:
    """The full, validated, JSON-plain config of a DAC benchmark spec.

    ``check(**config)`` validates and returns the normalized config; unknown keys
    and invalid values become :class:`~dacstyle.errors.BenchmarkError`.
    """
    from ..errors import BenchmarkError

    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise BenchmarkError(f"{name}: unknown config keys {unknown}; known keys are {sorted(defaults)}")
    try:
        return check(**{**defaults, **overrides})
    except (TypeError, ValueError) as exc:
        raise BenchmarkError(f"{name}: invalid config: {exc}") from exc


def plain_instance_set(instance_set: Any, normalized: Mapping[int, list[float]]) -> Any:
    """The JSON form of a normalized instance set: a list, or a mapping with string ids."""
    if isinstance(instance_set, Mapping):
        return {str(k): list(v) for k, v in normalized.items()}
    return [list(v) for v in normalized.values()]
