"""The LLM side: a client for OpenAI-compatible endpoints, a scripted test server, the vLLM service."""

from .client import OpenAIClient
from .container import ContainerLLMService, vllm_service
from .fake_server import FakeOpenAIServer
from .service import LLMService, free_port, generate_api_key, node_address, vllm_command

__all__ = [
    "OpenAIClient",
    "ContainerLLMService",
    "vllm_service",
    "FakeOpenAIServer",
    "LLMService",
    "free_port",
    "generate_api_key",
    "node_address",
    "vllm_command",
]
