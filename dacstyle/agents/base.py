"""The DACBench agent protocol, and the adapter that accepts plain policies.

An agent is any object with ``act(state, reward) -> action``,
``train(next_state, reward)`` and ``end_episode(state, reward)`` (DACBench's
``AbstractDACBenchAgent``, without needing a base class). :func:`as_agent` also
accepts a callable ``policy(obs) -> action``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

__all__ = ["Agent", "PolicyAgent", "as_agent"]

_METHODS = ("act", "train", "end_episode")


@runtime_checkable
class Agent(Protocol):
    """What the episode loop calls; DACBench agents satisfy it unchanged."""

    def act(self, state: Any, reward: float) -> Any:
        """The action to take in ``state``; ``reward`` is the one just received."""

    def train(self, next_state: Any, reward: float) -> None:
        """Learn from the transition that led to ``next_state``."""

    def end_episode(self, state: Any, reward: float) -> None:
        """Called once when an episode ends, with the final state and reward."""


class PolicyAgent:
    """An agent around ``policy(obs) -> action``; ``train`` and ``end_episode`` do nothing.

    An object that has ``act`` but lacks ``train`` or ``end_episode`` is wrapped too:
    its own methods are used where it has them.
    """

    def __init__(self, policy: Callable[[Any], Any] | Any) -> None:
        self.policy = policy

    def act(self, state: Any, reward: float) -> Any:
        """Ask the policy (or the wrapped object's ``act``) for an action."""
        if callable(getattr(self.policy, "act", None)):
            return self.policy.act(state, reward)
        return self.policy(state)

    def train(self, next_state: Any, reward: float) -> None:
        """Forward to the wrapped object's ``train`` if it has one."""
        method = getattr(self.policy, "train", None)
        if callable(method) and callable(getattr(self.policy, "act", None)):
            method(next_state, reward)

    def end_episode(self, state: Any, reward: float) -> None:
        """Forward to the wrapped object's ``end_episode`` if it has one."""
        method = getattr(self.policy, "end_episode", None)
        if callable(method) and callable(getattr(self.policy, "act", None)):
            method(state, reward)

    def __repr__(self) -> str:
        return f"PolicyAgent({self.policy!r})"


def as_agent(obj: Any) -> Agent:
    """Return ``obj`` if it implements the agent protocol, else wrap it in :class:`PolicyAgent`.

    Raises TypeError for objects that are neither agents nor callables.
    """
    if all(callable(getattr(obj, name, None)) for name in _METHODS):
        return obj  # type: ignore[no-any-return]
    if callable(getattr(obj, "act", None)) or callable(obj):
        return PolicyAgent(obj)
    raise TypeError(
        f"{type(obj).__name__} is not an agent: give an object with act(state, reward), "
        "train(next_state, reward) and end_episode(state, reward), or a callable policy(obs) -> action"
    )
