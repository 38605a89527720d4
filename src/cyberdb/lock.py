"""Locks with leases and fencing tokens: ``with proxy.lock("name", ttl=10) as lock:``.

The server keeps, per lock name, the holder's token and the end of its lease.  ``acquire`` asks the server
(one atomic command) and, while another holder has the lock, asks again with a backoff that doubles from
1 ms to 50 ms, until it gets it or ``timeout`` passes (:class:`~cyberdb.errors.LockTimeoutError`).  The lease
ends ``ttl`` seconds after the acquisition or the last ``extend()``, so the lock frees itself when its holder
dies.  ``release()`` and ``extend()`` check the token: a holder whose lease ended, or whose lock someone else
took since, gets :class:`~cyberdb.errors.LockLostError` instead of freeing another's lock.

``lock.token`` is a *fencing token*: it grows with every acquisition of any lock on the server (even across
a restart: it starts from the server's clock in microseconds), so a storage layer that remembers the highest
token it has seen can refuse a stale holder's late write (Kleppmann, "How to do distributed locking").
Leases live in the server's memory: a restarted server has no locks.
"""

from __future__ import annotations

import time
from types import TracebackType
from typing import TYPE_CHECKING

from .commands import BY_NAME
from .errors import LockTimeoutError

if TYPE_CHECKING:
    from .client import Proxy

__all__ = ["Lock"]

_ACQUIRE, _RELEASE, _EXTEND = BY_NAME["lock.acquire"], BY_NAME["lock.release"], BY_NAME["lock.extend"]
_FIRST_DELAY, _MAX_DELAY = 0.001, 0.05


class Lock:
    """One named lock, used through a proxy; see the module docstring."""

    def __init__(self, proxy: Proxy, name: str, ttl: float = 10, timeout: float | None = None) -> None:
        """A lock handle (nothing is acquired until ``acquire()`` or ``with``)."""
        if not ttl > 0:
            raise ValueError("ttl must be a positive number of seconds")
        self._proxy = proxy
        self.name = name
        self.ttl = ttl
        self.timeout = timeout
        self.token: int | None = None  # the fencing token of the current holding, None when not held

    def __repr__(self) -> str:
        state = f"HELD token={self.token}" if self.token is not None else "FREE"
        return f"<Lock {self.name!r} {state} ttl={self.ttl}>"

    def acquire(self, timeout: float | None = None, blocking: bool = True) -> bool:
        """Wait until the lock is ours (at most ``timeout`` seconds, default the lock's own ``timeout``).

        Returns True; with ``blocking=False`` returns False at once if another holder has it.

        Raises:
            LockTimeoutError: not acquired within the timeout.
            RuntimeError: this handle already holds the lock.
        """
        if self.token is not None:
            raise RuntimeError(f"this handle already holds lock {self.name!r}")
        wait = self.timeout if timeout is None else timeout
        deadline = None if wait is None else time.monotonic() + wait
        delay = _FIRST_DELAY
        while True:
            token = self._proxy.call(_ACQUIRE, [self.name, self.ttl])
            if token is not None:
                self.token = token
                return True
            if not blocking:
                return False
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise LockTimeoutError(f"lock {self.name!r} was not acquired within {wait} s")
                delay = min(delay, remaining)
            time.sleep(delay)
            delay = min(delay * 2, _MAX_DELAY)

    def release(self) -> None:
        """Free the lock.

        Raises:
            LockLostError: the lock is no longer ours (lease ended, or another holder took it).
            RuntimeError: this handle does not hold the lock.
        """
        token = self._held()
        self.token = None
        self._proxy.call(_RELEASE, [self.name, token])

    def extend(self, ttl: float | None = None) -> None:
        """Renew the lease: it now ends ``ttl`` (default the lock's ``ttl``) seconds from now.

        Raises:
            LockLostError: the lock is no longer ours.
        """
        self._proxy.call(_EXTEND, [self.name, self._held(), self.ttl if ttl is None else ttl])

    def locked(self) -> bool:
        """True while this handle holds the lock (as far as it knows: the lease may have ended)."""
        return self.token is not None

    def _held(self) -> int:
        if self.token is None:
            raise RuntimeError(f"lock {self.name!r} is not held by this handle")
        return self.token

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
