"""Proxies behave like the env: closed means ClosedError, a timed-out env fails fast, attributes and spec read."""

from __future__ import annotations

import dataclasses
import pickle
import time

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from dacstyle import RemoteRunner
from dacstyle.benchmarks import Benchmark, SigmoidBenchmark
from dacstyle.errors import BenchmarkError, CallTimeoutError, ClosedError


class SlowEnv(gym.Env):
    """An env whose step sleeps for its action (seconds) and counts the steps it finished."""

    observation_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = spaces.Box(0.0, 5.0, (1,), np.float32)

    def __init__(self) -> None:
        self.steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        time.sleep(float(action[0]))
        self.steps += 1
        return np.zeros(1, np.float32), 0.0, False, False, {}


SLOW = Benchmark(name="slow", entry_point="test_proxies:SlowEnv", attributes=["steps"])


def sigmoid(seed: int = 3) -> Benchmark:
    """The Sigmoid benchmark's spec with its instance readable from the host."""
    fields = dataclasses.asdict(SigmoidBenchmark().set_seed(seed))
    return Benchmark(**{**fields, "attributes": ["instance", "instance_id"]})


def test_a_call_on_a_closed_env_raises_closed_error(no_leftovers):
    with RemoteRunner(sigmoid(), runtime="process") as runner:
        env = runner.get_environment()
        env.reset(seed=0)
        env.close()
        with pytest.raises(ClosedError, match="closed"):
            env.step(env.action_space.sample())
        with pytest.raises(ClosedError, match="closed"):
            env.reset()
        with pytest.raises(ClosedError, match="closed"):
            env.unwrapped.instance  # noqa: B018
        env.close()  # idempotent


def test_every_use_of_a_closed_runner_raises_closed_error(no_leftovers):
    runner = RemoteRunner(sigmoid(), runtime="process").start()
    env = runner.get_environment()
    env.reset(seed=0)
    runner.close()
    with pytest.raises(ClosedError, match="closed"):
        env.step(env.action_space.sample())  # the runner took its server down: the env says closed
    for use in (runner.get_environment, runner.env_fn, runner.start, lambda: runner.make_vector_env(2),
                lambda: runner.run(None)):
        with pytest.raises(ClosedError, match="runner of 'sigmoid' is closed"):
            use()


def test_an_attached_copy_of_a_released_env_says_closed(no_leftovers):
    with RemoteRunner(sigmoid(), runtime="process") as runner:
        env = runner.get_environment()
        clone = pickle.loads(pickle.dumps(env))
        env.close()  # the owner releases it on the server
        with pytest.raises(ClosedError, match="closed"):
            clone.reset(seed=0)
        clone.close()


def test_after_a_timed_out_step_the_env_fails_fast_and_still_closes(no_leftovers):
    with RemoteRunner(SLOW, runtime="process", call_timeout=30) as runner:
        env = runner.get_environment()
        witness = pickle.loads(pickle.dumps(env))  # a second connection to the same env
        env.reset()
        env.set_timeout(0.2, "step")
        with pytest.raises(CallTimeoutError, match="did not answer"):
            env.step(np.array([1.0], np.float32))
        with pytest.raises(CallTimeoutError, match="an earlier call timed out"):
            env.step(np.array([0.0], np.float32))  # refused here, never sent
        with pytest.raises(CallTimeoutError, match="an earlier call timed out"):
            env.reset()
        assert witness.unwrapped.steps == 1  # only the slow step ran on the server
        witness.close()
        env.close()


def test_listed_attributes_read_through_unwrapped_and_wrappers(no_leftovers):
    bench = sigmoid()
    local = bench.get_environment()
    local.reset(seed=5)
    with RemoteRunner(bench, runtime="process") as runner:
        env = runner.get_environment()
        env.reset(seed=5)
        assert env.unwrapped.instance == local.instance
        wrapped = gym.wrappers.TimeLimit(env, 5)
        assert wrapped.get_wrapper_attr("instance_id") == local.instance_id
        assert wrapped.unwrapped.instance == local.instance
        with pytest.raises(AttributeError, match="spec's attributes are"):
            env.np_random_state  # noqa: B018  (not listed: refused here)
        with pytest.raises(AttributeError, match="not served"):
            env._remote.get("cutoff")  # not listed: refused by the server too
        env.close()


def test_env_spec_names_the_benchmark(no_leftovers):
    bench = sigmoid(7)
    with RemoteRunner(bench, runtime="process") as runner:
        env = runner.get_environment()
        assert isinstance(env.spec, gym.envs.registration.EnvSpec)
        assert env.spec.id == "dacstyle/sigmoid" and env.spec.entry_point == bench.entry_point
        assert env.spec.kwargs == bench.kwargs()
        env.close()


def test_attributes_must_be_public_names():
    with pytest.raises(BenchmarkError, match="attributes"):
        Benchmark(name="x", entry_point="m:f", attributes=["_secret"])
    with pytest.raises(BenchmarkError, match="attributes"):
        Benchmark(name="x", entry_point="m:f", attributes=["__call__"])
