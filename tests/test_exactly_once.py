"""Exactly once across a lost reply, end to end: each kind of write, its reply dropped once by a TCP relay.

Client A talks to a real server through :class:`relay.Relay`; client B (the ``proxy`` fixture) talks to the
server directly.  For each write, the relay holds back the reply to A's request (so the server has run it),
B writes meanwhile, then the relay cuts A's connection without forwarding the reply.  A reconnects through
the relay and re-sends the request with its number; the server must answer it from its reply cache.  So each
write is applied exactly once, A gets its result, and B's newer write is not undone (re-running
``l[0] = "A"`` after B's ``insert(0, "B")`` would erase B's item and duplicate A's).

Every step is ordered by events (reply held -> B writes -> drop); every wait is bounded; nothing is timed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import ServerProcess
from relay import Relay

import cyberdb

WAIT = 10.0  # seconds: the bound of every wait (a healthy run needs milliseconds)


class Call:
    """Runs ``fn()`` in a thread (it blocks until its re-sent request is answered); ``result()`` joins it."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="client-a", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # handed to the test thread by result()
            self._error = exc

    def result(self, timeout: float = WAIT) -> Any:
        """Wait for the call and return its value or raise its error."""
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise AssertionError(f"the call did not return within {timeout} s after its reply was dropped")
        if self._error is not None:
            raise self._error
        return self._value


class Dropper:
    """Drops the reply of one call of client A: hold it, let B write, cut the connection, collect the result."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.calls: list[Call] = []

    def start(self, fn: Callable[[], Any], arm: bool = True) -> Call:
        """Arm the relay (unless ``fn`` arms it itself), start ``fn`` and wait until its reply is held."""
        if arm:
            self.relay.hold_next_reply()
        call = Call(fn)
        self.calls.append(call)
        if not self.relay.held.wait(WAIT):
            if not call.thread.is_alive():
                call.result()  # fn failed before sending its request: show why
            raise AssertionError("the server never answered the request (no reply was held)")
        assert self.relay.held_bytes, "the held reply is empty"
        return call

    def lose(self, fn: Callable[[], Any], meanwhile: Callable[[], Any] | None = None, arm: bool = True) -> Any:
        """Run ``fn`` with its reply lost once (``meanwhile`` runs between); return what ``fn`` returned."""
        before = self.relay.accepted
        call = self.start(fn, arm)
        if meanwhile is not None:
            meanwhile()
        self.relay.drop_held()
        value = call.result()
        # the thing this file is about did happen: the request was re-sent on a new connection
        assert self.relay.accepted == before + 1, "the client did not reconnect to re-send its request"
        return value

    def close(self) -> None:
        """Cut everything (a call still waiting then fails) and join every call thread."""
        self.relay.close()
        for call in self.calls:
            call.thread.join(WAIT)
        assert not any(call.thread.is_alive() for call in self.calls), "a client thread is still running"


@pytest.fixture
def relay(server: ServerProcess, request: pytest.FixtureRequest) -> Relay:
    """A relay in front of ``server``, closed (threads joined) after the test."""
    r = Relay(server.host, server.port)
    request.addfinalizer(r.close)
    return r


@pytest.fixture
def a_client(server: ServerProcess, relay: Relay) -> Iterator[cyberdb.Client]:
    """Client A: connected through the relay (its first connection is made and pooled by ``connect()``)."""
    c = cyberdb.connect(relay.host, relay.port, password=server.password, encrypt=server.encrypt)
    yield c
    c.close()


@pytest.fixture
def a_proxy(a_client: cyberdb.Client) -> Iterator[cyberdb.Proxy]:
    """A connected proxy of client A."""
    with a_client.get_proxy() as p:
        yield p


@pytest.fixture
def dropper(relay: Relay, a_proxy: cyberdb.Proxy) -> Iterator[Dropper]:
    """Drops replies to A; torn down before A's proxy, so no call thread outlives the test."""
    d = Dropper(relay)
    yield d
    d.close()


# ---- CyberDict ---------------------------------------------------------------------------------------------------


def test_setitem_does_not_undo_a_newer_write(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                             name: str) -> None:
    b = proxy.create_cyberdict(name, {"k": "old"})
    a = a_proxy.get_cyberdict(name)

    def meanwhile() -> None:
        assert b["k"] == "A"  # A's write ran before its reply was lost
        b["k"] = "B"

    assert dropper.lose(lambda: a.__setitem__("k", "A"), meanwhile) is None
    assert b.todict() == {"k": "B"}


def test_delitem_is_not_applied_again(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                      name: str) -> None:
    b = proxy.create_cyberdict(name, {"k": "old", "other": 1})
    a = a_proxy.get_cyberdict(name)

    def meanwhile() -> None:
        assert "k" not in b
        b["k"] = "B"  # re-created: a second delete would remove it (or raise KeyError to A)

    dropper.lose(lambda: a.__delitem__("k"), meanwhile)
    assert b.todict() == {"other": 1, "k": "B"}


def test_failed_write_returns_its_error_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                             name: str) -> None:
    b = proxy.create_cyberdict(name)
    a = a_proxy.get_cyberdict(name)
    with pytest.raises(KeyError, match="missing"):  # the outcome A's request had, not a second run's
        dropper.lose(lambda: a.__delitem__("missing"), lambda: b.__setitem__("missing", "B"))
    assert b.todict() == {"missing": "B"}


def test_pop_returns_the_popped_value(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                      name: str) -> None:
    b = proxy.create_cyberdict(name, {"k": "old"})
    a = a_proxy.get_cyberdict(name)
    assert dropper.lose(lambda: a.pop("k"), lambda: b.__setitem__("k", "B")) == "old"
    assert b.todict() == {"k": "B"}


def test_popitem_returns_the_popped_item(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                         name: str) -> None:
    b = proxy.create_cyberdict(name, {"x": 1, "y": 2})
    a = a_proxy.get_cyberdict(name)
    assert dropper.lose(a.popitem, lambda: b.__setitem__("z", 3)) == ("y", 2)
    assert b.todict() == {"x": 1, "z": 3}


def test_setdefault_returns_its_own_outcome(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                            name: str) -> None:
    b = proxy.create_cyberdict(name)
    a = a_proxy.get_cyberdict(name)
    # a second run would return B's value
    assert dropper.lose(lambda: a.setdefault("k", "A"), lambda: b.__setitem__("k", "B")) == "A"
    assert b.todict() == {"k": "B"}


def test_update_does_not_undo_a_newer_write(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                            name: str) -> None:
    b = proxy.create_cyberdict(name, {"k1": "old"})
    a = a_proxy.get_cyberdict(name)
    assert dropper.lose(lambda: a.update({"k1": "A", "k2": "A"}), lambda: b.__setitem__("k1", "B")) is None
    assert b.todict() == {"k1": "B", "k2": "A"}


def test_clear_does_not_remove_a_newer_key(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                           name: str) -> None:
    b = proxy.create_cyberdict(name, {"x": 1, "y": 2})
    a = a_proxy.get_cyberdict(name)

    def meanwhile() -> None:
        assert len(b) == 0
        b["new"] = "B"

    dropper.lose(a.clear, meanwhile)
    assert b.todict() == {"new": "B"}


def test_incr_counts_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper, name: str) -> None:
    b = proxy.create_cyberdict(name, {"n": 5})
    a = a_proxy.get_cyberdict(name)
    assert dropper.lose(lambda: a.incr("n"), lambda: b.incr("n", 10)) == 6
    assert b["n"] == 16


def test_nested_append_appends_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                    name: str) -> None:
    b = proxy.create_cyberdict(name, {"sid": {"cart": ["x"]}})
    a = a_proxy.get_cyberdict(name)
    dropper.lose(lambda: a.ref("sid", "cart").append("item"), lambda: b.ref("sid", "cart").append("B"))
    assert b["sid"] == {"cart": ["x", "item", "B"]}


def test_nested_incr_counts_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                 name: str) -> None:
    b = proxy.create_cyberdict(name, {"pages": {"/home": 1}})
    a = a_proxy.get_cyberdict(name)
    assert dropper.lose(lambda: a.ref("pages", "/home").incr(), lambda: b.ref("pages", "/home").incr(10)) == 2
    assert b["pages"] == {"/home": 12}


# ---- CyberList ---------------------------------------------------------------------------------------------------


def test_append_appears_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper, name: str) -> None:
    b = proxy.create_cyberlist(name)
    a = a_proxy.get_cyberlist(name)
    dropper.lose(lambda: a.append("A"), lambda: b.append("B"))
    assert b.tolist() == ["A", "B"]


def test_setitem_after_an_insert_keeps_both_items(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy,
                                                  dropper: Dropper, name: str) -> None:
    # the issue: `l[0] = "A"` re-sent after B's `insert(0, "B")` erased B's item and duplicated A's
    b = proxy.create_cyberlist(name, ["x", "y"])
    a = a_proxy.get_cyberlist(name)
    dropper.lose(lambda: a.__setitem__(0, "A"), lambda: b.insert(0, "B"))
    assert b.tolist() == ["B", "A", "y"]


def test_list_pop_returns_the_popped_item(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                          name: str) -> None:
    b = proxy.create_cyberlist(name, ["x", "y", "z"])
    a = a_proxy.get_cyberlist(name)
    assert dropper.lose(a.pop, lambda: b.append("B")) == "z"
    assert b.tolist() == ["x", "y", "B"]


def test_extend_appears_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper, name: str) -> None:
    b = proxy.create_cyberlist(name, ["x"])
    a = a_proxy.get_cyberlist(name)
    dropper.lose(lambda: a.extend(["a", "b"]), lambda: b.append("B"))
    assert b.tolist() == ["x", "a", "b", "B"]


def test_remove_removes_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper, name: str) -> None:
    b = proxy.create_cyberlist(name, ["x", "r", "y"])
    a = a_proxy.get_cyberlist(name)
    # a second run would remove B's "r" (now the first one)
    dropper.lose(lambda: a.remove("r"), lambda: b.insert(0, "r"))
    assert b.tolist() == ["r", "x", "y"]


def test_list_incr_counts_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                               name: str) -> None:
    b = proxy.create_cyberlist(name, [1, 100])
    a = a_proxy.get_cyberlist(name)
    assert dropper.lose(lambda: a.incr(0), lambda: b.incr(0, 10)) == 2
    assert b.tolist() == [12, 100]


# ---- tables ------------------------------------------------------------------------------------------------------


def test_create_table_is_not_refused_as_existing(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy,
                                                 dropper: Dropper, name: str) -> None:
    def meanwhile() -> None:
        proxy.get_cyberdict(name)["k"] = "B"

    # a second run would raise TableExistsError to A, and replace B's content
    dropper.lose(lambda: a_proxy.create_cyberdict(name, {"k": "A", "a": 1}), meanwhile)
    assert proxy.get_cyberdict(name).todict() == {"k": "B", "a": 1}


def test_delete_table_does_not_delete_a_newer_table(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy,
                                                    dropper: Dropper, name: str) -> None:
    proxy.create_cyberdict(name, {"old": 1})

    def meanwhile() -> None:
        assert name not in proxy.tables()
        proxy.create_cyberlist(name, ["B"])

    dropper.lose(lambda: a_proxy.delete_table(name), meanwhile)
    assert proxy.get_cyberlist(name).tolist() == ["B"]


# ---- pipelines, transactions, locks ------------------------------------------------------------------------------


def test_atomic_pipeline_is_applied_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                         name: str) -> None:
    b = proxy.create_cyberdict(name, {"n": 1, "k": "old", "z": "zz"})
    a_proxy.get_cyberdict(name)

    def batch() -> list[Any]:
        with a_proxy.pipeline(atomic=True) as pipe:
            t = pipe.get_cyberdict(name)
            pending = [t.incr("n"), t.pop("z"), t.setdefault("s", "A")]
            t["k"] = "A"
        return [p.result() for p in pending]

    def meanwhile() -> None:
        assert b["k"] == "A"
        b["k"] = "B"
        b.incr("n", 10)
        b["z"] = "B"

    assert dropper.lose(batch, meanwhile) == [2, "zz", "A"]
    assert b.todict() == {"n": 12, "k": "B", "z": "B", "s": "A"}


def test_pipeline_applies_each_call_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                         name: str) -> None:
    b = proxy.create_cyberdict(name, {"n": 1, "k": "old", "z": "zz"})
    lst = f"{name}-list"
    bl = proxy.create_cyberlist(lst, ["x"])
    a_proxy.get_cyberdict(name)

    def pipeline() -> list[Any]:
        with a_proxy.pipeline() as pipe:
            t, tl = pipe.get_cyberdict(name), pipe.get_cyberlist(lst)
            # the first call's reply is in the first chunk the relay holds, so it ran before B's writes; the
            # others may run before or after them, and B's writes do not change their outcomes
            t["k"] = "A"
            t.incr("n")
            t.pop("z")
            tl.pop()
            tl.pop()  # the list had one item: this fails, once
            tl.append("a")
            tl.extend(["b", "c"])
        return pipe.results

    def meanwhile() -> None:
        assert b["k"] == "A"
        b["k"] = "B"
        b.incr("n", 10)

    results = dropper.lose(pipeline, meanwhile)
    assert results[:4] == [None, 2, "zz", "x"]
    assert isinstance(results[4], IndexError)
    assert results[5:] == [None, None]
    assert b.todict() == {"k": "B", "n": 12}
    assert bl.tolist() == ["a", "b", "c"]


def test_transaction_commit_is_applied_once(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, relay: Relay,
                                            dropper: Dropper, name: str) -> None:
    b = proxy.create_cyberdict(name, {"x": 1})
    runs: list[int] = []

    def fn(tx: cyberdb.Transaction) -> int:
        runs.append(1)
        t = tx.get_cyberdict(name)
        x: int = t["x"]  # a speculative read: one round trip, answered normally
        t["x"] = x + 1  # buffered until the commit
        t["log"] = "A"
        relay.hold_next_reply()  # the next request is the commit (a db.batch): lose its reply
        return x + 1

    def meanwhile() -> None:
        assert b.todict() == {"x": 2, "log": "A"}
        b["x"] = 100  # a second commit would conflict with this and run fn again

    assert dropper.lose(lambda: a_proxy.transact(fn), meanwhile, arm=False) == 2
    assert runs == [1]
    assert b.todict() == {"x": 100, "log": "A"}


def test_lock_acquire_returns_the_same_token(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper,
                                             name: str) -> None:
    lock = a_proxy.lock(name, ttl=30, timeout=WAIT)  # were it run again, it would wait for itself, then time out
    other = proxy.lock(name, ttl=30)
    a_proxy.tables()  # A's connection is idle and ready before the relay is armed

    def meanwhile() -> None:
        assert other.acquire(blocking=False) is False  # A's acquisition ran: the lock is taken

    assert dropper.lose(lock.acquire, meanwhile) is True
    assert lock.locked()
    assert other.acquire(blocking=False) is False
    token = lock.token
    lock.release()  # the server knows A's token: the release is accepted
    assert other.acquire(blocking=False) is True
    assert other.token is not None and token is not None and other.token > token
    other.release()


# ---- reads, and no retry ------------------------------------------------------------------------------------------


def test_read_is_run_again(proxy: cyberdb.Proxy, a_proxy: cyberdb.Proxy, dropper: Dropper, name: str) -> None:
    b = proxy.create_cyberdict(name, {"k": "old"})
    a = a_proxy.get_cyberdict(name)
    # reads are not cached: the re-sent read runs again and sees B's write
    assert dropper.lose(lambda: a["k"], lambda: b.__setitem__("k", "B")) == "B"


def test_without_retries_a_lost_reply_raises(server: ServerProcess, relay: Relay, proxy: cyberdb.Proxy,
                                             request: pytest.FixtureRequest, name: str) -> None:
    b = proxy.create_cyberdict(name, {"k": "old"})
    c = cyberdb.connect(relay.host, relay.port, password=server.password, encrypt=server.encrypt,
                        retry=cyberdb.Retry(attempts=0))
    request.addfinalizer(c.close)
    with c.get_proxy() as a_proxy:
        a = a_proxy.get_cyberdict(name)
        dropper = Dropper(relay)
        request.addfinalizer(dropper.close)
        call = dropper.start(lambda: a.__setitem__("k", "A"))
        relay.drop_held()
        with pytest.raises(cyberdb.ConnectionLostError):
            call.result()
    assert relay.accepted == 1  # nothing was re-sent
    assert b["k"] == "A"  # the write ran once, on the server, though A was not told
