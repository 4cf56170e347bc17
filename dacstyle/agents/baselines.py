"""Baseline agents from DACBench: random and static actions.

Both can be rebuilt from what a run manifest records: :meth:`describe` gives the
entry point and config (``entry_point(env, **config)`` builds the agent again),
and :meth:`reseed` is what ``RemoteRunner.run`` calls before each run, so that an
unseeded agent takes the benchmark's seed and every run starts from its seed.
"""

from __future__ import annotations

import copy
from typing import Any

import gymnasium as gym
import numpy as np

__all__ = ["RandomAgent", "StaticAgent"]


class RandomAgent:
    """Samples ``env.action_space``; with a seed the actions are reproducible.

    The agent samples from its own copy of the space, so seeding it does not touch
    the environment's space. Without a seed, ``RemoteRunner.run`` seeds it from the
    benchmark's seed.
    """

    def __init__(self, env: gym.Env, seed: int | None = None) -> None:
        self.action_space: gym.Space[Any] = copy.deepcopy(env.action_space)
        self.seed = seed
        self.run_seed = seed
        self.action_space.seed(seed)

    def reseed(self, default: int | None) -> int | None:
        """Restart the action stream from the agent's seed, else from ``default``; returns the seed used."""
        self.run_seed = self.seed if self.seed is not None else default
        self.action_space.seed(self.run_seed)
        return self.run_seed

    def describe(self) -> dict[str, Any]:
        """Entry point, config and seed: ``entry_point(env, **config)`` rebuilds this agent."""
        return {"entry_point": f"{__name__}:RandomAgent", "config": {"seed": self.run_seed}, "seed": self.run_seed}

    def act(self, state: Any, reward: float) -> Any:
        """A uniformly sampled action."""
        return self.action_space.sample()

    def train(self, next_state: Any, reward: float) -> None:
        """Random agents do not learn."""

    def end_episode(self, state: Any, reward: float) -> None:
        """Nothing to do at the end of an episode."""

    def __repr__(self) -> str:
        return f"RandomAgent({self.action_space}, seed={self.seed})"


class StaticAgent:
    """Always plays ``action``, which must belong to ``env.action_space``."""

    def __init__(self, env: gym.Env, action: Any) -> None:
        space = env.action_space
        candidate = action
        if isinstance(space, (gym.spaces.MultiDiscrete, gym.spaces.MultiBinary, gym.spaces.Box)):
            try:  # [1, 2] -> array([1, 2]) so that contains() and the env accept it
                candidate = np.asarray(action, dtype=space.dtype)
            except (TypeError, ValueError):
                pass
        if not space.contains(candidate):
            raise ValueError(f"static action {action!r} is not in the action space {space}")
        self.action = candidate

    def reseed(self, default: int | None) -> None:
        """A static agent draws nothing at random: there is no seed to use."""

    def describe(self) -> dict[str, Any]:
        """Entry point, config and seed: ``entry_point(env, **config)`` rebuilds this agent."""
        action = self.action.tolist() if isinstance(self.action, np.ndarray) else self.action
        if isinstance(action, np.generic):
            action = action.item()
        return {"entry_point": f"{__name__}:StaticAgent", "config": {"action": action}, "seed": None}

    def act(self, state: Any, reward: float) -> Any:
        """The static action."""
        return self.action

    def train(self, next_state: Any, reward: float) -> None:
        """Static agents do not learn."""

    def end_episode(self, state: Any, reward: float) -> None:
        """Nothing to do at the end of an episode."""

    def __repr__(self) -> str:
        return f"StaticAgent({self.action!r})"

