"""Luby: learn to play the Luby sequence (DACBench's Luby benchmark).

From Biedenkapp et al., "Dynamic Algorithm Configuration: Foundation of a New
Meta-Algorithmic Framework" (ECAI 2020), as defined in DACBench
(``dacbench/envs/luby.py``, ``dacbench/benchmarks/luby_benchmark.py``):

* the action is ``log2`` of the next Luby number, ``Discrete(log2(cutoff) + 1)``
  (0..6 for the default ``cutoff`` 64, DACBench's ``sequence_element`` 0..6);
* an instance is ``[start_shift, sticky_shift]``; the target of step ``k``
  (1-based) is ``log2 luby(max(1, round(k + start_shift + k * sticky_shift)))``;
* the reward is 0 for hitting the target and -1 otherwise (range [-1, 0]);
* the observation is the last ``hist_length`` actions (``-1`` while not yet taken)
  followed by the index of the step just taken, ``Box(-1, 2 * max luby)`` float32;
  as in DACBench, the observation returned with the last step of an episode is
  the one from before that step;
* episodes are truncated after ``min_steps`` steps (default 8): DACBench sets
  ``n_steps = min_steps`` on reset, ``cutoff`` only bounds the sequence.

Instance sets are generated from the seed, ``n_instances`` of them (default 100).
``instance_distribution="truncnorm"`` (default) draws like DACBench's
``instance_sets/luby/Sample Luby Instances.ipynb``, the parameters of
``luby_test.csv``: start_shift ~ truncnorm(a=-0.5, b=3.5, loc=8, scale=16), i.e.
in [0, 64], sticky_shift ~ truncnorm(a=-3.3666667, b=3.3666667, loc=0,
scale=0.15). ``"plain"`` is DACBench's default set (``luby_default.csv``): the
one instance ``[0, 0]``, the unshifted sequence. An explicit ``instance_set``
overrides generation.
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

__all__ = ["LubyEnv", "LubyBenchmark", "LUBY_DEFAULTS", "luby", "generate_luby_instances"]

LUBY_DEFAULTS: dict[str, Any] = {
    "cutoff": 64,
    "hist_length": 5,
    "min_steps": 8,
    "n_instances": 100,
    "instance_distribution": "truncnorm",
    "instance_order": "sequential",
    "instance_set": None,
}
DISTRIBUTIONS = ("truncnorm", "plain")


def luby(i: int) -> int:
    """The ``i``-th (1-based) term of the Luby sequence 1, 1, 2, 1, 1, 2, 4, 1, ...

    ``luby(2**k - 1) = 2**(k-1)``; otherwise ``luby(i) = luby(i - 2**(k-1) + 1)``
    for ``2**(k-1) <= i < 2**k - 1``.
    """
    if i < 1:
        raise ValueError(f"the Luby sequence starts at 1, not {i}")
    while True:
        k = i.bit_length()
        if i == (1 << k) - 1:
            return 1 << (k - 1)
        i -= (1 << (k - 1)) - 1


def generate_luby_instances(seed: int | None, n_instances: int, distribution: str) -> dict[int, list[float]]:
    """Draw ``n_instances`` instances ``[start_shift, sticky_shift]`` from ``default_rng(seed)``.

    See the module docstring for the distributions and where they come from.
    """
    if distribution == "plain":
        return {0: [0.0, 0.0]}
    rng = np.random.default_rng(seed)
    starts = truncated_normal(rng, -0.5, 3.5, 8.0, 16.0, n_instances)
    sticky = truncated_normal(rng, -3.3666667, 3.3666667, 0.0, 0.15, n_instances)
    return {i: [float(starts[i]), float(sticky[i])] for i in range(n_instances)}


def luby_config(
    cutoff: Any,
    hist_length: Any,
    min_steps: Any,
    n_instances: Any,
    instance_distribution: Any,
    instance_order: Any,
    instance_set: Any,
) -> dict[str, Any]:
    """Validate a Luby config and return it JSON-plain; raises ValueError."""
    config = {
        "cutoff": check_int("cutoff", cutoff, 1),
        "hist_length": check_int("hist_length", hist_length, 1),
        "min_steps": check_int("min_steps", min_steps, 1),
        "n_instances": check_int("n_instances", n_instances, 1),
        "instance_distribution": check_choice("instance_distribution", instance_distribution, DISTRIBUTIONS),
        "instance_order": check_choice("instance_order", instance_order, ("sequential", "random")),
        "instance_set": None,
    }
    if config["min_steps"] > config["cutoff"]:
        raise ValueError(f"min_steps ({min_steps}) must not exceed cutoff ({cutoff})")
    if instance_set is not None:
        config["instance_set"] = plain_instance_set(instance_set, normalize_instance_set(instance_set, 2))
    return config


class LubyEnv(DACEnv):
    """DACBench's Luby environment as a gymnasium 1.x ``Env`` (see the module docstring).

    ``info`` carries ``instance_id`` and ``step``; rewards are python floats.
    """

    def __init__(
        self,
        cutoff: int = 64,
        hist_length: int = 5,
        min_steps: int = 8,
        n_instances: int = 100,
        instance_distribution: str = "truncnorm",
        instance_order: str = "sequential",
        instance_set: Any = None,
        seed: int | None = 0,
    ) -> None:
        config = luby_config(
            cutoff, hist_length, min_steps, n_instances, instance_distribution, instance_order, instance_set
        )
        self.cutoff: int = config["cutoff"]
        self.hist_length: int = config["hist_length"]
        self.min_steps: int = config["min_steps"]
        self.action_space = spaces.Discrete(self.cutoff.bit_length())  # floor(log2(cutoff)) + 1
        # DACBench: high = 2 ** max(log2 luby(i) + 1) over i = 1 .. 2 * cutoff + 1
        biggest = 1 << (((2 * self.cutoff + 1) + 1).bit_length() - 2)
        self.observation_space = spaces.Box(
            -1.0, float(2 * biggest), shape=(self.hist_length + 1,), dtype=np.float32
        )
        if instance_set is not None:
            instances = normalize_instance_set(instance_set, 2)
        else:
            instances = generate_luby_instances(seed, config["n_instances"], config["instance_distribution"])
        super().__init__(instances, config["instance_order"], seed)
        self.start_shift = 0.0
        self.sticky_shift = 0.0
        self.target = 0
        self._state = -np.ones(self.hist_length + 1)

    def target_at(self, k: int) -> int:
        """The correct action (log2 of the Luby number) at step ``k`` (1-based) of this instance."""
        position = k + self.start_shift + k * self.sticky_shift
        return luby(max(1, int(round(position)))).bit_length() - 1

    def _start_episode(self) -> np.ndarray:
        assert self.instance is not None
        self.start_shift, self.sticky_shift = self.instance
        self.target = self.target_at(1)
        self._state = -np.ones(self.hist_length + 1)
        return self._state.astype(np.float32)

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Play one sequence element; returns ``(obs, reward, terminated, truncated, info)``."""
        self._require_reset()
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in {self.action_space}")
        act = int(action)
        self.c_step += 1
        truncated = self.c_step >= self.min_steps
        self.episode_over = truncated
        reward = 0.0 if act == self.target else -1.0
        self.target = self.target_at(self.c_step + 1)
        before = self._state.copy()
        if self.c_step <= self.hist_length:
            self._state[self.c_step - 1] = act
        else:
            self._state[:-2] = self._state[1:-1]
            self._state[-2] = act
        self._state[-1] = self.c_step - 1
        obs = before if truncated else self._state
        return obs.astype(np.float32), reward, False, truncated, self._info()


class LubyBenchmark(Benchmark):
    """The Luby benchmark spec: ``LubyBenchmark(min_steps=16).set_seed(1)``.

    Keyword overrides are checked against :data:`LUBY_DEFAULTS`; unknown keys or
    bad values raise :class:`~dacstyle.errors.BenchmarkError`.
    """

    def __init__(self, **config_overrides: Any) -> None:
        config = spec_config("luby", LUBY_DEFAULTS, config_overrides, luby_config)
        super().__init__(name="luby", entry_point="dacstyle.benchmarks.luby:LubyEnv", config=config)
