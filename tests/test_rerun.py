"""Re-runs from the manifest: identical runs, differences named, tampered logs and changed images refused."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dacstyle import RemoteRunner
from dacstyle.agents import RandomAgent
from dacstyle.benchmarks import LubyBenchmark, SigmoidBenchmark
from dacstyle.cli import main
from dacstyle.errors import DigestMismatchError, ImageNotFoundError, RunFolderError
from dacstyle.results import compare_runs, rerun


def logged_run(tmp_path: Path, bench=None, episodes: int = 3, runtime: str = "process", image=None,
               log_steps=True) -> Path:
    bench = bench or SigmoidBenchmark().set_seed(42)
    with RemoteRunner(bench, runtime=runtime, image=image, runs_dir=tmp_path / "runs") as runner:
        results = runner.run(RandomAgent(runner.get_environment()), episodes, log_steps=log_steps)
    return results.path


def edit_manifest(folder: Path, change) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    change(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("log_steps", [True, 4, False])
def test_rerun_of_a_process_run_is_identical(tmp_path, log_steps, no_leftovers):
    folder = logged_run(tmp_path, log_steps=log_steps)
    outcome = rerun(folder, out=tmp_path / "again")
    assert outcome.identical, outcome
    assert outcome.rerun_path is not None and outcome.rerun_path.parent == tmp_path / "again"
    if log_steps is False:
        assert "steps were not logged: compared episode returns and lengths" in str(outcome)
    else:
        assert str(outcome).startswith("identical (every ")


def test_rerun_names_the_first_step_that_differs(tmp_path, no_leftovers):
    folder = logged_run(tmp_path, LubyBenchmark().set_seed(5))
    edit_manifest(folder, lambda m: m["agent"]["config"].update(seed=6))  # the log stays untouched
    outcome = rerun(folder)
    assert not outcome.identical
    assert outcome.difference.startswith("episode 0, step ")
    first = json.loads((folder / "episodes.jsonl").read_text().splitlines()[0])["steps"]
    again = RandomAgent(LubyBenchmark().set_seed(5).get_environment(), seed=6)
    expected_t = next(s["t"] for s in first if s["action"] != np.asarray(again.act(None, 0)).tolist())
    assert outcome.difference.startswith(f"episode 0, step {expected_t}: action ")


def test_unlogged_steps_that_differ_are_caught_by_the_steps_digest(tmp_path, no_leftovers):
    a = logged_run(tmp_path, log_steps=False)
    b = logged_run(tmp_path, log_steps=False)
    assert compare_runs(a, b).identical
    edit_manifest(b, lambda m: m["episodes"][1].update(steps="0" * 32))
    outcome = compare_runs(a, b)
    assert not outcome.identical and outcome.difference == (
        "episode 1: a step that was not logged differs (the digests of all steps differ)")


def test_a_tampered_log_is_caught_before_anything_runs(tmp_path, no_leftovers):
    folder = logged_run(tmp_path)
    log = folder / "episodes.jsonl"
    lines = log.read_text().splitlines()
    record = json.loads(lines[2])
    record["steps"][3]["reward"] += 0.5
    record["return"] += 0.5  # a consistent forgery: only the manifest's digest tells
    log.write_text("\n".join([*lines[:2], json.dumps(record)]) + "\n")
    with pytest.raises(RunFolderError, match="episode 2 in episodes.jsonl does not match the manifest's digest"):
        rerun(folder)


def test_rerun_command_exit_codes_and_messages(tmp_path, capsys, no_leftovers):
    folder = logged_run(tmp_path, episodes=2)
    assert main(["rerun", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("identical (every step compared")
    edit_manifest(folder, lambda m: m["agent"]["config"].update(seed=1))
    assert main(["rerun", str(folder)]) == 1
    assert capsys.readouterr().out.startswith("different: episode 0, step 0: action ")
    edit_manifest(folder, lambda m: m.update(agent={"entry_point": None, "class": "mymod:Agent"}))
    assert main(["rerun", str(folder)]) == 1
    assert "the run's agent (mymod:Agent) cannot be rebuilt" in capsys.readouterr().err
    assert main(["rerun", str(tmp_path)]) == 1
    assert "is not a run folder: no manifest.json" in capsys.readouterr().err


def test_runs_list_and_show(tmp_path, capsys, no_leftovers):
    folder = logged_run(tmp_path, episodes=2)
    assert main(["runs", "list", "--runs-dir", str(folder.parent)]) == 0
    listing = capsys.readouterr().out.splitlines()
    mean = np.mean([e["return"] for e in json.loads((folder / "manifest.json").read_text())["episodes"]])
    assert listing[1].split() == [folder.name, "sigmoid", "42", "2", f"{mean:.4f}"]
    assert main(["runs", "show", str(folder)]) == 0
    shown = capsys.readouterr().out
    assert "agent: dacstyle.agents.baselines:RandomAgent" in shown and "episode      return" in shown
    assert main(["runs", "--runs-dir", str(tmp_path / "none")]) == 0
    assert capsys.readouterr().out.startswith("no runs under")


@pytest.mark.container
def test_rerun_in_a_packed_image_is_identical_and_a_changed_or_missing_image_is_refused(
        packed_image, tmp_path, no_leftovers):
    image = tmp_path / "bench.sif"
    shutil.copyfile(packed_image, image)
    folder = logged_run(tmp_path, runtime="bwrap", image=image)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["image"]["reference"] == str(image) and manifest["runtime"]["name"] == "bwrap"
    outcome = rerun(folder)
    assert outcome.identical, outcome
    with open(image, "ab") as handle:  # the same path, other bytes
        handle.write(b"\0")
    with pytest.raises(DigestMismatchError, match="but the run used .*refusing to re-run in a different image"):
        rerun(folder)
    image.unlink()
    with pytest.raises(ImageNotFoundError, match="the run's image is gone"):
        rerun(folder)


@pytest.mark.container
def test_rerun_pulls_a_referenced_image_again_by_digest_and_refuses_other_content(
        packed_image, file_server, tmp_path, no_leftovers):
    from dacstyle.images.cache import ImageCache, hash_file
    from dacstyle.images.pack import pack_directory

    url = file_server.add("env.sif", packed_image)
    folder = logged_run(tmp_path, runtime="bwrap", image=url, episodes=2)
    digest = json.loads((folder / "manifest.json").read_text())["image"]["sha256"]
    assert digest == hash_file(packed_image)
    ImageCache().remove(digest)  # as on another machine: the image must come from the reference again
    gets = len(file_server.gets("env.sif"))
    assert rerun(folder).identical
    assert len(file_server.gets("env.sif")) == gets + 1
    ImageCache().remove(digest)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "note").write_text("not the benchmark's image")
    pack_directory(tmp_path / "other", tmp_path / "other.sif")
    file_server.add("env.sif", tmp_path / "other.sif")  # the reference now serves something else
    with pytest.raises(DigestMismatchError, match="now serves another image than the run used"):
        rerun(folder)


def test_a_run_without_seeds_cannot_repeat_and_the_rerun_says_why(tmp_path, no_leftovers):
    folder = logged_run(tmp_path, SigmoidBenchmark(), episodes=2)  # no benchmark seed: nothing to repeat
    assert json.loads((folder / "manifest.json").read_text())["agent"]["seed"] is None
    outcome = rerun(folder)
    assert not outcome.identical and outcome.difference.endswith("the benchmark had no seed, so its runs cannot repeat")
