"""The one exception hierarchy of CyberDB, and the wire codes for errors.

Data errors keep Python's own types (``KeyError``, ``IndexError``, ``ValueError``, ``TypeError``); everything
about transport, protocol or misuse derives from :class:`CyberDBError`.  No I/O in this module.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Iterator

__all__ = [
    "AuthenticationError",
    "BatchAbortedError",
    "LockLostError",
    "LockTimeoutError",
    "TransactionConflictError",
    "ConcurrentModificationError",
    "ConnectionError",
    "ConnectionLostError",
    "CyberDBError",
    "DisconnectedError",
    "EncryptionMismatchError",
    "MemoryLimitError",
    "PersistenceError",
    "PoolTimeoutError",
    "ProtocolError",
    "ServerError",
    "TableError",
    "TableExistsError",
    "TableNotFoundError",
    "TimeoutError",
    "WrongTableTypeError",
    "map_errors",
    "os_error",
]


class CyberDBError(Exception):
    """Base class of every error CyberDB raises for itself."""


class ConnectionError(CyberDBError, builtins.ConnectionError):  # noqa: A001 - named like the builtin on purpose
    """The connection to the server could not be made or used."""


class AuthenticationError(ConnectionError):
    """The password was refused (or the server could not prove it knows it)."""


class EncryptionMismatchError(ConnectionError):
    """Client and server disagree about ``encrypt``."""


class ConnectionLostError(ConnectionError):
    """The connection broke while a command was in flight: it may or may not have been applied."""


class TimeoutError(CyberDBError, builtins.TimeoutError):  # noqa: A001
    """An operation took longer than allowed."""


class PoolTimeoutError(TimeoutError):
    """No pooled connection became free in time."""


class LockTimeoutError(TimeoutError):
    """``proxy.lock(...)`` could not acquire the lock within its ``timeout``."""


class LockLostError(CyberDBError):
    """The lock is no longer yours: its lease ended (``ttl``) or another holder has it since."""


class TransactionConflictError(CyberDBError):
    """``proxy.transact(fn)`` kept conflicting: what ``fn`` read changed before its writes could apply."""


class BatchAbortedError(CyberDBError):
    """A call of an atomic batch failed, so none of the batch was applied.

    ``index`` is the failing call's place in the batch and ``error`` the exception it raised.
    """

    def __init__(self, index: int, code: int, args: list[object]) -> None:
        super().__init__(index, code, args)
        self.index = index
        self.error = error_from_code(code, tuple(args))
        self.call: str | None = None  # what the failing call was, when the client knows

    def __str__(self) -> str:
        what = f" ({self.call})" if self.call else ""
        return f"call {self.index}{what} of the atomic batch raised {self.error!r}, so none of the batch was applied"


class ProtocolError(CyberDBError):
    """The peer broke the protocol; the connection is closed."""


class DisconnectedError(CyberDBError):
    """A proxy or table was used after ``proxy.close()`` (call ``proxy.connect()`` first)."""


class ServerError(CyberDBError):
    """An unexpected failure on the server (message only, no traceback)."""


class PersistenceError(CyberDBError):
    """A data file could not be written or is not a valid CyberDB file."""


class MemoryLimitError(CyberDBError, MemoryError):
    """A write was refused: the server's memory is over its ``max_memory`` (reads and deletes go on)."""


class ConcurrentModificationError(CyberDBError):
    """A read-modify-write (``sort(key=...)``) kept losing to concurrent writers."""


class TableError(CyberDBError):
    """Base class of table-level errors."""


class TableNotFoundError(TableError, LookupError):
    """No table has that name."""


class TableExistsError(TableError, ValueError):
    """A table with that name already exists."""


class WrongTableTypeError(TableError, TypeError):
    """The table exists but is of the other kind (CyberDict vs CyberList)."""


# Error code on the wire <-> class.  The server sends (code, args); the client rebuilds cls(*args) so that
# ``d["x"]`` raises exactly ``KeyError("x")``.  Codes are part of the protocol: never renumber.
ERROR_CODES: dict[int, type[BaseException]] = {
    1: KeyError,
    2: IndexError,
    3: ValueError,
    4: TypeError,
    5: OverflowError,
    10: TableNotFoundError,
    11: TableExistsError,
    12: WrongTableTypeError,
    13: ConcurrentModificationError,
    14: ConnectionLostError,  # a re-sent request whose cached reply is gone: its outcome is unknown
    15: TransactionConflictError,
    16: BatchAbortedError,
    17: LockLostError,
    18: PersistenceError,  # e.g. a write refused while the append-only log cannot be written
    19: MemoryLimitError,
    20: ProtocolError,
    21: ServerError,
}
_CODE_OF = {cls: code for code, cls in ERROR_CODES.items()}


def error_code(exc: BaseException) -> int:
    """Return the wire code for ``exc``: its class's, its nearest mapped base's, or ServerError's."""
    for cls in type(exc).__mro__:
        code = _CODE_OF.get(cls)
        if code is not None:
            return code
    return _CODE_OF[ServerError]


def error_from_code(code: int, args: tuple[object, ...]) -> BaseException:
    """Rebuild the exception the server reported."""
    cls = ERROR_CODES.get(code, ServerError)
    try:
        return cls(*args)
    except Exception:  # a class that does not take these args: keep the message
        return ServerError(*args)


def os_error(exc: OSError, what: str = "connection", timeout: float | None = None) -> CyberDBError:
    """The CyberDB error for an ``OSError`` from a socket (our own errors pass through).

    ``timeout``, the socket's timeout if known, is named in the message of a timeout.
    """
    if isinstance(exc, CyberDBError):
        return exc
    if isinstance(exc, builtins.TimeoutError):
        return TimeoutError(f"{what} timed out" + (f" after {timeout:g} s" if timeout is not None else ""))
    return ConnectionLostError(f"{what} lost: {exc}")


@contextlib.contextmanager
def map_errors(what: str = "connection", timeout: float | None = None) -> Iterator[None]:
    """Turn ``OSError``/``socket.timeout`` raised inside the block into CyberDB errors (see ``os_error``)."""
    try:
        yield
    except CyberDBError:  # ours derive from OSError too (ConnectionError, TimeoutError): pass them on
        raise
    except OSError as exc:
        raise os_error(exc, what, timeout) from exc
