"""Active expiry, CyberDB vs Redis: N keys expiring together, reclaimed with nobody reading them (bench/run expiry).

For each server in turn (same machine, same run): write N keys in pipelines, each with the TTL that makes them
all expire 1 s after the last write (estimated from the first pipeline's speed, whose own keys get 1 s; at least
1 s), then, from the last write on, probe the server with one small read after another from a second connection
(the longest and the p99.9 wait are the stall a client sees while the server removes the expired keys) and sample
the server's resident memory every 50 ms.  Reports the memory before, at the peak and after, the seconds from the last
deadline until memory settles (and, for Redis, until DBSIZE is 0), and the stalls.
CyberDB: `d.set(k, v, ttl=t)` in one table; Redis: `SET k v PX t`.  Only 127.0.0.1; children stopped by
PID (bench/_proc.py).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis
from _proc import HOST, Procs, free_port, install_signal_handlers, redis_server_argv, run_guarded, wait_port
from bench import PASSWORD_ENV

import cyberdb

HERE = Path(__file__).resolve().parent
PASSWORD = "bench-expiry"
CHUNK = 10_000  # writes per pipeline


def rss(pid: int) -> int:
    """Resident memory of process ``pid`` in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class Probe(threading.Thread):
    """Reads one small key again and again; keeps every wait (seconds)."""

    def __init__(self, read: Any) -> None:
        super().__init__(daemon=True)
        self.read, self.waits, self.stop = read, [], threading.Event()

    def run(self) -> None:
        clock = time.perf_counter
        while not self.stop.is_set():
            start = clock()
            self.read()
            self.waits.append(clock() - start)


def fill_together(n: int, write_chunk: Any) -> float:
    """Write ``n`` keys in chunks, ``write_chunk(start, stop, ttl)``, so that all expire about 1 s after the last
    write; return the last deadline."""
    started = time.time()
    write_chunk(0, min(n, CHUNK), 1.0)  # the first chunk times the rest (its keys expire during the writes)
    estimate = started + (time.time() - started) * n / min(n, CHUNK) * 1.2 + 1.0
    deadline = estimate
    for start in range(CHUNK, n, CHUNK):
        ttl = max(1.0, estimate - time.time())
        deadline = max(deadline, time.time() + ttl)
        write_chunk(start, min(n, start + CHUNK), ttl)
    return deadline


def measure(name: str, pid: int, fill: Any, probe_read: Any, count: Any, n: int, limit: float) -> dict[str, Any]:
    """Fill, then watch memory and stalls for ``limit`` seconds after the last deadline."""
    base = rss(pid)
    started = time.time()
    last_deadline = fill(n)
    filled = time.time()
    probe = Probe(probe_read)
    probe.start()
    peak, empty_at = rss(pid), None
    samples: list[tuple[float, int]] = []  # (time, rss) from the last deadline on
    while time.time() < last_deadline + limit:
        now_rss = rss(pid)
        peak = max(peak, now_rss)
        if time.time() > last_deadline:
            samples.append((time.time(), now_rss))
        if empty_at is None and time.time() > last_deadline and count is not None and count() == 0:
            empty_at = time.time()
        time.sleep(0.05)
    probe.stop.set()
    probe.join()
    final = samples[-1][1] if samples else rss(pid)
    # reclaimed: the first moment memory came within 2% of the peak of where it settled
    reclaimed_at = next((t for t, r in samples if r - final <= 0.02 * peak), None)
    waits = sorted(probe.waits)
    return {"system": name, "fill_s": filled - started, "base": base, "peak": peak, "after": final,
            "reclaim_s": None if reclaimed_at is None else reclaimed_at - last_deadline,
            "empty_s": None if empty_at is None else empty_at - last_deadline,
            "max_ms": waits[-1] * 1000 if waits else 0.0,
            "p999_ms": waits[int(len(waits) * 0.999)] * 1000 if waits else 0.0, "probes": len(waits)}


def run(args: argparse.Namespace, procs: Procs, tmp: Path) -> None:
    results = []
    port = free_port()
    server = procs.spawn("cyberdb", [sys.executable, str(HERE / "_cyberdb_server.py"), "--host", HOST, "--port",
                                     str(port)], tmp, {PASSWORD_ENV: PASSWORD})
    wait_port(server, port, 30)
    client = cyberdb.connect(HOST, port, password=PASSWORD)
    with client.get_proxy() as proxy:
        proxy.create_cyberdict("cache")
        proxy.create_cyberdict("other", {"x": 1})
        other = proxy.get_cyberdict("other")

        def chunk(start: int, stop: int, ttl: float) -> None:
            with proxy.pipeline() as pipe:
                cache = pipe.get_cyberdict("cache")
                for i in range(start, stop):
                    cache.set(f"key:{i}", "v" * 32, ttl=ttl)

        def fill(n: int) -> float:
            return fill_together(n, chunk)

        with client.get_proxy() as probe_proxy:
            probe_other = probe_proxy.get_cyberdict("other")
            results.append(measure("cyberdb", server.pid, fill, lambda: probe_other["x"], None, args.n, args.limit))
        results[-1]["left"] = len(proxy.get_cyberdict("cache"))
        del other
    client.close()
    procs.stop(server)

    port = free_port()
    rserver = procs.spawn("redis", redis_server_argv(port, tmp), tmp)
    wait_port(rserver, port, 30, ping=b"PING\r\n")
    r = redis.Redis(host=HOST, port=port)
    r2 = redis.Redis(host=HOST, port=port)
    r.set("other", 1)

    def rchunk(start: int, stop: int, ttl: float) -> None:
        p = r.pipeline(transaction=False)
        for i in range(start, stop):
            p.set(f"key:{i}", "v" * 32, px=int(ttl * 1000))
        p.execute()

    def rfill(n: int) -> float:
        return fill_together(n, rchunk)

    results.append(measure("redis", rserver.pid, rfill, lambda: r2.get("other"),
                           lambda: r.dbsize() - 1, args.n, args.limit))
    results[-1]["left"] = r.dbsize() - 1
    print(f"\nactive expiry: {args.n:,} keys with a 1 s TTL, nobody reading them; a second client reads one other key"
          " in a loop (its longest wait = the longest stall)")
    print(f"{'system':8} {'fill s':>7} {'RSS before':>11} {'peak':>9} {'after':>9} {'reclaimed s':>12} "
          f"{'count 0 s':>10} {'max stall ms':>13} {'p99.9 ms':>9} {'left':>6}")
    mib = 1 << 20
    for res in results:
        reclaim = "-" if res["reclaim_s"] is None else f"{res['reclaim_s']:.2f}"
        empty = "-" if res["empty_s"] is None else f"{res['empty_s']:.2f}"
        print(f"{res['system']:8} {res['fill_s']:7.2f} {res['base'] / mib:9.0f}Mi {res['peak'] / mib:7.0f}Mi "
              f"{res['after'] / mib:7.0f}Mi {reclaim:>12} {empty:>10} {res['max_ms']:13.2f} {res['p999_ms']:9.2f} "
              f"{res['left']:6}")
    print("reclaimed: seconds after the last key's deadline until RSS settled (within 2% of the peak of where it\n"
          "stays; Python's and the C allocator keep some freed memory, so 'after' is above 'before');\n"
          "count 0: Redis DBSIZE; left: keys still there at the end (CyberDB: len(), which removes what is due)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000, help="keys (default 1,000,000)")
    p.add_argument("--limit", type=float, default=20.0,
                   help="seconds to watch after the last deadline (default 20)")
    args = p.parse_args(argv)
    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="cyberdb-bench-expiry-") as d:
        procs = Procs(Path(d))
        return run_guarded(procs, "bench/expiry.py", lambda: run(args, procs, Path(d)), show_logs=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
