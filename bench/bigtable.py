"""Big tables in pieces, CyberDB vs Redis: copying and iterating a table over the 64 MiB frame limit.

One table of N items of VALUE bytes (default 84,000 x 1,000 B: about 80 MiB) in each server, same run:
CyberDB `d.todict()` (dict.scan, 8 MiB pieces), `list(d)` (keys in pieces) and `repr(d)` (one short request),
against Redis `HGETALL`, `HSCAN` (COUNT 1000, as redis-py's `hscan_iter`) and `HKEYS` of one hash through
redis-py 8.  While each copy runs, a second client reads one small key in a loop: its longest wait is the stall
a copy imposes on everybody else (a single HGETALL of 80 MiB holds Redis for its whole duration).  Only
127.0.0.1; children stopped by PID (bench/_proc.py).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from _proc import HOST, Procs, free_port, install_signal_handlers, redis_server_argv, run_guarded, wait_port
from bench import PASSWORD_ENV

import cyberdb

HERE = Path(__file__).resolve().parent
PASSWORD = "bench-bigtable"
CHUNK = 5_000  # writes per pipeline while filling


class Probe(threading.Thread):
    """Reads one small key again and again; keeps the longest wait (seconds)."""

    def __init__(self, read: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.read, self.longest, self.stop = read, 0.0, threading.Event()

    def run(self) -> None:
        clock = time.perf_counter
        while not self.stop.is_set():
            start = clock()
            self.read()
            self.longest = max(self.longest, clock() - start)


def timed(fn: Callable[[], Any], probe_read: Callable[[], Any], rounds: int) -> tuple[float, float, Any]:
    """Median seconds of ``fn`` over ``rounds``, the longest stall of a concurrent reader, and the last result."""
    times, stalls, result = [], [], None
    for _ in range(rounds):
        probe = Probe(probe_read)
        probe.start()
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
        probe.stop.set()
        probe.join()
        stalls.append(probe.longest)
    return statistics.median(times), max(stalls), result


def run(args: argparse.Namespace, procs: Procs, tmp: Path) -> None:
    value = "v" * args.value
    rows: list[tuple[str, str, float, float]] = []
    port = free_port()
    server = procs.spawn("cyberdb", [sys.executable, str(HERE / "_cyberdb_server.py"), "--host", HOST, "--port",
                                     str(port)], tmp, {PASSWORD_ENV: PASSWORD})
    wait_port(server, port, 30)
    client = cyberdb.connect(HOST, port, password=PASSWORD)
    with client.get_proxy() as proxy, client.get_proxy() as prober:
        d = proxy.create_cyberdict("big")
        for start in range(0, args.n, CHUNK):
            with proxy.pipeline() as pipe:
                table = pipe.get_cyberdict("big")
                for i in range(start, min(args.n, start + CHUNK)):
                    table[f"key:{i}"] = value
        small = prober.create_cyberdict("small", {"x": 1})
        probe: Callable[[], Any] = lambda: small["x"]  # noqa: E731
        for label, fn in (("copy all (todict / HGETALL)", d.todict), ("keys (list(d) / HKEYS)", lambda: list(d)),
                          ("repr (repr(d) / -)", lambda: repr(d))):
            seconds, stall, result = timed(fn, probe, args.rounds)
            assert len(result) == args.n or label.startswith("repr"), (label, len(result))
            rows.append(("cyberdb", label, seconds, stall))
    client.close()
    procs.stop(server)

    port = free_port()
    rserver = procs.spawn("redis", redis_server_argv(port, tmp), tmp)
    wait_port(rserver, port, 30, ping=b"PING\r\n")
    r = redis.Redis(host=HOST, port=port)
    r2 = redis.Redis(host=HOST, port=port)
    r2.set("small", 1)
    for start in range(0, args.n, CHUNK):
        p = r.pipeline(transaction=False)
        p.hset("big", mapping={f"key:{i}": value for i in range(start, min(args.n, start + CHUNK))})
        p.execute()
    rprobe: Callable[[], Any] = lambda: r2.get("small")  # noqa: E731
    for label, fn in (("copy all (todict / HGETALL)", lambda: r.hgetall("big")),
                      ("copy in pieces (todict / HSCAN)", lambda: dict(r.hscan_iter("big", count=1000))),
                      ("keys (list(d) / HKEYS)", lambda: r.hkeys("big"))):
        seconds, stall, result = timed(fn, rprobe, args.rounds)
        assert len(result) == args.n, (label, len(result))
        rows.append(("redis", label, seconds, stall))
    procs.stop(rserver)

    mib = args.n * args.value / (1 << 20)
    print(f"\nbig table: {args.n:,} items x {args.value} B values (~{mib:.0f} MiB), median of {args.rounds} rounds; "
          "stall = longest wait of a second client reading one small key meanwhile")
    print(f"{'system':8} {'operation':34} {'seconds':>8} {'MiB/s':>8} {'max stall ms':>13}")
    for system, label, seconds, stall in rows:
        rate = "-" if label.startswith("repr") else f"{mib / seconds:8.0f}"
        print(f"{system:8} {label:34} {seconds:8.3f} {rate:>8} {stall * 1000:13.1f}")
    ours = {label: s for system, label, s, _ in rows if system == "cyberdb"}
    theirs = {label: s for system, label, s, _ in rows if system == "redis"}
    print("ratios, Redis seconds / CyberDB seconds (higher is better for CyberDB):")
    for label in ("copy all (todict / HGETALL)", "keys (list(d) / HKEYS)"):
        print(f"  {label:34} {theirs[label] / ours[label]:.2f}")
    scan = theirs["copy in pieces (todict / HSCAN)"] / ours["copy all (todict / HGETALL)"]
    print(f"  {'todict vs HSCAN COUNT 1000':34} {scan:.2f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=84_000, help="items (default 84,000)")
    p.add_argument("--value", type=int, default=1000, help="bytes per value (default 1000)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per operation (default 3)")
    args = p.parse_args(argv)
    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="cyberdb-bench-bigtable-") as d:
        procs = Procs(Path(d))
        return run_guarded(procs, "bench/bigtable.py", lambda: run(args, procs, Path(d)), show_logs=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
