"""The episode loop of DACBench's ``run_benchmark``, on any gymnasium env.

It uses only the public gymnasium API (``reset``/``step``/spaces), so the same
loop drives a local env and a remote env proxy served from a container.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Callable

import gymnasium as gym

from .base import as_agent

__all__ = ["run_episodes", "iter_episodes", "StepHook", "ResetHook"]

StepHook = Callable[[int, int, Any, float, bool, bool, dict, Any], None]
"""``on_step(episode, t, action, reward, terminated, truncated, info, observation)``; ``t`` counts from 0.

``observation`` is the one the step returned (the agent's next state).
"""

ResetHook = Callable[[int, Any, dict], None]
"""``on_reset(episode, observation, info)``: called after each episode's reset."""


def run_episodes(
    env: gym.Env,
    agent: Any,
    number_of_episodes: int,
    seed: int | None = None,
    on_step: StepHook | None = None,
    on_reset: ResetHook | None = None,
) -> list[dict[str, Any]]:
    """Run ``agent`` for ``number_of_episodes`` episodes; one result dict per episode.

    ``seed`` is passed to the first ``reset`` only (later resets continue the
    env's own sequence). Each dict has ``episode``, ``return``, ``length``,
    ``wall_time_s`` and ``seed`` (the seed given to that episode's reset, or None).
    ``agent`` is anything :func:`~dacstyle.agents.as_agent` accepts.
    """
    return list(iter_episodes(env, agent, number_of_episodes, seed=seed, on_step=on_step, on_reset=on_reset))


def iter_episodes(
    env: gym.Env,
    agent: Any,
    number_of_episodes: int,
    seed: int | None = None,
    on_step: StepHook | None = None,
    on_reset: ResetHook | None = None,
) -> Iterator[dict[str, Any]]:
    """Like :func:`run_episodes`, but yield each episode's dict as soon as it ends.

    For callers that log per episode while the run goes on (the arguments are
    checked when iteration starts).
    """
    if isinstance(number_of_episodes, bool) or not isinstance(number_of_episodes, int) or number_of_episodes < 0:
        raise ValueError(f"number_of_episodes must be a non-negative int, not {number_of_episodes!r}")
    actor = as_agent(agent)
    for episode in range(number_of_episodes):
        episode_seed = seed if episode == 0 else None
        started = time.perf_counter()
        state, reset_info = env.reset(seed=episode_seed)
        if on_reset is not None:
            on_reset(episode, state, reset_info)
        reward: Any = 0
        total, t, done = 0.0, 0, False
        while not done:
            action = actor.act(state, reward)
            next_state, reward, terminated, truncated, info = env.step(action)
            actor.train(next_state, reward)
            if on_step is not None:
                on_step(episode, t, action, float(reward), bool(terminated), bool(truncated), info, next_state)
            state = next_state
            total += float(reward)
            t += 1
            done = bool(terminated or truncated)
        actor.end_episode(state, reward)
        yield {
            "episode": episode,
            "return": total,
            "length": t,
            "wall_time_s": time.perf_counter() - started,
            "seed": episode_seed,
        }
