"""Mutual TLS for a channel that crosses the network (a Slurm-placed server).

Both ends load their files from one folder made per run on the host
(:mod:`dacstyle.slurm.certs`): ``ca.pem`` (the run's own CA, the only trust
anchor), ``server.pem``/``server.key`` and ``client.pem``/``client.key``. The
server demands a client certificate of that CA; the client verifies the server's
certificate against that CA *and* pins its fingerprint (published with the
address). The token is still required on top. Only the standard library is used
here, so the server in the container needs nothing more.

Pyro5 keeps one process-wide SSL setting; a host talks to local Unix-socket
servers and TLS servers at once, so the client side instead passes its context
through :data:`CLIENT_TLS`, a context variable the channel sets around each call,
and :func:`install_client_hook` makes Pyro5's socket factory use it.
"""

from __future__ import annotations

import contextvars
import hashlib
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ClientTLS", "CLIENT_TLS", "server_context", "client_context", "fingerprint", "install_client_hook",
           "wrap_accepted", "TLS_FILES"]

TLS_FILES = ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate, as ``sha256:HEX``."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def cert_fingerprint(pem_path: str | Path) -> str:
    """The fingerprint of the certificate in a PEM file."""
    return fingerprint(ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text()))


def server_context(folder: str | Path) -> ssl.SSLContext:
    """The server's context: its certificate, and a client certificate of the run's CA required."""
    folder = Path(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(folder / "server.pem", folder / "server.key")
    context.load_verify_locations(cafile=folder / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(folder: str | Path, prefix: str = "client") -> ssl.SSLContext:
    """The client's context: its certificate, and only the run's CA trusted (names are not checked: pinned)."""
    folder = Path(folder)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False  # a compute node's name is not known when the run's certificates are made
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(folder / f"{prefix}.pem", folder / f"{prefix}.key")
    context.load_verify_locations(cafile=folder / "ca.pem")
    return context


@dataclass(frozen=True)
class ClientTLS:
    """What a channel needs to reach a TLS server: its context and the server certificate it expects."""

    context: ssl.SSLContext
    server_fingerprint: str

    @classmethod
    def from_folder(cls, folder: str | Path, server_fingerprint: str, prefix: str = "client") -> "ClientTLS":
        return cls(client_context(folder, prefix), server_fingerprint)


CLIENT_TLS: contextvars.ContextVar[ClientTLS | None] = contextvars.ContextVar("dacstyle_client_tls", default=None)
_HOOKED: list[Any] = []


def install_client_hook() -> None:
    """Make Pyro5's client sockets use :data:`CLIENT_TLS` when it is set (idempotent)."""
    if _HOOKED:
        return
    from Pyro5 import socketutil

    original = socketutil.create_socket

    def create_socket(*args: Any, sslContext: ssl.SSLContext | None = None, **kwargs: Any) -> socket.socket:
        tls = CLIENT_TLS.get()
        if tls is None or sslContext is not None or kwargs.get("connect") is None:
            return original(*args, sslContext=sslContext, **kwargs)
        sock = original(*args, sslContext=tls.context, **kwargs)
        seen = fingerprint(sock.getpeercert(binary_form=True) or b"")  # type: ignore[attr-defined]
        if seen != tls.server_fingerprint:
            sock.close()
            raise ssl.SSLError(f"the server's certificate {seen} is not the published {tls.server_fingerprint}")
        return sock

    socketutil.create_socket = create_socket  # servers' listening sockets (bind=...) pass straight through
    _HOOKED.append(original)


class _PeekableTLS:
    """A server-side TLS socket that also answers ``recv(n, MSG_PEEK | MSG_WAITALL)`` (the frame guard peeks)."""

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self._sock = sock
        self._buffer = b""

    def recv(self, size: int, flags: int = 0) -> bytes:
        if flags & socket.MSG_PEEK:
            while len(self._buffer) < size:
                chunk = self._sock.recv(size - len(self._buffer))
                if not chunk:
                    break
                self._buffer += chunk
            return self._buffer[:size]
        if self._buffer:
            chunk, self._buffer = self._buffer[:size], self._buffer[size:]
            return chunk
        return self._sock.recv(size)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def wrap_accepted(sock: socket.socket, context: ssl.SSLContext, deadline: float) -> Any:
    """Complete the server side of the TLS handshake on an accepted socket before ``deadline``.

    ``ssl.SSLError``/``OSError`` when the peer has no certificate of the run's CA or is too slow.
    """
    tls = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    tls.settimeout(max(0.01, deadline - time.monotonic()))
    tls.do_handshake()
    return _PeekableTLS(tls)
