"""Fixtures and helpers that start real CyberDB servers on free loopback ports, in their own processes or in this one.

A server process is started with ``python -m cyberdb serve``, waited for by connecting to it (never by
sleeping), and stopped by PID in a finalizer (SIGTERM, then SIGKILL).  An in-process ``cyberdb.Server`` listens
once ``start()`` returns, always with ``PASSWORD``, and is stopped when its test (or ``with`` block) ends.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from redis_servers import RedisCluster, RedisServer

import cyberdb

PASSWORD = "test-password"
STARTUP_TIMEOUT = 20.0


def load_dev() -> ModuleType:
    """Import ROOT/dev.py once, as ``_cyberdb_dev`` (registered first: dataclasses look the module up there): its
    process handling (process groups, readiness by polling, stop by PID) drives the deployment tests."""
    name = "_cyberdb_dev"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parent.parent / "dev.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout: float = STARTUP_TIMEOUT,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    """Block until something accepts TCP connections on host:port (or fail)."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.02)  # polling interval of a readiness check, not a synchronisation sleep


class ServerProcess:
    """A CyberDB server in its own process."""

    def __init__(self, port: int | None = None, password: str | None = PASSWORD, encrypt: bool = False,
                 extra: list[str] | None = None, cwd: Path | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.password = password
        self.encrypt = encrypt
        self.extra = extra or []
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        """Start the process and wait until it listens."""
        cmd = [sys.executable, "-m", "cyberdb", "serve", "--host", self.host, "--port", str(self.port), *self.extra]
        if self.encrypt:
            cmd.append("--encrypt")
        env = dict(os.environ)
        if self.password is not None:
            env["CYBERDB_PASSWORD"] = self.password
        else:
            env.pop("CYBERDB_PASSWORD", None)
        self.proc = subprocess.Popen(cmd, env=env, cwd=self.cwd, start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_for_port(self.host, self.port, proc=self.proc)
        except BaseException:
            err = self.stop()
            raise RuntimeError(f"server did not start: {err}") from None

    def stop(self, sig: int = signal.SIGTERM) -> str:
        """Stop the process by PID; return what it wrote to stderr."""
        proc, self.proc = self.proc, None
        if proc is None:
            return ""
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        assert proc.stderr is not None
        err = proc.stderr.read().decode(errors="replace")
        proc.stderr.close()
        return err

    def connect(self, **kwargs: object) -> cyberdb.Client:
        """A client for this server with its password and encryption."""
        options: dict[str, object] = {"password": self.password, "encrypt": self.encrypt}
        options.update(kwargs)
        return cyberdb.connect(self.host, self.port, **options)  # type: ignore[arg-type]


def kill_by_pid(proc: subprocess.Popen[Any]) -> None:
    """SIGKILL a child process by PID unless it exited, reap it and close its pipes."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            stream.close()


def client_of(server: cyberdb.Server | ServerProcess, **options: Any) -> cyberdb.Client:
    """A new client of a server process (its password and encryption) or of a running in-process server."""
    if isinstance(server, ServerProcess):
        return server.connect(**options)
    assert server.port is not None, "the in-process server is not running"
    return cyberdb.connect("127.0.0.1", server.port, password=PASSWORD, **options)


@contextmanager
def proxy_of(server: cyberdb.Server | ServerProcess, **options: Any) -> Iterator[cyberdb.Proxy]:
    """A connected proxy of a new client of ``server`` (see ``client_of``); both closed afterwards."""
    client = client_of(server, **options)
    try:
        with client.get_proxy() as proxy:
            yield proxy
    finally:
        client.close()


@contextmanager
def serving(log: Path | None = None, fsync: str = "always", db: cyberdb.Server | None = None,
            **log_options: Any) -> Iterator[tuple[cyberdb.Server, cyberdb.Client]]:
    """An in-process server (``db``, or a new one), with an append-only log when ``log`` is given, and a client of
    it; both closed afterwards."""
    db = cyberdb.Server() if db is None else db
    if log is not None:
        db.set_append_log(str(log), fsync=fsync, **log_options)
    db.start(port=0, password=PASSWORD)
    try:
        client = client_of(db)
        try:
            yield db, client
        finally:
            client.close()
    finally:
        db.stop()


@pytest.fixture
def in_process(request: pytest.FixtureRequest) -> Callable[..., cyberdb.Server]:
    """Start a Server (``db``, or a new one) in this process on a free port; it is stopped when the test ends."""

    def start(db: cyberdb.Server | None = None) -> cyberdb.Server:
        db = cyberdb.Server() if db is None else db
        db.start(port=0, password=PASSWORD)
        request.addfinalizer(db.stop)
        return db

    return start


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "encrypted"])
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A running server, once without and once with encryption."""
    srv = ServerProcess(encrypt=request.param)
    request.addfinalizer(srv.stop)
    yield srv


@pytest.fixture(scope="module")
def plain_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """A running server without encryption."""
    srv = ServerProcess()
    request.addfinalizer(srv.stop)
    yield srv


@pytest.fixture
def make_server(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """Factory for servers with special settings; each is stopped when the test ends."""

    def make(**kwargs: object) -> ServerProcess:
        srv = ServerProcess(**kwargs)  # type: ignore[arg-type]
        request.addfinalizer(srv.stop)
        return srv

    return make


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[cyberdb.Client]:
    """A client of ``server``, closed afterwards (an idle pooled socket left to the GC is a ResourceWarning)."""
    c = server.connect()
    yield c
    c.close()


@pytest.fixture
def proxy(client: cyberdb.Client) -> Iterator[cyberdb.Proxy]:
    """A connected proxy, returned to the pool after the test."""
    with client.get_proxy() as p:
        yield p


@pytest.fixture
def name() -> str:
    """A table name no other test uses."""
    return f"t-{uuid.uuid4().hex[:12]}"


# --- Redis (issue 11): real redis-server processes and Redis Clusters, from tests/redis_servers.py ---------------

REDIS_HA_NODE_TIMEOUT_MS = 1000  # failover tests: a replica takes over about 1-2 s after this


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server on a free loopback port (no password, no RDB/AOF), stopped by PID after the module."""
    with RedisServer() as server:
        yield server


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters without replicas (node timeout 2 s), stopped by PID after the module."""
    with RedisCluster(masters=3) as cluster:
        yield cluster


@pytest.fixture
def redis_cluster_ha() -> Iterator[RedisCluster]:
    """A Redis Cluster of 3 masters with one replica each (node timeout 1 s), new for each failover test."""
    with RedisCluster(masters=3, replicas=1, node_timeout_ms=REDIS_HA_NODE_TIMEOUT_MS) as cluster:
        yield cluster
