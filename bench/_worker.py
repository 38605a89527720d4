"""Benchmark client worker: one process, one connection, driven by bench.py over stdin/stdout.

This file owns the client side of every measured operation. It imports `cyberdb` or `redis` only for the
system it drives, so the redis-py 5 venv (which has no cyberdb) runs it too. Protocol, one JSON object per
line: bench.py sends {"cmd": ...}; the worker answers each command with one line, {"error": traceback} on
failure (and then exits). Nothing else may reach the protocol stream, so stdout is moved to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

PASSWORD_ENV = "CYBERDB_BENCH_PASSWORD"

Op = Callable[[Any], object]


class _CyberDB:
    """CyberDB through its public API: dict table "d", list table "l"."""

    def __init__(self, host: str, port: int, password: str, encrypt: bool) -> None:
        import cyberdb

        self._client = cyberdb.connect(host=host, port=port, password=password, encrypt=encrypt)
        self._stack = contextlib.ExitStack()
        self._stack.enter_context(self._client.get_proxy())  # fail early if we cannot connect
        self.info = {"client": f"cyberdb {_dist_version('cyberdb')}", "encrypt": encrypt}

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

    def op(self, name: str, value: str) -> Op:
        """Return a one-argument callable doing one round trip of `name`, on a fresh proxy.

        A proxy per measurement, as an application holds one per request: the workers idle between
        measurements, and the connection goes back to the client's pool meanwhile.
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
        raise ValueError(f"unknown op {name!r}")

    def _fresh_proxy(self) -> Any:
        self._stack.close()
        return self._stack.enter_context(self._client.get_proxy())

    def done(self) -> None:
        """End of a measurement: return the proxy's connection to the pool."""
        self._stack.close()

    def close(self) -> None:
        """Return the proxy's connection."""
        self._stack.close()


class _Redis:
    """redis-py against redis-server: hash "h", list "l" (the same shapes as CyberDB's tables)."""

    def __init__(self, host: str, port: int) -> None:
        import redis

        # decode_responses: CyberDB hands back str, so Redis pays for decoding too.
        self._r = redis.Redis(host=host, port=port, decode_responses=True)
        self._r.ping()
        hiredis = getattr(getattr(redis, "utils", None), "HIREDIS_AVAILABLE", False)
        self.info = {"client": f"redis-py {redis.__version__}", "hiredis": bool(hiredis)}

    def setup(self, keys: list[str], value: str, list_len: int) -> None:
        """Create and fill the hash and the list (once per server)."""
        self._r.delete("h", "l")
        self._r.hset("h", mapping=dict.fromkeys(keys, value))
        self._r.rpush("l", *[value] * list_len)

    def op(self, name: str, value: str) -> Op:
        """Return a one-argument callable doing one round trip of `name`."""
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
        raise ValueError(f"unknown op {name!r}")

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

    def op(self, name: str, value: str) -> Op:
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


def _args_for(op: str, ops: int, offset: int, keys: int, list_len: int) -> list[Any]:
    # Precomputed so the timed loop does the same tiny work for every system.
    if op in ("set", "get"):
        return [f"k{(i + offset) % keys}" for i in range(ops)]
    if op == "index":
        return [(i + offset) % list_len for i in range(ops)]
    return [None] * ops


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


def _serve(adapter: _CyberDB | _Redis | _Echo, out: TextIO) -> None:
    def reply(obj: dict[str, Any]) -> None:
        out.write(json.dumps(obj, separators=(",", ":")) + "\n")
        out.flush()

    reply({"ok": True, "info": adapter.info})
    pending: tuple[Op, list[Any]] | None = None
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "setup":
            adapter.setup([f"k{i}" for i in range(msg["keys"])], msg["value"], msg["list_len"])
            adapter.done()
            reply({"ok": True})
        elif cmd == "prepare":
            fn = adapter.op(msg["op"], msg["value"])
            args = _args_for(msg["op"], msg["ops"], msg["offset"], msg["keys"], msg["list_len"])
            _timed(fn, args[: msg["warmup"]])
            pending = (fn, args)
            reply({"ok": True})
        elif cmd == "go":
            if pending is None:
                raise RuntimeError("'go' before 'prepare'")
            result = _timed(*pending)
            pending = None
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
    args = parser.parse_args(argv)

    # Keep the protocol stream to ourselves: stray prints from libraries go to stderr.
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    try:
        adapter: _CyberDB | _Redis | _Echo
        if args.kind == "cyberdb":
            adapter = _CyberDB(args.host, args.port, os.environ[PASSWORD_ENV], args.encrypt)
        elif args.kind == "redis":
            adapter = _Redis(args.host, args.port)
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
