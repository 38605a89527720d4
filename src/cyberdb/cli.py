"""The ``cyberdb`` console script.  Only parses and calls.

``cyberdb serve ...`` runs a server in the foreground, logging to stderr (INFO and up: the "listening on" line,
progress of long loads and saves, backups; ``--log`` adds connections and commands); ``cyberdb check FILE`` and
``cyberdb dump FILE`` inspect a snapshot or an append-only log (see :mod:`cyberdb.server.inspect`); ``cyberdb
info`` prints a running server's state (``proxy.info()``), ``cyberdb shell`` opens a Python prompt connected to
it, ``cyberdb slowlog`` prints its slow commands, ``cyberdb copy SOURCE DEST`` copies tables between servers, Redis
and snapshot files (see :mod:`cyberdb.migrate`); ``cyberdb --version`` prints ``cyberdb <version>``.
"""

from __future__ import annotations

import argparse
import code
import json
import logging
import os
import sys
import time
from typing import Any

from . import __version__
from .client import Client, Proxy, connect
from .errors import CyberDBError, PersistenceError
from .migrate import DEFAULT_CHUNK, CopyEvent, Phase, copy_tables, open_store
from .server import Server
from .server.inspect import inspect_file
from .url import parse_url

_LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"  # as Server(print_log=True)
MAX_TABLES_SHOWN = 50  # `cyberdb info` lists the largest tables; --json lists them all

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

_COPY_HELP = """\
Copy tables from SOURCE_URL to DEST_URL, then read each one back and compare it with what was read.
A URL is cyberdb://[:PASSWORD@]HOST[:PORT]/ (or cyberdbs://; the password defaults to $CYBERDB_PASSWORD),
redis://HOST:PORT/DB, rediss://..., redis-cluster://H1:P1,H2:P2/ (the Redis backend, docs/redis-backend.md), or a
snapshot file (data.cdb or file:///path/data.cdb); a snapshot destination is written whole at the end.
A table that exists at the destination is refused before anything is written, unless --replace.  Each table is
held in this process's memory while it is copied; key expiries and maxsize/maxlen bounds are not copied.
Progress goes to stderr, e.g. "copying centre (CyberDict, 12,000 items) ... 50% ... done".
Exit status: 0 if every table was copied and reads back equal, 1 if one differs or the copy failed (a refusal
writes nothing), 2 for a usage error (a malformed URL, --tag for a destination other than Redis, --chunk < 1)."""


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; return the exit code."""
    parser = argparse.ArgumentParser(prog="cyberdb", description="CyberDB in-memory database")
    parser.add_argument("--version", action="version", version=f"cyberdb {__version__}")
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
    _connection_options(slowlog)
    slowlog.add_argument("--count", type=int, default=None)
    info = sub.add_parser("info", help="print a running server's state: tables, memory, clients, ops/s, persistence")
    _connection_options(info)
    info.add_argument("--json", action="store_true", help="print proxy.info() as one JSON object")
    shell = sub.add_parser("shell", help="a Python prompt with `client`, `proxy` (connected) and `cyberdb`",
                           description="An interactive Python prompt (code.InteractiveConsole) connected to a "
                           "server: `client`, `proxy` (connected) and the `cyberdb` module are defined.  It reads "
                           "stdin, so it can be scripted (no prompts are printed when stdin is not a terminal); "
                           "EOF (Ctrl-D) or exit() closes the proxy and the client.")
    _connection_options(shell)
    copy = sub.add_parser("copy", help="copy tables between CyberDB servers, Redis (Cluster) and snapshot files",
                          description=_COPY_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    copy.add_argument("source", metavar="SOURCE_URL")
    copy.add_argument("dest", metavar="DEST_URL")
    copy.add_argument("--tables", metavar="A,B", help="copy only these tables (default: all)")
    copy.add_argument("--replace", action="store_true",
                      help="delete these tables at the destination first (a snapshot file: overwrite it)")
    copy.add_argument("--tag", metavar="NAME", help="Redis destination: put all copied tables in this hash slot")
    copy.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, metavar="N",
                      help=f"items per write request (default: {DEFAULT_CHUNK})")
    args = parser.parse_args(argv)
    if args.command == "copy":
        return _copy(args)
    if args.command in ("check", "dump"):
        return _inspect(args.command, args.file, args.state if args.command == "dump" else False)
    if args.command in ("slowlog", "info", "shell"):
        try:
            settings = _settings(args)
        except ValueError as exc:
            print(f"cyberdb: {exc}", file=sys.stderr)
            return 2
        if args.command == "slowlog":
            return _slowlog(settings, args.count)
        return _info(settings, args.json) if args.command == "info" else _shell(settings)
    if args.encrypt and not args.password:  # refused before anything starts: the keys derive from the password
        print("cyberdb: --encrypt needs a password (--password, or $CYBERDB_PASSWORD): the encryption keys are "
              "derived from it", file=sys.stderr)
        return 2
    root = logging.getLogger("cyberdb")
    level, handler = root.level, _serve_logging(args.log)
    try:
        return _serve(args)
    finally:  # (main() may run inside a program or a test: leave its logging as it was)
        root.removeHandler(handler)
        root.setLevel(level)


def _serve(args: argparse.Namespace) -> int:
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
        # (print_log stays False: _serve_logging attached the handler already, before --load and the log replay)
        db.run(host=args.host, port=args.port, password=args.password, max_con=args.max_con,
               timeout=args.timeout, encrypt=args.encrypt)
    except (OSError, ValueError, PersistenceError) as exc:
        print(f"cyberdb: {exc}", file=sys.stderr)
        return 1
    return 0


def _serve_logging(verbose: bool) -> logging.Handler:
    """Log to stderr from now on: INFO and up ("listening on", progress, backups) but not each connection opening
    and closing, or with ``--log`` everything, commands included (as ``Server(print_log=True)``)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(_LOG_FORMAT))
    if not verbose:
        handler.addFilter(lambda r: r.levelno >= logging.WARNING or r.name != "cyberdb.server.net")
    root = logging.getLogger("cyberdb")
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    return handler


def _connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", help="cyberdb://[:PASSWORD@]HOST[:PORT]/?encrypt=1 (cyberdbs:// for TLS, with "
                        "?tls_ca=FILE); the options below override it")
    parser.add_argument("--host", help="default: 127.0.0.1")
    parser.add_argument("--port", type=int, help="default: 9980")
    parser.add_argument("--password", help="default: the URL's, else $CYBERDB_PASSWORD (prefer these: argv is "
                        "visible to other users)")
    parser.add_argument("--encrypt", action="store_true", default=None)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """``cyberdb.connect``'s arguments: the URL's, overridden by the options given, then the defaults."""
    settings: dict[str, Any] = parse_url(args.url) if args.url else {}
    if args.host is not None:
        settings["host"] = args.host
    if args.port is not None:
        settings["port"] = args.port
    settings.setdefault("host", "127.0.0.1")
    settings.setdefault("port", 9980)
    if args.password is not None:
        settings["password"] = args.password
    elif "password" not in settings and os.environ.get("CYBERDB_PASSWORD"):
        settings["password"] = os.environ["CYBERDB_PASSWORD"]
    if args.encrypt:
        settings["encrypt"] = True
    return settings


def _connected(settings: dict[str, Any]) -> tuple[Client, Proxy]:
    """A client (its settings checked by one connection) and a connected proxy of it."""
    client = connect(**settings)
    try:
        proxy = client.get_proxy()
        proxy.connect()
    except BaseException:
        client.close()
        raise
    return client, proxy


def _slowlog(settings: dict[str, Any], count: int | None) -> int:
    try:
        client, proxy = _connected(settings)
        try:
            entries = proxy.slowlog(count)
        finally:
            proxy.close()
            client.close()
    except CyberDBError as exc:
        print(f"cyberdb: {exc}", file=sys.stderr)
        return 1
    for entry in entries:
        print(json.dumps(entry))
    return 0


def _info(settings: dict[str, Any], as_json: bool) -> int:
    try:
        client, proxy = _connected(settings)
        try:
            info = proxy.info()
        finally:
            proxy.close()
            client.close()
    except CyberDBError as exc:
        print(f"cyberdb: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(info, indent=2, sort_keys=True))
    else:
        for line in info_lines(info):
            print(line)
    return 0


def info_lines(info: dict[str, Any]) -> list[str]:
    """``proxy.info()`` as the lines ``cyberdb info`` prints."""
    memory, log, backup, save = info["memory"], info["append_log"], info["backup"], info["last_save"]
    lines = [f"cyberdb {info['version']} at {info['address']} (pid {info['pid']}), encrypt "
             f"{_on(info['encrypt'])}, TLS {_on(info['tls'])}, up {_duration(info['uptime'])}"]
    limit = f"max_memory {_mib(memory['max_memory'])}" if memory["max_memory"] else "no max_memory"
    over = " (over max_memory: writes are refused)" if memory["over_max_memory"] else ""
    rss = _mib(memory["rss"]) if memory["rss"] is not None else "unknown"
    lines.append(f"memory: {rss} resident, {limit}{over}")
    lines.append(f"clients: {info['connections']} connected, {info['unauthenticated']} in the handshake, "
                 f"{info['blocked']} blocked pops, {info['channels']} pub/sub channels")
    lines.append(f"commands: {info['commands']} since the start, {info['ops_per_sec']:.1f} ops/s (last few seconds)")
    tables = info["tables"]
    lines.append(f"tables: {len(tables)}, {info['expiring_keys']} keys with an expiry")
    shown = sorted(tables.items(), key=lambda item: (-item[1]["size"], item[0]))[:MAX_TABLES_SHOWN]
    if shown:
        width = max(4, *(len(str(t["size"])) for _name, t in shown))
        lines.append(f"  kind {'size':>{width}}  name")
        lines.extend(f"  {t['kind']:<4} {t['size']:>{width}}  {_name(name)}" for name, t in shown)
        if len(tables) > len(shown):
            lines.append(f"  ... and {len(tables) - len(shown)} smaller tables (cyberdb info --json lists all)")
    if log is None:
        lines.append("append log: off")
    else:
        synced = f"last fsync {_ago(log['last_fsync'])}" if log.get("last_fsync") is not None else "no fsync yet"
        state = "rewriting now" if log["rewriting"] else f"{log['rewrites']} rewrites"
        error = f", ERROR: {log['error']}" if log["error"] else ""
        lines.append(f"append log: {log['file']}, fsync {log['fsync']}, {_mib(log['size'])}, {log['records']} "
                     f"records, {synced}, {state}{error}")
    if backup is None:
        lines.append("backup: off")
    else:
        lines.append(f"backup: {backup['file']} every {backup['cycle']:g} s{' (saving now)' if backup['busy'] else ''}")
    if save is not None:
        outcome = f"ok in {save['seconds']:.2f} s" if save["ok"] else f"FAILED: {save['error']}"
        lines.append(f"last save: {save['file']} at {_when(save['time'])}, {outcome}")
    if info["slowlog"]:
        lines.append("slow commands (newest first):")
        for entry in info["slowlog"]:
            table = f" on {_name(entry['table'])}" if entry.get("table") is not None else ""
            lines.append(f"  {_when(entry['time'])}  {entry['seconds'] * 1000:8.1f} ms  {entry['command']}{table} "
                         f"from {entry['client']}")
    return lines


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _name(name: str) -> str:
    return name if name.isprintable() and name.strip() == name and name else repr(name)


def _when(unix: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(unix))


def _ago(unix: float) -> str:
    return f"{max(0.0, time.time() - unix):.1f} s ago"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s" if minutes else f"{seconds:.1f}s"


def _shell(settings: dict[str, Any]) -> int:
    import cyberdb

    try:
        client, proxy = _connected(settings)
    except CyberDBError as exc:
        print(f"cyberdb: {exc}", file=sys.stderr)
        return 1
    where = f"{settings['host']}:{settings['port']}"
    security = ", ".join(n for n, on in (("encrypted", settings.get("encrypt")), ("TLS", settings.get("tls"))) if on)
    banner = (f"CyberDB shell (cyberdb {__version__}, Python {sys.version.split()[0]}): connected to {where}"
              f"{f' ({security})' if security else ''}.\n`client`, `proxy` (connected) and `cyberdb` are defined, "
              "e.g. proxy.tables(), proxy.info(); Ctrl-D or exit() leaves.")
    console = code.InteractiveConsole({"client": client, "proxy": proxy, "cyberdb": cyberdb,
                                       "__name__": "__console__", "__doc__": None})
    interactive = sys.stdin.isatty()
    saved = getattr(sys, "ps1", None), getattr(sys, "ps2", None)
    if interactive:
        try:
            import readline  # noqa: F401 - line editing and history for input()
        except ImportError:
            pass
    else:  # scripted (stdin is a pipe or a file): stdout gets only what the code prints
        sys.ps1 = sys.ps2 = ""
    status = 0
    try:
        console.interact(banner=banner, exitmsg="")
    except SystemExit as exc:  # exit() / quit() / sys.exit(n) in the shell
        status = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    finally:
        proxy.close()
        client.close()
        for attr, value in zip(("ps1", "ps2"), saved, strict=True):
            if value is None:
                if hasattr(sys, attr):
                    delattr(sys, attr)
            else:
                setattr(sys, attr, value)
    return status


def _copy(args: argparse.Namespace) -> int:
    names = [name for name in args.tables.split(",") if name] if args.tables is not None else None
    if names is not None and not names:
        print("cyberdb: --tables names no table", file=sys.stderr)
        return 2
    if args.chunk < 1:
        print("cyberdb: --chunk must be at least 1", file=sys.stderr)
        return 2
    password = os.environ.get("CYBERDB_PASSWORD")
    stores = []
    progress = _CopyProgress()
    try:
        for url in (args.source, args.dest):
            stores.append(open_store(url, password))
        report = copy_tables(stores[0], stores[1], names, replace=args.replace, tag=args.tag, chunk=args.chunk,
                             progress=progress)
    except ValueError as exc:
        print(f"cyberdb: {exc}", file=sys.stderr)
        return 2
    except CyberDBError as exc:
        print(f"\ncyberdb: {exc}" if progress.open_line else f"cyberdb: {exc}", file=sys.stderr)
        return 1
    finally:
        for store in stores:
            store.close()
    for name in report.mismatched:
        print(f"cyberdb: table {_name(name)} differs at the destination after the copy", file=sys.stderr)
    verdict = f"{len(report.mismatched)} differ" if report.mismatched else "all equal"
    print(f"copied {len(report.copied)} table(s) from {stores[0].description} to {stores[1].description}, "
          f"verified: {verdict}", file=sys.stderr)
    return 1 if report.mismatched else 0


class _CopyProgress:
    """Writes ``copying NAME (CyberDict, 12,000 items) ... 50% ... done`` lines to stderr (a step every 10%)."""

    def __init__(self) -> None:
        self._shown = 0
        self.open_line = False  # a line was started and not ended (an error message then begins on a new line)

    def __call__(self, event: CopyEvent) -> None:
        if event.phase is Phase.START:
            self._shown = 0
            self._write(f"copying {_name(event.table)} ({event.kind}, {event.items:,} items) ...")
            self.open_line = True
        elif event.phase is Phase.CHUNK and event.items and event.copied < event.items:
            percent = event.copied * 100 // event.items // 10 * 10
            if percent > self._shown:
                self._shown = percent
                self._write(f" {percent}% ...")
        elif event.phase is Phase.DONE:
            self._write(" done\n")
            self.open_line = False

    @staticmethod
    def _write(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()


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
