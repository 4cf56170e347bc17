"""stable-baselines3 on remote envs: as_sb3_vec_env equals DummyVecEnv bit for bit, PPO trains, SubprocVecEnv works."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest

from dacstyle import RemoteRunner
from dacstyle.benchmarks import Benchmark, GymnasiumBenchmark, SigmoidBenchmark
from dacstyle.container.client.proxies import RemoteHandle
from dacstyle.errors import BenchmarkError, ClosedError

from conftest import assert_identical

pytest.importorskip("stable_baselines3", reason='needs the sb3 extra: pip install "dacstyle[sb3]"')

import torch  # noqa: E402  (what follows needs the extra)
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.logger import Logger  # noqa: E402
from stable_baselines3.common.monitor import Monitor  # noqa: E402
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecCheckNan, VecEnv, VecMonitor  # noqa: E402

from dacstyle.integrations.sb3 import as_sb3_vec_env  # noqa: E402

CASES = [
    pytest.param(lambda: SigmoidBenchmark().set_seed(3), 5, 2, id="sigmoid-5-on-2"),  # MultiDiscrete, infos
    pytest.param(lambda: GymnasiumBenchmark("CartPole-v1"), 4, 1, id="cartpole-4-on-1"),
]


def sb3_rollout(env: VecEnv, steps: int, seed: int) -> list:
    """seed(seed), reset, then seeded random actions: every result and ``reset_infos`` in order."""
    space = env.action_space
    space.seed(seed)
    env.seed(seed)
    run = [env.reset(), list(env.reset_infos)]
    for _ in range(steps):
        run += [env.step(np.stack([space.sample() for _ in range(env.num_envs)])), list(env.reset_infos)]
    return run


def dummy(bench: Benchmark, n: int) -> DummyVecEnv:
    return DummyVecEnv([bench.get_environment for _ in range(n)])


@pytest.mark.parametrize("remote", [True, False], ids=["remote", "local-sync-vector-env"])
@pytest.mark.parametrize("make, n, k", CASES)
def test_steps_equal_dummy_vec_env_bit_for_bit_across_episode_ends(make, n, k, remote, no_leftovers):
    bench = make()
    local = dummy(bench, n)
    expected = sb3_rollout(local, 40, seed=7)
    local.close()
    assert sum(step[2].sum() for step in expected[2::2]) >= n, "the rollout must cross episode ends"
    if remote:
        with RemoteRunner(bench, runtime="process") as runner:
            vec = as_sb3_vec_env(runner.make_vector_env(n, num_servers=k, autoreset_mode="SameStep"))
            got = sb3_rollout(vec, 40, seed=7)
            vec.close()
    else:  # the adapter alone, over gymnasium's own vector env
        vec = as_sb3_vec_env(gym.vector.SyncVectorEnv([bench.get_environment] * n, autoreset_mode="SameStep"))
        got = sb3_rollout(vec, 40, seed=7)
        vec.close()
    assert_identical(got, expected, ordered=True)


def test_the_wrapper_keeps_sb3_vec_env_conventions(no_leftovers):
    bench = Benchmark(**{**dataclasses.asdict(SigmoidBenchmark().set_seed(1)), "attributes": ["instance_id"]})
    with RemoteRunner(bench, runtime="process") as runner:
        vec = as_sb3_vec_env(runner.make_vector_env(3, num_servers=2, autoreset_mode="SameStep"))
        single = bench.get_environment()
        assert isinstance(vec, VecEnv) and vec.num_envs == 3
        assert vec.observation_space == single.observation_space and vec.action_space == single.action_space
        assert vec.seed(4) == [4, 5, 6] and vec.render_mode is None
        obs = vec.reset()
        assert obs.shape == (3, *single.observation_space.shape) and obs.dtype == single.observation_space.dtype
        assert all(row in single.observation_space for row in obs) and len(vec.reset_infos) == 3
        monitored = VecMonitor(VecCheckNan(vec, raise_exception=True))  # SB3's own wrappers stack on it
        monitored.reset()
        episodes = 0
        for _ in range(25):
            obs, rewards, dones, infos = monitored.step(np.stack([vec.action_space.sample() for _ in range(3)]))
            assert rewards.dtype == np.float32 and rewards.shape == (3,) and dones.dtype == np.bool_
            assert isinstance(infos, list) and len(infos) == 3
            for row, done, info in zip(obs, dones, infos):
                assert isinstance(info["TimeLimit.truncated"], bool)
                assert ("terminal_observation" in info) == done and ("episode" in info) == done
                if done:  # the episode's last observation in the info, the next episode's first in obs
                    assert info["terminal_observation"] in single.observation_space
                    assert info["step"] == 10 and row[0] == 10.0  # Sigmoid: cutoff 10, a fresh budget of 10
            episodes += int(dones.sum())
        assert episodes == 6 and all(info["step"] == 0 for info in vec.reset_infos)
        assert vec.get_attr("render_mode") == [None] * 3 and vec.env_is_wrapped(Monitor) == [False] * 3
        assert vec.has_attr("instance_id") and not vec.has_attr("no_such_attribute")
        before = vec.get_attr("instance_id")
        vec.set_attr("instance_id", 7, indices=[0, 2])
        assert vec.get_attr("instance_id") == [7, before[1], 7] and before[1] != 7
        vec.set_attr("instance_id", 5)
        assert vec.get_attr("instance_id", indices=[2, 0]) == [5, 5]
        assert [o.shape for o, _ in vec.env_method("reset", seed=0, indices=[2, 1, 0])] == [(7,)] * 3
        with pytest.raises(ValueError, match="on all 3 sub-environments"):
            vec.env_method("reset", indices=[1])
        vec.set_options([{}, {"a": 1}, {}])
        with pytest.raises(ValueError, match="one options dict"):
            vec.reset()
        monitored.close()
        with pytest.raises(ClosedError):
            vec.step(np.zeros((3, 2), dtype=np.int64))
        single.close()


def test_only_a_vector_env_that_autoresets_in_the_same_step_is_taken(no_leftovers):
    with RemoteRunner(SigmoidBenchmark(), runtime="process") as runner:
        vec = runner.make_vector_env(2)  # gymnasium's default, NextStep
        with pytest.raises(BenchmarkError, match='autoreset_mode="SameStep"'):
            as_sb3_vec_env(vec)
        vec.close()
        env = runner.get_environment()
        with pytest.raises(BenchmarkError, match="takes a gymnasium VectorEnv"):
            as_sb3_vec_env(env)
        env.close()


def test_rgb_frames_equal_local_ones(no_leftovers):
    bench = GymnasiumBenchmark("CartPole-v1", render_mode="rgb_array")
    local = dummy(bench, 2)
    local.seed(0)
    local.reset()
    with RemoteRunner(bench, runtime="process") as runner:
        vec = as_sb3_vec_env(runner.make_vector_env(2, autoreset_mode="SameStep"))
        vec.seed(0)
        vec.reset()
        frames, tiled = vec.get_images(), vec.render("rgb_array")
        vec.close()
    assert_identical(frames, local.get_images())
    assert_identical(tiled, local.render("rgb_array"))
    assert tiled.shape == (800, 600, 3)
    local.close()


def train(env: VecEnv, steps: int = 256) -> list[torch.Tensor]:
    """PPO (CPU, seeded) for ``steps`` env steps; the policy's parameters after training."""
    model = PPO("MlpPolicy", env, n_steps=32, batch_size=64, n_epochs=2, seed=0, device="cpu")
    model.set_logger(Logger(folder=None, output_formats=[]))  # SB3's default logger makes a folder in /tmp
    model.learn(total_timesteps=steps)
    assert model.num_timesteps == steps
    return [parameter.detach().clone() for parameter in model.policy.parameters()]


@pytest.mark.container
def test_ppo_on_a_remote_vector_env_learns_exactly_what_it_learns_locally(packed_image, no_leftovers):
    bench = GymnasiumBenchmark("CartPole-v1")
    expected = train(dummy(bench, 4))
    with RemoteRunner(bench, image=packed_image) as runner:  # the default runtime
        env = VecMonitor(as_sb3_vec_env(runner.make_vector_env(4, num_servers=2, autoreset_mode="SameStep")))
        got = train(env)
        assert env.episode_count >= 4  # episodes ended, and SB3's monitor counted them
        env.close()
    assert [p.shape for p in got] == [p.shape for p in expected]
    assert all(torch.equal(a, b) for a, b in zip(got, expected)), "the same data must give the same policy"


@pytest.mark.parametrize("context", ["forkserver", "spawn"])
def test_subproc_vec_env_over_env_fns_equals_dummy_vec_env_and_leaves_nothing(context, mp_helpers, no_leftovers):
    bench = SigmoidBenchmark().set_seed(2)
    local = dummy(bench, 2)
    expected = sb3_rollout(local, 14, seed=1)  # crosses an episode end (cutoff 10)
    local.close()
    with RemoteRunner(bench, runtime="process") as runner:
        vec = SubprocVecEnv([runner.env_fn() for _ in range(2)], start_method=context)
        try:
            got = sb3_rollout(vec, 14, seed=1)
        finally:
            vec.close()
        for number in (1, 2):  # each worker's env was released on the server when the worker closed it
            with pytest.raises(ClosedError):
                RemoteHandle(runner.server.channel, f"sigmoid.{number}").call("render")
    assert all(not process.is_alive() for process in vec.processes)
    for i in range(2, len(got), 2):  # SubprocVecEnv's own types: float64 rewards and a tuple of infos
        obs, rewards, dones, infos = got[i]
        got[i] = (obs, rewards.astype(np.float32), dones, list(infos))
    assert_identical(got, expected, ordered=True)


def test_importing_dacstyle_never_imports_torch_and_a_missing_sb3_names_the_extra():
    code = ("import sys, dacstyle, dacstyle.container.client\n"
            "from dacstyle import RemoteRunner\n"
            "assert not {'torch', 'stable_baselines3'} & set(sys.modules), 'imported'\n"
            "sys.modules['stable_baselines3'] = None\n"
            "try:\n"
            "    import dacstyle.integrations.sb3\n"
            "except dacstyle.errors.MissingDependencyError as exc:\n"
            "    print(exc)\n")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert 'pip install "dacstyle[sb3]"' in out.stdout
