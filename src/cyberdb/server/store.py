"""The tables in memory and the execution of one command.  Plain synchronous code: no I/O, no await.

``Store.execute`` runs a command to completion; the server calls it from its single event loop, so every
command is atomic with respect to every other.  Only the commands of :mod:`cyberdb.commands` can run: a spec
with ``method`` calls that builtin ``dict``/``list`` method, the others call the function registered under the
spec's name in ``handlers.HANDLERS``.  A command at a path runs on the dict or list found by
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
import logging
import time
from collections.abc import Callable
from typing import Any

from ..codec import MAX_DEPTH, decode_value, depth_exceeds, encode_value
from ..commands import BY_ID, COMMANDS, DICT, LIST, MAX_PATH, PATH_BASE, CommandSpec, twin
from ..errors import (
    ServerError,
    TableNotFoundError,
    WrongTableTypeError,
    error_code,
)
from ..protocol import HEADER_SIZE, MAX_FRAME

__all__ = ["STATUS_OK", "Clocks", "Encoded", "Store", "WouldBlock", "decode_error", "encode_error",
           "walk"]

logger = logging.getLogger(__name__)
MAX_NAME_LENGTH = 1024
KIND_TYPES: dict[str, type] = {DICT: dict, LIST: list}
STATUS_OK = 0
_MAX_REPLY_PAYLOAD = MAX_FRAME - HEADER_SIZE - 64
_MAX_ERROR_PAYLOAD = 64 << 10  # an error's arguments (e.g. the missing key) are sent back up to this size
_BATCH_OP = next(spec.op for spec in COMMANDS if spec.name == "db.batch")
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
        self.cursors = Cursors()  # the key snapshots of dict scans in progress (see scan.py)

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

    def in_batch(self) -> bool:
        """True while an atomic batch (or a transaction's speculation) runs."""
        return self._moves is not None

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


def _key_of(spec: CommandSpec, args: list[Any]) -> Any:
    """The one table-level key a command looks at (the first step of a path), or _WHOLE."""
    if spec.path:
        path = args[1] if len(args) > 1 else None
        return path[0] if type(path) is list and path else _WHOLE
    if spec.suffix in KEYED and len(args) > 1:
        return args[1]
    return _WHOLE


# handlers.py (through batch.py) builds on this module; imported last, as they import names defined above
from .handlers import HANDLERS  # noqa: E402
from .meta import KEYED, TOUCHING, TableMeta  # noqa: E402
from .scan import Cursors  # noqa: E402

# Per command id: (table type or None, min args, max args, function, whether it is a builtin method).  Built once
# from the command table so that execute() does no lookups by name.
_PLANS: dict[int, tuple[type | None, int, int, Callable[..., Any], bool]] = {}
for _spec in COMMANDS:
    _type = KIND_TYPES[_spec.kind] if _spec.kind is not None else None
    if _spec.path:  # the table may be of either kind; the inner command's own plan checks the arguments
        _PLANS[_spec.op] = (_type, 1, 1 << 30, HANDLERS["db.ping"], False)
    elif _spec.method is not None:
        assert _type is not None, _spec.name
        _PLANS[_spec.op] = (_type, _spec.min_args, _spec.max_args, getattr(_type, _spec.method), True)
    else:
        assert _spec.name in HANDLERS, f"command without an implementation: {_spec.name}"
        _PLANS[_spec.op] = (_type, _spec.min_args, _spec.max_args, HANDLERS[_spec.name], False)
