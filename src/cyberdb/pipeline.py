"""Pipelines: the executor that queues table calls and sends them together.

``with proxy.pipeline() as pipe:`` gives tables (``pipe.get_cyberdict(name)``, ``pipe.get_cyberlist(name)``)
whose every call returns a :class:`Pending` at once.  When the block ends (or at ``pipe.execute()``) all
requests leave in one write and their replies are read together: one round trip for the lot.  Each call
keeps its own result or error (``pending.result()``; ``pipe.results`` in order), and one failing call does not
stop the others.  Each request is numbered like any other, so a pipeline cut by a lost connection is re-sent
without running anything twice.

With ``atomic=True`` the queued calls travel as one ``db.batch`` request and run on the server as one
uninterrupted unit, all or nothing: if one raises, none is applied (Redis' MULTI cannot roll back) and the
pipeline raises :class:`~cyberdb.errors.BatchAbortedError` naming the call.

What needs a reply before it can go on (iterating, comparing, ``repr``, ``sort(key=...)``) cannot be queued
and raises ``TypeError``.  Tables of a pipeline are not checked when made: a missing table fails its calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import protocol
from .codec import decode_value, encode_value
from .commands import BY_NAME, CommandSpec
from .errors import BatchAbortedError, CyberDBError, error_from_code
from .tables import SPEC_REPLY, CyberDict, CyberList, Steps

if TYPE_CHECKING:
    from .client import Proxy

__all__ = ["Pending", "Pipeline"]

T = TypeVar("T")
_BATCH = BY_NAME["db.batch"]
_UNSET: Any = object()


class Pending:
    """The result of a queued call, known once its pipeline has run."""

    __slots__ = ("_error", "_shape", "_value", "spec")

    def __init__(self, spec: CommandSpec, shape: Any) -> None:
        self.spec = spec
        self._shape = spec.reply if shape is SPEC_REPLY else shape
        self._value: Any = _UNSET
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        state = "PENDING" if not self.done() else "FAILED" if self._error is not None else "DONE"
        return f"<Pending {self.spec.name} {state}>"

    def done(self) -> bool:
        """True once the pipeline has run (the call succeeded or failed)."""
        return self._value is not _UNSET or self._error is not None

    def result(self) -> Any:
        """This call's value, or raise its own error.

        Raises:
            RuntimeError: the pipeline has not run yet.
        """
        if self._error is not None:
            raise self._error
        if self._value is _UNSET:
            raise RuntimeError(f"{self.spec.name} is still queued: its pipeline has not run yet")
        return self._value

    def _resolve(self, status: int, value: Any) -> None:
        if status != protocol.STATUS_OK:
            self._error = error_from_code(status, tuple(value) if type(value) is list else (str(value),))
        else:
            self._value = value if self._shape is None else self._shape(value)

    def _fail(self, error: BaseException) -> None:
        self._error = error


class Pipeline:
    """Queues calls of its tables and sends them together (see the module docstring)."""

    def __init__(self, proxy: Proxy, atomic: bool = False) -> None:
        """A pipeline on ``proxy``'s connection; ``atomic=True`` makes it one all-or-nothing batch."""
        self._proxy = proxy
        self.atomic = atomic
        self._queue: list[tuple[CommandSpec, list[Any], bytes, Pending]] = []
        self.results: list[Any] = []  # after execute(): each call's value, or its exception

    def __repr__(self) -> str:
        return f"<Pipeline {'atomic ' if self.atomic else ''}queued={len(self._queue)}>"

    def __len__(self) -> int:
        return len(self._queue)

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.execute()
        else:
            self._queue.clear()  # the block failed: send nothing

    def get_cyberdict(self, table_name: str) -> CyberDict:
        """The CyberDict ``table_name`` with its calls queued here."""
        return CyberDict(self, table_name)

    def get_cyberlist(self, table_name: str) -> CyberList:
        """The CyberList ``table_name`` with its calls queued here."""
        return CyberList(self, table_name)

    # ---- the executor ------------------------------------------------------------------------------------------

    def call(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Pending:
        """Queue one call and return its :class:`Pending` (arguments are checked and encoded now)."""
        pending = Pending(spec, shape)
        self._queue.append((spec, args, encode_value(args), pending))
        return pending

    def run(self, steps: Steps[T]) -> T:
        """Refused: an operation that needs a reply before its next request cannot be queued."""
        steps.close()
        raise TypeError("this operation needs the server's reply before it can go on, so it cannot be queued "
                        "in a pipeline: queue todict()/tolist() and use the result instead")

    def stream(self, steps: Steps[Any]) -> Iterator[Any]:
        """Refused, like ``run``."""
        return self.run(steps)

    def execute(self) -> list[Any]:
        """Send every queued call, read the replies and return ``results`` (values, or exceptions).

        Raises:
            BatchAbortedError: (atomic only) a call failed, so none was applied; ``.index`` names it.
        """
        queue, self._queue = self._queue, []
        if not queue:
            self.results = []
            return self.results
        if self.atomic:
            self._execute_atomic(queue)
        else:
            raw = self._proxy.call_many([(spec.op, payload) for spec, _args, payload, _p in queue])
            for (_spec, _args, _payload, pending), (status, body) in zip(queue, raw, strict=True):
                pending._resolve(status, decode_value(body))
        self.results = [p._error if p._error is not None else p._value for _s, _a, _b, p in queue]
        return self.results

    def _execute_atomic(self, queue: list[tuple[CommandSpec, list[Any], bytes, Pending]]) -> None:
        for spec, _args, _payload, _pending in queue:
            if spec.kind is None:
                raise TypeError(f"{spec.name} cannot be part of an atomic batch (only table calls can)")
        steps = [[spec.op, args] for spec, args, _payload, _pending in queue]
        try:
            values = self._proxy.call(_BATCH, [steps])
        except BatchAbortedError as exc:
            spec, args = queue[exc.index][0], queue[exc.index][1]
            exc.call = f"{spec.name} on table {args[0]!r}"
            for i, (_s, _a, _b, pending) in enumerate(queue):
                pending._fail(exc.error if i == exc.index else exc)
            raise
        except CyberDBError as exc:
            for _s, _a, _b, pending in queue:
                pending._fail(exc)
            raise
        for (_spec, _args, _payload, pending), value in zip(queue, values, strict=True):
            pending._resolve(protocol.STATUS_OK, value)
