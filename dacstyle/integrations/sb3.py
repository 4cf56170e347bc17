"""A gymnasium VectorEnv (``runner.make_vector_env``) seen as stable-baselines3's ``VecEnv``.

Needs the optional extra: ``pip install "dacstyle[sb3]"`` (importing dacstyle alone never
imports stable-baselines3 or torch). SB3 resets an episode in the step that ends it, so
the vector env must autoreset in the same step::

    vec = runner.make_vector_env(8, autoreset_mode="SameStep")
    model = PPO("MlpPolicy", as_sb3_vec_env(vec))

A step is then one call of the vector env (one round trip per server), and what SB3 sees
equals a ``DummyVecEnv`` over the same local envs bit for bit: float32 rewards, ``dones``,
one info dict per env with ``TimeLimit.truncated`` and, at an episode's end,
``terminal_observation``; the reset's info goes to ``reset_infos``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from dacstyle.errors import BenchmarkError, MissingDependencyError

try:
    from stable_baselines3.common.env_util import is_wrapped
    from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvIndices, VecEnvObs, VecEnvStepReturn
except ImportError as exc:  # the extra is not installed
    raise MissingDependencyError('as_sb3_vec_env needs stable-baselines3: pip install "dacstyle[sb3]"') from exc

__all__ = ["SB3VecEnv", "as_sb3_vec_env"]

_FINAL = ("final_obs", "final_info")
"""The keys a SameStep vector env adds to ``infos`` at an episode's end."""


def as_sb3_vec_env(vector_env: VectorEnv) -> SB3VecEnv:
    """``vector_env`` (gymnasium 1.x, ``autoreset_mode="SameStep"``) as stable-baselines3's VecEnv.

    Refuses another autoreset mode: SB3 expects the next episode's first observation in the step that ends one.
    """
    if not isinstance(vector_env, VectorEnv):
        raise BenchmarkError(f"as_sb3_vec_env takes a gymnasium VectorEnv (runner.make_vector_env), "
                             f"not {type(vector_env).__name__}")
    mode = vector_env.metadata.get("autoreset_mode")
    if mode != AutoresetMode.SAME_STEP:
        raise BenchmarkError(f"stable-baselines3 resets an episode in the step that ends it, but {vector_env!r} "
                             f"autoresets in mode {getattr(mode, 'value', mode)!r}: make it with "
                             f'runner.make_vector_env(n, autoreset_mode="SameStep")')
    return SB3VecEnv(vector_env)


def unbatch_info(infos: dict[str, Any], index: int, skip: Sequence[str] = ()) -> dict[str, Any]:
    """Sub-env ``index``'s own info dict out of gymnasium's batched ``infos`` (keys with ``_key`` masks).

    Numbers come back as Python numbers, arrays as copies of their rows, other values as they are.
    """
    info: dict[str, Any] = {}
    for key, value in infos.items():
        mask = infos.get(f"_{key}")
        if key in skip or mask is None or not mask[index]:
            continue  # a mask itself (no "__key"), a key of other sub-envs only, or one to leave out
        if isinstance(value, dict):
            info[key] = unbatch_info(value, index)
        elif value.dtype == object:
            info[key] = value[index]
        elif value.ndim == 1:
            info[key] = value[index].item()
        else:
            info[key] = value[index].copy()
    return info


class SB3VecEnv(VecEnv):
    """stable-baselines3's VecEnv over a gymnasium VectorEnv that autoresets in the same step."""

    def __init__(self, vector_env: VectorEnv) -> None:
        self.vector_env = vector_env
        self._actions: Any = None
        super().__init__(vector_env.num_envs, vector_env.single_observation_space, vector_env.single_action_space)
        self.metadata = dict(vector_env.metadata)

    def reset(self) -> VecEnvObs:
        """Reset every sub-env with the seeds and options set since the last reset (then forget them)."""
        options = self._options[0] or None
        if any(other != self._options[0] for other in self._options):
            raise ValueError("a gymnasium VectorEnv resets its sub-environments with one options dict: "
                             "call set_options(dict), not a list of different ones")
        observations, infos = self.vector_env.reset(seed=list(self._seeds), options=options)
        self.reset_infos = [unbatch_info(infos, i) for i in range(self.num_envs)]
        self._reset_seeds()
        self._reset_options()
        return observations

    def step_async(self, actions: np.ndarray) -> None:
        """Keep the actions for :meth:`step_wait` (the step is one call of the vector env)."""
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Step every sub-env; one that ends an episode is already reset, its last observation in the info."""
        observations, rewards, terminations, truncations, infos = self.vector_env.step(self._actions)
        dones = terminations | truncations
        step_infos = []
        for i in range(self.num_envs):
            if dones[i]:
                info = unbatch_info(infos["final_info"], i)
                self.reset_infos[i] = unbatch_info(infos, i, skip=_FINAL)
            else:
                info = unbatch_info(infos, i)
            info["TimeLimit.truncated"] = bool(truncations[i] and not terminations[i])
            if dones[i]:
                info["terminal_observation"] = infos["final_obs"][i]
            step_infos.append(info)
        return observations, rewards.astype(np.float32), dones, step_infos

    def close(self) -> None:
        """Close the vector env (and so its sub-envs and any servers it started)."""
        self.vector_env.close()

    def get_images(self) -> Sequence[np.ndarray | None]:
        """Each sub-env's ``render()`` (``render_mode="rgb_array"``), for SB3's tiled :meth:`render`."""
        if self.render_mode != "rgb_array":
            return [None] * self.num_envs
        return list(self.vector_env.call("render"))

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """An attribute of the chosen sub-envs (a remote env serves its spec's ``attributes``)."""
        if attr_name == "render_mode":  # known on the host; SB3 asks for it when it wraps an env
            values: Sequence[Any] = [self.vector_env.render_mode] * self.num_envs
        else:
            values = self.vector_env.get_attr(attr_name)
        return [values[i] for i in self._get_indices(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute of the chosen sub-envs to ``value`` (the others are read and written back)."""
        chosen = set(self._get_indices(indices))
        values = [value] * self.num_envs  # a list: one value per sub-env, whatever ``value`` is
        if len(chosen) < self.num_envs:
            current = self.vector_env.get_attr(attr_name)
            values = [value if i in chosen else current[i] for i in range(self.num_envs)]
        self.vector_env.set_attr(attr_name, values)

    def env_method(self, method_name: str, *method_args: Any, indices: VecEnvIndices = None,
                   **method_kwargs: Any) -> list[Any]:
        """Call a method of every sub-env; a vector env cannot call only some, so ``indices`` must name all."""
        chosen = list(self._get_indices(indices))
        if sorted(set(chosen)) != list(range(self.num_envs)):
            raise ValueError(f"a gymnasium VectorEnv calls {method_name!r} on all {self.num_envs} sub-environments, "
                             f"not only on indices {chosen}")
        values = self.vector_env.call(method_name, *method_args, **method_kwargs)
        return [values[i] for i in chosen]

    def env_is_wrapped(self, wrapper_class: type, indices: VecEnvIndices = None) -> list[bool]:
        """Whether the chosen local sub-envs are wrapped in ``wrapper_class``; remote ones have no host-side wrapper."""
        envs = getattr(self.vector_env, "envs", None)  # SyncVectorEnv's local envs
        return [envs is not None and is_wrapped(envs[i], wrapper_class) for i in self._get_indices(indices)]

    def __repr__(self) -> str:
        return f"<SB3VecEnv {self.vector_env!r}>"
