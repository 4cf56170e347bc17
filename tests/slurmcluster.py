"""A real single-host Slurm cluster in a private folder, for tests and CI.

``start(folder)`` runs its own munged (own key and socket), a slurmctld and one slurmd per node
entry (``slurmd -N``), each on free loopback ports, with every path inside ``folder``: nothing under
/etc/slurm or the system's munge key is touched, so it runs beside a site's Slurm or another copy
of itself. ``Cluster.stop()`` cancels the jobs and ends every daemon and job process it started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

CLUSTER_NAME = "dacstyle-test"
NODES = {"cpu1": "cpu", "gpu1": "gpu"}  # node entry -> its partition; a hetjob needs two entries
CPUS = 4  # per node entry, declared (config_overrides): jobs here mostly sleep
MARKER = "DACSTYLE_SLURM_CLUSTER"  # in every daemon's environment, so stop() finds strays by it
NEEDED = ("munged", "munge", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "scontrol", "scancel", "sinfo")
FOREIGN = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_", "SINFO_", "SCANCEL_")  # an outer Slurm's settings


class ClusterError(RuntimeError):
    """The cluster did not come up; the message carries the daemons' log tails."""


def missing() -> str | None:
    """Why a private cluster cannot run here (a missing binary, not root), or None when it can."""
    absent = [name for name in NEEDED if shutil.which(name, path=_path()) is None]
    if absent:
        return f"{', '.join(absent)} missing (apt-get install slurm-wlm munge)"
    if os.geteuid() != 0:
        return "a private Slurm runs its daemons as SlurmUser=root: run as root"
    return None


@dataclass
class Cluster:
    """A running cluster: its folder, its slurm.conf and the environment its client commands need."""

    folder: Path
    conf: Path
    env: dict[str, str]  # SLURM_CONF and PATH, to merge over os.environ
    nodes: dict[str, str] = field(default_factory=lambda: dict(NODES))
    _daemons: dict[str, subprocess.Popen] = field(default_factory=dict, repr=False)  # in start order

    def run(self, *argv: str, timeout: float = 30.0, check: bool = True) -> subprocess.CompletedProcess:
        """Run a Slurm client command against this cluster; its output as text."""
        return subprocess.run(
            argv, env={**_environ(), **self.env}, capture_output=True, text=True, timeout=timeout, check=check
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every job, end the daemons (TERM, then KILL at the deadline) and any stray job process."""
        deadline = time.monotonic() + timeout
        controller = self._daemons.get("slurmctld")
        if controller and controller.poll() is None:
            try:
                self.run("scancel", "--me", timeout=10, check=False)
                _until(lambda: not self.run("squeue", "-h", timeout=10, check=False).stdout.strip(), 10)
            except subprocess.TimeoutExpired:
                pass  # the sweep below kills what is left
        for daemon in reversed(self._daemons.values()):  # slurmds, slurmctld, then munged
            if daemon.poll() is None:
                daemon.terminate()
            try:
                daemon.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait(5)
        self._daemons.clear()
        _sweep(str(self.folder), str(self.conf))

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start(folder: Path | str, timeout: float = 60.0) -> Cluster:
    """Start munged, slurmctld and the slurmds in ``folder``; return once every node is idle.

    Raises ``ClusterError`` with the daemons' log tails when a daemon dies or the deadline passes.
    A port taken between choosing it and binding it costs a retry on fresh ports, not a failure.
    """
    reason = missing()
    if reason:
        raise ClusterError(reason)
    folder = Path(folder).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    sock = _prepare(folder)
    for attempt in range(3):
        try:
            return _launch(folder, sock, timeout)
        except ClusterError as error:
            if attempt == 2 or "Address already in use" not in str(error):
                raise
    raise AssertionError("unreachable")


def _launch(folder: Path, sock: Path, timeout: float) -> Cluster:
    """One try: a slurm.conf on fresh ports, then the daemons in order, each waited for."""
    conf = folder / "slurm.conf"
    conf.write_text(slurm_conf(folder, sock, _free_ports(1 + len(NODES))))
    cluster = Cluster(folder, conf, {"SLURM_CONF": str(conf), "PATH": _path()})
    daemon_env = {**_environ(), **cluster.env, MARKER: str(folder)}
    try:
        deadline = time.monotonic() + timeout
        munge = folder / "munge"  # --force: munged wants every folder above its socket open to all
        _spawn(cluster, "munged", daemon_env, "munged", "--foreground", "--force", f"--socket={sock}",
               f"--key-file={munge / 'munge.key'}", f"--pid-file={munge / 'munged.pid'}",
               f"--seed-file={munge / 'seed'}")
        _wait(cluster, deadline, lambda: _ok("munge", "-n", "-S", str(sock), stdin=subprocess.DEVNULL), "munged")
        _spawn(cluster, "slurmctld", daemon_env, "slurmctld", "-D", "-i", "-f", str(conf))
        _wait(cluster, deadline, lambda: "UP" in cluster.run("scontrol", "ping", check=False).stdout, "slurmctld")
        for node in NODES:
            _spawn(cluster, f"slurmd-{node}", daemon_env, "slurmd", "-D", "-N", node, "-f", str(conf))
        _wait(cluster, deadline, lambda: _all_idle(cluster), "the slurmds")
    except BaseException:
        cluster.stop()
        raise
    return cluster


def slurm_conf(folder: Path, munge_socket: Path, ports: list[int]) -> str:
    """The slurm.conf text: every path in ``folder``, auth through ``munge_socket``, the given ports."""
    host = socket.gethostname().split(".")[0]
    lines = [
        f"ClusterName={CLUSTER_NAME}",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ports[0]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge_socket}",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}/%n",
        f"SlurmctldPidFile={folder / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'run'}/slurmd-%n.pid",
        f"SlurmctldLogFile={folder / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'log'}/slurmd-%n.log",
        f"PlugStackConfig={folder / 'plugstack.conf'}",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=bf_interval=1",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "MpiDefault=none",
        "ReturnToService=2",
        "SlurmdParameters=config_overrides",
        "KillWait=2",
        "MailProg=/bin/true",
        "GresTypes=gpu",
    ]
    for (node, partition), port in zip(NODES.items(), ports[1:]):
        gres = " Gres=gpu:1" if partition == "gpu" else ""
        lines.append(f"NodeName={node} NodeHostname={host} NodeAddr=127.0.0.1 Port={port} CPUs={CPUS}{gres}")
    for partition in dict.fromkeys(NODES.values()):
        members = ",".join(n for n, p in NODES.items() if p == partition)
        default = " Default=YES" if partition == "cpu" else ""
        lines.append(f"PartitionName={partition} Nodes={members}{default} MaxTime=INFINITE State=UP")
    lines.append(f"PartitionName=all Nodes={','.join(NODES)} MaxTime=INFINITE State=UP")  # where --nodelist decides
    return "\n".join(lines) + "\n"


def _prepare(folder: Path) -> Path:
    """Folders, config files, a fresh munge key (0600); returns the munge socket's path.

    The socket's folder is 0755, as munged demands. The gpu node's one GRES gpu is a link to
    /dev/null: Slurm 22.05 drops a gpu without a File and wants that file to be a device.
    """
    for name in ("state", "run", "log", "munge", "dev", *(f"spool/{node}" for node in NODES)):
        (folder / name).mkdir(parents=True, exist_ok=True)
    gpu = folder / "dev" / "gpu0"
    if not gpu.is_symlink():
        gpu.symlink_to("/dev/null")
    (folder / "gres.conf").write_text("".join(f"NodeName={n} Name=gpu Count=1 File={gpu}\n"
                                              for n, p in NODES.items() if p == "gpu"))
    (folder / "plugstack.conf").write_text("")
    sockets = folder / "munge" / "socket"
    sockets.mkdir(exist_ok=True)
    sockets.chmod(0o755)
    key = folder / "munge" / "munge.key"
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(os.urandom(1024))
    path = sockets / "munge.socket"
    if len(os.fsencode(path)) >= 108:
        raise ClusterError(f"munge socket path {path} is over 107 bytes: use a shorter folder")
    return path


def _spawn(cluster: Cluster, name: str, env: dict[str, str], *argv: str) -> subprocess.Popen:
    """Start one daemon in the foreground, its stderr to log/NAME.stderr, and remember it for stop()."""
    with open(cluster.folder / "log" / f"{name}.stderr", "wb") as out:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    cluster._daemons[name] = process
    return process


def _until(ready: Callable[[], bool], timeout: float) -> bool:
    """Poll ``ready`` with backoff until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline, delay = time.monotonic() + timeout, 0.01
    while not ready():
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)  # polling a foreign daemon with a deadline: it offers no event to wait on
        delay = min(delay * 2, 0.2)
    return True


def _wait(cluster: Cluster, deadline: float, ready: Callable[[], bool], what: str) -> None:
    """Wait for ``ready``; a daemon that dies meanwhile or the deadline raises ClusterError with the log tails."""

    def done() -> bool:
        dead = [(name, d.returncode) for name, d in cluster._daemons.items() if d.poll() is not None]
        if dead:
            raise ClusterError(f"{dead[0][0]} exited with {dead[0][1]}\n{_tails(cluster.folder)}")
        return ready()

    if not _until(done, deadline - time.monotonic()):
        raise ClusterError(f"{what} not ready in time\n{_tails(cluster.folder)}")


def _all_idle(cluster: Cluster) -> bool:
    """True when sinfo lists every node entry as idle."""
    out = cluster.run("sinfo", "-h", "-N", "-o", "%N %t", check=False).stdout.split()
    states = dict(zip(out[::2], out[1::2]))
    return all(states.get(node) == "idle" for node in NODES)


def _ok(*argv: str, **kwargs) -> bool:
    """Whether a command exits with 0 within 10 s."""
    try:
        return subprocess.run(argv, capture_output=True, timeout=10, **kwargs).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _tails(folder: Path, lines: int = 15) -> str:
    """The last lines of every log in the folder, for an error message."""
    parts = []
    for log in sorted((folder / "log").glob("*.stderr")):
        text = log.read_text(errors="replace").splitlines()[-lines:]
        parts.append(f"--- {log.name}\n" + "\n".join(text))
    return "\n".join(parts)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports the kernel calls free now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _environ() -> dict[str, str]:
    """This process's environment without an outer Slurm's variables (tests may run inside a job)."""
    return {name: value for name, value in os.environ.items() if not name.startswith(FOREIGN)}


def _path() -> str:
    """PATH with the folders Debian puts the Slurm and munge binaries in."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    return os.pathsep.join(parts + [p for p in ("/usr/sbin", "/usr/bin", "/sbin") if p not in parts])


def _sweep(folder: str, conf: str) -> None:
    """SIGKILL what is left: daemons' children (slurmstepd) by the marker, job processes by SLURM_CONF."""
    daemon, job = f"{MARKER}={folder}".encode(), f"SLURM_CONF={conf}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                names = handle.read().split(b"\0")
            if daemon in names or (job in names and any(n.startswith(b"SLURM_JOB_ID=") for n in names)):
                os.kill(int(entry), signal.SIGKILL)
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
