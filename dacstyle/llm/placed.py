"""An OpenAI-compatible server (vLLM) placed by Slurm: a job on a GPU node, reached from the host over mutual TLS.

The host makes the job's folder on the shared directory (the API key and the
run's certificates, 0600) and submits one job whose step runs the model server
through the same runtime and launcher as on one node
(:class:`~dacstyle.llm.container.ContainerLLMService`), on the node's address,
with vLLM's ``--ssl-*`` options. The job publishes ``{url, node, fingerprint}``
once ``/v1/models`` answered it over TLS; the client pins that certificate, so
neither the key nor a prompt crosses the network in clear, and no tunnel is
needed. The host rewrites a heartbeat file while it holds the service; a host
that is gone (``heartbeat_timeout``) or ``stop()`` ends the job.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from ..config import config
from ..errors import ServerStartError, SlurmError
from ..runtimes import Runtime, get_runtime
from ..slurm.job import ServerRequest, SlurmJob, submit_job, wait_published
from ..slurm.shared import HEARTBEAT_FILE, publish_file
from ..slurm.placement import Slurm
from .service import LLMService, generate_api_key

__all__ = ["PlacedLLMService"]


class PlacedLLMService(LLMService):
    """``command`` (without ``--host``/``--port``) served in ``image`` as a Slurm job placed by ``placement``."""

    def __init__(self, command: Sequence[str], *, image: str | os.PathLike[str] | None, placement: Slurm,
                 runtime: str | Runtime = "auto", start_timeout: float = 900.0) -> None:
        super().__init__(command, host="", port=0, api_key=generate_api_key(), start_timeout=start_timeout)
        self.placement = placement
        self.runtime = get_runtime(runtime)
        self.image = Path(image) if image is not None else None
        self.node: str | None = None  # the node the job runs on, once started
        self.job: SlurmJob | None = None

    def __repr__(self) -> str:  # no key
        return f"PlacedLLMService({self.argv[:3]!r}..., job={self.job_id!r}, url={self.url!r})"

    @property
    def job_id(self) -> str | None:
        """The Slurm job id, once submitted."""
        return self.job.job_id if self.job is not None else None

    def start(self) -> "PlacedLLMService":
        """Submit the job and wait until its server answered over TLS; JobEndedError/JobPendingError say why not."""
        from ..container.tls import ClientTLS

        if self.job is not None:
            raise ServerStartError("the service is already started")
        request = ServerRequest(self.placement, self.runtime, image=self.image, gpu=self.placement.gpus > 0,
                                kind="llm", command=list(self.argv), secrets={"host/api_key": self.api_key},
                                idle_timeout=config.heartbeat_timeout, start_timeout=self.start_timeout)
        self.job, = submit_job("llm", [request])
        self.handle, self.server_dir = self.job, self.job.server_dir
        try:
            address = wait_published(self.job, self.start_timeout)  # its certificate checked: this run's
            url = urlsplit(address["url"])
            self.host, self.port = str(url.hostname), int(url.port or 443)
            self.node = str(address["node"])
            folder = self.job.server_dir.path
            self.tls = ClientTLS.from_folder(folder / "client", address["fingerprint"])
            self.job.start_heartbeat(lambda _: publish_file(folder / HEARTBEAT_FILE, os.urandom(8).hex()),
                                     config.heartbeat_timeout / 4)
        except BaseException:
            self.stop()
            raise
        return self

    def beside(self, placement: Slurm) -> Slurm:
        """``placement`` pinned to this service's node: a component placed so reaches the model on its own node."""
        if self.node is None:
            raise SlurmError("start the service first: its node is known once the job runs")
        extra = [word for word in placement.extra if not word.startswith(("--nodelist=", "--exclude="))]
        return replace(placement, extra=[*extra, f"--nodelist={self.node}"])

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel the job; its folder, key and certificates go with it (its log too, unless it failed)."""
        job, self.job = self.job, None
        self.handle = None
        if job is not None:
            job.stop(timeout)

