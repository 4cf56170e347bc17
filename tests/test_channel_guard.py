"""The channel's guards under attack: raw frames, plain-JSON decoding, idle peers, versions, a second uid.

Each test here was checked to fail when the guard it names is removed.
"""

from __future__ import annotations

import json
import os
import pwd
import select
import socket
import struct
import subprocess
import threading
import time
import zlib

import pytest
from Pyro5 import errors as pyro_errors
from Pyro5 import protocol as pyro_protocol

from dacstyle import errors
from dacstyle.container.client import RemoteRunner, Server
from dacstyle.container.client.channel import Channel
from dacstyle.container.protocol import CONTROL_OBJECT, PlainJson
from dacstyle.container.server.daemon import HANDSHAKE_DEADLINE, MAX_PENDING
from dacstyle.runtimes.process import ProcessRuntime
from dacstyle.testing import probe_benchmark

from conftest import socket_path


JSON_ID, MARSHAL_ID = 3, 2


def pyro_frame(msgtype: int, payload: bytes, *, serializer: int = JSON_ID, flags: int = 0, seq: int = 0,
               annotations: bytes = b"", data_size: int | None = None) -> bytes:
    """A Pyro5 wire frame built by hand: what an attacker can send."""
    size = len(payload) if data_size is None else data_size
    header = struct.pack("!4sHBBHHII16sHH", b"PYRO", pyro_protocol.PROTOCOL_VERSION, msgtype, serializer, flags, seq,
                         size, len(annotations), b"\0" * 16, 0, 0x4DC5)
    return header + annotations + payload


def handshake_frame(token: str, *, serializer: int = JSON_ID, flags: int = 0, pad: int = 0,
                    object_id: str = CONTROL_OBJECT) -> bytes:
    data = {"handshake": token, "object": object_id, **({"pad": "x" * pad} if pad else {})}
    if serializer == MARSHAL_ID:
        import marshal

        payload = marshal.dumps(data)
    else:
        payload = json.dumps(data).encode()
    if flags & pyro_protocol.FLAGS_COMPRESSED:
        payload = zlib.compress(payload)
    return pyro_frame(pyro_protocol.MSG_CONNECT, payload, serializer=serializer, flags=flags)


def call_frame(method: str, *, object_id: str = CONTROL_OBJECT, params: list | None = None,
               serializer: int = JSON_ID, flags: int = 0, annotations: bytes = b"") -> bytes:
    if serializer == MARSHAL_ID:
        import marshal

        payload = marshal.dumps((object_id, method, params or [], {}))
    else:
        payload = json.dumps({"object": object_id, "method": method, "params": params or [], "kwargs": {}}).encode()
    if flags & pyro_protocol.FLAGS_COMPRESSED:
        payload = zlib.compress(payload)
    return pyro_frame(pyro_protocol.MSG_INVOKE, payload, serializer=serializer, flags=flags, seq=1,
                      annotations=annotations)


def answer(raw: socket.socket) -> tuple[int, int, object]:
    """Message type, flags and JSON body of the server's next frame."""
    head = recv_exactly(raw, 40)
    data_size, ann_size = struct.unpack("!II", head[12:20])
    body = recv_exactly(raw, data_size + ann_size)[ann_size:]
    return head[6], struct.unpack("!H", head[8:10])[0], json.loads(body) if body else None


def recv_exactly(raw: socket.socket, size: int) -> bytes:
    """``size`` bytes from ``raw`` (a plain or a TLS socket), fewer only at end of file."""
    data = b""
    while len(data) < size and (chunk := raw.recv(size - len(data))):
        data += chunk
    return data


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> tuple[bytes, bool]:
    """Everything the server sends until it closes (True) or ``timeout`` passes (False)."""
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, True
        if not chunk:
            return data, True
        data += chunk
    return data, False


def reply_type(data: bytes) -> int | None:
    return data[6] if len(data) >= 40 else None


def connect(target: "RemoteRunner | str") -> socket.socket:
    raw = socket.socket(socket.AF_UNIX)
    raw.settimeout(10)
    raw.connect(target if isinstance(target, str) else socket_path(target))
    return raw


def authenticated(target: "RemoteRunner | str", token: str | None = None, object_id: str = CONTROL_OBJECT) -> socket.socket:
    """A raw connection past a valid handshake."""
    raw = connect(target)
    raw.sendall(handshake_frame(token or target.server.server_dir.token(), object_id=object_id))
    assert answer(raw)[0] == pyro_protocol.MSG_CONNECTOK
    return raw


def test_a_valid_raw_handshake_and_call_are_answered(probe):
    """The raw-frame helpers speak the real protocol: a good frame gets a real answer."""
    runner, _ = probe
    with authenticated(runner) as raw:
        raw.sendall(call_frame("hello"))
        kind, flags, body = answer(raw)
    assert kind == pyro_protocol.MSG_RESULT and not flags & pyro_protocol.FLAGS_EXCEPTION and "protocol" in body


@pytest.mark.parametrize("serializer", [MARSHAL_ID, 1])
def test_raw_handshake_in_another_serializer_is_dropped(probe, serializer):
    runner, obj = probe
    frame = handshake_frame(runner.server.server_dir.token(), serializer=MARSHAL_ID) if serializer == MARSHAL_ID else \
        pyro_frame(pyro_protocol.MSG_CONNECT, repr({"handshake": runner.server.server_dir.token(), "object": CONTROL_OBJECT})
                   .encode(), serializer=1)
    with connect(runner) as raw:
        raw.sendall(frame)
        data, closed = read_until_closed(raw)
    assert closed and reply_type(data) != pyro_protocol.MSG_CONNECTOK
    assert obj.echo(4) == 4


def test_raw_call_in_another_serializer_after_authentication_is_dropped(probe):
    runner, obj = probe
    with authenticated(runner) as raw:
        raw.sendall(call_frame("hello", serializer=MARSHAL_ID))
        data, closed = read_until_closed(raw)
    assert closed and data == b""
    assert obj.echo(5) == 5


def test_compressed_handshake_is_dropped_before_it_is_inflated(probe):
    runner, obj = probe
    with connect(runner) as raw:
        raw.sendall(handshake_frame(runner.server.server_dir.token(), flags=pyro_protocol.FLAGS_COMPRESSED))
        data, closed = read_until_closed(raw)
    assert closed and reply_type(data) != pyro_protocol.MSG_CONNECTOK
    assert obj.echo(6) == 6


@pytest.mark.parametrize("flag", ["FLAGS_COMPRESSED", "FLAGS_KEEPSERIALIZED", "FLAGS_BATCH", "FLAGS_ONEWAY"])
def test_call_flags_the_client_never_sets_close_the_connection(probe, flag):
    """Compressed (inflated unchecked), keep-serialized (marshal.loads of an annotation), batch, oneway."""
    import marshal

    runner, obj = probe
    value = getattr(pyro_protocol, flag)
    blob = b""
    if flag == "FLAGS_KEEPSERIALIZED":  # what Pyro5 would marshal.loads: (blobinfo, object, method)
        info = marshal.dumps(("x", CONTROL_OBJECT, "hello"))
        blob = struct.pack("!4sI", b"BLBI", len(info)) + info
    with authenticated(runner) as raw:
        raw.sendall(call_frame("hello", flags=value, annotations=blob))
        data, closed = read_until_closed(raw)
    assert closed and data == b"", f"{flag}: the server answered or kept the connection open"
    assert obj.echo(7) == 7


def test_oversized_handshake_frame_is_dropped(probe):
    """A 64 KiB handshake (well under the 256 MiB frame cap) is refused: before authentication frames are tiny."""
    runner, obj = probe
    with connect(runner) as raw:
        raw.sendall(handshake_frame(runner.server.server_dir.token(), pad=64 * 1024))
        data, closed = read_until_closed(raw)
    assert closed and reply_type(data) != pyro_protocol.MSG_CONNECTOK
    assert obj.echo(8) == 8


def test_class_dicts_stay_plain_data_both_ways(probe, no_leftovers):
    """Pyro5's JSON hooks would build a Proxy from this dict (on the server, then on the host)."""
    runner, obj = probe
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.setblocking(False)
    try:
        uri = f"PYRO:evil@127.0.0.1:{listener.getsockname()[1]}"
        bait = {"__class__": "Pyro5.client.Proxy", "state": [uri, [], ["ping"], [], None, "json"]}
        assert obj.echo(bait) == bait
        assert obj.echo([{"__class__": "Pyro5.core.URI", "state": ["PYRO", "x", None, "127.0.0.1", 1]}])[0]["state"][0] == "PYRO"
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected out
    finally:
        listener.close()


def test_plain_json_builds_no_object_and_only_pyro_errors():
    plain = PlainJson()
    proxy = {"__class__": "Pyro5.client.Proxy", "state": ["PYRO:x@127.0.0.1:1", [], [], [], None, "json"]}
    assert plain.loads(json.dumps(proxy).encode()) == proxy
    call = {"object": "o", "method": "m", "params": [proxy], "kwargs": {"k": proxy}}
    assert plain.loadsCall(json.dumps(call).encode()) == ("o", "m", [proxy], {"k": proxy})
    refused = {"__class__": "Pyro5.errors.SecurityError", "__exception__": True, "args": ["no"], "attributes": {}}
    error = plain.loads(json.dumps(refused).encode())
    assert type(error) is pyro_errors.SecurityError and str(error) == "no"
    other = {"__class__": "subprocess.CalledProcessError", "__exception__": True, "args": [1, "x"], "attributes": {}}
    error = plain.loads(json.dumps(other).encode())
    assert type(error) is pyro_errors.PyroError and "subprocess.CalledProcessError" in str(error)


def refused_calls(path: str, token: str, calls: list[tuple[str, str]], greet: str = CONTROL_OBJECT) -> list[str]:
    """Send each (object, method) call on an authenticated raw connection; the error text of each refusal."""
    refusals = []
    with authenticated(path, token, greet) as raw:
        for object_id, method in calls:
            raw.sendall(call_frame(method, object_id=object_id))
            kind, flags, body = answer(raw)
            assert kind == pyro_protocol.MSG_RESULT
            assert flags & pyro_protocol.FLAGS_EXCEPTION, f"{object_id}.{method}() was served: {body}"
            refusals.append(" ".join(map(str, body["args"])))
    return refusals


def test_pyro_daemon_object_serves_nothing(probe):
    runner, obj = probe
    refusals = refused_calls(socket_path(runner), runner.server.server_dir.token(),
                             [("Pyro.Daemon", m) for m in ("registered", "info", "ping", "get_metadata")])
    assert all("attribute" in text for text in refusals), refusals
    assert obj.echo(9) == 9


def test_agent_endpoint_serves_only_the_agent_methods(no_leftovers):
    bench = probe_benchmark("agent-side")
    bench.agent_methods = ["echo"]
    with Server.start(ProcessRuntime(), agent=True) as server:
        server.create(bench)
        path, token = str(server.server_dir.path / "agent" / "agent.sock"), server.server_dir.token("agent")
        refusals = refused_calls(path, token, [("Pyro.Daemon", "registered"), (CONTROL_OBJECT, "hello")], "probe")
        assert "attribute" in refusals[0] and "unknown object" in refusals[1]
        with authenticated(path, token, "probe") as raw:
            raw.sendall(call_frame("call", object_id="probe", params=["echo", [1], {}]))
            assert answer(raw)[2] == {"ok": 1}
            raw.sendall(call_frame("call", object_id="probe", params=["whereami", [], {}]))
            assert "not served" in answer(raw)[2]["error"]["message"]


def test_wrong_token_through_a_channel_is_an_authentication_error(probe):
    runner, obj = probe
    channel = Channel(f"unix:{socket_path(runner)}", "not-the-token-" + "z" * 20, call_timeout=10)
    proxy = channel.proxy(CONTROL_OBJECT)
    with pytest.raises(errors.AuthenticationError, match="refused"):
        channel.invoke(proxy, threading.Lock(), "hello", (), None)
    proxy._pyroRelease()
    assert obj.echo(10) == 10


def test_idle_connections_do_not_lock_out_the_client(probe):
    """70 connections that send nothing (more than the server's worker pool) while a client connects."""
    runner, obj = probe
    idle = []
    try:
        for _ in range(70):
            idle.append(connect(runner))
        channel = Channel(f"unix:{socket_path(runner)}", runner.server.server_dir.token(), call_timeout=10)
        proxy = channel.proxy(CONTROL_OBJECT)
        try:
            hello = channel.unwrap({"ok": channel.invoke(proxy, threading.Lock(), "hello", (), None)})
        finally:
            proxy._pyroRelease()
        assert hello["protocol"] == runner.server.hello["protocol"]
        # all but the newest MAX_PENDING idle peers were cut off already; the rest go at the deadline
        closed = sum(read_until_closed(raw, timeout=HANDSHAKE_DEADLINE + 5)[1] for raw in idle)
        assert closed == len(idle)
    finally:
        for raw in idle:
            raw.close()
    assert MAX_PENDING < 70
    assert obj.echo(11) == 11


def test_a_frame_sent_one_byte_per_second_is_cut_off(probe):
    runner, obj = probe
    frame = handshake_frame(runner.server.server_dir.token())
    with connect(runner) as raw:
        cut_off = False
        for byte in frame[: int(HANDSHAKE_DEADLINE) + 6]:  # far fewer bytes than the frame holds
            try:
                raw.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                cut_off = True
                break
            ready, _, _ = select.select([raw], [], [], 1.0)  # one byte a second, unless the server hangs up
            if ready and not raw.recv(1):
                cut_off = True
                break
    assert cut_off, "the server kept waiting for a trickled handshake"
    assert obj.echo(12) == 12


class OtherProtocolRuntime(ProcessRuntime):
    """The real server entry point, speaking another protocol version."""

    name = "other-protocol"

    def exec_argv(self, spec, command):
        argv = super().exec_argv(spec, command)
        start = argv.index("-m")
        code = ("import sys; import dacstyle.container.protocol as p; p.PROTOCOL_VERSION = 99; "
                "from dacstyle.container.server.main import main; sys.exit(main(sys.argv[1:]))")
        return [*argv[:start], "-c", code, *argv[start + 2:]]


def test_protocol_mismatch_is_one_error_naming_both_sides(no_leftovers):
    from dacstyle.container.protocol import PROTOCOL_VERSION

    with pytest.raises(errors.ProtocolMismatchError) as info:
        Server.start(OtherProtocolRuntime(), start_timeout=30)
    message = str(info.value)
    assert f"host speaks protocol {PROTOCOL_VERSION}" in message and "server speaks protocol 99" in message


PEER_USER = "dacstyle-peer"


def second_uid() -> tuple[int, int]:
    """A real second user (created with useradd when missing); tests run as root in CI."""
    if os.geteuid() != 0:
        pytest.skip("the SO_PEERCRED test needs root to act as a second uid (CI runs as root)")
    try:
        entry = pwd.getpwnam(PEER_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PEER_USER],
                       check=True, capture_output=True, timeout=30)
        entry = pwd.getpwnam(PEER_USER)
    return entry.pw_uid, entry.pw_gid


def test_peer_of_another_uid_is_refused_even_with_the_token(probe):
    """The run folder's mode keeps other users out; if it did not, SO_PEERCRED still would."""
    runner, obj = probe
    uid, gid = second_uid()
    path = socket_path(runner)
    folder = os.path.dirname(path)
    while folder != "/":  # open the way to the socket for the second user (the first defence, taken down)
        os.chmod(folder, os.stat(folder).st_mode | 0o711)
        folder = os.path.dirname(folder)
    os.chmod(path, 0o777)
    frame = handshake_frame(runner.server.server_dir.token())  # even a stolen token does not help
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the other user, connect, report what the server answered
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as raw:
                raw.settimeout(10)
                raw.connect(path)
                raw.sendall(frame)
                data, _ = read_until_closed(raw)
            os.write(write_end, bytes([os.getuid() == uid, reply_type(data) or 0]) + data[40:400])
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as pipe:
            ready, _, _ = select.select([pipe], [], [], 30)
            report = pipe.read() if ready else b""
    finally:
        _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0 and report[0] == 1, "the child did not run as the second uid"
    assert report[1] == pyro_protocol.MSG_CONNECTFAIL and b"another user" in report
    assert obj.echo(13) == 13
