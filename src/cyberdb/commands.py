"""THE command table: every operation a client may ask of the server, described once.

The server dispatches by looking a command id up here (and refuses any other); the client tables build their
requests from these specs and shape replies with ``reply``; transactions read ``readonly`` and ``returns``.
A spec with ``method`` is executed by the store as that method of the table's ``dict``/``list`` with the
client's arguments; the others have a function of the same name in :mod:`cyberdb.server.store`.  Arguments
are values decoded by the safe codec, so nothing a client sends can name code to run.  No I/O in this module.

Every table command also exists *at a path* (``AT_PATH[op]``, wire id ``op + PATH_BASE``): its arguments are
``table, path, *args`` and it runs on the dict or list found by walking ``path`` inside the table
(``d.ref(key, *path)``).  Such a command runs the spec of the same suffix for the kind it finds there, so a
handle need not know in advance whether it points at a dict or a list.

Command ids are part of the protocol: append new commands, never renumber.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

__all__ = ["AT_PATH", "BY_ID", "BY_NAME", "COMMANDS", "PATH_BASE", "CommandSpec", "twin"]

DICT, LIST = "dict", "list"
PATH_BASE = 1000  # wire id of a table command at a path: op + PATH_BASE
MAX_PATH = 32  # elements in a path


def _pair(value: Any) -> tuple[Any, Any]:
    return value[0], value[1]


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its wire id, which kind of table it works on, and what it may do.

    ``min_args``/``max_args`` count the arguments after the table name (after the table and path for a
    command at a path).  ``readonly`` commands change nothing.  ``returns`` is False for writes whose
    result is always None (a transaction buffers those without a round trip).  ``reply`` shapes the
    decoded result on the client (``bool``, ``int``, ...), or is None to return it as it is.  ``method``
    names the builtin ``dict``/``list`` method that implements it, or is None when the store has a
    function of its own.  Every command may be re-sent after a lost reply: the server answers a re-sent
    write from its reply cache instead of running it twice, so no command needs to be idempotent.
    """

    name: str
    op: int
    kind: str | None  # DICT, LIST, or None for database-level commands (no table argument)
    min_args: int
    max_args: int
    readonly: bool = False
    returns: bool = True
    method: str | None = None
    reply: Callable[[Any], Any] | None = None
    path: bool = False  # a table command at a path (see AT_PATH)
    logged: bool = True  # False: a write the append-only log does not keep (db.publish: messages are not persisted)

    @property
    def suffix(self) -> str:
        """The name without its kind: ``"getitem"`` for ``"dict.getitem"``."""
        return self.name.partition(".")[2].removesuffix("@path")


def _specs() -> list[CommandSpec]:
    return [
        # database level: arguments are exactly as listed (no table argument is split off)
        CommandSpec("db.ping", 1, None, 0, 0, reply=bool, readonly=True),
        CommandSpec("db.create", 2, None, 3, 4, returns=False),  # name, kind, content[, {"maxsize"|"maxlen": n}]
        CommandSpec("db.check", 3, None, 2, 2, readonly=True),  # name, kind
        CommandSpec("db.tables", 4, None, 0, 0, reply=dict, readonly=True),
        CommandSpec("db.delete", 5, None, 1, 1, returns=False),
        # [[op, args] | [op, args, digest], ...] -> list of results; all applied or none (see server/batch.py)
        CommandSpec("db.batch", 6, None, 1, 1),
        # the same steps, rolled back at the end -> [status, result, digest] of the last step (transactions)
        CommandSpec("db.speculate", 7, None, 1, 1, readonly=True),
        # [[op, args], ...] -> [[status, result], ...]: each call on its own, as if sent one by one (pipelines)
        CommandSpec("db.pipeline", 8, None, 1, 1),
        CommandSpec("lock.acquire", 10, None, 2, 2),  # name, ttl -> token or None
        CommandSpec("lock.release", 11, None, 2, 2, returns=False),  # name, token
        CommandSpec("lock.extend", 12, None, 3, 3, returns=False),  # name, token, ttl
        CommandSpec("db.slowlog", 13, None, 0, 1, readonly=True),  # [count] -> the slowest recent commands
        # pub/sub: channel, value -> how many subscribers got it.  A write for the reply cache (a re-sent publish
        # is not delivered twice) that the append-only log does not keep: messages are not persisted (as in Redis)
        CommandSpec("db.publish", 14, None, 2, 2, reply=int, logged=False),
        # [channel, ...] -> the connection's channels ([] unsubscribes from all); run by the network layer, as
        # they change the connection rather than the store (server/net.py)
        CommandSpec("db.subscribe", 15, None, 1, 1, readonly=True),
        CommandSpec("db.unsubscribe", 16, None, 1, 1, readonly=True),
        # -> the server's state and counters (Server.info); answered by the network layer (server/stats.py)
        CommandSpec("db.info", 17, None, 0, 0, readonly=True),
        # CyberDict
        CommandSpec("dict.getitem", 100, DICT, 1, 1, method="__getitem__", readonly=True),
        CommandSpec("dict.setitem", 101, DICT, 2, 2, method="__setitem__", returns=False),
        CommandSpec("dict.delitem", 102, DICT, 1, 1, method="__delitem__", returns=False),
        CommandSpec("dict.contains", 103, DICT, 1, 1, method="__contains__", reply=bool, readonly=True),
        CommandSpec("dict.len", 104, DICT, 0, 0, method="__len__", reply=int, readonly=True),
        CommandSpec("dict.get", 105, DICT, 1, 2, method="get", readonly=True),
        CommandSpec("dict.setdefault", 106, DICT, 1, 2, method="setdefault"),
        CommandSpec("dict.update", 107, DICT, 1, 1, returns=False),
        CommandSpec("dict.pop", 108, DICT, 1, 2, method="pop"),
        CommandSpec("dict.popitem", 109, DICT, 0, 0, method="popitem", reply=_pair),
        CommandSpec("dict.clear", 110, DICT, 0, 0, method="clear", returns=False),
        CommandSpec("dict.keys", 111, DICT, 0, 0, readonly=True),
        CommandSpec("dict.values", 112, DICT, 0, 0, readonly=True),
        CommandSpec("dict.items", 113, DICT, 0, 0, readonly=True),
        CommandSpec("dict.todict", 114, DICT, 0, 0, readonly=True),
        CommandSpec("dict.incr", 115, DICT, 2, 2),  # key, amount -> new value
        CommandSpec("dict.copy", 116, DICT, 0, 0, readonly=True),  # the value itself (what a handle's copy() returns)
        CommandSpec("dict.set", 117, DICT, 2, 3, returns=False),  # key, value[, ttl]: d[key] = value, expiring
        CommandSpec("dict.expire", 118, DICT, 2, 2, returns=False),  # key, seconds (<= 0 deletes the key)
        CommandSpec("dict.ttl", 119, DICT, 1, 1, readonly=True),  # key -> seconds left, or None
        CommandSpec("dict.persist", 120, DICT, 1, 1, reply=bool),  # key -> whether it had an expiry
        # cursor, what -> [next cursor or None, [part, ...]]: a table in pieces (see server/scan.py)
        CommandSpec("dict.scan", 121, DICT, 2, 2, readonly=True),
        # CyberList
        CommandSpec("list.getitem", 200, LIST, 1, 1, method="__getitem__", readonly=True),
        CommandSpec("list.getslice", 201, LIST, 3, 3, readonly=True),  # start, stop, step
        CommandSpec("list.setitem", 202, LIST, 2, 2, method="__setitem__", returns=False),
        CommandSpec("list.setslice", 203, LIST, 4, 4, returns=False),  # start, stop, step, values
        CommandSpec("list.delitem", 204, LIST, 1, 1, method="__delitem__", returns=False),
        CommandSpec("list.delslice", 205, LIST, 3, 3, returns=False),
        CommandSpec("list.len", 206, LIST, 0, 0, method="__len__", reply=int, readonly=True),
        CommandSpec("list.contains", 207, LIST, 1, 1, method="__contains__", reply=bool, readonly=True),
        CommandSpec("list.append", 208, LIST, 1, 1, method="append", returns=False),
        CommandSpec("list.extend", 209, LIST, 1, 1, returns=False),
        CommandSpec("list.insert", 210, LIST, 2, 2, method="insert", returns=False),
        CommandSpec("list.pop", 211, LIST, 0, 1, method="pop"),
        CommandSpec("list.remove", 212, LIST, 1, 1, method="remove", returns=False),
        CommandSpec("list.count", 213, LIST, 1, 1, method="count", reply=int, readonly=True),
        CommandSpec("list.index", 214, LIST, 1, 3, method="index", reply=int, readonly=True),
        CommandSpec("list.reverse", 215, LIST, 0, 0, method="reverse", returns=False),
        CommandSpec("list.sort", 216, LIST, 1, 1, returns=False),  # reverse
        CommandSpec("list.clear", 217, LIST, 0, 0, method="clear", returns=False),
        CommandSpec("list.imul", 218, LIST, 1, 1, returns=False),
        CommandSpec("list.tolist", 219, LIST, 0, 0, readonly=True),
        CommandSpec("list.snapshot", 220, LIST, 0, 0, readonly=True),  # -> (version, items)
        CommandSpec("list.replace_if", 221, LIST, 2, 2, reply=bool),  # version, items -> bool
        CommandSpec("list.incr", 222, LIST, 2, 2),  # index, amount -> new value
        CommandSpec("list.copy", 223, LIST, 0, 0, readonly=True),
        # index, timeout or None, into or None: pop that may wait for an item and/or move it (see tables.pop)
        CommandSpec("list.bpop", 224, LIST, 3, 3),
        CommandSpec("list.scan", 225, LIST, 2, 2, readonly=True),  # index, what: as dict.scan (server/scan.py)
    ]


def _at_path(spec: CommandSpec) -> CommandSpec:
    return replace(spec, name=spec.name + "@path", op=spec.op + PATH_BASE, min_args=spec.min_args + 1,
                   max_args=spec.max_args + 1, path=True)


_BASE: tuple[CommandSpec, ...] = tuple(_specs())
AT_PATH: dict[int, CommandSpec] = {s.op: _at_path(s) for s in _BASE if s.kind is not None and s.op < PATH_BASE}
COMMANDS: tuple[CommandSpec, ...] = _BASE + tuple(AT_PATH.values())
BY_ID: dict[int, CommandSpec] = {spec.op: spec for spec in COMMANDS}
BY_NAME: dict[str, CommandSpec] = {spec.name: spec for spec in COMMANDS}
assert len(BY_ID) == len(BY_NAME) == len(COMMANDS), "command ids and names must be unique"
assert all(spec.op < PATH_BASE for spec in _BASE)

_TWINS: dict[tuple[int, str], CommandSpec] = {(s.op, k): BY_NAME.get(f"{k}.{s.suffix}") or s
                                              for s in _BASE if s.kind is not None for k in (DICT, LIST)}


def twin(spec: CommandSpec, kind: str) -> CommandSpec | None:
    """The command of the same suffix for a table of ``kind`` (``dict.len`` -> ``list.len``), or None."""
    found = _TWINS.get((spec.op, kind))
    return found if found is not None and found.kind == kind else None
