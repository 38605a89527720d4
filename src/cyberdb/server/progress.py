"""Progress lines for long loads and saves: one log line every ``PROGRESS_INTERVAL`` seconds while it runs.

A snapshot load, a log replay at start and a snapshot save report how far they are (percent, bytes or tables,
records) at INFO on the ``cyberdb.server.progress`` logger, so ``cyberdb serve`` shows that a server loading
gigabytes is working, not hung.  An operation that ends before the first interval logs nothing: small files stay
quiet.  ``PROGRESS_INTERVAL`` is read from ``$CYBERDB_PROGRESS_INTERVAL`` (seconds, default 2) when this module
is imported; ``0`` logs every step (the tests use it to see the lines without gigabytes of data).
No I/O but logging; one ``time.monotonic()`` per step.
"""

from __future__ import annotations

import logging
import os
import time

__all__ = ["PROGRESS_INTERVAL", "Progress"]

logger = logging.getLogger(__name__)


def _interval() -> float:
    try:
        return max(0.0, float(os.environ.get("CYBERDB_PROGRESS_INTERVAL", "2")))
    except ValueError:
        return 2.0


PROGRESS_INTERVAL = _interval()
_MIB = 1 << 20


class Progress:
    """Reports one long operation (``"loading"``, ``"replaying"``, ``"saving"``) of ``source``.

    ``total`` counts ``unit`` (``"bytes"`` or ``"tables"``); call ``at(done, records)`` as it goes and ``done()``
    at the end (which says how long it took, if a progress line was logged).
    """

    __slots__ = ("_next", "_reported", "_started", "action", "source", "total", "unit")

    def __init__(self, action: str, source: str, total: int, unit: str = "bytes") -> None:
        """Start timing; nothing is logged before ``PROGRESS_INTERVAL`` seconds have passed."""
        self.action, self.source, self.total, self.unit = action, source, total, unit
        self._started = time.monotonic()
        self._next = self._started + PROGRESS_INTERVAL
        self._reported = False

    def at(self, done: int, records: int, extra_bytes: int = 0) -> None:
        """``done`` of ``total`` units and ``records`` records are through; log a line if an interval passed.

        ``extra_bytes`` (saves) is the size encoded so far, shown next to a count of tables.
        """
        now = time.monotonic()
        if now < self._next:
            return
        self._next = now + PROGRESS_INTERVAL
        self._reported = True
        percent = 100.0 * done / self.total if self.total else 100.0
        logger.info("%s %s: %.0f%% (%s, %d records, %.1f s)", self.action, self.source, percent,
                    self._amount(done, extra_bytes), records, now - self._started)

    def done(self, records: int, extra_bytes: int = 0) -> None:
        """The operation finished: log its total if progress lines were logged (so the last one is not 99%)."""
        if self._reported:
            logger.info("%s %s: done (%s, %d records) in %.1f s", self.action, self.source,
                        self._amount(self.total, extra_bytes), records, time.monotonic() - self._started)

    def _amount(self, done: int, extra_bytes: int) -> str:
        if self.unit == "bytes":
            return f"{done / _MIB:.1f} of {self.total / _MIB:.1f} MiB"
        text = f"{done} of {self.total} {self.unit}"
        return f"{text}, {extra_bytes / _MIB:.1f} MiB" if extra_bytes else text
