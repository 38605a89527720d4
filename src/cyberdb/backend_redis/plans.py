"""One plan per command: how a CommandSpec of :mod:`cyberdb.commands` runs on Redis.  No sockets here: a plan
talks to Redis only through its :class:`Runner` (``cmd``/``fcall``), so the same plans serve one server and a
cluster.

A plan gets the table's keys and the command's arguments and returns the command's result, unshaped (the
executor applies ``spec.reply``), raising Python's own exceptions exactly as the CyberDB server does.  Reads
are native commands (HGET, HEXISTS, HLEN, LINDEX, LLEN, LRANGE); writes are functions of ``library.lua``, one
call each, so every command is atomic.  A read that finds nothing asks whether the table still exists (only
then), so a handle of a deleted table fails loudly as on the server.

``incr`` of an int (below 2**53) or a float by an int or a float is one library call; any other ``incr``, and
operations whose Python semantics are long (slice assignment, ``sort``, ``*=``), run the CyberDB
server's own handler on a copy read from Redis and write the result back with a compare-and-set on the
table's version (or the one value), retried on conflict: exact, and O(len) like the server's.

The lock commands (``LOCK_PLANS``, used by the unchanged :class:`cyberdb.lock.Lock`) belong to no table: each
is one library call in the slot of the lock's own name, given the router's ``execute(slot, *args)``.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from ..canon import canon, canon_parts, element, element_value
from ..codec import decode_value, encode_value
from ..commands import LIST
from ..errors import ConcurrentModificationError, LockLostError
from ..server.handlers import HANDLERS, lock_args
from ..server.scan import HEAD_BUDGET, SCAN_BUDGET, WHOLE
from .layout import TableKeys, lock_keys

__all__ = ["CAS_ATTEMPTS", "LOCK_PLANS", "PLANS", "Runner", "canon", "element", "element_value", "encode_key"]

CAS_ATTEMPTS = 100  # compare-and-set retries of one command before ConcurrentModificationError
_MISSING: Any = object()
PIECE_ITEMS = 1000  # keys per piece of a dict scan beyond WHOLE (and at most about SCAN_BUDGET bytes)
HEAD_ITEMS = 256  # items repr() asks for (at most HEAD_BUDGET bytes of them are shown)
_FAST_LIMIT = 1 << 53  # ints the library's incr adds itself (Lua numbers are doubles)
_INDEX_LIMIT = 1 << 62  # beyond any list length: indexes past it are clamped (Lua numbers are doubles)


class Runner(Protocol):
    """What a plan needs from the executor."""

    def cmd(self, t: TableKeys, *args: Any) -> Any:
        """A native command in the table's slot."""

    def fcall(self, t: TableKeys, function: str, keys: list[bytes], *args: Any) -> Any:
        """A write function of the library."""

    def fcall_ro(self, t: TableKeys, function: str, keys: list[bytes], *args: Any) -> Any:
        """A read-only function of the library."""

    def check_table(self, t: TableKeys) -> None:
        """Raise TableNotFoundError/WrongTableTypeError unless the table exists with its kind."""


def encode_key(key: Any) -> tuple[bytes, bytes]:
    """(canon, key bytes or b"" when they are the same) of a dict key; dict's TypeError if unhashable."""
    hash(key)
    c, body = canon_parts(key)
    return c, b"" if body is None else body


def _clamp(i: int) -> int:
    return int(max(-_INDEX_LIMIT, min(_INDEX_LIMIT, i)))


# ---- CyberDict ------------------------------------------------------------------------------------------------

def _dict_getitem(r: Runner, t: TableKeys, key: Any) -> Any:
    c, _ = encode_key(key)
    raw = r.cmd(t, "HGET", t.v, c)
    if raw is None:
        r.check_table(t)
        raise KeyError(key)
    return decode_value(raw)


def _dict_get(r: Runner, t: TableKeys, key: Any, default: Any = None) -> Any:
    c, _ = encode_key(key)
    raw = r.cmd(t, "HGET", t.v, c)
    if raw is None:
        r.check_table(t)
        return default
    return decode_value(raw)


def _dict_contains(r: Runner, t: TableKeys, key: Any) -> bool:
    c, _ = encode_key(key)
    if r.cmd(t, "HEXISTS", t.v, c):
        return True
    r.check_table(t)
    return False


def _dict_len(r: Runner, t: TableKeys) -> int:
    n = int(r.cmd(t, "HLEN", t.v))
    if n == 0:
        r.check_table(t)
    return n


def _dict_setitem(r: Runner, t: TableKeys, key: Any, value: Any) -> None:
    c, kb = encode_key(key)
    r.fcall(t, "cy_dict_set", t.dict_keys, c, kb, encode_value(value))


def _dict_set(r: Runner, t: TableKeys, key: Any, value: Any, ttl: Any = None) -> None:
    if ttl is not None:
        from .client import NotSupportedError  # noqa: PLC0415 - a cycle otherwise

        raise NotSupportedError("dict.set with a ttl (expiring keys) is not supported on the Redis backend yet")
    _dict_setitem(r, t, key, value)


def _dict_delitem(r: Runner, t: TableKeys, key: Any) -> None:
    c, _ = encode_key(key)
    if not r.fcall(t, "cy_dict_del", t.dict_keys, c):
        raise KeyError(key)


def _dict_setdefault(r: Runner, t: TableKeys, key: Any, default: Any = None) -> Any:
    c, kb = encode_key(key)
    return decode_value(r.fcall(t, "cy_dict_setdefault", t.dict_keys, c, kb, encode_value(default)))


def _dict_pop(r: Runner, t: TableKeys, key: Any, default: Any = _MISSING) -> Any:
    try:
        c, _ = encode_key(key)
    except TypeError:
        if _dict_len(r, t):
            raise
        c = b""  # dict.pop on an empty dict does not hash the key: KeyError or the default, as below
    raw = r.fcall(t, "cy_dict_pop", t.dict_keys, c)
    if raw is None:
        if default is _MISSING:
            raise KeyError(key)
        return default
    return decode_value(raw)


def _dict_popitem(r: Runner, t: TableKeys) -> tuple[Any, Any]:
    pair = r.fcall(t, "cy_dict_popitem", t.dict_keys)
    if pair is None:
        raise KeyError("popitem(): dictionary is empty")
    return decode_value(pair[0]), decode_value(pair[1])


def _dict_clear(r: Runner, t: TableKeys) -> None:
    r.fcall(t, "cy_dict_clear", t.dict_keys)


def _dict_update(r: Runner, t: TableKeys, other: Any) -> None:
    if type(other) is not dict:
        raise TypeError("dict.update expects a dict on the wire")
    args: list[bytes] = []
    for key, value in other.items():
        c, kb = encode_key(key)
        args += (c, kb, encode_value(value))
    r.fcall(t, "cy_dict_update", t.dict_keys, *args)


def _dict_whole(r: Runner, t: TableKeys) -> dict[Any, Any]:
    flat = r.fcall_ro(t, "cy_dict_items", t.dict_keys)
    return {decode_value(flat[i]): decode_value(flat[i + 1]) for i in range(0, len(flat), 2)}


def _dict_keys(r: Runner, t: TableKeys) -> list[Any]:
    return list(_dict_whole(r, t))


def _dict_values(r: Runner, t: TableKeys) -> list[Any]:
    return list(_dict_whole(r, t).values())


def _dict_items(r: Runner, t: TableKeys) -> list[tuple[Any, Any]]:
    return list(_dict_whole(r, t).items())


def _dict_scan(r: Runner, t: TableKeys, cursor: Any, what: Any) -> list[Any]:
    # as server/scan.py: a table of at most WHOLE keys in one piece (one atomic read), a bigger one in pieces
    # of about SCAN_BUDGET bytes in insertion order; the cursor is (last score read, the counter when the scan
    # began), so each key present throughout is returned once and keys added after the scan began are not
    if what not in ("items", "keys", "values", "head"):
        if what == "list":
            raise TypeError("a dict has no tolist(): use todict()")
        raise ValueError(f"what must be one of items, keys, values, head, not {what!r}")
    if what == "head":
        flat = r.fcall_ro(t, "cy_dict_scan", t.dict_keys, "", "", 0, HEAD_BUDGET, HEAD_ITEMS)
        head = _pairs(flat)
        left_out = None if flat[0] == b"" else _dict_len(r, t) - len(head)
        return [left_out, [head]]
    if cursor == 0:
        after, upto = "", ""
    elif type(cursor) is list and len(cursor) == 2 and all(type(part) is str for part in cursor):
        after, upto = cursor
    else:
        raise TypeError("a dict scan's cursor is 0 or the pair of its last reply")
    flat = r.fcall_ro(t, "cy_dict_scan", t.dict_keys, after, upto, WHOLE, SCAN_BUDGET, PIECE_ITEMS)
    piece = _pairs(flat)
    part: Any = piece if what == "items" else list(piece if what == "keys" else piece.values())
    return [None if flat[0] == b"" else [flat[0].decode(), flat[1].decode()], [part]]


def _pairs(flat: list[bytes]) -> dict[Any, Any]:
    return {decode_value(flat[i]): decode_value(flat[i + 1]) for i in range(2, len(flat), 2)}


def _fast_amount(amount: Any) -> bool:
    """Whether the library may add ``amount`` itself (an int below 2**53 in magnitude, or a float)."""
    return type(amount) is float or type(amount) is int and -_FAST_LIMIT < amount < _FAST_LIMIT


def _check_amount(amount: Any) -> None:
    # first, as the server's incr handler checks it (before the key or index)
    if type(amount) not in (int, float, Decimal):
        raise TypeError(f"incr() adds an int, float or Decimal, not {type(amount).__name__}")


def _dict_incr(r: Runner, t: TableKeys, key: Any, amount: Any) -> Any:
    _check_amount(amount)
    c, kb = encode_key(key)
    if _fast_amount(amount):  # one call: the library adds ints and floats as Python does
        raw = r.fcall(t, "cy_dict_incr", t.dict_keys, c, kb, encode_value(amount))
        if raw is not None:
            return decode_value(raw)
    for _ in range(CAS_ATTEMPTS):
        raw = r.cmd(t, "HGET", t.v, c)
        local = {} if raw is None else {key: decode_value(raw)}
        new = HANDLERS["dict.incr"](None, local, t.name, key, amount)  # the server's own rules and errors
        expected = (b"0", b"") if raw is None else (b"1", raw)
        if r.fcall(t, "cy_dict_cas", t.dict_keys, c, kb, *expected, encode_value(new)):
            return new
    raise ConcurrentModificationError(f"CyberDict {t.name!r}: incr kept losing to concurrent writers")


# ---- CyberList ------------------------------------------------------------------------------------------------

def _decoded(raw: list[bytes]) -> list[Any]:
    return [element_value(item) for item in raw]


def _list_len(r: Runner, t: TableKeys) -> int:
    n = int(r.cmd(t, "LLEN", t.lst))
    if n == 0:
        r.check_table(t)
    return n


def _list_getitem(r: Runner, t: TableKeys, index: Any) -> Any:
    if type(index) is not int and type(index) is not bool:
        raise TypeError(f"list indices must be integers or slices, not {type(index).__name__}")
    raw = r.cmd(t, "LINDEX", t.lst, _clamp(index))
    if raw is None:
        r.check_table(t)
        raise IndexError("list index out of range")
    return element_value(raw)


def _slice(start: Any, stop: Any, step: Any) -> slice:
    for part in (start, stop, step):
        if part is not None and type(part) is not int:
            raise TypeError("slice indices must be integers or None")
    if step == 0:
        raise ValueError("slice step cannot be zero")
    return slice(start, stop, step)


def _list_getslice(r: Runner, t: TableKeys, start: Any, stop: Any, step: Any) -> list[Any]:
    s = _slice(start, stop, step)
    for _ in range(CAS_ATTEMPTS):
        n = _list_len(r, t)
        got = r.fcall_ro(t, "cy_list_slice", t.list_keys, *s.indices(n), n)
        if got is not None:  # None: the length changed between LLEN and the slice
            return _decoded(got)
    raise ConcurrentModificationError(f"CyberList {t.name!r}: the slice kept changing length under us")


def _list_tolist(r: Runner, t: TableKeys) -> list[Any]:
    raw = r.cmd(t, "LRANGE", t.lst, 0, -1)
    if not raw:
        r.check_table(t)
    return _decoded(raw)


def _list_scan(r: Runner, t: TableKeys, cursor: Any, what: Any) -> list[Any]:
    # as server/scan.py: the cursor is an index; a list of at most WHOLE items is one piece (one atomic read)
    if what not in ("list", "head"):
        raise TypeError("a list has no todict(), keys(), values() or items(): use tolist()")
    if what == "head":
        raw = r.cmd(t, "LRANGE", t.lst, 0, HEAD_ITEMS - 1)
        shown = size = 0
        for item in raw:
            size += len(item)
            if shown and size > HEAD_BUDGET:
                break
            shown += 1
        if not raw:
            r.check_table(t)
        left_out = None if shown < HEAD_ITEMS and shown == len(raw) else _list_len(r, t) - shown
        return [left_out or None, [_decoded(raw[:shown])]]
    if type(cursor) is not int or cursor < 0:
        raise TypeError("a list scan's cursor is an index >= 0")
    size = WHOLE or PIECE_ITEMS
    raw = r.cmd(t, "LRANGE", t.lst, cursor, cursor + size)
    if not raw and cursor == 0:
        r.check_table(t)
    if len(raw) > size:
        return [cursor + size, [_decoded(raw[:size])]]
    return [None, [_decoded(raw)]]


def _list_setitem(r: Runner, t: TableKeys, index: Any, value: Any) -> None:
    if type(index) is not int and type(index) is not bool:
        raise TypeError(f"list indices must be integers or slices, not {type(index).__name__}")
    r.fcall(t, "cy_list_set", t.list_keys, _clamp(index), element(value))


def _list_delitem(r: Runner, t: TableKeys, index: Any) -> None:
    if type(index) is not int and type(index) is not bool:
        raise TypeError(f"list indices must be integers or slices, not {type(index).__name__}")
    r.fcall(t, "cy_list_del", t.list_keys, _clamp(index))


def _list_append(r: Runner, t: TableKeys, value: Any) -> None:
    r.fcall(t, "cy_list_push", t.list_keys, element(value))


def _list_extend(r: Runner, t: TableKeys, items: Any) -> None:
    if type(items) is not list:
        raise TypeError("list.extend expects a list on the wire")
    r.fcall(t, "cy_list_push", t.list_keys, *[element(item) for item in items])


def _list_insert(r: Runner, t: TableKeys, index: Any, value: Any) -> None:
    if type(index) is not int and type(index) is not bool:
        raise TypeError(f"'{type(index).__name__}' object cannot be interpreted as an integer")
    r.fcall(t, "cy_list_insert", t.list_keys, _clamp(index), element(value))


def _list_pop(r: Runner, t: TableKeys, index: Any = -1) -> Any:
    if type(index) is not int and type(index) is not bool:
        raise TypeError(f"'{type(index).__name__}' object cannot be interpreted as an integer")
    return element_value(r.fcall(t, "cy_list_pop", t.list_keys, _clamp(index)))


def _list_remove(r: Runner, t: TableKeys, value: Any) -> None:
    r.fcall(t, "cy_list_remove", t.list_keys, canon(value))


def _list_count(r: Runner, t: TableKeys, value: Any) -> int:
    return int(r.fcall_ro(t, "cy_list_find", t.list_keys, canon(value), "count", 0, ""))


def _list_contains(r: Runner, t: TableKeys, value: Any) -> bool:
    return int(r.fcall_ro(t, "cy_list_find", t.list_keys, canon(value), "index", 0, "")) >= 0


def _list_index(r: Runner, t: TableKeys, value: Any, start: Any = 0, stop: Any = None) -> int:
    for bound in (start, stop):
        if bound is not None and type(bound) is not int and type(bound) is not bool:
            raise TypeError("slice indices must be integers or have an __index__ method")
    found = int(r.fcall_ro(t, "cy_list_find", t.list_keys, canon(value), "index", _clamp(start),
                           "" if stop is None else _clamp(stop)))
    if found < 0:
        raise ValueError(f"{value!r} is not in list")
    return found


def _list_reverse(r: Runner, t: TableKeys) -> None:
    r.fcall(t, "cy_list_reverse", t.list_keys)


def _list_clear(r: Runner, t: TableKeys) -> None:
    r.fcall(t, "cy_list_clear", t.list_keys)


def _list_snapshot(r: Runner, t: TableKeys) -> tuple[int, list[Any]]:
    raw = r.fcall_ro(t, "cy_list_snapshot", t.list_keys)
    return int(raw[0]), _decoded(raw[1:])


def _list_replace_if(r: Runner, t: TableKeys, version: Any, items: Any) -> bool:
    if type(items) is not list:
        raise TypeError("list.replace_if expects a list on the wire")
    if type(version) is not int:
        return False
    return bool(r.fcall(t, "cy_list_replace_if", t.list_keys, version, *[element(item) for item in items]))


def _rewrite(r: Runner, t: TableKeys, change: Callable[[list[Any]], Any]) -> Any:
    """Run ``change`` on a copy of the list and write it back if the list did not change meanwhile."""
    for _ in range(CAS_ATTEMPTS):
        version, items = _list_snapshot(r, t)
        before = list(items)
        try:
            result = change(items)  # Python's own errors
        except Exception:
            # a sort that failed half-way leaves the list partly sorted, on the server as in Python: store that
            changed = len(items) != len(before) or any(a is not b for a, b in zip(items, before, strict=True))
            if changed and not _list_replace_if(r, t, version, items):
                continue
            raise
        if _list_replace_if(r, t, version, items):
            return result
    raise ConcurrentModificationError(f"CyberList {t.name!r} kept changing under a read-modify-write")


def _server_handler(name: str) -> Callable[..., Any]:
    handler = HANDLERS[name]

    def plan(r: Runner, t: TableKeys, *args: Any) -> Any:
        return _rewrite(r, t, lambda items: handler(None, items, t.name, *args))

    return plan


def _list_incr(r: Runner, t: TableKeys, index: Any, amount: Any) -> Any:
    _check_amount(amount)
    if type(index) is not int and type(index) is not bool:
        raise TypeError(f"list indices must be integers or slices, not {type(index).__name__}")
    index = _clamp(index)
    if _fast_amount(amount):
        raw = r.fcall(t, "cy_list_incr", t.list_keys, index, encode_value(amount))
        if raw is not None:
            return element_value(raw)
    for _ in range(CAS_ATTEMPTS):
        raw = r.cmd(t, "LINDEX", t.lst, index)
        if raw is None:
            r.check_table(t)
            raise IndexError("list index out of range")
        local = [element_value(raw)]
        new = HANDLERS["list.incr"](None, local, t.name, 0, amount)
        if r.fcall(t, "cy_list_cas_item", t.list_keys, index, raw, element(new)):
            return new
    raise ConcurrentModificationError(f"CyberList {t.name!r}: incr kept losing to concurrent writers")


PLANS: dict[str, Callable[..., Any]] = {
    "dict.getitem": _dict_getitem,
    "dict.setitem": _dict_setitem,
    "dict.delitem": _dict_delitem,
    "dict.contains": _dict_contains,
    "dict.len": _dict_len,
    "dict.get": _dict_get,
    "dict.setdefault": _dict_setdefault,
    "dict.update": _dict_update,
    "dict.pop": _dict_pop,
    "dict.popitem": _dict_popitem,
    "dict.clear": _dict_clear,
    "dict.keys": _dict_keys,
    "dict.values": _dict_values,
    "dict.items": _dict_items,
    "dict.todict": _dict_whole,
    "dict.copy": _dict_whole,
    "dict.incr": _dict_incr,
    "dict.set": _dict_set,
    "dict.scan": _dict_scan,
    "list.getitem": _list_getitem,
    "list.getslice": _list_getslice,
    "list.setitem": _list_setitem,
    "list.setslice": _server_handler("list.setslice"),
    "list.delitem": _list_delitem,
    "list.delslice": _server_handler("list.delslice"),
    "list.len": _list_len,
    "list.contains": _list_contains,
    "list.append": _list_append,
    "list.extend": _list_extend,
    "list.insert": _list_insert,
    "list.pop": _list_pop,
    "list.remove": _list_remove,
    "list.count": _list_count,
    "list.index": _list_index,
    "list.reverse": _list_reverse,
    "list.sort": _server_handler("list.sort"),
    "list.clear": _list_clear,
    "list.imul": _server_handler("list.imul"),
    "list.tolist": _list_tolist,
    "list.copy": _list_tolist,
    "list.snapshot": _list_snapshot,
    "list.replace_if": _list_replace_if,
    "list.incr": _list_incr,
    "list.scan": _list_scan,
}
assert all(name.startswith(LIST) or name.startswith("dict.") for name in PLANS)


# ---- locks ----------------------------------------------------------------------------------------------------

def _lease_ms(name: Any, ttl: Any) -> int:
    seconds = lock_args(name, ttl)  # the server's own checks and errors (name, then ttl)
    return max(1, int(seconds * 1000 + 0.999))  # PX takes whole milliseconds: round the lease up


def _lock_lost(name: Any, token: Any) -> LockLostError:
    return LockLostError(f"lock {name!r} is no longer held with token {token!r} (its lease ended or "
                         "another holder took it)")  # the server's message (server/handlers.py)


def _lock_acquire(execute: Callable[..., Any], name: Any, ttl: Any) -> int | None:
    ms = _lease_ms(name, ttl)
    slot, keys = lock_keys(name)
    token = execute(slot, "FCALL", "cy_lock_acquire", len(keys), *keys, ms)
    return None if token is None else int(token)


def _lock_release(execute: Callable[..., Any], name: Any, token: Any) -> None:
    if type(name) is not str or not name or type(token) is not int:
        raise _lock_lost(name, token)
    slot, keys = lock_keys(name)
    if not execute(slot, "FCALL", "cy_lock_release", 1, keys[0], str(token)):
        raise _lock_lost(name, token)


def _lock_extend(execute: Callable[..., Any], name: Any, token: Any, ttl: Any) -> None:
    ms = _lease_ms(name, ttl)
    if type(token) is not int:
        raise _lock_lost(name, token)
    slot, keys = lock_keys(name)
    if not execute(slot, "FCALL", "cy_lock_extend", 1, keys[0], str(token), ms):
        raise _lock_lost(name, token)


LOCK_PLANS: dict[str, Callable[..., Any]] = {
    "lock.acquire": _lock_acquire,
    "lock.release": _lock_release,
    "lock.extend": _lock_extend,
}
