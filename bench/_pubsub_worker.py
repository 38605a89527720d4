"""One pub/sub measurement for bench/pubsub.py: a publisher and a subscriber thread in this process.

Latency: the publisher publishes one message carrying time.perf_counter_ns(), the subscriber notes when it
arrives, and only then is the next one published (no queueing).  Throughput: the publisher publishes --n messages
back to back (each a normal, synchronous publish call); msgs/s = messages received / (last arrival - first publish).
Prints one JSON line.  CyberDB (cyberdb client) or Redis (redis-py, whichever version this interpreter has).
The password of a CyberDB server comes from CYBERDB_BENCH_PASSWORD.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from typing import Any

CHANNEL = "bench-channel"


class CyberDB:
    """publish(), and a subscription whose get() returns the published value (or None on timeout)."""

    def __init__(self, port: int, encrypt: bool) -> None:
        import cyberdb

        self.client = cyberdb.connect("127.0.0.1", port, password=os.environ["CYBERDB_BENCH_PASSWORD"],
                                      encrypt=encrypt)
        self.proxy = self.client.get_proxy()
        self.proxy.connect()
        self.sub = self.proxy.subscribe(CHANNEL)
        self.version = f"cyberdb {cyberdb.__version__}"

    def publish(self, value: bytes) -> None:
        self.proxy.publish(CHANNEL, value)

    def get(self, timeout: float) -> Any:
        message = self.sub.get(timeout)
        return None if message is None else message[1]

    def close(self) -> None:
        self.sub.close()
        self.proxy.close()
        self.client.close()


class Redis:
    """The same over redis-py PUBLISH / SUBSCRIBE."""

    def __init__(self, port: int, encrypt: bool) -> None:
        import redis

        self.r = redis.Redis(host="127.0.0.1", port=port)
        self.pubsub = self.r.pubsub(ignore_subscribe_messages=True)
        self.pubsub.subscribe(CHANNEL)
        while self.pubsub.get_message(timeout=1.0) is None and not self.pubsub.subscribed:
            pass
        self.messages = self.pubsub.listen()
        self.version = f"redis-py {redis.__version__}"

    def publish(self, value: bytes) -> None:
        self.r.publish(CHANNEL, value)

    def get(self, timeout: float) -> Any:
        # listen() blocks in the parser: cheaper than get_message(timeout=), which polls the socket first (the
        # worker as a whole has bench/pubsub.py's --timeout)
        return next(self.messages)["data"]

    def close(self) -> None:
        self.pubsub.close()
        self.r.close()


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--system", choices=("cyberdb", "redis"), required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--encrypt", action="store_true")
    p.add_argument("--n", type=int, default=10000)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--value-size", type=int, default=32)
    args = p.parse_args(argv)
    db: Any = (CyberDB if args.system == "cyberdb" else Redis)(args.port, args.encrypt)
    pad = b"x" * max(0, args.value_size - 20)

    # latency: one message in flight at a time
    arrived = threading.Event()
    latencies: list[float] = []
    total = args.warmup + args.n

    def receive_one_by_one() -> None:
        for i in range(total):
            value = db.get(30.0)
            if value is None:
                raise SystemExit("no message within 30 s")
            now = time.perf_counter_ns()
            if i >= args.warmup:
                latencies.append((now - int(bytes(value)[:20])) / 1000)
            arrived.set()

    reader = threading.Thread(target=receive_one_by_one)
    reader.start()
    for _ in range(total):
        arrived.clear()
        db.publish(b"%020d" % time.perf_counter_ns() + pad)
        arrived.wait(30.0)
    reader.join()

    # throughput: back to back
    got = [0, 0]  # messages, last arrival (ns)

    def receive_all() -> None:
        for _ in range(args.n):
            if db.get(30.0) is None:
                return
            got[0] += 1
        got[1] = time.perf_counter_ns()

    reader = threading.Thread(target=receive_all)
    reader.start()
    started = time.perf_counter_ns()
    value = b"%020d" % 0 + pad
    for _ in range(args.n):
        db.publish(value)
    reader.join()
    seconds = (got[1] - started) / 1e9
    db.close()
    print(json.dumps({"version": db.version, "p50_us": statistics.median(latencies), "p99_us": pct(latencies, 0.99),
                      "msgs_s": got[0] / seconds if seconds > 0 else 0.0, "received": got[0]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
