"""Job queues, CyberDB vs Redis: blocking pops (started by bench/run queue).

Two measurements per system, in one client process with two connections and two threads:
  throughput  one producer thread appends N jobs, one worker thread takes them with a blocking pop
              (CyberDB `q.append(job)` / `q.pop(0, timeout=5)`, Redis RPUSH / BLPOP with timeout 5): jobs/s
              from the first append to the last pop.
  wake-up     the worker is already waiting on an empty list; the producer takes a timestamp and appends one
              job; the worker takes one when its pop returns: p50/p99 microseconds between the two.  Before each
              sample the producer pauses 1 ms after the worker said it is about to pop, so that the pop waits on
              the server (both systems alike; a benchmark, not a test).
Systems: CyberDB (bench/_cyberdb_server.py), redis-server with redis-py 8 (this venv) and redis-py 5.0.x
(--redis5-python, the interpreter bench/run makes).  Rounds are interleaved; medians are printed, with ratios.
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
import threading
import time
from pathlib import Path
from typing import Any

from _proc import HOST, Procs, free_port, install_signal_handlers, redis_server_argv, run_guarded, wait_port

HERE = Path(__file__).resolve().parent
PASSWORD_ENV = "CYBERDB_BENCH_PASSWORD"
PASSWORD = "bench-queue-password"
PAUSE_S = 0.001  # see the module docstring


# ---- the client side (run with --client, in the interpreter of the system measured) -------------------------------

class _Cyber:
    def __init__(self, port: int) -> None:
        import cyberdb

        self.client = cyberdb.connect(HOST, port, password=os.environ[PASSWORD_ENV])
        self.proxies = [self.client.get_proxy(), self.client.get_proxy()]
        for p in self.proxies:
            p.connect()
        self.version = f"cyberdb {cyberdb.__version__}"

    def reset(self, name: str) -> None:
        proxy = self.proxies[0]
        if name in proxy.tables():
            proxy.delete_table(name)
        proxy.create_cyberlist(name)

    def pusher(self, name: str) -> Any:
        return self.proxies[0].get_cyberlist(name).append

    def popper(self, name: str) -> Any:
        pop = self.proxies[1].get_cyberlist(name).pop
        return lambda: pop(0, timeout=5)

    def close(self) -> None:
        for p in self.proxies:
            p.close()
        self.client.close()


class _Redis:
    def __init__(self, port: int) -> None:
        import redis

        self.conns = [redis.Redis(host=HOST, port=port), redis.Redis(host=HOST, port=port)]
        self.version = f"redis-py {redis.__version__}"

    def reset(self, name: str) -> None:
        self.conns[0].delete(name)

    def pusher(self, name: str) -> Any:
        rpush = self.conns[0].rpush
        return lambda job: rpush(name, job)

    def popper(self, name: str) -> Any:
        blpop = self.conns[1].blpop
        return lambda: blpop([name], timeout=5)

    def close(self) -> None:
        for c in self.conns:
            c.close()


def throughput(impl: Any, jobs: int) -> float:
    """Jobs per second through one producer and one blocked-pop worker."""
    name = "bench-queue-throughput"
    impl.reset(name)
    push, pop = impl.pusher(name), impl.popper(name)
    got: list[Any] = []

    def work() -> None:
        for _ in range(jobs):
            got.append(pop())

    worker = threading.Thread(target=work)
    started = time.perf_counter()
    worker.start()
    for i in range(jobs):
        push(f"job-{i}")
    worker.join()
    took = time.perf_counter() - started
    assert len(got) == jobs and all(g is not None for g in got), "a pop timed out"
    return jobs / took


def wake_latency(impl: Any, samples: int) -> list[float]:
    """Microseconds from the append call to the return of the pop that was already waiting, per sample."""
    name = "bench-queue-latency"
    impl.reset(name)
    push, pop = impl.pusher(name), impl.popper(name)
    about_to_pop, popped = threading.Semaphore(0), threading.Semaphore(0)
    ends: list[float] = []

    def work() -> None:
        for _ in range(samples):
            about_to_pop.release()
            item = pop()
            ends.append(time.perf_counter())
            assert item is not None, "a pop timed out"
            popped.release()

    worker = threading.Thread(target=work)
    worker.start()
    out = []
    for i in range(samples):
        about_to_pop.acquire()
        time.sleep(PAUSE_S)
        start = time.perf_counter()
        push(f"job-{i}")
        popped.acquire()
        out.append((ends[-1] - start) * 1e6)
    worker.join()
    return out


def client_main(args: argparse.Namespace) -> int:
    impl = _Cyber(args.port) if args.client == "cyberdb" else _Redis(args.port)
    try:
        throughput(impl, min(args.jobs, 500))  # warm-up
        rate = throughput(impl, args.jobs)
        wake_latency(impl, min(args.samples, 50))
        lat = sorted(wake_latency(impl, args.samples))
    finally:
        impl.close()
    p50, p99 = lat[len(lat) // 2], lat[min(len(lat) - 1, int(len(lat) * 0.99))]
    Path(args.out).write_text(json.dumps({"jobs_s": rate, "p50_us": p50, "p99_us": p99, "version": impl.version}))
    return 0


# ---- the orchestrator ----------------------------------------------------------------------------------------------

SYSTEMS = [  # name, client kind, server, interpreter ("": this one; "redis5": --redis5-python), doc
    ("cyberdb", "cyberdb", "cyberdb", "", "CyberDB, pop(0, timeout=5) / append"),
    ("redis", "redis", "redis", "", "redis-server, BLPOP / RPUSH, redis-py 8"),
    ("redis-py5", "redis", "redis", "redis5", "redis-server, BLPOP / RPUSH, redis-py 5.0.x"),
]


def run(args: argparse.Namespace, procs: Procs, tmp: Path, results: dict[str, list[dict[str, Any]]]) -> None:
    env = {PASSWORD_ENV: PASSWORD}
    ports = {"cyberdb": free_port(), "redis": free_port()}
    cyber = procs.spawn("cyberdb-server", [sys.executable, str(HERE / "_cyberdb_server.py"), "--host", HOST,
                                           "--port", str(ports["cyberdb"])], tmp, env)
    wait_port(cyber, ports["cyberdb"], args.start_timeout)
    redis = procs.spawn("redis-server", redis_server_argv(ports["redis"], tmp), tmp)
    wait_port(redis, ports["redis"], args.start_timeout, b"*1\r\n$4\r\nPING\r\n")
    systems = [s for s in SYSTEMS if s[3] != "redis5" or args.redis5_python]
    for rnd in range(args.rounds):
        for name, kind, server, python, _doc in systems:
            out = tmp / f"{name}-{rnd}.json"
            argv = [args.redis5_python if python else sys.executable, str(Path(__file__).resolve()), "--client", kind,
                    "--port", str(ports[server]), "--jobs", str(args.jobs), "--samples", str(args.samples),
                    "--out", str(out)]
            procs.run(f"client-{name}", argv, HERE, timeout=600, env={**env, "PYTHONPATH": str(HERE)})
            results.setdefault(name, []).append(json.loads(out.read_text()))
            if not args.quiet:
                r = results[name][-1]
                print(f"round {rnd + 1} {name:<10} {r['jobs_s']:>9,.0f} jobs/s  wake p50 {r['p50_us']:.0f} µs"
                      f"  p99 {r['p99_us']:.0f} µs", file=sys.stderr)


def report(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> None:
    print()
    print(f"Job queues, CyberDB vs Redis  jobs={args.jobs}  wake-up samples={args.samples}  rounds={args.rounds}")
    print(f"python {platform.python_version()}  {platform.platform()}  cpus={os.cpu_count()}"
          f"  affinity={sorted(os.sched_getaffinity(0))}")
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    print(version)
    for name, _kind, _server, _python, doc in SYSTEMS:
        if name in results:
            print(f"  {name:<10} {doc}  [{results[name][0]['version']}]")
    print()
    head = f"{'system':<10} {'jobs/s':>10} {'wake p50 µs':>12} {'wake p99 µs':>12}"
    print(head)
    print("-" * len(head))
    med: dict[str, tuple[float, float, float]] = {}
    for name, rows in results.items():
        med[name] = (statistics.median(r["jobs_s"] for r in rows), statistics.median(r["p50_us"] for r in rows),
                     statistics.median(r["p99_us"] for r in rows))
        print(f"{name:<10} {med[name][0]:>10,.0f} {med[name][1]:>12.0f} {med[name][2]:>12.0f}")
    print()
    print("ratios, CyberDB / Redis (throughput: higher is better; wake-up latency: lower is better):")
    for base in ("redis", "redis-py5"):
        if "cyberdb" in med and base in med:
            c, r = med["cyberdb"], med[base]
            print(f"  vs {base:<10} jobs/s {c[0] / r[0]:.2f}   wake p50 {c[1] / r[1]:.2f}   wake p99 {c[2] / r[2]:.2f}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=20000, help="jobs through the queue per throughput run (20000)")
    p.add_argument("--samples", type=int, default=2000, help="wake-up latency samples per run (2000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed (3)")
    p.add_argument("--cpus", default="", help="pin this run and everything it starts (taskset-style); '' = no")
    p.add_argument("--redis5-python", default="", help="interpreter with redis==5.0.x for the redis-py 5 rows")
    p.add_argument("--start-timeout", type=float, default=30)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--client", choices=("cyberdb", "redis"), help=argparse.SUPPRESS)  # internal: one measurement
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.jobs < 1 or args.samples < 1 or args.rounds < 1:
        p.error("--jobs, --samples and --rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.client:
        return client_main(args)
    if args.cpus:
        from bench import _cpus

        os.sched_setaffinity(0, _cpus(args.cpus))
    install_signal_handlers()
    results: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="cyberdb-bench-queue-") as tmp_s:
        procs = Procs(Path(tmp_s))
        rc = run_guarded(procs, "queue", lambda: run(args, procs, Path(tmp_s), results), show_logs=True)
        if rc:
            return rc
    report(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
