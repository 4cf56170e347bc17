"""What host and server agree on: the protocol version, names and the ready line."""

from __future__ import annotations

import platform
from typing import Any

__all__ = ["PROTOCOL_VERSION", "CONTROL_OBJECT", "READY_PREFIX", "versions"]

PROTOCOL_VERSION = 1
"""Bumped whenever a message, a tagged codec form or a control method changes."""

CONTROL_OBJECT = "dacstyle.control"
"""The Pyro5 object id of the server's control object (hello, create, release, shutdown)."""

READY_PREFIX = "DACSTYLE-READY "
"""The server writes this prefix plus a JSON object to stdout once its sockets listen."""


def versions() -> dict[str, Any]:
    """The versions one side runs: protocol, dacstyle, Python, numpy, gymnasium, Pyro5."""
    import gymnasium
    import numpy
    import Pyro5

    import dacstyle

    return {
        "protocol": PROTOCOL_VERSION,
        "dacstyle": dacstyle.__version__,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "gymnasium": gymnasium.__version__,
        "pyro5": Pyro5.__version__,
    }
