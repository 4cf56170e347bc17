"""The dacstyle command and the examples, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dacstyle.cli import build_parser, main

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


def test_errors_are_one_line_with_exit_status_1(capsys):
    assert main(["run", "no-such-benchmark", "--runtime", "process"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("dacstyle: error: unknown benchmark") and "\n" not in err
    assert main(["run", "sigmoid", "--runtime", "docker"]) == 1
    assert "unknown runtime" in capsys.readouterr().err


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
