"""Pipelines, transactions, locks and subscriptions of the asyncio client, made of the synchronous ones.

Each class here subclasses its synchronous twin and replaces only the steps that wait for the network:
:class:`AsyncPipeline` drives :meth:`cyberdb.Pipeline._execution` (the same requests, the same handling of the
replies) with ``await proxy.call_many``; :class:`AsyncTransaction` is the same executor as
:class:`cyberdb.Transaction` (``_prepare``/``_settle``) with an awaited ``db.speculate``; :class:`AsyncLock` and
:class:`AsyncSubscription` wait with ``asyncio.sleep`` and an asyncio connection.  See the synchronous modules
(:mod:`cyberdb.pipeline`, :mod:`cyberdb.transaction`, :mod:`cyberdb.lock`, :mod:`cyberdb.pubsub`) for the
semantics, which are the same.
"""

from __future__ import annotations

import asyncio
import collections
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import protocol
from .codec import decode_value, encode_value
from .commands import BY_NAME, CommandSpec
from .connection import reply_error
from .errors import (
    BatchAbortedError,
    ConnectionLostError,
    DisconnectedError,
    LockTimeoutError,
    TransactionConflictError,
)
from .executor import SPEC_REPLY, Steps
from .lock import _FIRST_DELAY, _MAX_DELAY, Lock
from .pipeline import Pipeline
from .pubsub import Message, Subscription
from .transaction import _BACKOFF, _MAX_BACKOFF, Transaction

if TYPE_CHECKING:
    from .aio import AsyncClient, AsyncProxy
    from .aio_connection import AsyncConnection
    from .aio_tables import AsyncCyberDict, AsyncCyberList

__all__ = ["AsyncExecutor", "AsyncLock", "AsyncPipeline", "AsyncSubscription", "AsyncTransaction", "transact"]

T = TypeVar("T")
_BATCH, _SPECULATE = BY_NAME["db.batch"], BY_NAME["db.speculate"]
_ACQUIRE, _RELEASE, _EXTEND = BY_NAME["lock.acquire"], BY_NAME["lock.release"], BY_NAME["lock.extend"]
_SUBSCRIBE, _UNSUBSCRIBE, _PING = (BY_NAME[n] for n in ("db.subscribe", "db.unsubscribe", "db.ping"))


class AsyncExecutor:
    """``run`` and ``stream`` for an executor whose ``call`` is a coroutine (AsyncProxy, AsyncTransaction)."""

    __slots__ = ()

    async def call(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:  # pragma: no cover
        """Run one request and return its shaped reply."""
        raise NotImplementedError

    async def run(self, steps: Steps[T], now: bool = False) -> T:
        """Drive a multi-step operation (a generator of requests) to its return value."""
        try:
            step = next(steps)
            while True:
                step = steps.send(await self.call(*step))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    async def stream(self, steps: Steps[Any]) -> AsyncIterator[Any]:
        """Drive a multi-step operation, yielding each reply as it comes."""
        try:
            step = next(steps)
            while True:
                reply = await self.call(*step)
                yield reply
                step = steps.send(reply)
        except StopIteration:
            return


class AsyncPipeline(Pipeline):
    """``async with proxy.pipeline() as pipe:``: calls of ``pipe.get_cyberdict(name)`` tables are queued at once
    (each returns a :class:`~cyberdb.Pending`, no ``await``) and sent together when the block ends."""

    _proxy: AsyncProxy  # type: ignore[assignment]

    def __enter__(self) -> Pipeline:
        raise TypeError("use 'async with proxy.pipeline() as pipe:' with the asyncio client")

    async def __aenter__(self) -> AsyncPipeline:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        if exc_type is None:
            await self.execute()
        else:
            self._queue.clear()  # the block failed: send nothing

    async def execute(self) -> list[Any]:  # type: ignore[override]
        """Send every queued call, read the replies and return ``results`` (values, or exceptions).

        Raises:
            BatchAbortedError: (atomic only) a call failed, so none was applied; ``.index`` names it.
        """
        steps = self._execution()
        try:
            requests = next(steps)
            while True:
                requests = steps.send(await self._proxy.call_many(requests))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


class AsyncTransaction(AsyncExecutor, Transaction):  # type: ignore[misc]  # run/stream are coroutines
    """The ``tx`` that ``await proxy.transact(fn)`` gives ``fn``: async tables whose writes are buffered."""

    _proxy: AsyncProxy  # type: ignore[assignment]

    def get_cyberdict(self, table_name: str) -> AsyncCyberDict:  # type: ignore[override]
        """The CyberDict ``table_name`` inside this transaction."""
        from .aio_tables import AsyncCyberDict
        return AsyncCyberDict(self, table_name)  # type: ignore[arg-type]

    def get_cyberlist(self, table_name: str) -> AsyncCyberList:  # type: ignore[override]
        """The CyberList ``table_name`` inside this transaction."""
        from .aio_tables import AsyncCyberList
        return AsyncCyberList(self, table_name)  # type: ignore[arg-type]

    async def call(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:
        """Buffer a write that returns None; run anything else speculatively and log it with its digest."""
        speculate = self._prepare(spec, args)
        if speculate is None:
            return None
        return self._settle(spec, args, shape, await self._proxy.call(_SPECULATE, speculate))

    call_now = call

    async def _commit(self) -> None:  # type: ignore[override]
        if not self._writes:
            return
        try:
            await self._proxy.call(_BATCH, [self._log])
        except BatchAbortedError as exc:
            raise self._failed_write(exc) from exc

    async def _still_valid(self) -> bool:  # type: ignore[override]
        if not any(len(step) == 3 for step in self._log):
            return True
        try:
            await self._proxy.call(_SPECULATE, [self._log])
        except TransactionConflictError:
            return False
        except BatchAbortedError:
            return True
        return True


async def transact(proxy: AsyncProxy, fn: Callable[[AsyncTransaction], Awaitable[T]], retries: int = 10) -> T:
    """Run ``await fn(tx)`` until it commits without a conflict, at most ``retries + 1`` times (as
    :func:`cyberdb.transaction.transact`).

    Raises:
        TransactionConflictError: every run conflicted.
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    for attempt in range(retries + 1):
        if attempt:
            await asyncio.sleep(random.uniform(0, min(_MAX_BACKOFF, _BACKOFF * 2 ** attempt)))
        tx = AsyncTransaction(proxy)  # type: ignore[arg-type]
        try:
            result = await fn(tx)
        except TransactionConflictError:
            continue
        except Exception:
            if not await tx._still_valid():
                continue
            raise
        try:
            await tx._commit()
        except TransactionConflictError:
            continue
        return result
    raise TransactionConflictError(f"the transaction conflicted with other writers {retries + 1} times "
                                   f"(raise retries={retries} or write less contended data)")


class AsyncLock(Lock):
    """One named lock for asyncio: ``async with proxy.lock(name, ttl=10) as lock:`` (see :mod:`cyberdb.lock`)."""

    _proxy: AsyncProxy  # type: ignore[assignment]

    async def acquire(self, timeout: float | None = None, blocking: bool = True) -> bool:  # type: ignore[override]
        """Wait until the lock is ours (at most ``timeout`` seconds, default the lock's ``timeout``).

        Raises:
            LockTimeoutError: not acquired within the timeout.
            RuntimeError: this handle already holds the lock.
        """
        if self.token is not None:
            raise RuntimeError(f"this handle already holds lock {self.name!r}")
        wait = self.timeout if timeout is None else timeout
        deadline = None if wait is None else time.monotonic() + wait
        delay = _FIRST_DELAY
        while True:
            token = await self._proxy.call(_ACQUIRE, [self.name, self.ttl])
            if token is not None:
                self.token = token
                return True
            if not blocking:
                return False
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeoutError(f"lock {self.name!r} was not acquired within {wait} s")
                delay = min(delay, remaining)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    async def release(self) -> None:  # type: ignore[override]
        """Free the lock.

        Raises:
            LockLostError: the lock is no longer ours.
        """
        token = self._held()
        self.token = None
        await self._proxy.call(_RELEASE, [self.name, token])

    async def extend(self, ttl: float | None = None) -> None:  # type: ignore[override]
        """Renew the lease for ``ttl`` (default the lock's) seconds from now."""
        await self._proxy.call(_EXTEND, [self.name, self._held(), self.ttl if ttl is None else ttl])

    def __enter__(self) -> Lock:
        raise TypeError("use 'async with proxy.lock(...)' with the asyncio client")

    async def __aenter__(self) -> AsyncLock:
        await self.acquire()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.release()


class AsyncSubscription(Subscription):
    """``async with proxy.subscribe("news") as sub: async for channel, value in sub:`` (see
    :mod:`cyberdb.pubsub`); the connection is its own, opened by ``async with`` (or ``await sub.open()``)."""

    def __init__(self, client: AsyncClient, channels: Iterable[str], timeout: float | None = None) -> None:
        """A subscription to ``channels``, not yet connected."""
        self.timeout = timeout
        self._aclient = client
        self._pending: collections.deque[Message] = collections.deque()
        self._channels: frozenset[str] = frozenset()
        self._received = 0
        self._first = list(channels)
        self._conn = None
        self._aconn: AsyncConnection | None = None
        self._opened = False

    def __repr__(self) -> str:
        state = "OPEN" if self._aconn is not None else "CLOSED"
        return f"<AsyncSubscription {state} channels={sorted(self._channels)!r} received={self._received}>"

    async def open(self) -> None:
        """Connect and subscribe to the channels given at creation.

        Raises:
            ConnectionError: the server cannot be reached or refused the connection.
        """
        if self._opened:
            return
        self._opened = True
        conn = await self._aclient._new_connection()
        conn.pushes = collections.deque()
        self._aconn = conn
        try:
            if self._first:
                await self.subscribe(*self._first)
        except BaseException:
            await self.close()
            raise

    async def subscribe(self, *channels: str) -> None:  # type: ignore[override]
        """Also receive the messages published on ``channels`` from now on."""
        self._channels = frozenset(await self._arequest(_SUBSCRIBE.op, [list(channels)]))

    async def unsubscribe(self, *channels: str) -> None:  # type: ignore[override]
        """Stop receiving ``channels`` (none given: all of them)."""
        self._channels = frozenset(await self._arequest(_UNSUBSCRIBE.op, [list(channels)]))

    async def ping(self) -> bool:  # type: ignore[override]
        """Round-trip to the server on this subscription's connection."""
        return bool(await self._arequest(_PING.op, []))

    async def get(self, timeout: float | None = None) -> Message | None:  # type: ignore[override]
        """The next message ``(channel, value)``, or None if none came within ``timeout`` seconds (None: wait).

        Raises:
            ConnectionLostError: the server closed the connection (e.g. this subscriber read too slowly).
            DisconnectedError: the subscription is closed.
        """
        conn = self._aopen()
        event = await conn.next_push(timeout)
        if event is None:
            return None
        return self._message(event[2])

    async def close(self) -> None:  # type: ignore[override]
        """Close the connection (the server forgets its channels)."""
        conn, self._aconn = self._aconn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> Subscription:
        raise TypeError("use 'async with proxy.subscribe(...)' with the asyncio client")

    async def __aenter__(self) -> AsyncSubscription:
        await self.open()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    def __aiter__(self) -> AsyncSubscription:
        return self

    async def __anext__(self) -> Message:
        message = await self.get(self.timeout)
        if message is None:
            raise StopAsyncIteration
        return message

    def _aopen(self) -> AsyncConnection:
        conn = self._aconn
        if conn is None:
            raise DisconnectedError("this subscription is closed (or not opened: use 'async with')")
        if conn.broken and not conn.pushes:
            raise ConnectionLostError("this subscription's connection was lost: make a new subscription")
        return conn

    async def _arequest(self, op: int, args: list[Any]) -> Any:
        conn = self._aopen()
        client = self._aclient
        req_id, ack = client._begin()
        try:
            status, body = await conn.send(op, encode_value(args), req_id, ack)
        finally:
            client._end(req_id)
        if status != protocol.STATUS_OK:
            raise reply_error(status, body)
        return decode_value(body)

