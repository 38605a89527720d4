"""One CyberDB server for bench/persistence.py, controlled over stdin/stdout, through the public API only.

The server runs in a background thread (``Server.start``) while the main thread reads one JSON command per
line on stdin and answers each with one JSON line on stdout, carrying the command's start and end as
``time.perf_counter_ns()`` (CLOCK_MONOTONIC on Linux, so comparable with the client processes' clocks):

    {"cmd": "save", "file": F}  -> Server.save_db(F)          (a forked child writes the snapshot)
    {"cmd": "rewrite"}          -> Server.rewrite_append_log() (a forked child writes the new log base)
    {"cmd": "load", "file": F}  -> Server.load_db(F)
    {"cmd": "info"}             -> Server.info()
    {"cmd": "quit"}             -> stop the server and exit

The first line it writes is {"ok": true, "start_ns": ...}: the time ``Server.start`` took, which includes
replaying the append-only log (``--aof``) and loading ``--load``. The password comes from the environment
(CYBERDB_BENCH_PASSWORD), never argv. bench/persistence.py stops this process by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from typing import Any

import cyberdb

PASSWORD_ENV = "CYBERDB_BENCH_PASSWORD"


def _timed(fn: Any) -> dict[str, Any]:
    t0 = time.perf_counter_ns()
    result = fn()
    t1 = time.perf_counter_ns()
    return {"ok": True, "t0": t0, "t1": t1, "result": result}


def main(argv: list[str] | None = None) -> int:
    """Start the server, then run commands from stdin until "quit" or EOF."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--aof", help="append-only log file")
    parser.add_argument("--fsync", default="everysec", choices=("always", "everysec", "no"))
    parser.add_argument("--rewrite-min-size", type=int, default=16 << 20, help="bytes (the server's default)")
    parser.add_argument("--load", help="snapshot to load before starting")
    args = parser.parse_args(argv)

    # Keep the protocol stream to ourselves: stray prints go to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())

    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, separators=(",", ":"), default=str) + "\n")
        out.flush()

    db = cyberdb.Server()
    try:
        t0 = time.perf_counter_ns()
        if args.load:
            db.load_db(args.load)
        if args.aof:
            db.set_append_log(args.aof, fsync=args.fsync, rewrite_min_size=args.rewrite_min_size)
        db.start(host=args.host, port=args.port, password=os.environ[PASSWORD_ENV])
        reply({"ok": True, "start_ns": time.perf_counter_ns() - t0})
        for line in sys.stdin:
            msg = json.loads(line)
            cmd, file = msg["cmd"], msg.get("file", "")
            if cmd == "save":
                reply(_timed(lambda: db.save_db(file)))  # noqa: B023 - called at once
            elif cmd == "rewrite":
                reply(_timed(db.rewrite_append_log))
            elif cmd == "load":
                reply(_timed(lambda: db.load_db(file)))  # noqa: B023 - called at once
            elif cmd == "info":
                reply(_timed(db.info))
            elif cmd == "quit":
                break
            else:
                raise ValueError(f"unknown command {cmd!r}")
    except Exception:
        reply({"error": traceback.format_exc()})
        return 1
    finally:
        db.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
