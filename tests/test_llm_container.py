"""The LLM service path through a runtime, with the OpenAI-compatible test double as the server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dacstyle.llm.container import ContainerLLMService
from dacstyle.llm.service import free_port

from conftest import child_pids, server_folders


def cmdlines() -> list[bytes]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.append((entry / "cmdline").read_bytes())
            except OSError:
                pass
    return found


@pytest.mark.parametrize("runtime", ["process", pytest.param("bwrap", marks=pytest.mark.container)])
def test_service_starts_in_the_runtime_with_a_secret_key_off_every_argv(runtime, request, tmp_path, servers_root):
    image = request.getfixturevalue("packed_image") if runtime == "bwrap" else None
    replies = tmp_path / "replies.json"
    replies.write_text(json.dumps(["hello from the container"]))
    inside = "/data/replies.json" if runtime == "bwrap" else str(replies)
    port = free_port()
    before = child_pids()
    service = ContainerLLMService(
        ["python3", "-m", "dacstyle.llm.fake_server", "--host", "127.0.0.1",
         "--port", str(port), "--replies", inside],
        image=image, host="127.0.0.1", port=port, runtime=runtime, gpu=False,
        binds=[f"{tmp_path}:/data:ro"], start_timeout=60,
    )
    with service:
        key = service.api_key.encode()
        assert all(key not in line for line in cmdlines()), "the API key is visible in a command line"
        client = service.client("fake-model")
        assert client.chat([{"role": "user", "content": "hi"}]) == "hello from the container"
        client.close()
        assert oct((service.server_dir.path / "host" / "api_key").stat().st_mode & 0o777) == "0o600"
    assert child_pids() - before == set()
    assert server_folders(servers_root) == []
