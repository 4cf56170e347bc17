"""Runtimes: one interface (:class:`Runtime`), several backends, one kind of :class:`Handle` per placement.

``get_runtime("auto")`` picks apptainer > singularity > bwrap > process and logs
the choice.
"""

from __future__ import annotations

import logging

from ..errors import RuntimeUnavailableError
from .apptainer import ApptainerRuntime, SingularityRuntime
from .base import PIPE, Bind, LaunchSpec, Runtime
from .bwrap import BwrapRuntime
from .handle import Handle, LocalProcess
from .process import ProcessRuntime

__all__ = ["Bind", "Handle", "LaunchSpec", "LocalProcess", "PIPE", "Runtime", "RUNTIMES", "get_runtime"]

log = logging.getLogger(__name__)

RUNTIMES: dict[str, type[Runtime]] = {
    "apptainer": ApptainerRuntime,
    "singularity": SingularityRuntime,
    "bwrap": BwrapRuntime,
    "process": ProcessRuntime,
}
"""Known runtimes by name, in order of preference for ``auto``."""


def get_runtime(name: str | Runtime = "auto") -> Runtime:
    """The runtime called ``name``; ``auto`` picks the best one installed here."""
    if isinstance(name, Runtime):
        return name
    if name == "auto":
        for candidate, cls in RUNTIMES.items():
            if cls.available():
                log.info("runtime auto: chose %s", candidate)
                return cls()
        raise RuntimeUnavailableError("no runtime is available")  # process always is
    cls = RUNTIMES.get(name)
    if cls is None:
        raise RuntimeUnavailableError(f"unknown runtime {name!r}; known: auto, {', '.join(RUNTIMES)}")
    if not cls.available():
        raise RuntimeUnavailableError(cls.unavailable_reason())
    return cls()
