"""CyberDict, CyberList and CyberRef: the ``dict`` and ``list`` protocols, each operation one server command.

They subclass ``collections.abc`` for the surface, but every method the ABC would build from several round
trips (``update``, ``pop``, ``setdefault``, ``extend``, ``__iadd__``, ...) is one server command, so each call
is atomic.

The seam: a table method only *states* its request, ``self._run(spec, *args)``, and the reply is shaped by
``spec.reply`` (or a ``shape`` given with the request).  An **executor** decides what happens to it:

- :class:`~cyberdb.client.Proxy` sends it now and returns the shaped result (retried exactly once across a
  reconnect);
- :class:`~cyberdb.pipeline.Pipeline` queues it and returns a :class:`~cyberdb.pipeline.Pending`;
- :class:`~cyberdb.transaction.Transaction` buffers writes and runs reads against them on the server.

Operations of several requests (``sort(key=...)``, chunked iteration, comparisons that need a copy) are
written once as generators that yield requests ``(spec, args)`` and receive their shaped replies; an
executor's ``run(steps)`` drives one to its return value and ``stream(steps)`` yields every reply as it
comes (a pipeline refuses both: it has no reply until it runs).  An asyncio executor drives the same
generators.  What needs its reply at once in a single request (``len()``, ``in``, comparisons, ``repr``) uses
``call_now``, which a pipeline refuses too.  Any object with ``call``, ``call_now``, ``run`` and ``stream`` is
an executor (see :class:`cyberdb.executor.Executor`).

A table belongs to the executor that made it: after ``proxy.close()`` it raises
:class:`~cyberdb.errors.DisconnectedError`, after ``proxy.connect()`` it works again.  Copies and views
(``keys()``, ``values()``, ``items()``, ``copy()``, ``todict()``, ``tolist()``, ``a + b``) are snapshots taken
in one command, not live views.
"""

from __future__ import annotations

import itertools
import operator
import reprlib
from collections.abc import Callable, Iterable, Iterator, MutableMapping, MutableSequence
from typing import TYPE_CHECKING, Any, TypeVar, overload

from .commands import AT_PATH, BY_NAME, CommandSpec
from .errors import ConcurrentModificationError
from .executor import SPEC_REPLY, Executor, Step, Steps

if TYPE_CHECKING:
    from collections.abc import ItemsView, KeysView, ValuesView

__all__ = ["CyberDict", "CyberList", "CyberRef", "DictOps", "ListOps"]

ITER_CHUNK = 1000  # items per round trip when iterating a CyberList backwards (forwards: list.scan pieces)
SORT_ATTEMPTS = 10  # sort(key=...) retries when the list changes between its read and its write-back
_MISSING: Any = object()
C = BY_NAME
T = TypeVar("T")
_D = TypeVar("_D", bound="DictOps")
_L = TypeVar("_L", bound="ListOps")


def _keys_view(keys: list[Any]) -> KeysView[Any]:
    return dict.fromkeys(keys).keys()


def _values_view(values: list[Any]) -> ValuesView[Any]:
    return dict(enumerate(values)).values()


def _items_view(content: dict[Any, Any]) -> ItemsView[Any, Any]:
    return content.items()


class _Table:
    """What every handle shares: the executor, the table's name, and the one way to state a request."""

    __slots__ = ("_name", "_x")

    def __init__(self, executor: Executor, name: str) -> None:
        self._x = executor
        self._name = name

    @property
    def name(self) -> str:
        """The table's name on the server."""
        return self._name

    def _run(self, spec: CommandSpec, *args: Any, shape: Any = SPEC_REPLY) -> Any:
        return self._x.call(spec, [self._name, *args], shape)

    def _step(self, spec: CommandSpec, *args: Any) -> Step:
        return spec, [self._name, *args]

    def _now(self, spec: CommandSpec, *args: Any, shape: Any = SPEC_REPLY) -> Any:
        """A reply needed at once (to compare, print, iterate, for ``len()`` or ``in``): a pipeline refuses it."""
        return self._x.call_now(*self._step(spec, *args), shape)

    def _ref_path(self, first: Any, more: tuple[Any, ...]) -> CyberRef:
        return CyberRef(self._x, self._name, (first, *more))

    def _scan(self, spec: CommandSpec, what: str, finish: Callable[[Any], T] | None) -> Steps[T | None]:
        """Read the table in pieces (``dict.scan``/``list.scan``, see :mod:`cyberdb.server.scan`); return
        ``finish(whole)``, or with ``finish=None`` nothing (the caller streams the pieces)."""
        cursor, parts = yield self._step(spec, 0, what)
        while cursor is not None:
            cursor, more = yield self._step(spec, cursor, what)
            if finish is not None:
                parts += more
        return None if finish is None else finish(_joined(parts, what))

    def _head(self, spec: CommandSpec, whole: Callable[[Any], str], short: Callable[[Any], str]) -> Steps[str]:
        """``repr`` from one request: exact when the table fits in a few KiB, else shortened like ``reprlib``."""
        left_out, parts = yield self._step(spec, 0, "head")
        content = _joined(parts, "items" if spec is C["dict.scan"] else "list")
        return whole(content) if left_out is None else short(content)

    def _pieces(self) -> Steps[None]:  # pragma: no cover - each kind has its own
        """The requests of an iteration; ``_piece_items(reply)`` gives each reply's items (sync and async
        iteration drive the same steps)."""
        raise NotImplementedError
        yield

    @staticmethod
    def _piece_items(reply: Any) -> Iterable[Any]:
        return reply  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Any]:
        piece_items = self._piece_items
        for reply in self._x.stream(self._pieces()):
            yield from piece_items(reply)


class DictOps(_Table):
    """Every ``dict`` method as one request, written once (``CyberDict`` and ``CyberRef`` are made of it)."""

    __slots__ = ()

    def __getitem__(self, key: Any) -> Any:
        return self._run(C["dict.getitem"], key)

    def __setitem__(self, key: Any, value: Any) -> Any:
        return self._run(C["dict.setitem"], key, value)

    def __delitem__(self, key: Any) -> Any:
        return self._run(C["dict.delitem"], key)

    def __contains__(self, key: object) -> bool:
        return self._now(C["dict.contains"], key)  # type: ignore[no-any-return]

    def __len__(self) -> int:
        return self._now(C["dict.len"])  # type: ignore[no-any-return]

    def _pieces(self) -> Steps[None]:
        # in pieces (see cyberdb.server.scan): each key present throughout is seen once; unlike a dict,
        # changing the table while iterating is fine
        return self._scan(C["dict.scan"], "keys", None)

    @staticmethod
    def _piece_items(reply: Any) -> Iterable[Any]:
        return itertools.chain.from_iterable(reply[1])

    def _copy_as(self, what: str, finish: Callable[[Any], T], now: bool = True) -> T:
        return self._x.run(self._scan(C["dict.scan"], what, finish), now)  # type: ignore[return-value]

    def __reversed__(self) -> Iterator[Any]:
        return self._copy_as("keys", _reversed)

    def __eq__(self, other: object) -> bool:
        other = _plain(other)
        if not isinstance(other, dict):
            return NotImplemented
        return self._copy_as("items", other.__eq__)

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __or__(self, other: Any) -> dict[Any, Any]:
        other = _plain(other)
        if not isinstance(other, dict):
            return NotImplemented
        return self._copy_as("items", lambda content: content | other)

    def __ror__(self, other: Any) -> dict[Any, Any]:
        if not isinstance(other, dict):
            return NotImplemented
        return self._copy_as("items", lambda content: other | content)

    def __ior__(self: _D, other: Any) -> _D:
        self.update(other)
        return self

    def __repr__(self) -> str:
        return self._x.run(self._head(C["dict.scan"], repr, _short_dict), True)

    def get(self, key: Any, default: Any = None) -> Any:
        """``d.get(key, default)``."""
        return self._run(C["dict.get"], key, default)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        """``d.setdefault(key, default)``, atomically."""
        return self._run(C["dict.setdefault"], key, default)

    def pop(self, key: Any, default: Any = _MISSING) -> Any:
        """``d.pop(key[, default])``, atomically; ``KeyError(key)`` without a default."""
        if default is _MISSING:
            return self._run(C["dict.pop"], key)
        return self._run(C["dict.pop"], key, default)

    def popitem(self) -> tuple[Any, Any]:
        """Remove and return the last inserted ``(key, value)``; ``KeyError`` if empty."""
        return self._run(C["dict.popitem"])  # type: ignore[no-any-return]

    def clear(self) -> Any:
        """Remove all items."""
        return self._run(C["dict.clear"])

    def update(self, other: Any = (), /, **kwargs: Any) -> Any:
        """``d.update(mapping_or_pairs, **kwargs)`` as one atomic command (all applied, or none)."""
        items: dict[Any, Any] = {}
        items.update(_plain(other), **kwargs)  # dict's own argument handling and errors, before anything is sent
        return self._run(C["dict.update"], items)

    def keys(self) -> KeysView[Any]:
        """A snapshot of the keys (a real ``dict_keys``: supports ``in``, ``len`` and set operations)."""
        return self._copy_as("keys", _keys_view, now=False)

    def values(self) -> ValuesView[Any]:
        """A snapshot of the values."""
        return self._copy_as("values", _values_view, now=False)

    def items(self) -> ItemsView[Any, Any]:
        """A snapshot of the ``(key, value)`` pairs."""
        return self._copy_as("items", _items_view, now=False)

    def copy(self) -> dict[Any, Any]:
        """A plain ``dict`` copy (same as ``todict()``)."""
        return self._copy_as("items", _same, now=False)

    def todict(self) -> dict[Any, Any]:
        """Copy the whole table into a plain ``dict`` (in pieces if it is big: see :mod:`cyberdb.server.scan`)."""
        return self._copy_as("items", _same, now=False)

    def set(self, key: Any, value: Any, ttl: float | None = None) -> Any:
        """``d[key] = value``, expiring ``ttl`` seconds from now (None: never, like ``d[key] = value``).

        Like Redis ``SET``, storing a value with ``d[key] = value``, ``set`` or ``update`` replaces any expiry
        the key had; changing it in place (``incr``, ``ref(key)...``, ``setdefault`` of an existing key) keeps
        it.  An expired key is gone for every operation at once; deadlines are absolute (wall clock).

        Raises:
            ValueError: ``ttl`` is not a number of seconds above 0 (nothing is sent).
        """
        if ttl is None:
            return self._run(C["dict.set"], key, value)
        return self._run(C["dict.set"], key, value, _seconds(ttl, "ttl"))

    def expire(self, key: Any, seconds: float) -> Any:
        """Make ``key`` expire ``seconds`` from now (0 or less deletes it now, as Redis ``EXPIRE`` does).

        Raises:
            KeyError: ``key`` is not in the table.
        """
        return self._run(C["dict.expire"], key, _seconds(seconds, "seconds", positive=False))

    def ttl(self, key: Any) -> float | None:
        """Seconds until ``key`` expires, or None if it has no expiry.

        Raises:
            KeyError: ``key`` is not in the table (or has expired).
        """
        return self._run(C["dict.ttl"], key)  # type: ignore[no-any-return]

    def persist(self, key: Any) -> bool:
        """Remove ``key``'s expiry; return whether it had one.

        Raises:
            KeyError: ``key`` is not in the table.
        """
        return self._run(C["dict.persist"], key)  # type: ignore[no-any-return]

    def incr(self, key: Any, amount: Any = 1) -> Any:
        """Add ``amount`` to the number at ``key`` atomically and return the new value.

        A missing key counts as 0; ints, floats and Decimals mix as in Python (``int + float`` is a float).

        Raises:
            TypeError: the value or ``amount`` is not a number (bools are not); nothing changes.
        """
        return self._run(C["dict.incr"], key, amount)

    def ref(self, key: Any, *path: Any) -> CyberRef:
        """A handle on the value at ``self[key][path[0]][path[1]]...``, updated in place on the server.

        Example: ``sessions.ref(sid, "cart").append(item)``, ``stats.ref("pages", "/home").incr()``.
        """
        return self._ref_path(key, path)


def _index(i: Any, message: str | None = None) -> int:
    """``operator.index(i)``, raising ``TypeError`` with the message ``list`` itself would give."""
    try:
        return operator.index(i)
    except TypeError:
        if message is None:
            raise  # "'float' object cannot be interpreted as an integer", as list.insert/pop say
        raise TypeError(message.format(type(i).__name__)) from None


_ITEM = "list indices must be integers or slices, not {}"
_SLICE = "slice indices must be integers or None or have an __index__ method"
_BOUND = "slice indices must be integers or have an __index__ method"


def _slice_args(s: slice) -> tuple[int | None, int | None, int | None]:
    return tuple(None if part is None else _index(part, _SLICE) for part in (s.start, s.stop, s.step))  # type: ignore[return-value]


def _setslice_args(index: slice, value: Any) -> tuple[Any, ...]:
    """The arguments of ``list.setslice``, with the errors ``list`` gives before changing anything."""
    bounds = _slice_args(index)
    if bounds[2] == 0:
        raise ValueError("slice step cannot be zero")
    try:
        items = list(_plain(value))
    except TypeError:
        raise TypeError("must assign iterable to extended slice" if index.step not in (None, 1)
                        else "can only assign an iterable") from None
    return (*bounds, items)


class ListOps(_Table):
    """Every ``list`` method as one request, written once (``CyberList`` and ``CyberRef`` are made of it)."""

    __slots__ = ()

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self._run(C["list.getslice"], *_slice_args(index))
        return self._run(C["list.getitem"], _index(index, _ITEM))

    def __setitem__(self, index: Any, value: Any) -> Any:
        if isinstance(index, slice):
            return self._run(C["list.setslice"], *_setslice_args(index, value))
        return self._run(C["list.setitem"], _index(index, _ITEM), value)

    def __delitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return self._run(C["list.delslice"], *_slice_args(index))
        return self._run(C["list.delitem"], _index(index, _ITEM))

    def __len__(self) -> int:
        return self._now(C["list.len"])  # type: ignore[no-any-return]

    def __contains__(self, value: object) -> bool:
        return self._now(C["list.contains"], value)  # type: ignore[no-any-return]

    def _pieces(self) -> Steps[None]:
        # by index, in pieces of at most ~1 MiB (list.scan), like list iteration: bounded memory
        return self._chunks_forward()

    @staticmethod
    def _piece_items(reply: Any) -> Iterable[Any]:
        return itertools.chain.from_iterable(reply[1])

    def _copy_as(self, what: str, finish: Callable[[Any], T], now: bool = True) -> T:
        return self._x.run(self._scan(C["list.scan"], what, finish), now)  # type: ignore[return-value]

    def _chunks_forward(self) -> Steps[None]:
        # ends only on an empty chunk, asked for once the items before were consumed: like a list iterator, it
        # sees items appended while it runs, until it has ended (one more round trip per iteration)
        start = 0
        while True:
            _next, parts = yield self._step(C["list.scan"], start, "list")
            count = sum(len(part) for part in parts)
            if not count:
                return
            start += count

    def __reversed__(self) -> Iterator[Any]:
        replies = self._x.stream(self._chunks_backward())
        next(replies)  # the first reply is the length
        for chunk in replies:
            yield from reversed(chunk)

    def _chunks_backward(self) -> Steps[None]:
        stop = yield self._step(C["list.len"])
        while stop > 0:
            start = max(0, stop - ITER_CHUNK)
            yield self._step(C["list.getslice"], start, stop, None)
            stop = start

    def _compare(self, other: object, op: Callable[[Any, Any], bool]) -> bool:
        items = _other_list(other)
        if items is NotImplemented:
            return NotImplemented  # type: ignore[no-any-return]
        return self._copy_as("list", lambda content: op(content, items))

    def __eq__(self, other: object) -> bool:
        return self._compare(other, operator.eq)

    def __ne__(self, other: object) -> bool:
        return self._compare(other, operator.ne)

    def __lt__(self, other: object) -> bool:
        return self._compare(other, operator.lt)

    def __le__(self, other: object) -> bool:
        return self._compare(other, operator.le)

    def __gt__(self, other: object) -> bool:
        return self._compare(other, operator.gt)

    def __ge__(self, other: object) -> bool:
        return self._compare(other, operator.ge)

    def __add__(self, other: Any) -> list[Any]:
        items = _other_list(other)
        if items is NotImplemented:
            raise TypeError(f'can only concatenate list (not "{type(other).__name__}") to list')
        return self._copy_as("list", lambda content: content + items)

    def __radd__(self, other: Any) -> list[Any]:
        if not isinstance(other, list):
            return NotImplemented
        return self._copy_as("list", lambda content: other + content)

    def __iadd__(self: _L, other: Iterable[Any]) -> _L:  # type: ignore[misc]  # += extends, + copies
        self.extend(other)
        return self

    def __mul__(self, n: Any) -> list[Any]:
        count = _repeat_count(n)
        return self._copy_as("list", lambda content: content * count)

    __rmul__ = __mul__

    def __imul__(self: _L, n: Any) -> _L:
        self._run(C["list.imul"], _repeat_count(n))
        return self

    def __repr__(self) -> str:
        return self._x.run(self._head(C["list.scan"], repr, _short_list), True)

    def append(self, value: Any) -> Any:
        """Append one item."""
        return self._run(C["list.append"], value)

    def extend(self, values: Iterable[Any]) -> Any:
        """Append all items of an iterable, atomically."""
        return self._run(C["list.extend"], _listed(_plain(values)))

    def insert(self, index: int, value: Any) -> Any:
        """Insert ``value`` before ``index``."""
        return self._run(C["list.insert"], _index(index), value)

    def pop(self, index: int = -1, *, timeout: float | None = None, into: CyberList | str | None = None) -> Any:
        """Remove and return the item at ``index`` (default last); ``IndexError`` if out of range.

        Args:
            timeout: None or 0 (the default): do not wait, exactly ``list.pop``.  A number of seconds > 0
                (``math.inf``: no limit): while the list is empty, wait on the server for an item, without holding
                up other clients; waiters on one list are served first come, first served.  ``IndexError`` if
                none came in time.  Inside a pipeline, an atomic batch or a transaction it does not wait (as
                Redis's BLPOP inside MULTI).  Only a table waits (a ``ref()`` handle's ``pop`` takes no timeout).
            into: a CyberList (or a table name): the item is appended to the end of that table in the same
                atomic command (a reliable queue: a job a dead worker held stays there).  If ``into`` does not
                exist or is not a CyberList, that error is raised and nothing is popped.

        Raises:
            ValueError: ``timeout`` is negative or NaN (nothing is sent).
        """
        if timeout is not None:
            if not isinstance(timeout, (int, float)) or isinstance(timeout, bool):
                raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")
            if not timeout >= 0:
                raise ValueError(f"timeout must be >= 0 (or math.inf), not {timeout!r}")
            timeout = timeout or None
        if into is None:
            if timeout is None:
                return self._run(C["list.pop"], _index(index))
        elif isinstance(into, ListOps) and not isinstance(into, CyberRef):  # a list table, sync or async
            into = into.name
        elif not isinstance(into, str):
            raise TypeError(f"into must be a CyberList or a table name, not {type(into).__name__}")
        return self._run(C["list.bpop"], _index(index), timeout, into)

    def remove(self, value: Any) -> Any:
        """Remove the first occurrence of ``value``; ``ValueError`` if absent."""
        return self._run(C["list.remove"], value)

    def count(self, value: Any) -> int:
        """Number of occurrences of ``value``."""
        return self._run(C["list.count"], value)  # type: ignore[no-any-return]

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """First index of ``value`` in ``[start:stop]``; ``ValueError`` if absent."""
        if stop is None:
            return self._run(C["list.index"], value, _index(start, _BOUND))  # type: ignore[no-any-return]
        return self._run(C["list.index"], value, _index(start, _BOUND), _index(stop, _BOUND))  # type: ignore[no-any-return]

    def reverse(self) -> Any:
        """Reverse in place."""
        return self._run(C["list.reverse"])

    def clear(self) -> Any:
        """Remove all items."""
        return self._run(C["list.clear"])

    def copy(self) -> list[Any]:
        """A plain ``list`` copy (same as ``tolist()``)."""
        return self._copy_as("list", _same, now=False)

    def tolist(self) -> list[Any]:
        """Copy the whole table into a plain ``list`` (in pieces if it is big: see :mod:`cyberdb.server.scan`)."""
        return self._copy_as("list", _same, now=False)

    def incr(self, index: int, amount: Any = 1) -> Any:
        """Add ``amount`` to the number at ``index`` atomically and return the new value (see ``CyberDict.incr``)."""
        return self._run(C["list.incr"], _index(index, _ITEM), amount)

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> Any:
        """Sort in place, like ``list.sort``.

        Without ``key`` the server sorts.  With ``key`` the function never leaves this process: the list is
        read, sorted here and written back by one command that applies only if the list did not change
        meanwhile (retried up to ``SORT_ATTEMPTS`` times).

        Raises:
            ConcurrentModificationError: the list kept changing under us.
        """
        if key is None:
            return self._run(C["list.sort"], bool(reverse))
        return self._x.run(self._sort_steps(key, bool(reverse)), True)

    def _sort_steps(self, key: Callable[[Any], Any], reverse: bool) -> Steps[None]:
        for _ in range(SORT_ATTEMPTS):
            version, items = yield self._step(C["list.snapshot"])
            items.sort(key=key, reverse=reverse)
            if (yield self._step(C["list.replace_if"], version, items)):
                return
        raise ConcurrentModificationError(
            f"CyberList {self._name!r} changed during each of {SORT_ATTEMPTS} attempts to sort it with a key")

    def ref(self, index: int, *path: Any) -> CyberRef:
        """A handle on the value at ``self[index][path[0]]...``, updated in place on the server."""
        return self._ref_path(_index(index, _ITEM), path)


class CyberDict(DictOps, MutableMapping[Any, Any]):
    """A ``dict`` stored on the server; every method and operator of ``dict`` is one round trip."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable, like dict


class CyberList(ListOps, MutableSequence[Any]):
    """A ``list`` stored on the server; every method and operator of ``list`` is one round trip."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]


class CyberRef(DictOps, ListOps):
    """A handle on a value nested inside a table, at a path of keys and indexes: ``d.ref(key, *path)``.

    Every call is one atomic command on the server, run on the value found at the path *then*: a nested
    dict has every ``CyberDict`` method, a nested list every ``CyberList`` method, and ``incr()`` adds to a
    number.  Errors along the path are Python's own (``KeyError``, ``IndexError``, ``TypeError``); a method
    the value's type lacks raises ``TypeError``.  ``ref.ref(*more)`` goes deeper; ``copy()`` reads the value,
    whatever its type.  Note that ``incr(amount)`` adds to the value the handle points at: to add to a key of a
    nested dict, use ``ref.ref(key).incr(amount)`` (which is what ``CyberDict.incr(key, amount)`` does).
    """

    __slots__ = ("_path",)
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, executor: Executor, name: str, path: tuple[Any, ...]) -> None:
        super().__init__(executor, name)
        self._path = path

    @property
    def path(self) -> tuple[Any, ...]:
        """The keys and indexes from the table to the value."""
        return self._path

    def _run(self, spec: CommandSpec, *args: Any, shape: Any = SPEC_REPLY) -> Any:
        return self._x.call(AT_PATH[spec.op], [self._name, list(self._path), *args], shape)

    def _step(self, spec: CommandSpec, *args: Any) -> Step:
        return AT_PATH[spec.op], [self._name, list(self._path), *args]

    def _ref_path(self, first: Any, more: tuple[Any, ...]) -> CyberRef:
        return CyberRef(self._x, self._name, (*self._path, first, *more))

    def ref(self, *path: Any) -> CyberRef:
        """A handle further down: ``ref.ref("a", 0)`` points at ``value["a"][0]``."""
        return CyberRef(self._x, self._name, (*self._path, *path))

    def __repr__(self) -> str:
        return f"<CyberRef {self._name!r} {list(self._path)!r}>"

    # what dicts and lists both have: the server runs the dict or list command by what it finds at the path
    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return self._run(C["list.getslice"], *_slice_args(key))
        return self._run(C["dict.getitem"], key)

    def __setitem__(self, key: Any, value: Any) -> Any:
        if isinstance(key, slice):
            return self._run(C["list.setslice"], *_setslice_args(key, value))
        else:
            return self._run(C["dict.setitem"], key, value)

    def __delitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            return self._run(C["list.delslice"], *_slice_args(key))
        else:
            return self._run(C["dict.delitem"], key)

    def _pieces(self) -> Steps[None]:
        yield self._step(C["dict.copy"])  # a dict's keys or a list's items: the value in one piece

    @staticmethod
    def _piece_items(reply: Any) -> Iterable[Any]:
        return reply  # type: ignore[no-any-return]

    def __reversed__(self) -> Iterator[Any]:
        return self._now(C["dict.copy"], shape=_reversed)  # type: ignore[no-any-return]

    def __eq__(self, other: object) -> bool:
        other = _plain(other)
        return self._now(C["dict.copy"], shape=lambda value: value == other)  # type: ignore[no-any-return]

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    def pop(self, *args: Any) -> Any:  # type: ignore[override]  # no timeout/into: only a table waits
        """``dict.pop(key[, default])`` or ``list.pop([index])``, by the value's type (never waits)."""
        if not args:
            return self._run(C["list.pop"])
        return self._run(C["dict.pop"], *args)

    def copy(self) -> Any:
        """A plain copy of the value at the path, whatever its type."""
        return self._run(C["dict.copy"])

    def incr(self, amount: Any = 1) -> Any:  # type: ignore[override]  # see the class docstring
        """Add ``amount`` to the number this handle points at; a missing last key counts as 0."""
        *parent, last = self._path
        return self._x.call(AT_PATH[C["dict.incr"].op], [self._name, parent, last, amount])

    # the rest comes from DictOps (len, in, clear, get, setdefault, popitem, update, keys, values, items, todict,
    # |, |=) and ListOps (append, extend, insert, remove, count, index, reverse, sort, tolist, <, +, +=, *, *=)


def _plain(value: Any) -> Any:
    """The plain value behind a table or handle (one read); anything else as it is."""
    if isinstance(value, CyberDict):
        return value.todict()
    if isinstance(value, CyberList):
        return value.tolist()
    if isinstance(value, CyberRef):
        return value.copy()
    return value


def _joined(parts: list[Any], what: str) -> Any:
    """The pieces of a scan as one dict or list."""
    if len(parts) == 1:
        return parts[0]
    if what in ("items", "head"):
        whole: dict[Any, Any] = {}
        for part in parts:
            whole.update(part)
        return whole
    return list(itertools.chain.from_iterable(parts))


def _same(value: T) -> T:
    return value


def _reversed(value: Any) -> Iterator[Any]:
    return reversed(value)  # type: ignore[no-any-return]


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlong = 4, 80, 80, 80
_REPR.maxdict = _REPR.maxlist = _REPR.maxtuple = _REPR.maxset = _REPR.maxfrozenset = 20


def _short_dict(head: dict[Any, Any]) -> str:
    """The ``repr`` of a table too big to print: its first items, shortened like ``reprlib``, then ``...``."""
    return "{" + "".join(f"{_REPR.repr(k)}: {_REPR.repr(v)}, " for k, v in head.items()) + "...}"


def _short_list(head: list[Any]) -> str:
    return "[" + "".join(f"{_REPR.repr(item)}, " for item in head) + "...]"


def _seconds(value: Any, what: str, positive: bool = True) -> float:
    """A number of seconds for an expiry, checked before anything is sent."""
    if type(value) not in (int, float) or value != value or (positive and value <= 0):
        raise ValueError(f"{what} must be a number of seconds{' above 0' if positive else ''}, not {value!r}")
    return float(value)


def _listed(values: Any) -> list[Any]:
    """``list(values)`` without trusting ``__length_hint__`` (a huge hint makes ``list()`` raise MemoryError
    before the first item, where ``list.extend`` just appends what the iterator gives)."""
    if type(values) is list:
        return values
    if type(values) is tuple:
        return list(values)
    return [value for value in values]


def _other_list(other: object) -> Any:
    other = _plain(other)
    if isinstance(other, list):
        return other
    return NotImplemented


def _repeat_count(n: Any) -> int:
    try:
        return operator.index(n)
    except TypeError:
        raise TypeError(f"can't multiply sequence by non-int of type '{type(n).__name__}'") from None
