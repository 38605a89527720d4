"""Server memory per small key: CyberDB vs redis-server (bench/run memory).

Starts a fresh CyberDB server (`python -m cyberdb serve --port P`, password from CYBERDB_PASSWORD) and a fresh
`redis-server --save '' --appendonly no`, then stores the same N string pairs `key:{i}` -> `value:{i}` in both:
in CyberDB one CyberDict through `d.update({...})` in batches, in Redis one hash through `HSET h mapping` in
batches on a pipeline. Each server's VmRSS (/proc/<pid>/status) is read after it is ready and connected with
its table or hash empty, and again once both hold N entries; bytes per key = RSS delta / N. Redis's own
count, the `used_memory` delta of INFO memory, is printed as a second number (it excludes allocator slack).

Everything listens on 127.0.0.1; every process started here is stopped by PID at the end, on errors and on
Ctrl-C too (bench/_proc.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _proc import HOST, BenchError, Procs, free_port, install_signal_handlers, redis_server_argv, run_guarded, wait_port

TABLE = "memory"


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of pid in bytes, from /proc/<pid>/status."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            number, unit = value.split()
            assert unit == "kB", line
            out[key] = int(number) * 1024
    return out


def _pairs(start: int, stop: int) -> dict[str, str]:
    return {f"key:{i}": f"value:{i}" for i in range(start, stop)}


class Memory:
    """One run: both servers, their clients, the fill and the numbers."""

    def __init__(self, args: argparse.Namespace, procs: Procs, tmp: Path) -> None:
        self.args = args
        self.procs = procs
        self.tmp = tmp
        self.rows: dict[str, dict[str, Any]] = {}
        self.info: list[str] = []

    def run(self) -> None:
        """Start both servers, measure empty, fill, check, measure full."""
        import redis

        import cyberdb

        n, batch = self.args.n, self.args.batch
        password = secrets.token_hex(16)
        cport = free_port()
        cyber = self.procs.spawn(
            "cyberdb-serve",
            [sys.executable, "-m", "cyberdb", "serve", "--host", HOST, "--port", str(cport)],
            self.tmp,
            {"CYBERDB_PASSWORD": password},
        )
        rport = free_port()
        argv = redis_server_argv(rport, self.tmp)
        rserv = self.procs.spawn("redis-server", argv, self.tmp)
        wait_port(cyber, cport, self.args.start_timeout)
        wait_port(rserv, rport, self.args.start_timeout, ping=b"*1\r\n$4\r\nPING\r\n")
        self.info.append(subprocess.run([argv[0], "--version"], capture_output=True, text=True).stdout.strip())

        client = cyberdb.connect(HOST, cport, password=password)
        r = redis.Redis(host=HOST, port=rport, decode_responses=True)
        try:
            with client.get_proxy() as proxy:
                proxy.create_cyberdict(TABLE)
                d = proxy.get_cyberdict(TABLE)
                r.ping()
                before = {"cyberdb": proc_status(cyber.pid), "redis": proc_status(rserv.pid)}
                used_before = int(r.info("memory")["used_memory"])

                t0 = time.perf_counter()
                for start in range(0, n, batch):
                    d.update(_pairs(start, min(n, start + batch)))
                cyber_s = time.perf_counter() - t0

                t0 = time.perf_counter()
                pipe = r.pipeline(transaction=False)
                for start in range(0, n, batch):
                    pipe.hset(TABLE, mapping=_pairs(start, min(n, start + batch)))
                    if len(pipe) >= 10:
                        pipe.execute()
                pipe.execute()
                redis_s = time.perf_counter() - t0

                # Both hold exactly the N pairs (and nothing was lost on the way) before we believe the numbers.
                last = f"key:{n - 1}"
                if len(d) != n or d["key:0"] != "value:0" or d[last] != f"value:{n - 1}":
                    raise BenchError(f"CyberDB holds {len(d)} keys, not {n}, or the wrong values")
                if r.hlen(TABLE) != n or r.hget(TABLE, "key:0") != "value:0" or r.hget(TABLE, last) != f"value:{n - 1}":
                    raise BenchError(f"Redis holds {r.hlen(TABLE)} fields, not {n}, or the wrong values")
                after = {"cyberdb": proc_status(cyber.pid), "redis": proc_status(rserv.pid)}
                mem = r.info("memory")
                used_after = int(mem["used_memory"])
                self.info.append(f"redis mem_allocator={mem.get('mem_allocator')}")
                self.info.append(f"redis hash encoding={r.object('encoding', TABLE)}")
        finally:
            client.close()
            r.close()
        for name, secs in (("cyberdb", cyber_s), ("redis", redis_s)):
            self.rows[name] = {
                "before": before[name]["VmRSS"],
                "after": after[name]["VmRSS"],
                "peak": after[name]["VmHWM"],
                "fill_s": secs,
            }
        self.rows["redis"]["used_delta"] = used_after - used_before
        self.rows["redis"]["used_before"] = used_before
        self.rows["redis"]["used_after"] = used_after

    def report(self) -> None:
        """The table and the ratios."""
        n = self.args.n
        print()
        print(f"Server memory per key: {n:,} string keys key:{{i}} -> value:{{i}}, batches of {self.args.batch:,}")
        print(f"python {platform.python_version()}  {platform.platform()}  cpus={os.cpu_count()}")
        print("  ".join(self.info + [f"cyberdb {importlib.metadata.version('cyberdb')}"]))
        print("  cyberdb  `python -m cyberdb serve`, one CyberDict filled with d.update({...})")
        print("  redis    redis-server --save '' --appendonly no, one hash filled with HSET mapping (pipelined)")
        print()
        mib = 1 << 20
        head = f"{'system':<8} {'RSS before':>11} {'RSS after':>11} {'peak RSS':>11} {'delta':>11}"
        head += f" {'bytes/key':>10} {'fill s':>7}"
        print(head)
        print("-" * len(head))
        per_key = {}
        for name, row in self.rows.items():
            delta = row["after"] - row["before"]
            per_key[name] = delta / n
            print(
                f"{name:<8} {row['before'] / mib:>7.1f} MiB {row['after'] / mib:>7.1f} MiB"
                f" {row['peak'] / mib:>7.1f} MiB {delta / mib:>7.1f} MiB {per_key[name]:>10.1f}"
                f" {row['fill_s']:>7.2f}"
            )
        used = self.rows["redis"]["used_delta"]
        print()
        print(
            f"redis INFO memory used_memory: {self.rows['redis']['used_before'] / mib:.1f} ->"
            f" {self.rows['redis']['used_after'] / mib:.1f} MiB, delta {used / mib:.1f} MiB = {used / n:.1f} bytes/key"
        )
        print(f"CyberDB/Redis bytes per key (RSS deltas): {per_key['cyberdb'] / per_key['redis']:.2f}")
        print(f"CyberDB RSS delta / Redis used_memory delta: {per_key['cyberdb'] / (used / n):.2f}")
        print("peak RSS = VmHWM: the high-water mark, which includes the transient buffers of the fill.")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="keys to store (1000000)")
    p.add_argument("--batch", type=int, default=10_000, help="keys per update/HSET (10000)")
    p.add_argument("--start-timeout", type=float, default=30, help="seconds for a server to start")
    args = p.parse_args(argv)
    if args.n < 1 or args.batch < 1:
        p.error("--n and --batch must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the measurement; returns the exit code."""
    args = parse_args(argv)
    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="cyberdb-memory-bench-") as tmp:
        procs = Procs(Path(tmp))
        memory = Memory(args, procs, Path(tmp))
        # show_logs: a client error (e.g. from cyberdb) also prints what the servers said
        rc = run_guarded(procs, "memory bench", memory.run, show_logs=True)
        if rc:
            return rc
    memory.report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
