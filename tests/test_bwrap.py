"""The benchmark inside a real SIF under bubblewrap: conformance, isolation, faults, bad input."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

from dacstyle import RemoteRunner, errors
from dacstyle.benchmarks import GymnasiumBenchmark, LubyBenchmark, SigmoidBenchmark
from dacstyle.competitions.sandbox import descendants
from dacstyle.testing import probe_benchmark

from conftest import SIF_TESTDATA, assert_identical, dacstyle_inside, local_trajectory, trajectory, wait_gone

pytestmark = pytest.mark.container

CASES = [
    pytest.param(lambda: SigmoidBenchmark(), id="sigmoid"),
    pytest.param(lambda: LubyBenchmark(), id="luby"),
    pytest.param(lambda: GymnasiumBenchmark("CartPole-v1"), id="CartPole-v1"),
    pytest.param(lambda: GymnasiumBenchmark("Pendulum-v1"), id="Pendulum-v1"),
]


def mounts() -> set[str]:
    with open("/proc/self/mounts") as handle:
        return {line.split()[1] for line in handle}


@pytest.mark.parametrize("make", CASES)
def test_check_env_and_local_equals_remote_inside_the_sif(make, packed_image, no_leftovers):
    bench = make().set_seed(5)
    actions, expected = local_trajectory(bench, 5, 30, action_seed=1)
    with RemoteRunner(bench, runtime="bwrap", image=packed_image) as runner:
        env = runner.get_environment()
        check_env(env, skip_render_check=True)
        assert_identical(trajectory(env, 5, actions), expected)
        env.close()


@pytest.fixture
def probe(packed_image, no_leftovers, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "public.txt").write_text("public")
    out = tmp_path / "out"
    out.mkdir()
    with RemoteRunner(probe_benchmark(), runtime="bwrap", image=packed_image, env={"DACSTYLE_PROBE": "1"},
                      binds=[f"{data}:/data/in:ro", f"{out}:/data/out:rw"]) as runner:
        yield runner, runner.get_object(), data, out


def test_host_paths_and_home_are_not_visible(probe):
    runner, obj, _, _ = probe
    marker = Path.home() / f".dacstyle-marker-{secrets.token_hex(4)}"
    marker.write_text("secret")
    try:
        assert obj.read_file(str(marker)) is None
        assert obj.read_file("/etc/hostname") != Path("/etc/hostname").read_text() or not Path("/etc/hostname").exists()
        assert obj.list_dir(str(Path(__file__).parent)) is None
        assert obj.list_dir(str(runner.server.server_dir.path)) is None
        assert obj.whereami()["hostname"] == "dacstyle"
    finally:
        marker.unlink()


def test_environment_is_cleared_but_for_what_was_passed(probe):
    _, obj, _, _ = probe
    initial = dict(item.split("=", 1) for item in obj.read_file("/proc/self/environ").split("\0") if item)
    assert set(initial) == {"PATH", "LANG", "HOME", "PWD", "DACSTYLE_PROBE"}  # PWD: bwrap --chdir
    assert initial["DACSTYLE_PROBE"] == "1"
    os.environ["DACSTYLE_SHOULD_NOT_LEAK"] = "x"
    try:
        assert "DACSTYLE_SHOULD_NOT_LEAK" not in obj.environment()
    finally:
        del os.environ["DACSTYLE_SHOULD_NOT_LEAK"]


def test_only_requested_binds_exist_and_tmp_is_private(probe, packed_image):
    runner, obj, data, out = probe
    inside = {line.split()[1] for line in obj.read_file("/proc/self/mounts").splitlines()}
    image_top = {"/" + entry for entry in os.listdir(runner.server.server_dir.path / "rootfs")}
    allowed = {"/", "/proc", "/dev", "/tmp", "/run", "/home/dacstyle", "/run/dacstyle", "/data/in", "/data/out"}
    kernel = ("/dev/", "/proc/")  # bwrap masks /proc/bus, /proc/irq ... read-only
    extra = {m for m in inside if m not in allowed and m not in image_top and not m.startswith(kernel)}
    assert extra == set(), f"unexpected mounts inside: {extra}"
    assert {"/run/dacstyle", "/data/in", "/data/out"} <= inside
    assert obj.read_file("/data/in/public.txt") == "public"
    assert obj.list_dir("/tmp") == []
    assert obj.list_dir("/run/dacstyle") == ["server.sock", "token"]


def test_benchmark_errors_and_timeouts_inside_the_container(probe):
    _, obj, _, _ = probe
    with pytest.raises(ValueError) as info:
        obj.fail("ValueError", "inside")
    assert "remote traceback" in "\n".join(getattr(info.value, "__notes__", []))
    obj.set_timeout(0.5, "sleep")
    with pytest.raises(errors.CallTimeoutError):
        obj.sleep(1.5)


def test_close_after_exception_leaves_no_process_and_no_mount(packed_image, no_leftovers):
    with pytest.raises(RuntimeError, match="user code"):
        with RemoteRunner(probe_benchmark(), runtime="bwrap", image=packed_image) as runner:
            rootfs = runner.server.server_dir.path / "rootfs"
            assert str(rootfs) in mounts()
            raise RuntimeError("user code failed")
    assert str(rootfs) not in mounts()


def test_server_killed_mid_episode_inside_the_container(packed_image, no_leftovers):
    with RemoteRunner(SigmoidBenchmark().set_seed(0), runtime="bwrap", image=packed_image) as runner:
        env = runner.get_environment()
        env.reset()
        inside = list(descendants(runner.server.process.pid))
        assert inside, "the server runs below bwrap"
        for pid in inside:
            os.kill(pid, signal.SIGKILL)
        assert wait_gone(inside, 5.0)
        started = time.monotonic()
        with pytest.raises(errors.ServerDiedError):
            env.step(env.action_space.sample())
        assert time.monotonic() - started < 1.0


def test_missing_image_is_one_clear_error(tmp_path, no_leftovers):
    with pytest.raises(errors.ImageNotFoundError):
        RemoteRunner(SigmoidBenchmark(), runtime="bwrap", image=tmp_path / "nope.sif").start()


def test_text_file_named_sif_is_one_clear_error(tmp_path, no_leftovers):
    fake = tmp_path / "fake.sif"
    fake.write_text("this is not an image\n" * 20)
    with pytest.raises(errors.ImageFormatError):
        RemoteRunner(SigmoidBenchmark(), runtime="bwrap", image=fake).start()


@pytest.mark.skipif(not SIF_TESTDATA.exists(), reason="shared/sif-testdata is not beside the checkout")
def test_sif_without_squashfs_partition_is_one_clear_error(no_leftovers):
    with pytest.raises(errors.ImageFormatError, match="squashfs"):
        RemoteRunner(SigmoidBenchmark(), runtime="bwrap", image=SIF_TESTDATA / "images" / "empty.sif").start()


def test_image_whose_python_lacks_dacstyle_fails_fast_with_stderr(packed_image, tmp_path, no_leftovers):
    import dacstyle

    empty = tmp_path / "empty"
    empty.mkdir()
    installed = Path(dacstyle.__file__).parent  # inside the image: site-packages/dacstyle
    from dacstyle.images.sif import open_image

    site = json.loads(json.dumps(open_image(packed_image).labels())).get("org.dacstyle.python")
    assert site, "packed images carry their interpreter path"
    inside = dacstyle_inside()
    started = time.monotonic()
    with pytest.raises(errors.ServerStartError, match="No module named") as info:
        RemoteRunner(SigmoidBenchmark(), runtime="bwrap", image=packed_image, binds=[f"{empty}:{inside}:ro"]).start()
    assert time.monotonic() - started < 10
    assert "dacstyle" in str(info.value)
    assert installed.exists()



# -- the sandbox's limits (issue 8); the attacks themselves run in tests/test_competition_remote.py ---------

def test_limits_launcher_sets_the_rlimits_then_runs_the_command():
    from dacstyle.runtimes.limits import Limits, launcher_argv

    code = ("import json, resource; print(json.dumps([resource.getrlimit(getattr(resource, 'RLIMIT_' + n)) "
            "for n in ('NPROC', 'DATA', 'FSIZE')]))")
    argv = [*launcher_argv(Limits(processes=4000, memory=3 << 30, file_size=5 << 20)), sys.executable, "-c", code]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(done.stdout) == [[4000, 4000], [3 << 30, 3 << 30], [5 << 20, 5 << 20]]


def test_sandbox_argv_drops_privileges_sizes_tmpfs_and_cuts_the_network(tmp_path):
    from dacstyle.config import config
    from dacstyle.runtimes.bwrap import sandbox_argv

    config.sandbox_tmpfs_size = 12345
    argv = sandbox_argv(tmp_path, [], {}, network=False)
    bwrap = argv[argv.index("bwrap"):]
    assert bwrap[bwrap.index("--cap-drop") + 1] == "ALL" and "--disable-userns" in bwrap
    assert bwrap[bwrap.index("--unshare-user"):bwrap.index("--unshare-user") + 5] == [
        "--unshare-user", "--uid", "65534", "--gid", "65534"]
    for folder in ("/tmp", "/run"):
        at = bwrap.index(folder)
        assert bwrap[at - 3:at] == ["--size", "12345", "--tmpfs"], folder
    assert "--unshare-net" in bwrap and "--unshare-net" not in sandbox_argv(tmp_path, [], {})
    assert argv[:3] == [sys.executable, "-I", "-S"] and "--nproc" in argv[:argv.index("bwrap")]


def test_a_server_gets_no_network_unless_it_is_allowed(packed_image, no_leftovers):
    import socket

    from dacstyle.benchmarks.spec import Benchmark
    from dacstyle.config import config

    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        # the served object is a connection to the host's port, made by the server as it builds it
        dial = Benchmark(name="dial", entry_point="socket:create_connection", seed_key="", methods=["fileno"],
                         config={"address": ["127.0.0.1", listener.getsockname()[1]], "timeout": 5})
        with RemoteRunner(dial, runtime="bwrap", image=packed_image) as runner:
            with pytest.raises(errors.BenchmarkError, match="ConnectionRefusedError"):  # its own, empty network
                runner.get_object()
        with pytest.raises(BlockingIOError):
            listener.accept()
        config.sandbox_network = True
        with RemoteRunner(dial, runtime="bwrap", image=packed_image) as runner:
            runner.get_object()
            listener.setblocking(True)
            listener.settimeout(10)
            listener.accept()[0].close()  # the same server reaches the host once allowed


def test_a_run_has_its_own_pids_cgroup_and_it_is_gone_after_close(packed_image, no_leftovers):
    from dacstyle.config import config
    from dacstyle.runtimes.limits import _own_cgroup_dirs

    parents = [d for d in _own_cgroup_dirs() if os.access(d, os.W_OK)]
    if not parents:
        pytest.skip("the host delegates no pids cgroup here (RLIMIT_NPROC is the limit)")
    config.sandbox_max_processes = 321
    with RemoteRunner(SigmoidBenchmark(), runtime="bwrap", image=packed_image) as runner:
        runner.get_environment().reset()
        cgroup = parents[0] / f"dacstyle-{runner.server.server_dir.path.name}"
        assert (cgroup / "pids.max").read_text().strip() == "321"
        assert len((cgroup / "cgroup.procs").read_text().split()) >= 2  # bwrap's init and the server
    assert not cgroup.exists()


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv for a second uid")
def test_for_a_non_root_host_rlimit_nproc_stops_a_fork_flood_in_the_user_namespace():
    from dacstyle.runtimes.limits import Limits, launcher_argv

    flood = ("import os, time\nforked = 0\n"
             "try:\n    while forked < 500:\n        if os.fork() == 0:\n            time.sleep(20)\n            os._exit(0)\n"
             "        forked += 1\nexcept OSError as exc:\n    print('stopped', forked, exc.errno)\nelse:\n    print('ran', forked)\n")
    system_python = shutil.which("python3", path="/usr/bin:/bin")  # one the second uid may run
    if system_python is None:
        pytest.skip("no system python3 for the second uid")
    sandbox = ["bwrap", "--die-with-parent", "--unshare-user", "--disable-userns", "--cap-drop", "ALL", "--unshare-pid",
               "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    argv = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
            *launcher_argv(Limits(processes=30, memory=1 << 32, file_size=1 << 30)), *sandbox, system_python, "-c", flood]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert done.stdout.split()[:1] == ["stopped"] and int(done.stdout.split()[1]) < 30, (done.stdout, done.stderr)


def test_a_bubblewrap_too_old_for_the_sandbox_flags_is_refused_by_name(tmp_path, monkeypatch):
    from dacstyle.runtimes import get_runtime
    from dacstyle.runtimes.bwrap import BwrapRuntime, bwrap_version

    old = tmp_path / "bwrap"
    old.write_text("#!/bin/sh\necho bubblewrap 0.6.1\n")
    old.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    bwrap_version.cache_clear()
    try:
        assert bwrap_version() == (0, 6, 1) and not BwrapRuntime.available()
        with pytest.raises(errors.RuntimeUnavailableError, match=r"0\.8 or newer .*this one is 0\.6\.1"):
            get_runtime("bwrap")
    finally:
        bwrap_version.cache_clear()
