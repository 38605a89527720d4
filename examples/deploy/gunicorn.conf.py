"""Gunicorn settings for app.py:  gunicorn -c gunicorn.conf.py app:app   (command-line flags override these).

gevent workers: Gunicorn's gevent worker monkey-patches the standard library in each worker *after* the fork, then
loads the app (or, with --preload, uses the copy the master loaded before patching). cyberdb needs nothing else:
its pool makes its sockets and locks in the worker, after patching. Do not call
gevent.monkey.patch_all() yourself in this file or in a --preload'ed app.py: that would patch the master.
"""

import os

bind = os.environ.get("BIND", "127.0.0.1:8000")
workers = int(os.environ.get("WEB_CONCURRENCY", "4"))  # about 2 x CPU cores for gevent; more for sync
worker_class = "gevent"
# Requests one gevent worker runs at once. Each one holding a CyberDB call needs a connection, so with
# ?max_connections=N in CYBERDB_URL the rest wait for a free one (up to 10 s, then PoolTimeoutError), and
# workers x N must stay below the server's --max-con (default 500).
worker_connections = 200
# A worker that does not check in for this long is killed: with sync workers that is one request running this
# long (keep it above your longest blocking pop), with gevent a worker whose loop is stuck.
timeout = 30
graceful_timeout = 30
keepalive = 5
preload_app = False  # True (--preload) works as well: the client is fork-safe, no post_fork hook is needed
