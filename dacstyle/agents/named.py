"""Agents by name: ``random``, ``static`` or a ``module:Class`` entry point built as ``Class(env)``.

What ``dacstyle run --agent`` and ``dacstyle sweep --agent`` accept, and what a
sweep's array task rebuilds from its JSON request: a name travels, never an object.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..errors import BenchmarkError
from .base import as_agent
from .baselines import RandomAgent, StaticAgent

__all__ = ["agent_factory"]


def agent_factory(name: str, seed: int | None = None, action: Any = None) -> Callable[[Any], Any]:
    """A function ``env -> agent`` for the agent ``name``; a bad name fails here, before anything starts.

    ``seed`` seeds the random agent; ``action`` is the static agent's action (default: the lowest one).
    """
    if action is not None and name != "static":
        raise ValueError("--action is for --agent static only")
    if name == "random":
        return lambda env: RandomAgent(env, seed=seed)
    if name == "static":
        return lambda env: StaticAgent(env, lowest_action(env.action_space) if action is None else action)
    if ":" not in name:
        raise BenchmarkError(f"unknown agent {name!r}; use random, static or module:Class")
    from ..benchmarks.spec import load_entry_point

    entry_point = load_entry_point(name)

    def build(env: Any) -> Any:
        try:
            return as_agent(entry_point(env))
        except TypeError as exc:
            raise BenchmarkError(f"--agent {name}: cannot build an agent as {name}(env): {exc}") from exc

    return build


def lowest_action(space: Any) -> Any:
    """The smallest action of ``space`` (a seeded sample for spaces without an order)."""
    from gymnasium import spaces

    if isinstance(space, spaces.Discrete):
        return space.start
    if isinstance(space, spaces.MultiDiscrete):
        return np.array(space.start, dtype=space.dtype)
    if isinstance(space, spaces.Box):
        return np.where(np.isfinite(space.low), space.low, 0).astype(space.dtype)
    space.seed(0)
    return space.sample()
