"""Developer entry point for CyberDB: one command per workflow, standard library only.

Usage:
    python3 dev.py test [PYTEST_ARGS...]   ruff check, mypy --strict src/cyberdb and pytest, all in .venv
    python3 dev.py demo [--serve]          run the seed Flask + Gunicorn + gevent deployment end to end
    python3 dev.py bench [ARGS...]         exec bench/run

`test` and `demo` first create .venv (`python3 -m venv .venv`) when it is missing and run
`pip install -e ".[dev]"` into it unless .venv holds a stamp with the current pyproject.toml hash. `test` also
makes sure redis-server and redis-cli are on PATH (the Redis backend's tests start real servers): as root it runs
`apt-get install -y -q redis-server` (Debian's package) when they are missing, otherwise it says how to install them.

This file has to work before the package is installed, so it never imports cyberdb. It owns the process
handling of the seed deployment (a new session per process, readiness by connecting to the TCP port or
polling HTTP until 200, stop by PID with SIGTERM then SIGKILL); tests/test_deploy.py imports it from here so
the demo and the test drive the deployment the same way. POSIX only (process groups).
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

MIN_PYTHON = (3, 10)
ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
STAMP = VENV / ".dev-stamp"
INSTALL_LOCK = VENV / ".dev-install.lock"
EXAMPLE_DIR = ROOT / "examples" / "flask_gunicorn"
SHARED_SEED_DIR = ROOT.parent / "shared" / "seed"
SEED_FILES = ("cyberdb_init.py", "cyberdb_serve.py", "app.py")

# Fixed by the seed files, which are never modified.
HOST = "127.0.0.1"
CYBERDB_PORT = 9980
HTTP_PORT = 8000
PORT_ROLES = {CYBERDB_PORT: "CyberDB server", HTTP_PORT: "Gunicorn"}
URL = f"http://{HOST}:{HTTP_PORT}/"
GUNICORN_ARGS = ("-w", "4", "-b", f"{HOST}:{HTTP_PORT}", "-k", "gevent", "app:app")
EXPECTED = {"code": 1, "content": "Hello CyberDB!"}

INIT_TIMEOUT = 60.0  # cyberdb_init.py alone sleeps 3 s before it connects
PORT_TIMEOUT = 30.0
HTTP_TIMEOUT = 60.0  # four workers importing flask + gevent + cyberdb
STOP_TIMEOUT = 15.0  # SIGTERM grace before SIGKILL
# A Gunicorn worker still booting runs the master's inherited signal handler, which only queues a SIGTERM
# the worker never reads; the master then waits its 30 s graceful timeout. A second SIGTERM once the worker
# has its own handlers stops it.
GUNICORN_RESEND = 1.0
POLL_INTERVAL = 0.05

# Never route loopback requests through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class DevError(RuntimeError):
    """A dev.py step failed; the message says which and carries the relevant log tail."""


def say(message: str) -> None:
    """Print one progress line."""
    print(f"[dev] {message}", flush=True)


def _quiet(message: str) -> None:
    """Discard a progress line."""


# --- processes -------------------------------------------------------------------------------------------


def activated_env(bin_dir: Path) -> dict[str, str]:
    """Return os.environ as `source bin_dir/activate` would leave it, plus unbuffered Python output."""
    env = dict(os.environ)
    env.pop("PYTHONHOME", None)
    env["VIRTUAL_ENV"] = str(bin_dir.parent)
    env["PATH"] = os.pathsep.join([str(bin_dir), env.get("PATH", os.defpath)])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _signal_group(pid: int, sig: signal.Signals) -> None:
    """Send sig to the process group led by pid (start_new_session=True makes pgid == pid)."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone (PermissionError: macOS, group of zombies)


def stop_process(
    proc: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT, resend_every: float | None = None
) -> int:
    """Stop proc's process group with SIGTERM, then SIGKILL after timeout; reap it.

    Args:
        resend_every: repeat SIGTERM at this interval until the leader exits (see GUNICORN_RESEND).

    Returns:
        The leader's exit code (negative: killed by that signal).
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        left = deadline - time.monotonic()
        if left <= 0:
            _signal_group(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
            break
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(left if resend_every is None else min(left, resend_every))
        except subprocess.TimeoutExpired:
            pass
    # A leader that died may leave members behind (e.g. Gunicorn workers after a killed master): kill them and
    # wait until the group is gone, so that their listening sockets are closed when we return.
    _signal_group(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
    return proc.returncode


def _group_alive(pgid: int) -> bool:
    """Tell whether any process of the group still exists (zombies awaiting their reaper count)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def port_in_use(port: int, host: str = HOST) -> bool:
    """Tell whether something listens on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR as servers set it: a TIME_WAIT left by an earlier run is no conflict, a listener is.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports_free(ports: Sequence[int] = (CYBERDB_PORT, HTTP_PORT), wait: float = 0.0) -> None:
    """Raise DevError naming every port of the seed deployment that is still taken after ``wait`` seconds.

    A deployment stopped a moment ago may hold its ports until its killed processes are gone, so a caller that
    just stopped one (the tests) waits; a user's first run (the demo) does not.
    """
    deadline = time.monotonic() + wait
    busy = [port for port in ports if port_in_use(port)]
    while busy and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL)
        busy = [port for port in ports if port_in_use(port)]
    if busy:
        lines = [f"  {HOST}:{port} ({PORT_ROLES.get(port, 'needed')})" for port in busy]
        raise DevError(
            "the seed deployment needs these ports, but something already listens there:\n"
            + "\n".join(lines)
            + "\nstop it first (find it with: ss -ltnp 'sport = :PORT'  or  lsof -i :PORT) and retry"
        )


def wait_for_port(
    port: int, host: str = HOST, timeout: float = PORT_TIMEOUT, proc: subprocess.Popen[bytes] | None = None
) -> float:
    """Connect to host:port until it accepts, failing early if proc exits.

    Returns:
        Seconds waited.

    Raises:
        DevError: proc exited first, or the deadline passed.
    """
    start = time.monotonic()
    deadline = start + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise DevError(f"pid {proc.pid} exited with code {proc.returncode} before {host}:{port} was up")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return time.monotonic() - start
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise DevError(f"{host}:{port} accepted no connection within {timeout:.0f}s (last error: {last})")
        time.sleep(POLL_INTERVAL)


def http_get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """GET url (no proxy, no keep-alive).

    Returns:
        (status, body), also for HTTP error statuses.

    Raises:
        OSError: no HTTP response at all (urllib.error.URLError is one).
    """
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        with exc:  # holds the response body, closing it avoids a ResourceWarning
            return exc.code, exc.read()


def wait_for_http(
    url: str = URL, timeout: float = HTTP_TIMEOUT, proc: subprocess.Popen[bytes] | None = None
) -> tuple[float, bytes]:
    """GET url until it answers 200, failing early if proc exits.

    Returns:
        (seconds waited, body of the 200 response).

    Raises:
        DevError: proc exited first, or the deadline passed.
    """
    start = time.monotonic()
    deadline = start + timeout
    last = "no response"
    while True:
        if proc is not None and proc.poll() is not None:
            raise DevError(f"pid {proc.pid} exited with code {proc.returncode} before {url} answered 200")
        try:
            status, body = http_get(url, timeout=max(1.0, min(10.0, deadline - time.monotonic())))
        except OSError as exc:
            last = repr(exc)
        else:
            if status == 200:
                return time.monotonic() - start, body
            last = f"HTTP {status}: {body[:500]!r}"
        if time.monotonic() >= deadline:
            raise DevError(f"{url} did not answer 200 within {timeout:.0f}s (last: {last})")
        time.sleep(POLL_INTERVAL)


def is_expected_body(body: bytes) -> bool:
    """Tell whether body is the JSON the seed app must answer, {"code":1,"content":"Hello CyberDB!"}."""
    try:
        data = json.loads(body)
    except ValueError:
        return False
    # type check because True == 1 in Python, and {"code": true} is not the answer
    return isinstance(data, dict) and data == EXPECTED and type(data["code"]) is int


class Deployment:
    """The seed deployment's processes, run from one work directory and stopped by PID in stop_all().

    Each process gets its own session (so Ctrl-C in a terminal reaches only us, and stopping reaches its
    whole group) and appends stdout+stderr to <log_dir>/<role>.log.
    """

    def __init__(
        self,
        workdir: Path,
        python: Path,
        say: Callable[[str], None] = _quiet,
        log_dir: Path | None = None,
    ) -> None:
        """Prepare to run the seed files in workdir with python and the gunicorn next to it."""
        self.workdir = workdir
        self.python = python
        self.gunicorn = python.parent / "gunicorn"
        self.log_dir = workdir if log_dir is None else log_dir
        self.server: subprocess.Popen[bytes] | None = None
        self.web: subprocess.Popen[bytes] | None = None
        self._say = say
        self._env = activated_env(python.parent)
        self._running: list[tuple[str, subprocess.Popen[bytes]]] = []

    def __repr__(self) -> str:
        """Show the work directory and the live processes."""
        live = " ".join(f"{role}={proc.pid}" for role, proc in self._running if proc.poll() is None)
        return f"<Deployment {self.workdir} {live or 'STOPPED'}>"

    def log_path(self, role: str) -> Path:
        """Return the log file of role ('init', 'server' or 'gunicorn')."""
        return self.log_dir / f"{role}.log"

    def log_tail(self, role: str, limit: int = 6000) -> str:
        """Return the end of role's log, framed for an error message."""
        path = self.log_path(role)
        try:
            text = path.read_text(errors="replace")
        except FileNotFoundError:
            return f"--- {path}: (no log) ---"
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        return f"--- {path} ---\n{text.rstrip()}\n--- end of {path.name} ---"

    def log_text(self) -> str:
        """Return the tails of all logs, for assertion messages."""
        return "\n".join(self.log_tail(role) for role in ("init", "server", "gunicorn"))

    def copy_seed(self, source: Path = EXAMPLE_DIR) -> None:
        """Copy the three seed files byte for byte into the work directory."""
        for name in SEED_FILES:
            shutil.copyfile(source / name, self.workdir / name)
        self._say(f"copied {', '.join(SEED_FILES)} from {source} to {self.workdir}")

    def _spawn(self, role: str, argv: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start argv in its own session, output appended to role's log."""
        shown = shlex.join([Path(argv[0]).name, *argv[1:]])
        with open(self.log_path(role), "ab") as log:
            log.write(f"--- {shlex.join(argv)}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._running.append((role, proc))
        self._say(f"started `{shown}` (pid {proc.pid}, log {self.log_path(role)})")
        return proc

    def _fail(self, role: str, message: str) -> DevError:
        """Build a DevError carrying role's log."""
        return DevError(f"{message}\n{self.log_tail(role)}")

    def run_init(self, timeout: float = INIT_TIMEOUT) -> None:
        """Run `python cyberdb_init.py` and require exit 0 and a data.cdb within timeout."""
        proc = self._spawn("init", [str(self.python), "cyberdb_init.py"])
        start = time.monotonic()
        try:
            rc = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            stop_process(proc)
            raise self._fail("init", f"cyberdb_init.py did not exit within {timeout:.0f}s") from None
        if rc != 0:
            raise self._fail("init", f"cyberdb_init.py exited with code {rc}")
        data = self.workdir / "data.cdb"
        if not data.is_file():
            raise self._fail("init", f"cyberdb_init.py exited 0 but wrote no {data}")
        elapsed = time.monotonic() - start
        self._say(f"cyberdb_init.py exited 0 after {elapsed:.1f}s; data.cdb is {data.stat().st_size} bytes")

    def start_server(self, timeout: float = PORT_TIMEOUT) -> subprocess.Popen[bytes]:
        """Start `python cyberdb_serve.py` and wait until it accepts TCP connections."""
        if self.server is not None and self.server.poll() is None:
            raise DevError(f"cyberdb_serve.py is already running (pid {self.server.pid})")
        self.server = self._spawn("server", [str(self.python), "cyberdb_serve.py"])
        try:
            elapsed = wait_for_port(CYBERDB_PORT, timeout=timeout, proc=self.server)
        except DevError as exc:
            raise self._fail("server", f"cyberdb_serve.py: {exc}") from None
        self._say(f"CyberDB accepts connections on {HOST}:{CYBERDB_PORT} after {elapsed:.1f}s")
        return self.server

    def stop_server(self, timeout: float = STOP_TIMEOUT) -> int:
        """Stop cyberdb_serve.py with SIGTERM (it saves its backup), SIGKILL after timeout.

        Returns:
            Its exit code.
        """
        if self.server is None:
            raise DevError("cyberdb_serve.py was not started")
        return self._stop("server", self.server, timeout)

    def start_gunicorn(self, timeout: float = HTTP_TIMEOUT) -> bytes:
        """Start `gunicorn -w 4 -b 127.0.0.1:8000 -k gevent app:app` and wait for HTTP 200 on /.

        Returns:
            The body of the first 200 response.
        """
        if not self.gunicorn.is_file():
            raise DevError(f"no gunicorn next to {self.python}; install it: pip install -e '.[dev]'")
        self.web = self._spawn("gunicorn", [str(self.gunicorn), *GUNICORN_ARGS])
        try:
            elapsed, body = wait_for_http(URL, timeout=timeout, proc=self.web)
        except DevError as exc:
            raise DevError(f"gunicorn: {exc}\n{self.log_text()}") from None
        self._say(f"{URL} answered 200 after {elapsed:.1f}s")
        return body

    def _stop(self, role: str, proc: subprocess.Popen[bytes], timeout: float) -> int:
        """Stop one process group and report how it ended."""
        alive = proc.poll() is None
        start = time.monotonic()
        # Only Gunicorn gets repeated SIGTERMs: the server may still be saving its backup after the first.
        rc = stop_process(proc, timeout, resend_every=GUNICORN_RESEND if role == "gunicorn" else None)
        if (role, proc) in self._running:
            self._running.remove((role, proc))
        if alive:
            self._say(f"stopped {role} (pid {proc.pid}): exit {rc} after {time.monotonic() - start:.1f}s")
        return rc

    def stop_all(self) -> None:
        """Stop every process still tracked, newest first (Gunicorn before the server it talks to)."""
        for role, proc in reversed(list(self._running)):
            self._stop(role, proc, STOP_TIMEOUT)

    def wait_any(self) -> None:
        """Block until the server or Gunicorn exits, then raise DevError with the logs."""
        procs = [(role, proc) for role, proc in self._running if role in ("server", "gunicorn")]
        while True:
            for role, proc in procs:
                if proc.poll() is not None:
                    message = f"{role} (pid {proc.pid}) exited with code {proc.returncode}"
                    raise DevError(f"{message}\n{self.log_text()}")
            time.sleep(0.5)


# --- venv --------------------------------------------------------------------------------------------------


def venv_python() -> Path:
    """Return the Python of the repo's .venv."""
    return VENV / "bin" / "python"


def pyproject_hash() -> str:
    """Return the sha256 of pyproject.toml, which is what the install stamp records."""
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def _read_stamp() -> str | None:
    """Return the hash recorded by the last successful install, if any."""
    try:
        return STAMP.read_text().strip()
    except FileNotFoundError:
        return None


@contextmanager
def _install_lock() -> Iterator[None]:
    """Serialize installs into the shared .venv between concurrent dev.py runs."""
    with open(INSTALL_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_venv() -> Path:
    """Create .venv if missing and install the package with its dev extras unless the stamp is current.

    Returns:
        The venv's Python.

    Raises:
        DevError: venv creation or pip failed.
    """
    python = venv_python()
    if not python.exists():
        say(f"creating {VENV} with {sys.executable} -m venv")
        if subprocess.call([sys.executable, "-m", "venv", str(VENV)]) != 0 or not python.exists():
            raise DevError(f"could not create {VENV}")
    want = pyproject_hash()
    if _read_stamp() == want:
        say(f"{VENV.name}: dependencies up to date (pyproject.toml unchanged)")
        return python
    with _install_lock():
        if _read_stamp() == want:  # another dev.py installed while we waited
            return python
        say(f'{VENV.name}: installing -e ".[dev]" (pyproject.toml is new or changed)')
        argv = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-e", ".[dev]"]
        if subprocess.call(argv, cwd=ROOT) != 0:
            raise DevError(f'pip install -e ".[dev]" failed in {VENV}')
        tmp = STAMP.with_name(STAMP.name + ".tmp")
        tmp.write_text(want + "\n")
        os.replace(tmp, STAMP)
    return python


# --- Redis, for the Redis backend's tests --------------------------------------------------------------

REDIS_TOOLS = ("redis-server", "redis-cli")
APT_TIMEOUT = 900.0  # seconds for one apt-get run on a slow mirror


def _apt_get(*args: str) -> bool:
    """Run `apt-get ARGS` non-interactively (bounded); tell whether it succeeded."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    try:
        done = subprocess.run(["apt-get", *args], env=env, stdin=subprocess.DEVNULL, timeout=APT_TIMEOUT)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def ensure_redis() -> None:
    """Make sure redis-server and redis-cli are on PATH; as root, install Debian's redis-server package if not.

    Raises:
        DevError: they are missing and cannot be installed here (not root, no apt-get, or apt-get failed).
    """
    missing = " and ".join(tool for tool in REDIS_TOOLS if shutil.which(tool) is None)
    if not missing:
        return
    hint = "install them first: sudo apt-get install -y redis-server (Debian/Ubuntu; brings redis-cli too)"
    if os.geteuid() != 0:
        raise DevError(f"the Redis tests need {missing}, not found on PATH; {hint}")
    if shutil.which("apt-get") is None:
        raise DevError(f"the Redis tests need {missing}, not found on PATH, and there is no apt-get; {hint}")
    say(f"installing redis-server (apt-get): {missing} not found on PATH")
    # as bench/run: a fresh machine's package lists may be stale or empty, so update only when install fails
    if not _apt_get("install", "-y", "-q", "redis-server") and not (
        _apt_get("update", "-q") and _apt_get("install", "-y", "-q", "redis-server")
    ):
        raise DevError("apt-get install -y -q redis-server failed (see its output above)")
    missing = " and ".join(tool for tool in REDIS_TOOLS if shutil.which(tool) is None)
    if missing:
        raise DevError(f"apt-get installed redis-server but {missing} is still not on PATH")


# --- commands --------------------------------------------------------------------------------------------


def cmd_test(pytest_args: Sequence[str]) -> int:
    """Run ruff, mypy --strict and pytest in the venv; return 1 if any of them failed."""
    ensure_redis()
    python = ensure_venv()
    steps = [
        ("ruff", ["ruff", "check", "."]),
        ("mypy", ["mypy", "--strict", "src/cyberdb", "examples/atomic_updates.py"]),
        ("pytest", ["pytest", *pytest_args]),
    ]
    env = activated_env(python.parent)
    results: list[tuple[str, int]] = []
    for name, argv in steps:
        say(f"$ {shlex.join(argv)}")
        results.append((name, subprocess.call([str(python), "-m", *argv], cwd=ROOT, env=env)))
    failed = [f"{name} (exit {rc})" for name, rc in results if rc != 0]
    say("all passed: ruff, mypy, pytest" if not failed else "FAILED: " + ", ".join(failed))
    return 1 if failed else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into KeyboardInterrupt so the demo's cleanup runs."""
    raise KeyboardInterrupt


def cmd_demo(serve: bool) -> int:
    """Run the seed deployment in a temp dir, check GET / and stop it (or keep serving with --serve)."""
    python = ensure_venv()
    check_ports_free()
    # Ctrl-C and SIGTERM both end in the cleanup below, even when started with SIGINT ignored (`cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    ok = False
    with tempfile.TemporaryDirectory(prefix="cyberdb-demo-") as tmp:
        deployment = Deployment(Path(tmp), python, say=say)
        try:
            deployment.copy_seed()
            deployment.run_init()
            deployment.start_server()
            body = deployment.start_gunicorn()
            say(f"GET {URL} ->")
            print(body.decode("utf-8", errors="replace"), flush=True)
            ok = is_expected_body(body)
            if not ok:
                say(f"FAILED: expected {json.dumps(EXPECTED, separators=(',', ':'))}")
                return 1
            if not serve:
                say("OK: the seed deployment answers as documented")
                return 0
            say(f"serving {URL} (CyberDB on {HOST}:{CYBERDB_PORT}); press Ctrl-C to stop")
            deployment.wait_any()
            return 1  # not reached: wait_any only returns by raising
        except KeyboardInterrupt:
            say("interrupted")
            return 0 if serve and ok else 130
        finally:
            # a second Ctrl-C must not abandon the processes half-stopped
            previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
            try:
                deployment.stop_all()
            finally:
                signal.signal(signal.SIGINT, previous)


def cmd_bench(args: Sequence[str]) -> int:
    """Replace this process with bench/run ARGS."""
    run = ROOT / "bench" / "run"
    if not run.is_file():
        raise DevError(f"{run} does not exist")
    sys.stdout.flush()
    try:
        os.execv(run, [str(run), *args])
    except OSError as exc:
        raise DevError(f"cannot exec {run}: {exc}") from exc
    return 1  # not reached


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch to test, demo or bench; return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if sys.version_info[:2] < MIN_PYTHON:
        print(f"dev.py needs Python {'.'.join(map(str, MIN_PYTHON))}+", file=sys.stderr)
        return 2
    if not args or args[0] in ("-h", "--help", "help"):
        print(__doc__)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command == "test":
            return cmd_test(rest)
        if command == "demo":
            parser = argparse.ArgumentParser(prog="dev.py demo", description=cmd_demo.__doc__)
            parser.add_argument("--serve", action="store_true", help="keep serving until Ctrl-C")
            return cmd_demo(parser.parse_args(rest).serve)
        if command == "bench":
            return cmd_bench(rest)
    except DevError as exc:
        print(f"dev.py {command}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"dev.py: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
