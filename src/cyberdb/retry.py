"""When to re-send a request whose connection broke.  Decides *whether* and *how long*; never sleeps itself.

Every command is re-sent, reads and writes alike: a re-sent request keeps its number, and the server answers
a write it already ran from its reply cache instead of running it again (see :mod:`cyberdb.server.dedup`).
Re-sending a write "because it is idempotent" would not be safe: it can undo another client's newer write.
When the attempts are spent the caller gets :class:`~cyberdb.errors.ConnectionLostError`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Retry"]


@dataclass(frozen=True)
class Retry:
    """Exponential backoff between re-sends: ``backoff * 2**attempt``, capped, ``attempts`` times."""

    attempts: int = 3
    backoff: float = 0.01
    max_delay: float = 0.5

    def next_delay(self, attempt: int, exc: BaseException) -> float | None:
        """Seconds to wait before retry number ``attempt`` (0-based), or None to re-raise ``exc``."""
        if attempt >= self.attempts:
            return None
        # the first retry is immediate: the usual cause is a pooled connection the server had closed
        return 0.0 if attempt == 0 else min(self.max_delay, self.backoff * (2 ** (attempt - 1)))
