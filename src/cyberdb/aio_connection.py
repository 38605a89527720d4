"""Transport of the asyncio client: :class:`AsyncConnection` (an ``asyncio.Protocol``) and its pool.

The same sans-IO :class:`~cyberdb.protocol.ClientSession` as the synchronous transport does the handshake,
the encryption and the matching of replies to requests; this module only moves bytes.  A connection reads
whenever data arrives (``data_received``), so a large reply never holds up the event loop: the decoder is fed
chunk by chunk and the waiting task is woken once its frame is complete.  Requests may be sent by several tasks
at once on one connection (replies come back in request order, each future is resolved in turn).

A task cancelled while its reply is due leaves a cancelled future behind: its reply is read and dropped when it
comes, so the connection stays in step.  Such a connection is never put back into the pool (``release`` closes
a connection with replies still due), and a cancelled pop that waits on the server closes its connection at once
(the connection's next requests would otherwise queue behind it for up to its timeout).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

from . import protocol
from .codec import decode_value
from .connection import _EOF_HINT, Raw, TLSConfig, _tls_error, reply_error
from .errors import ConnectionError, ConnectionLostError, CyberDBError, PoolTimeoutError, TimeoutError, os_error

__all__ = ["AsyncConnection", "AsyncConnectionPool", "open_connection"]

logger = logging.getLogger(__name__)
_MAX_PUSHES = 10_000  # pushed messages buffered for a subscriber before reading pauses (the server then drops it)
Event = tuple[int, int, bytes]  # request id, status, payload


class AsyncConnection(asyncio.Protocol):
    """One authenticated connection; requests may overlap (replies are matched in order by the session)."""

    def __init__(self, session: protocol.ClientSession, host: str, port: int, loop: asyncio.AbstractEventLoop) -> None:
        """A protocol instance for ``loop.create_connection`` (use :func:`open_connection`)."""
        self.host, self.port = host, port
        self.loop = loop
        self.broken = False
        self.requests = 0
        self.last_used = time.monotonic()
        self._session = session
        self._transport: asyncio.Transport | None = None
        self._waiters: collections.deque[asyncio.Future[Raw]] = collections.deque()
        self._ready: asyncio.Future[None] = loop.create_future()
        self._lost: BaseException | None = None
        self.pushes: collections.deque[Event] | None = None  # a subscription's connection keeps pushes here
        self._push_waiter: asyncio.Future[None] | None = None
        self._paused = False

    def __repr__(self) -> str:
        state = "BROKEN" if self.broken else "OPEN"
        return f"<AsyncConnection {self.host}:{self.port} {state} requests={self.requests} awaiting={self.awaiting}>"

    @property
    def awaiting(self) -> int:
        """Replies still due (including those of cancelled callers, dropped when they come)."""
        return len(self._waiters)

    # ---- asyncio.Protocol ------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # noqa: D102
        self._transport = tr = transport  # type: ignore[assignment]  # (uvloop's do not subclass asyncio.Transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:  # pragma: no cover - asyncio sets it already on most platforms
                pass
        tr.write(self._session.start())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:  # noqa: D102
        session = self._session
        try:
            session.feed(data)
            if not self._ready.done():
                out = session.handshake()
                if out:
                    assert self._transport is not None
                    self._transport.write(out)
                if not session.ready:
                    return
                self._ready.set_result(None)
            if self.pushes is not None:
                self._events()
                return
            waiters = self._waiters
            while True:
                reply = session.next_reply()
                if reply is None:
                    return
                fut = waiters.popleft()
                self.requests += 1
                if not fut.done():  # a cancelled caller's reply is dropped
                    fut.set_result((reply[1], reply[2]))
        except Exception as exc:  # a protocol error, or data nobody asked for (IndexError): the stream is unusable
            if isinstance(exc, IndexError):
                exc = ConnectionLostError(f"{self.host}:{self.port} sent data while no reply was due")
            self._fail(exc)

    def _events(self) -> None:
        """A subscription's connection: replies go to their waiters, pushes to ``pushes``."""
        assert self.pushes is not None
        while True:
            event = self._session.next_event()
            if event is None:
                break
            if event[0] == protocol.PUSH_ID:
                self.pushes.append(event)
            else:
                fut = self._waiters.popleft()
                if not fut.done():
                    fut.set_result((event[1], event[2]))
        if self.pushes:
            self._wake_reader()
            if len(self.pushes) >= _MAX_PUSHES and not self._paused and self._transport is not None:
                self._paused = True  # the server sees a slow subscriber and drops it, as it would a slow socket
                self._transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:  # noqa: D102
        if exc is None:
            hint = "" if self._ready.done() else f" during the handshake ({_EOF_HINT[self._is_tls()]})"
            lost: BaseException = ConnectionLostError(f"{self.host}:{self.port} closed the connection{hint}")
        elif isinstance(exc, ssl.SSLError):
            lost = _tls_error(exc, f"{self.host}:{self.port}")
        elif isinstance(exc, OSError):
            lost = ConnectionLostError(f"connection to {self.host}:{self.port} lost: {os_error(exc)}")
        else:
            lost = ConnectionLostError(f"connection to {self.host}:{self.port} lost: {exc!r}")
        self._fail(lost)

    def _is_tls(self) -> bool:
        return self._transport is not None and self._transport.get_extra_info("sslcontext") is not None

    def _fail(self, exc: BaseException) -> None:
        """Mark the connection broken, close it and fail everything waiting on it with ``exc``."""
        self.broken = True
        if self._lost is None:
            self._lost = exc
        if not self._ready.done():
            self._ready.set_exception(exc)
            self._ready.exception()  # retrieved: nobody may be waiting any more
        waiters, self._waiters = self._waiters, collections.deque()
        for fut in waiters:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # marked retrieved: the rest of a broken pipeline is never awaited (no log noise)
        self._wake_reader()
        if self._transport is not None:
            self._transport.close()

    # ---- requests -------------------------------------------------------------------------------------------

    def send(self, op: int, payload: bytes, req_id: int, ack: int) -> asyncio.Future[Raw]:
        """Write one request; return the future of its raw reply ``(status, payload)``.

        Raises:
            ConnectionLostError: the connection is broken.
            ValueError: the request exceeds the frame limit; nothing was sent and the connection stays usable.
        """
        if self.broken:
            raise self._broken_error()
        frame = self._session.request(req_id, op, payload, ack)
        fut: asyncio.Future[Raw] = self.loop.create_future()
        self._waiters.append(fut)
        assert self._transport is not None
        self._transport.write(frame)
        return fut

    async def call(self, op: int, payload: bytes, req_id: int, ack: int, timeout: float | None = None,
                   waits: bool = False) -> Any:
        """Send one request and return its decoded result.

        Args:
            timeout: give up after this many seconds (the connection is then closed: the stream position is
                unknown) with ``TimeoutError``; None waits as long as it takes.
            waits: the request may wait on the server (a blocking pop): cancelling it closes the connection.

        Raises:
            ConnectionLostError, TimeoutError: the connection broke (it is marked broken).
            KeyError, IndexError, ...: the error the command raised on the server.
        """
        fut = self.send(op, payload, req_id, ack)
        try:
            if timeout is None:
                status, body = await fut
            else:
                status, body = await asyncio.wait_for(fut, timeout)
        except asyncio.TimeoutError:
            self.close()
            raise TimeoutError(f"no reply from {self.host}:{self.port} within {timeout} s") from None
        except asyncio.CancelledError:
            if waits:
                self.close()
            raise
        if status == protocol.STATUS_OK:
            return decode_value(body)
        raise reply_error(status, body)

    async def call_many(self, requests: list[tuple[int, int, bytes]], ack: int, out: list[Raw],
                        timeout: float | None = None) -> None:
        """Send requests ``(req_id, op, payload)`` in one write and append each ``(status, payload)`` to ``out``.

        Replies that arrived stay in ``out`` when the connection breaks, so the caller re-sends only the rest.
        """
        session = self._session
        for _req_id, _op, payload in requests:  # all checked first: no request of the lot is half sent
            session.check_size(len(payload))
        if self.broken:
            raise self._broken_error()
        futures = []
        frames = []
        for req_id, op, payload in requests:
            frames.append(session.request(req_id, op, payload, ack))
            fut: asyncio.Future[Raw] = self.loop.create_future()
            self._waiters.append(fut)
            futures.append(fut)
        assert self._transport is not None
        self._transport.write(b"".join(frames))
        for fut in futures:
            try:
                out.append(await (fut if timeout is None else asyncio.wait_for(fut, timeout)))
            except asyncio.TimeoutError:
                self.close()
                raise TimeoutError(f"no reply from {self.host}:{self.port} within {timeout} s") from None

    async def next_push(self, timeout: float | None) -> Event | None:
        """The next pushed message of a subscription's connection, or None after ``timeout`` seconds without one.

        Raises:
            ConnectionLostError: the connection broke or the server closed it.
        """
        assert self.pushes is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.pushes:
            if self.broken:
                raise self._broken_error()
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            waiter = self._push_waiter = self.loop.create_future()
            try:
                await asyncio.wait_for(waiter, remaining) if remaining is not None else await waiter
            except asyncio.TimeoutError:
                return None
            finally:
                self._push_waiter = None
        event = self.pushes.popleft()
        if self._paused and len(self.pushes) < _MAX_PUSHES // 2 and self._transport is not None:
            self._paused = False
            self._transport.resume_reading()
        return event

    def _broken_error(self) -> ConnectionLostError:
        """A new error for a use of this broken connection, saying why it broke."""
        return ConnectionLostError(f"this connection is broken ({self._lost})" if self._lost else
                                   "this connection is broken")

    def _wake_reader(self) -> None:
        waiter = self._push_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def close(self) -> None:
        """Close the connection; whatever waits on it fails with ``ConnectionLostError``."""
        self._fail(ConnectionLostError(f"the connection to {self.host}:{self.port} was closed by this client"))


async def open_connection(host: str, port: int, password: str | None, encrypt: bool,
                          connect_timeout: float | None = 10.0, client_id: bytes = protocol.ANONYMOUS,
                          tls: TLSConfig | None = None) -> AsyncConnection:
    """Connect and complete the handshake (TLS first when ``tls`` is given).

    Raises:
        AuthenticationError: wrong password.
        EncryptionMismatchError: ``encrypt`` differs from the server's.
        ConnectionError: the server cannot be reached or refused the connection, or TLS failed.
        TimeoutError: no connection within ``connect_timeout`` seconds.
    """
    loop = asyncio.get_running_loop()
    session = protocol.ClientSession(password, encrypt, client_id=client_id, peer=f"{host}:{port}")
    conn = AsyncConnection(session, host, port, loop)

    async def run() -> None:
        try:
            if tls is None:
                await loop.create_connection(lambda: conn, host, port)
            else:
                await loop.create_connection(lambda: conn, host, port, ssl=tls.context(),
                                             server_hostname=tls.server_name or host)
        except ssl.SSLError as exc:
            raise _tls_error(exc, f"{host}:{port}") from exc
        except CyberDBError:
            raise
        except OSError as exc:
            raise ConnectionError(f"cannot connect to CyberDB at {host}:{port}: {exc}") from exc
        await conn._ready

    try:
        if connect_timeout is None:
            await run()
        else:
            await asyncio.wait_for(run(), connect_timeout)
    except asyncio.TimeoutError:
        conn.close()
        raise TimeoutError(f"handshake with {host}:{port} timed out after {connect_timeout} s") from None
    except BaseException:
        conn.close()
        raise
    return conn


class AsyncConnectionPool:
    """Idle connections for reuse by the tasks of one event loop (a pool used from a new loop starts afresh)."""

    def __init__(self, factory: Callable[[], Awaitable[AsyncConnection]], max_idle_time: float | None = None,
                 max_connections: int | None = None, wait_timeout: float | None = 10.0) -> None:
        """Create an empty pool.

        Args:
            factory: makes a new connection.
            max_idle_time: discard a pooled connection idle longer than this (None = keep).
            max_connections: connections open at once, in use or idle (None = unlimited); a full pool waits.
            wait_timeout: how long a full pool waits before ``PoolTimeoutError``.
        """
        self._factory = factory
        self.max_idle_time = max_idle_time
        self.max_connections = max_connections
        self.wait_timeout = wait_timeout
        self._idle: list[AsyncConnection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"<AsyncConnectionPool open={self._open} idle={len(self._idle)}>"

    def _check_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # connections belong to the loop that made them (e.g. an earlier asyncio.run)
            idle, self._idle = self._idle, []
            for conn in idle:
                conn.close()
            self._open, self._waiters, self._loop = 0, collections.deque(), loop

    async def get(self) -> AsyncConnection:
        """Check out a live connection (reusing an idle one, else opening a new one).

        Raises:
            PoolTimeoutError: the pool is full and nothing was released in time.
            ConnectionError: a new connection could not be made.
        """
        self._check_loop()
        while True:
            if self._idle:
                conn = self._idle.pop()
                if self._usable(conn):
                    return conn
                conn.close()
                self._forget()
                continue
            limit = self.max_connections
            if limit is None or self._open < limit:
                self._open += 1
                try:
                    return await self._factory()
                except BaseException:
                    self._forget()
                    raise
            await self._wait_for_release(limit)

    async def _wait_for_release(self, limit: int) -> None:
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._waiters.append(waiter)
        try:
            if self.wait_timeout is None:
                await waiter
            else:
                await asyncio.wait_for(waiter, self.wait_timeout)
        except asyncio.TimeoutError:
            raise PoolTimeoutError(f"all {limit} connections are in use") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._wake()  # woken, then cancelled: pass the turn on
            raise

    def _usable(self, conn: AsyncConnection) -> bool:
        if conn.broken or conn.awaiting:
            return False
        return self.max_idle_time is None or time.monotonic() - conn.last_used <= self.max_idle_time

    def _wake(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _forget(self) -> None:
        self._open -= 1
        self._wake()

    def release(self, conn: AsyncConnection) -> None:
        """Return a connection; a broken one, or one with replies still due (a cancelled call), is closed."""
        if conn.loop is not self._loop:
            conn.close()
            return
        if conn.broken or conn.awaiting:
            conn.close()
            self._forget()
            return
        conn.last_used = time.monotonic()
        self._idle.append(conn)
        self._wake()

    def reset(self) -> None:
        """Close every idle connection."""
        idle, self._idle = self._idle, []
        self._open -= len(idle)
        for conn in idle:
            conn.close()
        for _ in idle:
            self._wake()
