"""A Pyro5 daemon that refuses a frame before it allocates for it.

Pyro5 reads, buffers and inflates a frame before anything checks who sent it.
:class:`GuardedDaemon` puts a guard in front, at the two places Pyro5 reads a
frame (``Daemon._handshake`` and ``Daemon.handleRequest``):

- before authentication the guard itself reads the one handshake frame: at most
  :data:`HANDSHAKE_MAX_BYTES`, within :data:`HANDSHAKE_DEADLINE` seconds in all
  (a peer that trickles bytes is cut off), and at most :data:`MAX_PENDING`
  connections wait for theirs: a new one pushes out the oldest, so idle peers never
  lock out the client. Only then does Pyro5 parse the frame, from memory;
- every frame must be JSON (Pyro5's SERIALIZER setting limits what a client sends,
  not what a daemon accepts), of the one message type expected, within Pyro5's
  ``MAX_MESSAGE_SIZE``, and without the flags the client never sets: compressed
  (Pyro5 inflates it unchecked), keep-serialized (Pyro5 ``marshal.loads`` its
  annotation), batch and oneway. Requests are checked on the peeked header,
  before Pyro5 reads a byte;
- the token is compared with :func:`hmac.compare_digest`, and a Unix-socket peer
  must run as the server's uid (``SO_PEERCRED``);
- with a TLS context (a server reached across nodes), the TLS handshake, with a
  client certificate of the run's CA, completes within the same deadline before
  the guard reads a byte of the frame (:func:`~dacstyle.container.tls.wrap_accepted`);
- Pyro5's built-in ``Pyro.Daemon`` object serves nothing (:class:`_NoDaemonObject`).
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import ssl
import struct
import threading
import time
from typing import Any

from Pyro5 import config as pyro_config
from Pyro5 import errors as pyro_errors
from Pyro5 import protocol, serializers
from Pyro5.server import Daemon, DaemonObject

from ..tls import wrap_accepted

__all__ = ["GuardedDaemon", "JSON_SERIALIZER_ID", "HANDSHAKE_MAX_BYTES", "HANDSHAKE_DEADLINE", "MAX_PENDING"]

log = logging.getLogger(__name__)

JSON_SERIALIZER_ID = serializers.JsonSerializer.serializer_id
HANDSHAKE_MAX_BYTES = 4096
"""Largest handshake frame (header included); a real one is under 300 bytes."""
HANDSHAKE_DEADLINE = 3.0
"""Seconds a new connection has to deliver its whole handshake frame."""
MAX_PENDING = 16
"""Connections that may wait for their handshake at once; a new one evicts the oldest."""

_HEADER = struct.Struct(protocol._header_format)  # '!4sHBBHHII16sHH', 40 bytes
_MAGIC = 0x4DC5
_ALLOWED_FLAGS = protocol.FLAGS_CORR_ID  # compressed, keep-serialized, batch and oneway are refused
_PEERCRED = struct.Struct("3i")


class FrameRefused(Exception):
    """The guard refused a frame; the connection is closed."""


class _NoDaemonObject:
    """Stands where Pyro5 keeps its ``Pyro.Daemon`` object: answers the handshake's metadata, serves nothing."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def get_metadata(self, object_id: str) -> dict[str, Any]:
        """The exposed members of ``object_id`` (called by Pyro5 locally, never exposed)."""
        return DaemonObject.get_metadata(self, object_id)  # type: ignore[arg-type]


class _Replay:
    """The connection as Pyro5's handshake sees it: the frame the guard already read, then the socket."""

    def __init__(self, conn: Any, frame: bytes) -> None:
        self._conn = conn
        self._frame = memoryview(frame)

    def recv(self, size: int) -> bytes:
        chunk, self._frame = bytes(self._frame[:size]), self._frame[size:]
        if len(chunk) != size:
            raise pyro_errors.ProtocolError("handshake frame shorter than its header says")
        return chunk

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


class GuardedDaemon(Daemon):
    """A Pyro5 daemon with a token, a same-uid peer check and a frame guard."""

    def __init__(self, token: bytes, tls: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        if not token:
            raise ValueError("a GuardedDaemon needs a non-empty token")
        super().__init__(interface=_NoDaemonObject, **kwargs)
        self._token = token
        self._tls = tls
        self.last_request = time.monotonic()  # what --idle-timeout watches
        self._pending: list[Any] = []  # connections waiting for their handshake, oldest first
        self._pending_lock = threading.Lock()

    # Pyro5 calls this once per connection, with the proxy's _pyroHandshake data.
    def validateHandshake(self, conn: Any, data: Any) -> Any:
        _check_peer(conn.sock)
        given = data.encode("utf-8") if isinstance(data, str) else b""
        if not hmac.compare_digest(given, self._token):
            raise pyro_errors.SecurityError("authentication failed")
        return "ok"

    def _handshake(self, conn: Any, denied_reason: str | None = None) -> bool:
        if denied_reason is not None:  # Pyro5's accept loop, pool full: reading here would stall every client
            log.warning("connection refused: %s", denied_reason)
            return False
        self._admit(conn)
        deadline = time.monotonic() + HANDSHAKE_DEADLINE
        try:
            if self._tls is not None:
                conn.sock = wrap_accepted(conn.sock, self._tls, deadline)
            sock = conn.sock
            frame = _read_handshake(sock, deadline)
        except (FrameRefused, OSError) as exc:
            log.info("connection dropped before authentication: %s", exc)
            return False
        finally:
            with self._pending_lock:
                if conn in self._pending:
                    self._pending.remove(conn)
        sock.settimeout(None)  # authenticated traffic blocks like Pyro5's default (COMMTIMEOUT 0)
        return super()._handshake(_Replay(conn, frame))

    def _admit(self, conn: Any) -> None:
        """Count ``conn`` as pending; past :data:`MAX_PENDING`, cut off the oldest waiting one."""
        with self._pending_lock:
            if len(self._pending) >= MAX_PENDING:
                oldest = self._pending.pop(0)
                try:
                    oldest.sock.shutdown(socket.SHUT_RDWR)  # its reader wakes up with end-of-file
                except OSError:
                    pass
            self._pending.append(conn)

    def handleRequest(self, conn: Any) -> None:
        self.last_request = time.monotonic()
        try:
            head = conn.sock.recv(_HEADER.size, socket.MSG_PEEK | socket.MSG_WAITALL)
        except OSError as exc:
            raise pyro_errors.ConnectionClosedError("client went away") from exc
        if len(head) < _HEADER.size:
            raise pyro_errors.ConnectionClosedError("client went away")
        try:
            _check_header(head, protocol.MSG_INVOKE, pyro_config.MAX_MESSAGE_SIZE)
        except FrameRefused as exc:
            raise pyro_errors.SecurityError(f"{exc}; closing the connection") from exc
        super().handleRequest(conn)


def _check_header(head: bytes, msgtype: int, max_size: int) -> int:
    """Refuse a frame header the client never sends; returns the size of the rest of the frame."""
    tag, version, kind, serializer, flags, _seq, data_size, ann_size, _corr, _res, magic = _HEADER.unpack(head)
    if tag != b"PYRO" or version != protocol.PROTOCOL_VERSION or magic != _MAGIC:
        raise FrameRefused("not a Pyro5 frame of this protocol version")
    if kind != msgtype:
        raise FrameRefused(f"message type {kind} where {msgtype} was expected")
    if serializer != JSON_SERIALIZER_ID:
        raise FrameRefused("only the JSON serializer is accepted")
    if flags & ~_ALLOWED_FLAGS:
        raise FrameRefused(f"frame flags {flags:#x} refused (compressed, keep-serialized, batch and oneway are never used)")
    if data_size + ann_size > max_size:
        raise FrameRefused(f"frame of {data_size + ann_size} bytes is over the {max_size}-byte limit")
    return data_size + ann_size


def _read_handshake(sock: socket.socket, deadline: float) -> bytes:
    """The whole handshake frame, read by the guard: small, checked, and before ``deadline``."""
    head = _recv_until(sock, _HEADER.size, deadline)
    rest = _check_header(head, protocol.MSG_CONNECT, HANDSHAKE_MAX_BYTES - _HEADER.size)
    return head + _recv_until(sock, rest, deadline)


def _recv_until(sock: socket.socket, size: int, deadline: float) -> bytes:
    """Exactly ``size`` bytes, or :class:`FrameRefused` at ``deadline`` or at end-of-file."""
    data = bytearray()
    while len(data) < size:
        left = deadline - time.monotonic()
        if left <= 0:
            raise FrameRefused(f"no complete handshake within {HANDSHAKE_DEADLINE} s")
        sock.settimeout(left)
        try:
            chunk = sock.recv(size - len(data))
        except socket.timeout:
            continue  # the loop's deadline check answers
        if not chunk:
            raise FrameRefused("connection closed during the handshake")
        data += chunk
    return bytes(data)


def _check_peer(sock: socket.socket) -> None:
    """Refuse a Unix-socket peer that runs as another user."""
    if sock.family != socket.AF_UNIX:
        return
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    _pid, uid, _gid = _PEERCRED.unpack(raw)
    if uid != os.getuid():
        raise pyro_errors.SecurityError("peer runs as another user")
