"""Hostile and careless peers: sockets that never authenticate must not lock out the clients that do.

Attacks come from 127.0.0.2 (a loopback address of its own), legitimate clients from 127.0.0.1; only loopback
addresses are used, and every socket and process is closed by the test.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from conftest import ServerProcess

import cyberdb

ATTACKER = "127.0.0.2"
MAX_CON = 20
PER_IP = 16


def idle_sockets(port: int, count: int) -> list[socket.socket]:
    """``count`` connections from ATTACKER that send nothing (slowloris)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind((ATTACKER, 0))
        sock.connect(("127.0.0.1", port))
        socks.append(sock)
    return socks


def closed_by_server(sock: socket.socket, timeout: float) -> bool:
    """True if the server closed ``sock`` (after a refusal, or a timeout) within ``timeout`` seconds."""
    sock.settimeout(timeout)
    try:
        while sock.recv(4096):
            pass
        return True
    except TimeoutError:
        return False
    except OSError:  # reset
        return True


@pytest.fixture
def attacked(make_server) -> Iterator[tuple[ServerProcess, list[socket.socket]]]:  # type: ignore[no-untyped-def]
    srv = make_server(extra=["--max-con", str(MAX_CON), "--handshake-timeout", "3",
                             "--max-unauthenticated-per-ip", str(PER_IP)])
    socks = idle_sockets(srv.port, 10 * MAX_CON)
    try:
        yield srv, socks
    finally:
        for sock in socks:
            sock.close()


def test_sockets_that_never_authenticate_do_not_lock_out_clients(
        attacked: tuple[ServerProcess, list[socket.socket]]) -> None:
    srv, socks = attacked
    ok = 0
    for _ in range(100):  # each a new client: a new connection and handshake
        client = srv.connect(retry=cyberdb.Retry(timeout=0))
        try:
            with client.get_proxy() as proxy:
                proxy.tables()
            ok += 1
        except cyberdb.ConnectionError:
            pass
        finally:
            client.close()
    assert ok >= 99, f"only {ok} of 100 clients got in"
    # the attacker holds at most its per-address budget; the rest were refused at once
    refused = sum(closed_by_server(sock, 0.05) for sock in socks)
    assert refused >= len(socks) - PER_IP


def test_the_handshake_deadline_closes_idle_unauthenticated_sockets(
        attacked: tuple[ServerProcess, list[socket.socket]]) -> None:
    _srv, socks = attacked
    # the ones in the handshake are closed by --handshake-timeout 3 (15 s only bounds the test)
    assert all(closed_by_server(sock, 15) for sock in socks)


def test_set_limits_validates() -> None:
    db = cyberdb.Server()
    with pytest.raises(ValueError):
        db.set_limits(max_unauthenticated=0)
    with pytest.raises(ValueError):
        db.set_limits(handshake_timeout=0)
