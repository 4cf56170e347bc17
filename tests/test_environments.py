"""The default image runs from wherever the user's Python lives, and holds what works locally.

Each layout (a venv with and without --system-site-packages, a uv venv, the user
site, a conda-style prefix) is made for real; dacstyle and its dependencies
reach it the way a ``.pth`` file adds a folder, and a package installed only in
that layout is served from the default image the layout's own interpreter packs.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import numpy as np
import pytest

from dacstyle import RemoteRunner
from dacstyle.benchmarks import GymnasiumBenchmark
from dacstyle.images.envtree import package_dirs

pytestmark = pytest.mark.container

BASE = os.path.realpath(getattr(sys, "_base_executable", sys.executable))
VERSION = "python{}.{}".format(*sys.version_info[:2])
MARKER = textwrap.dedent("""\
    import gymnasium

    def make_env(**kwargs):
        return gymnasium.make("CartPole-v1", **kwargs)
    """)
SERVE = textwrap.dedent("""\
    import sys
    from dacstyle import RemoteRunner
    from dacstyle.benchmarks import GymnasiumBenchmark

    with RemoteRunner(GymnasiumBenchmark(sys.argv[1] + ":make_env"), runtime="bwrap") as runner:
        obs, _ = runner.get_environment().reset(seed=0)
        print("served", obs.shape, runner.image.parent.name)
    """)


def install_marker(site: Path, name: str) -> None:
    """A package installed the way pip lays one out: the module and its dist-info."""
    site.mkdir(parents=True, exist_ok=True)
    (site / f"{name}.py").write_text(MARKER)
    info = site / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "RECORD").write_text(f"{name}.py,,\n")


def reach_dacstyle(site: Path) -> None:
    """Make this environment's packages importable from ``site`` (a .pth that adds their folders)."""
    lines = "".join(f"import site; site.addsitedir({folder!r})\n" for folder in package_dirs())
    (site / "zz-dacstyle-under-test.pth").write_text(lines)


def serve_marker(python: str, name: str, tmp_path: Path, env: dict[str, str] | None = None) -> str:
    """Run the README's main path in ``python``: pack the default image, serve ``name`` from it."""
    environ = {**os.environ, **(env or {}), "DACSTYLE_CACHE": str(tmp_path / "cache"),
               "DACSTYLE_RUNS": str(tmp_path / "runs")}
    environ.pop("PYTHONPATH", None)
    done = subprocess.run([python, "-c", SERVE, name], env=environ, capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "served (4,)" in done.stdout, done.stdout
    return done.stdout


def purelib(python: str) -> Path:
    out = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    return Path(out.strip())


@pytest.mark.slow
@pytest.mark.parametrize("system_site", [False, True], ids=["venv", "venv-system-site-packages"])
def test_default_image_from_a_venv(tmp_path, system_site, no_leftovers):
    venv = tmp_path / "venv"
    args = [BASE, "-m", "venv", "--without-pip", str(venv)] + (["--system-site-packages"] if system_site else [])
    subprocess.run(args, check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = purelib(python)
    install_marker(site, "marker_venv")
    base_site = os.path.realpath(sysconfig.get_paths(vars={"base": sys.base_prefix})["purelib"])
    assert package_dirs(python) == [str(site.resolve()), *([base_site] if system_site else [])]
    reach_dacstyle(site)
    check = ("import sys; from dacstyle.images.envtree import collect_environment, package_dirs; "
             "hosts = tuple(d + '/' for d in [sys.prefix, *package_dirs()]); "
             "print(sorted(e.path for e in collect_environment().entries() if e.path.startswith(hosts)))")
    inside = subprocess.run([python, "-c", check], capture_output=True, text=True, timeout=300, check=True).stdout
    assert inside.strip() == "[]", "nothing at the venv's or a package folder's host path ($HOME, /tmp are hidden)"
    serve_marker(python, "marker_venv", tmp_path)


@pytest.mark.slow
def test_default_image_from_a_uv_venv(tmp_path, no_leftovers):
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not os.path.exists(uv):
        pytest.skip("uv is not installed (the test extra installs it)")
    subprocess.run([uv, "venv", "--quiet", "--python", BASE, str(tmp_path / "uvenv")], check=True, timeout=120,
                   env={**os.environ, "UV_NO_CACHE": "1", "UV_PYTHON_DOWNLOADS": "never"})
    python = str(tmp_path / "uvenv" / "bin" / "python")
    assert "uv =" in (tmp_path / "uvenv" / "pyvenv.cfg").read_text()
    site = purelib(python)
    install_marker(site, "marker_uv")
    reach_dacstyle(site)
    serve_marker(python, "marker_uv", tmp_path)


@pytest.mark.slow
def test_default_image_from_the_user_site(tmp_path, no_leftovers):
    """``pip install --user``: packages under $PYTHONUSERBASE, which the container's $HOME does not have."""
    userbase = tmp_path / "userbase"
    site = userbase / "lib" / VERSION / "site-packages"
    install_marker(site, "marker_user")
    reach_dacstyle(site)
    serve_marker(BASE, "marker_user", tmp_path, {"PYTHONUSERBASE": str(userbase)})


@pytest.mark.slow
def test_default_image_from_a_conda_style_prefix(tmp_path, no_leftovers):
    """A standalone prefix as conda lays it out: bin/python3.X, lib/python3.X, conda-meta/, no pyvenv.cfg."""
    source = Path(sys.base_prefix)
    prefix = tmp_path / "conda"
    (prefix / "bin").mkdir(parents=True)
    (prefix / "conda-meta").mkdir()
    (prefix / "conda-meta" / "history").write_text("==> 2026-11-21 <==\n")
    real = os.path.realpath(BASE)
    shutil.copy2(real, prefix / "bin" / os.path.basename(real))
    (prefix / "bin" / "python3").symlink_to(os.path.basename(real))
    stdlib = Path(sysconfig.get_paths(vars={"base": sys.base_prefix, "installed_base": sys.base_prefix})["stdlib"])
    shutil.copytree(stdlib, prefix / "lib" / VERSION, symlinks=True,
                    ignore=shutil.ignore_patterns("site-packages", "test", "__pycache__", "idlelib", "tkinter"))
    for lib in source.joinpath("lib").glob("libpython*"):
        shutil.copy2(lib, prefix / "lib" / lib.name, follow_symlinks=False)
    site = prefix / "lib" / VERSION / "site-packages"
    install_marker(site, "marker_conda")
    reach_dacstyle(site)
    python = str(prefix / "bin" / "python3")
    prefix_seen = subprocess.run([python, "-c", "import sys; print(sys.prefix)"], capture_output=True, text=True,
                                 timeout=60, check=True).stdout.strip()
    assert prefix_seen == str(prefix), "the copy must run as its own prefix"
    serve_marker(python, "marker_conda", tmp_path)


def test_module_from_the_working_folder_renders_cartpole_in_bwrap(packed_image, tmp_path, monkeypatch, no_leftovers):
    """A benchmark module beside the notebook (not installed) is served with no binds, and renders frames."""
    work = tmp_path / "work"
    work.mkdir()
    source = "import gymnasium\n\ndef make_env(**kwargs):\n    return gymnasium.make('CartPole-v1', render_mode='rgb_array')\n"
    (work / "mybench_here.py").write_text(source)
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(work))
    bench = GymnasiumBenchmark("mybench_here:make_env")
    local = bench.get_environment()
    local.reset(seed=3)
    expected = local.render()
    local.close()
    with RemoteRunner(bench, runtime="bwrap", image=packed_image) as runner:
        env = runner.get_environment()
        env.reset(seed=3)
        frame = env.render()
        results = runner.run(lambda obs: 0, 1)
    assert isinstance(frame, np.ndarray) and frame.shape == (400, 600, 3) and frame.dtype == np.uint8
    assert frame.tobytes() == expected.tobytes() and frame.std() > 0
    manifest = json.loads((results.path / "manifest.json").read_text())
    digest = hashlib.sha256(source.encode()).hexdigest()
    assert manifest["local_code"] == [{"module": "mybench_here", "path": str(work / "mybench_here.py"),
                                       "files": {"mybench_here.py": digest}}]


def test_installed_and_bundled_modules_are_not_bound(tmp_path):
    from dacstyle.container.client.localcode import local_modules

    assert local_modules(["dacstyle.benchmarks.sigmoid:make", "gymnasium.envs:x", "json:loads", "nope_xyz:f"]) == []
    (tmp_path / "pkg_here").mkdir()
    (tmp_path / "pkg_here" / "__init__.py").write_text("")
    sys.path.insert(0, str(tmp_path))
    try:
        found = local_modules(["pkg_here.sub:make"])
    finally:
        sys.path.remove(str(tmp_path))
    assert [(m.name, m.path) for m in found] == [("pkg_here", tmp_path / "pkg_here")]
