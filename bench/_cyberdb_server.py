"""Run one CyberDB server in the foreground for bench.py, through the public API only.

With `--aof FILE --fsync POLICY` (bench/persistence.py) every write goes to an append-only log first.
The password comes from the environment (CYBERDB_BENCH_PASSWORD), not argv, so `ps` never shows it.
bench.py waits for the port to accept connections and stops this process by PID.
"""

from __future__ import annotations

import argparse
import os
import sys

import cyberdb

PASSWORD_ENV = "CYBERDB_BENCH_PASSWORD"


def main(argv: list[str] | None = None) -> int:
    """Serve until killed."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--encrypt", action="store_true")
    parser.add_argument("--aof", help="append-only log file (none by default)")
    parser.add_argument("--fsync", default="everysec", choices=("always", "everysec", "no"))
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (bench/tls.py); needs --tls-key")
    parser.add_argument("--tls-key")
    args = parser.parse_args(argv)
    db = cyberdb.Server()
    if args.aof:
        db.set_append_log(args.aof, fsync=args.fsync)
    if args.tls_cert:
        db.set_tls(args.tls_cert, args.tls_key)
    db.run(host=args.host, port=args.port, password=os.environ[PASSWORD_ENV], encrypt=args.encrypt)
    return 0


if __name__ == "__main__":
    sys.exit(main())
