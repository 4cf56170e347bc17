"""What a Slurm job runs: ``python -m dacstyle.slurm.jobmain FOLDER`` (one per job component).

It starts the server the way a host does on one node (``Server.start``: the
same entry point, through the same runtime), but on TCP at this node's address,
port 0, with the run's TLS certificates and an idle timeout (the host's
heartbeat). Only after its own TLS handshake with the server succeeded does it
publish ``{host, port, job_id, het_group, fingerprint}`` (tmp + rename, 0600).
It then waits for the server to end (idle, shut down by the host) or for the job's
time limit, minus ``stop_before_limit``; ``scancel`` (SIGTERM) stops the server
through the handle's own SIGTERM handling. Every way, the server folder goes.

A request of kind ``llm`` starts an OpenAI-compatible server instead
(:class:`~dacstyle.llm.container.ContainerLLMService`, through the same runtime)
on this node's address with the run's certificates, ready once ``/v1/models``
answers over mutual TLS; its host's heartbeat is the ``heartbeat`` file it rewrites.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "node_address", "node_name"]


def node_name() -> str:
    """This node's name as Slurm knows it (what ``--nodelist`` takes), else its host name."""
    return os.environ.get("SLURMD_NODENAME") or socket.gethostname()


def node_address() -> str:
    """This node's address as other nodes reach it (its host name resolved), for a server to bind."""
    for candidate in (socket.gethostname(), node_name()):
        try:
            return socket.gethostbyname(candidate)
        except OSError:
            continue
    return "127.0.0.1"


def _log(message: str) -> None:
    print(f"dacstyle job: {message}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve the request in FOLDER until the host lets go, the job is cancelled, or its time runs out."""
    from ..config import config
    from ..container.client.server import Server
    from ..container.tls import cert_fingerprint
    from ..runtimes import Bind, get_runtime
    from ..runtimes.serverdir import ServerDir
    from . import commands
    from .shared import ADDRESS_FILE, HEARTBEAT_FILE, publish_file

    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m dacstyle.slurm.jobmain FOLDER", file=sys.stderr)
        return 2
    folder = Path(args[0])
    request = json.loads((folder / "request.json").read_text())
    for name, value in request["config"].items():  # the host's settings, not whatever this node's environment says
        setattr(config, name, value)
    server_dir = ServerDir.open(folder)
    job_id = os.environ.get("SLURM_HET_JOB_ID") or os.environ.get("SLURM_JOB_ID", "")
    own_id = os.environ.get("SLURM_JOB_ID", job_id)
    binds = [Bind(src, dst, readonly) for src, dst, readonly in request["binds"]]
    for companion, inside in request.get("companions", []):
        binds.append(_companion_bind(Path(companion), inside, server_dir, config.start_timeout))
    host = node_address()
    fingerprint = cert_fingerprint(folder / "host" / "server.pem")
    _log(f"starting the {request.get('kind', 'server')} on {host} (node {socket.gethostname()})")
    heartbeat: _Heartbeat | None = None
    if request.get("kind") == "llm":
        service = _start_llm(request, server_dir, host, fingerprint)
        handle, close, location = service.handle, service.stop, {"url": service.url}
        heartbeat = _Heartbeat(folder / HEARTBEAT_FILE, request["idle_timeout"]) if request["idle_timeout"] else None
    else:
        server = Server.start(get_runtime(request["runtime"]),
                              image=Path(request["image"]) if request["image"] else None, binds=binds,
                              env=request["env"], gpu=request["gpu"], agent=request["agent"], tcp=f"{host}:0",
                              idle_timeout=request["idle_timeout"], server_dir=server_dir,
                              start_timeout=config.start_timeout, call_timeout=config.call_timeout)
        handle, close = server.process, server.close
        location = {"host": server.channel.location, "agent": server.ready.get("agent")}
    assert handle is not None
    signal.signal(signal.SIGUSR1, lambda *_: None)  # a site's warning signal must not kill the server uncleanly
    publish_file(folder / ADDRESS_FILE, {**location, "job_id": job_id, "het_group": request.get("het_group", 0),
                                         "node": node_name(), "fingerprint": fingerprint})
    _log(f"serving at {location.get('host') or location.get('url')} (job {job_id}, "
         f"component {request.get('het_group', 0)})")
    left = commands.time_left(own_id)
    stop_at = None if left is None else time.monotonic() + left - config.stop_before_limit
    code = 0
    while handle.wait(1.0) is None:
        if stop_at is not None and time.monotonic() >= stop_at:
            _log(f"stopping {config.stop_before_limit:.0f} s before the job's Slurm time limit")
            break
        if heartbeat is not None and heartbeat.stale():
            _log(f"stopping: no heartbeat from the host for {heartbeat.timeout:.0f} s")
            break
    else:
        code = handle.wait(0) or 0
        _log(f"the server ended (exit {code})")
    close()
    return 0 if code in (0, -signal.SIGTERM) else code


def _start_llm(request: dict[str, Any], server_dir: Any, host: str, fingerprint: str) -> Any:
    """The request's OpenAI-compatible server, started on ``host`` with the run's certificates and ready."""
    from ..container.tls import ClientTLS
    from ..llm.container import ContainerLLMService
    from ..llm.service import free_port

    folder = server_dir.path
    port = free_port(host)
    tls = ClientTLS.from_folder(folder / "client", fingerprint)
    service = ContainerLLMService([*request["command"], "--host", host, "--port", str(port)],
                                  image=request["image"], host=host, port=port, runtime=request["runtime"],
                                  gpu=request["gpu"], start_timeout=request["start_timeout"],
                                  api_key=(folder / "host" / "api_key").read_text().strip(), tls=tls)
    service.server_dir = server_dir
    return service.start()


class _Heartbeat:
    """The host's heartbeat file, read on this node: stale once its content has not changed for ``timeout`` s.

    Its content is compared, never its time stamp: the nodes' clocks may differ, and
    opening the file makes a network file system fetch it afresh.
    """

    def __init__(self, path: Path, timeout: float) -> None:
        self.path, self.timeout = path, float(timeout)
        self._seen, self._changed = self._read(), time.monotonic()

    def _read(self) -> str:
        try:
            return self.path.read_text()
        except OSError:
            return ""

    def stale(self) -> bool:
        now, seen = time.monotonic(), self._read()
        if seen != self._seen:
            self._seen, self._changed = seen, now
        return now - self._changed > self.timeout


def _companion_bind(companion: Path, inside: str, server_dir: Any, timeout: float) -> Any:
    """The folder this component binds in to reach a companion's agent endpoint across nodes.

    Once the companion has published, it holds what ``attach`` needs: ``endpoint.json``
    (the agent endpoint's address and the pinned certificate), the agent token, and
    this component's own client certificate (the job has one CA for all components).
    Made in ``companion/NAME`` of this server folder, bound where a local runner binds
    the companion's Unix socket.
    """
    import shutil

    from ..runtimes import Bind
    from .shared import publish_file, published

    deadline = time.monotonic() + timeout
    while (address := published(companion)) is None:
        if time.monotonic() > deadline or not companion.exists():
            raise SystemExit(f"dacstyle job: the companion in {companion} did not publish within {timeout:.0f} s")
        time.sleep(0.1)
    folder = server_dir.path / "companion" / os.path.basename(inside)
    folder.mkdir(mode=0o700, parents=True)
    for name in ("ca.pem", "client.pem", "client.key"):
        shutil.copyfile(server_dir.path / "client" / name, folder / name)
    shutil.copyfile(companion / "agent" / "token", folder / "token")
    for path in folder.iterdir():
        path.chmod(0o600)
    publish_file(folder / "endpoint.json", {"location": address["agent"], "fingerprint": address["fingerprint"]})
    return Bind(str(folder), inside)


if __name__ == "__main__":
    sys.exit(main())
