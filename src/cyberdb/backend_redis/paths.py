"""Commands at a path (``ref()`` handles) on the Redis backend.  No sockets here (see :mod:`.plans`).

The CyberDB server's own :class:`~cyberdb.server.store.Store` runs the command on a local copy of what the path
starts from (the one top-level entry of a CyberDict, or a CyberList), so walking the path, the command's
semantics and its errors are exactly the server's; a write is then stored with a compare-and-set (the entry's
bytes for a dict, the list's version for a list), and everything runs again if the table changed meanwhile.
An empty path is the table itself: the plain command.  Costs: a dict entry is read and written whole (its size,
not the table's); a CyberList is read whole (O(n)) and one item written.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..codec import decode_value, encode_value
from ..commands import BY_ID, MAX_PATH, PATH_BASE, CommandSpec, twin
from ..errors import ConcurrentModificationError
from ..server.store import Encoded, Store
from .layout import TableKeys
from .plans import CAS_ATTEMPTS, PLANS, Runner, element, element_value, encode_key

__all__ = ["run_at_path"]

_NAMES = {"dict": "dict", "list": "list"}


def _digest(raw: bytes) -> int:
    """The "version" ``list.snapshot`` at a path reports: the entry's bytes, hashed (replace_if compares it)."""
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def run_at_path(r: Runner, t: TableKeys, spec: CommandSpec, args: list[Any]) -> Any:
    """Run ``spec`` (a command at a path: ``args = [table, path, *arguments]``) on table ``t``."""
    path = args[1]
    if type(path) is not list or len(path) > MAX_PATH:
        raise TypeError(f"a path is a list of at most {MAX_PATH} keys and indexes")
    if not path:  # the table itself: the plain command of the table's kind
        base = BY_ID[spec.op - PATH_BASE]
        inner = twin(base, t.kind)
        if inner is None:
            raise TypeError(f"the value at path [] is a {_NAMES[t.kind]}, which has no {base.suffix}()")
        return PLANS[inner.name](r, t, *args[2:])
    for _ in range(CAS_ATTEMPTS):
        done, result = (_dict_entry if t.kind == "dict" else _list_item)(r, t, spec, args)
        if done:
            return result
    raise ConcurrentModificationError(f"table {t.name!r} kept changing under a command at a path")


def _local(t: TableKeys, spec: CommandSpec, args: list[Any], table: Any, version: int | None) -> tuple[Any, Any]:
    """Run the command on ``table`` in a local Store: (result, the exception it raised or None)."""
    store = Store()
    store.load({t.name: table})
    suffix = spec.suffix
    if version is not None and suffix == "replace_if":
        if args[2] != version:
            return False, None
        args = [args[0], args[1], store.version(t.name), *args[3:]]
    try:
        result = store.apply(spec, args)
    except Exception as exc:  # the server's own error; a write that raised may still have changed the copy
        return None, exc
    if type(result) is Encoded:
        result = decode_value(result)
    if version is not None and suffix == "snapshot":
        result = (version, result[1])
    return result, None


def _dict_entry(r: Runner, t: TableKeys, spec: CommandSpec, args: list[Any]) -> tuple[bool, Any]:
    key = args[1][0]
    c, kb = encode_key(key)  # dict's TypeError for an unhashable key, as walking the path gives
    raw = r.cmd(t, "HGET", t.v, c)
    if raw is None:
        r.check_table(t)
    table = {} if raw is None else {key: decode_value(raw)}
    result, error = _local(t, spec, args, table, None if raw is None else _digest(raw))
    if raw is not None and not spec.readonly:
        new = encode_value(table[key])
        if new != raw and not r.fcall(t, "cy_dict_cas", t.dict_keys, c, kb, b"1", raw, new):
            return False, None  # changed meanwhile: run again
    if error is not None:
        raise error
    return True, result


def _list_item(r: Runner, t: TableKeys, spec: CommandSpec, args: list[Any]) -> tuple[bool, Any]:
    snapshot = r.fcall_ro(t, "cy_list_snapshot", t.list_keys)
    version, stored = snapshot[0], snapshot[1:]
    table = [element_value(item) for item in stored]
    index = args[1][0]
    position = None
    if (type(index) is int or type(index) is bool) and -len(table) <= index < len(table):
        position = index + len(table) if index < 0 else int(index)
    result, error = _local(t, spec, args, table, None if position is None else _digest(stored[position]))
    if position is not None and not spec.readonly:
        new = element(table[position])
        if new != stored[position] and not r.fcall(t, "cy_list_set_if", t.list_keys, version, position, new):
            return False, None
    if error is not None:
        raise error
    return True, result
