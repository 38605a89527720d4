"""asyncio clients, CyberDB vs Redis: ops/s of cyberdb.aio and redis.asyncio with 1 and 50 tasks (bench/run aio).

The same operations on both sides: ``set`` (``await d.setitem(k, v)`` / ``HSET``), ``get`` (``await d.get(k)``
/ ``HGET``), ``append`` (``await l.append(v)`` / ``RPUSH``) and ``len`` (``await l.len()`` / ``LLEN``), each by
1 task and by 50 concurrent tasks of one process and one event loop.  With 50 tasks, each CyberDB task holds a
proxy of its own (a pooled connection, ``async with client.get_proxy()``), and the Redis tasks share one
``redis.asyncio.Redis`` (its pool gives each command in flight a connection of its own); ``cyberdb-shared`` is
CyberDB with the 50 tasks sharing one proxy (their requests pipelined on one connection).  Redis clients are
redis-py 8 (this venv) and 5.0.x (``--redis5-python``), both with hiredis.  Rounds are interleaved; medians
are printed, with the ratios to Redis.  Each measurement runs in a fresh worker process (this file with
``--worker``); servers listen on 127.0.0.1 only and are stopped by PID (bench/_proc.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PASSWORD_ENV = "CYBERDB_BENCH_PASSWORD"
PASSWORD = "bench-password"
OPERATIONS = ("set", "get", "append", "len")
# name -> (server, worker --system, interpreter: "" = this one, "redis5" = --redis5-python)
SYSTEMS = {
    "cyberdb": ("cyberdb", "cyberdb", ""),
    "cyberdb-shared": ("cyberdb", "cyberdb-shared", ""),
    "redis": ("redis", "redis", ""),
    "redis-py5": ("redis", "redis", "redis5"),
}


# ---- the worker: one system, every operation and concurrency, printed as one JSON line ---------------------------


async def _cyberdb_ops(port: int, tasks: int, shared: bool) -> tuple[Any, Any, str]:
    import cyberdb
    import cyberdb.aio as aio

    client = await aio.connect("127.0.0.1", port, password=os.environ[PASSWORD_ENV], max_connections=tasks + 1)
    proxies = [client.get_proxy() for _ in range(1 if shared else tasks)]
    for proxy in proxies:
        await proxy.connect()
    name = f"bench-{os.getpid()}"
    d = await proxies[0].create_cyberdict(name + "-d")
    await proxies[0].create_cyberlist(name + "-l")
    handles = [(await p.get_cyberdict(name + "-d"), await p.get_cyberlist(name + "-l")) for p in proxies]

    def op(kind: str, task: int) -> Any:
        d, lst = handles[0 if shared else task]
        if kind == "set":
            return lambda i: d.setitem(f"k{i}", "v" * 32)
        if kind == "get":
            return lambda i: d.get(f"k{i % 1000}")
        if kind == "append":
            return lambda i: lst.append("v" * 32)
        return lambda i: lst.len()

    async def close() -> None:
        await proxies[0].delete_table(name + "-d")
        await proxies[0].delete_table(name + "-l")
        for proxy in proxies:
            await proxy.close()
        await client.close()

    del d
    return op, close, f"cyberdb {cyberdb.__version__}"


async def _redis_ops(port: int, tasks: int) -> tuple[Any, Any, str]:
    import redis
    import redis.asyncio

    r = redis.asyncio.Redis(host="127.0.0.1", port=port, max_connections=tasks + 1)
    await r.ping()
    name = f"bench-{os.getpid()}"

    def op(kind: str, task: int) -> Any:
        if kind == "set":
            return lambda i: r.hset(name + "-d", f"k{i}", "v" * 32)
        if kind == "get":
            return lambda i: r.hget(name + "-d", f"k{i % 1000}")
        if kind == "append":
            return lambda i: r.rpush(name + "-l", "v" * 32)
        return lambda i: r.llen(name + "-l")

    async def close() -> None:
        await r.delete(name + "-d", name + "-l")
        await r.aclose() if hasattr(r, "aclose") else await r.close()

    return op, close, f"redis-py {redis.__version__}"


async def _worker(system: str, port: int, ops: int, tasks_list: list[int], warmup: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    version = ""
    for tasks in tasks_list:
        if system == "redis":
            op, close, version = await _redis_ops(port, tasks)
        else:
            op, close, version = await _cyberdb_ops(port, tasks, shared=system == "cyberdb-shared")
        for kind in OPERATIONS:
            async def run(task: int, n: int, kind: str = kind, op: Any = op, tasks: int = tasks) -> None:
                call = op(kind, task)
                for i in range(task, n * tasks, tasks):  # task t makes keys t, t + tasks, t + 2 * tasks, ...
                    await call(i)

            await asyncio.gather(*(run(t, max(1, warmup // tasks)) for t in range(tasks)))
            per_task = max(1, ops // tasks)
            start = time.perf_counter()
            await asyncio.gather(*(run(t, per_task) for t in range(tasks)))
            elapsed = time.perf_counter() - start
            result[f"{kind}/{tasks}"] = per_task * tasks / elapsed
        await close()
    result["version"] = version
    return result


def worker_main(args: argparse.Namespace) -> int:
    """Measure one system and print the ops/s as one JSON line."""
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()
    result = asyncio.run(_worker(args.system, args.port, args.ops, [int(t) for t in args.tasks.split(",")],
                                 args.warmup))
    print(json.dumps(result))
    return 0


# ---- the driver ----------------------------------------------------------------------------------------------------


def start_servers(procs: Any, tmp: Path, timeout: float) -> tuple[dict[str, int], str]:
    """Start a CyberDB server and redis-server; return their ports and Redis's version."""
    from _proc import HOST, free_port, redis_server_argv, wait_port

    ports = {}
    port = free_port()
    argv = [sys.executable, str(HERE / "_cyberdb_server.py"), "--host", HOST, "--port", str(port)]
    wait_port(procs.spawn("cyberdb", argv, tmp, {PASSWORD_ENV: PASSWORD}), port, timeout)
    ports["cyberdb"] = port
    port = free_port()
    argv = redis_server_argv(port, tmp)
    wait_port(procs.spawn("redis", argv, tmp), port, timeout, b"*1\r\n$4\r\nPING\r\n")
    ports["redis"] = port
    version = subprocess.run([argv[0], "--version"], capture_output=True, text=True).stdout.strip()
    return ports, version


def measure(procs: Any, tmp: Path, args: argparse.Namespace, name: str, port: int) -> dict[str, Any]:
    """Run one worker for system ``name`` and return its JSON result."""
    from _proc import BenchError

    _server, system, interpreter = SYSTEMS[name]
    python = args.redis5_python if interpreter == "redis5" else sys.executable
    loop = args.loop if interpreter == "" else "asyncio"  # (the redis-py 5 venv has no uvloop)
    argv = [python, str(Path(__file__).resolve()), "--worker", "--system", system, "--port", str(port),
            "--ops", str(args.ops), "--tasks", args.tasks, "--warmup", str(args.warmup), "--loop", loop]
    proc = procs.spawn(f"worker-{name}", argv, tmp, {PASSWORD_ENV: PASSWORD}, pipes=True)
    try:
        out, _err = proc.popen.communicate(timeout=args.timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{name}: the worker did not finish within {args.timeout:.0f} s") from None
    finally:
        procs.stop(proc)
    if proc.popen.returncode != 0:
        raise BenchError(f"{name}: the worker exited with code {proc.popen.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def report(args: argparse.Namespace, names: list[str], results: dict[str, list[dict[str, Any]]],
           redis_version: str) -> None:
    tasks = [int(t) for t in args.tasks.split(",")]
    print()
    print(f"asyncio clients, CyberDB vs Redis  ops={args.ops} per measurement  rounds={args.rounds}  loop={args.loop}"
          f" (redis-py 5: asyncio)  value=32 B")
    print(f"python {platform.python_version()}  {platform.platform()}  cpus={os.cpu_count()}"
          f"  affinity={sorted(os.sched_getaffinity(0))}")
    print(redis_version)
    print()

    def med(name: str, key: str) -> float:
        return statistics.median(float(r[key]) for r in results[name])

    head = f"{'ops/s':<16} {'client':<22}" + "".join(f" {f'{k}/{t}':>11}" for t in tasks for k in OPERATIONS)
    print(head)
    print("-" * len(head))
    for name in names:
        cells = "".join(f" {med(name, f'{k}/{t}'):>11,.0f}" for t in tasks for k in OPERATIONS)
        print(f"{name:<16} {results[name][0]['version']!s:<22}{cells}")
    print()
    print("ratios (CyberDB / Redis, higher is better; column = operation/tasks):")
    for mine in ("cyberdb", "cyberdb-shared"):
        for base in ("redis", "redis-py5"):
            if mine in results and base in results:
                cells = "".join(f" {med(mine, f'{k}/{t}') / med(base, f'{k}/{t}'):>11.2f}"
                                for t in tasks for k in OPERATIONS)
                print(f"{mine + ' / ' + base:<39}{cells}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=int, default=20000, help="operations per measurement, over all tasks (20000)")
    p.add_argument("--tasks", default="1,50", help="concurrent tasks, comma-separated (1,50)")
    p.add_argument("--warmup", type=int, default=1000, help="untimed operations first (1000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are printed (3)")
    p.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="event loop of the workers")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated, of {', '.join(SYSTEMS)}")
    p.add_argument("--cpus", default="", help="pin this run and everything it starts (taskset-style); '' = no")
    p.add_argument("--redis5-python", default="", help="interpreter with redis==5.0.x for the redis-py 5 row")
    p.add_argument("--start-timeout", type=float, default=30)
    p.add_argument("--timeout", type=float, default=600, help="seconds one worker may take")
    # worker mode (started by the driver)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--system", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.ops < 1 or args.rounds < 1 or args.warmup < 0:
        p.error("--ops and --rounds must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args)
    from _proc import Procs, install_signal_handlers, run_guarded

    if args.cpus:
        from bench import _cpus

        os.sched_setaffinity(0, _cpus(args.cpus))  # children inherit it, like `taskset -c 0 bench/run`
    install_signal_handlers()
    names = [n for n in args.systems.split(",") if n != "redis-py5" or args.redis5_python]
    unknown = [n for n in names if n not in SYSTEMS]
    if unknown:
        print(f"unknown systems: {unknown}", file=sys.stderr)
        return 2
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    version = [""]
    with tempfile.TemporaryDirectory(prefix="cyberdb-bench-aio-") as tmp_s:
        tmp = Path(tmp_s)
        procs = Procs(tmp)

        def body() -> None:
            ports, version[0] = start_servers(procs, tmp, args.start_timeout)
            for r in range(args.rounds):
                for name in names:
                    result = measure(procs, tmp, args, name, ports[SYSTEMS[name][0]])
                    results[name].append(result)
                    print(f"round {r + 1} {name}: {result}", file=sys.stderr)

        rc = run_guarded(procs, "aio", body)
        if rc:
            return rc
    report(args, names, results, version[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
