"""The one configuration object of dacstyle.

Every setting has a default, can be overridden by a ``DACSTYLE_<NAME>`` environment
variable, and can be changed on an instance; unknown names are rejected.
A bad ``DACSTYLE_*`` value does not fail at import: reading that setting raises
a :class:`~dacstyle.errors.ConfigError` naming the variable.
``dacstyle config`` prints the effective values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import platformdirs

from .errors import ConfigError

__all__ = ["Config", "config"]


def _bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = str(text).strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("not a boolean (use 1/0, true/false, yes/no or on/off)")


def _positive(kind: type) -> Callable[[Any], Any]:
    def convert(value: Any) -> Any:
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"not {'an integer' if kind is int else 'a number'}") from None
        if not number > 0 or number == float("inf"):
            raise ValueError("must be a positive finite number")
        return number

    convert.__name__ = kind.__name__
    return convert


def _choice(*names: str) -> Callable[[Any], str]:
    def convert(value: Any) -> str:
        if value not in names:
            raise ValueError(f"use one of {', '.join(names)}")
        return str(value)

    return convert


class _Invalid:
    """A bad ``DACSTYLE_*`` value, kept until the setting is read."""

    __slots__ = ("text", "message")

    def __init__(self, text: str, message: str) -> None:
        self.text, self.message = text, message

    def __str__(self) -> str:
        return f"INVALID {self.text!r}"


def _half_the_memory() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2


# name -> (type converter, default, help)
_SETTINGS: dict[str, tuple[Any, Any, str]] = {
    "runtime": (_choice("auto", "apptainer", "singularity", "bwrap", "process"), "auto",
                "container runtime: auto, apptainer, singularity, bwrap or process"),
    "cache": (Path, None, "image cache folder (default: the platform's user cache folder)"),
    "runs": (Path, Path("runs"), "folder where run folders (episode logs, manifests) are written"),
    "call_timeout": (_positive(float), 60.0, "seconds a remote call may take before CallTimeoutError"),
    "start_timeout": (_positive(float), 60.0, "seconds a server may take to become ready"),
    "max_message_size": (_positive(int), 256 * 1024 * 1024, "largest frame in bytes the server accepts"),
    "catalogue": (Path, None, "a JSON catalogue file that overrides bundled image entries"),
    "shared_cache": (_bool, False, "the cache folder is shared by a group: allow group write, re-hash images on every use"),
    "offline": (_bool, False, "use only cached images, never the network"),
    "progress": (_choice("auto", "always", "never"), "auto",
                 "download progress bar: auto (only on a terminal), always, never"),
    "max_submission_bytes": (_positive(int), 100 * 1024**2, "largest competition submission file the grader reads"),
    "sandbox_tmpfs_size": (_positive(int), 2 * 1024**3, "bytes of each tmpfs in a bwrap container (/tmp, /run, $HOME)"),
    "sandbox_max_processes": (_positive(int), 4096, "processes and threads a container may hold (a pids cgroup "
                              "where delegated, else RLIMIT_NPROC, which also counts the user's own)"),
    "sandbox_max_memory": (_positive(int), _half_the_memory(), "bytes of data each container process may map "
                           "(RLIMIT_DATA; default half the RAM)"),
    "sandbox_max_file_size": (_positive(int), 8 * 1024**3, "largest file a container process may write (RLIMIT_FSIZE)"),
    "sandbox_network": (_bool, False, "let benchmark servers reach the network (off: a private, empty network)"),
    "shared_dir": (Path, None, "a folder every Slurm node sees (yours, not others'): Slurm jobs' private folders, "
                   "published addresses and logs"),
    "heartbeat_timeout": (_positive(float), 120.0, "seconds without a call from its host after which a Slurm-placed "
                          "server ends its job (the host calls every third of it)"),
    "pending_timeout": (_positive(float), 600.0, "seconds a Slurm job may stay pending before the start fails "
                        "(and the job is cancelled)"),
    "stop_before_limit": (_positive(float), 30.0, "seconds before its Slurm time limit a server stops cleanly"),
}


class Config:
    """Settings with defaults, ``DACSTYLE_*`` environment overrides and typo checks."""

    __slots__ = tuple(_SETTINGS)

    # the settings, for readers and type checkers (values live in the slots)
    runtime: str
    cache: Path | None
    runs: Path
    call_timeout: float
    start_timeout: float
    max_message_size: int
    catalogue: Path | None
    shared_cache: bool
    offline: bool
    progress: str
    max_submission_bytes: int
    sandbox_tmpfs_size: int
    sandbox_max_processes: int
    sandbox_max_memory: int
    sandbox_max_file_size: int
    sandbox_network: bool
    shared_dir: Path | None
    heartbeat_timeout: float
    pending_timeout: float
    stop_before_limit: float

    def __init__(self, use_environment: bool = True, **overrides: Any) -> None:
        self.reset(use_environment)
        for name, value in overrides.items():
            setattr(self, name, value)

    def reset(self, use_environment: bool = True) -> None:
        """Restore defaults, then apply ``DACSTYLE_<NAME>`` variables if asked."""
        for name, (convert, default, _) in _SETTINGS.items():
            value = default
            text = os.environ.get(f"DACSTYLE_{name.upper()}") if use_environment else None
            if text is not None:
                try:
                    value = convert(text)
                except ValueError as exc:  # reported when the setting is read, not at import
                    value = _Invalid(text, f"DACSTYLE_{name.upper()}={text!r}: {exc}")
            object.__setattr__(self, name, value)

    def __getattribute__(self, name: str) -> Any:
        value = object.__getattribute__(self, name)
        if value.__class__ is _Invalid:
            raise ConfigError(value.message)
        return value

    def check(self) -> None:
        """Raise :class:`ConfigError` for the first setting whose ``DACSTYLE_*`` value is invalid."""
        for name in _SETTINGS:
            getattr(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in _SETTINGS:
            raise ConfigError(f"unknown setting {name!r}; known: {', '.join(_SETTINGS)}")
        if value is not None:
            try:
                value = _SETTINGS[name][0](value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{name}={value!r}: {exc}") from exc
        object.__setattr__(self, name, value)

    @property
    def cache_dir(self) -> Path:
        """The image cache folder, resolved."""
        return Path(self.cache) if self.cache else Path(platformdirs.user_cache_dir("dacstyle")) / "images"

    def as_dict(self) -> dict[str, Any]:
        """The effective settings, for printing and run manifests."""
        return {name: getattr(self, name) for name in _SETTINGS}

    def describe(self) -> str:
        """One line per setting: name, value, environment variable and help."""
        lines = []
        for name, (_, _, help_text) in _SETTINGS.items():
            value = object.__getattribute__(self, name)
            lines.append(f"{name:<17} = {value!s:<24} DACSTYLE_{name.upper():<17} {help_text}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"Config({', '.join(f'{k}={v!r}' for k, v in self.as_dict().items())})"


config = Config()
"""The process-wide settings; tests call ``config.reset(False)``."""
