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

import logging as _logging

from . import aio  # cyberdb.aio.connect(...) after a plain `import cyberdb` (asyncio is stdlib)
from .client import Client, Connection, ConnectionPool, Proxy, connect, from_url
from .errors import (
    AuthenticationError,
    BatchAbortedError,
    ConcurrentModificationError,
    ConnectionError,
    ConnectionLostError,
    CyberDBError,
    DisconnectedError,
    EncryptionMismatchError,
    LockLostError,
    LockTimeoutError,
    MemoryLimitError,
    PersistenceError,
    PoolTimeoutError,
    ProtocolError,
    ServerError,
    TableError,
    TableExistsError,
    TableNotFoundError,
    TimeoutError,
    TransactionConflictError,
    WrongTableTypeError,
)
from .executor import Executor
from .lock import Lock
from .pipeline import Pending, Pipeline
from .pubsub import Subscription
from .retry import Retry
from .server import Server
from .tables import CyberDict, CyberList, CyberRef
from .transaction import Transaction

__version__ = "1.0.0.dev0"

# a library prints nothing unless the application configures logging (or print_log=True): without a handler,
# Python's last-resort handler would write every WARNING to stderr (a password-guessing peer flooded it)
_logging.getLogger("cyberdb").addHandler(_logging.NullHandler())

__all__ = [
    "AuthenticationError",
    "BatchAbortedError",
    "CyberRef",
    "Executor",
    "from_url",
    "Lock",
    "LockLostError",
    "LockTimeoutError",
    "MemoryLimitError",
    "Pending",
    "Pipeline",
    "Transaction",
    "TransactionConflictError",
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
    "Subscription",
    "TableError",
    "TableExistsError",
    "TableNotFoundError",
    "TimeoutError",
    "WrongTableTypeError",
    "__version__",
    "aio",
    "connect",
]
