"""Tests of ``cyberdb copy SOURCE DEST`` (:mod:`cyberdb.migrate`): real CyberDB servers, a real redis-server and a
real 3-master Redis Cluster, real snapshot files.  ``main()`` runs in this process; its stderr is captured.

Each test uses its own Redis database number (single server) or its own table names (cluster), since the Redis
fixtures live for the whole module.  Contents are compared with ``values.canon``, which includes every type.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, ServerProcess, proxy_of
from redis_servers import RedisCluster, RedisServer
from values import canon

import cyberdb
from cyberdb.cli import main
from cyberdb.server.persist import encode_snapshot, read_state

TZ = dt.timezone(dt.timedelta(hours=5, minutes=30))
TRICKY: dict[Any, Any] = {
    "decimal": Decimal("1.10"), "tuple": (1, (2, "x"), ()), "frozenset": frozenset({1, 2, 3}),
    "aware": dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=TZ), "naive": dt.datetime(2024, 1, 2),
    "date": dt.date(1999, 12, 31), "delta": dt.timedelta(days=-3, seconds=5), "bytes": b"\x00\xff raw",
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"), "big": 2**64, "huge": -(10**400),
    "nan": math.nan, "-0.0": -0.0, "nested": {"a": [1, {"b": (2, b"c")}], "d": {frozenset({1}): None}},
    "set": {1, 2}, "complex": complex(1, -2), "str": "ünï \u2603",
    (1, "t"): "tuple key", b"k": "bytes key", None: "none key", Decimal("2.5"): "decimal key",
}
TABLES: dict[str, Any] = {
    "tricky": TRICKY,
    "floats": {1.0: "float one", 2.5: "x"},  # 1.0 and 1 are equal: the key's type must survive each copy
    "ints": {1: "int one", "two": 2},
    "list": [1, 1.0, True, Decimal("1"), (), [], {}, [[(1,)]], {"k": {1, 2}}, None, b""],
    "empty dict": {},
    "empty list": [],
    "big": {f"key {i}": i for i in range(2500)},
}


def server_url(server: ServerProcess) -> str:
    return f"cyberdb://:{PASSWORD}@{server.host}:{server.port}/"


def redis_url(server: RedisServer, db: int) -> str:
    return f"redis://{server.host}:{server.port}/{db}"


def cluster_url(cluster: RedisCluster) -> str:
    return "redis-cluster://" + ",".join(f"{h}:{p}" for h, p in cluster.startup_nodes) + "/"


def fill(proxy: Any, tables: dict[str, Any]) -> None:
    for name, content in tables.items():
        if type(content) is dict:
            proxy.create_cyberdict(name, content)
        else:
            proxy.create_cyberlist(name, content)


def contents(proxy: Any) -> dict[str, Any]:
    """Every table of a proxy's store, read whole."""
    out: dict[str, Any] = {}
    for name, kind in proxy.tables().items():
        out[name] = proxy.get_cyberdict(name).todict() if kind == "CyberDict" else proxy.get_cyberlist(name).tolist()
    return out


def redis_contents(url: str) -> dict[str, Any]:
    client = cyberdb.connect(url)
    try:
        with client.get_proxy() as proxy:
            return contents(proxy)
    finally:
        client.close()


def copy(*args: str) -> int:
    return main(["copy", *args])


@pytest.fixture
def source(make_server: Any) -> ServerProcess:
    """A CyberDB server holding TABLES."""
    server: ServerProcess = make_server()
    with proxy_of(server) as proxy:
        fill(proxy, TABLES)
    return server


def test_round_trip_server_to_redis_and_back(source: ServerProcess, make_server: Any, redis_server: RedisServer,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    redis = redis_url(redis_server, 1)
    assert copy(server_url(source), redis, "--chunk", "1000") == 0
    err = capsys.readouterr().err
    assert "copying big (CyberDict, 2,500 items) ... 40% ... 80% ... done\n" in err
    assert f"copying tricky (CyberDict, {len(TRICKY)} items) ... done\n" in err
    assert "copying empty list (CyberList, 0 items) ... done\n" in err
    assert f"copied {len(TABLES)} table(s) from cyberdb://127.0.0.1:{source.port} to redis://" in err
    assert "verified: all equal" in err
    assert canon(redis_contents(redis)) == canon(TABLES)

    back = make_server()
    assert copy(redis, server_url(back)) == 0
    with proxy_of(back) as proxy:
        assert canon(contents(proxy)) == canon(TABLES)  # the order of tables, keys, and every type survive
        assert type(next(iter(proxy.get_cyberdict("floats")))) is float


def test_to_a_three_master_cluster_with_a_tag(source: ServerProcess, redis_cluster: RedisCluster,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    url = cluster_url(redis_cluster)
    assert copy(server_url(source), url, "--tag", "moved", "--chunk", "700", "--replace") == 0
    assert "copying big (CyberDict, 2,500 items) ... 20% ... 50% ... 80% ... done" in capsys.readouterr().err
    client = cyberdb.connect(url)
    try:
        with client.get_proxy() as proxy:
            got = {name: content for name, content in contents(proxy).items() if name in TABLES}
            assert canon(got) == canon(TABLES)
            assert len({proxy.node_of(name) for name in TABLES}) == 1  # co-located by the tag
    finally:
        client.close()
    # without a tag, each table goes to its own slot: the tables spread over the masters
    assert copy(server_url(source), url, "--replace") == 0
    client = cyberdb.connect(url)
    try:
        with client.get_proxy() as proxy:
            assert len({proxy.node_of(name) for name in TABLES}) > 1
            for name in TABLES:
                proxy.delete_table(name)
    finally:
        client.close()


def test_snapshot_file_to_redis_and_redis_to_snapshot(tmp_path: Path, redis_server: RedisServer,
                                                      make_server: Any) -> None:
    snapshot = tmp_path / "data.cdb"
    snapshot.write_bytes(encode_snapshot(TABLES))
    redis = redis_url(redis_server, 2)
    assert copy(str(snapshot), redis) == 0
    assert canon(redis_contents(redis)) == canon(TABLES)

    written = tmp_path / "back.cdb"
    assert copy(redis, f"file://{written}", "--tables", "tricky,list") == 0
    assert canon(read_state(written).tables) == canon({"tricky": TRICKY, "list": TABLES["list"]})
    assert copy(redis, str(written)) == 1  # the file exists: refused without --replace, and left as it was
    assert set(read_state(written).tables) == {"tricky", "list"}
    assert copy(redis, str(written), "--replace") == 0
    server = make_server(extra=["--load", str(written)])  # the server's own loader reads the file written
    with proxy_of(server) as proxy:
        assert canon(contents(proxy)) == canon(TABLES)


def test_existing_tables_are_refused_before_anything_is_written(source: ServerProcess, redis_server: RedisServer,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    redis = redis_url(redis_server, 3)
    client = cyberdb.connect(redis)
    try:
        with client.get_proxy() as proxy:
            proxy.create_cyberdict("ints", {"old": "content"})
        assert copy(server_url(source), redis) == 1
        assert "already has table(s) 'ints': use --replace" in capsys.readouterr().err
        with client.get_proxy() as proxy:
            assert proxy.tables() == {"ints": "CyberDict"}  # nothing else was written
            assert proxy.get_cyberdict("ints").todict() == {"old": "content"}
        assert copy(server_url(source), redis, "--replace") == 0
        assert canon(redis_contents(redis)) == canon(TABLES)  # "ints" made again, in copy order
    finally:
        client.close()


def test_tables_option_copies_only_those(source: ServerProcess, redis_server: RedisServer,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    redis = redis_url(redis_server, 4)
    assert copy(server_url(source), redis, "--tables", "floats,list,floats") == 0
    assert canon(redis_contents(redis)) == canon({"floats": TABLES["floats"], "list": TABLES["list"]})
    capsys.readouterr()
    assert copy(server_url(source), redis_url(redis_server, 5), "--tables", "ints,nothere") == 1
    assert "has no table(s) 'nothere'" in capsys.readouterr().err
    assert redis_contents(redis_url(redis_server, 5)) == {}  # refused before anything was written


@pytest.mark.parametrize("args", [
    ["--tag", "t"],  # a tag is for a Redis destination only
    ["--chunk", "0"],
    ["--tables", ","],
])
def test_usage_errors_exit_2(source: ServerProcess, make_server: Any, args: list[str],
                             capsys: pytest.CaptureFixture[str]) -> None:
    dest = make_server()
    assert copy(server_url(source), server_url(dest), *args) == 2
    assert capsys.readouterr().err.startswith("cyberdb: ")
    with proxy_of(dest) as proxy:
        assert proxy.tables() == {}


def test_unknown_url_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert copy("http://example.invalid/", "x.cdb") == 2
    assert "unknown store 'http://example.invalid/'" in capsys.readouterr().err


def test_missing_snapshot_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert copy(str(tmp_path / "none.cdb"), str(tmp_path / "out.cdb")) == 1
    assert "could not read" in capsys.readouterr().err
    assert not (tmp_path / "out.cdb").exists()
