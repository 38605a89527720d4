"""The reply cache in memory (pure): replay, acknowledgement, stray duplicates and bounds."""

from __future__ import annotations

from cyberdb.errors import ConnectionLostError, error_code
from cyberdb.protocol import ANONYMOUS
from cyberdb.server.dedup import PRUNE_AT, ReplyCache

LOST = error_code(ConnectionLostError())


def test_a_resent_write_gets_the_cached_reply() -> None:
    rec = ReplyCache().record(b"c" * 16)
    assert rec is not None
    assert rec.lookup(1, 1) is None
    rec.remember(1, (0, b"first"), 100)
    assert rec.lookup(1, 1) == (0, b"first")


def test_acknowledged_replies_are_forgotten_and_their_duplicates_refused() -> None:
    rec = ReplyCache().record(b"c" * 16)
    assert rec is not None
    for i in range(1, 4):
        assert rec.lookup(i, 1) is None
        rec.remember(i, (0, b"%d" % i), 100)
    assert rec.lookup(4, 3) is None  # requests 1 and 2 are finished on the client
    rec.prune(100)  # (done in batches, once PRUNE_AT replies are kept)
    assert list(rec.replies) == [3]
    status, _ = rec.lookup(1, 3)  # a stray duplicate of a finished request: never run again
    assert status == LOST


def test_replies_are_pruned_in_batches_as_acks_arrive() -> None:
    rec = ReplyCache().record(b"c" * 16)
    assert rec is not None
    for i in range(1, 1000):
        assert rec.lookup(i, i) is None  # one request at a time: each acknowledges the one before
        rec.remember(i, (0, b""), 65536)
        assert len(rec.replies) <= PRUNE_AT + 1


def test_bounds_drop_the_oldest_and_say_so() -> None:
    cache = ReplyCache(max_clients=2, max_per_client=2)
    rec = cache.record(b"a" * 16)
    assert rec is not None
    for i in range(1, 4):
        rec.remember(i, (0, b""), cache.max_per_client)
    rec.prune(cache.max_per_client)
    assert rec.lookup(1, 1)[0] == LOST  # type: ignore[index]
    assert rec.lookup(3, 1) == (0, b"")
    cache.record(b"b" * 16)
    cache.record(b"c" * 16)
    assert len(cache) == 2
    assert cache.record(ANONYMOUS) is None
