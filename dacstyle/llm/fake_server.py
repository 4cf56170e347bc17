"""A real OpenAI-compatible HTTP server that answers from a script: a public test double.

It listens on loopback (port 0 picks a free port), speaks ``GET /v1/models`` and
``POST /v1/chat/completions``, requires ``Authorization: Bearer <api key>``, and
answers chat requests with the scripted replies in order. A reply is either a
string (the assistant's message) or a dict: ``{"content": "..."}``, or a
scripted failure ``{"status": 503, "retry_after": 0}``. When the script is used
up it answers HTTP 400. Every chat request body is kept in ``requests``.

In a test::

    with FakeOpenAIServer(["hello"], api_key="k") as server:
        client = OpenAIClient(server.url, api_key="k")

As a process (what :mod:`dacstyle.llm.service` starts in the tests)::

    python -m dacstyle.llm.fake_server --port P --api-key-file F --replies REPLIES.json

where REPLIES.json holds a JSON list of replies; without ``--api-key-file`` the
key is read from the ``VLLM_API_KEY`` environment variable, as vLLM does. It
takes vLLM's ``--ssl-certfile``, ``--ssl-keyfile``, ``--ssl-ca-certs`` and
``--ssl-cert-reqs`` too, and then speaks HTTPS as vLLM does with them.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["FakeOpenAIServer", "main"]

MAX_BODY = 8 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, {"error": {"message": message, "type": "fake_server", "code": status}}, headers)

    def _authorized(self) -> bool:
        given = self.headers.get("Authorization", "")
        expected = f"Bearer {self.server.owner.api_key}"
        if hmac.compare_digest(given.encode(), expected.encode()):
            return True
        self._error(401, "invalid or missing API key")
        return False

    def do_GET(self) -> None:
        if self.path.rstrip("/") != "/v1/models":
            self._error(404, "not found")
            return
        if self._authorized():
            model = self.server.owner.model
            self._send(200, {"object": "list", "data": [{"id": model, "object": "model", "owned_by": "dacstyle"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self.close_connection = True
            self._error(413, "request too large")
            return
        raw = self.rfile.read(length)
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._error(404, "not found")
            return
        if not self._authorized():
            return
        try:
            body = json.loads(raw)
            assert isinstance(body, dict) and isinstance(body.get("messages"), list)
        except (ValueError, AssertionError):
            self._error(400, "the body must be JSON with a 'messages' list")
            return
        owner = self.server.owner
        reply = owner._next_reply(body)
        if reply is None:
            self._error(400, "the fake server has no scripted replies left")
            return
        if "status" in reply:
            headers = {"Retry-After": str(reply["retry_after"])} if "retry_after" in reply else None
            self._error(int(reply["status"]), str(reply.get("message", "scripted failure")), headers)
            return
        content = str(reply.get("content", ""))
        self._send(
            200,
            {
                "id": f"chatcmpl-fake-{len(owner.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body.get("model") or owner.model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": len(content.split()), "total_tokens": 0},
            },
        )


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: "FakeOpenAIServer"


class FakeOpenAIServer:
    """A scripted OpenAI-compatible server on a background thread; a context manager."""

    def __init__(
        self,
        replies: list[str | dict[str, Any]],
        api_key: str,
        host: str = "127.0.0.1",
        port: int = 0,
        model: str = "fake-model",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if not api_key:
            raise ValueError("the fake server needs an API key")
        self.api_key = api_key
        self.model = model
        self.requests: list[dict[str, Any]] = []
        self._replies = [r if isinstance(r, dict) else {"content": r} for r in replies]
        self._lock = threading.Lock()
        self._httpd = _Server((host, port), _Handler)
        self._httpd.owner = self
        self.tls = ssl_context is not None
        if ssl_context is not None:
            self._httpd.socket = ssl_context.wrap_socket(self._httpd.socket, server_side=True)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually bound."""
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        """The API base, ``http://HOST:PORT/v1`` (``https`` with TLS)."""
        host, port = self.address
        return f"{'https' if self.tls else 'http'}://{host}:{port}/v1"

    def _next_reply(self, body: dict[str, Any]) -> dict[str, Any] | None:
        with self._lock:
            self.requests.append(body)
            return self._replies.pop(0) if self._replies else None

    def start(self) -> "FakeOpenAIServer":
        """Serve on a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-openai", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._httpd.server_close()

    def __enter__(self) -> "FakeOpenAIServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: serve until killed."""
    parser = argparse.ArgumentParser(prog="python -m dacstyle.llm.fake_server", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    parser.add_argument("--api-key-file", type=Path, help="file holding the API key (default: $VLLM_API_KEY)")
    parser.add_argument("--replies", type=Path, required=True, help="JSON file with the list of scripted replies")
    parser.add_argument("--model", default="fake-model", help="the model id to report")
    parser.add_argument("--ssl-certfile", type=Path, help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--ssl-keyfile", type=Path, help="the certificate's private key (PEM)")
    parser.add_argument("--ssl-ca-certs", type=Path, help="CA certificates that client certificates are checked against")
    parser.add_argument("--ssl-cert-reqs", type=int, default=int(ssl.CERT_NONE),
                        help="0: no client certificate asked, 2: one signed by --ssl-ca-certs required")
    args = parser.parse_args(argv)
    key = args.api_key_file.read_text().strip() if args.api_key_file else os.environ.get("VLLM_API_KEY", "")
    if not key:
        parser.error("no API key: give --api-key-file or set VLLM_API_KEY")
    replies = json.loads(args.replies.read_text(encoding="utf-8"))
    context = None
    if args.ssl_certfile:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.ssl_certfile, args.ssl_keyfile)
        if args.ssl_ca_certs:
            context.load_verify_locations(cafile=args.ssl_ca_certs)
        context.verify_mode = ssl.VerifyMode(args.ssl_cert_reqs)
    server = FakeOpenAIServer(replies, api_key=key, host=args.host, port=args.port, model=args.model,
                              ssl_context=context)
    print(f"fake OpenAI server on {server.url}", file=sys.stderr, flush=True)
    try:
        server._httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server._httpd.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
