"""runner.make_vector_env: SyncVectorEnv semantics bit for bit, one round trip per server, servers in parallel."""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from dacstyle import RemoteRunner
from dacstyle.benchmarks import Benchmark, GymnasiumBenchmark, SigmoidBenchmark
from dacstyle.container.client import channel as channel_module
from dacstyle.container.client import proxies as proxies_module
from dacstyle.container.client.vector import RemoteVectorEnv
from dacstyle.errors import BenchmarkError, CallTimeoutError, ClosedError

from conftest import assert_identical


class RendezvousEnv(gym.Env):
    """Each step waits until every server stepping it has arrived: it only completes when steps overlap."""

    observation_space = spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = spaces.Discrete(2)

    def __init__(self, folder: str, parties: int) -> None:
        self.folder, self.parties, self.count = Path(folder), parties, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.count += 1
        (self.folder / f"{self.count}-{os.getpid()}").touch()
        deadline = time.monotonic() + 10
        while len(list(self.folder.glob(f"{self.count}-*"))) < self.parties:
            if time.monotonic() > deadline:
                raise TimeoutError(f"step {self.count}: the other servers never stepped at the same time")
            time.sleep(0.005)  # a rendezvous between processes through files; bounded by the deadline
        return np.ones(1, np.float32), 1.0, False, False, {"pid": os.getpid()}


class SleepyEnv(RendezvousEnv):
    """Sleeps for its action (seconds) in step and counts the steps it finished."""

    def __init__(self) -> None:
        super().__init__("/nonexistent", 1)

    def step(self, action):
        time.sleep(float(action))
        self.count += 1
        return np.ones(1, np.float32), 0.0, False, False, {}


class Boom(Exception):
    """A benchmark's own exception, declared in its spec."""


class BoomEnv(RendezvousEnv):
    """Raises :class:`Boom` on action 1."""

    def __init__(self) -> None:
        super().__init__("/nonexistent", 1)

    def step(self, action):
        if action == 1:
            raise Boom("boom")
        return np.ones(1, np.float32), 0.0, False, False, {}


def with_attributes(bench: Benchmark, *names: str) -> Benchmark:
    """``bench`` with ``names`` readable from the host."""
    return Benchmark(**{**dataclasses.asdict(bench), "attributes": list(names)})


def same(a, b) -> None:
    """Bit-for-bit equality, dict keys in the same order (gymnasium's infos layout)."""
    assert_identical(a, b, ordered=True)


def rollout(vec, actions, seed):
    return [vec.reset(seed=seed)] + [vec.step(a) for a in actions]


CASES = [
    pytest.param(lambda: SigmoidBenchmark().set_seed(4), 5, 2, id="sigmoid-5-on-2"),
    pytest.param(lambda: GymnasiumBenchmark("CartPole-v1"), 4, 3, id="cartpole-4-on-3"),
]


@pytest.mark.parametrize("mode", ["NextStep", "SameStep"])
@pytest.mark.parametrize("make, n, k", CASES)
def test_vector_env_equals_sync_vector_env_bit_for_bit_across_autoresets(make, n, k, mode, no_leftovers):
    bench = make()
    local = gym.vector.SyncVectorEnv([bench.get_environment] * n, autoreset_mode=mode)
    local.action_space.seed(3)
    actions = [local.action_space.sample() for _ in range(35)]
    expected = rollout(local, actions, seed=10)
    assert any(step[2].any() or step[3].any() for step in expected[1:]), "the rollout must cross an autoreset"
    with RemoteRunner(bench, runtime="process") as runner:
        vec = runner.make_vector_env(n, num_servers=k, autoreset_mode=mode)
        assert isinstance(vec, gym.vector.VectorEnv) and vec.num_envs == n
        assert vec.observation_space == local.observation_space and vec.action_space == local.action_space
        assert vec.metadata["autoreset_mode"] == local.metadata["autoreset_mode"]
        got = rollout(vec, actions, seed=10)
        seeds = [7 + i for i in range(n)]  # one seed per sub-env, spread over the servers
        got.append(vec.reset(seed=seeds))
        expected.append(local.reset(seed=seeds))
        vec.close()
    local.close()
    same(got, expected)


def test_masked_resets_with_autoreset_disabled_match_across_servers(no_leftovers):
    bench = SigmoidBenchmark().set_seed(1)
    local = gym.vector.SyncVectorEnv([bench.get_environment] * 4, autoreset_mode="Disabled")
    with RemoteRunner(bench, runtime="process") as runner:
        vec = runner.make_vector_env(4, num_servers=2, autoreset_mode="Disabled")
        results = []
        for env in (local, vec):
            env.action_space.seed(2)
            run = [env.reset(seed=3)]
            for _ in range(10):
                run.append(env.step(env.action_space.sample()))
            for mask in ([False, False, True, True], [True, True, False, False]):  # one server's sub-envs each
                run.append(env.reset(options={"reset_mask": np.array(mask)}))
            run.append(env.step(env.action_space.sample()))
            results.append(run)
        with pytest.raises(ValueError, match="at least one True"):
            vec.reset(options={"reset_mask": np.zeros(4, dtype=bool)})
        vec.close()
    same(results[1], results[0])


def test_call_get_attr_and_set_attr_are_served_for_listed_names(no_leftovers):
    bench = with_attributes(SigmoidBenchmark().set_seed(5), "instance", "instance_id")
    local = gym.vector.SyncVectorEnv([bench.get_environment] * 3)
    local.reset(seed=0)
    with RemoteRunner(bench, runtime="process") as runner:
        vec = runner.make_vector_env(3, num_servers=2)
        vec.reset(seed=0)
        assert vec.get_attr("instance") == local.get_attr("instance")
        same(vec.call("reset", seed=1), local.call("reset", seed=1))
        vec.set_attr("instance_id", [7, 8, 9])
        assert vec.get_attr("instance_id") == (7, 8, 9)
        vec.set_attr("instance_id", 4)
        assert vec.get_attr("instance_id") == (4, 4, 4)
        with pytest.raises(AttributeError, match="neither an environment method nor a listed attribute"):
            vec.get_attr("np_random")
        with pytest.raises(AttributeError, match="not listed"):
            vec.set_attr("cutoff", 3)
        with pytest.raises(ValueError, match="length equal to the number of environments"):
            vec.set_attr("instance_id", [1, 2])
        vec.close()
        with pytest.raises(ClosedError):
            vec.step(vec.action_space.sample())


def test_one_round_trip_per_server_per_step(monkeypatch, no_leftovers):
    calls = []
    invoke, send = channel_module.Channel.invoke, proxies_module.RemoteHandle.send

    def counting(self, proxy, lock, method, args, timeout):
        calls.append(args[0] if method == "call" else method)
        return invoke(self, proxy, lock, method, args, timeout)

    def counting_send(self, method, *args, **kwargs):  # a call sent now, its reply read later
        calls.append(method)
        return send(self, method, *args, **kwargs)

    with RemoteRunner(SigmoidBenchmark().set_seed(0), runtime="process") as runner:
        vec = runner.make_vector_env(16, num_servers=2)
        vec.reset(seed=0)
        monkeypatch.setattr(channel_module.Channel, "invoke", counting)
        monkeypatch.setattr(proxies_module.RemoteHandle, "send", counting_send)
        for _ in range(3):
            vec.step(vec.action_space.sample())
        monkeypatch.undo()
        vec.close()
    assert calls == ["step"] * 6


def test_servers_are_stepped_at_the_same_time(tmp_path, no_leftovers):
    bench = Benchmark(name="rendezvous", entry_point="test_vector:RendezvousEnv",
                      config={"folder": str(tmp_path), "parties": 3})
    with RemoteRunner(bench, runtime="process") as runner:
        vec = runner.make_vector_env(3, num_servers=3)
        vec.reset(seed=0)
        for _ in range(3):
            _, rewards, _, _, infos = vec.step(np.zeros(3, dtype=np.int64))
            assert rewards.tolist() == [1.0, 1.0, 1.0]
        assert len(set(infos["pid"].tolist())) == 3  # three servers, three processes
        vec.close()


def test_closing_the_runner_closes_its_vector_envs_and_extra_servers(no_leftovers):
    runner = RemoteRunner(SigmoidBenchmark(), runtime="process").start()
    vec = runner.make_vector_env(4, num_servers=2)
    vec.reset(seed=0)
    runner.close()
    assert vec.closed


def test_bad_sizes_and_objects_are_refused_before_any_server_starts(no_leftovers):
    with RemoteRunner(SigmoidBenchmark(), runtime="process") as runner:
        for n, k in [(0, 1), (2, 3), (4, 0), (True, 1)]:
            with pytest.raises(BenchmarkError, match="num_"):
                runner.make_vector_env(n, num_servers=k)
    from dacstyle.testing import probe_benchmark

    with RemoteRunner(probe_benchmark(), runtime="process") as runner:
        with pytest.raises(BenchmarkError, match="not an environment"):
            runner.make_vector_env(2)
    assert RemoteVectorEnv.__mro__[1] is gym.vector.VectorEnv


def test_vector_env_over_two_bwrap_containers_equals_sync_vector_env(packed_image, no_leftovers):
    bench = SigmoidBenchmark().set_seed(8)
    local = gym.vector.SyncVectorEnv([bench.get_environment] * 4)
    local.action_space.seed(1)
    actions = [local.action_space.sample() for _ in range(12)]
    expected = rollout(local, actions, seed=2)
    with RemoteRunner(bench, runtime="bwrap", image=packed_image) as runner:
        vec = runner.make_vector_env(4, num_servers=2)
        got = rollout(vec, actions, seed=2)
        vec.close()
    same(got, expected)


def test_declared_exceptions_arrive_as_their_type_through_vector_envs_and_env_fns(no_leftovers):
    bench = Benchmark(name="boom", entry_point="test_vector:BoomEnv", exceptions=["test_vector:Boom"])
    with RemoteRunner(bench, runtime="process") as runner:
        vec = runner.make_vector_env(2, num_servers=2)
        vec.reset(seed=0)
        with pytest.raises(Boom, match="boom"):
            vec.step(np.array([0, 1]))
        vec.close()
        env = runner.env_fn()()
        env.reset(seed=0)
        with pytest.raises(Boom, match="boom"):
            env.step(1)
        env.close()


def test_after_one_server_times_out_no_server_steps_again(no_leftovers):
    bench = Benchmark(name="sleepy", entry_point="test_vector:SleepyEnv", attributes=["count"])
    with RemoteRunner(bench, runtime="process") as runner:
        vec = runner.make_vector_env(2, num_servers=2)
        vec.reset(seed=0)
        vec.set_timeout(0.3, "step")
        with pytest.raises(CallTimeoutError, match="did not answer"):
            vec.step(np.array([0, 1]))  # the second server is still sleeping
        with pytest.raises(CallTimeoutError, match="an earlier call timed out"):
            vec.step(np.array([0, 0]))  # refused before any server is asked
        assert vec._parts[0].handle.call("call", "count", [], {}) == [1]  # the first server stepped only once
        vec.close()


@pytest.mark.parametrize("infos, one_pass", [
    ([{"a": 1, "b": 0.5, "c": True}] * 4, True),
    ([{"a": np.float32(i), "b": np.int16(i)} for i in range(4)], True),
    ([{}] * 4, True),
    ([{"a": 1}, {"a": 2.5}, {"a": 3}, {"a": 4}], False),  # mixed types: gymnasium casts to the first env's type
    ([{"a": 1, "b": 2}, {"b": 2, "a": 1}, {"a": 1, "b": 2}, {"a": 1, "b": 2}], False),
    ([{"a": 1}, {}, {"a": 1}, {"a": 1, "z": "text"}], False),
    ([{"a": {"nested": 1}}] * 4, False),
    ([{"a": np.zeros(2)}] * 4, False),
    ([{"_a": 1, "a": 2}] * 4, False),  # a name that is another's mask
])
def test_merged_infos_equal_gymnasiums_one_env_at_a_time(infos, one_pass):
    """The host's one-pass merge of flat numbers builds what SyncVectorEnv's _add_info builds, or declines."""
    from dacstyle.container.client.vector import _merge_flat_numbers

    reference = gym.vector.SyncVectorEnv([lambda: gym.make("CartPole-v1")] * len(infos))
    expected: dict = {}
    for index, info in enumerate(infos):
        expected = reference._add_info(expected, info, index)
    reference.close()
    merged = _merge_flat_numbers(list(enumerate(infos)), len(infos))
    assert (merged is not None) == one_pass
    if merged is not None:
        assert_identical(merged, expected, ordered=True)


def test_a_vector_env_steps_a_server_across_nodes_over_tls(no_leftovers):
    """Sub-envs on a TCP endpoint (mutual TLS): the calls sent first and read after connect with the run's certificate."""
    from dacstyle.container.client import Server
    from dacstyle.runtimes.process import ProcessRuntime

    bench = SigmoidBenchmark().set_seed(0)
    with Server.start(ProcessRuntime(), tcp="127.0.0.1:0", call_timeout=10) as server:
        assert server.channel.tls is not None
        vec = RemoteVectorEnv.create([server.channel], bench, 3)
        reference = gym.vector.SyncVectorEnv([bench.get_environment] * 3)
        assert_identical(vec.reset(seed=5), reference.reset(seed=5))
        actions = np.array([[1, 2], [3, 4], [0, 9]])
        for _ in range(12):
            assert_identical(vec.step(actions), reference.step(actions))
        vec.close()
        reference.close()
