"""Celery tasks that use a module-level CyberDB client, run by prefork workers.

    export CYBERDB_URL='cyberdb://:secret@127.0.0.1:9980/'
    export CELERY_BROKER_URL='redis://127.0.0.1:6379/0'       # or amqp://..., or any kombu transport
    export CELERY_RESULT_BACKEND='redis://127.0.0.1:6379/1'   # only if you want results back
    celery -A tasks worker --pool prefork --concurrency 4 --loglevel INFO

    >>> from tasks import hit
    >>> hit.delay("home").get(timeout=10)
    {'value': 1, 'pid': 4242}

The worker's main process imports this module (so `client` is made there) and runs `worker_init` below, which
uses the client; then it forks its pool processes. Each child gets its own connections on first use: the client is
fork-safe, no `worker_process_init` hook is needed. Other settings come from the module named by
CELERY_CONFIG_MODULE, if set (Celery's own convention; the tests use it for a broker that needs no server).
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_init

import cyberdb

TABLE = "counters"

# Celery reads CELERY_BROKER_URL and CELERY_RESULT_BACKEND from the environment itself.
app = Celery("tasks")
app.config_from_envvar("CELERY_CONFIG_MODULE", silent=True)

# One client per process; from_url() opens no connection, so importing this module to call .delay() needs no
# database.
client = cyberdb.from_url(os.environ.get("CYBERDB_URL", "cyberdb://127.0.0.1:9980/"))


@worker_init.connect
def ensure_tables(**_: Any) -> None:
    """In the worker's main process, before it forks its pool: create the table unless it exists."""
    with client.get_proxy() as proxy:
        try:
            proxy.create_cyberdict(TABLE)
        except cyberdb.TableExistsError:
            pass


@app.task
def hit(name: str) -> dict[str, Any]:
    """Add 1 to counter ``name`` atomically; return the new value and the pid of the process that ran it."""
    with client.get_proxy() as proxy:
        value = proxy.get_cyberdict(TABLE).incr(name)
    return {"value": value, "pid": os.getpid()}
