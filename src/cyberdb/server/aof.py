"""The append-only log of a running server: every write is in it before its reply leaves.

The store's write hook hands each write to :meth:`AppendLog.record`, which only appends the record (built by
:mod:`.persist` from the request's bytes as they arrived) to a buffer.  Before a connection sends replies
to writes it asks :meth:`AppendLog.ready`; if the writes they answer are not *acknowledgeable* yet, the replies
wait in :meth:`AppendLog.hold` (in order, with everything the connection sends after them):

* ``always``: written and fdatasync'ed.  At the end of the loop turn, ``_commit`` writes the buffer and
  fdatasyncs once for every write of the turn (group commit), then releases the held replies.
* ``everysec``: written (the OS has it; a process crash loses nothing).  ``ready()`` writes the buffer at
  once, so replies leave without waiting a turn; a helper thread fdatasyncs once a second, so a machine crash
  loses at most about the last second.
* ``no``: written, as for ``everysec``; the OS decides when it reaches the disk (Linux: within ~30 s).

If a write or fdatasync fails (disk full, I/O error), nothing more is acknowledged: held replies stay held,
new writes are refused with :class:`~cyberdb.errors.PersistenceError`, reads go on, and the log retries every
second; when it succeeds the held replies leave and writes are accepted again (Redis does the same).

The log is rewritten (compacted) when it grows past ``rewrite_factor`` times its size after the last rewrite:
a forked child writes the base (tables, reply cache, leases) of the state at the fork to a temporary file
while the parent keeps logging and also keeps the records logged since the fork; those are appended to the
new file, which is then fsynced and renamed over the log (see :mod:`.background`).
"""

from __future__ import annotations

import collections
import concurrent.futures
import enum
import glob
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..codec import decode_value, encode_value
from ..commands import BY_ID, BY_NAME, CommandSpec
from ..errors import PersistenceError, ProtocolError
from ..protocol import ANONYMOUS
from .background import run_in_child
from .dedup import ReplyCache
from .persist import (
    COMMAND_HEADER,
    LOG_HEADER,
    RecordKind,
    base_records,
    command_record,
    index_log,
    parse_base,
    write_atomic,
)
from .progress import Progress
from .store import STATUS_OK, Origin, Store

if TYPE_CHECKING:
    import asyncio

__all__ = ["AppendLog", "Fsync", "LogConfig", "call_soon_safely", "replay_log"]

logger = logging.getLogger(__name__)
_BATCH = BY_NAME["db.batch"].op
_PIPELINE = BY_NAME["db.pipeline"].op
_RETRY_AFTER = 1.0  # seconds between attempts to write a log that failed
_TAIL_IN_LOOP = 1 << 20  # bytes of a rewrite's tail written in the loop itself (more goes through the thread)


class Fsync(str, enum.Enum):
    """When the log's writes are forced to the disk."""

    ALWAYS = "always"
    EVERYSEC = "everysec"
    NO = "no"


@dataclass(frozen=True)
class LogConfig:
    """How the append-only log is kept (see ``Server.set_append_log``)."""

    file_name: str = "data.aof"
    fsync: Fsync = Fsync.EVERYSEC
    rewrite_factor: float = 2.0
    rewrite_min_size: int = 16 << 20


class Holder(Protocol):
    """A connection whose output waits for the log (``ServerConnection``)."""

    def release(self, data: bytes) -> None:
        """Send output that was held."""


def replay_log(path: str, store: Store, replies: ReplyCache) -> tuple[int, int, int]:
    """Load a log into ``store`` and ``replies``; return ``(records, end offset, torn bytes dropped)``.

    Every checksum is verified before anything is applied.  Only the replies a client may still ask for (its
    requests from its last acknowledged mark on) are rebuilt; older writes are just applied.

    Raises:
        PersistenceError: the log cannot be read, or is damaged before its last record.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PersistenceError(f"could not read {path}: {exc}") from exc
    index = index_log(data, path)
    header, command = COMMAND_HEADER.size, int(RecordKind.COMMAND)
    last_ack: dict[bytes, int] = {}  # each client's acknowledged mark at the end of the log
    for _offset, kind, start, _end in index.entries:
        if kind == command:
            _kind, client, _req, ack, _when, _op = COMMAND_HEADER.unpack_from(data, start)
            if ack > last_ack.get(client, -1):
                last_ack[client] = ack
    view = memoryview(data)
    tables: dict[str, Any] | None = {}
    leases: list[Any] = []
    clocks: Any = None
    meta: list[Any] = []
    store.replaying = True
    progress = Progress("replaying", path, len(data))  # a line every few seconds while a big log replays
    try:
        for number, (offset, kind, start, end) in enumerate(index.entries):
            progress.at(offset, number)
            if kind != command:
                if tables is None:
                    raise PersistenceError(f"{path} is damaged at offset {offset}: a base record after commands")
                record_kind = RecordKind(kind)
                value = parse_base(record_kind, data[start:end], f"{path} at offset {offset}")
                if record_kind is RecordKind.TABLE:
                    tables[value[0]] = value[1]
                elif record_kind is RecordKind.CLIENT:
                    replies.restore(*value)
                elif record_kind is RecordKind.CLOCKS:
                    clocks = value
                elif record_kind is RecordKind.META:
                    meta.append(value)
                else:
                    leases = value
                continue
            if tables is not None:
                store.load(tables, leases, clocks, meta)
                tables = None
            _kind, client, req_id, ack, when, op = COMMAND_HEADER.unpack_from(data, start)
            spec = BY_ID.get(op)
            if spec is None or spec.readonly:
                raise PersistenceError(f"{path} is damaged at offset {offset}: unknown command id {op}")
            try:
                args = decode_value(view[start + header:end])
            except ProtocolError as exc:
                raise PersistenceError(f"{path} is damaged at offset {offset}: {exc}") from None
            if type(args) is not list:
                raise PersistenceError(f"{path} is damaged at offset {offset}: arguments are not an array")
            store.pinned_time = when
            if client != ANONYMOUS and req_id >= last_ack[client]:  # a reply the client may ask for again
                reply = store.outcome(spec, args, hook=False)
                replies.replayed(client, req_id, ack, reply)
                failed = reply[0] != STATUS_OK
            else:
                try:
                    store.apply(spec, args)
                    failed = False
                except Exception:  # noqa: BLE001 - a data error, as when the write first ran
                    failed = True
            if failed and op == _BATCH:
                logger.warning("%s: the atomic batch at offset %d failed when replayed", path, offset)
        if tables is not None:
            store.load(tables, leases, clocks, meta)
        for client, ack in last_ack.items():
            replies.restore(client, ack, 0, [])
        progress.done(len(index.entries))
    finally:
        store.pinned_time = None
        store.replaying = False
    return len(index.entries), index.end, index.torn


class AppendLog:
    """The open log of a running server: the store's write hook, group commit, fsync policy, rewrites."""

    def __init__(self, config: LogConfig, store: Store, replies: ReplyCache) -> None:
        """Open (replaying it) or create the log ``config.file_name`` for ``store`` and ``replies``.

        Raises:
            PersistenceError: the log is damaged, or cannot be read or created.
        """
        self.config = config
        self.path = os.path.abspath(config.file_name)
        self._store = store
        self._replies = replies
        self._loop: asyncio.AbstractEventLoop | None = None
        self._buffer: list[bytes] = []  # records appended but not written yet
        self._appended = self._written = self._synced = 0  # byte counts since opening (a logical offset)
        self._acked = 0  # replies depending on records below this may leave
        self._held: collections.deque[tuple[int, Holder, bytes]] = collections.deque()
        self._commit_scheduled = False
        self._syncing = False
        self._rewriting: _Rewrite | None = None
        self._rewrites_started = 0
        self._tmp_prefix = os.path.join(os.path.dirname(self.path), f".{os.path.basename(self.path)}.rewrite-")
        self._tail_thread: concurrent.futures.ThreadPoolExecutor | None = None
        self._rewrite_retry_at = 0.0
        self._needs_rewrite = False  # an fdatasync failed: only a rewrite from memory makes the log trustworthy
        self._retry_handle: asyncio.TimerHandle | None = None
        self._closed = False
        self._timers: list[asyncio.TimerHandle] = []
        self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cyberdb-log")
        self._always = config.fsync is Fsync.ALWAYS
        self.error: str | None = None  # why the log cannot be written now
        self.records = self.fsyncs = self.rewrites = self.write_errors = 0
        self.last_fsync: float | None = None  # time.time() of the last fsync that succeeded
        self._open()

    def __repr__(self) -> str:
        return f"<AppendLog {self.path} fsync={self.config.fsync.value} size={self._size} error={self.error!r}>"

    # ---- opening -----------------------------------------------------------------------------------------------

    def _open(self) -> None:
        for stale in glob.glob(glob.escape(self._tmp_prefix) + "*.tmp"):  # left by a rewrite that was cut short
            try:
                os.unlink(stale)
            except OSError:
                pass
        exists = os.path.exists(self.path) and os.path.getsize(self.path) > 0
        if exists:
            started = time.monotonic()
            records, end, torn = replay_log(self.path, self._store, self._replies)
            if torn:
                logger.warning("%s: the last record was torn (a crash while writing it): dropped %d bytes at "
                               "offset %d", self.path, torn, end)
            logger.info("replayed %s: %d records in %.2f s", self.path, records, time.monotonic() - started)
            if end < len(LOG_HEADER):
                exists = False
            elif torn:
                try:
                    os.truncate(self.path, end)
                except OSError as exc:
                    raise PersistenceError(f"could not truncate {self.path}: {exc}") from exc
        if not exists:
            self._write_base_now()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except OSError as exc:
            raise PersistenceError(f"could not open {self.path}: {exc}") from exc
        self._set_base(os.fstat(self._fd).st_size)

    def _write_base_now(self) -> None:
        write_atomic(self.path, b"".join(self._base()))

    def _base(self) -> list[bytes]:
        return [LOG_HEADER, *base_records(self._store.dump(), list(self._replies.clients()),
                                          self._store.leases(), self._store.clocks(), self._store.meta())]

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start logging from inside ``loop`` (the store's writes are heard from now on)."""
        self._loop = loop
        self._store.on_write = self.record
        if self.config.fsync is Fsync.EVERYSEC:
            self._timers.append(loop.call_later(1.0, self._every_second))

    def reset(self) -> None:
        """Write a new base now (after ``load_db`` replaced every table), blocking the loop.

        If it cannot be written, the log goes into the error state (writes refused) until a rewrite succeeds.
        """
        self._abandon(self._rewriting, PersistenceError("the tables were replaced (load_db) during the rewrite"))
        try:
            self._write_base_now()
        except PersistenceError as exc:
            self._failed(str(exc), needs_rewrite=True)
            return
        self._switch_to(os.open(self.path, os.O_WRONLY | os.O_APPEND))
        self._buffer.clear()  # in the new base already
        self._set_base(os.fstat(self._fd).st_size)
        self._written = self._synced = self._acked = self._appended
        self.error, self._needs_rewrite = None, False
        self._release()

    # ---- the write hook and group commit -------------------------------------------------------------------------

    def record(self, spec: CommandSpec, args: list[Any], origin: Origin | None) -> None:
        """The store's write hook: log the write (``everysec``/``no``: written at once; ``always``: buffered)."""
        if spec.op == _PIPELINE and not _writes_in_pipeline(args):
            return
        if origin is None:  # a write from inside the server: no connection will ask for it, commit at turn end
            client, req_id, ack, payload = ANONYMOUS, 0, 0, encode_value(args)
            self._commit_soon()
        else:
            client, req_id, ack, payload = origin
        pinned = self._store.pinned_time
        record = command_record(client, req_id, ack, time.time() if pinned is None else pinned, spec.op, payload)
        self._appended += len(record)
        self.records += 1
        if self._rewriting is not None:
            self._rewriting.tail.append(record)
        if self._always or self._buffer or self.error is not None:
            self._buffer.append(record)
            return
        # everysec / no: one write per write, before its reply is even built (cheaper than buffering it and
        # writing the buffer before the replies go, and no reply waits for a later loop turn)
        try:
            n = os.write(self._fd, record)
        except OSError as exc:
            self._buffer.append(record)
            self._failed(f"cannot write {self.path}: {exc}")
            return
        self._written += n
        self._size += n
        if n < len(record):  # a short write: the rest goes first next time (and usually fails with the reason)
            self._buffer.append(record[n:])
            return
        self._acked = self._written
        if self._size >= self._rewrite_at:
            self._maybe_rewrite()

    def ready(self) -> bool:
        """True if replies to everything logged so far may leave now (writing the buffer if the policy allows).

        ``everysec`` and ``no`` need the records written: that happens here, before the replies are sent, with
        no extra loop turn.  ``always`` needs an fdatasync: the commit at the end of this loop turn does one for
        every write of the turn, and releases the replies held until then.
        """
        if self._acked >= self._appended:
            return True
        if self.error is not None:
            return False
        if self._always:
            self._commit_soon()
            return False
        if not self._flush_buffer():
            return False
        self._acked = self._written
        self._release()
        self._maybe_rewrite()
        return True

    def hold(self, holder: Holder, data: bytes) -> None:
        """Keep ``holder``'s output until everything logged so far can be acknowledged."""
        self._held.append((self._appended, holder, data))

    def refuses(self, spec: CommandSpec, args: list[Any]) -> bool:
        """True if this write must be refused because the log cannot be written."""
        return self.error is not None and (spec.op != _PIPELINE or _writes_in_pipeline(args))

    def _commit_soon(self) -> None:
        if not self._commit_scheduled and self._loop is not None:
            self._commit_scheduled = True
            self._loop.call_soon(self._commit)

    def _commit(self) -> None:
        """The end of a loop turn: one write and, for ``always``, one fdatasync for all of the turn's writes."""
        self._commit_scheduled = False
        if not self._closed and self.error is None and self._flush_buffer() and self._sync_if_always():
            self._acknowledge()

    def _flush_buffer(self) -> bool:
        """Write the buffer; on failure keep what was not written and go into the error state."""
        if not self._buffer:
            return True
        data = b"".join(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
        self._buffer.clear()
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
                self._written += n
                self._size += n
        except OSError as exc:
            self._buffer.append(bytes(view))
            self._failed(f"cannot write {self.path}: {exc}")
            return False
        return True

    def _sync_if_always(self) -> bool:
        # in the loop, as Redis does: a thread hop per group costs more than the fdatasync itself on a fast disk,
        # and requests that arrive meanwhile simply form the next group
        if not self._always or self._synced >= self._written:
            return True
        try:
            _fdatasync(self._fd)
        except OSError as exc:
            self._failed(f"cannot fsync {self.path}: {exc}", needs_rewrite=True)
            return False
        self.fsyncs += 1
        self.last_fsync = time.time()
        self._synced = self._written
        return True

    def _acknowledge(self) -> None:
        """Let the replies go that depend on what is now written (and synced, for ``always``)."""
        self._acked = self._synced if self._always else self._written
        self._release()
        self._maybe_rewrite()

    def _maybe_rewrite(self) -> None:
        if self._rewriting is None and self._size >= self._rewrite_at and time.monotonic() >= self._rewrite_retry_at:
            self.rewrite()

    def _set_base(self, size: int) -> None:
        """The log was (re)written with ``size`` bytes: rewrite it again once it grows past the factor."""
        self._size = self._base_size = size
        self._rewrite_at = max(self.config.rewrite_min_size, size * self.config.rewrite_factor)

    def _every_second(self) -> None:
        # everysec: the fdatasync runs in the helper thread, so the loop never waits for the disk
        assert self._loop is not None
        self._timers = [self._loop.call_later(1.0, self._every_second)]
        if self._syncing or self._synced >= self._written:
            return
        self._syncing = True
        target, loop = self._written, self._loop
        future = self._thread.submit(_fdatasync, self._fd)
        future.add_done_callback(lambda f: call_soon_safely(loop, self._synced_to, target, f.exception()))

    def _synced_to(self, target: int, exc: BaseException | None) -> None:
        self._syncing = False
        if self._closed:
            return
        if exc is not None:
            self._failed(f"cannot fsync {self.path}: {exc}", needs_rewrite=True)
        else:
            self.fsyncs += 1
            self.last_fsync = time.time()
            self._synced = max(self._synced, target)

    def _release(self) -> None:
        held, acked = self._held, self._acked
        while held and held[0][0] <= acked:
            _needed, holder, data = held.popleft()
            holder.release(data)

    # ---- failures ------------------------------------------------------------------------------------------------

    def _failed(self, reason: str, needs_rewrite: bool = False) -> None:
        self.write_errors += 1
        if self.error is None:
            logger.error("%s; writes are refused until it can be written again", reason)
        self.error = reason
        # after a failed fdatasync the kernel may have dropped the dirty pages and forgotten the error
        # ("fsyncgate"): another fdatasync would succeed and prove nothing, a rewrite from memory does
        self._needs_rewrite = self._needs_rewrite or needs_rewrite
        self._schedule_retry()

    def _schedule_retry(self) -> None:
        if self._retry_handle is None and self._loop is not None and not self._closed:
            self._retry_handle = self._loop.call_later(_RETRY_AFTER, self._retry)

    def _retry(self) -> None:
        self._retry_handle = None
        if self._closed:
            return
        if self._needs_rewrite:
            self.rewrite()  # its success clears the error; its failure schedules the next attempt
            return
        if not (self._flush_buffer() and self._sync_if_always()):
            return  # failed again: _failed scheduled the next attempt
        if self.error is not None:
            logger.warning("%s can be written again; writes are accepted", self.path)
            self.error = None
        self._acknowledge()

    # ---- rewriting -----------------------------------------------------------------------------------------------

    def rewrite(self) -> concurrent.futures.Future[None]:
        """Compact the log in the background; the future ends with it (the running one's, if one runs)."""
        if self._rewriting is not None:
            return self._rewriting.done
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._loop is None or self._closed:
            done.set_exception(PersistenceError(f"{self.path} is not open"))
            return done
        self._rewrites_started += 1
        tmp = f"{self._tmp_prefix}{os.getpid()}-{self._rewrites_started}.tmp"
        base = self._base

        def work() -> None:  # in the forked child: the state as it was at the fork
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                for part in base():
                    f.write(part)
                f.flush()
                os.fsync(f.fileno())

        rw = self._rewriting = _Rewrite(tmp, time.monotonic(), done)
        future, rw.pid = run_in_child(work, "rewriting the append-only log")
        loop = self._loop
        future.add_done_callback(lambda f: call_soon_safely(loop, self._rewritten, rw, f))
        return done

    def _rewritten(self, rw: _Rewrite, future: concurrent.futures.Future[None]) -> None:
        rw.pid = 0
        if rw is not self._rewriting:
            return  # abandoned (load_db, shutdown): _abandon cleaned up
        exc = future.exception()
        if exc is None:
            try:
                rw.fd = os.open(rw.tmp, os.O_WRONLY | os.O_APPEND)
            except OSError as err:
                exc = err
            else:
                self._append_tail(rw)
                return
        self._rewrite_failed(rw, exc)

    def _append_tail(self, rw: _Rewrite) -> None:
        chunk, rw.tail = b"".join(rw.tail), []
        try:
            if len(chunk) > _TAIL_IN_LOOP:  # most of it in a thread of its own; what arrives meanwhile, next round
                if self._tail_thread is None:
                    self._tail_thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="cyberdb-tail")
                loop = self._loop
                assert loop is not None
                future = self._tail_thread.submit(_write_all, rw.fd, chunk)
                future.add_done_callback(lambda f: call_soon_safely(loop, self._tail_written, rw, f.exception()))
                return
            _write_all(rw.fd, chunk)
            _fdatasync(rw.fd)
            os.replace(rw.tmp, self.path)
            _fsync_directory(self.path)
        except OSError as exc:
            self._rewrite_failed(rw, exc)
            return
        self._switch_to(rw.fd)
        rw.fd = -1
        self._rewriting = None
        self._buffer.clear()  # whatever was not written yet is in the tail, hence in the new file
        self._written = self._synced = self._acked = self._appended
        self._set_base(os.fstat(self._fd).st_size)
        if self.error is not None:
            logger.warning("%s was rewritten from memory; writes are accepted", self.path)
        self.error = None
        self._needs_rewrite = False
        self.rewrites += 1
        self._release()
        rw.done.set_result(None)
        logger.info("rewrote %s: %d bytes in %.2f s", self.path, self._size, time.monotonic() - rw.started)

    def _tail_written(self, rw: _Rewrite, exc: BaseException | None) -> None:
        if rw is not self._rewriting:
            return
        if exc is not None:
            self._rewrite_failed(rw, exc)
        else:
            self._append_tail(rw)

    def _switch_to(self, fd: int) -> None:
        """Write to the file open as ``fd`` from now on, under the same descriptor number."""
        # the same number, so an fdatasync running in the helper thread is not disturbed; and the old file, which
        # was just replaced, is closed by the helper thread: dropping its last handle frees its blocks, which
        # takes ~0.3 ms per MB (a rewrite of a 100 MB log would stall the loop 30 ms)
        old = os.dup(self._fd)
        os.dup2(fd, self._fd)
        os.close(fd)
        self._thread.submit(os.close, old)

    def _rewrite_failed(self, rw: _Rewrite, exc: BaseException | None) -> None:
        self._abandon(rw, PersistenceError(f"rewriting {self.path} failed: {exc}"))
        self._rewrite_retry_at = time.monotonic() + 10.0
        logger.error("rewriting %s failed (the log goes on as it was; retried later): %s", self.path, exc)
        if self._needs_rewrite:
            self._schedule_retry()

    def _abandon(self, rw: _Rewrite | None, exc: PersistenceError) -> None:
        """Give up a rewrite: stop its child, drop its file, fail its future."""
        if rw is None:
            return
        if self._rewriting is rw:
            self._rewriting = None
        if rw.pid:
            try:
                os.kill(rw.pid, signal.SIGKILL)  # its waiting thread reaps it
            except OSError:
                pass
        if rw.fd >= 0:
            os.close(rw.fd)
            rw.fd = -1
        try:
            os.unlink(rw.tmp)
        except OSError:
            pass
        if not rw.done.done():
            rw.done.set_exception(exc)

    # ---- shutdown ------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Write and fsync what is buffered, send the replies it allows, and close (clean shutdown)."""
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._retry_handle is not None:
            self._retry_handle.cancel()
            self._retry_handle = None
        self._store.on_write = None
        self._abandon(self._rewriting, PersistenceError("the server stopped during the rewrite"))
        if self.error is not None:  # write the whole state from memory instead: the file may lack records
            try:
                self._write_base_now()
                self._acked = self._appended
            except PersistenceError as exc:
                logger.error("cannot write %s at shutdown: %s", self.path, exc)
        elif self._flush_buffer():
            try:
                _fdatasync(self._fd)
                self.fsyncs += 1
                self._acked = self._synced = self._written
            except OSError as exc:
                logger.error("cannot fsync %s at shutdown: %s", self.path, exc)
        self._release()
        self._held.clear()
        self._closed = True
        self._thread.shutdown(wait=True)
        if self._tail_thread is not None:
            self._tail_thread.shutdown(wait=True)
        os.close(self._fd)

    def info(self) -> dict[str, Any]:
        """Counters and state, for ``Server.info()``."""
        return {"file": self.path, "fsync": self.config.fsync.value, "size": self._size,
                "rewriting": self._rewriting is not None, "error": self.error, "records": self.records,
                "fsyncs": self.fsyncs, "last_fsync": self.last_fsync, "rewrites": self.rewrites,
                "write_errors": self.write_errors}


@dataclass(eq=False)
class _Rewrite:
    """A rewrite in progress: its temporary file, child, and the records logged since its fork."""

    tmp: str
    started: float
    done: concurrent.futures.Future[None]
    pid: int = 0  # the child, while it runs
    fd: int = -1  # the temporary file, once the child wrote the base
    tail: list[bytes] = field(default_factory=list)


def call_soon_safely(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: Any) -> None:
    """``loop.call_soon_threadsafe``, from a helper thread, unless the loop has closed meanwhile (shutdown)."""
    try:
        loop.call_soon_threadsafe(fn, *args)
    except RuntimeError:
        pass


def _writes_in_pipeline(args: list[Any]) -> bool:
    steps = args[0] if args else None
    if type(steps) is not list:
        return True
    for step in steps:
        spec = BY_ID.get(step[0]) if type(step) is list and step and type(step[0]) is int else None
        if spec is None or not spec.readonly:
            return True
    return False


def _fdatasync(fd: int) -> None:
    # looked up at call time (tests count them); fdatasync skips metadata such as mtime where the OS has it
    sync = getattr(os, "fdatasync", None) or os.fsync
    sync(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _fsync_directory(path: str) -> None:
    dir_fd = os.open(os.path.dirname(path), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
