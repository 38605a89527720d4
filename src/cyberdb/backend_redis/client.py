"""The Redis backend's client and executor: CyberDict/CyberList on Redis or Redis Cluster.

``cyberdb.connect("redis://host:6379/0")`` (or ``rediss://``, or ``redis-cluster://h1:7000,h2:7001/``) returns a
:class:`RedisBackendClient`; its proxy, :class:`RedisBackendProxy`, is an executor of the one table layer
(:mod:`cyberdb.tables`): it runs each CommandSpec by its plan (:mod:`.plans`) in the table's hash slot
(:mod:`.routing`), so the tables it returns are the ordinary ``CyberDict``/``CyberList``.  What is not supported
yet raises :class:`NotSupportedError` (see docs/redis-backend.md).
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, NoReturn, TextIO

import redis
from redis.exceptions import OutOfMemoryError, ResponseError

from ..client import dict_content, list_content
from ..codec import decode_value, encode_value
from ..commands import CommandSpec
from ..errors import (
    AuthenticationError,
    ConnectionLostError,
    CyberDBError,
    DisconnectedError,
    MemoryLimitError,
    ServerError,
    TableExistsError,
    TableNotFoundError,
    TimeoutError,
    WrongTableTypeError,
)
from ..executor import SPEC_REPLY, SyncExecutor
from ..lock import Lock
from ..tables import CyberDict, CyberList
from .layout import REGISTRY_KEYS, REGISTRY_SLOT, TableKeys, table_keys
from .paths import run_at_path
from .pipeline import RedisPipeline
from .plans import LOCK_PLANS, PLANS, element, encode_key
from .routing import ClusterRouter, Router, SingleRouter, parse_cluster_url

__all__ = ["SCHEMES", "NotSupportedError", "RedisBackendClient", "RedisBackendProxy", "connect", "from_url"]

logger = logging.getLogger(__name__)
SCHEMES = ("redis", "rediss", "redis-cluster", "rediss-cluster")
MAX_NAME_LENGTH = 1024
_CLOSED = "this proxy is closed: call proxy.connect() before using it or its tables"
_CLASS = {"dict": "CyberDict", "list": "CyberList"}
_MESSAGES = {
    "POPEMPTY": (IndexError, "pop from empty list"),
    "POPRANGE": (IndexError, "pop index out of range"),
    "ASSIGN": (IndexError, "list assignment index out of range"),
    "REMOVE": (ValueError, "list.remove(x): x not in list"),
}


class NotSupportedError(CyberDBError, NotImplementedError):
    """A CyberDB feature the Redis backend does not have yet (the message names it)."""


def _unsupported(what: str) -> NoReturn:
    raise NotSupportedError(f"{what} is not supported on the Redis backend yet (see docs/redis-backend.md)")


class RedisBackendClient:
    """Settings and connections (one ``redis.Redis`` pool per node) for tables kept in Redis or Redis Cluster."""

    def __init__(self, url: str, **options: Any) -> None:
        """Create a client of ``url``; no connection is made until one is needed (``connect()`` makes one at once).

        Args:
            url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://...`` (TLS), or
                ``redis-cluster://[[user]:password@]host:port[,host:port...]/`` (``rediss-cluster://``: TLS).
            **options: passed to each ``redis.Redis`` (``socket_timeout``, ``ssl_ca_certs``, ...).

        Raises:
            ValueError: a malformed URL.
        """
        scheme = url.partition("://")[0] if isinstance(url, str) else ""
        if scheme not in SCHEMES:
            raise ValueError(f"a Redis backend URL starts with one of {', '.join(s + '://' for s in SCHEMES)}")
        self.url = url
        self.cluster = scheme.endswith("-cluster")
        if self.cluster:
            seeds, settings = parse_cluster_url(url)
            settings.update(options)
            self.router: Router = ClusterRouter(seeds, **settings)
        else:
            self.router = SingleRouter(url, **options)
        self._loaded = False
        # name -> keys of the tables this client has seen (the registry is asked once per name); an entry is
        # dropped when a command finds its table gone, so a table deleted and made again elsewhere is found again
        self.known_tables: dict[str, TableKeys] = {}

    def __repr__(self) -> str:
        return f"<RedisBackendClient {'cluster' if self.cluster else 'single'} {self.router!r}>"

    def ensure_library(self) -> None:
        """Load the function library on every master (once per client; again when a node lacks it)."""
        if not self._loaded:
            with _mapped("loading the function library"):
                self.router.load_library()
            self._loaded = True

    def get_proxy(self) -> RedisBackendProxy:
        """A new, not yet connected proxy (``with client.get_proxy() as proxy:``)."""
        return RedisBackendProxy(self)

    def ping(self) -> bool:
        """True if the server (or the registry's master) answers."""
        with _mapped("ping"):
            return bool(self.router.execute(REGISTRY_SLOT, "PING"))

    def close(self) -> None:
        """Close every connection (a later call opens new ones)."""
        self.router.close()

    reset = close


@contextlib.contextmanager
def _mapped(what: str) -> Iterator[None]:
    """Turn redis-py's transport errors raised inside the block into CyberDB's."""
    try:
        yield
    except redis.AuthenticationError as exc:
        raise AuthenticationError(f"{what}: Redis refused the credentials: {exc}") from exc
    except redis.TimeoutError as exc:
        raise TimeoutError(f"{what}: Redis timed out: {exc}") from exc
    except redis.ConnectionError as exc:
        raise ConnectionLostError(f"{what}: Redis connection lost: {exc}") from exc


class RedisBackendProxy(SyncExecutor):
    """The executor of tables kept in Redis: ``call`` runs one command's plan at once."""

    def __init__(self, client: RedisBackendClient) -> None:
        """Create an unconnected proxy of ``client``."""
        self._client = client
        self._router = client.router
        self._connected = False
        self._tables = client.known_tables  # name -> keys, from create/get/the registry (shared by the proxies)

    def __repr__(self) -> str:
        return f"<RedisBackendProxy {'CONNECTED' if self._connected else 'CLOSED'} {self._client!r}>"

    def connect(self) -> None:
        """Make the proxy usable (loads the function library the first time)."""
        self._client.ensure_library()
        self._connected = True

    def close(self) -> None:
        """Tables made by this proxy stop working until ``connect()`` (connections stay in the client's pools)."""
        self._connected = False

    def __enter__(self) -> RedisBackendProxy:
        self.connect()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # ---- the executor (see cyberdb.tables) ---------------------------------------------------------------------

    def call(self, spec: CommandSpec, args: list[Any], shape: Any = SPEC_REPLY) -> Any:
        """Run one command now and return its shaped result."""
        if not self._connected:
            raise DisconnectedError(_CLOSED)
        plan: Callable[..., Any] | None = run_at_path if spec.path else PLANS.get(spec.name)
        if spec.kind is None and spec.name in LOCK_PLANS:
            plan = LOCK_PLANS[spec.name]
        elif plan is None or spec.kind is None:
            _unsupported(f"{spec.name} (this command)")
        given = len(args) - (spec.kind is not None)  # a table command's first argument is the table
        if not spec.min_args <= given <= spec.max_args:
            raise TypeError(f"{spec.name} takes {spec.min_args}..{spec.max_args} arguments, got {given}")
        if spec.kind is None:  # a lock: no table, the slot of the lock's own name
            try:
                with _mapped(spec.name):
                    result = plan(self._router.execute, *args)
            except ResponseError as exc:
                raise ServerError(f"Redis: {exc}") from None
            if shape is SPEC_REPLY:
                shape = spec.reply
            return result if shape is None else shape(result)
        cached = type(args[0]) is str and args[0] in self._tables
        t = self._table(args[0], None if spec.path else spec.kind)  # a path may start in a table of either kind
        try:
            result = self._planned(plan, spec, t, args)
        except (TableNotFoundError, WrongTableTypeError):
            if not cached:
                raise
            # our cached keys may be stale (deleted and made again by another client, maybe with another tag):
            # ask the registry once; a table check fails before anything is written, so running again is safe
            fresh = self._table(args[0], None if spec.path else spec.kind)
            if fresh == t:
                raise
            result = self._planned(plan, spec, fresh, args)
        if shape is SPEC_REPLY:
            shape = spec.reply
        return result if shape is None else shape(result)

    def _planned(self, plan: Callable[..., Any], spec: CommandSpec, t: TableKeys, args: list[Any]) -> Any:
        try:
            with _mapped(spec.name):
                if spec.path:
                    return run_at_path(self, t, spec, args)
                return plan(self, t, *args[1:])
        except ResponseError as exc:
            raise self._error(exc, t) from None

    # the Runner of the plans
    def cmd(self, t: TableKeys, *args: Any) -> Any:
        """A native command in the slot of table ``t``."""
        return self._router.execute(t.slot, *args)

    def fcall(self, t: TableKeys, function: str, keys: list[bytes], *args: Any) -> Any:
        """A write function of the library, in the slot of table ``t``."""
        return self._router.execute(t.slot, "FCALL", function, len(keys), *keys, *args)

    def fcall_ro(self, t: TableKeys, function: str, keys: list[bytes], *args: Any) -> Any:
        """A read-only function of the library, in the slot of table ``t``."""
        return self._router.execute(t.slot, "FCALL_RO", function, len(keys), *keys, *args)

    def check_table(self, t: TableKeys) -> None:
        """Raise TableNotFoundError/WrongTableTypeError unless ``t`` exists with its kind (after a read missed)."""
        self.check_kind(t, self._router.execute(t.slot, "GET", t.m))

    def check_kind(self, t: TableKeys, kind: bytes | None) -> None:
        """Raise as ``check_table`` for ``kind``, the reply of ``GET m`` (None: the table is gone)."""
        if kind is None:
            self._tables.pop(t.name, None)
            raise TableNotFoundError(f"no table named {t.name!r}")
        if kind.decode() != t.kind:
            self._tables.pop(t.name, None)
            raise WrongTableTypeError(f"table {t.name!r} is a {_CLASS[kind.decode()]}, not a {_CLASS[t.kind]}")

    def _error(self, exc: ResponseError, t: TableKeys) -> Exception:
        message = str(exc)  # redis-py prefixes an error inside a pipeline (the ASK path) with its position
        words = message[message.find("CYBER "):].split() if "CYBER " in message else []
        if len(words) < 2 or words[1] not in _MESSAGES and words[1] not in ("TNF", "WTT"):
            if isinstance(exc, OutOfMemoryError):
                return MemoryLimitError(f"Redis refused the write: {message}")
            return ServerError(f"Redis: {message}")  # e.g. a busy script, a readonly replica
        code = words[1]
        if code == "TNF":
            self._tables.pop(t.name, None)
            return TableNotFoundError(f"no table named {t.name!r}")
        if code == "WTT":
            self._tables.pop(t.name, None)
            return WrongTableTypeError(f"table {t.name!r} is a {_CLASS.get(words[2], words[2])}, "
                                       f"not a {_CLASS[t.kind]}")
        cls, message = _MESSAGES[code]
        return cls(message)

    # ---- tables ------------------------------------------------------------------------------------------------

    def _table(self, name: Any, kind: str | None) -> TableKeys:
        """The keys of table ``name`` (looked up in the registry the first time), which must be of ``kind``."""
        t = self._tables.get(name) if type(name) is str else None
        if t is None:
            t = self._lookup(name)
        if kind is not None and t.kind != kind:
            raise WrongTableTypeError(f"table {name!r} is a {_CLASS[t.kind]}, not a {_CLASS[kind]}")
        return t

    def _lookup(self, name: Any) -> TableKeys:
        if not self._connected:
            raise DisconnectedError(_CLOSED)
        if type(name) is not str:
            raise TableNotFoundError(f"no table named {name!r}")
        with _mapped("table lookup"):
            raw = self._router.execute(REGISTRY_SLOT, "HGET", REGISTRY_KEYS[0], name)
        if raw is None:
            self._tables.pop(name, None)
            raise TableNotFoundError(f"no table named {name!r}")
        kind, tag = decode_value(raw)
        t = self._tables[name] = table_keys(name, kind, tag)
        return t

    def _registry(self, function: str, *args: Any) -> Any:
        with _mapped(function):
            return self._router.execute(REGISTRY_SLOT, "FCALL", function, len(REGISTRY_KEYS), *REGISTRY_KEYS, *args)

    def _create(self, name: Any, kind: str, content: Any, tag: str | None) -> TableKeys:
        if not self._connected:
            raise DisconnectedError(_CLOSED)
        if type(name) is not str or not 0 < len(name) <= MAX_NAME_LENGTH:
            raise TypeError(f"a table name must be a non-empty str of at most {MAX_NAME_LENGTH} characters")
        if tag is None:
            tag = name
        elif type(tag) is not str or not tag:
            raise TypeError("a tag must be a non-empty str")
        if kind == "dict":
            data: list[bytes] = []
            for key, value in content.items():
                c, kb = encode_key(key)
                data += (c, kb, encode_value(value))
        else:
            data = [element(item) for item in content]  # encoding errors before anything is written
        # the registry owns the name (so a duplicate fails before any data is touched), then the data is written
        if not self._registry("cy_registry_add", name, encode_value([kind, tag])):
            raise TableExistsError(f"a table named {name!r} already exists")
        t = table_keys(name, kind, tag)
        try:
            with _mapped("create"):
                self._router.execute(t.slot, "FCALL", "cy_table_create", len(t.all_keys), *t.all_keys, kind, *data)
        except BaseException:
            self._registry("cy_registry_del", name)
            raise
        self._tables[name] = t
        return t

    def create_cyberdict(self, table_name: str, content: Any = None, *, tag: str | None = None,
                         maxsize: int | None = None) -> CyberDict:
        """Create a CyberDict (optionally filled from a mapping) in the hash slot of ``tag`` (default: its name).

        Tables with the same ``tag`` live in the same slot (the same master of a cluster).

        Raises:
            TypeError: ``content`` is not a mapping, or a bad name or tag.
            TableExistsError: a table of that name exists.
            NotSupportedError: ``maxsize`` (bounded tables are not supported yet).
        """
        if maxsize is not None:
            _unsupported("maxsize (a bounded CyberDict)")
        self._create(table_name, "dict", {} if content is None else dict_content(content), tag)
        return CyberDict(self, table_name)

    def create_cyberlist(self, table_name: str, content: Any = None, *, tag: str | None = None,
                         maxlen: int | None = None) -> CyberList:
        """Create a CyberList (optionally filled from a list) in the hash slot of ``tag`` (default: its name).

        Raises:
            TypeError: ``content`` is not a list, or a bad name or tag.
            TableExistsError: a table of that name exists.
            NotSupportedError: ``maxlen`` (bounded lists are not supported yet).
        """
        if maxlen is not None:
            _unsupported("maxlen (a bounded CyberList)")
        self._create(table_name, "list", [] if content is None else list_content(content), tag)
        return CyberList(self, table_name)

    def _get(self, table_name: str, kind: str) -> None:
        t = self._lookup(table_name)  # always asks the registry: another client may have deleted it
        if t.kind != kind:
            raise WrongTableTypeError(f"table {table_name!r} is a {_CLASS[t.kind]}, not a {_CLASS[kind]}")

    def get_cyberdict(self, table_name: str) -> CyberDict:
        """Return the CyberDict ``table_name``.

        Raises:
            TableNotFoundError: no such table.
            WrongTableTypeError: the table is a CyberList.
        """
        self._get(table_name, "dict")
        return CyberDict(self, table_name)

    def get_cyberlist(self, table_name: str) -> CyberList:
        """Return the CyberList ``table_name``.

        Raises:
            TableNotFoundError: no such table.
            WrongTableTypeError: the table is a CyberDict.
        """
        self._get(table_name, "list")
        return CyberList(self, table_name)

    def tables(self) -> dict[str, str]:
        """``{table name: "CyberDict" | "CyberList"}`` in creation order."""
        if not self._connected:
            raise DisconnectedError(_CLOSED)
        with _mapped("tables"):
            flat = self._router.execute(REGISTRY_SLOT, "FCALL_RO", "cy_registry_list", len(REGISTRY_KEYS),
                                        *REGISTRY_KEYS)
        return {flat[i].decode("utf-8", "surrogatepass"): _CLASS[decode_value(flat[i + 1])[0]]
                for i in range(0, len(flat), 2)}

    def print_tables(self, file: TextIO | None = None) -> None:
        """Write one line per table, ``name<TAB>CyberDict|CyberList``, to stdout (or ``file``)."""
        out = sys.stdout if file is None else file
        for name, kind in self.tables().items():
            out.write(f"{name}\t{kind}\n")

    def delete_table(self, table_name: str) -> None:
        """Delete a table and its content (its data first, then its registry entry).

        Raises:
            TableNotFoundError: no such table.
        """
        t = self._lookup(table_name)
        with _mapped("delete"):
            self._router.execute(t.slot, "FCALL", "cy_table_drop", len(t.all_keys), *t.all_keys)
        self._tables.pop(table_name, None)
        if not self._registry("cy_registry_del", table_name):
            raise TableNotFoundError(f"no table named {table_name!r}")

    def node_of(self, table_name: str) -> tuple[str, int]:
        """The ``(host, port)`` of the master holding table ``table_name``."""
        return self._router.node_of(self._lookup(table_name).slot)

    def lock(self, name: str, ttl: float = 10, timeout: float | None = None) -> Lock:
        """A lock shared by every client of this Redis (or cluster): ``with proxy.lock("job", ttl=10) as lock:``.

        The same :class:`cyberdb.lock.Lock` as on the server, its commands run by library functions in the slot
        of ``name`` (see docs/redis-backend.md: tokens are unique while the lock's master keeps its data).

        Args:
            name: the lock's name (locks have their own namespace, apart from tables).
            ttl: the lease in seconds; the lock frees itself this long after the holder stops extending it.
            timeout: how long ``acquire`` (and ``with``) waits; None waits as long as it takes.
        """
        return Lock(self, name, ttl, timeout)  # type: ignore[arg-type]

    # ---- not supported yet ----------------------------------------------------------------------------------------

    def pipeline(self, atomic: bool = False) -> RedisPipeline:
        """Queue calls and send them together, grouped per node (see :mod:`.pipeline`).

        Raises:
            NotSupportedError: ``atomic=True`` (all-or-nothing batches are not supported yet).
            DisconnectedError: the proxy is closed.
        """
        if atomic:
            _unsupported("pipeline(atomic=True)")
        if not self._connected:
            raise DisconnectedError(_CLOSED)
        return RedisPipeline(self)

    def transact(self, fn: Callable[..., Any], retries: int = 10) -> NoReturn:
        """Not supported on the Redis backend yet."""
        _unsupported("transact()")

    def publish(self, channel: str, value: Any) -> NoReturn:
        """Not supported on the Redis backend yet."""
        _unsupported("publish()")

    def subscribe(self, *channels: str, timeout: float | None = None) -> NoReturn:
        """Not supported on the Redis backend yet."""
        _unsupported("subscribe()")


def connect(url: str, **options: Any) -> RedisBackendClient:
    """A client of the Redis server or cluster at ``url``, checked by loading the function library now.

    Raises:
        ConnectionLostError: Redis cannot be reached.
    """
    client = RedisBackendClient(url, **options)
    client.ensure_library()
    return client


def from_url(url: str, **options: Any) -> RedisBackendClient:
    """A client of ``url`` that connects at its first use."""
    return RedisBackendClient(url, **options)

