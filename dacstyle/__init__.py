"""dacstyle: benchmarks inside Apptainer/Singularity images, used as local Python objects.

The public surface is listed once, in ``__all__``; names are imported on first use
so that ``import dacstyle`` stays cheap inside a container's server.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "RemoteRunner": "dacstyle.container.client.runner",
    "RunResults": "dacstyle.results",
    "RemoteEnvironment": "dacstyle.container.client.proxies",
    "RemoteObject": "dacstyle.container.client.proxies",
    "Benchmark": "dacstyle.benchmarks.spec",
    "Config": "dacstyle.config",
    "config": "dacstyle.config",
    "DacstyleError": "dacstyle.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dacstyle' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
