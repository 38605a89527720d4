"""When to re-send a request whose connection broke.  Decides *whether* and *how long*; never sleeps itself.

Every command is re-sent, reads and writes alike: a re-sent request keeps its number, and the server answers
a write it already ran from its reply cache instead of running it again (see :mod:`cyberdb.server.dedup`).
Re-sending a write "because it is idempotent" would not be safe: it can undo another client's newer write.

The budget is a time, not a count, so that a client rides out a server restart: for ``timeout`` seconds (30 by
default, which covers an ordinary restart) from the moment a connection breaks, the request is re-sent, and a
new connection asked for, with a jittered exponential backoff (at once, then about 10 ms doubling to
``max_delay``). Making a connection that the server refuses, resets or closes during the handshake counts
against the same budget, and so does a reply that ``socket_timeout`` gave up on (the connection is dropped). A
wrong password, a protocol error, a full pool and errors the server sent are never retried. ``attempts`` (None
by default: as many as fit in ``timeout``) still caps the number of re-sends, so ``Retry(attempts=3)`` keeps its
old meaning and ``Retry(attempts=0)`` or ``Retry(timeout=0)`` never re-sends. When the budget is spent the
caller gets :class:`~cyberdb.errors.ConnectionLostError` (or, from ``proxy.connect()``,
:class:`~cyberdb.errors.ConnectionError`) saying how long it waited and for which address.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Retry"]

_JITTER = 0.5  # each delay is drawn from [(1 - _JITTER) * d, d]: clients that lost the server together
# (100 greenlets of one worker) must not knock on the restarted server in lockstep


@dataclass(frozen=True)
class Retry:
    """Jittered exponential backoff between re-sends, for ``timeout`` seconds after a connection broke.

    Args:
        attempts: at most this many re-sends (None = as many as fit in ``timeout``; 0 = never re-send).
        backoff: the delay before the second re-send (the first is immediate), doubled each time.
        max_delay: the longest delay between two re-sends.
        timeout: seconds after the first failure during which re-sends go on (0 = never re-send).

    Example: ``cyberdb.connect(..., retry=cyberdb.Retry(timeout=60))`` waits out restarts of up to a minute.
    """

    attempts: int | None = None
    backoff: float = 0.01
    max_delay: float = 0.5
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.attempts is not None and self.attempts < 0:
            raise ValueError("attempts must be >= 0 or None")
        if self.backoff < 0 or self.max_delay < 0 or self.timeout < 0:
            raise ValueError("backoff, max_delay and timeout must be >= 0 seconds")

    def next_delay(self, attempt: int, exc: BaseException, elapsed: float) -> float | None:
        """Seconds to wait before retry number ``attempt`` (0-based), or None to give up on ``exc``.

        Args:
            attempt: how many retries were made since the first failure.
            exc: the error of the last try.
            elapsed: seconds since the first failure (measured with ``time.monotonic()``).
        """
        if self.attempts is not None and attempt >= self.attempts:
            return None
        remaining = self.timeout - elapsed
        if remaining <= 0:
            return None
        if attempt == 0:  # at once: the usual cause is a pooled connection the server had closed
            return 0.0
        delay = min(self.max_delay, self.backoff * 2.0 ** min(attempt - 1, 64))
        delay *= 1.0 - _JITTER * random.random()
        return min(delay, remaining)  # the last try falls on the deadline, not after it
