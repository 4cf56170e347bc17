"""The apptainer/singularity backend: golden argv, binary resolution, and a whole run via a stand-in.

Apptainer cannot be installed here, so the backend is checked twice: the exact
argv it builds (golden files), and a full RemoteRunner run through the stand-in
``tests/apptainer_standin/apptainer``, which maps those flags onto squashfuse +
bubblewrap and rejects anything else.

Refresh the golden files after an intended change with::

    DACSTYLE_REFRESH_GOLDEN=1 pytest tests/test_apptainer.py -k golden
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from gymnasium.utils.env_checker import check_env

from dacstyle import RemoteRunner, errors
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.config import config
from dacstyle.container.client.server import server_argv, server_network
from dacstyle.runtimes import Bind, LaunchSpec, get_runtime
from dacstyle.runtimes.apptainer import ApptainerRuntime, SingularityRuntime
from dacstyle.runtimes.serverdir import ServerDir

from conftest import assert_golden, assert_identical, local_trajectory, trajectory

STANDIN = Path(__file__).parent / "apptainer_standin"
FAKE_SERVER_DIR = "/tmp/dacstyle-0/abcd1234"
FAKE_IMAGE = "/images/sigmoid-1.0.sif"


@dataclass
class FakeServerDir(ServerDir):
    """A server folder that exists only as a fixed path (nothing is created)."""

    agent: bool = False

    @property
    def has_agent(self) -> bool:
        return self.agent


def tool(folder: Path, name: str, body: str = "exit 0") -> Path:
    """A tiny executable ``folder/name``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def fake_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """PATH = two tmp folders (empty at first) + /usr/bin:/bin; returns the folders."""
    first, second = tmp_path / "bin1", tmp_path / "bin2"
    first.mkdir()
    second.mkdir()
    monkeypatch.setenv("PATH", f"{first}:{second}:/usr/bin:/bin")
    return first, second


# -- golden argv ---------------------------------------------------------------------------

GOLDEN_CASES = {
    "plain": (ApptainerRuntime, dict()),
    "agent_binds": (ApptainerRuntime, dict(agent=True, binds=[Bind("/data/public", "/data/public"),
                                                              Bind("/scratch/work space", "/workspace", False)])),
    "gpu_env": (ApptainerRuntime, dict(gpu=True, env={"OMP_NUM_THREADS": "4", "BENCH_MODE": "fast run"})),
    "singularity_plain": (SingularityRuntime, dict()),
}


def server_command(runtime, spec: LaunchSpec, tcp: str | None = None) -> list[str]:
    """The full argv a server is launched with (its network as Server.start decides it)."""
    spec.network = server_network(tcp)
    return runtime.exec_argv(spec, server_argv(runtime, spec, tcp))


def golden_argv(runtime_cls: type, options: dict) -> list[str]:
    options = dict(options)
    run = FakeServerDir(Path(FAKE_SERVER_DIR), agent=options.pop("agent", False))
    argv = server_command(runtime_cls(), LaunchSpec(server_dir=run, image=Path(FAKE_IMAGE), **options))
    return [os.path.basename(argv[0]), *argv[1:]]  # the binary's folder depends on the machine


@pytest.mark.parametrize("case", sorted(GOLDEN_CASES))
def test_golden_argv(case: str, fake_binaries):
    tool(fake_binaries[0], "apptainer")
    tool(fake_binaries[0], "singularity")
    runtime_cls, options = GOLDEN_CASES[case]
    text = "\n".join(golden_argv(runtime_cls, options)) + "\n"
    assert_golden(f"apptainer_{case}.txt", text, __file__)


def test_argv_is_a_list_without_the_token(fake_binaries, tmp_path):
    tool(fake_binaries[0], "apptainer")
    run = ServerDir.create(tmp_path, agent=True)
    argv = server_command(ApptainerRuntime(), LaunchSpec(server_dir=run, image=tmp_path / "x.sif"))
    assert all(isinstance(item, str) for item in argv)
    assert not any(run.token("host") in item or run.token("agent") in item for item in argv)
    assert "/run/dacstyle/token" in argv and "/run/dacstyle-agent/token" in argv


def test_servers_get_no_network_unless_they_listen_on_tcp_or_it_is_allowed(fake_binaries):
    tool(fake_binaries[0], "apptainer")
    run = FakeServerDir(Path(FAKE_SERVER_DIR))
    spec = LaunchSpec(server_dir=run, image=Path(FAKE_IMAGE))
    no_network = ["--net", "--network", "none"]

    def has(argv: list[str]) -> bool:
        return any(argv[i:i + 3] == no_network for i in range(len(argv)))

    assert has(server_command(ApptainerRuntime(), spec)) and "--no-privs" in server_command(ApptainerRuntime(), spec)
    exec_spec = LaunchSpec(server_dir=run, image=Path(FAKE_IMAGE))
    assert not has(ApptainerRuntime().exec_argv(exec_spec, ["true"]))  # dacstyle exec, the LLM service: their choice
    assert not has(server_command(ApptainerRuntime(), spec, tcp="127.0.0.1:0"))
    config.sandbox_network = True
    assert not has(server_command(ApptainerRuntime(), spec))


# -- binary resolution ---------------------------------------------------------------------

def test_apptainer_is_preferred_over_singularity(fake_binaries):
    first, second = fake_binaries
    tool(first, "singularity")
    tool(second, "apptainer")
    assert ApptainerRuntime.binary() == str(second / "apptainer")
    assert SingularityRuntime.binary() == str(first / "singularity")


def test_apptainer_falls_back_to_singularity(fake_binaries):
    tool(fake_binaries[1], "singularity")
    assert ApptainerRuntime.available() and SingularityRuntime.available()
    assert ApptainerRuntime.binary() == str(fake_binaries[1] / "singularity")
    assert get_runtime("auto").name == "apptainer"


def test_neither_binary_is_a_clear_error(fake_binaries, tmp_path):
    assert not ApptainerRuntime.available() and not SingularityRuntime.available()
    assert get_runtime("auto").name in ("bwrap", "process")
    with pytest.raises(errors.RuntimeUnavailableError):
        get_runtime("apptainer")
    run = ServerDir.create(tmp_path)
    with pytest.raises(errors.RuntimeUnavailableError, match="'bwrap'.*'process'"):
        server_command(ApptainerRuntime(), LaunchSpec(server_dir=run, image=tmp_path / "x.sif"))


def test_missing_image_is_image_not_found(fake_binaries, tmp_path):
    tool(fake_binaries[0], "apptainer")
    run = ServerDir.create(tmp_path)
    with pytest.raises(errors.ImageNotFoundError, match="needs an image"):
        ApptainerRuntime().prepare(LaunchSpec(server_dir=run))
    with pytest.raises(errors.ImageNotFoundError, match="does not exist"):
        ApptainerRuntime().prepare(LaunchSpec(server_dir=run, image=tmp_path / "missing.sif"))


def test_host_env_never_passes_container_settings(fake_binaries, monkeypatch):
    for key, value in {"APPTAINERENV_SECRET": "x", "APPTAINER_BIND": "/:/host", "SINGULARITYENV_X": "y",
                       "APPTAINER_CACHEDIR": "/cache", "AWS_SECRET_ACCESS_KEY": "z"}.items():
        monkeypatch.setenv(key, value)
    env = ApptainerRuntime().host_env(LaunchSpec(server_dir=FakeServerDir(Path(FAKE_SERVER_DIR)), env={"K": "V"}))
    assert env["APPTAINER_CACHEDIR"] == "/cache" and env["LANG"] == "C.UTF-8"
    assert not {"APPTAINERENV_SECRET", "APPTAINER_BIND", "SINGULARITYENV_X", "AWS_SECRET_ACCESS_KEY", "K"} & set(env)


# -- the stand-in itself -------------------------------------------------------------------

def standin(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([str(STANDIN / "apptainer"), *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout)


def mounts() -> set[str]:
    with open("/proc/self/mounts") as handle:
        return {line.split()[1] for line in handle if "apptainer-standin-" in line}


@pytest.mark.parametrize("argv", [
    ["exec", "--containall", "--cleanenv", "--no-home", "--no-privs", "--writable", "x.sif", "true"],
    ["exec", "--cleanenv", "--no-home", "--no-privs", "IMAGE", "true"],
    ["exec", "--containall", "--cleanenv", "--no-home", "IMAGE", "true"],
    ["exec", "--containall", "--cleanenv", "--no-home", "--no-privs", "--bind", "/a:/b:shared", "IMAGE", "true"],
    ["exec", "--containall", "--cleanenv", "--no-home", "--no-privs", "--env", "NOEQUALS", "IMAGE", "true"],
    ["exec", "--containall", "--cleanenv", "--no-home", "--no-privs", "--net", "--network", "bridge", "IMAGE", "true"],
    ["exec", "--containall", "--cleanenv", "--no-home", "--no-privs", "--net", "IMAGE", "true"],
    ["run", "IMAGE"],
], ids=["unknown-flag", "not-contained", "privileged", "bad-bind-mode", "bad-env", "bridge-network", "net-alone",
        "unknown-command"])
def test_standin_rejects_what_the_backend_never_builds(argv):
    done = standin(*argv)
    assert done.returncode == 255 and done.stderr.startswith("FATAL:"), done.stderr


@pytest.mark.container
def test_standin_runs_contained_with_only_the_given_env(packed_image, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("hello")
    code = ("import os, sys; print(sorted(os.environ)); print(os.environ['K']); print(sys.stdin.read());"
            "print(open('/data/in.txt').read()); open('/out/x', 'w').write('ok'); sys.exit(7)")
    out = tmp_path / "out"
    out.mkdir()
    done = standin("exec", "--containall", "--cleanenv", "--no-home", "--no-privs", "--bind", f"{data}:/data:ro",
                   "--bind", f"{out}:/out", "--env", "K=a b", str(packed_image), "python3", "-c", code,
                   stdin="piped")
    assert done.returncode == 7, done.stderr
    assert done.stdout.splitlines() == ["['HOME', 'K', 'LANG', 'PATH', 'PWD']", "a b", "piped", "hello"]
    assert (out / "x").read_text() == "ok"
    assert mounts() == set()


@pytest.mark.container
def test_standin_forwards_sigterm_and_unmounts(packed_image):
    code = ("import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(42)); "
            "print('up', flush=True); time.sleep(60)")
    proc = subprocess.Popen([str(STANDIN / "apptainer"), "exec", "--containall", "--cleanenv", "--no-home",
                             "--no-privs", str(packed_image), "python3", "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline() == "up\n"
        assert len(mounts()) == 1
        proc.terminate()  # only the stand-in gets the signal: it must pass it on
        assert proc.wait(timeout=20) == 42
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert mounts() == set()


# -- the whole path: RemoteRunner -> backend -> stand-in -------------------------------------

@pytest.mark.container
def test_remote_runner_through_apptainer_backend(packed_image, no_leftovers, monkeypatch):
    monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")
    bench = SigmoidBenchmark().set_seed(1)
    actions, expected = local_trajectory(bench, 1, 20, action_seed=3)
    with RemoteRunner(bench, runtime="apptainer", image=packed_image) as runner:
        assert runner.runtime.describe() == {"name": "apptainer", "isolated": True,
                                             "binary": str(STANDIN / "apptainer")}
        env = runner.get_environment()
        check_env(env, skip_render_check=True)
        assert_identical(trajectory(env, 1, actions), expected)
        env.close()
        assert runner.server.hello["pid"] != runner.server.process.pid  # the server runs in the sandbox
    assert mounts() == set()


@pytest.mark.container
def test_server_dying_on_start_fails_fast_and_cleans_up(packed_image, no_leftovers, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", f"{STANDIN}:{os.environ['PATH']}")
    bad = Bind(str(tmp_path / "missing"), "/data")
    with pytest.raises(errors.ServerStartError, match="exit code 255"):
        RemoteRunner(SigmoidBenchmark(), runtime="apptainer", image=packed_image, binds=[bad],
                     start_timeout=30).start()
    assert mounts() == set()
