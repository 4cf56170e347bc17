"""Collect the files of the running Python environment, at their host paths.

An :class:`EnvTree` maps absolute image paths to host files, symlinks, small
generated files and directories. :func:`collect_environment` fills one with
the interpreter, its standard library, every package folder the interpreter
imports from (a virtualenv's, ``--system-site-packages``, the user site, a conda
prefix, ``.pth`` additions; editable installs as their source files) and every
shared library those link, following symlinks component by component so that
``/lib64/ld-linux...`` and merged-/usr links exist in the image as on the host.
Files keep their host paths (interpreters built with ``--enable-shared`` find
libpython by an absolute rpath); ``python3`` in the image runs a small
venv-like launcher whose ``.pth`` lists the host's package folders in order.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib.metadata as md
import json
import os
import platform
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

from dacstyle.errors import ImageError

__all__ = ["Entry", "EnvTree", "LAUNCHER", "collect_environment", "import_path", "package_dirs",
           "editable_sources", "site_inside"]

LAUNCHER = "/opt/dacstyle/env"
"""A venv-like prefix in packed images: ``python3`` runs it, it imports the host's package folders."""

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

    def materialize(self, root: Path, progress: bool = False) -> None:
        """Lay the tree out under ``root`` for mksquashfs: host files hard-linked where they can be.

        A link costs nothing and lets mksquashfs read with all cores; a file on another
        file system, not ours to link, or whose mode the image changes is copied.
        """
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(self._entries), unit="file", desc="collecting", file=sys.stderr)
        dirs = []
        for entry in self.entries():
            if bar is not None:
                bar.update()
            dest = os.path.join(root, entry.path.lstrip("/"))
            if entry.kind == "dir":
                os.makedirs(dest, exist_ok=True)
                dirs.append((dest, entry))
                continue
            os.makedirs(os.path.dirname(dest), exist_ok=True)  # a folder no entry names (0755)
            if entry.kind == "symlink":
                os.symlink(entry.target, dest)
            elif entry.data is not None:
                with open(dest, "wb") as handle:
                    handle.write(entry.data)
                os.chmod(dest, entry.mode)
            else:
                _link_or_copy(entry, dest)
        for dest, entry in reversed(dirs):  # last, so that a read-only folder was still writable above
            os.chmod(dest, entry.mode)
            os.utime(dest, (entry.mtime, entry.mtime), follow_symlinks=False)
        if bar is not None:
            bar.close()

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


def _link_or_copy(entry: Entry, dest: str) -> None:
    assert entry.source is not None
    try:
        if stat.S_IMODE(os.stat(entry.source).st_mode) != entry.mode:
            raise PermissionError("the image needs another mode")  # a link would change the host file
        os.link(entry.source, dest)
    except OSError:
        shutil.copy2(entry.source, dest)
        os.chmod(dest, entry.mode)


def import_path(python: str | None = None) -> tuple[str, ...]:
    """The folders ``python`` imports from at start-up, in order (no cwd, no PYTHONPATH).

    Asked of the interpreter itself, so a virtualenv, ``--system-site-packages``, the
    user site, conda and ``.pth`` additions all come out as Python sees them.
    """
    python = python or sys.executable
    return _import_path(python, os.environ.get("HOME", ""), os.environ.get("PYTHONUSERBASE", ""))


@functools.lru_cache(maxsize=4)
def _import_path(python: str, *_environment: str) -> tuple[str, ...]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # PYTHONUSERBASE etc. still count
    try:
        out = subprocess.run([python, "-c", "import json, sys; print(json.dumps(sys.path[1:]))"], env=env,
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ImageError(f"cannot ask {python} for its import path: {exc}") from exc
    return tuple(os.path.realpath(p) for p in json.loads(out) if os.path.isdir(p))


def package_dirs(python: str | None = None) -> list[str]:
    """The import-path folders that hold installed code (everything but the standard library)."""
    stdlib = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("stdlib", "platstdlib")}
    found: list[str] = []
    for path in import_path(python):
        dynload = os.path.basename(path) == "lib-dynload" and os.path.dirname(path) in stdlib
        if path in stdlib or dynload or path in found:
            continue  # the standard library and lib-dynload are packed on their own
        found.append(path)
    return found


def editable_sources() -> dict[str, str]:
    """``{module name: source folder}`` of the editable installs (PEP 660 finders) of this environment."""
    found: dict[str, str] = {}
    for name, module in list(sys.modules.items()):
        if name.startswith("__editable__") and isinstance(getattr(module, "MAPPING", None), dict):
            found.update({str(k): str(v) for k, v in module.MAPPING.items()})
    return found


def _is_site(path: str) -> bool:
    return os.path.basename(path) in ("site-packages", "dist-packages")


def _importable(name: str, path: str) -> bool:
    """Whether an entry of a plain (non-site) import folder is something Python imports."""
    if os.path.isdir(path):
        return os.path.exists(os.path.join(path, "__init__.py")) or name.endswith((".dist-info", ".egg-info"))
    return name.endswith((".py", ".so")) and not name.startswith("__editable__")


def _skip_installed(name: str) -> bool:
    return name.endswith(".pth") or name.startswith("__editable__") or name == "__pycache__"


def site_inside(index: int) -> str:
    """Where the ``index``-th package folder of the import path lives in a packed image."""
    return f"{LAUNCHER}/site/{index}"


def _add_packages(tree: EnvTree, dirs: list[str]) -> None:
    """Every installed package of ``dirs`` (relocated, see :func:`site_inside`), editable ones as sources.

    Package folders move to fixed image paths because the host's often lie under
    $HOME or /tmp (a virtualenv), which container runtimes hide behind an empty tmpfs.
    """
    for index, path in enumerate(dirs):
        dest = site_inside(index)
        if _is_site(path):
            tree.add_tree(path, dest, skip_file=_skip_installed)
            continue
        tree.add_dir(dest)
        for name in sorted(os.listdir(path)):
            host = os.path.join(path, name)
            if not _importable(name, host):
                continue
            if os.path.isdir(host):
                tree.add_tree(host, f"{dest}/{name}", skip={"__pycache__"})
            else:
                tree._add_real(host, f"{dest}/{name}")
    for module, source in sorted(editable_sources().items()):
        if os.path.isdir(source):
            tree.add_tree(source, os.path.join(site_inside(0), *module.split(".")), skip={"__pycache__"})


def launcher_files(tree: EnvTree, dirs: list[str]) -> None:
    """A venv-like prefix at LAUNCHER whose interpreter imports the packed package folders in order.

    ``python3`` on the image's PATH runs it, so a virtualenv's, the user site's and
    a conda prefix's packages are found whichever interpreter the host used.
    """
    version = "{}.{}".format(*sys.version_info[:2])
    tree.add_bytes(f"{LAUNCHER}/pyvenv.cfg", (f"home = {os.path.dirname(tree.interpreter)}\n"
                                              "include-system-site-packages = false\n"
                                              f"version = {platform.python_version()}\n").encode())
    tree.add_symlink(f"{LAUNCHER}/bin/python3", tree.interpreter)
    tree.add_symlink(f"{LAUNCHER}/bin/python", "python3")
    lines = "".join(f"# host: {d}\n{site_inside(i)}\n" for i, d in enumerate(dirs))
    tree.add_bytes(f"{LAUNCHER}/lib/python{version}/site-packages/dacstyle-environment.pth", lines.encode())
    wrapper = f'#!/bin/sh\nexec {LAUNCHER}/bin/python3 "$@"\n'.encode()
    for path in ("/usr/bin/python3", "/usr/local/bin/python3", "/usr/bin/python", "/usr/local/bin/python"):
        if path != tree.interpreter:
            tree.add_bytes(path, wrapper, mode=0o755)


def _ldd(paths: list[str]) -> set[str]:
    """Absolute paths of the shared libraries (and the loader) that ``paths`` link.

    ``ldd`` loads each file, so the files are split over one ``ldd`` per core.
    """
    workers = max(1, min(os.cpu_count() or 1, 8))
    size = max(1, -(-len(paths) // workers))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        outputs = list(pool.map(_ldd_batch, [paths[i:i + size] for i in range(0, len(paths), size)]))
    found: set[str] = set()
    for line in "\n".join(outputs).splitlines():
        match = re.match(r"(?:\S+ => )?(/\S+) \(0x", line.strip())
        if match:
            found.add(match.group(1))
    return found


def _ldd_batch(batch: list[str]) -> str:
    try:
        return subprocess.run(["ldd", *batch], capture_output=True, text=True,
                              env={**os.environ, "LC_ALL": "C"}, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ImageError(f"ldd failed: {exc}") from exc


def collect_environment() -> EnvTree:
    """The running interpreter and every package it imports, at host paths (see the module docstring)."""
    tree = EnvTree()
    exe = os.path.realpath(sys.executable)
    tree.interpreter = exe
    tree.add_path(exe)  # not sys.executable: a venv's bin/python (under $HOME or /tmp) is replaced by LAUNCHER
    stdlib = sysconfig.get_paths()["stdlib"]
    build_config = {n for n in os.listdir(stdlib) if n.startswith("config-")}  # libpython.a
    tree.add_tree(stdlib, skip=STDLIB_SKIP | build_config,
                  skip_file=lambda name: name.startswith(STDLIB_SKIP_FILES))
    dirs = package_dirs()
    _add_packages(tree, dirs)
    tree.distributions = sorted({f"{d.metadata['Name']}=={d.version}" for d in md.distributions(path=dirs)})
    # a POSIX shell and the basic tools: Apptainer's action scripts and TaskEnv's shell actions use them
    tools = [tree.add_path(path) for path in SHELL_TOOLS if os.path.exists(path)]
    packed = tuple(os.path.join(d, "") for d in [*dirs, *editable_sources().values()])
    for lib in sorted(_ldd([exe, *tools, *tree.shared_objects()])):
        if not lib.startswith(packed):  # a wheel's bundled library moved with its package ($ORIGIN rpath)
            tree.add_path(lib)
    launcher_files(tree, dirs)
    for d in EMPTY_DIRS:
        tree.add_dir(d)
    tree.add_dir("/tmp", 0o1777)
    tree.add_dir("/", 0o755)
    tree.add_bytes("/etc/passwd", PASSWD.encode())
    tree.add_bytes("/etc/group", GROUP.encode())
    return tree
