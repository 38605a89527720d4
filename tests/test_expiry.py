"""Key expiry and bounded tables: d.set(ttl=), expire/ttl/persist, maxsize (LRU) dicts, maxlen lists.

The store-level differential tests pin the store's clock, so that expired keys are still in memory (not swept)
when each operation runs: every operation that can see a key must then treat an expired key as absent.  The
rest runs against real servers over TCP.
"""

from __future__ import annotations

import collections
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cachetools
import pytest
from conftest import PASSWORD, ServerProcess, serving

import cyberdb
from cyberdb.commands import AT_PATH, BY_NAME
from cyberdb.server.store import Store

C = BY_NAME
T0 = 1_000_000.0  # the pinned clock of the store-level tests


def _store_with_expired() -> Store:
    """Table "t" = {"a": 1, "b": {"x": [1]}, "c": 3, 4: 4}, where "b" and 4 expired (still in memory) and "c"
    has a deadline still ahead."""
    store = Store()
    store.pinned_time = T0
    store.execute(C["db.create"], ["t", "dict", {}])
    store.execute(C["dict.setitem"], ["t", "a", 1])
    store.execute(C["dict.set"], ["t", "b", {"x": [1]}, 10.0])
    store.execute(C["dict.set"], ["t", "c", 3, 100.0])
    store.execute(C["dict.set"], ["t", 4, 4, 5.0])
    store.pinned_time = T0 + 50  # "b" and 4 are due, not removed yet
    assert len(store.dump()["t"]) == 4
    return store


def _reference() -> dict[Any, Any]:
    return {"a": 1, "c": 3}


def _outcome(fn: Callable[[], Any]) -> Any:
    try:
        return ("ok", fn())
    except Exception as exc:  # noqa: BLE001 - the exception is the outcome compared
        return ("raised", type(exc), exc.args)


# (name, (spec, arguments after the table), the same on a plain dict)
DIFFERENTIAL: list[tuple[str, Any, Callable[[dict[Any, Any]], Any]]] = [
    ("getitem expired", ("dict.getitem", ["b"]), lambda d: d["b"]),
    ("getitem int key", ("dict.getitem", [4.0]), lambda d: d[4.0]),
    ("getitem live", ("dict.getitem", ["c"]), lambda d: d["c"]),
    ("get", ("dict.get", ["b", "default"]), lambda d: d.get("b", "default")),
    ("contains", ("dict.contains", ["b"]), lambda d: "b" in d),
    ("len", ("dict.len", []), len),
    ("keys", ("dict.keys", []), list),
    ("values", ("dict.values", []), lambda d: list(d.values())),
    ("items", ("dict.items", []), lambda d: list(d.items())),
    ("todict", ("dict.todict", []), lambda d: d),
    ("copy", ("dict.copy", []), lambda d: d),
    ("pop", ("dict.pop", ["b"]), lambda d: d.pop("b")),
    ("pop default", ("dict.pop", ["b", 0]), lambda d: d.pop("b", 0)),
    ("popitem", ("dict.popitem", []), lambda d: d.popitem()),
    ("setdefault", ("dict.setdefault", ["b", 7]), lambda d: d.setdefault("b", 7)),
    ("delitem", ("dict.delitem", [4]), lambda d: d.__delitem__(4)),
    ("incr", ("dict.incr", [4, 1]), lambda d: d.__setitem__(4, d.get(4, 0) + 1) or d[4]),
    ("update", ("dict.update", [{"z": 0}]), lambda d: d.update({"z": 0})),
    ("clear", ("dict.clear", []), lambda d: d.clear()),
]


@pytest.mark.parametrize(("what", "call", "plain"), DIFFERENTIAL, ids=[d[0] for d in DIFFERENTIAL])
def test_an_expired_key_is_absent_for_every_operation(what: str, call: tuple[str, list[Any]],
                                                        plain: Callable[[dict[Any, Any]], Any]) -> None:
    store = _store_with_expired()
    spec, args = C[call[0]], call[1]
    reference = _reference()
    expected = _outcome(lambda: plain(reference))
    got = _outcome(lambda: store.execute(spec, ["t", *args]))
    if expected[0] == "ok" and got[0] == "ok":
        assert _plain(got[1]) == _plain(expected[1])
    else:
        assert got[:2] == expected[:2], (got, expected)
    assert store.execute(C["dict.todict"], ["t"]) == reference  # and the table is what the plain dict became


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def test_expired_keys_are_absent_at_a_path_and_in_batches_and_for_expiry_commands() -> None:
    store = _store_with_expired()
    with pytest.raises(KeyError):
        store.execute(AT_PATH[C["dict.getitem"].op], ["t", ["b"], "x"])
    for command in ("dict.ttl", "dict.persist"):
        with pytest.raises(KeyError):
            store.execute(C[command], ["t", "b"])
    with pytest.raises(KeyError):
        store.execute(C["dict.expire"], ["t", 4, 10])
    store = _store_with_expired()
    steps = [[C["dict.get"].op, ["t", "b", "gone"]], [C["dict.len"].op, ["t"]]]
    assert cyberdb.codec.decode_value(store.execute(C["db.batch"], [steps])) == ["gone", 2]


def test_a_rolled_back_batch_restores_deadlines() -> None:
    store = _store_with_expired()
    steps = [[C["dict.set"].op, ["t", "c", 30, 1000.0]], [C["dict.set"].op, ["t", "a", 10, 1.0]],
             [C["dict.setitem"].op, ["t", "c", 0]], [C["dict.getitem"].op, ["t", "missing"]]]
    with pytest.raises(cyberdb.BatchAbortedError):
        store.execute(C["db.batch"], [steps])
    assert store.dump()["t"]["c"] == 3 and store.execute(C["dict.ttl"], ["t", "c"]) == pytest.approx(50)
    assert store.execute(C["dict.ttl"], ["t", "a"]) is None  # "a" had no deadline and has none again


# ---- over TCP -------------------------------------------------------------------------------------------------

def _wait_until(deadline: float) -> None:
    """Let the wall clock pass ``deadline`` (expiry is about time: there is nothing else to wait for)."""
    while time.time() <= deadline:
        time.sleep(max(0.0, deadline - time.time()) + 0.01)


def test_set_ttl_expire_persist(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name)
    d.set("k", "v", ttl=30)
    assert d["k"] == "v" and 29 < d.ttl("k") <= 30
    d.set("plain", 1)
    assert d.ttl("plain") is None
    with pytest.raises(KeyError):
        d.ttl("absent")
    with pytest.raises(KeyError):
        d.expire("absent", 5)
    with pytest.raises(KeyError):
        d.persist("absent")
    assert d.persist("k") is True and d.ttl("k") is None and d.persist("k") is False
    d.expire("k", 100)
    assert 99 < d.ttl("k") <= 100
    d["k"] = "new"  # storing a value replaces the expiry, as Redis SET does
    assert d.ttl("k") is None
    d.set("n", 1, ttl=100)
    d.incr("n")  # changing in place keeps it
    assert d["n"] == 2 and d.ttl("n") is not None
    d.expire("n", 0)  # 0 or less deletes now, as Redis EXPIRE
    assert "n" not in d
    with pytest.raises(ValueError):
        d.set("k", 1, ttl=0)
    with pytest.raises(ValueError):
        d.set("k", 1, ttl=float("nan"))
    d["nested"] = {}
    with pytest.raises(TypeError):  # deadlines are for a table's own keys
        d.ref("nested").set("x", 1, ttl=5)


def test_an_expired_key_is_gone_for_every_client_view(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name)
    d["keep"] = 1
    start = time.time()
    d.set("gone", {"cart": [1]}, ttl=0.3)
    d.set(7, 7, ttl=0.3)
    assert len(d) == 3
    _wait_until(start + 0.3)
    assert "gone" not in d and d.get("gone") is None and len(d) == 1
    assert d.todict() == {"keep": 1} and list(d) == ["keep"] and dict(d.items()) == {"keep": 1}
    with pytest.raises(KeyError):
        d.ref("gone", "cart").append(2)
    with proxy.pipeline() as pipe:
        pending = pipe.get_cyberdict(name).get(7, "absent")
    assert pending.result() == "absent"
    assert proxy.transact(lambda tx: tx.get_cyberdict(name).get("gone", "absent")) == "absent"


def test_the_sweep_reclaims_keys_nobody_reads(in_process, name: str) -> None:  # type: ignore[no-untyped-def]
    db = in_process()
    client = cyberdb.connect("127.0.0.1", db.port, password=PASSWORD)
    try:
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name)
            start = time.time()
            with proxy.pipeline() as pipe:
                p = pipe.get_cyberdict(name)
                for i in range(20_000):
                    p.set(i, i, ttl=0.2)
            d["keep"] = 1
            _wait_until(start + 0.2)
            limit = time.monotonic() + 30  # bounds the test only: the sweep runs every 100 ms
            while db.info()["expiring_keys"] and time.monotonic() < limit:
                time.sleep(0.05)
            assert db.info()["expiring_keys"] == 0  # removed from memory without any client asking
            assert d.todict() == {"keep": 1}
    finally:
        client.close()


@pytest.mark.parametrize("via", ["snapshot", "log"])
def test_deadlines_survive_a_restart_and_count_as_expired_after_it(tmp_path: Path, name: str, via: str) -> None:
    snapshot, log = tmp_path / "data.cdb", tmp_path / "data.aof"
    with serving(log if via == "log" else None) as (db, client):
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name)
            start = time.time()
            d.set("short", 1, ttl=0.5)
            d.set("long", 2, ttl=3600)
            d["plain"] = 3
            bounded = proxy.create_cyberdict(name + "-lru", maxsize=2)
            bounded["a"], bounded["b"] = 1, 2
            bounded["a"]  # noqa: B018 - "a" is now the most recently used
            if via == "log":
                db.rewrite_append_log()  # the deadlines and the order of use are in the log's base
                d.set("after-rewrite", 4, ttl=3600)
            else:
                db.save_db(str(snapshot))
    _wait_until(start + 0.5)
    restarted = cyberdb.Server()
    if via == "snapshot":
        restarted.load_db(str(snapshot))
    with serving(log if via == "log" else None, db=restarted) as (_db, client):
        with client.get_proxy() as proxy:
            d = proxy.get_cyberdict(name)
            assert "short" not in d
            assert 3500 < d.ttl("long") <= 3600 and d.ttl("plain") is None
            if via == "log":
                assert 3500 < d.ttl("after-rewrite") <= 3600
            bounded = proxy.get_cyberdict(name + "-lru")
            bounded["c"] = 3  # evicts "b", the least recently used before the restart
            assert bounded.todict() == {"a": 1, "c": 3}


def test_evictions_are_logged_and_replayed_exactly(tmp_path: Path, name: str) -> None:
    log = tmp_path / "data.aof"
    with serving(log) as (_db, client):
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name, maxsize=3)
            for i in range(5):
                d[i] = i
                d[0]  # noqa: B018 - reads are not logged, yet keep 0 in: the evictions are logged instead
            before = d.todict()
    assert before == {0: 0, 3: 3, 4: 4}
    with serving(log) as (_db, client):
        with client.get_proxy() as proxy:
            assert proxy.get_cyberdict(name).todict() == before


# ---- bounded tables against their references ------------------------------------------------------------------

def test_maxsize_dict_matches_cachetools_lru(proxy: cyberdb.Proxy, name: str) -> None:
    for seed in range(4):
        rng = random.Random(seed)
        d = proxy.create_cyberdict(f"{name}-{seed}", maxsize=5)
        ref: cachetools.LRUCache[Any, Any] = cachetools.LRUCache(maxsize=5)
        for step in range(300):
            key, value, op = rng.randrange(12), rng.randrange(100), rng.randrange(7)
            if op == 0:
                d[key] = value
                ref[key] = value
            elif op == 1:
                assert d.get(key) == ref.get(key)
            elif op == 2:
                assert _outcome(lambda: d[key]) == _outcome(lambda: ref[key])  # noqa: B023
            elif op == 3:
                assert (key in d) == (key in ref)  # not a use
            elif op == 4:
                assert d.setdefault(key, value) == ref.setdefault(key, value)
            elif op == 5:
                assert d.pop(key, None) == ref.pop(key, None)
            else:
                got = d.incr(key, 1)
                ref[key] = ref.get(key, 0) + 1
                assert got == ref[key]
            assert list(d) == list(ref), (seed, step)  # cachetools iterates its dict: insertion order
        assert d.todict() == {k: ref[k] for k in list(ref)}


def test_maxlen_list_matches_deque(proxy: cyberdb.Proxy, name: str) -> None:
    for seed in range(4):
        rng = random.Random(seed)
        lst = proxy.create_cyberlist(f"{name}-{seed}", [0, 1, 2, 3, 4, 5], maxlen=4)
        ref: collections.deque[Any] = collections.deque([0, 1, 2, 3, 4, 5], maxlen=4)
        assert lst.tolist() == list(ref)
        for step in range(200):
            op, value = rng.randrange(9), rng.randrange(100)
            if op == 0:
                lst.append(value)
                ref.append(value)
            elif op == 1:
                items = [value] * rng.randrange(6)
                lst.extend(items)
                ref.extend(items)
            elif op == 2:
                assert _outcome(lst.pop)[:2] == _outcome(ref.pop)[:2]
            elif op == 3:
                assert _outcome(lambda: lst.pop(0))[:2] == _outcome(ref.popleft)[:2]  # noqa: B023
            elif op == 4:
                index = rng.randrange(-2, 4)
                got = _outcome(lambda: lst.insert(index, value))  # noqa: B023
                want = _outcome(lambda: ref.insert(index, value))  # noqa: B023
                assert got[:2] == want[:2], (got, want)
            elif op == 5:
                n = rng.randrange(3)
                lst *= n
                ref *= n
            elif op == 6:
                lst += [value, value + 1]
                ref += [value, value + 1]
            elif op == 7:
                lst.reverse()
                ref.reverse()
            else:
                lst.clear()
                ref.clear()
            assert lst.tolist() == list(ref), (seed, step)


def test_bounded_tables_check_their_options(proxy: cyberdb.Proxy, name: str) -> None:
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            proxy.create_cyberdict(name, maxsize=bad)
        with pytest.raises(ValueError):
            proxy.create_cyberlist(name, maxlen=bad)
    assert name not in proxy.tables()
    d = proxy.create_cyberdict(name, {i: i for i in range(10)}, maxsize=3)
    assert d.todict() == {7: 7, 8: 8, 9: 9}  # as if inserted in order


def test_a_server_process_expires_keys(plain_server: ServerProcess, name: str) -> None:
    client = plain_server.connect()
    try:
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name)
            start = time.time()
            d.set("k", 1, ttl=0.2)
            _wait_until(start + 0.2)
            assert d.todict() == {}
    finally:
        client.close()
