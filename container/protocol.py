"""What host and server agree on: the protocol version, names, the ready line and the wire form.

Both sides speak Pyro5's JSON serializer with its class hooks removed
(:class:`PlainJson`): a ``{"__class__": ...}`` dict stays a dict, so the wire
yields plain data and only :mod:`dacstyle.codec` rebuilds values from it. On a
connection that is open, the host sends a call and reads its reply itself
(:func:`exchange`: one Pyro5 frame each way, checked like any other), without
the layers of Pyro5's proxy that dacstyle does not use.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import struct
from json.encoder import c_make_encoder, encode_basestring
from typing import Any, NoReturn

from Pyro5 import config as pyro_config
from Pyro5 import errors as pyro_errors
from Pyro5 import protocol, serializers

from dacstyle.errors import ProtocolMismatchError

__all__ = [
    "PROTOCOL_VERSION",
    "CONTROL_OBJECT",
    "READY_PREFIX",
    "PlainJson",
    "GuardedMessage",
    "harden_pyro5",
    "exchange",
    "send_call",
    "read_result",
    "versions",
    "check_versions",
]

PROTOCOL_VERSION = 2
"""Bumped whenever a message, a tagged codec form or a control method changes."""

CONTROL_OBJECT = "dacstyle.control"
"""The Pyro5 object id of the server's control object (hello, create, release, shutdown)."""

READY_PREFIX = "DACSTYLE-READY "
"""The server writes this prefix plus a JSON object to stdout once its sockets listen."""


class PlainJson(serializers.JsonSerializer):
    """Pyro5's JSON serializer minus its class hooks: frames decode to plain data only.

    Pyro5 turns a ``__class__`` dict into a live object (a ``Proxy`` that connects
    where the sender says, a URI, a daemon). Here the one thing rebuilt is the error
    record Pyro5 itself sends for a failed dispatch, and only as a Pyro5 error.
    Writing uses one encoder made once (``json.dumps`` with options makes one per call).
    """

    def __init__(self) -> None:
        super().__init__()
        self._encode = (c_make_encoder(None, self.default, encode_basestring, None, ": ", ", ", False, False, True)
                        if c_make_encoder is not None else None)

    def dumps(self, data: Any) -> bytes:
        if self._encode is None:
            return super().dumps(data)
        return "".join(self._encode(data, 0)).encode("utf-8")  # the text json.dumps(ensure_ascii=False) writes

    def dumpsCall(self, obj: str, method: str, vargs: Any, kwargs: Any) -> bytes:
        return self.dumps({"object": obj, "method": method, "params": vargs, "kwargs": kwargs})

    def loads(self, data: Any) -> Any:
        tree = json.loads(str(data, "utf-8"))
        return _pyro_error(tree) if type(tree) is dict and tree.get("__exception__") is True else tree

    def loadsCall(self, data: Any) -> tuple[Any, Any, Any, Any]:
        call = json.loads(str(data, "utf-8"))
        return call["object"], call["method"], call["params"], call["kwargs"]


def _pyro_error(record: dict[str, Any]) -> pyro_errors.PyroError:
    """A dispatch error the other side's Pyro5 sent, as a Pyro5 error (never another type)."""
    name = str(record.get("__class__", ""))
    args = record.get("args")
    text = "; ".join(str(a) for a in args) if isinstance(args, list) else ""
    cls = getattr(pyro_errors, name[len("Pyro5.errors."):], None) if name.startswith("Pyro5.errors.") else None
    if isinstance(cls, type) and issubclass(cls, pyro_errors.PyroError):
        return cls(text)
    return pyro_errors.PyroError(f"{name}: {text}")


class GuardedMessage(protocol.ReceivingMessage):
    """A received frame whose header is checked before its payload is read or inflated.

    Pyro5 inflates a compressed frame (and unmarshals a keep-serialized one)
    unchecked; dacstyle never sends either, so they are refused, in either direction.
    """

    def __init__(self, header: bytes, payload: bytes | None = None) -> None:
        super().__init__(header)  # parses the header, checks the size against MAX_MESSAGE_SIZE
        if self.flags & (protocol.FLAGS_COMPRESSED | protocol.FLAGS_KEEPSERIALIZED):
            raise pyro_errors.ProtocolError(f"frame flags {self.flags:#x} refused: dacstyle never sends "
                                            "compressed or keep-serialized frames")
        if payload is not None:
            self.add_payload(payload)


def harden_pyro5() -> None:
    """Make this process's Pyro5 decode frames to plain data and refuse unsafe ones (idempotent).

    Called by the server entry point and by every host-side channel: both ends
    decode frames without Pyro5's class hooks (:class:`PlainJson`), and neither
    inflates a compressed frame a hostile peer sends (:class:`GuardedMessage`).
    """
    plain = serializers.serializers["json"]
    if not isinstance(plain, PlainJson):
        plain = PlainJson()
        serializers.serializers["json"] = plain
        serializers.serializers_by_id[PlainJson.serializer_id] = plain
    protocol.ReceivingMessage = GuardedMessage  # what protocol.recv_stub builds each frame with


_HEADER = struct.Struct(protocol._header_format)  # '!4sHBBHHII16sHH', 40 bytes
_JSON_ID = serializers.JsonSerializer.serializer_id
_MAGIC = 0x4DC5
_CORRELATION = os.urandom(16)
"""Sent with every call, so the server reuses it instead of drawing a random one per request."""
_FIRST_READ = 64 * 1024
"""A reply up to this size (header included) is read in one receive."""


def exchange(proxy: Any, method: str, args: tuple) -> Any:
    """``proxy.<method>(*args)``: one call frame out, one reply frame in, on the proxy's connection.

    The same frames and checks as Pyro5's ``Proxy._pyroInvoke`` (sequence number, message
    type, serializer, size limit, :class:`GuardedMessage`'s flag check, exception flag)
    without its per-call layers: one send and, for a reply under 64 KiB, one receive.
    """
    return read_result(proxy, send_call(proxy, method, args))


def send_call(proxy: Any, method: str, args: tuple) -> int:
    """Send ``proxy.<method>(*args)`` as one frame without waiting; returns the number :func:`read_result` wants.

    A proxy that is not connected connects first (Pyro5's connect and handshake).
    Anything gone wrong on the connection closes it, as Pyro5 does; the next call reconnects.
    """
    if proxy._pyroConnection is None:
        proxy._pyroBind()
    conn = proxy._pyroConnection
    data = serializers.serializers_by_id[_JSON_ID].dumpsCall(conn.objectId, method, args, {})
    if len(data) > pyro_config.MAX_MESSAGE_SIZE:
        raise pyro_errors.ProtocolError(f"message too large ({len(data)}, max={pyro_config.MAX_MESSAGE_SIZE})")
    seq = proxy._pyroSeq = (proxy._pyroSeq + 1) & 0xFFFF
    try:
        conn.sock.sendall(_HEADER.pack(b"PYRO", protocol.PROTOCOL_VERSION, protocol.MSG_INVOKE, _JSON_ID,
                                       protocol.FLAGS_CORR_ID, seq, len(data), 0, _CORRELATION, 0, _MAGIC) + data)
    except BaseException as exc:
        _drop(proxy, exc)
    return seq


def read_result(proxy: Any, seq: int) -> Any:
    """The result of call ``seq`` on ``proxy``: its reply frame read and checked; a remote Pyro5 error is raised."""
    conn = proxy._pyroConnection
    if conn is None:
        raise pyro_errors.ConnectionClosedError("the connection was closed before the reply was read")
    try:
        reply = _read_reply(conn.sock, seq)
    except BaseException as exc:
        _drop(proxy, exc)
    result = serializers.serializers_by_id[_JSON_ID].loads(reply.data)
    if reply.flags & protocol.FLAGS_EXCEPTION:
        raise result if isinstance(result, pyro_errors.PyroError) else pyro_errors.ProtocolError("malformed error reply")
    return result


def _drop(proxy: Any, exc: BaseException) -> NoReturn:
    """Close the connection a frame broke off on (a timeout, ^C, a refused frame) and raise ``exc`` as Pyro5 would."""
    proxy._pyroRelease()  # the stream may be out of step: the next call reconnects
    if isinstance(exc, socket.timeout):
        raise pyro_errors.TimeoutError("receiving: timeout")  # chained as Pyro5's are: the cause stays the context
    if isinstance(exc, OSError):
        raise pyro_errors.ConnectionClosedError(f"connection lost: {exc}")
    raise exc


def _read_reply(sock: socket.socket, seq: int) -> GuardedMessage:
    """The reply frame to call ``seq``: its header checked before the rest is read."""
    data: bytes | bytearray = sock.recv(_FIRST_READ)
    while len(data) < _HEADER.size:
        more = sock.recv(_HEADER.size - len(data))
        if not more:
            raise pyro_errors.ConnectionClosedError("receiving: connection lost")
        data += more
    reply = GuardedMessage(data[:_HEADER.size])  # version, magic, size limit and flags, before the payload
    if reply.type != protocol.MSG_RESULT or reply.seq != seq or reply.serializer_id != _JSON_ID:
        raise pyro_errors.ProtocolError(f"unexpected reply frame (type {reply.type}, seq {reply.seq}, "
                                        f"serializer {reply.serializer_id}) to call {seq}")
    if reply.flags & (protocol.FLAGS_ITEMSTREAMRESULT | protocol.FLAGS_BATCH):
        raise pyro_errors.ProtocolError(f"reply flags {reply.flags:#x} refused: dacstyle never asks for them")
    size = _HEADER.size + reply.annotations_size + reply.data_size
    if len(data) > size:
        raise pyro_errors.ProtocolError("data after the reply frame")
    if len(data) < size:
        frame = bytearray(size)
        frame[:len(data)] = data
        view, done = memoryview(frame), len(data)
        while done < size:
            read = sock.recv_into(view[done:])
            if not read:
                raise pyro_errors.ConnectionClosedError("receiving: connection lost")
            done += read
        data = frame
    reply.add_payload(memoryview(data)[_HEADER.size:])
    return reply


def versions() -> dict[str, Any]:
    """The versions one side runs: protocol, dacstyle, Python, numpy, gymnasium, Pyro5."""
    import gymnasium
    import numpy
    import Pyro5

    import dacstyle

    return {
        "protocol": PROTOCOL_VERSION,
        "dacstyle": dacstyle.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "gymnasium": gymnasium.__version__,
        "pyro5": Pyro5.__version__,
    }


def check_versions(server: dict[str, Any]) -> None:
    """Raise :class:`ProtocolMismatchError` naming both sides unless the server speaks our protocol."""
    if isinstance(server, dict) and server.get("protocol") == PROTOCOL_VERSION:
        return
    host = versions()
    theirs = server if isinstance(server, dict) else {}

    def side(v: dict[str, Any]) -> str:
        return f"protocol {v.get('protocol')!r} (dacstyle {v.get('dacstyle')}, Python {v.get('python')})"

    raise ProtocolMismatchError(f"protocol mismatch: host speaks {side(host)}, server speaks {side(theirs)}; "
                                "use the same dacstyle release on both sides")
