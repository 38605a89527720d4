"""An asyncio web app using cyberdb.aio: the counter of app.py as a bare ASGI app (no framework needed).

    export CYBERDB_URL='cyberdb://:secret@127.0.0.1:9980/?max_connections=50'
    uvicorn asgi_app:app --host 127.0.0.1 --port 8000 --workers 4
    gunicorn -k asgi -w 4 asgi_app:app                      # Gunicorn 24+ has an asyncio worker of its own

    curl -X POST http://127.0.0.1:8000/hit/home   ->  {"name": "home", "value": 1, "pid": 4242}

Every call of cyberdb.aio is awaited, so a worker serves other requests while one waits on the database. With
FastAPI or Starlette the handler is the same three awaits (docs/deploy.md, "asyncio").
"""

from __future__ import annotations

import json
import os
from typing import Any

import cyberdb
import cyberdb.aio

TABLE = "counters"

# One client per worker process. from_url() opens no connection and binds to no event loop: the pool opens its
# connections in the loop that first uses it, i.e. in the worker (also when Gunicorn's --preload forked it).
client = cyberdb.aio.from_url(os.environ.get("CYBERDB_URL", "cyberdb://127.0.0.1:9980/"))


async def ensure_tables() -> None:
    """Create the table unless it exists (every worker runs this at startup; the first one wins)."""
    async with client.get_proxy() as proxy:
        try:
            await proxy.create_cyberdict(TABLE)
        except cyberdb.TableExistsError:
            pass


async def hit(name: str) -> dict[str, Any]:
    """Add 1 to counter ``name`` atomically on the server and return the new value."""
    async with client.get_proxy() as proxy:  # a pooled connection, returned at the end of the block
        counters = await proxy.get_cyberdict(TABLE)
        value = await counters.incr(name)
    return {"name": name, "value": value, "pid": os.getpid()}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The ASGI entry point: lifespan (startup, shutdown) and two routes."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await ensure_tables()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await client.close()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    method, path = scope["method"], scope["path"]
    if method == "GET" and path == "/healthz":
        status, body = 200, {"ok": await client.ping(), "pid": os.getpid()}
    elif method == "POST" and path.startswith("/hit/"):
        status, body = 200, await hit(path.removeprefix("/hit/"))
    else:
        status, body = 404, {"error": "not found"}
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
