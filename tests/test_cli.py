"""The dacstyle command and the examples, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dacstyle.cli import build_parser, main
from dacstyle.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def subcommands(parser) -> dict:
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return action.choices


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    names = subcommands(parser)
    assert {"run", "serve", "cleanup", "config", "pack", "inspect", "exec", "build", "recipe", "pull", "push",
            "images", "competition", "grade"} <= set(names)
    for name, sub in names.items():
        text = sub.format_help()
        assert sub.description or sub.format_usage(), name
        assert "usage:" in text and len(text) > 80, name


def test_run_prints_a_table_and_writes_the_run_folder(tmp_path, capsys, no_leftovers):
    code = main(["run", "sigmoid", "--agent", "static", "--action", "[1, 2]", "--episodes", "2", "--seed", "4",
                 "--runtime", "process", "--runs-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == 0
    assert "sigmoid | agent static | seed 4 | runtime process" in out and "mean" in out
    folder = Path(out.strip().splitlines()[-1].split("run folder: ")[1])
    assert (folder / "manifest.json").exists() and len((folder / "episodes.jsonl").read_text().splitlines()) == 2


def test_run_json_output(tmp_path, capsys, no_leftovers):
    assert main(["run", "luby", "--episodes", "1", "--runtime", "process", "--runs-dir", str(tmp_path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["benchmark"] == "luby" and len(data["episodes"]) == 1


# (argv, exit status, what the one line says); {tmp} is a fresh folder, {sif} a valid SIF, {text} a text file
BAD_INPUT = [
    (["run", "sigmoid", "--action", "notjson"], 2, "argument --action: 'notjson' is not JSON"),
    (["run", "sigmoid", "--episodes", "0"], 2, "argument --episodes: 0 is less than 1"),
    (["run", "sigmoid", "--episodes", "two"], 2, "argument --episodes: 'two' is not a whole number"),
    (["run", "sigmoid", "--seed", "-1"], 2, "argument --seed: -1 is less than 0"),
    (["run", "sigmoid", "--config", "[1]"], 2, "argument --config: '[1]' is not a JSON object"),
    (["run", "sigmoid", "--config", '{"nope": 1}'], 1, "unknown config keys ['nope']"),
    (["run", "gym:CartPole-v1", "--config", '{"id": "x"}'], 1, "give the environment id as the first argument"),
    (["run", "no-such-benchmark"], 1, "unknown benchmark 'no-such-benchmark'"),
    (["run", "sigmoid", "--runtime", "docker"], 1, "unknown runtime 'docker'"),
    (["run", "sigmoid", "--runtime", "process", "--image", "x.sif"], 1,
     "--image x.sif: runtime 'process' runs the benchmark on the host and cannot use an image"),
    (["run", "sigmoid", "--agent", "smart"], 1, "unknown agent 'smart'; use random, static or module:Class"),
    (["run", "sigmoid", "--agent", "no_such_module:Agent"], 1, "cannot import 'no_such_module'"),
    (["run", "sigmoid", "--agent", "random", "--action", "1"], 1, "--action is for --agent static only"),
    (["run", "sigmoid", "--frobnicate"], 2, "dacstyle run: error: unrecognized arguments: --frobnicate"),
    (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
    (["exec", "img.sif", "python3", "-c", "print(1)"], 2,
     "put '--' before it: dacstyle exec [OPTIONS] img.sif -- python3 -c 'print(1)'"),
    (["exec", "--runtime", "bwrap", "{tmp}/missing.sif", "--", "true"], 1, "no such image file"),
    (["exec", "--bind", "relative", "img.sif", "--", "true"], 2, "argument --bind"),
    (["exec", "--runtime", "process", "img.sif", "--", "{tmp}/no-such-command"], 1,
     "No such file or directory: {tmp}/no-such-command"),
    (["inspect", "{tmp}/missing.sif"], 1, "no such image file"),
    (["inspect", "{text}"], 1, "not a SIF file"),
    (["inspect", "{sif}", "--key", "{tmp}/missing.pem"], 1, "cannot load public key"),
    (["pack", "{tmp}/missing", "{tmp}/out.sif"], 1, "not a directory"),
    (["pack", "{tmp}", "{tmp}/out.sif", "--deffile", "{tmp}/missing.def"], 1,
     "--deffile {tmp}/missing.def: no such file"),
    (["pack", "{tmp}", "{tmp}/nowhere/out.sif"], 1, "folder {tmp}/nowhere does not exist"),
    (["pack", "{tmp}", "{tmp}/out.sif", "--label", "novalue"], 1, "--label 'novalue': expected KEY=VALUE"),
    (["pack", "{tmp}", "{tmp}/out.sif", "--compression", "zip"], 2, "argument --compression: invalid choice"),
    (["pack", "{tmp}"], 1, "pack needs DIR and OUT.sif"),
    (["pull", "ftp://example.org/x.sif"], 1, "unsupported image reference"),
    (["pull", "{sif}", "--sha256", "nothex"], 1, "not a sha256 digest"),
    (["pull", "sigmoid@9.9.9"], 1, "neither an image file nor a catalogue entry"),
    (["push", "{tmp}/missing.sif", "oras://127.0.0.1:9/x:1"], 1, "no such image file"),
    (["push", "{sif}", "oras://127.0.0.1:9/x:1", "--chunk-size", "0"], 2, "argument --chunk-size: 0 is less than 1"),
    (["push", "{sif}", "http://127.0.0.1:9/x"], 1, "oras://"),
    (["images", "add", "{text}"], 1, "not a SIF file"),
    (["images", "rm", "nothing"], 1, "'nothing' is neither a cached reference nor a digest"),
    (["images", "list", "--wide"], 2, "dacstyle images list: error: unrecognized arguments: --wide"),
    (["grade", "{tmp}", "{tmp}/submission.csv"], 1, "competition.json"),
    (["competition", "make", "nope", "--out", "{tmp}"], 1, "unknown competition 'nope'"),
    (["competition", "make", "spaceship-titanic-lite", "--out", "{tmp}", "--seed", "-1"], 2, "-1 is less than 0"),
    (["recipe", "convert", "{tmp}/Dockerfile"], 1, "does not exist"),
    (["recipe", "convert", "{text}"], 1, "has no FROM line"),
    (["build", "{tmp}/missing.def", "{tmp}/out.sif", "--force"], 1, ""),
]


@pytest.mark.parametrize("argv, status, message", BAD_INPUT, ids=[" ".join(case[0])[:60] for case in BAD_INPUT])
def test_bad_input_is_one_line_and_a_non_zero_status(argv, status, message, tmp_path, sif_file, capsys, no_leftovers):
    (tmp_path / "notes.txt").write_text("not an image\n")
    places = {"{tmp}": str(tmp_path), "{sif}": str(sif_file), "{text}": str(tmp_path / "notes.txt")}

    def fill(text: str) -> str:
        for place, value in places.items():
            text = text.replace(place, value)
        return text

    code = main([fill(arg) for arg in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith(("dacstyle: warning:", "RemoteRunner("))]
    assert code == status, captured.err
    assert len(lines) == 1 and lines[0].startswith("dacstyle") and " error: " in lines[0], captured.err
    assert fill(message) in lines[0]
    assert "Traceback" not in captured.err + captured.out


def test_an_action_outside_the_space_is_one_line(tmp_path, capsys, no_leftovers):
    code = main(["run", "sigmoid", "--agent", "static", "--action", "[9, 9]", "--runtime", "process",
                 "--runs-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.splitlines()[-1] == ("dacstyle: error: static action [9, 9] is not in the action space "
                                    "MultiDiscrete([ 5 10])")


def cli(*argv: str, cwd: Path | None = None, env: dict | None = None, flags: tuple = ()) -> subprocess.CompletedProcess:
    """``python -m dacstyle.cli ARGV`` as a user runs it."""
    return subprocess.run([sys.executable, *flags, "-m", "dacstyle.cli", *argv], capture_output=True, text=True,
                          timeout=120, cwd=cwd, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("argv, status, message", [
    (["run", "sigmoid", "--agent", "static", "--action", "[9,9]", "--runtime", "process"], 1,
     "dacstyle: error: static action [9, 9] is not in the action space"),
    (["run", "sigmoid", "--agent", "static", "--action", "notjson"], 2,
     "dacstyle run: error: argument --action: 'notjson' is not JSON"),
    (["run", "sigmoid", "--episodes", "0"], 2, "dacstyle run: error: argument --episodes: 0 is less than 1"),
])
def test_the_issue_commands_end_in_one_line_in_a_real_process(argv, status, message, tmp_path, no_leftovers):
    done = cli(*argv, "--runs-dir", str(tmp_path), cwd=tmp_path)
    assert done.returncode == status, done.stderr
    assert "Traceback" not in done.stderr and done.stderr.splitlines()[-1].startswith(message)


def test_a_bad_setting_does_not_break_import_and_is_named_when_used(tmp_path):
    bad = {"DACSTYLE_OFFLINE": "maybe", "DACSTYLE_CACHE": str(tmp_path)}
    helped = cli("--help", env=bad)
    assert helped.returncode == 0 and "usage: dacstyle" in helped.stdout and helped.stderr == ""
    used = cli("pull", "https://127.0.0.1:9/x.sif", env=bad)
    assert used.returncode == 1 and "Traceback" not in used.stderr
    assert used.stderr == ("dacstyle: error: DACSTYLE_OFFLINE='maybe': not a boolean "
                           "(use 1/0, true/false, yes/no or on/off)\n")
    shown = cli("config", env=bad)
    assert shown.returncode == 1 and "INVALID 'maybe'" in shown.stdout
    assert shown.stderr.splitlines() == ["dacstyle: error: DACSTYLE_OFFLINE='maybe': not a boolean "
                                         "(use 1/0, true/false, yes/no or on/off)"]


def test_every_help_text_builds_whatever_the_settings(monkeypatch, capsys):
    from dacstyle.config import _SETTINGS, config

    for name in _SETTINGS:
        monkeypatch.setenv(f"DACSTYLE_{name.upper()}", "not-valid\x01")
    config.reset()
    with pytest.raises(ConfigError):
        config.check()
    for parser in all_parsers(build_parser()):
        assert parser.format_help()
    assert main(["--help"]) == 0 and main(["images", "--help"]) == 0
    assert "usage: dacstyle images" in capsys.readouterr().out


def run_into_closed_pipe(*argv: str) -> subprocess.CompletedProcess:
    """Run the CLI with stdout a pipe whose reader is already gone (``| head`` that has stopped reading)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}  # stdout block-buffered, as usual
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([sys.executable, "-m", "dacstyle.cli", *argv], stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60, stdin=subprocess.DEVNULL, env=env)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("argv", [["config"], ["inspect", "--json", "{sif}"], ["competition", "list"], ["--help"],
                                  ["exec", "--help"]])
def test_output_into_a_closed_pipe_ends_quietly(argv, sif_file):
    done = run_into_closed_pipe(*[arg.format(sif=sif_file) for arg in argv])
    assert (done.returncode, done.stderr) == (141, "")


def all_parsers(parser):
    """``parser`` and every subcommand's parser under it."""
    yield parser
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            for sub in action.choices.values():
                yield from all_parsers(sub)


def test_help_texts_show_no_doubled_percent_signs():
    seen = 0
    for parser in all_parsers(build_parser()):
        seen += 1
        assert "%%" not in parser.format_help(), parser.prog
    assert seen > 20
    assert "%files" in subcommands(build_parser())["build"].format_help()


MYBENCH = """\
import gymnasium as gym
import numpy as np


class Counter(gym.Env):
    \"\"\"Reward 1 for action 1, 0 for action 0; ends after ``length`` steps.\"\"\"

    observation_space = gym.spaces.Box(0, 100, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length):
        self.length = length

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        return np.full(1, self.t, np.float32), float(action), self.t >= self.length, False, {}


def make_env(length=5):
    return Counter(length)
"""

MYAGENT = """\
class AlwaysOne:
    def __init__(self, env):
        assert env.action_space.n == 2

    def act(self, state, reward):
        return 1

    def train(self, next_state, reward):
        pass

    def end_episode(self, state, reward):
        pass
"""


def test_run_takes_entry_points_for_the_benchmark_and_the_agent(tmp_path, no_leftovers):
    """Modules in the working folder, as a user writes them; -P: the folder is not on sys.path, as with the
    console script."""
    (tmp_path / "mybench.py").write_text(MYBENCH)
    (tmp_path / "myagent.py").write_text(MYAGENT)
    done = cli("run", "mybench:make_env", "--config", '{"length": 3}', "--agent", "myagent:AlwaysOne",
               "--episodes", "2", "--runtime", "process", "--runs-dir", str(tmp_path / "runs"), "--json",
               cwd=tmp_path, flags=("-P",))
    assert done.returncode == 0, done.stderr
    episodes = json.loads(done.stdout)["episodes"]
    assert [(e["length"], e["return"]) for e in episodes] == [(3, 3.0), (3, 3.0)]
    wrong = cli("run", "mybench:make_env", "--config", '{"size": 3}', "--runtime", "process",
                "--runs-dir", str(tmp_path / "runs"), cwd=tmp_path, flags=("-P",))
    assert wrong.returncode == 1 and "Traceback" not in wrong.stderr
    assert "unexpected keyword argument 'size'" in wrong.stderr.splitlines()[-1]


def test_cleanup_and_config(capsys, monkeypatch):
    assert main(["cleanup"]) == 0
    assert "nothing to clean up" in capsys.readouterr().out
    monkeypatch.setenv("DACSTYLE_CALL_TIMEOUT", "12.5")
    from dacstyle.config import config

    config.reset()
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "call_timeout" in out and "12.5" in out and "DACSTYLE_CALL_TIMEOUT" in out


def test_console_script_runs_without_stdin(tmp_path):
    done = subprocess.run([sys.executable, "-m", "dacstyle.cli", "run", "sigmoid", "--runtime", "process",
                           "--runs-dir", str(tmp_path)], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "isolates nothing" in done.stderr  # the process runtime says so


def test_sigmoid_example_runs(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "examples" / "sigmoid_baselines.py"), "--runtime", "process",
                           "--episodes", "2"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DACSTYLE_RUNS": str(tmp_path / "runs")})
    assert done.returncode == 0, done.stderr
    assert "== random agent" in done.stdout and "== static [2, 5] agent" in done.stdout


@pytest.mark.container
def test_run_serves_a_benchmark_from_the_working_folder_in_a_sif_under_bwrap(packed_image, tmp_path, no_leftovers):
    """The console script's way (-P: the working folder is not on sys.path); the module is not in the image."""
    from dacstyle.images import ImageCache
    from dacstyle.images.default import environment_key

    ImageCache(tmp_path / "cache").add(packed_image, ref=environment_key())
    (tmp_path / "mybench.py").write_text(MYBENCH)
    (tmp_path / "myagent.py").write_text(MYAGENT)
    done = cli("run", "mybench:make_env", "--config", '{"length": 4}', "--agent", "myagent:AlwaysOne",
               "--runtime", "bwrap", "--json", cwd=tmp_path, flags=("-P",),
               env={"DACSTYLE_CACHE": str(tmp_path / "cache"), "DACSTYLE_RUNS": str(tmp_path / "runs")})
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [(e["length"], e["return"]) for e in result["episodes"]] == [(4, 4.0)]
    manifest = (Path(tmp_path / "runs") / Path(result["path"]).name / "manifest.json").read_text()
    assert "mybench.py" in manifest


def run_example(script: str, packed_image: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Run an example as a user would, with the packed image seeded into a fresh cache."""
    from dacstyle.images import ImageCache
    from dacstyle.images.default import environment_key

    ImageCache(tmp_path / "cache").add(packed_image, ref=environment_key())
    env = {**os.environ, "DACSTYLE_CACHE": str(tmp_path / "cache"), "DACSTYLE_RUNS": str(tmp_path / "runs")}
    done = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.container
def test_readme_main_job_runs_in_a_sif_under_bwrap(packed_image, tmp_path):
    """The README's first command, on the image CI packed."""
    done = run_example("sigmoid_baselines.py", packed_image, tmp_path, "--runtime", "bwrap", "--episodes", "2")
    assert "runtime: bwrap | image:" in done.stdout and "== static [2, 5] agent" in done.stdout


@pytest.mark.container
def test_competition_example_runs(packed_image, tmp_path):
    done = run_example("competition_scripted.py", packed_image, tmp_path, "--runtime", "bwrap")
    assert "sample submission scores" in done.stdout and '"valid": true' in done.stdout
