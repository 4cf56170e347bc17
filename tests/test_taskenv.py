"""TaskEnv: code actions under an external time limit, no leftovers, validation; the scripted agent."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from gymnasium import spaces

from dacstyle.agents.loop import run_episodes
from dacstyle.agents.scripted import ScriptedCompetitionAgent
from dacstyle.competitions import Grader, TaskEnv, list_competitions, make_competition
from dacstyle.competitions.sandbox import descendants, is_subreaper
from dacstyle.errors import DacstyleError
from dacstyle.runtimes.serverdir import process_alive

from test_grader import sklearn_score

LIMIT = 1.0


@pytest.fixture(scope="module")
def comp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_competition("spaceship-titanic-lite", tmp_path_factory.mktemp("comp"))


@pytest.fixture
def env(comp: Path, tmp_path: Path) -> TaskEnv:
    grader = Grader(comp)
    env = TaskEnv(comp / "public", tmp_path / "ws", tmp_path / "sub", time_limit=LIMIT,
                  output_limit=4096, validator=grader.validator, max_steps=10)
    env.reset()
    yield env
    env.close()


def _pids(path: Path) -> list[int]:
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not path.exists():
        time.sleep(0.01)
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def test_spaces_and_instructions(comp: Path, tmp_path: Path) -> None:
    env = TaskEnv(comp / "public", tmp_path / "ws", tmp_path / "sub", info={"metric": "accuracy"})
    assert isinstance(env.observation_space, spaces.Text) and isinstance(env.action_space, spaces.Text)
    assert "\n" in env.action_space.character_set and env.action_space.max_length >= 10000
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    assert "Spaceship Titanic" in obs and "train.csv" in obs and "sample_submission.csv" in obs
    assert "#!sh" in obs and "validate" in obs and "submit" in obs and str(tmp_path / "sub") in obs
    assert info["kind"] == "reset" and (tmp_path / "ws").is_dir()
    with pytest.raises(DacstyleError):
        TaskEnv(comp / "public", tmp_path / "w2", tmp_path / "s2").step("print(1)")


def test_python_and_shell_actions(env: TaskEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST_ONLY_SECRET", "s3cr3t")
    obs, reward, terminated, truncated, info = env.step("import os\nprint('hello', os.getcwd())\nprint(os.environ.get('HOST_ONLY_SECRET'))")
    assert "hello " + str(env.workspace_dir) in obs and "None" in obs and "s3cr3t" not in obs
    assert info["exit_code"] == 0 and info["kind"] == "python" and reward == 0.0
    assert not terminated and not truncated and env.observation_space.contains(obs)
    obs, *_, info = env.step("#!sh\necho from-shell; ls \"$DACSTYLE_PUBLIC_DIR\"; exit 3")
    assert "from-shell" in obs and "train.csv" in obs and info["exit_code"] == 3 and info["kind"] == "shell"
    obs, *_, info = env.step("raise SystemExit('boom: \\u00e9')")
    assert "boom" in obs and info["exit_code"] == 1 and env.observation_space.contains(obs)
    obs, *_, info = env.step("open('note.txt', 'w').write('kept')")
    assert (env.workspace_dir / "note.txt").read_text() == "kept"


def test_sleeping_code_is_killed_at_the_time_limit(env: TaskEnv) -> None:
    start = time.monotonic()
    obs, *_, info = env.step("import time\nprint('start', flush=True)\ntime.sleep(60)")
    assert info["timed_out"] and info["exit_code"] == -9
    assert time.monotonic() - start < LIMIT + 3
    assert "start" in obs and "time limit" in obs


@pytest.mark.parametrize(
    "code",
    [
        # children that sleep, then the parent sleeps past the limit
        "import os, time\npids = []\nfor _ in range(5):\n    pid = os.fork()\n    if pid == 0:\n"
        "        time.sleep(60); os._exit(0)\n    pids.append(pid)\n"
        "open('pids', 'w').write(' '.join(map(str, pids)))\ntime.sleep(60)",
        # double fork + setsid: the grandchild leaves the session and the group; the parent exits at once
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        open('pids', 'w').write(str(os.getpid())); time.sleep(60)\n    os._exit(0)\n",
        # a background process that keeps the output pipe open
        "import subprocess\np = subprocess.Popen(['sleep', '60'])\nopen('pids', 'w').write(str(p.pid))",
        # setsid + double fork, and the parent sleeps past the limit
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
        "        open('pids', 'w').write(str(os.getpid())); time.sleep(60)\n    os._exit(0)\ntime.sleep(60)",
    ],
    ids=["fork-children", "double-fork-setsid", "background-popen", "double-fork-and-sleep"],
)
def test_no_process_survives_an_action(env: TaskEnv, code: str) -> None:
    before, reaper = set(descendants()), is_subreaper()
    start = time.monotonic()
    obs, *_, info = env.step(code)
    assert is_subreaper() == reaper  # held only during the action
    assert time.monotonic() - start < LIMIT + 4
    escaped = _pids(env.workspace_dir / "pids")
    assert escaped
    assert not any(process_alive(pid) for pid in escaped), obs
    assert set(descendants()) <= before


def test_output_flood_is_capped_and_stopped(env: TaskEnv) -> None:
    start = time.monotonic()
    obs, *_, info = env.step("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)")
    assert time.monotonic() - start < LIMIT + 3
    assert info["timed_out"] and info["truncated"] and info["output_bytes"] > 4096
    assert len(obs) < 4096 + 500 and "output truncated" in obs


def test_validate_and_submit(env: TaskEnv, comp: Path) -> None:
    obs, *_, info = env.step("validate")
    assert info["validation"]["errors"][0]["code"] == "no_submission"
    (env.submission_dir / "submission.csv").write_text("PassengerId,Transported\n1,True\n")
    obs, *_, info = env.step("validate")
    assert not info["validation"]["valid"] and "missing_ids" in obs
    (env.submission_dir / "submission.csv").write_bytes((comp / "public/sample_submission.csv").read_bytes())
    obs, reward, terminated, truncated, info = env.step("  submit\n")
    assert info["validation"] == {"valid": True, "errors": []} and terminated and not truncated
    with pytest.raises(DacstyleError, match="reset"):
        env.step("print(1)")


def test_validator_results_are_filtered_and_failures_contained(comp: Path, tmp_path: Path) -> None:
    leaky = TaskEnv(comp / "public", tmp_path / "ws", tmp_path / "sub",
                    validator=lambda sub: {"valid": True, "errors": [], "score": 0.99})
    leaky.reset()
    (tmp_path / "sub" / "submission.csv").write_text("x")
    _, _, _, _, info = leaky.step("validate")
    assert info["validation"] == {"valid": True, "errors": []}

    def broken(sub: bytes) -> dict:
        raise RuntimeError("secret internals")

    failing = TaskEnv(comp / "public", tmp_path / "ws", tmp_path / "sub", validator=broken)
    failing.reset()
    (tmp_path / "sub" / "submission.csv").write_text("x")
    obs, *_, info = failing.step("validate")
    assert info["validation"]["errors"][0]["code"] == "validator_failed" and "secret" not in obs


def test_max_steps_truncates(comp: Path, tmp_path: Path) -> None:
    env = TaskEnv(comp / "public", tmp_path / "ws", tmp_path / "sub", max_steps=2)
    env.reset()
    assert env.step("pass")[3] is False
    _, _, terminated, truncated, _ = env.step("pass")
    assert truncated and not terminated


@pytest.mark.parametrize("name", list_competitions())
def test_scripted_agent_beats_the_sample_submission(tmp_path: Path, name: str) -> None:
    comp = make_competition(name, tmp_path)
    grader = Grader(comp, submissions_root=tmp_path / "sub")
    env = TaskEnv(comp / "public", tmp_path / "ws", tmp_path / "sub", time_limit=120, validator=grader.validator)
    agent = ScriptedCompetitionAgent()
    results = run_episodes(env, agent, 1)
    assert results[0]["length"] == 3 and agent.history[1:] == ["validate", "submit"]
    result = grader.grade(Path("submission.csv"))
    baseline = grader.grade((comp / "public/sample_submission.csv").read_bytes())
    assert result["valid"] and baseline["valid"]
    assert (result["score"] > baseline["score"]) if result["higher_is_better"] else (result["score"] < baseline["score"])
    assert result["score"] == pytest.approx(sklearn_score(comp, tmp_path / "sub/submission.csv"), rel=1e-9)


def test_submission_file_tricks_are_structured_errors(env: TaskEnv, tmp_path: Path) -> None:
    target = env.submission_dir / "submission.csv"
    os.mkfifo(target)  # opening a FIFO for reading would block forever
    start = time.monotonic()
    assert env.step("validate")[4]["validation"]["errors"][0]["code"] == "bad_path"
    assert time.monotonic() - start < 2
    target.unlink()
    secret = tmp_path / "elsewhere.csv"
    secret.write_text("PassengerId,Transported\n")
    target.symlink_to(secret)
    assert env.step("validate")[4]["validation"]["errors"][0]["code"] == "bad_path"



def test_a_private_workspace_is_made_and_removed_on_close(comp: Path, tmp_path: Path) -> None:
    env = TaskEnv(comp / "public", None, tmp_path / "sub", time_limit=LIMIT)
    env.reset()
    info = env.step("import os\nprint(os.getcwd())")[4]
    assert info["output"].strip() == str(env.workspace_dir) and env.workspace_dir.is_dir()
    env.close()
    assert not env.workspace_dir.exists()
