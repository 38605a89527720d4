"""Careless clients (issue 8, item 6): values over the frame limit, a peer that is not a CyberDB server, and
socket timeouts that must not slow down pooled connections or be ignored while connecting."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from conftest import ServerProcess

import cyberdb
from cyberdb import protocol
from cyberdb.crypto import TAG_SIZE

_OVER_LIMIT = protocol.MAX_FRAME + (1 << 20)


# ---- a value over the frame limit ----------------------------------------------------------------------------------

@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_check_size_refuses_exactly_what_exceeds_the_frame_limit(encrypt: bool) -> None:
    session = protocol.ClientSession("pw", encrypt, max_frame=1000)
    largest = 1000 - protocol.HEADER_SIZE - (TAG_SIZE if encrypt else 0)
    session.check_size(largest)
    with pytest.raises(ValueError, match="exceeds the frame limit of 1000 bytes"):
        session.check_size(largest + 1)


def test_a_value_over_the_frame_limit_is_refused_before_sending(server: ServerProcess, name: str) -> None:
    client = server.connect()
    try:
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name)
            with pytest.raises(ValueError, match=f"frame limit of {protocol.MAX_FRAME} bytes .*MAX_FRAME"):
                d["big"] = b"x" * _OVER_LIMIT
            # nothing was sent, nothing broke: the same proxy goes on, and the value is not there
            d["small"] = 1
            assert d.todict() == {"small": 1}
            proxy.delete_table(name)
    finally:
        client.close()


def test_a_pipeline_with_a_value_over_the_limit_sends_none_of_it(plain_server: ServerProcess, name: str) -> None:
    client = plain_server.connect()
    try:
        with client.get_proxy() as proxy:
            proxy.create_cyberlist(name)
            with pytest.raises(ValueError, match="frame limit"), proxy.pipeline() as pipe:
                lst = pipe.get_cyberlist(name)
                lst.append(1)
                lst.append(b"x" * _OVER_LIMIT)
            assert proxy.get_cyberlist(name).tolist() == []
            proxy.delete_table(name)
    finally:
        client.close()


# ---- a peer that is not a CyberDB server ---------------------------------------------------------------------------

@contextmanager
def _tcp_server(handle: Callable[[socket.socket], None]) -> Iterator[int]:
    """A loopback TCP server running ``handle(conn)`` for each connection in a thread; yields its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.1)
    stop = threading.Event()
    conns: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _addr = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conns.append(conn)
            handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield int(listener.getsockname()[1])
    finally:
        stop.set()
        thread.join(10)
        listener.close()
        for conn in conns:
            conn.close()


def _http_400(conn: socket.socket) -> None:
    conn.settimeout(5)
    try:
        conn.recv(4096)
        conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    except OSError:
        pass


def test_an_http_server_is_named_as_not_a_cyberdb_server() -> None:
    with _tcp_server(_http_400) as port:
        expected = f"at 127.0.0.1:{port} did not answer like a CyberDB server .*HTTP/1.1 400"
        with pytest.raises(cyberdb.ProtocolError, match=expected):
            cyberdb.connect("127.0.0.1", port, password="pw")
        client = cyberdb.Client("127.0.0.1", port, password="pw")
        proxy = client.get_proxy()
        with pytest.raises(cyberdb.ProtocolError, match=expected):  # at once: asking again cannot help
            proxy.connect()
        client.close()


# ---- socket_timeout --------------------------------------------------------------------------------------------------

def test_reusing_a_pooled_connection_does_not_wait_for_socket_timeout(plain_server: ServerProcess) -> None:
    client = plain_server.connect(socket_timeout=2)
    try:
        conn = client.pool.get()
        client.pool.release(conn)
        for _ in range(20):
            # a check that waited would wait the 2 s timeout and then take the timeout for a closed connection,
            # replacing it: the same connection coming back proves the check did not wait
            again = client.pool.get()
            assert again is conn
            assert again.sock.gettimeout() == 2  # and the check left the socket's timeout as it was
            client.pool.release(again)
            with client.get_proxy() as proxy:
                assert isinstance(proxy.tables(), dict)
    finally:
        client.close()


def test_with_socket_timeout_a_connection_the_server_closed_is_still_replaced(make_server: Callable[...,
                                                                              ServerProcess]) -> None:
    srv = make_server()
    client = srv.connect(socket_timeout=2)
    try:
        conn = client.pool.get()
        client.pool.release(conn)
        srv.stop()
        srv.start()
        fresh = client.pool.get()
        assert fresh is not conn
        client.pool.release(fresh)
        with client.get_proxy() as proxy:
            assert isinstance(proxy.tables(), dict)
    finally:
        client.close()


def _silent(conn: socket.socket) -> None:
    """Accept and never answer (kept open until the server ends)."""


def test_connect_and_handshake_honour_socket_timeout() -> None:
    # create_connection() gets the same timeout and leaves it on the socket the handshake uses
    with _tcp_server(_silent) as port:
        # the error names the timeout the handshake ran under: socket_timeout's, not a fixed 10 s
        with pytest.raises(cyberdb.TimeoutError, match=r"handshake timed out after 0\.2 s"):
            cyberdb.connect("127.0.0.1", port, password="pw", socket_timeout=0.2)

