"""A gymnasium VectorEnv whose sub-environments live on one or more servers.

``runner.make_vector_env(n, num_servers=k)`` spreads n sub-environments over k
servers, each hosting a part as gymnasium's own ``SyncVectorEnv``
(:class:`~dacstyle.container.server.objects.VectorHost`). A step is one round trip
per server; the servers are stepped concurrently: the host sends every server its
call, then reads every reply, with no thread (:meth:`RemoteHandle.send`). Seeds,
autoreset, observations, rewards and ``infos`` are exactly those of one
``SyncVectorEnv`` over all n sub-environments: each server returns its
``[index, info]`` merges and the host replays them in index order.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space, concatenate, create_empty_array, iterate

from dacstyle import codec
from dacstyle.benchmarks.spec import Benchmark
from dacstyle.errors import BenchmarkError, CallTimeoutError, ChannelError, ClosedError

from .envfn import ControlLink
from .proxies import RemoteHandle

__all__ = ["RemoteVectorEnv", "split_sizes"]

_SLICEABLE = ("Box", "Discrete", "MultiDiscrete", "MultiBinary")
"""Spaces whose batches gymnasium iterates as plain sequences: a part of a batch is a slice."""


def split_sizes(num_envs: int, num_parts: int) -> list[int]:
    """``num_envs`` spread over ``num_parts`` as evenly as possible, the larger parts first."""
    if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
        raise BenchmarkError(f"num_envs must be a positive int, not {num_envs!r}")
    if isinstance(num_parts, bool) or not isinstance(num_parts, int) or not 1 <= num_parts <= num_envs:
        raise BenchmarkError(f"num_servers must be an int from 1 to num_envs ({num_envs}), not {num_parts!r}")
    base, extra = divmod(num_envs, num_parts)
    return [base + (i < extra) for i in range(num_parts)]


def _check_mask(mask: Any, num_envs: int) -> None:
    """Refuse a ``reset_mask`` as SyncVectorEnv does: a bool array of shape (num_envs,) with a True."""
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"`options['reset_mask']` must be a numpy array, got {type(mask)}")
    if mask.shape != (num_envs,):
        raise ValueError(f"`options['reset_mask']` must have shape `({num_envs},)`, got {mask.shape}")
    if mask.dtype != np.bool_:
        raise TypeError(f"`options['reset_mask']` must have `dtype=np.bool_`, got {mask.dtype}")
    if not mask.any():
        raise ValueError(f"`options['reset_mask']` must contain a boolean array with at least one True value, "
                         f"got reset_mask={mask}")


def _merge_flat_numbers(pairs: list[tuple[int, dict[str, Any]]], num_envs: int) -> dict[str, Any] | None:
    """What gymnasium's ``_add_info`` builds from one info per sub-env, in index order, all with the same keys
    and each key one number type: that key's values in one array, and its mask all True.

    None for anything else (a missing env, nested or array values, mixed types, ``final_obs``,
    names starting with ``_``): those are merged one info at a time, as gymnasium does.
    """
    if [index for index, _ in pairs] != list(range(num_envs)):
        return None
    keys = tuple(pairs[0][1])
    if [tuple(info) for _, info in pairs].count(keys) != num_envs:
        return None
    merged: dict[str, Any] = {}
    for key in keys:
        values = [info[key] for _, info in pairs]
        kinds = {type(value) for value in values}
        kind = kinds.pop()
        if (kinds or type(key) is not str or key.startswith("_") or key == "final_obs"
                or not (kind in (int, float, bool) or issubclass(kind, np.number))):
            return None
        merged[key] = np.array(values, dtype=kind)  # the array _add_info fills one index at a time
        merged[f"_{key}"] = np.ones(num_envs, dtype=np.bool_)
    return merged


@dataclasses.dataclass
class _Part:
    handle: RemoteHandle
    offset: int
    size: int
    observations: Any = None  # the last batch, for a masked reset that skips this part


class RemoteVectorEnv(VectorEnv):
    """n sub-environments on k servers, with the semantics of ``SyncVectorEnv`` over all n."""

    def __init__(self, parts: list[_Part], description: dict[str, Any], autoreset_mode: AutoresetMode,
                 on_close: Callable[[], None] = lambda: None) -> None:
        self._parts = parts
        for part in parts:
            part.handle.fail_after_timeout = True
        self._on_close = on_close
        self.num_envs = sum(part.size for part in parts)
        self.autoreset_mode = autoreset_mode
        self.single_observation_space = description["observation_space"]
        self.single_action_space = description["action_space"]
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.metadata = {**(description.get("metadata") or {}), "autoreset_mode": autoreset_mode}
        self.render_mode = description.get("render_mode")
        self._sliceable = type(self.single_action_space).__name__ in _SLICEABLE

    @classmethod
    def create(cls, channels: Sequence[Any], benchmark: Benchmark, num_envs: int,
               autoreset_mode: str | AutoresetMode = AutoresetMode.NEXT_STEP,
               on_close: Callable[[], None] = lambda: None) -> "RemoteVectorEnv":
        """Build ``num_envs`` sub-environments of ``benchmark`` spread over the servers of ``channels``."""
        mode = autoreset_mode if isinstance(autoreset_mode, AutoresetMode) else AutoresetMode(autoreset_mode)
        spec = codec.encode(dataclasses.asdict(benchmark))
        parts: list[_Part] = []
        offset = 0
        description: dict[str, Any] = {}
        try:
            for channel, size in zip(channels, split_sizes(num_envs, len(channels))):
                channel.declare(benchmark)
                link = ControlLink(channel)
                try:
                    description = link.create("create_vector", spec, size, mode.value)
                except BaseException:
                    link.drop()
                    raise
                parts.append(_Part(RemoteHandle(channel, description["id"], release=link.release), offset, size))
                offset += size
        except BaseException:
            for part in parts:
                part.handle.release()
            raise
        return cls(parts, description, mode, on_close)

    # -- one round trip per server, all servers at once ----------------------------
    def _call_all(self, method: str, calls: list[tuple[_Part, tuple, dict[str, Any]]]) -> list[Any]:
        """``method(*args, **kwargs)`` for each ``(part, args, kwargs)``: all calls sent, then all replies read, in order.

        The servers work at once while the host waits, with no thread; every server that was
        sent a call answers (or times out) before the first error is raised.
        """
        if self.closed:
            raise ClosedError(f"{self!r} is closed")
        stale = next((part.handle.timed_out for part in self._parts if part.handle.timed_out), None)
        if stale is not None:  # no server may step while another's state is unknown
            raise CallTimeoutError(f"{self!r}: an earlier call timed out ({stale}), so its state is unknown; "
                                   "close it and make a new one")
        tickets: list[tuple[_Part, Any]] = []
        error: BaseException | None = None
        for part, args, kwargs in calls:
            try:
                tickets.append((part, part.handle.send(method, *args, **kwargs)))
            except BaseException as exc:
                error = exc
                break
        results: list[Any] = []
        for part, ticket in tickets:
            try:
                results.append(part.handle.receive(ticket))
            except BaseException as exc:
                error = error or exc
        if error is not None:
            raise error
        return results

    def _merge_observations(self, chunks: list[Any]) -> Any:
        if all(isinstance(chunk, np.ndarray) for chunk in chunks):
            return np.concatenate(chunks, axis=0) if len(chunks) > 1 else chunks[0]
        items = [item for part, chunk in zip(self._parts, chunks)
                 for item in iterate(batch_space(self.single_observation_space, part.size), chunk)]
        out = create_empty_array(self.single_observation_space, self.num_envs, fn=np.zeros)
        return concatenate(self.single_observation_space, items, out)

    def _merge_infos(self, parts: list[_Part], calls: list[list]) -> dict[str, Any]:
        pairs = [(part.offset + index, info) for part, merges in zip(parts, calls) for index, info in merges]
        infos = _merge_flat_numbers(pairs, self.num_envs)
        if infos is None:
            infos = {}
            for index, info in pairs:
                infos = self._add_info(infos, info, index)
        return infos

    # -- gymnasium's vector API ------------------------------------------------------
    def reset(self, *, seed: int | list[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        """Reset every sub-environment, seeded as ``SyncVectorEnv`` does (seed + i, or one seed each)."""
        if seed is None:
            seeds: list[Any] = [None] * self.num_envs
        elif isinstance(seed, int):
            seeds = [seed + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
        if len(seeds) != self.num_envs:
            raise ValueError(f"If seeds are passed as a list the length must match num_envs={self.num_envs} "
                             f"but got length={len(seeds)}.")
        mask = None if options is None else options.get("reset_mask")
        parts = self._parts
        if mask is not None:
            _check_mask(mask, self.num_envs)
            parts = [p for p in self._parts if mask[p.offset:p.offset + p.size].any()]

        def reset_kwargs(part: _Part) -> dict[str, Any]:
            part_options = options
            if mask is not None and options is not None:
                part_options = {**options, "reset_mask": mask[part.offset:part.offset + part.size]}
            return {"seed": seeds[part.offset:part.offset + part.size], "options": part_options}

        replies = self._call_all("reset", [(part, (), reset_kwargs(part)) for part in parts])
        for part, (observations, _) in zip(parts, replies):
            part.observations = observations
        observations = self._merge_observations([part.observations for part in self._parts])
        return observations, self._merge_infos(parts, [calls for _, calls in replies])

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Step every sub-environment: one round trip per server, all servers at once."""
        if self._sliceable and isinstance(actions, (np.ndarray, list, tuple)):
            if len(actions) != self.num_envs:
                raise ValueError(f"{len(actions)} actions for {self.num_envs} environments")
            chunks = [actions[p.offset:p.offset + p.size] for p in self._parts]
        else:
            items = list(iterate(self.action_space, actions))
            chunks = [concatenate(self.single_action_space, items[p.offset:p.offset + p.size],
                                  create_empty_array(self.single_action_space, p.size)) for p in self._parts]
        replies = self._call_all("step", [(part, (chunk,), {}) for part, chunk in zip(self._parts, chunks)])
        for part, reply in zip(self._parts, replies):
            part.observations = reply[0]
        return (
            self._merge_observations([reply[0] for reply in replies]),
            np.concatenate([np.asarray(reply[1], dtype=np.float64) for reply in replies]),
            np.concatenate([np.asarray(reply[2], dtype=np.bool_) for reply in replies]),
            np.concatenate([np.asarray(reply[3], dtype=np.bool_) for reply in replies]),
            self._merge_infos(self._parts, [reply[4] for reply in replies]),
        )

    def render(self) -> tuple[Any, ...]:
        """Each sub-environment's render(), in order."""
        return self.call("render")

    def call(self, name: str, *args: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Call an environment method, or read a listed attribute, on every sub-environment."""
        replies = self._call_all("call", [(part, (name, list(args), kwargs), {}) for part in self._parts])
        return tuple(value for reply in replies for value in reply)

    def get_attr(self, name: str) -> tuple[Any, ...]:
        """A listed attribute of every sub-environment."""
        return self.call(name)

    def set_attr(self, name: str, values: list[Any] | tuple[Any, ...] | Any) -> None:
        """Set a listed attribute: one value for all, or a list or tuple with one per sub-environment."""
        if isinstance(values, (list, tuple)):
            if len(values) != self.num_envs:
                raise ValueError("Values must be a list or tuple with length equal to the number of environments. "
                                 f"Got `{len(values)}` values for {self.num_envs} environments.")
            self._call_all("set_attr", [(p, (name, list(values[p.offset:p.offset + p.size])), {}) for p in self._parts])
        else:
            self._call_all("set_attr", [(p, (name, values), {}) for p in self._parts])

    def set_timeout(self, seconds: float | None, method: str | None = None) -> None:
        """Timeout (seconds) of one method ("step", "reset", ...) or of all calls, on every server."""
        for part in self._parts:
            part.handle.set_timeout(seconds, method)

    def close_extras(self, **kwargs: Any) -> None:
        """Close and release every part, then stop the servers this vector env started."""
        try:
            for part in self._parts:
                if part.handle.closed:
                    continue
                try:
                    if part.handle.timed_out is None:
                        part.handle.call("close")
                except ChannelError:
                    pass  # the server is gone: nothing left to close
                finally:
                    part.handle.release()
        finally:
            self._on_close()

    def __repr__(self) -> str:
        return f"<RemoteVectorEnv num_envs={self.num_envs} servers={len(self._parts)}>"
