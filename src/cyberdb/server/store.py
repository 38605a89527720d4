"""The tables in memory and the execution of one command.  Plain synchronous code: no I/O, no await.

``Store.execute`` runs a command to completion; the server calls it from its single event loop, so every
command is atomic with respect to every other.  Only the commands of :mod:`cyberdb.commands` can run: a spec
with ``method`` calls that builtin ``dict``/``list`` method, the others call the function of this module
registered under the spec's name in ``_HANDLERS``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..commands import COMMANDS, DICT, LIST, CommandSpec
from ..errors import TableExistsError, TableNotFoundError, WrongTableTypeError

__all__ = ["MAX_LIST_ITEMS", "Store"]

MAX_LIST_ITEMS = 1 << 27  # `l *= n` may not build a list longer than this (one request must not eat the RAM)
MAX_NAME_LENGTH = 1024
KIND_TYPES: dict[str, type] = {DICT: dict, LIST: list}

Table = dict[Any, Any] | list[Any]


class Store:
    """All tables, by name, plus a version per table for compare-and-set."""

    def __init__(self) -> None:
        self.tables: dict[str, Table] = {}
        self._versions: dict[str, int] = {}
        self._clock = 0  # global, so a deleted and recreated table never reuses a version

    def execute(self, spec: CommandSpec, args: list[Any]) -> Any:
        """Run one command and return its result; data errors propagate as the builtin exceptions.

        ``args`` is the decoded argument list; it is consumed (its first item is replaced by the table).

        Raises:
            TypeError: wrong number of arguments (or the builtin method's own TypeError).
        """
        kind_type, low, high, fn, is_method = _PLANS[spec.op]
        if kind_type is None:
            _check_arity(spec, len(args))
            return fn(self, *args)
        if not low <= len(args) - 1 <= high:
            _check_arity(spec, len(args) - 1)
        name = args[0]
        table = self.tables.get(name) if type(name) is str else None
        if type(table) is not kind_type:
            self.table(name, str(spec.kind))  # raises the right error
        if is_method:  # dict.get(table, key, ...)
            args[0] = table
        else:  # _handler(store, table, name, ...)
            args = [self, table, *args]
        if spec.readonly:
            return fn(*args)
        try:
            return fn(*args)
        finally:  # even a failed write may have changed something (a sort that raised)
            self._clock += 1
            self._versions[name] = self._clock

    def table(self, name: Any, kind: str) -> Any:
        """Return table ``name``, checking it exists and is of ``kind``."""
        try:
            table = self.tables[name]
        except (KeyError, TypeError):
            raise TableNotFoundError(f"no table named {name!r}") from None
        if type(table) is not KIND_TYPES[kind]:
            raise WrongTableTypeError(f"table {name!r} is a {kind_name(table)}, not a {kind_name(KIND_TYPES[kind]())}")
        return table

    def version(self, name: str) -> int:
        """The version of table ``name`` (changes on every write)."""
        return self._versions.get(name, 0)

    def add(self, name: str, table: Table) -> None:
        """Add a table (used by create and by loading a file)."""
        self.tables[name] = table
        self._clock += 1
        self._versions[name] = self._clock


def kind_name(table: Table) -> str:
    """The public class name for a table: ``CyberDict`` or ``CyberList``."""
    return "CyberDict" if type(table) is dict else "CyberList"


def _check_arity(spec: CommandSpec, n: int) -> None:
    if not spec.min_args <= n <= spec.max_args:
        raise TypeError(f"{spec.name} takes {spec.min_args}..{spec.max_args} arguments, got {n}")


# ---- database-level commands ---------------------------------------------------------------------------------

def _db_ping(store: Store) -> bool:
    return True


def _db_create(store: Store, name: Any, kind: Any, content: Any) -> None:
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise TypeError(f"a table name must be a non-empty str of at most {MAX_NAME_LENGTH} characters")
    expected = KIND_TYPES.get(kind)
    if expected is None:
        raise ValueError(f"unknown table kind {kind!r}")
    if type(content) is not expected:
        raise TypeError(f"the content of a {kind_name(expected())} must be a {expected.__name__}")
    if name in store.tables:
        raise TableExistsError(f"a table named {name!r} already exists")
    store.add(name, content)  # type: ignore[arg-type]  # checked against `expected` above


def _db_check(store: Store, name: Any, kind: Any) -> None:
    if kind not in KIND_TYPES:
        raise ValueError(f"unknown table kind {kind!r}")
    store.table(name, kind)


def _db_tables(store: Store) -> list[tuple[str, str]]:
    return [(name, kind_name(table)) for name, table in store.tables.items()]


def _db_delete(store: Store, name: Any) -> None:
    try:
        del store.tables[name]
    except (KeyError, TypeError):
        raise TableNotFoundError(f"no table named {name!r}") from None
    store._versions.pop(name, None)


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


_HANDLERS: dict[str, Callable[..., Any]] = {
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
}

# Per command id: (table type or None, min args, max args, function, whether it is a builtin method).  Built once
# from the command table so that execute() does no lookups by name.
_PLANS: dict[int, tuple[type | None, int, int, Callable[..., Any], bool]] = {}
for _spec in COMMANDS:
    _type = KIND_TYPES[_spec.kind] if _spec.kind is not None else None
    if _spec.method is not None:
        assert _type is not None, _spec.name
        _PLANS[_spec.op] = (_type, _spec.min_args, _spec.max_args, getattr(_type, _spec.method), True)
    else:
        assert _spec.name in _HANDLERS, f"command without an implementation: {_spec.name}"
        _PLANS[_spec.op] = (_type, _spec.min_args, _spec.max_args, _HANDLERS[_spec.name], False)
