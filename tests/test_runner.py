"""RemoteRunner end to end with the process runtime: conformance, equality with local, logs."""

from __future__ import annotations

import json
import threading

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from dacstyle import RemoteRunner
from dacstyle.agents import RandomAgent, StaticAgent
from dacstyle.benchmarks import BENCHMARKS, Benchmark, GymnasiumBenchmark, LubyBenchmark, SigmoidBenchmark

from conftest import assert_identical, local_trajectory, trajectory

REMOTE_CASES = [pytest.param(factory, id=name) for name, factory in BENCHMARKS.items()] + [
    pytest.param(lambda: GymnasiumBenchmark("CartPole-v1"), id="CartPole-v1"),
    pytest.param(lambda: GymnasiumBenchmark("Pendulum-v1"), id="Pendulum-v1"),
]


@pytest.mark.parametrize("make", REMOTE_CASES)
def test_check_env_passes_on_the_remote_proxy(make, no_leftovers):
    with RemoteRunner(make().set_seed(3), runtime="process") as runner:
        env = runner.get_environment()
        assert isinstance(env, gym.Env)
        check_env(env, skip_render_check=True)
        env.close()


@pytest.mark.parametrize("make", REMOTE_CASES)
def test_same_seed_same_actions_gives_identical_local_and_remote_trajectories(make, no_leftovers):
    bench = make().set_seed(11)
    actions, expected = local_trajectory(bench, 11, 40, action_seed=5)
    with RemoteRunner(bench, runtime="process") as runner:
        env = runner.get_environment()
        got = trajectory(env, 11, actions)
        env.close()
    assert_identical(got, expected)


def test_render_returns_an_rgb_array(no_leftovers):
    with RemoteRunner(GymnasiumBenchmark("CartPole-v1", render_mode="rgb_array"), runtime="process") as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        frame = env.render()
        assert env.render_mode == "rgb_array"
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.shape == (400, 600, 3)


def test_run_returns_results_and_writes_the_run_folder(tmp_path, no_leftovers):
    bench = SigmoidBenchmark().set_seed(42)
    with RemoteRunner(bench, runtime="process", runs_dir=tmp_path / "runs") as runner:
        env = runner.get_environment()
        results = runner.run(RandomAgent(env, seed=1), number_of_episodes=4)
    assert len(results.episodes) == 4 and results.lengths == [10, 10, 10, 10]
    assert all(e["wall_time_s"] > 0 for e in results.episodes)
    lines = [json.loads(line) for line in (results.path / "episodes.jsonl").read_text().splitlines()]
    assert [line["episode"] for line in lines] == [0, 1, 2, 3]
    assert [len(line["steps"]) for line in lines] == [10, 10, 10, 10]
    assert np.isclose(sum(s["reward"] for s in lines[2]["steps"]), results.returns[2])
    manifest = json.loads((results.path / "manifest.json").read_text())
    assert Benchmark.from_json(json.dumps(manifest["benchmark"])) == bench
    assert manifest["seed"] == 42 and manifest["episodes_completed"] == 4
    assert manifest["runtime"] == {"name": "process", "isolated": False}
    assert manifest["server"]["protocol"] == manifest["host"]["protocol"]
    assert "numpy" in manifest["server"] and "gymnasium" in manifest["server"]
    assert (results.path / "server.log").exists()
    assert "mean" in results.table()


def test_run_matches_a_local_run_with_the_same_agent_seed(tmp_path, no_leftovers):
    from dacstyle.agents import run_episodes

    bench = LubyBenchmark().set_seed(7)
    local_env = bench.get_environment()
    local = run_episodes(local_env, RandomAgent(local_env, seed=2), 3, seed=7)
    with RemoteRunner(bench, runtime="process", runs_dir=tmp_path) as runner:
        remote = runner.run(RandomAgent(runner.get_environment(), seed=2), 3)
    assert remote.returns == [e["return"] for e in local]


def test_dacbench_style_agent_and_plain_callable(no_leftovers):
    class DACBenchAgent:  # what a DACBench user already has: no base class
        def __init__(self):
            self.calls = []

        def act(self, state, reward):
            self.calls.append("act")
            return np.array([1, 1])

        def train(self, next_state, reward):
            self.calls.append("train")

        def end_episode(self, state, reward):
            self.calls.append("end")

    agent = DACBenchAgent()
    with RemoteRunner(SigmoidBenchmark().set_seed(0), runtime="process") as runner:
        runner.run(agent, 1)
        env = runner.get_environment()
        static = runner.run(StaticAgent(env, np.array([1, 1])), 1)
        policy = runner.run(lambda obs: np.array([1, 1]), 1)
    assert agent.calls.count("act") == 10 and agent.calls[-1] == "end"
    assert static.returns == policy.returns


def test_twenty_runners_in_parallel_have_no_cross_talk(no_leftovers):
    seeds = list(range(20))
    expected = {}
    for seed in seeds:
        env = SigmoidBenchmark().set_seed(seed).get_environment()
        expected[seed] = trajectory(env, seed, [np.array([seed % 5, seed % 10])] * 12)
    got: dict[int, list] = {}
    failures: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            with RemoteRunner(SigmoidBenchmark().set_seed(seed), runtime="process") as runner:
                env = runner.get_environment()
                got[seed] = trajectory(env, seed, [np.array([seed % 5, seed % 10])] * 12)
        except BaseException as exc:  # reported below, in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in seeds]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not failures, failures
    assert sorted(got) == seeds
    for seed in seeds:
        assert_identical(got[seed], expected[seed])


def test_object_benchmarks_are_served_with_their_method_list(no_leftovers):
    bench = Benchmark(name="rng", entry_point="numpy.random:default_rng", config={"seed": 5}, seed_key="",
                      methods=["random", "integers"])
    with RemoteRunner(bench, runtime="process") as runner:
        rng = runner.get_object()
        assert rng.integers(0, 100, size=3).tolist() == np.random.default_rng(5).integers(0, 100, size=3).tolist()
        assert not hasattr(rng, "normal")
        with pytest.raises(Exception, match="serves an object"):
            runner.get_environment()


def test_a_proxy_can_be_used_from_another_thread(no_leftovers):
    """Pyro5 proxies belong to one thread; dacstyle's hand over safely, one call at a time."""
    with RemoteRunner(SigmoidBenchmark().set_seed(0), runtime="process") as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        results: list = []
        errors: list[BaseException] = []

        def stepper() -> None:
            try:
                for _ in range(5):
                    results.append(env.step(np.array([1, 1]))[1])
            except BaseException as exc:  # reported in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=stepper) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not errors and len(results) == 10
        env.close()
