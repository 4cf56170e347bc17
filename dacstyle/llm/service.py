"""Start an OpenAI-compatible model server (vLLM) as a service and wait until it is ready.

The API key: ``vllm serve`` accepts ``--api-key KEY`` on its command line, but
anything on a command line is visible to every process on the node
(``/proc/PID/cmdline``, ``ps``), including agent code. vLLM also reads the key
from the ``VLLM_API_KEY`` environment variable (see vLLM's "Environment
Variables" page and its security guide), and an environment is readable only
by the same user. So :func:`vllm_command` puts a random key (``secrets``) in the
environment and keeps it off the argv unless asked. vLLM checks the key only on
``/v1``-style routes and binds every interface unless ``--host`` is given:
always give the node's address (``--host``), never ``0.0.0.0`` on shared nodes.

:class:`LLMService` starts any such command (vLLM, or the fake server in
tests) through the one launch path (``Runtime.launch``: a server folder, the per-run
reaper, ``dacstyle cleanup`` finds it after a crash), waits for readiness on
``GET /v1/models`` with the key while watching the process's exit, with one
deadline, and raises :class:`~dacstyle.errors.ServerStartError` with the tail of
its output on failure.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING

import requests

from ..errors import IsolationWarning, ServerStartError
from ..runtimes import Handle, LaunchSpec, Runtime
from ..runtimes.process import ProcessRuntime
from ..runtimes.serverdir import ServerDir
from ..slurm.jobmain import node_address
from .client import OpenAIClient, http_session

if TYPE_CHECKING:
    from ..container.tls import ClientTLS

__all__ = ["LLMService", "generate_api_key", "vllm_command", "node_address", "free_port"]


def generate_api_key() -> str:
    """A fresh random API key."""
    return secrets.token_urlsafe(32)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free on ``host`` a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def vllm_command(
    model: str,
    host: str,
    port: int,
    api_key: str,
    *,
    extra_args: Sequence[str] = (),
    executable: str = "vllm",
    key_in_argv: bool = False,
) -> tuple[list[str], dict[str, str]]:
    """``(argv, extra_env)`` for ``vllm serve MODEL --host H --port P``.

    The key goes into ``extra_env["VLLM_API_KEY"]``; only with ``key_in_argv``
    is ``--api-key KEY`` added to the argv (visible to every process on the node).
    """
    argv = [executable, "serve", model, "--host", host, "--port", str(int(port)), *extra_args]
    if key_in_argv:
        argv += ["--api-key", api_key]
        return argv, {}
    return argv, {"VLLM_API_KEY": api_key}


class LLMService:
    """A model server process bound to ``host:port``, ready when ``/v1/models`` answers.

    ``argv`` runs on the host as it is (the process runtime), with ``env`` added
    to this environment; :class:`~dacstyle.llm.container.ContainerLLMService`
    runs it in an image instead. With ``tls`` the server speaks HTTPS with the
    run's certificates and every request (readiness included) is pinned mutual TLS.
    """

    runtime: Runtime = ProcessRuntime()

    def __init__(
        self,
        argv: Sequence[str],
        *,
        host: str,
        port: int,
        api_key: str,
        env: dict[str, str] | None = None,
        start_timeout: float = 900.0,
        poll_interval: float = 0.2,
        tls: ClientTLS | None = None,
    ) -> None:
        self.argv = list(argv)
        self.host = host
        self.port = int(port)
        self.api_key = api_key
        self.env = dict(env or {})
        self.start_timeout = float(start_timeout)
        self.poll_interval = float(poll_interval)
        self.tls = tls
        self.handle: Handle | None = None
        self.server_dir: ServerDir | None = None

    def __repr__(self) -> str:  # no key
        return f"LLMService({self.argv[:3]!r}..., url={self.url!r})"

    @property
    def url(self) -> str:
        """The API base, ``http://HOST:PORT/v1`` (``https`` with TLS)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}/v1"

    def client(self, model: str | None = None, **kwargs: object) -> OpenAIClient:
        """An :class:`OpenAIClient` for this service, with its key."""
        return OpenAIClient(self.url, model=model, api_key=self.api_key, tls=self.tls, **kwargs)  # type: ignore[arg-type]

    def launch_spec(self, server_dir: ServerDir) -> LaunchSpec:
        """Where the command runs: here, the host itself with ``env`` added."""
        return LaunchSpec(server_dir=server_dir, env=dict(self.env))

    def command(self, spec: LaunchSpec) -> list[str]:
        """The argv as the runtime runs it (here: ``argv`` itself)."""
        return list(self.argv)

    def start(self) -> "LLMService":
        """Start the process through its runtime and wait until it is ready; returns self."""
        if self.handle is not None:
            raise ServerStartError("the service is already started")
        self.server_dir = self.server_dir or ServerDir.create()  # a Slurm job's service gets its job's folder
        try:
            spec = self.launch_spec(self.server_dir)
            argv = self.command(spec)
            with open(self.server_dir.log_path, "ab") as log, warnings.catch_warnings():
                if isinstance(self.runtime, ProcessRuntime) and type(self) is LLMService:
                    warnings.simplefilter("ignore", IsolationWarning)  # a host command, run as asked
                self.handle = self.runtime.launch(spec, argv, stdin=subprocess.DEVNULL, stdout=log,
                                                  stderr=subprocess.STDOUT)
        except BaseException:
            self.server_dir.remove()
            raise
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        """Poll ``GET /v1/models`` until it answers 200, the process dies, or the deadline passes."""
        assert self.handle is not None
        deadline = time.monotonic() + self.start_timeout
        last = "no answer yet"
        with http_session(self.api_key, self.tls) as session:
            while True:
                code = self.handle.wait(0)
                if code is not None:
                    raise ServerStartError(f"{self.argv[0]} exited with status {code} before it was ready", self.output_tail())
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ServerStartError(
                        f"{self.argv[0]} was not ready on {self.url} within {self.start_timeout:g} s ({last})",
                        self.output_tail(),
                    )
                try:
                    answer = session.get(self.url + "/models", timeout=min(5.0, max(remaining, 0.1)))
                except requests.RequestException as exc:
                    last = type(exc).__name__
                else:
                    if answer.status_code == 200:
                        return
                    if answer.status_code in (401, 403):
                        raise ServerStartError(f"{self.url} refused the API key (HTTP {answer.status_code})", self.output_tail())
                    last = f"HTTP {answer.status_code}"
                # wait for the process to exit or the next poll, whichever comes first
                self.handle.wait(min(self.poll_interval, max(deadline - time.monotonic(), 0.0)))

    def output_tail(self) -> str:
        """The last few KB of the server's stdout and stderr."""
        return self.server_dir.log_tail() if self.server_dir is not None else ""

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process tree, SIGKILL after ``timeout``; the server folder and its log go with it."""
        handle, self.handle = self.handle, None
        if handle is not None:
            handle.stop(timeout)

    def __enter__(self) -> "LLMService":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
