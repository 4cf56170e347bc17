"""The server entry point: ``python -m dacstyle.container.server``.

It listens on a Unix socket (or TCP with mutual TLS, for Slurm) with a per-run
token read from a file, optionally on a second, agent-side endpoint with its own
token, writes one ready line to stdout, and serves until ``shutdown()``, until its
stdin (the lifeline from the host) closes, or (``--idle-timeout``) until no call
has come for that long: a Slurm job whose host was killed ends itself. Every
runtime starts this same entry point.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Sequence

__all__ = ["main", "serve", "build_parser"]

log = logging.getLogger("dacstyle.server")

_WIND_DOWN_SECONDS = 1.0
"""How long closing hosted objects may take once the server is told to stop."""


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The server's command line (shared with ``dacstyle serve``)."""
    parser = parser or argparse.ArgumentParser(prog="python -m dacstyle.container.server")
    parser.description = "Serve benchmarks over a Pyro5 JSON channel (the entry point every runtime starts)."
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--socket", help="Unix socket path to listen on (same node)")
    where.add_argument("--tcp", metavar="HOST:PORT", help="TCP address to listen on (port 0 picks one)")
    parser.add_argument("--token-file", required=True, help="file holding the host token (never pass a token in argv)")
    parser.add_argument("--tls-dir", help="folder with ca.pem, server.pem and server.key: TCP endpoints demand "
                        "mutual TLS with a client certificate of that CA")
    parser.add_argument("--idle-timeout", type=float, default=0.0,
                        help="stop when no call came for this many seconds (0: never; the host's heartbeat calls)")
    agent = parser.add_mutually_exclusive_group()
    agent.add_argument("--agent-socket", help="Unix socket for the agent-side endpoint (agent_methods only)")
    agent.add_argument("--agent-tcp", metavar="HOST:PORT", help="TCP address of the agent-side endpoint")
    parser.add_argument("--agent-token-file", help="file holding the agent-side token")
    parser.add_argument("--max-message-size", type=int, default=256 * 1024 * 1024, help="largest accepted frame (bytes)")
    parser.add_argument("--no-lifeline", action="store_true", help="do not exit when stdin closes (manual use)")
    parser.add_argument("--log-level", default="WARNING", help="logging level on stderr (default WARNING)")
    return parser


def _read_token(path: str) -> bytes:
    token = Path(path).read_bytes().strip()
    if len(token) < 16:
        raise SystemExit(f"token file {path} holds no usable token")
    return token


def _daemon_kwargs(socket_path: str | None, tcp: str | None) -> dict[str, Any]:
    if socket_path:
        if len(os.fsencode(socket_path)) >= 108:
            raise SystemExit(f"socket path too long for AF_UNIX (max 107 bytes): {socket_path}")
        try:
            os.unlink(socket_path)  # a server killed by a signal leaves its socket behind
        except FileNotFoundError:
            pass
        return {"unixsocket": socket_path}
    host, _, port = (tcp or "").rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"--tcp wants HOST:PORT, not {tcp!r}")
    return {"host": host.strip("[]"), "port": int(port)}


def _location(daemon: Any) -> str:
    where = daemon.locationStr
    return f"unix:{where[len('./u:'):]}" if where.startswith("./u:") else f"tcp:{where}"


def _watch_lifeline(stop: threading.Event) -> None:
    try:
        while os.read(0, 4096):
            pass
    except OSError:
        pass
    log.info("lifeline closed: the host is gone")
    stop.set()


def _watch_idle(daemons: list[Any], limit: float, stop: threading.Event) -> None:
    """Set ``stop`` once no daemon has had a request for ``limit`` seconds."""
    while not stop.wait(min(1.0, limit / 4)):
        if time.monotonic() - max(d.last_request for d in daemons) > limit:
            log.warning("no call for %.0f s: the host is gone; stopping", limit)
            stop.set()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and serve."""
    return serve(build_parser().parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    """Run the server until shutdown() or the lifeline closes."""
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from Pyro5 import config as pyro_config

    from .daemon import GuardedDaemon
    from .objects import Control
    from ..protocol import CONTROL_OBJECT, READY_PREFIX, harden_pyro5

    harden_pyro5()  # frames decode to plain data; only the codec rebuilds values
    pyro_config.SERIALIZER = "json"
    pyro_config.SERVERTYPE = "thread"
    pyro_config.MAX_MESSAGE_SIZE = args.max_message_size
    pyro_config.DETAILED_TRACEBACK = False
    pyro_config.SOCK_NODELAY = True
    pyro_config.THREADPOOL_SIZE = 64

    stop = threading.Event()
    tls = None
    if args.tls_dir:
        from ..tls import server_context

        tls = server_context(args.tls_dir)
    elif args.tcp or args.agent_tcp:
        log.warning("serving TCP without TLS: only for a loopback test, never across nodes")
    daemon = GuardedDaemon(_read_token(args.token_file), tls=tls if args.tcp else None,
                           **_daemon_kwargs(args.socket, args.tcp))
    agent_daemon = None
    if args.agent_socket or args.agent_tcp:
        if not args.agent_token_file:
            raise SystemExit("--agent-socket/--agent-tcp needs --agent-token-file")
        agent_daemon = GuardedDaemon(_read_token(args.agent_token_file), tls=tls if args.agent_tcp else None,
                                     **_daemon_kwargs(args.agent_socket, args.agent_tcp))
    control = Control(daemon, stop, agent_daemon)
    daemon.register(control, CONTROL_OBJECT)

    daemons = [d for d in (daemon, agent_daemon) if d is not None]
    for d in daemons:
        threading.Thread(target=d.requestLoop, name="pyro-loop", daemon=True).start()
    if not args.no_lifeline:
        threading.Thread(target=_watch_lifeline, args=(stop,), name="lifeline", daemon=True).start()
    if args.idle_timeout > 0:
        threading.Thread(target=_watch_idle, args=(daemons, args.idle_timeout, stop), name="idle", daemon=True).start()

    ready = {"pid": os.getpid(), "host": _location(daemon)}
    if agent_daemon is not None:
        ready["agent"] = _location(agent_daemon)
    sys.stdout.write(READY_PREFIX + json.dumps(ready) + "\n")
    sys.stdout.flush()
    os.dup2(2, 1)  # from now on, what the benchmark prints goes to the log, not the ready pipe

    stop.wait()

    def wind_down() -> None:  # connections first: a client mid-call sees the server go, not its objects vanish
        for d in daemons:
            d.shutdown()
        control.close_all()

    # a benchmark's close() or Pyro5's shutdown must not keep a server whose host is gone alive
    closer = threading.Thread(target=wind_down, name="wind-down", daemon=True)
    closer.start()
    closer.join(_WIND_DOWN_SECONDS)
    for path in (args.socket, args.agent_socket):
        if path:
            try:
                os.unlink(path)
            except OSError:
                pass
    sys.stderr.flush()
    os._exit(0)  # benchmark threads must not keep a stopped server alive
