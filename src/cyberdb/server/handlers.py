"""The commands that are not a single builtin ``dict``/``list`` method: one function per command name.

Each handler takes the store, then (for a table command) the table or the container at the command's path and
the table's name, then the command's decoded arguments; it validates what it is given (the wire may carry any
value) and raises Python's own exceptions for data errors, as the builtin methods do.  ``Store`` runs them
through the plans it builds from ``HANDLERS``.  No I/O in this module.
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..codec import MAX_BIGINT_BYTES, encode_value
from ..commands import BY_NAME, LIST
from ..errors import LockLostError, TableExistsError, TableNotFoundError
from .batch import run_pipeline, run_steps
from .meta import MAX_EXPIRY, TableMeta, check_options
from .scan import scan_dict, scan_list
from .store import KIND_TYPES, MAX_NAME_LENGTH, Encoded, WouldBlock, kind_name

if TYPE_CHECKING:
    from .store import Store

__all__ = ["HANDLERS", "MAX_LIST_ITEMS", "lock_args"]

MAX_LIST_ITEMS = 1 << 27  # `l *= n` may not build a list longer than this (one request must not eat the RAM)
MAX_LOCKS = 100_000  # expired leases are swept when there are more than this
MAX_TTL = 365 * 24 * 3600.0
_NUMBERS = (int, float, Decimal)
_APPEND = BY_NAME["list.append"]


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

def lock_args(name: Any, ttl: Any) -> float:
    """The checked ``(name, ttl)`` of a lock command: its lease in seconds (shared with the Redis backend)."""
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise TypeError(f"a lock name must be a non-empty str of at most {MAX_NAME_LENGTH} characters")
    if type(ttl) not in (int, float) or not 0 < ttl <= MAX_TTL:
        raise ValueError(f"ttl must be a number of seconds above 0 and at most {MAX_TTL:.0f}")
    return float(ttl)


def _lock_acquire(store: Store, name: Any, ttl: Any) -> int | None:
    seconds = lock_args(name, ttl)
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
    seconds = lock_args(name, ttl)
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


def _dict_scan(store: Store, table: dict[Any, Any], name: str, cursor: Any, what: Any) -> Encoded:
    return Encoded(scan_dict(store, table, cursor, what))


def _list_scan(store: Store, table: list[Any], name: str, cursor: Any, what: Any) -> Encoded:
    return Encoded(scan_list(store, table, cursor, what))


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


def _db_info(store: Store) -> None:  # the network layer answers it (server/stats.py); not a batch step
    raise TypeError("db.info reports the server's state: send it on its own, not in a batch or pipeline")


HANDLERS: dict[str, Callable[..., Any]] = {
    "db.publish": _db_publish,
    "db.subscribe": _per_connection,
    "db.unsubscribe": _per_connection,
    "db.info": _db_info,
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
    "dict.scan": _dict_scan,
    "list.scan": _list_scan,
}
