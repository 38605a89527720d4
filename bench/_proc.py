"""Child processes for bench.py, seed.py and memory.py: start, wait until ready, stop by PID, free ports.

This module owns every process the benchmarks start. Each child runs in its own session (so Ctrl-C
reaches only the benchmark, which then stops the children in order) with PR_SET_PDEATHSIG (so a SIGKILLed
benchmark leaves no orphans), optionally pinned to CPUs, logs to a file (or talks over pipes), and is stopped
by its PID: SIGTERM, then SIGKILL of the process group it leads (Gunicorn's workers are in it), waiting until
the group is gone so its ports are free again. Readiness is always polled (connect, PING, HTTP GET), never a
fixed sleep. Only 127.0.0.1 is used.
"""

from __future__ import annotations

import contextlib
import ctypes
import http.client
import os
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
POLL_S = 0.02  # polling interval of readiness loops, not a wait for readiness
STOP_TIMEOUT_S = 15.0
# A Gunicorn worker still booting runs the master's inherited signal handler and misses a single SIGTERM;
# the master then waits its 30 s graceful timeout. Repeating SIGTERM every second stops it (dev.py, too).
RESEND_S = 1.0


class BenchError(Exception):
    """A process failed or a check did not hold; the message says which and carries its log tail."""


@dataclass
class Proc:
    """A child we started; `resend` repeats SIGTERM while stopping (Gunicorn); `log` is None for a piped one."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path | None
    resend: bool = False

    @property
    def pid(self) -> int:
        """The child's PID (== its process group id: it leads its own session)."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the child has not exited."""
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The last lines of the child's log, indented."""
        if self.log is None or not self.log.exists():
            return ""
        text = self.log.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"  | {line}" for line in text)

    def fail(self, message: str) -> BenchError:
        """A BenchError about this child, with its log tail."""
        return BenchError(f"{self.name} (pid {self.pid}): {message}\n{self.tail()}")


def _preexec(cpus: set[int] | None = None) -> Any:
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        prctl = None

    def preexec() -> None:
        if prctl is not None:
            prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
        if cpus:
            os.sched_setaffinity(0, cpus)

    return preexec


class Procs:
    """Every process one benchmark run starts; stop_all() ends them by PID, newest first."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[Proc] = []

    def spawn(
        self,
        name: str,
        argv: Sequence[str],
        cwd: Path,
        env: dict[str, str] | None = None,
        resend: bool = False,
        cpus: set[int] | None = None,
        pipes: bool = False,
    ) -> Proc:
        """Start argv in its own session (pinned to `cpus` if given), stdout and stderr to logdir/<name>.log.

        With `pipes`, stdin and stdout are pipes to us instead (popen.stdin/stdout) and stderr is ours; no log.
        """
        common: dict[str, Any] = {
            "cwd": cwd,
            "env": dict(os.environ, PYTHONUNBUFFERED="1", **(env or {})),
            "start_new_session": True,
            "preexec_fn": _preexec(cpus),
        }
        log = None
        if pipes:
            popen = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, **common)
        else:
            log = self.logdir / f"{name}.log"
            with log.open("ab") as out:
                out.write(f"--- {shlex.join(argv)}\n".encode())
                out.flush()
                popen = subprocess.Popen(
                    list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **common
                )
        proc = Proc(name, popen, log, resend)
        self.procs.append(proc)
        return proc

    def run(self, name: str, argv: Sequence[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> Proc:
        """Start argv and wait for it to exit 0 within timeout (stopping it if not); return it, exited."""
        proc = self.spawn(name, argv, cwd, env)
        try:
            rc = proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop(proc)
            raise proc.fail(f"did not exit within {timeout:.0f}s") from None
        self.stop(proc)  # reaped already: forget it, and end anything left in its group
        if rc != 0:
            raise proc.fail(f"exited with code {rc}")
        return proc

    def stop(self, proc: Proc, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM proc (again every RESEND_S if proc.resend), SIGKILL its group after timeout; reap it."""
        deadline = time.monotonic() + timeout
        while proc.alive():
            left = deadline - time.monotonic()
            if left <= 0:
                proc.popen.kill()
                proc.popen.wait()
                break
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(min(left, RESEND_S) if proc.resend else left)
        # A leader that is gone may leave members of its group behind (Gunicorn workers of a killed master):
        # kill them and wait until the group is empty, so that no one holds the ports when we return.
        _killpg(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        for pipe in (proc.popen.stdin, proc.popen.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if proc in self.procs:
            self.procs.remove(proc)
        return proc.popen.returncode

    def stop_all(self) -> None:
        """Stop every child still tracked, newest first (an app before the database it talks to)."""
        for proc in reversed(list(self.procs)):
            self.stop(proc)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True if something listens on 127.0.0.1:port (a TIME_WAIT is no conflict, as for SO_REUSEADDR servers)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
    return False


def wait_port_free(port: int, timeout: float, why: str) -> float:
    """Wait until nothing listens on port; return the seconds waited.

    Raises:
        BenchError: still taken after timeout.
    """
    start = time.monotonic()
    while port_in_use(port):
        if time.monotonic() - start > timeout:
            raise BenchError(
                f"{HOST}:{port} is still taken after {timeout:.0f}s, but {why} needs it.\n"
                f"Find the owner with `ss -ltnp 'sport = :{port}'`, stop it, and run again."
            )
        time.sleep(POLL_S)
    return time.monotonic() - start


def _answers(port: int, ping: bytes | None, tls: ssl.SSLContext | None = None) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1) as raw:
            with tls.wrap_socket(raw, server_hostname=HOST) if tls is not None else raw as sock:
                if ping is None:
                    return True
                sock.sendall(ping)
                return sock.recv(64).startswith(b"+PONG")  # not -LOADING while Redis loads
    except OSError:
        return False


def wait_port(proc: Proc, port: int, timeout: float, ping: bytes | None = None,
              tls: ssl.SSLContext | None = None, poll: float = POLL_S) -> None:
    """Return once proc answers on port (a connect, or `+PONG` to `ping`, over `tls` if given); fail early if
    proc exits."""
    deadline = time.monotonic() + timeout
    while not _answers(port, ping, tls):
        if not proc.alive():
            raise proc.fail(f"exited with code {proc.popen.returncode} before listening on port {port}")
        if time.monotonic() > deadline:
            raise proc.fail(f"not answering on port {port} after {timeout:.0f}s")
        time.sleep(poll)
    if not proc.alive():  # something else answered on the port
        raise proc.fail(f"exited with code {proc.popen.returncode}; another process answers on port {port}")


def http_get(port: int, path: str = "/", timeout: float = 10.0) -> tuple[int, str, bytes]:
    """GET http://127.0.0.1:port/path directly (never through an http_proxy); return status, type, body."""
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def wait_http(proc: Proc, port: int, timeout: float) -> tuple[int, str, bytes]:
    """Return the first HTTP answer of proc on port; fail early if proc exits."""
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise proc.fail(f"exited with code {proc.popen.returncode} before answering HTTP on port {port}")
        try:
            return http_get(port, timeout=max(1.0, deadline - time.monotonic()))
        except (OSError, http.client.HTTPException):
            pass
        if time.monotonic() > deadline:
            raise proc.fail(f"no HTTP answer on port {port} after {timeout:.0f}s")
        time.sleep(POLL_S)


def redis_server_argv(port: int, workdir: Path) -> list[str]:
    """argv of a redis-server on 127.0.0.1:port, in the foreground, persisting nothing, files in workdir.

    Raises:
        BenchError: redis-server is not on PATH.
    """
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise BenchError("redis-server is not on PATH (bench/run installs it with apt-get)")
    argv = [redis_server, "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"]
    return [*argv, "--dir", str(workdir), "--protected-mode", "yes", "--daemonize", "no"]


def install_signal_handlers() -> None:
    """SIGTERM raises SystemExit and SIGINT KeyboardInterrupt, so that `finally` stops the children."""

    def on_sigterm(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_sigterm)
    # Ctrl-C must reach the cleanup even when started with SIGINT ignored (e.g. `bench/run seed &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)


def run_guarded(procs: Procs, what: str, body: Callable[[], None], show_logs: bool = False) -> int:
    """Run body and stop every child of procs afterwards, whatever happens; return an exit code.

    0 if body returned; 1 after printing `<what> failed: ...` for a BenchError; 130 after Ctrl-C. Any other
    exception propagates (with `show_logs`, after printing every live child's log tail).
    """
    try:
        body()
    except BenchError as exc:
        print(f"{what} failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        if show_logs:
            for proc in procs.procs:  # a client error (e.g. from cyberdb): show what the servers said
                print(f"{proc.name} (pid {proc.pid}) log (tail):\n{proc.tail()}", file=sys.stderr)
        raise
    finally:
        procs.stop_all()
    return 0
