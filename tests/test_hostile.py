"""Hostile and careless peers: sockets that never authenticate must not lock out the clients that do.

Attacks come from 127.0.0.2 (a loopback address of its own), legitimate clients from 127.0.0.1; only loopback
addresses are used, and every socket and process is closed by the test.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator

import pytest
from conftest import PASSWORD, ServerProcess

import cyberdb
from cyberdb import cli, protocol
from cyberdb.server import admission

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


def authenticated_socket(port: int, password: str) -> socket.socket:
    """A raw socket that completed the handshake (the sans-IO client session does the protocol)."""
    session = protocol.ClientSession(password, False)
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(session.start())
    while not session.ready:
        session.feed(sock.recv(65536))
        out = session.handshake()
        if out:
            sock.sendall(out)
    return sock


def test_a_trickled_frame_is_cut_off_and_its_bytes_freed(in_process) -> None:  # type: ignore[no-untyped-def]
    db = cyberdb.Server()
    db.set_limits(min_frame_rate=100_000)
    in_process(db)
    sock = authenticated_socket(db.port, PASSWORD)
    try:
        sock.sendall(struct.pack("!I", 60 << 20) + b"\x00" * 200_000)  # announces 60 MiB, sends 200 kB
        deadline = time.monotonic() + 20  # bounds the test; the server should cut it ~2-3 s in
        closed = False
        while time.monotonic() < deadline and not closed:
            time.sleep(0.2)  # the trickle itself: one byte every 0.2 s
            try:
                sock.sendall(b"\x00")
            except OSError:
                closed = True
        assert closed, "the server kept a trickling connection"
        assert db.info()["partial_bytes"] == 0  # what it held is released
        client = cyberdb.connect(port=db.port, password=PASSWORD)
        with client.get_proxy() as proxy:  # and everyone else is served as before
            proxy.create_cyberdict("ok")["k"] = 1
        client.close()
    finally:
        sock.close()


def test_unfinished_frames_are_capped_across_connections(in_process) -> None:  # type: ignore[no-untyped-def]
    db = cyberdb.Server()
    db.set_limits(max_partial_bytes=1 << 20)
    in_process(db)
    socks = [authenticated_socket(db.port, PASSWORD) for _ in range(3)]
    try:
        for sock in socks:  # 3 x 600 kB of unfinished 10 MiB frames: the one passing 1 MiB is closed
            sock.sendall(struct.pack("!I", 10 << 20) + b"\x00" * 600_000)
        assert sum(closed_by_server(sock, 5) for sock in socks) >= 1
        assert db.info()["partial_bytes"] <= 1 << 20
    finally:
        for sock in socks:
            sock.close()


def guess(port: int, password: str, source: str = ATTACKER) -> str:
    """One authentication attempt from ``source``: "ok", or the error the server answered with."""
    session = protocol.ClientSession(password, False)
    with socket.socket() as sock:
        sock.settimeout(10)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(session.start())
        try:
            while not session.ready:
                data = sock.recv(65536)
                if not data:
                    return "closed"
                session.feed(data)
                out = session.handshake()
                if out:
                    sock.sendall(out)
        except cyberdb.CyberDBError as exc:
            return str(exc)
    return "ok"


def test_password_guessing_is_slowed_then_banned_and_logged_in_summary(
        in_process, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(admission.Guard, "MAX_DELAY", 0.05)  # the growing delay, shortened for the test
    caplog.set_level(logging.INFO, logger="cyberdb")
    db = in_process()
    answers = [guess(db.port, "wrong") for _ in range(15)]
    assert all("authentication failed" in a for a in answers[:admission.Guard.BAN_AFTER]), answers
    # past the threshold the address is refused before any handshake: no more guesses get checked
    assert all("too many failed authentications" in a for a in answers[admission.Guard.BAN_AFTER:]), answers
    assert guess(db.port, PASSWORD, source="127.0.0.1") == "ok"  # others are not locked out
    lines = [r for r in caplog.records if ATTACKER in r.getMessage() and "failed authentication" in r.getMessage()]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]  # one line per address per minute, not 15
    # the refusals while banned are summed up the same way: one line, not one per refused connection
    refused = [r for r in caplog.records if ATTACKER in r.getMessage() and "connection(s) refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in refused]
    for _ in range(20):
        guess(db.port, "wrong")
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING and ATTACKER in r.getMessage()]) <= 3


def test_the_library_prints_nothing_unless_logging_is_configured() -> None:
    code = textwrap.dedent("""
        import cyberdb
        db = cyberdb.Server()
        db.start(port=0, password="right")
        for _ in range(5):
            try:
                cyberdb.connect(port=db.port, password="wrong")
            except cyberdb.AuthenticationError:
                pass
        db.stop()
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "" and result.stderr == ""


def test_slow_commands_are_in_the_slow_log(in_process, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    db = cyberdb.Server()
    db.set_slowlog(threshold=0.001)
    in_process(db)
    client = cyberdb.connect(port=db.port, password=PASSWORD)
    try:
        with client.get_proxy() as proxy:
            big = proxy.create_cyberlist("big", list(range(300_000)))
            assert big.count(-1) == 0  # O(n): well over a millisecond
            entries = proxy.slowlog()
    finally:
        client.close()
    counted = [e for e in entries if e["command"] == "list.count"]
    assert counted and counted[0]["table"] == "big" and counted[0]["seconds"] > 0.001
    assert counted[0]["client"].startswith("127.0.0.1:")
    assert db.slowlog(1)[0]["command"] == entries[0]["command"]  # newest first, the same through the API
    assert cli.main(["slowlog", "--port", str(db.port), "--password", PASSWORD]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert any(line["command"] == "list.count" for line in lines)


def test_max_memory_refuses_writes_but_not_reads_or_deletions(in_process) -> None:  # type: ignore[no-untyped-def]
    db = cyberdb.Server()
    in_process(db)
    client = cyberdb.connect(port=db.port, password=PASSWORD)
    try:
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict("d")
            d["small"] = 1
            with open("/proc/self/statm") as statm:
                rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
            db.set_max_memory(rss + (100 << 20))
            refused = None
            for i in range(40):  # 40 x 10 MB: far past the limit
                try:
                    d[i] = os.urandom(10 << 20)
                except cyberdb.MemoryLimitError as exc:
                    refused = exc
                    break
                time.sleep(0.15)  # lets the 100 ms memory sample see the growth (a sampling period, no race)
            assert refused is not None and "max_memory" in str(refused)
            assert isinstance(refused, MemoryError)
            assert d["small"] == 1  # reads go on
            for key in list(d.keys()):
                if key != "small":
                    del d[key]  # deletions go on
            db.set_max_memory(0)
            d["after"] = 2  # no limit: writes again
            assert d["after"] == 2
    finally:
        client.close()
