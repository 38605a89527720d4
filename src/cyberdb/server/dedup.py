"""The reply cache that makes every request run at most once, however often a client re-sends it.  No I/O.

Each client numbers its requests (``request id``) and says in each request which of them are finished
(``ack``: every request numbered below it).  For a write, the server keeps the reply under (client id,
request id) until the client acknowledges it; a re-sent write is answered from here instead of running
again, and a write numbered below the acknowledged mark that is not cached (a stray duplicate that arrives
after the client moved on) is refused rather than run.  Reads are not cached: running one again is harmless.
This is the design of RIFL (RAMCloud, SOSP 2015) and of Kafka's idempotent producer.

Bounds: at most ``max_per_client`` replies per client (the oldest are dropped, and a re-send of a dropped one
is answered with "outcome unknown"), and at most ``max_clients`` clients (least recently active dropped).
The cache lives in memory and in the append-only log (each write's record carries its client id, request id
and ack; a log's base carries the cache itself), so with a log a write re-sent across a restart still runs once.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from ..errors import ERROR_CODES, ConnectionLostError
from ..protocol import ANONYMOUS
from .store import encode_error

__all__ = ["PRUNE_AT", "ClientRecord", "ReplyCache", "stale"]

Reply = tuple[int, bytes]  # status, payload
PRUNE_AT = 64  # replies kept per client before acknowledged ones are dropped
_LOST = next(code for code, cls in ERROR_CODES.items() if cls is ConnectionLostError)


class ClientRecord:
    """One client's cached replies and acknowledged mark.

    The hot path (``net.py``) reads ``replies`` and ``ack`` directly and calls ``prune`` only once more than
    ``PRUNE_AT`` replies are kept: acknowledged replies are dropped in batches, not one per request.
    """

    __slots__ = ("ack", "floor", "replies")

    def __init__(self) -> None:
        self.ack = 0  # every request below this is finished on the client
        self.floor = 0  # replies up to this id may have been dropped for space
        self.replies: dict[int, Reply] = {}

    def __repr__(self) -> str:
        return f"<ClientRecord ack={self.ack} cached={len(self.replies)}>"

    def lookup(self, req_id: int, ack: int) -> Reply | None:
        """The reply to answer a write with instead of running it, or None to run it."""
        if ack > self.ack:
            self.ack = ack
        cached = self.replies.get(req_id)
        if cached is not None:
            return cached
        if req_id < self.ack or req_id <= self.floor:
            return stale(req_id)
        return None

    def remember(self, req_id: int, reply: Reply, limit: int) -> None:
        """Keep the reply to a write until the client acknowledges it."""
        replies = self.replies
        replies[req_id] = reply
        if len(replies) > PRUNE_AT:
            self.prune(limit)

    def prune(self, limit: int) -> None:
        """Drop acknowledged replies, then the oldest ones beyond ``limit``."""
        ack = self.ack
        replies = self.replies = {k: v for k, v in self.replies.items() if k >= ack}
        if len(replies) > limit:
            for dropped in sorted(replies)[:len(replies) - limit]:
                del replies[dropped]
                self.floor = max(self.floor, dropped)


def stale(req_id: int) -> Reply:
    """The answer to a re-sent write whose reply is gone: its outcome is unknown, and it is not run again."""
    return _LOST, encode_error(ConnectionLostError(
        f"request {req_id} was re-sent after its reply was dropped: its outcome is unknown"), "")


class ReplyCache:
    """Every identified client's record, least recently active first."""

    def __init__(self, max_clients: int = 16384, max_per_client: int = 65536) -> None:
        self.max_clients = max_clients
        self.max_per_client = max_per_client
        self._clients: OrderedDict[bytes, ClientRecord] = OrderedDict()

    def __len__(self) -> int:
        return len(self._clients)

    def record(self, client_id: bytes) -> ClientRecord | None:
        """The record of ``client_id`` (made on first use), or None for an anonymous client."""
        if client_id == ANONYMOUS:
            return None
        rec = self._clients.get(client_id)
        if rec is None:
            rec = self._clients[client_id] = ClientRecord()
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)
        else:
            self._clients.move_to_end(client_id)
        return rec

    def clients(self) -> Iterator[tuple[bytes, int, int, list[Any]]]:
        """Each client's id, ack, floor and unacknowledged replies ``[[request id, status, payload], ...]``."""
        for client_id, rec in self._clients.items():
            # bytes(): a batch's reply is a bytes subclass (store.Encoded), which the codec refuses
            replies = [[req_id, status, bytes(payload)] for req_id, (status, payload) in rec.replies.items()
                       if req_id >= rec.ack]
            yield client_id, rec.ack, rec.floor, replies

    def restore(self, client_id: bytes, ack: int, floor: int, replies: list[Any]) -> None:
        """Put back one client's record (from a log's base)."""
        rec = self.record(client_id)
        if rec is not None:
            rec.ack, rec.floor = max(rec.ack, ack), max(rec.floor, floor)
            rec.replies.update((req_id, (status, payload)) for req_id, status, payload in replies)

    def replayed(self, client_id: bytes, req_id: int, ack: int, reply: Reply) -> None:
        """Remember the reply of a write replayed from the log, as if it had just run."""
        rec = self.record(client_id)
        if rec is not None:
            rec.lookup(req_id, ack)  # moves the acknowledged mark
            rec.remember(req_id, reply, self.max_per_client)
