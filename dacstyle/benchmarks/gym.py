"""Serve any gymnasium environment: by registry id, or by a ``"module:callable"``.

``GymnasiumBenchmark("CartPole-v1", max_episode_steps=100)`` builds
``gymnasium.make(id="CartPole-v1", max_episode_steps=100)`` wherever the spec is
built (here, or inside the container, where the environment's package must be
installed). Gymnasium environments take no seed in their constructor: the seed
set with :meth:`~dacstyle.benchmarks.Benchmark.set_seed` is used by the runner
at the first ``reset(seed=...)`` (``seed_key`` is empty).
"""

from __future__ import annotations

from typing import Any

from ..errors import BenchmarkError
from .spec import Benchmark

__all__ = ["GymnasiumBenchmark"]


class GymnasiumBenchmark(Benchmark):
    """A spec for a gymnasium env id (``"CartPole-v1"``) or entry point (``"pkg.mod:make_env"``).

    ``kwargs`` go to ``gymnasium.make`` (after ``id``) or to the callable; an id
    with a module prefix such as ``"ale_py:ALE/Pong-v5"`` stays a gymnasium id.
    """

    def __init__(self, env: str, **kwargs: Any) -> None:
        if not isinstance(env, str) or not env.strip():
            raise BenchmarkError(f"env must be a gymnasium id or 'module:callable', not {env!r}")
        module, _, attr = env.partition(":")
        if module and attr and all(part.isidentifier() for part in attr.split(".")):
            entry_point, config = env, dict(kwargs)
        else:
            if "id" in kwargs:
                raise BenchmarkError("give the environment id as the first argument, not as id=")
            entry_point, config = "gymnasium:make", {"id": env, **kwargs}
        super().__init__(name=env, entry_point=entry_point, config=config, seed_key="")
