"""Publish/subscribe on the client: :class:`Subscription`, made by ``proxy.subscribe(*channels)``.

A subscription has a connection of its own, made with its client's settings but outside the pool (a subscriber
waits on its socket for as long as it likes and must not hold a pooled connection meanwhile).  It sends only
``db.subscribe``, ``db.unsubscribe`` and ``db.ping``; the server pushes every message published on its channels
as a frame with the reserved request id ``protocol.PUSH_ID``, in publish order.  Messages pushed while a
subscribe or unsubscribe waits for its reply are kept and returned first.  Plain sockets, like
:mod:`cyberdb.connection`, so it works under gevent.  Not thread-safe: one subscription, one reader.

Messages are not persisted and not re-sent: a message published while a subscriber is not connected is lost
for it, as in Redis.  A subscriber that reads more slowly than the publishers publish is disconnected by the
server (``max_subscriber_buffer``); its next ``get`` then raises ``ConnectionLostError``.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import protocol
from .codec import decode_value, encode_value
from .commands import BY_NAME
from .connection import Connection, reply_error
from .errors import ConnectionLostError, DisconnectedError, ProtocolError

if TYPE_CHECKING:
    from .client import Client

__all__ = ["Subscription"]

logger = logging.getLogger(__name__)
_SUBSCRIBE, _UNSUBSCRIBE, _PING = (BY_NAME[n] for n in ("db.subscribe", "db.unsubscribe", "db.ping"))
Message = tuple[str, Any]  # channel, value


class Subscription:
    """Messages published on some channels, on a connection of its own: ``with proxy.subscribe("news") as sub:``.

    Iterating yields ``(channel, value)`` in publish order and stops once ``timeout`` seconds pass without a
    message (None: never).  ``close()`` (or leaving the ``with`` block) closes its connection.
    """

    def __init__(self, client: Client, channels: Iterable[str], timeout: float | None = None) -> None:
        """Connect and subscribe to ``channels`` (messages published from then on are received).

        Raises:
            ConnectionError: the server cannot be reached or refused the connection.
            TypeError: a channel is not a non-empty str of at most 1024 characters.
        """
        self.timeout = timeout
        self._client = client
        self._pending: collections.deque[Message] = collections.deque()  # pushed while a reply was awaited
        self._channels: frozenset[str] = frozenset()
        self._received = 0
        self._conn: Connection | None = client._new_connection()
        try:
            channels = list(channels)
            if channels:
                self.subscribe(*channels)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        state = "CLOSED" if self._conn is None else "OPEN"
        return f"<Subscription {state} channels={sorted(self._channels)!r} received={self._received}>"

    @property
    def channels(self) -> frozenset[str]:
        """The channels subscribed to."""
        return self._channels

    def subscribe(self, *channels: str) -> None:
        """Also receive the messages published on ``channels`` from now on."""
        self._channels = frozenset(self._request(_SUBSCRIBE.op, [list(channels)]))

    def unsubscribe(self, *channels: str) -> None:
        """Stop receiving ``channels`` (none given: all of them); messages already received stay to be read."""
        self._channels = frozenset(self._request(_UNSUBSCRIBE.op, [list(channels)]))

    def ping(self) -> bool:
        """Round-trip to the server on this subscription's connection."""
        return bool(self._request(_PING.op, []))

    def get(self, timeout: float | None = None) -> Message | None:
        """The next message ``(channel, value)``, or None if none came within ``timeout`` seconds (None: wait).

        Raises:
            ConnectionLostError: the server closed the connection (e.g. this subscriber read too slowly).
            DisconnectedError: the subscription is closed.
        """
        if self._pending:
            return self._pending.popleft()
        conn = self._open()
        event = conn.next_event(timeout)
        if event is None:
            return None
        if event[0] != protocol.PUSH_ID:
            conn.close()
            raise ProtocolError(f"a reply to request {event[0]} that this subscription did not send")
        return self._message(event[2])

    def close(self) -> None:
        """Close the connection (the server forgets its channels); further use raises ``DisconnectedError``."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        message = self.get(self.timeout)
        if message is None:
            raise StopIteration
        return message

    # ---- internals ----------------------------------------------------------------------------------------------

    def _open(self) -> Connection:
        conn = self._conn
        if conn is None:
            raise DisconnectedError("this subscription is closed")
        if conn.broken:
            raise ConnectionLostError("this subscription's connection was lost: make a new subscription")
        return conn

    def _message(self, payload: bytes) -> Message:
        pair = decode_value(payload)
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str:
            raise ProtocolError("a pushed message is not [channel, value]")
        self._received += 1
        return pair[0], pair[1]

    def _request(self, op: int, args: list[Any]) -> Any:
        """Send one request and return its result, keeping the messages pushed meanwhile for ``get``."""
        conn = self._open()
        client = self._client
        req_id, ack = client._begin()
        try:
            conn.send(op, encode_value(args), req_id, ack)
            while True:
                event = conn.next_event(None)
                assert event is not None  # (no timeout)
                if event[0] == protocol.PUSH_ID:
                    self._pending.append(self._message(event[2]))
                    continue
                if event[1] != protocol.STATUS_OK:
                    raise reply_error(event[1], event[2])
                return decode_value(event[2])
        finally:
            client._end(req_id)
