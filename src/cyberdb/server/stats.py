"""Server statistics: what ``Server.info()`` and the ``db.info`` command (``proxy.info()``) report.

Everything here runs inside the server's event loop and reads counters that exist anyway, so the hot path pays
nothing: each connection counts its requests (``ServerConnection.requests``) and adds them to
``ServerContext.requests_done`` when it closes; the total is that plus the open connections' counts, summed
once a second to get ops/s over the last ``RATE_WINDOW`` seconds.  Building a report costs one ``len()`` per
table (never a walk over the data) and one read of ``/proc/self/statm``.  No sockets in this module.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..codec import encode_value
from ..errors import error_code
from ..protocol import HEADER_SIZE, MAX_FRAME
from .store import STATUS_OK, Store, encode_error

if TYPE_CHECKING:
    from .aof import AppendLog
    from .net import ServerContext

__all__ = ["RATE_WINDOW", "SLOWLOG_IN_INFO", "TABLES_IF_TOO_BIG", "Stats", "info_outcome"]

RATE_WINDOW = 5  # seconds over which ops/s is measured (sampled once a second)
SLOWLOG_IN_INFO = 5  # newest slow-log entries in a report (proxy.slowlog() has up to 128)
TABLES_IF_TOO_BIG = 10_000  # a db.info reply over the frame limit lists only this many tables, the largest
_MAX_PAYLOAD = MAX_FRAME - HEADER_SIZE - 64


class Stats:
    """Uptime, the commands counter sampled for ops/s, and the outcome of the last snapshot save."""

    def __init__(self) -> None:
        """No server running yet: nothing is sampled until ``start``."""
        self.started = time.time()
        self._started = time.monotonic()
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=RATE_WINDOW + 1)
        self._ctx: ServerContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.last_save: dict[str, Any] | None = None

    def start(self, loop: asyncio.AbstractEventLoop, ctx: ServerContext) -> None:
        """The server started serving in ``loop``: uptime counts from now, and the counter is sampled."""
        self.stop()
        self.started, self._started = time.time(), time.monotonic()
        self._ctx, self._loop = ctx, loop
        self._samples.clear()
        self._samples.append((self._started, 0))
        self._timer = loop.call_later(1.0, self._tick)

    def stop(self) -> None:
        """The server stopped: no more samples."""
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self._loop = self._ctx = None

    def _tick(self) -> None:
        if self._loop is None or self._ctx is None:
            return
        self._samples.append((time.monotonic(), commands(self._ctx)))
        self._timer = self._loop.call_later(1.0, self._tick)

    def ops_per_sec(self, total: int) -> float:
        """Commands per second over the last ``RATE_WINDOW`` to ``RATE_WINDOW + 1`` seconds (at least one second)."""
        if not self._samples:
            return 0.0
        then, count = self._samples[0]
        return (total - count) / max(time.monotonic() - then, 1.0)  # (just after the start: per second, not per ms)

    def saved(self, path: str, started: float, error: BaseException | None) -> None:
        """Note a snapshot save (``save_db``, the backup cycle, the final backup) begun at ``started``
        (``time.monotonic()``) and how it ended."""
        self.last_save = {"file": path, "time": time.time(), "seconds": round(time.monotonic() - started, 3),
                          "ok": error is None, "error": None if error is None else str(error)}

    def report(self, ctx: ServerContext | None, store: Store, log: AppendLog | None,
               backup: tuple[str, float] | None, backup_busy: bool, address: tuple[str, int] | None,
               tls: bool, rss: int | None) -> dict[str, Any]:
        """The report of ``Server.info()``/``proxy.info()`` (keys: README "Operating a running server")."""
        from .. import __version__  # (the package imports this module while it initialises)

        running = ctx is not None and address is not None
        total = commands(ctx) if ctx is not None else 0
        tables = store.dump()
        return {
            "version": __version__,
            "pid": os.getpid(),
            "address": f"{address[0]}:{address[1]}" if address is not None else None,
            "encrypt": ctx.encrypt if ctx is not None else False,
            "tls": tls,
            "started": self.started if running else None,
            "uptime": round(time.monotonic() - self._started, 3) if running else 0.0,
            "memory": {"rss": rss, "max_memory": ctx.max_memory if ctx is not None else 0,
                       "over_max_memory": ctx.over_memory if ctx is not None else False},
            "connections": ctx.authenticated if ctx is not None else 0,
            "unauthenticated": ctx.handshaking if ctx is not None else 0,
            "partial_bytes": ctx.partial_bytes if ctx is not None else 0,
            # pops waiting for an item (pop(timeout=...) on an empty list)
            "blocked": sum(len(q) for q in ctx.waiters.values()) if ctx is not None else 0,
            "channels": len(store.channels),
            "commands": total,
            "ops_per_sec": round(self.ops_per_sec(total), 3) if running else 0.0,
            "tables": {name: {"kind": "dict" if type(table) is dict else "list", "size": len(table)}
                       for name, table in tables.items()},
            "expiring_keys": store.expiring(),
            "append_log": log.info() if log is not None else None,
            "backup": {"file": backup[0], "cycle": backup[1], "busy": backup_busy} if backup else None,
            "last_save": dict(self.last_save) if self.last_save is not None else None,
            "slowlog": list(store.slowlog)[:-SLOWLOG_IN_INFO - 1:-1],  # newest first
        }


def commands(ctx: ServerContext) -> int:
    """Requests run since the server started: those of closed connections plus the open ones' counts."""
    return ctx.requests_done + sum(conn.requests for conn in ctx.connections)


def info_outcome(info: Callable[[], dict[str, Any]] | None, args: list[Any]) -> tuple[int, bytes]:
    """Run ``db.info`` for the network layer: ``(status, encoded reply)`` as ``Store.outcome`` returns."""
    try:
        if args:
            raise TypeError(f"db.info takes no arguments ({len(args)} given)")
        if info is None:
            raise RuntimeError("this server does not report its state")
        report = info()
        body = encode_value(report)
        if len(body) > _MAX_PAYLOAD:  # millions of tables: list the largest, and say how many are left out
            tables = report["tables"]
            kept = sorted(tables, key=lambda name: -tables[name]["size"])[:TABLES_IF_TOO_BIG]
            report["tables"] = {name: tables[name] for name in kept}
            report["tables_omitted"] = len(tables) - len(kept)
            body = encode_value(report)
        return STATUS_OK, body
    except Exception as exc:  # an error reply; the connection stays usable
        return error_code(exc), encode_error(exc, "db.info")
