"""Start the benchmark server through a runtime, wait for it, talk to it, stop it.

The server's own argv (:func:`server_argv`), its ready line and the ``hello()``
handshake live here; the runtime only runs the argv and hands back a handle.
Readiness is the ready line (an event on the server's stdout, or its end when the
server dies) and then the handshake: a server that dies on import fails the start
at once, with the tail of its stderr. The handle stops the server and cleans its
run on :meth:`Server.close`, when collected, at interpreter exit, on SIGTERM, and
(through its reaper) when the host is killed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import select
import threading
import time
from pathlib import Path
from typing import Any

from dacstyle import codec
from dacstyle.benchmarks.spec import Benchmark
from dacstyle.config import config
from dacstyle.errors import ChannelError, DacstyleError, ProtocolMismatchError, ServerStartError
from dacstyle.runtimes import PIPE, Bind, Handle, LaunchSpec, LocalProcess, Runtime
from dacstyle.runtimes.serverdir import ServerDir

from ..protocol import CONTROL_OBJECT, READY_PREFIX, check_versions
from ..tls import ClientTLS, cert_fingerprint
from .channel import Channel
from .proxies import RemoteEnvironment, RemoteHandle, RemoteObject, make_remote_object

__all__ = ["Server", "handshake", "server_argv", "server_network", "wait_ready"]

SERVER_MODULE = "dacstyle.container.server"


def server_argv(runtime: Runtime, spec: LaunchSpec, tcp: str | None = None, idle_timeout: float = 0.0) -> list[str]:
    """The server's argv, with paths as the server sees them in ``runtime``: the same entry point everywhere.

    With ``tcp`` ("HOST:PORT") both endpoints listen on TCP with mutual TLS, from the
    certificates in the server folder's ``host/`` part.
    """
    inside = runtime.run_dir_inside(spec)
    argv = [runtime.python(spec), "-m", SERVER_MODULE, "--token-file", f"{inside}/token",
            "--max-message-size", str(config.max_message_size)]
    argv += ["--tcp", tcp, "--tls-dir", inside] if tcp else ["--socket", f"{inside}/server.sock"]
    if idle_timeout:
        argv += ["--idle-timeout", str(idle_timeout)]
    if spec.server_dir.has_agent:
        agent = runtime.agent_dir_inside(spec)
        where = ["--agent-tcp", tcp.rpartition(":")[0] + ":0"] if tcp else ["--agent-socket", f"{agent}/agent.sock"]
        argv += [*where, "--agent-token-file", f"{agent}/token"]
    return argv


def server_network(tcp: str | None) -> bool:
    """Whether a server's sandbox keeps the network: only when it listens on TCP or ``sandbox_network`` is set."""
    return bool(tcp) or config.sandbox_network


def wait_ready(handle: LocalProcess, timeout: float) -> dict[str, Any]:
    """The server's ready line (its JSON object), or ServerStartError when it dies or the deadline passes."""
    stdout = handle.stdout
    assert stdout is not None, "the server must be launched with stdout=PIPE"
    deadline = time.monotonic() + timeout
    buffer = b""
    while b"\n" not in buffer:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ServerStartError(f"server did not become ready within {timeout:.0f} s", handle.server_dir.log_tail())
        if select.select([stdout], [], [], remaining)[0]:
            chunk = os.read(stdout.fileno(), 4096)
            if not chunk:
                code = handle.wait(2.0)
                raise ServerStartError(f"server exited during start-up (exit code {code})", handle.server_dir.log_tail())
            buffer += chunk
    stdout.close()
    line = buffer.split(b"\n", 1)[0].decode("utf-8", "replace")
    if not line.startswith(READY_PREFIX):
        raise ServerStartError(f"server printed {line[:200]!r} instead of its ready line", handle.server_dir.log_tail())
    try:
        return dict(json.loads(line[len(READY_PREFIX):]))
    except ValueError as exc:
        raise ServerStartError(f"server printed a malformed ready line {line[:200]!r}", handle.server_dir.log_tail()) from exc


def _client_tls(folder: ServerDir) -> ClientTLS:
    """The host's TLS for a TCP server: the folder's certificates (made now by a new RunCA when it has none).

    The server's certificate and key are in ``host/`` (bound into the container);
    the client's in ``client/``, which no container sees.
    """
    server_pem = folder.path / "host" / "server.pem"
    if server_pem.exists():
        fingerprint = cert_fingerprint(server_pem)
    else:
        from .certs import RunCA

        fingerprint = RunCA().write_server_dir(folder.path)
    return ClientTLS.from_folder(folder.path / "client", fingerprint)


def handshake(channel: Channel, timeout: float) -> dict[str, Any]:
    """The server's ``hello()`` on a proxy of its own (the first call: connection, TLS and token checked)."""
    control = channel.proxy(CONTROL_OBJECT)
    try:
        return channel.invoke(control, threading.Lock(), "hello", (), timeout)
    finally:
        control._pyroRelease()


class Server:
    """A running server: its handle (process and server folder) and control channel."""

    def __init__(self, runtime: Runtime, process: Handle, channel: Channel, hello: dict[str, Any]) -> None:
        self.runtime = runtime
        self.process = process
        self.server_dir = process.server_dir
        self.channel = channel
        self.hello = hello
        self.ready: dict[str, Any] = {}  # the server's ready line: its endpoints' locations
        self._control_lock = threading.Lock()
        self._control = channel.proxy(CONTROL_OBJECT)
        self._beat_lock = threading.Lock()
        self._beat = channel.proxy(CONTROL_OBJECT)  # a connection of its own: a slow call never delays a beat
        self._handles: list[RemoteHandle] = []
        self._closed = False

    @classmethod
    def start(
        cls,
        runtime: Runtime,
        *,
        image: Path | None = None,
        binds: list[Bind] | None = None,
        env: dict[str, str] | None = None,
        gpu: bool = False,
        agent: bool = False,
        tcp: str | None = None,
        idle_timeout: float = 0.0,
        server_dir: ServerDir | None = None,
        start_timeout: float = 60.0,
        call_timeout: float = 60.0,
    ) -> "Server":
        """Start a server and complete the handshake; on failure nothing is left behind.

        ``tcp`` ("HOST:PORT", port 0 for any) serves on TCP with mutual TLS instead of
        the server folder's Unix socket, for a host on another node; the token still
        applies, and the run's certificates are made in the folder unless it has them
        (a Slurm job's folder, made by its host). ``idle_timeout``: the server stops
        when no call came for that long (the host's heartbeat calls).
        """
        folder = server_dir or ServerDir.create(agent=agent)
        spec = LaunchSpec(server_dir=folder, image=image, binds=list(binds or []), env=dict(env or {}), gpu=gpu,
                          network=server_network(tcp))
        process: Handle | None = None
        try:
            tls = _client_tls(folder) if tcp else None
            with open(folder.log_path, "ab") as log:
                process = runtime.launch(spec, server_argv(runtime, spec, tcp, idle_timeout),
                                         stdin=PIPE, stdout=PIPE, stderr=log)
            assert isinstance(process, LocalProcess)
            ready = wait_ready(process, start_timeout)
            location = f"unix:{folder.path / 'host' / 'server.sock'}" if ready["host"].startswith("unix:") else ready["host"]
            channel = Channel(
                location,
                folder.token("host"),
                call_timeout=call_timeout,
                server_gone=lambda wait, p=process: p.wait(wait) is not None,
                stderr_tail=folder.log_tail,
                tls=tls,
            )
            hello = handshake(channel, start_timeout)
        except BaseException as exc:
            tail = folder.log_tail()
            if process is not None:
                try:
                    process.stop(timeout=2.0)
                except Exception:
                    pass
            folder.remove()
            if isinstance(exc, DacstyleError) and not isinstance(exc, ChannelError):
                raise
            if isinstance(exc, (ChannelError, ValueError, KeyError)):
                raise ServerStartError(f"the server did not complete the handshake: {exc}", tail) from exc
            raise
        return cls.checked(runtime, process, channel, hello, ready)

    @classmethod
    def checked(cls, runtime: Runtime, process: Handle, channel: Channel, hello: dict[str, Any],
                ready: dict[str, Any]) -> "Server":
        """The Server of a completed handshake; when the versions differ it is closed and ProtocolMismatchError raised."""
        server = cls(runtime, process, channel, hello)
        server.ready = ready
        try:
            check_versions(hello)
        except ProtocolMismatchError:
            server.close()
            raise
        return server

    def control(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call a method of the server's control object."""
        return self.channel.invoke(self._control, self._control_lock, method, args, timeout)

    def heartbeat(self, timeout: float) -> None:
        """Tell the server this host is alive (a Slurm job ends itself when these stop)."""
        self.channel.invoke(self._beat, self._beat_lock, "hello", (), timeout)

    def create(self, benchmark: Benchmark) -> RemoteEnvironment | RemoteObject:
        """Build ``benchmark`` on the server; returns an environment or object proxy."""
        spec = codec.encode(dataclasses.asdict(benchmark))  # codec data in the frame, not a JSON string inside it
        self.channel.declare(benchmark)  # its own exception types are rebuilt as themselves from now on
        description = self.channel.unwrap(self.control("create", spec))
        handle = RemoteHandle(self.channel, description["id"], release=self._release)
        self._handles.append(handle)
        if description["kind"] == "environment":
            return RemoteEnvironment(handle, description)
        class_name = "Remote" + "".join(p.capitalize() for p in benchmark.name.replace("-", "_").split("_"))
        return make_remote_object(handle, description["methods"], class_name)

    def _release(self, object_id: str) -> None:
        if not self._closed and self.process.alive():
            self.control("release", object_id, timeout=10.0)

    def close(self) -> None:
        """Stop the server, its runtime's mounts and remove the server folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        for handle in self._handles:
            handle.drop()
        try:
            if self.process.owned and self.process.alive():
                try:
                    self.control("shutdown", timeout=2.0)
                except DacstyleError:
                    pass  # stop() below closes the lifeline and kills if needed
            for proxy, lock in ((self._control, self._control_lock), (self._beat, self._beat_lock)):
                with lock:
                    proxy._pyroClaimOwnership()
                    proxy._pyroRelease()
        finally:
            self.process.stop()  # ends the server's tree and removes the server folder

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
