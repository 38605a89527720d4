"""Snapshot files: versioned, checksummed, written atomically, encoded with the safe codec (never pickle).

Layout of a ``.cdb`` file (all integers big-endian)::

    magic  b"CYBERDB\\x00"  (8 bytes)
    format version          (uint16)   currently 1
    reserved                (uint16)   0
    payload length          (uint64)
    SHA-256 of the payload  (32 bytes)
    payload                 codec-encoded [[name, "dict"|"list", content], ...]

Writing goes to a temporary file in the same directory, is fsynced, then ``os.replace``d over the target, so a
crash mid-save leaves the previous file intact.  Loading validates everything before anything is used and raises
:class:`~cyberdb.errors.PersistenceError` saying what is wrong.
"""

from __future__ import annotations

import hashlib
import os
import struct
import tempfile
from typing import Any

from ..codec import decode_value, encode_value
from ..errors import PersistenceError, ProtocolError
from .store import KIND_TYPES, MAX_NAME_LENGTH

__all__ = ["decode_snapshot", "encode_snapshot", "read_snapshot", "write_atomic"]

MAGIC = b"CYBERDB\x00"
FORMAT_VERSION = 1
_HEADER = struct.Struct("!8sHHQ32s")


def encode_snapshot(tables: dict[str, Any]) -> bytes:
    """Serialize all tables into the bytes of a snapshot file."""
    payload = encode_value([[name, "dict" if type(t) is dict else "list", t] for name, t in tables.items()])
    return _HEADER.pack(MAGIC, FORMAT_VERSION, 0, len(payload), hashlib.sha256(payload).digest()) + payload


def decode_snapshot(data: bytes, source: str = "snapshot") -> dict[str, Any]:
    """Validate and decode snapshot bytes into ``{name: dict | list}``.

    Raises:
        PersistenceError: not a CyberDB file, unknown version, truncated, corrupted, or malformed.
    """
    if len(data) < _HEADER.size and data and data[:len(MAGIC)] == MAGIC[:len(data)]:
        raise PersistenceError(f"{source} is truncated: {len(data)} bytes, shorter than the {_HEADER.size}-byte header")
    if len(data) < _HEADER.size or not data.startswith(MAGIC):
        if data[:1] == b"\x80":
            raise PersistenceError(
                f"{source} looks like a pickle (a cyberdb 0.9.x file); it is refused because unpickling a file "
                "can run arbitrary code. Re-create the data with this version.")
        raise PersistenceError(f"{source} is not a CyberDB data file (bad header)")
    _magic, version, _reserved, length, digest = _HEADER.unpack_from(data)
    if version != FORMAT_VERSION:
        raise PersistenceError(f"{source} has format version {version}; this CyberDB reads version {FORMAT_VERSION}")
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
        if type(entry) is not list or len(entry) != 3:
            raise PersistenceError(f"{source}: a table entry is not [name, kind, content]")
        name, kind, content = entry
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH or name in tables:
            raise PersistenceError(f"{source}: bad or duplicate table name {name!r}")
        if kind not in KIND_TYPES or type(content) is not KIND_TYPES[kind]:
            raise PersistenceError(f"{source}: table {name!r} has a bad kind or content")
        tables[name] = content
    return tables


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
    """Read and validate a snapshot file.

    Raises:
        PersistenceError: the file cannot be read or is not valid.
    """
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PersistenceError(f"could not read {path}: {exc}") from exc
    return decode_snapshot(data, path)
