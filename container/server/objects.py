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

from Pyro5.server import Daemon, expose

from dacstyle import codec
from dacstyle.benchmarks.spec import Benchmark
from dacstyle.errors import BenchmarkError

from ..protocol import versions

__all__ = ["Control", "Hosted", "ENV_METHODS"]

log = logging.getLogger(__name__)

ENV_METHODS = ("reset", "step", "render", "close")
"""What an environment serves; its spaces and metadata travel once, at create()."""


class Hosted:
    """One benchmark object behind the channel, reachable only through ``methods``."""

    def __init__(self, target: Any, methods: list[str] | tuple[str, ...]) -> None:
        missing = [m for m in methods if not callable(getattr(target, m, None))]
        if missing:
            raise AttributeError(f"{type(target).__name__} has no method(s) {missing}")
        self._target = target
        self._methods = frozenset(methods)
        self._lock = threading.Lock()

    @expose
    def call(self, method: str, args: list, kwargs: dict) -> dict[str, Any]:
        """Run ``method(*args, **kwargs)``; returns ``{"ok": value}`` or ``{"error": exception}``."""
        if method not in self._methods:
            return {"error": codec.encode_exception(AttributeError(f"method {method!r} is not served"))}
        try:
            with self._lock:  # a benchmark object is not assumed to be thread-safe
                result = getattr(self._target, method)(*codec.decode(args), **codec.decode(kwargs))
            return {"ok": codec.encode(result)}
        except Exception as exc:
            log.debug("%s raised in %s", type(exc).__name__, method, exc_info=True)
            return {"error": codec.encode_exception(exc)}

    def close_target(self) -> None:
        """Close the benchmark object if it has a close()."""
        close: Callable[[], Any] | None = getattr(self._target, "close", None)
        if callable(close):
            close()


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
            hosted = Hosted(target, methods)
            description: dict[str, Any] = {"methods": methods, "kind": "environment" if spec.is_environment else "object"}
            if spec.is_environment:
                description.update(
                    observation_space=target.observation_space,
                    action_space=target.action_space,
                    metadata=dict(getattr(target, "metadata", {})),
                    render_mode=getattr(target, "render_mode", None),
                )
            with self._lock:
                object_id = f"{spec.name}.{next(self._ids)}"
                self._hosted[object_id] = hosted
            self._daemon.register(hosted, object_id)
            description["id"] = object_id
            if spec.agent_methods and self._agent_daemon is not None:
                self._agent_daemon.register(Hosted(target, spec.agent_methods), spec.name)
                description["agent_id"] = spec.name
            return {"ok": codec.encode(description)}
        except Exception as exc:
            log.debug("create failed", exc_info=True)
            return {"error": codec.encode_exception(exc)}

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
