"""Shared fixtures: a clean configuration, a private runs root, leak checks."""

from __future__ import annotations

import contextlib
import os
import subprocess
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from dacstyle.config import config

pytest_plugins = ("_servers",)  # loopback HTTP server and OCI registry fixtures

SHARED = Path(__file__).resolve().parents[2] / "shared"
SIF_TESTDATA = SHARED / "sif-testdata"
GOLDEN = Path(__file__).parent / "golden"
_REFRESH_GOLDEN = os.environ.get("DACSTYLE_REFRESH_GOLDEN") == "1"  # read at import: clean_config clears DACSTYLE_*


def assert_golden(name: str, text: str, test_file: str) -> None:
    """``text`` equals ``tests/golden/NAME`` (rewritten first under DACSTYLE_REFRESH_GOLDEN=1)."""
    path = GOLDEN / name
    refresh = f"DACSTYLE_REFRESH_GOLDEN=1 pytest {test_file} -k golden"
    if _REFRESH_GOLDEN:
        path.write_text(text)
    assert path.exists(), f"{path} is missing; create it with {refresh}"
    assert text == path.read_text(), f"{name} differs from {path}; if the change is intended, refresh with " \
                                     f"{refresh} and review the diff"


@pytest.fixture(autouse=True)
def clean_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Isolate every test from the caller's DACSTYLE_* settings and folders."""
    for name in list(os.environ):
        if name.startswith("DACSTYLE_"):
            monkeypatch.delenv(name)
    config.reset(use_environment=False)
    config.runs = tmp_path / "runs"
    config.cache = tmp_path / "cache"
    yield
    config.reset(use_environment=False)


@pytest.fixture(autouse=True)
def servers_root(monkeypatch: pytest.MonkeyPatch):
    """A short private XDG_RUNTIME_DIR (socket paths must stay under 108 bytes)."""
    root = Path(tempfile.mkdtemp(prefix="dx-", dir="/tmp"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(root))
    yield root / "dacstyle"
    shutil.rmtree(root, ignore_errors=True)


def server_folders(root: Path) -> list[Path]:
    """Run folders left under a runs root."""
    return sorted(p for p in root.iterdir()) if root.exists() else []


def child_pids() -> set[int]:
    """Live (non-zombie) children of this test process."""
    from dacstyle.competitions.sandbox import descendants

    me = os.getpid()
    return {pid for pid, (ppid, state) in descendants(me).items() if ppid == me and state != "Z"}


def wait_gone(pids, timeout: float) -> bool:
    """Wait until none of ``pids`` runs (zombies count as gone); False at the deadline."""
    import time

    from dacstyle.runtimes.serverdir import process_alive

    deadline = time.monotonic() + timeout
    while any(process_alive(pid) for pid in pids):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.01)  # polling /proc with a deadline: a foreign process has no event to wait on
    return True


def trajectory(env, seed: int, actions: list) -> list:
    """reset(seed), then each action (resetting at episode ends): every result in order."""
    steps = [env.reset(seed=seed)]
    for action in actions:
        steps.append(env.step(action))
        if steps[-1][2] or steps[-1][3]:
            steps.append(env.reset())
    return steps


def local_trajectory(bench, seed: int, steps: int, action_seed: int) -> tuple[list, list]:
    """Seeded actions and the trajectory they give on the benchmark built locally."""
    local = bench.get_environment()
    local.action_space.seed(action_seed)
    actions = [local.action_space.sample() for _ in range(steps)]
    expected = trajectory(local, seed, actions)
    local.close()
    return actions, expected


def assert_identical(a, b, ordered: bool = False) -> None:
    """Bit-for-bit equality of nested observations, rewards, flags and info.

    Object arrays (a vector env's ``final_obs``) compare element by element;
    ``ordered`` also requires dicts to list their keys in the same order.
    """
    import numpy as np

    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        if a.dtype == object:
            for x, y in zip(a.ravel(), b.ravel()):
                assert_identical(x, y, ordered)
        else:
            assert a.tobytes() == b.tobytes()
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_identical(x, y, ordered)
    elif isinstance(a, dict):
        assert (list(a) == list(b)) if ordered else (a.keys() == b.keys())
        for key in a:
            assert_identical(a[key], b[key], ordered)
    elif isinstance(a, (float, np.floating)):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    else:
        assert a == b


def dacstyle_inside() -> str:
    """Where a packed image holds the dacstyle package (editable installs go to the first folder)."""
    from dacstyle.images.envtree import editable_sources, package_dirs, site_inside

    if "dacstyle" in editable_sources():
        return f"{site_inside(0)}/dacstyle"
    import dacstyle

    parent = os.path.dirname(os.path.dirname(os.path.realpath(dacstyle.__file__)))
    return f"{site_inside(package_dirs().index(parent))}/dacstyle"


def mounts_under(root: Path) -> list[str]:
    """Mount points below ``root``."""
    with open("/proc/self/mounts") as handle:
        return [line.split()[1] for line in handle if line.split()[1].startswith(str(root))]


def readline(stream, timeout: float = 60.0) -> str:
    """One line from a subprocess pipe, or fail after ``timeout`` seconds (no hang)."""
    import select

    ready, _, _ = select.select([stream], [], [], timeout)
    assert ready, f"no line within {timeout} s"
    return stream.readline()


@pytest.fixture
def no_leftovers(servers_root: Path):
    """Fail the test if it leaves run folders, mounts or child processes behind."""
    before = child_pids()
    yield
    assert mounts_under(servers_root.parent) == [], "mounts left behind"
    assert server_folders(servers_root) == [], "run folders left behind"
    assert child_pids() - before == set(), "child processes left behind"


@pytest.fixture
def mp_helpers(context):
    """multiprocessing's own long-lived helpers (resource tracker, fork server), started before the leak check."""
    from multiprocessing import forkserver, resource_tracker

    resource_tracker.ensure_running()
    if context == "forkserver":
        forkserver.ensure_running()


@pytest.fixture
def probe(no_leftovers):
    """A runner serving the public Probe object (process runtime) and its proxy."""
    from dacstyle import RemoteRunner
    from dacstyle.testing import probe_benchmark

    with RemoteRunner(probe_benchmark("t"), runtime="process", call_timeout=10) as runner:
        yield runner, runner.get_object()


def socket_path(runner) -> str:
    """The host side of a runner's server socket."""
    return str(runner.server.server_dir.path / "host" / "server.sock")


@pytest.fixture(scope="session")
def packed_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SIF packed from this Python environment, once per session.

    ``DACSTYLE_TEST_IMAGE`` names an already packed image (CI packs one up front).
    """
    from dacstyle.runtimes.bwrap import BwrapRuntime

    if not BwrapRuntime.available():
        pytest.skip("bubblewrap, squashfuse or /dev/fuse missing (.ci/run installs them)")
    given = os.environ.get("DACSTYLE_TEST_IMAGE")
    if given and Path(given).is_file():
        return Path(given)
    from dacstyle.images.pack import pack_environment

    out = tmp_path_factory.mktemp("image") / "env.sif"
    pack_environment(out, progress=False)
    return out


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory: pytest.TempPathFactory):
    """A real single-host Slurm (tests/slurmcluster.py) for the session, SLURM_CONF pointing at it.

    Skips where its binaries are missing or we are not root; fails instead when CI=true.
    """
    import slurmcluster

    reason = slurmcluster.missing()
    if reason and os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the Slurm tests: {reason}")
    if reason:
        pytest.skip(reason)
    with pytest.MonkeyPatch.context() as patch:
        cluster = slurmcluster.start(tmp_path_factory.mktemp("slurm"))
        try:
            for name, value in cluster.env.items():
                patch.setenv(name, value)
            yield cluster
        finally:
            cluster.stop()


@pytest.fixture
def shared(slurm_cluster, tmp_path: Path) -> Path:
    """A fresh shared_dir for Slurm-placed runs (on one host, any folder of ours is 'shared'); checked empty afterwards."""
    folder = tmp_path / "shared"
    folder.mkdir(mode=0o700)
    config.shared_dir = folder
    before = child_pids()
    yield folder
    assert slurm_jobs(slurm_cluster) == [], "Slurm jobs left behind"
    assert list((folder / "servers").iterdir()) == [], "job folders left behind"
    assert child_pids() - before == set(), "processes left behind"


def slurm_jobs(cluster) -> list[str]:
    """The jobs Slurm still lists, after waiting up to 30 s for them to go."""
    deadline = time.monotonic() + 30
    while True:
        out = cluster.run("squeue", "-h", "-o", "%i %T").stdout.split("\n")
        jobs = [line for line in out if line.strip()]
        if not jobs or time.monotonic() > deadline:
            return jobs
        time.sleep(0.2)


@contextlib.contextmanager
def loopback_capture(path: Path):
    """tcpdump of loopback TCP into ``path`` while the block runs; read ``path`` after it.

    Fails under CI=true when tcpdump is missing (.ci/setup installs it), skips elsewhere.
    """
    if not os.path.exists("/usr/bin/tcpdump") and not os.path.exists("/usr/sbin/tcpdump"):
        pytest.fail("tcpdump is missing (apt-get install tcpdump)") if os.environ.get("CI") == "true" \
            else pytest.skip("tcpdump is missing")
    dump = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "-w", str(path), "tcp"], stderr=subprocess.PIPE, text=True)
    try:
        assert "listening on" in dump.stderr.readline()
        yield path
    finally:
        dump.terminate()
        dump.wait(10)
        dump.stderr.close()
