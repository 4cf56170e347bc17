"""Agents: DACBench's agent protocol, baselines, and the episode loop.

Any object with ``act(state, reward)``, ``train(next_state, reward)`` and
``end_episode(state, reward)`` is an agent (DACBench agents work unchanged); a
plain callable ``policy(obs) -> action`` is adapted by :func:`as_agent`.
``AGENTS`` maps the names the CLI accepts to factories ``factory(env, **kwargs)``;
:func:`agent_factory` turns such a name (or ``module:Class``) into ``env -> agent``.
"""

from __future__ import annotations

from typing import Any, Callable

from .base import Agent, PolicyAgent, as_agent
from .baselines import RandomAgent, StaticAgent
from .loop import StepHook, iter_episodes, run_episodes
from .named import agent_factory

__all__ = [
    "Agent",
    "PolicyAgent",
    "as_agent",
    "RandomAgent",
    "StaticAgent",
    "run_episodes",
    "iter_episodes",
    "StepHook",
    "AGENTS",
    "agent_factory",
]

AGENTS: dict[str, Callable[..., Any]] = {
    "random": RandomAgent,
    "static": StaticAgent,
}
