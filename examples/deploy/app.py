"""A Flask app for Gunicorn and uWSGI: a counter in a CyberDict, one module-level client per process.

    export CYBERDB_URL='cyberdb://:secret@127.0.0.1:9980/?max_connections=50'
    gunicorn -c gunicorn.conf.py app:app              # gevent workers (see gunicorn.conf.py)
    gunicorn -k gthread --threads 8 -w 4 --preload app:app
    uwsgi --ini uwsgi.ini

    curl -X POST http://127.0.0.1:8000/hit/home   ->  {"name":"home","pid":4242,"value":1}

The same file works with and without --preload (Gunicorn) and --lazy-apps (uWSGI): the client is fork-safe. A
worker forked from a master that already used the client never touches the master's sockets; its pool notices the
new process and opens its own connections, and it numbers its requests under an identity of its own.
docs/deploy.md explains every command line and what to watch out for.
"""

from __future__ import annotations

import os

from flask import Flask

import cyberdb

TABLE = "counters"

# One client (one connection pool) per process, made at import. from_url() opens no connection yet, so the app can
# be imported while the database is down; max_connections in the URL bounds this process's connections.
client = cyberdb.from_url(os.environ.get("CYBERDB_URL", "cyberdb://127.0.0.1:9980/"))


def ensure_tables() -> None:
    """Create the table unless it exists (every worker runs this when it loads the app; the first one wins)."""
    with client.get_proxy() as proxy:
        try:
            proxy.create_cyberdict(TABLE)
        except cyberdb.TableExistsError:
            pass


# At import: under --preload (or uWSGI without --lazy-apps) this runs once, in the master, and leaves an idle
# connection in the pool that every forked worker inherits, and must not use. It does not.
ensure_tables()

app = Flask(__name__)


@app.get("/healthz")
def healthz() -> dict[str, object]:
    """Readiness: the database answers."""
    return {"ok": client.ping(), "pid": os.getpid()}


@app.post("/hit/<name>")
def hit(name: str) -> dict[str, object]:
    """Add 1 to counter ``name`` atomically on the server and return the new value."""
    with client.get_proxy() as proxy:  # a pooled connection for this request, returned at the end of the block
        value = proxy.get_cyberdict(TABLE).incr(name)
    return {"name": name, "value": value, "pid": os.getpid()}


@app.post("/push/<name>")
def push(name: str) -> dict[str, object]:
    """Append a job to list ``name``."""
    with client.get_proxy() as proxy:
        jobs = _list(proxy, name)
        jobs.append({"pid": os.getpid()})
    return {"name": name, "pid": os.getpid()}


@app.post("/wait/<name>")
def wait(name: str) -> dict[str, object]:
    """Wait up to 10 s on the server for a job in list ``name`` (a blocking pop: the worker must stay responsive)."""
    with client.get_proxy() as proxy:
        try:
            job = _list(proxy, name).pop(0, timeout=10)
        except IndexError:
            job = None
    return {"name": name, "job": job, "pid": os.getpid()}


def _list(proxy: cyberdb.Proxy, name: str) -> cyberdb.CyberList:
    try:
        return proxy.create_cyberlist(name)
    except cyberdb.TableExistsError:
        return proxy.get_cyberlist(name)
