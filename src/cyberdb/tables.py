"""CyberDict and CyberList: the ``dict`` and ``list`` protocols, each operation one command on the server.

They subclass ``collections.abc`` for the surface, but every method the ABC would build from several round
trips (``update``, ``pop``, ``setdefault``, ``extend``, ``__iadd__``, ...) is one server command, so each call
is atomic.  A table object belongs to the proxy that made it and uses that proxy's connection: after
``proxy.close()`` it raises :class:`~cyberdb.errors.DisconnectedError`, after ``proxy.connect()`` it works again.

Copies and views (``keys()``, ``values()``, ``items()``, ``copy()``, ``todict()``, ``tolist()``, ``a + b``)
are snapshots taken in one command, not live views.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Iterator, MutableMapping, MutableSequence
from typing import TYPE_CHECKING, Any, Protocol, overload

from .commands import BY_NAME, CommandSpec
from .errors import ConcurrentModificationError

if TYPE_CHECKING:
    from collections.abc import ItemsView, KeysView, ValuesView

__all__ = ["CyberDict", "CyberList"]

ITER_CHUNK = 1000  # items per round trip when iterating a CyberList
SORT_ATTEMPTS = 10  # sort(key=...) retries when the list changes between its read and its write-back
_MISSING: Any = object()
C = BY_NAME


class _Executor(Protocol):
    def _execute(self, spec: CommandSpec, *args: Any) -> Any: ...


class _Table:
    """What both kinds share: the proxy, the name, and the one way to run a command."""

    __slots__ = ("_name", "_proxy")

    def __init__(self, proxy: _Executor, name: str) -> None:
        self._proxy = proxy
        self._name = name

    @property
    def name(self) -> str:
        """The table's name on the server."""
        return self._name

    def _run(self, spec: CommandSpec, *args: Any) -> Any:
        return self._proxy._execute(spec, self._name, *args)


class CyberDict(_Table, MutableMapping[Any, Any]):
    """A ``dict`` stored on the server; every method and operator of ``dict`` is one round trip."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable, like dict

    def __getitem__(self, key: Any) -> Any:
        return self._run(C["dict.getitem"], key)

    def __setitem__(self, key: Any, value: Any) -> None:
        self._run(C["dict.setitem"], key, value)

    def __delitem__(self, key: Any) -> None:
        self._run(C["dict.delitem"], key)

    def __contains__(self, key: object) -> bool:
        return bool(self._run(C["dict.contains"], key))

    def __len__(self) -> int:
        return int(self._run(C["dict.len"]))

    def __iter__(self) -> Iterator[Any]:
        keys: list[Any] = self._run(C["dict.keys"])
        return iter(keys)  # a snapshot: unlike a dict, changing the table while iterating is allowed

    def __reversed__(self) -> Iterator[Any]:
        keys: list[Any] = self._run(C["dict.keys"])
        return iter(keys[::-1])

    def __eq__(self, other: object) -> bool:
        if isinstance(other, CyberDict):
            other = other.todict()
        if not isinstance(other, dict):
            return NotImplemented
        return self.todict() == other

    def __ne__(self, other: object) -> bool:
        result = self.__eq__(other)
        return result if result is NotImplemented else not result

    def __or__(self, other: Any) -> dict[Any, Any]:
        if isinstance(other, CyberDict):
            other = other.todict()
        if not isinstance(other, dict):
            return NotImplemented
        return self.todict() | other

    def __ror__(self, other: Any) -> dict[Any, Any]:
        if not isinstance(other, dict):
            return NotImplemented
        return other | self.todict()

    def __ior__(self, other: Any) -> CyberDict:
        self.update(other)
        return self

    def __repr__(self) -> str:
        return repr(self.todict())

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
        key, value = self._run(C["dict.popitem"])
        return key, value

    def clear(self) -> None:
        """Remove all items."""
        self._run(C["dict.clear"])

    def update(self, other: Any = (), /, **kwargs: Any) -> None:
        """``d.update(mapping_or_pairs, **kwargs)`` as one atomic command (all applied, or none)."""
        if isinstance(other, CyberDict):
            other = other.todict()
        items: dict[Any, Any] = {}
        items.update(other, **kwargs)  # dict's own argument handling and errors, before anything is sent
        self._run(C["dict.update"], items)

    def keys(self) -> KeysView[Any]:
        """A snapshot of the keys (a real ``dict_keys``: supports ``in``, ``len`` and set operations)."""
        return dict.fromkeys(self._run(C["dict.keys"])).keys()

    def values(self) -> ValuesView[Any]:
        """A snapshot of the values."""
        return dict(enumerate(self._run(C["dict.values"]))).values()

    def items(self) -> ItemsView[Any, Any]:
        """A snapshot of the ``(key, value)`` pairs."""
        return self.todict().items()

    def copy(self) -> dict[Any, Any]:
        """A plain ``dict`` copy (same as ``todict()``)."""
        return self.todict()

    def todict(self) -> dict[Any, Any]:
        """Copy the whole table into a plain ``dict``."""
        result: dict[Any, Any] = self._run(C["dict.todict"])
        return result


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


class CyberList(_Table, MutableSequence[Any]):
    """A ``list`` stored on the server; every method and operator of ``list`` is one round trip."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]

    @overload
    def __getitem__(self, index: int) -> Any: ...
    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            items: list[Any] = self._run(C["list.getslice"], *_slice_args(index))
            return items
        return self._run(C["list.getitem"], _index(index, _ITEM))

    def __setitem__(self, index: Any, value: Any) -> None:
        if isinstance(index, slice):
            bounds = _slice_args(index)
            if bounds[2] == 0:
                raise ValueError("slice step cannot be zero")
            if isinstance(value, CyberList):
                value = value.tolist()
            try:
                items = list(value)
            except TypeError:
                raise TypeError("must assign iterable to extended slice" if index.step not in (None, 1)
                                else "can only assign an iterable") from None
            self._run(C["list.setslice"], *bounds, items)
        else:
            self._run(C["list.setitem"], _index(index, _ITEM), value)

    def __delitem__(self, index: Any) -> None:
        if isinstance(index, slice):
            self._run(C["list.delslice"], *_slice_args(index))
        else:
            self._run(C["list.delitem"], _index(index, _ITEM))

    def __len__(self) -> int:
        return int(self._run(C["list.len"]))

    def __contains__(self, value: object) -> bool:
        return bool(self._run(C["list.contains"], value))

    def __iter__(self) -> Iterator[Any]:
        # by index, in chunks, like list iteration: bounded memory, one round trip per ITER_CHUNK items
        start = 0
        while True:
            chunk = self._run(C["list.getslice"], start, start + ITER_CHUNK, None)
            yield from chunk
            if len(chunk) < ITER_CHUNK:
                return
            start += len(chunk)

    def __reversed__(self) -> Iterator[Any]:
        stop = len(self)
        while stop > 0:
            start = max(0, stop - ITER_CHUNK)
            chunk = self._run(C["list.getslice"], start, stop, None)
            yield from reversed(chunk)
            stop = start

    def _compare(self, other: object, op: Callable[[Any, Any], bool]) -> bool:
        items = _other_list(other)
        if items is NotImplemented:
            return NotImplemented  # type: ignore[no-any-return]
        return op(self.tolist(), items)

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
        result: list[Any] = self.tolist() + items
        return result

    def __radd__(self, other: Any) -> list[Any]:
        if not isinstance(other, list):
            return NotImplemented
        return other + self.tolist()

    def __iadd__(self, other: Iterable[Any]) -> CyberList:  # type: ignore[misc]
        self.extend(other)
        return self

    def __mul__(self, n: Any) -> list[Any]:
        return self.tolist() * _repeat_count(n)

    __rmul__ = __mul__

    def __imul__(self, n: Any) -> CyberList:
        self._run(C["list.imul"], _repeat_count(n))
        return self

    def __repr__(self) -> str:
        return repr(self.tolist())

    def append(self, value: Any) -> None:
        """Append one item."""
        self._run(C["list.append"], value)

    def extend(self, values: Iterable[Any]) -> None:
        """Append all items of an iterable, atomically."""
        items = values.tolist() if isinstance(values, CyberList) else list(values)
        self._run(C["list.extend"], items)

    def insert(self, index: int, value: Any) -> None:
        """Insert ``value`` before ``index``."""
        self._run(C["list.insert"], _index(index), value)

    def pop(self, index: int = -1) -> Any:
        """Remove and return the item at ``index`` (default last); ``IndexError`` if out of range."""
        return self._run(C["list.pop"], _index(index))

    def remove(self, value: Any) -> None:
        """Remove the first occurrence of ``value``; ``ValueError`` if absent."""
        self._run(C["list.remove"], value)

    def count(self, value: Any) -> int:
        """Number of occurrences of ``value``."""
        return int(self._run(C["list.count"], value))

    def index(self, value: Any, start: int = 0, stop: int | None = None) -> int:
        """First index of ``value`` in ``[start:stop]``; ``ValueError`` if absent."""
        if stop is None:
            return int(self._run(C["list.index"], value, _index(start, _BOUND)))
        return int(self._run(C["list.index"], value, _index(start, _BOUND), _index(stop, _BOUND)))

    def reverse(self) -> None:
        """Reverse in place."""
        self._run(C["list.reverse"])

    def clear(self) -> None:
        """Remove all items."""
        self._run(C["list.clear"])

    def copy(self) -> list[Any]:
        """A plain ``list`` copy (same as ``tolist()``)."""
        return self.tolist()

    def tolist(self) -> list[Any]:
        """Copy the whole table into a plain ``list``."""
        result: list[Any] = self._run(C["list.tolist"])
        return result

    def sort(self, *, key: Callable[[Any], Any] | None = None, reverse: bool = False) -> None:
        """Sort in place, like ``list.sort``.

        Without ``key`` the server sorts.  With ``key`` the function never leaves this process: the list is
        read, sorted here and written back by one command that applies only if the list did not change
        meanwhile (retried up to ``SORT_ATTEMPTS`` times).

        Raises:
            ConcurrentModificationError: the list kept changing under us.
        """
        if key is None:
            self._run(C["list.sort"], bool(reverse))
            return
        for _ in range(SORT_ATTEMPTS):
            version, items = self._run(C["list.snapshot"])
            items.sort(key=key, reverse=reverse)
            if self._run(C["list.replace_if"], version, items):
                return
        raise ConcurrentModificationError(
            f"CyberList {self._name!r} changed during each of {SORT_ATTEMPTS} attempts to sort it with a key")


def _other_list(other: object) -> Any:
    if isinstance(other, CyberList):
        return other.tolist()
    if isinstance(other, list):
        return other
    return NotImplemented


def _repeat_count(n: Any) -> int:
    try:
        return operator.index(n)
    except TypeError:
        raise TypeError(f"can't multiply sequence by non-int of type '{type(n).__name__}'") from None
