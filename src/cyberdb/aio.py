"""The asyncio client: :class:`AsyncClient`, :class:`AsyncProxy`, :func:`connect` and :func:`from_url`.

::

    client = await cyberdb.aio.connect(host="127.0.0.1", port=9980, password="secret")
    async with client.get_proxy() as proxy:
        users = await proxy.create_cyberdict("users")
        await users.setitem("ann", {"age": 31})
        ann, count = await users.get("ann"), await users.len()
    await client.close()

The same protocol, commands and tables as the synchronous client: an :class:`AsyncProxy` is an executor of
the table layer (see :mod:`cyberdb.executor`) whose ``call`` returns an awaitable, so every method of
:class:`~cyberdb.CyberDict`/:class:`~cyberdb.CyberList` is a coroutine method of
:class:`~cyberdb.aio_tables.AsyncCyberDict`/:class:`~cyberdb.aio_tables.AsyncCyberList` (the operators Python
cannot await have named forms, listed there).  Requests are numbered by their client exactly as the
synchronous client numbers them (:class:`cyberdb.client.RequestNumbers`), so a request whose connection broke is
re-sent on a new one with its number and runs once; the retry budget is :class:`~cyberdb.Retry`'s, waited with
``asyncio.sleep``.  One proxy may be used by several tasks at once: their requests share its connection
(replies come back in order).  The transport is :mod:`cyberdb.aio_connection`; pipelines, transactions, locks
and subscriptions are in :mod:`cyberdb.aio_extras`.  Works on any asyncio loop, uvloop included.
"""

from __future__ import annotations

import asyncio
import logging
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from .aio_connection import AsyncConnection, AsyncConnectionPool, open_connection
from .aio_extras import AsyncExecutor, AsyncLock, AsyncPipeline, AsyncSubscription, AsyncTransaction, transact
from .aio_tables import AsyncCyberDict, AsyncCyberList, AsyncCyberRef
from .client import RequestNumbers, _Budget, table_bound
from .codec import encode_value
from .commands import BY_NAME, CommandSpec
from .connection import Raw, TLSConfig, unreachable
from .errors import (
    ConnectionError,
    ConnectionLostError,
    CyberDBError,
    DisconnectedError,
    PoolTimeoutError,
    TableNotFoundError,
    TimeoutError,
    WrongTableTypeError,
)
from .executor import SPEC_REPLY
from .retry import Retry
from .url import parse_url

__all__ = [
    "AsyncClient",
    "AsyncCyberDict",
    "AsyncCyberList",
    "AsyncCyberRef",
    "AsyncLock",
    "AsyncPipeline",
    "AsyncProxy",
    "AsyncSubscription",
    "AsyncTransaction",
    "connect",
    "from_url",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_CONNECT_TIMEOUT = 10.0
_CLOSED = "this proxy is closed: call await proxy.connect() before using it or its tables"
_BPOP_OP = BY_NAME["list.bpop"].op
_DB_PING, _DB_CREATE, _DB_CHECK, _DB_TABLES, _DB_DELETE, _DB_BATCH, _DB_SLOWLOG, _DB_PUBLISH, _DB_INFO = (
    BY_NAME[n] for n in ("db.ping", "db.create", "db.check", "db.tables", "db.delete", "db.batch", "db.slowlog",
                         "db.publish", "db.info"))


class AsyncClient(RequestNumbers):
    """An asyncio CyberDB client: settings plus a pool of connections (one client per process and loop)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9980, password: str | None = None,
                 encrypt: bool = False, time_out: float | None = None, *, max_connections: int | None = None,
                 socket_timeout: float | None = None, retry: Retry | None = None,
                 table_check_ttl: float = 1.0, tls: bool | ssl.SSLContext = False, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 tls_server_name: str | None = None) -> None:
        """Create a client; no connection is made until one is needed (the arguments of :class:`cyberdb.Client`).

        Raises:
            ValueError: ``tls_*`` files without ``tls=True``, or with an ``ssl.SSLContext``.
        """
        self.host, self.port, self.encrypt = host, int(port), bool(encrypt)
        if tls is False:
            if tls_ca or tls_cert or tls_key or tls_server_name:
                raise ValueError("tls_ca, tls_cert, tls_key and tls_server_name need tls=True")
            self.tls: TLSConfig | None = None
        elif tls is True or isinstance(tls, ssl.SSLContext):
            self.tls = TLSConfig(None if tls is True else tls, tls_ca, tls_cert, tls_key, tls_server_name)
        else:
            raise TypeError("tls must be True, False or an ssl.SSLContext")
        self.retry = retry if retry is not None else Retry()
        self.socket_timeout = socket_timeout
        self._password = password
        self._new_identity()
        self._connect_timeout = _CONNECT_TIMEOUT if socket_timeout is None else socket_timeout
        self.pool = AsyncConnectionPool(self._new_connection, max_idle_time=time_out,
                                        max_connections=max_connections)
        self.table_check_ttl = table_check_ttl
        self.known_tables: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return (f"<AsyncClient {self.host}:{self.port} encrypt={self.encrypt} tls={self.tls is not None} "
                f"{self.pool!r}>")

    def _new_connection(self) -> Awaitable[AsyncConnection]:
        """A new connection outside the pool's bookkeeping (the pool's factory; a subscription's own)."""
        return open_connection(self.host, self.port, self._password, self.encrypt, self._connect_timeout,
                               self._identity(), self.tls)

    def get_proxy(self) -> AsyncProxy:
        """A new, not yet connected proxy: ``async with client.get_proxy() as proxy:``."""
        return AsyncProxy(self)

    async def ping(self) -> bool:
        """Round-trip to the server; True if it answered."""
        async with self.get_proxy() as proxy:
            return await proxy.call(_DB_PING, [])  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Close the idle pooled connections (those in use close when their proxies give them back)."""
        self.pool.reset()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


async def connect(host: str = "127.0.0.1", port: int = 9980, password: str | None = None, encrypt: bool = False,
                  time_out: float | None = None, **options: Any) -> AsyncClient:
    """Create an asyncio client and check the settings by opening its first pooled connection.

    The arguments are those of :func:`cyberdb.connect`.

    Raises:
        AuthenticationError: wrong password.
        EncryptionMismatchError: ``encrypt`` differs from the server's.
        ConnectionError: the server cannot be reached or refused the connection, or TLS failed.
    """
    client = AsyncClient(host, port, password, encrypt, time_out, **options)
    client.pool.release(await client.pool.get())
    return client


def from_url(url: str, **options: Any) -> AsyncClient:
    """An asyncio client configured by a connection URL (see :func:`cyberdb.from_url`); opens no connection.

    Raises:
        ValueError: a malformed URL or an unknown option.
    """
    settings = parse_url(url)
    settings.update(options)
    return AsyncClient(**settings)


class AsyncProxy(AsyncExecutor):
    """Holds one pooled connection between ``connect()`` and ``close()``; makes tables; the asyncio executor."""

    def __init__(self, client: AsyncClient) -> None:
        """Create an unconnected proxy for ``client``."""
        self._client = client
        self._conn: AsyncConnection | None = None
        self._replacing: asyncio.Lock | None = None

    def __repr__(self) -> str:
        return f"<AsyncProxy {'CONNECTED' if self._conn else 'CLOSED'} {self._client.host}:{self._client.port}>"

    async def connect(self) -> None:
        """Take a connection from the pool (a no-op if this proxy holds one); rides out a restart like
        :meth:`cyberdb.Proxy.connect`.

        Raises:
            ConnectionError: still no connection when the retry budget was spent, or the server refused it.
            PoolTimeoutError: the pool is full and nothing was released in time.
        """
        if self._conn is None:
            self._conn = await self._dial(None)

    async def close(self) -> None:
        """Give the connection back to the pool (closed instead if a reply is still due on it)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client.pool.release(conn)

    async def __aenter__(self) -> AsyncProxy:
        await self.connect()
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    # ---- the asyncio executor (see cyberdb.executor) ------------------------------------------------------------

    async def call(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:
        """Run one command and return its shaped result (re-sent across a reconnect, exactly once)."""
        conn = self._conn
        if conn is None:
            raise DisconnectedError(_CLOSED)
        payload = encode_value(args)
        client = self._client
        req_id, ack = client._begin()
        budget: _Budget | None = None
        try:
            while True:
                if conn.broken:
                    budget = budget or _Budget(client, spec.name, ConnectionLostError)
                    conn = await self._replace(conn, budget)
                    ack = client._ack()
                try:
                    if spec.op != _BPOP_OP:
                        result = await conn.call(spec.op, payload, req_id, ack, client.socket_timeout)
                    else:
                        result = await conn.call(spec.op, payload, req_id, ack,
                                                 _waiting(client.socket_timeout, args[2]), waits=True)
                    break
                except (TableNotFoundError, WrongTableTypeError):
                    if args and type(args[0]) is str:
                        client.known_tables.pop(args[0], None)
                    raise
                except (ConnectionLostError, TimeoutError) as exc:
                    budget = await self._before_retry(conn, spec.name, budget, exc)
        finally:
            client._end(req_id)
        if shape is SPEC_REPLY:
            shape = spec.reply
        return result if shape is None else shape(result)

    call_now = call

    async def call_many(self, requests: list[tuple[int, bytes]]) -> list[Raw]:
        """Send ``(op, payload)`` requests in one write; return their raw replies in order (exactly once)."""
        conn = self._conn
        if conn is None:
            raise DisconnectedError(_CLOSED)
        client = self._client
        first, ack = client._begin(len(requests))
        numbered = [(first + i, op, payload) for i, (op, payload) in enumerate(requests)]
        out: list[Raw] = []
        budget: _Budget | None = None
        try:
            while True:
                if conn.broken:
                    budget = budget or _Budget(client, _DB_BATCH.name, ConnectionLostError)
                    conn = await self._replace(conn, budget)
                    ack = client._ack()
                try:
                    await conn.call_many(numbered[len(out):], ack, out, client.socket_timeout)
                    return out
                except (ConnectionLostError, TimeoutError) as exc:
                    budget = await self._before_retry(conn, _DB_BATCH.name, budget, exc)
        finally:
            client._end(first, len(requests))

    async def _before_retry(self, conn: AsyncConnection, what: str, budget: _Budget | None,
                            exc: CyberDBError) -> _Budget:
        if not conn.broken or isinstance(exc, PoolTimeoutError):
            raise exc  # the server answered (e.g. "outcome unknown"): re-sending cannot help
        budget = budget or _Budget(self._client, what, ConnectionLostError)
        delay = budget.delay(exc)
        if delay:
            await asyncio.sleep(delay)
        return budget

    async def _dial(self, budget: _Budget | None) -> AsyncConnection:
        while True:
            try:
                return await self._client.pool.get()
            except CyberDBError as exc:
                if not unreachable(exc):
                    raise
                budget = budget or _Budget(self._client, "connect", ConnectionError)
                delay = budget.delay(exc)
                if delay:
                    await asyncio.sleep(delay)

    async def _replace(self, old: AsyncConnection, budget: _Budget) -> AsyncConnection:
        """A new connection for this proxy in place of the broken ``old`` (one for all the tasks that share it)."""
        if self._replacing is None:
            self._replacing = asyncio.Lock()
        async with self._replacing:
            current = self._conn
            if current is None:
                raise DisconnectedError(_CLOSED)
            if current is not old and not current.broken:
                return current  # another task of this proxy replaced it already
            new = await self._dial(budget)
            if self._conn is None:
                self._client.pool.release(new)
                raise DisconnectedError(_CLOSED)
            self._conn = new
            self._client.pool.release(old)
            return new

    # ---- pipelines, transactions, locks, publish/subscribe ------------------------------------------------------

    def pipeline(self, atomic: bool = False) -> AsyncPipeline:
        """Queue calls and send them together: ``async with proxy.pipeline() as pipe:`` (see
        :mod:`cyberdb.pipeline`); ``atomic=True`` runs them as one all-or-nothing unit."""
        if self._conn is None:
            raise DisconnectedError(_CLOSED)
        return AsyncPipeline(self, atomic=atomic)  # type: ignore[arg-type]

    async def transact(self, fn: Callable[[AsyncTransaction], Awaitable[T]], retries: int = 10) -> T:
        """Run ``await fn(tx)`` as a serializable transaction and return its result (see
        :mod:`cyberdb.transaction`); ``fn`` runs again on a conflict.

        Raises:
            TransactionConflictError: ``fn`` conflicted with other writers ``retries + 1`` times.
        """
        if self._conn is None:
            raise DisconnectedError(_CLOSED)
        return await transact(self, fn, retries)

    def lock(self, name: str, ttl: float = 10, timeout: float | None = None) -> AsyncLock:
        """A lock shared by every client of the server: ``async with proxy.lock("job", ttl=10) as lock:``."""
        return AsyncLock(self, name, ttl, timeout)  # type: ignore[arg-type]

    async def publish(self, channel: str, value: Any) -> int:
        """Send ``value`` to every current subscriber of ``channel``; return how many there were."""
        return await self.call(_DB_PUBLISH, [channel, value])  # type: ignore[no-any-return]

    def subscribe(self, *channels: str, timeout: float | None = None) -> AsyncSubscription:
        """``async with proxy.subscribe("news") as sub: async for channel, value in sub:`` (its own connection;
        iteration stops after ``timeout`` seconds without a message, None: never)."""
        if self._conn is None:
            raise DisconnectedError(_CLOSED)
        return AsyncSubscription(self._client, channels, timeout)

    # ---- tables --------------------------------------------------------------------------------------------------

    async def create_cyberdict(self, table_name: str, content: Any = None, *,
                               maxsize: int | None = None) -> AsyncCyberDict:
        """Create a CyberDict table (from a mapping) and return it (see :meth:`cyberdb.Proxy.create_cyberdict`)."""
        if content is not None and not isinstance(content, Mapping):
            raise TypeError(f"the content of a CyberDict must be a dict, not {type(content).__name__}")
        await self._create(table_name, "dict", dict(content or {}), table_bound("maxsize", maxsize))
        return AsyncCyberDict(self, table_name)  # type: ignore[arg-type]

    async def create_cyberlist(self, table_name: str, content: Any = None, *,
                               maxlen: int | None = None) -> AsyncCyberList:
        """Create a CyberList table (from a list) and return it (see :meth:`cyberdb.Proxy.create_cyberlist`)."""
        if content is not None and not isinstance(content, list):
            raise TypeError(f"the content of a CyberList must be a list, not {type(content).__name__}")
        await self._create(table_name, "list", list(content or []), table_bound("maxlen", maxlen))
        return AsyncCyberList(self, table_name)  # type: ignore[arg-type]

    async def get_cyberdict(self, table_name: str) -> AsyncCyberDict:
        """The CyberDict ``table_name``.

        Raises:
            TableNotFoundError: no such table.
            WrongTableTypeError: the table is a CyberList.
        """
        await self._check(table_name, "dict")
        return AsyncCyberDict(self, table_name)  # type: ignore[arg-type]

    async def get_cyberlist(self, table_name: str) -> AsyncCyberList:
        """The CyberList ``table_name``.

        Raises:
            TableNotFoundError: no such table.
            WrongTableTypeError: the table is a CyberDict.
        """
        await self._check(table_name, "list")
        return AsyncCyberList(self, table_name)  # type: ignore[arg-type]

    async def _create(self, table_name: str, kind: str, content: Any, options: dict[str, int] | None) -> None:
        await self.call(_DB_CREATE, [table_name, kind, content] if options is None
                        else [table_name, kind, content, options])
        self._remember(table_name, kind)

    async def _check(self, table_name: str, kind: str) -> None:
        if self._conn is None:
            raise DisconnectedError(_CLOSED)
        known = self._client.known_tables.get(table_name) if type(table_name) is str else None
        if known is None or known[0] != kind or time.monotonic() - known[1] > self._client.table_check_ttl:
            await self.call(_DB_CHECK, [table_name, kind])
            self._remember(table_name, kind)

    def _remember(self, table_name: str, kind: str) -> None:
        known = self._client.known_tables
        if type(table_name) is not str or self._client.table_check_ttl <= 0:
            return
        if len(known) >= 10_000:
            known.clear()
        known[table_name] = (kind, time.monotonic())

    async def tables(self) -> dict[str, str]:
        """``{table name: "CyberDict" | "CyberList"}``."""
        return await self.call(_DB_TABLES, [])  # type: ignore[no-any-return]

    async def info(self) -> dict[str, Any]:
        """The server's state and counters (see :meth:`cyberdb.Proxy.info`)."""
        return await self.call(_DB_INFO, [])  # type: ignore[no-any-return]

    async def slowlog(self, count: int | None = None) -> list[dict[str, Any]]:
        """The server's slowest recent commands, newest first."""
        return await self.call(_DB_SLOWLOG, [] if count is None else [count])  # type: ignore[no-any-return]

    async def delete_table(self, table_name: str) -> None:
        """Delete a table and its content.

        Raises:
            TableNotFoundError: no such table.
        """
        if type(table_name) is str:
            self._client.known_tables.pop(table_name, None)
        await self.call(_DB_DELETE, [table_name])


def _waiting(socket_timeout: float | None, timeout: float | None) -> float | None:
    """How long to wait for the reply of a pop that may wait ``timeout`` seconds on the server."""
    if timeout is None or socket_timeout is None:
        return socket_timeout if timeout is None else None
    return None if math.isinf(timeout) else socket_timeout + timeout
