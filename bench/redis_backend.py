"""The Redis backend vs plain redis-py commands on the same Redis, side by side (bench/run redis-backend).

On one redis-server and on a 3-master Redis Cluster (started with tests/redis_servers.py on free loopback ports,
stopped by PID), each operation `--ops` times, interleaved over `--rounds` rounds, medians:
`d[k] = v` vs HSET, `d[k]` vs HGET, `len(d)` vs HLEN, `d.incr(k)` vs HINCRBY, and a pipeline of 1,000 `d[k] = v`
vs redis-py's pipeline of 1,000 HSET (µs per queued call).  Plain commands go through
`redis.Redis` on the single server and through redis-py's `RedisCluster` on the cluster (what a user of redis-py
would use); the backend routes by its own slot map.  Prints µs per call and the ratio plain ÷ backend
(ops/s of the backend over redis-py's: the issue's targets are >= 0.8 for writes and >= 0.95 for reads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.cluster import ClusterNode, RedisCluster

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from redis_servers import RedisCluster as LocalCluster  # noqa: E402
from redis_servers import RedisServer  # noqa: E402

import cyberdb  # noqa: E402

VALUE = "v" * 32
PIPE = 1000  # calls per pipeline in the pipeline row


def per_call(fn: Callable[[int], Any], ops: int) -> float:
    """Seconds per call of ``fn(i)`` over ``ops`` calls."""
    start = time.perf_counter()
    for i in range(ops):
        fn(i)
    return (time.perf_counter() - start) / ops


def measure(label: str, url: str, plain: Any, ops: int, rounds: int) -> list[tuple[str, str, float, float]]:
    client = cyberdb.connect(url)
    rows = []
    with client.get_proxy() as proxy:
        d = proxy.create_cyberdict(f"bench-{os.getpid()}")
        keys = [f"key:{i % 1000}" for i in range(ops)]
        hname = f"plain-{os.getpid()}"
        d.update({k: 0 for k in keys[:1000]})
        plain.hset(hname, mapping={k: 0 for k in keys[:1000]})
        pairs: list[tuple[str, Callable[[int], Any], Callable[[int], Any]]] = [
            ("d[k] = v / HSET", lambda i: d.__setitem__(keys[i], VALUE), lambda i: plain.hset(hname, keys[i], VALUE)),
            ("d[k] / HGET", lambda i: d[keys[i]], lambda i: plain.hget(hname, keys[i])),
            ("len(d) / HLEN", lambda i: len(d), lambda i: plain.hlen(hname)),
            ("d.incr(k) / HINCRBY", lambda i: d.incr(f"n:{i % 100}"), lambda i: plain.hincrby(hname, f"n:{i % 100}")),
        ]
        for name, ours, theirs in pairs:
            per_ours, per_theirs = [], []
            for _ in range(rounds):
                per_ours.append(per_call(ours, ops))
                per_theirs.append(per_call(theirs, ops))
            rows.append((label, name, statistics.median(per_ours), statistics.median(per_theirs)))

        # a pipeline of PIPE `d[k] = v` vs redis-py's pipeline of PIPE HSET (RedisCluster's on the cluster,
        # a plain redis.Redis one, transaction=False, on the single server): µs per queued call
        def our_pipeline(_i: int) -> None:
            with proxy.pipeline() as pipe:
                t = pipe.get_cyberdict(d.name)
                for k in keys[:PIPE]:
                    t[k] = VALUE

        def their_pipeline(_i: int) -> None:
            pipe = plain.pipeline(transaction=False) if isinstance(plain, redis.Redis) else plain.pipeline()
            for k in keys[:PIPE]:
                pipe.hset(hname, k, VALUE)
            pipe.execute()

        per_ours, per_theirs = [], []
        batches = max(1, ops // PIPE)
        for _ in range(rounds):
            per_ours.append(per_call(our_pipeline, batches) / PIPE)
            per_theirs.append(per_call(their_pipeline, batches) / PIPE)
        rows.append((label, f"pipe {PIPE} d[k]=v / HSET", statistics.median(per_ours),
                     statistics.median(per_theirs)))
        proxy.delete_table(d.name)
        plain.delete(hname)
    client.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ops", type=int, default=5000, help="calls per operation per round (5000)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (3)")
    args = p.parse_args(argv)
    rows = []
    with RedisServer() as server:
        plain = redis.Redis(host=server.host, port=server.port)
        rows += measure("single", f"redis://{server.host}:{server.port}/0", plain, args.ops, args.rounds)
        plain.close()
    with LocalCluster(masters=3) as cluster:
        nodes = [ClusterNode(host, port) for host, port in cluster.startup_nodes]
        rc = RedisCluster(startup_nodes=nodes)
        url = "redis-cluster://" + ",".join(f"{host}:{port}" for host, port in cluster.startup_nodes) + "/"
        rows += measure("cluster", url, rc, args.ops, args.rounds)
        rc.close()
    print(f"\nRedis backend vs redis-py, {args.ops} calls x {args.rounds} rounds, medians; redis-py "
          f"{redis.__version__}; single: redis.Redis, cluster: RedisCluster (3 masters)")
    print(f"{'where':8} {'operation':24} {'backend µs':>11} {'redis-py µs':>12} {'ratio':>6}")
    for label, name, ours, theirs in rows:
        print(f"{label:8} {name:24} {ours * 1e6:11.1f} {theirs * 1e6:12.1f} {theirs / ours:6.2f}")
    print("ratio: redis-py seconds / backend seconds (above 1: the backend is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
