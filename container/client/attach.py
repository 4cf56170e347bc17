"""Reach an endpoint the host did not start: another container's agent-side server.

The task environment uses this inside its container to validate through the
grader's agent endpoint: a folder holding ``agent.sock`` and ``token``.
"""

from __future__ import annotations

from pathlib import Path

from .channel import Channel
from .proxies import RemoteHandle, RemoteObject, make_remote_object

__all__ = ["attach"]


def attach(folder: str | Path, object_id: str, methods: list[str], call_timeout: float = 60.0) -> RemoteObject:
    """A proxy of ``object_id`` served on the endpoint in ``folder`` (socket + token file)."""
    folder = Path(folder)
    token = (folder / "token").read_text().strip()
    channel = Channel(f"unix:{folder / 'agent.sock'}", token, call_timeout=call_timeout)
    return make_remote_object(RemoteHandle(channel, object_id), methods, f"Remote{object_id.capitalize()}")
