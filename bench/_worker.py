"""Benchmark client worker: one process, one connection, driven by bench.py over stdin/stdout.

This file owns the client side of every measured operation. It imports `cyberdb` or `redis` only for the
system it drives, so the redis-py 5 venv (which has no cyberdb) runs it too. Protocol, one JSON object per
line: bench.py sends {"cmd": ...}; the worker answers each command with one line, {"error": traceback} on
failure (and then exits). Nothing else may reach the protocol stream, so stdout is moved to stderr.
The one exception is "probe" (bench/persistence.py): answered once when it runs, and once more, with the
timings, after the "stop" that ends it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

PASSWORD_ENV = "CYBERDB_BENCH_PASSWORD"
PIPELINE_CALLS = 1000  # calls per pipeline: one unit of pipe_set / pipe_get
PIPE_OPS = ("pipe_set", "pipe_get")
MIN_PIPE_UNITS = 20  # pipelines per client and measurement, however small --ops is
PROBE_UNITS = 3  # untimed units whose round trips are counted, after the warm-up
STOP_POLL_NS = 2_000_000  # how often a probe looks for "stop" on stdin
ACCOUNT_START = 1_000_000  # transact moves 1 from "a" to "b"; reset before every measurement

Op = Callable[[Any], object]


class _CountingSocket:
    """Wraps a socket and counts `sendall` calls: the client writes requests once per round trip."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self.writes = 0

    def sendall(self, data: bytes) -> None:
        self.writes += 1
        self._sock.sendall(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _CyberDB:
    """CyberDB through its public API: dicts "d", "c" (counters), "sessions", "acct<worker>"; list "l"."""

    def __init__(self, host: str, port: int, password: str, encrypt: bool, tls_ca: str = "") -> None:
        import cyberdb

        tls = {"tls": True, "tls_ca": tls_ca} if tls_ca else {}  # bench/tls.py
        self._client = cyberdb.connect(host=host, port=port, password=password, encrypt=encrypt, **tls)
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self._client.get_proxy())  # fail early if we cannot connect
        self.info = {"client": f"cyberdb {_dist_version('cyberdb')}", "encrypt": encrypt, "tls": bool(tls_ca)}
        self._proxy: Any = None

    def setup(self, keys: list[str], value: str, list_len: int) -> None:
        """Create and fill the tables (once per server)."""
        proxy = self._fresh_proxy()
        proxy.create_cyberdict("d")
        proxy.create_cyberlist("l")
        d = proxy.get_cyberdict("d")
        for key in keys:
            d[key] = value
        lst = proxy.get_cyberlist("l")
        for _ in range(list_len):
            lst.append(value)
        proxy.create_cyberdict("c", dict.fromkeys(keys, 0))
        proxy.create_cyberdict("sessions", {"s1": {"cart": []}})

    def op(self, name: str, value: str, worker: int) -> Op:
        """Return a one-argument callable doing one unit of `name`, on a fresh proxy.

        A proxy per measurement, as an application holds one per request: the workers idle between
        measurements, and the connection goes back to the client's pool meanwhile. `worker` names this
        client's own account and lock, so transact and lock stay uncontended with several clients.
        """
        proxy = self._fresh_proxy()
        d = proxy.get_cyberdict("d")
        lst = proxy.get_cyberlist("l")
        if name == "set":
            return lambda key: d.__setitem__(key, value)
        if name == "get":
            return lambda key: d[key]
        if name == "len":
            return lambda _: len(d)
        if name == "append":
            return lambda _: lst.append(value)
        if name == "index":
            return lambda i: lst[i]
        if name == "incr":
            counters = proxy.get_cyberdict("c")
            return lambda key: counters.incr(key)
        if name in PIPE_OPS:
            return self._pipe_op(proxy, name, value)
        if name == "transact":
            return self._transact_op(proxy, f"acct{worker}")
        if name == "lock":
            lock_name = f"L{worker}"

            def lock(_: object) -> None:
                lk = proxy.lock(lock_name, ttl=10)
                lk.acquire()
                lk.release()

            return lock
        if name == "set_ttl":
            return lambda key: d.set(key, value, ttl=60)
        if name == "ref_append":
            sessions = proxy.get_cyberdict("sessions")
            sessions["s1"] = {"cart": []}  # so the cart holds one measurement's items at most
            return lambda _: sessions.ref("s1", "cart").append(value)
        raise ValueError(f"unknown op {name!r}")

    @staticmethod
    def _pipe_op(proxy: Any, name: str, value: str) -> Op:
        def pipe_set(keys: list[str]) -> object:
            with proxy.pipeline() as pipe:
                t = pipe.get_cyberdict("d")
                for k in keys:
                    t[k] = value
            return pipe.results

        def pipe_get(keys: list[str]) -> object:
            with proxy.pipeline() as pipe:
                t = pipe.get_cyberdict("d")
                for k in keys:
                    t[k]
            return pipe.results

        return pipe_set if name == "pipe_set" else pipe_get

    @staticmethod
    def _transact_op(proxy: Any, acct: str) -> Op:
        if acct in proxy.tables():
            proxy.get_cyberdict(acct).update({"a": ACCOUNT_START, "b": 0})
        else:
            proxy.create_cyberdict(acct, {"a": ACCOUNT_START, "b": 0})

        def fn(tx: Any) -> None:
            t = tx.get_cyberdict(acct)
            a = t["a"]
            b = t["b"]
            t["a"] = a - 1
            t["b"] = b + 1

        return lambda _: proxy.transact(fn)

    def round_trips(self, fn: Op, args: list[Any]) -> tuple[float, object]:
        """Run `fn` untimed on each of `args`; return round trips per call (socket writes) and the last result.

        Counted on the socket, not with `Connection.requests`: that counts replies, 1000 per pipeline.
        """
        conn = self._proxy._conn
        real = conn.sock
        counting = conn.sock = _CountingSocket(real)
        try:
            result = [fn(arg) for arg in args][-1]
        finally:
            conn.sock = real
        return counting.writes / len(args), result

    def _fresh_proxy(self) -> Any:
        self._stack.close()
        self._proxy = self._stack.enter_context(self._client.get_proxy())
        return self._proxy

    def done(self) -> None:
        """End of a measurement: return the proxy's connection to the pool."""
        self._stack.close()

    def close(self) -> None:
        """Return the proxy's connection."""
        self._stack.close()


class _Redis:
    """redis-py against redis-server: hashes "h", "hc", "acct<worker>", lists "l", "cart:s1" (CyberDB's shapes)."""

    def __init__(self, host: str, port: int, tls_ca: str = "") -> None:
        import redis

        tls = {"ssl": True, "ssl_ca_certs": tls_ca} if tls_ca else {}  # bench/tls.py
        # decode_responses: CyberDB hands back str, so Redis pays for decoding too.
        self._r = redis.Redis(host=host, port=port, decode_responses=True, **tls)
        self._r.ping()
        hiredis = getattr(getattr(redis, "utils", None), "HIREDIS_AVAILABLE", False)
        self.info = {"client": f"redis-py {redis.__version__}", "hiredis": bool(hiredis), "tls": bool(tls_ca)}

    def setup(self, keys: list[str], value: str, list_len: int) -> None:
        """Create and fill the hash and the list (once per server)."""
        self._r.delete("h", "l", "hc", "cart:s1")
        self._r.hset("h", mapping=dict.fromkeys(keys, value))
        self._r.rpush("l", *[value] * list_len)
        self._r.hset("hc", mapping=dict.fromkeys(keys, 0))

    def op(self, name: str, value: str, worker: int) -> Op:
        """Return a one-argument callable doing one unit of `name` (`worker`: see _CyberDB.op)."""
        r = self._r
        if name == "set":
            return lambda key: r.hset("h", key, value)
        if name == "get":
            return lambda key: r.hget("h", key)
        if name == "len":
            return lambda _: r.hlen("h")
        if name == "append":
            return lambda _: r.rpush("l", value)
        if name == "index":
            return lambda i: r.lindex("l", i)
        if name == "incr":
            return lambda key: r.hincrby("hc", key, 1)
        if name == "pipe_set":

            def pipe_set(keys: list[str]) -> object:
                p = r.pipeline(transaction=False)
                for k in keys:
                    p.hset("h", k, value)
                return p.execute()

            return pipe_set
        if name == "pipe_get":

            def pipe_get(keys: list[str]) -> object:
                p = r.pipeline(transaction=False)
                for k in keys:
                    p.hget("h", k)
                return p.execute()

            return pipe_get
        if name == "transact":
            return self._transact_op(f"acct{worker}")
        if name == "lock":
            lock_name = f"L{worker}"

            def lock(_: object) -> None:
                lk = r.lock(lock_name, timeout=10)
                lk.acquire()
                lk.release()

            return lock
        if name == "set_ttl":
            return lambda key: r.set(f"e:{key}", value, ex=60)
        if name == "ref_append":
            r.delete("cart:s1")  # as CyberDB's cart: one measurement's items at most
            return lambda _: r.rpush("cart:s1", value)
        raise ValueError(f"unknown op {name!r}")

    def _transact_op(self, acct: str) -> Op:
        """redis-py's optimistic transaction: WATCH, read, MULTI, write, EXEC."""
        r = self._r
        r.hset(acct, mapping={"a": ACCOUNT_START, "b": 0})

        def transact(_: object) -> None:
            with r.pipeline() as p:
                p.watch(acct)
                a = int(p.hget(acct, "a"))
                b = int(p.hget(acct, "b"))
                p.multi()
                p.hset(acct, "a", a - 1)
                p.hset(acct, "b", b + 1)
                p.execute()

        return transact

    def round_trips(self, fn: Op, args: list[Any]) -> tuple[float, object]:
        """Run `fn` untimed on each of `args`; return round trips per call and the last result.

        redis-py writes each immediate command, and each pipeline's whole stack, with one
        `send_packed_command` before reading the replies: counting its calls counts round trips.
        """
        cls = self._r.connection_pool.connection_class
        own = "send_packed_command" in cls.__dict__
        original = cls.send_packed_command
        writes = 0

        def counting(conn: Any, *a: Any, **kw: Any) -> Any:
            nonlocal writes
            writes += 1
            return original(conn, *a, **kw)

        cls.send_packed_command = counting
        try:
            result = [fn(arg) for arg in args][-1]
        finally:
            if own:
                cls.send_packed_command = original
            else:
                del cls.send_packed_command
        return writes / len(args), result

    def done(self) -> None:
        """End of a measurement: nothing to release (redis-py returns connections per command)."""

    def close(self) -> None:
        """Close the connection pool."""
        self._r.close()


class _Echo:
    """Raw blocking TCP round trip of `size` bytes: the floor any request/reply protocol sits on."""

    def __init__(self, host: str, port: int) -> None:
        self._sock = socket.create_connection((host, port))
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.info = {"client": "socket"}

    def setup(self, keys: list[str], value: str, list_len: int) -> None:
        """Nothing to fill."""

    def op(self, name: str, value: str, worker: int) -> Op:
        """Return the echo round trip; `value` gives the payload size."""
        if name != "echo":
            raise ValueError(f"unknown op {name!r}")
        sock = self._sock
        payload = value.encode()
        size = len(payload)
        buf = bytearray(size)
        view = memoryview(buf)

        def echo(_: object) -> None:
            sock.sendall(payload)
            got = 0
            while got < size:
                n = sock.recv_into(view[got:])
                if not n:
                    raise ConnectionError("echo server closed the connection")
                got += n

        return echo

    def round_trips(self, fn: Op, args: list[Any]) -> tuple[float, object]:
        """One round trip per echo, by construction."""
        for arg in args:
            fn(arg)
        return 1.0, None

    def done(self) -> None:
        """End of a measurement: the socket stays open."""

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _units(op: str, ops: int, warmup: int) -> tuple[int, int]:
    """Timed and warm-up units for `--ops` and `--warmup` calls: a pipeline unit is PIPELINE_CALLS calls."""
    if op not in PIPE_OPS:
        return ops, warmup
    units = max(MIN_PIPE_UNITS, ops // PIPELINE_CALLS)
    return units, min(units, -(-warmup // PIPELINE_CALLS))


def _args_for(op: str, ops: int, offset: int, keys: int, list_len: int) -> list[Any]:
    # Precomputed so the timed loop does the same tiny work for every system.
    if op in ("set", "get", "incr", "set_ttl"):
        return [f"k{(i + offset) % keys}" for i in range(ops)]
    if op == "index":
        return [(i + offset) % list_len for i in range(ops)]
    if op in PIPE_OPS:  # one list of PIPELINE_CALLS keys per pipeline, sharing the key strings
        names = [f"k{i}" for i in range(keys)]
        return [[names[(u * PIPELINE_CALLS + j + offset) % keys] for j in range(PIPELINE_CALLS)] for u in range(ops)]
    return [None] * ops


def _check(op: str, result: object, value: str) -> None:
    """Refuse to time an op that does not do its work (a CyberDB pipeline keeps each call's error as a result)."""
    if op in ("get", "index"):
        ok = result == value
    elif op == "incr":
        ok = type(result) is int
    elif op in PIPE_OPS:
        if not isinstance(result, list) or len(result) != PIPELINE_CALLS:
            ok = False
        elif op == "pipe_get":
            ok = all(x == value for x in result)
        else:
            ok = not any(isinstance(x, BaseException) for x in result)
    else:
        ok = True
    if not ok:
        raise RuntimeError(f"{op} returned {result!r:.300}")


def _timed(fn: Op, args: list[Any]) -> dict[str, Any]:
    lat = [0] * len(args)
    clock = time.perf_counter_ns
    start = t0 = clock()
    for i, arg in enumerate(args):
        fn(arg)
        t1 = clock()
        lat[i] = t1 - t0
        t0 = t1
    # perf_counter_ns is CLOCK_MONOTONIC on Linux, so start/end compare across processes.
    return {"start": start, "end": t0, "lat": lat}


def _probe(fn: Op, args: list[Any], started: Callable[[], None]) -> dict[str, Any]:
    """Run `fn` over `args` in a loop, one call at a time, until a line arrives on stdin; time every call.

    Returns each call's start (perf_counter_ns, comparable across processes) and latency, in ns.
    """
    starts: list[int] = []
    lat: list[int] = []
    clock = time.perf_counter_ns
    fd = sys.stdin.fileno()
    fn(args[0])
    started()
    i, n = 0, len(args)
    next_poll = clock() + STOP_POLL_NS
    while True:
        t0 = clock()
        fn(args[i])
        t1 = clock()
        starts.append(t0)
        lat.append(t1 - t0)
        i = i + 1 if i + 1 < n else 0
        if t1 >= next_poll:
            # the check for "stop" happens between timed calls, never inside one
            if select.select([fd], [], [], 0)[0]:
                break
            next_poll = clock() + STOP_POLL_NS
    line = sys.stdin.readline()
    if json.loads(line).get("cmd") != "stop":
        raise RuntimeError(f"expected 'stop' during a probe, got {line!r}")
    return {"starts": starts, "lat": lat}


def _serve(adapter: _CyberDB | _Redis | _Echo, out: TextIO) -> None:
    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        out.flush()

    reply({"ok": True, "info": adapter.info})
    pending: tuple[Op, list[Any], dict[str, Any]] | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "setup":
            adapter.setup([f"k{i}" for i in range(msg["keys"])], msg["value"], msg["list_len"])
            adapter.done()
            reply({"ok": True})
        elif cmd == "prepare":
            op = msg["op"]
            fn = adapter.op(op, msg["value"], msg["worker"])
            units, warmup = _units(op, msg["ops"], msg["warmup"])
            args = _args_for(op, units, msg["offset"], msg["keys"], msg["list_len"])
            _timed(fn, args[:warmup])
            trips, last = adapter.round_trips(fn, args[:PROBE_UNITS])
            _check(op, last, msg["value"])
            calls = units * (PIPELINE_CALLS if op in PIPE_OPS else 1)
            pending = (fn, args, {"calls": calls, "trips": trips})
            reply({"ok": True})
        elif cmd == "go":
            if pending is None:
                raise RuntimeError("'go' before 'prepare'")
            fn, args, extra = pending
            result = _timed(fn, args)
            pending = None
            adapter.done()
            reply({**result, **extra})
        elif cmd == "probe":
            fn = adapter.op(msg["op"], msg["value"], msg["worker"])
            args = _args_for(msg["op"], msg["keys"], 0, msg["keys"], msg["list_len"])
            result = _probe(fn, args, lambda: reply({"ok": True}))
            adapter.done()
            reply(result)
        elif cmd == "quit":
            break
        else:
            raise ValueError(f"unknown command {cmd!r}")
    adapter.close()


def main(argv: list[str] | None = None) -> int:
    """Run one worker until stdin closes or "quit" arrives."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=["cyberdb", "redis", "echo"], required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--encrypt", action="store_true")
    parser.add_argument("--tls-ca", default="", help="connect with TLS, verifying the server against this CA")
    args = parser.parse_args(argv)

    # Keep the protocol stream to ourselves: stray prints from libraries go to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        adapter: _CyberDB | _Redis | _Echo
        if args.kind == "cyberdb":
            adapter = _CyberDB(args.host, args.port, os.environ[PASSWORD_ENV], args.encrypt, args.tls_ca)
        elif args.kind == "redis":
            adapter = _Redis(args.host, args.port, args.tls_ca)
        else:
            adapter = _Echo(args.host, args.port)
        _serve(adapter, out)
    except Exception:
        out.write(json.dumps({"error": traceback.format_exc()}) + "\n")
        out.flush()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
