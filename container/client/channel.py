"""The host side of the channel: authenticated JSON Pyro5 proxies, errors translated.

A :class:`Channel` knows one server endpoint (a Unix socket or TCP address), its
token and, when the host started the server, how to tell whether it is still
alive. Every Pyro5 error is turned into one error of the project's tree here;
replies decode to plain data (:func:`~dacstyle.container.protocol.harden_pyro5`)
and then through the codec, which rebuilds only allow-listed exception types.
"""

from __future__ import annotations

import os
import ssl
import stat
import threading
from typing import Any, Callable

from Pyro5 import errors as pyro_errors
from Pyro5.client import Proxy

from dacstyle import codec
from dacstyle.config import config
from dacstyle.sharedarrays import area_for, using
from dacstyle.errors import (
    AuthenticationError,
    CallTimeoutError,
    ChannelError,
    ClosedError,
    DacstyleError,
    ServerDiedError,
)

from ..protocol import exchange, harden_pyro5
from ..tls import CLIENT_TLS, ClientTLS, install_client_hook

__all__ = ["Channel", "uri_for", "read_token_file"]


def uri_for(location: str, object_id: str) -> str:
    """A Pyro5 URI for ``unix:/path`` or ``tcp:host:port`` and an object id."""
    kind, _, address = location.partition(":")
    if kind == "unix":
        return f"PYRO:{object_id}@./u:{address}"
    if kind == "tcp":
        host, _, port = address.rpartition(":")
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"PYRO:{object_id}@{host}:{port}"
    raise ValueError(f"unknown endpoint location {location!r}")


def read_token_file(path: str) -> str:
    """The token in ``path``, a regular file of this user that nobody else can read or write.

    AuthenticationError otherwise: a token others could read is no longer a secret.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise AuthenticationError(f"cannot read the token file {path}: {exc.strerror}") from exc
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise AuthenticationError(f"token file {path} must be a file of yours with mode 0600")
        return handle.read(4096).decode("utf-8", "replace").strip()


class Channel:
    """Authenticated proxies to one endpoint, with timeouts and translated errors."""

    def __init__(
        self,
        location: str,
        token: str,
        *,
        call_timeout: float = 60.0,
        server_gone: Callable[[float], bool] | None = None,
        stderr_tail: Callable[[], str] | None = None,
        exceptions: tuple[type, ...] = (),
        token_file: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        harden_pyro5()  # a reply decodes to plain data, whatever the server sends
        if tls is not None:
            install_client_hook()
        self.tls = tls  # a TCP endpoint across nodes: mutual TLS, the server's certificate pinned
        self.location = location
        self.call_timeout = call_timeout
        self._token = token
        self.token_file = token_file  # what a pickled proxy carries instead of the token
        self.arrays = area_for(location, config.max_message_size)  # the server's shared array area, on one node
        self._server_gone = server_gone
        self._stderr_tail = stderr_tail or (lambda: "")
        self.exceptions = exceptions  # rebuilt as their own type, besides builtins and dacstyle's tree

    def __reduce__(self) -> Any:
        """Refuse to pickle: a channel holds the token (a pickled env carries the token file's path instead)."""
        raise TypeError("a dacstyle channel holds its token and is never pickled; pickle the environment, "
                        "or pass runner.env_fn(), which carry the token file's path")

    @classmethod
    def from_token_file(cls, location: str, token_file: str, call_timeout: float = 60.0) -> "Channel":
        """A channel to ``location`` that authenticates with the token read from ``token_file``."""
        return cls(location, read_token_file(token_file), call_timeout=call_timeout, token_file=token_file)

    def declare(self, benchmark: Any) -> None:
        """Rebuild the exception classes ``benchmark`` declares as their own type on this channel from now on."""
        declared = [t for t in benchmark.exception_types() if t not in self.exceptions]
        self.exceptions = (*self.exceptions, *declared)

    def proxy(self, object_id: str) -> Proxy:
        """A new JSON proxy to ``object_id`` that presents the token on connect."""
        proxy = Proxy(uri_for(self.location, object_id))
        proxy._pyroSerializer = "json"
        proxy._pyroHandshake = self._token
        proxy._pyroTimeout = self.call_timeout
        return proxy

    def invoke(self, proxy: Proxy, lock: threading.Lock, method: str, args: tuple, timeout: float | None) -> Any:
        """Call ``method`` on ``proxy`` (any thread, one at a time), translating errors."""
        wanted = self.call_timeout if timeout is None else timeout
        with lock:
            proxy._pyroClaimOwnership()
            if proxy._pyroTimeout != wanted:  # setting it costs syscalls on a live connection
                proxy._pyroTimeout = wanted
            tls = CLIENT_TLS.set(self.tls) if self.tls is not None else None
            try:
                return exchange(proxy, method, args)  # proxy.<method>(*args), minus the layers dacstyle does not use
            except pyro_errors.PyroError as exc:
                raise self.translate(exc, method) from exc
            finally:
                if tls is not None:
                    CLIENT_TLS.reset(tls)

    def translate(self, exc: pyro_errors.PyroError, what: str) -> DacstyleError:
        """The project's error for a Pyro5 error raised during ``what``."""
        if isinstance(exc, pyro_errors.TimeoutError):
            return CallTimeoutError(f"{what}() did not answer within its timeout ({exc})")
        if isinstance(exc.__cause__, ssl.SSLError):
            return AuthenticationError(f"{what}(): the TLS handshake with the server failed: {exc.__cause__}")
        if "unknown object" in str(exc):
            return ClosedError(f"{what}(): the object is closed (no longer on the server)")
        if isinstance(exc, pyro_errors.SecurityError) or "rejected" in str(exc):
            return AuthenticationError(f"the server refused the connection: {exc}")
        if isinstance(exc, pyro_errors.CommunicationError) and self._server_gone is not None and self._server_gone(1.0):
            return ServerDiedError(f"the server died during {what}()", self._stderr_tail())
        return ChannelError(f"{what}() failed on the channel: {type(exc).__name__}: {exc}")

    def unwrap(self, reply: Any) -> Any:
        """Decode a server reply ``{"ok": value}`` or raise its ``{"error": ...}``."""
        if isinstance(reply, dict) and "ok" in reply:
            with using(self.arrays):
                return codec.decode(reply["ok"])
        if isinstance(reply, dict) and "error" in reply:
            raise codec.decode_exception(reply["error"], self.exceptions)
        raise ChannelError(f"malformed reply from the server: {str(reply)[:200]}")
