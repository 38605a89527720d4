"""The synchronous client: Client, Proxy and ``connect()`` (its transport is :mod:`cyberdb.connection`).

A :class:`Proxy` is the immediate executor of the table layer (see :mod:`cyberdb.tables`): each call is sent
at once.  Every request gets a number from its :class:`Client` (which has a random 16-byte id per process),
so a request re-sent on a new connection after a lost reply keeps its number and the server answers it from
its reply cache instead of running it twice; that is why *every* command, read or write, is retried across a
reconnect.  The retries ride out a server restart: for ``Retry.timeout`` seconds (30 by default) a request
whose connection broke, and ``proxy.connect()``, keep asking with backoff (see :mod:`cyberdb.retry`);
``ConnectionLostError`` means that budget is spent.

A client is safe to share between threads and greenlets and across ``fork()``: a forked child gets its own
client id, request numbers and lock, and its pool never touches the parent's sockets.
"""

from __future__ import annotations

import logging
import math
import os
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TextIO, TypeVar, cast

from . import protocol
from .codec import encode_value
from .commands import BY_NAME, CommandSpec
from .connection import HAVE_FORK_HOOK as _HAVE_FORK_HOOK
from .connection import Connection, ConnectionPool, Raw, TLSConfig, unreachable
from .connection import forks as _forks
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
from .executor import SPEC_REPLY, SyncExecutor
from .lock import Lock
from .pipeline import Pipeline
from .pubsub import Subscription
from .retry import Retry
from .tables import CyberDict, CyberList
from .transaction import Transaction, transact
from .url import parse_url

__all__ = ["Client", "Connection", "ConnectionPool", "Proxy", "connect", "dict_content", "from_url", "list_content",
           "table_bound"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
_CONNECT_TIMEOUT = 10.0  # connect and handshake, without socket_timeout
_CLOSED = "this proxy is closed: call proxy.connect() before using it or its tables"
_BPOP_OP = BY_NAME["list.bpop"].op  # a pop that may wait on the server (see _call_waiting)
_DB_PING, _DB_CREATE, _DB_CHECK, _DB_TABLES, _DB_DELETE, _DB_BATCH, _DB_SLOWLOG = (
    BY_NAME[n] for n in ("db.ping", "db.create", "db.check", "db.tables", "db.delete", "db.batch", "db.slowlog"))
_DB_PUBLISH = BY_NAME["db.publish"]
_DB_INFO = BY_NAME["db.info"]


class RequestNumbers:
    """A client's identity and request numbers (exactly once), shared by :class:`Client` and the asyncio client.

    Subclasses set ``host``, ``port`` and ``retry`` and call ``_new_identity()`` in ``__init__``.
    """

    host: str
    port: int
    retry: Retry

    def _new_identity(self) -> None:
        # a forked child is another client: its own id, numbers and lock (the parent's lock may be held)
        self._id_lock = threading.Lock()
        self._client_id = os.urandom(protocol.CLIENT_ID_SIZE)
        self._next_request = 1
        self._in_flight: dict[int, None] = {}
        self._id_forks, self._id_pid = _forks[0], os.getpid()

    def _identity(self) -> bytes:
        if self._id_forks != _forks[0] or not _HAVE_FORK_HOOK and self._id_pid != os.getpid():
            self._new_identity()
        return self._client_id

    def _begin(self, n: int = 1) -> tuple[int, int]:
        """Number ``n`` new requests (in flight until ``_end``); return the first number and the current ack."""
        if self._id_forks != _forks[0] or not _HAVE_FORK_HOOK and self._id_pid != os.getpid():
            self._new_identity()
        with self._id_lock:
            first = self._next_request
            self._next_request = first + n
            in_flight = self._in_flight
            if n == 1:
                in_flight[first] = None
            else:
                in_flight.update(dict.fromkeys(range(first, first + n)))
            return first, (first if len(in_flight) == n else min(in_flight))

    def _ack(self) -> int:
        """Every request numbered below this is finished (what the server may forget)."""
        with self._id_lock:
            return min(self._in_flight, default=self._next_request)

    def _end(self, first: int, n: int = 1) -> None:
        if n == 1:  # one dict.pop is atomic under the GIL (and _ack's min() holds the GIL throughout)
            self._in_flight.pop(first, None)
            return
        with self._id_lock:
            in_flight = self._in_flight
            for req_id in range(first, first + n):
                in_flight.pop(req_id, None)


class Client(RequestNumbers):
    """A CyberDB client: connection settings plus a shared connection pool.  Make one per process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9980, password: str | None = None,
                 encrypt: bool = False, time_out: float | None = None, *, max_connections: int | None = None,
                 socket_timeout: float | None = None, retry: Retry | None = None,
                 table_check_ttl: float = 1.0, tls: bool | ssl.SSLContext = False, tls_ca: str | None = None,
                 tls_cert: str | None = None, tls_key: str | None = None,
                 tls_server_name: str | None = None) -> None:
        """Create a client; no connection is made until one is needed (``connect()`` makes one at once).

        TLS (for a server started with ``set_tls`` / ``--tls-cert``): ``tls=True`` verifies the server's
        certificate against ``tls_ca`` (a PEM file; None: the system's CAs) and the host name or IP address
        ``tls_server_name`` (default ``host``), and presents ``tls_cert``/``tls_key`` when given (mutual TLS);
        or pass your own client ``ssl.SSLContext`` as ``tls`` (under gevent, make it after monkey-patching).

        Raises:
            ValueError: ``tls_*`` files without ``tls=True``, or with an ``ssl.SSLContext``.
        """
        self.host, self.port, self.encrypt = host, int(port), bool(encrypt)
        if tls is False:
            if tls_ca or tls_cert or tls_key or tls_server_name:
                raise ValueError("tls_ca, tls_cert, tls_key and tls_server_name need tls=True")
            self.tls: TLSConfig | None = None
        elif tls is True:
            self.tls = TLSConfig(None, tls_ca, tls_cert, tls_key, tls_server_name)
        elif isinstance(tls, ssl.SSLContext):
            self.tls = TLSConfig(tls, tls_ca, tls_cert, tls_key, tls_server_name)
        else:
            raise TypeError("tls must be True, False or an ssl.SSLContext")
        self.retry = retry if retry is not None else Retry()
        self._password = password
        self._new_identity()

        # connecting and the handshake wait as long as any other socket operation; 10 s when that is unlimited,
        # so that a peer that accepts and never answers cannot hang connect() forever
        connect_timeout = _CONNECT_TIMEOUT if socket_timeout is None else socket_timeout

        def factory() -> Connection:
            return Connection(self.host, self.port, password, self.encrypt, connect_timeout=connect_timeout,
                              socket_timeout=socket_timeout, client_id=self._identity(), tls=self.tls)

        self.pool = ConnectionPool(factory, max_idle_time=time_out, max_connections=max_connections)
        self._new_connection = factory  # also for connections outside the pool (a subscription's own)
        # Tables this client saw exist in the last `table_check_ttl` seconds, with their kind: get_cyberdict()
        # of such a table needs no round trip.  Every command checks its table again on the server, so a table
        # deleted meanwhile still fails loudly, at its first use.  Forgotten on delete_table() and on a table
        # error; table_check_ttl=0 checks every time.
        self.table_check_ttl = table_check_ttl
        self.known_tables: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"<Client {self.host}:{self.port} encrypt={self.encrypt} tls={self.tls is not None} {self.pool!r}>"

    # ---- public -------------------------------------------------------------------------------------------------

    def get_proxy(self) -> Proxy:
        """Return a new, not yet connected proxy (``proxy.connect()`` or ``with client.get_proxy() as p:``)."""
        return Proxy(self)

    def ping(self) -> bool:
        """Round-trip to the server; True if it answered."""
        with self.get_proxy() as proxy:
            return proxy.call(_DB_PING, [])  # type: ignore[no-any-return]

    def reset(self) -> None:
        """Drop idle pooled connections (call from Gunicorn's ``post_fork`` if you like; not required)."""
        self.pool.reset()

    close = reset


def connect(host: str = "127.0.0.1", port: int = 9980, password: str | None = None, encrypt: bool = False,
            time_out: float | None = None, **options: Any) -> Client:
    """Create a client and check the settings by opening its first pooled connection.

    ``host`` may also be a URL of the Redis backend (``redis://``, ``rediss://``, ``redis-cluster://``): then a
    :class:`cyberdb.backend_redis.RedisBackendClient` is returned (docs/redis-backend.md).

    Args:
        host, port: the server's address.
        password: the server's password (never sent on the wire).
        encrypt: must match the server's ``encrypt``.
        time_out: discard pooled connections idle longer than this many seconds (None = keep them).
        **options: ``max_connections``, ``socket_timeout``, ``retry``, and for TLS ``tls``, ``tls_ca``,
            ``tls_cert``, ``tls_key``, ``tls_server_name`` (see :class:`Client`).

    Raises:
        AuthenticationError: wrong password.
        EncryptionMismatchError: ``encrypt`` differs from the server's.
        ConnectionError: the server cannot be reached or refused the connection, or TLS failed (at once: this
            settings check does not wait out a restart, unlike ``proxy.connect()`` and every call afterwards).
    """
    if _redis_url(host):  # the Redis backend (issue 11): a RedisBackendClient, duck-typed as a Client
        from .backend_redis import connect as redis_connect

        return cast(Client, redis_connect(host, **_redis_options(password, options)))
    client = Client(host, port, password, encrypt, time_out, **options)
    client.pool.release(client.pool.get())
    return client


def from_url(url: str, **options: Any) -> Client:
    """A client configured by a connection URL, e.g. ``cyberdb://:secret@db.internal:9980/?encrypt=1``.

    A ``redis://``, ``rediss://`` or ``redis-cluster://`` URL gives a client of the Redis backend instead
    (docs/redis-backend.md).  Like ``redis.from_url`` (and unlike ``connect``) this opens no connection: settings
    errors surface at the first call, so an app can be imported while its server is down.  The URL's form and
    options are described in :mod:`cyberdb.url`; keyword ``options`` override the URL's (any argument of
    :class:`Client`).

    Raises:
        ValueError: a malformed URL or an unknown option.
    """
    if _redis_url(url):  # the Redis backend (issue 11): a RedisBackendClient, duck-typed as a Client
        from .backend_redis import from_url as redis_from_url

        return cast(Client, redis_from_url(url, **options))
    settings = parse_url(url)
    settings.update(options)
    return Client(**settings)


_REDIS_SCHEMES = ("redis", "rediss", "redis-cluster", "rediss-cluster")


def _redis_url(target: Any) -> bool:
    """Whether ``target`` is a URL of the Redis backend (``redis://``, ``rediss://``, ``redis-cluster://``)."""
    return isinstance(target, str) and target.partition("://")[0] in _REDIS_SCHEMES and "://" in target


def _redis_options(password: str | None, options: dict[str, Any]) -> dict[str, Any]:
    return options if password is None else {**options, "password": password}


class Proxy(SyncExecutor):
    """A handle holding one pooled connection between ``connect()`` and ``close()``; makes table objects."""

    def __init__(self, client: Client) -> None:
        """Create an unconnected proxy for ``client``."""
        self._client = client
        self._conn: Connection | None = None

    def __repr__(self) -> str:
        return f"<Proxy {'CONNECTED' if self._conn else 'CLOSED'} {self._client.host}:{self._client.port}>"

    def connect(self) -> None:
        """Take a connection from the pool (a no-op if this proxy already holds one).

        While the server cannot be reached (down, restarting) this asks again with backoff for up to
        ``Retry.timeout`` seconds.

        Raises:
            ConnectionError: still no connection when the retry budget was spent, or the server refused it.
            PoolTimeoutError: the pool is full and nothing was released in time.
        """
        if self._conn is None:
            self._conn = self._dial(None)

    def close(self) -> None:
        """Give the connection back to the pool; tables made by this proxy stop working until ``connect()``."""
        conn, self._conn = self._conn, None
        if conn is not None:
            self._client.pool.release(conn)

    def __enter__(self) -> Proxy:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- the immediate executor (see cyberdb.tables) ------------------------------------------------------------

    def call(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:
        """Run one command now and return its shaped result (retried across a reconnect, exactly once)."""
        conn = self._conn
        if conn is None:
            raise DisconnectedError(_CLOSED)
        payload = encode_value(args)
        client = self._client
        req_id, ack = client._begin()
        budget: _Budget | None = None  # made at the first failure: the fast path pays nothing for it
        try:
            while True:
                if conn.broken or conn.forks != _forks[0] or not _HAVE_FORK_HOOK and conn.pid != os.getpid():
                    budget = budget or _Budget(client, spec.name, ConnectionLostError)
                    conn = self._replace(conn, budget)  # broken earlier, or the parent's socket after a fork
                    ack = client._ack()
                try:
                    if spec.op != _BPOP_OP:
                        result = conn.call(spec.op, payload, req_id, ack)
                    else:
                        result = _call_waiting(conn, spec.op, payload, req_id, ack, args[2])
                    break
                except (TableNotFoundError, WrongTableTypeError):
                    if args and type(args[0]) is str:
                        client.known_tables.pop(args[0], None)
                    raise
                except (ConnectionLostError, TimeoutError) as exc:
                    budget = self._before_retry(conn, spec, budget, exc)
        finally:
            client._end(req_id)
        if shape is SPEC_REPLY:
            shape = spec.reply
        return result if shape is None else shape(result)

    call_now = call  # the reply is there at once (an alias: len() and `in` are hot paths too)

    def call_many(self, requests: list[tuple[int, bytes]]) -> list[Raw]:
        """Send ``(op, payload)`` requests in one go and return their raw ``(status, payload)`` replies in order.

        Like ``call``, a broken connection is replaced and the unanswered requests are re-sent with their
        numbers, so each runs exactly once.
        """
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
                if conn.broken or conn.forks != _forks[0] or not _HAVE_FORK_HOOK and conn.pid != os.getpid():
                    budget = budget or _Budget(client, _DB_BATCH.name, ConnectionLostError)
                    conn = self._replace(conn, budget)
                    ack = client._ack()
                try:
                    conn.call_many(numbered[len(out):], ack, out)
                    return out
                except (ConnectionLostError, TimeoutError) as exc:
                    budget = self._before_retry(conn, _DB_BATCH, budget, exc)
        finally:
            client._end(first, len(requests))

    def _before_retry(self, conn: Connection, spec: CommandSpec, budget: _Budget | None,
                      exc: CyberDBError) -> _Budget:
        """Wait before re-sending after ``exc``; re-raise it if the server sent it; raise once the budget is spent."""
        if not conn.broken or isinstance(exc, PoolTimeoutError):
            raise exc  # the server answered (e.g. "outcome unknown"): re-sending cannot help
        budget = budget or _Budget(self._client, spec.name, ConnectionLostError)
        budget.wait(exc)
        return budget

    def _dial(self, budget: _Budget | None) -> Connection:
        """A connection from the pool; while the server cannot be reached, ask again within the retry budget."""
        while True:
            try:
                return self._client.pool.get()
            except CyberDBError as exc:
                if not unreachable(exc):
                    raise  # wrong password, refused by the server, protocol error, full pool
                budget = budget or _Budget(self._client, "connect", ConnectionError)
                budget.wait(exc)  # (outside the pool's lock: pool.get() holds it only to take or count)

    def _replace(self, old: Connection, budget: _Budget) -> Connection:
        # if no new connection can be made in the budget this raises and the proxy keeps the broken one: still
        # connected, and the next call tries again
        new = self._dial(budget)
        self._conn = new
        self._client.pool.release(old)  # closes it (and frees its slot if it is this process's)
        return new

    # ---- pipelines, transactions, locks -------------------------------------------------------------------------

    def pipeline(self, atomic: bool = False) -> Pipeline:
        """Queue calls and send them together: ``with proxy.pipeline() as pipe:`` (see :mod:`cyberdb.pipeline`).

        With ``atomic=True`` the queued calls run on the server as one uninterrupted, all-or-nothing unit.
        """
        if self._conn is None:
            raise DisconnectedError(_CLOSED)
        return Pipeline(self, atomic=atomic)

    def transact(self, fn: Callable[[Transaction], T], retries: int = 10) -> T:
        """Run ``fn(tx)`` as a serializable transaction and return its result (see :mod:`cyberdb.transaction`).

        Raises:
            TransactionConflictError: ``fn`` conflicted with other writers ``retries + 1`` times.
        """
        if self._conn is None:
            raise DisconnectedError(_CLOSED)
        return transact(self, fn, retries)

    def lock(self, name: str, ttl: float = 10, timeout: float | None = None) -> Lock:
        """A lock shared by every client of the server: ``with proxy.lock("job", ttl=10) as lock:``.

        Args:
            name: the lock's name (locks have their own namespace, apart from tables).
            ttl: the lease in seconds; the lock frees itself this long after the holder stops extending it.
            timeout: how long ``acquire`` (and ``with``) waits; None waits as long as it takes.
        """
        return Lock(self, name, ttl, timeout)

    # ---- publish/subscribe ---------------------------------------------------------------------------------------

    def publish(self, channel: str, value: Any) -> int:
        """Send ``value`` to every current subscriber of ``channel``; return how many there were.

        Messages are not persisted (a subscriber that is not connected misses them), and a publisher never waits
        for a subscriber: the server disconnects one that does not keep up (see :mod:`cyberdb.pubsub`).

        Raises:
            TypeError: ``channel`` is not a non-empty str of at most 1024 characters, or ``value`` cannot be stored.
        """
        return self.call(_DB_PUBLISH, [channel, value])  # type: ignore[no-any-return]

    def subscribe(self, *channels: str, timeout: float | None = None) -> Subscription:
        """Receive what is published on ``channels``: ``with proxy.subscribe("news") as sub: for ch, v in sub:``.

        The subscription has a connection of its own (not from the pool), closed when it is; iterating it stops
        after ``timeout`` seconds without a message (None: never).  See :class:`~cyberdb.pubsub.Subscription`.
        """
        if self._conn is None:
            raise DisconnectedError(_CLOSED)
        return Subscription(self._client, channels, timeout)

    # ---- tables ------------------------------------------------------------------------------------------------

    def create_cyberdict(self, table_name: str, content: Any = None, *, maxsize: int | None = None) -> CyberDict:
        """Create a CyberDict table (optionally filled from a dict, any mapping or a CyberDict) and return it.

        ``maxsize=N`` bounds it like ``functools.lru_cache(maxsize=N)``: inserting a new key into a full table
        evicts the least recently used key (reads and writes of a key count as use; ``in``, ``len`` and
        iteration do not).  Content larger than ``maxsize`` keeps its last ``maxsize`` items.

        Raises:
            TypeError: ``content`` is not a mapping (as cyberdb 0.9.3, nothing is sent).
            ValueError: ``maxsize`` is not an int >= 1.
            TableExistsError: a table of that name exists.
        """
        content = {} if content is None else dict_content(content)
        self._create(table_name, "dict", content, table_bound("maxsize", maxsize))
        return CyberDict(self, table_name)

    def create_cyberlist(self, table_name: str, content: Any = None, *, maxlen: int | None = None) -> CyberList:
        """Create a CyberList table (optionally filled from a list or a CyberList) and return it.

        ``maxlen=N`` bounds it like ``collections.deque(maxlen=N)``: a write that makes it longer drops items
        from the front (``append``/``extend`` keep the newest N), and ``insert`` into a full list raises
        ``IndexError``.  Content longer than ``maxlen`` keeps its last ``maxlen`` items.

        Raises:
            TypeError: ``content`` is not a list (as cyberdb 0.9.3: a dict, str or generator is refused rather
                than turned into its keys, characters or items; pass ``list(...)`` to mean that).
            ValueError: ``maxlen`` is not an int >= 1.
            TableExistsError: a table of that name exists.
        """
        content = [] if content is None else list_content(content)
        self._create(table_name, "list", content, table_bound("maxlen", maxlen))
        return CyberList(self, table_name)

    def get_cyberdict(self, table_name: str) -> CyberDict:
        """Return the CyberDict table ``table_name``.

        Raises:
            TableNotFoundError: no such table.
            WrongTableTypeError: the table is a CyberList.
        """
        self._check(table_name, "dict")
        return CyberDict(self, table_name)

    def get_cyberlist(self, table_name: str) -> CyberList:
        """Return the CyberList table ``table_name``.

        Raises:
            TableNotFoundError: no such table.
            WrongTableTypeError: the table is a CyberDict.
        """
        self._check(table_name, "list")
        return CyberList(self, table_name)

    def _create(self, table_name: str, kind: str, content: dict[Any, Any] | list[Any],
                options: dict[str, int] | None = None) -> None:
        self.call(_DB_CREATE, [table_name, kind, content] if options is None else [table_name, kind, content, options])
        self._remember(table_name, kind)

    def _check(self, table_name: str, kind: str) -> None:
        if self._conn is None:
            raise DisconnectedError(_CLOSED)
        known = self._client.known_tables.get(table_name) if type(table_name) is str else None
        if known is None or known[0] != kind or time.monotonic() - known[1] > self._client.table_check_ttl:
            self.call(_DB_CHECK, [table_name, kind])
            self._remember(table_name, kind)

    def _remember(self, table_name: str, kind: str) -> None:
        known = self._client.known_tables
        if type(table_name) is not str or self._client.table_check_ttl <= 0:
            return
        if len(known) >= 10_000:  # a cache, not a catalogue: never let it grow without bound
            known.clear()
        known[table_name] = (kind, time.monotonic())

    def tables(self) -> dict[str, str]:
        """Return ``{table name: "CyberDict" | "CyberList"}``."""
        return self.call(_DB_TABLES, [])  # type: ignore[no-any-return]

    def slowlog(self, count: int | None = None) -> list[dict[str, Any]]:
        """The server's slowest recent commands, newest first (see ``Server.set_slowlog``)."""
        return self.call(_DB_SLOWLOG, [] if count is None else [count])  # type: ignore[no-any-return]

    def info(self) -> dict[str, Any]:
        """The server's state and counters, as ``Server.info()`` returns them (``cyberdb info`` prints them):
        version, uptime, memory, connections, commands and ops/s, tables (name -> kind and size), the append-only
        log, backups and the last save, the newest slow commands (keys: README "Operating a running server")."""
        return self.call(_DB_INFO, [])  # type: ignore[no-any-return]

    def print_tables(self, file: TextIO | None = None) -> None:
        """Write one line per table, ``name<TAB>CyberDict|CyberList``, to stdout (or ``file``).

        This is the one API whose job is to print; use ``tables()`` to get the data.
        """
        out = sys.stdout if file is None else file
        for name, kind in self.tables().items():
            out.write(f"{name}\t{kind}\n")

    def delete_table(self, table_name: str) -> None:
        """Delete a table and its content.

        Raises:
            TableNotFoundError: no such table.
        """
        if type(table_name) is str:
            self._client.known_tables.pop(table_name, None)
        self.call(_DB_DELETE, [table_name])


def _call_waiting(conn: Connection, op: int, payload: bytes, req_id: int, ack: int, timeout: float | None) -> Any:
    """``conn.call`` of a pop that may wait ``timeout`` seconds on the server: ``socket_timeout`` must not cut it.

    For this call the socket waits ``timeout + socket_timeout`` (no limit if either has none).  Across a reconnect
    the retry layer re-sends the pop, which then waits again: the whole call can take longer than ``timeout``.
    """
    sock = conn.sock
    before = sock.gettimeout()
    if timeout is None or before is None:
        return conn.call(op, payload, req_id, ack)
    sock.settimeout(None if math.isinf(timeout) else before + timeout)
    try:
        return conn.call(op, payload, req_id, ack)
    finally:
        try:
            sock.settimeout(before)
        except OSError:  # closed: the connection is broken and will be replaced
            pass


class _Budget:
    """The retries of one request (or ``connect``): ``Retry`` decides whether and how long, this waits.

    The clock starts at the first failure and runs across re-sends and reconnects alike (time.sleep is
    cooperative under gevent's monkey-patching).
    """

    __slots__ = ("_attempt", "_client", "_error", "_started", "_what")

    def __init__(self, client: RequestNumbers, what: str, error: type[ConnectionError]) -> None:
        self._client, self._what, self._error = client, what, error
        self._attempt = 0
        self._started = time.monotonic()

    def wait(self, exc: CyberDBError) -> None:
        """Sleep before the next try after ``exc``, or raise ``error`` (from ``exc``) if the budget is spent."""
        delay = self.delay(exc)
        if delay:
            time.sleep(delay)

    def delay(self, exc: CyberDBError) -> float:
        """Seconds to wait before the next try after ``exc`` (the asyncio client sleeps them with asyncio.sleep).

        Raises:
            ConnectionError: (the budget's ``error``, from ``exc``) the budget is spent.
        """
        client = self._client
        elapsed = time.monotonic() - self._started
        delay = client.retry.next_delay(self._attempt, exc, elapsed)
        if delay is None:
            raise self._error(
                f"{self._what}: no answer from CyberDB at {client.host}:{client.port} after retrying for "
                f"{elapsed:.2f} s ({self._attempt} retries, {client.retry!r}); last error: {exc}") from exc
        if self._attempt == 0:
            logger.info("%s: CyberDB at %s:%s unreachable, retrying for up to %s s: %s", self._what, client.host,
                        client.port, client.retry.timeout, exc)
        self._attempt += 1
        return delay


def dict_content(content: Any) -> dict[Any, Any]:
    """The content of a new CyberDict: a copy of a mapping or of a CyberDict (``TypeError`` for anything else)."""
    if isinstance(content, CyberDict):
        return content.todict()
    if not isinstance(content, Mapping):
        raise TypeError(f"the content of a CyberDict must be a dict, not {type(content).__name__}")
    return dict(content)


def list_content(content: Any) -> list[Any]:
    """The content of a new CyberList: a copy of a list or of a CyberList (``TypeError`` for anything else)."""
    if isinstance(content, CyberList):
        return content.tolist()
    if not isinstance(content, list):
        raise TypeError(f"the content of a CyberList must be a list, not {type(content).__name__}")
    return list(content)


def table_bound(option: str, value: int | None) -> dict[str, int] | None:
    """The table option ``{option: value}`` of a bounded table, checked before anything is sent."""
    if value is None:
        return None
    if type(value) is not int or value < 1:
        raise ValueError(f"{option} must be an int >= 1 (or None for no bound), not {value!r}")
    return {option: value}
