"""CyberDBCache: a ``cachelib`` cache in a CyberDict table, for Flask-Caching, Flask-Session and plain cachelib use.

Values are stored as they are, with CyberDB's codec (see README "Values"), never pickled: a value the codec cannot
store raises ``TypeError`` naming its type and the cache key, before anything is sent.  Timeouts follow cachelib:
``None`` means ``default_timeout``, ``0`` never expires, a positive number of seconds becomes the key's ``ttl``
(``d.set(key, value, ttl=...)``), and a negative one stores nothing (the entry would be expired at once).

Atomicity: every method is one atomic server command or one atomic batch, except ``add`` (an optimistic
transaction: "absent?" then "set with ttl", committed only if the key is still absent, so a key never exists
without its expiry) and ``clear`` with a key prefix (a snapshot of the keys, then one atomic batch deleting the
ones with the prefix, as Redis ``KEYS`` + ``DEL``).  ``inc``/``dec`` are ``d.incr``: atomic, a missing key counts
as 0, and an existing expiry is kept (a key they create has none), as Redis ``INCRBY``.

The table is created on first use if missing (with ``maxsize``, if given); a table deleted later is created
again by the next call.  Transport errors (``cyberdb.CyberDBError``) propagate, as cachelib's RedisCache lets
redis-py's do.  No I/O happens at construction: the client is lazy (``cyberdb.from_url``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from cachelib import BaseCache

from .client import Client, Proxy, from_url
from .codec import encode_value
from .errors import BatchAbortedError, TableExistsError, TableNotFoundError
from .tables import CyberDict
from .transaction import Transaction
from .url import DEFAULT_URL

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["DEFAULT_TABLE", "DEFAULT_URL", "CyberDBCache", "factory"]

logger = logging.getLogger(__name__)
T = TypeVar("T")
DEFAULT_TABLE = "cache"
Timeout = int | timedelta | None


class CyberDBCache(BaseCache):
    """A cachelib cache whose entries live in one CyberDict of a CyberDB server, shared by every process."""

    def __init__(self, url: str | None = None, *, client: Client | None = None, table: str = DEFAULT_TABLE,
                 key_prefix: str | Callable[[], str] = "", default_timeout: int | timedelta = 300,
                 ignore_delete_many_errors: bool = True, maxsize: int | None = None,
                 **client_options: Any) -> None:
        """Create the cache; no connection is made until the first call.

        Args:
            url: the server, ``cyberdb://[:password@]host[:port]/?encrypt=1...`` (default ``DEFAULT_URL``).
            client: an existing :class:`cyberdb.Client` to share (its pool), instead of ``url``/options.
            table: the CyberDict holding the entries (created on first use if missing).
            key_prefix: prepended to every key (a str, or a callable returning one, as in cachelib).
            default_timeout: seconds (or a timedelta) for ``timeout=None``; 0 = never expire.
            ignore_delete_many_errors: cachelib's flag; ``delete_many`` cannot fail per key here.
            maxsize: if the table is created here, bound it (least recently used keys are evicted).
            **client_options: keyword arguments of :class:`cyberdb.Client` (``password``, ``encrypt``, ...),
                overriding the URL's.

        Raises:
            ValueError: a malformed URL, or ``client`` together with ``url`` or client options.
        """
        super().__init__(default_timeout, ignore_delete_many_errors)
        if client is not None and (url is not None or client_options):
            raise ValueError("pass either client= or a url and client options, not both")
        if not isinstance(table, str) or not table:
            raise ValueError("table must be a non-empty str")
        self.client = client if client is not None else from_url(url or DEFAULT_URL, **client_options)
        self.table = table
        self.key_prefix = key_prefix
        self.maxsize = maxsize

    def __repr__(self) -> str:
        return f"<CyberDBCache table={self.table!r} {self.client.host}:{self.client.port}>"

    @classmethod
    def factory(cls, app: Flask, config: Mapping[str, Any], args: list[Any], kwargs: dict[str, Any]) -> CyberDBCache:
        """Flask-Caching's backend constructor: ``CACHE_TYPE = "cyberdb.cache.factory"`` calls this.

        Reads ``CACHE_CYBERDB_URL`` (else ``CYBERDB_URL``, else ``DEFAULT_URL``), ``CACHE_CYBERDB_TABLE``
        (``DEFAULT_TABLE``), ``CACHE_CYBERDB_MAXSIZE`` (None) and Flask-Caching's ``CACHE_KEY_PREFIX``; ``kwargs``
        holds ``CACHE_DEFAULT_TIMEOUT``, ``CACHE_IGNORE_ERRORS`` and ``CACHE_OPTIONS`` (extra ``cyberdb.Client``
        keyword arguments).  Without ``CACHE_CYBERDB_URL`` and client options, an app that uses the
        ``cyberdb.flask.CyberDB`` extension shares that extension's client (one pool per process).
        """
        options = dict(kwargs)
        own: dict[str, Any] = {
            name: options.pop(name) for name in ("default_timeout", "ignore_delete_many_errors") if name in options}
        own["table"] = config.get("CACHE_CYBERDB_TABLE", DEFAULT_TABLE)
        own["maxsize"] = config.get("CACHE_CYBERDB_MAXSIZE")
        prefix = config.get("CACHE_KEY_PREFIX")
        if prefix:
            own["key_prefix"] = prefix
        url = config.get("CACHE_CYBERDB_URL")
        state = app.extensions.get("cyberdb")
        if url is None and not options and state is not None:
            return cls(*args, client=state.client, **own)
        own["url"] = url or config.get("CYBERDB_URL") or DEFAULT_URL
        own.update(options)  # CACHE_OPTIONS: cyberdb.Client arguments
        return cls(*args, **own)

    # ---- cachelib's API -----------------------------------------------------------------------------------------

    def get(self, key: str) -> Any:
        """The value at ``key``, or None if absent or expired."""
        k = self._key(key)
        return self._call(lambda proxy: self._table(proxy).get(k))

    def has(self, key: str) -> bool:
        """True if ``key`` is in the cache (and not expired)."""
        k = self._key(key)
        return self._call(lambda proxy: k in self._table(proxy))

    def set(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        """Store ``value`` at ``key`` (replacing any value and expiry); True.

        Raises:
            TypeError: CyberDB cannot store ``value`` (nothing is sent).
        """
        k, ttl = self._key(key), self._ttl(timeout)

        def op(proxy: Proxy) -> None:
            table = self._table(proxy)
            if ttl is None:
                table.set(k, value)
            elif ttl > 0:
                table.set(k, value, ttl=ttl)
            else:
                table.pop(k, None)

        self._storing(key, value, lambda: self._call(op))
        return True

    def add(self, key: str, value: Any, timeout: Timeout = None) -> bool:
        """Store ``value`` at ``key`` only if the key is absent, with its expiry in the same atomic step.

        Returns:
            True if stored, False if ``key`` was there.

        Raises:
            TypeError: CyberDB cannot store ``value``.
        """
        k, ttl = self._key(key), self._ttl(timeout)

        def fn(tx: Transaction) -> bool:
            table = tx.get_cyberdict(self.table)
            if k in table:
                return False
            if ttl is None:
                table.set(k, value)
            elif ttl > 0:
                table.set(k, value, ttl=ttl)
            return True

        return self._storing(key, value, lambda: self._call(lambda proxy: proxy.transact(fn)))

    def delete(self, key: str) -> bool:
        """Remove ``key``; True if it was there."""
        k = self._key(key)

        def op(proxy: Proxy) -> bool:
            try:
                del self._table(proxy)[k]
            except KeyError:
                return False
            return True

        return self._call(op)

    def get_many(self, *keys: str) -> list[Any]:
        """The values at ``keys`` (None where absent), in one round trip."""
        names = [self._key(key) for key in keys]

        def op(proxy: Proxy) -> list[Any]:
            with proxy.pipeline() as pipe:
                table = pipe.get_cyberdict(self.table)
                pending = [table.get(k) for k in names]
            return [p.result() for p in pending]

        return self._call(op) if names else []

    def set_many(self, mapping: Mapping[str, Any], timeout: Timeout = None) -> list[Any]:
        """Store every item of ``mapping`` with one expiry, all or nothing, in one round trip; return the keys.

        Raises:
            TypeError: CyberDB cannot store one of the values (nothing is stored).
        """
        items = [(key, self._key(key), value) for key, value in mapping.items()]
        ttl = self._ttl(timeout)

        def op(proxy: Proxy) -> None:
            with proxy.pipeline(atomic=True) as pipe:
                table = pipe.get_cyberdict(self.table)
                for key, k, value in items:
                    if ttl is not None and ttl <= 0:
                        table.pop(k, None)
                    else:
                        self._storing(key, value, lambda: table.set(k, value, ttl=ttl))  # noqa: B023 - called now

        if items:
            self._call(op)
        return [key for key, _k, _v in items]

    def delete_many(self, *keys: str) -> list[Any]:
        """Remove ``keys`` in one atomic batch; return them all (absent keys count as deleted, as in cachelib)."""
        names = [self._key(key) for key in keys]

        def op(proxy: Proxy) -> None:
            with proxy.pipeline(atomic=True) as pipe:
                table = pipe.get_cyberdict(self.table)
                for k in names:
                    table.pop(k, None)

        if names:
            self._call(op)
        return list(keys)

    def clear(self) -> bool:
        """Remove every entry of this cache: the whole table without a key prefix, else the prefixed keys."""
        prefix = self._prefix()

        def op(proxy: Proxy) -> None:
            table = self._table(proxy)
            if not prefix:
                table.clear()
                return
            doomed = [k for k in table.keys() if isinstance(k, str) and k.startswith(prefix)]
            if doomed:
                with proxy.pipeline(atomic=True) as pipe:
                    batch = pipe.get_cyberdict(self.table)
                    for k in doomed:
                        batch.pop(k, None)

        self._call(op)
        return True

    def inc(self, key: str, delta: int = 1) -> int | None:
        """Add ``delta`` to the number at ``key`` atomically (a missing key counts as 0); the new value.

        Raises:
            TypeError: the value at ``key`` is not a number.
        """
        k = self._key(key)
        return self._call(lambda proxy: self._table(proxy).incr(k, delta))  # type: ignore[no-any-return]

    def dec(self, key: str, delta: int = 1) -> int | None:
        """Subtract ``delta`` from the number at ``key`` atomically (see ``inc``); the new value."""
        return self.inc(key, -delta)

    # ---- internals ----------------------------------------------------------------------------------------------

    def _prefix(self) -> str:
        prefix = self.key_prefix
        return prefix if isinstance(prefix, str) else prefix()

    def _key(self, key: str) -> str:
        return f"{self._prefix()}{key}"

    def _ttl(self, timeout: Timeout) -> int | None:
        """cachelib's timeout as a ttl: None = never expires, <= 0 (only negative here) = already expired."""
        seconds = self._normalize_timeout(timeout)
        return None if seconds == 0 else seconds

    def _table(self, proxy: Proxy) -> CyberDict:
        # no existence check (that is a round trip): a missing table fails the call itself, see _call
        return CyberDict(proxy, self.table)

    def _call(self, op: Callable[[Proxy], T]) -> T:
        """Run ``op`` on a pooled connection; if the table is missing, create it and run ``op`` once more."""
        with self.client.get_proxy() as proxy:
            try:
                return op(proxy)
            except (TableNotFoundError, BatchAbortedError) as exc:
                if not isinstance(exc, TableNotFoundError) and not isinstance(exc.error, TableNotFoundError):
                    raise
            try:
                proxy.create_cyberdict(self.table, maxsize=self.maxsize)
                logger.info("created the cache table %r", self.table)
            except TableExistsError:
                pass  # another process made it meanwhile
            return op(proxy)

    @staticmethod
    def _storing(key: str, value: Any, store: Callable[[], T]) -> T:
        """Run ``store``; a TypeError caused by ``value`` gets a message naming the key and the rule."""
        try:
            return store()
        except TypeError:
            try:
                encode_value(value)
            except TypeError as bad:
                raise TypeError(f"{bad} (cache key {key!r}): a CyberDB cache stores plain data (README "
                                f"'Values'), never pickles; cache the data and build Response objects from it"
                                ) from None
            raise


factory = CyberDBCache.factory  # the name Flask-Caching imports: CACHE_TYPE = "cyberdb.cache.factory"
