"""The Redis backend (issue 11): the CyberDict/CyberList differential suites and the table registry, run against a
real redis-server and a real 3-master Redis Cluster (fixtures ``redis_server``/``redis_cluster`` of conftest.py).

The flat differential tests of ``test_differential.py`` are reused as they are (their ``inner_test`` is called
with a proxy of the backend), so every result, error and content is compared with a plain dict/list, with types.
"""

from __future__ import annotations

import inspect
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from functools import partial
from operator import methodcaller
from typing import Any

import pytest
import test_differential as flat
import test_differential_nested as nested
import test_tables as table_tests
from hypothesis import given
from hypothesis import strategies as st
from redis_servers import RedisCluster, RedisServer

import cyberdb
from cyberdb.backend_redis import NotSupportedError, RedisBackendClient, RedisBackendProxy, plans
from cyberdb.backend_redis import connect as backend_connect
from cyberdb.commands import BY_NAME as C

BACKENDS = ["single", "cluster"]


def cluster_url(cluster: RedisCluster) -> str:
    """``redis-cluster://h1:p1,h2:p2,.../`` of a test cluster."""
    return "redis-cluster://" + ",".join(f"{h}:{p}" for h, p in cluster.startup_nodes) + "/"


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    """(kind, the server or cluster) for each backend kind."""
    if request.param == "single":
        server: RedisServer = request.getfixturevalue("redis_server")
        yield server.url, server
    else:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        yield cluster_url(cluster), cluster


@pytest.fixture(scope="module")
def rclient(backend: tuple[str, Any]) -> Iterator[RedisBackendClient]:
    """A client of the backend, made through ``cyberdb.connect``'s URL dispatch."""
    client = cyberdb.connect(backend[0])
    assert isinstance(client, RedisBackendClient)
    yield client
    client.close()


@pytest.fixture
def rproxy(rclient: RedisBackendClient) -> Iterator[RedisBackendProxy]:
    """A connected proxy of the backend."""
    with rclient.get_proxy() as proxy:
        yield proxy


# ---- (a) the differential suites ------------------------------------------------------------------------------

@flat.SETTINGS
@given(data=st.data())
def test_cyberdict_behaves_like_dict_on_redis(rproxy: RedisBackendProxy, data: st.DataObject) -> None:
    flat.test_cyberdict_behaves_like_dict.hypothesis.inner_test(proxy=rproxy, data=data)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", sorted(flat.ELEMENTS))
@flat.SETTINGS
@given(data=st.data())
def test_cyberlist_behaves_like_list_on_redis(rproxy: RedisBackendProxy, kind: str, data: st.DataObject) -> None:
    flat.test_cyberlist_behaves_like_list.hypothesis.inner_test(proxy=rproxy, kind=kind, data=data)


@nested.SETTINGS
@given(data=st.data())
def test_handles_and_incr_behave_like_nested_python_values_on_redis(rproxy: RedisBackendProxy,
                                                                     data: st.DataObject) -> None:
    nested.test_handles_and_incr_behave_like_nested_python_values.hypothesis.inner_test(proxy=rproxy, data=data)  # type: ignore[attr-defined]


NESTED_TESTS = ["test_multiplied_nested_lists_hold_no_shared_values",
                "test_ref_incr_adds_to_the_value_the_handle_points_at",
                "test_bool_index_into_a_nested_list_works_as_in_python"]


@pytest.mark.parametrize("test", NESTED_TESTS)
def test_nested_tests_on_redis(rproxy: RedisBackendProxy, name: str, test: str) -> None:
    getattr(nested, test)(rproxy, name)


# ---- (b) equal values of different types ----------------------------------------------------------------------

ONES = [1, 1.0, True, Decimal("1.000"), 1 + 0j]
ZEROS = [0, -0.0, False, Decimal("-0"), 0.0]


@pytest.mark.parametrize("group", [ONES, ZEROS], ids=["one", "zero"])
def test_equal_keys_of_different_types_are_one_key(rproxy: RedisBackendProxy, name: str, group: list[Any]) -> None:
    d = rproxy.create_cyberdict(name)
    model: dict[Any, Any] = {}
    for i, key in enumerate(group):
        d[key] = i
        model[key] = i
        assert flat.typed(d.todict()) == flat.typed(model)  # the first key's type is kept, the value replaced
        assert len(d) == 1
    for key in group:
        assert key in d and d[key] == len(group) - 1 and d.get(key) == len(group) - 1
    assert type(next(iter(d))) is type(group[0])
    d.update({group[-1]: "u", (group[1], "t"): 1})
    model.update({group[-1]: "u", (group[1], "t"): 1})
    assert flat.typed(d.todict()) == flat.typed(model)
    assert d[(group[2], "t")] == 1  # a tuple holding an equal value is the same key
    assert flat.typed(d.pop(group[3])) == flat.typed(model.pop(group[3]))
    assert group[0] not in d and len(d) == 1
    d[group[4]] = "new"  # inserted again: now with the new key's type, at the end
    model[group[4]] = "new"
    assert flat.typed(d.todict()) == flat.typed(model)
    with pytest.raises(TypeError):
        d.incr(group[1])


def test_list_search_uses_python_equality(rproxy: RedisBackendProxy, name: str) -> None:
    items = [1, "a", True, 1.0, Decimal("1.0"), (1, 2), (1.0, 2), [True, 2], 0, -0.0, False]
    lst = rproxy.create_cyberlist(name, items)
    model = list(items)
    for probe in [1, True, Decimal("1"), 1 + 0j, (True, 2.0), [1, 2], 0, Decimal("-0"), "a", 2, (1, 3)]:
        assert lst.count(probe) == model.count(probe)
        assert (probe in lst) == (probe in model)
        for call in (methodcaller("index", probe), methodcaller("index", probe, 2, -1)):
            assert flat.outcome(call, lst) == flat.outcome(call, model)
    for probe in [True, (1.0, 2.0), 0.0, 99]:
        remove = methodcaller("remove", probe)
        assert flat.outcome(remove, lst) == flat.outcome(remove, model)
        assert flat.typed(lst.tolist()) == flat.typed(model)
    assert float("nan") not in lst and lst.count(float("nan")) == 0


# ---- (c) where tables live on a cluster ----------------------------------------------------------------------

def _tags_on_different_slots_owners(cluster: RedisCluster) -> tuple[str, str]:
    owners: dict[tuple[str, int], str] = {}
    for i in range(1000):
        tag = f"tag-{i}"
        node = cluster.node_for_key(f"cy:{{{tag}}}:x:m")
        owners.setdefault((node.host, node.port), tag)
        if len(owners) >= 2:
            break
    first, second = list(owners.values())[:2]
    return first, second


def _keys_on(cluster: RedisCluster, pattern: str) -> dict[tuple[str, int], list[str]]:
    """The keys matching ``pattern`` on each master (asked directly: a node lists only its own keys)."""
    found: dict[tuple[str, int], list[str]] = {}
    for node in cluster.masters:
        keys = node.command("KEYS", pattern)
        if keys:
            found[(node.host, node.port)] = [k.decode() if isinstance(k, bytes) else k for k in keys]
    return found


@pytest.fixture
def cluster_proxy(redis_cluster: RedisCluster) -> Iterator[RedisBackendProxy]:
    """A connected proxy of the 3-master cluster."""
    client = backend_connect(cluster_url(redis_cluster))
    try:
        with client.get_proxy() as proxy:
            yield proxy
    finally:
        client.close()


def test_tags_place_tables_on_masters(redis_cluster: RedisCluster, cluster_proxy: RedisBackendProxy,
                                      name: str) -> None:
    cluster, rproxy = redis_cluster, cluster_proxy
    tag_a, tag_b = _tags_on_different_slots_owners(cluster)
    a1 = rproxy.create_cyberdict(name + "-a1", {"x": 1}, tag=tag_a)
    a2 = rproxy.create_cyberlist(name + "-a2", [1], tag=tag_a)
    b1 = rproxy.create_cyberdict(name + "-b1", {"y": 2}, tag=tag_b)
    try:
        where_a = _keys_on(cluster, f"cy:{{{tag_a}}}:{name}-a*")
        where_b = _keys_on(cluster, f"cy:{{{tag_b}}}:{name}-b*")
        assert len(where_a) == 1 and len(where_b) == 1  # each tag's tables: all keys on one master
        assert set(where_a) != set(where_b)  # different tags here: different masters
        names = {k.split(":")[2] for keys in where_a.values() for k in keys}
        assert names == {name + "-a1", name + "-a2"}  # both tables of tag a, together
        assert rproxy.node_of(name + "-a1") == rproxy.node_of(name + "-a2") == next(iter(where_a))
        assert rproxy.node_of(name + "-b1") == next(iter(where_b))
        assert a1["x"] == 1 and a2[0] == 1 and b1["y"] == 2
        other = backend_connect(cluster_url(cluster))  # another client finds the tag in the registry
        try:
            with other.get_proxy() as p2:
                assert p2.get_cyberdict(name + "-a1") == {"x": 1}
                assert p2.get_cyberlist(name + "-a2") == [1]
        finally:
            other.close()
    finally:
        for n in ("-a1", "-a2", "-b1"):
            rproxy.delete_table(name + n)
    assert _keys_on(cluster, f"cy:{{{tag_a}}}:{name}*") == {}


def test_default_tags_spread_tables_over_the_masters(cluster_proxy: RedisBackendProxy) -> None:
    rproxy = cluster_proxy
    names = [f"spread-{uuid.uuid4().hex[:8]}-{i}" for i in range(24)]
    for n in names:
        rproxy.create_cyberdict(n, {"n": n})
    try:
        nodes = {rproxy.node_of(n) for n in names}
        assert len(nodes) == 3  # 24 tables with their own tags: on all 3 masters (p of failing ~ 3 * (2/3)**24)
        for n in names:
            assert rproxy.get_cyberdict(n)["n"] == n
    finally:
        for n in names:
            rproxy.delete_table(n)


# ---- (d) the registry and errors -----------------------------------------------------------------------------

# every test of test_tables.py that needs nothing but a proxy and a table name (not those about the server's
# connection internals)
NOT_FOR_REDIS = {"test_failed_command_leaves_the_connection_usable"}  # reads a CyberDB proxy's connection
TABLE_TESTS = sorted(n for n, fn in vars(table_tests).items() if n.startswith("test_") and callable(fn)
                     and list(inspect.signature(fn).parameters) == ["proxy", "name"] and n not in NOT_FOR_REDIS)


def test_the_table_tests_are_found() -> None:
    assert len(TABLE_TESTS) >= 20 and "test_delete_table" in TABLE_TESTS


@pytest.mark.parametrize("test", TABLE_TESTS)
def test_table_tests_on_redis(rproxy: RedisBackendProxy, name: str, test: str) -> None:
    getattr(table_tests, test)(rproxy, name)


@pytest.mark.parametrize("first", ["dict", "list"])
@pytest.mark.parametrize("second", ["dict", "list"])
def test_duplicate_name_raises_and_keeps_the_table(rproxy: RedisBackendProxy, name: str, first: str,
                                                   second: str) -> None:
    table_tests.test_duplicate_name_raises_and_keeps_the_table(rproxy, name, first, second)  # type: ignore[arg-type]


def test_tables_are_listed_in_creation_order_and_deleted(rproxy: RedisBackendProxy, name: str) -> None:
    made = [name + s for s in ("-3", "-1", "-2")]
    for i, n in enumerate(made):
        (rproxy.create_cyberdict if i % 2 else rproxy.create_cyberlist)(n)
    listed = [n for n in rproxy.tables() if n.startswith(name)]
    assert listed == made
    assert rproxy.tables()[made[0]] == "CyberList" and rproxy.tables()[made[1]] == "CyberDict"
    with pytest.raises(cyberdb.TableExistsError):
        rproxy.create_cyberdict(made[0])
    for n in made:
        rproxy.delete_table(n)
    assert not [n for n in rproxy.tables() if n.startswith(name)]
    with pytest.raises(cyberdb.TableNotFoundError):
        rproxy.delete_table(made[0])
    with pytest.raises(TypeError):
        rproxy.create_cyberdict("")


def test_a_handle_of_a_deleted_table_fails_loudly(rproxy: RedisBackendProxy, rclient: RedisBackendClient,
                                                  name: str) -> None:
    d = rproxy.create_cyberdict(name, {"a": 1})
    lst = rproxy.create_cyberlist(name + "-l", [1, 2])
    with rclient.get_proxy() as other:
        other.delete_table(name)
        other.delete_table(name + "-l")
        other.create_cyberlist(name)  # the name comes back as the other kind
    for read in (lambda: d["a"], lambda: len(d), lambda: "a" in d, lambda: d.todict(), lambda: d.get("a")):
        with pytest.raises(cyberdb.WrongTableTypeError):
            read()
    with pytest.raises(cyberdb.WrongTableTypeError):
        d["b"] = 2
    for op in (lambda: lst[0], lambda: len(lst), lambda: lst.append(3), lambda: lst.tolist(), lambda: 1 in lst):
        with pytest.raises(cyberdb.TableNotFoundError):
            op()
    rproxy.delete_table(name)


def test_closed_proxy_and_unsupported_features(rclient: RedisBackendClient, name: str) -> None:
    proxy = rclient.get_proxy()
    proxy.connect()
    d = proxy.create_cyberdict(name, {"k": [1]})
    lst = proxy.create_cyberlist(name + "-l")
    try:
        cases: list[tuple[str, Callable[[], Any]]] = [
            ("pipeline(atomic=True)", lambda: proxy.pipeline(atomic=True)),
            ("transact()", lambda: proxy.transact(lambda tx: None)),
            ("publish()", lambda: proxy.publish("c", 1)),
            ("dict.set with a ttl", lambda: d.set("k", 1, ttl=5)),
            ("dict.expire", lambda: d.expire("k", 5)),
            ("list.bpop", lambda: lst.pop(timeout=1)),
            ("maxsize", lambda: proxy.create_cyberdict(name + "-b", maxsize=3)),
        ]
        for what, fn in cases:
            with pytest.raises(NotSupportedError, match="not supported on the Redis backend yet") as info:
                fn()
            assert what in str(info.value) and isinstance(info.value, NotImplementedError)
        assert d == {"k": [1]}  # nothing was changed by the refused calls
    finally:
        proxy.delete_table(name)
        proxy.delete_table(name + "-l")
        proxy.close()
    with pytest.raises(cyberdb.DisconnectedError):
        d["k"]


def test_urls_dispatch_to_the_backend(backend: tuple[str, Any]) -> None:
    client = cyberdb.from_url(backend[0])
    try:
        assert isinstance(client, RedisBackendClient) and client.ping()
    finally:
        client.close()
    with pytest.raises(ValueError):
        cyberdb.connect("redis-cluster:///")


# ---- routing: library reload, MOVED and ASK ------------------------------------------------------------------

def test_the_library_is_loaded_again_where_it_is_missing(backend: tuple[str, Any], rproxy: RedisBackendProxy,
                                                          name: str) -> None:
    d = rproxy.create_cyberdict(name, {"a": 1})
    node = _node_holding(backend, rproxy, name)
    node.command("FUNCTION", "DELETE", "cyberdb_v1")  # as after a restart without persistence
    assert node.command("FUNCTION", "LIST") == []
    d["b"] = 2  # "function not found": loaded again, then run
    assert d == {"a": 1, "b": 2} and node.command("FUNCTION", "LIST") != []
    rproxy.delete_table(name)


def _finish_move(cluster: RedisCluster, slot: int, target: Any) -> None:
    for node in cluster.masters:
        node.command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)


def test_routing_follows_ask_tryagain_and_moved_when_a_slot_moves(redis_cluster: RedisCluster,
                                                                  cluster_proxy: RedisBackendProxy, name: str,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="cyberdb.backend_redis.routing")
    d = cluster_proxy.create_cyberdict(name, {"a": 1}, tag=name)
    lst = cluster_proxy.create_cyberlist(name + "-l", [1, 2], tag=name)
    slot = redis_cluster.key_slot(f"cy:{{{name}}}:{name}:m")
    before = cluster_proxy.node_of(name)
    source = next(n for n in redis_cluster.masters if (n.host, n.port) == before)
    target = next(n for n in redis_cluster.masters if (n.host, n.port) != before)
    # a resharding by hand: the slot migrates, its keys are moved, the slot still belongs to the source
    target.command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
    source.command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
    keys = source.command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
    source.command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", *keys)
    finisher = threading.Timer(0.3, _finish_move, (redis_cluster, slot, target))
    try:
        # single-key reads: the source answers ASK, the target serves them after ASKING
        assert d["a"] == 1 and len(lst) == 2 and lst[-1] == 2
        with pytest.raises(KeyError):
            d["missing"]
        assert cluster_proxy.node_of(name) == before  # ASK does not change the slot map
        assert "ASK" in caplog.text and "MOVED" not in caplog.text and "TryAgain" not in caplog.text
        # a write function names keys that do not exist (yet): TRYAGAIN until the migration ends, then the
        # source answers MOVED, the slot map is refreshed and the write runs once on the target
        finisher.start()
        d["b"] = 2
        lst.append(3)
    finally:
        finisher.join(10)
    assert "TryAgainError" in caplog.text and "MOVED" in caplog.text
    assert cluster_proxy.node_of(name) == (target.host, target.port)
    assert d.todict() == {"a": 1, "b": 2} and lst.tolist() == [1, 2, 3]
    assert source.command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    assert target.command("CLUSTER", "COUNTKEYSINSLOT", slot) > 0
    cluster_proxy.delete_table(name)
    cluster_proxy.delete_table(name + "-l")


# ---- incr: the library's fast path and the compare-and-set, both exact ---------------------------------------

INCR_VALUES = [0, 1, -1, 127, 128, 255, 256, -32, -33, -128, -129, 65535, 65536, -32768, -32769, 2**31, -2**31,
               -2**31 - 1, 2**32, 2**53 - 2, 2**53 - 1, 2**53, -(2**53) + 1, -(2**53), 2**63, -(2**63), 2**70,
               1.5, -0.0, 0.0, 2.0, -2.5, 1e308, float("inf"), 1e16, True, Decimal("1.5"), "s", None, [1]]
INCR_AMOUNTS = [1, -1, 0, 2, 2**53 - 1, -(2**53), 2**64, 0.5, -0.0, 1e308, 2.5, True, Decimal("1"), "x"]


def python_incr(target: Any, index: Any, amount: Any) -> Any:
    """What CyberDB's incr does, in plain Python (a number plus a number, else TypeError)."""
    current = target[index]
    if type(amount) not in (int, float, Decimal) or type(current) not in (int, float, Decimal):
        raise TypeError("not a number")
    target[index] = current + amount
    return target[index]


def test_incr_matches_python_for_every_number_type(rproxy: RedisBackendProxy, name: str) -> None:
    d = rproxy.create_cyberdict(name)
    lst = rproxy.create_cyberlist(name + "-l")
    try:
        for value in INCR_VALUES:
            for amount in INCR_AMOUNTS:
                model_d: dict[Any, Any] = {"k": value}
                model_l: list[Any] = [0, value]
                d["k"] = value
                lst[:] = [0, value]

                want = flat.outcome(partial(python_incr, index="k", amount=amount), model_d)
                got = flat.outcome(methodcaller("incr", "k", amount), d)
                assert want[0] == got[0] and (want[0] == "raise" or want == got), (value, amount, want, got)
                assert flat.typed(d.todict()) == flat.typed(model_d), (value, amount)
                got_l = flat.outcome(methodcaller("incr", -1, amount), lst)
                want_l = flat.outcome(partial(python_incr, index=-1, amount=amount), model_l)
                assert want_l[0] == got_l[0] and (want_l[0] == "raise" or want_l == got_l), (value, amount)
                assert flat.typed(lst.tolist()) == flat.typed(model_l), (value, amount)
                # the stored element still compares by ==: an integral float result is found by its int
                if want_l[0] == "ok":
                    assert lst.count(model_l[-1]) == model_l.count(model_l[-1])
        assert d.incr("missing", 2.5) == 2.5 and d.incr("missing2") == 1 and type(d["missing2"]) is int
        with pytest.raises(IndexError, match="list index out of range"):
            lst.incr(5)
        with pytest.raises(TypeError, match="adds an int"):  # the amount is checked first, as on the server
            lst.incr(5, False)
    finally:
        rproxy.delete_table(name)
        rproxy.delete_table(name + "-l")


def test_incr_of_ints_and_floats_is_one_function_call(redis_server: RedisServer, name: str) -> None:
    client = backend_connect(redis_server.url)
    try:
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name, {"n": 1, "f": 0.5})

            def calls() -> tuple[int, int]:
                """(FCALL, HGET) calls so far (commandstats counts the functions' own commands too)."""
                stats = redis_server.command("INFO", "commandstats")
                text = stats.decode() if isinstance(stats, bytes) else str(stats)

                def count(command: str) -> int:
                    line = next((x for x in text.splitlines() if x.startswith(f"cmdstat_{command}:")), "calls=0,")
                    return int(line.split("calls=")[1].split(",")[0])

                return count("fcall"), count("hget")

            fcalls, hgets = calls()
            assert d.incr("n", 2) == 3 and d.incr("f", 1) == 1.5 and d.incr("new", -1) == -1
            assert calls() == (fcalls + 3, hgets + 3)  # one function each, reading the value itself
            assert d.incr("n", Decimal("0.5")) == Decimal("3.5")  # a Decimal: read, add here, compare-and-set
            assert calls() == (fcalls + 4, hgets + 5)
            proxy.delete_table(name)
    finally:
        client.close()


# ---- scans: big tables in pieces -------------------------------------------------------------------------------

@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of a few items and no whole-table shortcut (as test_scan.py does for the server)."""
    monkeypatch.setattr(plans, "WHOLE", 0)
    monkeypatch.setattr(plans, "PIECE_ITEMS", 4)
    monkeypatch.setattr(plans, "SCAN_BUDGET", 40)
    monkeypatch.setattr(plans, "HEAD_BUDGET", 60)
    monkeypatch.setattr(plans, "HEAD_ITEMS", 20)


def test_copies_views_and_iteration_are_exact_in_pieces(rproxy: RedisBackendProxy, name: str,
                                                        small_pieces: None) -> None:
    content = {i: f"v{i}" for i in range(50)} | {("t", 1): None, 2.5: b"x", "z": [1, {"a": 2}], 1.0: "one"}
    d = rproxy.create_cyberdict(name, content)
    lst = rproxy.create_cyberlist(name + "-l", list(range(37)) + [[1, 2], "s"])
    try:
        cursor, parts = rproxy.call(C["dict.scan"], [name, 0, "keys"])
        assert cursor is not None and len(parts[0]) == 4  # really in pieces
        assert flat.typed(d.todict()) == flat.typed(content) and d.copy() == content
        assert list(d.keys()) == list(content) and list(d.values()) == list(content.values())
        assert list(d.items()) == list(content.items()) and list(d) == list(content)
        assert list(reversed(d)) == list(reversed(content)) and d == content and d != {**content, "x": 1}
        assert lst.tolist() == list(range(37)) + [[1, 2], "s"] and list(lst) == lst.tolist()
        text = repr(d)
        assert text.startswith("{0: 'v0', ") and text.endswith(", ...}")
        assert repr(lst).startswith("[0, 1, ") and repr(lst).endswith(", ...]")
        with pytest.raises(TypeError):
            rproxy.call(C["dict.scan"], [name, "not a cursor", "keys"])
        with pytest.raises(ValueError, match="what must be"):
            rproxy.call(C["dict.scan"], [name, 0, "everything"])
        with pytest.raises(TypeError, match="tolist"):
            rproxy.call(C["list.scan"], [name + "-l", 0, "items"])
    finally:
        rproxy.delete_table(name)
        rproxy.delete_table(name + "-l")


def test_a_dict_scan_sees_each_key_present_throughout_exactly_once(rproxy: RedisBackendProxy, name: str,
                                                                  small_pieces: None) -> None:
    d = rproxy.create_cyberdict(name, {i: i for i in range(40)})
    seen = []
    for n, key in enumerate(d):  # writes between pieces: deletes ahead, inserts, updates
        seen.append(key)
        if n == 5:
            del d[30]  # deleted before its piece: not returned
            d[1000] = 1  # added after the scan began: not returned
            d[0] = "updated"  # already returned: not again
    assert seen == [k for k in range(40) if k != 30]
    assert d.todict()[0] == "updated" and 1000 in d
    rproxy.delete_table(name)


def test_repr_of_a_small_table_is_exact(rproxy: RedisBackendProxy, name: str) -> None:
    d = rproxy.create_cyberdict(name, {"a": 1, 1.0: [2]})
    lst = rproxy.create_cyberlist(name + "-l", [1, "x"])
    assert repr(d) == repr({"a": 1, 1.0: [2]}) and repr(lst) == "[1, 'x']"
    rproxy.delete_table(name)
    rproxy.delete_table(name + "-l")


@pytest.mark.parametrize("size", [0, 1, 2048, 2049, 5000])
def test_iteration_of_a_long_cyberlist_yields_everything_in_order(rproxy: RedisBackendProxy, name: str,
                                                                  size: int) -> None:
    table_tests.test_iterating_a_long_cyberlist_yields_everything_in_order(rproxy, name, size)  # type: ignore[arg-type]
    rproxy.delete_table(name)


def test_a_table_made_again_elsewhere_is_found_again(backend: tuple[str, Any], rproxy: RedisBackendProxy,
                                                     name: str) -> None:
    d = rproxy.create_cyberdict(name, {"k": "old"})
    assert d["k"] == "old"  # this client now knows the table's tag
    other = backend_connect(backend[0])
    try:
        with other.get_proxy() as p2:
            p2.delete_table(name)
            p2.create_cyberdict(name, {"k": "new"}, tag=name + "-elsewhere")
    finally:
        other.close()
    assert d["k"] == "new" and len(d) == 1  # the stale keys failed; the registry gave the new ones
    d["j"] = 1
    assert d == {"k": "new", "j": 1}
    rproxy.delete_table(name)


def _node_holding(backend: tuple[str, Any], proxy: RedisBackendProxy, table: str) -> Any:
    """The RedisServer / RedisNode that holds ``table``."""
    nodes = backend[1].masters if isinstance(backend[1], RedisCluster) else [backend[1]]
    return next(n for n in nodes if (n.host, n.port) == proxy.node_of(table))


def test_a_write_whose_reply_is_late_is_never_sent_twice(backend: tuple[str, Any], name: str) -> None:
    """redis-py re-sends a command on a new connection after a timeout by default; a backend write must not be
    re-sent (it may have run): it raises at the timeout."""
    client = backend_connect(backend[0], socket_timeout=0.3)
    try:
        with client.get_proxy() as proxy:
            lst = proxy.create_cyberlist(name)
            node = _node_holding(backend, proxy, name)

            node.command("CLIENT", "PAUSE", 3000, "WRITE")  # writes (FCALL) wait; reads and INFO do not
            try:
                with pytest.raises(cyberdb.TimeoutError):
                    lst.append("once")  # redis-py's default retries would re-send it until the pause ends
            finally:
                node.command("CLIENT", "UNPAUSE")
            lst.append("later")
            assert lst.tolist()[-1] == "later" and lst.count("once") <= 1
            proxy.delete_table(name)
    finally:
        client.close()


# ---- concurrency: every command atomic, compare-and-set retried ------------------------------------------------

def test_concurrent_writers_lose_no_update(backend: tuple[str, Any], name: str) -> None:
    client = backend_connect(backend[0])
    try:
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name, {"fast": 0, "decimal": Decimal(0), "nested": {"items": []}})
            lst = proxy.create_cyberlist(name + "-l", [0, {"n": []}])

            def work(worker: int) -> None:
                for i in range(60):
                    d.incr("fast")  # one function call
                    d.incr("decimal", Decimal("0.5"))  # read, add, compare-and-set
                    lst.incr(0, 2)
                    if i < 15:
                        d.ref("nested", "items").append((worker, i))  # local copy, compare-and-set
                        lst.ref(1, "n").append(worker)

            threads = [threading.Thread(target=work, args=(w,)) for w in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert d["fast"] == 240 and d["decimal"] == Decimal("120.0") and lst[0] == 480
            items = d["nested"]["items"]
            assert len(items) == 60 and len(set(items)) == 60
            assert sorted(lst[1]["n"]) == sorted([w for w in range(4) for _ in range(15)])
            proxy.delete_table(name)
            proxy.delete_table(name + "-l")
    finally:
        client.close()


def test_redis_refusing_a_write_raises_a_cyberdb_error(redis_server: RedisServer, name: str) -> None:
    client = backend_connect(redis_server.url)
    try:
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict(name, {"a": 1})
            redis_server.command("CONFIG", "SET", "maxmemory", "1")  # every write is now over the limit
            try:
                with pytest.raises(cyberdb.MemoryLimitError, match="maxmemory"):
                    d["b"] = 2
                assert d == {"a": 1} and d["a"] == 1  # reads go on
            finally:
                redis_server.command("CONFIG", "SET", "maxmemory", "0")
            d["b"] = 2
            assert d == {"a": 1, "b": 2}
            proxy.delete_table(name)
    finally:
        client.close()


def test_a_redis_url_to_a_cluster_node_says_to_use_redis_cluster(redis_cluster: RedisCluster) -> None:
    """redis:// names one server; pointed at a cluster node that does not own the registry's slot, the first
    command gets MOVED: a clear ConnectionError naming redis-cluster://, nothing written."""
    owner = redis_cluster.node_for_key("cy:{cy}:registry")
    other = next(n for n in redis_cluster.masters if (n.host, n.port) != (owner.host, owner.port))
    client = cyberdb.from_url(f"redis://{other.host}:{other.port}/0")
    try:
        with client.get_proxy() as proxy, pytest.raises(cyberdb.ConnectionError, match="redis-cluster://"):
            proxy.tables()
    finally:
        client.close()
