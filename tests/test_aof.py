"""The append-only log: no acknowledged write lost, none applied twice, across crashes, restarts and full disks.

Servers run as real processes (SIGKILL needs one) or in-process (to count fsyncs and to read ``info()``);
every client talks to them over TCP on a free loopback port.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, client_of, proxy_of, serving
from relay import Relay

import cyberdb
from cyberdb import PersistenceError
from cyberdb.server.persist import read_snapshot

WAIT = 30.0  # seconds: deadline of every wait for a condition in this file


def wait_until(condition: Callable[[], bool], what: str, timeout: float = WAIT) -> None:
    """Poll ``condition`` (a readiness check) until it holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def contents(log: Path) -> dict[str, Any]:
    """The tables a fresh server loads from ``log``."""
    with serving(log) as (_db, client), client.get_proxy() as proxy:
        return {name: (proxy.get_cyberdict(name).todict() if kind == "CyberDict" else
                       proxy.get_cyberlist(name).tolist()) for name, kind in proxy.tables().items()}


class Writers:
    """Threads appending numbered records ``[writer, n]`` to CyberList "log"; each remembers what was acknowledged."""

    def __init__(self, connect: Callable[[], cyberdb.Client], count: int) -> None:
        self.acked: list[list[int]] = [[] for _ in range(count)]
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._clients = [connect() for _ in range(count)]
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(count)]
        for t in self._threads:
            t.start()

    def _run(self, i: int) -> None:
        try:
            with self._clients[i].get_proxy() as proxy:
                records = proxy.get_cyberlist("log")
                n = 0
                while not self._stop.is_set():
                    records.append([i, n])
                    self.acked[i].append(n)
                    n += 1
        except BaseException as exc:  # noqa: BLE001 - reported by stop()
            self.errors.append(exc)

    def total(self) -> int:
        """Acknowledged appends so far."""
        return sum(len(a) for a in self.acked)

    def stop(self) -> None:
        """Stop and join the threads; raise what any of them raised."""
        self._stop.set()
        for t in self._threads:
            t.join(WAIT)
        for c in self._clients:
            c.close()
        assert not any(t.is_alive() for t in self._threads), "a writer is stuck"
        if self.errors:
            raise self.errors[0]


def check_exactly_once(records: list[Any], acked: list[list[int]]) -> None:
    """Every acknowledged record is present exactly once, and no record is there twice."""
    seen: dict[tuple[int, int], int] = {}
    for record in records:
        key = (record[0], record[1])
        seen[key] = seen.get(key, 0) + 1
    twice = [k for k, n in seen.items() if n > 1]
    assert not twice, f"records applied twice: {twice[:5]}"
    lost = [(i, n) for i, ns in enumerate(acked) for n in ns if (i, n) not in seen]
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:5]}"


# ---- crashes ----------------------------------------------------------------------------------------------------

def test_sigkill_loop_loses_no_acknowledged_write_and_applies_none_twice(tmp_path: Path) -> None:
    log = tmp_path / "data.aof"
    srv = ServerProcess(extra=["--aof", str(log), "--fsync", "always"])
    try:
        with proxy_of(srv) as proxy:
            proxy.create_cyberlist("log")
        writers = Writers(lambda: srv.connect(retry=cyberdb.Retry(timeout=WAIT)), 4)
        try:
            for _cycle in range(20):
                target = writers.total() + 40
                wait_until(lambda t=target: writers.total() >= t or bool(writers.errors), "acknowledged writes")
                acked_before_kill = [list(a) for a in writers.acked]
                srv.stop(signal.SIGKILL)
                srv.start()
                with proxy_of(srv) as proxy:
                    check_exactly_once(proxy.get_cyberlist("log").tolist(), acked_before_kill)
        finally:
            writers.stop()
        with proxy_of(srv) as proxy:
            final = proxy.get_cyberlist("log").tolist()
        check_exactly_once(final, writers.acked)
        assert writers.total() >= 20 * 40
    finally:
        srv.stop()


def test_write_whose_reply_was_lost_in_a_crash_is_answered_from_the_log(tmp_path: Path) -> None:
    # the server ran and logged the append, then died before the client got the reply; after the restart the
    # client re-sends it and the server, having rebuilt its reply cache from the log, answers without running it
    log = tmp_path / "data.aof"
    srv = ServerProcess(extra=["--aof", str(log), "--fsync", "always"])
    relay = Relay(srv.host, srv.port)
    client = cyberdb.connect(relay.host, relay.port, password=srv.password, retry=cyberdb.Retry(timeout=WAIT))
    try:
        with client.get_proxy() as proxy:
            items = proxy.create_cyberlist("items")
            items.append("warm-up")  # the connection is established and idle
            relay.hold_next_reply()
            result: list[Any] = []
            call = threading.Thread(target=lambda: result.append(items.append("once")), daemon=True)
            call.start()
            assert relay.held.wait(WAIT), "the server never answered"
            srv.stop(signal.SIGKILL)
            srv.start()
            relay.drop_held()  # the client sees its connection close and re-sends to the new server
            call.join(WAIT)
            assert result == [None]
            assert items.tolist() == ["warm-up", "once"]
    finally:
        client.close()
        relay.close()
        srv.stop()


def test_sigterm_flushes_the_log_writes_the_snapshot_and_exits_0(tmp_path: Path) -> None:
    log, backup = tmp_path / "data.aof", tmp_path / "data.cdb"
    srv = ServerProcess(extra=["--aof", str(log), "--fsync", "no", "--backup", str(backup)])
    with proxy_of(srv) as proxy:
        d = proxy.create_cyberdict("d")
        for i in range(100):
            d[i] = i
    proc = srv.proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(WAIT) == 0
    srv.stop()
    assert read_snapshot(backup) == {"d": {i: i for i in range(100)}}
    assert contents(log) == {"d": {i: i for i in range(100)}}


def test_locks_and_fencing_tokens_survive_a_crash(tmp_path: Path) -> None:
    log = tmp_path / "data.aof"
    srv = ServerProcess(extra=["--aof", str(log), "--fsync", "always"])
    try:
        with proxy_of(srv) as proxy:
            held = proxy.lock("job", ttl=60)
            assert held.acquire()
            token = held.token
        srv.stop(signal.SIGKILL)
        srv.start()
        with proxy_of(srv) as proxy:
            with pytest.raises(cyberdb.LockTimeoutError):
                proxy.lock("job", ttl=60, timeout=0.05).acquire()
            other = proxy.lock("other", ttl=60)
            assert other.acquire()
            assert other.token is not None and token is not None and other.token > token
    finally:
        srv.stop()


# ---- fsync policies -----------------------------------------------------------------------------------------------

@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Counts every fdatasync/fsync this process makes (the in-process server's log is the only writer)."""
    calls: list[float] = []
    for name in ("fsync", "fdatasync"):
        real = getattr(os, name, None)
        if real is not None:
            def counted(fd: int, real: Callable[[int], None] = real) -> None:
                calls.append(time.monotonic())
                real(fd)
            monkeypatch.setattr(os, name, counted)
    return calls


def test_fsync_always_syncs_before_each_reply(tmp_path: Path, fsyncs: list[float]) -> None:
    with serving(tmp_path / "a.aof", "always") as (_db, client), client.get_proxy() as proxy:
        d = proxy.create_cyberdict("d")
        before = len(fsyncs)
        for i in range(100):
            d[i] = i
            # one client, one write at a time: each reply waited for an fsync of its own
            assert len(fsyncs) >= before + i + 1


def test_fsync_always_shares_one_fsync_among_writes_that_arrive_together(tmp_path: Path, fsyncs: list[float],
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.fdatasync if hasattr(os, "fdatasync") else os.fsync
    slow_name = "fdatasync" if hasattr(os, "fdatasync") else "fsync"

    def slow(fd: int) -> None:  # a disk whose flush takes 20 ms: writes pile up behind it and share the next
        fsyncs.append(time.monotonic())
        time.sleep(0.02)
        real(fd)

    with serving(tmp_path / "g.aof", "always") as (db, client):
        with client.get_proxy() as proxy:
            proxy.create_cyberdict("d")
        monkeypatch.setattr(os, slow_name, slow)
        before = db.info()["append_log"]["fsyncs"]
        per_thread, threads = 25, 8

        def write(t: int) -> None:
            with client.get_proxy() as proxy:
                d = proxy.get_cyberdict("d")
                for i in range(per_thread):
                    d[(t, i)] = i

        workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join(WAIT)
        used = db.info()["append_log"]["fsyncs"] - before
        with client.get_proxy() as proxy:
            assert len(proxy.get_cyberdict("d")) == per_thread * threads
    assert 0 < used < per_thread * threads / 2, f"{used} fsyncs for {per_thread * threads} writes"


def fsyncs_while_writing(log: Path, fsync: str, seconds: float, fsyncs: list[float]) -> tuple[int, float, int]:
    """Write ``d[i] = i`` one at a time for ``seconds`` to a server logging with ``fsync``; return the fsyncs made
    meanwhile (counted before the server stops), the seconds taken and the writes made."""
    with serving(log, fsync) as (_db, client), client.get_proxy() as proxy:
        d = proxy.create_cyberdict("d")
        start, before = time.monotonic(), len(fsyncs)
        i = 0
        while time.monotonic() - start < seconds:
            d[i] = i
            i += 1
        return len(fsyncs) - before, time.monotonic() - start, i


def test_fsync_everysec_syncs_about_once_a_second(tmp_path: Path, fsyncs: list[float]) -> None:
    count, elapsed, i = fsyncs_while_writing(tmp_path / "e.aof", "everysec", 2.5, fsyncs)
    assert 1 <= count <= elapsed + 1, f"{count} fsyncs in {elapsed:.1f} s for {i} writes"


def test_fsync_no_never_syncs_while_serving(tmp_path: Path, fsyncs: list[float]) -> None:
    count, _elapsed, _writes = fsyncs_while_writing(tmp_path / "n.aof", "no", 1.5, fsyncs)
    assert count == 0, "fsync policy 'no' synced"


# ---- damaged logs -------------------------------------------------------------------------------------------------

def make_log(path: Path) -> int:
    """A log whose last record is the append of "last"; return the offset where that record starts."""
    with serving(path) as (_db, client), client.get_proxy() as proxy:
        items = proxy.create_cyberlist("items", [1, 2])
        items.append("x" * 40)
        before = path.stat().st_size
        items.append("last")
        assert path.stat().st_size > before
    return before


def test_torn_last_record_loads_up_to_the_last_whole_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    whole = tmp_path / "whole.aof"
    last = make_log(whole)
    data = whole.read_bytes()
    assert contents(whole) == {"items": [1, 2, "x" * 40, "last"]}
    torn = tmp_path / "torn.aof"
    for cut in range(last, len(data)):
        torn.write_bytes(data[:cut])
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cyberdb"):
            assert contents(torn) == {"items": [1, 2, "x" * 40]}, cut
        if cut > last:
            assert f"dropped {cut - last} bytes at offset {last}" in caplog.text, cut
        assert torn.stat().st_size == last  # truncated to the whole records: later writes follow them
    # zeros where the last record should be (a crash after the file grew but before its blocks were written)
    torn.write_bytes(data[:last] + bytes(len(data) - last))
    assert contents(torn) == {"items": [1, 2, "x" * 40]}
    # and the log goes on: a write after the truncation survives the next restart
    with serving(torn) as (_db, client), client.get_proxy() as proxy:
        proxy.get_cyberlist("items").append("again")
    assert contents(torn) == {"items": [1, 2, "x" * 40, "again"]}


@pytest.mark.parametrize("where", [0.3, 0.5, 0.8])
def test_damage_before_the_last_record_refuses_to_start_naming_the_offset(tmp_path: Path, where: float) -> None:
    path = tmp_path / "data.aof"
    last = make_log(path)
    data = bytearray(path.read_bytes())
    at = int(last * where)
    data[at] ^= 0x40
    path.write_bytes(bytes(data))
    db = cyberdb.Server()
    db.set_append_log(str(path))
    with pytest.raises(PersistenceError, match=r"damaged at offset \d+") as info:
        db.start(port=0)
    offset = int(str(info.value).split("offset ")[1].split(":")[0])
    assert offset <= at, "the offset named is not where the damaged record starts"
    assert path.read_bytes() == bytes(data), "a refused log must be left as it was"


def test_a_log_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.aof"
    path.write_bytes(b"hello, this is some other file")
    db = cyberdb.Server()
    db.set_append_log(str(path))
    with pytest.raises(PersistenceError, match="not a CyberDB append-only log"):
        db.start(port=0)


# ---- rewriting ------------------------------------------------------------------------------------------------------

def test_rewrites_under_load_keep_every_write(tmp_path: Path) -> None:
    # the log is rewritten whenever it grows by 20 % (and by the explicit calls): writes that arrive while the
    # child writes the base must all be in the new log
    log = tmp_path / "data.aof"
    with serving(log, "everysec", rewrite_factor=1.2, rewrite_min_size=0) as (db, client):
        with client.get_proxy() as proxy:
            proxy.create_cyberlist("log")
        writers = Writers(lambda: client_of(db), 4)
        try:
            for _ in range(5):
                target = writers.total() + 300
                wait_until(lambda t=target: writers.total() >= t or bool(writers.errors), "writes")
                db.rewrite_append_log()
        finally:
            writers.stop()
        info = db.info()["append_log"]
        assert info["rewrites"] >= 5 and info["error"] is None
    check_exactly_once(contents(log)["log"], writers.acked)


def test_load_db_while_logging_rewrites_the_log(tmp_path: Path) -> None:
    log, snap = tmp_path / "data.aof", tmp_path / "data.cdb"
    with serving(log) as (db, client), client.get_proxy() as proxy:
        proxy.create_cyberdict("before")["k"] = 1
        db.save_db(str(snap))
        proxy.create_cyberdict("gone")
        db.load_db(str(snap))
        proxy.get_cyberdict("before")["k2"] = 2
    assert contents(log) == {"before": {"k": 1, "k2": 2}}


# ---- a log that cannot be written -----------------------------------------------------------------------------------

def test_failed_log_write_refuses_writes_until_it_can_write_again(tmp_path: Path) -> None:
    # RLIMIT_FSIZE makes writes past a size fail with EFBIG (Python ignores SIGXFSZ): the log's disk is "full"
    log = tmp_path / "data.aof"
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    with serving(log, "always") as (db, client):
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict("d")
            d["base"] = "b" * 100_000  # the log is larger than any file pytest writes meanwhile
        blocked: list[Any] = []
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (log.stat().st_size + 100, hard))
            writer = client.get_proxy()
            writer.connect()
            call = threading.Thread(target=lambda: blocked.append(writer.get_cyberdict("d").update(
                {"held": "h" * 1000})), daemon=True)
            call.start()
            wait_until(lambda: db.info()["append_log"]["error"] is not None, "the log write to fail")
            assert "File too large" in db.info()["append_log"]["error"]
            with client.get_proxy() as proxy:
                other = proxy.get_cyberdict("d")
                with pytest.raises(PersistenceError, match="write refused"):
                    other["refused"] = 1
                assert other["base"] == "b" * 100_000  # reads go on
            assert call.is_alive() and not blocked, "a write the log did not keep was acknowledged"
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        call.join(WAIT)
        assert blocked == [None], "the held reply did not leave once the log could be written"
        writer.close()
        wait_until(lambda: db.info()["append_log"]["error"] is None, "the log to recover")
        with client.get_proxy() as proxy:
            proxy.get_cyberdict("d")["after"] = 2
    assert contents(log) == {"d": {"base": "b" * 100_000, "held": "h" * 1000, "after": 2}}


def test_set_append_log_validates_and_refuses_a_running_server(tmp_path: Path) -> None:
    db = cyberdb.Server()
    with pytest.raises(ValueError, match="fsync"):
        db.set_append_log(str(tmp_path / "x.aof"), fsync="sometimes")
    with serving(tmp_path / "y.aof") as (running, _client), pytest.raises(RuntimeError):
        running.set_append_log(str(tmp_path / "z.aof"))


def test_the_log_wins_over_the_snapshot_at_start(tmp_path: Path) -> None:
    log, snap = tmp_path / "data.aof", tmp_path / "data.cdb"
    with serving(log) as (db, client), client.get_proxy() as proxy:
        proxy.create_cyberdict("t")["v"] = "old"
        db.save_db(str(snap))
        proxy.get_cyberdict("t")["v"] = "new"
    db = cyberdb.Server()
    db.load_db(str(snap))
    with serving(log, "everysec", db=db) as (_db, client), client.get_proxy() as proxy:
        assert proxy.get_cyberdict("t")["v"] == "new"


# ---- replay reproduces the first run --------------------------------------------------------------------------------

def test_replay_reproduces_compare_and_set_transactions_and_leases(tmp_path: Path) -> None:
    # sort(key=) is a compare-and-set on the table's version, a transaction's checked read may have raised, and
    # speculations and rolled-back batches hand out no version: the replay must do exactly what the run did
    log = tmp_path / "data.aof"
    with serving(log) as (_db, client), client.get_proxy() as proxy:
        items = proxy.create_cyberlist("l", [3, 1, 2])
        items.sort(key=lambda x: -x)
        accounts = proxy.create_cyberdict("d")

        def deposit(tx: Any) -> None:
            table = tx.get_cyberdict("d")
            try:
                table["missing"]
            except KeyError:
                table["x"] = 1

        proxy.transact(deposit)
        with pytest.raises(cyberdb.BatchAbortedError), proxy.pipeline(atomic=True) as pipe:
            pipe.get_cyberdict("d")["y"] = 1
            pipe.get_cyberlist("l").pop(99)
        items.sort(key=lambda x: x)
        accounts["z"] = items.tolist()
        lock = proxy.lock("job", ttl=60)
        assert lock.acquire()
        expected = {"l": [1, 2, 3], "d": {"x": 1, "z": [1, 2, 3]}}
        assert {"l": items.tolist(), "d": accounts.todict()} == expected
    assert contents(log) == expected
    with serving(log) as (_db, client), client.get_proxy() as proxy:
        assert proxy.lock("job", ttl=60).acquire(blocking=False) is False  # the lease came back from the log
        proxy.get_cyberlist("l").sort(key=lambda x: -x)  # compare-and-set works on the replayed versions
        assert proxy.get_cyberlist("l").tolist() == [3, 2, 1]


def test_stopping_during_a_rewrite_leaves_a_whole_log_and_no_temporary_file(tmp_path: Path) -> None:
    log = tmp_path / "data.aof"
    outcome: list[Any] = []
    with serving(log, "everysec") as (db, client):
        with client.get_proxy() as proxy:
            proxy.create_cyberdict("d", {i: "x" * 20 for i in range(100_000)})  # the child takes a while

        def rewrite() -> None:
            try:
                db.rewrite_append_log()
                outcome.append("done")
            except (PersistenceError, RuntimeError) as exc:
                outcome.append(exc)

        caller = threading.Thread(target=rewrite)
        caller.start()
        wait_until(lambda: db.info()["append_log"]["rewriting"] or bool(outcome), "the rewrite to start")
    caller.join(WAIT)
    assert not caller.is_alive(), "rewrite_append_log() still waits after the server stopped"
    assert len(outcome) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["data.aof"]
    assert len(contents(log)["d"]) == 100_000


def test_a_failed_fsync_is_recovered_by_rewriting_the_log_from_memory(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # after a failed fdatasync the kernel may have dropped the dirty pages: retrying it would prove nothing
    log = tmp_path / "data.aof"
    name = "fdatasync" if hasattr(os, "fdatasync") else "fsync"
    real = getattr(os, name)
    failures = [OSError(5, "Input/output error")]

    def failing_once(fd: int) -> None:
        if failures:
            raise failures.pop()
        real(fd)

    with serving(log, "always") as (db, client):
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict("d")
            monkeypatch.setattr(os, name, failing_once)
            d["k"] = "v"  # held until the rewrite has it on disk, then acknowledged
            assert d["k"] == "v"
        info = db.info()["append_log"]
        assert info["rewrites"] >= 1 and info["error"] is None and info["write_errors"] == 1
    assert contents(log) == {"d": {"k": "v"}}
