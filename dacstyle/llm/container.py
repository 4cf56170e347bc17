"""An OpenAI-compatible server (vLLM) started in an image through a runtime, as a node service.

The API key is random, written 0600 into the server folder that the runtime binds
in, and moved into ``VLLM_API_KEY`` by a tiny launcher inside the container:
never in any process's argv. The server listens on the address given (the
node's), and readiness is ``GET /v1/models`` with the key, while the process
lives. It starts through the one launch path, like every process dacstyle starts
(see :class:`~dacstyle.llm.service.LLMService`).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ..runtimes import Bind, LaunchSpec, Runtime, get_runtime
from ..runtimes.serverdir import ServerDir
from .service import LLMService, free_port, generate_api_key, node_address

if TYPE_CHECKING:
    from ..container.tls import ClientTLS
    from ..slurm import Slurm
    from .placed import PlacedLLMService

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
        api_key: str | None = None,
        tls: ClientTLS | None = None,
    ) -> None:
        super().__init__(command, host=host, port=port, api_key=api_key or generate_api_key(),
                         start_timeout=start_timeout, tls=tls)
        self.runtime = get_runtime(runtime)
        self.image = Path(image) if image is not None else None
        self.binds = [b if isinstance(b, Bind) else Bind.parse(b) for b in binds]
        self.gpu = gpu

    def launch_spec(self, server_dir: ServerDir) -> LaunchSpec:
        """The image, binds and devices; no environment (it would be in the runtime's argv)."""
        return LaunchSpec(server_dir=server_dir, image=self.image, binds=list(self.binds), gpu=self.gpu)

    def command(self, spec: LaunchSpec) -> list[str]:
        """Write the key 0600 into the server folder; the launcher inside moves it into the environment.

        With ``tls``, the server's certificate, key and the run's CA (``server.pem``,
        ``server.key``, ``ca.pem`` in the folder's ``host/``) are vLLM's ``--ssl-*``
        options, and a client certificate of that CA is required (``--ssl-cert-reqs 2``).
        """
        if not (spec.server_dir.path / "host" / "api_key").exists():  # a Slurm job's host wrote it already
            spec.server_dir.write_secret("host/api_key", self.api_key)
        inside = self.runtime.run_dir_inside(spec)
        tls = [] if self.tls is None else [
            "--ssl-certfile", f"{inside}/server.pem", "--ssl-keyfile", f"{inside}/server.key",
            "--ssl-ca-certs", f"{inside}/ca.pem", "--ssl-cert-reqs", str(int(ssl.CERT_REQUIRED))]
        return [self.runtime.python(spec), "-c", KEY_LAUNCHER, f"{inside}/api_key", *self.argv, *tls]


def vllm_service(model: str, image: str | os.PathLike[str], *, runtime: str | Runtime = "auto",
                 host: str | None = None, port: int | None = None, extra_args: Sequence[str] = (),
                 placement: Slurm | None = None) -> ContainerLLMService | PlacedLLMService:
    """A vLLM server for ``model`` from a vLLM image (container/recipes/vllm.def), not yet started.

    With ``placement`` it runs as a Slurm job on the node Slurm picks (its address and
    port are the job's), reached over mutual TLS: see :class:`~dacstyle.llm.placed.PlacedLLMService`.
    """
    if placement is not None:
        from .placed import PlacedLLMService

        if host or port:
            raise ValueError("vllm_service(placement=...) binds the address of the node Slurm picks: give no host or port")
        return PlacedLLMService(["vllm", "serve", model, *extra_args], image=image, placement=placement, runtime=runtime)
    host = host or node_address()
    port = port or free_port(host)
    command = ["vllm", "serve", model, "--host", host, "--port", str(port), *extra_args]
    return ContainerLLMService(command, image=image, host=host, port=port, runtime=runtime)
