"""Real servers on loopback for the image tests: a Range-capable HTTP file server and an OCI registry.

``FileServer`` serves files from a dict with ``Range``/``If-Range``, ETags and a
request log, plus scripted faults (``"500"``, ``"truncate:N"``, ``"stall:N"``,
``"gate"``). It runs in a thread (``FileServer.start()``) or as a subprocess
(``python tests/_servers.py serve ...``, used where a test kills the server)
that prints its port once bound and appends each request to a JSON-lines log.

``Registry`` runs Debian's ``docker-registry`` (distribution 2.x) on 127.0.0.1
with a throw-away config and storage; its access log counts requests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests

SIF_TESTDATA = Path(__file__).resolve().parents[2] / "shared" / "sif-testdata"
ONE_GROUP_SIF = SIF_TESTDATA / "images" / "one-group.sif"
ROOT_SQUASHFS = SIF_TESTDATA / "input" / "root.squashfs"
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


def make_sif(path: Path, size: int) -> Path:
    """A valid SIF of about ``size`` bytes: the reference squashfs padded with random bytes.

    squashfs ignores bytes after its ``bytes_used``, so the partition stays a
    valid filesystem; the SIF is written by dacstyle's own writer.
    """
    from dacstyle.images.sifwrite import ObjectInput, partition_extra, write_sif

    payload = path.with_name(path.name + ".payload")
    block = os.urandom(1 << 20)
    with open(payload, "wb") as out:
        out.write(ROOT_SQUASHFS.read_bytes())
        remaining = max(0, size - 4096 * 12 - out.tell())
        while remaining > 0:
            remaining -= out.write(block[: min(len(block), remaining)])
    try:
        write_sif(path, [ObjectInput("partition", payload, name="rootfs", extra=partition_extra())])
    finally:
        payload.unlink(missing_ok=True)
    return path


def free_port() -> int:
    """A port that was free a moment ago (for servers that cannot bind port 0 themselves)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Handler(BaseHTTPRequestHandler):
    server: "_HTTPServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        owner = self.server.owner
        name = self.path.lstrip("/").split("?")[0]
        entry = {"method": self.command, "path": "/" + name, "range": self.headers.get("Range"),
                 "if_range": self.headers.get("If-Range"), "status": 0, "sent": 0}
        try:
            self._respond(owner, name, body, entry)
        finally:
            owner.record(entry)

    def _respond(self, owner: "FileServer", name: str, body: bool, entry: dict) -> None:
        fault = owner.next_fault(name) if body else None
        path = owner.files.get(name)
        if fault == "500" or path is None:
            entry["status"] = 500 if fault == "500" else 404
            self.send_error(entry["status"])
            return
        size = path.stat().st_size
        etag = f'"{owner.etags[name]}"'
        last_modified = formatdate(path.stat().st_mtime, usegmt=True)
        start, end = 0, size - 1
        match = _RANGE.match(self.headers.get("Range", ""))
        if_range = self.headers.get("If-Range")
        if match and (if_range is None or if_range in (etag, last_modified)):
            start = int(match.group(1))
            end = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            if start >= size:
                entry["status"] = 416
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        partial = (start, end) != (0, size - 1) or bool(match and (if_range is None or if_range == etag))
        entry["status"] = 206 if partial else 200
        self.send_response(entry["status"])
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("ETag", etag)
        self.send_header("Last-Modified", last_modified)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if not body:
            return
        count = end - start + 1
        if fault == "gate":
            owner.gated.set()
            owner.gate.wait(60)
        limit = count
        if fault and fault.split(":")[0] in ("truncate", "stall"):
            limit = min(count, int(fault.split(":")[1]))
        self.wfile.flush()
        with open(path, "rb") as handle:
            sent = self._send(handle, start, limit, owner.rate) if limit else 0
        entry["sent"] = sent
        if fault and fault.startswith("stall"):
            owner.record(dict(entry, event="stalled"))
            owner.stall_release.wait(120)
        if limit < count:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


    def _send(self, handle, start: int, count: int, rate: float | None) -> int:
        """sendfile, paced to ``rate`` bytes/s when set (a stand-in for a slower link)."""
        if not rate:
            return self.connection.sendfile(handle, start, count)
        sent, began = 0, time.monotonic()
        while sent < count:
            sent += self.connection.sendfile(handle, start + sent, min(1 << 20, count - sent))
            ahead = began + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)  # pacing, not synchronisation
        return sent


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: "FileServer"

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hangs up mid-body is part of the tests


class FileServer:
    """A Range-capable loopback HTTP server over ``files`` ({name: path}) with a request log."""

    def __init__(self, files: dict[str, Path] | None = None, *, port: int = 0, log_file: Path | None = None,
                 rate: float | None = None) -> None:
        self.rate = rate
        self.files: dict[str, Path] = {}
        self.etags: dict[str, str] = {}
        self.faults: dict[str, list[str]] = {}
        self.requests: list[dict] = []
        self.log_file = log_file
        self.gate = threading.Event()
        self.gated = threading.Event()  # set when a 'gate' request is parked
        self.stall_release = threading.Event()
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(("127.0.0.1", port), _Handler)
        self._httpd.owner = self
        self.port = self._httpd.server_address[1]
        for name, path in (files or {}).items():
            self.add(name, path)
        self._thread: threading.Thread | None = None

    def add(self, name: str, path: Path) -> str:
        """Serve ``path`` as ``/name``; returns the URL."""
        self.files[name] = Path(path)
        self.etags[name] = hashlib.sha256(f"{path}:{Path(path).stat().st_mtime_ns}".encode()).hexdigest()[:16]
        return self.url(name)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def fail_next(self, name: str, *faults: str) -> None:
        """Script the next GETs of ``name``: '500', 'truncate:N', 'stall:N', 'gate'."""
        with self._lock:
            self.faults.setdefault(name, []).extend(faults)

    def next_fault(self, name: str) -> str | None:
        with self._lock:
            queue = self.faults.get(name)
            return queue.pop(0) if queue else None

    def record(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)
            if self.log_file:
                with open(self.log_file, "a") as log:
                    log.write(json.dumps(entry) + "\n")

    def gets(self, name: str) -> list[dict]:
        """The completed GET requests of ``/name``."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "GET" and r["path"] == f"/{name}" and "event" not in r]

    def start(self) -> "FileServer":
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.gate.set()
        self.stall_release.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread:
            self._thread.join(10)

    def __enter__(self) -> "FileServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class ServerProcess:
    """``FileServer`` in a subprocess, so a test can SIGKILL it mid-stream."""

    def __init__(self, files: dict[str, Path], log_file: Path, *, port: int = 0, faults: list[str] = (),
                 rate: float | None = None) -> None:
        argv = [sys.executable, str(Path(__file__).resolve()), "serve", "--port", str(port), "--log", str(log_file)]
        if rate:
            argv += ["--rate", str(rate)]
        for name, path in files.items():
            argv += ["--file", f"{name}={path}"]
        for fault in faults:
            argv += ["--fault", fault]
        self.log_file = log_file
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()  # readiness: the child prints its bound port
        if not line.startswith("port "):
            self.kill()
            raise RuntimeError(f"file server did not start: {line!r}")
        self.port = int(line.split()[1])

    def wait_for_event(self, event: str, timeout: float = 30.0) -> dict:
        """Block until the child logs ``event`` (it flushes each entry); returns the entry."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.entries():
                if entry.get("event") == event:
                    return entry
            if self.proc.poll() is not None:
                raise RuntimeError("file server exited")
            time.sleep(0.01)  # polling a log file with a deadline
        raise TimeoutError(f"server never logged {event!r}")

    def entries(self) -> list[dict]:
        if not self.log_file.exists():
            return []
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


class Registry:
    """Debian's ``docker-registry`` on 127.0.0.1 with temporary storage; ``stop()`` kills it."""

    BINARY = "docker-registry"

    def __init__(self, workdir: Path, *, timeout: float = 20.0) -> None:
        binary = shutil.which(self.BINARY)
        if binary is None:
            raise FileNotFoundError(self.BINARY)
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        config = workdir / "registry.yml"
        config.write_text(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\n"
            f"storage:\n  filesystem:\n    rootdirectory: {workdir / 'storage'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n  secret: dacstyle-tests\n")
        self.log_path = workdir / "registry.log"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([binary, "serve", str(config)], stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:  # readiness: GET /v2/ answers, with a deadline
            try:
                if requests.get(f"http://{self.host}/v2/", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"docker-registry did not start:\n{self.log_path.read_text()[-2000:]}")
            time.sleep(0.05)

    def access_lines(self, needle: str = "") -> list[str]:
        """Access-log lines (``"GET /v2/..."``) containing ``needle``."""
        self._log.flush()
        return [l for l in self.log_path.read_text().splitlines() if '"' in l and "/v2/" in l and needle in l]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()


# -- pytest fixtures (imported by the test_images_* modules) ---------------------------
import pytest  # noqa: E402


@pytest.fixture
def images_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A clean dacstyle config whose image cache is a fresh folder; yields the ImageCache."""
    from dacstyle.config import config
    from dacstyle.images import ImageCache

    for name in list(os.environ):
        if name.startswith("DACSTYLE_"):
            monkeypatch.delenv(name)
    config.reset(False)
    config.cache = tmp_path / "cache"
    config.progress = "never"
    try:
        yield ImageCache(config.cache)
    finally:
        config.reset(False)


@pytest.fixture
def sif_file() -> Path:
    """The reference implementation's small one-group SIF (read-only)."""
    if not ONE_GROUP_SIF.exists():
        pytest.skip(f"SIF test vectors not found at {SIF_TESTDATA}")
    return ONE_GROUP_SIF


@pytest.fixture
def big_sif(tmp_path: Path, sif_file: Path) -> Path:
    """A valid 6 MiB SIF (several 1 MiB chunks, so transfers can break in the middle)."""
    return make_sif(tmp_path / "big.sif", 6 << 20)


@pytest.fixture
def file_server():
    """A running threaded loopback FileServer; stopped at teardown."""
    server = FileServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory):
    """A real OCI registry (Debian's docker-registry) on 127.0.0.1; killed at teardown."""
    if shutil.which(Registry.BINARY) is None:
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    server = Registry(tmp_path_factory.mktemp("registry"))
    try:
        yield server
    finally:
        server.stop()


def fast_retry(attempts: int = 3):
    """A RetryPolicy with millisecond backoff."""
    from dacstyle.images import RetryPolicy

    return RetryPolicy(attempts=attempts, backoff=0.001, max_backoff=0.01, timeout=10)


def _main() -> None:
    parser = argparse.ArgumentParser(description="loopback file server for dacstyle tests")
    parser.add_argument("cmd", choices=["serve"])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", type=Path)
    parser.add_argument("--file", action="append", default=[])
    parser.add_argument("--fault", action="append", default=[])
    parser.add_argument("--rate", type=float, default=None, help="pace bodies to this many bytes/s")
    args = parser.parse_args()
    files = {n: Path(p) for n, p in (f.split("=", 1) for f in args.file)}
    server = FileServer(files, port=args.port, log_file=args.log, rate=args.rate)
    for fault in args.fault:
        name, _, what = fault.partition("=")
        server.fail_next(name, what)
    print(f"port {server.port}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server._httpd.serve_forever(poll_interval=0.05)


if __name__ == "__main__":
    _main()
