"""The client and its pool under threads, gevent greenlets, fork, server restarts and idle timeouts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
from conftest import PASSWORD, ServerProcess, free_port

import cyberdb


def _run_script(code: str, *args: object, timeout: float = 90) -> dict[str, object]:
    """Run a Python script in a fresh interpreter; it prints one JSON line last."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def test_50_threads_share_one_client_without_losing_updates(server: ServerProcess, name: str) -> None:
    client = server.connect()
    with client.get_proxy() as proxy:
        proxy.create_cyberlist(name)
        proxy.create_cyberdict(name + "-d")
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(40):
                with client.get_proxy() as proxy:
                    proxy.get_cyberlist(name).append((t, i))
                    proxy.get_cyberdict(name + "-d")[(t, i)] = i
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with client.get_proxy() as proxy:
        items = proxy.get_cyberlist(name).tolist()
        assert sorted(items) == [(t, i) for t in range(50) for i in range(40)]
        assert len(proxy.get_cyberdict(name + "-d")) == 2000
        proxy.delete_table(name)
        proxy.delete_table(name + "-d")
    client.close()


def test_200_gevent_greenlets_share_one_client(server: ServerProcess, name: str) -> None:
    result = _run_script("""
        from gevent import monkey
        monkey.patch_all()
        import json, sys
        import gevent
        import cyberdb

        port, password, encrypt, name = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "True", sys.argv[4]
        client = cyberdb.connect("127.0.0.1", port, password=password, encrypt=encrypt, time_out=900)
        with client.get_proxy() as proxy:
            proxy.create_cyberdict(name)

        def work(i):
            with client.get_proxy() as proxy:
                d = proxy.get_cyberdict(name)
                d[i] = i * i
                gevent.sleep(0)  # yield while holding the connection: others must open their own
                return d[i]

        jobs = [gevent.spawn(work, i) for i in range(200)]
        gevent.joinall(jobs, timeout=60, raise_error=True)
        with client.get_proxy() as proxy:
            d = proxy.get_cyberdict(name).todict()
        print(json.dumps({"results": [j.value for j in jobs], "n": len(d), "ok": d == {i: i * i for i in range(200)},
                          "opened": client.pool._open}))
    """, server.port, PASSWORD, server.encrypt, name)
    assert result["results"] == [i * i for i in range(200)]
    assert result["n"] == 200 and result["ok"] is True
    assert 1 < int(result["opened"]) <= 201  # greenlets really ran concurrently, each with its own connection


def test_forked_child_never_uses_the_parents_sockets(plain_server: ServerProcess, name: str) -> None:
    result = _run_script("""
        import json, os, sys
        import cyberdb

        port, password, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        client = cyberdb.connect("127.0.0.1", port, password=password)   # like gunicorn --preload
        with client.get_proxy() as proxy:
            proxy.create_cyberlist(name)
        parent_ports = {c.sock.getsockname()[1] for c in client.pool._idle}
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                with client.get_proxy() as proxy:
                    proxy.get_cyberlist(name).append("child")
                    port_used = proxy._conn.sock.getsockname()[1]
                os.write(w, json.dumps({"port": port_used}).encode())
            finally:
                os._exit(0)
        os.close(w)
        child = json.loads(os.read(r, 1000))
        os.waitpid(pid, 0)
        with client.get_proxy() as proxy:   # the parent's pooled connection still works
            proxy.get_cyberlist(name).append("parent")
            items = proxy.get_cyberlist(name).tolist()
            parent_port = proxy._conn.sock.getsockname()[1]
        print(json.dumps({"items": items, "child_port": child["port"], "parent_ports": sorted(parent_ports),
                          "parent_port": parent_port}))
    """, plain_server.port, PASSWORD, name)
    assert result["items"] == ["child", "parent"]
    assert result["child_port"] not in result["parent_ports"]  # type: ignore[operator]
    assert result["parent_port"] in result["parent_ports"]  # type: ignore[operator]


def test_server_restart_under_a_live_pool(tmp_path: Path, name: str) -> None:
    backup = tmp_path / "data.cdb"
    port = free_port()
    extra = ["--backup", str(backup)]
    srv = ServerProcess(port=port, extra=extra)
    try:
        client = srv.connect()
        proxies = [client.get_proxy() for _ in range(3)]
        for p in proxies:  # three live connections in the pool
            p.connect()
        proxies[0].create_cyberdict(name, {"n": 1})
        for p in proxies:
            p.close()
        held = client.get_proxy()
        held.connect()
        table = held.get_cyberdict(name)

        srv.stop()
        srv = ServerProcess(port=port, extra=[*extra, "--load", str(backup)])

        with client.get_proxy() as proxy:  # dead pooled connections are replaced silently
            assert proxy.get_cyberdict(name)["n"] == 1
        assert table["n"] == 1  # a read on a held connection is retried on a new one
        table["n"] = 2  # and the proxy keeps working afterwards
        held.close()
        with client.get_proxy() as proxy:
            assert proxy.get_cyberdict(name)["n"] == 2
        client.close()
    finally:
        srv.stop()


def test_write_on_a_dead_held_connection_is_resent_on_a_new_one(tmp_path: Path, name: str) -> None:
    port = free_port()
    srv = ServerProcess(port=port)
    try:
        client = srv.connect()
        proxy = client.get_proxy()
        proxy.connect()
        lst = proxy.create_cyberlist(name)
        srv.stop()
        srv = ServerProcess(port=port)
        other = srv.connect()
        with other.get_proxy() as p2:
            p2.create_cyberlist(name)
        other.close()
        lst.append(1)  # the held connection is dead: the request is re-sent, with its number, on a new one
        assert lst.tolist() == [1]
        proxy.close()
        client.close()
    finally:
        srv.stop()


def test_idle_pooled_connections_are_discarded_after_time_out(plain_server: ServerProcess) -> None:
    client = plain_server.connect(time_out=900)
    with client.get_proxy() as proxy:
        first = proxy._conn
    assert first is not None
    with client.get_proxy() as proxy:
        assert proxy._conn is first  # reused while fresh
    first.last_used -= 1000  # as if it had been idle for 1000 s
    with client.get_proxy() as proxy:
        assert proxy._conn is not first
    assert first.broken
    client.close()


def test_full_pool_waits_then_raises(plain_server: ServerProcess) -> None:
    client = plain_server.connect(max_connections=1)
    client.pool.wait_timeout = 0.2
    holder = client.get_proxy()
    holder.connect()
    with pytest.raises(cyberdb.PoolTimeoutError):
        client.get_proxy().connect()
    released = threading.Event()

    def release_soon() -> None:
        released.wait(10)
        holder.close()

    t = threading.Thread(target=release_soon)
    t.start()
    client.pool.wait_timeout = 10
    waiter = client.get_proxy()
    released.set()
    waiter.connect()  # gets the connection the other thread released
    waiter.close()
    t.join()
    client.close()


def test_failed_command_leaves_the_connection_usable(server: ServerProcess, name: str) -> None:
    client = server.connect()
    with client.get_proxy() as proxy:
        d = proxy.create_cyberdict(name)
        conn = proxy._conn
        with pytest.raises(KeyError):
            d["missing"]
        with pytest.raises(TypeError):
            d["x"] = object()
        d["x"] = 1
        assert d["x"] == 1 and proxy._conn is conn and conn is not None and not conn.broken
        proxy.delete_table(name)
    client.close()


def test_a_waiter_takes_the_released_connection_instead_of_opening_another(plain_server: ServerProcess) -> None:
    client = plain_server.connect(max_connections=1)
    holder = client.get_proxy()
    holder.connect()
    held = holder._conn
    got: list[object] = []
    waiting = threading.Event()

    def wait_for_it() -> None:
        proxy = client.get_proxy()
        waiting.set()
        proxy.connect()  # blocks until the holder releases
        got.append(proxy._conn)
        proxy.close()

    t = threading.Thread(target=wait_for_it)
    t.start()
    waiting.wait(10)
    holder.close()
    t.join(10)
    assert got == [held]
    assert client.pool._open == 1
    client.close()


def test_a_failed_reconnect_leaves_the_proxy_connected(tmp_path: Path, name: str) -> None:
    port = free_port()
    srv = ServerProcess(port=port)
    try:
        client = srv.connect(retry=cyberdb.Retry(timeout=0.5))  # not the 30 s that wait out a restart
        with client.get_proxy() as proxy:
            lst = proxy.create_cyberlist(name, [1])
            srv.stop()
            with pytest.raises(cyberdb.ConnectionError):
                lst.count(1)  # no server: the read cannot be retried anywhere
            srv = ServerProcess(port=port)
            proxy.create_cyberlist(name, [1, 1])
            assert lst.count(1) == 2  # the same proxy and table work again, no DisconnectedError
        client.close()
    finally:
        srv.stop()


def test_get_of_a_known_table_costs_no_round_trip_and_stays_correct(server: ServerProcess, name: str) -> None:
    client, other = server.connect(), server.connect()
    with client.get_proxy() as proxy:
        proxy.create_cyberdict(name, {"a": 1})
        conn = proxy._conn
        assert conn is not None
        before = conn.requests
        d = proxy.get_cyberdict(name)  # known to this client: no request
        assert conn.requests == before
        with pytest.raises(cyberdb.WrongTableTypeError):
            proxy.get_cyberlist(name)  # another kind is asked of the server, which refuses
        with other.get_proxy() as p2:
            p2.delete_table(name)  # deleted behind this client's back
            p2.create_cyberlist(name)
        with pytest.raises(cyberdb.WrongTableTypeError):
            d["a"]  # the server checks every command: the stale knowledge fails loudly at first use
        assert proxy.get_cyberlist(name).tolist() == []  # and was forgotten
        proxy.delete_table(name)
        with pytest.raises(cyberdb.TableNotFoundError):
            proxy.get_cyberlist(name)
    client.close()
    other.close()


def test_a_table_deleted_elsewhere_is_reported_by_get_once_the_check_expires(server: ServerProcess, name: str) -> None:
    client, other = server.connect(), server.connect()
    strict = server.connect(table_check_ttl=0)
    with client.get_proxy() as proxy, strict.get_proxy() as sp, other.get_proxy() as op:
        proxy.create_cyberdict(name)
        sp.get_cyberdict(name)
        op.delete_table(name)
        with pytest.raises(cyberdb.TableNotFoundError):
            sp.get_cyberdict(name)  # table_check_ttl=0: every get asks the server
        kind, seen = client.known_tables[name]
        client.known_tables[name] = (kind, seen - 2 * client.table_check_ttl)  # as if checked 2 s ago
        with pytest.raises(cyberdb.TableNotFoundError):
            proxy.get_cyberdict(name)  # the usual try/get/except/create idiom works again
        with pytest.raises(cyberdb.TableNotFoundError):
            proxy.get_cyberdict(["not", "a", "name"])  # type: ignore[arg-type]
    for c in (client, other, strict):
        c.close()


def test_gevent_greenlets_incr_transact_lock_and_pipeline_exactly(server: ServerProcess, name: str) -> None:
    result = _run_script("""
        from gevent import monkey
        monkey.patch_all()
        import json, sys
        import gevent
        import cyberdb

        port, password, encrypt, name = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "True", sys.argv[4]
        client = cyberdb.connect("127.0.0.1", port, password=password, encrypt=encrypt)
        with client.get_proxy() as proxy:
            proxy.create_cyberdict(name, {"incr": 0, "tx": 0, "locked": 0, "pipe": 0})

        def add(tx):
            t = tx.get_cyberdict(name)
            t["tx"] = t["tx"] + 1

        def work(i):
            with client.get_proxy() as proxy:
                d = proxy.get_cyberdict(name)
                for _ in range(5):
                    d.incr("incr")
                    proxy.transact(add, retries=10_000)
                    with proxy.lock(name, ttl=30):
                        n = d["locked"]
                        gevent.sleep(0)  # let others try while holding the lock
                        d["locked"] = n + 1
                    with proxy.pipeline(atomic=True) as pipe:
                        pipe.get_cyberdict(name).incr("pipe")

        jobs = [gevent.spawn(work, i) for i in range(50)]
        gevent.joinall(jobs, timeout=100, raise_error=True)
        with client.get_proxy() as proxy:
            print(json.dumps(proxy.get_cyberdict(name).todict()))
    """, server.port, PASSWORD, server.encrypt, name)
    assert result == {"incr": 250, "tx": 250, "locked": 250, "pipe": 250}


def test_forked_workers_are_separate_clients_for_exactly_once(plain_server: ServerProcess, name: str) -> None:
    result = _run_script("""
        import json, os, sys
        import cyberdb

        port, password, name = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        client = cyberdb.connect("127.0.0.1", port, password=password)   # made before fork, like --preload
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name, {"n": 0})
            for _ in range(10):
                d.incr("n")  # the parent's request numbers are in use before the fork
        parent_id = client._client_id
        pids = []
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    with client.get_proxy() as proxy:
                        d = proxy.get_cyberdict(name)
                        for _ in range(250):
                            d.incr("n")
                    code = 0 if client._client_id != parent_id else 2
                finally:
                    os._exit(code)
            pids.append(pid)
        codes = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) for pid in pids]
        with client.get_proxy() as proxy:
            print(json.dumps({"codes": codes, "n": proxy.get_cyberdict(name)["n"]}))
    """, plain_server.port, PASSWORD, name)
    assert result == {"codes": [0, 0, 0, 0], "n": 1010}
