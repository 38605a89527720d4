"""The CyberDB server: one asyncio event loop owns all data; ``start()`` runs it in a thread, ``run()`` here.

Every command runs to completion inside that loop (see :mod:`.store`), so each is atomic.  Snapshots and log
rewrites are encoded and written by a forked child that sees the tables as they were at the fork (see
:mod:`.background`), so the loop goes on serving meanwhile.  With an append-only log (:mod:`.aof`) every write
is logged before its reply leaves, and a restart replays the log.  docs/persistence.md says what each setting
keeps through which crash.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import ipaddress
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from .. import crypto
from ..errors import PersistenceError
from .admission import Limits, parse_networks
from .aof import AppendLog, Fsync, LogConfig, call_soon_safely
from .background import run_in_child
from .dedup import ReplyCache
from .net import ServerConnection, ServerContext
from .persist import encode_snapshot, read_state, write_atomic
from .stats import Stats
from .store import Store

__all__ = ["Server"]

logger = logging.getLogger("cyberdb.server")
T = TypeVar("T")
DEFAULT_ENCRYPT_WHITELIST = ("127.0.0.1", "::1")
_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"
DRAIN_TIMEOUT = 5.0  # seconds a clean shutdown waits for the last replies to reach the clients
SWEEP_INTERVAL = 0.1  # seconds between two sweeps of expired keys when none are left due
SWEEP_BUDGET = 0.002  # seconds one sweep may run before other work gets the loop back


class Server:
    """An in-memory database server holding CyberDict and CyberList tables.

    Example:
        >>> db = Server()
        >>> db.start(host="127.0.0.1", port=9980, password="secret")   # returns once listening
    """

    def __init__(self, event_loop: str = "auto") -> None:
        """Create a server with no tables; nothing listens until ``start()`` or ``run()``.

        Args:
            event_loop: ``"auto"`` uses uvloop when it is installed (``pip install cyberdb[fast]``), else
                asyncio's own loop; ``"asyncio"`` or ``"uvloop"`` force one.
        """
        if event_loop not in ("auto", "asyncio", "uvloop"):
            raise ValueError("event_loop must be 'auto', 'asyncio' or 'uvloop'")
        self.event_loop = event_loop
        self._store = Store()
        self._replies = ReplyCache()  # kept across stop()/start() of this object, like the tables
        self._whitelist: list[str] | None = None
        self._backup: tuple[str, float] | None = None
        self._log_config: LogConfig | None = None
        self._limits = Limits()
        self._max_memory = 0
        self._slow_after = 0.01
        self._sampler: asyncio.TimerHandle | None = None
        self._sweeper: asyncio.TimerHandle | None = None
        self._log: AppendLog | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop_event: asyncio.Event | None = None
        self._listener: socket.socket | None = None
        self._ctx: ServerContext | None = None
        self._backup_busy = False
        self._backup_generation = 0  # a timer whose generation is stale stops re-arming itself
        self._log_handler: logging.Handler | None = None
        self._tls: ssl.SSLContext | None = None
        self._stats = Stats()  # uptime, ops/s, the last save (see stats.py)
        self.address: tuple[str, int] | None = None

    def __repr__(self) -> str:
        state = f"listening on {self.address[0]}:{self.address[1]}" if self.address else "stopped"
        return f"<Server {state} tables={len(self._store)}>"

    @property
    def port(self) -> int | None:
        """The port the server listens on (useful after ``port=0``), or None when stopped."""
        return self.address[1] if self.address else None

    # ---- configuration -----------------------------------------------------------------------------------------

    def set_ip_whitelist(self, ips: Iterable[str]) -> None:
        """Only accept connections from these addresses or CIDR ranges (with or without encryption).

        Raises:
            ValueError: an entry is not an IP address or network.
        """
        entries = [str(ip) for ip in ips] if not isinstance(ips, str) else None
        if entries is None:
            raise TypeError("set_ip_whitelist takes a list of addresses, e.g. ['127.0.0.1', '10.0.0.0/8']")
        networks = parse_networks(entries)
        self._whitelist = entries
        if self._ctx is not None:
            ctx = self._ctx
            self._call_in_loop(lambda: setattr(ctx, "whitelist", networks))

    def set_limits(self, max_unauthenticated: int = 1024, max_unauthenticated_per_ip: int = 128,
                   handshake_timeout: float = 10.0, min_frame_rate: int = 32 << 10,
                   max_partial_bytes: int = 512 << 20, max_subscriber_buffer: int = 32 << 20) -> None:
        """Bound what peers that have not authenticated (yet), slow senders and slow subscribers may hold.

        Such connections do not count toward ``max_con``: a peer that opens sockets and never authenticates can
        fill only its own budget, not lock out the clients that know the password.

        Args:
            max_unauthenticated: connections in the handshake at once, from all addresses.
            max_unauthenticated_per_ip: ... from one source address.
            handshake_timeout: seconds a connection may take to authenticate before it is closed.
            min_frame_rate: bytes per second a request must arrive at once it started, measured after 2 s (a
                client announcing 60 MiB and trickling it is closed, and the bytes it held are freed).
            max_partial_bytes: bytes of unfinished requests held for all connections together; the connection
                whose bytes pass it is closed.
            max_subscriber_buffer: bytes of published messages a subscriber has not read yet; past it the
                subscriber's connection is closed (a publisher never waits for a subscriber).

        Raises:
            ValueError: a limit below 1 or a timeout not above 0.
        """
        if min(max_unauthenticated, max_unauthenticated_per_ip, min_frame_rate, max_partial_bytes,
               max_subscriber_buffer) < 1 or not handshake_timeout > 0:
            raise ValueError("the limits must be at least 1 and the handshake timeout above 0")
        self._limits = Limits(int(max_unauthenticated), int(max_unauthenticated_per_ip), float(handshake_timeout),
                              int(min_frame_rate), int(max_partial_bytes), int(max_subscriber_buffer))
        if self._ctx is not None:
            ctx, limits = self._ctx, self._limits
            self._call_in_loop(lambda: setattr(ctx, "limits", limits))

    def set_tls(self, certfile: str, keyfile: str | None = None, ca_file: str | None = None,
                require_client_cert: bool = False) -> None:
        """Serve TLS (1.2 or later) with this certificate chain and key; call it before ``start()``/``run()``.

        The password handshake, and ``encrypt=True`` when set, run inside TLS unchanged.  Clients connect with
        ``cyberdb.connect(..., tls=True, tls_ca=...)``; a client without TLS is refused during the handshake.

        Args:
            certfile: PEM file with the server's certificate (and intermediates); its names or IP addresses must
                match the address clients connect to.
            keyfile: PEM file with its private key (None: it is in ``certfile``).
            ca_file: PEM file of the CAs whose client certificates are accepted.
            require_client_cert: refuse clients without a certificate signed by ``ca_file`` (mutual TLS).

        Raises:
            ValueError: ``require_client_cert`` without ``ca_file``.
            OSError, ssl.SSLError: a file is missing or not a valid certificate/key.
            RuntimeError: the server is running.
        """
        if self._loop is not None or self._listener is not None:
            raise RuntimeError("call set_tls() before start() or run()")
        if require_client_cert and not ca_file:
            raise ValueError("require_client_cert needs ca_file (the CA that signs the client certificates)")
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(os.fspath(certfile), os.fspath(keyfile) if keyfile is not None else None)
        if ca_file:
            ctx.load_verify_locations(cafile=os.fspath(ca_file))
            ctx.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
        self._tls = ctx

    def set_max_memory(self, max_memory: int) -> None:
        """Refuse writes (``cyberdb.MemoryLimitError``) while the process uses more than ``max_memory`` bytes.

        Resident memory is sampled every 100 ms.  Reads and writes that only remove (``del``, ``pop``, ``clear``,
        ``remove``, ``delete_table``, releasing a lock) go on, so a client can make room; ``0`` removes the limit.
        """
        if max_memory < 0:
            raise ValueError("max_memory must be >= 0 bytes (0 = no limit)")
        if max_memory and _rss() is None:
            raise ValueError("max_memory needs /proc/self/statm (Linux)")
        self._max_memory = int(max_memory)
        if self._ctx is not None:
            ctx = self._ctx

            def apply() -> None:
                ctx.max_memory = int(max_memory)
                ctx.over_memory = False
                self._sample_memory()
            self._call_in_loop(apply)

    def set_slowlog(self, threshold: float = 0.01) -> None:
        """Record commands that take longer than ``threshold`` seconds (read them with ``slowlog()``)."""
        if not threshold > 0:
            raise ValueError("threshold must be above 0 seconds")
        self._slow_after = float(threshold)
        if self._ctx is not None:
            ctx = self._ctx
            self._call_in_loop(lambda: setattr(ctx, "slow_after", float(threshold)))

    def slowlog(self, count: int | None = None) -> list[dict[str, Any]]:
        """The slowest recent commands, newest first: time, seconds, command, table, client (the last 128)."""
        entries = self._call_in_loop(lambda: list(self._store.slowlog))[::-1]
        return entries if count is None else entries[:count]

    def set_backup(self, file_name: str = "data.cdb", cycle: float = 900) -> None:
        """Save a snapshot to ``file_name`` every ``cycle`` seconds, and once more on a clean shutdown."""
        if cycle <= 0:
            raise ValueError("cycle must be a positive number of seconds")
        self._backup = (os.fspath(file_name), float(cycle))
        self._backup_generation += 1
        if self._loop is not None:
            self._call_in_loop(self._schedule_backup)

    def set_append_log(self, file_name: str = "data.aof", fsync: str = "everysec", rewrite_factor: float = 2.0,
                       rewrite_min_size: int = 16 << 20) -> None:
        """Log every write to ``file_name`` before answering it; replay the log on start.

        Call it before ``start()``/``run()``.  If the log exists when the server starts, it holds the latest
        state and replaces the tables loaded by ``load_db``; otherwise it is created from them.

        Args:
            file_name: the log file.
            fsync: ``"always"`` (each reply waits for its write to be on disk; writes arriving together share
                one fsync), ``"everysec"`` (a machine crash loses at most about one second) or ``"no"`` (the OS
                decides).  With any policy, killing the server process loses no acknowledged write.
            rewrite_factor: compact the log in the background when it is this many times larger than after the
                last compaction ...
            rewrite_min_size: ... and at least this many bytes.

        Raises:
            ValueError: an unknown policy or a bad size.
            RuntimeError: the server is running.
        """
        if self._loop is not None:
            raise RuntimeError("call set_append_log() before start() or run()")
        try:
            policy = Fsync(fsync)
        except ValueError:
            raise ValueError("fsync must be 'always', 'everysec' or 'no'") from None
        if not rewrite_factor > 1 or rewrite_min_size < 0:
            raise ValueError("rewrite_factor must be above 1 and rewrite_min_size at least 0")
        self._log_config = LogConfig(os.fspath(file_name), policy, float(rewrite_factor), int(rewrite_min_size))

    def rewrite_append_log(self) -> None:
        """Compact the append-only log now (in the background) and wait until it is done.

        Raises:
            RuntimeError: no append-only log is open.
            PersistenceError: the rewrite failed (the log goes on as it was).
        """
        log = self._log
        if log is None or self._loop is None:
            raise RuntimeError("no append-only log is open (set_append_log, then start)")
        self._call_in_loop(log.rewrite).result()

    def info(self) -> dict[str, Any]:
        """State and counters, as ``proxy.info()`` returns them: version, uptime, memory, connections, commands and
        ops/s, tables (name -> kind and size), the append-only log, backups and the last save, the newest slow
        commands (see :meth:`.stats.Stats.report` and README "Operating a running server")."""
        return self._call_in_loop(lambda: self._stats.report(
            self._ctx, self._store, self._log, self._backup, self._backup_busy, self.address, self._tls is not None,
            _rss()))

    # ---- persistence -------------------------------------------------------------------------------------------

    def save_db(self, file_name: str = "data.cdb") -> None:
        """Write a consistent snapshot of all tables atomically (temporary file, fsync, rename).

        While serving, a forked child writes the tables as they were when ``save_db`` was called, and clients
        are served meanwhile; this call waits until the file is complete.

        Raises:
            PersistenceError: the file could not be written; the previous file is intact.
        """
        path = os.fspath(file_name)
        started = time.monotonic()
        try:
            if self._loop is None:
                _save(self._store, self._replies, path)
            else:
                work = lambda: _save(self._store, self._replies, path)  # noqa: E731 - in the child
                self._call_in_loop(lambda: run_in_child(work, "saving")[0]).result()
        except PersistenceError as exc:
            self._stats.saved(path, started, exc)
            raise
        self._stats.saved(path, started, None)
        logger.info("saved %d tables to %s", len(self._store), path)

    def load_db(self, file_name: str = "data.cdb") -> None:
        """Replace all tables with those of a snapshot file; on any error nothing is loaded.

        With an append-only log open, the log is rewritten from the loaded tables.

        Raises:
            PersistenceError: the file is missing, unreadable, truncated, corrupted or not a CyberDB file.
        """
        state = read_state(file_name)

        def load() -> None:
            self._store.load(state.tables, state.leases, state.clocks, state.meta)
            for client in state.clients:
                self._replies.restore(*client)
            if self._log is not None:
                self._log.reset()
        self._call_in_loop(load)
        logger.info("loaded %d tables from %s", len(state.tables), file_name)

    # ---- running -----------------------------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 9980, password: str | None = None, max_con: int = 500,
              timeout: float = 0, print_log: bool = False, encrypt: bool = False) -> None:
        """Start serving in a background daemon thread; return once the server is listening.

        Args:
            host: address to listen on; without a password only loopback addresses are allowed.
            port: TCP port (0 picks a free one; see ``port``).
            password: clients must prove they know it (it never travels on the wire).
            max_con: maximum simultaneous client connections; the next one is refused.
            timeout: close connections idle this many seconds (0 = never).
            print_log: attach a log handler printing connections and commands.
            encrypt: seal every frame with AES-256-GCM and only accept whitelisted addresses.

        Raises:
            OSError: the address is taken or cannot be used.
            ValueError: an invalid setting (no password on a non-loopback address, ...).
            RuntimeError: the server is already running.
        """
        self._prepare(host, port, password, max_con, timeout, print_log, encrypt)
        ready: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._thread = threading.Thread(target=self._thread_main, args=(ready,), name="cyberdb-server", daemon=True)
        self._thread.start()
        ready.result()
        atexit.register(self.stop)

    def run(self, host: str = "127.0.0.1", port: int = 9980, password: str | None = None, max_con: int = 500,
            timeout: float = 0, print_log: bool = False, encrypt: bool = False) -> None:
        """Serve in the foreground until SIGINT/SIGTERM (or ``stop()``); same arguments as ``start``.

        On shutdown the backup file is written first when ``set_backup`` was called.
        """
        self._prepare(host, port, password, max_con, timeout, print_log, encrypt)
        loop = _new_event_loop(self.event_loop)
        try:
            loop.run_until_complete(self._serve(None, install_signals=True))
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop a running server (closing all connections) and write the backup if one is set."""
        loop, event = self._loop, self._stop_event
        if loop is not None and event is not None and not loop.is_closed():
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # the loop closed meanwhile
                pass
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        atexit.unregister(self.stop)

    # ---- internals ---------------------------------------------------------------------------------------------

    def _prepare(self, host: str, port: int, password: str | None, max_con: int, timeout: float,
                 print_log: bool, encrypt: bool) -> None:
        if self._loop is not None or self._listener is not None:
            raise RuntimeError("this server is already running")
        if max_con < 1:
            raise ValueError("max_con must be at least 1")
        if timeout < 0:
            raise ValueError("timeout must be >= 0 (0 = never)")
        if print_log:
            self._enable_logging()
        family, address = _resolve(host, port)
        if not password and not ipaddress.ip_address(address[0].split("%", 1)[0]).is_loopback:
            raise ValueError(f"refusing to listen on {host} without a password: set a password, or listen on "
                             "127.0.0.1 / ::1 only")
        whitelist = self._whitelist
        if whitelist is None and encrypt:
            whitelist = list(DEFAULT_ENCRYPT_WHITELIST)
        _raise_fd_limit(max_con)
        log = AppendLog(self._log_config, self._store, self._replies) if self._log_config is not None else None
        salt = os.urandom(16)
        self._ctx = ServerContext(
            store=self._store, master=crypto.derive_master_key(password, salt), salt=salt,
            iterations=crypto.PBKDF2_ITERATIONS, encrypt=bool(encrypt), max_con=int(max_con),
            timeout=float(timeout), whitelist=parse_networks(whitelist) if whitelist is not None else None,
            replies=self._replies, log=log, limits=self._limits, slow_after=self._slow_after,
            max_memory=self._max_memory, info=self.info)
        try:
            sock = socket.create_server(address, family=family, backlog=1024)
        except OSError as exc:
            if log is not None:
                log.close()
            raise OSError(exc.errno, f"CyberDB cannot listen on {host}:{port}: {exc.strerror}") from exc
        self._log = log
        self._listener = sock
        self.address = sock.getsockname()[:2]

    def _thread_main(self, ready: concurrent.futures.Future[None]) -> None:
        loop = _new_event_loop(self.event_loop)
        try:
            loop.run_until_complete(self._serve(ready, install_signals=False))
        except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller when it happens early
            if not ready.done():
                self._release_listener()
                ready.set_exception(exc)
            else:
                logger.exception("the server loop failed")
        finally:
            loop.close()

    def _release_listener(self) -> None:
        # a start() that failed after binding must leave the server startable again
        if self._listener is not None:
            self._listener.close()
        self._listener = None
        self.address = None

    async def _serve(self, ready: concurrent.futures.Future[None] | None, install_signals: bool) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None and self._ctx is not None
        ctx = self._ctx
        # with TLS asyncio runs the TLS handshake (bounded like the password handshake) before the protocol sees
        # the connection; the protocol itself is the same
        server = await loop.create_server(lambda: ServerConnection(ctx), sock=self._listener, ssl=self._tls,
                                          ssl_handshake_timeout=ctx.limits.handshake_timeout if self._tls else None)
        self._stop_event = asyncio.Event()
        self._loop = loop
        if self._log is not None:
            self._log.attach(loop)
        self._stats.start(loop, ctx)
        if install_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self._stop_event.set)
        self._schedule_backup()
        self._sweep()
        if ctx.max_memory:
            self._sample_memory()
        logger.info("CyberDB listening on %s:%s (encrypt=%s, tls=%s)", *self.address or ("?", "?"), ctx.encrypt,
                    self._tls is not None)
        if ready is not None:
            ready.set_result(None)
        try:
            await self._stop_event.wait()
        finally:
            server.close()
            self._stats.stop()
            if self._log is not None:  # the last writes reach the disk, and their held replies the clients
                self._log.close()
                self._log = ctx.log = None
            for conn in list(ctx.connections):
                conn.close()
            await _drained(ctx, DRAIN_TIMEOUT)
            await server.wait_closed()
            if install_signals and threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            self._loop = self._stop_event = None
            self._listener = None
            self.address = None
            if self._backup is not None:
                started = time.monotonic()
                try:
                    _save(self._store, self._replies, self._backup[0])
                    self._stats.saved(self._backup[0], started, None)
                    logger.info("final backup written to %s", self._backup[0])
                except PersistenceError as exc:  # shutdown goes on; the reason is logged
                    self._stats.saved(self._backup[0], started, exc)
                    logger.error("final backup to %s failed: %s", self._backup[0], exc)
            logger.info("CyberDB stopped")

    def _schedule_backup(self) -> None:
        if self._backup is not None and self._loop is not None:
            self._loop.call_later(self._backup[1], self._backup_tick, self._backup_generation)

    def _backup_tick(self, generation: int) -> None:
        if generation != self._backup_generation or self._backup is None or self._loop is None:
            return  # set_backup was called again: its own timer took over
        self._schedule_backup()
        if self._backup_busy:
            return
        path, loop = self._backup[0], self._loop
        self._backup_busy = True
        started = time.monotonic()
        future, _pid = run_in_child(lambda: _save(self._store, self._replies, path), "backup")
        future.add_done_callback(lambda f: call_soon_safely(loop, self._backup_done, path, f, started))

    def _backup_done(self, path: str, future: concurrent.futures.Future[None], started: float) -> None:
        self._backup_busy = False
        exc = future.exception()
        self._stats.saved(path, started, exc)
        if exc is not None:  # the previous file is intact; the next cycle tries again
            logger.error("backup to %s failed (the previous file is kept; retried next cycle): %s", path, exc)
        else:
            logger.info("backup written to %s", path)

    def _call_in_loop(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` inside the server's loop (atomically w.r.t. commands) and return its result."""
        loop = self._loop
        if loop is None or not loop.is_running():
            return fn()
        try:
            if asyncio.get_running_loop() is loop:
                return fn()
        except RuntimeError:
            pass
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def call() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting caller
                done.set_exception(exc)

        loop.call_soon_threadsafe(call)
        return done.result()

    def _enable_logging(self) -> None:
        root = logging.getLogger("cyberdb")
        if self._log_handler is None:
            self._log_handler = logging.StreamHandler()
            self._log_handler.setFormatter(logging.Formatter(_LOG_FORMAT))
            root.addHandler(self._log_handler)
        root.setLevel(logging.DEBUG)


    def _sweep(self) -> None:
        # expired keys are removed a few milliseconds at a time: every 100 ms, and at once again while some are due
        # (like Redis's active expiry), so memory comes back without any client asking for them
        loop = self._loop
        if loop is None or self._stop_event is None or self._stop_event.is_set():
            return
        more = self._store.sweep(SWEEP_BUDGET)
        self._sweeper = loop.call_later(0.0 if more else SWEEP_INTERVAL, self._sweep)

    def _sample_memory(self) -> None:
        ctx, loop = self._ctx, self._loop
        if self._sampler is not None:
            self._sampler.cancel()
            self._sampler = None
        if ctx is None or loop is None or not ctx.max_memory:
            return
        rss = _rss() or 0
        over = rss > ctx.max_memory
        if over != ctx.over_memory:
            logger.warning("memory %s max_memory=%d (%d bytes): writes are %s", "above" if over else "back under",
                           ctx.max_memory, rss, "refused" if over else "accepted again")
        ctx.over_memory = over
        self._sampler = loop.call_later(0.1, self._sample_memory)


def _rss() -> int | None:
    """Resident memory of this process in bytes (Linux), or None."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _save(store: Store, replies: ReplyCache, path: str) -> None:
    write_atomic(path, encode_snapshot(store.dump(), list(replies.clients()), store.leases(), store.clocks(),
                                       store.meta(), source=path))


async def _drained(ctx: ServerContext, timeout: float) -> None:
    """Wait until every connection is closed (their last replies sent), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while ctx.connections and time.monotonic() < deadline:
        await asyncio.sleep(0.01)  # connection_lost runs once a transport has flushed its buffer
    for conn in list(ctx.connections):
        conn.abort()


def _new_event_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the requested kind (uvloop roughly halves the loop's own cost per request)."""
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def _raise_fd_limit(max_con: int) -> None:
    """Lift the soft open-files limit towards ``max_con`` (the seed asks for 10000; the default soft limit is
    often 1024, which would make accept() fail long before max_con)."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = max_con + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        except (ValueError, OSError) as exc:
            logger.warning("could not raise the open-files limit to %d: %s", new, exc)


def _resolve(host: str, port: int) -> tuple[socket.AddressFamily, tuple[Any, ...]]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve host {host!r}: {exc}") from exc
    family, _type, _proto, _name, sockaddr = infos[0]
    return family, (sockaddr[0], sockaddr[1])
