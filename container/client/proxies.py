"""Local-looking objects for remote ones: a generic object proxy and a gymnasium.Env.

:func:`make_remote_object` returns an instance of a class generated for exactly
the methods the server serves; :class:`RemoteEnvironment` is a real
``gymnasium.Env`` subclass whose spaces were rebuilt on the host. Every call has a
timeout: the channel default, a per-method one (:meth:`set_timeout`), or both.

States: a call on a closed proxy raises :class:`~dacstyle.errors.ClosedError`. After a
call timed out, an environment's state is unknown (did the step happen?), so every
later call on it fails at once with :class:`~dacstyle.errors.CallTimeoutError`
(closing still works); an object proxy reconnects on its next call. A pickled
environment carries the server's address and the path of its 0600 token file, never
the token, and attaches to the same remote environment in the new process.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, SupportsFloat

import gymnasium as gym
from gymnasium.envs.registration import EnvSpec

from Pyro5 import errors as pyro_errors

from dacstyle import codec
from dacstyle.errors import CallTimeoutError, ChannelError, ClosedError
from dacstyle.sharedarrays import using

from ..protocol import read_result, send_call
from ..tls import CLIENT_TLS
from .channel import Channel

__all__ = ["RemoteHandle", "RemoteObject", "RemoteEnvironment", "make_remote_object", "env_spec"]


class RemoteHandle:
    """One hosted object on a server: its proxy, timeouts and release hook."""

    def __init__(self, channel: Channel, object_id: str, release: Callable[[str], None] | None = None) -> None:
        self.channel = channel
        self.object_id = object_id
        self._proxy = channel.proxy(object_id)
        self._lock = threading.Lock()
        self._timeouts: dict[str | None, float] = {}
        self._release = release
        self.closed = False
        self.timed_out: str | None = None  # set by a call that timed out: the remote state is unknown
        self.fail_after_timeout = False  # environments: True, objects reconnect on the next call

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` remotely and return its decoded result (or raise its error)."""
        if self.closed or self.timed_out is not None:
            self._check_usable(method)  # before large arguments are written to the shared area
        with using(self.channel.arrays):
            encoded = (method, codec.encode(list(args)), codec.encode(kwargs) if kwargs else {})
        return self.invoke("call", method, encoded)

    def get(self, name: str) -> Any:
        """The current value of a remote attribute the spec lists."""
        return self.invoke("get", name, (name,))

    def invoke(self, exposed: str, method: str, args: tuple) -> Any:
        """Call the hosted object's ``exposed`` method with ``args`` (``method`` picks the timeout)."""
        if self.closed or self.timed_out is not None:
            self._check_usable(method)
        try:
            reply = self.channel.invoke(self._proxy, self._lock, exposed, args, self._timeout(method))
        except CallTimeoutError:
            if self.fail_after_timeout:
                self.timed_out = f"{method}()"
            raise
        return self.channel.unwrap(reply)

    def send(self, method: str, *args: Any, **kwargs: Any) -> tuple[str, int]:
        """Send a call of ``method`` without waiting for it; :meth:`receive` with the ticket returned must follow.

        Calls on several servers sent first and received after run at once, with no thread
        (the vector env's one round trip per server). The handle is busy until the receive.
        Everything else matches :meth:`call` through ``Channel.invoke``: the timeouts, the
        frames and their checks, the errors.
        """
        if self.closed or self.timed_out is not None:
            self._check_usable(method)
        with using(self.channel.arrays):
            encoded = (method, codec.encode(list(args)), codec.encode(kwargs) if kwargs else {})
        self._lock.acquire()
        try:
            self._proxy._pyroClaimOwnership()
            timeout = self._timeout(method)
            wanted = self.channel.call_timeout if timeout is None else timeout
            if self._proxy._pyroTimeout != wanted:
                self._proxy._pyroTimeout = wanted
            tls = CLIENT_TLS.set(self.channel.tls) if self.channel.tls is not None else None  # as Channel.invoke
            try:
                return method, send_call(self._proxy, "call", encoded)
            finally:
                if tls is not None:
                    CLIENT_TLS.reset(tls)
        except BaseException as exc:
            self._lock.release()
            if isinstance(exc, pyro_errors.PyroError):
                raise self._failed(exc, method) from exc
            raise

    def receive(self, ticket: tuple[str, int]) -> Any:
        """The decoded result of the call :meth:`send` returned ``ticket`` for (or its error)."""
        method, seq = ticket
        try:
            reply = read_result(self._proxy, seq)
        except pyro_errors.PyroError as exc:
            raise self._failed(exc, method) from exc
        finally:
            self._lock.release()
        return self.channel.unwrap(reply)

    def _timeout(self, method: str) -> float | None:
        """The timeout set for ``method`` or for all methods; None: the channel's default."""
        return self._timeouts.get(method, self._timeouts.get(None)) if self._timeouts else None

    def _failed(self, exc: pyro_errors.PyroError, method: str) -> Exception:
        error = self.channel.translate(exc, method)
        if isinstance(error, CallTimeoutError) and self.fail_after_timeout:
            self.timed_out = f"{method}()"
        return error

    def _check_usable(self, method: str) -> None:
        if self.closed:
            raise ClosedError(f"{method}() on {self.object_id}: it is closed")
        if self.timed_out is not None:
            raise CallTimeoutError(f"{method}() on {self.object_id}: an earlier call timed out ({self.timed_out}), "
                                   "so its state is unknown; close it and make a new one")

    def set_timeout(self, seconds: float | None, method: str | None = None) -> None:
        """Set the timeout of one method, or of all (``method=None``); None resets it."""
        if seconds is None:
            self._timeouts.pop(method, None)
        elif seconds <= 0:
            raise ValueError("a timeout must be positive")
        else:
            self._timeouts[method] = float(seconds)

    def release(self) -> None:
        """Drop the connection and ask the server to forget the object (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            if self._release is not None:
                self._release(self.object_id)
        finally:
            self.drop()

    def drop(self) -> None:
        """Close this side's connection only (the server is going away anyway)."""
        self.closed = True
        with self._lock:
            self._proxy._pyroClaimOwnership()
            self._proxy._pyroRelease()


class RemoteObject:
    """Base of the generated proxy classes; its public methods are the served ones."""

    _remote: RemoteHandle

    def __init__(self, handle: RemoteHandle) -> None:
        self._remote = handle

    def set_timeout(self, seconds: float | None, method: str | None = None) -> None:
        """Timeout (seconds) of one method or of all calls on this object."""
        self._remote.set_timeout(seconds, method)

    def release(self) -> None:
        """Tell the server to drop the object; further calls fail."""
        self._remote.release()

    def __reduce__(self) -> Any:
        """Refuse to pickle: only environments (and ``runner.env_fn()``) attach from another process."""
        raise TypeError(f"{type(self).__name__} is never pickled: its channel holds the token; "
                        "environments and runner.env_fn() can be pickled")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._remote.object_id} at {self._remote.channel.location}>"


def _remote_method(name: str) -> Callable[..., Any]:
    def method(self: RemoteObject, *args: Any, **kwargs: Any) -> Any:
        return self._remote.call(name, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Call ``{name}`` on the remote object."
    return method


def make_remote_object(handle: RemoteHandle, methods: list[str], class_name: str = "Remote") -> RemoteObject:
    """A proxy whose methods are exactly ``methods`` (plus set_timeout and release).

    ``"__call__"`` among them makes the proxy callable, like the function it stands for.
    """
    clash = set(methods) & {"set_timeout", "release"}
    namespace = {name: _remote_method(name) for name in methods if name not in clash}
    cls = type(class_name, (RemoteObject,), namespace)
    return cls(handle)


def env_spec(benchmark: Any) -> EnvSpec:
    """The gymnasium EnvSpec of a benchmark (a :class:`~dacstyle.benchmarks.spec.Benchmark`)."""
    name = "".join(c if c.isalnum() or c in "_.-" else "_" for c in benchmark.name)
    return EnvSpec(id=f"dacstyle/{name}", entry_point=benchmark.entry_point, kwargs=benchmark.kwargs())


class RemoteEnvironment(gym.Env):
    """A gymnasium environment whose reset/step/render/close run on a server.

    The spec's ``attributes`` read through as properties would (``env.unwrapped.instance``,
    ``env.get_wrapper_attr("instance")``), fetched from the server on each read.
    """

    def __init__(self, handle: RemoteHandle, description: dict[str, Any], benchmark: Any = None) -> None:
        self._remote = handle
        handle.fail_after_timeout = True
        self._description = description
        self._benchmark = None
        self._attributes: frozenset[str] = frozenset()
        self.observation_space = description["observation_space"]
        self.action_space = description["action_space"]
        self.metadata = description.get("metadata") or {}
        self.render_mode = description.get("render_mode")
        if benchmark is not None:
            self._adopt(benchmark)

    def _adopt(self, benchmark: Any) -> None:
        """Take the spec this environment was built from: its EnvSpec and listed attributes."""
        self._benchmark = benchmark
        self._attributes = frozenset(benchmark.attributes or ())
        self.spec = env_spec(benchmark)

    def __getattr__(self, name: str) -> Any:
        if name in self.__dict__.get("_attributes", ()):
            return self._remote.get(name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r} (the spec's attributes are "
                             f"{sorted(self.__dict__.get('_attributes', ()))})")

    def __reduce__(self) -> tuple[Any, tuple]:
        """Pickle the address, the token file's path and the description, never the token or a socket."""
        channel = self._remote.channel
        if channel.token_file is None:
            raise TypeError("this environment's channel has no token file, so it cannot be attached elsewhere")
        state = {"location": channel.location, "token_file": channel.token_file, "call_timeout": channel.call_timeout,
                 "object_id": self._remote.object_id, "description": codec.encode(self._description),
                 "benchmark": self._benchmark.to_json() if self._benchmark is not None else None}
        return _attach_environment, (state,)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        observation, info = self._remote.call("reset", seed=seed, options=options)
        return observation, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self._remote.call("step", action)
        return observation, reward, terminated, truncated, info

    def render(self) -> Any:
        return self._remote.call("render")

    def close(self) -> None:
        """Close the remote environment and release it (idempotent; a dead server is no error).

        An attached copy (unpickled) only drops its own connection: the original owns the environment.
        """
        if self._remote.closed:
            return
        if self._remote._release is None:
            self._remote.drop()
            return
        try:
            if self._remote.timed_out is None:
                self._remote.call("close")
        except ChannelError:
            pass  # the server is gone or unreachable: there is nothing left to close
        finally:
            self._remote.release()

    def set_timeout(self, seconds: float | None, method: str | None = None) -> None:
        """Timeout (seconds) of one method ("step", "reset", ...) or of all calls."""
        self._remote.set_timeout(seconds, method)

    def __repr__(self) -> str:
        return f"<RemoteEnvironment {self._remote.object_id} at {self._remote.channel.location}>"


def _attach_environment(state: dict[str, Any]) -> RemoteEnvironment:
    """A RemoteEnvironment attached to the environment a pickled one named (token read from its file)."""
    from dacstyle.benchmarks.spec import Benchmark

    channel = Channel.from_token_file(state["location"], state["token_file"], state["call_timeout"])
    benchmark = Benchmark.from_json(state["benchmark"]) if state["benchmark"] is not None else None
    if benchmark is not None:
        channel.declare(benchmark)
    return RemoteEnvironment(RemoteHandle(channel, state["object_id"]), codec.decode(state["description"]), benchmark)
