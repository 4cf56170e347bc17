"""What host and server agree on: the protocol version, names, the ready line and the wire form.

Both sides speak Pyro5's JSON serializer with its class hooks removed
(:class:`PlainJson`): a ``{"__class__": ...}`` dict stays a dict, so the wire
yields plain data and only :mod:`dacstyle.codec` rebuilds values from it.
"""

from __future__ import annotations

import json
import platform
from typing import Any

from Pyro5 import errors as pyro_errors
from Pyro5 import protocol, serializers

from dacstyle.errors import ProtocolMismatchError

__all__ = [
    "PROTOCOL_VERSION",
    "CONTROL_OBJECT",
    "READY_PREFIX",
    "PlainJson",
    "GuardedMessage",
    "harden_pyro5",
    "versions",
    "check_versions",
]

PROTOCOL_VERSION = 2
"""Bumped whenever a message, a tagged codec form or a control method changes."""

CONTROL_OBJECT = "dacstyle.control"
"""The Pyro5 object id of the server's control object (hello, create, release, shutdown)."""

READY_PREFIX = "DACSTYLE-READY "
"""The server writes this prefix plus a JSON object to stdout once its sockets listen."""


class PlainJson(serializers.JsonSerializer):
    """Pyro5's JSON serializer minus its class hooks: frames decode to plain data only.

    Pyro5 turns a ``__class__`` dict into a live object (a ``Proxy`` that connects
    where the sender says, a URI, a daemon). Here the one thing rebuilt is the error
    record Pyro5 itself sends for a failed dispatch, and only as a Pyro5 error.
    """

    def loads(self, data: Any) -> Any:
        tree = json.loads(self._convertToBytes(data).decode("utf-8"))
        return _pyro_error(tree) if isinstance(tree, dict) and tree.get("__exception__") is True else tree

    def loadsCall(self, data: Any) -> tuple[Any, Any, Any, Any]:
        call = json.loads(self._convertToBytes(data).decode("utf-8"))
        return call["object"], call["method"], call["params"], call["kwargs"]


def _pyro_error(record: dict[str, Any]) -> pyro_errors.PyroError:
    """A dispatch error the other side's Pyro5 sent, as a Pyro5 error (never another type)."""
    name = str(record.get("__class__", ""))
    args = record.get("args")
    text = "; ".join(str(a) for a in args) if isinstance(args, list) else ""
    cls = getattr(pyro_errors, name[len("Pyro5.errors."):], None) if name.startswith("Pyro5.errors.") else None
    if isinstance(cls, type) and issubclass(cls, pyro_errors.PyroError):
        return cls(text)
    return pyro_errors.PyroError(f"{name}: {text}")


class GuardedMessage(protocol.ReceivingMessage):
    """A received frame whose header is checked before its payload is read or inflated.

    Pyro5 inflates a compressed frame (and unmarshals a keep-serialized one)
    unchecked; dacstyle never sends either, so they are refused, in either direction.
    """

    def __init__(self, header: bytes, payload: bytes | None = None) -> None:
        super().__init__(header)  # parses the header, checks the size against MAX_MESSAGE_SIZE
        if self.flags & (protocol.FLAGS_COMPRESSED | protocol.FLAGS_KEEPSERIALIZED):
            raise pyro_errors.ProtocolError(f"frame flags {self.flags:#x} refused: dacstyle never sends "
                                            "compressed or keep-serialized frames")
        if payload is not None:
            self.add_payload(payload)


def harden_pyro5() -> None:
    """Make this process's Pyro5 decode frames to plain data and refuse unsafe ones (idempotent).

    Called by the server entry point and by every host-side channel: both ends
    decode frames without Pyro5's class hooks (:class:`PlainJson`), and neither
    inflates a compressed frame a hostile peer sends (:class:`GuardedMessage`).
    """
    plain = serializers.serializers["json"]
    if not isinstance(plain, PlainJson):
        plain = PlainJson()
        serializers.serializers["json"] = plain
        serializers.serializers_by_id[PlainJson.serializer_id] = plain
    protocol.ReceivingMessage = GuardedMessage  # what protocol.recv_stub builds each frame with


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


def check_versions(server: dict[str, Any]) -> None:
    """Raise :class:`ProtocolMismatchError` naming both sides unless the server speaks our protocol."""
    if isinstance(server, dict) and server.get("protocol") == PROTOCOL_VERSION:
        return
    host = versions()
    theirs = server if isinstance(server, dict) else {}

    def side(v: dict[str, Any]) -> str:
        return f"protocol {v.get('protocol')!r} (dacstyle {v.get('dacstyle')}, Python {v.get('python')})"

    raise ProtocolMismatchError(f"protocol mismatch: host speaks {side(host)}, server speaks {side(theirs)}; "
                                "use the same dacstyle release on both sides")
