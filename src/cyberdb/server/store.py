"""The tables in memory and the execution of one command.  Plain synchronous code: no I/O, no await.

``Store.execute`` runs a command to completion; the server calls it from its single event loop, so every
command is atomic with respect to every other.  Only the commands of :mod:`cyberdb.commands` can run: a spec
with ``method`` calls that builtin ``dict``/``list`` method, the others call the function of this module
registered under the spec's name in ``_HANDLERS``.  A command at a path runs on the dict or list found by
walking the path inside its table; a write there may not nest the table deeper than ``codec.MAX_DEPTH``
(the network layer refuses deeper arguments, so only a path adds depth).  ``outcome()`` turns a command's result
or error into the status and payload of its reply, the one place where that happens (replies, batches and the
reply cache use it).

The store's interface, for the server and for persistence: ``load()``, ``dump()``, ``leases()``,
``execute()``, ``outcome()``, and one write hook, ``on_write(spec, args, origin)``, called after every write
that ran, failed or not (a failed ``sort`` may have moved items), except an atomic batch that was rolled back
and a pop that waits (the append-only log listens there).  ``origin`` says who sent the write, for the log to
rebuild the reply cache.  Time comes from ``now()``, which a log replay pins to the time the write first ran, so
replaying a log reproduces lock leases and fencing tokens exactly.  Nobody else reaches into its fields.  (Blocking
pops add three for the network layer: ``may_block``, ``watched`` and ``ready``; see ``Store.__init__`` and
``WouldBlock``.)

Publish/subscribe: the hook never hears of a spec with ``logged=False`` (``db.publish``: messages are not
persisted).  ``channels`` holds each channel's subscribers, opaque handles the network layer adds and removes;
``db.publish`` only counts them and queues ``(channel, encoded [channel, value])`` in ``outbox``, which the
network layer drains right after the command.  ``db.subscribe``/``db.unsubscribe`` change a connection, so
the network layer runs them (they fail here, e.g. in a batch).
"""

from __future__ import annotations

import collections
import copy
import logging
import operator
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from ..codec import MAX_BIGINT_BYTES, MAX_DEPTH, decode_value, depth_exceeds, encode_value
from ..commands import BY_ID, COMMANDS, DICT, LIST, MAX_PATH, PATH_BASE, CommandSpec, twin
from ..errors import (
    LockLostError,
    ServerError,
    TableExistsError,
    TableNotFoundError,
    WrongTableTypeError,
    error_code,
)
from ..protocol import HEADER_SIZE, MAX_FRAME

__all__ = ["MAX_LIST_ITEMS", "STATUS_OK", "Clocks", "Encoded", "Store", "WouldBlock", "decode_error", "encode_error",
           "walk"]

logger = logging.getLogger(__name__)
MAX_LIST_ITEMS = 1 << 27  # `l *= n` may not build a list longer than this (one request must not eat the RAM)
MAX_NAME_LENGTH = 1024
MAX_LOCKS = 100_000  # expired leases are swept when there are more than this
MAX_TTL = 365 * 24 * 3600.0
KIND_TYPES: dict[str, type] = {DICT: dict, LIST: list}
STATUS_OK = 0
_MAX_REPLY_PAYLOAD = MAX_FRAME - HEADER_SIZE - 64
_MAX_ERROR_PAYLOAD = 64 << 10  # an error's arguments (e.g. the missing key) are sent back up to this size
_NUMBERS = (int, float, Decimal)
_BATCH_OP = next(spec.op for spec in COMMANDS if spec.name == "db.batch")
_APPEND = next(spec for spec in COMMANDS if spec.name == "list.append")
_EVICT = next(spec for spec in COMMANDS if spec.name == "dict.pop")  # [table, key, None]: never fails
_WHOLE: Any = object()  # _key_of: the command may look at every key

Table = dict[Any, Any] | list[Any]
Origin = tuple[bytes, int, int, bytes]  # client id, request id, ack, the request's encoded arguments
WriteHook = Callable[[CommandSpec, list[Any], "Origin | None"], None]
Lease = tuple[str, int, float]  # lock name, fencing token, deadline (wall clock)
Clocks = tuple[int, int, list[tuple[str, int]]]  # version clock, last fencing token, (table, version) pairs
MetaRecord = list[Any]  # [table, options, [[key, deadline], ...], keys in order of use or None] (see meta.py)
SWEEP_BATCH = 256  # expired keys removed between two looks at the sweep's time budget


class WouldBlock(Exception):  # noqa: N818  # not an error: a request that waits
    """A blocking pop found its list empty: the network layer parks the request (never sent to a client).

    ``args``: the list's name, the timeout in seconds (``math.inf``: no limit), and the version clock and the
    list's version before the command, which ``Store.outcome`` puts back.
    """


class Encoded(bytes):
    """A result that is already encoded (a batch's results, encoded step by step): sent as it is."""


class Store:
    """All tables, by name, plus a version per table for compare-and-set, and the lock leases."""

    def __init__(self) -> None:
        self._tables: dict[str, Table] = {}
        self._versions: dict[str, int] = {}
        # global, so a deleted and recreated table never reuses a version; it starts from the clock so that a
        # version read before a restart is not handed out again after it
        self._clock = time.time_ns()
        # name -> (token, deadline on the wall clock: leases are logged and must mean the same after a restart)
        self._locks: dict[str, tuple[int, float]] = {}
        self._last_token = 0
        self.pinned_time: float | None = None  # set while a write runs with a log, or is replayed
        self.replaying = False  # a log is being replayed: a batch's transaction checks are not made again
        # commands slower than the server's threshold, newest last (the server records them; db.slowlog reads)
        self.slowlog: collections.deque[dict[str, Any]] = collections.deque(maxlen=128)
        self.on_write: WriteHook | None = None
        # blocking pops (list.bpop, parked by the network layer): may_block is True only while a request sent on
        # its own runs (never a batch step or a replay); `watched` names the lists with waiters, and a write to
        # one of them adds it to `ready` (one set lookup per write), which the network layer then serves
        self.may_block = False
        self.watched: set[str] = set()
        self.ready: set[str] = set()
        self._moves: list[tuple[str, list[Any], int]] | None = None  # in a batch: see _undoing_moves
        self._batch_clock = 0
        self.channels: dict[str, set[Any]] = {}  # channel -> its subscribers (kept by the network layer)
        self.outbox: list[tuple[str, bytes]] = []  # published messages to deliver (drained by the network layer)
        # bounds and key deadlines, only for tables that have any (see meta.py)
        self._meta: dict[str, TableMeta] = {}
        # keys a bounded dict evicted during the write being run: logged after it as dict.pop (a replay does not
        # evict, since which key is least recently used depends on reads, which are not logged)
        self.evicted: list[tuple[str, Any]] = []

    def __len__(self) -> int:
        return len(self._tables)

    # ---- the interface -----------------------------------------------------------------------------------------

    def load(self, tables: dict[str, Table], leases: list[Lease] | None = None,
             clocks: Clocks | None = None, meta: list[MetaRecord] | None = None) -> None:
        """Replace all tables (validated content, e.g. from a snapshot file), lock leases and version clocks.

        With ``clocks`` (from ``clocks()`` when the file was written) every table gets back its version, so that a
        log replayed after it runs compare-and-set exactly as the first time.  ``meta`` (from ``meta()``) gives
        tables back their bounds, key deadlines and order of use.
        """
        self._tables.clear()
        self._locks.clear()
        self._meta.clear()
        for name, table in tables.items():
            self._add(name, table)
        for name, options, deadlines, order in meta or ():
            loaded = self._tables.get(name)
            if loaded is not None:
                entry = self._meta[name] = TableMeta(**options)
                entry.load(loaded, deadlines, order)
        for name, token, deadline in leases or ():
            self._locks[name] = (token, deadline)
            self._last_token = max(self._last_token, token)
        if clocks is not None:
            clock, last_token, versions = clocks
            self._clock = clock
            self._last_token = max(self._last_token, last_token)
            self._versions.update((name, version) for name, version in versions if name in self._tables)

    def meta(self) -> list[MetaRecord]:
        """The bounds, key deadlines and order of use of the tables that have any (for snapshots and logs)."""
        return [meta.record(name) for name, meta in self._meta.items() if not meta.idle()]

    def meta_of(self, name: str, create: bool = False) -> TableMeta | None:
        """The bound and deadlines of table ``name``, if it has any, or new ones with ``create`` (a batch's
        journal saves them before a write that may add a deadline)."""
        meta = self._meta.get(name)
        if meta is None and create and name in self._tables:
            meta = self._meta[name] = TableMeta()
        return meta

    def sweep(self, budget: float = 0.002) -> bool:
        """Remove expired keys for up to ``budget`` seconds; return True if some are still due (call again soon)."""
        stop = time.perf_counter() + budget
        now = self.now()
        for name, meta in list(self._meta.items()):
            table = self._tables.get(name)
            if type(table) is not dict:
                continue
            if meta.due(now):
                meta.peak = max(meta.peak, len(table))
            while meta.due(now):
                meta.expire_due(table, now, SWEEP_BATCH)
                if time.perf_counter() > stop:
                    return True
            meta.compact(table)
            if meta.idle():
                del self._meta[name]
        return False

    def expiring(self) -> int:
        """How many keys have a deadline (expired ones not swept yet included)."""
        return sum(len(meta.expires) for meta in self._meta.values())

    def clocks(self) -> Clocks:
        """The version clock, the last fencing token and each table's version (for a log's base)."""
        return self._clock, self._last_token, [(name, self.version(name)) for name in self._tables]

    def dump(self) -> dict[str, Table]:
        """The live tables, for a snapshot: encode them before the next command runs."""
        return self._tables

    def leases(self) -> list[Lease]:
        """The lock leases that have not ended, for the append-only log's base."""
        now = self.now()
        return [(name, token, deadline) for name, (token, deadline) in self._locks.items() if deadline > now]

    def now(self) -> float:
        """Seconds since the epoch: the wall clock, or the instant of the write being logged or replayed."""
        pinned = self.pinned_time
        return time.time() if pinned is None else pinned

    def execute(self, spec: CommandSpec, args: list[Any]) -> Any:
        """Run one command and return its result; data errors propagate as the builtin exceptions.

        ``args`` is the decoded argument list (never changed).  The write hook hears of every applied write.

        Raises:
            TypeError: wrong number of arguments (or the builtin method's own TypeError).
        """
        if spec.readonly or self.on_write is None or not spec.logged:
            return self.apply(spec, args)
        return self._logged(spec, args, None)

    def outcome(self, spec: CommandSpec, args: list[Any], hook: bool = True,
                origin: Origin | None = None) -> tuple[int, bytes]:
        """Execute and encode: ``(STATUS_OK, encoded result)`` or ``(error code, encoded error arguments)``.

        ``hook=False`` runs a batch step: the write hook hears of the whole batch instead.  ``origin`` is passed
        to the write hook.
        """
        try:
            if not hook or spec.readonly or self.on_write is None or not spec.logged:
                result = self.apply(spec, args)
            else:
                result = self._logged(spec, args, origin)
            body = result if type(result) is Encoded else encode_value(result)
            if len(body) > _MAX_REPLY_PAYLOAD:
                raise ValueError(f"the reply of {len(body)} bytes exceeds the frame limit")
        except WouldBlock as block:  # nothing ran: the version clock must not move (a log replay relies on it)
            name, _timeout, clock, version = block.args
            self._clock, self._versions[name] = clock, version
            raise
        except Exception as exc:  # a data error goes back to the client; the connection stays usable
            return error_code(exc), encode_error(exc, spec.name)
        return STATUS_OK, body

    def _logged(self, spec: CommandSpec, args: list[Any], origin: Origin | None) -> Any:
        # the write runs at one instant (leases, tokens), which the hook logs with it: a replay pins the same
        assert self.on_write is not None
        self.pinned_time = time.time()
        self.evicted.clear()
        ran = blocked = False
        try:
            result = self.apply(spec, args)
            ran = True
        except WouldBlock:  # nothing ran, so nothing to log: the network layer parks the request
            blocked = True
            raise
        finally:
            try:
                if ran or spec.op != _BATCH_OP and not blocked:  # a batch that raised was rolled back: nothing to log
                    self.on_write(spec, args, origin)
                    for name, key in self.evicted:  # evictions follow the write that made them (see __init__)
                        self.on_write(_EVICT, [name, key, None], None)
            finally:
                self.evicted.clear()
                self.pinned_time = None
        return result

    # ---- execution ---------------------------------------------------------------------------------------------

    def apply(self, spec: CommandSpec, args: list[Any]) -> Any:
        """``execute`` without the write hook (a batch step: the hook hears of the whole batch once)."""
        kind_type, low, high, fn, is_method = _PLANS[spec.op]
        if kind_type is None:
            _check_arity(spec, len(args))
            return fn(self, *args)
        if not low <= len(args) - 1 <= high:
            _check_arity(spec, len(args) - 1)
        name = args[0]
        table = self._tables.get(name) if type(name) is str else None
        if type(table) is not kind_type and (table is None or not spec.path):
            self.table(name, str(spec.kind))  # raises the right error
        meta = self._meta.get(name) if self._meta else None
        if meta is not None:
            self._before(spec, args, table, meta)
        try:
            if spec.path:
                return self._at_path(spec, table, name, args)
            return fn(table, *args[1:]) if is_method else fn(self, table, name, *args[1:])
        finally:  # even a failed write may have changed something (a sort that raised)
            if meta is not None:
                self._after(spec, args, table, name, meta)
            if not spec.readonly:
                self._clock += 1
                self._versions[name] = self._clock
                if name in self.watched:  # a list with blocked pops (see __init__)
                    self.ready.add(name)

    def _before(self, spec: CommandSpec, args: list[Any], table: Any, meta: TableMeta) -> None:
        # expired keys go before the command can see them: its own key, or all of them for a whole-table command
        if type(table) is dict:
            now = self.now()
            if meta.due(now):
                key = _key_of(spec, args)
                if key is _WHOLE:
                    meta.expire_due(table, now)
                else:
                    meta.expire_key(table, key, now)
        elif meta.maxlen and spec.suffix == "insert" and not spec.path and len(table) >= meta.maxlen:
            raise IndexError(f"CyberList already at its maxlen ({meta.maxlen}), as deque.insert")

    def _after(self, spec: CommandSpec, args: list[Any], table: Any, name: str, meta: TableMeta) -> None:
        # deadlines and the order of use follow the write; bounds are enforced.  Runs after a failed command too.
        if type(table) is list:
            if meta.maxlen and len(table) > meta.maxlen:
                del table[:len(table) - meta.maxlen]
            return
        key = _key_of(spec, args)
        suffix = spec.suffix
        try:
            if key is _WHOLE:
                if spec.readonly:
                    return
                if suffix == "update" and type(args[1]) is dict:
                    for k in args[1]:  # stored anew: no deadline, used now (in the argument's order)
                        meta.clear_deadline(k)
                        meta.touch(table, k)
                else:
                    meta.reconcile(table)
            elif spec.path:
                meta.touch(table, key)
            else:
                if suffix == "setitem":
                    meta.clear_deadline(key)
                elif suffix in ("delitem", "pop") and key not in table:
                    meta.forget(table, key)
                if suffix in TOUCHING:
                    meta.touch(table, key)
        except TypeError:  # an unhashable key: the command failed without a change
            return
        if meta.maxsize and not spec.readonly and not self.replaying:
            evicted = meta.evict(table, self.now())
            if evicted and self.on_write is not None:
                self.evicted.extend((name, k) for k in evicted)

    def _at_path(self, spec: CommandSpec, table: Any, name: str, args: list[Any]) -> Any:
        base = BY_ID[spec.op - PATH_BASE]
        target = walk(table, args[1])
        if base.suffix == "copy":  # a handle's copy() reads whatever value is there
            return target
        kind = DICT if type(target) is dict else LIST if type(target) is list else None
        inner = twin(base, kind) if kind is not None else None
        if inner is None:
            raise TypeError(f"the value at path {args[1]!r} is a {type(target).__name__}, which has no "
                            f"{base.suffix}()")
        _kind_type, low, high, fn, is_method = _PLANS[inner.op]
        if not low <= len(args) - 2 <= high:
            _check_arity(inner, len(args) - 2)
        # the table must stay encodable (replies, snapshots): the target lies len(path) + 1 levels deep, and the
        # list `args[2:]` stands for its level
        if not spec.readonly and len(args) > 2 and depth_exceeds(args[2:], MAX_DEPTH - len(args[1])):
            raise ValueError(f"this write would nest table {name!r} deeper than the limit of {MAX_DEPTH} "
                             f"containers ({len(args[1])} levels of path plus the value's own)")
        return fn(target, *args[2:]) if is_method else fn(self, target, name, *args[2:])

    def table(self, name: Any, kind: str) -> Any:
        """Return table ``name``, checking it exists and is of ``kind``."""
        try:
            table = self._tables[name]
        except (KeyError, TypeError):
            raise TableNotFoundError(f"no table named {name!r}") from None
        if type(table) is not KIND_TYPES[kind]:
            raise WrongTableTypeError(f"table {name!r} is a {kind_name(table)}, not a {kind_name(KIND_TYPES[kind]())}")
        return table

    def get(self, name: Any) -> Table | None:
        """Table ``name``, or None."""
        return self._tables.get(name) if type(name) is str else None

    def version(self, name: str) -> int:
        """The version of table ``name`` (changes on every write)."""
        return self._versions.get(name, 0)

    def set_version(self, name: str, version: int) -> None:
        """Put back the version of table ``name`` (a batch that was rolled back changed nothing)."""
        self._versions[name] = version

    def clock(self) -> int:
        """The version clock (the last version handed out)."""
        return self._clock

    def set_clock(self, clock: int) -> None:
        """Put back the version clock (a batch that was rolled back, or a speculation, handed out nothing)."""
        self._clock = clock

    def _add(self, name: str, table: Table) -> None:
        self._tables[name] = table
        self._clock += 1
        self._versions[name] = self._clock

    def _new_token(self) -> int:
        # fencing tokens grow with every acquisition, and across a restart too (they start from the wall
        # clock in microseconds, as long as it does not go back)
        self._last_token = max(self._last_token + 1, int(self.now() * 1_000_000))
        return self._last_token


def walk(value: Any, path: Any) -> Any:
    """The value at ``path`` inside ``value``, with the errors Python's own indexing raises."""
    if type(path) is not list or len(path) > MAX_PATH:
        raise TypeError(f"a path is a list of at most {MAX_PATH} keys and indexes")
    for key in path:
        kind = type(value)
        if kind is list and type(key) is not int and type(key) is not bool:  # l[True] is l[1], as in Python
            raise TypeError(f"list indices must be integers or slices, not {type(key).__name__}")
        if kind is not dict and kind is not list:
            raise TypeError(f"'{kind.__name__}' object is not subscriptable")
        value = value[key]
    return value


def encode_error(exc: Exception, command: str) -> bytes:
    """The payload of an error reply: the exception's arguments (or its message when they cannot travel)."""
    if error_code(exc) == error_code(ServerError()):
        logger.warning("command %s failed unexpectedly: %s", command, type(exc).__name__)
        return encode_value([_shorten(f"{type(exc).__name__}: {exc}")])
    try:
        body = encode_value(list(exc.args))
    except TypeError:
        body = b""
    if not body or len(body) > _MAX_ERROR_PAYLOAD:  # e.g. ValueError('<80 MB repr> is not in list')
        body = encode_value([_shorten(str(exc))])
    return body


def decode_error(payload: bytes) -> list[Any]:
    """The arguments of an error reply built by ``encode_error``."""
    args = decode_value(payload)
    return args if type(args) is list else [str(args)]


def _shorten(text: str, limit: int = 1000) -> str:
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more characters)"


def kind_name(table: Table) -> str:
    """The public class name for a table: ``CyberDict`` or ``CyberList``."""
    return "CyberDict" if type(table) is dict else "CyberList"


def _check_arity(spec: CommandSpec, n: int) -> None:
    if not spec.min_args <= n <= spec.max_args:
        raise TypeError(f"{spec.name} takes {spec.min_args}..{spec.max_args} arguments, got {n}")


# ---- database-level commands ---------------------------------------------------------------------------------

def _db_ping(store: Store) -> bool:
    return True


def _db_create(store: Store, name: Any, kind: Any, content: Any, options: Any = None) -> None:
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise TypeError(f"a table name must be a non-empty str of at most {MAX_NAME_LENGTH} characters")
    expected = KIND_TYPES.get(kind)
    if expected is None:
        raise ValueError(f"unknown table kind {kind!r}")
    if type(content) is not expected:
        raise TypeError(f"the content of a {kind_name(expected())} must be a {expected.__name__}")
    bounds = check_options(kind, options)
    if store.get(name) is not None:
        raise TableExistsError(f"a table named {name!r} already exists")
    table: Any = content  # checked against `expected` above
    if bounds:  # content over the bound keeps its last items, as deque(content, maxlen) and inserting in order
        meta = TableMeta(**bounds)
        if type(table) is list:
            del table[:max(0, len(table) - bounds["maxlen"])]
        else:
            for key in list(table)[:max(0, len(table) - bounds["maxsize"])]:
                del table[key]
            meta.reconcile(table)
        store._meta[name] = meta
    store._add(name, table)


def _db_check(store: Store, name: Any, kind: Any) -> None:
    if kind not in KIND_TYPES:
        raise ValueError(f"unknown table kind {kind!r}")
    store.table(name, kind)


def _db_tables(store: Store) -> list[tuple[str, str]]:
    return [(name, kind_name(table)) for name, table in store._tables.items()]


def _db_delete(store: Store, name: Any) -> None:
    try:
        del store._tables[name]
    except (KeyError, TypeError):
        raise TableNotFoundError(f"no table named {name!r}") from None
    store._versions.pop(name, None)
    store._meta.pop(name, None)


# ---- table commands that are not a single builtin method -----------------------------------------------------

def _dict_update(store: Store, table: dict[Any, Any], name: str, other: Any) -> None:
    if type(other) is not dict:
        raise TypeError("dict.update expects a dict on the wire")
    table.update(other)


def _dict_keys(store: Store, table: dict[Any, Any], name: str) -> list[Any]:
    return list(table)


def _dict_values(store: Store, table: dict[Any, Any], name: str) -> list[Any]:
    return list(table.values())


def _dict_items(store: Store, table: dict[Any, Any], name: str) -> list[tuple[Any, Any]]:
    return list(table.items())


def _dict_todict(store: Store, table: dict[Any, Any], name: str) -> dict[Any, Any]:
    return table


def _top_meta(store: Store, table: Any, name: str, what: str) -> TableMeta:
    """The meta of ``table`` (created if needed), which must be the table itself, not a value at a path."""
    if store._tables.get(name) is not table:
        raise TypeError(f"{what} applies to a table's own keys, not to a dict nested in it")
    meta = store._meta.get(name)
    if meta is None:
        meta = store._meta[name] = TableMeta()
    return meta


def _expiry_seconds(value: Any, what: str) -> float:
    if type(value) not in (int, float) or value != value:
        raise TypeError(f"{what} must be a number of seconds, not {type(value).__name__}")
    if value > MAX_EXPIRY:
        raise ValueError(f"{what} may be at most {MAX_EXPIRY:.0f} seconds")
    return float(value)


def _dict_set(store: Store, table: dict[Any, Any], name: str, key: Any, value: Any, ttl: Any = None) -> None:
    if ttl is None:
        table[key] = value
        meta = store._meta.get(name) if store._tables.get(name) is table else None
        if meta is not None:
            meta.clear_deadline(key)
        return
    seconds = _expiry_seconds(ttl, "ttl")
    if seconds <= 0:
        raise ValueError("ttl must be above 0")
    meta = _top_meta(store, table, name, "ttl")
    table[key] = value
    meta.set_deadline(key, store.now() + seconds)


def _dict_expire(store: Store, table: dict[Any, Any], name: str, key: Any, seconds: Any) -> None:
    meta = _top_meta(store, table, name, "expire()")
    seconds = _expiry_seconds(seconds, "seconds")
    if key not in table:
        raise KeyError(key)
    if seconds <= 0:
        meta.forget(table, key)
    else:
        meta.set_deadline(key, store.now() + seconds)


def _dict_ttl(store: Store, table: dict[Any, Any], name: str, key: Any) -> float | None:
    if store._tables.get(name) is not table:
        raise TypeError("ttl() applies to a table's own keys, not to a dict nested in it")
    if key not in table:
        raise KeyError(key)
    meta = store._meta.get(name)
    deadline = meta.expires.get(key) if meta is not None else None
    return None if deadline is None else max(0.0, deadline - store.now())


def _dict_persist(store: Store, table: dict[Any, Any], name: str, key: Any) -> bool:
    meta = _top_meta(store, table, name, "persist()")
    if key not in table:
        raise KeyError(key)
    return meta.clear_deadline(key)


def _key_of(spec: CommandSpec, args: list[Any]) -> Any:
    """The one table-level key a command looks at (the first step of a path), or _WHOLE."""
    if spec.path:
        path = args[1] if len(args) > 1 else None
        return path[0] if type(path) is list and path else _WHOLE
    if spec.suffix in KEYED and len(args) > 1:
        return args[1]
    return _WHOLE


def _incr(store: Store, container: Any, name: str, key: Any, amount: Any) -> Any:
    if type(amount) not in _NUMBERS:
        raise TypeError(f"incr() adds an int, float or Decimal, not {type(amount).__name__}")
    if type(container) is dict:
        current = container.get(key, 0)  # a missing key counts as 0
    elif type(key) is not int and type(key) is not bool:
        raise TypeError(f"list indices must be integers or slices, not {type(key).__name__}")
    else:
        current = container[key]
    if type(current) not in _NUMBERS:
        raise TypeError(f"incr() needs a number, but the value is a {type(current).__name__}")
    new = current + amount  # float + Decimal raises TypeError, as in Python
    if type(new) is int and new.bit_length() >= MAX_BIGINT_BYTES * 8:
        raise OverflowError(f"CyberDB stores ints of up to {MAX_BIGINT_BYTES * 8 - 1} bits")
    container[key] = new
    return new


def _slice(start: Any, stop: Any, step: Any) -> slice:
    for part in (start, stop, step):
        if part is not None and type(part) is not int:
            raise TypeError("slice indices must be integers or None")
    return slice(start, stop, step)


def _list_getslice(store: Store, table: list[Any], name: str, start: Any, stop: Any, step: Any) -> list[Any]:
    return table[_slice(start, stop, step)]


def _list_setslice(store: Store, table: list[Any], name: str, start: Any, stop: Any, step: Any,
                   values: Any) -> None:
    if type(values) is not list:
        raise TypeError("list.setslice expects a list on the wire")
    table[_slice(start, stop, step)] = values


def _list_delslice(store: Store, table: list[Any], name: str, start: Any, stop: Any, step: Any) -> None:
    del table[_slice(start, stop, step)]


def _list_extend(store: Store, table: list[Any], name: str, items: Any) -> None:
    if type(items) is not list:
        raise TypeError("list.extend expects a list on the wire")
    table.extend(items)


def _list_sort(store: Store, table: list[Any], name: str, reverse: Any) -> None:
    table.sort(reverse=bool(reverse))


def _list_imul(store: Store, table: list[Any], name: str, n: Any) -> None:
    if type(n) is not int:
        raise TypeError(f"can't multiply sequence by non-int of type '{type(n).__name__}'")
    if n > 1 and len(table) * n > MAX_LIST_ITEMS:
        raise ValueError(f"a CyberList may not grow beyond {MAX_LIST_ITEMS} items in one request")
    if n > 1 and any(type(item) in (dict, list, set) for item in table):
        # list *= n repeats references; a stored value must never be shared (a nested update through one copy
        # would show in the others, until a save and load separated them)
        original = table[:]
        for _ in range(n - 1):
            table.extend(copy.deepcopy(original))
        return
    table *= n


def _list_tolist(store: Store, table: list[Any], name: str) -> list[Any]:
    return table


def _list_snapshot(store: Store, table: list[Any], name: str) -> tuple[int, list[Any]]:
    return store.version(name), table


def _list_replace_if(store: Store, table: list[Any], name: str, version: Any, items: Any) -> bool:
    if type(items) is not list:
        raise TypeError("list.replace_if expects a list on the wire")
    if version != store.version(name):
        return False
    table[:] = items
    return True


# ---- locks (database level; leases are in the append-only log, on the wall clock) ---------------------------

def _lock_args(name: Any, ttl: Any) -> float:
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise TypeError(f"a lock name must be a non-empty str of at most {MAX_NAME_LENGTH} characters")
    if type(ttl) not in (int, float) or not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be a number of seconds above 0 and at most {MAX_TTL:.0f}")
    return float(ttl)


def _lock_acquire(store: Store, name: Any, ttl: Any) -> int | None:
    seconds = _lock_args(name, ttl)
    now = store.now()
    held = store._locks.get(name)
    if held is not None and held[1] > now:
        return None
    if len(store._locks) >= MAX_LOCKS:
        store._locks = {k: v for k, v in store._locks.items() if v[1] > now}
    token = store._new_token()
    store._locks[name] = (token, now + seconds)
    return token


def _lock_holder(store: Store, name: Any, token: Any) -> None:
    held = store._locks.get(name) if type(name) is str else None
    if held is None or held[0] != token or held[1] <= store.now():
        raise LockLostError(f"lock {name!r} is no longer held with token {token!r} (its lease ended or "
                            "another holder took it)")


def _lock_release(store: Store, name: Any, token: Any) -> None:
    _lock_holder(store, name, token)
    del store._locks[name]


def _lock_extend(store: Store, name: Any, token: Any, ttl: Any) -> None:
    seconds = _lock_args(name, ttl)
    _lock_holder(store, name, token)
    store._locks[name] = (token, store.now() + seconds)


def _copy(store: Store, table: Any, name: str) -> Any:
    return table


def _db_batch(store: Store, steps: Any) -> Encoded:
    return _undoing_moves(store, steps, False)


def _db_speculate(store: Store, steps: Any) -> Encoded:
    return _undoing_moves(store, steps, True)


def _undoing_moves(store: Store, steps: Any, speculate: bool) -> Encoded:
    # A batch's journal saves the table of each step before it runs; pop(into=) also appends to another table,
    # which _list_bpop records here (a copy of it and its version before the batch, the first time the batch
    # touches it) so that it is put back too, after the journal's rollback.  Batches do not nest.
    moves: list[tuple[str, list[Any], int]] = []
    store._moves, store._batch_clock = moves, store.clock()
    try:
        result = run_steps(store, steps, speculate=speculate, replay=store.replaying and not speculate)
    except BaseException:
        _undo_moves(store, moves)
        raise
    finally:
        store._moves = None
    if speculate:
        _undo_moves(store, moves)
    return result


def _undo_moves(store: Store, moves: list[tuple[str, list[Any], int]]) -> None:
    # in place, after the journal's rollback (which may have restored `into` to a state after the move); a copy,
    # not a length, as a bounded list (maxlen) drops items from its front when one is appended
    for name, saved, version in reversed(moves):
        table = store.get(name)
        if type(table) is list:
            table[:] = saved
        store.set_version(name, version)


def _list_bpop(store: Store, table: list[Any], name: str, index: Any, timeout: Any, into: Any) -> Any:
    """``list.pop(index)`` that may wait for an item (``timeout`` seconds) and may move it to table ``into``."""
    if store.get(name) is not table:
        raise TypeError("pop(timeout=, into=) works on a CyberList table, not on a list inside one")
    index = operator.index(index)
    if timeout is not None and (type(timeout) not in (int, float) or not timeout >= 0):
        raise ValueError(f"timeout must be None or a number of seconds >= 0, not {timeout!r}")
    target: list[Any] | None = None
    if into is not None:  # checked before anything is popped
        target = store.table(into, LIST)
    if not table:
        if timeout and store.may_block:  # the version clock as it was: nothing ran (see Store.outcome)
            raise WouldBlock(name, float(timeout), store.clock(), store.version(name))
        raise IndexError("pop from empty list")
    position = index + len(table) if index < 0 else index
    item = table.pop(index)
    if target is None:
        return item
    moves = store._moves
    if moves is not None and into != name and store.version(into) <= store._batch_clock:
        moves.append((into, target[:], store.version(into)))  # in a batch: see _undoing_moves
    try:
        store.apply(_APPEND, [into, item])  # the store's own append: a bounded list's rules apply to it
    except BaseException:
        table.insert(position, item)  # moved or not moved, never lost
        raise
    return item


def _db_pipeline(store: Store, steps: Any) -> Encoded:
    return run_pipeline(store, steps)


def _db_slowlog(store: Store, count: Any = None) -> list[dict[str, Any]]:
    if count is not None and (type(count) is not int or count < 0):
        raise TypeError("count must be an int >= 0")
    entries = list(store.slowlog)
    return entries[::-1][:count] if count is not None else entries[::-1]


def _db_publish(store: Store, channel: Any, value: Any) -> int:
    if type(channel) is not str or not 0 < len(channel) <= MAX_NAME_LENGTH:
        raise TypeError(f"a channel must be a non-empty str of at most {MAX_NAME_LENGTH} characters")
    subscribers = store.channels.get(channel)
    if not subscribers:
        return 0
    store.outbox.append((channel, encode_value([channel, value])))  # encoded once for all subscribers
    return len(subscribers)


def _per_connection(store: Store, channels: Any) -> None:
    raise TypeError("db.subscribe and db.unsubscribe act on a connection: send them on their own")


_HANDLERS: dict[str, Callable[..., Any]] = {
    "db.publish": _db_publish,
    "db.subscribe": _per_connection,
    "db.unsubscribe": _per_connection,
    "db.slowlog": _db_slowlog,
    "db.batch": _db_batch,
    "db.speculate": _db_speculate,
    "db.pipeline": _db_pipeline,
    "lock.acquire": _lock_acquire,
    "lock.release": _lock_release,
    "lock.extend": _lock_extend,
    "dict.incr": _incr,
    "dict.set": _dict_set,
    "dict.expire": _dict_expire,
    "dict.ttl": _dict_ttl,
    "dict.persist": _dict_persist,
    "list.incr": _incr,
    "dict.copy": _copy,
    "list.copy": _copy,
    "db.ping": _db_ping,
    "db.create": _db_create,
    "db.check": _db_check,
    "db.tables": _db_tables,
    "db.delete": _db_delete,
    "dict.update": _dict_update,
    "dict.keys": _dict_keys,
    "dict.values": _dict_values,
    "dict.items": _dict_items,
    "dict.todict": _dict_todict,
    "list.getslice": _list_getslice,
    "list.setslice": _list_setslice,
    "list.delslice": _list_delslice,
    "list.extend": _list_extend,
    "list.sort": _list_sort,
    "list.imul": _list_imul,
    "list.tolist": _list_tolist,
    "list.snapshot": _list_snapshot,
    "list.replace_if": _list_replace_if,
    "list.bpop": _list_bpop,
}

# Per command id: (table type or None, min args, max args, function, whether it is a builtin method).  Built once
# from the command table so that execute() does no lookups by name.
_PLANS: dict[int, tuple[type | None, int, int, Callable[..., Any], bool]] = {}
for _spec in COMMANDS:
    _type = KIND_TYPES[_spec.kind] if _spec.kind is not None else None
    if _spec.path:  # the table may be of either kind; the inner command's own plan checks the arguments
        _PLANS[_spec.op] = (_type, 1, 1 << 30, _db_ping, False)
    elif _spec.method is not None:
        assert _type is not None, _spec.name
        _PLANS[_spec.op] = (_type, _spec.min_args, _spec.max_args, getattr(_type, _spec.method), True)
    else:
        assert _spec.name in _HANDLERS, f"command without an implementation: {_spec.name}"
        _PLANS[_spec.op] = (_type, _spec.min_args, _spec.max_args, _HANDLERS[_spec.name], False)

# batch.py builds on this module (Encoded, walk, outcome); imported last so that either import order works
from .batch import run_pipeline, run_steps  # noqa: E402
from .meta import KEYED, MAX_EXPIRY, TOUCHING, TableMeta, check_options  # noqa: E402
