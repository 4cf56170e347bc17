"""Slurm's own commands, run as argv lists: ``sbatch``, ``scontrol``, ``squeue``, ``scancel``.

Nothing here links against libslurm (that would tie dacstyle to the site's build);
the commands' parsable outputs are read instead. Each call has a timeout, and a
failure is a :class:`~dacstyle.errors.SlurmError` with what the command printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import SlurmError

__all__ = ["JobInfo", "sbatch", "job_info", "scancel", "my_jobs", "available", "ACTIVE_STATES"]

_TIMEOUT_S = 60.0
ACTIVE_STATES = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED",
                           "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "REQUEUE_FED", "REQUEUE_HOLD", "SPECIAL_EXIT"})


def available() -> bool:
    """True when Slurm's client commands are on PATH."""
    return all(shutil.which(name) for name in ("sbatch", "scontrol", "squeue", "scancel"))


def _run(argv: list[str], *, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    if shutil.which(argv[0]) is None:
        raise SlurmError(f"{argv[0]} is not on PATH: is this a Slurm cluster (or a login node with Slurm's commands)?")
    try:
        done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{' '.join(argv)} did not answer within {_TIMEOUT_S:.0f} s") from exc
    if check and done.returncode != 0:
        raise SlurmError(f"{' '.join(argv)} failed (exit {done.returncode}): {(done.stderr or done.stdout).strip()}")
    return done


def sbatch(script: Path, extra: list[str] = ()) -> str:  # type: ignore[assignment]
    """Submit ``script`` with ``sbatch --parsable``; returns the job id."""
    out = _run(["sbatch", "--parsable", *extra, str(script)]).stdout.strip()
    job_id = out.split(";")[0].strip()
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed {out!r} instead of a job id")
    return job_id


@dataclass(frozen=True)
class JobInfo:
    """What ``scontrol show job`` says of one job (or of one component of a heterogeneous job)."""

    job_id: str
    state: str
    reason: str = ""
    nodes: str = ""
    time_limit: str = ""
    exit_code: str = ""
    name: str = ""
    het_offset: str = ""
    fields: dict[str, str] | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def describe(self) -> str:
        """``job 12 FAILED (exit 1:0, reason NonZeroExitCode)``, for error messages."""
        extra = [f"exit {self.exit_code}"] if self.exit_code and self.exit_code != "0:0" else []
        extra += [f"reason {self.reason}"] if self.reason and self.reason != "None" else []
        return f"job {self.job_id} {self.state}" + (f" ({', '.join(extra)})" if extra else "")


def _parse_record(line: str) -> dict[str, str]:
    """``Key=Value Key=Value ...`` (``scontrol -o``): values hold no spaces except in a few known keys."""
    fields: dict[str, str] = {}
    key = None
    for word in line.split(" "):
        name, sep, value = word.partition("=")
        if sep and name and name.replace(":", "").replace("_", "").isalnum() and name[0].isupper():
            key = name
            fields[key] = value
        elif key is not None:  # a value with a space in it (Command, Comment, WorkDir)
            fields[key] += " " + word
    return fields


def job_info(job_id: str) -> list[JobInfo]:
    """Every component of job ``job_id`` (one for an ordinary job), or [] once Slurm has forgotten it."""
    done = _run(["scontrol", "show", "job", "-o", str(job_id)], check=False)
    if done.returncode != 0:
        if "Invalid job id" in done.stderr or "Invalid job id" in done.stdout:
            return []
        raise SlurmError(f"scontrol show job {job_id} failed: {(done.stderr or done.stdout).strip()}")
    infos = []
    for line in filter(None, (line.strip() for line in done.stdout.splitlines())):
        f = _parse_record(line)
        infos.append(JobInfo(job_id=f.get("JobId", str(job_id)), state=f.get("JobState", "UNKNOWN"),
                             reason=f.get("Reason", ""), nodes=f.get("NodeList", ""), time_limit=f.get("TimeLimit", ""),
                             exit_code=f.get("ExitCode", ""), name=f.get("JobName", ""),
                             het_offset=f.get("HetJobOffset", ""), fields=f))
    return infos


def scancel(job_id: str) -> None:
    """Cancel job ``job_id`` (quietly, when it has already ended)."""
    _run(["scancel", str(job_id)], check=False)


def my_jobs(name_prefix: str = "dacstyle") -> list[dict[str, str]]:
    """This user's jobs whose name starts with ``name_prefix``: id, name, state, time used, nodes."""
    user = os.environ.get("USER") or _whoami()
    out = _run(["squeue", "-h", "-u", user, "-o", "%i|%j|%T|%M|%N"]).stdout
    jobs = []
    for line in filter(None, out.splitlines()):
        job_id, name, state, used, nodes = (line.split("|") + [""] * 5)[:5]
        if name.startswith(name_prefix):
            jobs.append({"job_id": job_id, "name": name, "state": state, "time": used, "nodes": nodes})
    return jobs


def _whoami() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
