"""Picklable ways to reach a running server from another process of the same user.

:class:`EnvFactory` (what ``runner.env_fn()`` returns) carries the server's address,
the path of its 0600 token file (never the token) and the benchmark spec; called in
any process (``AsyncVectorEnv`` workers, spawn, fork or forkserver) it reads the
token, builds a new environment on that server and owns it: closing it releases it.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from dacstyle import codec
from dacstyle.benchmarks.spec import Benchmark
from dacstyle.errors import ChannelError

from ..protocol import CONTROL_OBJECT
from .channel import Channel
from .proxies import RemoteEnvironment, RemoteHandle

__all__ = ["EnvFactory", "ControlLink"]


class ControlLink:
    """A connection to a server's control object: create and release hosted objects."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self._proxy = channel.proxy(CONTROL_OBJECT)
        self._lock = threading.Lock()
        self._users = 0

    def call(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call ``method`` on the control object (errors translated by the channel)."""
        return self.channel.invoke(self._proxy, self._lock, method, args, timeout)

    def create(self, method: str, *args: Any) -> dict[str, Any]:
        """Run a create method (``create``, ``create_vector``) and return the description it answers."""
        description = self.channel.unwrap(self.call(method, *args))
        self._users += 1
        return description

    def release(self, object_id: str) -> None:
        """Release ``object_id`` on the server; the last release drops this connection too."""
        try:
            self.call("release", object_id, timeout=10.0)
        except ChannelError:
            pass  # the server is gone: it has released everything already
        finally:
            self._users -= 1
            if self._users <= 0:
                self.drop()

    def drop(self) -> None:
        """Close this side's connection."""
        with self._lock:
            self._proxy._pyroClaimOwnership()
            self._proxy._pyroRelease()


@dataclasses.dataclass(frozen=True)
class EnvFactory:
    """A picklable callable that builds a new environment on a running server."""

    location: str
    token_file: str
    benchmark: str  # the spec as JSON
    call_timeout: float = 60.0

    def __call__(self) -> RemoteEnvironment:
        """A new RemoteEnvironment on the server, owned by the caller (close() releases it)."""
        spec = Benchmark.from_json(self.benchmark)
        channel = Channel.from_token_file(self.location, self.token_file, self.call_timeout)
        channel.declare(spec)
        link = ControlLink(channel)
        try:
            description = link.create("create", codec.encode(dataclasses.asdict(spec)))
        except BaseException:
            link.drop()
            raise
        return RemoteEnvironment(RemoteHandle(channel, description["id"], release=link.release), description, spec)
