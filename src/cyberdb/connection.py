"""Transport of the synchronous client: one ``Connection`` per socket, and the ``ConnectionPool``.

Plain blocking sockets, looked up through the ``socket`` module at call time so that gevent's monkey-patching
(which Gunicorn's gevent worker applies after fork) makes them cooperative.  The pool is safe to share between
threads and greenlets and across ``fork()``: a child never uses its parent's sockets (it closes its copies,
never ``shutdown()``s them, which would cut the parent's) and builds its own lock.  Everything about bytes is in
the sans-IO :mod:`cyberdb.protocol`; this module only moves them.  With TLS the socket is wrapped by an
``ssl.SSLContext`` right after connecting (the password handshake then runs inside TLS); ``TLSConfig`` builds
that context lazily, once per process, so that a context made after gevent's patching is gevent's own.
"""

from __future__ import annotations

import builtins
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from . import protocol
from .codec import decode_value
from .errors import (
    ConnectionError,
    ConnectionLostError,
    CyberDBError,
    PoolTimeoutError,
    ProtocolError,
    TimeoutError,
    error_from_code,
    map_errors,
    os_error,
)

__all__ = ["Connection", "ConnectionPool", "TLSConfig", "reply_error", "unreachable"]

# Bumped in a child after fork(): comparing an int per call is cheaper than os.getpid() (a system call). A fork
# that skips Python's at-fork hooks (uWSGI's workers without py-call-osafterfork) is caught by the pool's pid check
# instead, which counts it once for the process (note_fork): else the workers would share the client's identity and
# request numbers, and the server would answer one worker's request with another's cached reply.
forks = [0]
_forked_pid = [os.getpid()]


def _after_fork() -> None:
    forks[0] += 1
    _forked_pid[0] = os.getpid()


def note_fork() -> None:
    """Count a fork the at-fork hook missed (this process has a pid no hook ran for)."""
    if _forked_pid[0] != os.getpid():
        _after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)
HAVE_FORK_HOOK = hasattr(os, "register_at_fork")
_RECV_SIZE = 1 << 16
_PIPELINE_CHUNK = 512 << 10  # request bytes written before reading their replies (the server stops reading a
# peer that does not read its replies, so one huge write could wait forever on a huge pipeline)
Raw = tuple[int, bytes]  # status, payload of one reply
# asyncio closes a TLS connection whose client certificate it refused without an alert the client would see
_EOF_HINT = ("is it a CyberDB server? one with TLS needs tls=",
             "if the server requires TLS client certificates, pass tls_cert= and tls_key= signed by its CA")


class TLSConfig:
    """The client side of TLS: a given ``ssl.SSLContext``, or one built from files (per process, on first use)."""

    def __init__(self, context: ssl.SSLContext | None = None, cafile: str | None = None,
                 certfile: str | None = None, keyfile: str | None = None, server_name: str | None = None) -> None:
        """Use ``context`` as is, or build one verifying the server against ``cafile`` (None: the system's CAs)
        and presenting ``certfile``/``keyfile`` when given (for servers that require client certificates).

        Raises:
            ValueError: ``context`` together with files, or ``keyfile`` without ``certfile``.
        """
        if context is not None and (cafile or certfile or keyfile):
            raise ValueError("pass either an ssl.SSLContext as tls= or tls_ca/tls_cert/tls_key, not both")
        if keyfile and not certfile:
            raise ValueError("tls_key needs tls_cert")
        self.cafile, self.certfile, self.keyfile = cafile, certfile, keyfile
        self.server_name = server_name
        self._given = context
        self._built: tuple[int, ssl.SSLContext] | None = None

    def __repr__(self) -> str:
        return f"<TLSConfig cafile={self.cafile!r} certfile={self.certfile!r}>"

    def context(self) -> ssl.SSLContext:
        """The context to wrap sockets with; a forked child builds its own (gevent patches after fork)."""
        if self._given is not None:
            return self._given
        built = self._built
        if built is None or built[0] != forks[0]:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.cafile)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            if self.certfile:
                ctx.load_cert_chain(self.certfile, self.keyfile)
            built = self._built = (forks[0], ctx)
        return built[1]


def _tls_error(exc: ssl.SSLError, peer: str) -> ConnectionError:
    """A clear error for a failed TLS handshake (not worth retrying: see ``unreachable``)."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return ConnectionError(f"TLS certificate verification of {peer} failed: {exc.verify_message}")
    if "CERTIFICATE_REQUIRED" in str(exc).upper():
        return ConnectionError(f"{peer} requires a TLS client certificate (pass tls_cert= and tls_key=): {exc}")
    return ConnectionError(f"TLS with {peer} failed (does the server use TLS, and trust this client?): {exc}")


class Connection:
    """One authenticated TCP connection to a server; not thread-safe (the pool hands it to one user at a time)."""

    def __init__(self, host: str, port: int, password: str | None, encrypt: bool,
                 connect_timeout: float | None = 10.0, socket_timeout: float | None = None,
                 client_id: bytes = protocol.ANONYMOUS, tls: TLSConfig | None = None) -> None:
        """Connect and complete the handshake (``client_id`` names the client to the server's reply cache).

        Raises:
            AuthenticationError: wrong password.
            EncryptionMismatchError: ``encrypt`` differs from the server's.
            ConnectionError: the server cannot be reached or refused the connection, or TLS failed (certificate
                verification, a client certificate the server requires, a server without TLS).
        """
        self.host, self.port = host, port
        self.pid = os.getpid()
        self.forks = forks[0]
        self.broken = False
        self.requests = 0
        self._session = protocol.ClientSession(password, encrypt, client_id=client_id, peer=f"{host}:{port}")
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError as exc:
            raise ConnectionError(f"cannot connect to CyberDB at {host}:{port}: {exc}") from exc
        self.sock = sock
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                try:  # wrap_socket runs the TLS handshake; the raw socket is detached into the SSL one
                    sock = self.sock = tls.context().wrap_socket(sock, server_hostname=tls.server_name or host)
                except ssl.SSLError as exc:
                    raise _tls_error(exc, f"{host}:{port}") from exc
            self._handshake()
            sock.settimeout(socket_timeout)
        except BaseException:
            sock.close()
            raise
        self.last_used = time.monotonic()
        self._wait: float | None | bool = False  # the socket timeout next_event set last (False: none yet)

    def __repr__(self) -> str:
        state = "BROKEN" if self.broken else "OPEN"
        return f"<Connection {self.host}:{self.port} {state} requests={self.requests}>"

    def _handshake(self) -> None:
        session, sock = self._session, self.sock
        with map_errors("handshake", sock.gettimeout()):
            try:
                sock.sendall(session.start())
                while not session.ready:
                    data = sock.recv(_RECV_SIZE)
                    if not data:  # e.g. a server shutting down, or restarting (see unreachable())
                        raise ConnectionLostError(f"{self.host}:{self.port} closed the connection during the "
                                                  f"handshake ({_EOF_HINT[isinstance(sock, ssl.SSLSocket)]})")
                    session.feed(data)
                    out = session.handshake()
                    if out:
                        sock.sendall(out)
            except ssl.SSLError as exc:  # with TLS 1.3 a refused client certificate shows up here, at first read
                raise _tls_error(exc, f"{self.host}:{self.port}") from exc

    def call(self, op: int, payload: bytes, req_id: int, ack: int) -> Any:
        """Send one request and return its decoded result (one round trip).

        Raises:
            ConnectionLostError, TimeoutError: the connection broke (it is marked broken).
            ValueError: the request exceeds the frame limit; nothing was sent and the connection stays usable.
            KeyError, IndexError, ValueError, TypeError, ...: the error the command raised on the server.
        """
        if self.broken:
            raise ConnectionLostError("this connection is broken")
        session, sock = self._session, self.sock
        frame = session.request(req_id, op, payload, ack)  # outside the try: a too-large value breaks nothing
        try:  # (no context manager here: this is the hot path, and one costs a microsecond)
            sock.sendall(frame)
            reply = None
            while reply is None:  # nothing is buffered between calls (checked below), so read first
                session.feed(sock.recv(_RECV_SIZE))
                reply = session.next_reply()
        except BaseException as exc:  # incl. gevent.Timeout / KeyboardInterrupt: the stream position is unknown
            self._fail(exc)
            raise
        self.requests += 1
        if session.decoder.pending():
            self.broken = True
            raise ProtocolError("unexpected data after a reply")
        status, body = reply[1], reply[2]
        if status == protocol.STATUS_OK:
            return decode_value(body)
        raise reply_error(status, body)

    def call_many(self, requests: list[tuple[int, int, bytes]], ack: int, out: list[Raw]) -> None:
        """Send requests ``(req_id, op, payload)`` in few writes and append each ``(status, payload)`` to ``out``.

        Replies that arrived stay in ``out`` when the connection breaks, so the caller re-sends only the rest.

        Raises:
            ConnectionLostError, TimeoutError: the connection broke (it is marked broken).
            ValueError: a request exceeds the frame limit; nothing was sent.
        """
        if self.broken:
            raise ConnectionLostError("this connection is broken")
        session, sock = self._session, self.sock
        for _req_id, _op, payload in requests:  # all checked first: no request of the lot is half sent
            session.check_size(len(payload))
        try:
            i = 0
            while i < len(requests):
                frames, size = [], 0
                while i < len(requests) and size < _PIPELINE_CHUNK:
                    req_id, op, payload = requests[i]
                    frames.append(session.request(req_id, op, payload, ack))
                    size += len(frames[-1])
                    i += 1
                sock.sendall(b"".join(frames))
                while session.awaiting:
                    reply = session.next_reply()
                    if reply is None:
                        session.feed(sock.recv(_RECV_SIZE))
                    else:
                        out.append((reply[1], reply[2]))
                        self.requests += 1
        except BaseException as exc:
            self._fail(exc)
            raise

    def send(self, op: int, payload: bytes, req_id: int, ack: int) -> None:
        """Send one request without reading its reply: ``next_event`` returns it (a subscription's connection).

        Raises:
            ConnectionLostError, TimeoutError: the connection broke (it is marked broken).
        """
        if self.broken:
            raise ConnectionLostError("this connection is broken")
        frame = self._session.request(req_id, op, payload, ack)
        try:
            self.sock.sendall(frame)
        except BaseException as exc:
            self._fail(exc)
            raise

    def next_event(self, timeout: float | None) -> tuple[int, int, bytes] | None:
        """The next reply or pushed message ``(request id, status, payload)`` (``protocol.PUSH_ID``: a push).

        Waits up to ``timeout`` seconds (None: as long as it takes) and returns None if nothing came; what was
        half received stays buffered for the next call.

        Raises:
            ConnectionLostError: the server closed the connection, or it broke (it is marked broken).
        """
        session, sock = self._session, self.sock
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                event = session.next_event()
                if event is not None:
                    return event
                wait = None if deadline is None else deadline - time.monotonic()
                if wait is not None and wait <= 0:
                    return None
                if wait != self._wait:  # settimeout costs system calls: only when it changes
                    sock.settimeout(wait)
                    self._wait = wait
                try:
                    data = sock.recv(_RECV_SIZE)
                except builtins.TimeoutError:  # socket.timeout (ours, TimeoutError, is imported here)
                    return None
                session.feed(data)
        except BaseException as exc:
            self._fail(exc)
            raise

    def _fail(self, exc: BaseException) -> None:
        self.broken = True
        if isinstance(exc, OSError) and not isinstance(exc, CyberDBError):
            raise os_error(exc) from exc

    def is_stale(self) -> bool:
        """True if the server closed this idle connection (or sent something unexpected)."""
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket):  # SSLSocket.recv takes no flags: ask the TLS buffer, then the fd
            return _tls_readable(sock)
        try:
            # MSG_DONTWAIT only helps a stdlib socket without timeout: with a timeout (socket_timeout=) CPython
            # polls for up to that long before any recv, and gevent's patched class waits on it too
            timeout = sock.gettimeout()
            if timeout is None and type(sock).__module__ == "socket" and hasattr(socket, "MSG_DONTWAIT"):
                sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            else:  # with timeout 0.0 recv raises instead of waiting
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
            note_fork()  # before new connections are made: they carry the client's (renewed) identity
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


def _tls_readable(sock: ssl.SSLSocket) -> bool:
    """True if an idle TLS socket has anything to read (decrypted bytes, or raw ones: data, alert or EOF)."""
    if sock.pending():
        return True
    try:
        fd = sock.fileno()
        if fd < 0:
            return True
        readable, _, _ = select.select([fd], [], [], 0)  # the raw fd: gevent's patched select handles it too
    except (OSError, ValueError):
        return True
    return bool(readable)


def unreachable(exc: BaseException) -> bool:
    """True if making a connection failed in the transport, as it does while the server is down or restarting.

    That is: the connection was refused or timed out (a ``ConnectionError`` raised from the ``OSError``), or it
    broke or hit EOF during the handshake (``ConnectionLostError``, ``TimeoutError``).  Worth trying again.
    False for what the server said (wrong password, ``encrypt`` mismatch, whitelist, ``max_con``: a plain
    ``ConnectionError`` of the session), a failed TLS handshake (certificates), a ``ProtocolError`` and a
    ``PoolTimeoutError``: trying again cannot help.
    """
    if isinstance(exc, PoolTimeoutError):
        return False
    if isinstance(exc, (ConnectionLostError, TimeoutError)):
        return True
    cause = exc.__cause__
    return type(exc) is ConnectionError and isinstance(cause, OSError) and not isinstance(cause, ssl.SSLError)


def reply_error(status: int, payload: bytes) -> BaseException:
    """The exception an error reply stands for (``KeyError('x')``, ``TableNotFoundError(...)``, ...)."""
    args = decode_value(payload)
    return error_from_code(status, tuple(args) if type(args) is list else (str(args),))
