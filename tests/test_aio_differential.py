"""The differential tests of the synchronous tables, run through the asyncio client on asyncio's loop and uvloop.

The operation sequences are those of ``test_differential.py`` and ``test_differential_nested.py``: their test
bodies are called (``.hypothesis.inner_test``) with a :class:`SyncView` of an :class:`cyberdb.aio.AsyncProxy`.
The view turns each synchronous form into its documented asyncio form (README, "asyncio") and runs it on an
event loop in another thread: ``len(t)`` is ``await t.len()``, ``t == o`` is ``await t.equals(o)``,
``for x in t`` is ``async for x in t``, ``d.get(k)`` is ``await d.get(k)``, and so on.  So every result, error
and content is checked against the plain ``dict``/``list`` model exactly as for the synchronous client.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import test_differential as flat
import test_differential_nested as nested
import test_tables as table_tests
from conftest import ServerProcess
from hypothesis import given
from hypothesis import strategies as st

import cyberdb
import cyberdb.aio as aio

WAIT = 60.0  # seconds: the bound of one operation run on the loop thread

LOOPS = ["asyncio", "uvloop"]


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop of ``kind`` ("asyncio" or "uvloop")."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class LoopThread:
    """An event loop running in a thread of its own; ``run(fn)`` runs ``fn()`` (awaited if awaitable) there."""

    def __init__(self, kind: str) -> None:
        self.loop = new_loop(kind)
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"loop-{kind}", daemon=True)
        self.thread.start()

    def run(self, fn: Callable[[], Any]) -> Any:
        async def go() -> Any:
            result = fn()
            if inspect.isawaitable(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(go(), self.loop).result(WAIT)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(WAIT)
        self.loop.close()


async def _collect(items: Any) -> list[Any]:
    return [item async for item in items]


class SyncView:
    """A synchronous table made of an async one: each sync form runs its documented asyncio form."""

    def __init__(self, table: Any, lt: LoopThread) -> None:
        self._t, self._lt = table, lt

    def _do(self, fn: Callable[[], Any]) -> Any:
        return _viewed(self._lt.run(fn), self._lt)

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._t, attr)
        if not callable(value):
            return value
        return lambda *a, **k: self._do(lambda: getattr(self._t, attr)(*a, **k))

    def __repr__(self) -> str:
        return f"SyncView({self._t!r})"

    __hash__ = None  # type: ignore[assignment]

    def __getitem__(self, key: Any) -> Any:
        return self._do(lambda: self._t.getitem(key))

    def __setitem__(self, key: Any, value: Any) -> None:
        self._do(lambda: self._t.setitem(key, value))

    def __delitem__(self, key: Any) -> None:
        self._do(lambda: self._t.delitem(key))

    def __len__(self) -> int:
        return self._do(lambda: self._t.len())  # type: ignore[no-any-return]

    def __contains__(self, item: Any) -> bool:
        return self._do(lambda: self._t.contains(item))  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._do(lambda: _collect(self._t)))

    def __reversed__(self) -> Iterator[Any]:
        return iter(self._do(lambda: _collect(self._t.reversed())))

    def __eq__(self, other: object) -> bool:
        return self._do(lambda: self._t.equals(other))  # type: ignore[no-any-return]

    def __ne__(self, other: object) -> bool:
        return not self._do(lambda: self._t.equals(other))

    def __lt__(self, other: Any) -> bool:
        return self._do(lambda: self._t.lt(other))  # type: ignore[no-any-return]

    def __le__(self, other: Any) -> bool:
        return self._do(lambda: self._t.le(other))  # type: ignore[no-any-return]

    def __gt__(self, other: Any) -> bool:
        return self._do(lambda: self._t.gt(other))  # type: ignore[no-any-return]

    def __ge__(self, other: Any) -> bool:
        return self._do(lambda: self._t.ge(other))  # type: ignore[no-any-return]

    def __or__(self, other: Any) -> Any:
        return self._do(lambda: self._t.union(other))

    def __ror__(self, other: Any) -> Any:
        if not isinstance(other, dict):
            return NotImplemented
        return other | self._do(lambda: self._t.todict())  # README: `o | await d.todict()`

    def __ior__(self, other: Any) -> SyncView:
        self._do(lambda: self._t.update(other))
        return self

    def __add__(self, other: Any) -> Any:
        return self._do(lambda: self._t.concat(other))

    def __radd__(self, other: Any) -> Any:
        if not isinstance(other, list):
            return NotImplemented
        return other + self._do(lambda: self._t.tolist())  # README: `o + await l.tolist()`

    def __iadd__(self, other: Any) -> SyncView:
        self._do(lambda: self._t.extend(other))
        return self

    def __mul__(self, n: Any) -> Any:
        return self._do(lambda: self._t.repeat(n))

    __rmul__ = __mul__

    def __imul__(self, n: Any) -> SyncView:
        self._do(lambda: self._t.irepeat(n))
        return self


def _viewed(value: Any, lt: LoopThread) -> Any:
    if isinstance(value, (aio.AsyncCyberDict, aio.AsyncCyberList, aio.AsyncCyberRef)):
        return SyncView(value, lt)
    return value


class PipelineView:
    """``with proxy.pipeline() as pipe:`` made of ``async with proxy.pipeline() as pipe:``."""

    def __init__(self, pipe: aio.AsyncPipeline, lt: LoopThread) -> None:
        self._pipe, self._lt = pipe, lt

    def __enter__(self) -> aio.AsyncPipeline:
        return self._lt.run(self._pipe.__aenter__)  # type: ignore[no-any-return]

    def __exit__(self, *exc_info: Any) -> None:
        self._lt.run(lambda: self._pipe.__aexit__(*exc_info))


class ProxyView:
    """A synchronous proxy made of an :class:`AsyncProxy` (tables come back as :class:`SyncView`)."""

    def __init__(self, proxy: aio.AsyncProxy, lt: LoopThread) -> None:
        self._p, self._lt = proxy, lt

    def __getattr__(self, attr: str) -> Any:
        return lambda *a, **k: _viewed(self._lt.run(lambda: getattr(self._p, attr)(*a, **k)), self._lt)

    def pipeline(self, atomic: bool = False) -> PipelineView:
        return PipelineView(self._p.pipeline(atomic=atomic), self._lt)


@pytest.fixture(scope="module", params=LOOPS)
def loop_thread(request: pytest.FixtureRequest) -> Iterator[LoopThread]:
    """An event loop of each kind in a thread of its own."""
    lt = LoopThread(request.param)
    yield lt
    lt.close()


@pytest.fixture(scope="module")
def view(server: ServerProcess, loop_thread: LoopThread) -> Iterator[ProxyView]:
    """A connected async proxy of ``server`` (plain and encrypted), seen through a :class:`ProxyView`."""

    async def open_proxy() -> tuple[aio.AsyncClient, aio.AsyncProxy]:
        client = await aio.connect(server.host, server.port, password=server.password, encrypt=server.encrypt)
        proxy = client.get_proxy()
        await proxy.connect()
        return client, proxy

    client, proxy = loop_thread.run(open_proxy)
    yield ProxyView(proxy, loop_thread)

    async def close() -> None:
        await proxy.close()
        await client.close()

    loop_thread.run(close)


@flat.SETTINGS
@given(data=st.data())
def test_async_cyberdict_behaves_like_dict(view: ProxyView, data: st.DataObject) -> None:
    flat.test_cyberdict_behaves_like_dict.hypothesis.inner_test(proxy=view, data=data)  # type: ignore[attr-defined]


@pytest.mark.parametrize("kind", sorted(flat.ELEMENTS))
@flat.SETTINGS
@given(data=st.data())
def test_async_cyberlist_behaves_like_list(view: ProxyView, kind: str, data: st.DataObject) -> None:
    flat.test_cyberlist_behaves_like_list.hypothesis.inner_test(  # type: ignore[attr-defined]
        proxy=view, kind=kind, data=data)


@nested.SETTINGS
@given(data=st.data())
def test_async_handles_and_incr_behave_like_nested_python_values(view: ProxyView, data: st.DataObject) -> None:
    nested.test_handles_and_incr_behave_like_nested_python_values.hypothesis.inner_test(  # type: ignore[attr-defined]
        proxy=view, data=data)


@nested.SETTINGS
@given(data=st.data())
def test_async_pipeline_gives_the_results_of_sequential_calls(view: ProxyView, data: st.DataObject) -> None:
    nested.test_pipeline_gives_the_results_of_sequential_calls.hypothesis.inner_test(  # type: ignore[attr-defined]
        proxy=view, data=data)


@nested.SETTINGS
@given(data=st.data())
def test_async_atomic_batch_applies_all_or_nothing(view: ProxyView, data: st.DataObject) -> None:
    nested.test_atomic_batch_applies_all_or_nothing.hypothesis.inner_test(  # type: ignore[attr-defined]
        proxy=view, data=data)


def test_the_view_really_uses_the_async_tables(view: ProxyView, name: str) -> None:
    table = view.create_cyberdict(name, {"a": 1})
    try:
        assert isinstance(table, SyncView) and isinstance(table._t, aio.AsyncCyberDict)
        assert len(table) == 1 and table == {"a": 1} and table.ref("a")._t.__class__ is aio.AsyncCyberRef
    finally:
        view.delete_table(name)
    assert cyberdb.CyberDict is not aio.AsyncCyberDict


# ---- tests of test_tables.py that need nothing but a proxy, through the async client -------------------------------
# (not those that check the sync classes, e.g. isinstance(d, cyberdb.CyberDict), or a sync proxy's internals)

TABLE_TESTS = [
    "test_create_cyberlist_from_a_list",
    "test_get_missing_table_raises", "test_get_wrong_kind_raises", "test_delete_table",
    "test_tables_lists_names_and_kinds", "test_nested_falsy_values_round_trip",
    "test_missing_key_raises_keyerror_with_the_key", "test_list_index_errors", "test_error_messages_match_list",
    "test_iterating_a_cyberdict", "test_sort_with_key_and_reverse",
    "test_slice_assignment_with_step_zero_checks_the_step_first", "test_extend_ignores_a_huge_length_hint",
]


@pytest.mark.parametrize("test", TABLE_TESTS)
def test_table_tests_through_the_async_client(view: ProxyView, name: str, test: str) -> None:
    getattr(table_tests, test)(view, name)


@pytest.mark.parametrize("size", [0, 1, table_tests.CHUNK - 1, table_tests.CHUNK, table_tests.CHUNK + 1, 2500])
def test_async_iteration_of_a_long_cyberlist_yields_everything_in_order(view: ProxyView, name: str,
                                                                         size: int) -> None:
    table_tests.test_iterating_a_long_cyberlist_yields_everything_in_order(view, name, size)
