"""Local-looking objects for remote ones: a generic object proxy and a gymnasium.Env.

:func:`make_remote_object` returns an instance of a class generated for exactly
the methods the server serves; :class:`RemoteEnvironment` is a real
``gymnasium.Env`` subclass whose spaces were rebuilt on the host. Every call has a
timeout: the channel default, a per-method one (:meth:`set_timeout`), or both.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, SupportsFloat

import gymnasium as gym

from dacstyle import codec
from dacstyle.errors import ChannelError

from .channel import Channel

__all__ = ["RemoteHandle", "RemoteObject", "RemoteEnvironment", "make_remote_object"]


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

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        """Run ``method`` remotely and return its decoded result (or raise its error)."""
        timeout = self._timeouts.get(method, self._timeouts.get(None))
        reply = self.channel.invoke(
            self._proxy, self._lock, "call", (method, codec.encode(list(args)), codec.encode(kwargs)), timeout
        )
        return self.channel.unwrap(reply)

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


class RemoteEnvironment(gym.Env):
    """A gymnasium environment whose reset/step/render/close run on a server."""

    def __init__(self, handle: RemoteHandle, description: dict[str, Any]) -> None:
        self._remote = handle
        self.observation_space = description["observation_space"]
        self.action_space = description["action_space"]
        self.metadata = description.get("metadata") or {}
        self.render_mode = description.get("render_mode")

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
        """Close the remote environment and release it (idempotent; a dead server is no error)."""
        if not self._remote.closed:
            try:
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
