"""Routing of Redis commands: one server, or a cluster by its slot map (our own, from ``CLUSTER SLOTS``).

A :class:`Router` runs one command for a hash slot (``execute(slot, *args)``; slot None on a single server).
The cluster router keeps one ``redis.Redis`` (with its own thread-safe pool) per node, follows ``MOVED`` (the
slot map is refreshed) and ``ASK`` (``ASKING`` plus the command, once, on the node named), waits out
``TRYAGAIN``/``CLUSTERDOWN`` briefly, and loads the function library on a node that lacks it (a promoted
replica of an older Redis, a restarted node).  redis-py's ``RedisCluster`` is deliberately not used: it costs
a lot per call and its pipelines refuse scripts (docs/redis-backend.md).
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError
from redis.retry import Retry

from ..errors import ConnectionError, ServerError, TimeoutError

__all__ = ["LIBRARY", "ClusterRouter", "Router", "Sent", "SingleRouter", "parse_cluster_url"]

logger = logging.getLogger(__name__)
LIBRARY = resources.files(__package__).joinpath("library.lua").read_text(encoding="utf-8")
SLOTS = 16384
REDIRECTS = 8  # MOVED in a row for one command before giving up
UNAVAILABLE_FOR = 5.0  # seconds a command waits out TRYAGAIN/CLUSTERDOWN (a slot migrating, a failover)
_NO_FUNCTION = "function not found"
_ASKING = b"*1\r\n$6\r\nASKING\r\n"


def _run(node: Any, *args: Any) -> Any:
    """``node.execute_command(*args)`` (redis-py leaves it untyped)."""
    return node.execute_command(*args)


def _no_retries(options: dict[str, Any]) -> dict[str, Any]:
    """redis-py re-sends a command after a connection error by default (10 times in redis-py 8): a write whose
    reply was lost would run twice.  We re-send only reads (see ``_resend``), once."""
    return {"retry": Retry(NoBackoff(), 0), **options}


def _readonly(args: tuple[Any, ...]) -> bool:
    """Whether a command we send changes nothing (every write of the backend is an FCALL or FUNCTION)."""
    return args[0] not in ("FCALL", "FUNCTION")


def _missing_function(exc: ResponseError) -> bool:
    return _NO_FUNCTION in str(exc).lower()


@dataclass(frozen=True, slots=True)
class Sent:
    """Commands sent to one node by ``Router.send_many``, whose replies ``read_many`` reads."""

    pool: Any
    conn: Any
    asking: list[bool]


class Router:
    """Runs commands on the right Redis node."""

    def execute(self, slot: int | None, *args: Any) -> Any:  # pragma: no cover - each router has its own
        """Run one command for ``slot`` and return redis-py's reply."""
        raise NotImplementedError

    def load_library(self) -> None:  # pragma: no cover
        """``FUNCTION LOAD REPLACE`` the library on every master."""
        raise NotImplementedError

    def close(self) -> None:  # pragma: no cover
        """Close every connection."""
        raise NotImplementedError

    def node_of(self, slot: int | None) -> tuple[str, int]:  # pragma: no cover
        """The ``(host, port)`` of the master serving ``slot``."""
        raise NotImplementedError

    def _client(self, addr: tuple[str, int]) -> redis.Redis:  # pragma: no cover
        raise NotImplementedError

    def refresh(self) -> None:
        """Read the slot map again (nothing to read on one server)."""

    def send_many(self, addr: tuple[str, int], commands: list[tuple[tuple[Any, ...], bool]]) -> Sent:
        """Send ``commands`` (``(args, asking)``) to node ``addr`` as one plain pipeline (no MULTI); ``read_many``
        then reads each command's reply or its error (a ``ResponseError``: MOVED, ASK, TRYAGAIN, a library error).
        Sending to every node before reading from any lets the nodes work at the same time.

        ``asking``: ``ASKING`` goes right before that command, on the same connection (its reply is dropped).

        Raises:
            redis.ConnectionError, redis.TimeoutError: the node is unreachable (nothing, or part, was sent).
        """
        # what redis-py's Pipeline(transaction=False) does, minus its per-command cost (its generic packer is
        # most of a pipelined call's time): our commands are packed here, the replies read raw (no response
        # callbacks: the plans read HEXISTS/LLEN/... replies as ints), errors returned in place
        pool = self._client(addr).connection_pool
        conn: Any  # (redis-py's connections are untyped)
        try:
            conn = pool.get_connection()
        except TypeError:  # redis-py < 5.3 wants a command name
            conn = pool.get_connection("PIPELINE")  # type: ignore[call-arg,unused-ignore]
        try:
            encode = conn.encoder.encode
            chunks: list[bytes] = []
            for args, asking in commands:
                if asking:
                    chunks.append(_ASKING)
                parts = [b"*%d\r\n" % len(args)]
                for arg in args:
                    raw = arg if type(arg) is bytes else encode(arg)
                    parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
                chunks.append(b"".join(parts))
            conn.send_packed_command([b"".join(chunks)], check_health=False)
        except BaseException:
            conn.disconnect()
            pool.release(conn)
            raise
        return Sent(pool, conn, [asking for _args, asking in commands])

    def read_many(self, sent: Sent) -> list[Any]:
        """The replies of ``send_many``, in order (see there).

        Raises:
            redis.ConnectionError, redis.TimeoutError: the node's replies were lost (some commands may have run).
        """
        conn = sent.conn
        try:
            replies: list[Any] = []
            for asking in sent.asking:
                if asking:
                    try:
                        conn.read_response()
                    except ResponseError:
                        pass  # (then the command's own reply says what happened)
                try:
                    replies.append(conn.read_response())
                except ResponseError as exc:  # read whole: the connection stays in step
                    replies.append(exc)
            return replies
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse this connection
            raise
        finally:
            sent.pool.release(conn)

    def discard(self, sent: Sent) -> None:
        """Give up the replies of ``send_many`` (the connection is closed, never reused out of step)."""
        sent.conn.disconnect()
        sent.pool.release(sent.conn)

    def load_library_on(self, addr: tuple[str, int]) -> None:
        """Load (or replace) the function library on node ``addr``."""
        logger.info("loading the CyberDB function library on %s:%s", *addr)
        _run(self._client(addr), "FUNCTION", "LOAD", "REPLACE", LIBRARY)


class SingleRouter(Router):
    """One Redis server (``redis://`` or ``rediss://`` URL: host, port, password, db, TLS)."""

    def __init__(self, url: str, **options: Any) -> None:
        self._redis = redis.Redis.from_url(url, **_no_retries(options))
        kwargs = self._redis.connection_pool.connection_kwargs
        self._addr = (str(kwargs.get("host", "localhost")), int(kwargs.get("port", 6379)))

    def __repr__(self) -> str:
        return f"<SingleRouter {self._addr[0]}:{self._addr[1]}>"

    def execute(self, slot: int | None, *args: Any) -> Any:
        """Run one command (``slot`` is ignored); a read is sent again once if the connection broke."""
        try:
            return _run(self._redis, *args)
        except (redis.ConnectionError, redis.TimeoutError):
            if not _readonly(args):
                raise  # a write may have run: never sent twice
            return _run(self._redis, *args)
        except MovedError as exc:  # nothing ran: this server is one node of a cluster
            raise ConnectionError(f"{self._addr[0]}:{self._addr[1]} is a node of a Redis Cluster (MOVED {exc}): "
                                  f"connect with redis-cluster://{self._addr[0]}:{self._addr[1]}/") from None
        except ResponseError as exc:
            if not _missing_function(exc):
                raise
        logger.info("loading the CyberDB function library on %s:%s", *self._addr)
        self.load_library()
        return _run(self._redis, *args)

    def load_library(self) -> None:
        """Load (or replace) the function library."""
        _run(self._redis, "FUNCTION", "LOAD", "REPLACE", LIBRARY)

    def close(self) -> None:
        """Close the connection pool."""
        self._redis.close()

    def node_of(self, slot: int | None) -> tuple[str, int]:
        """The server's address."""
        return self._addr

    def _client(self, addr: tuple[str, int]) -> redis.Redis:
        return self._redis


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """The seed nodes and the ``redis.Redis`` options of ``redis-cluster://[[user]:password@]h1:p1,h2:p2/``.

    Query options: ``ssl`` (``1``/``0``: TLS to every node), ``socket_timeout`` (seconds).

    Raises:
        ValueError: not such a URL, or no node in it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("redis-cluster", "rediss-cluster"):
        raise ValueError(f"a Redis Cluster URL starts with redis-cluster://, not {url!r}")
    netloc, _, tail = rest.partition("/")
    path, _, query = tail.partition("?")
    options: dict[str, Any] = {}
    if "@" in netloc:
        credentials, netloc = netloc.rsplit("@", 1)
        user, colon, password = credentials.partition(":")
        if colon:
            options["password"] = urllib.parse.unquote(password)
            if user:
                options["username"] = urllib.parse.unquote(user)
        elif user:
            options["password"] = urllib.parse.unquote(user)
    if scheme == "rediss-cluster":
        options["ssl"] = True
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name == "ssl":
            options["ssl"] = value.lower() in ("1", "true", "yes", "on")
        elif name == "socket_timeout":
            options["socket_timeout"] = float(value)
        else:
            raise ValueError(f"unknown option {name!r} in the Redis Cluster URL (known: ssl, socket_timeout)")
    seeds: list[tuple[str, int]] = []
    for part in netloc.split(","):
        if part:
            host, colon, port = part.rpartition(":")
            if not colon or "]" in port:  # no port given
                host, port = part, "6379"
            seeds.append((host.strip("[]") or "127.0.0.1", int(port)))
    if not seeds:
        raise ValueError(f"no node in the Redis Cluster URL {url!r}")
    return seeds, options


class ClusterRouter(Router):
    """A Redis Cluster: commands go to the master of their slot; MOVED/ASK are followed."""

    def __init__(self, seeds: list[tuple[str, int]], **options: Any) -> None:
        self._seeds = list(seeds)
        self._options = options
        self._nodes: dict[tuple[str, int], redis.Redis] = {}
        self._lock = threading.Lock()
        self._owner: list[tuple[str, int] | None] = [None] * SLOTS

    def __repr__(self) -> str:
        return f"<ClusterRouter masters={len(self.masters())} nodes={len(self._nodes)}>"

    def _node(self, addr: tuple[str, int]) -> redis.Redis:
        node = self._nodes.get(addr)
        if node is None:
            with self._lock:  # two threads must not both make (and one leak) a node's pool
                node = self._nodes.get(addr)
                if node is None:
                    node = self._nodes[addr] = redis.Redis(host=addr[0], port=addr[1], **_no_retries(self._options))
        return node

    def _client(self, addr: tuple[str, int]) -> redis.Redis:
        return self._node(addr)

    def refresh(self) -> None:
        """Read the slot map from the first node that answers (known masters first, then the seeds).

        Raises:
            redis.ConnectionError: no node answered.
        """
        last: Exception | None = None
        for addr in [*self.masters(), *self._seeds]:
            try:
                reply = _run(self._node(addr), "CLUSTER", "SLOTS")
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                last = exc
                continue
            owner: list[tuple[str, int] | None] = [None] * SLOTS
            for entry in reply:
                start, end, master = int(entry[0]), int(entry[1]), entry[2]
                host = master[0].decode() if isinstance(master[0], bytes) else str(master[0])
                node = (host or addr[0], int(master[1]))
                owner[start:end + 1] = [node] * (end - start + 1)
            self._owner = owner
            return
        raise redis.ConnectionError(f"no node of the Redis Cluster answered: {last}")

    def masters(self) -> list[tuple[str, int]]:
        """The masters of the current slot map."""
        return sorted({addr for addr in self._owner if addr is not None})

    def node_of(self, slot: int | None) -> tuple[str, int]:
        """The master serving ``slot`` in the current slot map."""
        if slot is None:
            raise ValueError("a cluster command needs a slot")
        addr = self._owner[slot]
        if addr is None:
            self.refresh()
            addr = self._owner[slot]
            if addr is None:
                raise ClusterDownError(f"slot {slot} is not served by any master")
        return addr

    def execute(self, slot: int | None, *args: Any) -> Any:
        """Run one command on the master of ``slot``, following redirections.

        Raises:
            TimeoutError: the slot stayed unavailable (``TRYAGAIN`` while it migrates, ``CLUSTERDOWN``) for
                ``UNAVAILABLE_FOR`` seconds; the command was not applied.
            ServerError: more than ``REDIRECTS`` ``MOVED`` in a row (the cluster keeps changing its mind).
        """
        addr = self.node_of(slot)
        asking = False
        moved = tries = 0
        resent = False
        deadline: float | None = None
        while True:
            node = self._node(addr)
            try:
                if asking:  # ASKING must come on the same connection, right before the command
                    pipe = node.pipeline(transaction=False)
                    _run(pipe, "ASKING")
                    _run(pipe, *args)
                    return pipe.execute(raise_on_error=True)[1]
                return _run(node, *args)
            except MovedError as exc:
                moved += 1
                if moved > REDIRECTS:
                    raise ServerError(f"slot {slot}: still MOVED after {REDIRECTS} redirections") from exc
                logger.debug("slot %s: MOVED to %s:%s", slot, exc.host, exc.port)
                self._owner[exc.slot_id] = (exc.host, int(exc.port))
                self.refresh()
                addr, asking = (exc.host, int(exc.port)), False
            except AskError as exc:  # the slot is migrating and this key has moved already: once, there
                logger.debug("slot %s: ASK %s:%s", slot, exc.host, exc.port)
                addr, asking = (exc.host, int(exc.port)), True
            except (TryAgainError, ClusterDownError) as exc:
                # a multi-key function while its slot migrates (some of its keys are not there yet), or a
                # failover in progress: not applied; wait a little and ask the slot's owner again
                logger.debug("slot %s: %s", slot, type(exc).__name__)
                now = time.monotonic()
                deadline = deadline if deadline is not None else now + UNAVAILABLE_FOR
                if now >= deadline:
                    raise TimeoutError(f"slot {slot} unavailable for {UNAVAILABLE_FOR:g} s: {exc}") from exc
                time.sleep(min(0.1, 0.002 * 2 ** tries))
                tries, moved = tries + 1, 0
                if isinstance(exc, ClusterDownError):
                    self.refresh()
                addr, asking = self.node_of(slot), False
            except (redis.ConnectionError, redis.TimeoutError):
                # a node down (a failover may be under way): the next command reads the slot map again; a read
                # is sent again once, now, a write never (it may have run)
                self._refresh_quietly()
                if not _readonly(args) or resent:
                    raise
                resent = True
                addr, asking = self.node_of(slot), False
            except ResponseError as exc:
                if not _missing_function(exc):
                    raise
                logger.info("loading the CyberDB function library on %s:%s", *addr)
                _run(node, "FUNCTION", "LOAD", "REPLACE", LIBRARY)

    def _refresh_quietly(self) -> None:
        try:
            self.refresh()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            logger.warning("Redis Cluster slot map not refreshed: %s", exc)

    def load_library(self) -> None:
        """Read the slot map and load the library on every master."""
        self.refresh()
        for addr in self.masters():
            _run(self._node(addr), "FUNCTION", "LOAD", "REPLACE", LIBRARY)

    def close(self) -> None:
        """Close every node's pool."""
        nodes, self._nodes = self._nodes, {}
        for node in nodes.values():
            node.close()
