"""The store's batches in memory (pure: no server): rollback, speculation and the digest checks."""

from __future__ import annotations

from typing import Any

import pytest

from cyberdb import BatchAbortedError, TransactionConflictError
from cyberdb.codec import decode_value
from cyberdb.commands import AT_PATH, BY_NAME
from cyberdb.server.batch import digest
from cyberdb.server.store import Store

C = BY_NAME


def step(name: str, *args: Any, at: list[Any] | None = None) -> list[Any]:
    spec = C[name]
    if at is not None:
        return [AT_PATH[spec.op].op, [args[0], at, *args[1:]]]
    return [spec.op, list(args)]


@pytest.fixture
def store() -> Store:
    s = Store()
    s.execute(C["db.create"], ["d", "dict", {"a": 1, "b": {"x": [1]}, "c": 3}])
    s.execute(C["db.create"], ["l", "list", [3, 1, 2]])
    return s


def snapshot(store: Store) -> list[Any]:
    return [(name, list(t.items()) if type(t) is dict else list(t)) for name, t in store.dump().items()]


def test_a_failed_batch_leaves_everything_as_it_was(store: Store) -> None:
    before = snapshot(store)
    versions = {name: store.version(name) for name in ("d", "l")}
    writes = [step("dict.delitem", "d", "a"), step("dict.setitem", "d", "a", 9), step("dict.incr", "d", "c", 1),
              step("dict.setitem", "d", "new", 1), step("list.append", "d", "y", at=["b", "x"]),
              step("dict.clear", "d", at=["b"]), step("list.append", "l", 4), step("list.sort", "l", True),
              step("dict.update", "d", {"z": 1}), step("dict.pop", "d", "b"), step("list.pop", "l", 0)]
    with pytest.raises(BatchAbortedError) as info:
        store.execute(C["db.batch"], [[*writes, step("dict.getitem", "d", "missing")]])
    assert info.value.index == len(writes) and isinstance(info.value.error, KeyError)
    assert snapshot(store) == before  # values and key order
    assert {name: store.version(name) for name in ("d", "l")} == versions


def test_a_batch_that_succeeds_returns_each_result_as_it_was_then(store: Store) -> None:
    results = decode_value(store.outcome(C["db.batch"], [[step("dict.todict", "d"), step("dict.setitem", "d", "a", 5),
                                                          step("dict.incr", "d", "a", 1)]])[1])
    assert results == [{"a": 1, "b": {"x": [1]}, "c": 3}, None, 6]
    assert store.dump()["d"]["a"] == 6


def test_speculation_returns_the_last_reply_with_its_digest_and_changes_nothing(store: Store) -> None:
    before = snapshot(store)
    speculation = [step("dict.setitem", "d", "a", 7), step("dict.getitem", "d", "a")]
    status, payload = store.outcome(C["db.speculate"], [speculation])
    got_status, value, got_digest = decode_value(payload)
    assert (status, got_status, value) == (0, 0, 7)
    assert snapshot(store) == before
    # the same call checked against that digest passes; after a change it conflicts
    checked = [step("dict.setitem", "d", "a", 7), [*step("dict.getitem", "d", "a"), got_digest]]
    store.execute(C["db.batch"], [[*checked[:1], checked[1]]])
    store.execute(C["dict.setitem"], ["d", "a", 1])
    conflicting = [[*step("dict.getitem", "d", "a"), digest(0, b"\x02")]]
    with pytest.raises(TransactionConflictError):
        store.execute(C["db.batch"], [conflicting])


def test_a_speculated_error_is_a_reply_not_an_abort(store: Store) -> None:
    status, payload = store.outcome(C["db.speculate"], [[step("dict.getitem", "d", "nope")]])
    got_status, args, _digest = decode_value(payload)
    assert status == 0 and got_status != 0 and args == ["nope"]


@pytest.mark.parametrize("bad", [None, [1], [[1, []]], [[C["db.ping"].op, []]], [[C["dict.len"].op, "d"]],
                                 [[C["dict.len"].op, ["d"], b"short"]]])
def test_malformed_batches_are_refused_before_anything_runs(store: Store, bad: Any) -> None:
    before = snapshot(store)
    with pytest.raises(TypeError):
        store.execute(C["db.batch"], [bad])
    assert snapshot(store) == before


def test_write_hook_hears_every_write_that_ran_once(store: Store) -> None:
    # a failed write is heard (a failed sort may have moved items: the log must replay it); a batch that
    # failed was rolled back and is not
    heard: list[str] = []
    store.on_write = lambda spec, args, origin: heard.append(spec.name)
    store.execute(C["dict.setitem"], ["d", "k", 1])
    store.execute(C["dict.getitem"], ["d", "k"])
    store.execute(C["db.batch"], [[step("dict.setitem", "d", "k", 2), step("list.append", "l", 1)]])
    store.outcome(C["db.speculate"], [[step("dict.setitem", "d", "k", 3)]])
    store.outcome(C["db.batch"], [[step("dict.getitem", "d", "missing")]])
    store.outcome(C["dict.delitem"], ["d", "missing"])
    assert heard == ["dict.setitem", "db.batch", "dict.delitem"]


def test_execute_does_not_change_its_arguments(store: Store) -> None:
    args = ["d", "k", [1]]
    store.execute(C["dict.setitem"], args)
    nested = ["d", ["k"], 2]
    store.execute(AT_PATH[C["list.append"].op], nested)
    assert args == ["d", "k", [1, 2]] and nested == ["d", ["k"], 2]
