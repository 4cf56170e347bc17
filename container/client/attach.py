"""Reach an endpoint the host did not start: another container's agent-side server.

The task environment uses this inside its container to validate through the
grader's agent endpoint: a folder holding ``token`` and either ``agent.sock``
(same node) or ``endpoint.json`` plus the run's client certificate (another node
of a Slurm job: TCP with mutual TLS, the endpoint's certificate pinned).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..tls import ClientTLS
from .channel import Channel
from .proxies import RemoteHandle, RemoteObject, make_remote_object

__all__ = ["attach"]


def attach(folder: str | Path, object_id: str, methods: list[str], call_timeout: float = 60.0) -> RemoteObject:
    """A proxy of ``object_id`` served on the endpoint in ``folder`` (socket + token file)."""
    folder = Path(folder)
    token = (folder / "token").read_text().strip()
    if (folder / "endpoint.json").exists():
        endpoint = json.loads((folder / "endpoint.json").read_text())
        tls = ClientTLS.from_folder(folder, endpoint["fingerprint"])
        channel = Channel(endpoint["location"], token, call_timeout=call_timeout, tls=tls)
    else:
        channel = Channel(f"unix:{folder / 'agent.sock'}", token, call_timeout=call_timeout)
    return make_remote_object(RemoteHandle(channel, object_id), methods, f"Remote{object_id.capitalize()}")
