"""The server against real clients and hostile raw sockets: authentication, encryption, limits, bad input."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import struct
import threading
import time
from pathlib import Path

import pytest
from conftest import PASSWORD, ServerProcess, free_port

import cyberdb
from cyberdb import protocol
from cyberdb.codec import encode_value
from cyberdb.commands import BY_NAME


def _closed_by_peer(sock: socket.socket, timeout: float = 15.0) -> bool:
    """Read until the server closes the connection; True if it did within ``timeout``."""
    sock.settimeout(timeout)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _still_serves(srv: ServerProcess) -> None:
    client = srv.connect()
    with client.get_proxy() as proxy:
        assert isinstance(proxy.tables(), dict)
    client.close()


# ---- authentication and encryption ---------------------------------------------------------------------------

def test_wrong_password_is_refused_by_connect(server: ServerProcess) -> None:
    with pytest.raises(cyberdb.AuthenticationError):
        cyberdb.connect(server.host, server.port, password="wrong", encrypt=server.encrypt)


def test_wrong_password_is_refused_by_proxy_connect(server: ServerProcess) -> None:
    client = cyberdb.Client(server.host, server.port, password="wrong", encrypt=server.encrypt)
    proxy = client.get_proxy()
    with pytest.raises(cyberdb.AuthenticationError):
        proxy.connect()


def test_encryption_mismatch_is_a_clear_client_error(server: ServerProcess) -> None:
    with pytest.raises(cyberdb.EncryptionMismatchError, match="encrypt"):
        cyberdb.connect(server.host, server.port, password=PASSWORD, encrypt=not server.encrypt)


def test_password_never_on_the_wire(server: ServerProcess) -> None:
    """Record every byte of a session through a relay and look for the password."""
    relay = socket.create_server(("127.0.0.1", 0))
    seen = bytearray()
    port = relay.getsockname()[1]

    def pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                seen.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def accept() -> None:
        conn, _ = relay.accept()
        upstream = socket.create_connection((server.host, server.port))
        t = threading.Thread(target=pump, args=(upstream, conn))
        t.start()
        pump(conn, upstream)
        t.join()
        conn.close()
        upstream.close()

    t = threading.Thread(target=accept)
    t.start()
    client = cyberdb.connect("127.0.0.1", port, password=PASSWORD, encrypt=server.encrypt)
    with client.get_proxy() as proxy:
        proxy.create_cyberdict(f"secret-{os.getpid()}-{server.encrypt}", {"k": "plaintext-marker"})
    client.close()
    t.join(10)
    relay.close()
    assert PASSWORD.encode() not in seen
    assert len(seen) > 0
    assert (b"plaintext-marker" in seen) is (not server.encrypt)


# ---- whitelist ------------------------------------------------------------------------------------------------

def refusal_from(source: str, port: int) -> bytes:
    """Connect from loopback address ``source`` (e.g. 127.0.0.2) and return what the server sends before closing."""
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        data = b""
        while chunk := sock.recv(4096):
            data += chunk
        return data


def test_whitelist_refuses_other_addresses_but_never_127_0_0_1(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(extra=["--whitelist", "10.0.0.0/8"])
    assert b"whitelist" in refusal_from("127.0.0.2", srv.port)
    _still_serves(srv)  # from 127.0.0.1: always allowed, as in cyberdb 0.9.3


def test_whitelist_accepts_cidr_ranges_with_encryption(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(encrypt=True, extra=["--whitelist", "127.0.0.0/8", "10.1.2.3"])
    _still_serves(srv)


def test_encryption_defaults_to_loopback_whitelist_in_process() -> None:
    db = cyberdb.Server()
    db.start(host="127.0.0.1", port=0, password="pw", encrypt=True)
    try:
        assert db._ctx is not None and db._ctx.whitelist is not None
        assert [str(n) for n in db._ctx.whitelist] == ["127.0.0.1/32", "::1/128"]
        assert db.port is not None
        assert b"whitelist" in refusal_from("127.0.0.2", db.port)
        db.set_ip_whitelist(["192.0.2.0/24", "127.0.0.2"])  # applies at once to new connections
        client = cyberdb.connect("127.0.0.1", db.port, password="pw", encrypt=True)  # loopback stays allowed
        client.close()
        with socket.socket() as sock:  # and 127.0.0.2 is now let in: it is in the handshake, not refused
            sock.bind(("127.0.0.2", 0))
            sock.connect(("127.0.0.1", db.port))
            deadline = time.monotonic() + 10
            while db.info()["unauthenticated"] != 1:
                assert time.monotonic() < deadline, "the connection from 127.0.0.2 never reached the handshake"
                time.sleep(0.01)  # polling a readiness condition
    finally:
        db.stop()


def test_set_ip_whitelist_rejects_garbage() -> None:
    db = cyberdb.Server()
    with pytest.raises(ValueError):
        db.set_ip_whitelist(["not-an-ip"])
    with pytest.raises(TypeError):
        db.set_ip_whitelist("127.0.0.1")  # type: ignore[arg-type]


# ---- hostile input --------------------------------------------------------------------------------------------

def test_garbage_bytes_close_the_connection_and_the_server_lives_on(plain_server: ServerProcess) -> None:
    for garbage in (os.urandom(3000), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x00\x00\x05hello"):
        with socket.create_connection((plain_server.host, plain_server.port)) as sock:
            sock.sendall(garbage)
            assert _closed_by_peer(sock)
    _still_serves(plain_server)


def test_oversized_frame_before_auth_is_refused_without_buffering(plain_server: ServerProcess) -> None:
    with socket.create_connection((plain_server.host, plain_server.port)) as sock:
        sock.sendall(struct.pack("!I", protocol.MAX_PREAUTH + 1) + b"x" * 100)
        assert _closed_by_peer(sock)
    _still_serves(plain_server)


def test_oversized_frame_after_auth_closes_the_connection(server: ServerProcess) -> None:
    conn = cyberdb.Connection(server.host, server.port, PASSWORD, server.encrypt)
    conn.sock.sendall(struct.pack("!I", protocol.MAX_FRAME + 1))
    assert _closed_by_peer(conn.sock)
    conn.close()
    _still_serves(server)


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def test_pickle_payload_before_auth_executes_nothing(plain_server: ServerProcess, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Exploit(marker))
    for data in (payload, protocol.encode_frame(payload), protocol.encode_frame(b"CYDB" + payload)):
        with socket.create_connection((plain_server.host, plain_server.port)) as sock:
            sock.sendall(data)
            assert _closed_by_peer(sock)
    assert not marker.exists()
    _still_serves(plain_server)


def test_pickle_payload_after_auth_executes_nothing(server: ServerProcess, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    conn = cyberdb.Connection(server.host, server.port, PASSWORD, server.encrypt)
    session = conn._session
    conn.sock.sendall(session.request(1, BY_NAME["dict.setitem"].op, pickle.dumps(_Exploit(marker))))
    assert _closed_by_peer(conn.sock)
    conn.close()
    assert not marker.exists()
    _still_serves(server)


def test_request_before_auth_is_not_executed(plain_server: ServerProcess, name: str) -> None:
    from cyberdb.codec import encode_value

    body = struct.pack("!IH", 1, BY_NAME["db.create"].op) + encode_value([name, "dict", {}])
    with socket.create_connection((plain_server.host, plain_server.port)) as sock:
        sock.sendall(protocol.encode_frame(body))
        assert _closed_by_peer(sock)
    client = plain_server.connect()
    with client.get_proxy() as proxy:
        assert name not in proxy.tables()
    client.close()


def test_unknown_command_closes_only_that_connection(server: ServerProcess) -> None:
    conn = cyberdb.Connection(server.host, server.port, PASSWORD, server.encrypt)
    conn.sock.sendall(conn._session.request(1, 65000, b"\x90"))
    assert _closed_by_peer(conn.sock)
    conn.close()
    _still_serves(server)


def test_wrong_arity_is_a_type_error_and_the_connection_stays_usable(server: ServerProcess, name: str) -> None:
    conn = cyberdb.Connection(server.host, server.port, PASSWORD, server.encrypt)
    try:
        conn.call(BY_NAME["db.create"].op, encode_value([name, "dict", {}]), 1, 1)
        with pytest.raises(TypeError, match="arguments"):
            conn.call(BY_NAME["dict.getitem"].op, encode_value([name, 1, 2, 3]), 2, 2)
        with pytest.raises(cyberdb.TableNotFoundError):
            conn.call(BY_NAME["dict.len"].op, encode_value([name + "-missing"]), 3, 3)
        assert conn.call(BY_NAME["dict.len"].op, encode_value([name]), 4, 4) == 0
        conn.call(BY_NAME["db.delete"].op, encode_value([name]), 5, 5)
    finally:
        conn.close()


# ---- limits and settings --------------------------------------------------------------------------------------

def test_max_con_is_a_real_limit(make_server) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(extra=["--max-con", "2"])
    a = cyberdb.Connection(srv.host, srv.port, PASSWORD, False)
    b = cyberdb.Connection(srv.host, srv.port, PASSWORD, False)
    with pytest.raises(cyberdb.ConnectionError, match="too many connections"):
        cyberdb.Connection(srv.host, srv.port, PASSWORD, False)
    a.close()
    assert _wait_until_accepted(srv)
    b.close()


def _wait_until_accepted(srv: ServerProcess) -> bool:
    # the server notices a's close asynchronously: retry the connection until it is accepted (bounded)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            cyberdb.Connection(srv.host, srv.port, PASSWORD, False).close()
            return True
        except cyberdb.ConnectionError:
            continue
    return False


def test_idle_timeout_closes_connections_and_the_pool_recovers(make_server, name: str) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(extra=["--timeout", "0.3"])
    client = srv.connect()
    with client.get_proxy() as proxy:
        proxy.create_cyberdict(name, {"a": 1})
    pooled = client.pool._idle[-1]
    assert _closed_by_peer(pooled.sock, timeout=10)  # the server closed the idle connection
    with client.get_proxy() as proxy:  # the pool notices and replaces it: no error for the caller
        assert proxy.get_cyberdict(name)["a"] == 1
    client.close()


def test_without_password_only_loopback() -> None:
    db = cyberdb.Server()
    with pytest.raises(ValueError, match="password"):
        db.start(host="0.0.0.0", port=0)
    db.start(host="127.0.0.1", port=0)  # allowed: loopback
    try:
        client = cyberdb.connect("127.0.0.1", db.port)
        with client.get_proxy() as proxy:
            proxy.create_cyberlist("x", [1])
            assert proxy.get_cyberlist("x").tolist() == [1]
        client.close()
    finally:
        db.stop()


def test_start_returns_listening_and_a_taken_port_is_a_clear_error() -> None:
    db = cyberdb.Server()
    db.start(port=0, password="pw")
    try:
        client = cyberdb.connect("127.0.0.1", db.port, password="pw")  # no sleep needed
        client.close()
        other = cyberdb.Server()
        with pytest.raises(OSError, match="cannot listen"):
            other.start(port=db.port, password="pw")
    finally:
        db.stop()
    assert db.port is None


def test_print_log_logs_connections_and_commands(caplog: pytest.LogCaptureFixture) -> None:
    db = cyberdb.Server()
    caplog.set_level(logging.DEBUG, logger="cyberdb")
    db.start(port=0, password="pw", print_log=True)
    try:
        client = cyberdb.connect("127.0.0.1", db.port, password="pw")
        with client.get_proxy() as proxy:
            proxy.create_cyberdict("logged")
        client.close()
    finally:
        db.stop()
        handler = db._log_handler
        if handler is not None:
            logging.getLogger("cyberdb").removeHandler(handler)
        logging.getLogger("cyberdb").setLevel(logging.NOTSET)
    messages = [r.getMessage() for r in caplog.records]
    assert any("connection from" in m for m in messages)
    assert any("db.create" in m for m in messages)


def test_sigterm_writes_the_backup_first(tmp_path: Path, name: str) -> None:
    backup = tmp_path / "data.cdb"
    port = free_port()
    srv = ServerProcess(port=port, extra=["--backup", str(backup), "--backup-cycle", "3600"])
    try:
        client = srv.connect()
        with client.get_proxy() as proxy:
            proxy.create_cyberdict(name, {"kept": [1, (2, 3)]})
        client.close()
        srv.stop(signal.SIGTERM)
        assert backup.exists()
        srv2 = ServerProcess(port=port, extra=["--load", str(backup)])
        try:
            client = srv2.connect()
            with client.get_proxy() as proxy:
                assert proxy.get_cyberdict(name).todict() == {"kept": [1, (2, 3)]}
            client.close()
        finally:
            srv2.stop()
    finally:
        srv.stop()


# ---- resource limits against authenticated peers --------------------------------------------------------------

def _rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_pipelined_requests_from_a_peer_that_does_not_read_do_not_grow_the_server(
        make_server, name: str) -> None:  # type: ignore[no-untyped-def]
    srv = make_server()
    client = srv.connect()
    with client.get_proxy() as proxy:
        proxy.create_cyberlist(name, [b"x" * 1000] * 1000)  # each tolist() reply is about 1 MB
    before = _rss_bytes(srv.proc.pid)
    conn = cyberdb.Connection(srv.host, srv.port, PASSWORD, False)
    spec = BY_NAME["list.tolist"]
    from cyberdb.codec import encode_value

    payload = encode_value([name])
    conn.sock.sendall(b"".join(conn._session.request(i, spec.op, payload) for i in range(2000)))  # ~30 kB
    with client.get_proxy() as proxy:  # the server has handled the pipelined chunk before answering this
        assert proxy.get_cyberlist(name)[0] == b"x" * 1000
    grown = _rss_bytes(srv.proc.pid) - before
    conn.close()
    client.close()
    assert grown < 200 << 20, f"server grew by {grown >> 20} MiB for 2000 unread 1 MB replies"


def test_an_error_about_a_huge_value_is_a_short_error(plain_server: ServerProcess, name: str) -> None:
    client = plain_server.connect()
    with client.get_proxy() as proxy:
        lst = proxy.create_cyberlist(name, [1])
        with pytest.raises(ValueError, match="more characters"):
            lst.index(b"\0" * (17 << 20))  # repr() of it alone exceeds the 64 MiB frame limit
        assert lst.tolist() == [1]
        proxy.delete_table(name)
    client.close()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_both_event_loops_serve_and_encrypt(make_server, loop: str, name: str) -> None:  # type: ignore[no-untyped-def]
    srv = make_server(encrypt=True, extra=["--loop", loop])
    client = srv.connect()
    with client.get_proxy() as proxy:
        d = proxy.create_cyberdict(name, {"a": (1, {2})})
        d["b"] = None
        assert d.todict() == {"a": (1, {2}), "b": None}
        with pytest.raises(KeyError):
            d["missing"]
    client.close()
