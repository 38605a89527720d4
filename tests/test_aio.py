"""The asyncio client end to end (real servers over TCP), on asyncio's own loop and on uvloop.

Order is made certain by events: a relay holding a reply, the server reporting a pop as blocked
(``Server.info()["blocked"]``), a future resolved by the task under test; waits are bounded; nothing is timed.
The dict/list semantics are checked by ``test_aio_differential.py``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from conftest import PASSWORD, ServerProcess
from relay import Relay
from test_aio_differential import LOOPS, new_loop
from test_tls import Certs, certs, tls_server  # noqa: F401  # fixtures shared with the sync TLS tests

import cyberdb
import cyberdb.aio as aio

WAIT = 30.0  # seconds: the bound of every wait (a healthy run needs milliseconds)
Run = Callable[[Callable[[], Awaitable[Any]]], Any]


@pytest.fixture(params=LOOPS)
def arun(request: pytest.FixtureRequest) -> Run:
    """Run an async function to completion on a new loop of each kind (asyncio's, uvloop)."""

    def run(fn: Callable[[], Awaitable[Any]]) -> Any:
        async def bounded() -> Any:
            return await asyncio.wait_for(fn(), WAIT * 2)

        with asyncio.Runner(loop_factory=lambda: new_loop(request.param)) as runner:
            return runner.run(bounded())

    return run


async def connect(server: ServerProcess | cyberdb.Server, **options: Any) -> aio.AsyncClient:
    """An asyncio client of a server process or of an in-process server."""
    if isinstance(server, ServerProcess):
        return await aio.connect(server.host, server.port, password=server.password, encrypt=server.encrypt,
                                 **options)
    assert server.port is not None
    return await aio.connect("127.0.0.1", server.port, password=PASSWORD,
                             encrypt=getattr(server, "encrypt", False), **options)


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def db(request: pytest.FixtureRequest) -> Iterator[cyberdb.Server]:
    """An in-process server (its info() shows blocked pops), without and with encryption."""
    server = cyberdb.Server()
    server.start(port=0, password=PASSWORD, encrypt=request.param)
    request.addfinalizer(server.stop)
    server.encrypt = request.param  # type: ignore[attr-defined]
    yield server


async def wait_blocked(db: cyberdb.Server, n: int) -> None:
    """Poll until ``n`` pops wait on the server (a readiness check: polling interval, not synchronisation)."""
    deadline = time.monotonic() + WAIT
    while db.info()["blocked"] != n:
        assert time.monotonic() < deadline, f"{db.info()['blocked']} pops blocked, expected {n}"
        await asyncio.sleep(0.001)


# ---- connecting, proxies, tables -----------------------------------------------------------------------------------


def test_round_trip_and_table_management(server: ServerProcess, arun: Run, name: str) -> None:
    async def main() -> None:
        client = await connect(server)
        async with client.get_proxy() as proxy:
            d = await proxy.create_cyberdict(name, {"a": 1})
            assert repr(d) == f"<AsyncCyberDict {name!r}>" and d.name == name
            assert await d.get("a") == 1 and await d["a"] == 1 and await d.getitem("a") == 1
            await d.setitem("b", [1, 2])
            assert await d.todict() == {"a": 1, "b": [1, 2]} and await d.len() == 2 and await d.contains("b")
            assert (await proxy.tables())[name] == "CyberDict"
            assert isinstance(await proxy.get_cyberdict(name), aio.AsyncCyberDict)
            with pytest.raises(cyberdb.WrongTableTypeError):
                await proxy.get_cyberlist(name)
            with pytest.raises(cyberdb.TableExistsError):
                await proxy.create_cyberlist(name)
            with pytest.raises(KeyError) as info:
                await d.getitem("missing")
            assert info.value.args == ("missing",)
            await proxy.delete_table(name)
            with pytest.raises(cyberdb.TableNotFoundError):
                await proxy.get_cyberdict(name)
            assert isinstance(await proxy.slowlog(), list) and isinstance(await proxy.info(), dict)
        assert await client.ping()
        await client.close()

    arun(main)


def test_from_url_is_lazy_and_connect_checks_settings(server: ServerProcess, arun: Run, name: str) -> None:
    async def main() -> None:
        scheme = f"cyberdb://:{server.password}@{server.host}:{server.port}/?encrypt={int(server.encrypt)}"
        client = aio.from_url(scheme)
        assert repr(client.pool) == "<AsyncConnectionPool open=0 idle=0>"  # nothing opened yet
        async with client.get_proxy() as proxy:
            lst = await proxy.create_cyberlist(name, [1, 2])
            assert await lst.tolist() == [1, 2]
            await proxy.delete_table(name)
        await client.close()
        with pytest.raises(cyberdb.AuthenticationError):
            await aio.connect(server.host, server.port, password="wrong", encrypt=server.encrypt)
        with pytest.raises(cyberdb.EncryptionMismatchError):
            await aio.connect(server.host, server.port, password=server.password, encrypt=not server.encrypt)
        unreachable = aio.from_url(f"cyberdb://127.0.0.1:{server.port}/", retry=cyberdb.Retry(timeout=0))
        unreachable.port = 1  # nothing listens there
        with pytest.raises(cyberdb.ConnectionError):
            async with unreachable.get_proxy():
                pass
        with pytest.raises(ValueError):
            aio.from_url("cyberdb://h/?encrpyt=1")

    arun(main)


def test_operators_python_cannot_await_name_the_async_form(server: ServerProcess, arun: Run, name: str) -> None:
    async def main() -> None:
        client = await connect(server)
        async with client.get_proxy() as proxy:
            d = await proxy.create_cyberdict(name)
            lst = await proxy.create_cyberlist(name + "l")
            for what, form in [
                (lambda: len(d), "await table.len()"), (lambda: "a" in d, "await table.contains(x)"),
                (lambda: bool(d), "await table.len()"), (lambda: d == {}, "await table.equals(other)"),
                (lambda: d != {}, "not await table.equals(other)"), (lambda: [x for x in d], "async for"),
                (lambda: d.__setitem__("a", 1), "await table.setitem(k, v)"),
                (lambda: d.__delitem__("a"), "await table.delitem(k)"), (lambda: d | {}, "await table.union"),
                (lambda: lst + [], "await table.concat"), (lambda: lst * 2, "await table.repeat(n)"),
                (lambda: lst < [], "await table.lt(other)"), (lambda: reversed(lst), "table.reversed()"),
            ]:
                with pytest.raises(TypeError, match=form.replace("(", r"\(").replace(")", r"\)")):
                    what()
            alias = lst
            with pytest.raises(TypeError, match="extend"):
                alias += [1]
            with pytest.raises(TypeError, match="irepeat"):
                alias *= 2
            with pytest.raises(TypeError, match="update"):
                d |= {}
            with pytest.raises(TypeError):
                hash(d)
            assert await d.len() == 0 and await lst.tolist() == []  # nothing was sent
            await proxy.delete_table(name)
            await proxy.delete_table(name + "l")
        await client.close()

    arun(main)


def test_tables_after_close_are_disconnected_and_work_after_connect(server: ServerProcess, arun: Run,
                                                                   name: str) -> None:
    async def main() -> None:
        client = await connect(server)
        proxy = client.get_proxy()
        await proxy.connect()
        d = await proxy.create_cyberdict(name)
        await proxy.close()
        with pytest.raises(cyberdb.DisconnectedError):
            await d.get("a")
        with pytest.raises(cyberdb.DisconnectedError):
            await proxy.tables()
        await proxy.connect()
        await d.setitem("a", 1)
        assert await d.get("a") == 1
        await proxy.delete_table(name)
        await proxy.close()
        await client.close()

    arun(main)


# ---- the pool ------------------------------------------------------------------------------------------------------


def test_a_full_pool_waits_for_a_release_then_times_out(server: ServerProcess, arun: Run) -> None:
    async def main() -> None:
        client = await connect(server, max_connections=1)
        first = client.get_proxy()
        await first.connect()
        second = client.get_proxy()
        waiting = asyncio.create_task(second.connect())
        await asyncio.sleep(0)  # the task runs up to its wait for a free connection
        for _ in range(3):
            await asyncio.sleep(0)
        assert not waiting.done()  # it really waits
        conn = first._conn
        await first.close()
        await asyncio.wait_for(waiting, WAIT)
        assert second._conn is conn  # the released connection, reused
        client.pool.wait_timeout = 0.01
        with pytest.raises(cyberdb.PoolTimeoutError):
            await first.connect()
        client.pool.wait_timeout = WAIT
        cancelled = asyncio.create_task(first.connect())  # a waiter cancelled while it waits takes no slot
        for _ in range(3):
            await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        await second.close()
        await asyncio.wait_for(first.connect(), WAIT)
        assert first._conn is conn and client.pool._open == 1
        await first.close()
        await client.close()

    arun(main)


def test_idle_connections_older_than_time_out_are_replaced(server: ServerProcess, arun: Run) -> None:
    async def main() -> None:
        client = await connect(server)
        async with client.get_proxy() as proxy:
            kept = proxy._conn
        async with client.get_proxy() as proxy:
            assert proxy._conn is kept  # reused
        client.pool.max_idle_time = 0.0
        async with client.get_proxy() as proxy:
            assert proxy._conn is not kept and kept is not None and kept.broken  # too old: closed, replaced
            assert await proxy.tables() is not None
        await client.close()

    arun(main)


def test_a_connection_the_server_closed_while_idle_is_replaced(make_server: Callable[..., ServerProcess],
                                                               arun: Run) -> None:
    srv = make_server()

    async def main() -> None:
        client = await connect(srv)
        async with client.get_proxy() as proxy:
            old = proxy._conn
        await asyncio.to_thread(srv.stop)
        await asyncio.to_thread(srv.start)
        async with client.get_proxy() as proxy:  # a restart is ridden out (the first checkout may be the old one)
            assert await proxy.tables() == {} and proxy._conn is not old
        await client.close()

    arun(main)


def test_many_tasks_share_one_proxy(server: ServerProcess, arun: Run, name: str) -> None:
    async def main() -> None:
        client = await connect(server)
        async with client.get_proxy() as proxy:
            d = await proxy.create_cyberdict(name)

            async def worker(i: int) -> None:
                for j in range(20):
                    await d.incr("n")
                    await d.setitem((i, j), j)

            await asyncio.gather(*(worker(i) for i in range(50)))
            assert await d.get("n") == 1000 and await d.len() == 1001
            assert client.pool._open == 1  # one connection carried them all
            await proxy.delete_table(name)
        await client.close()

    arun(main)


# ---- cancellation --------------------------------------------------------------------------------------------------


def test_a_cancelled_call_whose_reply_is_due_never_returns_its_connection_to_the_pool(
        plain_server: ServerProcess, arun: Run, name: str) -> None:
    relay = Relay(plain_server.host, plain_server.port)

    async def main() -> None:
        client = await aio.connect(relay.host, relay.port, password=PASSWORD)
        try:
            async with client.get_proxy() as proxy:
                d = await proxy.create_cyberdict(name)
                conn = proxy._conn
                assert conn is not None
                relay.hold_next_reply()
                task = asyncio.create_task(d.setitem("k", "v"))
                assert await asyncio.to_thread(relay.held.wait, WAIT)  # the server ran it; its reply is held
                assert conn.awaiting == 1
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            assert conn.broken and client.pool._idle == [] and client.pool._open == 0  # closed, not pooled
            await asyncio.to_thread(relay.drop_held)
            async with client.get_proxy() as proxy:
                assert proxy._conn is not conn
                assert await (await proxy.get_cyberdict(name)).todict() == {"k": "v"}  # ran once
                await proxy.delete_table(name)
        finally:
            await client.close()

    try:
        arun(main)
    finally:
        relay.close()


def test_a_cancelled_waiting_pop_closes_its_connection_and_pops_nothing(db: cyberdb.Server, arun: Run,
                                                                        name: str) -> None:
    async def main() -> None:
        client = await connect(db)
        async with client.get_proxy() as proxy, client.get_proxy() as other:
            q = await proxy.create_cyberlist(name)
            conn = proxy._conn
            task = asyncio.create_task(q.pop(0, timeout=WAIT))
            await wait_blocked(db, 1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert conn is not None and conn.broken
            await wait_blocked(db, 0)  # the server dropped the waiter with its connection
            await (await other.get_cyberlist(name)).append("kept")
            assert await q.tolist() == ["kept"]  # the proxy goes on, on a new connection, without waiting
            assert proxy._conn is not conn
            await proxy.delete_table(name)
        await client.close()

    arun(main)


# ---- exactly once across a reconnect -------------------------------------------------------------------------------


def test_a_write_whose_reply_was_lost_runs_exactly_once(plain_server: ServerProcess, arun: Run, name: str) -> None:
    relay = Relay(plain_server.host, plain_server.port)

    async def main() -> None:
        a = await aio.connect(relay.host, relay.port, password=PASSWORD)
        b = await connect(plain_server)
        try:
            async with a.get_proxy() as pa, b.get_proxy() as pb:
                la = await pa.create_cyberlist(name, ["x"])
                lb = await pb.get_cyberlist(name)
                for call, meanwhile, expected, result in [
                    # re-running l[0] = "A" after B's insert would erase B's item
                    (lambda: la.setitem(0, "A"), lambda: lb.insert(0, "B"), ["B", "A"], None),
                    (lambda: la.append("A2"), lambda: lb.append("B2"), ["B", "A", "A2", "B2"], None),
                    (lambda: la.pop(0), lambda: lb.append("B3"), ["A", "A2", "B2", "B3"], "B"),
                ]:
                    before = relay.accepted
                    relay.hold_next_reply()
                    task = asyncio.create_task(call())
                    assert await asyncio.to_thread(relay.held.wait, WAIT)
                    await meanwhile()
                    await asyncio.to_thread(relay.drop_held)
                    assert await asyncio.wait_for(task, WAIT) == result
                    assert relay.accepted == before + 1  # re-sent on a new connection
                    assert await lb.tolist() == expected
                pipe = pa.pipeline()  # a pipeline cut by a lost reply is re-sent exactly once too
                pipe.get_cyberlist(name).append("P")
                relay.hold_next_reply()
                task = asyncio.create_task(pipe.execute())
                assert await asyncio.to_thread(relay.held.wait, WAIT)
                await asyncio.to_thread(relay.drop_held)
                assert await asyncio.wait_for(task, WAIT) == [None]
                assert await lb.tolist() == ["A", "A2", "B2", "B3", "P"]
                await pb.delete_table(name)
        finally:
            await a.close()
            await b.close()

    try:
        arun(main)
    finally:
        relay.close()


def test_tasks_sharing_a_proxy_share_one_reconnect_and_each_write_runs_once(plain_server: ServerProcess, arun: Run,
                                                                          name: str) -> None:
    relay = Relay(plain_server.host, plain_server.port)

    async def main() -> None:
        client = await aio.connect(relay.host, relay.port, password=PASSWORD)
        try:
            async with client.get_proxy() as proxy:
                lst = await proxy.create_cyberlist(name)
                before = relay.accepted
                relay.hold_next_reply()
                tasks = [asyncio.create_task(lst.append(i)) for i in range(20)]
                assert await asyncio.to_thread(relay.held.wait, WAIT)
                await asyncio.to_thread(relay.drop_held)
                assert await asyncio.wait_for(asyncio.gather(*tasks), WAIT) == [None] * 20
                assert relay.accepted == before + 1  # one new connection for all of them
                assert sorted(await lst.tolist()) == list(range(20))  # each append ran exactly once
                await proxy.delete_table(name)
        finally:
            await client.close()

    try:
        arun(main)
    finally:
        relay.close()


def test_a_reply_later_than_socket_timeout_is_asked_again_on_a_new_connection(plain_server: ServerProcess,
                                                                             arun: Run, name: str) -> None:
    relay = Relay(plain_server.host, plain_server.port)

    async def main() -> None:
        client = await aio.connect(relay.host, relay.port, password=PASSWORD, socket_timeout=0.2)
        try:
            async with client.get_proxy() as proxy:
                d = await proxy.create_cyberdict(name)
                before = relay.accepted
                relay.hold_next_reply()  # never forwarded: the client gives up on it after socket_timeout
                assert await d.incr("n") == 1
                assert relay.accepted == before + 1 and await d.get("n") == 1  # re-sent, answered from the cache
                await proxy.delete_table(name)
        finally:
            await client.close()

    try:
        arun(main)
    finally:
        relay.close()


# ---- the event loop stays responsive -------------------------------------------------------------------------------


def test_the_loop_keeps_running_while_a_large_value_is_read(plain_server: ServerProcess, arun: Run,
                                                            name: str) -> None:
    big = b"\xab" * (40 << 20)

    async def main() -> None:
        client = await connect(plain_server)
        async with client.get_proxy() as proxy:
            d = await proxy.create_cyberdict(name)
            await d.setitem("big", big)
            ticks = 0
            reading = asyncio.create_task(d.get("big"))

            async def ticker() -> None:
                nonlocal ticks
                while not reading.done():
                    ticks += 1
                    await asyncio.sleep(0)

            tick = asyncio.create_task(ticker())
            value = await reading
            await tick
            assert value == big
            assert ticks >= 20, f"the ticker ran only {ticks} times while 40 MiB were read"
            await proxy.delete_table(name)
        await client.close()

    arun(main)


# ---- pipelines, transactions, locks, expiry ------------------------------------------------------------------------


def test_pipelines_and_atomic_batches(server: ServerProcess, arun: Run, name: str) -> None:
    async def main() -> None:
        client = await connect(server)
        async with client.get_proxy() as proxy:
            await proxy.create_cyberdict(name, {"a": 1})
            async with proxy.pipeline() as pipe:
                d = pipe.get_cyberdict(name)
                got = d.get("a")
                d["b"] = 2
                missing = d.pop("nope")
                assert isinstance(got, cyberdb.Pending) and not got.done()
            assert got.result() == 1 and isinstance(pipe.results[2], KeyError)
            with pytest.raises(KeyError):
                missing.result()
            pipe2 = proxy.pipeline()
            pipe2.get_cyberdict(name).incr("n", 5)
            assert await pipe2.execute() == [5]
            with pytest.raises(cyberdb.BatchAbortedError) as info:
                async with proxy.pipeline(atomic=True) as batch:
                    bd = batch.get_cyberdict(name)
                    bd["c"] = 3
                    bd.pop("nope")
            assert info.value.index == 1
            real = await proxy.get_cyberdict(name)
            assert await real.todict() == {"a": 1, "b": 2, "n": 5}  # nothing of the batch applied
            with pytest.raises(TypeError):
                with proxy.pipeline():
                    pass
            await proxy.delete_table(name)
        await client.close()

    arun(main)


def test_concurrent_transactions_are_serializable(server: ServerProcess, arun: Run, name: str) -> None:
    async def main() -> None:
        client = await connect(server)
        async with client.get_proxy() as setup:
            await setup.create_cyberdict(name, {"n": 0, "log": []})

        async def worker(i: int) -> None:
            async with client.get_proxy() as proxy:
                async def fn(tx: aio.AsyncTransaction) -> int:
                    d = tx.get_cyberdict(name)
                    n = await d.get("n")
                    log = await d.get("log")
                    await d.setitem("n", n + 1)
                    await d.setitem("log", [*log, i])
                    return n  # type: ignore[no-any-return]

                for _ in range(3):
                    await proxy.transact(fn, retries=1000)

        await asyncio.gather(*(worker(i) for i in range(5)))
        async with client.get_proxy() as proxy:
            d = await proxy.get_cyberdict(name)
            assert await d.get("n") == 15 and sorted(await d.get("log")) == sorted(list(range(5)) * 3)
            with pytest.raises(ZeroDivisionError):
                async def fails(tx: aio.AsyncTransaction) -> None:
                    await tx.get_cyberdict(name).setitem("n", -1)
                    raise ZeroDivisionError

                await proxy.transact(fails)
            assert await d.get("n") == 15  # not applied
            await proxy.delete_table(name)
        await client.close()

    arun(main)


def test_locks_exclude_and_carry_fencing_tokens(server: ServerProcess, arun: Run, name: str) -> None:
    async def main() -> None:
        client = await connect(server)
        async with client.get_proxy() as p1, client.get_proxy() as p2:
            async with p1.lock(name, ttl=10) as lock:
                assert lock.locked() and lock.token is not None
                first = lock.token
                with pytest.raises(cyberdb.LockTimeoutError):
                    await p2.lock(name, timeout=0.05).acquire()
                assert not await p2.lock(name).acquire(blocking=False)
                await lock.extend(20)
            other = p2.lock(name, timeout=WAIT)
            assert await other.acquire()
            assert other.token is not None and other.token > first
            await other.release()
            with pytest.raises(TypeError):
                with p1.lock(name):
                    pass
        await client.close()

    arun(main)


def test_expiry(server: ServerProcess, arun: Run, name: str) -> None:
    async def main() -> None:
        client = await connect(server)
        async with client.get_proxy() as proxy:
            d = await proxy.create_cyberdict(name)
            await d.set("k", "v", ttl=1000)
            remaining = await d.ttl("k")
            assert remaining is not None and 0 < remaining <= 1000
            assert await d.persist("k") is True and await d.ttl("k") is None
            await d.expire("k", 0)  # 0 or less deletes at once
            assert not await d.contains("k")
            with pytest.raises(KeyError):
                await d.ttl("k")
            with pytest.raises(ValueError):
                await d.set("k", "v", ttl=0)
            await proxy.delete_table(name)
        await client.close()

    arun(main)


# ---- blocking pops -------------------------------------------------------------------------------------------------


def test_waiting_pops_are_served_in_order_and_into_moves_atomically(db: cyberdb.Server, arun: Run,
                                                                    name: str) -> None:
    async def main() -> None:
        client = await connect(db)
        proxies = [client.get_proxy() for _ in range(4)]
        for p in proxies:
            await p.connect()
        q = await proxies[0].create_cyberlist(name)
        done = await proxies[0].create_cyberlist(name + "-done")
        poppers = []
        for i in range(3):  # each starts once the one before is blocked: the order of arrival is certain
            mine = await proxies[i + 1].get_cyberlist(name)
            into = done if i == 2 else None
            poppers.append(asyncio.create_task(mine.pop(0, timeout=WAIT, into=into)))
            await wait_blocked(db, i + 1)
        await q.append(1)
        assert await poppers[0] == 1
        await q.extend([2, 3, 4])
        assert [await p for p in poppers[1:]] == [2, 3]
        assert await q.tolist() == [4] and await done.tolist() == [3]
        with pytest.raises(IndexError):
            await (await proxies[1].create_cyberlist(name + "-empty")).pop(timeout=0.05)
        for p in proxies:
            await p.close()
        await client.close()

    arun(main)


def test_a_waiting_pop_outlives_the_socket_timeout(db: cyberdb.Server, arun: Run, name: str) -> None:
    async def main() -> None:
        client = await connect(db, socket_timeout=0.2)
        async with client.get_proxy() as proxy, client.get_proxy() as other:
            q = await proxy.create_cyberlist(name)
            task = asyncio.create_task(q.pop(0, timeout=WAIT))
            await wait_blocked(db, 1)
            for _ in range(3):  # past socket_timeout: a pop waiting on the server is not cut
                await asyncio.sleep(0.2)
            assert not task.done()
            await (await other.get_cyberlist(name)).append("late")
            assert await task == "late"
        await client.close()

    arun(main)


# ---- publish/subscribe ---------------------------------------------------------------------------------------------


def test_publish_and_subscribe(server: ServerProcess, arun: Run) -> None:
    async def main() -> None:
        client = await connect(server)
        async with client.get_proxy() as proxy:
            async with proxy.subscribe("news", "sport", timeout=WAIT) as sub:
                assert sub.channels == frozenset({"news", "sport"})
                assert await proxy.publish("news", {"n": 1}) == 1
                assert await proxy.publish("other", 0) == 0
                assert await proxy.publish("sport", [2]) == 1
                got = []
                async for message in sub:
                    got.append(message)
                    if len(got) == 2:
                        break
                assert got == [("news", {"n": 1}), ("sport", [2])]
                await sub.unsubscribe("sport")
                assert await sub.ping()
                await proxy.publish("sport", 3)
                await proxy.publish("news", 4)
                assert await sub.get(WAIT) == ("news", 4)
                assert await sub.get(0.01) is None
            with pytest.raises(cyberdb.DisconnectedError):
                await sub.get()
            async with proxy.subscribe("quiet", timeout=0.01) as sub:
                assert [m async for m in sub] == []  # iteration ends after timeout seconds without a message
        await client.close()

    arun(main)


# ---- TLS -----------------------------------------------------------------------------------------------------------


def test_tls_round_trip_and_refusals(tls_server: ServerProcess, certs: Certs,  # noqa: F811
                                     arun: Run, name: str) -> None:
    async def main() -> None:
        client = await connect(tls_server, tls=True, tls_ca=str(certs.ca))
        assert "tls=True" in repr(client)
        async with client.get_proxy() as proxy:
            d = await proxy.create_cyberdict(name)
            await d.setitem("k", [1, "two", 3.0])
            assert await (await proxy.get_cyberdict(name)).get("k") == [1, "two", 3.0]
            await proxy.delete_table(name)
        await client.close()
        with pytest.raises(cyberdb.ConnectionError, match="verification"):
            await connect(tls_server, tls=True, tls_ca=str(certs.other_ca))
        with pytest.raises(cyberdb.ConnectionError):
            await connect(tls_server, retry=cyberdb.Retry(timeout=0))  # plain client, TLS server

    arun(main)
