"""Batches: several table commands in one request (pipelines, atomic batches, transactions).  No I/O.

``db.pipeline`` runs its steps one after the other, each on its own (a failing step does not stop the
others), and answers ``[[status, result], ...]``: a pipeline costs one request however many calls it holds.
The rest of this docstring is about the batches that apply all together or not at all.

A batch is a list of steps, ``[op, args]`` or ``[op, args, digest]``.  The steps run one after the other inside
one ``Store.execute`` call, so nothing else runs in between.  A step without a digest must succeed; a step with
one must produce the same reply as when the client first ran it (same status, same encoded payload: the
digest is a BLAKE2b hash of them), which is how a transaction checks that nothing it read has changed.  If a
step fails or a check differs, every step is undone and the batch raises :class:`BatchAbortedError` or
:class:`TransactionConflictError` naming the step.  ``db.speculate`` runs the same steps and always undoes
them, returning the last step's status, payload and digest: a transaction's view of its buffered writes.

Undo is recorded before each write by the :class:`Journal`: a single-key dict write or a list append keeps
the old value; any other write to a table keeps a shallow copy of the table (once per batch: later writes to
it need nothing more); a write at a path keeps a deep copy of the table entry it starts from.  Rolling back
restores containers in place, so key order and identity are exactly as before.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from typing import Any

from ..codec import encode_array, encode_value
from ..commands import BY_ID, CommandSpec
from ..errors import BatchAbortedError, TransactionConflictError, error_code
from ..protocol import MAX_FRAME
from .meta import TableMeta
from .store import STATUS_OK, Encoded, Store, decode_error, encode_error

__all__ = ["DIGEST_SIZE", "MAX_STEPS", "Journal", "digest", "run_pipeline", "run_steps"]

MAX_STEPS = 100_000
PIPELINE_REPLY_BUDGET = 8 << 20  # bytes of replies after which a pipeline request stops running its steps
_MAX_PIPELINE_REPLY = MAX_FRAME - (1 << 20)
_TOO_LARGE = ValueError("this call's reply does not fit in its pipeline's reply frame")
DIGEST_SIZE = 16
_MISSING: Any = object()
_KEYED_DICT_WRITES = frozenset({"setitem", "incr", "setdefault", "set", "expire", "persist"})
_DEADLINE_WRITES = frozenset({"set", "expire", "persist"})  # may give a table its first deadline
_OK_PAIR = b"\x92" + encode_value(STATUS_OK)  # the start of [STATUS_OK, result]


def digest(status: int, payload: bytes) -> bytes:
    """The digest of one reply, as a transaction's check compares it."""
    h = hashlib.blake2b(payload, digest_size=DIGEST_SIZE)
    h.update(status.to_bytes(2, "big"))
    return h.digest()


def run_pipeline(store: Store, steps: Any) -> Encoded:
    """Run each step on its own; return ``[[status, encoded result or error], ...]``.

    Once the replies pass ``PIPELINE_REPLY_BUDGET`` bytes the rest of the steps are not run and the answer is
    shorter than the request: the client sends those again in a new request (a reply must fit in a frame).
    """
    outcome = store.outcome
    parts = []
    size = 0
    for spec, args, _expected in _parse(steps):
        if size > PIPELINE_REPLY_BUDGET:
            break
        status, payload = outcome(spec, args, hook=False)
        if size + len(payload) > _MAX_PIPELINE_REPLY:  # run, but its reply cannot travel with the others
            status, payload = error_code(_TOO_LARGE), encode_error(_TOO_LARGE, spec.name)
        part = (_OK_PAIR if status == STATUS_OK else b"\x92" + encode_value(status)) + payload
        parts.append(part)
        size += len(part)
    return Encoded(encode_array(parts))


def run_steps(store: Store, steps: Any, speculate: bool, replay: bool = False) -> Encoded:
    """Run a batch; return the encoded results (or, speculating, ``[status, payload, digest]`` of the last).

    ``replay``: the batch is replayed from the log, where it was applied: a step with a digest is not checked
    (a digest covers encodings, e.g. of a set, that may differ between processes) and may fail as it did then
    (a transaction's read that raised ``KeyError``); the other steps must succeed as before.

    Raises:
        BatchAbortedError: a step without a digest failed (nothing was applied).
        TransactionConflictError: a step's reply differs from its digest (nothing was applied).
        TypeError: the batch is malformed (nothing was run).
    """
    plan = _parse(steps)
    journal = Journal(store)
    parts: list[bytes] = []
    status, payload = STATUS_OK, encode_value(None)
    last = len(plan) - 1
    try:
        for i, (spec, args, expected) in enumerate(plan):
            journal.before(spec, args)
            status, payload = store.outcome(spec, args, hook=False)
            if expected is not None:
                if not replay and digest(status, payload) != expected:
                    raise TransactionConflictError(f"call {i} ({spec.name}) saw a changed value", i)
            elif status != STATUS_OK and not (speculate and i == last):
                raise BatchAbortedError(i, status, decode_error(payload))
            if not speculate:
                parts.append(payload)
    except BaseException:
        journal.rollback()
        raise
    if speculate:
        journal.rollback()
        return Encoded(encode_array([encode_value(status), payload, encode_value(digest(status, payload))]))
    return Encoded(encode_array(parts))


def _parse(steps: Any) -> list[tuple[CommandSpec, list[Any], bytes | None]]:
    if type(steps) is not list or len(steps) > MAX_STEPS:
        raise TypeError(f"a batch is a list of at most {MAX_STEPS} steps")
    plan = []
    for step in steps:
        if type(step) is not list or not 2 <= len(step) <= 3:
            raise TypeError("a batch step is [op, args] or [op, args, digest]")
        spec = BY_ID.get(step[0]) if type(step[0]) is int else None
        if spec is None or spec.kind is None:
            raise TypeError(f"a batch step must be a table command, not {step[0]!r}")
        args = step[1]
        expected = step[2] if len(step) == 3 else None
        if type(args) is not list or not args or expected is not None and (
                type(expected) is not bytes or len(expected) != DIGEST_SIZE):
            raise TypeError("a batch step is [op, [table, *args]] or [op, [table, *args], digest]")
        plan.append((spec, args, expected))
    return plan


class Journal:
    """How to undo the writes of one batch, newest first."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._undo: list[Callable[[], None]] = []
        self._copied: set[str] = set()  # tables saved whole: later top-level writes to them need no record
        self._versions: dict[str, int] = {}  # each written table's version before the batch
        self._clock = store.clock()  # a rolled-back batch hands out no version: replaying the log relies on it

    def before(self, spec: CommandSpec, args: list[Any]) -> None:
        """Record how to undo ``spec`` on ``args`` (before it runs)."""
        if spec.readonly:
            return
        name = args[0]
        table = self._store.get(name)
        if table is None:
            return  # the command fails without a change
        if name not in self._versions:  # a rolled-back batch must not make compare-and-set (sort) fail
            self._versions[name] = self._store.version(name)
        if spec.path:
            path = args[1] if len(args) > 1 else None
            if type(path) is list and path:
                self._save_entry(table, path[0])
            else:
                self._save_table(name, table)
            return
        if name in self._copied:
            return
        meta = self._store.meta_of(name, create=spec.suffix in _DEADLINE_WRITES)
        if type(table) is dict and spec.suffix in _KEYED_DICT_WRITES and len(args) > 1 and (
                meta is None or not meta.maxsize):
            key = args[1]
            try:
                old = table.get(key, _MISSING)
            except TypeError:  # unhashable: the command fails without a change
                return
            if meta is not None:  # the key's deadline comes back with its value (expired or not)
                deadline = meta.expires.get(key)
                self._undo.append(lambda: _restore_deadline(meta, key, deadline))
            if old is _MISSING:
                self._undo.append(lambda: table.pop(key, None))
            else:
                self._undo.append(lambda: table.__setitem__(key, old))
        elif type(table) is list and spec.suffix == "append":
            n = len(table)
            self._undo.append(lambda: table.__delitem__(slice(n, None)))
        else:
            self._save_table(name, table)

    def _save_table(self, name: str, table: dict[Any, Any] | list[Any]) -> None:
        if name not in self._copied:
            saved = table.copy()
            self._undo.append(lambda: _restore(table, saved))
            meta = self._store.meta_of(name)
            if meta is not None:  # deadlines and the order of use come back with the content
                saved_meta = meta.copy()
                self._undo.append(lambda: meta.restore(saved_meta))
            self._copied.add(name)

    def _save_entry(self, table: dict[Any, Any] | list[Any], key: Any) -> None:
        try:
            value = table[key] if type(table) is dict or type(key) in (int, bool) else None
        except (KeyError, IndexError, TypeError):
            return  # the path does not exist: the command fails without a change
        if type(value) is dict or type(value) is list:
            saved = copy.deepcopy(value)
            self._undo.append(lambda: _restore(value, saved))

    def rollback(self) -> None:
        """Undo every recorded write, newest first."""
        while self._undo:
            self._undo.pop()()
        for name, version in self._versions.items():
            self._store.set_version(name, version)
        self._store.set_clock(self._clock)


def _restore_deadline(meta: TableMeta, key: Any, deadline: float | None) -> None:
    if deadline is None:
        meta.clear_deadline(key)
    else:
        meta.set_deadline(key, deadline)


def _restore(target: dict[Any, Any] | list[Any], saved: Any) -> None:
    # in place: the container may be referenced by the table (or by an outer container) that is restored later
    if type(target) is dict:
        target.clear()
        target.update(saved)
    else:
        target[:] = saved

