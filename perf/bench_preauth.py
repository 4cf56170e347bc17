"""Server memory under pre-authentication attacks; prints one table of peak RSS figures.

Each attack runs against a fresh dacstyle server (process runtime, the real entry
point) and, for comparison, against a bare Pyro5 daemon with the same 256 MiB
frame cap and no guard. The figure is the server's peak RSS (``VmHWM``) after the
attack minus its peak before, so a frame inflated and freed again still counts.

- ``bomb``: one handshake frame with Pyro5's compressed flag: 1 MiB of zlib that
  inflates to ``--bomb-mib`` MiB;
- ``near-cap``: ``--conns`` connections each announce a 255 MiB handshake and
  send ``--mib`` MiB of it;
- ``idle``: 70 connections that send nothing, then a legitimate client's
  ``hello()``; its latency is printed;
- ``trickle``: one connection sending one byte a second; how long it is held.

    python perf/bench_preauth.py [--bomb-mib 1024] [--conns 16] [--mib 16] [--no-bare]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from pathlib import Path
from typing import Callable

from Pyro5 import protocol

from dacstyle import RemoteRunner
from dacstyle.container.client.channel import Channel
from dacstyle.container.protocol import CONTROL_OBJECT
from dacstyle.errors import IsolationWarning
from dacstyle.testing import probe_benchmark

BARE_SERVER = r"""
import sys
from Pyro5.api import Daemon, config
config.SERIALIZER = "json"; config.SERVERTYPE = "thread"; config.MAX_MESSAGE_SIZE = 256 * 1024 * 1024
config.THREADPOOL_SIZE = 64
daemon = Daemon(unixsocket=sys.argv[1])
print("ready", flush=True)
daemon.requestLoop()
"""


def header(size: int, flags: int = 0) -> bytes:
    """A handshake frame header (JSON serializer) announcing ``size`` payload bytes."""
    return struct.pack("!4sHBBHHII16sHH", b"PYRO", protocol.PROTOCOL_VERSION, protocol.MSG_CONNECT, 3, flags, 0,
                       size, 0, b"\0" * 16, 0, 0x4DC5)


def peak_mib(pid: int) -> float:
    """The process's peak resident memory (VmHWM) in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM")


def send_and_wait(path: str, data: bytes | None, chunks: int = 0, chunk: bytes = b"", timeout: float = 30.0) -> None:
    """Connect, send ``data`` and then ``chunks`` copies of ``chunk`` until the server hangs up; wait for the close."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            if data:
                sock.sendall(data)
            for _ in range(chunks):
                sock.sendall(chunk)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass
        except OSError:
            pass  # refused mid-send: what the guard does


def bomb(path: str, inflated_mib: int) -> None:
    packer = zlib.compressobj(9)
    zeros = bytes(1 << 20)
    payload = b"".join(packer.compress(zeros) for _ in range(inflated_mib)) + packer.flush()
    send_and_wait(path, header(len(payload), protocol.FLAGS_COMPRESSED) + payload)


def near_cap(path: str, conns: int, mib: int) -> None:
    chunk = bytes(1 << 20)
    threads = [threading.Thread(target=send_and_wait, args=(path, header(255 << 20), mib, chunk)) for _ in range(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)


def measure(pid: int, attack: Callable[[], None]) -> str:
    """Run ``attack``; the growth of the server's peak RSS and the peak itself."""
    before = peak_mib(pid)
    attack()
    after = peak_mib(pid)
    return f"+{after - before:.1f} MiB (peak {after:.0f} MiB)"


def idle_then_hello(path: str, token: str | None) -> float:
    """Seconds a legitimate hello() takes while 70 idle connections are open (dacstyle server only)."""
    idle = []
    try:
        for _ in range(70):
            sock = socket.socket(socket.AF_UNIX)
            sock.connect(path)
            idle.append(sock)
        channel = Channel(f"unix:{path}", token or "", call_timeout=30)
        proxy = channel.proxy(CONTROL_OBJECT)
        started = time.perf_counter()
        channel.invoke(proxy, threading.Lock(), "hello", (), None)
        elapsed = time.perf_counter() - started
        proxy._pyroRelease()
        return elapsed
    finally:
        for sock in idle:
            sock.close()


def trickle(path: str, limit: float = 30.0) -> float:
    """Seconds the server holds a connection that sends one byte a second (capped at ``limit``)."""
    started = time.perf_counter()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(path)
        sock.settimeout(1.0)
        for byte in header(100):
            try:
                sock.sendall(bytes([byte]))
                if sock.recv(1) == b"":
                    break
            except socket.timeout:
                pass
            except OSError:
                break
            if time.perf_counter() - started > limit:
                break
    return time.perf_counter() - started


def bare_daemon(folder: str) -> tuple[subprocess.Popen, str]:
    path = os.path.join(folder, "bare.sock")
    proc = subprocess.Popen([sys.executable, "-c", BARE_SERVER, path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc, path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bomb-mib", type=int, default=1024, help="what the compressed handshake inflates to (MiB)")
    parser.add_argument("--conns", type=int, default=16, help="near-cap connections")
    parser.add_argument("--mib", type=int, default=16, help="MiB each near-cap connection sends")
    parser.add_argument("--no-bare", action="store_true", help="skip the unguarded Pyro5 daemon")
    args = parser.parse_args()
    warnings.simplefilter("ignore", IsolationWarning)
    rows: list[tuple[str, str, str]] = []
    attacks = {
        f"compressed handshake, 1 frame inflating to {args.bomb_mib} MiB": lambda p: bomb(p, args.bomb_mib),
        f"{args.conns} connections x {args.mib} MiB of a 255 MiB handshake": lambda p: near_cap(p, args.conns, args.mib),
    }
    for name, attack in attacks.items():
        with RemoteRunner(probe_benchmark(), runtime="process") as runner:
            path = str(runner.server.server_dir.path / "host" / "server.sock")
            guarded = measure(runner.server.process.pid, lambda: attack(path))
            assert runner.get_object().echo("alive") == "alive"
        bare = "skipped"
        if not args.no_bare:
            with tempfile.TemporaryDirectory() as folder:
                proc, path = bare_daemon(folder)
                try:
                    bare = measure(proc.pid, lambda: attack(path))
                finally:
                    proc.kill()
                    proc.wait(10)
        rows.append((name, guarded, bare))
    with RemoteRunner(probe_benchmark(), runtime="process") as runner:
        path = str(runner.server.server_dir.path / "host" / "server.sock")
        hello = idle_then_hello(path, runner.server.server_dir.token())
        held = trickle(path)
    rows.append(("70 idle connections, then a client's hello()", f"answered in {hello * 1000:.0f} ms", ""))
    rows.append(("handshake sent one byte a second", f"cut off after {held:.1f} s", ""))
    print(json.dumps({"python": sys.version.split()[0], "cpus": os.cpu_count()}))
    print("| attack (before authentication) | dacstyle server, peak RSS growth | bare Pyro5 daemon |")
    print("|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
