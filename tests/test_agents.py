"""Agents: DACBench protocol, baselines, the as_agent adapter and run_episodes."""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import dacstyle.agents as agents
from dacstyle.agents import (
    AGENTS,
    Agent,
    PolicyAgent,
    RandomAgent,
    StaticAgent,
    as_agent,
    iter_episodes,
    run_episodes,
)
from dacstyle.benchmarks import GymnasiumBenchmark, LubyBenchmark, SigmoidBenchmark

RESULT_KEYS = {"episode", "return", "length", "wall_time_s", "seed"}


class DACBenchStyleAgent:
    """Written as for DACBench: no base class, only act/train/end_episode."""

    def __init__(self, env: gym.Env) -> None:
        self.env = env
        self.calls: list[tuple] = []

    def act(self, state, reward):
        self.calls.append(("act", np.asarray(state).tolist(), reward))
        return 0

    def train(self, next_state, reward):
        self.calls.append(("train", np.asarray(next_state).tolist(), reward))

    def end_episode(self, state, reward):
        self.calls.append(("end", np.asarray(state).tolist(), reward))


def luby_env(**overrides: Any) -> gym.Env:
    return LubyBenchmark(instance_distribution="plain", **overrides).get_environment()


def test_dacbench_style_agent_runs_unchanged_and_sees_the_loop_in_order():
    env = luby_env()
    agent = DACBenchStyleAgent(env)
    assert as_agent(agent) is agent and isinstance(agent, Agent)
    steps: list[tuple] = []
    results = run_episodes(env, agent, 2, on_step=lambda *args: steps.append(args))
    assert [r["length"] for r in results] == [8, 8]
    # action 0 hits the plain Luby targets 0 0 1 0 0 1 2 0 five times out of eight
    assert [r["return"] for r in results] == [-3.0, -3.0]
    kinds = [c[0] for c in agent.calls]
    assert kinds == (["act", "train"] * 8 + ["end"]) * 2
    acts = [c for c in agent.calls if c[0] == "act"]
    trains = [c for c in agent.calls if c[0] == "train"]
    ends = [c for c in agent.calls if c[0] == "end"]
    assert acts[0] == ("act", [-1.0] * 6, 0)  # first act gets reward 0, like run_benchmark
    rewards = [s[3] for s in steps]
    assert rewards == [0.0, 0.0, -1.0, 0.0, 0.0, -1.0, -1.0, 0.0] * 2
    assert [a[2] for a in acts[1:8]] == rewards[:7]  # act receives the previous reward
    assert [t[2] for t in trains[:8]] == rewards[:8]
    assert ends[0][2] == rewards[7] and ends[0][1] == trains[7][1]  # final state and reward
    assert [s[:2] for s in steps] == [(e, t) for e in range(2) for t in range(8)]
    assert all(s[5] == (s[1] == 7) for s in steps)  # truncated only at the last step
    assert all(s[6]["instance_id"] == 0 for s in steps)


def test_run_episodes_results_and_seed_on_first_reset_only():
    env = SigmoidBenchmark(cutoff=6).set_seed(2).get_environment()
    steps: list[tuple] = []
    results = run_episodes(env, RandomAgent(env, seed=1), 3, seed=11, on_step=lambda *a: steps.append(a))
    assert [set(r) for r in results] == [RESULT_KEYS] * 3
    assert [r["episode"] for r in results] == [0, 1, 2]
    assert [r["seed"] for r in results] == [11, None, None]
    assert [r["length"] for r in results] == [6, 6, 6]
    for episode, result in enumerate(results):
        logged = [s[3] for s in steps if s[0] == episode]
        assert result["return"] == pytest.approx(sum(logged)) and 0 < result["return"] <= 6
        assert type(result["return"]) is float and result["wall_time_s"] >= 0


def test_iter_episodes_yields_each_episode_when_it_ends():
    env = luby_env(min_steps=3)
    steps: list[tuple] = []
    seen = []
    for record in iter_episodes(env, lambda obs: 0, 3, seed=4, on_step=lambda *a: steps.append(a)):
        seen.append((record["episode"], [s[0] for s in steps]))
        steps.clear()
    assert seen == [(0, [0, 0, 0]), (1, [1, 1, 1]), (2, [2, 2, 2])]


def test_same_seeds_give_identical_results():
    def returns(env_seed: int, agent_seed: int) -> list[float]:
        env = SigmoidBenchmark().set_seed(env_seed).get_environment()
        return [r["return"] for r in run_episodes(env, RandomAgent(env, seed=agent_seed), 4, seed=env_seed)]

    assert returns(5, 9) == returns(5, 9)
    assert returns(5, 9) != returns(5, 10)
    assert returns(5, 9) != returns(6, 9)


def test_random_agent_is_seeded_and_leaves_the_env_space_alone():
    env = SigmoidBenchmark().get_environment()
    env.action_space.seed(1)
    expected = env.action_space.sample()
    env.action_space.seed(1)
    a, b = RandomAgent(env, seed=3), RandomAgent(env, seed=3)
    first = [a.act(None, 0).tolist() for _ in range(10)]
    assert first == [b.act(None, 0).tolist() for _ in range(10)]
    assert len({tuple(x) for x in first}) > 1
    assert all(env.action_space.contains(np.array(x)) for x in first)
    assert np.array_equal(env.action_space.sample(), expected)


def test_static_agent():
    env = SigmoidBenchmark(action_values=[3, 4]).get_environment()
    agent = StaticAgent(env, [2, 3])
    assert isinstance(agent.act(None, 0), np.ndarray) and agent.act(None, 0).tolist() == [2, 3]
    results = run_episodes(env, agent, 1)
    assert results[0]["length"] == 10
    with pytest.raises(ValueError, match="not in the action space"):
        StaticAgent(env, [3, 0])
    luby = luby_env()
    assert run_episodes(luby, StaticAgent(luby, 0), 1)[0]["return"] == -3.0
    with pytest.raises(ValueError):
        StaticAgent(luby, 7)


def test_plain_callable_policy_and_partial_agents():
    env = luby_env()
    targets = [0, 0, 1, 0, 0, 1, 2, 0]
    seen: list[list[float]] = []

    def policy(obs):
        seen.append(np.asarray(obs).tolist())
        return targets[int(obs[-1]) + 1]  # obs[-1] is the index of the step just taken

    wrapped = as_agent(policy)
    assert isinstance(wrapped, PolicyAgent)
    assert run_episodes(env, policy, 1)[0]["return"] == 0.0  # a perfect policy
    assert len(seen) == 8 and seen[0] == [-1.0] * 6

    class OnlyAct:
        def act(self, state, reward):
            return 1

    assert isinstance(as_agent(OnlyAct()), PolicyAgent)
    assert run_episodes(env, OnlyAct(), 1)[0]["return"] == -6.0
    with pytest.raises(TypeError, match="not an agent"):
        as_agent(42)


def test_run_episodes_on_a_gymnasium_env():
    env = GymnasiumBenchmark("CartPole-v1").get_environment()
    results = run_episodes(env, lambda obs: 0, 2, seed=0)
    again = run_episodes(GymnasiumBenchmark("CartPole-v1").get_environment(), lambda obs: 0, 2, seed=0)
    assert [r["length"] for r in results] == [r["length"] for r in again]
    assert all(r["return"] == r["length"] > 0 for r in results)  # CartPole pays 1 per step


def test_number_of_episodes_is_checked():
    env = luby_env()
    assert run_episodes(env, lambda obs: 0, 0) == []
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError):
            run_episodes(env, lambda obs: 0, bad)


def test_registry_and_public_list():
    env = luby_env()
    assert isinstance(AGENTS["random"](env, seed=0), RandomAgent)
    assert AGENTS["static"](env, action=2).act(None, 0) == 2
    expected = {"Agent", "RandomAgent", "StaticAgent", "as_agent", "run_episodes", "AGENTS"}
    assert expected <= set(agents.__all__)
    for name in agents.__all__:
        assert getattr(agents, name) is not None


def test_hooks_see_each_reset_observation_and_each_step_observation():
    env = SigmoidBenchmark(cutoff=3).set_seed(4).get_environment()
    resets: list[tuple] = []
    steps: list[tuple] = []
    run_episodes(env, lambda obs: np.array([1, 1]), 2, seed=4, on_step=lambda *a: steps.append(a),
                 on_reset=lambda *a: resets.append(a))
    again = SigmoidBenchmark(cutoff=3).set_seed(4).get_environment()
    first, _ = again.reset(seed=4)
    assert [r[0] for r in resets] == [0, 1] and np.array_equal(resets[0][1], first)
    for step in steps[:3]:
        observation = again.step(np.array([1, 1]))[0]
        assert np.array_equal(step[7], observation)


def test_baselines_rebuild_from_their_description_and_restart_from_their_seed():
    from dacstyle.benchmarks.spec import load_entry_point

    env = SigmoidBenchmark().get_environment()
    unseeded = RandomAgent(env)
    assert unseeded.reseed(42) == 42 and unseeded.describe()["seed"] == 42
    drawn = [unseeded.act(None, 0).tolist() for _ in range(5)]
    unseeded.reseed(42)
    assert [unseeded.act(None, 0).tolist() for _ in range(5)] == drawn
    record = unseeded.describe()
    rebuilt = load_entry_point(record["entry_point"])(env, **record["config"])
    assert [rebuilt.act(None, 0).tolist() for _ in range(5)] == drawn
    assert RandomAgent(env, seed=3).reseed(42) == 3  # a given seed wins over the benchmark's
    static = StaticAgent(env, np.array([2, 5])).describe()
    assert load_entry_point(static["entry_point"])(env, **static["config"]).act(None, 0).tolist() == [2, 5]
