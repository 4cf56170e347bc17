"""The channel under attack and under failure: tokens, serializers, frames, timeouts, deaths."""

from __future__ import annotations

import os
import signal
import socket
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
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.testing import probe_benchmark

from conftest import child_pids, socket_path


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
        runner.server.process.wait(5)  # the kill is asynchronous; time from its effect
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
    proxy._pyroHandshake = runner.server.server_dir.token()
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

    def exec_argv(self, spec, command):
        return [command[0], "-c", "import sys; sys.stderr.write('ImportError: no module named benchmark_deps\\n'); sys.exit(4)"]


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


def test_closing_an_environment_of_a_dead_server_is_quiet(no_leftovers):
    with RemoteRunner(SigmoidBenchmark().set_seed(0), runtime="process") as runner:
        env = runner.get_environment()
        env.reset()
        os.kill(runner.server.process.pid, signal.SIGKILL)
        runner.server.process.wait(5)
        env.close()
        env.close()


def test_a_spec_declares_which_of_its_own_exceptions_arrive_as_their_type(tmp_path, monkeypatch, no_leftovers):
    """Undeclared, a benchmark's own exception is a RemoteError; declared, it is rebuilt with its attributes."""
    from dacstyle.benchmarks import Benchmark

    (tmp_path / "failing_bench.py").write_text(textwrap.dedent("""\
        class OutOfBudget(Exception):
            def __init__(self, message, spent=0):
                super().__init__(message)
                self.spent = spent

        class Objective:
            def evaluate(self, x):
                raise OutOfBudget("budget exhausted", spent=x)

        def make():
            return Objective()
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    import failing_bench

    spec = dict(name="failing", entry_point="failing_bench:make", methods=["evaluate"])
    with RemoteRunner(Benchmark(**spec), runtime="process") as runner:
        with pytest.raises(errors.RemoteError, match="budget exhausted") as plain:
            runner.get_object().evaluate(3)
    assert plain.value.remote_type == "failing_bench.OutOfBudget"
    with RemoteRunner(Benchmark(**spec, exceptions=["failing_bench:OutOfBudget"]), runtime="process") as runner:
        with pytest.raises(failing_bench.OutOfBudget, match="budget exhausted") as declared:
            runner.get_object().evaluate(7)
    assert declared.value.spent == 7
    with pytest.raises(errors.BenchmarkError, match="do not name exception classes"):
        Benchmark(**spec, exceptions=["failing_bench:make"]).exception_types()


@pytest.mark.parametrize("flag", ["FLAGS_COMPRESSED", "FLAGS_KEEPSERIALIZED"])
def test_the_host_refuses_a_reply_it_would_inflate_or_unmarshal(tmp_path, flag):
    """A hostile server (say a task env taken over) answers the handshake with a zlib bomb: refused unread."""
    import struct
    import threading
    import zlib

    from Pyro5 import protocol as pyro_protocol

    from dacstyle.container.client.channel import Channel

    path = tmp_path / "hostile.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(1)
    bomb = zlib.compress(b"\0" * (64 << 20))  # 64 KiB on the wire, 64 MiB inflated
    header = struct.pack("!4sHBBHHII16sHH", b"PYRO", pyro_protocol.PROTOCOL_VERSION, pyro_protocol.MSG_CONNECTOK, 3,
                         getattr(pyro_protocol, flag), 1, len(bomb), 0, b"\0" * 16, 0, 0x4DC5)

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)  # the host's handshake frame
            conn.sendall(header + bomb)

    server = threading.Thread(target=serve, daemon=True)
    server.start()
    try:
        channel = Channel(f"unix:{path}", "token", call_timeout=10)
        with pytest.raises(errors.ChannelError, match="refused: dacstyle never sends"):
            channel.invoke(channel.proxy(CONTROL_OBJECT), threading.Lock(), "hello", (), None)
    finally:
        server.join(timeout=10)
        listener.close()
