"""When to retry a command whose connection broke.  Decides *whether* and *how long*; never sleeps itself.

Only ``idempotent`` commands are retried: repeating them gives the same result whether or not the lost
attempt was applied.  A write whose reply was lost raises :class:`~cyberdb.errors.ConnectionLostError`
instead ("may or may not have been applied").
"""

from __future__ import annotations

from dataclasses import dataclass

from .commands import CommandSpec

__all__ = ["Retry"]


@dataclass(frozen=True)
class Retry:
    """Exponential backoff for idempotent commands: ``backoff * 2**attempt``, capped, ``attempts`` times."""

    attempts: int = 3
    backoff: float = 0.01
    max_delay: float = 0.5

    def next_delay(self, spec: CommandSpec, attempt: int, exc: BaseException) -> float | None:
        """Seconds to wait before retry number ``attempt`` (0-based), or None to re-raise ``exc``."""
        if not spec.idempotent or attempt >= self.attempts:
            return None
        # the first retry is immediate: the usual cause is a pooled connection the server had closed
        return 0.0 if attempt == 0 else min(self.max_delay, self.backoff * (2 ** (attempt - 1)))
