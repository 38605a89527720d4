"""Tables of any size: copies, views, iteration and repr in pieces (dict.scan / list.scan, cyberdb.server.scan).

The server's reply budget is made small here (through the store of an in-process server) so that pieces,
cursors and their consistency rule are exercised with small tables; one test uses a real 80 MiB table.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import proxy_of

import cyberdb
from cyberdb.server import scan


@pytest.fixture
def small_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pieces of a few items: GROUP items per encoding, a budget of ~2 groups, no whole-table shortcut."""
    monkeypatch.setattr(scan, "GROUP", 4)
    monkeypatch.setattr(scan, "WHOLE", 0)
    monkeypatch.setattr(scan, "SCAN_BUDGET", 12)
    monkeypatch.setattr(scan, "HEAD_BUDGET", 60)


@pytest.fixture
def db(in_process: Any, small_pieces: None) -> Iterator[cyberdb.Proxy]:
    server = in_process()
    with proxy_of(server) as proxy:
        yield proxy


def test_copies_views_and_iteration_are_exact_in_pieces(db: cyberdb.Proxy) -> None:
    content = {i: f"v{i}" for i in range(50)} | {("t", 1): None, 2.5: b"x", "z": [1, {"a": 2}]}
    d = db.create_cyberdict("big", content)
    assert d.todict() == content and list(d.todict()) == list(content)  # order kept
    assert d.copy() == content
    assert list(d.keys()) == list(content) and list(d.values()) == list(content.values())
    assert list(d.items()) == list(content.items())
    assert list(d) == list(content) and list(reversed(d)) == list(reversed(content))
    assert d == content and d != {**content, "extra": 1}
    assert (d | {"n": 1}) == content | {"n": 1} and ({"n": 1} | d) == {"n": 1} | content
    items = list(range(37)) + [[1, 2], "s"]
    lst = db.create_cyberlist("biglist", items)
    assert lst.tolist() == items and lst.copy() == items and list(lst) == items
    assert lst == items and lst + [0] == items + [0] and [0] + lst == [0] + items and lst * 2 == items * 2
    assert (lst < items + [1]) and not (lst > items)


def test_a_dict_scan_sees_each_key_present_throughout_exactly_once(in_process: Any, small_pieces: None) -> None:
    server = in_process()
    store = server._store
    with proxy_of(server) as proxy:
        d = proxy.create_cyberdict("d", {i: i for i in range(40)})
        seen = []
        for n, key in enumerate(d):  # writes between pieces: deletes ahead, inserts, updates
            seen.append(key)
            if n == 5:
                del d[30]  # deleted before its piece: not returned
                d[1000] = 1  # added after the scan began: not returned
                d[0] = "updated"  # already returned: not again
        assert seen == [k for k in range(40) if k != 30]
        assert len(store.cursors) == 0  # the scan ended: its cursor is gone
        assert d.todict()[0] == "updated" and 1000 in d


def test_a_piece_re_sent_with_its_cursor_is_the_same_piece(in_process: Any, small_pieces: None) -> None:
    """The position travels with the request: a re-sent request (after a reconnect) cannot skip items."""
    from cyberdb.codec import decode_value
    from cyberdb.commands import BY_NAME

    server = in_process()
    with proxy_of(server) as proxy:
        proxy.create_cyberdict("d", {i: i for i in range(20)})
    store = server._store
    spec = BY_NAME["dict.scan"]

    def run(args: list[Any]) -> Any:
        return server._call_in_loop(lambda: decode_value(store.execute(spec, args)))

    cursor, first = run(["d", 0, "keys"])
    again = run(["d", cursor, "keys"])
    assert run(["d", cursor, "keys"]) == again  # the same request, answered the same way
    keys = [*itertools.chain.from_iterable(first), *itertools.chain.from_iterable(again[1])]
    while again[0] is not None:
        again = run(["d", again[0], "keys"])
        keys += itertools.chain.from_iterable(again[1])
    assert keys == list(range(20))
    with pytest.raises(ValueError, match="unknown"):
        run(["d", cursor, "keys"])  # ended


def test_scan_requests_are_checked(db: cyberdb.Proxy) -> None:
    d = db.create_cyberdict("d", {i: i for i in range(20)})
    lst = db.create_cyberlist("l", [1, 2])
    from cyberdb.commands import BY_NAME

    spec = BY_NAME["dict.scan"]
    with pytest.raises(ValueError, match="what must be"):
        db.call(spec, ["d", 0, "everything"])
    with pytest.raises(TypeError):
        db.call(spec, ["d", "not a cursor", "keys"])
    with pytest.raises(ValueError, match="unknown"):
        db.call(spec, ["d", [12345, 0], "keys"])
    with pytest.raises(TypeError, match="tolist"):
        db.call(spec, ["d", 0, "list"])
    with pytest.raises(TypeError, match="tolist"):
        db.call(BY_NAME["list.scan"], ["l", 0, "items"])
    with pytest.raises(TypeError):
        db.call(BY_NAME["list.scan"], ["l", -1, "list"])
    assert d.todict() == {i: i for i in range(20)} and lst.tolist() == [1, 2]  # nothing changed


def test_repr_of_a_big_table_is_shortened_and_of_a_small_one_exact(db: cyberdb.Proxy) -> None:
    d = db.create_cyberdict("big", {i: "x" * 5 for i in range(100)})
    text = repr(d)
    assert text.startswith("{0: 'xxxxx', ") and text.endswith(", ...}") and len(text) < 200
    small = db.create_cyberdict("small", {"a": 1})
    assert repr(small) == repr({"a": 1})
    lst = db.create_cyberlist("l", list(range(100)))
    assert repr(lst).startswith("[0, 1, ") and repr(lst).endswith(", ...]")
    assert repr(db.create_cyberlist("l2", [1])) == "[1]"


def test_pipelines_queue_a_copy_that_fits_and_fail_one_that_does_not(db: cyberdb.Proxy) -> None:
    db.create_cyberdict("small", {"a": 1})
    db.create_cyberdict("big", {i: i for i in range(40)})
    with db.pipeline() as pipe:
        small = pipe.get_cyberdict("small").todict()
        big = pipe.get_cyberdict("big").todict()
        keys = pipe.get_cyberdict("small").keys()
    assert small.result() == {"a": 1} and list(keys.result()) == ["a"]
    with pytest.raises(TypeError, match="does not fit in one reply"):
        big.result()


def test_transactions_and_batches_read_only_what_fits_in_one_reply(db: cyberdb.Proxy) -> None:
    db.create_cyberdict("small", {"a": 1})
    db.create_cyberdict("big", {i: i for i in range(40)})
    assert db.transact(lambda tx: tx.get_cyberdict("small").todict()) == {"a": 1}
    with pytest.raises(ValueError, match="does not fit in one reply"):
        db.transact(lambda tx: tx.get_cyberdict("big").todict())


def test_an_80_mib_table_is_iterated_copied_and_printed(plain_server: Any) -> None:
    """Over the 64 MiB frame limit: todict(), items(), values(), iteration and repr all work (real budgets)."""
    value = "v" * 1000
    n = 84_000  # ~84 MB of values
    with proxy_of(plain_server) as proxy:
        d = proxy.create_cyberdict("huge80")
        try:
            with proxy.pipeline() as pipe:
                table = pipe.get_cyberdict("huge80")
                for i in range(n):
                    table[i] = value
            copy = d.todict()
            assert len(copy) == n and copy[n - 1] == value and list(copy)[:3] == [0, 1, 2]
            assert sum(1 for _ in d) == n
            assert sum(len(v) for v in d.values()) == n * 1000
            assert len(d.items()) == n
            text = repr(d)
            assert text.startswith("{0: 'vvvv") and text.endswith("...}") and len(text) < 100_000
        finally:
            proxy.delete_table("huge80")
        lst = proxy.create_cyberlist("huge80l")
        big = proxy.create_cyberlist("items40", ["w" * (40 << 20)])  # one 40 MiB item: a piece holds at least one
        try:
            assert [len(item) for item in big] == [40 << 20]
        finally:
            proxy.delete_table("items40")
        try:
            for _ in range(n // 12_000):
                lst.extend([value] * 12_000)
            assert len(lst.tolist()) == n and repr(lst).endswith("...]")
            assert sum(len(item) for item in lst) == n * 1000  # iterated in pieces of ~1 MiB
        finally:
            proxy.delete_table("huge80l")
