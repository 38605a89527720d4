"""Reading a table in pieces: ``dict.scan`` and ``list.scan``, so that a table of any size can be copied, iterated
and printed although one reply is at most ``MAX_FRAME`` bytes.  No I/O in this module.

A scan request is ``[table, cursor, what]``; its reply is ``[next, parts]``: ``parts`` is a list of dicts
(``what="items"``) or lists (``"keys"``, ``"values"``, and ``"list"``: a list's items) holding the next items in
order, at most about ``SCAN_BUDGET`` encoded bytes of them (and at least one item), and ``next`` is the cursor of
the rest or None when nothing is left.  A table that fits in one reply costs one request, as a plain ``todict()`` did.

**Dicts.**  The first request (cursor 0) reads from the start; if the table does not fit, the server keeps a
*snapshot of its keys in order* under a cursor id and answers ``next = [id, position]``.  Later requests send
that pair back: the server answers the keys from ``position`` on that are still in the table, with their values
*now*.  So each key present for the whole scan is returned exactly once (Redis's HSCAN promises at least once),
keys added after the scan began are not returned, and keys deleted (or expired) before their piece are not.
The position travels with the request, so a request re-sent after a reconnect gets the same piece again.
Cursors are dropped when a scan ends, after ``CURSOR_IDLE`` seconds without a request, beyond ``MAX_CURSORS``
(the least recently used first) and on a restart; continuing a dropped one raises ``ValueError``.  Inside an
atomic batch or a transaction no cursor is made: a table that does not fit in one reply raises ``ValueError``.

**Lists.**  The cursor is an index (0 to start): the rule of iterating a list while it changes (items inserted
or removed before the position shift what is seen), as ``iter(list)`` has.

``what="head"`` (a dict or a list) answers only the first ``HEAD_BUDGET`` bytes of items and, as ``next``, how
many items were left out (None: all shown), never making a cursor: what ``repr`` needs to shorten a big table.
"""

from __future__ import annotations

import collections
import itertools
import time
from typing import TYPE_CHECKING, Any

from ..codec import encode_array, encode_value

if TYPE_CHECKING:
    from .store import Store

__all__ = ["CURSOR_IDLE", "HEAD_BUDGET", "MAX_CURSORS", "SCAN_BUDGET", "Cursors", "scan_dict", "scan_list"]

SCAN_BUDGET = 1 << 20  # encoded bytes of items per reply: bounds how long one piece holds the server (~5 ms)
HEAD_BUDGET = 16 << 10  # encoded bytes of items for repr()
GROUP = 512  # items encoded together; the budget is checked between groups
WHOLE = 2048  # a table of at most this many items is first tried in one piece (no key snapshot)
MAX_CURSORS = 1024
CURSOR_IDLE = 300.0  # seconds
_DICT_WHAT = ("items", "keys", "values", "head")


class Cursors:
    """The key snapshots of the dict scans in progress: id -> (keys in order, last use), least recently used first."""

    def __init__(self) -> None:
        self._open: collections.OrderedDict[int, tuple[list[Any], float]] = collections.OrderedDict()
        self._next_id = 1

    def __len__(self) -> int:
        return len(self._open)

    def open(self, keys: list[Any]) -> int:
        """Keep ``keys`` under a new cursor id."""
        now = time.monotonic()
        while self._open:  # the oldest idle ones, and beyond the cap
            oldest, (_keys, used) = next(iter(self._open.items()))
            if len(self._open) < MAX_CURSORS and now - used < CURSOR_IDLE:
                break
            del self._open[oldest]
        cursor, self._next_id = self._next_id, self._next_id + 1
        self._open[cursor] = (keys, now)
        return cursor

    def keys(self, cursor: int) -> list[Any]:
        """The snapshot of ``cursor``, marked as used now."""
        entry = self._open.get(cursor)
        if entry is None or time.monotonic() - entry[1] >= CURSOR_IDLE:
            self._open.pop(cursor, None)
            raise ValueError(f"scan cursor {cursor} is unknown: it ended, was idle over {CURSOR_IDLE:.0f} s, or "
                             "the server restarted (start the copy or iteration again)")
        self._open[cursor] = (entry[0], time.monotonic())
        self._open.move_to_end(cursor)
        return entry[0]

    def close(self, cursor: int) -> None:
        """Forget ``cursor`` (its scan ended)."""
        self._open.pop(cursor, None)


def _group(table: dict[Any, Any], keys: Any, what: str) -> Any:
    if what == "keys":
        return [k for k in keys if k in table]
    if what == "values":
        return [table[k] for k in keys if k in table]
    return {k: table[k] for k in keys if k in table}


def _take(encoded: list[bytes], part: Any, size: int, budget: int) -> tuple[int, bool]:
    """Encode ``part`` into ``encoded`` if it fits in ``budget`` (or is the first); return the new size and
    whether it was taken."""
    body = encode_value(part)
    if encoded and size + len(body) > budget:
        return size, False
    encoded.append(body)
    return size + len(body), True


def _reply(next_: Any, encoded: list[bytes]) -> bytes:
    return encode_array([encode_value(next_), encode_array(encoded)])


def scan_dict(store: Store, table: dict[Any, Any], cursor: Any, what: Any) -> bytes:
    """One piece of a dict scan (see the module docstring), encoded."""
    if what not in _DICT_WHAT:
        if what == "list":  # ref(...).tolist() on a dict
            raise TypeError("a dict has no tolist(): use todict()")
        raise ValueError(f"what must be one of {', '.join(_DICT_WHAT)}, not {what!r}")
    if what == "head":
        return _head(table, len(table), iter(table.items()), dict)
    if cursor == 0:
        if len(table) <= WHOLE:  # the common case: the table itself, in one piece
            part = table if what == "items" else list(table if what == "keys" else table.values())
            body = encode_value(part)
            if len(body) <= SCAN_BUDGET:
                return _reply(None, [body])
        keys = list(table)
        position = 0
    else:
        if type(cursor) is not list or len(cursor) != 2 or type(cursor[0]) is not int or type(cursor[1]) is not int:
            raise TypeError("a dict scan's cursor is 0 or the [id, position] pair of its last reply")
        keys = store.cursors.keys(cursor[0])
        position = cursor[1]
    encoded: list[bytes] = []
    size = 0
    while position < len(keys):
        size, taken = _take(encoded, _group(table, keys[position:position + GROUP], what), size, SCAN_BUDGET)
        if not taken:
            break
        position += GROUP
    if position >= len(keys):
        if cursor != 0:
            store.cursors.close(cursor[0])
        return _reply(None, encoded)
    if cursor != 0:
        return _reply([cursor[0], position], encoded)
    if store.in_batch():
        raise ValueError(f"this table's copy does not fit in one reply ({SCAN_BUDGET >> 20} MiB), which is all an "
                         "atomic batch or a transaction can read: read it outside")
    return _reply([store.cursors.open(keys), position], encoded)


def scan_list(store: Store, table: list[Any], cursor: Any, what: Any) -> bytes:
    """One piece of a list scan from index ``cursor`` (see the module docstring), encoded."""
    if what not in ("list", "head"):
        raise TypeError("a list has no todict(), keys(), values() or items(): use tolist()")
    if what == "head":
        return _head(table, len(table), iter(table), list)
    if type(cursor) is not int or cursor < 0:
        raise TypeError("a list scan's cursor is an index >= 0")
    if cursor == 0 and len(table) <= WHOLE:
        body = encode_value(table)
        if len(body) <= SCAN_BUDGET:
            return _reply(None, [body])
    encoded: list[bytes] = []
    size, position = 0, cursor
    while position < len(table):
        size, taken = _take(encoded, table[position:position + GROUP], size, SCAN_BUDGET)
        if not taken:
            break
        position += GROUP
    return _reply(position if position < len(table) else None, encoded)


def _head(table: Any, total: int, items: Any, kind: type) -> bytes:
    encoded: list[bytes] = []
    size = shown = 0
    while shown < total:
        group = kind(itertools.islice(items, 64))
        if not group:
            break
        body = encode_value(group)
        if size + len(body) > HEAD_BUDGET:
            if not encoded and len(group) > 1:  # big items: try them one by one
                items = itertools.chain(group.items() if kind is dict else group, items)
                while shown < total:
                    one = kind(itertools.islice(items, 1))
                    body = encode_value(one)
                    if size + len(body) > HEAD_BUDGET:
                        break
                    encoded.append(body)
                    size += len(body)
                    shown += 1
            break
        encoded.append(body)
        size += len(body)
        shown += len(group)
    return _reply(None if shown >= total else total - shown, encoded)
