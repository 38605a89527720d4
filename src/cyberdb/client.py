"""The synchronous client: Connection, ConnectionPool, Client, Proxy and ``connect()``.

Plain blocking sockets, looked up through the ``socket`` module at call time so that gevent's monkey-patching
(which Gunicorn's gevent worker applies after fork) makes them cooperative.  The pool is safe to share between
threads and greenlets and across ``fork()``: a child never uses its parent's sockets (it closes its copies,
never ``shutdown()``s them, which would cut the parent's) and builds its own lock.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, TextIO

from . import protocol
from .codec import decode_value, encode_value
from .commands import BY_NAME, CommandSpec
from .errors import (
    ConnectionError,
    ConnectionLostError,
    CyberDBError,
    DisconnectedError,
    PoolTimeoutError,
    ProtocolError,
    TableNotFoundError,
    WrongTableTypeError,
    error_from_code,
    map_errors,
    os_error,
)
from .retry import Retry
from .tables import CyberDict, CyberList

__all__ = ["Client", "Connection", "ConnectionPool", "Proxy", "connect"]

logger = logging.getLogger(__name__)
# Bumped in a child after fork(): comparing an int per call is cheaper than os.getpid() (a system call).
_forks = [0]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))
_HAVE_FORK_HOOK = hasattr(os, "register_at_fork")
_RECV_SIZE = 1 << 16
_CLOSED = "this proxy is closed: call proxy.connect() before using it or its tables"
_DB_PING, _DB_CREATE, _DB_CHECK, _DB_TABLES, _DB_DELETE = (
    BY_NAME[n] for n in ("db.ping", "db.create", "db.check", "db.tables", "db.delete"))


class Connection:
    """One authenticated TCP connection to a server; not thread-safe (the pool hands it to one user at a time)."""

    def __init__(self, host: str, port: int, password: str | None, encrypt: bool,
                 connect_timeout: float | None = 10.0, socket_timeout: float | None = None) -> None:
        """Connect and complete the handshake.

        Raises:
            AuthenticationError: wrong password.
            EncryptionMismatchError: ``encrypt`` differs from the server's.
            ConnectionError: the server cannot be reached or refused the connection.
        """
        self.host, self.port = host, port
        self.pid = os.getpid()
        self.forks = _forks[0]
        self.broken = False
        self.requests = 0
        self._next_id = 0
        self._session = protocol.ClientSession(password, encrypt)
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to CyberDB at {host}:{port}: {exc}") from exc
        self.sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._handshake()
            sock.settimeout(socket_timeout)
        except BaseException:
            sock.close()
            raise
        self.last_used = time.monotonic()

    def __repr__(self) -> str:
        state = "BROKEN" if self.broken else "OPEN"
        return f"<Connection {self.host}:{self.port} {state} requests={self.requests}>"

    def _handshake(self) -> None:
        session, sock = self._session, self.sock
        with map_errors("handshake"):
            sock.sendall(session.start())
            while not session.ready:
                data = sock.recv(_RECV_SIZE)
                if not data:
                    raise ConnectionError(f"{self.host}:{self.port} closed the connection during the handshake "
                                          "(is it a CyberDB server?)")
                session.feed(data)
                out = session.handshake()
                if out:
                    sock.sendall(out)

    def call(self, spec: CommandSpec, args: list[Any]) -> Any:
        """Send one command and return its result (one round trip).

        Raises:
            TypeError: an argument cannot be encoded (nothing was sent).
            ConnectionLostError: the connection broke; the connection is marked broken.
            KeyError, IndexError, ValueError, TypeError, ...: the error the command raised on the server.
        """
        payload = encode_value(args)
        if self.broken:
            raise ConnectionLostError("this connection is broken")
        self._next_id = req_id = (self._next_id + 1) & 0xFFFFFFFF
        session, sock = self._session, self.sock
        try:  # (no context manager here: this is the hot path, and one costs a microsecond)
            sock.sendall(session.request(req_id, spec.op, payload))
            reply = None
            while reply is None:  # nothing is buffered between calls (checked below), so read first
                data = sock.recv(_RECV_SIZE)
                if not data:
                    raise ConnectionLostError("the server closed the connection")
                session.feed(data)
                reply = session.next_reply()
        except CyberDBError:
            self.broken = True
            raise
        except OSError as exc:
            self.broken = True
            raise os_error(exc) from exc
        except BaseException:  # incl. gevent.Timeout / KeyboardInterrupt: the stream position is unknown
            self.broken = True
            raise
        self.requests += 1
        got_id, status, body = reply
        if got_id != req_id:
            self.broken = True
            raise ProtocolError(f"reply to request {got_id} while waiting for {req_id}")
        if session.decoder.pending():
            self.broken = True
            raise ProtocolError("unexpected data after a reply")
        if status == protocol.STATUS_OK:
            return decode_value(body)
        error_args = decode_value(body)
        raise error_from_code(status, tuple(error_args) if type(error_args) is list else (str(error_args),))

    def is_stale(self) -> bool:
        """True if the server closed this idle connection (or sent something unexpected)."""
        sock = self.sock
        try:
            # the stdlib class (gevent's patched class lives in a gevent module and would wait on MSG_DONTWAIT)
            if type(sock).__module__ == "socket" and hasattr(socket, "MSG_DONTWAIT"):
                sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            else:  # e.g. a gevent socket: with timeout 0.0 its recv raises instead of waiting
                timeout = sock.gettimeout()
                sock.settimeout(0.0)
                try:
                    sock.recv(1, socket.MSG_PEEK)
                finally:
                    sock.settimeout(timeout)
        except (BlockingIOError, InterruptedError):
            return False  # nothing to read: alive and idle
        except OSError:
            return True
        return True  # b"" (closed) or unsolicited bytes: either way not usable

    def close(self) -> None:
        """Close the socket (never ``shutdown()``: a forked sibling may share it)."""
        self.broken = True
        try:
            self.sock.close()
        except OSError:
            pass


class ConnectionPool:
    """Idle connections for reuse; safe across threads, greenlets and ``fork()``."""

    def __init__(self, factory: Callable[[], Connection], max_idle_time: float | None = None,
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
        self._reset_state()

    def _reset_state(self) -> None:
        # the pid is set last: another thread seeing the new pid must also see the new lock and lists
        self._lock = threading.Lock()
        self._available = threading.Condition(self._lock)
        self._idle: list[Connection] = []
        self._open = 0
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"<ConnectionPool open={self._open} idle={len(self._idle)}>"

    def _check_fork(self) -> None:
        if self._pid != os.getpid():
            inherited = self._idle
            self._reset_state()
            for conn in inherited:  # the parent's sockets: close our copies of the fds, nothing more
                conn.close()

    def get(self) -> Connection:
        """Check out a live connection (reusing an idle one, else opening a new one).

        Raises:
            PoolTimeoutError: the pool is full and nothing was released in time.
            ConnectionError: a new connection could not be made.
        """
        self._check_fork()
        while True:
            with self._lock:
                conn = self._take_or_reserve()
            if conn is None:  # a slot is reserved for a new connection
                try:
                    return self._factory()
                except BaseException:
                    self._forget()
                    raise
            if self._usable(conn):
                return conn
            conn.close()
            self._forget()

    def _take_or_reserve(self) -> Connection | None:
        """Under the lock: pop an idle connection, or count a new one (None), waiting while the pool is full."""
        limit = self.max_connections
        deadline = None if self.wait_timeout is None else time.monotonic() + self.wait_timeout
        while not self._idle and limit is not None and self._open >= limit:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise PoolTimeoutError(f"all {limit} connections are in use")
            self._available.wait(remaining)
        if self._idle:
            return self._idle.pop()
        self._open += 1
        return None

    def _usable(self, conn: Connection) -> bool:
        if conn.broken or conn.pid != os.getpid():
            return False
        if self.max_idle_time is not None and time.monotonic() - conn.last_used > self.max_idle_time:
            return False
        return not conn.is_stale()

    def _forget(self) -> None:
        with self._lock:
            self._open -= 1
            self._available.notify()

    def release(self, conn: Connection) -> None:
        """Return a connection; a broken one (or one from before a fork) is closed instead."""
        if conn.pid != os.getpid():
            conn.close()
            return
        self._check_fork()
        if conn.broken:
            conn.close()
            self._forget()
            return
        conn.last_used = time.monotonic()
        with self._lock:
            self._idle.append(conn)
            self._available.notify()

    def reset(self) -> None:
        """Close every idle connection (e.g. in a Gunicorn ``post_fork`` hook, or after a server restart)."""
        self._check_fork()
        with self._lock:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
            self._available.notify_all()
        for conn in idle:
            conn.close()


class Client:
    """A CyberDB client: connection settings plus a shared connection pool.  Make one per process."""

    def __init__(self, host: str = "127.0.0.1", port: int = 9980, password: str | None = None,
                 encrypt: bool = False, time_out: float | None = None, *, max_connections: int | None = None,
                 socket_timeout: float | None = None, retry: Retry | None = None,
                 table_check_ttl: float = 1.0) -> None:
        """Create a client; no connection is made until one is needed (``connect()`` makes one at once)."""
        self.host, self.port, self.encrypt = host, int(port), bool(encrypt)
        self.retry = retry if retry is not None else Retry()
        self._password = password

        def factory() -> Connection:
            return Connection(self.host, self.port, password, self.encrypt, socket_timeout=socket_timeout)

        self.pool = ConnectionPool(factory, max_idle_time=time_out, max_connections=max_connections)
        # Tables this client saw exist in the last `table_check_ttl` seconds, with their kind: get_cyberdict()
        # of such a table needs no round trip.  Every command checks its table again on the server, so a table
        # deleted meanwhile still fails loudly, at its first use.  Forgotten on delete_table() and on a table
        # error; table_check_ttl=0 checks every time.
        self.table_check_ttl = table_check_ttl
        self.known_tables: dict[str, tuple[str, float]] = {}

    def __repr__(self) -> str:
        return f"<Client {self.host}:{self.port} encrypt={self.encrypt} {self.pool!r}>"

    def get_proxy(self) -> Proxy:
        """Return a new, not yet connected proxy (``proxy.connect()`` or ``with client.get_proxy() as p:``)."""
        return Proxy(self)

    def ping(self) -> bool:
        """Round-trip to the server; True if it answered."""
        with self.get_proxy() as proxy:
            return bool(proxy._execute(_DB_PING))

    def reset(self) -> None:
        """Drop idle pooled connections (call from Gunicorn's ``post_fork`` if you like; not required)."""
        self.pool.reset()

    close = reset


def connect(host: str = "127.0.0.1", port: int = 9980, password: str | None = None, encrypt: bool = False,
            time_out: float | None = None, **options: Any) -> Client:
    """Create a client and check the settings by opening its first pooled connection.

    Args:
        host, port: the server's address.
        password: the server's password (never sent on the wire).
        encrypt: must match the server's ``encrypt``.
        time_out: discard pooled connections idle longer than this many seconds (None = keep them).
        **options: ``max_connections``, ``socket_timeout``, ``retry`` (see :class:`Client`).

    Raises:
        AuthenticationError: wrong password.
        EncryptionMismatchError: ``encrypt`` differs from the server's.
        ConnectionError: the server cannot be reached or refused the connection.
    """
    client = Client(host, port, password, encrypt, time_out, **options)
    client.pool.release(client.pool.get())
    return client


class Proxy:
    """A handle holding one pooled connection between ``connect()`` and ``close()``; makes table objects."""

    def __init__(self, client: Client) -> None:
        """Create an unconnected proxy for ``client``."""
        self._client = client
        self._conn: Connection | None = None

    def __repr__(self) -> str:
        return f"<Proxy {'CONNECTED' if self._conn else 'CLOSED'} {self._client.host}:{self._client.port}>"

    def connect(self) -> None:
        """Take a connection from the pool (a no-op if this proxy already holds one)."""
        if self._conn is None:
            self._conn = self._client.pool.get()

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

    def _execute(self, spec: CommandSpec, *args: Any) -> Any:
        """Run one command on this proxy's connection, retrying idempotent ones across a reconnect."""
        attempt = 0
        while True:
            conn = self._conn
            if conn is None:
                raise DisconnectedError(_CLOSED)
            if conn.broken or conn.forks != _forks[0] or not _HAVE_FORK_HOOK and conn.pid != os.getpid():
                conn = self._replace(conn)  # broken earlier, or the parent's socket after a fork
            try:
                return conn.call(spec, list(args))
            except (TableNotFoundError, WrongTableTypeError):
                if args and type(args[0]) is str:
                    self._client.known_tables.pop(args[0], None)
                raise
            except ConnectionLostError as exc:
                delay = self._client.retry.next_delay(spec, attempt, exc)
                if delay is None:
                    raise
                logger.info("retrying %s after a lost connection: %s", spec.name, exc)
                if delay:
                    time.sleep(delay)
                attempt += 1

    def _replace(self, old: Connection) -> Connection:
        # if no new connection can be made this raises and the proxy keeps the broken one: still connected,
        # and the next call tries again
        new = self._client.pool.get()
        self._conn = new
        self._client.pool.release(old)  # closes it (and frees its slot if it is this process's)
        return new

    # ---- tables ------------------------------------------------------------------------------------------------

    def create_cyberdict(self, table_name: str, content: Any = None) -> CyberDict:
        """Create a CyberDict table (optionally filled from a mapping) and return it.

        Raises:
            TableExistsError: a table of that name exists.
        """
        self._create(table_name, "dict", {} if content is None else _as_dict(content))
        return CyberDict(self, table_name)

    def create_cyberlist(self, table_name: str, content: Any = None) -> CyberList:
        """Create a CyberList table (optionally filled from an iterable) and return it.

        Raises:
            TableExistsError: a table of that name exists.
        """
        self._create(table_name, "list", [] if content is None else _as_list(content))
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

    def _create(self, table_name: str, kind: str, content: dict[Any, Any] | list[Any]) -> None:
        self._execute(_DB_CREATE, table_name, kind, content)
        self._remember(table_name, kind)

    def _check(self, table_name: str, kind: str) -> None:
        if self._conn is None:
            raise DisconnectedError(_CLOSED)
        known = self._client.known_tables.get(table_name) if type(table_name) is str else None
        if known is None or known[0] != kind or time.monotonic() - known[1] > self._client.table_check_ttl:
            self._execute(_DB_CHECK, table_name, kind)
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
        return dict(self._execute(_DB_TABLES))

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
        self._execute(_DB_DELETE, table_name)


def _as_dict(content: Any) -> dict[Any, Any]:
    if isinstance(content, CyberDict):
        return content.todict()
    return dict(content)


def _as_list(content: Any) -> list[Any]:
    if isinstance(content, CyberList):
        return content.tolist()
    return list(content)
