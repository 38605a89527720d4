"""The executor seam: what table objects need from whatever runs their requests, and the drivers for
multi-step operations.

A table method states one request, ``executor.call(spec, [table, *args])``; an operation of several requests is
a generator of :data:`Step` that receives each shaped reply (see :mod:`cyberdb.tables`).  ``drive`` and
``stream`` run such a generator with a synchronous ``call``; :class:`SyncExecutor` gives an executor whose
``call`` answers at once (``Proxy``, ``Transaction``) its ``run``, ``stream`` and ``call_now``.  No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from typing import Any, Protocol, TypeVar

from .commands import CommandSpec

__all__ = ["SPEC_REPLY", "Executor", "Step", "Steps", "SyncExecutor", "drive", "stream"]

SPEC_REPLY: Any = object()  # "shape the reply with spec.reply" (the default of Executor.call)
T = TypeVar("T")
Step = tuple[CommandSpec, list[Any]]  # one request of a multi-step operation; its reply is shaped by spec.reply
Steps = Generator[Step, Any, T]


class Executor(Protocol):
    """What tables need from whatever runs their requests (see the module docstring)."""

    def call(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:
        """Run (or queue) one request ``args = [table, *arguments]``; return its shaped reply (or a handle)."""

    def call_now(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:
        """Like ``call``, for a reply needed at once (``len()``, ``in``, ``repr``): a pipeline refuses it."""

    def run(self, steps: Steps[T], now: bool = False) -> T:
        """Drive a multi-step operation to its return value.  ``now``: its result is needed at once (a
        comparison, ``repr``, ``sort(key=...)``), which a pipeline refuses; ``todict()`` and the like are not."""

    def stream(self, steps: Steps[Any]) -> Iterator[Any]:
        """Drive a multi-step operation, yielding each reply as it comes."""


def drive(call: Callable[[CommandSpec, list[Any]], Any], steps: Steps[T]) -> T:
    """Run ``steps`` with ``call`` (a synchronous executor's ``call``) and return what the generator returns."""
    try:
        step = next(steps)
        while True:
            step = steps.send(call(*step))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def stream(call: Callable[[CommandSpec, list[Any]], Any], steps: Steps[Any]) -> Iterator[Any]:
    """Run ``steps`` with ``call``, yielding each reply."""
    try:
        step = next(steps)
        while True:
            reply = call(*step)
            yield reply
            step = steps.send(reply)
    except StopIteration:
        return


class SyncExecutor:
    """``run`` and ``stream`` for an executor whose ``call`` returns the reply at once (Proxy, Transaction)."""

    __slots__ = ()

    def call(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:  # pragma: no cover
        """Run one request now and return its shaped reply."""
        raise NotImplementedError

    def call_now(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:
        """The same as ``call`` (whose reply is always there at once)."""
        return self.call(spec, args, shape)

    def run(self, steps: Steps[T], now: bool = False) -> T:
        """Drive a multi-step operation, each request run at once."""
        return drive(self.call, steps)

    def stream(self, steps: Steps[Any]) -> Iterator[Any]:
        """Drive a multi-step operation, yielding each reply."""
        return stream(self.call, steps)
