"""Real redis-server processes and Redis Clusters for the tests of the Redis backend (issue 11).

``RedisServer`` runs one redis-server on a free loopback port in its own temp dir (no RDB, no AOF);
``RedisCluster`` runs N masters with M replicas each and creates the cluster with ``redis-cli --cluster create``
(3 masters or more) or by hand (CLUSTER ADDSLOTSRANGE + MEET + REPLICATE, for 1 or 2 masters). Both are context
managers. Readiness is checked, never slept for: PING answers; every node says ``cluster_state:ok``, knows every
node and has the same slot map and roles; every replica's link to its master is up. Each process runs in its own
session and is stopped by PID (SIGTERM, SIGKILL after ``STOP_TIMEOUT``), its temp dir removed; every wait is
bounded. Standard library only (a few lines of RESP), so the fixtures never depend on the client under test.
``python3 dev.py test`` installs redis-server and redis-cli (Debian's package) when they are missing.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Literal, TypeVar
from urllib.parse import quote

HOST = "127.0.0.1"
START_TIMEOUT = 20.0  # seconds until a new redis-server answers PING
STOP_TIMEOUT = 10.0  # SIGTERM grace before SIGKILL
CLUSTER_TIMEOUT = 60.0  # seconds to create a cluster and see it consistent
NODE_TIMEOUT_MS = 2000
SLOTS = 16384
POLL = 0.02  # interval of readiness polling, never a synchronisation sleep
START_ATTEMPTS = 3  # a free port taken by someone else before redis-server binds it: retry with new ports
INSTALL_HINT = "run `python3 dev.py test` (installs it as root) or `apt-get install -y redis-server`"

Role = Literal["master", "replica"]
_T = TypeVar("_T")


class RedisError(Exception):
    """An error reply (``-ERR ...``) from a Redis server."""


# --- tools and a minimal RESP client ---------------------------------------------------------------------------


def redis_tool(name: str) -> str:
    """Return the path of ``redis-server`` or ``redis-cli``.

    Raises:
        RuntimeError: it is not on PATH, with how to install it.
    """
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} is not on PATH; {INSTALL_HINT}")
    return path


@functools.cache
def redis_version() -> tuple[int, int, int]:
    """The version of the ``redis-server`` on PATH, e.g. (7, 0, 15)."""
    out = subprocess.run([redis_tool("redis-server"), "--version"], capture_output=True, text=True, timeout=30,
                         check=True).stdout
    match = re.search(r"v=(\d+)\.(\d+)\.(\d+)", out)
    if match is None:
        raise RuntimeError(f"cannot read the version of redis-server from {out!r}")
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _encode_command(args: Sequence[object]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _read_reply(stream: BinaryIO, decode: bool = True) -> Any:
    """Read one RESP2 reply; bulk strings as str (UTF-8, errors replaced) or bytes; an error reply is returned as a
    RedisError."""
    line = stream.readline()
    if not line.endswith(b"\r\n"):
        raise ConnectionError("connection closed in the middle of a reply")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return RedisError(rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        data = stream.read(size + 2)
        if len(data) != size + 2:
            raise ConnectionError("connection closed in the middle of a reply")
        return data[:-2].decode(errors="replace") if decode else data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [_read_reply(stream, decode) for _ in range(count)]
    raise ConnectionError(f"not a RESP reply: {line[:80]!r}")


def redis_command(host: str, port: int, *args: object, password: str | None = None, timeout: float = 5.0,
                  decode: bool = True) -> Any:
    """Send one command on a new connection (after AUTH when a password is given) and return its reply.

    Args:
        decode: bulk strings as str (UTF-8, undecodable bytes replaced); False: as bytes (binary keys and values).

    Raises:
        OSError: no connection or it broke (``ConnectionError`` and ``TimeoutError`` are OSErrors).
        RedisError: the server answered with an error.
    """
    with socket.create_connection((host, port), timeout=timeout) as sock, sock.makefile("rb") as stream:
        commands: list[Sequence[object]] = [("AUTH", password)] if password is not None else []
        commands.append(args)
        sock.sendall(b"".join(_encode_command(command) for command in commands))
        replies = [_read_reply(stream, decode) for _ in commands]
    for reply in replies:
        if isinstance(reply, RedisError):
            raise reply
    return replies[-1]


def _info_fields(text: str) -> dict[str, str]:
    """Parse the ``key:value`` lines of INFO or CLUSTER INFO."""
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))


def _wait(check: Callable[[], _T | None], timeout: float, what: str, alive: Callable[[], None] | None = None) -> _T:
    """Poll ``check`` until it returns something other than None; ``alive`` raises if a process died meanwhile.

    Raises:
        TimeoutError: the deadline passed; the message names ``what`` and the last failed check.
    """
    deadline = time.monotonic() + timeout
    last = "not checked yet"
    while True:
        if alive is not None:
            alive()
        try:
            result = check()
        except (OSError, RedisError, _NotReadyError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if result is not None:
                return result
            last = "check not satisfied"
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what}: not done after {timeout:.1f} s (last: {last})")
        time.sleep(POLL)


class _NotReadyError(Exception):
    """A readiness check saw a state that should change by itself; the message says which."""


def _quote(value: str) -> str:
    """A value for redis.conf, double-quoted with escapes (the config parser's sdssplitargs syntax)."""
    out = []
    for char in value:
        if char in '"\\':
            out.append("\\" + char)
        elif char.isprintable() and char.isascii():
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return '"' + "".join(out) + '"'


# --- one server ---------------------------------------------------------------------------------------------------


class RedisServer:
    """One redis-server on a free loopback port, in its own session and temp dir; no RDB, no AOF.

    ``RedisServer(password=None)`` only configures; ``start()`` (or ``with``) starts it and returns when it answers
    PING; ``stop()`` ends it by PID and removes its dir; ``kill()`` SIGKILLs it and keeps the dir, so ``start()``
    brings it back on the same ports (a cluster node then rejoins with its nodes.conf).
    """

    def __init__(self, password: str | None = None, *, cluster: bool = False, node_timeout_ms: int = NODE_TIMEOUT_MS,
                 extra_config: Sequence[tuple[str, str]] = ()) -> None:
        """Configure a server.

        Args:
            password: ``requirepass`` (and ``masterauth``, so cluster replicas can sync); None means no AUTH.
            cluster: run with ``cluster-enabled yes`` and ``cluster-node-timeout node_timeout_ms``.
            extra_config: more ``(directive, value)`` lines for redis.conf, e.g. ``[("maxmemory", "64mb")]``.
        """
        self.host = HOST
        self.port = 0
        self.bus_port = 0
        self.password = password
        self.cluster = cluster
        self.node_timeout_ms = node_timeout_ms
        self.extra_config = list(extra_config)
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._reaped = False  # _proc and its group are gone: never signal that PID (group) again, it may be reused
        self._dir: Path | None = None

    def __repr__(self) -> str:
        """Address, pid and state; never the password."""
        state = "RUNNING" if self.alive else "STOPPED"
        return f"<RedisServer {self.host}:{self.port} pid={self.pid} {state}{' cluster' if self.cluster else ''}>"

    def __enter__(self) -> RedisServer:
        """Start the server."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop the server."""
        self.stop()

    @property
    def alive(self) -> bool:
        """Whether the process is running."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def url(self) -> str:
        """``redis://[:password@]127.0.0.1:port/0`` (redis-py's ``Redis.from_url`` reads it)."""
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{self.host}:{self.port}/0"

    @property
    def dir(self) -> Path:
        """The server's working directory (its log is ``redis.log`` there)."""
        if self._dir is None:
            raise RuntimeError(f"{self!r} was never started")
        return self._dir

    def command(self, *args: object, timeout: float = 5.0, decode: bool = True) -> Any:
        """Send one command on a new connection, authenticated, and return the reply (see ``redis_command``)."""
        return redis_command(self.host, self.port, *args, password=self.password, timeout=timeout, decode=decode)

    def start(self, timeout: float = START_TIMEOUT) -> RedisServer:
        """Start redis-server and wait until it answers PING; a second start after ``kill()`` reuses the ports.

        Raises:
            RuntimeError: it exited (its log tail is in the message); TimeoutError: no PONG in time.
        """
        if self.alive:
            raise RuntimeError(f"{self!r} is already running")
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="cyberdb-redis-"))
        fixed = self.port != 0
        for attempt in range(1 if fixed else START_ATTEMPTS):
            if not fixed:
                self.port, self.bus_port = _free_ports(self.cluster)
            self._spawn()
            try:
                _wait(self._ping, timeout, f"{self!r} answering PING", alive=self._check_running)
            except _ExitedError as exc:
                if "Address already in use" in exc.log and not fixed and attempt + 1 < START_ATTEMPTS:
                    self._finish()
                    continue
                self.stop()
                raise RuntimeError(str(exc)) from None
            except BaseException:
                self.stop()
                raise
            return self
        raise AssertionError("not reached")

    def _spawn(self) -> None:
        """Write redis.conf and start the process in its own session, output appended to redis.log."""
        conf = self.dir / "redis.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the password
        with open(fd, "w") as out:
            out.write("".join(f"{key} {_quote(value)}\n" for key, value in self._config()))
        with open(self.dir / "redis.log", "ab") as log:
            self._proc = subprocess.Popen([redis_tool("redis-server"), str(conf)], cwd=self.dir,
                                          stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        self._reaped = False
        self.pid = self._proc.pid

    def _config(self) -> list[tuple[str, str]]:
        """The redis.conf lines."""
        version = redis_version()
        config = [("bind", self.host), ("port", str(self.port)), ("dir", str(self.dir)), ("daemonize", "no"),
                  ("save", ""), ("appendonly", "no"), ("logfile", ""), ("databases", "16")]
        if version >= (7, 0, 0):
            # shutdown-timeout 0: a SIGTERMed master does not wait for its replicas; DEBUG for lag tests (local only)
            config += [("shutdown-timeout", "0"), ("enable-debug-command", "local")]
        # default 5 s: every replica's first full sync would wait that long for other replicas to join it
        config.append(("repl-diskless-sync-delay", "0"))
        if self.password is not None:
            config += [("requirepass", self.password), ("masterauth", self.password)]
        if self.cluster:
            config += [("cluster-enabled", "yes"), ("cluster-config-file", "nodes.conf"),
                       ("cluster-node-timeout", str(self.node_timeout_ms))]
            if version >= (7, 0, 0):
                config.append(("cluster-port", str(self.bus_port)))
        return config + self.extra_config

    def _check_running(self) -> None:
        """Raise _ExitedError (with the log tail) if the process is gone."""
        if self._proc is not None and self._proc.poll() is None:
            return
        code = None if self._proc is None else self._proc.returncode
        raise _ExitedError(f"{self!r} exited with code {code}\n{self.log_tail()}", self.log_tail())

    def _ping(self) -> bool | None:
        """True once PING answers PONG."""
        return True if self.command("PING", timeout=1.0) == "PONG" else None

    def log_tail(self, limit: int = 4000) -> str:
        """The end of redis.log, framed for an error message."""
        try:
            text = (self.dir / "redis.log").read_text(errors="replace")
        except (FileNotFoundError, RuntimeError):
            return "(no redis.log)"
        if len(text) > limit:
            text = "...\n" + text[-limit:]
        return f"--- redis.log of {self.host}:{self.port} ---\n{text.rstrip()}\n--- end ---"

    def kill(self) -> None:
        """SIGKILL the process (and its session: a replication fork) and reap it; the dir stays for a restart."""
        if self._proc is not None and not self._reaped:
            _signal_group(self._proc.pid, signal.SIGKILL)
            self._finish()

    def _finish(self) -> None:
        """SIGKILL whatever is left of the process group, reap it and wait (bounded) until the group is empty."""
        if self._proc is None or self._reaped:
            return
        _signal_group(self._proc.pid, signal.SIGKILL)
        self._proc.wait(STOP_TIMEOUT)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _group_alive(self._proc.pid) and time.monotonic() < deadline:
            time.sleep(POLL)
        self._reaped = True

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop by PID (SIGTERM, SIGKILL after ``timeout``), reap, and remove the temp dir; idempotent."""
        stop_servers([self], timeout)


class _ExitedError(RuntimeError):
    """The redis-server process ended while we waited for it."""

    def __init__(self, message: str, log: str) -> None:
        super().__init__(message)
        self.log = log


def _free_ports(cluster: bool) -> tuple[int, int]:
    """A free client port and, for a cluster node, a free cluster bus port.

    Redis < 7 has no ``cluster-port``: its bus is always port + 10000, so that one must be free as well.
    """
    if not cluster:
        return free_port(), 0
    if redis_version() >= (7, 0, 0):
        while True:
            port, bus = free_port(), free_port()
            if port != bus:
                return port, bus
    for _ in range(1000):
        port = free_port()
        if port + 10000 <= 65535:
            try:
                with socket.socket() as sock:
                    sock.bind((HOST, port + 10000))
            except OSError:
                continue
            return port, port + 10000
    raise RuntimeError("found no free port P with P + 10000 free for a Redis < 7 cluster bus")


def _group_alive(pgid: int) -> bool:
    """Whether any process of the session's group is left (zombies count until reaped)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to a process group (``start_new_session=True`` makes pgid == pid) unless it is gone."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_servers(servers: Iterable[RedisServer], timeout: float = STOP_TIMEOUT) -> None:
    """Stop several servers at once: SIGTERM to all, SIGKILL to those left after ``timeout``; remove their dirs."""
    servers = list(servers)
    running = [server for server in servers if server._proc is not None and not server._reaped]
    for server in running:
        assert server._proc is not None
        if server._proc.poll() is None:
            _signal_group(server._proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for server in running:
        assert server._proc is not None
        try:
            server._proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        server._finish()
    for server in servers:
        if server._dir is not None:
            shutil.rmtree(server._dir, ignore_errors=True)
            server._dir = None


# --- a cluster -----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)  # one object per node: equal only to itself, hashable
class RedisNode:
    """One node of a RedisCluster: its address, pid, current role and cluster node id."""

    host: str
    port: int
    pid: int
    role: Role
    node_id: str
    server: RedisServer = dataclasses.field(repr=False)

    @property
    def alive(self) -> bool:
        """Whether the node's process runs."""
        return self.server.alive

    def command(self, *args: object, timeout: float = 5.0, decode: bool = True) -> Any:
        """Send one command to this node (authenticated) and return the reply (see ``redis_command``)."""
        return self.server.command(*args, timeout=timeout, decode=decode)


@dataclasses.dataclass(frozen=True)
class _Entry:
    """One line of CLUSTER NODES: a node as another node sees it."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def role(self) -> Role:
        """master or replica."""
        return "replica" if "slave" in self.flags else "master"


def _parse_nodes(text: str) -> dict[str, _Entry]:
    """Parse CLUSTER NODES into entries by node id (slot migration markers ``[...]`` are ignored)."""
    entries = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        node_id, addr, flags, master = fields[:4]
        port = int(addr.split("@")[0].rsplit(":", 1)[1] or 0)
        ranges = []
        for item in fields[8:]:
            if item.startswith("["):
                continue
            first, _, last = item.partition("-")
            ranges.append((int(first), int(last or first)))
        entries[node_id] = _Entry(node_id, port, frozenset(flags.split(",")), None if master == "-" else master,
                                  tuple(sorted(ranges)))
    return entries


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, on free loopback ports, as one Redis Cluster.

    ``start()`` (or ``with``) returns once every node is ready (see the module docstring). ``nodes`` lists
    ``RedisNode(host, port, pid, role, node_id)``, roles as of the last check; ``kill(node)`` SIGKILLs one,
    ``wait_for_failover(old_master)`` returns the replica that took over its slots once the cluster is consistent
    again, ``restart(node)`` brings a killed node back (it rejoins, as a replica of its successor), ``stop()`` ends
    them all.
    """

    def __init__(self, masters: int = 3, replicas: int = 0, *, password: str | None = None,
                 node_timeout_ms: int = NODE_TIMEOUT_MS, create: Literal["auto", "redis-cli", "manual"] = "auto",
                 extra_config: Sequence[tuple[str, str]] = ()) -> None:
        """Configure a cluster.

        Args:
            create: ``auto`` uses ``redis-cli --cluster create`` with 3 masters or more (its minimum) and the
                manual way (ADDSLOTSRANGE, MEET, REPLICATE) below that; the other two force one way.
            extra_config: more redis.conf lines for every node.
        """
        if masters < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one master and no negative replica count")
        if create == "redis-cli" and masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.masters_count = masters
        self.replicas_count = replicas
        self.password = password
        self.node_timeout_ms = node_timeout_ms
        self.create = ("redis-cli" if masters >= 3 else "manual") if create == "auto" else create
        self.servers = [RedisServer(password, cluster=True, node_timeout_ms=node_timeout_ms,
                                    extra_config=extra_config) for _ in range(masters * (1 + replicas))]
        self.nodes: list[RedisNode] = []
        self._killed: list[RedisServer] = []
        self.startup_seconds: float | None = None

    def __repr__(self) -> str:
        """Size and node addresses; never the password."""
        nodes = " ".join(f"{node.port}:{node.role[0]}{'' if node.alive else '(dead)'}" for node in self.nodes)
        return f"<RedisCluster {self.masters_count}x(1+{self.replicas_count}) {nodes or 'STOPPED'}>"

    def __enter__(self) -> RedisCluster:
        """Start the cluster."""
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Stop every node."""
        self.stop()

    # -- views ---------------------------------------------------------------------------------------------------

    @property
    def masters(self) -> list[RedisNode]:
        """The live masters, as of the last check."""
        return [node for node in self.nodes if node.role == "master" and node.alive]

    @property
    def replicas(self) -> list[RedisNode]:
        """The live replicas, as of the last check."""
        return [node for node in self.nodes if node.role == "replica" and node.alive]

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """(host, port) of every live node, for a cluster client's startup nodes."""
        return [(node.host, node.port) for node in self.nodes if node.alive]

    @property
    def url(self) -> str:
        """``redis://[:password@]host:port`` of the first live node (``redis.cluster.RedisCluster.from_url``)."""
        host, port = self.startup_nodes[0]
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"redis://{auth}{host}:{port}"

    def key_slot(self, key: str | bytes) -> int:
        """The hash slot of ``key``, as the cluster computes it (CLUSTER KEYSLOT)."""
        return int(self._any_live().command("CLUSTER", "KEYSLOT", key))

    def node_for_slot(self, slot: int) -> RedisNode:
        """The live master serving ``slot``, as of the last check."""
        view = _parse_nodes(self._any_live().command("CLUSTER", "NODES"))
        for entry in view.values():
            if entry.role == "master" and any(first <= slot <= last for first, last in entry.slots):
                return self._node_by_id(entry.node_id)
        raise LookupError(f"no master serves slot {slot}")

    def node_for_key(self, key: str | bytes) -> RedisNode:
        """The live master serving ``key``'s slot."""
        return self.node_for_slot(self.key_slot(key))

    def replicas_of(self, master: RedisNode) -> list[RedisNode]:
        """The live replicas of ``master``, as the cluster sees them now."""
        view = _parse_nodes(self._any_live().command("CLUSTER", "NODES"))
        return [self._node_by_id(entry.node_id) for entry in view.values()
                if entry.master_id == master.node_id and self._node_by_id(entry.node_id).alive]

    def _any_live(self) -> RedisNode:
        """A live node to ask."""
        for node in self.nodes:
            if node.alive:
                return node
        raise RuntimeError(f"{self!r} has no live node")

    def _node_by_id(self, node_id: str) -> RedisNode:
        """Our node with this cluster id."""
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise LookupError(f"unknown node id {node_id}")

    # -- life cycle ----------------------------------------------------------------------------------------------

    def start(self, timeout: float = CLUSTER_TIMEOUT) -> RedisCluster:
        """Start every node, create the cluster and wait until it is consistent; on failure stop them all."""
        began = time.monotonic()
        try:
            for server in self.servers:
                server.start()
            self.nodes = [RedisNode(server.host, server.port, server.pid or 0, "master",
                                    str(server.command("CLUSTER", "MYID")), server) for server in self.servers]
            if self.create == "redis-cli":
                self._create_with_redis_cli(timeout)
            else:
                self._create_by_hand(timeout)
            self.wait_consistent(timeout)
        except Exception as exc:
            logs = "\n".join(server.log_tail(1500) for server in self.servers if server._dir is not None)
            self.stop()
            error = TimeoutError if isinstance(exc, TimeoutError) else RuntimeError
            raise error(f"starting {self.masters_count}x(1+{self.replicas_count}) failed: {exc}\n{logs}") from exc
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _create_with_redis_cli(self, timeout: float) -> None:
        """``redis-cli --cluster create`` over all nodes; the first ``masters`` given become the masters."""
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if self.password is not None:
            env["REDISCLI_AUTH"] = self.password  # not -a: argv is visible to every user
        argv = [redis_tool("redis-cli"), "--cluster", "create", *(f"{n.host}:{n.port}" for n in self.nodes),
                "--cluster-replicas", str(self.replicas_count), "--cluster-yes"]
        try:
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise TimeoutError(f"redis-cli --cluster create did not finish in {timeout:.0f} s") from exc
        if done.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed (exit {done.returncode}):\n"
                               f"{done.stdout[-3000:]}{done.stderr[-3000:]}")

    def _create_by_hand(self, timeout: float) -> None:
        """Assign slot ranges to the masters, MEET everyone, then make each replica REPLICATE its master."""
        masters = self.nodes[:self.masters_count]
        bounds = [SLOTS * i // self.masters_count for i in range(self.masters_count + 1)]
        for epoch, node in enumerate(self.nodes, start=1):
            # unique config epochs, as redis-cli sets them: no collision for the cluster to resolve later
            node.command("CLUSTER", "SET-CONFIG-EPOCH", epoch)
        for node, (first, end) in zip(masters, itertools.pairwise(bounds), strict=True):
            if redis_version() >= (7, 0, 0):
                node.command("CLUSTER", "ADDSLOTSRANGE", first, end - 1)
            else:
                node.command("CLUSTER", "ADDSLOTS", *range(first, end))
        seed = self.nodes[0]
        for node in self.nodes[1:]:
            bus = [node.server.bus_port] if redis_version() >= (7, 0, 0) else []
            seed.command("CLUSTER", "MEET", node.host, node.port, *bus)
        ids = {node.node_id for node in self.nodes}

        def everyone_known() -> bool | None:
            for node in self.nodes:
                view = _parse_nodes(node.command("CLUSTER", "NODES"))
                if set(view) != ids or any("handshake" in entry.flags for entry in view.values()):
                    raise _NotReadyError(f"{node.port} knows {len(view)} of {len(ids)} nodes")
            return True

        _wait(everyone_known, timeout, "every node knowing every other", alive=self._check_alive)
        for index, node in enumerate(self.nodes[self.masters_count:]):
            node.command("CLUSTER", "REPLICATE", masters[index % self.masters_count].node_id)

    def _check_alive(self) -> None:
        """Raise (with its log) if a node we did not kill has exited."""
        for server in self.servers:
            if server not in self._killed:
                server._check_running()

    def _consistent_view(self, expect_dead_owner: str | None = None) -> dict[str, _Entry]:
        """Check every live node: cluster_state ok, the same roles and slot map, all slots on live masters, live
        replicas linked to their master. Returns that common view.

        Raises:
            _NotReadyError: what is not there yet.
        """
        live = [node for node in self.nodes if node.alive]
        live_ids = {node.node_id for node in live}
        first: tuple[object, object] | None = None
        view: dict[str, _Entry] = {}
        for node in live:
            info = _info_fields(node.command("CLUSTER", "INFO"))
            if info.get("cluster_state") != "ok":
                raise _NotReadyError(f"{node.port}: cluster_state:{info.get('cluster_state')}")
            view = _parse_nodes(node.command("CLUSTER", "NODES"))
            if set(view) != {n.node_id for n in self.nodes}:
                raise _NotReadyError(f"{node.port} knows {len(view)} nodes, not our {len(self.nodes)}")
            for entry in view.values():
                if entry.node_id in live_ids and entry.flags & {"fail", "fail?", "handshake", "noaddr"}:
                    raise _NotReadyError(f"{node.port} sees live node {entry.port} as {','.join(sorted(entry.flags))}")
            owners = sorted((entry.slots, entry.node_id) for entry in view.values() if entry.slots)
            roles = sorted((entry.node_id, entry.role, entry.master_id or "") for entry in view.values()
                           if entry.node_id in live_ids)
            if first is None:
                first = (owners, roles)
            elif first != (owners, roles):
                raise _NotReadyError(f"{node.port} has another slot map or other roles than {live[0].port}")
        if not live:
            raise RuntimeError(f"{self!r} has no live node")
        served = sum(last - start + 1 for entry in view.values() if entry.node_id in live_ids and entry.role == "master"
                     for start, last in entry.slots)
        if served != SLOTS:
            raise _NotReadyError(f"live masters serve {served} of {SLOTS} slots")
        if expect_dead_owner is not None and view[expect_dead_owner].slots:
            raise _NotReadyError(f"dead node {view[expect_dead_owner].port} still owns slots")
        for node in live:
            if view[node.node_id].role == "replica":
                master_id = view[node.node_id].master_id
                info = _info_fields(node.command("INFO", "replication"))
                if master_id not in live_ids or info.get("master_link_status") != "up":
                    raise _NotReadyError(f"replica {node.port}: link to its master is {info.get('master_link_status')}")
        return view

    def _apply_roles(self, view: dict[str, _Entry]) -> None:
        """Record each live node's role from a consistent view."""
        for node in self.nodes:
            if node.alive and node.node_id in view:
                node.role = view[node.node_id].role

    def wait_consistent(self, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Wait until every live node reports cluster_state:ok with the same slot map and roles, every slot served
        by a live master and every live replica's link up; record the roles in ``nodes``."""
        view = _wait(self._consistent_view, timeout, f"{self!r} consistent", alive=self._check_alive)
        self._apply_roles(view)
        expected = [self.masters_count, self.masters_count * self.replicas_count]
        if [len(self.masters), len(self.replicas)] != expected and all(node.alive for node in self.nodes):
            raise RuntimeError(f"{self!r}: expected {expected[0]} masters and {expected[1]} replicas")

    def kill(self, node: RedisNode) -> None:
        """SIGKILL one node (and reap it), as a crash; for failover tests."""
        self._killed.append(node.server)
        node.server.kill()

    def wait_for_failover(self, old_master: RedisNode, timeout: float | None = None) -> RedisNode:
        """Wait until a former replica of the killed ``old_master`` serves its slots and the live nodes agree again.

        Args:
            timeout: default node timeout + 30 s.

        Returns:
            The promoted node (its role is now ``master``; ``old_master`` keeps its last role).
        """
        if old_master.alive:
            raise RuntimeError(f"{old_master} is still running: kill() it first")
        bound = self.node_timeout_ms / 1000 + 30.0 if timeout is None else timeout
        former = {node.node_id for node in self.nodes if node.role == "replica" and node.alive}

        def promoted() -> tuple[RedisNode, dict[str, _Entry]]:
            view = self._consistent_view(expect_dead_owner=old_master.node_id)
            for entry in view.values():
                if entry.node_id in former and entry.role == "master" and entry.slots:
                    return self._node_by_id(entry.node_id), view
            raise _NotReadyError("no replica promoted yet")

        node, view = _wait(promoted, bound, f"failover of {old_master.port}", alive=self._check_alive)
        self._apply_roles(view)
        return node

    def restart(self, node: RedisNode, timeout: float = CLUSTER_TIMEOUT) -> None:
        """Start a killed node again on its ports with its nodes.conf and wait until the cluster is consistent."""
        node.server.start()
        self._killed.remove(node.server)
        node.pid = node.server.pid or 0
        self.wait_consistent(timeout)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop every node by PID (SIGTERM, then SIGKILL) and remove their dirs; idempotent."""
        stop_servers(self.servers, timeout)
