"""What a table may have besides its content: a bound (``maxsize``/``maxlen``) and key deadlines.  No I/O.

**Expiry.**  A CyberDict key may have a deadline (seconds since the epoch, on the wall clock, so it means the
same after a restart).  The store removes an expired key *before* any command can see it: a command on one key
(``KEYED``, or any command at a path, whose first step is a key) checks that key, any other command on the table
removes every key that is due.  Between commands a sweep (``Store.sweep``, run by the server every 100 ms and
again at once while work remains) removes due keys a few milliseconds at a time, so memory is reclaimed even
for keys nobody asks for.  Deadlines live in ``TableMeta.expires`` with a heap ordered by deadline (stale heap
entries are skipped, and the heap is rebuilt when most of it is stale).

**Bounds.**  ``maxlen`` lists drop items from the front after any write that makes them longer, as
``collections.deque(maxlen=...)``; ``insert`` into a full one raises ``IndexError`` as ``deque.insert`` does.
``maxsize`` dicts keep their keys in order of use (``order``) and evict the least recently used key when a
write leaves them over the bound, as ``functools.lru_cache``.  Use is a read or write of one key (``TOUCHING``
and commands at a path); ``in``, ``len``, iteration and whole-table reads are not use.  The dict's own
(insertion) order is unchanged by use, as in ``cachetools.LRUCache``.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from typing import Any

__all__ = ["KEYED", "MAX_EXPIRY", "TOUCHING", "TableMeta", "check_options"]

MAX_EXPIRY = 100 * 365 * 24 * 3600.0  # seconds: a ttl beyond this is refused
# dict commands whose only table-level key is their first argument (the rest of the table is not looked at)
KEYED = frozenset({"getitem", "setitem", "delitem", "contains", "get", "setdefault", "pop", "incr", "set",
                   "expire", "ttl", "persist"})
# dict commands that count as use of their key in a bounded dict (when the key is there after the command)
TOUCHING = frozenset({"getitem", "setitem", "get", "setdefault", "incr", "set"})
_SEQ = itertools.count()


def check_options(kind: str, options: Any) -> dict[str, int]:
    """Validate a table's options: ``{}``, ``{"maxsize": n}`` for a dict or ``{"maxlen": n}`` for a list.

    Raises:
        TypeError, ValueError: anything else.
    """
    if options is None:
        return {}
    if type(options) is not dict:
        raise TypeError("table options are a dict")
    allowed = "maxsize" if kind == "dict" else "maxlen"
    for option, value in options.items():
        if option != allowed:
            raise ValueError(f"unknown option {option!r} for a {'CyberDict' if kind == 'dict' else 'CyberList'}")
        if type(value) is not int or value < 1:
            raise ValueError(f"{option} must be an int >= 1, not {value!r}")
    return dict(options)


class TableMeta:
    """The bound and the key deadlines of one table."""

    __slots__ = ("expires", "heap", "maxlen", "maxsize", "order", "peak")

    def __init__(self, maxsize: int | None = None, maxlen: int | None = None) -> None:
        self.maxsize, self.maxlen = maxsize, maxlen
        self.expires: dict[Any, float] = {}
        self.heap: list[tuple[float, int, Any]] = []  # (deadline, tiebreak, key): may hold stale entries
        self.order: OrderedDict[Any, None] | None = OrderedDict() if maxsize else None  # least recent first
        self.peak = 0  # the table's size when a sweep began removing keys (see compact)

    @property
    def options(self) -> dict[str, int]:
        """The table's options as ``db.create`` takes them."""
        if self.maxsize:
            return {"maxsize": self.maxsize}
        return {"maxlen": self.maxlen} if self.maxlen else {}

    def idle(self) -> bool:
        """True when it holds nothing worth keeping (no bound, no deadline)."""
        return not self.maxsize and not self.maxlen and not self.expires

    # ---- expiry -------------------------------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        """True if some key may have expired (cheap: the heap's first deadline)."""
        heap = self.heap
        return bool(heap) and heap[0][0] <= now

    def set_deadline(self, key: Any, deadline: float) -> None:
        """Give ``key`` a deadline (replacing any)."""
        self.expires[key] = deadline
        heapq.heappush(self.heap, (deadline, next(_SEQ), key))
        if len(self.heap) > 2 * len(self.expires) + 64:  # mostly stale: rebuild
            self.heap = [(when, next(_SEQ), k) for k, when in self.expires.items()]
            heapq.heapify(self.heap)

    def clear_deadline(self, key: Any) -> bool:
        """Remove ``key``'s deadline; True if it had one (its heap entry goes stale)."""
        if not self.expires:
            return False
        return self.expires.pop(key, None) is not None

    def expire_key(self, table: dict[Any, Any], key: Any, now: float) -> bool:
        """Remove ``key`` from ``table`` if its deadline has passed; True if it did."""
        try:
            deadline = self.expires.get(key)
        except TypeError:  # unhashable: the command itself raises
            return False
        if deadline is None or deadline > now:
            return False
        self.forget(table, key)
        return True

    def expire_due(self, table: dict[Any, Any], now: float, limit: int = -1) -> int:
        """Remove keys whose deadline has passed, at most ``limit`` heap entries (-1: all); return how many."""
        heap, expires, removed = self.heap, self.expires, 0
        while heap and heap[0][0] <= now and limit != 0:
            deadline, _seq, key = heapq.heappop(heap)
            limit -= 1
            if expires.get(key) == deadline:  # not a stale entry
                self.forget(table, key)
                removed += 1
        if not expires and heap:
            heap.clear()
        return removed

    def forget(self, table: dict[Any, Any], key: Any) -> None:
        """Remove ``key`` with its deadline and its place in the order of use."""
        table.pop(key, None)
        self.expires.pop(key, None)
        if self.order is not None:
            self.order.pop(key, None)

    def compact(self, table: dict[Any, Any], most: int = 8192) -> bool:
        """After the sweep removed most of a big table, rebuild it (at most ``most`` keys, so a few ms): a dict
        never shrinks by deletions, so the memory of a million expired keys comes back only this way."""
        if self.peak < 4096 or len(table) > min(self.peak // 8, most):
            return False
        items = list(table.items())
        table.clear()  # frees the large hash table; the same object stays in the store
        table.update(items)
        self.expires = dict(self.expires)  # these never shrink either
        self.heap = self.heap.copy()
        if self.order is not None:
            self.order = OrderedDict(self.order)
        self.peak = len(table)
        return True

    # ---- bounded dicts ------------------------------------------------------------------------------------------

    def touch(self, table: dict[Any, Any], key: Any) -> None:
        """Count a use of ``key`` (if it is in the table)."""
        order = self.order
        if order is None:
            return
        try:
            if key in table:
                order[key] = None
                order.move_to_end(key)
        except TypeError:
            pass

    def reconcile(self, table: dict[Any, Any]) -> None:
        """After a write that may have added or removed any keys: keys gone leave ``order`` and ``expires``,
        new keys join ``order`` as the most recently used, in the table's order."""
        order = self.order
        if self.expires and len(self.expires) > len(table) // 2:
            for key in [k for k in self.expires if k not in table]:
                del self.expires[key]
        elif self.expires:
            for key in list(self.expires):
                if key not in table:
                    del self.expires[key]
        if order is not None:
            for key in [k for k in order if k not in table]:
                del order[key]
            for key in table:
                if key not in order:
                    order[key] = None

    def evict(self, table: dict[Any, Any], now: float) -> list[Any]:
        """Keep a bounded dict within ``maxsize``: first expired keys, then the least recently used; return the
        keys evicted (not the expired ones)."""
        maxsize, order = self.maxsize, self.order
        if not maxsize or order is None or len(table) <= maxsize:
            return []
        if self.due(now):
            self.expire_due(table, now)
        evicted = []
        while len(table) > maxsize:
            key = next(iter(order))
            self.forget(table, key)
            evicted.append(key)
        return evicted

    # ---- batches and persistence --------------------------------------------------------------------------------

    def copy(self) -> TableMeta:
        """A copy to roll a batch back to."""
        other = TableMeta(self.maxsize, self.maxlen)
        other.expires = self.expires.copy()
        other.heap = self.heap.copy()
        if self.order is not None:
            other.order = self.order.copy()
        return other

    def restore(self, saved: TableMeta) -> None:
        """Put back what ``copy`` saved."""
        self.expires, self.heap, self.order = saved.expires, saved.heap, saved.order

    def record(self, name: str) -> list[Any]:
        """``[name, options, [[key, deadline], ...], keys in order of use or None]`` for a snapshot."""
        return [name, self.options, [[k, d] for k, d in self.expires.items()],
                None if self.order is None else list(self.order)]

    def load(self, table: Any, deadlines: list[Any], order: list[Any] | None) -> None:
        """Fill from a snapshot's record (the table's content is already loaded)."""
        for key, deadline in deadlines:
            if key in table:
                self.set_deadline(key, deadline)
        if self.order is not None:
            for key in order or ():
                if key in table:
                    self.order[key] = None
            self.reconcile(table)
