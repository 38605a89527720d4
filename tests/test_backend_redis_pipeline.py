"""Pipelines on the Redis backend (issue 11 item 3), against a real redis-server and a real 3-master cluster.

The pipeline tests of ``test_differential_nested.py`` and ``test_atomic.py`` are reused as they are (called with
the backend's proxy), so each Pending is compared with the same call made on plain Python; then what is the
backend's own: tables on different masters in one pipeline (one Redis pipeline per node), order kept around the
compare-and-set paths, a slot moved while a pipeline runs, and a node whose replies are lost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
import test_atomic as atomic
import test_backend_redis as base
import test_differential_nested as nested
from hypothesis import given
from hypothesis import strategies as st
from redis_servers import RedisCluster

import cyberdb
from cyberdb.backend_redis import NotSupportedError, RedisBackendClient, RedisBackendProxy
from cyberdb.backend_redis import connect as backend_connect
from cyberdb.backend_redis.routing import Router

# the backend's fixtures (a server and a cluster; a proxy of each)
backend, rclient, rproxy, cluster_proxy = base.backend, base.rclient, base.rproxy, base.cluster_proxy

# ---- the server's pipeline tests, on the backend ----------------------------------------------------------------


@nested.SETTINGS
@given(data=st.data())
def test_pipeline_gives_the_results_of_sequential_calls_on_redis(rproxy: RedisBackendProxy,
                                                                 data: st.DataObject) -> None:
    nested.test_pipeline_gives_the_results_of_sequential_calls.hypothesis.inner_test(  # type: ignore[attr-defined]
        proxy=rproxy, data=data)


@pytest.mark.parametrize("what", sorted(nested.NOT_QUEUEABLE))
def test_pipeline_refuses_what_needs_a_reply_on_redis(rproxy: RedisBackendProxy, what: str) -> None:
    nested.test_pipeline_refuses_what_needs_a_reply_and_queues_nothing(rproxy, what)


SERVER_TESTS = [
    (nested, "test_pipeline_methods_that_return_none_give_a_pending"),
    (nested, "test_iterating_a_pipeline_list_queues_nothing"),
    (atomic, "test_pipeline_results_and_errors_per_call"),
    (atomic, "test_pipeline_sends_nothing_when_its_block_raises"),
    (atomic, "test_pipeline_refuses_what_needs_a_reply"),
    (atomic, "test_a_pending_has_no_truth_value"),
    (atomic, "test_large_pipeline_in_one_go"),
    (atomic, "test_pipeline_with_replies_beyond_one_request_budget"),
]


@pytest.mark.parametrize(("module", "test"), SERVER_TESTS, ids=[t for _m, t in SERVER_TESTS])
def test_server_pipeline_tests_on_redis(rproxy: RedisBackendProxy, name: str, module: Any, test: str) -> None:
    try:
        getattr(module, test)(rproxy, name)
    finally:
        for table in list(rproxy.tables()):
            if table.startswith(name):
                rproxy.delete_table(table)


def test_atomic_pipelines_are_not_supported_and_a_closed_proxy_refuses(rclient: RedisBackendClient) -> None:
    proxy = rclient.get_proxy()
    with pytest.raises(NotSupportedError, match=r"pipeline\(atomic=True\)"):
        proxy.pipeline(atomic=True)
    with pytest.raises(cyberdb.DisconnectedError):
        proxy.pipeline()


# ---- order and grouping ---------------------------------------------------------------------------------------


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[str, int], int]]:
    """Every Redis pipeline sent: (node, number of commands)."""
    sent: list[tuple[tuple[str, int], int]] = []
    original = Router.send_many

    def spy(self: Router, addr: tuple[str, int], commands: list[Any]) -> Any:
        sent.append((addr, len(commands)))
        return original(self, addr, commands)

    monkeypatch.setattr(Router, "send_many", spy)
    return sent


def test_compare_and_set_calls_keep_their_place_in_the_order(rproxy: RedisBackendProxy, name: str,
                                                              sends: list[Any]) -> None:
    d = rproxy.create_cyberdict(name, {"a": Decimal("1.5"), "s": "x", "n": 1})
    lst = rproxy.create_cyberlist(name + "-l", [3, 1, 2])
    model_d: dict[str, Any] = {"a": Decimal("1.5"), "s": "x", "n": 1}
    try:
        with rproxy.pipeline() as pipe:
            pd, pl = pipe.get_cyberdict(name), pipe.get_cyberlist(name + "-l")
            got = [pd.incr("a", 1), pd["a"]]  # the fast path hands over to a compare-and-set (a Decimal)
            pd["a"] = 5
            got += [pd.incr("a", 1), pd.incr("s", 1), pd.incr("n", Decimal(2)), pd["n"], pd.get("zz", 0)]
            pl.sort()  # read, sort, write back: two round trips, then the append
            pl.append(0)
            got += [pl[:], pl.pop(0), pl.tolist()]
        assert [g.result() for g in got[:2]] == [Decimal("2.5"), Decimal("2.5")]
        assert got[2].result() == 6
        with pytest.raises(TypeError):
            got[3].result()
        assert [g.result() for g in got[4:7]] == [Decimal(3), Decimal(3), 0]
        assert [g.result() for g in got[7:]] == [[1, 2, 3, 0], 1, [2, 3, 0]]
        model_d.update({"a": 6, "n": Decimal(3)})
        assert d.todict() == model_d and lst.tolist() == [2, 3, 0]
        assert len(sends) > 1  # the compare-and-set paths took more rounds
    finally:
        rproxy.delete_table(name)
        rproxy.delete_table(name + "-l")


def test_keys_inserted_by_a_compare_and_set_keep_the_dict_order(rproxy: RedisBackendProxy, name: str) -> None:
    d = rproxy.create_cyberdict(name, {"n": 1})
    try:
        with rproxy.pipeline() as pipe:
            t = pipe.get_cyberdict(name)
            got = [t.incr("dec", Decimal(1)), t.incr("n", 2**60), t.incr("inf", float("inf"))]
            t["after"] = 0
            got.append(t.keys())
        assert [g.result() for g in got[:3]] == [Decimal(1), 2**60 + 1, float("inf")]
        assert list(got[3].result()) == ["n", "dec", "inf", "after"]
        assert list(d.todict()) == ["n", "dec", "inf", "after"]
    finally:
        rproxy.delete_table(name)


def test_a_sort_that_fails_half_way_leaves_the_list_as_python_does(rproxy: RedisBackendProxy, name: str) -> None:
    """Found by the pipeline differential test: Python's sort leaves a list partly sorted when a comparison fails
    (so does the CyberDB server); the backend's compare-and-set used to drop that state."""
    items: list[Any] = [[], [None], [], None]
    lst = rproxy.create_cyberlist(name, items)
    try:
        with pytest.raises(TypeError):
            items.sort()
        with pytest.raises(TypeError):
            lst.sort()
        assert lst.tolist() == items == [[], [], [None], None]
    finally:
        rproxy.delete_table(name)


def test_simple_calls_are_one_round_trip(rproxy: RedisBackendProxy, name: str, sends: list[Any]) -> None:
    d = rproxy.create_cyberdict(name)
    try:
        with rproxy.pipeline() as pipe:
            t = pipe.get_cyberdict(name)
            for i in range(300):
                t[i] = i
            got = [t.get(i) for i in range(300)]
            incrs = [t.incr(f"c{i}") for i in range(50)]  # ints: each on its own key, so none waits
        assert [g.result() for g in got] == list(range(300)) and [p.result() for p in incrs] == [1] * 50
        assert [n for _addr, n in sends] == [650]
        assert len(d) == 350
    finally:
        rproxy.delete_table(name)


def test_tables_on_different_masters_go_in_one_pipeline_per_node(redis_cluster: RedisCluster,
                                                                  cluster_proxy: RedisBackendProxy, name: str,
                                                                  sends: list[Any]) -> None:
    first, second = base._tags_on_different_slots_owners(redis_cluster)
    a = cluster_proxy.create_cyberdict(name + "-a", tag=first)
    b = cluster_proxy.create_cyberlist(name + "-b", tag=second)
    assert cluster_proxy.node_of(a.name) != cluster_proxy.node_of(b.name)
    try:
        with cluster_proxy.pipeline() as pipe:
            pa, pb = pipe.get_cyberdict(a.name), pipe.get_cyberlist(b.name)
            for i in range(100):
                pa[i] = i * i
                pb.append(i)
            reads = [pa[7], pb[7], pa.todict(), pb.pop()]
            missing = pipe.get_cyberdict(name + "-none")["x"]
        assert reads[0].result() == 49 and reads[1].result() == 7 and reads[3].result() == 99
        assert reads[2].result() == {i: i * i for i in range(100)}
        with pytest.raises(cyberdb.TableNotFoundError):
            missing.result()
        assert sorted(sends) == sorted([(cluster_proxy.node_of(a.name), 102), (cluster_proxy.node_of(b.name), 102)])
        assert b.tolist() == list(range(99))
    finally:
        cluster_proxy.delete_table(a.name)
        cluster_proxy.delete_table(b.name)


# ---- a slot moving, replies lost --------------------------------------------------------------------------------


def test_a_slot_moved_while_a_pipeline_runs(redis_cluster: RedisCluster, cluster_proxy: RedisBackendProxy,
                                            name: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    d = cluster_proxy.create_cyberdict(name, {"a": 1}, tag=name)
    lst = cluster_proxy.create_cyberlist(name + "-l", [1, 2], tag=name)
    other = cluster_proxy.create_cyberdict(name + "-o", {"x": 0})
    slot = redis_cluster.key_slot(f"cy:{{{name}}}:{name}:m")
    before = cluster_proxy.node_of(name)
    source = next(n for n in redis_cluster.masters if (n.host, n.port) == before)
    target = next(n for n in redis_cluster.masters if (n.host, n.port) != before)
    target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
    source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
    keys = source.command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    source.command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    finisher = threading.Timer(0.3, base._finish_move, (redis_cluster, slot, target))
    finisher.start()
    try:
        # reads answered ASK, writes TRYAGAIN until the migration ends, then MOVED: each is sent again until it
        # runs, once, in order with the other calls of its table; the other table's calls are not held up
        with cluster_proxy.pipeline() as pipe:
            pd, pl, po = (pipe.get_cyberdict(name), pipe.get_cyberlist(name + "-l"),
                          pipe.get_cyberdict(name + "-o"))
            got = [pd["a"], pl[-1], po.incr("x")]
            pd["b"] = 2
            pl.append(3)
            got += [pd.incr("a", 10), pd.todict(), pl.tolist(), pl.pop(0), po.incr("x")]
    finally:
        finisher.join(10)
    assert [g.result() for g in got] == [1, 2, 1, 11, {"a": 11, "b": 2}, [1, 2, 3], 1, 2]
    assert all(f"{e}Error" in caplog.text for e in ("Ask", "TryAgain", "Moved"))
    assert cluster_proxy.node_of(name) == (target.host, target.port)
    assert d.todict() == {"a": 11, "b": 2} and lst.tolist() == [2, 3] and other.todict() == {"x": 2}
    assert source.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    for table in (name, name + "-l", name + "-o"):
        cluster_proxy.delete_table(table)


@pytest.fixture
def slow_client(backend: tuple[str, Any]) -> Iterator[RedisBackendClient]:
    client = backend_connect(backend[0], socket_timeout=0.3)
    yield client
    client.close()


def test_writes_whose_replies_are_lost_fail_and_are_never_sent_twice(backend: tuple[str, Any],
                                                                      slow_client: RedisBackendClient,
                                                                      name: str) -> None:
    with slow_client.get_proxy() as proxy:
        lst = proxy.create_cyberlist(name)
        node = base._node_holding(backend, proxy, name)
        node.command("CLIENT", "PAUSE", 3000, "WRITE")  # writes (FCALL) wait; reads do not
        try:
            with proxy.pipeline() as pipe:
                t = pipe.get_cyberlist(name)
                t.append("once")
                second = t.pop()
            assert isinstance(pipe.results[0], cyberdb.TimeoutError)
            with pytest.raises(cyberdb.TimeoutError):
                second.result()
        finally:
            node.command("CLIENT", "UNPAUSE")
        lst.append("later")
        assert lst.tolist()[-1] == "later" and lst.count("once") <= 1
        proxy.delete_table(name)
