"""The ``cyberdb`` console script: ``cyberdb serve ...`` runs a server in the foreground.  Only parses and calls."""

from __future__ import annotations

import argparse
import os
import sys

from .errors import PersistenceError
from .server import Server


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; return the exit code."""
    parser = argparse.ArgumentParser(prog="cyberdb", description="CyberDB in-memory database")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run a server in the foreground until SIGINT/SIGTERM")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=9980)
    serve.add_argument("--password", default=os.environ.get("CYBERDB_PASSWORD"),
                       help="default: $CYBERDB_PASSWORD (prefer it: argv is visible to other users)")
    serve.add_argument("--max-con", type=int, default=500)
    serve.add_argument("--timeout", type=float, default=0)
    serve.add_argument("--encrypt", action="store_true")
    serve.add_argument("--log", action="store_true", help="print connections and commands")
    serve.add_argument("--load", metavar="FILE", help="load this snapshot first")
    serve.add_argument("--backup", metavar="FILE", help="back up to this file (and on shutdown)")
    serve.add_argument("--backup-cycle", type=float, default=900)
    serve.add_argument("--aof", metavar="FILE", help="append-only log: every write is logged before its reply; "
                       "replayed on start (it replaces --load when it exists)")
    serve.add_argument("--fsync", choices=("always", "everysec", "no"), default="everysec",
                       help="when the log reaches the disk (default: everysec)")
    serve.add_argument("--aof-rewrite-factor", type=float, default=2.0, metavar="F",
                       help="compact the log when it is F times its size after the last compaction")
    serve.add_argument("--aof-rewrite-min-size", type=int, default=16 << 20, metavar="BYTES")
    serve.add_argument("--whitelist", nargs="*", metavar="IP_OR_CIDR")
    serve.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                       help="event loop (auto: uvloop if installed)")
    args = parser.parse_args(argv)

    db = Server(event_loop=args.loop)
    try:
        if args.load:
            db.load_db(args.load)
        if args.backup:
            db.set_backup(args.backup, cycle=args.backup_cycle)
        if args.aof:
            db.set_append_log(args.aof, fsync=args.fsync, rewrite_factor=args.aof_rewrite_factor,
                              rewrite_min_size=args.aof_rewrite_min_size)
        if args.whitelist is not None:
            db.set_ip_whitelist(args.whitelist)
        db.run(host=args.host, port=args.port, password=args.password, max_con=args.max_con,
               timeout=args.timeout, print_log=args.log, encrypt=args.encrypt)
    except (OSError, ValueError, PersistenceError) as exc:
        print(f"cyberdb: {exc}", file=sys.stderr)
        return 1
    return 0
