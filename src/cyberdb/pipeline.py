"""Pipelines: the executor that queues table calls and sends them together.

``with proxy.pipeline() as pipe:`` gives tables (``pipe.get_cyberdict(name)``, ``pipe.get_cyberlist(name)``)
whose every call returns a :class:`Pending` at once.  When the block ends (or at ``pipe.execute()``) the
calls leave in one write as ``db.pipeline`` requests of up to ``PIPELINE_CHUNK`` calls each, and the replies
are read together: one round trip for the lot, and one request on the server per chunk rather than one per
call.  The server runs each call on its own, as if sent one by one: each keeps its own result or error
(``pending.result()``; ``pipe.results`` in order), and one failing call does not stop the others (other
clients' commands may run between two chunks).  Each request is numbered like any other, so a pipeline cut
by a lost connection is re-sent without running anything twice.

With ``atomic=True`` the queued calls travel as one ``db.batch`` request and run on the server as one
uninterrupted unit, all or nothing: if one raises, none is applied (Redis' MULTI cannot roll back) and the
pipeline raises :class:`~cyberdb.errors.BatchAbortedError` naming the call.

What needs a reply before it can go on (iterating, comparing, ``repr``, ``sort(key=...)``) cannot be queued
and raises ``TypeError``.  Tables of a pipeline are not checked when made: a missing table fails its calls.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from . import protocol
from .codec import decode_value, encode_array, encode_value
from .commands import BY_NAME, CommandSpec
from .errors import BatchAbortedError, error_from_code
from .executor import SPEC_REPLY, Steps
from .tables import CyberDict, CyberList

if TYPE_CHECKING:
    from .client import Proxy
    from .connection import Raw

__all__ = ["Pending", "Pipeline"]

T = TypeVar("T")
_BATCH, _PIPELINE = BY_NAME["db.batch"], BY_NAME["db.pipeline"]
_UNSET: Any = object()
PIPELINE_CHUNK = 4096  # calls per db.pipeline request
_OP_HEADS: dict[int, bytes] = {}  # op -> the encoding of "[op, " (a step is [op, args], args encoded at the call)


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

    def __bool__(self) -> bool:
        raise TypeError("a Pending has no truth value: use pending.result() once its pipeline has run")

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
        elif self._shape is None:
            self._value = value
        else:
            try:
                self._value = self._shape(value)
            except Exception as exc:  # e.g. an operation that needed a second request (see Pipeline.run)
                self._error = exc

    def _fail(self, error: BaseException) -> None:
        self._error = error


Queued = tuple[CommandSpec, list[Any], bytes, Pending]  # spec, args, encoded step, its Pending


class Pipeline:
    """Queues calls of its tables and sends them together (see the module docstring)."""

    def __init__(self, proxy: Proxy, atomic: bool = False) -> None:
        """A pipeline on ``proxy``'s connection; ``atomic=True`` makes it one all-or-nothing batch."""
        self._proxy = proxy
        self.atomic = atomic
        self._queue: list[Queued] = []
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
        if self.atomic and spec.kind is None:
            raise TypeError(f"{spec.name} cannot be part of an atomic batch (only table calls can)")
        head = _OP_HEADS.get(spec.op)
        if head is None:
            head = _OP_HEADS[spec.op] = b"\x92" + encode_value(spec.op)
        pending = Pending(spec, shape)
        self._queue.append((spec, args, head + encode_value(args), pending))
        return pending

    def call_now(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:
        """Refused: ``len()``, ``in``, comparisons and ``repr`` need their reply now."""
        raise TypeError(f"{spec.name} needs the server's reply at once, so it cannot be queued in a pipeline: "
                        "queue todict()/tolist() (or the call itself) and use the result instead")

    def run(self, steps: Steps[T], now: bool = False) -> T:
        """Queue an operation of one request (e.g. ``todict()`` of a table that fits in one reply); its Pending
        fails if the operation needs another request (a table copied in pieces).  Refused with ``now``."""
        if now:
            steps.close()
            raise TypeError("this operation needs the server's reply before it can go on, so it cannot be queued "
                            "in a pipeline: queue todict()/tolist() and use the result instead")
        try:
            spec, args = next(steps)
        except StopIteration as stop:  # (no operation needs no request; here for completeness)
            return stop.value  # type: ignore[no-any-return]

        def finish(reply: Any) -> Any:
            try:
                steps.send(reply)
            except StopIteration as stop:
                return stop.value
            steps.close()
            raise TypeError("this table does not fit in one reply, so its copy cannot be queued in a pipeline "
                            "(it needs several requests): copy it outside the pipeline")

        return self.call(spec, args, finish)  # type: ignore[return-value]

    def stream(self, steps: Steps[Any]) -> Iterator[Any]:
        """Refused: iterating needs each reply before the next request."""
        steps.close()
        raise TypeError("iterating needs the server's replies as it goes, so it cannot be queued in a pipeline: "
                        "queue todict()/tolist() and use the result instead")

    def execute(self) -> list[Any]:
        """Send every queued call, read the replies and return ``results`` (values, or exceptions).

        Raises:
            BatchAbortedError: (atomic only) a call failed, so none was applied; ``.index`` names it.
        """
        steps = self._execution()
        try:
            requests = next(steps)
            while True:
                requests = steps.send(self._proxy.call_many(requests))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _execution(self) -> Generator[list[tuple[int, bytes]], list[Raw], list[Any]]:
        """``execute`` written once for both clients: yields the ``call_many`` requests, receives their replies."""
        queue, self._queue = self._queue, []
        if self.atomic:
            if queue:
                yield from self._execute_atomic(queue)
        else:
            rest = queue
            while rest:
                rest = yield from self._execute_some(rest)
        self.results = [p._error if p._error is not None else p._value for _s, _a, _b, p in queue]
        return self.results

    def _execute_some(self, queue: list[Queued]) -> Generator[list[tuple[int, bytes]], list[Raw], list[Queued]]:
        """Send the queue in chunks; return the calls the server left for another request (see batch.py)."""
        chunks = [queue[i:i + PIPELINE_CHUNK] for i in range(0, len(queue), PIPELINE_CHUNK)]
        raw = yield [(_PIPELINE.op, _steps_payload(chunk)) for chunk in chunks]
        rest: list[Queued] = []
        for chunk, (status, body) in zip(chunks, raw, strict=True):
            if status != protocol.STATUS_OK:  # the request as a whole failed (e.g. too large)
                error = error_from_code(status, tuple(decode_value(body)))
                for _s, _a, _b, pending in chunk:
                    pending._fail(error)
                continue
            replies = decode_value(body)
            for (_s, _a, _b, pending), (call_status, value) in zip(chunk, replies, strict=False):
                pending._resolve(call_status, value)
            rest += chunk[len(replies):]
        return rest

    def _execute_atomic(self, queue: list[Queued]) -> Generator[list[tuple[int, bytes]], list[Raw], None]:
        status, body = (yield [(_BATCH.op, _steps_payload(queue))])[0]
        if status == protocol.STATUS_OK:
            for (_spec, _args, _step, pending), value in zip(queue, decode_value(body), strict=True):
                pending._resolve(protocol.STATUS_OK, value)
            return
        exc = error_from_code(status, tuple(decode_value(body)))
        if isinstance(exc, BatchAbortedError):
            spec, args = queue[exc.index][0], queue[exc.index][1]
            exc.call = f"{spec.name} on table {args[0]!r}"
            for i, (_s, _a, _b, pending) in enumerate(queue):
                pending._fail(exc.error if i == exc.index else exc)
        else:
            for _s, _a, _b, pending in queue:
                pending._fail(exc)
        self.results = [exc] * len(queue)
        raise exc


def _steps_payload(queue: list[Queued]) -> bytes:
    """The arguments ``[steps]`` of a db.pipeline or db.batch request, from the steps encoded at each call."""
    return encode_array([encode_array([step for _spec, _args, step, _pending in queue])])
