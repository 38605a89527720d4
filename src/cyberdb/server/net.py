"""One asyncio.Protocol per client connection: feed the session, run commands on the store, write replies.

Network code never touches tables itself: it decodes a request, hands it to ``Store.execute`` (which runs to
completion without awaiting), and encodes the result.  A connection that breaks the protocol, fails to
authenticate, or stays in the handshake too long is closed; nothing it sent is executed.

Publish/subscribe lives here, as it is about connections: ``db.subscribe``/``db.unsubscribe`` add and remove a
connection in ``Store.channels``; ``db.publish`` runs in the store, which queues the message in ``Store.outbox``,
and ``_process`` pushes it to each subscriber right after the command (no waiting: a subscriber whose unsent
output passes ``Limits.max_subscriber_buffer`` is closed, as Redis's client-output-buffer-limit does).  A
connection with channels may only send db.subscribe, db.unsubscribe and db.ping, and is not idle while it waits.

Blocking pops (``list.bpop`` with a timeout) wait here too, as a parked request of their connection (see
``Waiter``): the store only says ``WouldBlock``; no thread, no polling, and nothing runs until a write fills the list.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from .. import protocol
from ..codec import MAX_DEPTH, decode_value, depth_exceeds, encode_value
from ..commands import BY_ID, BY_NAME, CommandSpec
from ..errors import AuthenticationError, MemoryLimitError, PersistenceError, ProtocolError, error_code
from ..protocol import ANONYMOUS
from .admission import Guard, IPNetwork, Limits, address_allowed
from .aof import AppendLog
from .dedup import PRUNE_AT, ClientRecord, ReplyCache, stale
from .stats import info_outcome
from .store import MAX_NAME_LENGTH, STATUS_OK, Store, WouldBlock, encode_error

logger = logging.getLogger(__name__)

_FLUSH_BYTES = 256 << 10
FRAME_GRACE = 2.0  # seconds a frame may take before its rate is checked (a slow start is not an attack)

# writes that only free memory: still accepted over max_memory (Redis's noeviction lets DEL through too)
SHRINKING = frozenset({"delitem", "pop", "popitem", "clear", "remove", "delslice", "delete", "release", "bpop",
                       "expire", "persist"})
_SUBSCRIBE, _UNSUBSCRIBE = BY_NAME["db.subscribe"].op, BY_NAME["db.unsubscribe"].op
_PUBSUB = frozenset({_SUBSCRIBE, _UNSUBSCRIBE})
_IN_SUBSCRIBE_MODE = frozenset({_SUBSCRIBE, _UNSUBSCRIBE, BY_NAME["db.ping"].op})  # Redis allows these too
_BPOP = BY_NAME["list.bpop"].op  # a pop that may wait for an item (see Waiter)
_INFO = BY_NAME["db.info"].op  # the server's state (stats.py): answered here, as the store does not know it
_BY_CONNECTION = _PUBSUB | {_INFO}


def refused(log: AppendLog) -> tuple[int, bytes]:
    """The reply to a write refused because the append-only log cannot be written (it did not run)."""
    exc = PersistenceError(f"write refused: {log.error} (the server refuses writes until its append-only log "
                           "can be written again; nothing was changed)")
    return error_code(exc), encode_error(exc, "")


@dataclass(eq=False)
class ServerContext:
    """What every connection of one server shares."""

    store: Store
    master: bytes
    salt: bytes
    iterations: int
    encrypt: bool
    max_con: int
    timeout: float
    whitelist: list[IPNetwork] | None
    replies: ReplyCache = field(default_factory=ReplyCache)
    log: AppendLog | None = None
    limits: Limits = field(default_factory=lambda: Limits())
    connections: set[ServerConnection] = field(default_factory=set)  # every open one (shutdown closes them)
    authenticated: int = 0  # of which authenticated: these count toward max_con
    unauthenticated: dict[str, int] = field(default_factory=dict)  # per source address, still in the handshake
    handshaking: int = 0  # their sum
    partial_bytes: int = 0  # bytes of frames that started arriving and are not complete yet, all connections
    guard: Guard = field(default_factory=lambda: Guard())
    slow_after: float = 0.01  # seconds: commands slower than this go to the slow log
    max_memory: int = 0  # bytes of resident memory above which writes are refused (0 = no limit)
    over_memory: bool = False  # sampled by the server every 100 ms
    # blocked pops (see Waiter): per list, first come first served; and by (client id, request id)
    waiters: dict[str, collections.deque[Waiter]] = field(default_factory=dict)
    parked: dict[tuple[bytes, int], Waiter] = field(default_factory=dict)
    requests_done: int = 0  # requests of the connections that closed (stats.py adds the open ones' to it)
    info: Callable[[], dict[str, Any]] | None = None  # db.info's report (Server.info)


@dataclass(eq=False)
class Waiter:
    """A blocking pop (``list.bpop`` with a timeout, on an empty list), parked until it can run.

    The store raises ``WouldBlock`` instead of running it; its connection then runs nothing else (later requests
    wait in its buffer, so replies keep their order).  A write that leaves the list non-empty puts it in
    ``Store.ready``; ``serve_ready`` (after every request) runs the first waiters again, on their own connections
    and through the normal write path (reply cache, append-only log, held replies), while the list has items.
    Its timer answers ``IndexError`` without running anything (nothing changed: nothing is logged or cached,
    and a re-send may wait again).  A re-send of a parked request on another connection (same client and
    request id: the client reconnected) takes its place in the queue, and the old connection is closed.
    """

    conn: ServerConnection
    name: str
    request: tuple[int, int, bytes, int]  # request id, op, payload, ack
    timer: asyncio.TimerHandle | None = None


def serve_ready(ctx: ServerContext) -> None:
    """Run the blocked pops of the lists that got a write (``Store.ready``), in order, while they have items."""
    store = ctx.store
    ready, waiters = store.ready, ctx.waiters
    while ready:  # serving a pop(into=) may make another list ready
        name = ready.pop()
        queue = waiters.get(name)
        while queue and store.get(name):
            waiter = queue[0]
            waiter.conn._wake(waiter)


class ServerConnection(asyncio.Protocol):
    """The server's end of one TCP connection."""

    def __init__(self, ctx: ServerContext) -> None:
        self._ctx = ctx
        self._store = ctx.store
        self._transport: asyncio.Transport | None = None
        self._session: protocol.ServerSession | None = None
        self._peer = "?"
        self._last_active = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._log = logger.isEnabledFor(logging.DEBUG)
        self._paused = False
        self._client: ClientRecord | None = None  # this client's reply cache (None: anonymous)
        self._client_id = ANONYMOUS
        self._wrote = False  # a write was among the requests whose replies are being gathered
        self._held = 0  # outputs waiting in the append-only log until the writes they answer are kept
        self._held_bytes = 0
        self._held_paused = False  # reading paused: too many bytes of replies wait for the log
        self._closing = False  # close once the held outputs are sent
        self._address = "?"  # the peer's IP address
        self._host: str | None = None  # counted in ctx.unauthenticated under this address until authenticated
        self._counted = False  # counted in ctx.authenticated
        self._partial = 0  # bytes of an unfinished frame, counted in ctx.partial_bytes
        self._frame_started = 0.0  # when the unfinished frame began (0: none)
        self._frame_bytes = 0  # its bytes then
        self._channels: set[str] = set()  # subscribed to (pub/sub); not empty = subscribe mode
        self._parked: Waiter | None = None  # a blocked pop waiting for an item: nothing else runs meanwhile
        self.requests = 0

    def __repr__(self) -> str:
        state = self._session.state.value if self._session else "refused"
        return f"<ServerConnection {self._peer} {state} requests={self.requests}>"

    # ---- asyncio callbacks -------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods
        self._transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        self._peer = f"{peer[0]}:{peer[1]}" if peer else "?"
        self._address = peer[0] if peer else "?"
        ctx = self._ctx
        if ctx.whitelist is not None and not (peer and address_allowed(peer[0], ctx.whitelist)):
            self._refuse("address not allowed by the server's whitelist")
            return
        banned = ctx.guard.banned(self._address)
        if banned:  # refused before any handshake: a banned address costs no key derivation or HMAC
            self._refuse(f"too many failed authentications from this address: try again in {banned:.0f} s")
            return
        if ctx.authenticated >= ctx.max_con:
            self._refuse(f"too many connections (max_con={ctx.max_con})")
            return
        # connections still in the handshake have a budget of their own, in total and per address, so that
        # peers that never authenticate cannot keep the clients that do out (max_con counts only those)
        host, limits = self._address, ctx.limits
        waiting = ctx.unauthenticated.get(host, 0)
        if waiting >= limits.max_unauthenticated_per_ip or ctx.handshaking >= limits.max_unauthenticated:
            self._refuse("too many unauthenticated connections from this address")
            return
        ctx.unauthenticated[host] = waiting + 1
        ctx.handshaking += 1
        self._host = host
        ctx.connections.add(self)
        self._session = protocol.ServerSession(ctx.master, ctx.salt, ctx.iterations, ctx.encrypt)
        self._timer = asyncio.get_running_loop().call_later(limits.handshake_timeout, self._check_timeout)
        logger.info("connection from %s (%d open)", self._peer, len(ctx.connections))

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        if self._parked is not None:  # a later append must not go to a closed connection
            self._unpark(self._parked)
        if self._channels:
            self._leave(list(self._channels))
        self._release_partial()
        self._leave_handshake()
        if self._counted:
            self._counted = False
            self._ctx.authenticated -= 1
        if self in self._ctx.connections:
            self._ctx.connections.discard(self)
            self._ctx.requests_done += self.requests
            logger.info("connection from %s closed after %d requests", self._peer, self.requests)
        if self._timer is not None:
            self._timer.cancel()
        self._session = None

    def pause_writing(self) -> None:  # noqa: D102
        # the peer does not read its replies: stop reading and stop executing what it already sent (a few
        # bytes of requests can ask for megabytes of replies), until the buffer drains
        self._paused = True
        if self._transport is not None:
            self._transport.pause_reading()

    def resume_writing(self) -> None:  # noqa: D102
        self._paused = False
        if self._transport is not None and not self._transport.is_closing() and not self._held_paused:
            self._transport.resume_reading()
            self._process()

    def data_received(self, data: bytes) -> None:  # noqa: D102
        if self._session is None:
            return
        if self._ctx.timeout:  # only the idle timeout reads it
            self._last_active = time.monotonic()
        try:
            self._session.feed(data)
        except ProtocolError:
            return
        self._process()
        session = self._session
        if self._partial or session is not None and session.decoder.pending():  # usually every request came whole
            self._track_partial()

    def _track_partial(self) -> None:
        """Account for an unfinished frame: its bytes count toward a server-wide cap, and it must keep a rate."""
        session, ctx = self._session, self._ctx
        pending = session.decoder.pending() if session is not None else 0
        ctx.partial_bytes += pending - self._partial
        self._partial = pending
        if not pending:
            self._frame_started = 0.0
            return
        if ctx.partial_bytes > ctx.limits.max_partial_bytes:
            self._drop_slow(f"unfinished frames of all connections hold over {ctx.limits.max_partial_bytes} bytes")
            return
        if not self._frame_started:  # a frame began: check its progress while it is incomplete
            started = self._frame_started = time.monotonic()
            self._frame_bytes = pending
            asyncio.get_running_loop().call_later(FRAME_GRACE, self._check_rate, started)

    def _check_rate(self, started: float) -> None:
        if started != self._frame_started or self._transport is None or self._transport.is_closing():
            return  # that frame is complete (another may have begun: it has its own check)
        loop, now = asyncio.get_running_loop(), time.monotonic()
        if self._paused or self._held_paused or self._parked:  # we stopped, not the peer: measure afresh
            self._frame_started, self._frame_bytes = now, self._partial
            loop.call_later(FRAME_GRACE, self._check_rate, now)
            return
        if (self._partial - self._frame_bytes) / (now - started) < self._ctx.limits.min_frame_rate:
            self._drop_slow(f"a frame arrives slower than {self._ctx.limits.min_frame_rate} bytes/s")
        else:
            loop.call_later(1.0, self._check_rate, started)

    def _drop_slow(self, why: str) -> None:
        logger.warning("closing %s: %s", self._peer, why)
        self._release_partial()
        if self._transport is not None:
            self._transport.abort()

    def _release_partial(self) -> None:
        self._ctx.partial_bytes -= self._partial
        self._partial = 0
        self._frame_started = 0.0
        self._session = None  # the buffered bytes go with it

    def _process(self) -> None:
        """Execute the complete requests received so far (until writing is paused) and write the replies."""
        session, transport = self._session, self._transport
        if session is None or transport is None or self._paused or self._held_paused or self._parked:
            return
        replies: list[bytes] = []
        pending = 0
        self._wrote = False
        try:
            if not session.ready:
                request = session.next_request()
                handshake = session.data_to_send()
                if handshake:
                    transport.write(handshake)
                if not session.ready:
                    return
                self._authenticated()
            else:
                request = session.next_request()
            slow, clock, outbox = self._ctx.slow_after, time.perf_counter, self._store.outbox
            ready = self._store.ready
            while request is not None:
                started = clock()
                reply = self._execute(session, *request) if request[1] != _BPOP else self._blocking(session, *request)
                if ready:  # a write to a list with blocked pops
                    serve_ready(self._ctx)
                if outbox:  # a publish: deliver in this loop turn, in publish order
                    self._deliver(outbox)
                took = clock() - started
                if took > slow:
                    self._record_slow(request[1], request[2], took)
                replies.append(reply)
                pending += len(reply)
                if pending > _FLUSH_BYTES:  # write now: the transport may pause us (pause_writing)
                    self._send(b"".join(replies))
                    replies.clear()
                    pending = 0
                if self._paused or self._held_paused or self._parked:
                    break
                request = session.next_request()
            if replies:
                self._send(replies[0] if len(replies) == 1 else b"".join(replies))
        except AuthenticationError:
            # a wrong password: answer after a delay that grows with the address's failures (see Guard)
            delay = self._ctx.guard.failed(self._address)
            reject = session.data_to_send()
            transport.pause_reading()
            asyncio.get_running_loop().call_later(delay, self._reject_after_delay, reject)
        except ProtocolError as exc:
            # answer what was executed before the bad frame, say why if still in the handshake, then close
            logger.warning("closing %s: %s", self._peer, exc)
            if replies:
                self._send(b"".join(replies))
            if self._held:  # the replies leave once the log has their writes; then close
                self._closing = True
            else:
                transport.write(session.data_to_send())
                transport.close()

    def _record_slow(self, op: int, payload: bytes, seconds: float) -> None:
        """Note a command slower than the threshold in the slow log (and the log file, at WARNING)."""
        spec = BY_ID.get(op)
        try:
            args = decode_value(payload)
            table = args[0] if type(args) is list and args and type(args[0]) is str and spec and spec.kind else None
        except ProtocolError:
            table = None
        name = spec.name if spec else f"op {op}"
        self._store.slowlog.append({"time": time.time(), "seconds": round(seconds, 6), "command": name,
                                    "table": table, "client": self._peer})
        logger.warning("slow command: %s on %r from %s took %.1f ms", name, table, self._peer, seconds * 1000)

    def _reject_after_delay(self, reject: bytes) -> None:
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(reject)
            transport.close()

    def _send(self, data: bytes) -> None:
        """Write replies, unless they depend on writes the append-only log does not keep yet.

        A reply waits if this connection wrote and the log is behind, and also, while the log is healthy, a
        read's reply (it may show another client's write that is not kept yet: Redis holds every reply of a
        loop turn until its log is written too).  While the log cannot be written, reads go on.
        """
        log = self._ctx.log
        if log is not None and (self._held or (self._wrote or log.error is None) and not log.ready()):
            self._held += 1
            self._held_bytes += len(data)
            log.hold(self, data)
            if self._held_bytes > _FLUSH_BYTES and not self._held_paused:
                # as pause_writing: a client that keeps sending must not make the server run and hold everything
                self._held_paused = True
                assert self._transport is not None
                self._transport.pause_reading()
        else:
            assert self._transport is not None
            self._transport.write(data)
        self._wrote = False

    def release(self, data: bytes) -> None:
        """Send replies the append-only log held (it has the writes they answer now)."""
        self._held -= 1
        self._held_bytes -= len(data)
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if self._closing and not self._held:
            transport.close()
        elif self._held_paused and self._held_bytes <= _FLUSH_BYTES // 2:
            self._held_paused = False
            if not self._paused:
                transport.resume_reading()
                asyncio.get_running_loop().call_soon(self._process)  # not from inside the log's release loop

    def close(self) -> None:
        """Close this connection once its buffered replies are sent (server shutdown)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close this connection at once, dropping what is not sent."""
        if self._transport is not None:
            self._transport.abort()

    # ---- publish/subscribe --------------------------------------------------------------------------------------

    def _pubsub(self, spec: CommandSpec, args: list[Any]) -> tuple[int, bytes] | None:
        """Run db.subscribe/db.unsubscribe, refuse what subscribe mode does not allow; None: run it as usual."""
        op = spec.op
        if op not in _PUBSUB:
            if op in _IN_SUBSCRIBE_MODE:
                return None
            not_allowed = TypeError(f"{spec.name} is not allowed on a connection in subscribe mode (only "
                                    "db.subscribe, db.unsubscribe and db.ping are; use another connection)")
            return error_code(not_allowed), encode_error(not_allowed, spec.name)
        channels = args[0] if len(args) == 1 else None
        if type(channels) is not list or not all(type(c) is str and 0 < len(c) <= MAX_NAME_LENGTH for c in channels):
            bad = TypeError(f"{spec.name} takes a list of channels, each a non-empty str of at most "
                            f"{MAX_NAME_LENGTH} characters")
            return error_code(bad), encode_error(bad, spec.name)
        if op == _SUBSCRIBE:
            registry = self._store.channels
            for channel in channels:
                registry.setdefault(channel, set()).add(self)
                self._channels.add(channel)
        else:
            self._leave(channels or list(self._channels))
        return STATUS_OK, encode_value(sorted(self._channels))

    def _leave(self, channels: list[str]) -> None:
        """Unsubscribe from ``channels``."""
        registry = self._store.channels
        for channel in channels:
            self._channels.discard(channel)
            subscribers = registry.get(channel)
            if subscribers is not None:
                subscribers.discard(self)
                if not subscribers:
                    del registry[channel]

    def _deliver(self, outbox: list[tuple[str, bytes]]) -> None:
        """Push the messages published by the command that just ran to their subscribers, and empty ``outbox``."""
        registry, limit = self._store.channels, self._ctx.limits.max_subscriber_buffer
        for channel, message in outbox:
            subscribers = registry.get(channel)
            if subscribers:
                plain = protocol.push_frame(message)  # the same bytes for every unencrypted subscriber
                for conn in tuple(subscribers):  # (a slow one leaves the set on the way)
                    conn.push(message, plain, limit)
        outbox.clear()

    def push(self, message: bytes, plain: bytes, limit: int) -> None:
        """Send one published message (``[channel, value]`` encoded; ``plain``: its unencrypted frame).

        Never waits: a subscriber with more than ``limit`` bytes unsent is closed instead.
        """
        transport, session = self._transport, self._session
        if transport is None or session is None or not session.ready or transport.is_closing():
            return
        frame = session.push(message, plain)
        log = self._ctx.log
        if self._held and log is not None:  # replies sealed before it wait for the log: keep the order
            self._held += 1
            self._held_bytes += len(frame)
            log.hold(self, frame)
        else:
            transport.write(frame)
        if transport.get_write_buffer_size() + self._held_bytes > limit:
            logger.warning("closing subscriber %s: over %d bytes of messages it does not read "
                           "(max_subscriber_buffer)", self._peer, limit)
            self._leave(list(self._channels))
            transport.abort()

    # ---- blocking pops (see Waiter) ------------------------------------------------------------------------------

    def _blocking(self, session: protocol.ServerSession, req_id: int, op: int, payload: bytes, ack: int) -> bytes:
        """Execute a list.bpop that may wait: if its list is empty, park it and return b"" (no reply yet)."""
        store = self._store
        store.may_block = True  # only here: never in a batch step, a pipeline or a log replay
        try:
            return self._execute(session, req_id, op, payload, ack)
        except WouldBlock as block:
            self._park(block.args[0], block.args[1], (req_id, op, payload, ack))
            return b""
        finally:
            store.may_block = False

    def _park(self, name: str, timeout: float, request: tuple[int, int, bytes, int]) -> None:
        ctx = self._ctx
        waiter = Waiter(self, name, request)
        key = (self._client_id, request[0])
        old = ctx.parked.get(key) if self._client_id != ANONYMOUS else None
        queue = ctx.waiters.get(name)
        if queue is None:
            queue = ctx.waiters[name] = collections.deque()
            self._store.watched.add(name)
        if old is not None and old.name == name:  # re-sent by its client after a reconnect: it keeps its turn
            queue[queue.index(old)] = waiter
            old.name = ""  # (so that _unpark leaves the queue alone)
        else:
            queue.append(waiter)
        if old is not None:
            old.conn._unpark(old)
            logger.info("closing %s: its blocked pop was re-sent on another connection", old.conn._peer)
            old.conn.abort()
        if self._client_id != ANONYMOUS:
            ctx.parked[key] = waiter
        if timeout != math.inf:
            waiter.timer = asyncio.get_running_loop().call_later(timeout, self._expire, waiter)
        self._parked = waiter

    def _unpark(self, waiter: Waiter) -> None:
        """Take ``waiter`` out of its list's queue, the parked requests and its timer."""
        ctx = self._ctx
        if self._parked is waiter:
            self._parked = None
        if waiter.timer is not None:
            waiter.timer.cancel()
        key = (self._client_id, waiter.request[0])
        if ctx.parked.get(key) is waiter:
            del ctx.parked[key]
        queue = ctx.waiters.get(waiter.name)
        if queue is not None:
            if queue[0] is waiter:
                queue.popleft()
            else:
                queue.remove(waiter)
            if not queue:
                del ctx.waiters[waiter.name]
                self._store.watched.discard(waiter.name)

    def _wake(self, waiter: Waiter) -> None:
        """Run the parked pop now that its list has an item, as if it had just arrived; then go on reading."""
        self._unpark(waiter)
        session, transport = self._session, self._transport
        if session is None or transport is None or transport.is_closing():
            return  # closing: the item goes to the next waiter instead of a reply nobody reads
        self._last_active = time.monotonic()  # (the idle timeout counts from the reply, not from the request)
        self.requests -= 1  # counted when it first arrived
        self._wrote = False
        # may_block is False: the pop runs (its list has an item) or fails, answered from the reply cache if it ran
        try:
            reply = self._execute(session, *waiter.request)
        except Exception:  # it was accepted once, so this is a bug: it must not reach the writer's connection
            logger.exception("closing %s: its blocked pop failed when it was woken", self._peer)
            transport.abort()
            return
        self._send(reply)
        asyncio.get_running_loop().call_soon(self._resume)  # its next requests (not inside serve_ready)

    def _expire(self, waiter: Waiter) -> None:
        """The timeout of a parked pop ended: answer IndexError, as list.pop does (nothing ran: not cached)."""
        waiter.timer = None
        if self._parked is not waiter:
            return
        self._unpark(waiter)
        session = self._session
        if session is None:
            return
        exc = IndexError("pop from empty list")
        self._last_active = time.monotonic()
        self._wrote = False
        self._send(session.reply(waiter.request[0], error_code(exc), encode_error(exc, "list.bpop")))
        self._resume()

    def _resume(self) -> None:
        """Run the requests that arrived while a pop waited (they were counted as an unfinished frame)."""
        self._process()
        if self._partial and self._session is not None:
            self._track_partial()

    # ---- internals ----------------------------------------------------------------------------------------------

    def _refuse(self, reason: str) -> None:
        assert self._transport is not None
        # one line per address and reason per minute: refusals cost an attacker nothing, so must not flood the log
        self._ctx.guard.log.warning(("refused", self._address, reason.partition(":")[0]),
                                    "connection(s) refused from %s: %s", self._address, reason)
        self._transport.write(protocol.reject_frame(reason))
        self._transport.close()

    def _leave_handshake(self) -> None:
        host, self._host = self._host, None
        if host is not None:
            self._ctx.handshaking -= 1
            left = self._ctx.unauthenticated[host] - 1
            if left:
                self._ctx.unauthenticated[host] = left
            else:
                del self._ctx.unauthenticated[host]

    def _authenticated(self) -> None:
        assert self._session is not None
        self._leave_handshake()
        if self._ctx.authenticated >= self._ctx.max_con:  # others authenticated meanwhile: max_con is a hard limit
            logger.warning("closing %s: max_con=%d reached", self._peer, self._ctx.max_con)
            assert self._transport is not None
            self._transport.close()
            return
        self._ctx.authenticated += 1
        self._counted = True
        self._client_id = self._session.client_id
        self._client = self._ctx.replies.record(self._client_id)
        # the handshake deadline is over; from now on only the idle timeout (if any) applies
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._ctx.timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(self._ctx.timeout, self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        transport, session = self._transport, self._session
        if transport is None or session is None or transport.is_closing():
            return
        if not session.ready:
            logger.warning("closing %s: no authentication within %.1f s", self._peer,
                           self._ctx.limits.handshake_timeout)
            transport.close()
            return
        idle = time.monotonic() - self._last_active
        # a subscriber waiting for messages, or a blocked pop waiting for an item, is not idle
        if idle >= self._ctx.timeout and not self._channels and self._parked is None:
            logger.info("closing %s: idle for %.0f s", self._peer, idle)
            transport.close()
        else:  # one timer per connection, re-armed lazily instead of on every request
            left = self._ctx.timeout - idle  # (<= 0 when not idle but waiting: check again a timeout later)
            self._timer = asyncio.get_running_loop().call_later(left if left > 0 else self._ctx.timeout,
                                                                self._check_timeout)

    def _execute(self, session: protocol.ServerSession, req_id: int, op: int, payload: bytes, ack: int) -> bytes:
        self.requests += 1
        spec = BY_ID.get(op)
        if spec is None:
            raise ProtocolError(f"unknown command id {op}")
        args = decode_value(payload)
        if type(args) is not list:
            raise ProtocolError("request arguments are not an array")
        if len(payload) > MAX_DEPTH and not spec.readonly and depth_exceeds(args):  # (a level costs a byte)
            # a data error, not a broken protocol: msgpack >= 1.2 lets our own client encode this deep
            exc = TypeError(f"{spec.name}: values nest at most {MAX_DEPTH} containers deep, counting the arguments")
            return session.reply(req_id, error_code(exc), encode_error(exc, spec.name))
        if self._log:
            logger.debug("%s %s %r", self._peer, spec.name, args[:1])
        if op in _BY_CONNECTION or self._channels:
            if op == _INFO and not self._channels:
                return session.reply(req_id, *info_outcome(self._ctx.info, args))
            pubsub = self._pubsub(spec, args)
            if pubsub is not None:
                return session.reply(req_id, *pubsub)
        # (a publish stores nothing: it goes on over max_memory, as Redis's PUBLISH does)
        if self._ctx.over_memory and not spec.readonly and spec.suffix not in SHRINKING and spec.logged:
            full = MemoryLimitError(f"{spec.name} refused: the server uses more than max_memory="
                                    f"{self._ctx.max_memory} bytes (reads and deletions go on)")
            return session.reply(req_id, error_code(full), encode_error(full, spec.name))
        if spec.readonly:  # a read simply runs again when re-sent
            return session.reply(req_id, *self._store.outcome(spec, args))
        log, client = self._ctx.log, self._client
        if client is None:
            if log is not None and log.refuses(spec, args) and spec.logged:
                return session.reply(req_id, *refused(log))
            self._wrote = True  # its reply waits until the log has the write (see _send)
            origin = (ANONYMOUS, req_id, ack, payload) if log is not None else None
            return session.reply(req_id, *self._store.outcome(spec, args, True, origin))
        # ClientRecord.lookup/remember, inlined: this runs for every write
        if ack > client.ack:
            client.ack = ack
        replies = client.replies
        reply = replies.get(req_id)
        if reply is None:
            if req_id < client.ack or req_id <= client.floor:
                return session.reply(req_id, *stale(req_id))
            if log is not None and log.refuses(spec, args) and spec.logged:  # not run, not cached: a re-send may run
                return session.reply(req_id, *refused(log))
            origin = (self._client_id, req_id, ack, payload) if log is not None else None
            reply = replies[req_id] = self._store.outcome(spec, args, True, origin)
            if len(replies) > PRUNE_AT:
                client.prune(self._ctx.replies.max_per_client)
        elif self._log:
            logger.debug("%s request %d answered from the reply cache", self._peer, req_id)
        self._wrote = True  # its reply waits until the log has the write (a cached one's too; see _send)
        return session.reply(req_id, *reply)
