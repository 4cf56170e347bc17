"""``dacstyle exec``, ``build`` and ``recipe convert``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from spython.main.parse.parsers import SingularityParser

from dacstyle.cli import build_parser, main
from dacstyle.cli.containers import convert_dockerfile

STANDIN = Path(__file__).parent / "apptainer_standin"


def recorder(folder: Path, name: str) -> Path:
    """A stand-in ``name`` that writes its argv, one item a line, to ``folder/name.argv``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$0.argv"\nexit "${STANDIN_EXIT:-0}"\n')
    path.chmod(0o755)
    return path


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return folder


@pytest.mark.parametrize("command", [["exec"], ["build"], ["recipe"], ["recipe", "convert"]])
def test_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*command, "--help"])
    assert info.value.code == 0
    assert "usage: dacstyle " + " ".join(command) in capsys.readouterr().out


# -- build -------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, euid, fakeroot", [
    ([], 0, False), ([], 1000, True), (["--fakeroot"], 0, True), (["--no-fakeroot"], 1000, False)])
def test_build_argv(flags, euid, fakeroot, bin_dir, tmp_path, monkeypatch, capsys):
    binary = recorder(bin_dir, "apptainer")
    recipe = tmp_path / "bench.def"
    recipe.write_text("Bootstrap: docker\nFrom: python:3.11-slim-bookworm\n")
    monkeypatch.setattr(os, "geteuid", lambda: euid)  # the uid cannot really change in a test
    assert main(["build", *flags, str(recipe), str(tmp_path / "out.sif")]) == 0
    argv = (bin_dir / "apptainer.argv").read_text().splitlines()
    assert argv == ["build", *(["--fakeroot"] if fakeroot else []), str(tmp_path / "out.sif"), str(recipe)]
    assert f"running {binary} build" in capsys.readouterr().err


def test_build_falls_back_to_singularity_and_returns_its_status(bin_dir, tmp_path, monkeypatch):
    recorder(bin_dir, "singularity")
    recipe = tmp_path / "bench.def"
    recipe.write_text("Bootstrap: docker\n")
    (tmp_path / "out.sif").write_text("old")
    monkeypatch.setenv("STANDIN_EXIT", "3")
    assert main(["build", "--force", "--no-fakeroot", str(recipe), str(tmp_path / "out.sif")]) == 3
    assert (bin_dir / "singularity.argv").read_text().splitlines()[:2] == ["build", "--force"]


def test_build_refusals(bin_dir, tmp_path, capsys):
    recipe = tmp_path / "bench.def"
    recipe.write_text("Bootstrap: docker\n")
    assert main(["build", str(recipe), str(tmp_path / "out.sif")]) == 1
    assert f"dacstyle pack --from-env {tmp_path / 'out.sif'}" in capsys.readouterr().err
    recorder(bin_dir, "apptainer")
    assert main(["build", str(tmp_path / "missing.def"), str(tmp_path / "out.sif")]) == 1
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "out.sif").write_text("old")
    assert main(["build", str(recipe), str(tmp_path / "out.sif")]) == 1
    assert "--force" in capsys.readouterr().err
    assert not (bin_dir / "apptainer.argv").exists()


# -- recipe convert --------------------------------------------------------------------------

DOCKERFILE = """\
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 MODE=fast
COPY mybench /opt/mybench
RUN pip install numpy==2.4.6 && \\
    pip install /opt/mybench
LABEL org.dacstyle.image=mybench org.example.note="two words"
ENTRYPOINT ["python3", "-m", "dacstyle.container.server"]
"""


def test_recipe_convert(tmp_path, capsys):
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    out = tmp_path / "bench.def"
    assert main(["recipe", "convert", str(tmp_path / "Dockerfile"), "-o", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("Bootstrap: docker\nFrom: python:3.11-slim-bookworm\n")
    recipe = SingularityParser(str(out)).recipe["spython-base"]
    assert recipe.fromHeader == "python:3.11-slim-bookworm"
    assert recipe.files == ["mybench /opt/mybench"]
    assert "pip install numpy==2.4.6 && \\" in recipe.install and "pip install /opt/mybench" in recipe.install
    assert "PYTHONUNBUFFERED=1" in recipe.environ and "MODE=fast" in recipe.environ
    assert recipe.labels == ["org.dacstyle.image mybench", "org.example.note two words"]
    assert recipe.cmd == 'exec python3 -m dacstyle.container.server "$@"'
    assert main(["recipe", "convert", str(tmp_path / "Dockerfile")]) == 0
    assert capsys.readouterr().out == text


def runscript(definition: str) -> str | None:
    """The body of the %runscript section of ``definition``, or None."""
    body, inside = [], False
    for line in definition.splitlines():
        if line.startswith("%"):
            if inside:
                break
            inside = line.strip() == "%runscript"
        elif inside:
            body.append(line)
    return "\n".join(body) + "\n" if inside else None


def run_as_docker_would(dockerfile: str, tmp_path: Path, *args: str) -> str:
    """Convert ``dockerfile``, then run its runscript with /bin/sh as Apptainer does; return stdout."""
    (tmp_path / "Dockerfile").write_text(dockerfile)
    script = tmp_path / "runscript"
    script.write_text(runscript(convert_dockerfile(tmp_path / "Dockerfile")))
    done = subprocess.run(["/bin/sh", str(script), *args], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout


ARGV = 'python3", "-c", "import sys; print(sys.argv[1:])'


@pytest.mark.parametrize("lines, args, output", [
    # exec-form ENTRYPOINT and CMD: CMD gives default arguments, the run's arguments replace them
    ([f'ENTRYPOINT ["{ARGV}"]', 'CMD ["a b", "c"]'], [], "['a b', 'c']\n"),
    ([f'ENTRYPOINT ["{ARGV}"]', 'CMD ["a b", "c"]'], ["x y", "z"], "['x y', 'z']\n"),
    # CMD alone: the whole command, replaced by the run's arguments (spython put /bin/bash before it)
    ([f'CMD ["{ARGV}", "it\'s"]'], [], "[\"it's\"]\n"),
    (['CMD echo "one  two" | tr a-z A-Z'], [], "ONE  TWO\n"),
    (['CMD echo "one  two" | tr a-z A-Z'], ["echo", "replaced"], "replaced\n"),
    # shell-form ENTRYPOINT: /bin/sh -c, arguments and CMD ignored (as Docker does)
    (['ENTRYPOINT echo from the entrypoint $HOME_NOT_SET', 'CMD ["ignored"]'], ["also", "ignored"],
     "from the entrypoint\n"),
    # exec-form ENTRYPOINT and shell-form CMD: sh -c CMD are the default arguments
    (['ENTRYPOINT ["/bin/sh", "-c", "echo \\"$0|$1\\""]', 'CMD echo hi'], [], "/bin/sh|-c\n"),
])
def test_recipe_convert_runscript_runs_what_docker_runs(lines, args, output, tmp_path):
    dockerfile = "FROM python:3.11-slim-bookworm\n" + "\n".join(lines) + "\n"
    assert run_as_docker_would(dockerfile, tmp_path, *args) == output


def test_recipe_convert_keeps_the_workdir_and_leaves_out_a_runscript_docker_would_not_have(tmp_path):
    workdir = tmp_path / "app"
    workdir.mkdir()
    assert run_as_docker_would(f"FROM debian:12\nWORKDIR {workdir}\nCMD pwd\n", tmp_path) == f"{workdir}\n"
    (tmp_path / "Dockerfile").write_text("FROM debian:12\nRUN true\n")
    text = convert_dockerfile(tmp_path / "Dockerfile")
    assert runscript(text) is None and "%startscript" not in text  # Apptainer keeps the base image's
    assert "%post\ntrue" in text


def test_recipe_convert_missing_file(tmp_path, capsys):
    assert main(["recipe", "convert", str(tmp_path / "Dockerfile")]) == 1
    assert "does not exist" in capsys.readouterr().err


# -- exec (real sandboxes) -------------------------------------------------------------------

def dacstyle_exec(*args: str, stdin: str = "", path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": path or os.environ["PATH"]}
    return subprocess.run([sys.executable, "-m", "dacstyle.cli", "exec", *args], input=stdin, capture_output=True,
                          text=True, timeout=120, env=env)


@pytest.mark.container
@pytest.mark.parametrize("runtime", ["bwrap", "apptainer"])
def test_exec_runs_a_command_inside_the_image(runtime, packed_image, tmp_path, no_leftovers, servers_root):
    data = tmp_path / "data"
    data.mkdir()
    (data / "in.txt").write_text("from the host")
    code = ("import os, sys; print(os.environ['K'], sys.stdin.read(), open('/data/in.txt').read(), "
            "os.path.exists('/run/dacstyle')); sys.exit(5)")
    done = dacstyle_exec("--runtime", runtime, "--bind", f"{data}:/data", "--env", "K=v", str(packed_image), "--",
                         "python3", "-c", code, stdin="piped", path=f"{STANDIN}:{os.environ['PATH']}")
    assert done.returncode == 5, done.stderr
    assert done.stdout == "v piped from the host True\n"
    write = dacstyle_exec("--runtime", runtime, "--bind", f"{data}:/data", str(packed_image), "--",
                          "python3", "-c", "open('/data/x', 'w')", path=f"{STANDIN}:{os.environ['PATH']}")
    assert write.returncode == 1 and "Read-only file system" in write.stderr  # binds are read-only by default
    with open("/proc/self/mounts") as handle:
        assert "apptainer-standin-" not in handle.read()


def test_exec_with_the_process_runtime_runs_on_the_host_and_says_so(no_leftovers, servers_root):
    done = dacstyle_exec("--runtime", "process", "ignored.sif", "--", sys.executable, "-c",
                         "import sys; print(sys.stdin.read()); sys.exit(4)", stdin="in")
    assert (done.returncode, done.stdout) == (4, "in\n")
    assert "isolates nothing" in done.stderr and "ignored" in done.stderr
