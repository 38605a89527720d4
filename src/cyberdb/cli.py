"""The ``cyberdb`` console script.  Only parses and calls.

``cyberdb serve ...`` runs a server in the foreground; ``cyberdb check FILE`` and ``cyberdb dump FILE`` inspect a
snapshot or an append-only log (see :mod:`cyberdb.server.inspect`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from .client import connect
from .errors import CyberDBError, PersistenceError
from .server import Server
from .server.inspect import inspect_file

_CHECK_HELP = """\
Verify a snapshot (.cdb) or an append-only log (.aof), told apart by its magic bytes, exactly as the server
loads it (a log is replayed into an empty store), and print its kind, format version, size, a log's records,
and the state it loads to: tables with their kind, item count and encoded size, reply-cache clients, locks.
Exit status: 0 if the file is whole; also 0 when only a log's last record is torn (a crash while writing it),
reported by a "warning: torn last record: N bytes at offset X would be dropped" line, since the server loads
such a log after dropping those bytes; 1 if the file is damaged, unreadable or not a CyberDB file (a pickle of
cyberdb 0.9.x included): the server's error message goes to stderr and names the offset of the damage (a
version-1 snapshot has only one checksum for everything)."""
_DUMP_HELP = """\
Write a snapshot or log as JSON lines on stdout after checking it as "check" does (a damaged file writes
nothing and exits 1; a log's torn last record is left out, with a warning on stderr).
A snapshot: its state, one line per table {"record": "table", "table": name, "kind": "dict"|"list",
"content": ...}, one per client of the reply cache {"record": "client", "client": id in hex, "ack", "floor",
"replies": count}, then {"record": "leases", "leases": [{"lock", "token", "deadline" (ISO 8601 UTC),
"unix_deadline"}, ...]}.  With --state, a log is written the same way: the state it loads to.
A log: its records in order, each with its "offset": the three kinds above (the log's base) and
{"record": "command", "time" (ISO 8601 UTC), "unix_time", "client" (hex; zeros: anonymous), "request", "ack",
"command": e.g. "dict.setitem", "args": [...] as the request carried them (batch steps keep command ids)}.
Values: null, bools, strs, lists, ints below 2**53 and finite floats (always with a fraction or an exponent)
are plain JSON; other values are one-key objects: {"$int": "digits"}, {"$float": "nan"|"inf"|"-inf"},
{"$bytes": base64}, {"$tuple"|"$set"|"$frozenset": [...]}, {"$decimal": "1.10"}, {"$datetime"|"$date"|"$time":
ISO 8601}, {"$timedelta": [days, seconds, microseconds]}, {"$uuid": "..."}, {"$complex": [real, imag]}; a dict
is a JSON object only if its keys are strs none of which starts with "$", else {"$dict": [[key, value], ...]},
so an object with a "$" key is always a tag. cyberdb.server.inspect.from_json(json.loads(line)) reads it back."""


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
    serve.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this PEM certificate (chain)")
    serve.add_argument("--tls-key", metavar="FILE", help="its PEM private key (default: in --tls-cert)")
    serve.add_argument("--tls-ca", metavar="FILE", help="PEM CAs whose client certificates are accepted")
    serve.add_argument("--tls-require-client-cert", action="store_true",
                       help="refuse clients without a certificate signed by --tls-ca (mutual TLS)")
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
    serve.add_argument("--whitelist", nargs="*", metavar="IP_OR_CIDR",
                       help="accept only these (loopback addresses are always accepted)")
    serve.add_argument("--max-unauthenticated", type=int, default=1024, metavar="N",
                       help="connections still in the handshake, from all addresses (apart from --max-con)")
    serve.add_argument("--max-unauthenticated-per-ip", type=int, default=128, metavar="N")
    serve.add_argument("--handshake-timeout", type=float, default=10.0, metavar="SECONDS")
    serve.add_argument("--max-memory", type=int, default=0, metavar="BYTES",
                       help="refuse writes (MemoryLimitError) above this resident memory; 0 = no limit")
    serve.add_argument("--slowlog-threshold", type=float, default=0.01, metavar="SECONDS",
                       help="commands slower than this are kept in the slow log (cyberdb slowlog)")
    serve.add_argument("--min-frame-rate", type=int, default=32 << 10, metavar="BYTES_PER_S",
                       help="a request must arrive at least this fast once started (checked after 2 s)")
    serve.add_argument("--max-partial-bytes", type=int, default=512 << 20, metavar="BYTES",
                       help="bytes of unfinished requests held for all connections together")
    serve.add_argument("--max-subscriber-buffer", type=int, default=32 << 20, metavar="BYTES",
                       help="close a pub/sub subscriber with more than this many bytes of messages not read")
    serve.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default="auto",
                       help="event loop (auto: uvloop if installed)")
    check = sub.add_parser("check", help="verify a snapshot or append-only log and summarise it",
                           description=_CHECK_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    check.add_argument("file")
    dump = sub.add_parser("dump", help="write a snapshot or append-only log as JSON lines",
                          description=_DUMP_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    dump.add_argument("file")
    dump.add_argument("--state", action="store_true", help="for a log: the state it loads to, not its records")
    slowlog = sub.add_parser("slowlog", help="print a running server's slowest recent commands as JSON lines")
    slowlog.add_argument("--host", default="127.0.0.1")
    slowlog.add_argument("--port", type=int, default=9980)
    slowlog.add_argument("--password", default=os.environ.get("CYBERDB_PASSWORD"),
                         help="default: $CYBERDB_PASSWORD")
    slowlog.add_argument("--encrypt", action="store_true")
    slowlog.add_argument("--count", type=int, default=None)
    args = parser.parse_args(argv)
    if args.command in ("check", "dump"):
        return _inspect(args.command, args.file, args.state if args.command == "dump" else False)
    if args.command == "slowlog":
        return _slowlog(args.host, args.port, args.password, args.encrypt, args.count)

    db = Server(event_loop=args.loop)
    try:
        if args.tls_cert:
            db.set_tls(args.tls_cert, args.tls_key, args.tls_ca, args.tls_require_client_cert)
        elif args.tls_key or args.tls_ca or args.tls_require_client_cert:
            raise ValueError("--tls-key, --tls-ca and --tls-require-client-cert need --tls-cert")
        if args.load:
            db.load_db(args.load)
        if args.backup:
            db.set_backup(args.backup, cycle=args.backup_cycle)
        if args.aof:
            db.set_append_log(args.aof, fsync=args.fsync, rewrite_factor=args.aof_rewrite_factor,
                              rewrite_min_size=args.aof_rewrite_min_size)
        if args.whitelist is not None:
            db.set_ip_whitelist(args.whitelist)
        db.set_limits(args.max_unauthenticated, args.max_unauthenticated_per_ip, args.handshake_timeout,
                      args.min_frame_rate, args.max_partial_bytes, args.max_subscriber_buffer)
        db.set_max_memory(args.max_memory)
        db.set_slowlog(args.slowlog_threshold)
        db.run(host=args.host, port=args.port, password=args.password, max_con=args.max_con,
               timeout=args.timeout, print_log=args.log, encrypt=args.encrypt)
    except (OSError, ValueError, PersistenceError) as exc:
        print(f"cyberdb: {exc}", file=sys.stderr)
        return 1
    return 0


def _slowlog(host: str, port: int, password: str | None, encrypt: bool, count: int | None) -> int:
    try:
        client = connect(host, port, password, encrypt)
        try:
            with client.get_proxy() as proxy:
                entries = proxy.slowlog(count)
        finally:
            client.close()
    except CyberDBError as exc:
        print(f"cyberdb: {exc}", file=sys.stderr)
        return 1
    for entry in entries:
        print(json.dumps(entry))
    return 0


def _inspect(command: str, path: str, state: bool) -> int:
    try:
        report = inspect_file(path)
        if command == "check":
            for line in report.lines():
                print(line)
            return 0
        if report.torn:
            print(f"cyberdb: warning: {path}: {report.torn_warning()}", file=sys.stderr)
        for line in report.dump(state=state):
            print(line)
    except PersistenceError as exc:
        print(f"cyberdb: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `cyberdb dump FILE | head`: stop quietly, and keep the exit flush from failing too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0
