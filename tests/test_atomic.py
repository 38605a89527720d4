"""Atomic updates end to end: incr, ref handles, pipelines, atomic batches, transactions and locks.

Everything talks to a real server; the concurrency tests run real worker processes (``python -c``), each with
its own client, and wait for them with a bound.  No test measures time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from decimal import Decimal
from typing import Any

import pytest
from conftest import ServerProcess, kill_by_pid

import cyberdb

WORKER_TIMEOUT = 120.0

# A worker process: connects like an application would and runs one scenario; prints a JSON line at the end.
WORKER = textwrap.dedent('''
    import json, os, random, sys, time
    import cyberdb
    host, port, encrypt, mode, name, count = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4], \
        sys.argv[5], int(sys.argv[6])
    client = cyberdb.connect(host, port, password=os.environ["CYBERDB_PASSWORD"], encrypt=encrypt)
    out = {}
    with client.get_proxy() as proxy:
        if mode == "incr":
            d = proxy.get_cyberdict(name)
            for _ in range(count):
                d.incr("n")
        elif mode == "transact":
            def add(tx):
                t = tx.get_cyberdict(name)
                t["n"] = t["n"] + 1
            for _ in range(count):
                proxy.transact(add, retries=10_000)
        elif mode == "cart":
            d = proxy.get_cyberdict(name)
            for i in range(count):
                d.ref("sid", "cart").append([os.getpid(), i])
        elif mode == "lock":
            d = proxy.get_cyberdict(name)
            tokens = []
            for _ in range(count):
                with proxy.lock(name, ttl=30) as lock:
                    tokens.append(lock.token)
                    d["n"] = d["n"] + 1  # a plain read-modify-write, safe only under the lock
            out["tokens"] = tokens
        elif mode == "bank":
            deadline = time.monotonic() + count
            moves = 0
            def move(tx):
                t = tx.get_cyberdict(name)
                a, b = random.sample(range(10), 2)
                amount = random.randint(1, 50)
                t[a] = t[a] - amount
                t[b] = t[b] + amount
            while time.monotonic() < deadline:
                proxy.transact(move, retries=10_000)
                moves += 1
            out["moves"] = moves
        elif mode == "hold":
            lock = proxy.lock(name, ttl=float(count))
            lock.acquire()
            print(json.dumps({"token": lock.token}), flush=True)
            time.sleep(600)  # until the test kills it
    client.close()
    print(json.dumps(out), flush=True)
''')


def start_worker(srv: ServerProcess, mode: str, name: str, count: int | float) -> subprocess.Popen[str]:
    """Start one worker process (stopped by PID by the caller's finalizer)."""
    env = dict(os.environ, CYBERDB_PASSWORD=srv.password or "")
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, srv.host, str(srv.port), "1" if srv.encrypt else "0", mode, name, str(count)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(procs: list[subprocess.Popen[str]]) -> list[dict[str, Any]]:
    """Wait for every worker (bounded) and return what each printed last; kill them all on any failure."""
    import json

    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=WORKER_TIMEOUT)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        kill(procs)
    return results


def kill(procs: list[subprocess.Popen[str]]) -> None:
    """Stop workers by PID and reap them."""
    for proc in procs:
        kill_by_pid(proc)


@pytest.fixture
def workers(request: pytest.FixtureRequest) -> list[subprocess.Popen[str]]:
    """A list the test appends its worker processes to; all are killed by PID afterwards."""
    procs: list[subprocess.Popen[str]] = []
    request.addfinalizer(lambda: kill(procs))
    return procs


# ---- done-when: concurrent processes -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode, count", [("incr", 1000), ("transact", 250)])
def test_four_processes_count_exactly(server: ServerProcess, proxy: cyberdb.Proxy, name: str, mode: str, count: int,
                                      workers: list[subprocess.Popen[str]]) -> None:
    d = proxy.create_cyberdict(name, {"n": 0})  # incr: d.incr("n"); transact: a read-add-write transaction
    workers += [start_worker(server, mode, name, count) for _ in range(4)]
    finish(workers)
    assert d["n"] == 4 * count


def test_four_processes_append_to_a_nested_cart(server: ServerProcess, proxy: cyberdb.Proxy, name: str,
                                                workers: list[subprocess.Popen[str]]) -> None:
    d = proxy.create_cyberdict(name, {"sid": {"user": "x", "cart": []}})
    workers += [start_worker(server, "cart", name, 250) for _ in range(4)]
    finish(workers)
    cart = d["sid"]["cart"]
    assert len(cart) == 1000
    assert len({tuple(item) for item in cart}) == 1000  # each append exactly once
    assert d["sid"]["user"] == "x"


def test_bank_transfers_keep_the_total_for_a_reader_using_atomic_batches(
        plain_server: ServerProcess, name: str, workers: list[subprocess.Popen[str]]) -> None:
    client = plain_server.connect()
    try:
        with client.get_proxy() as proxy:
            bank = proxy.create_cyberdict(name, dict.fromkeys(range(10), 1000))
            workers += [start_worker(plain_server, "bank", name, 10) for _ in range(4)]
            reads = 0
            while any(proc.poll() is None for proc in workers):
                with proxy.pipeline(atomic=True) as pipe:
                    accounts = pipe.get_cyberdict(name)
                    balances = [accounts[i] for i in range(10)]
                assert sum(b.result() for b in balances) == 10_000
                reads += 1
            results = finish(workers)
            assert all(r["moves"] > 0 for r in results)
            assert reads > 0
            assert sum(bank.values()) == 10_000
            assert bank.todict() != dict.fromkeys(range(10), 1000)  # money really moved
    finally:
        client.close()


def test_lock_guards_a_plain_read_modify_write(server: ServerProcess, proxy: cyberdb.Proxy, name: str,
                                               workers: list[subprocess.Popen[str]]) -> None:
    d = proxy.create_cyberdict(name, {"n": 0})
    workers += [start_worker(server, "lock", name, 100) for _ in range(4)]
    results = finish(workers)
    assert d["n"] == 400
    tokens = sorted(t for r in results for t in r["tokens"])
    assert len(set(tokens)) == 400  # one token per acquisition


def test_a_killed_holders_lock_frees_within_its_ttl(server: ServerProcess, proxy: cyberdb.Proxy, name: str,
                                                    workers: list[subprocess.Popen[str]]) -> None:
    import json

    ttl = 3
    holder = start_worker(server, "hold", name, ttl)
    workers.append(holder)
    assert holder.stdout is not None
    held_token = json.loads(holder.stdout.readline())["token"]
    lock = proxy.lock(name, ttl=5)
    assert not lock.acquire(blocking=False)  # really held by the other process
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(10)
    assert not lock.acquire(blocking=False)  # a dead holder's lease runs on until its ttl ends
    lock.acquire(timeout=ttl + 1)  # free within ttl + 1 s of the kill, or LockTimeoutError
    assert lock.token is not None and lock.token > held_token
    lock.release()


# ---- incr ------------------------------------------------------------------------------------------------------

def test_incr_adds_and_returns_the_new_value(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name, {"i": 1, "f": 0.5, "dec": Decimal("1.10")})
    assert d.incr("i") == 2
    assert d.incr("i", -5) == -3
    assert d.incr("missing") == 1  # a missing key counts as 0
    assert d.incr("f", 2) == 2.5
    assert d.incr("i", 0.5) == -2.5 and type(d["i"]) is float
    assert d.incr("dec", Decimal("0.01")) == Decimal("1.11")
    assert d.incr("new-dec", Decimal("2")) == Decimal("2") and type(d["new-dec"]) is Decimal
    assert d.incr(7, 2**70) == 2**70  # big ints too


@pytest.mark.parametrize("value, amount", [("text", 1), (1, "1"), (True, 1), (1, True), ([1], 1), (None, 1),
                                           (Decimal(1), 1.5), (1 + 2j, 1)])
def test_incr_of_a_non_number_is_a_type_error_and_changes_nothing(proxy: cyberdb.Proxy, name: str,
                                                                    value: Any, amount: Any) -> None:
    d = proxy.create_cyberdict(name, {"k": value})
    with pytest.raises(TypeError):
        d.incr("k", amount)
    assert d.todict() == {"k": value} and type(d["k"]) is type(value)


def test_incr_beyond_the_int_limit_is_an_overflow_and_changes_nothing(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name, {"k": 2**32766})
    with pytest.raises(OverflowError):
        d.incr("k", 2**32766)
    assert d["k"] == 2**32766


def test_list_incr(proxy: cyberdb.Proxy, name: str) -> None:
    lst = proxy.create_cyberlist(name, [1, "x"])
    assert lst.incr(0, 4) == 5
    assert lst.incr(-2) == 6
    with pytest.raises(IndexError):
        lst.incr(5)
    with pytest.raises(TypeError):
        lst.incr(1)
    assert lst.tolist() == [6, "x"]


# ---- ref -------------------------------------------------------------------------------------------------------

def test_ref_updates_nested_values_in_place(proxy: cyberdb.Proxy, name: str) -> None:
    sessions = proxy.create_cyberdict(name, {"s1": {"cart": [], "user": {"name": "a"}}, "stats": {}})
    sessions.ref("s1", "cart").append({"sku": 1})
    sessions.ref("s1", "cart").extend([{"sku": 2}])
    sessions.ref("s1", "user")["name"] = "x"
    assert sessions.ref("stats", "/home").incr() == 1
    assert sessions.ref("stats", "/home").incr(2) == 3
    assert sessions.ref("s1").ref("cart", 0, "sku").incr(10) == 11
    assert sessions.todict() == {"s1": {"cart": [{"sku": 11}, {"sku": 2}], "user": {"name": "x"}},
                                 "stats": {"/home": 3}}
    cart = sessions.ref("s1", "cart")
    assert len(cart) == 2 and cart[1] == {"sku": 2} and cart[:1] == [{"sku": 11}]
    assert cart.pop() == {"sku": 2}
    assert sessions.ref("s1", "user").keys() == {"name"}
    assert sessions.ref("s1", "user").copy() == {"name": "x"}
    assert sessions.ref("stats", "/home").copy() == 3
    assert list(sessions.ref("s1", "user")) == ["name"]
    assert cart == [{"sku": 11}]
    assert cart.path == ("s1", "cart")


def test_ref_errors_are_the_builtin_ones(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name, {"a": {"b": [1, 2]}, "n": 5, "s": "text"})
    with pytest.raises(KeyError) as info:
        d.ref("a", "missing").append(1)
    assert info.value.args == ("missing",)
    with pytest.raises(IndexError):
        d.ref("a", "b", 9).incr()
    with pytest.raises(TypeError):
        d.ref("n", "x").keys()  # walking into an int
    with pytest.raises(TypeError):
        d.ref("s").append("x")  # a str is not a nested list
    with pytest.raises(TypeError):
        d.ref("a", "b").keys()  # a list has no keys()
    with pytest.raises(TypeError):
        d.ref("a", "b", "x").copy()  # list indexes are ints
    assert d.todict() == {"a": {"b": [1, 2]}, "n": 5, "s": "text"}


def test_list_ref(proxy: cyberdb.Proxy, name: str) -> None:
    lst = proxy.create_cyberlist(name, [{"tags": []}, [1, 2]])
    lst.ref(0, "tags").append("t")
    lst.ref(-1).insert(0, 0)
    with pytest.raises(TypeError):
        lst.ref(1).incr()  # a handle's incr adds to the number it points at, and this one is a list
    assert lst.ref(1).ref(0).incr(5) == 5
    lst.ref(1).ref(0).incr(-5)
    assert lst.tolist() == [{"tags": ["t"]}, [0, 1, 2]]


def test_multiplied_lists_hold_no_shared_values(proxy: cyberdb.Proxy, name: str) -> None:
    lst = proxy.create_cyberlist(name, [[1]])
    lst *= 3
    lst.ref(0).append(2)  # a shared inner list would show the change three times
    assert lst.tolist() == [[1, 2], [1], [1]]


# ---- pipelines -------------------------------------------------------------------------------------------------

def test_pipeline_results_and_errors_per_call(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name, {"a": 1})
    with proxy.pipeline() as pipe:
        t = pipe.get_cyberdict(name)
        first = t["a"]
        missing = t["missing"]
        added = t.incr("a")
        t["b"] = 2
        keys = t.keys()
        assert isinstance(first, cyberdb.Pending) and not first.done()
        with pytest.raises(RuntimeError):
            first.result()
    assert first.result() == 1 and added.result() == 2 and keys.result() == {"a", "b"}
    with pytest.raises(KeyError):
        missing.result()
    assert isinstance(pipe.results[1], KeyError)
    assert pipe.results[0] == 1 and pipe.results[3] is None
    assert d.todict() == {"a": 2, "b": 2}


def test_pipeline_sends_nothing_when_its_block_raises(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name)
    with pytest.raises(ZeroDivisionError), proxy.pipeline() as pipe:
        pipe.get_cyberdict(name)["x"] = 1
        1 / 0  # noqa: B018
    assert d.todict() == {}


def test_pipeline_refuses_what_needs_a_reply(proxy: cyberdb.Proxy, name: str) -> None:
    proxy.create_cyberlist(name, [3, 1])
    with proxy.pipeline() as pipe:
        t = pipe.get_cyberlist(name)
        for needs_reply in (lambda: list(t), lambda: t == [1], lambda: repr(t), lambda: t.sort(key=abs)):
            with pytest.raises(TypeError):
                needs_reply()


def test_a_pending_has_no_truth_value(proxy: cyberdb.Proxy, name: str) -> None:
    proxy.create_cyberdict(name, {"k": 0})
    with proxy.pipeline() as pipe:
        got = pipe.get_cyberdict(name).get("k")
        with pytest.raises(TypeError):
            bool(got)  # `if pending:` would always be true: refuse it
    assert got.result() == 0


def test_large_pipeline_in_one_go(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name)
    value = "v" * 1000
    with proxy.pipeline() as pipe:
        t = pipe.get_cyberdict(name)
        for i in range(5000):
            t[i] = value
        gets = [t[i] for i in range(5000)]
    assert all(g.result() == value for g in gets)
    assert len(d) == 5000


def test_atomic_batch_is_all_or_nothing(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name, {"a": 1, "b": [1], "c": 3})
    lst = proxy.create_cyberlist(name + "-l", [1, 2])
    with pytest.raises(cyberdb.BatchAbortedError) as info, proxy.pipeline(atomic=True) as pipe:
        t = pipe.get_cyberdict(name)
        t2 = pipe.get_cyberlist(name + "-l")
        t["z"] = 26
        del t["a"]
        t.ref("b").append(2)
        t2.append(3)
        t2.sort(reverse=True)
        ok = t.incr("c")
        failing = t["missing"]
        t["after"] = 1
    assert info.value.index == 6 and isinstance(info.value.error, KeyError)
    assert "dict.getitem" in str(info.value)
    with pytest.raises(KeyError):
        failing.result()
    with pytest.raises(cyberdb.BatchAbortedError):
        ok.result()
    assert list(d.todict().items()) == [("a", 1), ("b", [1]), ("c", 3)]  # order included
    assert lst.tolist() == [1, 2]


def test_atomic_batch_results(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name, {"a": 1})
    with proxy.pipeline(atomic=True) as pipe:
        t = pipe.get_cyberdict(name)
        before = t.todict()
        t["b"] = 2
        n = t.incr("a", 10)
        after = t.todict()
    assert before.result() == {"a": 1}  # each result is taken when its call runs
    assert n.result() == 11 and after.result() == {"a": 11, "b": 2}
    assert d.todict() == {"a": 11, "b": 2}


# ---- transactions ----------------------------------------------------------------------------------------------

def test_transact_reads_its_own_writes_and_returns_fn_result(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name, {"a": 1})
    lst = proxy.create_cyberlist(name + "-l")

    def fn(tx: cyberdb.Transaction) -> Any:
        t = tx.get_cyberdict(name)
        lt = tx.get_cyberlist(name + "-l")
        t["a"] = t["a"] + 1
        lt.append(t["a"])
        assert t["a"] == 2 and lt.tolist() == [2] and len(t) == 1
        assert d["a"] == 1  # nothing applied before the commit
        return t.pop("a"), t.setdefault("b", 5)

    assert proxy.transact(fn) == (2, 5)
    assert d.todict() == {"b": 5} and lst.tolist() == [2]


def test_transact_runs_fn_again_after_a_conflict(plain_server: ServerProcess, name: str) -> None:
    client = plain_server.connect()
    other = plain_server.connect()
    runs = []
    try:
        with client.get_proxy() as proxy, other.get_proxy() as meddler:
            d = proxy.create_cyberdict(name, {"n": 0, "unrelated": 0})
            m = meddler.get_cyberdict(name)

            def fn(tx: cyberdb.Transaction) -> int:
                t = tx.get_cyberdict(name)
                n = t["n"]
                runs.append(n)
                m["unrelated"] = len(runs)  # another key: no conflict (per-key granularity)
                if len(runs) < 3:
                    m["n"] = n + 100  # what fn read changes before its commit
                t["n"] = n + 1
                return n

            assert proxy.transact(fn) == 200
            assert runs == [0, 100, 200]
            assert d["n"] == 201

            def always_conflicts(tx: cyberdb.Transaction) -> None:
                t = tx.get_cyberdict(name)
                t["n"] = t["n"] + 1
                m.incr("n")

            with pytest.raises(cyberdb.TransactionConflictError):
                proxy.transact(always_conflicts, retries=2)
            assert d["n"] == 204  # only the meddler's three increments
    finally:
        client.close()
        other.close()


def test_transact_errors(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name, {"a": 1})

    def buffered_write_fails(tx: cyberdb.Transaction) -> None:
        t = tx.get_cyberdict(name)
        t["b"] = 2
        del t["missing"]  # buffered: its KeyError surfaces at the commit

    with pytest.raises(KeyError) as info:
        proxy.transact(buffered_write_fails)
    assert isinstance(info.value.__cause__, cyberdb.BatchAbortedError)
    assert d.todict() == {"a": 1}

    def raises(tx: cyberdb.Transaction) -> None:
        tx.get_cyberdict(name)["a"] = 5
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        proxy.transact(raises)
    assert d.todict() == {"a": 1}


# ---- locks -----------------------------------------------------------------------------------------------------

def test_lock_exclusion_timeout_and_tokens(server: ServerProcess, name: str) -> None:
    a, b = server.connect(), server.connect()
    try:
        with a.get_proxy() as pa, b.get_proxy() as pb:
            with pa.lock(name, ttl=10) as first:
                assert first.locked()
                other = pb.lock(name, ttl=10, timeout=0.05)
                with pytest.raises(cyberdb.LockTimeoutError) as info:
                    other.acquire()
                assert isinstance(info.value, TimeoutError)
                first.extend(20)
            with pb.lock(name) as second:
                assert second.token is not None and first.token is None
            tokens = []
            for _ in range(5):
                with pa.lock(name + "-x") as lk:
                    tokens.append(lk.token)
            assert tokens == sorted(tokens) and len(set(tokens)) == 5
    finally:
        a.close()
        b.close()


def test_stale_holder_release_and_extend_are_refused(proxy: cyberdb.Proxy, name: str) -> None:
    stale = proxy.lock(name, ttl=0.2)
    stale.acquire()
    token = stale.token
    newer = proxy.lock(name, ttl=10)
    newer.acquire(timeout=10)  # waits for the stale lease to end
    assert newer.token is not None and token is not None and newer.token > token
    with pytest.raises(cyberdb.LockLostError):
        stale.release()
    stale.token = token
    with pytest.raises(cyberdb.LockLostError):
        stale.extend()
    newer.release()  # still the holder: works


def test_closed_proxy_refuses_pipelines_and_transactions(client: cyberdb.Client) -> None:
    proxy = client.get_proxy()
    with pytest.raises(cyberdb.DisconnectedError):
        proxy.pipeline()
    with pytest.raises(cyberdb.DisconnectedError):
        proxy.transact(lambda tx: None)
    with pytest.raises(cyberdb.DisconnectedError):
        proxy.lock("x").acquire()


def test_threads_share_a_client_with_exactly_once_numbers(server: ServerProcess, name: str) -> None:
    client = server.connect()
    try:
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name, {"n": 0})

        def work() -> None:
            with client.get_proxy() as p:
                t = p.get_cyberdict(name)
                for _ in range(200):
                    t.incr("n")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(WORKER_TIMEOUT)
        with client.get_proxy() as proxy:
            assert proxy.get_cyberdict(name)["n"] == 1600
        del d
    finally:
        client.close()


def test_pipeline_with_replies_beyond_one_request_budget(proxy: cyberdb.Proxy, name: str) -> None:
    big = "x" * (1 << 20)
    d = proxy.create_cyberdict(name, {i: big for i in range(20)})
    with proxy.pipeline() as pipe:
        t = pipe.get_cyberdict(name)
        got = [t.pop(i) for i in range(20)]  # writes with 20 MiB of replies: more than one request may carry
    assert [g.result() for g in got] == [big] * 20
    assert d.todict() == {}
