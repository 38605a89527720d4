"""Reading data files for people and tools: ``cyberdb check`` and ``cyberdb dump``.  Reads files, never writes.

A file's kind comes from its magic bytes, not its name.  A file is validated exactly as the server loads it
(:func:`.persist.decode_state`; a log is replayed with :func:`.aof.replay_log` into a fresh store), so whatever
the server refuses is refused here with the same :class:`~cyberdb.errors.PersistenceError` message, which names
the offset of the damage (except in a version-1 snapshot, whose one checksum covers everything).  A log whose
last record is torn is whole apart from it: the server drops the torn bytes with a warning, and so does this
module (``FileReport.torn``).  Snapshots are written atomically, so a file cut inside the magic bytes both kinds
share can only be a log torn while its header was written.

``FileReport.dump`` writes one JSON object per line.  A snapshot's lines are its state, a log's ``state`` the
state it loads to: one ``{"record": "table", "table": name, "kind": "dict"|"list", "content": ...}`` per table,
one ``{"record": "client", "client": hex id, "ack", "floor", "replies": count}`` per client of the reply cache,
then ``{"record": "leases", "leases": [{"lock", "token", "deadline": ISO 8601 UTC, "unix_deadline"}, ...]}``.
A log's lines are its records in order, each with its ``"offset"``: those three kinds (its base) and ``{"record":
"command", "time": ISO 8601 UTC, "unix_time", "client": hex id (zeros: anonymous), "request", "ack", "command":
"dict.setitem", "args": [...]}`` with the arguments as the request carried them (batch steps keep command ids).

Values are written as JSON in a tagged form that is lossless and unambiguous (``from_json(json.loads(
to_json(v)))`` equals ``v``, types included):

* ``None``, ``bool``, ``str``, lists, and ints of magnitude below 2**53 are themselves; a finite float is a JSON
  number that always has a fraction or an exponent (``1.0``, ``-0.0``, ``1e+16``), an int never has one.
* Every other value is an object with exactly one key, its tag: ``{"$int": "18446744073709551616"}``,
  ``{"$float": "nan" | "inf" | "-inf"}`` (a nan's sign and payload are not kept), ``{"$bytes": base64}``,
  ``{"$tuple": [...]}``, ``{"$set": [...]}``, ``{"$frozenset": [...]}`` (items sorted by their codec encoding: a
  set of scalars or tuples is written the same way in every process, whatever its hash order),
  ``{"$decimal": str(d)}`` (``"1.10"``, ``"-0"``, ``"sNaN"``),
  ``{"$datetime": isoformat}``, ``{"$date": ...}``, ``{"$time": ...}`` (ISO 8601 with the UTC offset, if any),
  ``{"$timedelta": [days, seconds, microseconds]}``, ``{"$uuid": "12345678-..."}``,
  ``{"$complex": [real, imag]}`` (each written as a float).
* A dict whose keys are all strs none of which starts with ``$`` is a JSON object.  Any other dict (non-str
  keys, or a key like ``"$bytes"``) is ``{"$dict": [[key, value], ...]}``, so an object with a ``$`` key is
  always a tag.  Dicts keep their order.

Nesting is written without recursion, so every table the server accepts can be dumped; the JSON nests up to
three levels per container (``{"$dict": [[k, v]]}``), which may exceed a JSON parser's default recursion limit
for tables near ``codec.MAX_DEPTH``.  ``from_json`` recurses.  Non-ASCII text is written as ``\\u`` escapes.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import math
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from ..codec import decode_value, encode_value
from ..commands import BY_ID
from ..errors import PersistenceError, ProtocolError
from .aof import replay_log
from .dedup import ReplyCache
from .persist import (
    LOG_HEADER,
    LOG_MAGIC,
    RecordKind,
    State,
    decode_state,
    parse_base,
    parse_command,
    scan_log,
)
from .store import Lease, Store

__all__ = ["FileReport", "from_json", "inspect_file", "to_json"]

_SAFE_INT = 1 << 53  # ints at least this large lose precision in JavaScript (and many JSON tools): tagged
_FLOAT_NAMES = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_INT_TEXT = re.compile(r"-?[0-9]+\Z")
_TABLE_NAMES: dict[type, str] = {dict: "CyberDict", list: "CyberList"}


class _Text(str):
    """JSON text already written (a bracket, a comma, a key), as opposed to a value still to write."""


def _string(text: str) -> str:
    return json.dumps(text)


def _float(x: float) -> str:
    if math.isfinite(x):
        return repr(x)
    return '{"$float":"%s"}' % ("nan" if math.isnan(x) else "inf" if x > 0 else "-inf")


def _tag(tag: str, text: str) -> str:
    return f'{{"{tag}":{_string(text)}}}'


def _sort_key(item: Any) -> bytes:
    return encode_value(item)


def to_json(value: Any) -> str:
    """``value`` as JSON text in the tagged form of the module docstring.

    Raises:
        TypeError: a value the codec cannot hold (never the case for a value read from a file).
    """
    out: list[str] = []
    stack: list[Any] = [value]  # what is left to write, last first
    while stack:
        item = stack.pop()
        t = type(item)
        if t is _Text:
            out.append(item)
        elif item is None:
            out.append("null")
        elif t is bool:
            out.append("true" if item else "false")
        elif t is str:
            out.append(_string(item))
        elif t is int:
            # str() of an int over 4300 digits raises (CVE-2020-10735 limit); Decimal converts any size
            out.append(str(item) if -_SAFE_INT < item < _SAFE_INT else _tag("$int", str(Decimal(item))))
        elif t is float:
            out.append(_float(item))
        elif t is list:
            _push_array(out, stack, item, "]")
        elif t is dict:
            if all(type(key) is str and not key.startswith("$") for key in item):
                _push_object(out, stack, item)
            else:
                out.append('{"$dict":')
                _push_array(out, stack, [[k, v] for k, v in item.items()], "]}")
        elif t is tuple:
            out.append('{"$tuple":')
            _push_array(out, stack, item, "]}")
        elif t is set or t is frozenset:
            out.append('{"$set":' if t is set else '{"$frozenset":')
            _push_array(out, stack, sorted(item, key=_sort_key), "]}")
        else:
            out.append(_scalar(item))
    return "".join(out)


def _push_array(out: list[str], stack: list[Any], items: Any, close: str) -> None:
    out.append("[")
    stack.append(_Text(close))
    for i in range(len(items) - 1, -1, -1):
        stack.append(items[i])
        if i:
            stack.append(_Text(","))


def _push_object(out: list[str], stack: list[Any], obj: dict[str, Any]) -> None:
    out.append("{")
    stack.append(_Text("}"))
    pairs = list(obj.items())
    for i in range(len(pairs) - 1, -1, -1):
        key, value = pairs[i]
        stack.append(value)
        stack.append(_Text(("," if i else "") + _string(key) + ":"))


def _scalar(item: Any) -> str:
    t = type(item)
    if t is bytes:
        return _tag("$bytes", base64.b64encode(item).decode("ascii"))
    if t is Decimal:
        return _tag("$decimal", str(item))
    if t is _dt.datetime:
        return _tag("$datetime", item.isoformat())
    if t is _dt.date:
        return _tag("$date", item.isoformat())
    if t is _dt.time:
        return _tag("$time", item.isoformat())
    if t is _dt.timedelta:
        return f'{{"$timedelta":[{item.days},{item.seconds},{item.microseconds}]}}'
    if t is uuid.UUID:
        return _tag("$uuid", str(item))
    if t is complex:
        return f'{{"$complex":[{_float(item.real)},{_float(item.imag)}]}}'
    raise TypeError(f"cannot write a value of type {t.__module__}.{t.__qualname__} as JSON")


def from_json(value: Any) -> Any:
    """The value that ``to_json`` wrote, from its parsed JSON (``from_json(json.loads(line))``).

    Raises:
        ValueError: not the tagged form (an unknown tag, an object with a ``$`` key and others, a bad payload).
    """
    t = type(value)
    if t is list:
        return [from_json(item) for item in value]
    if t is dict:
        if any(key.startswith("$") for key in value):
            if len(value) != 1:
                raise ValueError(f"an object with a '$' key must have only that key: {sorted(value)}")
            ((tag, payload),) = value.items()
            return _untag(tag, payload)
        return {key: from_json(item) for key, item in value.items()}
    if value is None or t in (bool, int, float, str):
        return value
    raise ValueError(f"not a parsed JSON value: {t.__qualname__}")


def _untag(tag: str, payload: Any) -> Any:
    text = payload if type(payload) is str else None
    try:
        if tag in ("$tuple", "$set", "$frozenset") and type(payload) is list:
            items = from_json(payload)
            return tuple(items) if tag == "$tuple" else set(items) if tag == "$set" else frozenset(items)
        if tag == "$dict" and type(payload) is list and all(type(p) is list and len(p) == 2 for p in payload):
            return {from_json(k): from_json(v) for k, v in payload}
        if tag == "$complex" and type(payload) is list and len(payload) == 2:
            return complex(_parse_float(payload[0]), _parse_float(payload[1]))
        if tag == "$timedelta" and type(payload) is list and len(payload) == 3 and all(
                type(n) is int for n in payload):
            return _dt.timedelta(*payload)
        if tag == "$float":
            return _parse_float({tag: payload})
        if text is not None:
            if tag == "$int" and _INT_TEXT.match(text):
                return int(Decimal(text))
            if tag == "$bytes":
                return base64.b64decode(text, validate=True)
            if tag == "$decimal":
                return Decimal(text)
            if tag == "$datetime":
                return _dt.datetime.fromisoformat(text)
            if tag == "$date":
                return _dt.date.fromisoformat(text)
            if tag == "$time":
                return _dt.time.fromisoformat(text)
            if tag == "$uuid":
                return uuid.UUID(text)
    except (ArithmeticError, TypeError, ValueError) as exc:
        raise ValueError(f"bad {tag} value {payload!r}: {exc}") from None
    raise ValueError(f"unknown tag or bad payload: {tag} {payload!r}")


def _parse_float(value: Any) -> float:
    if type(value) is float:
        return value
    if type(value) is dict and list(value) == ["$float"] and value["$float"] in _FLOAT_NAMES:
        return _FLOAT_NAMES[value["$float"]]
    raise ValueError(f"not a float: {value!r}")


# ---- files -----------------------------------------------------------------------------------------------------


def _iso(seconds: float) -> str | None:
    """A Unix time as ISO 8601 in UTC, or None when it is no time (nan, out of range)."""
    try:
        return _dt.datetime.fromtimestamp(seconds, _dt.timezone.utc).isoformat()
    except (OverflowError, ValueError, OSError):
        return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _table_row(name: str, content: Any) -> dict[str, Any]:
    return {"record": "table", "table": name, "kind": "dict" if type(content) is dict else "list", "content": content}


def _client_row(client: bytes, ack: int, floor: int, replies: list[Any]) -> dict[str, Any]:
    return {"record": "client", "client": client.hex(), "ack": ack, "floor": floor, "replies": len(replies)}


def _leases_row(leases: list[Lease]) -> dict[str, Any]:
    return {"record": "leases", "leases": [
        {"lock": name, "token": token, "deadline": _iso(deadline), "unix_deadline": deadline}
        for name, token, deadline in leases]}


@dataclass
class FileReport:
    """What a valid snapshot or log holds: its kind, size, records, and the state it loads to."""

    path: str
    kind: str  # "snapshot" or "log"
    version: int | None  # None: a log cut inside its header
    size: int
    state: State  # what the file loads to (a log's leases: those that have not ended)
    locks: int = 0  # leases of ``state`` that have not ended now
    counts: dict[RecordKind, int] = field(default_factory=dict)  # records of a log, by kind
    times: tuple[float, float] | None = None  # the earliest and latest command's time in a log
    end: int = 0  # offset after a log's last whole record
    torn: int = 0  # bytes of a torn last record that loading drops
    _records: list[tuple[int, RecordKind, memoryview]] = field(default_factory=list, repr=False)

    def torn_warning(self) -> str:
        """The warning about a torn last record (empty when there is none)."""
        if not self.torn:
            return ""
        return (f"torn last record: {self.torn} bytes at offset {self.end} would be dropped "
                "(a crash while writing it; the server drops it with a warning when it loads the log)")

    def lines(self) -> list[str]:
        """The report of ``cyberdb check``, line by line."""
        version = "unknown (header cut short)" if self.version is None else str(self.version)
        kind = "snapshot" if self.kind == "snapshot" else "append-only log"
        lines = [f"{self.path}: {kind}, format version {version}, {_plural(self.size, 'byte')}"]
        if self.kind == "log":
            base = sum(n for kind, n in self.counts.items() if kind is not RecordKind.COMMAND)
            line = (f"records: {base} base ({_plural(self.counts.get(RecordKind.TABLE, 0), 'table')}, "
                    f"{_plural(self.counts.get(RecordKind.CLIENT, 0), 'client')}, "
                    f"{_plural(self.counts.get(RecordKind.LEASES, 0), 'leases record')}, "
                    f"{_plural(self.counts.get(RecordKind.CLOCKS, 0), 'clocks record')}), "
                    f"{_plural(self.counts.get(RecordKind.COMMAND, 0), 'command')}")
            if self.times is not None:
                line += f" from {_iso(self.times[0])} to {_iso(self.times[1])}"
            lines.append(line)
            if self.torn:
                lines.append("warning: " + self.torn_warning())
        lines.append(f"{'holds' if self.kind == 'snapshot' else 'loads to'}: "
                     f"{_plural(len(self.state.tables), 'table')}, "
                     f"{_plural(len(self.state.clients), 'client')} in the reply cache, "
                     f"{_plural(self.locks, 'lock')} held now")
        for name, table in self.state.tables.items():
            lines.append(f"  {_string(name)}  {_TABLE_NAMES[type(table)]}  {_plural(len(table), 'item')}  "
                         f"{_plural(len(encode_value(table)), 'byte')} encoded")
        lines.append("ok: the file is whole" + (" apart from its torn last record" if self.torn else ""))
        return lines

    def dump(self, state: bool = False) -> Iterator[str]:
        """The JSON lines of ``cyberdb dump``: a log's records, or (a snapshot, or ``state``) the state.

        Raises:
            PersistenceError: a record cannot be decoded (only if the file changed after it was checked).
        """
        if self.kind == "snapshot" or state:
            for name, table in self.state.tables.items():
                yield to_json(_table_row(name, table))
            for client in self.state.clients:
                yield to_json(_client_row(*client))
            yield to_json(_leases_row(self.state.leases))
            return
        for offset, kind, body in self._records:
            try:
                row = self._record(offset, kind, bytes(body))
            except ProtocolError as exc:
                raise PersistenceError(f"{self.path} is damaged at offset {offset}: {exc}") from None
            yield to_json({"offset": offset, **row})

    def _record(self, offset: int, kind: RecordKind, body: bytes) -> dict[str, Any]:
        if kind is RecordKind.COMMAND:
            cmd = parse_command(body)
            spec = BY_ID.get(cmd.op)
            if spec is None:
                raise PersistenceError(f"{self.path} is damaged at offset {offset}: unknown command id {cmd.op}")
            return {"record": "command", "time": _iso(cmd.when), "unix_time": cmd.when, "client": cmd.client.hex(),
                    "request": cmd.req_id, "ack": cmd.ack, "command": spec.name, "args": decode_value(cmd.payload)}
        value = parse_base(kind, body, f"{self.path} at offset {offset}")
        if kind is RecordKind.TABLE:
            return _table_row(*value)
        if kind is RecordKind.CLIENT:
            return _client_row(*value)
        if kind is RecordKind.CLOCKS:
            clock, token, versions = value
            return {"record": "clocks", "clock": clock, "last_token": token,
                    "versions": [{"table": name, "version": version} for name, version in versions]}
        if kind is RecordKind.META:
            name, options, deadlines, order = value
            return {"record": "meta", "table": name, "options": options,
                    "expires": [{"key": key, "deadline": _iso(deadline)} for key, deadline in deadlines],
                    "order": order}
        return _leases_row(value)


def inspect_file(path: str) -> FileReport:
    """Read and validate a snapshot or an append-only log as the server would load it.

    Raises:
        PersistenceError: the file cannot be read, is not a CyberDB file (a pickle of cyberdb 0.9.x is named as
            such), or is damaged (naming the offset where the format allows).
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PersistenceError(f"could not read {path}: {exc}") from exc
    if not data:
        raise PersistenceError(f"{path} is empty: neither a snapshot nor an append-only log")
    store = Store()
    if not data.startswith(LOG_MAGIC) and not LOG_HEADER.startswith(data):
        state = decode_state(data, path)
        store.load(state.tables, state.leases, state.clocks, state.meta)
        return FileReport(path, "snapshot", int.from_bytes(data[8:10], "big"), len(data), state,
                          len(store.leases()))
    scan = scan_log(data, path)
    replies = ReplyCache()
    replay_log(path, store, replies)  # what the server does on start: checks base order, command ids, arguments
    counts: dict[RecordKind, int] = {}
    for _offset, kind, _body in scan.records:
        counts[kind] = counts.get(kind, 0) + 1
    times = [parse_command(bytes(body)).when for _offset, kind, body in scan.records if kind is RecordKind.COMMAND]
    leases = store.leases()
    return FileReport(path, "log", int.from_bytes(data[8:10], "big") if len(data) >= len(LOG_HEADER) else None,
                      len(data), State(store.dump(), list(replies.clients()), leases), len(leases), counts,
                      (min(times), max(times)) if times else None, scan.end, scan.torn, scan.records)
