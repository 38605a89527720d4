"""The seed's Flask app reading its content from redis-server (bench/seed.py's `redis` system).

`HGET centre content` per request through a module-level redis-py client (hiredis parser when installed);
under Gunicorn's gevent worker the module is imported after the monkey-patching, so the client's sockets
are gevent's. seed.py fills the hash and passes the port in BENCH_REDIS_PORT.
"""

from __future__ import annotations

import os
from typing import Any

import redis
from flask import Flask

client = redis.Redis(host="127.0.0.1", port=int(os.environ["BENCH_REDIS_PORT"]), decode_responses=True)

app = Flask(__name__)


@app.get("/")
def hello_world() -> dict[str, Any]:
    """Answer {"code": 1, "content": <HGET centre content>}, as the seed's app.py does with CyberDB."""
    return {"code": 1, "content": client.hget("centre", "content")}
