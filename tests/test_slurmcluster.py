"""The private Slurm cluster does what the Slurm backend relies on, for real.

Heterogeneous jobs across the cpu and gpu partitions with concurrent steps, arrays, scancel,
a GRES gpu, time limits with a warning signal, and a stop() that leaves no process behind.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

import slurmcluster
from conftest import wait_gone

FINISHED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED"}

# One step of a hetjob: record its variables, then meet the other step (both must run at once).
STEP = """#!/bin/bash
env | grep -E '^(SLURM|SLURMD|CUDA)_' > "$1/env$2"
touch "$1/up$2"
for _ in $(seq 400); do [ -e "$1/up$3" ] && touch "$1/met$2" && exit 0; sleep 0.05; done
exit 1
"""

HETJOB = """#!/bin/bash
#SBATCH --partition=cpu --ntasks=1 --time=2
#SBATCH hetjob
#SBATCH --partition=gpu --ntasks=1 --gpus=1
srun --het-group=0 {step} {dir} 0 1 &
srun --het-group=1 {step} {dir} 1 0 &
wait
"""


def submit(cluster: slurmcluster.Cluster, folder: Path, script: str, *options: str) -> str:
    """sbatch --parsable a script given as text; its job id."""
    path = folder / f"job{len(list(folder.glob('job*')))}.sh"
    path.write_text(script)
    out = cluster.run("sbatch", "--parsable", f"--output={folder}/slurm-%j.out", *options, str(path)).stdout
    return out.strip().split(";")[0]


def records(cluster: slurmcluster.Cluster, job_id: str) -> list[dict[str, str]]:
    """``scontrol show job -o``: one dict per component or array task."""
    lines = cluster.run("scontrol", "show", "job", "-o", job_id).stdout.splitlines()
    return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in lines if line.strip()]


def wait_for(cluster: slurmcluster.Cluster, job_id: str, states: set[str], timeout: float) -> list[dict[str, str]]:
    """Poll until every record of the job is in ``states``; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = records(cluster, job_id)
        if found and all(r["JobState"] in states for r in found):
            return found
        assert time.monotonic() < deadline, f"job {job_id} not in {states} after {timeout} s: {found}"
        time.sleep(0.1)  # polling scontrol with a deadline, as the Slurm backend does


def pid_from(path: Path, timeout: float = 30) -> int:
    """The pid a job script writes to ``path`` once it runs; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not path.exists() or not path.read_text().endswith("\n"):
        assert time.monotonic() < deadline, f"no {path.name} after {timeout} s"
        time.sleep(0.05)  # the job writes it on another node of the cluster: no event to wait on
    return int(path.read_text())


def variables(path: Path) -> dict[str, str]:
    """NAME=value lines from ``env``."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


def test_simple_job_is_listed_then_completes(slurm_cluster, tmp_path: Path):
    job = submit(slurm_cluster, tmp_path, "#!/bin/bash\necho hello $SLURM_JOB_ID\n")
    assert job.isdigit()
    [done] = wait_for(slurm_cluster, job, FINISHED, 30)
    assert (done["JobState"], done["Partition"], done["ExitCode"]) == ("COMPLETED", "cpu", "0:0")
    assert (tmp_path / f"slurm-{job}.out").read_text() == f"hello {job}\n"


def test_hetjob_runs_concurrent_steps_in_both_partitions(slurm_cluster, tmp_path: Path):
    step = tmp_path / "step.sh"
    step.write_text(STEP)
    step.chmod(0o755)
    job = submit(slurm_cluster, tmp_path, HETJOB.format(step=step, dir=tmp_path))
    found = wait_for(slurm_cluster, job, FINISHED, 30)
    assert [(r["HetJobOffset"], r["Partition"], r["JobState"]) for r in found] == [
        ("0", "cpu", "COMPLETED"),
        ("1", "gpu", "COMPLETED"),
    ]
    assert (tmp_path / "met0").exists() and (tmp_path / "met1").exists(), "the two steps never ran at once"
    cpu, gpu = variables(tmp_path / "env0"), variables(tmp_path / "env1")
    assert (cpu["SLURM_JOB_PARTITION"], cpu["SLURMD_NODENAME"]) == ("cpu", "cpu1")
    assert (gpu["SLURM_JOB_PARTITION"], gpu["SLURMD_NODENAME"]) == ("gpu", "gpu1")
    assert gpu["CUDA_VISIBLE_DEVICES"] == "0" and "CUDA_VISIBLE_DEVICES" not in cpu
    assert cpu["SLURM_STEP_ID"] != gpu["SLURM_STEP_ID"]


def test_gpu_partition_holds_exactly_one_gpu(slurm_cluster, tmp_path: Path):
    script = tmp_path / "gpu.sh"
    script.write_text("#!/bin/bash\ntrue\n")
    refused = slurm_cluster.run("sbatch", "--partition=gpu", "--gpus=2", str(script), check=False)
    assert refused.returncode != 0 and "not available" in refused.stderr
    refused = slurm_cluster.run("sbatch", "--partition=cpu", "--gpus=1", str(script), check=False)
    assert refused.returncode != 0


def test_array_job_runs_every_task(slurm_cluster, tmp_path: Path):
    script = f'#!/bin/bash\necho "$SLURM_ARRAY_JOB_ID" > {tmp_path}/task$SLURM_ARRAY_TASK_ID\n'
    job = submit(slurm_cluster, tmp_path, script, "--array=0-3")
    found = wait_for(slurm_cluster, job, FINISHED, 30)
    assert sorted(r["ArrayTaskId"] for r in found) == ["0", "1", "2", "3"]
    assert {r["JobState"] for r in found} == {"COMPLETED"}
    assert [(tmp_path / f"task{i}").read_text() for i in range(4)] == [f"{job}\n"] * 4


def test_scancel_ends_a_running_job_and_its_processes(slurm_cluster, tmp_path: Path):
    job = submit(slurm_cluster, tmp_path, f"#!/bin/bash\nsleep 300 & echo $! > {tmp_path}/pid\nwait\n")
    sleeper = pid_from(tmp_path / "pid")
    assert job in slurm_cluster.run("squeue", "--me", "-h", "-o", "%i").stdout.split()
    assert slurm_cluster.run("squeue", "-j", job, "-h", "-o", "%T").stdout.strip() == "RUNNING"
    slurm_cluster.run("scancel", job)
    [done] = wait_for(slurm_cluster, job, FINISHED, 30)
    assert done["JobState"] == "CANCELLED"
    assert wait_gone([sleeper], 10), "the job's sleep outlived scancel"


@pytest.mark.slow
def test_time_limit_sends_the_warning_signal_first(slurm_cluster, tmp_path: Path):
    # Slurm counts limits in minutes and checks them every 30 s: this takes 60 to 95 s.
    script = (f"#!/bin/bash\ntrap 'echo usr1 >> {tmp_path}/log' USR1\n"
              f"trap 'echo term >> {tmp_path}/log; exit 3' TERM\n"
              "while true; do sleep 300 & wait $!; done\n")
    job = submit(slurm_cluster, tmp_path, script, "--time=1", "--signal=B:USR1@50")
    [done] = wait_for(slurm_cluster, job, FINISHED, 150)
    assert (done["JobState"], done["Reason"]) == ("TIMEOUT", "TimeLimit")
    assert (tmp_path / "log").read_text().split() == ["usr1", "term"]


def test_a_second_cluster_runs_beside_and_stops_clean(slurm_cluster, tmp_path: Path):
    with slurmcluster.start(tmp_path / "c") as cluster:
        assert cluster.conf != slurm_cluster.conf
        daemons = [d.pid for d in cluster._daemons.values()]
        job = submit(cluster, tmp_path, f"#!/bin/bash\nsleep 300 & echo $! > {tmp_path}/pid\nwait\n", "-J", "beside")
        sleeper = pid_from(tmp_path / "pid")
        assert records(cluster, job)[0]["JobName"] == "beside"
        assert "beside" not in slurm_cluster.run("squeue", "-h", "-o", "%j").stdout.split()
    assert wait_gone(daemons + [sleeper], 10)
    mark = f"SLURM_CONF={cluster.conf}".encode()
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and mark in _environ(pid)]


def _environ(pid: str) -> bytes:
    """A process's initial environment, empty when it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return handle.read()
    except OSError:
        return b""
