"""The one launch path's lifecycle: whatever way the host ends, nothing of its runs is left.

Each host is a real Python process (a script run as a subprocess) that starts
real servers (process runtime, or bwrap containers from a packed SIF), prints
one ready line with what it started, and is then killed (SIGKILL, SIGTERM),
left to exit without closing anything, or forked. The checks are on the
machine itself: no process of the run (its reapers, servers, containers, an
agent action's ``sleep``), no mount, no server folder, within a bounded wait.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dacstyle import RemoteRunner
from dacstyle.competitions.sandbox import descendants
from dacstyle.runtimes.limits import _own_cgroup_dirs
from dacstyle.runtimes.reaper import start_time
from dacstyle.runtimes.serverdir import ServerDir, cleanup_stale, process_alive
from dacstyle.testing import probe_benchmark

from conftest import mounts_under, readline, server_folders

BOUND_S = 10.0
"""How long the test waits for the cleanup (the target is 2 s; perf/bench_lifecycle.py measures it)."""

HOST = textwrap.dedent(
    r"""
    import atexit, json, os, signal, sys, threading, time, weakref

    mode, runtime, image, workdir = sys.argv[1:5]

    def left_over(ready):
        '''What of the runs is still there, seen from inside the host.'''
        from dacstyle.runtimes.serverdir import process_alive
        return {"folders": [r for r in ready["runs"] if os.path.exists(r)],
                "pids": [p for p in ready["pids"] if process_alive(p)]}

    if mode == "exit":  # registered before any finalizer exists: runs after the finalizers at exit
        assert not weakref.finalize._registered_with_atexit
        atexit.register(lambda: print(json.dumps({"at_exit": left_over(ready)}), flush=True))
    if mode == "sigterm-chained":  # the host's own handler: ours must clean first, then call it
        def mine(signum, frame):
            print(json.dumps({"in_previous_handler": left_over(ready)}), flush=True)
            os._exit(7)
        signal.signal(signal.SIGTERM, mine)

    from dacstyle import RemoteRunner
    from dacstyle.competitions.sandbox import descendants
    from dacstyle.testing import probe_benchmark

    if runtime == "task":  # a competition task (grader + task env), an action running with a setsid'd sleep
        from dacstyle.competitions import CompetitionTask, make_competition
        comp = make_competition("spaceship-titanic-lite", os.path.join(workdir, "comp"), seed=0)
        runner = RemoteRunner(CompetitionTask(comp, workdir=os.path.join(workdir, "work"), time_limit=300),
                              runtime="process").start()
        env = runner.get_environment()
        env.reset()
        pids_file = os.path.join(workdir, "pids")  # the process runtime isolates nothing: the host's folder
        action = ("import os, subprocess, time\n"
                  "p = subprocess.Popen(['sleep', '300'], start_new_session=True)\n"
                  f"open({pids_file!r} + '.tmp', 'w').write(str(p.pid))\n"
                  f"os.rename({pids_file!r} + '.tmp', {pids_file!r})\n"
                  "time.sleep(300)\n")
        threading.Thread(target=env.step, args=(action,), daemon=True).start()
        deadline = time.monotonic() + 60
        while not os.path.exists(pids_file):  # a file in the workspace: no event to wait on
            assert time.monotonic() < deadline, "the action did not start"
            time.sleep(0.01)
        servers = [runner.server, runner._companion_servers["grader"]]
    elif runtime == "llm":  # the LLM service against the OpenAI-compatible test double
        from dacstyle.llm import LLMService, free_port
        port, replies = free_port(), os.path.join(workdir, "replies.json")
        open(replies, "w").write("[]")
        service = LLMService([sys.executable, "-m", "dacstyle.llm.fake_server", "--host", "127.0.0.1",
                              "--port", str(port), "--replies", replies], host="127.0.0.1", port=port, api_key="k" * 32,
                             env={"VLLM_API_KEY": "k" * 32}, start_timeout=60).start()
        servers = [service]
    else:
        runner = RemoteRunner(probe_benchmark(), runtime=runtime, image=image or None).start()
        assert runner.get_object().echo(1) == 1
        servers = [runner.server]

    ready = {"runs": [str(s.server_dir.path) for s in servers], "pids": sorted(descendants(os.getpid())),
             "host": os.getpid()}
    if mode == "collected":
        del runner, servers
        import gc; gc.collect()
        print(json.dumps({"after_collect": left_over(ready), **ready}), flush=True)
        sys.exit(0)
    if mode == "fork":  # a forked worker that ends normally must leave its parent's runs alone
        child = os.fork()
        if child == 0:  # exit hooks and finalizers run in the child (Pyro's proxies are not collected,
            atexit._run_exitfuncs()  # as in a multiprocessing worker: their close would shut the parent's sockets)
            os._exit(0)
        os.waitpid(child, 0)
        ready["after_child_exit"] = left_over(ready)
        ready["still_serves"] = runner.get_object().echo(2) == 2
        if os.fork() == 0:  # a second worker that outlives the host, holding inherited descriptors
            os.read(os.open(os.path.join(workdir, "fifo"), os.O_RDONLY), 1)
            os._exit(0)
    print(json.dumps(ready), flush=True)
    sys.stdin.read()  # until the test closes stdin (mode "exit") or kills this host
    """
)


def start_host(mode: str, runtime: str, tmp_path: Path, image: Path | None = None) -> tuple[subprocess.Popen, dict]:
    """The host script as a subprocess, and its ready line."""
    host = subprocess.Popen([sys.executable, "-c", HOST, mode, runtime, str(image or ""), str(tmp_path)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = readline(host.stdout, 120)
        assert line, f"the host exited with {host.wait(10)} before its ready line"
        return host, json.loads(line)
    except BaseException:
        host.kill()
        host.wait(10)
        raise


def processes_mentioning(paths: list[str]) -> list[int]:
    """Processes whose command line names one of ``paths`` (squashfuse, bwrap, servers, reapers)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if any(path.encode() in cmdline for path in paths) and process_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def leftovers(ready: dict, servers_root: Path) -> dict:
    """Everything of the host's runs still on the machine."""
    return {
        "processes": sorted({p for p in ready["pids"] if process_alive(p)} | set(processes_mentioning(ready["runs"]))),
        "mounts": mounts_under(servers_root.parent),
        "folders": [str(p) for p in server_folders(servers_root)],
        "cgroups": [str(c) for base in _own_cgroup_dirs() for r in ready["runs"]
                    if (c := base / f"dacstyle-{Path(r).name}").exists()],  # bwrap's pids cgroup, where delegated
    }


def nothing_left_within(ready: dict, servers_root: Path, timeout: float) -> dict:
    """Wait until nothing of the runs is left; what is still there at the deadline (empty: clean)."""
    deadline = time.monotonic() + timeout
    while True:
        left = {k: v for k, v in leftovers(ready, servers_root).items() if v}
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.02)  # foreign processes and mounts have no event to wait on: poll within the deadline


@pytest.fixture
def host_cleanup(servers_root):
    """Kill any host a test left and sweep its runs, even when the test fails."""
    hosts: list[subprocess.Popen] = []
    yield hosts
    for host in hosts:
        host.kill()
        host.wait(10)
    cleanup_stale(servers_root, force=True)


# -- SIGKILL: the reaper cleans -------------------------------------------------------------

@pytest.mark.parametrize("runtime", ["task", "llm", pytest.param("bwrap", marks=pytest.mark.container)])
def test_host_sigkill_leaves_no_process_mount_or_run_folder(runtime, request, tmp_path, servers_root, host_cleanup):
    image = request.getfixturevalue("packed_image") if runtime == "bwrap" else None
    host, ready = start_host("wait", runtime, tmp_path, image)
    host_cleanup.append(host)
    assert ready["pids"] and all(os.path.isdir(r) for r in ready["runs"])
    if runtime == "task":
        sleeper = int((tmp_path / "pids").read_text())
        assert sleeper in ready["pids"] and process_alive(sleeper)
    if runtime == "bwrap":
        assert mounts_under(servers_root.parent), "the image is not mounted"
        delegated = any(os.access(d, os.W_OK) for d in _own_cgroup_dirs())
        assert leftovers(ready, servers_root)["cgroups"] or not delegated, "the run's cgroup is not where it is looked for"
    host.kill()
    host.wait(10)
    assert nothing_left_within(ready, servers_root, BOUND_S) == {}


def test_what_a_dead_server_left_running_is_killed_while_the_host_lives(tmp_path, servers_root, host_cleanup):
    host, ready = start_host("wait", "task", tmp_path)
    host_cleanup.append(host)
    sleeper = int((tmp_path / "pids").read_text())
    task_run = Path(ready["runs"][0])
    server = json.loads((task_run / "owner.json").read_text())["pid"]
    os.kill(server, signal.SIGKILL)  # a crash: the action and its setsid'd sleep are orphaned at once
    deadline = time.monotonic() + BOUND_S
    while process_alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.02)  # a foreign process has no event to wait on: poll within the deadline
    assert not process_alive(sleeper), "an orphan of the dead server survived"
    assert task_run.is_dir() and host.poll() is None  # the run stays the host's to stop


def test_host_sigkill_with_a_forked_worker_alive_still_cleans(tmp_path, servers_root, host_cleanup):
    os.mkfifo(tmp_path / "fifo")
    host, ready = start_host("fork", "process", tmp_path)
    host_cleanup.append(host)
    assert ready["after_child_exit"] == {"folders": ready["runs"], "pids": ready["pids"]}, "a fork's exit stopped runs"
    assert ready["still_serves"]
    host.kill()
    host.wait(10)
    try:
        assert nothing_left_within(ready, servers_root, BOUND_S) == {}
    finally:
        with open(tmp_path / "fifo", "wb") as fifo:  # lets the forked worker end
            fifo.write(b"x")


# -- SIGTERM: the host cleans before it exits ----------------------------------------------

@pytest.mark.parametrize("runtime", ["task", pytest.param("bwrap", marks=pytest.mark.container)])
def test_host_sigterm_cleans_everything_then_calls_the_previous_handler(runtime, request, tmp_path, servers_root,
                                                                       host_cleanup):
    image = request.getfixturevalue("packed_image") if runtime == "bwrap" else None
    host, ready = start_host("sigterm-chained", runtime, tmp_path, image)
    host_cleanup.append(host)
    host.send_signal(signal.SIGTERM)
    line = readline(host.stdout, 60)
    assert host.wait(30) == 7, "the host's own SIGTERM handler did not run"
    assert json.loads(line) == {"in_previous_handler": {"folders": [], "pids": []}}
    assert nothing_left_within(ready, servers_root, 0) == {}


def test_host_sigterm_with_the_default_handler_dies_of_sigterm_after_cleaning(tmp_path, servers_root, host_cleanup):
    host, ready = start_host("wait", "process", tmp_path)
    host_cleanup.append(host)
    host.send_signal(signal.SIGTERM)
    assert host.wait(30) == -signal.SIGTERM
    assert nothing_left_within(ready, servers_root, 0) == {}  # cleaned before it died, not after by the reapers


def test_sigterm_handler_only_while_runs_are_open_and_never_at_import(no_leftovers):
    code = ("import signal, dacstyle.runtimes, dacstyle.container.client, dacstyle.llm; "
            "print(signal.getsignal(signal.SIGTERM) is signal.SIG_DFL)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60).stdout == "True\n"
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with RemoteRunner(probe_benchmark(), runtime="process"):
        assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:  # a host that ignores SIGTERM keeps ignoring it
        with RemoteRunner(probe_benchmark(), runtime="process"):
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- runners never closed ------------------------------------------------------------------

@pytest.mark.parametrize("runtime", ["process", pytest.param("bwrap", marks=pytest.mark.container)])
def test_runner_never_closed_is_cleaned_at_interpreter_exit(runtime, request, tmp_path, servers_root, host_cleanup):
    image = request.getfixturevalue("packed_image") if runtime == "bwrap" else None
    host, ready = start_host("exit", runtime, tmp_path, image)
    host_cleanup.append(host)
    host.stdin.close()  # the script returns without closing its runner
    line = readline(host.stdout, 60)
    assert host.wait(30) == 0
    assert json.loads(line) == {"at_exit": {"folders": [], "pids": []}}
    assert nothing_left_within(ready, servers_root, 0) == {}


def test_runner_never_closed_is_cleaned_when_collected(tmp_path, servers_root, host_cleanup):
    host, ready = start_host("collected", "process", tmp_path)
    host_cleanup.append(host)
    assert host.wait(30) == 0
    assert ready["after_collect"] == {"folders": [], "pids": []}


# -- records: 'cleanup' and every new launch find what a dead host left ----------------------

def _orphan_run(servers_root: Path) -> tuple[Path, subprocess.Popen]:
    """A server folder as a host and its reaper leave it when both are killed: a payload still running."""
    dead_host = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_host.wait(30)
    run = ServerDir.create()
    payload = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    run.record(host_pid=dead_host.pid, host_start=None, pid=payload.pid, pid_start=start_time(payload.pid))
    return run.path, payload


def test_a_new_runner_sweeps_runs_whose_host_is_dead(servers_root, no_leftovers):
    stale, payload = _orphan_run(servers_root)
    fresh = servers_root / "being-created"  # a folder without its owner record yet is not a leftover
    fresh.mkdir()
    try:
        with RemoteRunner(probe_benchmark(), runtime="process") as runner:
            assert runner.get_object().echo(3) == 3
            assert not stale.exists()
            assert payload.wait(10) == -signal.SIGKILL
            assert fresh.exists()
    finally:
        payload.kill()
        payload.wait(10)
        fresh.rmdir()


def test_cleanup_finds_what_a_killed_host_and_reaper_left(tmp_path, servers_root, host_cleanup):
    host, ready = start_host("wait", "llm", tmp_path)
    host_cleanup.append(host)
    owner = json.loads((Path(ready["runs"][0]) / "owner.json").read_text())
    reaper, server = owner["reaper_pid"], owner["pid"]
    assert server in ready["pids"] and process_alive(server)
    os.kill(reaper, signal.SIGKILL)  # the reaper first: nothing cleans but the record
    host.kill()
    host.wait(10)
    assert process_alive(server)
    done = subprocess.run([sys.executable, "-m", "dacstyle.cli", "cleanup"], capture_output=True, text=True,
                          timeout=60, env=dict(os.environ))
    assert done.returncode == 0, done.stderr
    assert f"killed payload process {server}" in done.stdout and f"removed {ready['runs'][0]}" in done.stdout
    assert nothing_left_within(ready, servers_root, BOUND_S) == {}


@pytest.mark.parametrize("runtime", ["process", pytest.param("bwrap", marks=pytest.mark.container)])
def test_exec_is_recorded_and_reaped_when_killed(runtime, request, tmp_path, servers_root, host_cleanup):
    image = str(request.getfixturevalue("packed_image")) if runtime == "bwrap" else "x.sif"
    python = "python3" if runtime == "bwrap" else sys.executable
    host = subprocess.Popen([sys.executable, "-m", "dacstyle.cli", "exec", "--runtime", runtime, image, "--", python,
                             "-c", "import sys; print('ready', flush=True); sys.stdin.read()"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    host_cleanup.append(host)
    assert readline(host.stdout, 120) == "ready\n"
    (run,) = server_folders(servers_root)
    deadline = time.monotonic() + 30
    while "pid" not in json.loads((run / "owner.json").read_text()):  # recorded once the reaper reports
        assert time.monotonic() < deadline, "exec's payload was never recorded"
        time.sleep(0.01)
    ready = {"pids": sorted(descendants(host.pid)), "runs": [str(run)]}
    assert json.loads((run / "owner.json").read_text())["pid"] in ready["pids"]
    host.kill()
    host.wait(10)
    assert nothing_left_within(ready, servers_root, BOUND_S) == {}


def test_runs_another_node_recorded_are_never_swept(servers_root, no_leftovers):
    run = ServerDir.create()
    run.record(node="another-node", host_pid=1 << 22, host_start=None)  # a dead pid here means nothing there
    assert cleanup_stale(force=True) == [] and run.path.is_dir()
    run.remove()


def test_runs_of_a_live_host_are_never_swept(servers_root, no_leftovers):
    with RemoteRunner(probe_benchmark(), runtime="process") as first:
        obj = first.get_object()
        with RemoteRunner(probe_benchmark(), runtime="process") as second:
            assert second.get_object().echo(1) == 1
        assert cleanup_stale() == []
        assert obj.echo(2) == 2
    gc.collect()
