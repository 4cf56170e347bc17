"""The Apptainer definition files parse, and pin what the tests run with."""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from spython.main.parse.parsers import SingularityParser

import dacstyle

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / ".ci"))
from refresh_lock import normalise, read_lock  # noqa: E402  (the script that writes the lock owns its format)

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "container" / "recipes"
PIN = re.compile(r"^([A-Za-z0-9_.\-]+)==(\S+?)\s*\\?$")


def parse(name: str):
    return SingularityParser(str(RECIPES / name)).recipe["spython-base"]


def pins(install: list[str]) -> dict[str, str]:
    """``name==version`` lines of the %post section, names normalised."""
    found = {}
    for line in install:
        match = PIN.match(line.strip())
        if match:
            found[normalise(match.group(1))] = match.group(2)
    return found


def locked(name: str) -> str:
    """The version constraints.txt (the one lock file CI installs with) pins for ``name``."""
    lock = read_lock(ROOT / "constraints.txt")
    assert name in lock, f"{name} is not pinned in constraints.txt: run python3 .ci/refresh_lock.py"
    return lock[name]


def runtime_requirements() -> dict[str, str]:
    """dacstyle's install_requires with the versions the lock file pins (never what a registry serves today)."""
    names = [normalise(Requirement(r).name) for r in metadata.requires("dacstyle") or [] if "extra ==" not in r]
    return {name: locked(name) for name in names}


@pytest.mark.parametrize("name", ["benchmark.def", "template.def"])
def test_recipe_structure(name):
    text = (RECIPES / name).read_text()
    recipe = parse(name)
    assert re.search(r"^Bootstrap: docker$", text, re.M)
    assert recipe.fromHeader == "python:3.11-slim-bookworm"
    assert not [line for line in recipe.files + recipe.labels if line.startswith("#")], "Apptainer reads these lines"
    labels = dict(label.split(None, 1) for label in recipe.labels)
    assert labels["org.dacstyle.version"] == dacstyle.__version__
    assert recipe.cmd == 'exec python3 -m dacstyle.container.server "$@"'
    assert recipe.test and any("dacstyle.container.server" in line for line in recipe.install)  # %test folded in
    assert "set -eu" in recipe.install and "mkdir -p /run/dacstyle /run/dacstyle-agent" in recipe.install
    assert "PYTHONUNBUFFERED=1" in recipe.environ
    assert pins(recipe.install) == runtime_requirements(), "recipe pins differ from constraints.txt: run python3 .ci/refresh_lock.py"


def test_benchmark_recipe_copies_the_project_source():
    recipe = parse("benchmark.def")
    sources = [line.split()[0] for line in recipe.files]
    assert sources == ["pyproject.toml", "setup.cfg", "dacstyle", "container"]
    assert all((ROOT / source).exists() for source in sources)
    assert "python3 -m pip install --no-deps /opt/dacstyle/src" in recipe.install


def test_template_marks_every_place_to_fill_in():
    text = (RECIPES / "template.def").read_text()
    assert text.count(">>>") >= 6
    recipe = parse("template.def")
    assert recipe.files == ["dacstyle /opt/dacstyle/src", "mybench /opt/mybench/src"]
    assert any("import dacstyle.container.server, mybench" in line for line in recipe.install)


def test_lock_pins_every_requirement_ci_installs():
    """Each requirement of dacstyle and of its test extra is pinned, so CI never meets a new release."""
    lock = read_lock(ROOT / "constraints.txt")
    requirements = [Requirement(r) for r in metadata.requires("dacstyle") or []]
    names = {normalise(r.name) for r in requirements if r.marker is None or r.marker.evaluate({"extra": "test"})}
    assert names - set(lock) == set(), "run python3 .ci/refresh_lock.py"
    setup = (ROOT / ".ci" / "setup").read_text()
    assert "-c constraints.txt" in setup, ".ci/setup must install with the lock file"
