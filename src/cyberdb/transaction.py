"""Transactions with reads: ``proxy.transact(fn)``, optimistic and serializable.  The Transaction executor.

``fn(tx)`` gets tables from ``tx.get_cyberdict(name)`` / ``tx.get_cyberlist(name)``:

- a **write whose result is None** (``d[k] = v``, ``del d[k]``, ``append``, ``update``, ...) is buffered, with
  no round trip;
- **anything else** (reads, and writes that return something: ``pop``, ``setdefault``, ``incr``) runs at once
  on the server as ``db.speculate``: the buffered writes, then this call, then everything is undone; ``fn``
  gets the reply, so later reads see earlier writes.  The call is logged with a digest of its reply.

At the end the log is sent as one ``db.batch``: the server replays it atomically, and every logged call must
give the same reply as ``fn`` saw (same digest) or nothing is applied and ``fn`` runs again.  Since every read
is re-checked at the commit point, the result is as if ``fn`` ran there alone: serializable.  The conflict
granularity is the *reply*: a read of ``d["a"]`` conflicts only with changes of ``d["a"]``, ``len(d)`` with
changes of the length, ``d.todict()`` with any change of ``d``.  Each speculative call also re-checks the earlier
ones, so a conflict is found early, and ``fn`` is re-run as soon as one is seen.

Errors: an error of a buffered write surfaces from ``transact`` at the commit (as that error, raised from a
:class:`~cyberdb.errors.BatchAbortedError` naming the call), and the transaction is not applied.  If ``fn``
raises, the transaction is not applied either; when what it read had changed meanwhile (so the error may
come from an inconsistent view), ``fn`` runs again instead.  A read-only ``fn`` needs no commit: its last
speculative call already checked all its reads at one point in time.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from . import protocol
from .codec import encode_value
from .commands import BY_ID, BY_NAME, CommandSpec
from .errors import BatchAbortedError, TransactionConflictError, error_from_code
from .executor import SPEC_REPLY, SyncExecutor
from .tables import CyberDict, CyberList

if TYPE_CHECKING:
    from .client import Proxy

__all__ = ["Transaction", "transact"]

T = TypeVar("T")
_BATCH, _SPECULATE = BY_NAME["db.batch"], BY_NAME["db.speculate"]
_BACKOFF = 0.0005  # seconds; doubles per conflict (with jitter) up to _MAX_BACKOFF
_MAX_BACKOFF = 0.05


class Transaction(SyncExecutor):
    """The ``tx`` that ``fn`` gets: tables whose writes are buffered and whose reads see them."""

    def __init__(self, proxy: Proxy) -> None:
        """A transaction on ``proxy``'s connection (use ``proxy.transact(fn)``)."""
        self._proxy = proxy
        self._log: list[list[Any]] = []  # [op, args] (buffered write) or [op, args, digest] (checked call)
        self._writes = 0

    def __repr__(self) -> str:
        return f"<Transaction steps={len(self._log)} writes={self._writes}>"

    def get_cyberdict(self, table_name: str) -> CyberDict:
        """The CyberDict ``table_name`` inside this transaction."""
        return CyberDict(self, table_name)

    def get_cyberlist(self, table_name: str) -> CyberList:
        """The CyberList ``table_name`` inside this transaction."""
        return CyberList(self, table_name)

    # ---- the executor ------------------------------------------------------------------------------------------

    def call(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:
        """Buffer a write that returns None; run anything else speculatively and log it with its digest."""
        speculate = self._prepare(spec, args)
        if speculate is None:
            return None
        return self._settle(spec, args, shape, self._proxy.call(_SPECULATE, speculate))

    def _prepare(self, spec: CommandSpec, args: list[Any]) -> list[Any] | None:
        """Buffer a write that returns None (None), else the arguments of its ``db.speculate`` request."""
        if spec.kind is None:
            raise TypeError(f"{spec.name} cannot be part of a transaction (only table calls can)")
        encode_value(args)  # an unsupported value raises TypeError here, in fn, not at the commit
        if not spec.readonly:
            self._writes += 1
            if not spec.returns:
                self._log.append([spec.op, args])
                return None
        return [[*self._log, [spec.op, args]]]

    def _settle(self, spec: CommandSpec, args: list[Any], shape: Any, reply: Any) -> Any:
        """Log a speculative call with its digest and return its shaped reply (or raise its error)."""
        status, value, digest = reply
        self._log.append([spec.op, args, digest])
        if status != protocol.STATUS_OK:
            raise error_from_code(status, tuple(value) if type(value) is list else (str(value),))
        if shape is SPEC_REPLY:
            shape = spec.reply
        return value if shape is None else shape(value)

    # ---- ending ------------------------------------------------------------------------------------------------

    def _commit(self) -> None:
        """Apply the buffered writes if every logged reply still holds.

        Raises:
            TransactionConflictError: something ``fn`` saw has changed; nothing was applied.
        """
        if not self._writes:
            return  # read-only: the last speculative call checked every read at one point in time
        try:
            self._proxy.call(_BATCH, [self._log])
        except BatchAbortedError as exc:
            raise self._failed_write(exc) from exc

    def _failed_write(self, exc: BatchAbortedError) -> BaseException:
        """The error of the buffered write that aborted the commit (``exc`` names the call)."""
        spec = BY_ID[self._log[exc.index][0]]
        exc.call = f"{spec.name} on table {self._log[exc.index][1][0]!r}"
        return exc.error

    def _still_valid(self) -> bool:
        """True if every logged reply still holds (run after ``fn`` raised)."""
        if not any(len(step) == 3 for step in self._log):
            return True
        try:
            self._proxy.call(_SPECULATE, [self._log])
        except TransactionConflictError:
            return False
        except BatchAbortedError:
            return True  # a buffered write fails: that is fn's own doing, not a conflict
        return True


def transact(proxy: Proxy, fn: Callable[[Transaction], T], retries: int = 10) -> T:
    """Run ``fn(tx)`` until it commits without a conflict, at most ``retries + 1`` times; return its result.

    Raises:
        TransactionConflictError: every run conflicted.
    """
    if retries < 0:
        raise ValueError("retries must be >= 0")
    for attempt in range(retries + 1):
        if attempt:  # jittered exponential backoff: contending writers stop colliding in lockstep
            time.sleep(random.uniform(0, min(_MAX_BACKOFF, _BACKOFF * 2 ** attempt)))
        tx = Transaction(proxy)
        try:
            result = fn(tx)
        except TransactionConflictError:
            continue  # a speculative call saw a change: run fn again now
        except Exception:
            if not tx._still_valid():
                continue  # fn saw an inconsistent view: its error may be an artifact of it
            raise
        try:
            tx._commit()
        except TransactionConflictError:
            continue
        return result
    raise TransactionConflictError(f"the transaction conflicted with other writers {retries + 1} times "
                                   f"(raise retries={retries} or write less contended data)")
