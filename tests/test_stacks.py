"""The deployments of docs/deploy.md, run for real: Gunicorn (sync, gthread, gevent; with and without --preload),
uWSGI (with and without --lazy-apps, threads), Celery prefork workers, the systemd unit's command line, an asyncio
app, and the install story (a wheel with an extra into a fresh venv).

Every case runs the example files of examples/deploy/ as they are, against a real CyberDB server on a free loopback
port (one in this process, which the servers under test reach over TCP like any other), fires a known number of
concurrent requests (or tasks) that each add 1 to a counter, and requires every answer to succeed, the returned
values to be exactly 1..N (no increment lost, doubled or answered to the wrong worker) and the counter to end at N.
Processes run in their own session and are stopped by PID (dev.py's stop_process: SIGTERM to the group, then
SIGKILL); readiness is an open port or HTTP 200, never a sleep.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import celery
import celery.exceptions
import gunicorn.config
import pytest
from conftest import PASSWORD, free_port, load_dev, proxy_of

import cyberdb

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "examples" / "deploy"
BIN = Path(sys.executable).parent  # not resolved: the venv's bin dir holds gunicorn, uwsgi and celery
REQUESTS = 120
THREADS = 16
HTTP_TIMEOUT = 20.0
BOOT_TIMEOUT = 60.0

pytestmark = [pytest.mark.deploy, pytest.mark.timeout(120)]


dev = load_dev()
# Never route loopback requests through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module")
def db() -> Iterator[cyberdb.Server]:
    """One CyberDB server (in this process, so a test can see its blocked pops) for the module; each case uses
    counters and lists of its own."""
    srv = cyberdb.Server()
    srv.start(host="127.0.0.1", port=0, password=PASSWORD)
    try:
        yield srv
    finally:
        srv.stop()


def _url(db: cyberdb.Server, **options: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"cyberdb://:{PASSWORD}@127.0.0.1:{db.port}/" + (f"?{query}" if query else "")


def _key() -> str:
    return f"k-{uuid.uuid4().hex[:10]}"


class Processes:
    """Processes started by one test, each in its own session with its output in a log file; stopped by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: list[tuple[str, subprocess.Popen[bytes], signal.Signals | None]] = []

    def start(self, role: str, argv: Sequence[str], env: dict[str, str | None] | None = None,
              cwd: Path | None = None, leader_signal: signal.Signals | None = None,
              bin_dir: Path = BIN) -> subprocess.Popen[bytes]:
        """Start argv as if the venv of ``bin_dir`` were activated, plus ``env`` (None: remove the variable).

        Args:
            leader_signal: stop it with this signal to the leader alone first (Celery: a SIGTERM to its pool
                processes makes it start new ones).
        """
        full_env = dev.activated_env(bin_dir)
        for name, value in (env or {}).items():
            if value is None:
                full_env.pop(name, None)
            else:
                full_env[name] = value
        with open(self.log_path(role), "ab") as log:
            log.write(f"--- {shlex.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(argv, cwd=cwd or self.workdir, env=full_env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append((role, proc, leader_signal))
        return proc

    def log_path(self, role: str) -> Path:
        return self.workdir / f"{role}.log"

    def logs(self, limit: int = 4000) -> str:
        """The end of every log, for assertion messages."""
        parts = []
        for role in dict.fromkeys(role for role, _, _ in self.running):
            text = self.log_path(role).read_text(errors="replace")
            parts.append(f"--- {role} ---\n{text[-limit:]}")
        return "\n".join(parts)

    def stop_all(self) -> None:
        """Stop each process group: SIGTERM (repeated, for Gunicorn's booting workers), then SIGKILL."""
        for _, proc, leader_signal in reversed(self.running):
            if leader_signal is not None and proc.poll() is None:
                os.kill(proc.pid, leader_signal)
                try:
                    proc.wait(dev.STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    pass
            dev.stop_process(proc, resend_every=dev.GUNICORN_RESEND)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    p = Processes(tmp_path)
    try:
        yield p
    finally:
        p.stop_all()


def _post(url: str) -> tuple[int, dict[str, Any] | str]:
    """POST to url; (status, JSON body), or (-1, the error) when no HTTP answer came."""
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode(errors="replace")[:300]
    except OSError as exc:
        return -1, repr(exc)


def _hit_concurrently(base: str, key: str, procs: Processes, n: int = REQUESTS) -> set[int]:
    """POST /hit/key n times from THREADS threads; require 200s returning exactly 1..n; return the worker pids."""
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(lambda _: _post(f"{base}/hit/{key}"), range(n)))
    bad = [(status, body) for status, body in results if status != 200 or not isinstance(body, dict)]
    assert not bad, f"{len(bad)} of {n} requests failed, e.g. {bad[:3]}\n{procs.logs()}"
    bodies = [body for _, body in results if isinstance(body, dict)]
    values = sorted(body["value"] for body in bodies)
    assert values == list(range(1, n + 1)), f"values returned are not 1..{n}: {values}\n{procs.logs()}"
    return {int(body["pid"]) for body in bodies}


def _counter(db: cyberdb.Server, key: str) -> Any:
    with proxy_of(db) as proxy:
        return proxy.get_cyberdict("counters").get(key)


def _wait_for_waiter(db: cyberdb.Server, before: int, timeout: float = HTTP_TIMEOUT) -> None:
    """Poll the server until one more pop than ``before`` waits on it (its `blocked` count; a readiness check)."""
    deadline = time.monotonic() + timeout
    while db.info()["blocked"] <= before:
        assert time.monotonic() < deadline, "no pop came to wait on the server"
        time.sleep(0.02)


def _wait_http(base: str, proc: subprocess.Popen[bytes], procs: Processes) -> None:
    try:
        dev.wait_for_http(f"{base}/healthz", timeout=BOOT_TIMEOUT, proc=proc)
    except dev.DevError as exc:
        raise AssertionError(f"{exc}\n{procs.logs()}") from None


# ---- Gunicorn ---------------------------------------------------------------------------------------------------

GUNICORN_WORKERS = {"sync": [], "gthread": ["--threads", "4"], "gevent": []}
_GUNICORN_CONTROL_SOCKET = "control_socket_disable" in {s.name for s in gunicorn.config.KNOWN_SETTINGS}


def _gunicorn(procs: Processes, db: cyberdb.Server, worker: str, preload: bool, workers: int) -> str:
    """Start Gunicorn on examples/deploy/app.py with gunicorn.conf.py; return its base URL once it answers."""
    port = free_port()
    argv = [str(BIN / "gunicorn"), "-c", str(DEPLOY / "gunicorn.conf.py"), "--chdir", str(DEPLOY),
            "-b", f"127.0.0.1:{port}", "-w", str(workers), "-k", worker, *GUNICORN_WORKERS[worker]]
    if preload:
        argv.append("--preload")
    if _GUNICORN_CONTROL_SOCKET:
        argv.append("--no-control-socket")  # Gunicorn 25.1+ would leave one in ~/.gunicorn, shared by all
    proc = procs.start("gunicorn", [*argv, "app:app"], env={"CYBERDB_URL": _url(db, max_connections=8)})
    base = f"http://127.0.0.1:{port}"
    _wait_http(base, proc, procs)
    return base


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
@pytest.mark.parametrize("worker", sorted(GUNICORN_WORKERS))
def test_gunicorn_counts_exactly(procs: Processes, db: cyberdb.Server, worker: str, preload: bool) -> None:
    base = _gunicorn(procs, db, worker, preload, workers=2)
    key = _key()
    _hit_concurrently(base, key, procs)
    assert _counter(db, key) == REQUESTS


@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-load", "preload"])
@pytest.mark.parametrize("worker", ["gevent", "gthread"])
def test_gunicorn_worker_stays_responsive_during_a_blocking_call(procs: Processes, db: cyberdb.Server, worker: str,
                                                                 preload: bool) -> None:
    # One worker: a request waiting on the server (a blocking pop) must not hold up the next request of the same
    # worker. With unpatched sockets under gevent (or a lock held across the wait) the push would only be served
    # after the pop's 10 s timeout, and the pop would come back empty.
    base = _gunicorn(procs, db, worker, preload, workers=1)
    name = _key()
    blocked = db.info()["blocked"]
    with ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(_post, f"{base}/wait/{name}")
        _wait_for_waiter(db, blocked)
        status, pushed = _post(f"{base}/push/{name}")
        assert status == 200, pushed
        status, popped = waiting.result(timeout=HTTP_TIMEOUT)
    assert status == 200, popped
    assert isinstance(popped, dict) and isinstance(pushed, dict)
    assert popped["job"] == {"pid": pushed["pid"]}, f"the waiting request got {popped}\n{procs.logs()}"


# ---- uWSGI ------------------------------------------------------------------------------------------------------

UWSGI_MODES: dict[str, tuple[list[str], bool]] = {  # mode: (extra arguments, keep py-call-osafterfork)
    "preforked": ([], True),  # the app (and its client) is loaded in the master, then the workers are forked
    "lazy-apps": (["--lazy-apps"], True),  # loaded in each worker after the fork
    "threads": (["--threads", "4"], True),  # preforked, 4 threads per worker sharing one pool
    "no-osafterfork": ([], False),  # preforked, and the workers do not run Python's at-fork hooks
}


def _uwsgi_ini(tmp_path: Path, port: int, osafterfork: bool) -> Path:
    """examples/deploy/uwsgi.ini as it is, but for its directory and a free port (and maybe no osafterfork)."""
    text = (DEPLOY / "uwsgi.ini").read_text()
    edits = [("chdir = %d", f"chdir = {DEPLOY}"), ("http-socket = 127.0.0.1:8000", f"http-socket = 127.0.0.1:{port}")]
    if not osafterfork:
        edits.append(("py-call-osafterfork = true\n", ""))
    for old, new in edits:
        assert text.count(old) == 1, f"uwsgi.ini no longer has {old!r}"
        text = text.replace(old, new)
    ini = tmp_path / "uwsgi.ini"
    ini.write_text(text)
    return ini


@pytest.mark.parametrize("mode", list(UWSGI_MODES))
def test_uwsgi_counts_exactly(procs: Processes, db: cyberdb.Server, tmp_path: Path, mode: str) -> None:
    port = free_port()
    extra, osafterfork = UWSGI_MODES[mode]
    argv = [str(BIN / "uwsgi"), "--ini", str(_uwsgi_ini(tmp_path, port, osafterfork)), "--processes", "2", *extra]
    proc = procs.start("uwsgi", argv, env={"CYBERDB_URL": _url(db, max_connections=8)})
    base = f"http://127.0.0.1:{port}"
    _wait_http(base, proc, procs)
    key = _key()
    _hit_concurrently(base, key, procs)
    assert _counter(db, key) == REQUESTS


# ---- Celery -----------------------------------------------------------------------------------------------------

CELERY_TASKS = 60


def _celery_config(tmp_path: Path) -> dict[str, Any]:
    """Kombu's filesystem transport and Celery's file result backend: a broker that needs no server."""
    folders = {name: tmp_path / name for name in ("queue", "processed", "results", "control")}
    for folder in folders.values():
        folder.mkdir()
    return {
        "broker_url": "filesystem://",
        "broker_transport_options": {"data_folder_in": str(folders["queue"]), "data_folder_out": str(folders["queue"]),
                                     "processed_folder": str(folders["processed"]), "polling_interval": 0.05,
                                     "control_folder": str(folders["control"])},  # else ./control in the cwd
        "result_backend": f"file://{folders['results']}",
    }


def test_celery_prefork_workers_count_exactly(procs: Processes, db: cyberdb.Server, tmp_path: Path) -> None:
    config = _celery_config(tmp_path)
    (tmp_path / "celeryconfig.py").write_text("".join(f"{k} = {v!r}\n" for k, v in config.items()))
    env: dict[str, str | None] = {
           "CYBERDB_URL": _url(db), "CELERY_CONFIG_MODULE": "celeryconfig", "CELERY_BROKER_URL": None,
           "CELERY_RESULT_BACKEND": None,
           "PYTHONPATH": os.pathsep.join([str(DEPLOY), str(tmp_path)])}
    argv = [str(BIN / "celery"), "-A", "tasks", "worker", "--pool", "prefork", "--concurrency", "2",
            "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
    # SIGQUIT: Celery's cold shutdown (its warm one, SIGTERM, takes seconds even when idle)
    proc = procs.start("celery", argv, env=env, leader_signal=signal.SIGQUIT)

    sender = celery.Celery("sender")
    sender.config_from_object(config)
    key = _key()
    try:
        results = [sender.send_task("tasks.hit", args=[key]) for _ in range(CELERY_TASKS)]
        deadline = time.monotonic() + BOOT_TIMEOUT
        replies = []
        for result in results:  # waits for the worker to come up, then for each task; fails early if it died
            while True:
                assert proc.poll() is None, f"the celery worker exited with {proc.returncode}\n{procs.logs()}"
                assert time.monotonic() < deadline, f"tasks not done in {BOOT_TIMEOUT} s\n{procs.logs()}"
                try:
                    replies.append(result.get(timeout=1.0))
                    break
                except celery.exceptions.TimeoutError:
                    pass
    finally:
        sender.close()
    assert sorted(r["value"] for r in replies) == list(range(1, CELERY_TASKS + 1)), procs.logs()
    assert _counter(db, key) == CELERY_TASKS
    assert proc.pid not in {r["pid"] for r in replies}, "the tasks ran in the main process, not in forked children"


# ---- the server under systemd -------------------------------------------------------------------------------------

def _unit(path: Path) -> dict[str, list[str]]:
    """The settings of a systemd unit file (every value of a repeated key, in order)."""
    settings: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_systemd_unit_command_line_serves_and_keeps_writes_across_a_restart(procs: Processes, tmp_path: Path) -> None:
    # No systemd runs the tests: this runs the unit's ExecStart as systemd would (environment from the
    # EnvironmentFile, WorkingDirectory, KillSignal), with the venv's cyberdb, tmp_path for the state directory and a
    # free port; then restarts it as Restart= would and reads the writes back from the append-only log.
    unit = _unit(DEPLOY / "cyberdb.service")
    assert unit["Restart"] == ["on-failure"] and unit["KillSignal"] == ["SIGTERM"] and unit["KillMode"] == ["mixed"]
    assert unit["EnvironmentFile"] == ["/etc/cyberdb/cyberdb.env"]
    state = Path("/var/lib/cyberdb")
    assert unit["WorkingDirectory"] == [str(state)] and unit["StateDirectory"] == [state.name]
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)
    assert argv[:2] == ["/opt/cyberdb/bin/cyberdb", "serve"] and "--password" not in argv, exec_start
    port = free_port()
    argv = [str(BIN / "cyberdb"), *(a.replace(str(state), str(tmp_path)) for a in argv[1:])]
    argv[argv.index("--port") + 1] = str(port)
    env: dict[str, str | None] = {"CYBERDB_PASSWORD": None}
    for line in (DEPLOY / "cyberdb.env").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition("=")
            env[key] = value
    password = env["CYBERDB_PASSWORD"]
    assert password

    for run in range(2):
        proc = procs.start("cyberdb", argv, env=env, cwd=tmp_path)
        dev.wait_for_port(port, proc=proc)
        client = cyberdb.connect("127.0.0.1", port, password=password)
        try:
            with client.get_proxy() as proxy:
                if run == 0:
                    proxy.create_cyberdict("counters")
                assert proxy.get_cyberdict("counters").incr("restarts") == run + 1
        finally:
            client.close()
        os.kill(proc.pid, signal.SIGTERM)  # what systemctl stop / restart sends (KillMode=mixed: the server only)
        assert proc.wait(dev.STOP_TIMEOUT) == 0, f"SIGTERM gave exit status {proc.returncode}\n{procs.logs()}"
    assert (tmp_path / "data.aof").is_file()


# ---- the install story --------------------------------------------------------------------------------------------

def _run(argv: Sequence[str], timeout: float, **kwargs: Any) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    output = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{shlex.join(argv)} exited with {proc.returncode}\n{output}"
    return str(proc.stdout)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_wheel_with_gevent_extra_in_a_fresh_venv_runs_gunicorn_gevent(procs: Processes, db: cyberdb.Server,
                                                                       tmp_path: Path) -> None:
    # docs/deploy.md, "Install": build a wheel of this checkout, install it with extras into a new venv from the
    # package index as a user would (pip's cache makes the second run fast), then run `gunicorn -k gevent` from
    # that venv alone: the extras must bring everything it needs (gunicorn -k gevent also imports packaging).
    started = time.monotonic()
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(ROOT)], timeout=180)
    (wheel,) = dist.glob("cyberdb-*.whl")
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    fresh = venv / "bin"
    env = {k: v for k, v in dev.activated_env(fresh).items() if k != "PYTHONPATH"}
    pip = [str(fresh / "python"), "-m", "pip", "install", "--quiet"]
    _run([*pip, f"{wheel}[flask,gevent]"], timeout=240, env=env)
    installed = time.monotonic() - started
    # The other documented form, straight from a checkout (its dependencies are already in, so only cyberdb)
    _run([*pip, "--force-reinstall", "--no-deps", f"{ROOT}[flask,gevent]"], timeout=180, env=env)
    where = _run([str(fresh / "python"), "-c", "import cyberdb, gunicorn; print(cyberdb.__file__)"], timeout=60,
                 env=env, cwd=tmp_path)
    assert Path(where.strip()).is_relative_to(venv), f"cyberdb imported from {where}, not from the new venv"

    port = free_port()
    argv = [str(fresh / "gunicorn"), "-k", "gevent", "-w", "2", "-b", f"127.0.0.1:{port}", "--chdir", str(DEPLOY),
            *(["--no-control-socket"] if _GUNICORN_CONTROL_SOCKET else []), "app:app"]
    proc = procs.start("gunicorn", argv, env={"CYBERDB_URL": _url(db), "PYTHONPATH": None}, bin_dir=fresh)
    base = f"http://127.0.0.1:{port}"
    _wait_http(base, proc, procs)
    key = _key()
    _hit_concurrently(base, key, procs, n=40)
    assert _counter(db, key) == 40
    print(f"wheel, venv, pip install wheel[flask,gevent]: {installed:.1f} s; total {time.monotonic() - started:.1f} s")


# ---- asyncio (cyberdb.aio) ----------------------------------------------------------------------------------------

_GUNICORN_ASGI = ["gunicorn", "-c", "gunicorn.conf.py", "-k", "asgi", "-w", "2", "-b", "127.0.0.1:{port}"]
ASGI_SERVERS = {  # run from examples/deploy
    "uvicorn": ["uvicorn", "--workers", "2", "--host", "127.0.0.1", "--port", "{port}", "asgi_app:app"],
    "gunicorn-asgi": [*_GUNICORN_ASGI, "asgi_app:app"],
    "gunicorn-asgi-preload": [*_GUNICORN_ASGI, "--preload", "asgi_app:app"],
}


@pytest.mark.parametrize("server", list(ASGI_SERVERS))
def test_asyncio_app_counts_exactly(procs: Processes, db: cyberdb.Server, server: str) -> None:
    port = free_port()
    program, *args = ASGI_SERVERS[server]
    argv = [str(BIN / program), *(a.format(port=port) for a in args)]
    if program == "gunicorn" and _GUNICORN_CONTROL_SOCKET:
        argv.insert(-1, "--no-control-socket")
    proc = procs.start(server, argv, env={"CYBERDB_URL": _url(db, max_connections=8)}, cwd=DEPLOY)
    base = f"http://127.0.0.1:{port}"
    _wait_http(base, proc, procs)
    key = _key()
    _hit_concurrently(base, key, procs)
    assert _counter(db, key) == REQUESTS
