"""Copying tables between stores: ``cyberdb copy SOURCE DEST`` (issue 11).  No printing: progress goes to a callback.

A store is named by a URL: ``cyberdb://``/``cyberdbs://`` (a CyberDB server, :mod:`cyberdb.url`), ``redis://``,
``rediss://``, ``redis-cluster://``, ``rediss-cluster://`` (the Redis backend, docs/redis-backend.md), or a
snapshot file (``data.cdb`` or ``file:///path/data.cdb``).  Servers are read and written through the one table
API (``todict()``/``tolist()``, ``create_cyberdict``, ``update``, ``extend``), so every backend is handled alike.

Each table is read whole (``todict()``/``tolist()`` read in pieces, but the copy holds the table in this
process's memory: a table must fit in it), written in chunks of ``chunk`` items (the first by ``create_*``, the
rest by ``update``/``extend``: each chunk is one request), then read back and compared with what was read.
Key expiries (``d.set(k, v, ttl=)``) and table bounds (``maxsize``/``maxlen``) are not copied.

Rule: everything that can be refused (an unknown table, a table that exists at the destination without
``replace``, ``tag`` for a store that has none) is refused before anything is written.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

from .codec import encode_value
from .errors import CyberDBError
from .server.persist import encode_snapshot, read_state, write_atomic
from .url import SCHEMES as CYBERDB_SCHEMES
from .url import parse_url

__all__ = ["DEFAULT_CHUNK", "CopyError", "CopyEvent", "CopyReport", "Phase", "copy_tables", "open_store"]

logger = logging.getLogger(__name__)
DEFAULT_CHUNK = 1000
REDIS_SCHEMES = ("redis", "rediss", "redis-cluster", "rediss-cluster")
_KINDS = {"CyberDict": "dict", "CyberList": "list", "dict": "dict", "list": "list"}
_CLASS = {"dict": "CyberDict", "list": "CyberList"}


class CopyError(CyberDBError):
    """A copy refused before it wrote anything (unknown table, existing table, existing file)."""


class Phase(enum.Enum):
    """What a :class:`CopyEvent` reports."""

    START = "start"  # a table is about to be written (its size is known)
    CHUNK = "chunk"  # one more chunk was written
    DONE = "done"  # the table is written
    VERIFIED = "verified"  # the table was read back: ``ok`` says if it equals what was copied


@dataclasses.dataclass(frozen=True)
class CopyEvent:
    """One step of a copy, given to the progress callback."""

    phase: Phase
    table: str
    kind: str  # "CyberDict" or "CyberList"
    items: int
    copied: int = 0
    ok: bool = True


@dataclasses.dataclass
class CopyReport:
    """The outcome of :func:`copy_tables`: the tables copied, and those whose read-back content differs."""

    copied: list[str]
    mismatched: list[str]


class _Store:
    """A place tables are read from or written to."""

    description = "store"
    has_tags = False
    deferred = False  # True: written by finish(), so verified after it

    def tables(self) -> dict[str, str]:
        """``{name: "dict" | "list"}``."""
        raise NotImplementedError

    def read(self, name: str, kind: str) -> Any:
        """The whole content of a table, as a ``dict`` or ``list``."""
        raise NotImplementedError

    def create(self, name: str, kind: str, first: Any, tag: str | None) -> None:
        """Create a table holding ``first``."""
        raise NotImplementedError

    def append(self, name: str, kind: str, chunk: Any) -> None:
        """Add a chunk to a table made by :meth:`create`."""
        raise NotImplementedError

    def delete(self, name: str) -> None:
        """Delete a table."""
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        """Whether a table of that name is there now (as a destination)."""
        return name in self.tables()

    def check_writable(self, names: Sequence[str], replace: bool) -> None:
        """Refuse (``CopyError``) a copy of ``names`` that would overwrite something without ``replace``."""
        existing = [name for name in names if name in self.tables()]
        if existing and not replace:
            raise CopyError(f"{self.description} already has table(s) {', '.join(map(repr, existing))}: "
                            "use --replace to delete them first")

    def finish(self) -> None:
        """Make the writes durable (a snapshot file is written here)."""

    def close(self) -> None:
        """Release connections."""


class _ServerStore(_Store):
    """A CyberDB server or the Redis backend, through a proxy of the one table API."""

    def __init__(self, client: Any, description: str, has_tags: bool) -> None:
        self._client = client
        self.description = description
        self.has_tags = has_tags
        try:
            self._proxy = client.get_proxy()
            self._proxy.connect()
        except BaseException:
            client.close()
            raise

    def tables(self) -> dict[str, str]:
        return {name: _KINDS[kind] for name, kind in self._proxy.tables().items()}

    def _table(self, name: str, kind: str) -> Any:
        return self._proxy.get_cyberdict(name) if kind == "dict" else self._proxy.get_cyberlist(name)

    def read(self, name: str, kind: str) -> Any:
        table = self._table(name, kind)
        return table.todict() if kind == "dict" else table.tolist()

    def create(self, name: str, kind: str, first: Any, tag: str | None) -> None:
        options = {"tag": tag} if tag is not None else {}
        if kind == "dict":
            self._proxy.create_cyberdict(name, first, **options)
        else:
            self._proxy.create_cyberlist(name, first, **options)

    def append(self, name: str, kind: str, chunk: Any) -> None:
        table = self._table(name, kind)
        if kind == "dict":
            table.update(chunk)
        else:
            table.extend(chunk)

    def delete(self, name: str) -> None:
        self._proxy.delete_table(name)

    def close(self) -> None:
        try:
            self._proxy.close()
        finally:
            self._client.close()


class _SnapshotStore(_Store):
    """A snapshot file (``.cdb``): read with the server's own reader, written whole with its own writer."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.description = f"snapshot {path}"
        self.deferred = True
        self._read: dict[str, Any] | None = None
        self._written: dict[str, Any] = {}

    def _content(self) -> dict[str, Any]:
        if self._read is None:
            self._read = read_state(self.path).tables
        return self._read

    def tables(self) -> dict[str, str]:
        return {name: "dict" if type(content) is dict else "list" for name, content in self._content().items()}

    def read(self, name: str, kind: str) -> Any:
        return self._content()[name]

    def check_writable(self, names: Sequence[str], replace: bool) -> None:
        # the file is written whole: its other tables, expiries and reply cache would be lost, so it is replaced
        # only when asked
        if os.path.exists(self.path) and not replace:
            raise CopyError(f"{self.path} exists: use --replace to overwrite it (the whole file is replaced)")

    def create(self, name: str, kind: str, first: Any, tag: str | None) -> None:
        self._written[name] = dict(first) if kind == "dict" else list(first)

    def append(self, name: str, kind: str, chunk: Any) -> None:
        if kind == "dict":
            self._written[name].update(chunk)
        else:
            self._written[name].extend(chunk)

    def delete(self, name: str) -> None:
        self._written.pop(name, None)

    def exists(self, name: str) -> bool:
        return name in self._written  # the file's own tables go with it: it is replaced whole

    def finish(self) -> None:
        write_atomic(self.path, encode_snapshot(self._written, source=self.path))
        self._read = None  # the verification reads the file back


def _file_path(url: str) -> str | None:
    if url.startswith("file://"):
        parts = urllib.parse.urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise ValueError(f"a file:// URL names a local file, not one on {parts.netloc!r}")
        return urllib.parse.unquote(parts.path)
    return None if "://" in url else url


def open_store(url: str, password: str | None = None) -> _Store:
    """Open the store ``url`` names (see the module docstring); ``password`` is used when the URL has none.

    Raises:
        ValueError: a malformed or unsupported URL.
        CyberDBError: the server cannot be reached or refuses the password.
    """
    path = _file_path(url)
    if path is not None:
        if not path:
            raise ValueError("an empty file name")
        return _SnapshotStore(path)
    scheme = url.split("://", 1)[0].lower()
    if scheme in CYBERDB_SCHEMES:
        settings = parse_url(url)
        if "password" not in settings and password is not None:
            settings["password"] = password
        from .client import connect

        return _ServerStore(connect(**settings), f"{scheme}://{settings['host']}:{settings['port']}", False)
    if scheme in REDIS_SCHEMES:
        from .backend_redis import connect as redis_connect

        return _ServerStore(redis_connect(url), f"{scheme}://{_where(url)}", True)
    raise ValueError(f"unknown store {url!r}: use cyberdb://, cyberdbs://, redis://, rediss://, redis-cluster://, "
                     "rediss-cluster://, file:// or a path")


def _where(url: str) -> str:
    """The URL's addresses without its password (secrets never appear in messages)."""
    netloc = urllib.parse.urlsplit(url).netloc
    return netloc.rsplit("@", 1)[-1]


def _chunks(content: Any, kind: str, size: int) -> list[Any]:
    if kind == "dict":
        items = list(content.items())
        return [dict(items[i:i + size]) for i in range(0, len(items), size)] or [{}]
    return [content[i:i + size] for i in range(0, len(content), size)] or [[]]


def same_content(a: Any, b: Any) -> bool:
    """Whether two tables' contents are equal: ``==``, or the same encoding (NaN is never ``==`` itself)."""
    if a == b:
        return True
    try:
        return encode_value(a) == encode_value(b)
    except TypeError:
        return False


def copy_tables(source: _Store, dest: _Store, names: Sequence[str] | None = None, *, replace: bool = False,
                tag: str | None = None, chunk: int = DEFAULT_CHUNK,
                progress: Callable[[CopyEvent], None] | None = None) -> CopyReport:
    """Copy tables ``names`` (default: all) from ``source`` to ``dest``, then read each back and compare.

    Args:
        replace: delete tables of those names at ``dest`` first (else an existing one is refused).
        tag: put every copied table in this Redis hash slot (only for a Redis destination).
        chunk: items per write request.
        progress: called with a :class:`CopyEvent` for each step.

    Raises:
        CopyError: an unknown table, or an existing one without ``replace``: nothing was written.
        ValueError: a bad ``chunk``, or ``tag`` for a destination without tags.
    """
    if chunk < 1:
        raise ValueError("the chunk size must be at least 1")
    if tag is not None and not dest.has_tags:
        raise ValueError(f"--tag is for a Redis destination, not {dest.description}")
    available = source.tables()
    names = list(available) if names is None else list(dict.fromkeys(names))
    missing = [name for name in names if name not in available]
    if missing:
        raise CopyError(f"{source.description} has no table(s) {', '.join(map(repr, missing))}")
    dest.check_writable(names, replace)
    report = CopyReport([], [])
    pending: dict[str, tuple[str, Any]] = {}
    for name in names:
        kind = available[name]
        content = source.read(name, kind)
        event = CopyEvent(Phase.START, name, _CLASS[kind], len(content))
        _emit(progress, event)
        if replace and dest.exists(name):
            dest.delete(name)
        done = 0
        for i, part in enumerate(_chunks(content, kind, chunk)):
            if i == 0:
                dest.create(name, kind, part, tag)
            else:
                dest.append(name, kind, part)
            done += len(part)
            _emit(progress, dataclasses.replace(event, phase=Phase.CHUNK, copied=done))
        _emit(progress, dataclasses.replace(event, phase=Phase.DONE, copied=done))
        logger.info("copied table %r (%s, %d items)", name, _CLASS[kind], done)
        report.copied.append(name)
        if dest.deferred:
            pending[name] = kind, content
        else:  # verified now, so that only one table is held in memory at a time
            _verify(dest, name, kind, content, report, progress)
    dest.finish()
    for name, (kind, content) in pending.items():
        _verify(dest, name, kind, content, report, progress)
    return report


def _verify(dest: _Store, name: str, kind: str, content: Any, report: CopyReport,
            progress: Callable[[CopyEvent], None] | None) -> None:
    ok = same_content(content, dest.read(name, kind))
    if not ok:
        report.mismatched.append(name)
        logger.warning("table %r differs at the destination after the copy", name)
    _emit(progress, CopyEvent(Phase.VERIFIED, name, _CLASS[kind], len(content), len(content), ok))


def _emit(progress: Callable[[CopyEvent], None] | None, event: CopyEvent) -> None:
    if progress is not None:
        progress(event)
