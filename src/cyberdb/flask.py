"""The Flask extension: ``from cyberdb.flask import CyberDB``; one client per app and process, one proxy per context.

::

    db = CyberDB()                      # or CyberDB(app)
    db.init_app(app)                    # reads CYBERDB_URL and CYBERDB_OPTIONS from app.config

    @app.get("/")
    def index():
        return {"content": db.get_cyberdict("centre")["content"]}

Configuration (``app.config``; read and checked once, by ``init_app``):

- ``CYBERDB_URL``: the server, ``cyberdb://[:password@]host[:port]/?encrypt=1&time_out=900...`` (``cyberdbs://``
  for TLS; see :mod:`cyberdb.url`).  Default: the ``url`` given to ``CyberDB(...)``, else ``DEFAULT_URL``.
- ``CYBERDB_OPTIONS``: a dict of extra keyword arguments of :class:`cyberdb.Client` (``password``, ``encrypt``,
  ``time_out``, ``max_connections``, ``socket_timeout``, ``retry``, ``table_check_ttl``, ``tls``, ``tls_ca``,
  ``tls_cert``, ``tls_key``, ``tls_server_name``, also ``host``/``port``), overriding the URL's.  They are merged
  over the keyword arguments given to ``CyberDB(...)``.  Default: ``{}``.

The app's client is made on first use (not at import or ``init_app``), kept in ``app.extensions["cyberdb"]``,
and shared by every request of the process.  A Gunicorn worker forked after the master used it (``--preload``)
inherits the object, and the client itself gives the child its own identity and pool without touching the
parent's sockets (see README "Client"), so no ``post_fork`` hook is needed.

The first use of ``db.proxy`` (or ``db.get_cyberdict`` / ``db.get_cyberlist``) in an app context takes one
connection from the pool and keeps it on ``flask.g``; ``teardown_appcontext`` gives it back, also when the view
raised.  Outside a request push an app context (``with app.app_context():``), as Flask CLI commands do.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Mapping
from typing import Any

from flask import Flask, current_app, g

from .client import Client, Proxy
from .tables import CyberDict, CyberList
from .url import DEFAULT_URL, parse_url

__all__ = ["DEFAULT_URL", "CyberDB", "CyberDBState"]

logger = logging.getLogger(__name__)
_G_PROXY = "_cyberdb_proxy"
_CLIENT_ARGS = frozenset(inspect.signature(Client).parameters)


class CyberDBState:
    """What ``init_app`` keeps in ``app.extensions["cyberdb"]``: the checked settings and the app's client."""

    def __init__(self, settings: dict[str, Any]) -> None:
        """Keep ``settings`` (keyword arguments of :class:`cyberdb.Client`); the client is made on first use."""
        self._settings = settings
        self._client: Client | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:  # never the password
        host, port = self._settings.get("host"), self._settings.get("port")
        return f"<CyberDBState {host}:{port} client={'made' if self._client else 'not yet made'}>"

    @property
    def client(self) -> Client:
        """The app's client, made on first use (a forked worker keeps the object; the client handles the fork)."""
        client = self._client
        if client is None:
            with self._lock:
                client = self._client
                if client is None:
                    client = self._client = Client(**self._settings)
                    logger.debug("made the CyberDB client for %s:%s", client.host, client.port)
        return client


class CyberDB:
    """The Flask extension: ``CyberDB(app)`` or ``db = CyberDB(); db.init_app(app)``."""

    def __init__(self, app: Flask | None = None, *, url: str | None = None, **client_options: Any) -> None:
        """Create the extension (and ``init_app(app)`` if an app is given).

        Args:
            url: the default for ``CYBERDB_URL``.
            **client_options: defaults for ``CYBERDB_OPTIONS`` (keyword arguments of :class:`cyberdb.Client`).
        """
        self._url = url
        self._options = client_options
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Read and check ``CYBERDB_URL`` / ``CYBERDB_OPTIONS``, and return each context's proxy at teardown.

        Raises:
            ValueError: a malformed ``CYBERDB_URL``.
            TypeError: ``CYBERDB_OPTIONS`` is not a dict, or names something ``cyberdb.Client`` does not take.
            RuntimeError: a CyberDB extension is already registered on ``app``.
        """
        if "cyberdb" in app.extensions:
            raise RuntimeError("a CyberDB extension is already registered on this app")
        url = app.config.setdefault("CYBERDB_URL", self._url or DEFAULT_URL)
        options = app.config.setdefault("CYBERDB_OPTIONS", {})
        if not isinstance(options, Mapping):
            raise TypeError(f"CYBERDB_OPTIONS must be a dict of cyberdb.Client arguments, not {type(options).__name__}")
        settings = parse_url(url)
        settings.update(self._options)
        settings.update(options)
        unknown = sorted(set(settings) - _CLIENT_ARGS)
        if unknown:
            raise TypeError(f"unknown CyberDB client option(s) {', '.join(map(repr, unknown))} "
                            f"(known: {', '.join(sorted(_CLIENT_ARGS))})")
        app.extensions["cyberdb"] = CyberDBState(settings)
        app.teardown_appcontext(_teardown)

    # ---- per app, per context -----------------------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The current app's client (one per app and process, made on first use)."""
        return _state(current_app).client

    @property
    def proxy(self) -> Proxy:
        """This app context's proxy, connected on first use and returned to the pool at teardown."""
        proxy: Proxy | None = g.get(_G_PROXY)
        if proxy is None:
            proxy = self.client.get_proxy()
            proxy.connect()  # may wait out a server restart (Retry); nothing to return if it raises
            setattr(g, _G_PROXY, proxy)
        return proxy

    def get_cyberdict(self, table_name: str) -> CyberDict:
        """The CyberDict ``table_name``, on this context's proxy."""
        return self.proxy.get_cyberdict(table_name)

    def get_cyberlist(self, table_name: str) -> CyberList:
        """The CyberList ``table_name``, on this context's proxy."""
        return self.proxy.get_cyberlist(table_name)


def _state(app: Flask) -> CyberDBState:
    try:
        return app.extensions["cyberdb"]  # type: ignore[no-any-return]
    except KeyError:
        raise RuntimeError("CyberDB is not initialized on this app: call CyberDB(app) or db.init_app(app)") from None


def _teardown(exc: BaseException | None) -> None:
    """Give this context's connection back to the pool (the view may have raised: ``exc``)."""
    proxy: Proxy | None = g.pop(_G_PROXY, None)
    if proxy is not None:
        proxy.close()
