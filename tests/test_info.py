"""Tests of the server's report, ``proxy.info()`` (command ``db.info``) and ``Server.info()``: against real servers,
checking that the numbers follow what clients did (tables, commands, ops/s, saves, the append-only log)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import ServerProcess, client_of, proxy_of, serving

import cyberdb
from cyberdb.commands import BY_NAME
from cyberdb.server.stats import SLOWLOG_IN_INFO

KEYS = {"version", "pid", "address", "encrypt", "tls", "started", "uptime", "memory", "connections",
        "unauthenticated", "partial_bytes", "blocked", "channels", "commands", "ops_per_sec", "tables",
        "expiring_keys", "append_log", "backup", "last_save", "slowlog"}


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling interval of a readiness check


def test_info_over_the_network_reports_tables_clients_and_commands(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server()
    with proxy_of(srv) as proxy:
        proxy.create_cyberdict("users", content={i: str(i) for i in range(7)})
        proxy.create_cyberlist("queue", content=[1, 2, 3])
        proxy.create_cyberdict("empty")
        before = proxy.info()
        assert set(before) == KEYS
        assert before["tables"] == {"users": {"kind": "dict", "size": 7}, "queue": {"kind": "list", "size": 3},
                                    "empty": {"kind": "dict", "size": 0}}
        assert before["version"] == cyberdb.__version__
        assert before["address"] == f"127.0.0.1:{srv.port}"
        assert srv.proc is not None and before["pid"] == srv.proc.pid
        assert before["connections"] == 1 and before["encrypt"] is False and before["tls"] is False
        assert before["memory"]["rss"] > 1 << 20 and before["memory"]["max_memory"] == 0
        assert before["append_log"] is None and before["backup"] is None and before["last_save"] is None
        assert before["uptime"] >= 0 and before["started"] <= time.time()

        users = proxy.get_cyberdict("users")
        for i in range(300):
            users[i] = i
        proxy.get_cyberlist("queue").append(4)
        after = proxy.info()
    assert after["tables"]["users"] == {"kind": "dict", "size": 300}
    assert after["tables"]["queue"] == {"kind": "list", "size": 4}
    assert after["commands"] - before["commands"] >= 302  # the 301 writes and this info call
    assert after["ops_per_sec"] > before["ops_per_sec"] > 0
    assert after["uptime"] >= before["uptime"]


def test_commands_of_closed_connections_still_count(make_server: Callable[..., ServerProcess]) -> None:
    srv = make_server()
    other = client_of(srv)
    try:
        with other.get_proxy() as proxy:
            d = proxy.create_cyberdict("d")
            for i in range(50):
                d[i] = i
    finally:
        other.close()  # its connection closes: its requests move to the closed connections' count
    with proxy_of(srv) as proxy:
        wait_until(lambda: proxy.info()["connections"] == 1, "the other client's connection to close")
        assert proxy.info()["commands"] >= 51


def test_slow_commands_are_in_the_report_newest_first(in_process: Callable[..., cyberdb.Server]) -> None:
    db = cyberdb.Server()
    db.set_slowlog(1e-9)  # every command is "slow"
    in_process(db)
    with proxy_of(db) as proxy:
        d = proxy.create_cyberdict("slow")
        for i in range(SLOWLOG_IN_INFO + 3):
            d[i] = i
        info = proxy.info()
    assert len(info["slowlog"]) == SLOWLOG_IN_INFO
    assert info["slowlog"] == db.slowlog(SLOWLOG_IN_INFO + 1)[1:]  # (the info call itself came after its report)
    times = [entry["time"] for entry in info["slowlog"]]
    assert times == sorted(times, reverse=True)
    assert info["slowlog"][0]["command"] == "dict.setitem" and info["slowlog"][0]["table"] == "slow"


def test_server_info_has_the_same_keys_and_the_existing_ones(in_process: Callable[..., cyberdb.Server]) -> None:
    db = in_process()
    with proxy_of(db) as proxy:
        proxy.create_cyberlist("l", content=[1, 2])
        remote = proxy.info()
        local = db.info()
    assert set(local) == set(remote) == KEYS
    assert local["tables"] == remote["tables"] == {"l": {"kind": "list", "size": 2}}
    assert local["connections"] == 1 and local["blocked"] == 0 and local["partial_bytes"] == 0
    assert local["pid"] == remote["pid"]


def test_info_reports_the_append_log_and_saves(tmp_path: Path) -> None:
    db = cyberdb.Server()
    db.set_backup(str(tmp_path / "backup.cdb"), cycle=3600)
    with serving(tmp_path / "data.aof", "always", db=db) as (db, client):
        with client.get_proxy() as proxy:
            proxy.create_cyberdict("d")["k"] = "v"
            log = proxy.info()["append_log"]
            assert log["file"] == str(tmp_path / "data.aof") and log["fsync"] == "always"
            assert log["size"] > 0 and log["records"] >= 2 and log["rewriting"] is False and log["error"] is None
            assert log["last_fsync"] is not None and log["last_fsync"] <= time.time()
            assert proxy.info()["backup"] == {"file": str(tmp_path / "backup.cdb"), "cycle": 3600.0, "busy": False}

            db.save_db(str(tmp_path / "manual.cdb"))
            save = proxy.info()["last_save"]
            assert save["file"] == str(tmp_path / "manual.cdb") and save["ok"] is True and save["error"] is None
            assert save["seconds"] >= 0

            with pytest.raises(cyberdb.PersistenceError):
                db.save_db(str(tmp_path / "missing" / "x.cdb"))
            save = proxy.info()["last_save"]
            assert save["file"] == str(tmp_path / "missing" / "x.cdb") and save["ok"] is False
            assert "x.cdb" in save["error"]


def test_backup_cycle_result_is_reported(in_process: Callable[..., cyberdb.Server], tmp_path: Path) -> None:
    db = cyberdb.Server()
    db.set_backup(str(tmp_path / "cycle.cdb"), cycle=0.05)
    in_process(db)
    wait_until(lambda: db.info()["last_save"] is not None, "a backup")
    save = db.info()["last_save"]
    db.set_backup(str(tmp_path / "cycle.cdb"), cycle=3600)  # no more cycles; let one that runs finish first
    wait_until(lambda: not db.info()["backup"]["busy"], "the running backup to finish")
    assert save["file"] == str(tmp_path / "cycle.cdb") and save["ok"] is True
    assert (tmp_path / "cycle.cdb").exists()


def test_db_info_refuses_arguments_and_batches(in_process: Callable[..., cyberdb.Server]) -> None:
    db = in_process()
    with proxy_of(db) as proxy:
        with pytest.raises(TypeError, match="db.info takes no arguments"):
            proxy.call(BY_NAME["db.info"], [1])
        with pytest.raises(TypeError):  # not a step of a pipeline (it is answered outside the store)
            proxy.call(BY_NAME["db.pipeline"], [[[BY_NAME["db.info"].op, []]]])
        assert proxy.info()["connections"] == 1  # the connection is still usable


def test_info_of_a_stopped_server() -> None:
    db = cyberdb.Server()
    info = db.info()
    assert set(info) == KEYS
    assert info["address"] is None and info["uptime"] == 0.0 and info["commands"] == 0 and info["tables"] == {}


def test_a_report_over_the_frame_limit_lists_the_largest_tables(in_process: Callable[..., cyberdb.Server],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("cyberdb.server.stats._MAX_PAYLOAD", 100)  # as if there were millions of tables
    monkeypatch.setattr("cyberdb.server.stats.TABLES_IF_TOO_BIG", 2)
    db = in_process()
    with proxy_of(db) as proxy:
        for i in range(5):
            proxy.create_cyberlist(f"l{i}", content=list(range(i)))
        info = proxy.info()
    assert info["tables"] == {"l4": {"kind": "list", "size": 4}, "l3": {"kind": "list", "size": 3}}
    assert info["tables_omitted"] == 3
    assert len(db.info()["tables"]) == 5  # in-process there is no frame to fit
