"""The objects a server exposes: one control object and the hosted benchmarks.

:class:`Control` answers ``hello()`` and builds benchmarks from their spec (codec data);
each built object is wrapped in a :class:`Hosted` that serves exactly the methods
its spec lists. Arguments and results travel through :mod:`dacstyle.codec`;
exceptions raised by the benchmark come back as data in the reply, with their
traceback, so that the host can raise them as their own type.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from typing import Any, Callable

from gymnasium.vector import SyncVectorEnv
from Pyro5 import config as pyro_config
from Pyro5.server import Daemon, expose

from dacstyle import codec
from dacstyle.sharedarrays import ArrayArea, using
from dacstyle.benchmarks.spec import Benchmark
from dacstyle.errors import BenchmarkError

from ..protocol import versions

__all__ = ["Control", "Hosted", "ENV_METHODS", "VectorHost"]

log = logging.getLogger(__name__)

ENV_METHODS = ("reset", "step", "render", "close")
"""What an environment serves; its spaces and metadata travel once, at create()."""


class Hosted:
    """One benchmark object behind the channel, reachable only through ``methods`` and ``attributes``."""

    def __init__(self, target: Any, methods: list[str] | tuple[str, ...], attributes: list[str] | tuple[str, ...] = (),
                 area: ArrayArea | None = None) -> None:
        missing = [m for m in methods if not callable(getattr(target, m, None))]
        if missing:
            raise AttributeError(f"{type(target).__name__} has no method(s) {missing}")
        self._target = target
        self._methods = frozenset(methods)
        self._attributes = frozenset(attributes)
        self._area = area  # large arrays in and out travel through it
        self._lock = threading.Lock()

    @expose
    def get(self, name: str) -> dict[str, Any]:
        """The current value of an attribute the spec lists; ``{"ok": value}`` or ``{"error": ...}``."""
        if name not in self._attributes:
            return {"error": codec.encode_exception(AttributeError(f"attribute {name!r} is not served"))}
        try:
            with self._lock, using(self._area):
                return {"ok": codec.encode(getattr(self._target, name))}
        except Exception as exc:
            return {"error": codec.encode_exception(exc)}

    @expose
    def call(self, method: str, args: list, kwargs: dict) -> dict[str, Any]:
        """Run ``method(*args, **kwargs)``; returns ``{"ok": value}`` or ``{"error": exception}``."""
        if method not in self._methods:
            return {"error": codec.encode_exception(AttributeError(f"method {method!r} is not served"))}
        try:
            with using(self._area):
                args, kwargs = codec.decode(args), codec.decode(kwargs)
                with self._lock:  # a benchmark object is not assumed to be thread-safe
                    result = getattr(self._target, method)(*args, **kwargs)
                return {"ok": codec.encode(result)}
        except Exception as exc:
            log.debug("%s raised in %s", type(exc).__name__, method, exc_info=True)
            return {"error": codec.encode_exception(exc)}

    def close_target(self) -> None:
        """Close the benchmark object if it has a close()."""
        close: Callable[[], Any] | None = getattr(self._target, "close", None)
        if callable(close):
            close()


class _InfoLog(SyncVectorEnv):
    """A SyncVectorEnv that keeps each ``[index, info]`` it would merge, for the host to merge in order."""

    info_calls: list[list[Any]]

    def _add_info(self, vector_infos: dict[str, Any], env_info: dict[str, Any], env_num: int) -> dict[str, Any]:
        self.__dict__.setdefault("info_calls", []).append([env_num, env_info])  # a list: it travels untagged
        return vector_infos


class VectorHost:
    """``num_envs`` copies of one environment stepped in one call: gymnasium's own SyncVectorEnv.

    Results are batched here; infos travel as the per-env ``[index, info]`` list that
    SyncVectorEnv merges, so that the host, merging several servers' lists in index
    order, builds exactly the ``infos`` one SyncVectorEnv over all sub-envs would.
    Only the environment's methods and the spec's ``attributes`` are reachable.
    """

    METHODS = ("reset", "step", "call", "set_attr", "close")

    def __init__(self, spec: Benchmark, num_envs: int, autoreset_mode: str) -> None:
        self._callable = frozenset(ENV_METHODS) | frozenset(spec.attributes or ())
        self._settable = frozenset(spec.attributes or ())
        self.envs = _InfoLog([spec.build] * num_envs, copy=False, autoreset_mode=autoreset_mode)

    def _infos(self) -> list[list[Any]]:
        calls, self.envs.info_calls = self.envs.__dict__.get("info_calls", []), []
        return calls

    def reset(self, seed: Any = None, options: dict[str, Any] | None = None) -> tuple[Any, list]:
        """SyncVectorEnv.reset; the infos as ``[index, info]`` pairs."""
        observations, _ = self.envs.reset(seed=seed, options=options)
        return observations, self._infos()

    def step(self, actions: Any) -> tuple[Any, Any, Any, Any, list]:
        """SyncVectorEnv.step; the infos as ``[index, info]`` pairs."""
        observations, rewards, terminations, truncations, _ = self.envs.step(actions)
        return observations, rewards, terminations, truncations, self._infos()

    def call(self, name: str, args: list, kwargs: dict) -> list[Any]:
        """SyncVectorEnv.call for an environment method or a listed attribute."""
        if name not in self._callable:
            raise AttributeError(f"{name!r} is neither an environment method nor a listed attribute")
        return list(self.envs.call(name, *args, **kwargs))

    def set_attr(self, name: str, values: Any) -> None:
        """SyncVectorEnv.set_attr for a listed attribute."""
        if name not in self._settable:
            raise AttributeError(f"attribute {name!r} is not listed in the spec's attributes")
        self.envs.set_attr(name, values)

    def close(self) -> None:
        """Close every sub-environment."""
        self.envs.close()


def _env_description(env: Any) -> dict[str, Any]:
    """What the host needs to rebuild an environment's surface: spaces, metadata, render mode."""
    metadata = {k: v for k, v in dict(getattr(env, "metadata", {})).items() if k != "autoreset_mode"}
    return {"observation_space": env.observation_space, "action_space": env.action_space,
            "metadata": metadata, "render_mode": getattr(env, "render_mode", None)}


def _benchmark_from(fields: Any) -> Benchmark:
    """The spec the host sent (a dict of :class:`Benchmark` fields); unknown or missing fields are refused."""
    if not isinstance(fields, dict):
        raise BenchmarkError(f"a benchmark spec is a mapping of its fields, not {type(fields).__name__}")
    try:
        return Benchmark(**fields)
    except TypeError as exc:
        raise BenchmarkError(f"bad benchmark spec: {exc}") from exc


class Control:
    """The server's entry object: handshake, build, release and shut down."""

    def __init__(self, daemon: Daemon, shutdown: threading.Event, agent_daemon: Daemon | None = None) -> None:
        self._daemon = daemon
        self._agent_daemon = agent_daemon
        self._shutdown = shutdown
        self._hosted: dict[str, Hosted] = {}
        where = daemon.locationStr  # same node only (the area is made on first use); across nodes arrays are inline
        self._area = None if not where.startswith("./u:") else ArrayArea(
            os.path.join(os.path.dirname(where[4:]), "arrays"), create=True, max_bytes=pyro_config.MAX_MESSAGE_SIZE)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @expose
    def hello(self) -> dict[str, Any]:
        """Protocol and versions of this side, and the server's pid."""
        return {**versions(), "pid": os.getpid()}

    @expose
    def create(self, spec: Any) -> dict[str, Any]:
        """Build the benchmark that ``spec`` (its fields, as codec data) names and register it.

        Returns ``{"ok": description}`` with the object id, its methods and, for an
        environment, its spaces, metadata and render mode; or ``{"error": ...}``.
        """
        try:
            spec = _benchmark_from(codec.decode(spec))
            target = spec.build()
            methods = list(ENV_METHODS) if spec.is_environment else list(spec.methods or ())
            hosted = Hosted(target, methods, spec.attributes or (), self._area)
            description: dict[str, Any] = {"methods": methods, "kind": "environment" if spec.is_environment else "object"}
            if spec.is_environment:
                description.update(_env_description(target))
            description["id"] = self._register(spec.name, hosted)
            if spec.agent_methods and self._agent_daemon is not None:
                self._agent_daemon.register(Hosted(target, spec.agent_methods), spec.name)
                description["agent_id"] = spec.name
            return {"ok": codec.encode(description)}
        except Exception as exc:
            log.debug("create failed", exc_info=True)
            return {"error": codec.encode_exception(exc)}

    @expose
    def create_vector(self, spec: Any, num_envs: int, autoreset_mode: str) -> dict[str, Any]:
        """Build ``num_envs`` copies of the environment ``spec`` names as one :class:`VectorHost`.

        Returns ``{"ok": description}`` (id, the single spaces, metadata, render mode) or ``{"error": ...}``.
        """
        try:
            spec = _benchmark_from(codec.decode(spec))
            if not spec.is_environment:
                raise BenchmarkError(f"{spec.name!r} serves an object, not an environment: it has no vector form")
            if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
                raise BenchmarkError(f"num_envs must be a positive int, not {num_envs!r}")
            vector = VectorHost(spec, num_envs, autoreset_mode)
            description = {"kind": "vector", "methods": list(VectorHost.METHODS),
                           **_env_description(vector.envs.envs[0])}
            hosted = Hosted(vector, VectorHost.METHODS, area=self._area)
            description["id"] = self._register(f"{spec.name}-vector", hosted)
            return {"ok": codec.encode(description)}
        except Exception as exc:
            log.debug("create_vector failed", exc_info=True)
            return {"error": codec.encode_exception(exc)}

    def _register(self, name: str, hosted: Hosted) -> str:
        with self._lock:
            object_id = f"{name}.{next(self._ids)}"
            self._hosted[object_id] = hosted
        self._daemon.register(hosted, object_id)
        return object_id

    @expose
    def release(self, object_id: str) -> None:
        """Unregister an object and close it; unknown ids are ignored."""
        with self._lock:
            hosted = self._hosted.pop(object_id, None)
        if hosted is None:
            return
        self._daemon.unregister(object_id)
        try:
            hosted.close_target()
        except Exception:
            log.warning("closing %s raised", object_id, exc_info=True)

    @expose
    def shutdown(self) -> None:
        """Ask the server to stop after this reply."""
        self._shutdown.set()

    def close_all(self) -> None:
        """Close every hosted object (the server calls this on its way out)."""
        for object_id in list(self._hosted):
            self.release(object_id)
