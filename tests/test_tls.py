"""The cross-node channel: TCP with mutual TLS from per-run certificates, and the token on top.

Each defence has a test that fails without it: a plain-TCP client, a client
without a certificate or with another run's, a server whose certificate is not
the pinned one, a wrong token, and a frame the guard refuses, all over TCP.
"""

from __future__ import annotations

import socket
import ssl
import threading

import pytest
from Pyro5 import protocol as pyro_protocol

from dacstyle import errors
from dacstyle.container.client import Server
from dacstyle.container.client.certs import RunCA
from dacstyle.container.client.channel import Channel
from dacstyle.container.protocol import CONTROL_OBJECT
from dacstyle.container.tls import ClientTLS
from dacstyle.runtimes.process import ProcessRuntime
from dacstyle.testing import probe_benchmark

from test_channel_guard import answer, handshake_frame, read_until_closed, reply_type


@pytest.fixture
def tcp_server(no_leftovers):
    with Server.start(ProcessRuntime(), tcp="127.0.0.1:0", call_timeout=10) as server:
        yield server


def address(server: Server) -> tuple[str, int]:
    host, _, port = server.channel.location[len("tcp:"):].rpartition(":")
    return host, int(port)


def tls_socket(server: Server, context: ssl.SSLContext | None = None) -> ssl.SSLSocket:
    """A raw TLS connection with the run's client certificate (or ``context``)."""
    if context is None:
        context = ClientTLS.from_folder(server.server_dir.path / "client", server.channel.tls.server_fingerprint).context
    raw = socket.create_connection(address(server), timeout=10)
    return context.wrap_socket(raw)


def test_tcp_endpoint_serves_over_mutual_tls(tcp_server):
    assert tcp_server.channel.location.startswith("tcp:127.0.0.1:") and not tcp_server.channel.location.endswith(":0")
    assert tcp_server.channel.tls is not None
    probe = tcp_server.create(probe_benchmark())
    assert probe.echo((1, b"x")) == (1, b"x")
    with tls_socket(tcp_server) as raw:
        assert raw.version() in ("TLSv1.2", "TLSv1.3")
        raw.sendall(handshake_frame(tcp_server.server_dir.token()))
        assert answer(raw)[0] == pyro_protocol.MSG_CONNECTOK


def test_plain_tcp_is_refused_even_with_the_token(tcp_server):
    with socket.create_connection(address(tcp_server), timeout=10) as raw:
        raw.sendall(handshake_frame(tcp_server.server_dir.token()))
        data, closed = read_until_closed(raw)
    assert closed and reply_type(data) != pyro_protocol.MSG_CONNECTOK


def test_a_client_without_a_certificate_is_refused(tcp_server):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_verify_locations(cafile=tcp_server.server_dir.path / "host" / "ca.pem")
    with pytest.raises((ssl.SSLError, OSError)):
        with tls_socket(tcp_server, context) as raw:
            raw.sendall(handshake_frame(tcp_server.server_dir.token()))
            answer(raw)


def test_a_certificate_of_another_run_is_refused(tcp_server, tmp_path):
    RunCA().write_client(tmp_path)  # a real client certificate, from another run's CA
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.load_cert_chain(tmp_path / "client.pem", tmp_path / "client.key")
    context.load_verify_locations(cafile=tcp_server.server_dir.path / "host" / "ca.pem")
    with pytest.raises((ssl.SSLError, OSError)):
        with tls_socket(tcp_server, context) as raw:
            raw.sendall(handshake_frame(tcp_server.server_dir.token()))
            answer(raw)


def test_a_server_that_is_not_the_pinned_one_is_refused(tcp_server):
    pinned_elsewhere = ClientTLS.from_folder(tcp_server.server_dir.path / "client", "sha256:" + "0" * 64)
    channel = Channel(tcp_server.channel.location, tcp_server.server_dir.token(), call_timeout=10, tls=pinned_elsewhere)
    proxy = channel.proxy(CONTROL_OBJECT)
    with pytest.raises(errors.AuthenticationError, match="TLS"):
        channel.invoke(proxy, threading.Lock(), "hello", (), None)
    proxy._pyroRelease()


def test_the_token_is_still_required_over_tls(tcp_server):
    channel = Channel(tcp_server.channel.location, "wrong-token-" + "y" * 20, call_timeout=10, tls=tcp_server.channel.tls)
    proxy = channel.proxy(CONTROL_OBJECT)
    with pytest.raises(errors.AuthenticationError):
        channel.invoke(proxy, threading.Lock(), "hello", (), None)
    proxy._pyroRelease()


def test_the_frame_guard_holds_over_tls(tcp_server):
    """Across nodes anyone may connect: a compressed or oversized handshake over TLS is dropped too."""
    token = tcp_server.server_dir.token()
    for frame in (handshake_frame(token, flags=pyro_protocol.FLAGS_COMPRESSED), handshake_frame(token, pad=64 * 1024)):
        with tls_socket(tcp_server) as raw:
            try:
                raw.sendall(frame)
                data, closed = read_until_closed(raw)
            except (ssl.SSLEOFError, ConnectionError):  # dropped while the frame was still being sent
                data, closed = b"", True
        assert closed and reply_type(data) != pyro_protocol.MSG_CONNECTOK


def test_neither_token_nor_payload_crosses_the_network_in_clear(tcp_server):
    """Every byte between host and server, captured by a relay on the path, holds neither secret."""
    captured = bytearray()
    relay = socket.create_server(("127.0.0.1", 0))
    target = address(tcp_server)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                captured.extend(chunk)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        client, _ = relay.accept()
        upstream = socket.create_connection(target)
        threads = [threading.Thread(target=pump, args=pair) for pair in ((client, upstream), (upstream, client))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        client.close()
        upstream.close()

    acceptor = threading.Thread(target=accept)
    acceptor.start()
    secret_payload = "payload-" + "q" * 40
    channel = Channel(f"tcp:127.0.0.1:{relay.getsockname()[1]}", tcp_server.server_dir.token(), call_timeout=10,
                      tls=tcp_server.channel.tls)
    proxy = channel.proxy(CONTROL_OBJECT)
    try:
        channel.invoke(proxy, threading.Lock(), "hello", (), None)
        with pytest.raises(errors.DacstyleError):  # the payload travels even when the call fails on the server
            channel.unwrap(channel.invoke(proxy, threading.Lock(), "create", ({"name": secret_payload},), None))
    finally:
        proxy._pyroRelease()
        acceptor.join(30)
        relay.close()
    assert len(captured) > 1000  # the TLS handshakes and the frames went through the relay
    assert tcp_server.server_dir.token().encode() not in captured
    assert secret_payload.encode() not in captured
