"""Proxies that cross processes: address and token-file path travel, never the token; workers reconnect."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import gymnasium as gym
import pytest

from dacstyle import RemoteRunner
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.container.client.proxies import RemoteHandle
from dacstyle.errors import AuthenticationError, ClosedError

from conftest import assert_identical


def _steps_in_worker(env_bytes: bytes, factory_bytes: bytes, queue) -> None:
    """In a fresh process: step an unpickled env and one built by an unpickled env_fn."""
    try:
        env = pickle.loads(env_bytes)
        obs, _ = env.reset(seed=4)
        own = pickle.loads(factory_bytes)()
        own_obs, _ = own.reset(seed=4)
        queue.put(("ok", obs.tobytes(), own_obs.tobytes(), os.getpid()))
        own.close()
        env.close()
    except BaseException as exc:  # the parent shows what went wrong
        queue.put(("error", repr(exc), b"", os.getpid()))


def test_a_pickle_carries_the_token_file_path_never_the_token(no_leftovers):
    with RemoteRunner(SigmoidBenchmark().set_seed(1), runtime="process") as runner:
        env = runner.get_environment()
        token = runner.server.server_dir.token("host").encode()
        token_file = str(runner.server.server_dir.path / "host" / "token").encode()
        for blob in (pickle.dumps(env), pickle.dumps(runner.env_fn())):
            assert token not in blob
            assert token_file in blob
        clone = pickle.loads(pickle.dumps(env))
        assert_identical(clone.reset(seed=2), env.reset(seed=2))  # the same remote env
        clone.close()
        env.step(env.action_space.sample())  # a copy's close leaves the owner's env alone
        env.close()


def test_what_holds_a_channel_refuses_to_pickle_before_writing_the_token(tmp_path, no_leftovers):
    from dacstyle.testing import probe_benchmark

    with RemoteRunner(probe_benchmark(), runtime="process") as runner:
        token = runner.server.server_dir.token("host").encode()
        obj = runner.get_object()
        for value in (obj, obj._remote, runner.server.channel):
            with open(tmp_path / "dump", "wb") as handle, pytest.raises(TypeError, match="never pickled"):
                pickle.dump(value, handle)
            assert token not in (tmp_path / "dump").read_bytes()
        obj.release()


def test_a_token_file_others_can_read_is_refused(no_leftovers):
    with RemoteRunner(SigmoidBenchmark(), runtime="process") as runner:
        env = runner.get_environment()
        blob, factory = pickle.dumps(env), runner.env_fn()
        token_file = runner.server.server_dir.path / "host" / "token"
        os.chmod(token_file, 0o640)
        try:
            with pytest.raises(AuthenticationError, match="mode 0600"):
                pickle.loads(blob)
            with pytest.raises(AuthenticationError, match="mode 0600"):
                factory()
        finally:
            os.chmod(token_file, 0o600)
        env.close()


@pytest.mark.parametrize("context", ["spawn", "forkserver", "fork"])
def test_a_pickled_env_and_env_fn_work_in_a_new_process(context, mp_helpers, no_leftovers):
    bench = SigmoidBenchmark().set_seed(6)
    local = bench.get_environment()
    expected = local.reset(seed=4)[0].tobytes()
    with RemoteRunner(bench, runtime="process") as runner:
        env = runner.get_environment()
        ctx = multiprocessing.get_context(context)
        queue = ctx.Queue()
        worker = ctx.Process(target=_steps_in_worker, args=(pickle.dumps(env), pickle.dumps(runner.env_fn()), queue))
        worker.start()
        try:
            status, obs, own_obs, pid = queue.get(timeout=60)
        finally:
            worker.join(30)
        assert status == "ok", obs
        assert pid != os.getpid() and obs == expected and own_obs == expected
        assert worker.exitcode == 0
        env.step(env.action_space.sample())  # the worker's copy closed only its own connection
        env.close()


@pytest.mark.parametrize("context", ["spawn", "forkserver", "fork"])
def test_async_vector_env_over_env_fns_equals_sync_vector_env(context, mp_helpers, no_leftovers):
    bench = SigmoidBenchmark().set_seed(2)
    local = gym.vector.SyncVectorEnv([bench.get_environment for _ in range(3)])
    local.action_space.seed(9)
    actions = [local.action_space.sample() for _ in range(14)]  # crosses an autoreset (cutoff 10)
    expected = [local.reset(seed=0)] + [local.step(a) for a in actions]
    local.close()
    with RemoteRunner(bench, runtime="process") as runner:
        vec = gym.vector.AsyncVectorEnv([runner.env_fn() for _ in range(3)], context=context)
        try:
            got = [vec.reset(seed=0)] + [vec.step(a) for a in actions]
        finally:
            vec.close()
        for number in range(1, 5):  # the workers' three envs and the one AsyncVectorEnv built to read the spaces
            with pytest.raises(ClosedError):  # each was released on the server when its worker closed it
                RemoteHandle(runner.server.channel, f"sigmoid.{number}").call("render")
    assert_identical(got, expected)


def test_env_fn_survives_cloudpickle_as_subproc_vec_envs_send_it(no_leftovers):
    import cloudpickle

    with RemoteRunner(SigmoidBenchmark().set_seed(3), runtime="process") as runner:
        env = cloudpickle.loads(cloudpickle.dumps(runner.env_fn()))()
        same = runner.get_environment()
        assert_identical(env.reset(seed=1), same.reset(seed=1))
        env.close()
        same.close()
