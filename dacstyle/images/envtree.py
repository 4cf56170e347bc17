"""Collect the files of the running Python environment, at their host paths.

An :class:`EnvTree` maps absolute image paths to host files, symlinks, small
generated files and directories. :func:`collect_environment` fills one with
the interpreter, its standard library, the site-packages dacstyle needs (the
closure of its requirements), dacstyle itself and every shared library those
link, following symlinks component by component so that ``/lib64/ld-linux...``
and merged-/usr links exist in the image exactly as on the host.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import stat
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from dacstyle.errors import ImageError

__all__ = ["Entry", "EnvTree", "collect_environment", "requirement_closure"]

STDLIB_SKIP = {"test", "idlelib", "tkinter", "ensurepip", "turtledemo", "site-packages",
               "dist-packages", "lib2to3"}
STDLIB_SKIP_FILES = ("_tkinter", "_test", "_xxtest", "_ctypes_test", "xxlimited")
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
GROUP = "root:x:0:\nnobody:x:65534:\n"
SHELL_TOOLS = ("/bin/sh",) + tuple(f"/usr/bin/{name}" for name in (
    "ls", "cat", "head", "tail", "wc", "cp", "mv", "rm", "mkdir", "env", "grep", "sed", "sort", "uniq",
    "cut", "tr", "find", "du", "date", "sleep", "printf", "test", "true", "false", "hostname", "id"))
"""Host programs packed at their paths (with their libraries) when the host has them."""

EMPTY_DIRS = ["/tmp", "/home", "/run", "/proc", "/dev", "/sys", "/etc", "/run/dacstyle",
              "/.singularity.d/env"]


@dataclass
class Entry:
    """One image path: a host file (``source``), bytes (``data``), a symlink or a dir."""

    path: str
    kind: str  # "file", "symlink" or "dir"
    mode: int = 0o644
    mtime: float = 0.0
    source: str | None = None
    data: bytes | None = None
    target: str = ""


class EnvTree:
    """Image paths to pack; host symlinks on the way to a file are kept as symlinks."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self.interpreter = ""
        self.distributions: list[str] = []
        self._now = time.time()

    def entries(self) -> list[Entry]:
        """All entries, parents before children."""
        return [self._entries[p] for p in sorted(self._entries)]

    def total_bytes(self) -> int:
        return sum(os.stat(e.source).st_size for e in self._entries.values() if e.source)

    def shared_objects(self) -> list[str]:
        return [e.source for e in self._entries.values()
                if e.source and re.search(r"\.so(\.|$)", e.source)]

    def add_dir(self, path: str, mode: int | None = None) -> None:
        """Add a directory (mode 0755 unless given; a given mode overrides an earlier one)."""
        entry = self._entries.setdefault(path, Entry(path, "dir", 0o755, self._now))
        if mode is not None:
            entry.mode = mode

    def add_bytes(self, path: str, data: bytes, mode: int = 0o644) -> None:
        self._entries[path] = Entry(path, "file", mode, self._now, data=data)

    def add_symlink(self, path: str, target: str) -> None:
        self._entries[path] = Entry(path, "symlink", 0o777, self._now, target=target)

    def _add_real(self, path: str, image_path: str | None = None) -> None:
        st = os.stat(path)
        dest = image_path or path
        if stat.S_ISDIR(st.st_mode):
            self.add_dir(dest)
        elif stat.S_ISREG(st.st_mode):
            mode = stat.S_IMODE(st.st_mode) | 0o444
            if mode & 0o100:
                mode |= 0o111
            self._entries[dest] = Entry(dest, "file", mode, st.st_mtime, source=path)

    def resolve(self, path: str, _depth: int = 0) -> str:
        """The real host path of ``path``; each symlink met on the way is added."""
        if _depth > 40:
            raise ImageError(f"too many levels of symbolic links at {path}")
        parts = Path(os.path.abspath(path)).parts
        current = "/"
        for i, part in enumerate(parts[1:], start=1):
            nxt = os.path.join(current, part)
            if os.path.islink(nxt):
                target = os.readlink(nxt)
                self.add_symlink(nxt, target)
                rest = parts[i + 1:]
                return self.resolve(os.path.join(current, target, *rest), _depth + 1)
            current = nxt
        return os.path.normpath(current)

    def add_path(self, path: str) -> str:
        """Add a host file or empty dir (and the links leading to it); returns its real path."""
        real = self.resolve(path)
        if not os.path.exists(real):
            raise ImageError(f"{path}: does not exist on this host")
        self._add_real(real)
        return real

    def add_tree(self, root: str, dest: str | None = None, skip: set[str] = frozenset(),
                 skip_file=lambda name: False) -> None:
        """Add a host directory tree (to ``dest``, default its real path); symlinks kept."""
        real_root = self.resolve(root)
        base = dest or real_root
        for dirpath, dirnames, filenames in os.walk(real_root):
            rel = os.path.relpath(dirpath, real_root)
            here = base if rel == "." else os.path.join(base, rel)
            dirnames[:] = [d for d in dirnames if not (rel == "." and d in skip)]
            self.add_dir(here)
            for name in dirnames + filenames:
                host = os.path.join(dirpath, name)
                if os.path.islink(host):
                    self.add_symlink(os.path.join(here, name), os.readlink(host))
                elif name in filenames and not skip_file(name):
                    self._add_real(host, os.path.join(here, name))


def requirement_closure(root: str = "dacstyle") -> list[md.Distribution]:
    """The installed distributions ``root`` needs, transitively (markers evaluated)."""
    try:
        from packaging.requirements import Requirement
    except ImportError:  # pragma: no cover - packaging ships with pip/setuptools
        Requirement = None  # noqa: N806
    seen: dict[str, md.Distribution] = {}
    todo = [root]
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        seen[key] = dist
        for req in dist.requires or []:
            if Requirement is not None:
                r = Requirement(req)
                if r.marker is not None and not r.marker.evaluate({"extra": ""}):
                    continue
                todo.append(r.name)
            elif "extra ==" not in req:
                todo.append(re.match(r"[A-Za-z0-9._-]+", req).group(0))
    return list(seen.values())


def _dist_top_levels(dist: md.Distribution) -> set[str]:
    """Top-level names a distribution installed into its site directory (from RECORD)."""
    tops = set()
    for f in dist.files or []:
        first = f.parts[0]
        if first not in ("..", "") and not first.startswith("__editable__") \
                and not first.endswith(".pth"):
            tops.add(first)
    return tops


def _add_dacstyle(tree: EnvTree, site: str) -> None:
    """dacstyle as real files in site-packages (it is installed editable in development)."""
    import dacstyle
    import dacstyle.container

    pkg = os.path.dirname(os.path.realpath(dacstyle.__file__))
    tree.add_tree(pkg, os.path.join(site, "dacstyle"), skip={"container"})
    container = os.path.dirname(os.path.realpath(dacstyle.container.__file__))
    tree.add_tree(container, os.path.join(site, "dacstyle", "container"))
    for info in Path(site).glob("dacstyle-*.dist-info"):  # so importlib.metadata finds it
        tree.add_tree(str(info))


def _ldd(paths: list[str]) -> set[str]:
    """Absolute paths of the shared libraries (and the loader) that ``paths`` link."""
    found: set[str] = set()
    missing: list[str] = []
    for i in range(0, len(paths), 200):
        batch = paths[i:i + 200]
        try:
            out = subprocess.run(["ldd", *batch], capture_output=True, text=True,
                                 env={**os.environ, "LC_ALL": "C"}, timeout=120).stdout
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ImageError(f"ldd failed: {exc}") from exc
        for line in out.splitlines():
            line = line.strip()
            if "=> not found" in line:
                missing.append(line.split()[0])
                continue
            m = re.match(r"(?:\S+ => )?(/\S+) \(0x", line)
            if m:
                found.add(m.group(1))
    return found


def collect_environment(*, full_site_packages: bool = False) -> EnvTree:
    """Everything the running interpreter needs to import dacstyle, at host paths."""
    tree = EnvTree()
    exe = os.path.realpath(sys.executable)
    tree.interpreter = exe
    tree.add_path(sys.executable)
    tree.add_path(exe)
    stdlib = sysconfig.get_paths()["stdlib"]
    build_config = {n for n in os.listdir(stdlib) if n.startswith("config-")}  # libpython.a
    tree.add_tree(stdlib, skip=STDLIB_SKIP | build_config,
                  skip_file=lambda name: name.startswith(STDLIB_SKIP_FILES))
    site = os.path.realpath(sysconfig.get_paths()["purelib"])
    editable = lambda name: name.endswith(".pth") or name.startswith("__editable__")  # noqa: E731
    if full_site_packages:
        tree.add_tree(site, skip={"dacstyle"}, skip_file=editable)
    dists = requirement_closure("dacstyle")
    for dist in sorted(dists, key=lambda d: d.metadata["Name"].lower()):
        tree.distributions.append(f"{dist.metadata['Name']}=={dist.version}")
        if full_site_packages or dist.metadata["Name"].lower() == "dacstyle":
            continue
        root = str(dist.locate_file(""))
        for top in sorted(_dist_top_levels(dist)):
            host = os.path.join(root, top)
            if top == "dacstyle" or not os.path.lexists(host):
                continue
            if os.path.isdir(host) and not os.path.islink(host):
                tree.add_tree(host, skip_file=editable)
            elif not editable(top):
                tree.add_path(host)
    _add_dacstyle(tree, site)
    # a POSIX shell and the basic tools: Apptainer's action scripts and TaskEnv's shell actions use them
    tools = [tree.add_path(path) for path in SHELL_TOOLS if os.path.exists(path)]
    for lib in sorted(_ldd([exe, *tools, *tree.shared_objects()])):
        tree.add_path(lib)
    for path in ("/usr/bin/python3", "/usr/local/bin/python3"):
        tree.add_symlink(path, exe)
    for d in EMPTY_DIRS:
        tree.add_dir(d)
    tree.add_dir("/tmp", 0o1777)
    tree.add_dir("/", 0o755)
    tree.add_bytes("/etc/passwd", PASSWD.encode())
    tree.add_bytes("/etc/group", GROUP.encode())
    return tree
