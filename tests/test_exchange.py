"""The host's call path on an open connection (protocol.exchange): the same checks as Pyro5's, against a hostile peer.

A scripted server on a Unix socket completes Pyro5's handshake, answers the first call
(which Pyro5 makes while connecting) and then sends the reply frame a test chooses.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import zlib
from typing import Callable, Iterator

import pytest
from Pyro5 import protocol as pyro_protocol

from dacstyle import errors
from dacstyle.container.client.channel import Channel

HEADER = struct.Struct("!4sHBBHHII16sHH")


def frame(kind: int, seq: int, body: bytes, flags: int = 0, serializer: int = 3) -> bytes:
    return HEADER.pack(b"PYRO", pyro_protocol.PROTOCOL_VERSION, kind, serializer, flags, seq, len(body), 0, b"\0" * 16,
                       0, 0x4DC5) + body


def read_frame(conn: socket.socket) -> tuple[int, bytes]:
    head = conn.recv(HEADER.size, socket.MSG_WAITALL)
    fields = HEADER.unpack(head)
    return fields[5], conn.recv(fields[6] + fields[7], socket.MSG_WAITALL) if fields[6] + fields[7] else b""


def result(seq: int, value: object, **kw: int) -> bytes:
    return frame(pyro_protocol.MSG_RESULT, seq, json.dumps(value).encode(), **kw)


@pytest.fixture
def hostile(tmp_path) -> Iterator[Callable[[Callable[[int], bytes]], tuple[Channel, object]]]:
    """Start a scripted server whose reply to the second call is ``second(seq)``; yields a channel and a proxy."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path = tmp_path / "hostile.sock"
    listener.bind(str(path))
    listener.listen(1)
    threads: list[threading.Thread] = []
    seen: list[bytes] = []

    def start(second: Callable[[int], bytes]) -> tuple[Channel, object]:
        def serve() -> None:
            conn, _ = listener.accept()
            with conn:
                read_frame(conn)  # the handshake
                meta = {"methods": ["call"], "oneway": [], "attrs": []}
                conn.sendall(frame(pyro_protocol.MSG_CONNECTOK, 0, json.dumps({"handshake": "ok", "meta": meta}).encode()))
                seq, _ = read_frame(conn)
                conn.sendall(result(seq, {"ok": 1}))
                seq, body = read_frame(conn)
                seen.append(body)
                reply = second(seq)
                conn.sendall(reply)
                if reply.endswith(b"\n"):  # a frame cut short: hang up
                    return
                conn.settimeout(5)
                try:
                    conn.recv(1)  # until the host hangs up
                except OSError:
                    pass

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        threads.append(thread)
        channel = Channel(f"unix:{path}", "token", call_timeout=2)
        return channel, channel.proxy("obj")

    start.seen = seen  # type: ignore[attr-defined]
    yield start
    listener.close()
    for thread in threads:
        thread.join(timeout=10)


def call(channel: Channel, proxy: object) -> object:
    return channel.invoke(proxy, threading.Lock(), "call", ("step", [], {}), None)


def test_a_well_formed_reply_is_read_and_the_call_is_one_json_frame(hostile):
    channel, proxy = hostile(lambda seq: result(seq, {"ok": [1.5, "x"]}))
    assert call(channel, proxy) == {"ok": 1}
    assert call(channel, proxy) == {"ok": [1.5, "x"]}
    assert json.loads(hostile.seen[0]) == {"object": "obj", "method": "call", "params": ["step", [], {}], "kwargs": {}}


@pytest.mark.parametrize("flag", ["FLAGS_COMPRESSED", "FLAGS_KEEPSERIALIZED", "FLAGS_ITEMSTREAMRESULT", "FLAGS_BATCH"])
def test_a_reply_with_flags_dacstyle_never_asks_for_is_refused(hostile, flag):
    bomb = zlib.compress(b"\0" * (16 << 20))
    channel, proxy = hostile(lambda seq: frame(pyro_protocol.MSG_RESULT, seq, bomb, flags=getattr(pyro_protocol, flag)))
    call(channel, proxy)
    with pytest.raises(errors.ChannelError, match="refused"):
        call(channel, proxy)
    assert proxy._pyroConnection is None  # dropped: the next call starts a fresh connection


@pytest.mark.parametrize("reply, match", [
    (lambda seq: result(seq + 1, {"ok": 1}), "unexpected reply frame"),
    (lambda seq: result(seq, {"ok": 1}, serializer=1), "unexpected reply frame"),
    (lambda seq: frame(pyro_protocol.MSG_CONNECTOK, seq, b"{}"), "unexpected reply frame"),
    (lambda seq: result(seq, {"ok": 1}) + b"PYRO", "data after the reply frame"),
    (lambda seq: HEADER.pack(b"PYRO", pyro_protocol.PROTOCOL_VERSION, pyro_protocol.MSG_RESULT, 3, 0, seq, 1 << 31, 0,
                             b"\0" * 16, 0, 0x4DC5), "too large"),
])
def test_a_reply_that_is_not_the_answer_to_this_call_is_refused(hostile, reply, match):
    channel, proxy = hostile(reply)
    call(channel, proxy)
    with pytest.raises(errors.ChannelError, match=match):
        call(channel, proxy)
    assert proxy._pyroConnection is None


def test_an_error_reply_becomes_a_pyro_error_and_never_another_object(hostile):
    record = {"__class__": "Pyro5.errors.DaemonError", "__exception__": True, "args": ["unknown object"], "attributes": {}}
    channel, proxy = hostile(lambda seq: result(seq, record, flags=pyro_protocol.FLAGS_EXCEPTION))
    call(channel, proxy)
    with pytest.raises(errors.ClosedError):
        call(channel, proxy)


def test_a_reply_cut_short_by_a_hang_up_is_a_lost_connection(hostile):
    channel, proxy = hostile(lambda seq: result(seq, {"ok": "a long enough reply"})[:50] + b"\n")
    call(channel, proxy)
    with pytest.raises(errors.ChannelError, match="connection lost"):
        call(channel, proxy)
    assert proxy._pyroConnection is None


def test_a_silent_server_times_out_and_the_connection_is_dropped(hostile):
    channel, proxy = hostile(lambda seq: b"")
    call(channel, proxy)
    with pytest.raises(errors.CallTimeoutError):
        channel.invoke(proxy, threading.Lock(), "call", ("step", [], {}), 0.3)
    assert proxy._pyroConnection is None
