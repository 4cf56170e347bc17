"""Servers as Slurm jobs, against a real single-host Slurm (tests/slurmcluster.py): no fake.

The job runs the same server entry point through the same runtime as on one node,
on TCP with mutual TLS; these tests check what a cluster user relies on: the same
trajectory as the local env, nothing left after close() or scancel, a typed error
within seconds when the job goes, a job that ends itself when its host is killed,
the time limit honoured, pending and failing jobs reported, and no secret on the wire.

Refresh the golden batch scripts after an intended change with::

    DACSTYLE_REFRESH_GOLDEN=1 pytest tests/test_slurm.py -k golden
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from dacstyle import RemoteRunner, errors
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.config import config
from dacstyle.slurm import Slurm
from dacstyle.slurm.commands import job_info
from dacstyle.slurm.script import Component, render

from conftest import assert_golden, loopback_capture

CPU = Slurm(partition="cpu", time="5")


def _trajectory(env, seed: int, steps: int = 12) -> list:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [np.asarray(obs)]
    for _ in range(steps):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        out.append((np.asarray(obs), reward, terminated, truncated))
        if terminated or truncated:
            break
    return out


def _step_until_error(env, seconds: float) -> None:
    """Step (resetting at each episode's end) until a call raises, for at most ``seconds``."""
    deadline = time.monotonic() + seconds
    env.reset(seed=0)
    while time.monotonic() < deadline:
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
        time.sleep(0.02)


def test_a_slurm_placed_sigmoid_is_bit_for_bit_the_local_env(shared):
    local = SigmoidBenchmark().set_seed(3).build()
    expected = _trajectory(local, 3)
    with RemoteRunner(SigmoidBenchmark().set_seed(3), runtime="process", placement=CPU) as runner:
        assert runner.job_id is not None and runner.job_id.isdigit()
        assert runner.server.channel.location.startswith("tcp:") and runner.server.channel.tls is not None
        got = _trajectory(runner.get_environment(), 3)
        job_id = runner.job_id
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert repr(a) == repr(b)
    assert all(not info.active for info in job_info(job_id))


def test_the_job_runs_the_bwrap_runtime_with_the_packed_image(shared, packed_image):
    with RemoteRunner(SigmoidBenchmark().set_seed(4), runtime="bwrap", image=packed_image, placement=CPU) as runner:
        env = runner.get_environment()
        obs, _ = env.reset(seed=4)
        assert runner.server.hello["protocol"] and runner.runtime.name == "bwrap"
        assert np.asarray(obs).shape == env.observation_space.shape


def test_scancel_mid_episode_raises_a_typed_error_within_seconds(shared, slurm_cluster):
    with RemoteRunner(SigmoidBenchmark().set_seed(5), runtime="process", placement=CPU) as runner:
        env = runner.get_environment()
        env.reset(seed=5)
        slurm_cluster.run("scancel", runner.job_id)
        started = time.monotonic()
        with pytest.raises(errors.ChannelError) as caught:
            _step_until_error(env, 30)
        assert time.monotonic() - started < 10
    assert isinstance(caught.value, (errors.ServerDiedError, errors.ClosedError)), caught.value
    assert "CANCELLED" in str(caught.value) or "died" in str(caught.value)


def test_a_job_that_fails_at_start_is_a_typed_error_with_its_log(shared):
    broken = SigmoidBenchmark().set_seed(0)
    broken.entry_point = "no_such_module_here:Nothing"
    with pytest.raises((errors.JobEndedError, errors.ServerStartError, errors.BenchmarkError)) as caught:
        with RemoteRunner(broken, runtime="process", placement=CPU) as runner:
            runner.get_environment()
    assert "no_such_module_here" in str(caught.value)
    for log in (shared / "logs").iterdir():
        log.unlink()  # a failed job keeps its log for the user; this test has read it


def test_a_job_pending_past_the_limit_is_cancelled_and_reported(shared):
    config.pending_timeout = 2
    later = Slurm(partition="cpu", time="5", extra=["--begin=now+1hour"])
    with pytest.raises(errors.JobPendingError, match="pending"):
        RemoteRunner(SigmoidBenchmark(), runtime="process", placement=later).start()


def test_the_time_limit_is_honoured_and_the_error_says_so(shared):
    config.stop_before_limit = 52  # a 1-minute job stops its server after about 8 s
    with RemoteRunner(SigmoidBenchmark().set_seed(6), runtime="process", placement=Slurm(partition="cpu", time="1")) as runner:
        env = runner.get_environment()
        with pytest.raises(errors.ServerDiedError) as caught:
            _step_until_error(env, 40)
    assert "time limit" in str(caught.value)


def test_a_killed_host_leaves_a_job_that_ends_itself(shared, slurm_cluster, tmp_path):
    script = tmp_path / "host.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        from dacstyle import RemoteRunner
        from dacstyle.benchmarks import SigmoidBenchmark
        from dacstyle.config import config
        from dacstyle.slurm import Slurm
        config.shared_dir = {str(shared)!r}
        config.heartbeat_timeout = 3
        runner = RemoteRunner(SigmoidBenchmark(), runtime="process", placement=Slurm(partition="cpu", time="5")).start()
        runner.get_environment().reset(seed=0)
        print(runner.job_id, flush=True)
        time.sleep(600)
    """))
    host = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, **slurm_cluster.env})
    try:
        job_id = host.stdout.readline().strip()
        assert job_id.isdigit(), "the host did not start its job"
        host.send_signal(signal.SIGKILL)
        host.wait(10)
        deadline = time.monotonic() + 30
        while any(info.active for info in job_info(job_id)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(info.active for info in job_info(job_id)), "the job outlived its host's heartbeat"
    finally:
        host.kill()
        host.wait()
        host.stdout.close()
    for log in (shared / "logs").iterdir():
        log.unlink()  # the host never came back to remove it


def test_the_token_never_crosses_the_network_in_clear(shared, tmp_path):
    """tcpdump on loopback (where the job's server listens here) during a whole episode."""
    capture = tmp_path / "lo.pcap"
    with loopback_capture(capture):
        with RemoteRunner(SigmoidBenchmark().set_seed(7), runtime="process", placement=CPU) as runner:
            env = runner.get_environment()
            _trajectory(env, 7)
            token = runner.server.server_dir.token()
            port = int(runner.server.channel.location.rpartition(":")[2])
    data = capture.read_bytes()
    assert port.to_bytes(2, "big") in data and len(data) > 10_000  # the episode's traffic is in the capture
    assert token.encode() not in data


@pytest.mark.parametrize("case", ["server", "hetjob"])
def test_golden_batch_scripts(case):
    python = "/opt/venv/bin/python3"
    cpu = Slurm(partition="cpu", time="00:30:00", cpus=2, mem="4G", extra=["--account=abc"])
    components = [Component(cpu, [python, "-m", "dacstyle.slurm.jobmain", "/shared/servers/aaaa1111"])]
    if case == "hetjob":
        gpu = Slurm(partition="gpu", gpus=1)
        components.append(Component(gpu, [python, "-m", "dacstyle.slurm.jobmain", "/shared/servers/bbbb2222"]))
    text = render("dacstyle-sigmoid", "dacstyle server(s) for sigmoid", components, "/shared/logs/sigmoid-x.log")
    assert_golden(f"slurm_{case}.sbatch", text, __file__)


def test_shared_dir_must_be_set_and_yours(tmp_path):
    from dacstyle.slurm.shared import shared_root

    config.shared_dir = None
    with pytest.raises(errors.SlurmError, match="shared_dir"):
        shared_root()
    open_folder = tmp_path / "open"
    open_folder.mkdir()
    open_folder.chmod(0o777)
    config.shared_dir = open_folder
    with pytest.raises(errors.SlurmError, match="writable by others"):
        shared_root()
    config.shared_dir = "/dev/shm/dacstyle-test-shared"
    try:
        with pytest.raises(errors.SlurmError, match="tmpfs"):
            shared_root()
    finally:
        os.rmdir("/dev/shm/dacstyle-test-shared") if os.path.isdir("/dev/shm/dacstyle-test-shared") else None


def test_a_placement_rejects_bad_options():
    with pytest.raises(ValueError):
        Slurm(time="half an hour")
    with pytest.raises(ValueError):
        Slurm(extra=["--account abc"])
    with pytest.raises(ValueError):
        Slurm(partition="cpu\n#SBATCH --uid=0")
    assert Slurm.parse("partition=cpu,time=10,cpus=2,account=abc") == Slurm(partition="cpu", time="10", cpus=2,
                                                                           extra=["--account=abc"])


def test_an_address_file_others_could_have_written_is_refused(tmp_path):
    from dacstyle.slurm.shared import published

    assert published(tmp_path) is None
    (tmp_path / "address.json").write_text(json.dumps({"host": "tcp:10.0.0.9:1"}))
    (tmp_path / "address.json").chmod(0o644)
    with pytest.raises(errors.SlurmError, match="0600"):
        published(tmp_path)
    (tmp_path / "address.json").chmod(0o600)
    assert published(tmp_path) == {"host": "tcp:10.0.0.9:1"}


def test_an_address_naming_another_certificate_is_refused(tmp_path):
    """A published address is used only when its fingerprint is this run's server certificate."""
    from dacstyle.container.client.certs import RunCA
    from dacstyle.runtimes.serverdir import ServerDir
    from dacstyle.slurm.job import SlurmJob, wait_published
    from dacstyle.slurm.shared import publish_file

    folder = ServerDir.create(root=tmp_path)
    ours = RunCA("ours").write_server(folder.path / "host")
    theirs = RunCA("theirs").write_server(tmp_path)
    job = SlurmJob("7", folder, owned=False)
    publish_file(folder.path / "address.json", {"host": "tcp:10.0.0.9:1", "fingerprint": theirs})
    with pytest.raises(errors.SlurmError, match="not this run's"):
        wait_published(job, 5)
    publish_file(folder.path / "address.json", {"host": "tcp:10.0.0.9:1", "fingerprint": ours})
    assert wait_published(job, 5)["fingerprint"] == ours
    folder.remove()


def _cli(slurm_cluster, shared: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **slurm_cluster.env, "DACSTYLE_SHARED_DIR": str(shared)}
    return subprocess.run([sys.executable, "-m", "dacstyle", *argv], capture_output=True, text=True, env=env,
                          timeout=180)


def test_submit_then_two_clients_attach_and_jobs_cancel_ends_it(shared, slurm_cluster):
    done = _cli(slurm_cluster, shared, "submit", "sigmoid", "--seed", "2", "--partition", "cpu", "--time", "5",
                "--runtime", "process")
    assert done.returncode == 0, done.stderr
    job_id = done.stdout.strip().splitlines()[-1]
    assert job_id.isdigit()
    listed = _cli(slurm_cluster, shared, "jobs", "--json")
    row = [r for r in json.loads(listed.stdout) if r["job_id"] == job_id]
    assert row and row[0]["state"] == "RUNNING" and row[0]["address"].startswith("tcp:")
    first, second = RemoteRunner.attach(f"auto:{job_id}"), RemoteRunner.attach(f"auto:{job_id}")
    try:
        assert first.job_id == second.job_id == job_id
        one, two = first.get_environment(), second.get_environment()
        assert repr(_trajectory(one, 11)) == repr(_trajectory(two, 11))  # two envs on one server, each its own
        results = first.run(lambda obs: two.action_space.sample(), 2)
        assert len(results.episodes) == 2
    finally:
        first.close()
        second.close()
    assert any(info.active for info in job_info(job_id)), "closing an attached runner must not end the job"
    with pytest.raises(errors.ClosedError):
        one.reset()
    done = _cli(slurm_cluster, shared, "jobs", "cancel", job_id)
    assert done.returncode == 0 and f"cancelled job {job_id}" in done.stdout, done.stderr
    assert not any(info.active for info in job_info(job_id))


def test_attach_to_an_unknown_job_says_so(shared):
    with pytest.raises(errors.SlurmError, match="no dacstyle server of job 999999"):
        RemoteRunner.attach("auto:999999")
    with pytest.raises(ValueError, match="auto:JOBID"):
        RemoteRunner.attach("tcp:1.2.3.4:5")


def test_a_competition_runs_as_one_heterogeneous_job_and_is_graded(shared, packed_image, tmp_path):
    """Grader on the cpu partition, task (agent side) on gpu with a GPU: one job, two components, over TLS."""
    from dacstyle.agents.scripted import ScriptedCompetitionAgent
    from dacstyle.competitions import make_competition
    from dacstyle.competitions.task import CompetitionTask

    competition = make_competition("spaceship-titanic-lite", tmp_path / "competitions", seed=1)
    task = CompetitionTask(competition, workdir=tmp_path / "work", time_limit=120,
                           placement=Slurm(partition="gpu", gpus=1, time="5"),
                           grader_placement=Slurm(partition="cpu", time="5"))
    with RemoteRunner(task, runtime="bwrap", image=packed_image, runs_dir=tmp_path / "runs") as runner:
        grader_job = runner._companion_servers["grader"].process
        infos = job_info(runner.job_id)
        assert len(infos) == 2 and {info.fields["Partition"] for info in infos} == {"cpu", "gpu"}  # one het job
        assert grader_job.job_id == runner.job_id and grader_job.het_group == 0
        env = runner.get_environment()
        env.reset()
        probe = env.step("import os\nprint(sorted(os.listdir('/run/dacstyle-companion/grader')))")[4]["output"]
        assert "endpoint.json" in probe and "agent.sock" not in probe  # the grader is reached over TCP + TLS
        results = runner.run(ScriptedCompetitionAgent(runner.get_environment()), 1)
        sample = runner.companions["grader"].grade((competition / "public" / "sample_submission.csv").read_bytes())
    report = results.extra["grade"]
    assert report["valid"] and sample["valid"]
    better = report["score"] > sample["score"] if report["higher_is_better"] else report["score"] < sample["score"]
    assert better, (report, sample)
