"""The channel under attack and under failure: tokens, serializers, frames, timeouts, deaths."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from Pyro5 import errors as pyro_errors
from Pyro5.client import Proxy

from dacstyle import errors
from dacstyle.config import config
from dacstyle.container.client import RemoteRunner, Server
from dacstyle.container.client.channel import uri_for
from dacstyle.container.protocol import CONTROL_OBJECT
from dacstyle.runtimes import get_runtime
from dacstyle.runtimes.process import ProcessRuntime
from dacstyle.runtimes.rundir import process_alive
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.testing import probe_benchmark

from conftest import child_pids, readline, wait_gone


@pytest.fixture
def probe(no_leftovers):
    with RemoteRunner(probe_benchmark("t"), runtime="process", call_timeout=10) as runner:
        yield runner, runner.get_object()


def socket_path(runner: RemoteRunner) -> str:
    return str(runner.server.run.path / "host" / "server.sock")


def test_hello_reports_both_sides_versions(probe):
    runner, _ = probe
    hello = runner.server.hello
    for key in ("protocol", "dacstyle", "python", "numpy", "gymnasium", "pyro5", "pid"):
        assert key in hello
    assert hello["pid"] == runner.server.process.pid


def test_proxy_has_exactly_the_served_methods(probe):
    _, obj = probe
    public = {name for name in dir(obj) if not name.startswith("_")}
    assert public == {"echo", "sleep", "fail", "crash", "whereami", "read_file", "list_dir", "environment",
                      "set_timeout", "release"}
    value = {"a": np.arange(6, dtype=np.int16).reshape(2, 3), "b": (1, b"\x00\xff")}
    back = obj.echo(value)
    assert back["a"].dtype == np.int16 and back["a"].tolist() == value["a"].tolist() and back["b"] == value["b"]


def test_methods_outside_the_list_are_refused_by_the_server(probe):
    runner, obj = probe
    with pytest.raises(AttributeError, match="not served"):
        obj._remote.call("__init__")
    with pytest.raises(AttributeError, match="not served"):
        obj._remote.call("tag")


def test_benchmark_exception_arrives_as_same_type_with_remote_traceback(probe):
    _, obj = probe
    with pytest.raises(KeyError) as info:
        obj.fail("KeyError", "no such key")
    assert "Probe.fail" in info.value.remote_traceback or "in fail" in info.value.remote_traceback
    with pytest.raises(ZeroDivisionError):
        obj.fail("ZeroDivisionError", "x")
    assert obj.echo(5) == 5  # still serving


def test_hanging_call_times_out_and_the_object_stays_usable(probe):
    _, obj = probe
    obj.set_timeout(0.5, "sleep")
    started = time.monotonic()
    with pytest.raises(errors.CallTimeoutError):
        obj.sleep(2)
    assert time.monotonic() - started < 2.0
    assert obj.echo("after") == "after"


def test_server_killed_mid_episode_raises_within_one_second(no_leftovers):
    bench = SigmoidBenchmark().set_seed(0)
    with RemoteRunner(bench, runtime="process") as runner:
        env = runner.get_environment()
        env.reset()
        env.step(env.action_space.sample())
        os.kill(runner.server.process.pid, signal.SIGKILL)
        runner.server.process.popen.wait(5)  # the kill is asynchronous; time from its effect
        started = time.monotonic()
        with pytest.raises(errors.ServerDiedError):
            env.step(env.action_space.sample())
        assert time.monotonic() - started < 1.0


def test_server_crash_carries_stderr_tail(no_leftovers):
    with RemoteRunner(probe_benchmark(), runtime="process") as runner:
        obj = runner.get_object()
        obj.environment()  # connected
        with pytest.raises(errors.ServerDiedError):
            obj.crash(7)


HOST_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from dacstyle.container.client import RemoteRunner
    from dacstyle.testing import probe_benchmark
    runner = RemoteRunner(probe_benchmark(), runtime="process").start()
    print(runner.server.process.pid, runner.server.run.path, flush=True)
    time.sleep(60)
    """
)


def test_host_killed_with_sigkill_takes_its_server_down_within_two_seconds(runs_root):
    host = subprocess.Popen([sys.executable, "-c", HOST_SCRIPT], stdout=subprocess.PIPE, text=True)
    try:
        line = readline(host.stdout)
        server_pid, run_path = int(line.split()[0]), line.split()[1]
        assert process_alive(server_pid)
        host.kill()
        host.wait(5)
        assert wait_gone([server_pid], 2.0), "server outlived its host by more than 2 s"
        # what the killed host left (its run folder) is removed by cleanup
        from dacstyle.runtimes.rundir import cleanup_stale

        done = cleanup_stale()
        assert any(run_path in line for line in done)
        assert not os.path.exists(run_path)
    finally:
        host.kill()
        host.wait(5)


def test_wrong_token_is_refused_and_server_keeps_serving(probe):
    runner, obj = probe
    proxy = Proxy(uri_for(f"unix:{socket_path(runner)}", CONTROL_OBJECT))
    proxy._pyroSerializer = "json"
    proxy._pyroHandshake = "not-the-token-" + "x" * 20
    with pytest.raises(pyro_errors.CommunicationError, match="rejected"):
        proxy.hello()
    proxy._pyroRelease()
    assert obj.echo(1) == 1


@pytest.mark.parametrize("serializer", ["serpent", "marshal"])
def test_non_json_serializer_is_refused_even_with_the_token(probe, serializer):
    runner, obj = probe
    proxy = Proxy(uri_for(f"unix:{socket_path(runner)}", CONTROL_OBJECT))
    proxy._pyroSerializer = serializer
    proxy._pyroHandshake = runner.server.run.token()
    with pytest.raises(pyro_errors.PyroError):
        proxy.hello()
    proxy._pyroRelease()
    assert obj.echo(2) == 2


def test_malformed_frames_are_dropped_and_server_keeps_serving(probe):
    runner, obj = probe
    for garbage in (b"GET / HTTP/1.0\r\n\r\n", b"PYRO" + os.urandom(60), b"\x00" * 100):
        with socket.socket(socket.AF_UNIX) as raw:
            raw.settimeout(5)
            raw.connect(socket_path(runner))
            raw.sendall(garbage)
            raw.shutdown(socket.SHUT_WR)
            try:
                while raw.recv(4096):  # the server answers with a refusal, then closes
                    pass
            except ConnectionResetError:  # or it just drops the connection
                pass
    assert obj.echo(3) == 3


def test_oversized_frame_is_rejected_and_server_keeps_serving(no_leftovers):
    config.max_message_size = 1024 * 1024
    with RemoteRunner(probe_benchmark(), runtime="process") as runner:
        obj = runner.get_object()
        assert obj.echo(np.zeros(1000)).shape == (1000,)
        with pytest.raises(errors.ChannelError):
            obj.echo(np.zeros(2 * 1024 * 1024 // 8 + 10))
        other = runner.get_object()
        assert other.echo("still here") == "still here"


class FailingRuntime(ProcessRuntime):
    """The real server entry point, made to fail on import."""

    name = "failing"

    def command(self, spec):
        argv = super().command(spec)
        return [argv[0], "-c", "import sys; sys.stderr.write('ImportError: no module named benchmark_deps\\n'); sys.exit(4)"]


def test_server_dying_on_start_fails_fast_with_stderr(no_leftovers):
    started = time.monotonic()
    with pytest.raises(errors.ServerStartError) as info:
        Server.start(FailingRuntime(), start_timeout=30)
    assert time.monotonic() - started < 5
    assert "benchmark_deps" in str(info.value) and "exit code 4" in str(info.value)


def test_bad_benchmark_spec_raises_benchmark_error_from_the_server(no_leftovers):
    from dacstyle.benchmarks import Benchmark

    bench = Benchmark(name="broken", entry_point="dacstyle.no_such_module:Env")
    with RemoteRunner(bench, runtime="process") as runner:
        with pytest.raises(errors.BenchmarkError, match="no_such_module"):
            runner.get_environment()


def test_runtime_auto_and_unknown(caplog):
    assert get_runtime("process").name == "process"
    with pytest.raises(errors.RuntimeUnavailableError, match="unknown runtime"):
        get_runtime("docker")


def test_process_runtime_warns_that_nothing_is_isolated(no_leftovers):
    with pytest.warns(errors.IsolationWarning, match="isolates nothing"):
        with RemoteRunner(probe_benchmark(), runtime="process"):
            pass


def test_close_is_idempotent_and_leaves_nothing(no_leftovers):
    before = child_pids()
    runner = RemoteRunner(probe_benchmark(), runtime="process").start()
    assert child_pids() - before
    runner.close()
    runner.close()


def test_tcp_endpoint_with_token(no_leftovers):
    """The cross-node path: TCP on an address (loopback here), port chosen by the server."""
    with Server.start(ProcessRuntime(), tcp="127.0.0.1:0") as server:
        assert server.channel.location.startswith("tcp:127.0.0.1:")
        assert not server.channel.location.endswith(":0")
        probe = server.create(probe_benchmark())
        assert probe.echo((1, b"x")) == (1, b"x")
        proxy = Proxy(uri_for(server.channel.location, CONTROL_OBJECT))
        proxy._pyroSerializer = "json"
        proxy._pyroHandshake = "wrong-token-" + "y" * 20
        with pytest.raises(pyro_errors.CommunicationError, match="rejected"):
            proxy.hello()
        proxy._pyroRelease()


def test_closing_an_environment_of_a_dead_server_is_quiet(no_leftovers):
    with RemoteRunner(SigmoidBenchmark().set_seed(0), runtime="process") as runner:
        env = runner.get_environment()
        env.reset()
        os.kill(runner.server.process.pid, signal.SIGKILL)
        runner.server.process.popen.wait(5)
        env.close()
        env.close()


# -- the frame guard, attacked with raw frames (each test fails when its guard is removed) -----------------------
import json as _json
import pwd
import select
import struct
import zlib

from Pyro5 import protocol as pyro_protocol

from dacstyle.container.client.channel import Channel
from dacstyle.container.protocol import PlainJson
from dacstyle.container.server.daemon import HANDSHAKE_DEADLINE, MAX_PENDING

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
        payload = _json.dumps(data).encode()
    if flags & pyro_protocol.FLAGS_COMPRESSED:
        payload = zlib.compress(payload)
    return pyro_frame(pyro_protocol.MSG_CONNECT, payload, serializer=serializer, flags=flags)


def call_frame(method: str, *, object_id: str = CONTROL_OBJECT, params: list | None = None,
               serializer: int = JSON_ID, flags: int = 0, annotations: bytes = b"") -> bytes:
    if serializer == MARSHAL_ID:
        import marshal

        payload = marshal.dumps((object_id, method, params or [], {}))
    else:
        payload = _json.dumps({"object": object_id, "method": method, "params": params or [], "kwargs": {}}).encode()
    if flags & pyro_protocol.FLAGS_COMPRESSED:
        payload = zlib.compress(payload)
    return pyro_frame(pyro_protocol.MSG_INVOKE, payload, serializer=serializer, flags=flags, seq=1,
                      annotations=annotations)


def answer(raw: socket.socket) -> tuple[int, int, object]:
    """Message type, flags and JSON body of the server's next frame."""
    head = raw.recv(40, socket.MSG_WAITALL)
    data_size, ann_size = struct.unpack("!II", head[12:20])
    body = raw.recv(data_size + ann_size, socket.MSG_WAITALL)[ann_size:] if data_size + ann_size else b""
    return head[6], struct.unpack("!H", head[8:10])[0], _json.loads(body) if body else None


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
    raw.sendall(handshake_frame(token or target.server.run.token(), object_id=object_id))
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
    frame = handshake_frame(runner.server.run.token(), serializer=MARSHAL_ID) if serializer == MARSHAL_ID else \
        pyro_frame(pyro_protocol.MSG_CONNECT, repr({"handshake": runner.server.run.token(), "object": CONTROL_OBJECT})
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
        raw.sendall(handshake_frame(runner.server.run.token(), flags=pyro_protocol.FLAGS_COMPRESSED))
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
        raw.sendall(handshake_frame(runner.server.run.token(), pad=64 * 1024))
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
    assert plain.loads(_json.dumps(proxy).encode()) == proxy
    call = {"object": "o", "method": "m", "params": [proxy], "kwargs": {"k": proxy}}
    assert plain.loadsCall(_json.dumps(call).encode()) == ("o", "m", [proxy], {"k": proxy})
    refused = {"__class__": "Pyro5.errors.SecurityError", "__exception__": True, "args": ["no"], "attributes": {}}
    error = plain.loads(_json.dumps(refused).encode())
    assert type(error) is pyro_errors.SecurityError and str(error) == "no"
    other = {"__class__": "subprocess.CalledProcessError", "__exception__": True, "args": [1, "x"], "attributes": {}}
    error = plain.loads(_json.dumps(other).encode())
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
    refusals = refused_calls(socket_path(runner), runner.server.run.token(),
                             [("Pyro.Daemon", m) for m in ("registered", "info", "ping", "get_metadata")])
    assert all("attribute" in text for text in refusals), refusals
    assert obj.echo(9) == 9


def test_agent_endpoint_serves_only_the_agent_methods(no_leftovers):
    bench = probe_benchmark("agent-side")
    bench.agent_methods = ["echo"]
    with Server.start(ProcessRuntime(), agent=True) as server:
        server.create(bench)
        path, token = str(server.run.path / "agent" / "agent.sock"), server.run.token("agent")
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
        channel.invoke(proxy, __import__("threading").Lock(), "hello", (), None)
    proxy._pyroRelease()
    assert obj.echo(10) == 10


def test_idle_connections_do_not_lock_out_the_client(probe):
    """70 connections that send nothing (more than the server's worker pool) while a client connects."""
    runner, obj = probe
    idle = []
    try:
        for _ in range(70):
            idle.append(connect(runner))
        channel = Channel(f"unix:{socket_path(runner)}", runner.server.run.token(), call_timeout=10)
        proxy = channel.proxy(CONTROL_OBJECT)
        try:
            hello = channel.unwrap({"ok": channel.invoke(proxy, __import__("threading").Lock(), "hello", (), None)})
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
    frame = handshake_frame(runner.server.run.token())
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

    def command(self, spec):
        argv = super().command(spec)
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
    frame = handshake_frame(runner.server.run.token())  # even a stolen token does not help
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
