"""Persistence: CyberDB's append-only log and snapshots vs redis-server's AOF and RDB (bench/run persistence).

Four measurements in one run, side by side with redis-server, all data files in one directory on a real disk
(never tmpfs: fsync would cost nothing there); the directory and its file system are printed:

1. writes/s, `d[k] = v` vs `HSET h k v` (bench.py's `set`), 1 and 4 clients, with no log and with the log
   under each fsync policy (CyberDB `set_append_log(fsync=...)`, Redis `--appendonly yes --appendfsync ...`),
   through bench.py's own machinery (_worker.py clients, rounds, rotation, per-round ratios);
2. from the same samples: `always` with 4 clients, CyberDB vs Redis through redis-py 8 and 5.0.x;
3. the longest stall a client sees while the server snapshots or rewrites its log with --n (1M) small keys:
   one client process (_worker.py "probe": one request at a time, each timed) runs while CyberDB's
   `save_db` / `rewrite_append_log` (_persist_server.py) or Redis's BGSAVE / BGREWRITEAOF run; max and p99.9
   of the requests overlapping the background job, next to a window without one just before it;
4. snapshot time (CyberDB save_db vs Redis BGSAVE and SAVE), load time (process start to first answer, and
   what the server itself says), and replay time of a log of --n single writes (CyberDB's log vs Redis's AOF).

Everything listens on 127.0.0.1; every process started here is stopped by PID at the end, on errors and on
Ctrl-C too (bench/_proc.py). The data directory is removed at the end unless --keep.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
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
from bench import PASSWORD_ENV, Bench, System, Worker, _percentile, _ratio

HERE = Path(__file__).resolve().parent
POLICIES = ("everysec", "always", "no")
NO_LOG = "none"
PING = b"*1\r\n$4\r\nPING\r\n"
POLL_S = 0.005  # readiness and BGSAVE polling: the resolution of the load and Redis snapshot times
TARGET_EVERYSEC = 0.9  # issue 7's targets, printed next to the numbers
TARGET_ALWAYS = 1.0
TARGET_STALL_MS = 20.0
NEVER_REWRITE = 1 << 50  # bytes: no automatic rewrite in the middle of a measurement


def _servers() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Server flavours for the write measurement: no log and each fsync policy, both systems."""
    servers: dict[str, tuple[str, tuple[str, ...]]] = {"cyberdb": ("cyberdb", ()), "redis": ("redis", ())}
    for p in POLICIES:
        servers[f"cyberdb-{p}"] = ("cyberdb", ("--aof", f"writes-{p}.aof", "--fsync", p))
        # each Redis keeps its AOF in its own directory (Redis 7: appendonlydir/ by default, shared otherwise)
        redis_aof = ("--appendonly", "yes", "--appendfsync", p, "--appenddirname", f"writes-{p}-aof")
        servers[f"redis-{p}"] = ("redis", redis_aof)
    return servers


def _systems() -> list[System]:
    systems = []
    for log in (NO_LOG, *POLICIES):
        suffix = "" if log == NO_LOG else f"-{log}"
        systems += [
            System(f"cyberdb{suffix}", "cyberdb", f"cyberdb{suffix}", doc="CyberDB"),
            System(f"redis{suffix}", "redis", f"redis{suffix}", doc="redis-py 8"),
        ]
        if log in (NO_LOG, "always"):  # issue 7 compares `always` through both clients; no log for reference
            systems.append(System(f"redis-py5{suffix}", "redis", f"redis{suffix}", python="redis5_python"))
    return systems


def fs_of(path: Path) -> str:
    """'<source> (<fstype>, mounted at <mount point>)' of the file system holding path, from mountinfo."""
    dev = os.stat(path).st_dev
    want = f"{os.major(dev)}:{os.minor(dev)}"
    best: tuple[int, str] | None = None
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        parts, rest = left.split(), right.split()
        if parts[2] == want and (best is None or len(parts[4]) > best[0]):
            best = (len(parts[4]), f"{rest[1]} ({rest[0]}, mounted at {parts[4]})")
    return best[1] if best else f"device {want} (unknown file system)"


def _wait_ready(proc: Proc, port: int, ping: bool, timeout: float) -> float:
    """Return the monotonic time at which proc answered (connect; with `ping`, +PONG)."""
    wait_port(proc, port, timeout, PING if ping else None, poll=POLL_S)  # POLL_S: the resolution of load times
    return time.monotonic()


@dataclass
class Window:
    """Latencies (ns) of the probe's calls that overlapped one background job, or a quiet stretch."""

    lat: list[int] = field(default_factory=list)
    maxima: list[tuple[int, float]] = field(default_factory=list)  # per round: longest call, ms into the window
    secs: list[float] = field(default_factory=list)  # the window's length per round

    def add(self, calls: list[tuple[int, int]], t0: int, t1: int) -> None:
        """Keep the calls (start, latency) of one round's window [t0, t1]."""
        self.lat += [x for _, x in calls]
        start, longest = max(calls, key=lambda c: c[1], default=(t0, 0))
        self.maxima.append((longest, (start - t0) / 1e6))
        self.secs.append((t1 - t0) / 1e9)


class Persistence:
    """One run of the four measurements."""

    def __init__(self, args: argparse.Namespace, procs: Procs, data: Path) -> None:
        self.args = args
        self.procs = procs
        self.data = data
        self.password = secrets.token_hex(16)
        self.env = {PASSWORD_ENV: self.password}
        self.value = "x" * args.value_size
        self.writes: Bench | None = None
        self.windows: dict[tuple[str, str], Window] = {}  # (system, "quiet" | "snapshot" | "rewrite")
        self.times: dict[str, list[float]] = {}  # "<system> <what>" -> seconds, one per round
        self.notes: dict[str, str] = {}
        self.ctls: dict[int, Worker] = {}  # pid of a _persist_server.py -> its command stream

    def _time(self, key: str, secs: float) -> None:
        self.times.setdefault(key, []).append(secs)

    # -- 1, 2: writes/s with and without the log ------------------------------------------------------------
    def run_writes(self) -> None:
        """bench.py's `set` against every flavour; Bench keeps the samples."""
        a = self.args
        ns = argparse.Namespace(
            ops=a.ops,
            warmup=min(a.warmup, a.ops),
            rounds=a.rounds,
            clients=[1, 4],
            operations=["set"],
            keys=1000,
            list_len=10,
            value_size=a.value_size,
            server_cpus=a.server_cpus,
            client_cpus=a.client_cpus,
            timeout=600.0,
            start_timeout=a.start_timeout,
            quiet=a.quiet,
            redis5_python=a.redis5_python,
        )
        systems = [s for s in _systems() if not s.python or a.redis5_python]
        self.writes = Bench(ns, self.procs, self.data, servers=_servers())
        self.writes.env = self.env
        print("== writes/s", file=sys.stderr, flush=True)
        self.writes.run(systems, echo=False)
        for pool in self.writes.pools.values():  # the workers quit; stop their servers too (memory, fsyncs)
            for w in pool:
                self.procs.stop(w.proc)
        self.procs.stop_all()

    # -- 3, 4: stalls and snapshot times with N keys ----------------------------------------------------------
    def _cyberdb(self, name: str, *extra: str) -> tuple[Proc, int, dict[str, Any], float]:
        """Start _persist_server.py; return it, its port, its first reply and seconds to its first answer."""
        port = free_port()
        argv = [sys.executable, str(HERE / "_persist_server.py"), "--host", HOST, "--port", str(port), *extra]
        t0 = time.monotonic()
        proc = self.procs.spawn(name, argv, self.data, self.env, pipes=True)
        ctl = Worker(proc)
        hello = ctl.recv(time.monotonic() + self.args.start_timeout)
        ready = _wait_ready(proc, port, False, self.args.start_timeout)
        self.ctls[proc.pid] = ctl
        return proc, port, hello, ready - t0

    def _redis(self, name: str, *extra: str) -> tuple[Proc, int, float]:
        """Start redis-server with files in the data directory; return it, its port, seconds to first PONG."""
        port = free_port()
        argv = [*redis_server_argv(port, self.data), *extra]
        t0 = time.monotonic()
        proc = self.procs.spawn(name, argv, self.data)
        return proc, port, _wait_ready(proc, port, True, self.args.start_timeout) - t0

    def _ctl(self, proc: Proc, msg: dict[str, Any]) -> dict[str, Any]:
        """Send one command to a _persist_server.py and return its answer."""
        ctl = self.ctls[proc.pid]
        ctl.send(msg)
        return ctl.recv(time.monotonic() + 600)

    def _probe_worker(self, kind: str, port: int) -> Worker:
        argv = [sys.executable, str(HERE / "_worker.py"), "--kind", kind, "--host", HOST, "--port", str(port)]
        w = Worker(self.procs.spawn(f"probe-{kind}", argv, self.data, self.env, pipes=True))
        w.recv(time.monotonic() + self.args.start_timeout)
        w.send({"cmd": "setup", "keys": 1000, "value": self.value, "list_len": 1})
        w.recv(time.monotonic() + 60)
        return w

    def run_big(self) -> None:
        """Fill both servers with N keys, then per round: snapshot idle, then probe a quiet stretch, a snapshot
        and a log rewrite; then the load times of the snapshots."""
        import redis

        import cyberdb

        n, batch = self.args.n, 10_000
        print(f"== {n:,} keys: stalls during snapshots and rewrites", file=sys.stderr, flush=True)
        cproc, cport, _, _ = self._cyberdb(
            "cyberdb-big", "--aof", "big.aof", "--fsync", "everysec", "--rewrite-min-size", str(NEVER_REWRITE)
        )
        rproc, rport, _ = self._redis(
            "redis-big",
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--appenddirname",
            "big-aof",
            "--auto-aof-rewrite-percentage",
            "0",
            "--dbfilename",
            "big.rdb",
        )
        probes = {"cyberdb": self._probe_worker("cyberdb", cport), "redis": self._probe_worker("redis", rport)}
        client = cyberdb.connect(HOST, cport, password=self.password)
        r = redis.Redis(host=HOST, port=rport, decode_responses=True)
        try:
            with client.get_proxy() as proxy:  # the probe's table "d" / hash "h" gets the N keys
                d = proxy.get_cyberdict("d")
                t0 = time.monotonic()
                for start in range(0, n, batch):
                    d.update({f"key:{i}": f"value:{i}" for i in range(start, min(n, start + batch))})
                self._time("cyberdb fill", time.monotonic() - t0)
                t0 = time.monotonic()
                pipe = r.pipeline(transaction=False)
                for start in range(0, n, batch):
                    pipe.hset("h", mapping={f"key:{i}": f"value:{i}" for i in range(start, min(n, start + batch))})
                pipe.execute()
                self._time("redis fill", time.monotonic() - t0)
                if len(d) != n + 1000 or r.hlen("h") != n + 1000:
                    raise BenchError(f"expected {n + 1000} keys, CyberDB has {len(d)}, Redis {r.hlen('h')}")
            order = ["cyberdb", "redis"]
            for rnd in range(self.args.rounds):
                for system in order[rnd % 2 :] + order[: rnd % 2]:
                    if system == "cyberdb":
                        self._round_cyberdb(cproc, probes["cyberdb"])
                    else:
                        self._round_redis(r, probes["redis"])
            self.notes["files"] = ", ".join(
                f"{p.name} {p.stat().st_size / 2**20:.1f} MiB" for p in (self.data / "big.cdb", self.data / "big.rdb")
            )
        finally:
            client.close()
            r.close()
        for w in probes.values():
            w.send({"cmd": "quit"})
            self.procs.stop(w.proc)
        self.procs.stop(cproc)
        self.procs.stop(rproc)
        self._loads()

    def _probe(self, probe: Worker, system: str, jobs: list[tuple[str, Any]]) -> None:
        """Run the probe through a quiet stretch and then each background job; file latencies per window."""
        probe.send({"cmd": "probe", "op": "set", "value": self.value, "worker": 0, "keys": 1000, "list_len": 1})
        probe.recv(time.monotonic() + 60)
        quiet_from = time.perf_counter_ns() + 200_000_000  # skip the first calls (connection, caches)
        time.sleep(self.args.quiet_s + 0.2)
        spans = []
        for what, job in jobs:
            spans.append((what, *job()))
            time.sleep(0.3)
        probe.send({"cmd": "stop"})
        res = probe.recv(time.monotonic() + 120)
        calls = list(zip(res["starts"], res["lat"], strict=True))
        quiet_to = spans[0][1] - 50_000_000
        self.windows.setdefault((system, "quiet"), Window()).add(
            [c for c in calls if quiet_from <= c[0] <= quiet_to], quiet_from, quiet_to
        )
        for what, t0, t1 in spans:  # every call that overlapped the job, even by a little
            self.windows.setdefault((system, what), Window()).add(
                [c for c in calls if c[0] <= t1 and c[0] + c[1] >= t0], t0, t1
            )

    def _round_cyberdb(self, proc: Proc, probe: Worker) -> None:
        res = self._ctl(proc, {"cmd": "save", "file": "big.cdb"})
        self._time("cyberdb save_db, idle", (res["t1"] - res["t0"]) / 1e9)

        def job(msg: dict[str, Any]) -> Any:
            def run() -> tuple[int, int]:
                res = self._ctl(proc, msg)
                return res["t0"], res["t1"]

            return run

        self._probe(
            probe,
            "cyberdb",
            [("snapshot", job({"cmd": "save", "file": "big.cdb"})), ("rewrite", job({"cmd": "rewrite"}))],
        )

    def _round_redis(self, r: Any, probe: Worker) -> None:
        def until_done(start: str, flags: tuple[str, ...]) -> tuple[int, int]:
            t0 = time.perf_counter_ns()
            r.execute_command(start)
            while True:
                info = r.info("persistence")
                if not any(int(info[f]) for f in flags):
                    break
                time.sleep(POLL_S)
            t1 = time.perf_counter_ns()
            status = info["rdb_last_bgsave_status"] if start == "BGSAVE" else info["aof_last_bgrewrite_status"]
            if status != "ok":
                raise BenchError(f"Redis {start} failed: {status}")
            return t0, t1

        t0, t1 = until_done("BGSAVE", ("rdb_bgsave_in_progress",))
        self._time("redis BGSAVE, idle", (t1 - t0) / 1e9)
        t0 = time.perf_counter_ns()
        r.execute_command("SAVE")
        self._time("redis SAVE, idle", (time.perf_counter_ns() - t0) / 1e9)

        def job(start: str, flags: tuple[str, ...]) -> Any:
            def run() -> tuple[int, int]:
                span = until_done(start, flags)
                self._time(f"redis {start} fork (latest_fork_usec)", r.info("stats")["latest_fork_usec"] / 1e6)
                return span

            return run

        self._probe(
            probe,
            "redis",
            [
                ("snapshot", job("BGSAVE", ("rdb_bgsave_in_progress",))),
                ("rewrite", job("BGREWRITEAOF", ("aof_rewrite_in_progress", "aof_rewrite_scheduled"))),
            ],
        )

    def _loads(self) -> None:
        """Start a server on each snapshot (and an empty one): seconds from process start to first answer."""
        print("== load times", file=sys.stderr, flush=True)
        for _ in range(self.args.rounds):
            proc, _, hello, secs = self._cyberdb("cyberdb-load", "--load", "big.cdb")
            self._time("cyberdb load, to first answer", secs)
            self._time("cyberdb load, in Server (load_db + start)", hello["start_ns"] / 1e9)
            self.procs.stop(proc)
            proc, _, _, secs = self._cyberdb("cyberdb-empty")
            self._time("cyberdb empty, to first answer", secs)
            self.procs.stop(proc)
            proc, _, secs = self._redis("redis-load", "--dbfilename", "big.rdb")
            self._time("redis load, to first PONG", secs)
            self._redis_log_time(proc, r"DB loaded from disk: ([\d.]+) seconds", "redis load, its log")
            self.procs.stop(proc)
            proc, _, secs = self._redis("redis-empty", "--dbfilename", "none.rdb")
            self._time("redis empty, to first PONG", secs)
            self.procs.stop(proc)

    def _redis_log_time(self, proc: Proc, pattern: str, key: str) -> None:
        assert proc.log is not None
        found = re.findall(pattern, proc.log.read_text(errors="replace"))
        if found:  # the log is appended to by every start: the last line is this one's
            self._time(key, float(found[-1]))

    # -- 4: replaying a log of N single writes ----------------------------------------------------------------
    def run_replay(self) -> None:
        """Write N single `d[k] = v` (4 client processes) to a logged CyberDB, N HSETs to an AOF Redis; restart."""
        import redis

        import cyberdb

        n, clients = self.args.n, 4
        print(f"== a log of {n:,} writes: replay", file=sys.stderr, flush=True)
        cyber_args = ("--aof", "replay.aof", "--fsync", "no", "--rewrite-min-size", str(NEVER_REWRITE))
        proc, port, _, _ = self._cyberdb("cyberdb-replay", *cyber_args)
        argv = [sys.executable, str(HERE / "_worker.py"), "--kind", "cyberdb", "--host", HOST, "--port", str(port)]
        workers = [
            Worker(self.procs.spawn(f"writer#{i}", argv, self.data, self.env, pipes=True)) for i in range(clients)
        ]
        deadline = time.monotonic() + 600
        for w in workers:
            w.recv(deadline)
        workers[0].send({"cmd": "setup", "keys": 0, "value": self.value, "list_len": 0})
        workers[0].recv(deadline)
        each = n // clients
        for i, w in enumerate(workers):  # distinct keys k0..k{n-1}; 3 untimed calls each count round trips
            w.send(
                {
                    "cmd": "prepare",
                    "op": "set",
                    "ops": each,
                    "worker": i,
                    "warmup": 0,
                    "offset": i * each,
                    "keys": each * clients,
                    "list_len": 0,
                    "value": self.value,
                }
            )
        for w in workers:
            w.recv(deadline)
        t0 = time.monotonic()
        for w in workers:
            w.send({"cmd": "go"})
        for w in workers:
            w.recv(deadline)
            w.send({"cmd": "quit"})
            self.procs.stop(w.proc)
        self._time("cyberdb writing the log", time.monotonic() - t0)
        records = self._ctl(proc, {"cmd": "info"})["result"]["append_log"]["records"]
        self._ctl_quit(proc)
        self.notes["cyberdb log"] = f"{records:,} records, {(self.data / 'replay.aof').stat().st_size / 2**20:.1f} MiB"

        redis_args = (
            "--appendonly",
            "yes",
            "--appendfsync",
            "no",
            "--appenddirname",
            "replay-aof",
            "--auto-aof-rewrite-percentage",
            "0",
            "--dbfilename",
            "replay.rdb",
        )
        rproc, rport, _ = self._redis("redis-replay", *redis_args)
        t0 = time.monotonic()
        _hset_pipelined(rport, each * clients, self.value)
        self._time("redis writing the AOF (pipelined)", time.monotonic() - t0)
        self.procs.stop(rproc)  # SIGTERM: Redis flushes its AOF and exits
        size = sum(p.stat().st_size for p in (self.data / "replay-aof").iterdir())
        self.notes["redis AOF"] = f"{each * clients:,} HSET commands, {size / 2**20:.1f} MiB"

        for _ in range(self.args.rounds):
            proc, port, hello, secs = self._cyberdb("cyberdb-replay", *cyber_args)
            self._time("cyberdb replay, to first answer", secs)
            self._time("cyberdb replay, in Server.start", hello["start_ns"] / 1e9)
            client = cyberdb.connect(HOST, port, password=self.password)
            with client.get_proxy() as proxy:
                got = len(proxy.get_cyberdict("d"))
            client.close()
            self._ctl_quit(proc)
            rproc, rport, secs = self._redis("redis-replay", *redis_args)
            self._time("redis AOF load, to first PONG", secs)
            self._redis_log_time(rproc, r"DB loaded from append only file: ([\d.]+) seconds", "redis AOF load, its log")
            r = redis.Redis(host=HOST, port=rport)
            rgot = r.hlen("h")
            r.close()
            self.procs.stop(rproc)
            if got != each * clients or rgot != each * clients:
                raise BenchError(f"after replay CyberDB has {got} keys, Redis {rgot}; expected {each * clients}")

    def _ctl_quit(self, proc: Proc) -> None:
        self.ctls.pop(proc.pid).send({"cmd": "quit"})
        proc.popen.wait(60)  # a clean stop: the log is closed
        self.procs.stop(proc)

    # -- report -------------------------------------------------------------------------------------------------
    def report(self) -> None:
        a = self.args
        print()
        print(
            f"Persistence: CyberDB vs Redis  n={a.n:,}  ops={a.ops}/client  rounds={a.rounds}  value={a.value_size} B"
        )
        print(
            f"python {platform.python_version()}  {platform.platform()}  cpus={os.cpu_count()}"
            f"  affinity={sorted(os.sched_getaffinity(0))}"
        )
        print(subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip())
        print(f"data files in {self.data} on {fs_of(self.data)}")
        if self.writes is not None:
            self._report_writes()
        if self.windows:
            self._report_stalls()
        if self.times:
            print()
            print("times (median of rounds; min-max)")
            for key, xs in self.times.items():
                print(f"  {key:<46} {statistics.median(xs):8.4f} s   ({min(xs):.4f}-{max(xs):.4f}, {len(xs)}x)")
            for key, note in self.notes.items():
                print(f"  {key}: {note}")

    def _report_writes(self) -> None:
        bench = self.writes
        assert bench is not None
        a = self.args
        print()
        print(
            f"writes: d[k] = v vs HSET h k v (set in bench.py); servers on cpus {a.server_cpus or '-'}, clients on"
            f" cpus {a.client_cpus or '-'}; ops/s = median of rounds; ratios per round, median"
        )
        head = (
            f"{'log':<9} {'clients':>7}  {'system':<10} {'ops/s':>9} {'p50 µs':>8} {'p99 µs':>9}"
            f" {'vs no log':>9} {'vs redis':>8}"
        )
        print(head)
        print("-" * len(head))
        for log in (NO_LOG, *POLICIES):
            suffix = "" if log == NO_LOG else f"-{log}"
            for clients in bench.args.clients:
                for label in ("cyberdb", "redis", "redis-py5"):
                    samples = bench.results.get(("set", clients, label + suffix), [])
                    if not samples:
                        continue
                    vs_nolog = _ratio(bench, "set", clients, label + suffix, label) if suffix else float("nan")
                    vs_redis = _ratio(bench, "set", clients, label + suffix, f"redis{suffix}")
                    print(
                        f"{log:<9} {clients:>7}  {label:<10} {statistics.median(x.ops_s for x in samples):>9,.0f}"
                        f" {statistics.median(x.p50_us for x in samples):>8.1f}"
                        f" {statistics.median(x.p99_us for x in samples):>9.1f}"
                        f" {_fmt(vs_nolog):>9} {_fmt(vs_redis):>8}"
                    )
            print()
        for clients in bench.args.clients:
            print(
                f"cyberdb everysec / no log, {clients} client(s): "
                f"{_fmt(_ratio(bench, 'set', clients, 'cyberdb-everysec', 'cyberdb'))}  (target >= {TARGET_EVERYSEC})"
                f"   redis: {_fmt(_ratio(bench, 'set', clients, 'redis-everysec', 'redis'))}"
            )
        line = (
            f"always, 4 clients: cyberdb / redis-py 8 {_fmt(_ratio(bench, 'set', 4, 'cyberdb-always', 'redis-always'))}"
        )
        if ("set", 4, "redis-py5-always") in bench.results:
            line += f", cyberdb / redis-py 5 {_fmt(_ratio(bench, 'set', 4, 'cyberdb-always', 'redis-py5-always'))}"
        print(f"{line}  (target >= {TARGET_ALWAYS})")

    def _report_stalls(self) -> None:
        print()
        print(
            f"stalls: one client, one `d[k] = v` / HSET at a time, while the server holds {self.args.n:,} keys"
            f" (+1000) with an everysec log;\ncalls overlapping the job (or a quiet {self.args.quiet_s:.1f} s"
            " stretch before them), pooled over rounds"
        )
        head = f"{'system':<8} {'during':<9} {'job s':>6} {'calls':>7} {'p50 µs':>8} {'p99 µs':>8}"
        head += f" {'p99.9 ms':>9} {'max ms':>7}"
        print(head + "   per round: max ms @ ms into the window")
        print("-" * len(head))
        for (system, what), w in self.windows.items():
            lat = sorted(w.lat)
            print(
                f"{system:<8} {what:<9} {statistics.median(w.secs):>6.2f} {len(lat):>7}"
                f" {_percentile(lat, 0.5) / 1e3:>8.1f} {_percentile(lat, 0.99) / 1e3:>8.1f}"
                f" {_percentile(lat, 0.999) / 1e6:>9.2f} {max(lat, default=0) / 1e6:>7.2f}"
                f"   {', '.join(f'{m / 1e6:.1f} @{at:.0f}' for m, at in w.maxima)}"
            )
        worst = max(
            (m for (s, what), w in self.windows.items() if s == "cyberdb" and what != "quiet" for m, _ in w.maxima),
            default=0,
        )
        print(
            f"cyberdb longest stall during a snapshot or rewrite: {worst / 1e6:.1f} ms"
            f" (target <= {TARGET_STALL_MS:.0f})"
        )


def _hset_pipelined(port: int, n: int, value: str, batch: int = 1000) -> None:
    """HSET h k{i} value for i < n, `batch` commands per round trip, in plain RESP on one socket.

    The AOF holds one HSET per command either way, as if each had been its own request; redis-py would spend
    ~15 s building them, for nothing that is measured.
    """
    v = value.encode()
    tail = b"$%d\r\n%s\r\n" % (len(v), v)
    with socket.create_connection((HOST, port)) as sock:
        for start in range(0, n, batch):
            count = min(batch, n - start)
            keys = (b"k%d" % i for i in range(start, start + count))
            sock.sendall(b"".join(b"*4\r\n$4\r\nHSET\r\n$1\r\nh\r\n$%d\r\n%s\r\n%s" % (len(k), k, tail) for k in keys))
            want, got = b":1\r\n" * count, b""
            while len(got) < len(want):
                chunk = sock.recv(1 << 16)
                if not chunk:
                    raise BenchError("redis-server closed the connection while writing the AOF")
                got += chunk
            if got != want:
                raise BenchError(f"unexpected HSET replies from redis-server: {got[:200]!r}")


def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:.2f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="keys for snapshots and writes in the log (1000000)")
    p.add_argument("--ops", type=int, default=5000, help="timed writes per client per measurement (5000)")
    p.add_argument("--warmup", type=int, default=500, help="untimed writes per client before each measurement")
    p.add_argument("--rounds", type=int, default=3, help="rounds of every measurement (3)")
    p.add_argument("--value-size", type=int, default=32, help="bytes per value of the writes and the probe (32)")
    p.add_argument("--quiet-s", type=float, default=1.0, help="seconds of probing before the first job (1.0)")
    p.add_argument("--server-cpus", default="0", help="pin the writes/s servers ('' = unpinned; default 0)")
    p.add_argument("--client-cpus", default="0", help="pin the writes/s clients ('' = unpinned; default 0)")
    p.add_argument("--sections", default="writes,big,replay", help="which parts run (writes,big,replay)")
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where the data directory is made (/var/tmp)")
    p.add_argument("--allow-tmpfs", action="store_true", help="run even if --dir is on tmpfs (fsync is then free)")
    p.add_argument("--keep", action="store_true", help="keep the data directory (and the servers' logs)")
    p.add_argument("--redis5-python", default="", help="interpreter with redis==5.0.x for redis-py5")
    p.add_argument("--start-timeout", type=float, default=60, help="seconds for a server to start")
    p.add_argument("--quiet", action="store_true", help="no per-measurement progress on stderr")
    args = p.parse_args(argv)
    args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    if not set(args.sections) <= {"writes", "big", "replay"}:
        p.error("--sections takes writes, big, replay")
    if args.n < 1 or args.ops < 1 or args.rounds < 1:
        p.error("--n, --ops and --rounds must be >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the measurements; returns the exit code."""
    args = parse_args(argv)
    if not shutil.which("redis-server"):
        print("redis-server is not on PATH (bench/run installs it)", file=sys.stderr)
        return 2
    where = fs_of(args.dir)
    if re.search(r"\((tmpfs|ramfs)\b", where) and not args.allow_tmpfs:
        print(f"{args.dir} is on {where}: fsync costs nothing there; pick a disk with --dir", file=sys.stderr)
        return 2
    install_signal_handlers()
    data = Path(tempfile.mkdtemp(prefix="cyberdb-persist-bench-", dir=args.dir))
    print(f"data files in {data} on {where}", file=sys.stderr, flush=True)
    try:
        procs = Procs(data)
        run = Persistence(args, procs, data)

        def body() -> None:
            if "writes" in args.sections:
                run.run_writes()
            if "big" in args.sections:
                run.run_big()
            if "replay" in args.sections:
                run.run_replay()

        rc = run_guarded(procs, "persistence bench", body, show_logs=True)
        if rc:
            return rc
        run.report()
    finally:
        if args.keep:
            print(f"kept {data}", file=sys.stderr)
        else:
            shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
