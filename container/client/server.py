"""Start a server through a runtime, wait for it, talk to it, stop it.

Readiness is the server's ready line and then the ``hello()`` handshake: a server
that dies on import fails the start at once, with the tail of its stderr. Every
server started here is stopped by :meth:`Server.close`, by a context manager, or
at interpreter exit.
"""

from __future__ import annotations

import atexit
import dataclasses
import json
import threading
import weakref
from pathlib import Path
from typing import Any

from dacstyle import codec
from dacstyle.benchmarks.spec import Benchmark
from dacstyle.errors import ChannelError, DacstyleError, ProtocolMismatchError, ServerStartError
from dacstyle.runtimes import Bind, LaunchSpec, Runtime, ServerProcess
from dacstyle.runtimes.rundir import RunDir

from ..protocol import CONTROL_OBJECT, check_versions
from .channel import Channel
from .proxies import RemoteEnvironment, RemoteHandle, RemoteObject, make_remote_object

__all__ = ["Server"]

_LIVE: "weakref.WeakSet[Server]" = weakref.WeakSet()


@atexit.register
def _close_all_servers() -> None:
    for server in list(_LIVE):
        server.close()


class Server:
    """A running server: its process, private run folder and control channel."""

    def __init__(self, runtime: Runtime, process: ServerProcess, channel: Channel, hello: dict[str, Any]) -> None:
        self.runtime = runtime
        self.process = process
        self.run = process.run
        self.channel = channel
        self.hello = hello
        self._control_lock = threading.Lock()
        self._control = channel.proxy(CONTROL_OBJECT)
        self._handles: list[RemoteHandle] = []
        self._closed = False
        _LIVE.add(self)

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
        start_timeout: float = 60.0,
        call_timeout: float = 60.0,
    ) -> "Server":
        """Start a server and complete the handshake; on failure nothing is left behind.

        ``tcp`` ("HOST:PORT", port 0 for any) serves on TCP instead of the run
        folder's Unix socket, for a host on another node; the token still applies.
        """
        run = RunDir.create(agent=agent)
        spec = LaunchSpec(run=run, image=image, binds=list(binds or []), env=dict(env or {}), gpu=gpu, tcp=tcp)
        process: ServerProcess | None = None
        try:
            process = runtime.start(spec)
            ready = json.loads(process.wait_ready(start_timeout))
            location = f"unix:{run.path / 'host' / 'server.sock'}" if ready["host"].startswith("unix:") else ready["host"]
            channel = Channel(
                location,
                run.token("host"),
                call_timeout=call_timeout,
                server_gone=lambda wait, p=process: p.wait_exit(wait) is not None,
                stderr_tail=run.log_tail,
            )
            control = channel.proxy(CONTROL_OBJECT)
            try:
                hello = channel.invoke(control, threading.Lock(), "hello", (), start_timeout)
            finally:
                control._pyroRelease()
        except BaseException as exc:
            if process is not None:
                try:
                    process.stop(timeout=2.0)
                except Exception:
                    pass
            tail = run.log_tail()
            run.remove()
            if isinstance(exc, DacstyleError) and not isinstance(exc, ChannelError):
                raise
            if isinstance(exc, (ChannelError, ValueError, KeyError)):
                raise ServerStartError(f"the server did not complete the handshake: {exc}", tail) from exc
            raise
        server = cls(runtime, process, channel, hello)
        try:
            check_versions(hello)
        except ProtocolMismatchError:
            server.close()
            raise
        return server

    def control(self, method: str, *args: Any, timeout: float | None = None) -> Any:
        """Call a method of the server's control object."""
        return self.channel.invoke(self._control, self._control_lock, method, args, timeout)

    def create(self, benchmark: Benchmark) -> RemoteEnvironment | RemoteObject:
        """Build ``benchmark`` on the server; returns an environment or object proxy."""
        spec = codec.encode(dataclasses.asdict(benchmark))  # codec data in the frame, not a JSON string inside it
        declared = [t for t in benchmark.exception_types() if t not in self.channel.exceptions]
        self.channel.exceptions = (*self.channel.exceptions, *declared)  # rebuilt as their own type from now on
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
        """Stop the server, its runtime's mounts and remove the run folder (idempotent)."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        for handle in self._handles:
            handle.drop()
        try:
            if self.process.alive():
                try:
                    self.control("shutdown", timeout=2.0)
                except DacstyleError:
                    pass  # stop() below closes the lifeline and kills if needed
            with self._control_lock:
                self._control._pyroClaimOwnership()
                self._control._pyroRelease()
            self.process.stop()
        finally:
            self.run.remove()

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
