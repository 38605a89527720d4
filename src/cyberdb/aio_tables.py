"""The asyncio tables: :class:`AsyncCyberDict`, :class:`AsyncCyberList`, :class:`AsyncCyberRef`.

They are the table layer of :mod:`cyberdb.tables` (``DictOps``/``ListOps``/``CyberRef``) over an asyncio
executor (:class:`cyberdb.aio.AsyncProxy`), whose ``call`` returns an awaitable: every method is inherited, not
rewritten, and returns an awaitable of the same result as the synchronous table (``await d.get(k)``,
``await l.pop(0, timeout=5)``, ``await l.sort(key=f)``).  What Python cannot await (``len()``, ``in``,
``d[k] = v``, ``del d[k]``, ``==``, ``bool()``, ``+=``, ``for``) raises ``TypeError`` naming the coroutine
method to use instead; each such method calls the inherited operator, so the semantics stay written once:

=====================  ==============================
synchronous            asyncio
=====================  ==============================
``t[k]``               ``await t[k]`` or ``await t.getitem(k)``
``t[k] = v``           ``await t.setitem(k, v)``
``del t[k]``           ``await t.delitem(k)``
``len(t)``             ``await t.len()``
``x in t``             ``await t.contains(x)``
``t == o``, ``!=``     ``await t.equals(o)``, ``not await t.equals(o)``
``l < o`` ...          ``await l.lt(o)``, ``le``, ``gt``, ``ge``
``d | o``              ``await d.union(o)``
``d |= o``             ``await d.update(o)``
``l + o``              ``await l.concat(o)``
``l += o``             ``await l.extend(o)``
``l * n``, ``l *= n``  ``await l.repeat(n)``, ``await l.irepeat(n)``
``for x in t``         ``async for x in t``
``reversed(t)``        ``async for x in t.reversed()``
``repr(t)``            ``await t.describe()`` (``repr(t)`` shows only the name)
=====================  ==============================

Arguments are plain values: pass ``await other.todict()`` rather than another async table.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

from .commands import BY_NAME
from .executor import Executor
from .tables import CyberRef, DictOps, ListOps, _repeat_count

__all__ = ["AsyncCyberDict", "AsyncCyberList", "AsyncCyberRef"]

_LIST_IMUL = BY_NAME["list.imul"]


def _refuse(what: str, instead: str) -> TypeError:
    return TypeError(f"{what} cannot be awaited on an asyncio table: use {instead}")


async def _awaited(result: Any, what: str) -> Any:
    if result is NotImplemented:
        raise TypeError(f"unsupported operand for {what}")
    return await result


class _AsyncOps:
    """What the three async tables share: coroutine methods for the operators, and operators that refuse."""

    __slots__ = ()
    __hash__ = None  # type: ignore[assignment]  # mutable, like dict and list
    _name: str
    _x: Executor

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._name!r}>"

    # the operators Python cannot await
    def __len__(self) -> int:
        raise _refuse("len(table)", "await table.len()")

    def __contains__(self, item: object) -> bool:
        raise _refuse("'x in table'", "await table.contains(x)")

    def __bool__(self) -> bool:
        raise _refuse("bool(table)", "await table.len()")

    def __iter__(self) -> Any:
        raise _refuse("'for x in table'", "'async for x in table'")

    def __reversed__(self) -> Any:
        raise _refuse("reversed(table)", "'async for x in table.reversed()'")

    def __setitem__(self, key: Any, value: Any) -> None:
        raise _refuse("'table[k] = v'", "await table.setitem(k, v)")

    def __delitem__(self, key: Any) -> None:
        raise _refuse("'del table[k]'", "await table.delitem(k)")

    def __eq__(self, other: object) -> bool:
        raise _refuse("'table == other'", "await table.equals(other)")

    def __ne__(self, other: object) -> bool:
        raise _refuse("'table != other'", "not await table.equals(other)")

    def __or__(self, other: Any) -> Any:
        raise _refuse("'table | other'", "await table.union(other)")

    __ror__ = __or__

    def __ior__(self, other: Any) -> Any:
        raise _refuse("'table |= other'", "await table.update(other)")

    def __add__(self, other: Any) -> Any:
        raise _refuse("'table + other'", "await table.concat(other)")

    __radd__ = __add__

    def __iadd__(self, other: Any) -> Any:
        raise _refuse("'table += other'", "await table.extend(other)")

    def __mul__(self, n: Any) -> Any:
        raise _refuse("'table * n'", "await table.repeat(n)")

    __rmul__ = __mul__

    def __imul__(self, n: Any) -> Any:
        raise _refuse("'table *= n'", "await table.irepeat(n)")

    def __lt__(self, other: Any) -> bool:
        raise _refuse("'<'", "await table.lt(other)")

    __le__ = __gt__ = __ge__ = __lt__

    # their coroutine forms: each calls the inherited operator, which returns the executor's awaitable
    def getitem(self, key: Any) -> Awaitable[Any]:
        """``await t.getitem(k)`` (also ``await t[k]``)."""
        return super().__getitem__(key)  # type: ignore[misc, no-any-return]

    def setitem(self, key: Any, value: Any) -> Awaitable[None]:
        """``await t.setitem(k, v)``: ``t[k] = v``."""
        return super().__setitem__(key, value)  # type: ignore[misc, no-any-return]

    def delitem(self, key: Any) -> Awaitable[None]:
        """``await t.delitem(k)``: ``del t[k]``."""
        return super().__delitem__(key)  # type: ignore[misc, no-any-return]

    def len(self) -> Awaitable[int]:
        """``await t.len()``: ``len(t)``."""
        return super().__len__()  # type: ignore[misc, no-any-return]

    def contains(self, item: Any) -> Awaitable[bool]:
        """``await t.contains(x)``: ``x in t``."""
        return super().__contains__(item)  # type: ignore[misc, no-any-return]

    def equals(self, other: Any) -> Awaitable[bool]:
        """``await t.equals(o)``: ``t == o`` (False for an ``o`` of another kind, as ``==`` gives)."""
        result: Any = super().__eq__(other)
        return _false() if result is NotImplemented else result

    def describe(self) -> Awaitable[str]:
        """``await t.describe()``: what ``repr(t)`` of a synchronous table gives (the contents, shortened)."""
        result: Any = super().__repr__()  # the table layer's repr, through this table's executor: an awaitable
        return result  # type: ignore[no-any-return]

    async def __aiter__(self) -> AsyncIterator[Any]:
        """``async for x in t``: the same requests as ``for x in t`` of a synchronous table."""
        piece_items = self._piece_items  # type: ignore[attr-defined]
        async for reply in self._x.stream(self._pieces()):  # type: ignore[attr-defined]
            for item in piece_items(reply):
                yield item

    async def reversed(self) -> AsyncIterator[Any]:
        """``async for x in t.reversed()``: ``reversed(t)`` (a snapshot, taken at the first item)."""
        for item in await super().__reversed__():  # type: ignore[misc]
            yield item


async def _false() -> bool:
    return False


class _AsyncDictOps(_AsyncOps):
    __slots__ = ()

    def union(self, other: Any) -> Awaitable[dict[Any, Any]]:
        """``await d.union(o)``: ``d | o`` (a plain dict)."""
        return _awaited(super(_AsyncOps, self).__or__(other), "|")  # type: ignore[misc]


class _AsyncListOps(_AsyncOps):
    __slots__ = ()

    def _acompare(self, name: str, other: Any) -> Awaitable[bool]:
        return _awaited(getattr(super(_AsyncOps, self), name)(other), name)

    def lt(self, other: Any) -> Awaitable[bool]:
        """``await l.lt(o)``: ``l < o``."""
        return self._acompare("__lt__", other)

    def le(self, other: Any) -> Awaitable[bool]:
        """``await l.le(o)``: ``l <= o``."""
        return self._acompare("__le__", other)

    def gt(self, other: Any) -> Awaitable[bool]:
        """``await l.gt(o)``: ``l > o``."""
        return self._acompare("__gt__", other)

    def ge(self, other: Any) -> Awaitable[bool]:
        """``await l.ge(o)``: ``l >= o``."""
        return self._acompare("__ge__", other)

    def concat(self, other: Any) -> Awaitable[list[Any]]:
        """``await l.concat(o)``: ``l + o`` (a plain list)."""
        return super(_AsyncOps, self).__add__(other)  # type: ignore[misc, no-any-return]

    def repeat(self, n: Any) -> Awaitable[list[Any]]:
        """``await l.repeat(n)``: ``l * n`` (a plain list)."""
        return super(_AsyncOps, self).__mul__(n)  # type: ignore[misc, no-any-return]

    async def reversed(self) -> AsyncIterator[Any]:
        """``async for x in l.reversed()``: ``reversed(l)``, from the end in chunks (the same requests)."""
        replies: Any = self._x.stream(self._chunks_backward())  # type: ignore[attr-defined]
        await replies.__anext__()  # the first reply is the length
        async for chunk in replies:
            for item in reversed(chunk):
                yield item

    def irepeat(self, n: Any) -> Awaitable[None]:
        """``await l.irepeat(n)``: ``l *= n``, in place on the server."""
        return self._run(_LIST_IMUL, _repeat_count(n))  # type: ignore[attr-defined, no-any-return]


class AsyncCyberDict(_AsyncDictOps, DictOps):
    """A ``dict`` stored on the server, for asyncio: every method of :class:`~cyberdb.CyberDict` as a coroutine."""

    __slots__ = ()

    def _ref_path(self, first: Any, more: tuple[Any, ...]) -> CyberRef:
        return AsyncCyberRef(self._x, self._name, (first, *more))


class AsyncCyberList(_AsyncListOps, ListOps):
    """A ``list`` stored on the server, for asyncio: every method of :class:`~cyberdb.CyberList` as a coroutine."""

    __slots__ = ()

    def pop(self, index: int = -1, *, timeout: float | None = None, into: Any = None) -> Any:
        """``ListOps.pop`` (``await l.pop(0, timeout=30, into=other)``); ``into`` may be an AsyncCyberList."""
        return super().pop(index, timeout=timeout, into=into.name if isinstance(into, AsyncCyberList) else into)

    def _ref_path(self, first: Any, more: tuple[Any, ...]) -> CyberRef:
        return AsyncCyberRef(self._x, self._name, (first, *more))


class AsyncCyberRef(_AsyncDictOps, _AsyncListOps, CyberRef):
    """A handle on a value nested inside a table (``d.ref(key, *path)``), for asyncio (see ``CyberRef``)."""

    __slots__ = ()

    reversed = _AsyncOps.reversed  # the value's keys or items, in one request (as CyberRef's reversed())

    def __repr__(self) -> str:
        return f"<AsyncCyberRef {self._name!r} {list(self._path)!r}>"

    def _ref_path(self, first: Any, more: tuple[Any, ...]) -> CyberRef:
        return AsyncCyberRef(self._x, self._name, (*self._path, first, *more))

    def ref(self, *path: Any) -> CyberRef:
        """A handle further down: ``ref.ref("a", 0)`` points at ``value["a"][0]``."""
        return AsyncCyberRef(self._x, self._name, (*self._path, *path))
