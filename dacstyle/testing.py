"""Public test doubles: a probe object to serve remotely, for tests and debugging.

``probe_benchmark()`` is a :class:`~dacstyle.benchmarks.Benchmark` whose server
object can echo values, sleep, raise, report where it runs and crash, so the
channel's behaviour (timeouts, errors, isolation) can be checked through any
runtime, including inside a container.
"""

from __future__ import annotations

import builtins
import os
import time
from pathlib import Path
from typing import Any

from .benchmarks.spec import Benchmark

__all__ = ["Probe", "probe_benchmark", "PROBE_METHODS"]

PROBE_METHODS = ["echo", "sleep", "fail", "crash", "whereami", "read_file", "list_dir", "environment"]


class Probe:
    """A server-side object that reports on and misbehaves inside its server."""

    def __init__(self, tag: str = "") -> None:
        self.tag = tag

    def echo(self, value: Any) -> Any:
        """Return ``value`` unchanged (a codec round trip through the channel)."""
        return value

    def sleep(self, seconds: float) -> float:
        """Block for ``seconds`` (a hung call, for timeout tests)."""
        time.sleep(seconds)
        return seconds

    def fail(self, type_name: str, message: str) -> None:
        """Raise the builtin exception called ``type_name``."""
        raise getattr(builtins, type_name)(message)

    def crash(self, code: int = 3) -> None:
        """End the server process at once, as a segfault or OOM kill would."""
        os._exit(code)

    def whereami(self) -> dict[str, Any]:
        """Pid, uid, cwd, hostname and tag of the server."""
        return {"pid": os.getpid(), "ppid": os.getppid(), "uid": os.getuid(), "cwd": os.getcwd(),
                "hostname": os.uname().nodename, "tag": self.tag}

    def read_file(self, path: str) -> str | None:
        """The text of ``path`` as the server sees it, or None when it cannot be read."""
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return None

    def list_dir(self, path: str) -> list[str] | None:
        """The entries of ``path`` as the server sees it, or None when it does not exist."""
        try:
            return sorted(os.listdir(path))
        except OSError:
            return None

    def environment(self) -> dict[str, str]:
        """The server's environment variables."""
        return dict(os.environ)


def probe_benchmark(tag: str = "") -> Benchmark:
    """A benchmark spec that serves a :class:`Probe`."""
    return Benchmark(name="probe", entry_point="dacstyle.testing:Probe", config={"tag": tag}, methods=PROBE_METHODS)
