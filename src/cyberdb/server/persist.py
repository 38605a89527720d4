"""The file formats: snapshots and the append-only log; versioned, checksummed, never pickle.  No sockets.

Layout of a ``.cdb`` snapshot, format version 2 (all integers big-endian)::

    magic  b"CYBERDB\\x00"  (8 bytes), format version (uint16) 2, reserved (uint16)
    records as in the log below: TABLE ..., CLIENT ..., LEASES, then END [number of records before it]

A snapshot thus carries the exactly-once reply cache and the lock leases too (a client re-sending a write
across a clean restart gets its reply), and damage is reported with its offset.  Version 1 (still read):
magic, version 1, reserved, payload length (uint64), SHA-256 of the payload (32 bytes), payload =
codec-encoded ``[[name, "dict"|"list", content], ...]``.

Writing goes to a temporary file in the same directory, is fsynced, then ``os.replace``d over the target, so a
crash mid-save leaves the previous file intact.  Loading validates everything before anything is used and raises
:class:`~cyberdb.errors.PersistenceError` saying what is wrong.  Each table is encoded on its own and the
list around them is assembled from the parts, so a file nests no deeper than its deepest table (see
``codec.MAX_DEPTH``): every value the server accepts can be saved.

Layout of an append-only log (``.aof``)::

    magic  b"CYBERAOF"  (8 bytes), format version (uint16) currently 1, reserved (uint16)
    records, each:  body length (uint32) | CRC-32 of the body (uint32) | CRC-32 of those 8 bytes (uint32) | body

A body starts with its kind (one byte).  The *base* records describe the state when the log was (re)written:
``TABLE`` [name, kind, content], ``CLIENT`` [client id, ack, floor, [[request id, status, reply], ...]] (the
exactly-once reply cache), ``LEASES`` [[lock, token, deadline], ...] and ``CLOCKS`` [version clock, last
fencing token, [[table, version], ...]] (so that a replay runs compare-and-set as the first run did).  Then
one ``COMMAND`` record per write, in the order they ran: client id (16 bytes), request id, ack (uint64 each), the
wall-clock time it ran (float64), the command id (uint16), then the request's encoded arguments exactly as they
arrived.  An atomic
batch or a transaction is one request, hence one record: a crash never replays half of it.

The header's own checksum tells a damaged length from a torn write: a crash can only cut the log short (or,
on some file systems, leave zeros at its end), so a short or zeroed last record is *torn* and dropped with a
warning, while any other damage is refused with the offset where it starts.
"""

from __future__ import annotations

import enum
import hashlib
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..codec import decode_value, encode_array, encode_value
from ..errors import PersistenceError, ProtocolError
from .meta import check_options
from .progress import Progress
from .store import KIND_TYPES, MAX_NAME_LENGTH, Clocks, Lease, MetaRecord

__all__ = ["COMMAND_HEADER", "LOG_HEADER", "Command", "LogIndex", "LogScan", "RecordKind", "State", "base_records",
           "command_record", "decode_snapshot", "decode_state", "encode_snapshot", "frame_record", "index_log",
           "parse_base", "parse_command", "read_snapshot", "read_state", "scan_log", "write_atomic"]

MAGIC = b"CYBERDB\x00"
FORMAT_VERSION = 2
_HEADER = struct.Struct("!8sHHQ32s")  # version 1
_HEADER_V2 = struct.Struct("!8sHH")


@dataclass
class State:
    """What a snapshot or a log's base holds: tables, the reply cache's clients, lock leases."""

    tables: dict[str, Any]
    clients: list[Any]
    leases: list[Lease]
    clocks: Clocks | None = None
    meta: list[MetaRecord] = field(default_factory=list)


def encode_snapshot(tables: dict[str, Any], clients: Iterable[tuple[bytes, int, int, list[Any]]] = (),
                    leases: list[Lease] | None = None, clocks: Clocks | None = None,
                    meta: list[MetaRecord] | None = None, source: str = "snapshot") -> bytes:
    """Serialize all tables (and the reply cache, leases and clocks) into the bytes of a snapshot file.

    ``source`` names the file in the progress lines of a long save (see :mod:`.progress`).

    Raises:
        PersistenceError: a value cannot be encoded (the server's checks should make this impossible).
    """
    records: list[bytes] = []
    progress, size = Progress("saving", source, len(tables), "tables"), 0
    for record in base_records(tables, clients, leases or [], clocks, meta or []):  # tables first
        records.append(record)
        size += len(record)
        progress.at(min(len(records), len(tables)), len(records), size)
    progress.done(len(records), size)
    records.append(frame_record(bytes((RecordKind.END,)) + encode_value(len(records))))
    return _HEADER_V2.pack(MAGIC, FORMAT_VERSION, 0) + b"".join(records)


def _encode_table(name: str, table: Any) -> bytes:
    try:
        return encode_array([encode_value(name), encode_value(_kind(table)), encode_value(table)])
    except TypeError as exc:
        raise PersistenceError(f"table {name!r} cannot be saved: {exc}") from None


def _kind(table: Any) -> str:
    return "dict" if type(table) is dict else "list"


def decode_snapshot(data: bytes, source: str = "snapshot") -> dict[str, Any]:
    """Validate and decode snapshot bytes into ``{name: dict | list}``.

    Raises:
        PersistenceError: not a CyberDB file, unknown version, truncated, corrupted, or malformed.
    """
    return decode_state(data, source).tables


def decode_state(data: bytes, source: str = "snapshot") -> State:
    """Validate and decode snapshot bytes into tables, reply-cache clients and leases.

    Raises:
        PersistenceError: not a CyberDB file, unknown version, truncated, corrupted (naming the offset), or
            malformed.
    """
    if len(data) >= _HEADER_V2.size and data.startswith(MAGIC) and _HEADER_V2.unpack_from(data)[1] == 2:
        return _decode_v2(data, source)
    return State(_decode_v1(data, source), [], [])


def _decode_v2(data: bytes, source: str) -> State:
    scan = _scan_records(data, _HEADER_V2.size, source)
    if scan.torn:  # lenient for a log's last record, not for a file that was renamed into place whole
        length, _crc, head_crc = _RECORD.unpack_from(data, scan.end) if scan.torn >= _RECORD.size else (0, 0, 0)
        if zlib.crc32(data[scan.end:scan.end + 8]) == head_crc and scan.torn == _RECORD.size + length:
            raise PersistenceError(f"{source} is damaged at offset {scan.end}: checksum mismatch in a "
                                   f"{length}-byte record")
    if scan.torn or not scan.records or scan.records[-1][1] is not RecordKind.END:
        raise PersistenceError(f"{source} is truncated at offset {scan.end}: its end record is missing")
    state = State({}, [], [])
    progress = Progress("loading", source, len(data))  # a line every few seconds while a big file loads
    for number, (offset, kind, body) in enumerate(scan.records[:-1]):
        progress.at(offset, number)
        where = f"{source} at offset {offset}"
        if kind is RecordKind.TABLE:
            name, content = parse_base(kind, bytes(body), where)
            if name in state.tables:
                raise PersistenceError(f"{where}: duplicate table name {name!r}")
            state.tables[name] = content
        elif kind is RecordKind.CLIENT:
            state.clients.append(parse_base(kind, bytes(body), where))
        elif kind is RecordKind.LEASES:
            state.leases = parse_base(kind, bytes(body), where)
        elif kind is RecordKind.CLOCKS:
            state.clocks = parse_base(kind, bytes(body), where)
        elif kind is RecordKind.META:
            state.meta.append(parse_base(kind, bytes(body), where))
        else:
            raise PersistenceError(f"{where}: a {kind.name} record does not belong in a snapshot")
    offset, _kind, body = scan.records[-1]
    try:
        count = decode_value(bytes(body[1:]))
    except ProtocolError:
        count = None
    if count != len(scan.records) - 1:
        raise PersistenceError(f"{source} is damaged at offset {offset}: the end record does not match")
    progress.done(count)
    return state


def _decode_v1(data: bytes, source: str) -> dict[str, Any]:
    if len(data) < _HEADER.size and data and data[:len(MAGIC)] == MAGIC[:len(data)]:
        raise PersistenceError(f"{source} is truncated: {len(data)} bytes, shorter than the {_HEADER.size}-byte header")
    if len(data) < _HEADER.size or not data.startswith(MAGIC):
        if data[:1] == b"\x80":
            raise PersistenceError(
                f"{source} looks like a pickle (a cyberdb 0.9.x file); it is refused because unpickling a file "
                "can run arbitrary code. Re-create the data with this version.")
        raise PersistenceError(f"{source} is not a CyberDB data file (bad header)")
    _magic, version, _reserved, length, digest = _HEADER.unpack_from(data)
    if version != 1:
        raise PersistenceError(f"{source} has format version {version}; this CyberDB reads versions 1 and 2")
    payload = data[_HEADER.size:]
    if len(payload) < length:
        raise PersistenceError(f"{source} is truncated: {len(payload)} of {length} payload bytes present")
    if len(payload) > length:
        raise PersistenceError(f"{source} has {len(payload) - length} unexpected bytes after its payload")
    if hashlib.sha256(payload).digest() != digest:
        raise PersistenceError(f"{source} is corrupted: checksum mismatch")
    try:
        entries = decode_value(payload)
    except ProtocolError as exc:
        raise PersistenceError(f"{source} has a malformed payload: {exc}") from None
    return _validate(entries, source)


def _validate(entries: Any, source: str) -> dict[str, Any]:
    if type(entries) is not list:
        raise PersistenceError(f"{source}: the payload is not a list of tables")
    tables: dict[str, Any] = {}
    for entry in entries:
        name, content = _table_entry(entry, source)
        if name in tables:
            raise PersistenceError(f"{source}: duplicate table name {name!r}")
        tables[name] = content
    return tables


def _table_entry(entry: Any, source: str) -> tuple[str, Any]:
    if type(entry) is not list or len(entry) != 3:
        raise PersistenceError(f"{source}: a table entry is not [name, kind, content]")
    name, kind, content = entry
    if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
        raise PersistenceError(f"{source}: bad table name {name!r}")
    if kind not in KIND_TYPES or type(content) is not KIND_TYPES[kind]:
        raise PersistenceError(f"{source}: table {name!r} has a bad kind or content")
    return name, content


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file, fsync and rename.

    Raises:
        PersistenceError: the file could not be written (the previous one is left intact).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    try:
        # a unique name: a save_db() and a backup of the same file may overlap, and each must stay whole
        fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise PersistenceError(f"could not write {path}: {exc}") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # make the rename itself durable
        finally:
            os.close(dir_fd)
    except OSError as exc:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise PersistenceError(f"could not write {path}: {exc}") from exc


def read_snapshot(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a snapshot file; return its tables.

    Raises:
        PersistenceError: the file cannot be read or is not valid.
    """
    return read_state(path).tables


def read_state(path: str | os.PathLike[str]) -> State:
    """Read and validate a snapshot file; return tables, reply-cache clients and leases.

    Raises:
        PersistenceError: the file cannot be read or is not valid.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PersistenceError(f"could not read {path}: {exc}") from exc
    return decode_state(data, path)


# ---- the append-only log ---------------------------------------------------------------------------------------

LOG_MAGIC = b"CYBERAOF"
LOG_VERSION = 1
LOG_HEADER = LOG_MAGIC + struct.pack("!HH", LOG_VERSION, 0)
_RECORD = struct.Struct("!III")
_LENGTH_AND_CRC = struct.Struct("!II")
_COMMAND = struct.Struct("!B16sQQdH")
MAX_RECORD = (1 << 32) - 1


class RecordKind(enum.IntEnum):
    """The first byte of a log record's body."""

    COMMAND = 1
    TABLE = 2
    CLIENT = 3
    LEASES = 4
    END = 5  # a snapshot's last record: the number of records before it
    CLOCKS = 6  # [version clock, last fencing token, [[table, version], ...]]
    META = 7  # [table, options, [[key, deadline], ...], keys in order of use or None]: one per bounded/expiring table


_COMMAND_KIND = int(RecordKind.COMMAND)
assert _COMMAND_KIND == 1  # command_record writes it as a literal
_END_KIND = int(RecordKind.END)
_KIND_OF = {int(kind): kind for kind in RecordKind}
COMMAND_HEADER = _COMMAND  # kind, client id, request id, ack, time, command id: the body's first bytes


def frame_record(body: bytes) -> bytes:
    """A record around ``body``: length, body checksum, header checksum, body.

    Raises:
        PersistenceError: the body does not fit in one record (4 GiB).
    """
    if len(body) > MAX_RECORD:
        raise PersistenceError(f"a log record of {len(body)} bytes exceeds the limit of {MAX_RECORD}")
    head = _LENGTH_AND_CRC.pack(len(body), zlib.crc32(body))
    return head + zlib.crc32(head).to_bytes(4, "big") + body


def command_record(client: bytes, req_id: int, ack: int, when: float, op: int, payload: bytes,
                   _pack: Callable[..., bytes] = _COMMAND.pack, _head: Callable[..., bytes] = _LENGTH_AND_CRC.pack,
                   _crc32: Callable[..., int] = zlib.crc32) -> bytes:
    """The record of one write as it arrived (the hot path: a struct and two CRCs; defaults bind the helpers)."""
    body = _pack(1, client, req_id, ack, when, op) + payload
    head = _head(len(body), _crc32(body))
    return head + _crc32(head).to_bytes(4, "big") + body


@dataclass(frozen=True)
class Command:
    """A decoded ``COMMAND`` record (its arguments still encoded)."""

    client: bytes
    req_id: int
    ack: int
    when: float
    op: int
    payload: bytes


def parse_command(body: bytes) -> Command:
    """Split a ``COMMAND`` record's body."""
    _kind, client, req_id, ack, when, op = _COMMAND.unpack_from(body)
    return Command(client, req_id, ack, when, op, bytes(body[_COMMAND.size:]))


def base_records(tables: dict[str, Any], clients: Iterable[tuple[bytes, int, int, list[Any]]],
                 leases: list[Lease], clocks: Clocks | None = None,
                 meta: list[MetaRecord] | None = None) -> Iterator[bytes]:
    """The records of a log's base: every table, every client's cached replies, the lock leases, the clocks.

    Raises:
        PersistenceError: a table cannot be encoded or is too large for one record.
    """
    table_kind = bytes((RecordKind.TABLE,))
    for name, table in tables.items():
        yield frame_record(table_kind + _encode_table(name, table))
    client_kind = bytes((RecordKind.CLIENT,))
    for client in clients:
        yield frame_record(client_kind + encode_value(list(client)))
    yield frame_record(bytes((RecordKind.LEASES,)) + encode_value([list(lease) for lease in leases]))
    if clocks is not None:
        clock, token, versions = clocks
        yield frame_record(bytes((RecordKind.CLOCKS,)) + encode_value([clock, token, [list(v) for v in versions]]))
    meta_kind = bytes((RecordKind.META,))
    for record in meta or ():
        try:
            yield frame_record(meta_kind + encode_value(record))
        except TypeError as exc:
            raise PersistenceError(f"the expiry data of table {record[0]!r} cannot be saved: {exc}") from None


def parse_base(kind: RecordKind, body: bytes, source: str) -> Any:
    """Decode and validate a base record: ``(name, content)``, a client tuple, or a list of leases.

    Raises:
        PersistenceError: the record is malformed.
    """
    try:
        value = decode_value(body[1:])
    except ProtocolError as exc:
        raise PersistenceError(f"{source}: a malformed {kind.name} record: {exc}") from None
    if kind is RecordKind.TABLE:
        return _table_entry(value, source)
    if kind is RecordKind.CLIENT:
        if (type(value) is not list or len(value) != 4 or type(value[0]) is not bytes or len(value[0]) != 16
                or type(value[1]) is not int or type(value[2]) is not int or type(value[3]) is not list
                or not all(type(r) is list and len(r) == 3 and type(r[0]) is int and type(r[1]) is int
                           and type(r[2]) is bytes for r in value[3])):
            raise PersistenceError(f"{source}: a malformed CLIENT record")
        return value
    if kind is RecordKind.META:
        if (type(value) is not list or len(value) != 4 or type(value[0]) is not str or type(value[1]) is not dict
                or type(value[2]) is not list or value[3] is not None and type(value[3]) is not list
                or not all(type(d) is list and len(d) == 2 and type(d[1]) is float for d in value[2])):
            raise PersistenceError(f"{source}: a malformed META record")
        try:
            check_options("dict" if "maxsize" in value[1] else "list", value[1])
            for d in value[2]:
                hash(d[0])
            for key in value[3] or ():
                hash(key)
        except (TypeError, ValueError) as exc:
            raise PersistenceError(f"{source}: a malformed META record: {exc}") from None
        return value
    if kind is RecordKind.CLOCKS:
        if (type(value) is not list or len(value) != 3 or type(value[0]) is not int or type(value[1]) is not int
                or type(value[2]) is not list or not all(type(v) is list and len(v) == 2 and type(v[0]) is str
                                                         and type(v[1]) is int for v in value[2])):
            raise PersistenceError(f"{source}: a malformed CLOCKS record")
        return value[0], value[1], [tuple(v) for v in value[2]]
    if type(value) is not list or not all(
            type(lease) is list and len(lease) == 3 and type(lease[0]) is str and type(lease[1]) is int
            and type(lease[2]) is float for lease in value):
        raise PersistenceError(f"{source}: a malformed LEASES record")
    return [tuple(lease) for lease in value]


@dataclass
class LogScan:
    """The whole records of a log, where they end, and what was dropped after them."""

    records: list[tuple[int, RecordKind, memoryview]]  # offset, kind, body
    end: int  # offset after the last whole record
    torn: int  # bytes after ``end`` that were dropped as a torn last record


def scan_log(data: bytes, source: str = "log") -> LogScan:
    """Check a log's header and every record's checksums.

    Raises:
        PersistenceError: not a log, another version, or damage before the last record (naming its offset).
    """
    if not data.startswith(LOG_MAGIC):
        if LOG_MAGIC.startswith(data):
            return LogScan([], 0, len(data))  # a crash while the header was being written
        raise PersistenceError(f"{source} is not a CyberDB append-only log (bad header)")
    if len(data) < len(LOG_HEADER):
        return LogScan([], 0, len(data))
    version = int.from_bytes(data[8:10], "big")
    if version != LOG_VERSION:
        raise PersistenceError(f"{source} has log format version {version}; this CyberDB reads {LOG_VERSION}")
    scan = _scan_records(data, len(LOG_HEADER), source)
    for offset, kind, _body in scan.records:
        if kind is RecordKind.END:
            raise PersistenceError(f"{source} is damaged at offset {offset}: an END record in a log")
    return scan


def _scan_records(data: bytes, offset: int, source: str) -> LogScan:
    index = index_records(data, offset, source)
    view = memoryview(data)
    records = [(at, _KIND_OF[kind], view[begin:end]) for at, kind, begin, end in index.entries]
    return LogScan(records, index.end, index.torn)


@dataclass
class LogIndex:
    """Where each whole record of a file is: ``(offset, kind, body start, body end)``; as cheap as it gets."""

    entries: list[tuple[int, int, int, int]]
    end: int  # offset after the last whole record
    torn: int  # bytes after ``end`` that were dropped as a torn last record


def index_log(data: bytes, source: str = "log") -> LogIndex:
    """``scan_log`` without building a view per record (a log replay reads a million of them).

    Raises:
        PersistenceError: as ``scan_log``.
    """
    scan_log(data[:len(LOG_HEADER)], source)  # the header's checks
    if len(data) < len(LOG_HEADER):
        return LogIndex([], 0, len(data))
    index = index_records(data, len(LOG_HEADER), source)
    for offset, kind, _begin, _end in index.entries:
        if kind == _END_KIND:
            raise PersistenceError(f"{source} is damaged at offset {offset}: an END record in a log")
    return index


def index_records(data: bytes, offset: int, source: str) -> LogIndex:
    """Check every record's checksums from ``offset`` on and say where each is (see the module docstring).

    Raises:
        PersistenceError: damage before the last record, naming its offset.
    """
    view = memoryview(data)
    entries: list[tuple[int, int, int, int]] = []
    size, header, unpack, crc32, kinds = len(data), _RECORD.size, _RECORD.unpack_from, zlib.crc32, _KIND_OF
    while offset < size:
        if size - offset < header:
            return LogIndex(entries, offset, size - offset)
        length, body_crc, head_crc = unpack(data, offset)
        if crc32(view[offset:offset + 8]) != head_crc:
            if not any(view[offset:]):
                return LogIndex(entries, offset, size - offset)  # zeros at the end: a torn write
            raise PersistenceError(f"{source} is damaged at offset {offset}: bad record header")
        start = offset + header
        end = start + length
        if end > size:
            return LogIndex(entries, offset, size - offset)  # the last record was cut short
        if crc32(view[start:end]) != body_crc:
            if end == size:
                return LogIndex(entries, offset, size - offset)  # the last record's blocks were not written
            raise PersistenceError(f"{source} is damaged at offset {offset}: checksum mismatch in a "
                                   f"{length}-byte record")
        kind = data[start] if length else 0
        if kind not in kinds or kind == _COMMAND_KIND and length < _COMMAND.size:
            raise PersistenceError(f"{source} is damaged at offset {offset}: unknown record")
        entries.append((offset, kind, start, end))
        offset = end
    return LogIndex(entries, offset, 0)
