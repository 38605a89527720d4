"""Publish/subscribe, CyberDB vs Redis: publish -> receive latency and throughput (started by bench/run pubsub).

One publisher and one subscriber, as two threads of one worker process (bench/_pubsub_worker.py), against
CyberDB (encrypt=False and encrypt=True) and redis-server PUBLISH/SUBSCRIBE through redis-py 8 (this venv) and
redis-py 5.0.x (--redis5-python).  Latency: one message in flight at a time, from before the publish call to
its arrival at the subscriber (p50/p99 µs).  Throughput: messages published back to back, each a synchronous
publish call, received per second.  Rounds are interleaved; medians are printed, with the ratios to Redis.
Everything listens on 127.0.0.1 only and is stopped by PID (bench/_proc.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _proc import HOST, BenchError, Procs, free_port, install_signal_handlers, redis_server_argv, run_guarded, wait_port

HERE = Path(__file__).resolve().parent
PASSWORD_ENV = "CYBERDB_BENCH_PASSWORD"
PASSWORD = "bench-password"
# name -> (server, worker --system, worker flags, interpreter: "" = this one, "redis5" = --redis5-python)
SYSTEMS = {
    "cyberdb": ("cyberdb", "cyberdb", (), ""),
    "cyberdb+enc": ("cyberdb+enc", "cyberdb", ("--encrypt",), ""),
    "redis": ("redis", "redis", (), ""),
    "redis-py5": ("redis", "redis", (), "redis5"),
}


def start_servers(procs: Procs, tmp: Path, timeout: float) -> tuple[dict[str, int], str]:
    """Start CyberDB plain, CyberDB encrypt=True and redis-server; return their ports and Redis's version."""
    ports = {}
    env = {PASSWORD_ENV: PASSWORD}
    for key, extra in (("cyberdb", []), ("cyberdb+enc", ["--encrypt"])):
        port = free_port()
        argv = [sys.executable, str(HERE / "_cyberdb_server.py"), "--host", HOST, "--port", str(port), *extra]
        wait_port(procs.spawn(key, argv, tmp, env), port, timeout)
        ports[key] = port
    port = free_port()
    argv = redis_server_argv(port, tmp)
    wait_port(procs.spawn("redis", argv, tmp), port, timeout, b"*1\r\n$4\r\nPING\r\n")
    ports["redis"] = port
    version = subprocess.run([argv[0], "--version"], capture_output=True, text=True).stdout.strip()
    return ports, version


def measure(procs: Procs, tmp: Path, args: argparse.Namespace, name: str, port: int) -> dict[str, float | str]:
    """Run one worker for system ``name`` and return its JSON result."""
    _server, system, flags, interpreter = SYSTEMS[name]
    python = args.redis5_python if interpreter == "redis5" else sys.executable
    argv = [python, str(HERE / "_pubsub_worker.py"), "--system", system, "--port", str(port), *flags,
            "--n", str(args.n), "--warmup", str(args.warmup), "--value-size", str(args.value_size)]
    proc = procs.spawn(f"worker-{name}", argv, tmp, {PASSWORD_ENV: PASSWORD}, pipes=True)
    try:
        out, _err = proc.popen.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name}: the worker did not finish within {args.timeout:.0f} s") from None
    finally:
        procs.stop(proc)
    if proc.popen.returncode != 0:
        raise BenchError(f"{name}: the worker exited with code {proc.popen.returncode}")
    result: dict[str, float | str] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def report(args: argparse.Namespace, names: list[str], results: dict[str, list[dict[str, float | str]]],
           redis_version: str) -> None:
    print()
    print(f"Publish/subscribe, CyberDB vs Redis  messages={args.n}  warmup={args.warmup}  rounds={args.rounds}"
          f"  value={args.value_size} B  one publisher, one subscriber (threads of one process)")
    print(f"python {platform.python_version()}  {platform.platform()}  cpus={os.cpu_count()}"
          f"  affinity={sorted(os.sched_getaffinity(0))}")
    print(redis_version)
    print()
    head = f"{'system':<13} {'client':<22} {'p50 µs':>8} {'p99 µs':>8} {'msgs/s':>10}"
    print(head)
    print("-" * len(head))

    def med(name: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[name])

    for name in names:
        print(f"{name:<13} {results[name][0]['version']!s:<22} {med(name, 'p50_us'):>8.1f} {med(name, 'p99_us'):>8.1f}"
              f" {med(name, 'msgs_s'):>10,.0f}")
    print()
    print("ratios (CyberDB / Redis; latency: lower is better, throughput: higher is better):")
    for mine in ("cyberdb", "cyberdb+enc"):
        for base in ("redis", "redis-py5"):
            if base in results:
                print(f"  {mine + ' / ' + base:<26} p50 {med(mine, 'p50_us') / med(base, 'p50_us'):.2f}"
                      f"   p99 {med(mine, 'p99_us') / med(base, 'p99_us'):.2f}"
                      f"   msgs/s {med(mine, 'msgs_s') / med(base, 'msgs_s'):.2f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000, help="messages per measurement (20000)")
    p.add_argument("--warmup", type=int, default=1000, help="untimed latency messages first (1000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed (3)")
    p.add_argument("--value-size", type=int, default=32, help="bytes per message (32; at least 20)")
    p.add_argument("--cpus", default="", help="pin this run and everything it starts (taskset-style); '' = no")
    p.add_argument("--redis5-python", default="", help="interpreter with redis==5.0.x for the redis-py 5 row")
    p.add_argument("--start-timeout", type=float, default=30)
    p.add_argument("--timeout", type=float, default=600, help="seconds one worker may take")
    args = p.parse_args(argv)
    if args.n < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--n and --rounds must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpus:
        from bench import _cpus

        os.sched_setaffinity(0, _cpus(args.cpus))  # children inherit it, like `taskset -c 0 bench/run`
    install_signal_handlers()
    names = [n for n in SYSTEMS if n != "redis-py5" or args.redis5_python]
    results: dict[str, list[dict[str, float | str]]] = {n: [] for n in names}
    version = [""]
    with tempfile.TemporaryDirectory(prefix="cyberdb-bench-pubsub-") as tmp_s:
        tmp = Path(tmp_s)
        procs = Procs(tmp)

        def body() -> None:
            ports, version[0] = start_servers(procs, tmp, args.start_timeout)
            for r in range(args.rounds):
                for name in names:
                    result = measure(procs, tmp, args, name, ports[SYSTEMS[name][0]])
                    results[name].append(result)
                    print(f"round {r + 1} {name}: {result}", file=sys.stderr)

        rc = run_guarded(procs, "pubsub", body)
        if rc:
            return rc
    report(args, names, results, version[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
