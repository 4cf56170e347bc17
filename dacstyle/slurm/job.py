"""A server as a Slurm job, seen from the host: submit, wait for its published address, stop.

:func:`submit_servers` makes each component's private folder on the shared
directory (token, the run's TLS certificates, ``request.json``: what to serve and
how), renders the one batch script, submits it, and waits: readiness is the
component's published ``address.json`` plus a TLS handshake, polled with backoff
while the job's state is read at each poll (a failed, cancelled or too-long
pending job is a typed error with the log's tail). :class:`SlurmJob` is the
:class:`~dacstyle.runtimes.Handle` of a job: stopping it cancels the job and
removes its folder and, when all went as asked, its log. :func:`attach` reaches
a server some job already runs (``auto:JOBID``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..benchmarks.spec import Benchmark
from ..config import config
from ..errors import ContainerError, DacstyleError, JobEndedError, JobPendingError, SlurmError
from ..runtimes import Bind, Handle, Runtime
from ..runtimes.reaper import clean_server_dir
from ..runtimes.serverdir import ServerDir
from . import commands
from .placement import Slurm
from .script import Component, render
from .shared import published, shared_root

__all__ = ["SlurmJob", "ServerRequest", "submit_servers", "submit_job", "wait_published", "attach"]

_POLL_FIRST_S, _POLL_MAX_S = 0.05, 2.0


@dataclass
class ServerRequest:
    """What one job component serves and how: the same arguments as ``Server.start`` on one node.

    ``kind="llm"`` serves an OpenAI-compatible ``command`` instead (the job adds its
    ``--host``/``--port`` and TLS options); ``secrets`` are written 0600 into the folder
    before the job is submitted (the model server's API key).
    """

    placement: Slurm
    runtime: Runtime
    image: Path | None = None
    binds: list[Bind] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    gpu: bool = False
    agent: bool = False
    benchmark: Benchmark | None = None  # recorded for ``attach``: what the server serves
    idle_timeout: float = 0.0  # the host's heartbeat; 0 for a server clients attach to (``dacstyle submit``)
    companions: list[tuple[int, str]] = field(default_factory=list)  # (component, where its agent endpoint goes)
    kind: str = "server"
    command: list[str] = field(default_factory=list)
    secrets: dict[str, str] = field(default_factory=dict)
    start_timeout: float | None = None  # None: the start_timeout setting

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "command": self.command, "start_timeout": self.start_timeout,
                "runtime": self.runtime.name, "image": str(self.image) if self.image else None,
                "binds": [[b.src, b.dst, b.readonly] for b in self.binds], "env": self.env, "gpu": self.gpu,
                "agent": self.agent, "idle_timeout": self.idle_timeout,
                "benchmark": json.loads(self.benchmark.to_json()) if self.benchmark else None,
                "config": {k: str(v) if isinstance(v, Path) else v for k, v in config.as_dict().items()}}


class SlurmJob(Handle):
    """One component of a Slurm job: query it, wait for it, cancel it (which removes its folder and log)."""

    def __init__(self, job_id: str, server_dir: ServerDir, het_group: int = 0, owned: bool = True) -> None:
        self.job_id = job_id
        self.server_dir = server_dir
        self.het_group = het_group
        self.owned = owned  # False: attached to someone's job; stop() detaches
        self._heartbeat: threading.Event | None = None
        self._canceller = weakref.finalize(self, _cancel, job_id, server_dir.path, self.log) if owned else None

    @property
    def log(self) -> Path:
        """The job's log (its output and the server's stderr), outside the folder: it outlives a failed job."""
        return self.server_dir.log_path

    @property
    def id(self) -> str:
        return self.job_id

    def info(self) -> commands.JobInfo | None:
        """This component's state as Slurm reports it (None once Slurm has forgotten the job)."""
        infos = commands.job_info(self.job_id)
        for info in infos:
            if info.het_offset in ("", str(self.het_group)):
                return info
        return infos[0] if infos else None

    def alive(self) -> bool:
        info = self.info()
        return info is not None and info.active and info.state != "COMPLETING"

    def wait(self, timeout: float | None) -> int | None:
        """The exit code once the job is ending (COMPLETING counts: its processes are being killed)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = _POLL_FIRST_S
        while True:
            info = self.info()
            if info is None or not info.active or info.state == "COMPLETING":
                code = (info.exit_code if info else "").split(":")[0]
                return int(code) if code.isdigit() else 0
            if deadline is not None and time.monotonic() >= deadline:
                return None
            time.sleep(min(delay, _POLL_MAX_S, max(0.0, (deadline or float("inf")) - time.monotonic())))
            delay *= 1.5

    def end_report(self) -> str:
        """How the job ended, for an error message: its final state (waited for a few seconds) and its log's tail."""
        deadline = time.monotonic() + 5.0
        while (info := self.info()) is not None and info.state == "COMPLETING" and time.monotonic() < deadline:
            time.sleep(0.1)
        state = info.describe() if info is not None else f"job {self.job_id} (no longer known to Slurm)"
        return f"{state}; log {self.log}:\n{self.server_dir.log_tail()}"

    def start_heartbeat(self, beat: Callable[[float], None], interval: float) -> None:
        """Call ``beat(interval)`` every ``interval`` seconds, so that the job ends itself once this host is gone.

        A failed beat is ignored: the next call of the user reports what happened.
        """
        stop = self._heartbeat = threading.Event()

        def loop() -> None:
            while not stop.wait(interval):
                try:
                    beat(interval)
                except (DacstyleError, OSError):
                    pass

        threading.Thread(target=loop, name=f"heartbeat-{self.job_id}", daemon=True).start()

    def release(self) -> None:
        """Let the job run on after this host is gone (``dacstyle submit``): stopping only detaches from now on."""
        self.owned = False
        if self._canceller is not None:
            self._canceller.detach()
            self._canceller = None

    def stop(self, timeout: float = 5.0) -> None:
        if self._heartbeat is not None:
            self._heartbeat.set()
        if self._canceller is not None:
            self._canceller()


def _cancel(job_id: str, folder: Path, log: Path) -> None:
    """Cancel the job, wait until Slurm has ended it, then remove its folder and, unless it failed, its log."""
    commands.scancel(job_id)
    deadline = time.monotonic() + 60.0
    failed = False
    while time.monotonic() < deadline:
        infos = commands.job_info(job_id)
        if not any(info.active for info in infos):
            failed = any(info.state not in ("CANCELLED", "COMPLETED") for info in infos)
            break
        time.sleep(0.1)
    clean_server_dir(folder)  # what a job killed mid-cleanup left (a dead image mount, when the node is this one)
    shutil.rmtree(folder, ignore_errors=True)
    if not failed:
        try:
            log.unlink()
        except OSError:
            pass


def submit_servers(name: str, requests: list[ServerRequest], start_timeout: float | None = None) -> list[Any]:
    """Submit one job with a component per request; returns their Servers once each has published and answered.

    On any failure the job is cancelled and nothing is left behind.
    """
    jobs = submit_job(name, requests)
    servers: list[Any] = []
    try:
        for job, request in zip(jobs, requests):
            servers.append(_connect(job, request.runtime, start_timeout or config.start_timeout))
            if request.idle_timeout:
                job.start_heartbeat(servers[-1].heartbeat, request.idle_timeout / 3)
    except BaseException:
        for job in jobs:
            job.stop()
        raise
    return servers


def submit_job(name: str, requests: list[ServerRequest]) -> list[SlurmJob]:
    """Make each component's folder on the shared directory, render the one script, submit it: one SlurmJob each.

    A folder holds the token, the run's TLS certificates (one CA per job: a component
    can be a client of another) and ``request.json``. Nothing is left when it fails.
    """
    from ..container.client.certs import RunCA

    root = shared_root()
    folders: list[ServerDir] = []
    log = root / "logs" / f"{name}-{os.urandom(4).hex()}.log"
    try:
        components = []
        ca = RunCA(name)
        for index, request in enumerate(requests):
            folder = ServerDir.create(root=root / "servers", agent=request.agent)
            folders.append(folder)
            folder.record(log=str(log), het_group=index, slurm=True)
            ca.write_server_dir(folder.path)
            for secret, value in request.secrets.items():
                folder.write_secret(secret, value)
            data = request.to_json()
            data["het_group"] = index
            data["companions"] = [[str(folders[other].path), inside] for other, inside in request.companions]
            (folder.path / "request.json").write_text(json.dumps(data, indent=1))
            argv = [sys.executable, "-m", "dacstyle.slurm.jobmain", str(folder.path)]
            components.append(Component(request.placement, argv))
        script = folders[0].path / "job.sbatch"
        script.write_text(render(f"dacstyle-{name}", f"dacstyle server(s) for {name}", components, str(log)))
        job_id = commands.sbatch(script)
    except BaseException as exc:  # no job yet: the folders are all there is to undo
        for folder in folders:
            folder.remove()
        if isinstance(exc, OSError):
            raise ContainerError(f"cannot prepare the Slurm job in {root}: {exc}") from exc
        raise
    for folder in folders:
        folder.record(job_id=job_id)
    return [SlurmJob(job_id, folder, het_group=i) for i, folder in enumerate(folders)]


def wait_published(job: SlurmJob, start_timeout: float) -> dict[str, Any]:
    """The component's published address, polled with backoff; JobEndedError/JobPendingError/SlurmError else.

    Its ``fingerprint`` is checked to be this run's server certificate (SlurmError otherwise).
    """
    pending_since = time.monotonic()
    running_since: float | None = None
    delay = _POLL_FIRST_S
    while True:
        address = published(job.server_dir.path)
        if address is not None:
            return _pinned(job, address)
        info = job.info()
        now = time.monotonic()
        if info is None or not info.active:
            raise JobEndedError(f"Slurm {info.describe() if info else f'job {job.job_id}'} before its server was "
                                f"ready (log: {job.log})", job.server_dir.log_tail(), info.state if info else "")
        if info.state == "PENDING":
            if now - pending_since > config.pending_timeout:
                raise JobPendingError(f"Slurm job {job.job_id} stayed pending for {config.pending_timeout:.0f} s "
                                      f"(reason {info.reason}); it was cancelled. Raise pending_timeout to wait longer")
        else:
            running_since = running_since or now
            if now - running_since > start_timeout:
                raise JobEndedError(f"the server of Slurm job {job.job_id} did not publish its address within "
                                    f"{start_timeout:.0f} s of the job starting", job.server_dir.log_tail(), info.state)
        time.sleep(delay)
        delay = min(delay * 1.5, _POLL_MAX_S)


def _pinned(job: SlurmJob, address: dict[str, Any]) -> dict[str, Any]:
    """``address`` when the certificate it names is this run's server certificate; SlurmError else."""
    from ..container.tls import cert_fingerprint

    expected = cert_fingerprint(job.server_dir.path / "host" / "server.pem")
    if address.get("fingerprint") != expected:
        raise SlurmError(f"job {job.job_id} published certificate {address.get('fingerprint')}, not this run's "
                         f"{expected}: refusing it")
    return address


def _connect(job: SlurmJob, runtime: Runtime, start_timeout: float) -> Any:
    """Wait for the component's address, then handshake over TLS with its pinned certificate."""
    from ..container.client.channel import Channel
    from ..container.client.server import Server, handshake
    from ..container.tls import ClientTLS

    address = wait_published(job, start_timeout)
    folder = job.server_dir.path
    channel = Channel(address["host"], job.server_dir.token("host"), call_timeout=config.call_timeout,
                      server_gone=lambda wait: job.wait(max(wait, 5.0)) is not None, stderr_tail=job.end_report,
                      tls=ClientTLS.from_folder(folder / "client", address["fingerprint"]),
                      token_file=str(folder / "host" / "token"))
    return Server.checked(runtime, job, channel, handshake(channel, start_timeout), address)


def submit(benchmark: Benchmark, placement: Slurm, runtime: str | None = None, image: str | None = None) -> str:
    """Start ``benchmark``'s server as a long-lived job that clients attach to; returns the job id.

    The job runs until ``scancel`` (or ``dacstyle jobs cancel``) or its time limit: no heartbeat.
    """
    from ..container.client.runner import RemoteRunner

    runner = RemoteRunner(benchmark, runtime, image, placement=placement)
    runner._heartbeat = False
    try:
        runner.start()
        job = runner.server.process
        assert isinstance(job, SlurmJob)
        job.release()
    finally:
        runner.close()  # detaches: the job was released
    return job.job_id


def cancel(job_id: str) -> list[str]:
    """Cancel a dacstyle job and remove its folders (and logs) once Slurm has ended it; returns what was removed."""
    root = shared_root()
    folders = []
    for folder in (root / "servers").iterdir():
        try:
            owner = json.loads((folder / "owner.json").read_text())
        except (OSError, ValueError):
            continue
        if str(owner.get("job_id")) == str(job_id):
            folders.append((folder, Path(owner.get("log") or root / "logs" / "none")))
    if not folders and not commands.job_info(job_id):
        raise SlurmError(f"no job {job_id} is known to Slurm or has a folder in {root}")
    commands.scancel(job_id)
    for folder, log in folders:  # the first waits for Slurm to end the job
        _cancel(job_id, folder, log)
    return [str(folder) for folder, _ in folders]


def find_job(job_id: str) -> tuple[ServerDir, dict[str, Any]]:
    """The folder and published address of the main component of job ``job_id`` (``auto:JOBID``)."""
    root = shared_root() / "servers"
    found = []
    for folder in root.iterdir():
        try:
            address = published(folder)
        except SlurmError:
            continue
        if address is not None and str(address.get("job_id")) == str(job_id):
            found.append((int(address.get("het_group", 0)), folder, address))
    if not found:
        raise SlurmError(f"no dacstyle server of job {job_id} has published an address in {root} "
                         "(still starting, ended, or another user's shared_dir?)")
    _, folder, address = max(found, key=lambda item: item[0])  # a het job's last component is the main server
    return ServerDir.open(folder), address


def attach(job_id: str) -> tuple[Any, Benchmark | None]:
    """A Server for the job ``job_id`` runs already (its close() detaches), and the spec it serves."""
    from ..runtimes import RUNTIMES

    server_dir, address = find_job(job_id)
    job = SlurmJob(str(job_id), server_dir, het_group=int(address.get("het_group", 0)), owned=False)
    request = json.loads((server_dir.path / "request.json").read_text())
    server = _connect(job, RUNTIMES[request["runtime"]](), config.start_timeout)
    spec = Benchmark.from_json(json.dumps(request["benchmark"])) if request.get("benchmark") else None
    return server, spec
