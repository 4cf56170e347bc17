"""A Pyro5 daemon that accepts only authenticated JSON frames.

Pyro5's SERIALIZER setting chooses what a client sends; it does not limit what a
daemon accepts. :class:`GuardedDaemon` enforces it: every frame's serializer id is
checked before Pyro5 decodes it, the per-run token is compared in the connection
handshake with :func:`hmac.compare_digest`, and on Unix sockets the peer must run
as the same uid as the server (``SO_PEERCRED``). Frame size is capped by Pyro5's
``MAX_MESSAGE_SIZE``, which the server entry point sets.
"""

from __future__ import annotations

import hmac
import os
import socket
import struct
from typing import Any

from Pyro5 import errors as pyro_errors
from Pyro5 import serializers
from Pyro5.server import Daemon

__all__ = ["GuardedDaemon", "JSON_SERIALIZER_ID"]

JSON_SERIALIZER_ID = serializers.JsonSerializer.serializer_id
_SERIALIZER_OFFSET = 7  # header '!4sHBBHHII16sHH': tag, version, msgtype, serializer id, ...
_PEERCRED = struct.Struct("3i")


class GuardedDaemon(Daemon):
    """A Pyro5 daemon with a token, a same-uid peer check and a JSON-only rule."""

    def __init__(self, token: bytes, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not token:
            raise ValueError("a GuardedDaemon needs a non-empty token")
        self._token = token

    # Pyro5 calls this once per connection, with the proxy's _pyroHandshake data.
    def validateHandshake(self, conn: Any, data: Any) -> Any:
        _check_peer(conn.sock)
        given = data.encode("utf-8") if isinstance(data, str) else b""
        if not hmac.compare_digest(given, self._token):
            raise pyro_errors.SecurityError("authentication failed")
        return "ok"

    def _handshake(self, conn: Any, denied_reason: str | None = None) -> bool:
        if denied_reason is None and _peek_serializer(conn.sock) != JSON_SERIALIZER_ID:
            denied_reason = "only the JSON serializer is accepted"
        return super()._handshake(conn, denied_reason)

    def handleRequest(self, conn: Any) -> None:
        serializer_id = _peek_serializer(conn.sock)
        if serializer_id is None:
            raise pyro_errors.ConnectionClosedError("client went away")
        if serializer_id != JSON_SERIALIZER_ID:
            raise pyro_errors.SecurityError("only the JSON serializer is accepted; closing the connection")
        super().handleRequest(conn)


def _peek_serializer(sock: socket.socket) -> int | None:
    """The serializer id of the next frame, without consuming it (None if closed)."""
    try:
        head = sock.recv(_SERIALIZER_OFFSET + 1, socket.MSG_PEEK | socket.MSG_WAITALL)
    except OSError:
        return None
    return head[_SERIALIZER_OFFSET] if len(head) > _SERIALIZER_OFFSET else None


def _check_peer(sock: socket.socket) -> None:
    """Refuse a Unix-socket peer that runs as another user."""
    if sock.family != socket.AF_UNIX:
        return
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    if uid != os.getuid():
        raise pyro_errors.SecurityError("peer runs as another user")
