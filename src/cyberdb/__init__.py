"""CyberDB: a Pythonic in-memory database of dict and list tables, shared between processes and hosts.

Server side::

    db = cyberdb.Server()
    db.start(host="127.0.0.1", port=9980, password="secret")      # or db.run(...) in the foreground

Client side::

    client = cyberdb.connect(host="127.0.0.1", port=9980, password="secret")
    with client.get_proxy() as proxy:
        proxy.create_cyberdict("centre")
        centre = proxy.get_cyberdict("centre")
        centre["content"] = "Hello CyberDB!"
"""

from __future__ import annotations

from .client import Client, Connection, ConnectionPool, Proxy, connect
from .errors import (
    AuthenticationError,
    ConcurrentModificationError,
    ConnectionError,
    ConnectionLostError,
    CyberDBError,
    DisconnectedError,
    EncryptionMismatchError,
    PersistenceError,
    PoolTimeoutError,
    ProtocolError,
    ServerError,
    TableError,
    TableExistsError,
    TableNotFoundError,
    TimeoutError,
    WrongTableTypeError,
)
from .retry import Retry
from .server import Server
from .tables import CyberDict, CyberList

__version__ = "1.0.0.dev0"

__all__ = [
    "AuthenticationError",
    "Client",
    "ConcurrentModificationError",
    "Connection",
    "ConnectionError",
    "ConnectionLostError",
    "ConnectionPool",
    "CyberDBError",
    "CyberDict",
    "CyberList",
    "DisconnectedError",
    "EncryptionMismatchError",
    "PersistenceError",
    "PoolTimeoutError",
    "ProtocolError",
    "Proxy",
    "Retry",
    "Server",
    "ServerError",
    "TableError",
    "TableExistsError",
    "TableNotFoundError",
    "TimeoutError",
    "WrongTableTypeError",
    "__version__",
    "connect",
]
