"""Grader and task environment in two real containers (bwrap on a packed SIF)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from Pyro5 import errors as pyro_errors
from Pyro5.client import Proxy
from sklearn import metrics as skm

from dacstyle import RemoteRunner
from dacstyle.agents.scripted import ScriptedCompetitionAgent
from dacstyle.competitions import CompetitionInfo, list_competitions, make_competition
from dacstyle.competitions.task import AGENT_METHODS, CompetitionTask
from dacstyle.config import config
from dacstyle.container.client.attach import attach
from dacstyle.container.client.channel import uri_for

pytestmark = pytest.mark.container


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def metric_on_private_answers(competition: Path, submission: Path) -> float:
    """The competition's metric computed directly with scikit-learn, not through the grader."""
    info = CompetitionInfo.load(competition)
    truth = {row[info.id_column]: row for row in read_csv(competition / "private" / "answers.csv")}
    pred = {row[info.id_column]: row for row in read_csv(submission)}
    ids = sorted(truth)
    if info.metric == "accuracy":
        col = info.target_columns[0]
        return skm.accuracy_score([truth[i][col] for i in ids], [pred[i][col] for i in ids])
    if info.metric == "roc_auc":
        col = info.target_columns[0]
        return skm.roc_auc_score([float(truth[i][col]) for i in ids], [float(pred[i][col]) for i in ids])
    if info.metric in ("rmse", "rmsle"):
        col = info.target_columns[0]
        y, p = np.array([float(truth[i][col]) for i in ids]), np.array([float(pred[i][col]) for i in ids])
        if info.metric == "rmsle":
            return float(np.sqrt(skm.mean_squared_log_error(y, p)))
        return float(np.sqrt(skm.mean_squared_error(y, p)))
    assert info.metric == "log_loss"
    labels = list(info.target_columns)
    answers = [labels.index(truth[i]["label"]) if "label" in truth[i] else
               int(np.argmax([float(truth[i][c]) for c in labels])) for i in ids]
    probs = np.array([[float(pred[i][c]) for c in labels] for i in ids])
    return skm.log_loss(answers, probs, labels=list(range(len(labels))))


@pytest.fixture(scope="module")
def competitions(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("competitions")
    return {name: make_competition(name, root, seed=1) for name in list_competitions()}


@pytest.mark.parametrize("name", list_competitions())
def test_scripted_agent_beats_the_sample_and_score_equals_the_metric(name, competitions, packed_image, tmp_path,
                                                                       no_leftovers):
    competition = competitions[name]
    task = CompetitionTask(competition, workdir=tmp_path / "work", time_limit=120)
    with RemoteRunner(task, runtime="bwrap", image=packed_image, runs_dir=tmp_path / "runs") as runner:
        results = runner.run(ScriptedCompetitionAgent(runner.get_environment()), 1)
        sample = runner.companions["grader"].grade((competition / "public" / "sample_submission.csv").read_bytes())
    report = results.extra["grade"]
    assert report["valid"] and sample["valid"]
    better = report["score"] > sample["score"] if report["higher_is_better"] else report["score"] < sample["score"]
    assert better, (report["score"], sample["score"])
    direct = metric_on_private_answers(competition, tmp_path / "work" / "submission" / "submission.csv")
    assert report["score"] == pytest.approx(direct, rel=1e-9, abs=1e-12)
    assert json.loads((results.path / "grade.json").read_text())["score"] == report["score"]


@pytest.fixture
def task_runner(competitions, packed_image, tmp_path, no_leftovers):
    task = CompetitionTask(competitions["spaceship-titanic-lite"], workdir=tmp_path / "work", time_limit=2)
    with RemoteRunner(task, runtime="bwrap", image=packed_image) as runner:
        env = runner.get_environment()
        env.reset()
        yield runner, env


def run_code(env, code: str) -> dict:
    return env.step(code)[4]


def test_agent_code_cannot_see_private_answers_or_grader_paths(task_runner, competitions):
    runner, env = task_runner
    private = competitions["spaceship-titanic-lite"] / "private" / "answers.csv"
    probe = (
        "import os, pathlib\n"
        f"for p in ['/competition/private', '/competition/private/answers.csv', {str(private)!r}, "
        f"{str(private.parent.parent)!r}, '/competition/competition.json']:\n"
        "    print(p, os.path.exists(p))\n"
        "print('competition', sorted(os.listdir('/competition')))\n"
        "print('grader-endpoint', sorted(os.listdir('/run/dacstyle-companion/grader')))\n"
        "print('run', sorted(os.listdir('/run')))\n"
    )
    output = run_code(env, probe)["output"]
    assert "True" not in output, output
    assert "competition ['public']" in output
    assert "grader-endpoint ['agent.sock', 'token']" in output
    assert "'dacstyle-companion'" in output


def test_shell_actions_run_inside_the_task_container(task_runner):
    _, env = task_runner
    info = run_code(env, "#!sh\necho hello from $(hostname) in $PWD; ls /competition/public; "
                         "head -1 /competition/public/train.csv | cut -c1-2")
    assert info["exit_code"] == 0, info["output"]
    assert "hello from dacstyle in /tmp/workspace-" in info["output"] and "train.csv" in info["output"]


def test_agent_side_has_no_way_to_grade(task_runner):
    runner, env = task_runner
    agent_dir = runner._companion_servers["grader"].server_dir.path / "agent"
    agent = attach(agent_dir, "grader", AGENT_METHODS)
    assert not hasattr(agent, "grade")
    with pytest.raises(AttributeError, match="not served"):
        agent._remote.call("grade", "id,x\n")
    # the agent token does not open the host endpoint, where grade lives
    host_socket = runner._companion_servers["grader"].server_dir.path / "host" / "server.sock"
    proxy = Proxy(uri_for(f"unix:{host_socket}", runner.companions["grader"]._remote.object_id))
    proxy._pyroSerializer = "json"
    proxy._pyroHandshake = (agent_dir / "token").read_text().strip()
    with pytest.raises(pyro_errors.CommunicationError, match="rejected"):
        proxy.call("grade", ["x"], {})
    proxy._pyroRelease()
    # and code run by the agent cannot call grade through the endpoint it can see
    code = (
        "from dacstyle.container.client.attach import attach\n"
        "g = attach('/run/dacstyle-companion/grader', 'grader', ['validate', 'grade'])\n"
        "try:\n    g.grade('id\\n')\nexcept Exception as exc:\n    print('refused', type(exc).__name__, exc)\n"
    )
    assert "refused AttributeError" in run_code(env, code)["output"]


def test_validate_never_returns_a_score_and_bad_submissions_get_structured_errors(task_runner, competitions):
    runner, env = task_runner
    agent = attach(runner._companion_servers["grader"].server_dir.path / "agent", "grader", AGENT_METHODS)
    sample = (competitions["spaceship-titanic-lite"] / "public" / "sample_submission.csv").read_bytes()
    good = agent.validate(sample)
    assert good == {"valid": True, "errors": []}
    bad_inputs = [b"", b"\xff\xfe\x00garbage" * 100, b"x" * (17 * 1024 * 1024), {"path": "../../private/answers.csv"},
                  {"path": "/competition/private/answers.csv"}, sample.replace(b"\n", b"\n1,2,3,4\n", 1)]
    for bad in bad_inputs:
        result = agent.validate(bad)
        assert result["valid"] is False and set(result) == {"valid", "errors"}
        assert result["errors"] and all(set(e) == {"code", "message"} for e in result["errors"])
        assert "score" not in json.dumps(result).lower()
    assert agent.validate(sample) == {"valid": True, "errors": []}  # still serving
    assert runner.companions["grader"].grade(sample)["valid"] is True


def test_forks_sleeps_and_floods_stop_at_the_time_limit_with_nothing_left(task_runner):
    runner, env = task_runner
    escape = (
        "import os, subprocess, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        time.sleep(300)\n"
        "    os._exit(0)\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)'], start_new_session=True)\n"
        "while True:\n    print('flood' * 1000)\n"
    )
    info = run_code(env, escape)
    assert info["timed_out"] is True
    assert len(info["output"]) <= 64 * 1024
    listing = run_code(env, "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")["output"]
    pids = json.loads(listing.strip().splitlines()[-1])
    # inside the container's PID namespace: bwrap's init (1), the server (2) and this action's python only
    assert len(pids) <= 3, pids


# -- a hostile agent inside a real bwrap task container (issue 8: each attack fails) ---------------

TMPFS = 32 * 1024 * 1024
PROCESSES = 96


@pytest.fixture
def hostile(competitions, packed_image, tmp_path, no_leftovers):
    """A task runner with small limits, so that each flood hits its wall quickly."""
    config.sandbox_tmpfs_size = TMPFS
    config.sandbox_max_processes = PROCESSES
    config.sandbox_max_memory = 2 * 1024**3
    config.max_submission_bytes = 1024 * 1024
    task = CompetitionTask(competitions["spaceship-titanic-lite"], workdir=tmp_path / "work", time_limit=20)
    with RemoteRunner(task, runtime="bwrap", image=packed_image) as runner:
        env = runner.get_environment()
        env.reset()
        yield runner, env


def last_json(info: dict) -> dict:
    assert info["exit_code"] == 0, info["output"]
    return json.loads(info["output"].strip().splitlines()[-1])


def test_planted_submissions_are_invalid_and_no_link_is_followed(hostile, competitions, tmp_path):
    runner, env = hostile
    private = competitions["spaceship-titanic-lite"] / "private" / "answers.csv"
    host_file = tmp_path / "host-secret.csv"
    host_file.write_text("PassengerId,Transported\nHOST-SECRET-LINE,True\n")
    tricks = {
        "link to the host answers": f"os.symlink({str(private)!r}, target)",  # found in /proc/self/mountinfo
        "link to ../competition/private": "os.symlink('../competition/private/answers.csv', target)",
        "link to /competition/private": "os.symlink('/competition/private/answers.csv', target)",
        "link to a host file": f"os.symlink({str(host_file)!r}, target)",
        "fifo": "os.mkfifo(target)",
        "directory": "os.mkdir(target)",
        "sparse 1 GiB": "open(target, 'wb').truncate(1024**3)",
    }
    for name, plant in tricks.items():
        code = ("import json, os, shutil\ntarget = '/submission/submission.csv'\n"
                "if os.path.isdir(target) and not os.path.islink(target):\n    shutil.rmtree(target)\n"
                "elif os.path.lexists(target):\n    os.unlink(target)\n"
                f"{plant}\nprint(json.dumps({{'planted': os.path.lexists(target)}}))\n")
        assert last_json(run_code(env, code)) == {"planted": True}, name
        report = runner.companions["grader"].grade()  # what runner.run does after the episode (finish)
        assert report["valid"] is False and report["score"] is None and report["medal"] is None, (name, report)
        codes = {e["code"] for e in report["errors"]}
        assert codes == ({"too_large"} if name.startswith("sparse") else {"bad_path"}), (name, report)
        assert "HOST-SECRET" not in json.dumps(report)
        validation = env.step("validate")[4]["validation"]
        assert validation["valid"] is False and "HOST-SECRET" not in json.dumps(validation), (name, validation)
    # the same file as a regular file is graded
    sample = (competitions["spaceship-titanic-lite"] / "public" / "sample_submission.csv").read_text()
    run_code(env, f"import os\nos.unlink('/submission/submission.csv')\nopen('/submission/submission.csv', 'w')"
                  f".write({sample!r})\n")
    assert runner.companions["grader"].grade()["valid"] is True


def test_agent_code_has_no_capability_device_or_route_to_the_host(hostile):
    import socket

    _, env = hostile
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    code = (
        "import json, os, socket, stat\nout = {}\n"
        "status = dict(line.split(':\\t', 1) for line in open('/proc/self/status').read().splitlines() if ':\\t' in line)\n"
        "out['cap_eff'] = status['CapEff'].strip(); out['cap_bnd'] = status['CapBnd'].strip()\n"
        "out['uid'] = os.getuid()\n"
        "try:\n    os.mknod('/tmp/disk', stat.S_IFBLK | 0o600, os.makedev(8, 0)); out['mknod'] = 'made'\n"
        "except OSError as exc:\n    out['mknod'] = exc.errno\n"
        "try:\n"
        f"    socket.create_connection(('127.0.0.1', {port}), timeout=5).close(); out['connect'] = 'connected'\n"
        "except OSError as exc:\n    out['connect'] = type(exc).__name__\n"
        "out['mounts'] = [line.split(' - ')[0].split()[4:6] for line in open('/proc/self/mountinfo')]\n"
        "print(json.dumps(out))\n"
    )
    try:
        out = last_json(run_code(env, code))
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing ever reached the host's port
    finally:
        listener.close()
    assert out["cap_eff"] == "0000000000000000" and out["cap_bnd"] == "0000000000000000", out
    assert out["uid"] == 65534
    assert out["mknod"] != "made"
    assert out["connect"] in ("ConnectionRefusedError", "OSError"), out  # its own, empty network namespace
    for mountpoint, options in out["mounts"]:
        flags = options.split(",")
        assert "nosuid" in flags and (mountpoint.split("/")[1] == "dev" or "nodev" in flags), (mountpoint, options)


def test_a_fork_flood_stops_at_the_process_limit(hostile):
    _, env = hostile
    code = (
        "import json, os, time\nforked, error = 0, None\n"
        "while forked < 2000:\n"
        "    try:\n        pid = os.fork()\n    except OSError as exc:\n        error = exc.errno; break\n"
        "    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n"
        "    forked += 1\n"
        "print(json.dumps({'forked': forked, 'error': error}))\n"
    )
    out = last_json(run_code(env, code))
    assert out["error"] == 11 and out["forked"] < PROCESSES, out  # EAGAIN
    listing = run_code(env, "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")["output"]
    assert len(json.loads(listing.strip().splitlines()[-1])) <= 3  # the flood is gone, the server still serves


def test_a_disk_flood_of_tmp_and_the_workspace_stops_at_the_tmpfs_size(hostile):
    _, env = hostile
    code = (
        "import json, os, sys\nout = {}\n"
        "for name, folder in (('tmp', '/tmp'), ('workspace', os.getcwd())):\n"
        "    written, error = 0, None\n"
        "    try:\n"
        "        with open(os.path.join(folder, 'flood'), 'wb') as handle:\n"
        f"            while written < {8 * TMPFS}:\n"
        "                handle.write(b'x' * 1048576); handle.flush(); written += 1048576\n"
        "    except OSError as exc:\n        error = exc.errno\n"
        "    os.unlink(os.path.join(folder, 'flood'))\n"
        "    out[name] = [written, error]\n"
        "out['cwd'] = os.getcwd()\nprint(json.dumps(out))\n"
    )
    out = last_json(run_code(env, code))
    assert out["cwd"].startswith("/tmp/"), out  # the workspace lives on the sized tmpfs
    for name in ("tmp", "workspace"):
        written, error = out[name]
        assert error == 28 and written <= TMPFS, (name, out)  # ENOSPC


def test_a_memory_flood_fails_in_the_agent_code_not_on_the_host(hostile):
    _, env = hostile
    code = ("try:\n    block = bytearray(3 * 1024**3)\n    print('allocated')\n"
            "except MemoryError:\n    print('refused')\n")
    assert run_code(env, code)["output"].strip() == "refused"
