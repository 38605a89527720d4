"""The Redis fixtures (tests/redis_servers.py, conftest's ``redis_server``, ``redis_cluster``, ``redis_cluster_ha``)
start real servers and clusters that redis-py can use, survive a master's SIGKILL by failover, and leave no process
behind: every PID a test saw is checked at the end of this module, after the fixtures' own teardown.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.cluster
from conftest import REDIS_HA_NODE_TIMEOUT_MS
from redis_servers import RedisCluster, RedisError, RedisNode, RedisServer, redis_command

FAILOVER_SLACK = 10.0  # seconds past the node timeout for a promoted replica to serve reads (about 1-2 s healthy)
TIMEOUT = 2.0  # seconds: the clients' connect and socket timeouts


def running(pid: int) -> bool:
    """Whether a redis-server with this PID still exists (a zombie counts; a reused PID of another program not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False


@pytest.fixture(scope="module", autouse=True)
def seen_pids() -> Iterator[list[int]]:
    """PIDs the tests saw; set up before (so torn down after) the module's fixtures, then all must be gone."""
    pids: list[int] = []
    yield pids
    assert pids, "no test recorded a PID"
    assert [pid for pid in pids if running(pid)] == []


def cluster_client(cluster: RedisCluster) -> redis.cluster.RedisCluster:
    """A redis-py cluster client of ``cluster`` (close it)."""
    return redis.cluster.RedisCluster.from_url(cluster.url, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)


def client(host: str, port: int) -> redis.Redis:
    """A redis-py client of one server (close it)."""
    return redis.Redis(host=host, port=port, socket_connect_timeout=TIMEOUT, socket_timeout=TIMEOUT)


def keys_on_each_master(cluster: RedisCluster) -> dict[int, str]:
    """One key per master, by master port."""
    found: dict[int, str] = {}
    for i in range(1000):
        found.setdefault(cluster.node_for_key(f"key-{i}").port, f"key-{i}")
        if len(found) == len(cluster.masters):
            return found
    raise AssertionError(f"no key for some master: {found}")


def test_single_server_set_get(redis_server: RedisServer, seen_pids: list[int]) -> None:
    assert redis_server.pid is not None
    seen_pids.append(redis_server.pid)
    with client(redis_server.host, redis_server.port) as r:
        assert r.set("greeting", b"hello")
        assert r.get("greeting") == b"hello"
        assert r.config_get("save") == {"save": ""}
        assert r.config_get("appendonly") == {"appendonly": "no"}
        assert r.set(b"\xff", b"\x00\xfe")
    assert redis_server.command("GET", b"\xff", decode=False) == b"\x00\xfe"
    assert redis_server.command("MGET", "greeting", "missing") == ["hello", None]


def test_password_server(seen_pids: list[int]) -> None:
    with RedisServer(password="s3cret:/@x") as server:
        assert server.pid is not None
        seen_pids.append(server.pid)
        assert "s3cret" not in repr(server)
        with pytest.raises(RedisError, match="NOAUTH"):  # not redis-py: it retries an auth error for 4 s
            redis_command(server.host, server.port, "PING")
        with redis.Redis.from_url(server.url, socket_timeout=TIMEOUT) as r:
            assert r.ping()


def test_stopped_by_pid_when_the_body_raises(seen_pids: list[int]) -> None:
    server = RedisServer()
    with pytest.raises(KeyError), server:
        assert server.pid is not None
        pid, workdir = server.pid, server.dir
        seen_pids.append(pid)
        raise KeyError("test failed")
    assert not running(pid)
    assert not workdir.exists()
    assert not server.alive


def test_a_failed_start_says_why_and_leaves_nothing() -> None:
    server = RedisServer(extra_config=[("no-such-directive", "1")])
    with pytest.raises(RuntimeError, match="no-such-directive"):
        server.start()
    assert server.pid is not None
    assert not running(server.pid)
    assert not server.alive


def test_cluster_spreads_slots_over_masters(redis_cluster: RedisCluster, seen_pids: list[int]) -> None:
    seen_pids.extend(node.pid for node in redis_cluster.nodes)
    assert len(redis_cluster.masters) == 3
    assert redis_cluster.replicas == []
    keys = keys_on_each_master(redis_cluster)
    with cluster_client(redis_cluster) as rc:
        info = rc.cluster_info()
        assert info["cluster_state"] == "ok"
        assert int(info["cluster_known_nodes"]) == 3
        assert int(info["cluster_size"]) == 3
        for port, key in keys.items():
            assert rc.set(key, port)
            assert rc.get(key) == str(port).encode()
    # each key lives on its own master, and only there
    for node in redis_cluster.masters:
        with client(node.host, node.port) as r:
            assert r.dbsize() == 1
            assert r.get(keys[node.port]) == str(node.port).encode()


@pytest.mark.parametrize(("masters", "replicas"), [(1, 0), (2, 1)])
def test_small_clusters_made_by_hand(masters: int, replicas: int, seen_pids: list[int]) -> None:
    with RedisCluster(masters, replicas) as cluster:
        seen_pids.extend(node.pid for node in cluster.nodes)
        assert cluster.create == "manual"
        assert len(cluster.masters) == masters
        assert len(cluster.replicas) == masters * replicas
        with cluster_client(cluster) as rc:
            assert rc.cluster_info()["cluster_state"] == "ok"
            assert rc.set("{tag}a", 1)
            assert rc.mget("{tag}a", "{tag}b") == [b"1", None]


def test_failover_promotes_a_replica(redis_cluster_ha: RedisCluster, seen_pids: list[int]) -> None:
    cluster = redis_cluster_ha
    seen_pids.extend(node.pid for node in cluster.nodes)
    assert (len(cluster.masters), len(cluster.replicas)) == (3, 3)
    key = "failover-key"
    master = cluster.node_for_key(key)
    replicas = cluster.replicas_of(master)
    assert len(replicas) == 1
    with client(master.host, master.port) as r:
        assert r.set(key, b"kept")
        assert r.wait(1, 10_000) == 1  # the replica acknowledged it: a failover keeps it

    with cluster_client(cluster) as rc:
        assert rc.get(key) == b"kept"
        cluster.kill(master)
        assert not running(master.pid)
        deadline = time.monotonic() + REDIS_HA_NODE_TIMEOUT_MS / 1000 + FAILOVER_SLACK
        while True:
            try:
                value = rc.get(key)
                break
            except redis.RedisError as exc:  # ConnectionError, ClusterDownError, ... until the replica takes over
                if time.monotonic() > deadline:
                    raise AssertionError(f"{key!r} not readable again after the failover: {exc!r}") from exc
                time.sleep(0.05)  # polling interval of a readiness check
        assert value == b"kept"

    promoted = cluster.wait_for_failover(master)
    assert promoted in replicas
    assert promoted.role == "master"
    assert cluster.node_for_key(key) == promoted
    assert len(cluster.masters) == 3
    for node in cluster.nodes:
        if node.alive:
            assert "cluster_state:ok" in node.command("CLUSTER", "INFO")


def test_killed_master_rejoins_as_replica(redis_cluster_ha: RedisCluster, seen_pids: list[int]) -> None:
    cluster = redis_cluster_ha
    seen_pids.extend(node.pid for node in cluster.nodes)
    old: RedisNode = cluster.masters[0]
    cluster.kill(old)
    promoted = cluster.wait_for_failover(old)
    cluster.restart(old)
    seen_pids.append(old.pid)
    assert old.role == "replica"
    assert cluster.replicas_of(promoted) == [old]
    assert (len(cluster.masters), len(cluster.replicas)) == (3, 3)
