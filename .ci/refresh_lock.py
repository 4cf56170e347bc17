#!/usr/bin/env python3
"""Refresh constraints.txt and the recipes' pins from a fresh install of ``.[test]``.

CI installs with ``-c constraints.txt``, so an upstream release changes nothing
until someone runs this script (network needed) and commits both files:

    python3 .ci/refresh_lock.py
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "constraints.txt"
RECIPES = ROOT / "container" / "recipes"
PIN = re.compile(r"^(\s*)([A-Za-z0-9_.\-]+)==(\S+?)(\s*\\?)$")
HELD = ("torch",)
"""Kept at the version the lock pins: torch 2.13.0's CPU build lies in pip's find-links on these
machines, while a newer torch from the registry brings several GB of CUDA packages."""
LOCAL_LABEL = re.compile(r"\+[A-Za-z0-9.]+$")
"""A local build label (torch's ``+cpu``), left out of the lock: ``torch==2.13.0`` takes that build too."""
HEADER = """\
# Every package CI installs, pinned (pip install -c constraints.txt -e '.[test]').
# Regenerate with: python3 .ci/refresh_lock.py (also rewrites container/recipes/*.def pins).
"""


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path = LOCK) -> dict[str, str]:
    """``{normalised name: version}`` from a constraints file."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalise(name)] = version.strip()
    return pins


def freeze() -> str:
    """``pip freeze`` of a fresh virtualenv with ``.[test]`` installed (newest releases, but the HELD pins)."""
    held = {name: version for name, version in read_lock().items() if name in HELD}
    with tempfile.TemporaryDirectory() as tmp:
        venv.create(tmp, with_pip=True)
        python = str(Path(tmp) / "bin" / "python")
        constraints = Path(tmp) / "held.txt"
        constraints.write_text("".join(f"{name}=={version}\n" for name, version in held.items()))
        subprocess.run([python, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-c", str(constraints),
                        "-e", f"{ROOT}[test]"], check=True)
        return subprocess.run([python, "-m", "pip", "freeze", "--exclude-editable"], check=True,
                              capture_output=True, text=True).stdout


def repin(recipe: Path, lock: dict[str, str]) -> None:
    """Rewrite each ``name==version`` line of a recipe to the locked version."""
    lines = []
    for line in recipe.read_text().splitlines(keepends=True):
        match = PIN.match(line.rstrip("\n"))
        if match and normalise(match.group(2)) in lock:
            indent, name, _, tail = match.groups()
            line = f"{indent}{name}=={lock[normalise(name)]}{tail}\n"
        lines.append(line)
    recipe.write_text("".join(lines))


def main() -> int:
    frozen = sorted(LOCAL_LABEL.sub("", line) for line in freeze().splitlines()
                    if "==" in line and not line.startswith("#"))
    LOCK.write_text(HEADER + "\n".join(frozen) + "\n")
    lock = read_lock()
    for recipe in sorted(RECIPES.glob("*.def")):
        repin(recipe, lock)
    print(f"{LOCK.name}: {len(lock)} pins; recipes repinned. Review with git diff, then commit both.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
