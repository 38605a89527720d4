"""The Redis backend: CyberDict and CyberList kept in Redis or Redis Cluster (issue 11, preview).

``cyberdb.connect("redis://localhost:6379/0")`` or ``cyberdb.connect("redis-cluster://h1:7000,h2:7001/")``
returns a :class:`RedisBackendClient`; ``client.get_proxy()`` gives the executor whose tables are the usual
``CyberDict``/``CyberList``.  Layout, exactness and what is not supported yet: docs/redis-backend.md.
Importing this package needs redis-py (``pip install "redis>=5"``).
"""

from __future__ import annotations

from .client import SCHEMES, NotSupportedError, RedisBackendClient, RedisBackendProxy, connect, from_url

__all__ = ["SCHEMES", "NotSupportedError", "RedisBackendClient", "RedisBackendProxy", "connect", "from_url"]
