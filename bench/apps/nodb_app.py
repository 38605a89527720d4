"""The seed's Flask app with no database: the same JSON from a constant (bench/seed.py's `nodb` system).

Run by seed.py as `gunicorn -w 3 -k gevent -b 127.0.0.1:PORT nodb_app:app` from this directory.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello_world() -> dict[str, Any]:
    """Answer {"code": 1, "content": "Hello CyberDB!"}, as the seed's app.py does."""
    return {"code": 1, "content": "Hello CyberDB!"}
