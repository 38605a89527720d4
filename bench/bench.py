"""CyberDB vs redis-server + redis-py, side by side in one run (normally started by bench/run).

This file owns the orchestration: it starts every server in its own process on a free 127.0.0.1 port,
drives client worker processes (_worker.py, one connection each), interleaves the systems in every round,
and prints ops/s, p50/p99 latency and the ratio to the baseline system. Everything it starts it stops by
PID, on success, on error and on Ctrl-C; children also get SIGTERM if this process dies (bench/_proc.py).

Rules that keep the numbers comparable:
- servers and clients are separate processes (no shared GIL); every system runs the same keys and values;
- within a round the systems run back to back for each (op, clients), in an order rotated every round,
  so drift hits all of them; ratios are computed per round and the median is printed;
- aggregate ops/s = total ops of all clients / (last client's end - first client's start); for pipe_* an
  op is one call of a pipeline, so the ratio compares calls, while p50/p99 and round trips are per pipeline.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import secrets
import select
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _proc import (
    HOST,
    BenchError,
    Proc,
    Procs,
    free_port,
    install_signal_handlers,
    redis_server_argv,
    run_guarded,
    wait_port,
)
from _worker import MIN_PIPE_UNITS, PIPELINE_CALLS, PROBE_UNITS

HERE = Path(__file__).resolve().parent
PASSWORD_ENV = "CYBERDB_BENCH_PASSWORD"
OPS = ("set", "get", "len", "append", "index")  # what each one does per system: bench/README.md
# the atomic-update features; opt-in with --operations, and left out of the geometric mean
ATOMIC_OPS = ("incr", "pipe_set", "pipe_get", "transact", "lock", "ref_append", "set_ttl")
_PIPE_NOTE = (
    f"pipe_*: ops/s counts calls, {PIPELINE_CALLS} per pipeline, so the ratio is per call; p50/p99 are per pipeline;\n"
    f"        pipelines per client = max({MIN_PIPE_UNITS}, --ops // {PIPELINE_CALLS})"
)
NOTES = {  # printed under the table when the op ran
    "pipe_set": _PIPE_NOTE,
    "pipe_get": _PIPE_NOTE,
    "transact": "transact: 2 reads + 2 writes; cyberdb: proxy.transact (2 speculative reads, 1 commit);\n"
    "          redis: WATCH, HGET, HGET, then MULTI, HSET, HSET, EXEC in one pipeline",
    "lock": "lock: acquire + release, uncontended (redis-py: SET NX PX, then a Lua release script)",
    "ref_append": 'ref_append: cyberdb appends to sessions["s1"]["cart"] in place; plain Redis has no nested\n'
    "            documents, so redis does RPUSH cart:s1",
    "set_ttl": "set_ttl: cyberdb d.set(key, value, ttl=60) on a table; redis SET key value EX 60 (a key per entry:\n"
    "         hash fields expire only from Redis 7.4)",
}


@dataclass(frozen=True)
class System:
    """One column of the comparison: a client (kind + interpreter) talking to one server."""

    name: str
    kind: str  # "cyberdb" | "redis" | "echo": which adapter _worker.py uses
    server: str  # key into SERVERS
    python: str = ""  # "" = this interpreter, else the name of a --*-python option
    doc: str = ""
    client_args: tuple[str, ...] = ()  # extra _worker.py arguments


# Server flavours: key -> (program, extra arguments). Systems sharing a key share one server process.
SERVERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "cyberdb": ("cyberdb", ()),
    "cyberdb+enc": ("cyberdb", ("--encrypt",)),
    "redis": ("redis", ()),
    "echo": ("echo", ()),
}

# Variants are data: a new comparison (another client version, another server flag) is one more line.
SYSTEMS = [
    System("cyberdb", "cyberdb", "cyberdb", doc="CyberDB, encrypt=False"),
    System("cyberdb+enc", "cyberdb", "cyberdb+enc", doc="CyberDB, encrypt=True", client_args=("--encrypt",)),
    System("redis", "redis", "redis", doc="redis-server + redis-py 8 (this venv)"),
    System("redis-py5", "redis", "redis", python="redis5_python", doc="same redis-server, redis-py 5.0.x"),
]
ECHO = System("tcp-echo", "echo", "echo", doc="raw asyncio TCP echo, blocking client, same payload size")


@dataclass
class Sample:
    """One measurement: one system, one op, one client count, one round."""

    rnd: int
    ops_s: float
    p50_us: float
    p99_us: float
    n: int  # timed units (pipelines for pipe_*) of all clients
    trips: float = math.nan  # round trips per unit, counted on PROBE_UNITS untimed units


class Worker:
    """bench.py's end of one _worker.py process: JSON lines with a deadline on every read."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.buf = bytearray()  # read but not yet returned

    def send(self, msg: dict[str, Any]) -> None:
        stdin = self.proc.popen.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(msg).encode() + b"\n")
            stdin.flush()
        except BrokenPipeError:
            raise BenchError(f"worker {self.proc.name} is gone (exit {self.proc.popen.poll()})") from None

    def recv(self, deadline: float) -> dict[str, Any]:
        stdout = self.proc.popen.stdout
        assert stdout is not None
        fd = stdout.fileno()
        buf = self.buf
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchError(f"worker {self.proc.name} did not answer in time (--timeout)")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    code = self.proc.popen.wait()
                    raise BenchError(f"worker {self.proc.name} exited with {code} without answering")
                buf += chunk
        line, _, rest = bytes(buf).partition(b"\n")
        self.buf = bytearray(rest)
        msg: dict[str, Any] = json.loads(line)
        if "error" in msg:
            raise BenchError(f"worker {self.proc.name} failed:\n{msg['error']}")
        return msg


class Bench:
    """One run: servers, worker pools, rounds, results."""

    def __init__(
        self,
        args: argparse.Namespace,
        procs: Procs,
        tmp: Path,
        servers: dict[str, tuple[str, tuple[str, ...]]] | None = None,
    ) -> None:
        self.args = args
        self.servers = SERVERS if servers is None else servers  # bench/persistence.py brings its own flavours
        self.procs = procs
        self.tmp = tmp  # the children's cwd, redis-server's --dir and the servers' logs
        self.env = {PASSWORD_ENV: secrets.token_hex(16)}
        self.server_cpus = _cpus(args.server_cpus) or None
        self.client_cpus = _cpus(args.client_cpus) or None
        self.ports: dict[str, int] = {}
        self.pools: dict[str, list[Worker]] = {}
        self.info: dict[str, Any] = {}
        self.results: dict[tuple[str, int, str], list[Sample]] = {}

    # -- servers ------------------------------------------------------------------------------------------
    def start_server(self, key: str) -> None:
        """Start the server behind `key` once."""
        if key in self.ports:
            return
        port = free_port()
        py = sys.executable
        ping = None
        program, extra = self.servers[key]
        if program == "redis":
            argv = [*redis_server_argv(port, self.tmp), *extra]
            ping = b"*1\r\n$4\r\nPING\r\n"
            version = subprocess.run([argv[0], "--version"], capture_output=True, text=True).stdout
            self.info["redis-server"] = version.strip()
        elif program == "cyberdb":
            argv = [py, str(HERE / "_cyberdb_server.py"), "--host", HOST, "--port", str(port), *extra]
        else:
            argv = [py, str(HERE / "_echo_server.py"), "--host", HOST, "--port", str(port), *extra]
        proc = self.procs.spawn(key, argv, self.tmp, self.env, cpus=self.server_cpus)
        wait_port(proc, port, self.args.start_timeout, ping)
        self.ports[key] = port

    # -- workers ------------------------------------------------------------------------------------------
    def start_pool(self, system: System, size: int) -> None:
        """Start `size` workers for `system`, each with its own connection, and fill the server once."""
        self.start_server(system.server)
        python = getattr(self.args, system.python) if system.python else sys.executable
        argv = [
            python,
            str(HERE / "_worker.py"),
            "--kind",
            system.kind,
            "--host",
            HOST,
            "--port",
            str(self.ports[system.server]),
            *system.client_args,
        ]
        pool = [
            Worker(self.procs.spawn(f"{system.name}#{i}", argv, self.tmp, self.env, cpus=self.client_cpus, pipes=True))
            for i in range(size)
        ]
        deadline = time.monotonic() + self.args.start_timeout
        infos = [w.recv(deadline)["info"] for w in pool]
        self.info[system.name] = infos[0]
        self.pools[system.name] = pool
        if system.server not in self.info.setdefault("_filled", []):
            pool[0].send(
                {
                    "cmd": "setup",
                    "keys": self.args.keys,
                    "value": self._value(),
                    "list_len": self.args.list_len,
                }
            )
            pool[0].recv(time.monotonic() + self.args.timeout)
            self.info["_filled"].append(system.server)

    def _value(self) -> str:
        return "x" * int(self.args.value_size)

    def measure(self, rnd: int, system: System, op: str, clients: int) -> Sample:
        """Run `op` on `clients` workers at once; return aggregate ops/s and pooled latency percentiles."""
        workers = self.pools[system.name][:clients]
        deadline = time.monotonic() + self.args.timeout
        for i, w in enumerate(workers):
            w.send(
                {
                    "cmd": "prepare",
                    "op": op,
                    "ops": self.args.ops,  # the worker turns these into units (pipelines for pipe_*)
                    "worker": i,
                    "warmup": self.args.warmup,
                    "offset": i * 257,
                    "keys": self.args.keys,
                    "list_len": self.args.list_len,
                    "value": self._value(),
                }
            )
        for w in workers:
            w.recv(deadline)
        for w in workers:
            w.send({"cmd": "go"})
        replies = [w.recv(deadline) for w in workers]
        wall_ns = max(r["end"] for r in replies) - min(r["start"] for r in replies)
        lat = sorted(x for r in replies for x in r["lat"])
        return Sample(
            rnd=rnd,
            ops_s=sum(r["calls"] for r in replies) / (wall_ns / 1e9),
            p50_us=_percentile(lat, 0.50) / 1e3,
            p99_us=_percentile(lat, 0.99) / 1e3,
            n=len(lat),
            trips=statistics.mean(r["trips"] for r in replies),
        )

    def record(self, rnd: int, system: System, op: str, clients: int) -> None:
        """Measure once and keep the sample under (op, clients, system)."""
        sample = self.measure(rnd, system, op, clients)
        self.results.setdefault((op, clients, system.name), []).append(sample)
        if not self.args.quiet:
            print(
                f"  round {rnd + 1}/{self.args.rounds}  {op:<10} c={clients}  {system.name:<12}"
                f" {sample.ops_s:>10,.0f} ops/s  p50 {sample.p50_us:7.1f} µs  p99 {sample.p99_us:8.1f} µs",
                file=sys.stderr,
                flush=True,
            )

    def run(self, systems: list[System], echo: bool) -> None:
        """All rounds; the system order rotates every round."""
        size = max(self.args.clients)
        for system in systems + ([ECHO] if echo else []):
            self.start_pool(system, size)
        for rnd in range(self.args.rounds):
            if echo:
                for clients in self.args.clients:
                    self.record(rnd, ECHO, "echo", clients)
            shift = rnd % len(systems)
            order = systems[shift:] + systems[:shift]
            for op in self.args.operations:
                for clients in self.args.clients:
                    for system in order:
                        self.record(rnd, system, op, clients)
        for pool in self.pools.values():
            for w in pool:
                w.send({"cmd": "quit"})


def _percentile(sorted_values: list[int], q: float) -> float:
    if not sorted_values:
        return math.nan
    return float(sorted_values[min(len(sorted_values) - 1, round(q * (len(sorted_values) - 1)))])


def _ratio(bench: Bench, op: str, clients: int, name: str, baseline: str) -> float:
    """Median over rounds of this system's ops/s / the baseline's in the same round."""
    mine = {s.rnd: s for s in bench.results.get((op, clients, name), [])}
    base = {s.rnd: s for s in bench.results.get((op, clients, baseline), [])}
    ratios = [mine[r].ops_s / base[r].ops_s for r in mine if r in base]
    return statistics.median(ratios) if ratios else math.nan


def _fmt(x: float, spec: str) -> str:
    return "-" if math.isnan(x) else format(x, spec)


def report(bench: Bench, systems: list[System], echo: bool) -> None:
    """Print the header, the table, the geometric means and the echo reference."""
    args = bench.args
    baseline = args.baseline
    print()
    print(
        f"CyberDB vs Redis  ops={args.ops}/client  warmup={args.warmup}  rounds={args.rounds}"
        f"  value={args.value_size} B  keys={args.keys}"
    )
    print(
        f"python {platform.python_version()}  {platform.platform()}  cpus={os.cpu_count()}"
        f"  affinity={sorted(os.sched_getaffinity(0))}"
        f"  server_cpus={args.server_cpus or '-'}  client_cpus={args.client_cpus or '-'}"
    )
    if "redis-server" in bench.info:
        print(bench.info["redis-server"])
    for system in systems + ([ECHO] if echo else []):
        info = ", ".join(f"{k}={v}" for k, v in bench.info.get(system.name, {}).items())
        print(f"  {system.name:<12} {system.doc}  [{info}]")
    print()
    head = f"{'op':<10} {'clients':>7}  {'system':<12} {'ops/s':>10} {'p50 µs':>8} {'p99 µs':>8}"
    head += f" {'ratio':>6} {'spread':>7} {'trips':>5}"
    print(head)
    print("-" * len(head))
    for op in args.operations:
        for clients in args.clients:
            for system in systems:
                samples = bench.results.get((op, clients, system.name), [])
                if not samples:
                    continue
                ops_s = statistics.median(s.ops_s for s in samples)
                spread = (max(s.ops_s for s in samples) - min(s.ops_s for s in samples)) / ops_s * 100
                print(
                    f"{op:<10} {clients:>7}  {system.name:<12} {ops_s:>10,.0f}"
                    f" {statistics.median(s.p50_us for s in samples):>8.1f}"
                    f" {statistics.median(s.p99_us for s in samples):>8.1f}"
                    f" {_fmt(_ratio(bench, op, clients, system.name, baseline), '>6.2f')}"
                    f" {(f'{spread:.0f}%' if len(samples) > 1 else '-'):>7}"
                    f" {_fmt(statistics.median(s.trips for s in samples), '>5.2f')}"
                )
        print()
    print(
        f"trips: round trips per op (pipe_*: per pipeline), counted on {PROBE_UNITS} untimed ops after the warm-up\n"
        "       (cyberdb: writes to its socket; redis-py: send_packed_command calls)"
    )
    for note in dict.fromkeys(NOTES[op] for op in args.operations if op in NOTES):
        print(note)
    # The atomic-update ops measure other things (pipelines, several round trips): the mean covers the basic ones.
    basic = [op for op in args.operations if op in OPS]
    if basic:
        print()
        print(f"geometric mean of ratio (ops/s vs {baseline}) over {len(basic)} ops ({', '.join(basic)}):")
        for clients in args.clients:
            parts = []
            for system in systems:
                ratios = [_ratio(bench, op, clients, system.name, baseline) for op in basic]
                ratios = [r for r in ratios if not math.isnan(r) and r > 0]
                gm = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else math.nan
                parts.append(f"{system.name} {_fmt(gm, '.2f')}")
            print(f"  clients={clients}:  " + "   ".join(parts))
    if echo:
        print()
        print(f"reference: {ECHO.name} ({args.value_size} B round trip, no protocol)")
        for clients in args.clients:
            samples = bench.results.get(("echo", clients, ECHO.name), [])
            if samples:
                print(
                    f"  clients={clients}: {statistics.median(s.ops_s for s in samples):>10,.0f} ops/s"
                    f"  p50 {statistics.median(s.p50_us for s in samples):.1f} µs"
                    f"  p99 {statistics.median(s.p99_us for s in samples):.1f} µs"
                )


def dump_json(bench: Bench, path: Path) -> None:
    """Every sample, for comparing runs later."""
    rows = [
        {"op": op, "clients": clients, "system": name, **vars(sample)}
        for (op, clients, name), samples in bench.results.items()
        for sample in samples
    ]
    info = {k: v for k, v in bench.info.items() if not k.startswith("_")}
    meta = dict(vars(bench.args))
    path.write_text(json.dumps({"meta": meta, "info": info, "samples": rows}, indent=1, default=str) + "\n")


def _csv(kind: type, text: str) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def _cpus(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in _csv(str, text):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line; every list option is comma-separated."""
    names = [s.name for s in SYSTEMS]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=int, default=20000, help="timed ops per client per measurement (20000)")
    p.add_argument("--warmup", type=int, default=500, help="untimed ops per client before each measurement")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are printed (1)")
    p.add_argument("--clients", type=lambda s: _csv(int, s), default=[1, 4], help="client processes (1,4)")
    p.add_argument(
        "--operations",
        type=lambda s: _csv(str, s),
        default=list(OPS),
        help=f"default {','.join(OPS)}; also {','.join(ATOMIC_OPS)}",
    )
    p.add_argument("--systems", type=lambda s: _csv(str, s), default=names, help=",".join(names))
    p.add_argument("--baseline", default="redis", help="system the ratio column divides by (redis)")
    p.add_argument("--no-echo", action="store_true", help="skip the raw TCP echo reference")
    p.add_argument("--redis5-python", default="", help="interpreter with redis==5.0.x for redis-py5")
    p.add_argument("--value-size", type=int, default=32, help="bytes per value and echo payload (32)")
    p.add_argument("--keys", type=int, default=1000, help="distinct dict keys cycled through (1000)")
    p.add_argument("--list-len", type=int, default=1000, help="initial list length; index cycles over it")
    p.add_argument("--server-cpus", default="", help="pin server processes, e.g. 0 (taskset-style list)")
    p.add_argument("--client-cpus", default="", help="pin client workers, e.g. 1")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed for one measurement step")
    p.add_argument("--start-timeout", type=float, default=30, help="seconds for a server or worker to start")
    p.add_argument("--json", type=Path, help="also write every sample to this file")
    p.add_argument("--quiet", action="store_true", help="no per-measurement progress on stderr")
    args = p.parse_args(argv)
    for op in args.operations:
        if op not in OPS + ATOMIC_OPS:
            p.error(f"unknown operation {op!r} (choose from {', '.join(OPS + ATOMIC_OPS)})")
    for name in args.systems:
        if name not in names:
            p.error(f"unknown system {name!r} (choose from {', '.join(names)})")
    if min(args.clients, default=0) < 1 or args.ops < 1 or args.rounds < 1:
        p.error("--clients, --ops and --rounds must be >= 1")
    if args.warmup > args.ops:
        p.error("--warmup must be <= --ops")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    systems = [s for s in SYSTEMS if s.name in args.systems]
    for system in list(systems):
        if system.python and not getattr(args, system.python):
            print(f"note: skipping {system.name}: no --{system.python.replace('_', '-')} given", file=sys.stderr)
            systems.remove(system)
    if not systems:
        print("no systems to run", file=sys.stderr)
        return 2
    if args.baseline not in [s.name for s in systems]:
        print(f"note: baseline {args.baseline!r} is not running; the ratio column stays empty", file=sys.stderr)
    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="cyberdb-bench-") as tmp:
        procs = Procs(Path(tmp))
        bench = Bench(args, procs, Path(tmp))
        rc = run_guarded(procs, "bench", lambda: bench.run(systems, echo=not args.no_echo))
        if rc:
            return rc
    report(bench, systems, echo=not args.no_echo)
    if args.json:
        dump_json(bench, args.json)
        print(f"\nsamples written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
