"""The seed deployment under HTTP load, next to the same Flask app on Redis and on no database (bench/run seed).

Three systems, each served by `gunicorn -w 3 -k gevent -b 127.0.0.1:PORT MODULE:app` from this venv, and each
answering GET / with {"code":1,"content":"Hello CyberDB!"}:
- nodb:    apps/nodb_app.py, the JSON from a constant: the ceiling of Flask + Gunicorn + gevent here;
- redis:   apps/redis_app.py, the content from `HGET centre content` on a fresh redis-server;
- cyberdb: the seed's own cyberdb_init.py, cyberdb_serve.py and app.py, copied unchanged from
           examples/flask_gunicorn/ to a temp dir: `python cyberdb_init.py`, then `python cyberdb_serve.py`
           (fixed 127.0.0.1:9980, encrypt=True), then Gunicorn with `app:app`;
- flaskext: examples/flask_ext/app.py, the seed app written with the Flask extension (cyberdb.flask.CyberDB),
           against the same cyberdb_serve.py (started once for both), so the two differ only in the app code.
Each app's answer is checked byte for byte before it is loaded, and again after each load. Then, per round and
in an order rotated every round, each system gets a discarded wrk warm-up and one measured
`wrk -t2 -c100 -d15s --latency`; req/s, p50 and p99 are medians over rounds, errors are summed, ratios are
computed within each round and their median printed.

Everything listens on 127.0.0.1; every process started here is stopped by PID at the end, on errors and on
Ctrl-C too (bench/_proc.py).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from _proc import (
    HOST,
    BenchError,
    Proc,
    Procs,
    free_port,
    http_get,
    install_signal_handlers,
    redis_server_argv,
    run_guarded,
    wait_http,
    wait_port,
    wait_port_free,
)

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
SEED_DIR = HERE.parent / "examples" / "flask_gunicorn"
SEED_FILES = ("cyberdb_init.py", "cyberdb_serve.py", "app.py")
EXT_DIR = HERE.parent / "examples" / "flask_ext"
SEED_PORT = 9980  # fixed by cyberdb_init.py, cyberdb_serve.py and app.py
CONTENT = "Hello CyberDB!"
# What Flask sends for {"code": 1, "content": CONTENT} outside debug mode: compact, sorted keys, newline.
EXPECTED_BODY = b'{"code":1,"content":"Hello CyberDB!"}\n'
SYSTEMS = ("nodb", "redis", "cyberdb", "flaskext")
SEED_SYSTEMS = ("cyberdb", "flaskext")  # both need the seed's server on port 9980
DOCS = {
    "nodb": "Flask, constant JSON (bench/apps/nodb_app.py)",
    "redis": "Flask + redis-py HGET centre content, module-level client (bench/apps/redis_app.py)",
    "cyberdb": "the seed's app.py + cyberdb_serve.py (encrypt=True), files unchanged",
    "flaskext": "examples/flask_ext/app.py (the seed app on cyberdb.flask.CyberDB), same cyberdb_serve.py",
}
_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


@dataclass
class WrkResult:
    """What one wrk run printed."""

    req_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    socket_errors: dict[str, int]
    bad_status: int  # wrk's "Non-2xx or 3xx responses" (it counts status >= 400)

    @property
    def errors(self) -> int:
        """Socket errors of all kinds plus responses with status >= 400."""
        return sum(self.socket_errors.values()) + self.bad_status


def _ms(number: str, unit: str) -> float:
    return float(number) * _UNITS_MS[unit]


def parse_wrk(text: str) -> WrkResult:
    """Parse `wrk --latency` output.

    Raises:
        ValueError: a line we need is missing (wrk failed, or a format we do not know).
    """
    req_s = re.search(r"^Requests/sec:\s+([\d.]+)\s*$", text, re.M)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m|h)\s*$", text, re.M)
    total = re.search(r"^\s+(\d+) requests in ", text, re.M)
    if not (req_s and p50 and p99 and total):
        raise ValueError("no Requests/sec, 50%/99% latency or request count in wrk's output")
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    kinds = ("connect", "read", "write", "timeout")
    return WrkResult(
        req_s=float(req_s.group(1)),
        p50_ms=_ms(*p50.groups()),
        p99_ms=_ms(*p99.groups()),
        requests=int(total.group(1)),
        socket_errors=dict(zip(kinds, map(int, sock.groups()), strict=True)) if sock else dict.fromkeys(kinds, 0),
        bad_status=int(bad.group(1)) if bad else 0,
    )


class Seed:
    """One run: the three systems' processes, the wrk runs and their results."""

    def __init__(self, args: argparse.Namespace, procs: Procs, tmp: Path) -> None:
        self.args = args
        self.procs = procs
        self.tmp = tmp
        self.python = sys.executable  # the bench venv's; not resolved, its bin/ holds gunicorn
        self.gunicorn = str(Path(sys.executable).parent / "gunicorn")
        self.wrk = shutil.which("wrk") or ""
        self.ports: dict[str, int] = {}
        self.apps: dict[str, Proc] = {}
        self.results: dict[str, list[WrkResult]] = {name: [] for name in args.systems}
        self.info: list[str] = []

    # -- systems --------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every selected system and check its answer; the seed's first, as they may wait for port 9980."""
        for name in sorted(self.args.systems, key=lambda n: n not in SEED_SYSTEMS):
            getattr(self, f"_start_{name}")()
            self.check(name, booting=True)
            print(f"  {name:<8} ready on {HOST}:{self.ports[name]}", file=sys.stderr, flush=True)

    def _start_app(self, name: str, module: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        port = free_port()
        argv = [self.gunicorn, "-w", str(self.args.workers), "-k", "gevent", "-b", f"{HOST}:{port}", f"{module}:app"]
        # Gunicorn 27's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl), which the
        # three masters (and a seed deployment running meanwhile) would take from each other: one per app.
        argv[1:1] = ["--control-socket", str(self.tmp / f"{name}-gunicorn.ctl")]
        self.apps[name] = self.procs.spawn(f"{name}-gunicorn", argv, cwd, env, resend=True)
        self.ports[name] = port

    def _start_nodb(self) -> None:
        self._start_app("nodb", "nodb_app", APPS)

    def _start_redis(self) -> None:
        import redis

        port = free_port()
        proc = self.procs.spawn("redis-server", redis_server_argv(port, self.tmp), self.tmp)
        wait_port(proc, port, self.args.start_timeout, ping=b"*1\r\n$4\r\nPING\r\n")
        client = redis.Redis(host=HOST, port=port)
        try:
            client.hset("centre", "content", CONTENT)
        finally:
            client.close()
        self._start_app("redis", "redis_app", APPS, {"BENCH_REDIS_PORT": str(port)})

    def _start_cyberdb(self) -> None:
        self._start_app("cyberdb", "app", self._seed_server())

    def _start_flaskext(self) -> None:
        self._seed_server()
        self._start_app("flaskext", "app", EXT_DIR)  # its default CYBERDB_URL is the seed's server

    def _seed_server(self) -> Path:
        """Run the seed's cyberdb_init.py and cyberdb_serve.py once (from a temp dir); return that dir."""
        workdir = self.tmp / "seed"
        if workdir.is_dir():
            return workdir
        waited = wait_port_free(SEED_PORT, self.args.port_wait, "the seed's cyberdb_init.py/cyberdb_serve.py")
        if waited > 0.1:
            print(f"  waited {waited:.1f}s for {HOST}:{SEED_PORT} to be free", file=sys.stderr)
        workdir.mkdir()
        for name in SEED_FILES:
            shutil.copyfile(SEED_DIR / name, workdir / name)
        init = self.procs.run("cyberdb-init", [self.python, "cyberdb_init.py"], workdir, self.args.start_timeout + 60)
        if not (workdir / "data.cdb").is_file():
            raise init.fail("exited 0 but wrote no data.cdb")
        wait_port_free(SEED_PORT, self.args.port_wait, "cyberdb_serve.py (after cyberdb_init.py exited)")
        server = self.procs.spawn("cyberdb-serve", [self.python, "cyberdb_serve.py"], workdir)
        wait_port(server, SEED_PORT, self.args.start_timeout)
        return workdir

    def check(self, name: str, booting: bool = False) -> None:
        """GET / must answer 200 application/json with exactly EXPECTED_BODY (`booting`: wait for the app)."""
        app = self.apps[name]
        if booting:
            status, ctype, body = wait_http(app, self.ports[name], self.args.start_timeout)
        else:
            if not app.alive():
                raise app.fail(f"exited with code {app.popen.returncode}")
            status, ctype, body = http_get(self.ports[name])
        if status != 200 or ctype != "application/json" or body != EXPECTED_BODY:
            raise app.fail(f"GET / answered {status} {ctype!r} {body[:300]!r}, expected 200 {EXPECTED_BODY!r}")

    # -- load -----------------------------------------------------------------------------------------------
    def wrk_run(self, name: str, label: str, duration: int) -> WrkResult:
        """One wrk run against system `name`; its output goes to a log of its own."""
        url = f"http://{HOST}:{self.ports[name]}/"
        argv = [self.wrk, "-t", str(self.args.threads), "-c", str(self.args.connections), "-d", f"{duration}s"]
        argv += ["--latency", url]
        proc = self.procs.run(f"wrk-{label}", argv, self.tmp, timeout=duration + 60)
        text = proc.log.read_text(errors="replace")
        try:
            return parse_wrk(text)
        except ValueError as exc:
            raise proc.fail(str(exc)) from None

    def run(self) -> None:
        """All rounds: per system a discarded warm-up, the measured run, a check of the answer."""
        systems = list(self.args.systems)
        for rnd in range(self.args.rounds):
            shift = rnd % len(systems)
            for name in systems[shift:] + systems[:shift]:
                if self.args.warmup > 0:
                    self.wrk_run(name, f"{name}-r{rnd + 1}-warmup", self.args.warmup)
                res = self.wrk_run(name, f"{name}-r{rnd + 1}", self.args.duration)
                self.check(name)
                self.results[name].append(res)
                print(
                    f"  round {rnd + 1}/{self.args.rounds}  {name:<8} {res.req_s:>9,.0f} req/s"
                    f"  p50 {res.p50_ms:7.2f} ms  p99 {res.p99_ms:7.2f} ms  errors {res.errors}",
                    file=sys.stderr,
                    flush=True,
                )

    # -- report ---------------------------------------------------------------------------------------------
    def ratio(self, name: str, base: str) -> float:
        """Median over rounds of name's req/s / base's req/s in the same round."""
        mine, theirs = self.results.get(name, []), self.results.get(base, [])
        ratios = [a.req_s / b.req_s for a, b in zip(mine, theirs, strict=False) if b.req_s > 0]
        return statistics.median(ratios) if ratios else math.nan

    def report(self) -> None:
        """Header, the table, error details and the logs of systems that had errors."""
        a = self.args
        print()
        print(
            f"Seed deployment under load: wrk -t{a.threads} -c{a.connections} -d{a.duration}s --latency,"
            f" warm-up {a.warmup}s, rounds={a.rounds}; gunicorn -w {a.workers} -k gevent"
        )
        print(f"python {platform.python_version()}  {platform.platform()}  cpus={os.cpu_count()}")
        print("  ".join(self.info))
        for name in a.systems:
            print(f"  {name:<8} {DOCS[name]}")
        print()
        head = f"{'system':<8} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'vs redis':>8} {'vs nodb':>8}"
        head += f" {'spread':>7}"
        print(head)
        print("-" * len(head))
        for name in a.systems:
            rs = self.results[name]
            if not rs:
                continue
            req_s = statistics.median(r.req_s for r in rs)
            spread = (max(r.req_s for r in rs) - min(r.req_s for r in rs)) / req_s * 100 if req_s else math.nan
            print(
                f"{name:<8} {req_s:>9,.0f} {statistics.median(r.p50_ms for r in rs):>8.2f}"
                f" {statistics.median(r.p99_ms for r in rs):>8.2f} {sum(r.errors for r in rs):>7}"
                f" {_fmt(self.ratio(name, 'redis')):>8} {_fmt(self.ratio(name, 'nodb')):>8}"
                f" {(f'{spread:.0f}%' if len(rs) > 1 else '-'):>7}"
            )
        print()
        print("req/s, p50, p99: medians over rounds; errors: wrk's socket errors + responses >= 400, summed;")
        print("vs redis / vs nodb: req/s ratio within each round, median (above 1 = more req/s).")
        if self.results.get("flaskext") and self.results.get("cyberdb"):
            print(f"flaskext vs cyberdb (the extension vs the seed's hand-written app): "
                  f"{_fmt(self.ratio('flaskext', 'cyberdb'))}")
        for name in a.systems:
            rs = self.results[name]
            if any(r.errors for r in rs):
                sock = {k: sum(r.socket_errors[k] for r in rs) for k in rs[0].socket_errors}
                detail = ", ".join(f"{k} {v}" for k, v in sock.items())
                bad = sum(r.bad_status for r in rs)
                print(f"\n{name}: socket errors {detail}; status >= 400: {bad}")
                if bad or any(v for k, v in sock.items() if k != "timeout"):
                    print(f"{self.apps[name].name} log (tail):\n{self.apps[name].tail(40)}")
                else:
                    print("  only timeouts: requests wrk gave up on after its default 2 s (see bench/README.md)")


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def _versions() -> list[str]:
    out = []
    for dist in ("flask", "gevent", "gunicorn", "redis", "hiredis", "cyberdb"):
        try:
            out.append(f"{dist} {importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(f"{dist} -")
    return out


def _preflight(systems: list[str]) -> list[str]:
    """Check the tools are installed; return version strings for the header."""
    missing = []
    if shutil.which("wrk") is None:
        missing.append("wrk (apt-get install wrk)")
    if "redis" in systems and shutil.which("redis-server") is None:
        missing.append("redis-server (apt-get install redis-server)")
    gunicorn = Path(sys.executable).parent / "gunicorn"
    if not gunicorn.is_file():
        missing.append(f"gunicorn next to {sys.executable}")
    for module in ("flask", "gevent", "packaging", "redis"):
        try:
            importlib.metadata.version(module)
        except importlib.metadata.PackageNotFoundError:
            missing.append(f"python package {module}")
    if missing:
        raise BenchError("missing: " + "; ".join(missing) + "\nrun this through bench/run, which installs them")
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.splitlines()[:1]
    info = [line.split(" Copyright")[0] for line in wrk]
    if "redis" in systems:
        redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
        info.append(" ".join(redis[:3]))
    return info + _versions()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command line."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=int, help="seconds of each measured wrk run (15; --quick: 3)")
    p.add_argument("--warmup", type=int, help="seconds of the discarded wrk run before each one (3; --quick: 1)")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are printed (1)")
    p.add_argument("--quick", action="store_true", help="short runs for a smoke test")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated subset of {','.join(SYSTEMS)}")
    p.add_argument("--threads", type=int, default=2, help="wrk -t (2)")
    p.add_argument("--connections", type=int, default=100, help="wrk -c (100)")
    p.add_argument("--workers", type=int, default=3, help="gunicorn -w (3)")
    p.add_argument("--port-wait", type=float, default=60, help=f"seconds to wait for port {SEED_PORT} to be free")
    p.add_argument("--start-timeout", type=float, default=60, help="seconds for a server or app to start")
    args = p.parse_args(argv)
    args.duration = args.duration or (3 if args.quick else 15)
    args.warmup = (1 if args.quick else 3) if args.warmup is None else args.warmup
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    for name in args.systems:
        if name not in SYSTEMS:
            p.error(f"unknown system {name!r} (choose from {', '.join(SYSTEMS)})")
    if not args.systems or args.duration < 1 or args.warmup < 0 or args.rounds < 1:
        p.error("--systems must name one system; --duration and --rounds must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; returns the exit code."""
    args = parse_args(argv)
    install_signal_handlers()
    try:
        info = _preflight(args.systems)
    except BenchError as exc:
        print(f"seed bench failed: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="cyberdb-seed-bench-") as tmp:
        procs = Procs(Path(tmp))
        seed = Seed(args, procs, Path(tmp))
        seed.info = info

        def body() -> None:
            seed.start()
            seed.run()

        rc = run_guarded(procs, "seed bench", body)
        if rc:
            return rc
        seed.report()  # inside the temp dir: it may print log tails
    return 0


if __name__ == "__main__":
    sys.exit(main())
