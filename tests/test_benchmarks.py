"""Sigmoid and Luby (DACBench definitions), their specs, and GymnasiumBenchmark."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import dacstyle.benchmarks as benchmarks
from dacstyle.benchmarks import (
    BENCHMARKS,
    Benchmark,
    GymnasiumBenchmark,
    LubyBenchmark,
    SigmoidBenchmark,
)
from dacstyle.benchmarks.luby import LubyEnv, luby
from dacstyle.benchmarks.sigmoid import SigmoidEnv
from dacstyle.errors import BenchmarkError

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def rollout(env: gym.Env, actions_seed: int, episodes: int = 3) -> list[tuple]:
    """Observations, rewards and infos of a few episodes of seeded random actions."""
    space = env.action_space
    space.seed(actions_seed)
    trace: list[tuple] = []
    for _ in range(episodes):
        obs, info = env.reset()
        trace.append((obs.tolist(), info["instance_id"]))
        done = False
        while not done:
            obs, reward, terminated, truncated, info = env.step(space.sample())
            trace.append((obs.tolist(), reward, terminated, truncated, info["instance_id"]))
            done = terminated or truncated
    return trace


# -- conformance -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "make",
    [
        lambda: SigmoidEnv(),
        lambda: SigmoidEnv(action_values=[3], cutoff=5, instance_distribution="paper", seed=7),
        lambda: SigmoidEnv(action_values=[3, 3, 3], instance_set=[[1, 2, 3, 0.5, -1, 2]]),
        lambda: LubyEnv(),
        lambda: LubyEnv(instance_distribution="plain"),
        lambda: LubyEnv(hist_length=3, min_steps=16, instance_order="random", seed=3),
    ],
    ids=["sigmoid", "sigmoid-1d-paper", "sigmoid-3d-explicit", "luby", "luby-plain", "luby-random"],
)
def test_envs_pass_gymnasium_check_env_without_warnings(make):
    env = make()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.float32 and env.observation_space.contains(obs)
    assert isinstance(info["instance_id"], int)
    _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
    assert type(reward) is float and terminated is False and isinstance(truncated, bool)


def test_spaces_follow_dacbench_defaults():
    sig = SigmoidEnv()
    assert sig.action_space == gym.spaces.MultiDiscrete([5, 10])
    assert sig.observation_space.shape == (7,)
    luby_env = LubyEnv()
    assert luby_env.action_space == gym.spaces.Discrete(7)  # log2(64) + 1 sequence elements
    assert luby_env.observation_space.shape == (6,)
    assert luby_env.observation_space.low.tolist() == [-1.0] * 6
    assert luby_env.observation_space.high.tolist() == [128.0] * 6  # 2 ** max(log2 luby + 1)
    assert len(sig.instance_set) == 100 and len(luby_env.instance_set) == 100


# -- Sigmoid rewards and states, computed by hand ----------------------------------------
def test_sigmoid_rewards_and_observations_by_hand():
    env = SigmoidEnv(action_values=[3], cutoff=3, instance_set=[[2.0, 1.0]])  # shift 2, slope 1
    obs, info = env.reset()
    assert obs.tolist() == [3.0, 2.0, 1.0, -1.0] and info == {"instance_id": 0, "step": 0}
    # t=1: sigmoid = 1/(1+e^1); action 1 of 3 -> 0.5
    obs, r, term, trunc, info = env.step(np.array([1]))
    assert r == pytest.approx(1 - abs(1 / (1 + math.e) - 0.5)) == pytest.approx(0.7689414213699951)
    assert obs.tolist() == [2.0, 2.0, 1.0, 1.0] and (term, trunc) == (False, False)
    # t=2: sigmoid = 0.5; action 2 -> 1.0
    obs, r, term, trunc, _ = env.step([2])
    assert r == pytest.approx(0.5)
    # t=3: sigmoid = 1/(1+e^-1); action 2 -> 1.0; cutoff reached: truncated, not terminated
    obs, r, term, trunc, info = env.step([2])
    assert r == pytest.approx(1 / (1 + math.exp(-1))) == pytest.approx(0.7310585786300049)
    assert obs.tolist() == [0.0, 2.0, 1.0, 2.0] and (term, trunc) == (False, True)
    with pytest.raises(gym.error.ResetNeeded):
        env.step([0])


def test_sigmoid_reward_is_product_over_dimensions():
    # instance = [shift_1, shift_2, slope_1, slope_2] as in DACBench's CSV files
    env = SigmoidEnv(action_values=[2, 5], cutoff=4, instance_set=[[1.0, 5.0, 2.0, -1.0]])
    env.reset()
    obs, r, *_ = env.step([1, 4])
    # dim 1: sigmoid(1; slope 2, shift 1) = 0.5, action 1/1 = 1 -> 0.5
    # dim 2: sigmoid(1; slope -1, shift 5) = 1/(1+e^-4), action 4/4 = 1 -> 1/(1+e^-4)
    assert r == pytest.approx(0.5 * (1 / (1 + math.exp(-4)))) == pytest.approx(0.49100689501895425)
    assert obs.tolist() == [3.0, 1.0, 2.0, 5.0, -1.0, 1.0, 4.0]
    with pytest.raises(ValueError, match="not in"):
        env.step([2, 0])


# -- Luby ------------------------------------------------------------------------------
def test_luby_sequence():
    assert [luby(i) for i in range(1, 16)] == [1, 1, 2, 1, 1, 2, 4, 1, 1, 2, 1, 1, 2, 4, 8]


def test_luby_rewards_and_history_by_hand():
    env = LubyEnv(instance_distribution="plain")  # DACBench's default instance [0, 0]
    assert env.get_instance_set() == {0: [0.0, 0.0]}
    obs, _ = env.reset()
    assert obs.tolist() == [-1.0] * 6
    actions = [0, 6, 1, 6, 0, 6, 2, 5]  # targets are log2 luby(1..8) = 0 0 1 0 0 1 2 0
    expected_obs = [
        [0, -1, -1, -1, -1, 0],
        [0, 6, -1, -1, -1, 1],
        [0, 6, 1, -1, -1, 2],
        [0, 6, 1, 6, -1, 3],
        [0, 6, 1, 6, 0, 4],
        [6, 1, 6, 0, 6, 5],  # history of 5 actions slides, last entry is the step index
        [1, 6, 0, 6, 2, 6],
        [1, 6, 0, 6, 2, 6],  # DACBench returns the previous state with the final step
    ]
    rewards = []
    for k, action in enumerate(actions):
        obs, r, term, trunc, _ = env.step(action)
        rewards.append(r)
        assert obs.tolist() == expected_obs[k]
        assert (term, trunc) == (False, k == 7)  # min_steps = 8
    assert rewards == [0.0, -1.0, 0.0, -1.0, 0.0, -1.0, 0.0, -1.0]


def _dacbench_targets(start: float, sticky: float, steps: int) -> list[int]:
    """DACBench's target walk, transcribed: the error accumulates step by step."""
    seq = [1]
    for i in range(2, 2 * 64 + 2):  # luby via its doubling structure, independent of luby()
        k = i.bit_length()
        seq.append(2 ** (k - 1) if i == 2**k - 1 else seq[i - 2 ** (k - 1)])
    error, jenny = sticky, 1
    targets = []
    for _ in range(steps):
        targets.append(int(np.log2(seq[max(1, int(np.round(jenny + start + error))) - 1])))
        jenny += 1
        error += sticky
    return targets


def test_luby_targets_with_shifts():
    env = LubyEnv(instance_set=[[3.0, 0.0], [0.0, 0.5]])
    env.reset()
    assert [env.target_at(k) for k in range(1, 9)] == [0, 0, 1, 2, 0, 0, 1, 0]  # luby(4..11)
    env.reset()
    # round(k * 1.5) with halves to even, as np.round: 2 3 4 6 8 9 10 12
    assert [env.target_at(k) for k in range(1, 9)] == [0, 1, 0, 1, 0, 0, 1, 0]
    generated = LubyEnv(seed=11)
    for inst_id in list(generated.instance_set)[:20]:
        generated.reset(options={"instance_id": inst_id})
        start, sticky = generated.instance
        expected = _dacbench_targets(start, sticky, 8)
        got = []
        for _ in range(8):
            got.append(generated.target)
            generated.step(generated.target)
        assert got == expected


# -- instance sets and their iteration ---------------------------------------------------
def test_generated_instance_sets_follow_the_documented_distributions():
    sig = SigmoidEnv(n_instances=2000, seed=1).get_instance_set()
    shifts = np.array([inst[:2] for inst in sig.values()])
    slopes = np.array([inst[2:] for inst in sig.values()])
    assert abs(shifts.mean() - 4) < 0.2 and abs(shifts.std() - 2) < 0.2
    assert abs(slopes.mean() - 2) < 0.3 and abs(slopes.std() - 4) < 0.3
    luby_set = np.array(list(LubyEnv(n_instances=2000, seed=1).get_instance_set().values()))
    assert luby_set[:, 0].min() >= 0 and luby_set[:, 0].max() <= 64
    assert np.abs(luby_set[:, 1]).max() <= 0.15 * 3.3666667 + 1e-9


@settings(max_examples=25, deadline=None)
@given(seed=seeds, other=seeds)
def test_same_seed_same_instances_and_trajectories(seed, other):
    for cls in (SigmoidEnv, LubyEnv):
        a, b = cls(seed=seed, n_instances=5), cls(seed=seed, n_instances=5)
        assert a.get_instance_set() == b.get_instance_set()
        assert rollout(a, 123) == rollout(b, 123)
        if other != seed:
            assert cls(seed=other, n_instances=5).get_instance_set() != a.get_instance_set()


def test_instances_cycle_sequentially_and_reset_seed_restarts():
    env = SigmoidEnv(n_instances=3, seed=5)
    ids = [env.reset()[1]["instance_id"] for _ in range(5)]
    assert ids == [0, 1, 2, 0, 1]
    first_obs, info = env.reset(seed=9)
    assert info["instance_id"] == 0
    assert env.reset(options={"instance_id": 2})[1]["instance_id"] == 2
    assert env.reset()[1]["instance_id"] == 0  # continues after the chosen instance
    assert np.array_equal(env.reset(seed=9)[0], first_obs)
    with pytest.raises(ValueError, match="no instance"):
        env.reset(options={"instance_id": 7})


def test_random_instance_order_is_seeded():
    def order(seed: int) -> list[int]:
        env = LubyEnv(n_instances=10, instance_order="random", seed=seed)
        return [env.reset()[1]["instance_id"] for _ in range(20)]

    assert order(4) == order(4)
    assert order(4) != order(5)
    assert len(set(order(4))) > 3


def test_step_before_reset_is_refused():
    with pytest.raises(gym.error.ResetNeeded):
        LubyEnv().step(0)


# -- specs -------------------------------------------------------------------------------
def test_spec_usage_from_the_design():
    bench = SigmoidBenchmark()
    bench.set_seed(42)
    assert bench.name == "sigmoid"
    assert bench.entry_point == "dacstyle.benchmarks.sigmoid:SigmoidEnv"
    assert bench.seed_key == "seed" and bench.is_environment
    env = bench.get_environment()
    assert isinstance(env, SigmoidEnv)
    assert env.get_instance_set() == SigmoidEnv(seed=42).get_instance_set()
    assert LubyBenchmark().entry_point == "dacstyle.benchmarks.luby:LubyEnv"
    assert set(BENCHMARKS) == {"sigmoid", "luby"}
    assert BENCHMARKS["luby"](min_steps=4).config["min_steps"] == 4


@settings(max_examples=40, deadline=None)
@given(
    seed=st.none() | seeds,
    cutoff=st.integers(1, 50),
    values=st.lists(st.integers(2, 9), min_size=1, max_size=4),
    n_instances=st.integers(1, 20),
    order=st.sampled_from(["sequential", "random"]),
)
def test_sigmoid_spec_json_round_trip(seed, cutoff, values, n_instances, order):
    bench = SigmoidBenchmark(cutoff=cutoff, action_values=values, n_instances=n_instances, instance_order=order)
    bench.set_seed(seed)
    again = Benchmark.from_json(bench.to_json())
    assert again == bench and again.to_json() == bench.to_json()
    if seed is not None:
        assert again.build().get_instance_set() == bench.build().get_instance_set()


@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    instances=st.lists(
        st.tuples(st.floats(0, 64, allow_nan=False), st.floats(-0.5, 0.5, allow_nan=False)), min_size=1, max_size=5
    ),
    min_steps=st.integers(1, 64),
)
def test_luby_spec_with_explicit_instance_set_round_trips(seed, instances, min_steps):
    bench = LubyBenchmark(instance_set=[list(i) for i in instances], min_steps=min_steps).set_seed(seed)
    again = Benchmark.from_json(bench.to_json())
    assert again == bench
    env = again.get_environment()
    assert env.get_instance_set() == {i: [float(a), float(b)] for i, (a, b) in enumerate(instances)}


def test_tuple_and_mapping_overrides_become_plain_json():
    bench = SigmoidBenchmark(action_values=(3, 4), instance_set={"7": [1, 2, 3, 4]})
    assert bench.config["action_values"] == [3, 4]
    assert Benchmark.from_json(bench.to_json()) == bench
    assert bench.get_environment().reset()[1]["instance_id"] == 7


@pytest.mark.parametrize(
    "factory, overrides, message",
    [
        (SigmoidBenchmark, {"cutof": 10}, "unknown config keys"),
        (SigmoidBenchmark, {"seed": 3}, "unknown config keys"),
        (SigmoidBenchmark, {"cutoff": 0}, "cutoff"),
        (SigmoidBenchmark, {"cutoff": "10"}, "cutoff"),
        (SigmoidBenchmark, {"action_values": [1, 5]}, "action_values"),
        (SigmoidBenchmark, {"action_values": []}, "action_values"),
        (SigmoidBenchmark, {"instance_distribution": "uniform"}, "instance_distribution"),
        (SigmoidBenchmark, {"instance_set": [[1.0, 2.0]]}, "expected 4"),
        (SigmoidBenchmark, {"slope_multiplier": -1}, "slope_multiplier"),
        (LubyBenchmark, {"history": 5}, "unknown config keys"),
        (LubyBenchmark, {"min_steps": 65}, "must not exceed cutoff"),
        (LubyBenchmark, {"hist_length": True}, "hist_length"),
        (LubyBenchmark, {"instance_order": "shuffled"}, "instance_order"),
        (LubyBenchmark, {"instance_set": []}, "empty"),
        (LubyBenchmark, {"instance_set": [[0, "x"]]}, "not a list of numbers"),
    ],
)
def test_bad_overrides_are_rejected(factory, overrides, message):
    with pytest.raises(BenchmarkError, match=message):
        factory(**overrides)


# -- gymnasium environments ---------------------------------------------------------------
def test_gymnasium_benchmark_by_registry_id():
    bench = GymnasiumBenchmark("CartPole-v1", max_episode_steps=20).set_seed(3)
    assert (bench.name, bench.entry_point, bench.seed_key) == ("CartPole-v1", "gymnasium:make", "")
    assert bench.config == {"id": "CartPole-v1", "max_episode_steps": 20}
    assert bench.kwargs() == bench.config  # the seed is for reset, not the constructor
    assert Benchmark.from_json(bench.to_json()) == bench
    env = bench.get_environment()
    assert env.spec.id == "CartPole-v1" and env.spec.max_episode_steps == 20
    obs, _ = env.reset(seed=bench.seed)
    assert np.array_equal(obs, gym.make("CartPole-v1").reset(seed=3)[0])
    steps = 0
    truncated = terminated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(0)
        steps += 1
    assert steps <= 20


def test_gymnasium_benchmark_by_entry_point():
    bench = GymnasiumBenchmark("dacstyle.benchmarks.luby:LubyEnv", instance_distribution="plain", min_steps=4)
    assert bench.entry_point == "dacstyle.benchmarks.luby:LubyEnv"
    assert bench.config == {"instance_distribution": "plain", "min_steps": 4}
    env = Benchmark.from_json(bench.to_json()).get_environment()
    assert isinstance(env, LubyEnv) and env.min_steps == 4
    # a gymnasium id with a module prefix stays a gymnasium id
    assert GymnasiumBenchmark("ale_py:ALE/Pong-v5").config == {"id": "ale_py:ALE/Pong-v5"}
    with pytest.raises(BenchmarkError):
        GymnasiumBenchmark("")
    with pytest.raises(BenchmarkError):
        GymnasiumBenchmark("CartPole-v1", id="Pendulum-v1")


def test_public_list_is_complete():
    expected = {"Benchmark", "load_entry_point", "SigmoidBenchmark", "LubyBenchmark", "GymnasiumBenchmark", "BENCHMARKS"}
    assert expected <= set(benchmarks.__all__)
    for name in benchmarks.__all__:
        assert getattr(benchmarks, name) is not None
