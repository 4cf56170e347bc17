"""An OpenAI-compatible server placed by Slurm (``vllm_service(..., placement=Slurm(...))``), on the real Slurm.

The model server is the scripted fake server, which takes vLLM's ``--ssl-*``
options; everything around it is what runs with vLLM on a cluster: the job, the
runtime and key launcher, readiness over mutual TLS, the published address, the
heartbeat and the clean-up. The ``shared`` fixture checks that no job, folder or
process is left.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
from pathlib import Path

import pytest
import requests

from dacstyle import RemoteRunner
from dacstyle.agents.llm_agent import LLMAgent
from dacstyle.benchmarks import SigmoidBenchmark
from dacstyle.config import config
from dacstyle.container.tls import ClientTLS, client_context
from dacstyle.errors import LLMError
from dacstyle.llm import FakeOpenAIServer, OpenAIClient, vllm_service
from dacstyle.llm.placed import PlacedLLMService
from dacstyle.slurm import Slurm
from dacstyle.slurm.commands import job_info

from conftest import loopback_capture

GPU = Slurm(partition="gpu", gpus=1, time="5")


def _fake(tmp_path: Path, replies: list, placement: Slurm = GPU) -> PlacedLLMService:
    """The scripted server as a placed service: the command a job runs, minus the address the job adds."""
    (tmp_path / "replies.json").write_text(json.dumps(replies))
    command = [sys.executable, "-m", "dacstyle.llm.fake_server", "--replies", str(tmp_path / "replies.json")]
    return PlacedLLMService(command, image=None, placement=placement, runtime="process", start_timeout=60)


def _active(job_id: str) -> bool:
    return any(info.active for info in job_info(job_id))


def test_vllm_service_with_a_placement_is_a_slurm_job_of_vllm_serve():
    service = vllm_service("org/model", "vllm.sif", placement=GPU, runtime="process", extra_args=["--dtype", "half"])
    assert isinstance(service, PlacedLLMService) and service.placement == GPU
    assert service.argv == ["vllm", "serve", "org/model", "--dtype", "half"]  # the job adds --host, --port, --ssl-*
    with pytest.raises(ValueError, match="no host or port"):
        vllm_service("org/model", "vllm.sif", placement=GPU, port=8000)


def test_a_placed_service_answers_over_mutual_tls_and_stop_leaves_nothing(shared, tmp_path):
    with _fake(tmp_path, ["from the gpu node"]) as service:
        assert service.url.startswith("https://") and service.node == "gpu1"
        assert job_info(service.job_id)[0].fields["Partition"] == "gpu"
        with service.client(retries=0) as client:
            assert client.chat([{"role": "user", "content": "hi"}]) == "from the gpu node"
        script = (service.server_dir.path / "job.sbatch").read_text()
        request = (service.server_dir.path / "request.json").read_text()
        assert service.api_key not in script + request + repr(service)
        for pid in os.listdir("/proc"):  # the key is in no process's argv on the node
            try:
                assert service.api_key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
        job_id = service.job_id
    assert service.job is None and not _active(job_id)


def test_the_placed_service_refuses_a_client_without_the_runs_certificate_or_with_another_pin(shared, tmp_path):
    with _fake(tmp_path, ["ok"]) as service:
        folder = service.server_dir.path
        ca_only = ssl.create_default_context(cafile=str(folder / "client" / "ca.pem"))
        ca_only.check_hostname = False
        with pytest.raises((requests.exceptions.SSLError, requests.exceptions.ConnectionError),
                           match="(?i)certificate required|alert|EOF"):  # no client certificate: refused
            _session_with(ca_only).get(service.url + "/models", timeout=10)
        wrong_pin = ClientTLS(client_context(folder / "client"), "sha256:" + "0" * 64)
        with pytest.raises(LLMError):
            OpenAIClient(service.url, api_key=service.api_key, tls=wrong_pin, retries=0).list_models()
        with pytest.raises(LLMError):  # plain HTTP to a TLS-only server
            OpenAIClient(service.url.replace("https://", "http://"), api_key=service.api_key, retries=0).list_models()
        assert service.client(retries=0).list_models() == ["fake-model"]


def _session_with(context: ssl.SSLContext) -> requests.Session:
    from requests.adapters import HTTPAdapter

    class Adapter(HTTPAdapter):
        def init_poolmanager(self, *args, **kwargs):
            kwargs["ssl_context"] = context
            kwargs["assert_hostname"] = False  # the server certificate is right: only the client's is missing
            super().init_poolmanager(*args, **kwargs)

    session = requests.Session()
    session.trust_env = False
    session.mount("https://", Adapter())
    return session


def test_a_tls_client_never_sends_its_key_over_plain_http():
    """A client made for a TLS server, pointed at an http:// URL, refuses instead of sending the key in clear."""
    with FakeOpenAIServer(["answered"], api_key="k" * 32) as server:
        tls = ClientTLS(ssl.create_default_context(), "sha256:" + "0" * 64)
        with pytest.raises(LLMError, match="over TLS only"):
            OpenAIClient(server.url, api_key="k" * 32, tls=tls, retries=0).chat([{"role": "user", "content": "x"}])
        assert server.requests == []


def test_neither_key_nor_prompt_crosses_the_network_in_clear(shared, tmp_path):
    capture = tmp_path / "lo.pcap"
    with loopback_capture(capture):
        with _fake(tmp_path, ["THE-SECRET-REPLY"]) as service:
            key, port = service.api_key, service.port
            with service.client(retries=0) as client:
                assert client.chat([{"role": "user", "content": "THE-PRIVATE-PROMPT"}]) == "THE-SECRET-REPLY"
    data = capture.read_bytes()
    assert port.to_bytes(2, "big") in data  # the service's traffic is in the capture
    for secret in (key, "THE-PRIVATE-PROMPT", "THE-SECRET-REPLY"):
        assert secret.encode() not in data


def test_the_job_lives_while_its_host_beats_and_ends_itself_when_the_beats_stop(shared, tmp_path):
    config.heartbeat_timeout = 2.0
    try:
        with _fake(tmp_path, []) as service:
            job_id = service.job_id
            time.sleep(5)  # more than twice the timeout: only the beats keep it
            assert _active(job_id) and service.client(retries=0).list_models() == ["fake-model"]
            service.job._heartbeat.set()  # the host goes silent, as a SIGKILLed one does
            deadline = time.monotonic() + 15
            while _active(job_id) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _active(job_id), "the job outlived its host's heartbeat"
            log = service.job.log.read_text()
            assert "no heartbeat from the host" in log
    finally:
        config.heartbeat_timeout = 120.0


def test_a_runner_placed_beside_the_service_runs_on_its_node(shared, tmp_path):
    """Partition ``all`` holds both nodes; without ``beside`` Slurm would pick cpu1, its first."""
    with _fake(tmp_path, []) as service:
        assert service.node == "gpu1"
        place = service.beside(Slurm(partition="all", time="5", extra=["--nodelist=cpu1", "--account=x"]))
        assert place.extra == ("--account=x", "--nodelist=gpu1")
        with RemoteRunner(SigmoidBenchmark(), runtime="process", placement=service.beside(Slurm(partition="all",
                                                                                                 time="5"))) as runner:
            assert job_info(runner.job_id)[0].nodes == service.node
            runner.get_environment().reset(seed=0)
    with pytest.raises(Exception, match="start the service first"):
        _fake(tmp_path, []).beside(GPU)


def test_an_llm_agent_solves_a_competition_on_the_node_of_its_model(shared, packed_image, tmp_path):
    """The reference workflow: grader on cpu; task and model on the gpu node; the agent's model over TLS."""
    from dacstyle.competitions import make_competition
    from dacstyle.competitions.task import CompetitionTask
    from test_llm import solution_code

    competition = make_competition("plant-species-logloss", tmp_path / "competitions", seed=0)
    replies = ["Writing it:\n```python\n" + solution_code("log_loss") + "```", "SUBMIT"]
    with _fake(tmp_path, replies) as service:
        task = CompetitionTask(competition, workdir=tmp_path / "work", time_limit=120,
                               placement=service.beside(Slurm(partition="gpu", gpus=0, time="5")),
                               grader_placement=Slurm(partition="cpu", time="5"))
        with RemoteRunner(task, runtime="bwrap", image=packed_image, runs_dir=tmp_path / "runs") as runner:
            nodes = {info.fields["Partition"]: info.nodes for info in job_info(runner.job_id)}
            assert nodes == {"cpu": "cpu1", "gpu": service.node}
            results = runner.run(LLMAgent(service.client(retries=0)), 1)
            sample = runner.companions["grader"].grade((competition / "public" / "sample_submission.csv").read_bytes())
    report = results.extra["grade"]
    assert report["valid"] and report["score"] < sample["score"]  # log loss: lower is better


def test_a_cancelled_service_job_is_reported_by_its_client(shared, tmp_path, slurm_cluster):
    with _fake(tmp_path, []) as service:
        slurm_cluster.run("scancel", service.job_id)
        deadline = time.monotonic() + 10
        while _active(service.job_id) and time.monotonic() < deadline:
            time.sleep(0.2)
        with pytest.raises(LLMError):
            service.client(retries=0, timeout=5).list_models()
