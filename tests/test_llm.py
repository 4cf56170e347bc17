"""The LLM side on a real loopback HTTP server: client, fake server, service start, LLM agent."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import requests

from dacstyle.agents.llm_agent import LLMAgent, parse_reply
from dacstyle.agents.loop import run_episodes
from dacstyle.agents.scripted import solution_code
from dacstyle.competitions import SHELL_PREFIX, Grader, TaskEnv, make_competition
from dacstyle.errors import LLMError, ServerStartError
from dacstyle.llm import FakeOpenAIServer, LLMService, OpenAIClient, free_port, generate_api_key, vllm_command

KEY = "test-key-123"


def test_models_and_chat_in_order() -> None:
    with FakeOpenAIServer(["first", {"content": "second"}], api_key=KEY, model="m1") as server:
        with OpenAIClient(server.url, api_key=KEY, retries=0) as client:
            assert client.list_models() == ["m1"]
            assert client.chat([{"role": "user", "content": "hi"}]) == "first"
            assert client.model == "m1"  # picked from /v1/models
            body = client.chat_completion([{"role": "user", "content": "again"}], temperature=0.0)
            assert body["choices"][0]["message"]["content"] == "second"
            with pytest.raises(LLMError, match="no scripted replies"):
                client.chat([{"role": "user", "content": "more"}])
        assert [r["messages"][0]["content"] for r in server.requests] == ["hi", "again", "more"]
        assert server.requests[1]["temperature"] == 0.0


def test_the_api_key_is_required_and_never_shown() -> None:
    with FakeOpenAIServer(["x"], api_key=KEY) as server:
        assert requests.get(server.url + "/models", timeout=5).status_code == 401
        bad = OpenAIClient(server.url, model="m", api_key="zzBADKEYzz", retries=2, backoff=0.01)
        start = time.monotonic()
        with pytest.raises(LLMError, match="401") as caught:
            bad.chat([{"role": "user", "content": "hi"}])
        assert time.monotonic() - start < 2  # 401 is not retried
        assert "zzBADKEYzz" not in str(caught.value) and "zzBADKEYzz" not in repr(bad)
        assert len(server.requests) == 0


def test_retries_on_429_and_5xx_then_succeeds() -> None:
    replies = [{"status": 503}, {"status": 429, "retry_after": 0}, {"status": 500}, "finally"]
    with FakeOpenAIServer(replies, api_key=KEY) as server:
        client = OpenAIClient(server.url, model="m", api_key=KEY, retries=3, backoff=0.01)
        assert client.chat([{"role": "user", "content": "hi"}]) == "finally"
        assert len(server.requests) == 4
    with FakeOpenAIServer([{"status": 503}] * 5, api_key=KEY) as server:
        client = OpenAIClient(server.url, model="m", api_key=KEY, retries=2, backoff=0.01)
        with pytest.raises(LLMError, match="3 attempt"):
            client.chat([{"role": "user", "content": "hi"}])


def test_connection_errors_are_retried_then_one_llm_error() -> None:
    client = OpenAIClient(f"http://127.0.0.1:{free_port()}", model="m", api_key=KEY, retries=2, backoff=0.01, timeout=2)
    assert client.api_base.endswith("/v1")
    start = time.monotonic()
    with pytest.raises(LLMError, match="ConnectionError"):
        client.list_models()
    assert time.monotonic() - start < 5


def test_vllm_command_keeps_the_key_off_the_argv() -> None:
    key = generate_api_key()
    assert len(key) >= 32 and key != generate_api_key()
    argv, env = vllm_command("org/model", "10.0.0.5", 8001, key, extra_args=["--max-model-len", "4096"])
    assert argv == ["vllm", "serve", "org/model", "--host", "10.0.0.5", "--port", "8001", "--max-model-len", "4096"]
    assert env == {"VLLM_API_KEY": key} and key not in " ".join(argv)
    argv, env = vllm_command("org/model", "10.0.0.5", 8001, key, key_in_argv=True)
    assert argv[-2:] == ["--api-key", key] and env == {}


def _fake_server_argv(tmp_path: Path, port: int, replies: list) -> list[str]:
    (tmp_path / "replies.json").write_text(json.dumps(replies))
    return [sys.executable, "-m", "dacstyle.llm.fake_server", "--host", "127.0.0.1", "--port", str(port),
            "--replies", str(tmp_path / "replies.json")]


def test_service_starts_the_fake_server_like_vllm(tmp_path: Path) -> None:
    key, port = generate_api_key(), free_port()
    argv = _fake_server_argv(tmp_path, port, ["served"])
    assert key not in argv
    service = LLMService(argv, host="127.0.0.1", port=port, api_key=key, env={"VLLM_API_KEY": key}, start_timeout=30)
    with service:
        pid = service.handle.pid
        assert service.client(retries=0).chat([{"role": "user", "content": "hi"}]) == "served"
        assert key not in repr(service)
    assert service.handle is None
    assert not Path(f"/proc/{pid}").exists()


def test_fake_server_cli_with_api_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    port = free_port()
    argv = _fake_server_argv(tmp_path, port, ["from-file"]) + ["--api-key-file", str(key_file)]
    with LLMService(argv, host="127.0.0.1", port=port, api_key=KEY, start_timeout=30) as service:
        assert service.client(retries=0).chat([{"role": "user", "content": "hi"}]) == "from-file"


def test_service_that_dies_fails_fast_with_its_output(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import sys; sys.stderr.write('CUDA out of memory\\n'); sys.exit(3)"]
    start = time.monotonic()
    with pytest.raises(ServerStartError, match="status 3") as caught:
        LLMService(argv, host="127.0.0.1", port=free_port(), api_key=KEY, start_timeout=60).start()
    assert "CUDA out of memory" in str(caught.value) and time.monotonic() - start < 10


def test_service_that_never_gets_ready_hits_the_deadline(tmp_path: Path) -> None:
    argv = [sys.executable, "-c", "import time; print('loading weights', flush=True); time.sleep(60)"]
    service = LLMService(argv, host="127.0.0.1", port=free_port(), api_key=KEY, start_timeout=1.0)
    start = time.monotonic()
    with pytest.raises(ServerStartError, match="not ready") as caught:
        service.start()
    assert time.monotonic() - start < 8 and "loading weights" in str(caught.value)
    assert service.handle is None


def test_service_with_the_wrong_key_is_refused(tmp_path: Path) -> None:
    port = free_port()
    argv = _fake_server_argv(tmp_path, port, [])
    service = LLMService(argv, host="127.0.0.1", port=port, api_key="client-key", env={"VLLM_API_KEY": "server-key"},
                         start_timeout=30)
    with pytest.raises(ServerStartError, match="refused the API key"):
        service.start()


def test_parse_reply() -> None:
    assert parse_reply("Here:\n```python\nprint(1)\n```\nthen") == "print(1)\n"
    assert parse_reply("```bash\nls -l\n```") == SHELL_PREFIX + "ls -l\n"
    assert parse_reply("```\nx = 1\n```") == "x = 1\n"
    assert parse_reply("Done, SUBMIT.") == "validate"
    assert parse_reply("I am thinking.") is None


def test_llm_agent_drafts_fixes_validates_and_submits(tmp_path: Path) -> None:
    comp = make_competition("plant-species-logloss", tmp_path)
    grader = Grader(comp, submissions_root=tmp_path / "sub")
    env = TaskEnv(comp / "public", tmp_path / "ws", tmp_path / "sub", time_limit=60, validator=grader.validator)
    replies = [
        "A first try:\n```python\nimport csv\nprint(undefined_variable)\n```",
        "Only half the rows:\n```sh\nhead -n 20 \"$DACSTYLE_PUBLIC_DIR/sample_submission.csv\" > \"$DACSTYLE_SUBMISSION_DIR/submission.csv\"\n```",
        "SUBMIT",
        "I see, missing ids. Fixed:\n```python\n" + solution_code("log_loss") + "```",
        "All rows are written now. SUBMIT",
    ]
    steps: list[tuple] = []
    with FakeOpenAIServer(replies, api_key=KEY) as server:
        agent = LLMAgent(OpenAIClient(server.url, api_key=KEY, retries=0))
        run_episodes(env, agent, 1, on_step=lambda *step: steps.append(step))  # step[6] is the info dict
        prompts = [r["messages"][-1]["content"] for r in server.requests]
    kinds = [step[6]["kind"] for step in steps]
    assert kinds == ["python", "shell", "validate", "python", "validate", "submit"]
    assert steps[0][6]["exit_code"] == 1 and "NameError" in prompts[1]
    assert steps[2][6]["validation"]["valid"] is False and "missing_ids" in prompts[3]
    assert steps[-1][4] is True and steps[-1][6]["validation"]["valid"] is True
    assert len(server.requests) == 5 and server.requests[0]["messages"][0]["role"] == "system"
    assert "plant" in server.requests[0]["messages"][1]["content"].lower()
    result = grader.grade(Path("submission.csv"))
    baseline = grader.grade((comp / "public/sample_submission.csv").read_bytes())
    assert result["valid"] and result["score"] < baseline["score"]
