"""THE command table: every operation a client may ask of the server, described once.

The server dispatches by looking a command id up here (and refuses any other), the client tables build their
requests from these specs, and the retry rule reads ``idempotent``.  A spec with ``method`` is executed by the
store as that method of the table's ``dict``/``list`` with the client's arguments; the others have a function
of the same name in :mod:`cyberdb.server.store`.  Arguments are values decoded by the safe codec, so nothing a
client sends can name code to run.  No I/O in this module.

Command ids are part of the protocol: append new commands, never renumber.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BY_ID", "BY_NAME", "COMMANDS", "CommandSpec"]

DICT, LIST = "dict", "list"


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One command: its wire id, which kind of table it works on, and what it may do.

    ``min_args``/``max_args`` count the arguments after the table name.  ``readonly`` commands change nothing;
    ``idempotent`` ones may be retried after a lost reply.  ``method`` names the builtin ``dict``/``list``
    method that implements it, or is None when the store has a function of its own for it.
    """

    name: str
    op: int
    kind: str | None  # DICT, LIST, or None for database-level commands (no table argument)
    min_args: int
    max_args: int
    readonly: bool = False
    idempotent: bool = False
    method: str | None = None


def _specs() -> list[CommandSpec]:
    return [
        # database level: arguments are exactly as listed (no table argument is split off)
        CommandSpec("db.ping", 1, None, 0, 0, readonly=True, idempotent=True),
        CommandSpec("db.create", 2, None, 3, 3),  # name, kind, content
        CommandSpec("db.check", 3, None, 2, 2, readonly=True, idempotent=True),  # name, kind
        CommandSpec("db.tables", 4, None, 0, 0, readonly=True, idempotent=True),
        CommandSpec("db.delete", 5, None, 1, 1),
        # CyberDict
        CommandSpec("dict.getitem", 100, DICT, 1, 1, method="__getitem__", readonly=True, idempotent=True),
        CommandSpec("dict.setitem", 101, DICT, 2, 2, method="__setitem__", idempotent=True),
        CommandSpec("dict.delitem", 102, DICT, 1, 1, method="__delitem__"),
        CommandSpec("dict.contains", 103, DICT, 1, 1, method="__contains__", readonly=True, idempotent=True),
        CommandSpec("dict.len", 104, DICT, 0, 0, method="__len__", readonly=True, idempotent=True),
        CommandSpec("dict.get", 105, DICT, 1, 2, method="get", readonly=True, idempotent=True),
        CommandSpec("dict.setdefault", 106, DICT, 1, 2, method="setdefault", idempotent=True),
        CommandSpec("dict.update", 107, DICT, 1, 1, idempotent=True),
        CommandSpec("dict.pop", 108, DICT, 1, 2, method="pop"),
        CommandSpec("dict.popitem", 109, DICT, 0, 0, method="popitem"),
        CommandSpec("dict.clear", 110, DICT, 0, 0, method="clear", idempotent=True),
        CommandSpec("dict.keys", 111, DICT, 0, 0, readonly=True, idempotent=True),
        CommandSpec("dict.values", 112, DICT, 0, 0, readonly=True, idempotent=True),
        CommandSpec("dict.items", 113, DICT, 0, 0, readonly=True, idempotent=True),
        CommandSpec("dict.todict", 114, DICT, 0, 0, readonly=True, idempotent=True),
        # CyberList
        CommandSpec("list.getitem", 200, LIST, 1, 1, method="__getitem__", readonly=True, idempotent=True),
        CommandSpec("list.getslice", 201, LIST, 3, 3, readonly=True, idempotent=True),  # start, stop, step
        CommandSpec("list.setitem", 202, LIST, 2, 2, method="__setitem__", idempotent=True),
        CommandSpec("list.setslice", 203, LIST, 4, 4),  # start, stop, step, values
        CommandSpec("list.delitem", 204, LIST, 1, 1, method="__delitem__"),
        CommandSpec("list.delslice", 205, LIST, 3, 3),
        CommandSpec("list.len", 206, LIST, 0, 0, method="__len__", readonly=True, idempotent=True),
        CommandSpec("list.contains", 207, LIST, 1, 1, method="__contains__", readonly=True, idempotent=True),
        CommandSpec("list.append", 208, LIST, 1, 1, method="append"),
        CommandSpec("list.extend", 209, LIST, 1, 1),
        CommandSpec("list.insert", 210, LIST, 2, 2, method="insert"),
        CommandSpec("list.pop", 211, LIST, 0, 1, method="pop"),
        CommandSpec("list.remove", 212, LIST, 1, 1, method="remove"),
        CommandSpec("list.count", 213, LIST, 1, 1, method="count", readonly=True, idempotent=True),
        CommandSpec("list.index", 214, LIST, 1, 3, method="index", readonly=True, idempotent=True),
        CommandSpec("list.reverse", 215, LIST, 0, 0, method="reverse"),
        CommandSpec("list.sort", 216, LIST, 1, 1),  # reverse
        CommandSpec("list.clear", 217, LIST, 0, 0, method="clear", idempotent=True),
        CommandSpec("list.imul", 218, LIST, 1, 1),
        CommandSpec("list.tolist", 219, LIST, 0, 0, readonly=True, idempotent=True),
        CommandSpec("list.snapshot", 220, LIST, 0, 0, readonly=True, idempotent=True),  # -> (version, items)
        CommandSpec("list.replace_if", 221, LIST, 2, 2, idempotent=True),  # version, items -> bool
    ]


COMMANDS: tuple[CommandSpec, ...] = tuple(_specs())
BY_ID: dict[int, CommandSpec] = {spec.op: spec for spec in COMMANDS}
BY_NAME: dict[str, CommandSpec] = {spec.name: spec for spec in COMMANDS}
assert len(BY_ID) == len(BY_NAME) == len(COMMANDS), "command ids and names must be unique"
