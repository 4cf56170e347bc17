"""Results people look at: seeds all the way down, bounded step logs, reprs, HTML, plots, frames, progress."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from dacstyle import RemoteRunner
from dacstyle.agents import RandomAgent, StaticAgent
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.errors import MissingDependencyError, RunFolderError
from dacstyle.results import RunResults, observation_digest, read_episodes
from dacstyle.results.plots import rolling_mean


def run_sigmoid(tmp_path, episodes=3, seed=42, agent=None, **kwargs) -> RunResults:
    with RemoteRunner(SigmoidBenchmark().set_seed(seed), runtime="process", runs_dir=tmp_path / "runs") as runner:
        env = runner.get_environment()
        return runner.run(agent(env) if agent else RandomAgent(env), episodes, **kwargs)


def test_readme_example_gives_the_same_returns_every_time(tmp_path, no_leftovers):
    # RandomAgent(env) with no seed takes the benchmark's seed, so two runs agree ...
    first, second = run_sigmoid(tmp_path), run_sigmoid(tmp_path)
    assert first.returns == second.returns
    # ... and another benchmark seed gives other returns (the seed really reaches the agent)
    assert run_sigmoid(tmp_path, seed=43).returns != first.returns
    assert first.manifest["agent"] == {"entry_point": "dacstyle.agents.baselines:RandomAgent",
                                       "config": {"seed": 42}, "seed": 42}


def test_an_agent_used_twice_restarts_from_its_seed(tmp_path, no_leftovers):
    with RemoteRunner(SigmoidBenchmark().set_seed(1), runtime="process", runs_dir=tmp_path) as runner:
        agent = RandomAgent(runner.get_environment(), seed=7)
        first, second = runner.run(agent, 2), runner.run(agent, 2)
    assert first.returns == second.returns
    assert first.manifest["agent"]["seed"] == 7


def test_manifest_records_agents_that_cannot_be_rebuilt(tmp_path, no_leftovers):
    results = run_sigmoid(tmp_path, 1, agent=lambda env: (lambda obs: np.array([1, 1])))
    agent = results.manifest["agent"]
    assert agent["entry_point"] is None and agent["class"].endswith("<lambda>")
    static = run_sigmoid(tmp_path, 1, agent=lambda env: StaticAgent(env, np.array([2, 5])))
    assert static.manifest["agent"]["config"] == {"action": [2, 5]}


@pytest.mark.parametrize("log_steps, logged", [(True, 10), (False, None), (3, 4)])
def test_log_steps_bounds_the_log_and_every_episode_keeps_its_digests(tmp_path, log_steps, logged, no_leftovers):
    results = run_sigmoid(tmp_path, 2, log_steps=log_steps)
    lines = [json.loads(line) for line in (results.path / "episodes.jsonl").read_text().splitlines()]
    if logged is None:
        assert all("steps" not in line for line in lines)
    else:
        assert [len(line["steps"]) for line in lines] == [logged, logged]
        assert [s["t"] for s in lines[0]["steps"]] == list(range(0, 10, 1 if log_steps is True else log_steps))
    digests = results.manifest["episodes"]
    assert [d["length"] for d in digests] == [10, 10] and len({d["steps"] for d in digests}) == 2
    assert results.manifest["log_steps"] == log_steps
    on_disk = json.loads((results.path / "manifest.json").read_text())
    assert on_disk["episodes"] == digests and on_disk["episodes_completed"] == 2


def test_log_steps_rejects_nonsense(tmp_path, no_leftovers):
    for bad in (0, -2, 1.5, "all"):
        with pytest.raises(ValueError, match="log_steps"):
            run_sigmoid(tmp_path, 1, log_steps=bad)


def test_logged_steps_hold_observation_digests_that_match_the_environment(tmp_path, no_leftovers):
    results = run_sigmoid(tmp_path, 1, agent=lambda env: StaticAgent(env, np.array([1, 2])))
    env = SigmoidBenchmark().set_seed(42).get_environment()
    obs, _ = env.reset(seed=42)
    line = json.loads((results.path / "episodes.jsonl").read_text())
    assert line["reset_obs"] == observation_digest(obs)
    for step in line["steps"]:
        obs, reward, *_ = env.step(np.array([1, 2]))
        assert step["obs"] == observation_digest(obs) and step["reward"] == float(reward)


def test_observation_digest_sees_bytes_dtype_and_shape():
    a = np.arange(6, dtype=np.float32)
    assert observation_digest(a) == observation_digest(a.copy())
    assert observation_digest(a) != observation_digest(a.astype(np.float64))
    assert observation_digest(a) != observation_digest(a.reshape(2, 3))
    changed = a.copy()
    changed[3] = np.nextafter(changed[3], 10, dtype=np.float32)  # one ulp
    assert observation_digest(a) != observation_digest(changed)
    assert observation_digest({"x": a, "y": 1}) != observation_digest({"x": a, "y": 2})


def test_load_reads_a_run_folder_back_and_catches_an_edited_log(tmp_path, no_leftovers):
    results = run_sigmoid(tmp_path, 3)
    loaded = RunResults.load(results.path)
    assert loaded.returns == results.returns and loaded.lengths == results.lengths
    assert loaded.summary()["agent seed"] == 42
    log = results.path / "episodes.jsonl"
    lines = log.read_text().splitlines()
    record = json.loads(lines[1])
    record["wall_time_s"] += 1.0  # a field no re-run compares: only the digest can notice
    log.write_text("\n".join([lines[0], json.dumps(record), lines[2]]) + "\n")
    with pytest.raises(RunFolderError, match="episode 1 .*does not match the manifest"):
        RunResults.load(results.path)
    log.write_text("\n".join(lines[:2]) + "\n")  # a truncated log
    with pytest.raises(RunFolderError, match="has 2 episodes, the manifest lists 3"):
        list(read_episodes(results.path))
    manifest = json.loads((results.path / "manifest.json").read_text())
    del manifest["episodes"]  # as an older dacstyle wrote it
    with pytest.raises(RunFolderError, match="without episode digests: its log cannot be checked"):
        list(read_episodes(results.path, manifest))


def test_reprs_are_short_and_say_what_matters(tmp_path, no_leftovers):
    runner = RemoteRunner(SigmoidBenchmark().set_seed(0), runtime="process", runs_dir=tmp_path)
    assert repr(runner) == "<RemoteRunner 'sigmoid' runtime=process image=none stopped>"
    with runner:
        assert repr(runner).endswith("running>")
        results = runner.run(RandomAgent(runner.get_environment()), 30)
    text = repr(results)
    assert text.startswith("RunResults('sigmoid': 30 episodes, mean return ") and str(results.path) in text
    assert len(text) < 200 and "\n" not in text


def test_html_view_has_a_summary_and_a_bounded_table(tmp_path, no_leftovers):
    results = run_sigmoid(tmp_path, 30)
    page = results._repr_html_()
    assert "<table class='summary'>" in page and "dacstyle.agents.baselines:RandomAgent" in page
    assert page.count("<tr><td>") == 20 and "&hellip;" in page  # 15 first, 5 last, one gap row
    assert f"<td>29</td><td>{results.returns[29]:.4f}</td>" in page
    results.benchmark = "<script>alert(1)</script>"
    assert "<script>" not in results._repr_html_()


def test_plot_is_a_figure_of_returns_rolling_mean_and_lengths(tmp_path, no_leftovers):
    pytest.importorskip("matplotlib")
    results = run_sigmoid(tmp_path, 12)
    figure = results.plot(window=4)
    top, bottom = figure.axes
    points, mean = top.lines
    assert list(points.get_ydata()) == results.returns
    assert np.allclose(mean.get_ydata(), rolling_mean(results.returns, 4))
    assert list(bottom.lines[0].get_ydata()) == results.lengths
    assert rolling_mean([1, 2, 3, 4], 2).tolist() == [1.0, 1.5, 2.5, 3.5]


def test_plot_without_matplotlib_names_the_install_command(tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "from dacstyle.results import RunResults\n"
            "try:\n    RunResults('b', [{'episode': 0, 'return': 1.0, 'length': 1, 'wall_time_s': 0.1}]).plot()\n"
            "except ImportError as exc:\n    print(type(exc).__name__, exc)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == 'MissingDependencyError plots need matplotlib: pip install "dacstyle[plot]"'
    assert issubclass(MissingDependencyError, ImportError)


def test_to_frame_is_a_dataframe_of_the_episodes(tmp_path, no_leftovers):
    pd = pytest.importorskip("pandas")
    results = run_sigmoid(tmp_path, 4)
    frame = results.to_frame()
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["episode", "return", "length",
                                                                        "wall_time_s", "seed"]
    assert frame["return"].tolist() == results.returns and frame["seed"].tolist()[:2] == [42, None]


def test_progress_bar_over_episodes_when_asked_and_off_when_nobody_watches(tmp_path, capfd, no_leftovers):
    run_sigmoid(tmp_path, 3, progress=True)
    assert "sigmoid:   0%|          | 0/3 [" in capfd.readouterr().err
    run_sigmoid(tmp_path, 3)  # pytest's stderr is not a terminal: no bar
    assert "/3 [" not in capfd.readouterr().err
    run_sigmoid(tmp_path, 3, progress=False)
    assert "/3 [" not in capfd.readouterr().err


def test_a_run_stopped_by_an_error_leaves_a_folder_that_reads_back(tmp_path, no_leftovers):
    class FailsInThirdEpisode(RandomAgent):
        def __init__(self, env):
            super().__init__(env)
            self.acts = 0

        def act(self, state, reward):
            self.acts += 1
            if self.acts == 25:
                raise RuntimeError("agent crashed")
            return super().act(state, reward)

    runs = tmp_path / "runs"
    with pytest.raises(RuntimeError, match="agent crashed"):
        run_sigmoid(tmp_path, 5, agent=FailsInThirdEpisode)
    (folder,) = runs.iterdir()
    loaded = RunResults.load(folder)
    assert loaded.lengths == [10, 10] and loaded.manifest["episodes_completed"] == 2


def test_logged_actions_and_infos_are_the_codecs_lossless_json(tmp_path, no_leftovers):
    """The log speaks the channel's codec: an action comes back with its dtype and bits, not a repr."""
    from dacstyle import codec

    bench = SigmoidBenchmark().set_seed(5)
    agent = RandomAgent(bench.get_environment(), seed=5)
    with RemoteRunner(bench, runtime="process", runs_dir=tmp_path) as runner:
        results = runner.run(agent, 1)
    local = bench.get_environment()
    local.action_space.seed(5)
    step = next(read_episodes(results.path))["steps"][0]
    action = codec.decode(step["action"])
    assert isinstance(action, np.ndarray) and action.dtype == local.action_space.sample().dtype
    assert isinstance(codec.decode(step["info"]), dict)
