"""The ``bwrap`` runtime: a SIF image run with squashfuse and bubblewrap, no Apptainer.

The image's primary squashfs partition is mounted read-only in place
(``squashfuse -o offset=N``) inside the server folder; bubblewrap then builds the
container's root as a tmpfs with each top-level entry of the image bound back
read-only (Debian's bubblewrap has no overlays and cannot create a bind target
inside a read-only root). The isolation matches ``apptainer exec --containall
--cleanenv --no-home``: read-only image, private tmpfs /tmp, /run and $HOME, new
PID/IPC/UTS namespaces, a cleared environment, only the requested binds, and
``--die-with-parent``. The mount is undone on close, on error, and by
``dacstyle cleanup`` after a host crash.

The sandbox holds against a root host too: every capability is dropped, the
payload runs as uid/gid 65534 in its own user namespace (which it cannot nest),
every mount is ``nosuid,nodev`` (bwrap's default for binds and tmpfs), /tmp,
/run and $HOME are tmpfs of ``sandbox_tmpfs_size`` bytes, and processes,
data memory and file size are limited (:mod:`dacstyle.runtimes.limits`). A
server has a private network namespace with only a loopback (no route out)
unless it listens on TCP or ``sandbox_network`` is set; its socket is in the
bound server folder.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from ..config import config
from ..errors import ContainerError, RuntimeUnavailableError
from .base import AGENT_DIR_INSIDE, SERVER_DIR_INSIDE, Bind, LaunchSpec, Runtime
from .limits import Limits, launcher_argv, make_cgroup, remove_cgroup
from .serverdir import unmount

__all__ = ["BwrapRuntime", "mount_image", "sandbox_argv"]

HOME_INSIDE = "/home/dacstyle"
_PRIVATE = ("proc", "dev", "tmp", "run", "home", "sys")  # never taken from the image
MIN_BWRAP = (0, 8)  # --size and --disable-userns
SANDBOX_UID = "65534"  # nobody: the payload's uid and gid inside its user namespace
_BASE_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
             "HOME": HOME_INSIDE}


@functools.lru_cache(maxsize=None)
def bwrap_version() -> tuple[int, ...]:
    """bubblewrap's version as numbers, (0,) when it is missing or says something else."""
    found = shutil.which("bwrap")
    try:
        text = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10).stdout if found else ""
    except (OSError, subprocess.TimeoutExpired):
        text = ""
    match = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(part) for part in match.groups(default="0")) if match else (0,)


def mount_image(image: Path, mountpoint: Path, timeout: float = 30.0) -> None:
    """Mount the SIF's primary squashfs partition read-only at ``mountpoint``."""
    from ..images.sif import verify_image

    sif = verify_image(image)
    mountpoint.mkdir(exist_ok=True)
    argv = ["squashfuse", "-o", f"offset={sif.squashfs_offset}", str(image), str(mountpoint)]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        unmount(str(mountpoint))
        raise ContainerError(f"squashfuse did not mount {image} within {timeout:.0f} s") from exc
    if done.returncode != 0 or not os.path.ismount(mountpoint):
        raise ContainerError(f"squashfuse could not mount {image}: {done.stderr.strip() or 'no mount appeared'}")


def _mirror(root: Path, inside: str, targets: list[str], expanded: list[str]) -> list[str]:
    """bwrap args that show ``root`` at ``inside`` read-only, with room for ``targets``.

    A directory on the way to a target is a tmpfs (listed in ``expanded``, to be
    made read-only after the binds) whose entries are bound back one by one, so
    that bwrap can create the target itself.
    """
    args: list[str] = []
    for entry in sorted(os.listdir(root)):
        if inside == "/" and entry in _PRIVATE:
            continue
        src, dst = root / entry, f"{inside.rstrip('/')}/{entry}"
        below = [t for t in targets if t == dst or t.startswith(dst + "/")]
        if src.is_symlink():
            args += ["--symlink", os.readlink(src), dst]
        elif below and src.is_dir() and not all(t == dst for t in below):
            expanded.append(dst)
            args += ["--tmpfs", dst, *_mirror(src, dst, below, expanded)]
        elif not (below and all(t == dst for t in below)):
            args += ["--ro-bind", str(src), dst]
    return args


def _bind_back(rootfs: Path) -> list[str]:
    """What the image itself holds under /home and /tmp, bound back read-only over the private tmpfs.

    A packed environment keeps its interpreter at the host path, which for pyenv
    or conda is often under $HOME (or /tmp in tests): hiding it would break the image.
    """
    args: list[str] = []
    for top in ("home", "tmp"):
        folder = rootfs / top
        for entry in sorted(os.listdir(folder)) if folder.is_dir() else []:
            src, dst = folder / entry, f"/{top}/{entry}"
            if dst != HOME_INSIDE:
                args += ["--symlink", os.readlink(src), dst] if src.is_symlink() else ["--ro-bind", str(src), dst]
    return args


def sandbox_argv(rootfs: Path, binds: list[Bind], env: dict[str, str], gpu: bool = False, *,
                 network: bool = True, limits: Limits | None = None) -> list[str]:
    """The argv (up to, not including, the command) for an image mounted at ``rootfs``.

    ``network`` False gives a private network namespace; ``limits`` defaults to the settings.
    """
    expanded: list[str] = []
    sized = ["--size", str(config.sandbox_tmpfs_size)]
    isolation = ["--unshare-user", "--uid", SANDBOX_UID, "--gid", SANDBOX_UID, "--disable-userns", "--cap-drop", "ALL",
                 "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
                 *([] if network else ["--unshare-net"])]
    argv = [*launcher_argv(limits or Limits.from_config()), "bwrap", "--die-with-parent", *isolation,
            "--new-session", "--hostname", "dacstyle", "--clearenv", "--tmpfs", "/",
            *_mirror(rootfs, "/", [b.dst for b in binds], expanded),
            "--proc", "/proc", "--dev", "/dev", *sized, "--tmpfs", "/tmp", *sized, "--tmpfs", "/run",
            *sized, "--tmpfs", HOME_INSIDE, *_bind_back(rootfs)]
    if gpu:
        for device in sorted(glob.glob("/dev/nvidia*")):
            argv += ["--dev-bind", device, device]
    for bind in binds:
        argv += ["--ro-bind" if bind.readonly else "--bind", bind.src, bind.dst]
    for key, value in sorted({**_BASE_ENV, **env}.items()):
        argv += ["--setenv", key, value]
    for directory in reversed(expanded):
        argv += ["--remount-ro", directory]
    argv += ["--chdir", HOME_INSIDE, "--remount-ro", "/"]
    return argv


class BwrapRuntime(Runtime):
    """Run the image under bubblewrap after mounting it with squashfuse."""

    name = "bwrap"

    def __init__(self) -> None:
        self._cgroups: dict[Path, Path] = {}

    @classmethod
    def available(cls) -> bool:
        tools = all(shutil.which(tool) for tool in ("bwrap", "squashfuse", "fusermount3")) and os.path.exists("/dev/fuse")
        return tools and bwrap_version() >= MIN_BWRAP

    @classmethod
    def unavailable_reason(cls) -> str:
        """Which tool is missing, or that bwrap is too old for the sandbox's flags."""
        version = bwrap_version()
        if shutil.which("bwrap") and version < MIN_BWRAP:
            return (f"runtime 'bwrap' needs bubblewrap {'.'.join(map(str, MIN_BWRAP))} or newer (--size, "
                    f"--disable-userns); this one is {'.'.join(map(str, version))}")
        return "runtime 'bwrap' needs bwrap, squashfuse, fusermount3 and /dev/fuse"

    def _rootfs(self, spec: LaunchSpec) -> Path:
        return spec.server_dir.path / "rootfs"

    def _cgroup(self, spec: LaunchSpec) -> Path | None:
        """The run's pids cgroup when :meth:`prepare` could make one."""
        return self._cgroups.get(spec.server_dir.path)

    def _binds(self, spec: LaunchSpec) -> list[Bind]:
        binds = [Bind(str(spec.server_dir.path / "host"), SERVER_DIR_INSIDE, readonly=False)]
        if spec.server_dir.has_agent:
            binds.append(Bind(str(spec.server_dir.path / "agent"), AGENT_DIR_INSIDE, readonly=False))
        return binds + list(spec.binds)

    def prepare(self, spec: LaunchSpec) -> list[Callable[[], None]]:
        if not self.available():
            raise RuntimeUnavailableError(self.unavailable_reason())
        if spec.image is None:
            raise ContainerError("runtime 'bwrap' needs an image")
        rootfs = self._rootfs(spec)
        spec.server_dir.record(mounts=[str(rootfs)])  # first, so cleanup finds a mount left by a crash
        try:
            mount_image(Path(spec.image), rootfs)
        except BaseException:
            unmount(str(rootfs))
            raise
        cgroup = make_cgroup(f"dacstyle-{spec.server_dir.path.name}", config.sandbox_max_processes)
        if cgroup is None:
            return [lambda: unmount(str(rootfs))]
        self._cgroups[spec.server_dir.path] = cgroup
        spec.server_dir.record(cgroups=[str(cgroup)])  # the reaper and cleanup remove it after a crash

        def undo_cgroup() -> None:
            remove_cgroup(cgroup)
            self._cgroups.pop(spec.server_dir.path, None)
        return [lambda: unmount(str(rootfs)), undo_cgroup]

    def exec_argv(self, spec: LaunchSpec, command: list[str]) -> list[str]:
        return self._argv(spec, command, network=spec.network)

    def _argv(self, spec: LaunchSpec, command: list[str], network: bool) -> list[str]:
        limits = Limits.from_config(self._cgroup(spec))
        sandbox = sandbox_argv(self._rootfs(spec), self._binds(spec), spec.env, spec.gpu, network=network, limits=limits)
        return [*sandbox, "--", *command]

    def host_env(self, spec: LaunchSpec) -> dict[str, str]:
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
