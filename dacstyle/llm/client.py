"""A small client for OpenAI-compatible endpoints (vLLM, the fake server, ...).

``OpenAIClient`` speaks ``GET /v1/models`` and ``POST /v1/chat/completions``
with ``requests``. It retries 429, 5xx, connection errors and timeouts with
exponential backoff (honouring ``Retry-After`` up to ``max_backoff``), and turns
every other failure into one :class:`~dacstyle.errors.LLMError`. The API key is
sent as a bearer token and never appears in ``repr`` or error messages.
A client object is meant for one thread (like a ``requests.Session``).

With ``tls`` (a :class:`~dacstyle.container.tls.ClientTLS`: a server placed on
another node) the connection is mutual TLS: the client shows the run's client
certificate and accepts only the server certificate whose fingerprint was
published, so neither the key nor a prompt crosses the network in clear.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter

from ..errors import LLMError

if TYPE_CHECKING:
    from ..container.tls import ClientTLS

__all__ = ["OpenAIClient", "RETRY_STATUSES", "http_session"]

RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
_BODY_TAIL = 300


class OpenAIClient:
    """A local object for a remote OpenAI-compatible model server."""

    def __init__(
        self,
        api_base: str,
        model: str | None = None,
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 3,
        backoff: float = 0.5,
        max_backoff: float = 10.0,
        tls: ClientTLS | None = None,
    ) -> None:
        base = api_base.rstrip("/")
        self.api_base = base if base.endswith("/v1") else base + "/v1"
        self.model = model
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.max_backoff = float(max_backoff)
        self._session = http_session(api_key, tls)

    def __repr__(self) -> str:
        return f"OpenAIClient(api_base={self.api_base!r}, model={self.model!r})"

    def __enter__(self) -> "OpenAIClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self._session.close()

    # -- API -----------------------------------------------------------------

    def list_models(self) -> list[str]:
        """The ids of the models the server offers."""
        body = self._request("GET", "/models")
        try:
            return [str(item["id"]) for item in body["data"]]
        except (KeyError, TypeError) as exc:
            raise LLMError(f"{self.api_base}/models: unexpected answer shape") from exc

    def chat_completion(self, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        """The raw chat completion answer for ``messages`` (extra OpenAI parameters allowed)."""
        model = params.pop("model", None) or self.model
        if model is None:
            models = self.list_models()
            if not models:
                raise LLMError(f"{self.api_base}: the server offers no model")
            model = self.model = models[0]
        return self._request("POST", "/chat/completions", {"model": model, "messages": messages, **params})

    def chat(self, messages: list[dict[str, str]], **params: Any) -> str:
        """The text of the first choice of a chat completion."""
        body = self.chat_completion(messages, **params)
        try:
            content = body["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError) as exc:
            raise LLMError(f"{self.api_base}/chat/completions: answer has no choices[0].message.content") from exc
        return content if isinstance(content, str) else ""

    # -- transport -------------------------------------------------------------

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        url = self.api_base + path
        last = ""
        for attempt in range(self.retries + 1):
            retry_after: float | None = None
            try:
                response = self._session.request(method, url, json=payload, timeout=self.timeout)
            except (requests.ConnectionError, requests.Timeout) as exc:
                last = f"{type(exc).__name__}"
            except requests.RequestException as exc:
                raise LLMError(f"{method} {url} failed: {type(exc).__name__}: {exc}") from exc
            else:
                if response.status_code == 200:
                    try:
                        body = response.json()
                    except ValueError as exc:
                        raise LLMError(f"{method} {url}: the answer is not JSON") from exc
                    if not isinstance(body, dict):
                        raise LLMError(f"{method} {url}: the answer is not a JSON object")
                    return body
                text = response.text[-_BODY_TAIL:]
                last = f"HTTP {response.status_code}: {text}"
                if response.status_code not in RETRY_STATUSES:
                    hint = " (wrong or missing API key?)" if response.status_code in (401, 403) else ""
                    raise LLMError(f"{method} {url} -> {last}{hint}")
                retry_after = _parse_retry_after(response.headers.get("Retry-After"))
            if attempt < self.retries:
                delay = min(self.backoff * 2**attempt, self.max_backoff)
                if retry_after is not None:
                    delay = min(max(delay, retry_after), self.max_backoff)
                time.sleep(delay)
        raise LLMError(f"{method} {url} failed after {self.retries + 1} attempt(s): {last}")


def http_session(api_key: str | None = None, tls: ClientTLS | None = None) -> requests.Session:
    """A session that sends ``api_key`` as a bearer token, and with ``tls`` speaks only pinned mutual TLS."""
    session = requests.Session()
    session.trust_env = False  # no proxies or netrc credentials from the environment
    if api_key:
        session.headers["Authorization"] = f"Bearer {api_key}"
    if tls is not None:
        session.mount("https://", _PinnedTLS(tls))
        session.mount("http://", _Refused())
    return session


class _PinnedTLS(HTTPAdapter):
    """HTTPS with the run's client certificate, accepting only the published server certificate."""

    def __init__(self, tls: ClientTLS) -> None:
        self._tls = tls
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["ssl_context"] = self._tls.context  # the run's CA only, and our certificate
        kwargs["assert_fingerprint"] = self._tls.server_fingerprint.split(":", 1)[1]  # names are not checked: pinned
        super().init_poolmanager(*args, **kwargs)


class _Refused(HTTPAdapter):
    """Plain HTTP on a session meant for TLS: refused, so the key is never sent in clear."""

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        raise requests.exceptions.InvalidSchema(f"{request.url}: this server is reached over TLS only (https)")


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        return None
