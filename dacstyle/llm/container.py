"""An OpenAI-compatible server (vLLM) started in an image through a runtime, as a node service.

The API key is random, written 0600 into the run folder that the runtime binds
in, and moved into ``VLLM_API_KEY`` by a tiny launcher inside the container:
never in any process's argv. The server listens on the address given (the
node's), and readiness is ``GET /v1/models`` with the key, while the process
lives (see :class:`~dacstyle.llm.service.LLMService`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

from ..runtimes import Bind, LaunchSpec, Runtime, get_runtime
from ..runtimes.rundir import RunDir
from .service import LLMService, free_port, generate_api_key, node_address

__all__ = ["ContainerLLMService", "vllm_service", "KEY_LAUNCHER"]

KEY_LAUNCHER = (
    "import os, sys; "
    "os.environ['VLLM_API_KEY'] = open(sys.argv[1]).read().strip(); "
    "os.execvp(sys.argv[2], sys.argv[2:])"
)
"""Runs inside the container: read the key file into the environment, then exec the server."""


class ContainerLLMService(LLMService):
    """``command`` (an OpenAI-compatible server) run in ``image`` through ``runtime``."""

    def __init__(
        self,
        command: Sequence[str],
        *,
        image: str | os.PathLike[str] | None,
        host: str,
        port: int,
        runtime: str | Runtime = "auto",
        binds: Sequence[str | Bind] = (),
        gpu: bool = True,
        start_timeout: float = 900.0,
    ) -> None:
        self.runtime = get_runtime(runtime)
        self.run = RunDir.create()
        api_key = generate_api_key()
        self.run.write_secret("host/api_key", api_key)
        self.spec = LaunchSpec(run=self.run, image=Path(image) if image is not None else None,
                               binds=[b if isinstance(b, Bind) else Bind.parse(b) for b in binds], gpu=gpu)
        self._teardown: list[Callable[[], None]] = []
        key_file = f"{self.runtime.run_dir_inside(self.spec)}/api_key"
        self._inner = [self.runtime.python(self.spec), "-c", KEY_LAUNCHER, key_file, *command]
        super().__init__(self._inner, host=host, port=port, api_key=api_key,
                         env=self.runtime.host_env(self.spec), start_timeout=start_timeout)

    def start(self) -> "ContainerLLMService":
        """Prepare the runtime (mounts), start the server and wait for /v1/models."""
        try:
            self._teardown = self.runtime.prepare(self.spec)
            self.argv = self.runtime.exec_argv(self.spec, self._inner)  # needs what prepare() mounted
            self.run.record(runtime=self.runtime.name)
            super().start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server, undo the runtime's preparation, remove the run folder."""
        try:
            super().stop(timeout)
        finally:
            for undo in reversed(self._teardown):
                undo()
            self._teardown = []
            self.run.remove()


def vllm_service(model: str, image: str | os.PathLike[str], *, runtime: str | Runtime = "auto",
                 host: str | None = None, port: int | None = None, extra_args: Sequence[str] = ()) -> ContainerLLMService:
    """A vLLM server for ``model`` from a vLLM image (container/recipes/vllm.def), not yet started."""
    host = host or node_address()
    port = port or free_port(host)
    command = ["vllm", "serve", model, "--host", host, "--port", str(port), *extra_args]
    return ContainerLLMService(command, image=image, host=host, port=port, runtime=runtime)
