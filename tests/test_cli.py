"""Tests of the console script: the inspection commands ``cyberdb check`` and ``cyberdb dump``, and the operator's
``cyberdb --version``, ``serve`` (its log lines), ``info`` and ``shell``.

The files are real: a snapshot saved by an in-process server and an append-only log written by one while a client
wrote the tables; damaged ones are copies with one thing broken.  ``serve``, ``info`` and ``shell`` run as their
own processes against real servers; a ``serve`` process is ready when it logs its "listening on" line.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import math
import os
import pickle
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, ServerProcess, free_port, kill_by_pid, proxy_of, serving
from values import canon

import cyberdb
from cyberdb.cli import main
from cyberdb.codec import MAX_DEPTH, encode_value
from cyberdb.server.inspect import from_json, to_json
from cyberdb.server.persist import encode_snapshot

TZ = dt.timezone(dt.timedelta(hours=-7, minutes=-30))
VALUES: dict[str, Any] = {
    "bytes": b"\x00\xff raw", "tuple": (1, (2, "x"), ()), "set": {1, "a", (2, 3)}, "frozenset": frozenset({b"x"}),
    "decimal": Decimal("1.10"), "decimal nan": Decimal("sNaN"), "negative zero": Decimal("-0"),
    "aware": dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=TZ), "naive": dt.datetime(2024, 1, 2),
    "utc": dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc), "date": dt.date(1999, 12, 31),
    "time": dt.time(1, 2, 3, 4, tzinfo=TZ), "delta": dt.timedelta(days=-3, seconds=5, microseconds=7),
    "uuid": uuid.UUID("12345678-1234-5678-1234-567812345678"), "complex": complex(1.5, math.nan),
    "big": 2**64, "small": -(2**53), "edge": 2**53 - 1, "huge": -(10**4000), "int": 1, "float": 1.0,
    "exp": 1e16, "-0.0": -0.0, "nan": math.nan, "inf": math.inf, "-inf": -math.inf,
    "str": "ünï \u2603 \"quoted\" \n", "none": None, "bools": [True, False],
    "keys": {1: "int", (1, ("t",)): "tuple", None: "none", 2.5: "float", b"k": "bytes", frozenset({1}): "fs"},
    "dollar keys": {"$bytes": "not a tag", "$": 1, "plain": [None]},
    "looks tagged": {"x": {"$tuple": [1]}},
}
TABLES: dict[str, Any] = {
    "values": VALUES,
    "list": [b"", (), set(), frozenset(), {}, {"$dict": []}, [1.0, 1], "text", [[[(1,)]]]],
    "$bytes": {"$bytes": "AA=="},
    "empty": {},
    "ünïcode \u2603 name": [],
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def tables_of(lines: str) -> dict[str, Any]:
    """The tables of a state's dump lines (``{"record": "table", "table", "kind", "content"}``), decoded."""
    tables = {}
    for line in lines.splitlines():
        row = json.loads(line, parse_constant=_refuse)
        if row["record"] == "table":
            assert set(row) == {"record", "table", "kind", "content"}
            content = from_json(row["content"])
            assert row["kind"] == ("dict" if type(content) is dict else "list")
            tables[row["table"]] = content
        else:
            assert row["record"] in ("client", "leases")
    return tables


def _refuse(name: str) -> None:
    raise AssertionError(f"{name} is not JSON")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A log and a snapshot of TABLES written by a real server; the log holds writes after the creates."""
    directory = tmp_path_factory.mktemp("files")
    log, snapshot = directory / "data.aof", directory / "data.cdb"
    with serving(log, "always") as (db, client):
        with client.get_proxy() as proxy:
            for name, content in TABLES.items():
                if type(content) is dict:
                    table = proxy.create_cyberdict(name)
                    for key, value in content.items():
                        table[key] = value
                else:
                    proxy.create_cyberlist(name, content=content[:-2])
                    proxy.get_cyberlist(name).extend(content[-2:])
            proxy.get_cyberdict("empty")["gone"] = 1
            del proxy.get_cyberdict("empty")["gone"]
        db.save_db(str(snapshot))
    return {"log": log, "snapshot": snapshot}


def copy_with(tmp_path: Path, source: Path, data: bytes) -> str:
    path = tmp_path / source.name
    path.write_bytes(data)
    return str(path)


def records(capsys: pytest.CaptureFixture[str], path: Path | str) -> list[dict[str, Any]]:
    code, out, err = run(capsys, "dump", str(path))
    assert (code, err) == (0, "")
    return [json.loads(line, parse_constant=_refuse) for line in out.splitlines()]


# ---- check -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["snapshot", "log"])
def test_check_whole_file_prints_kind_tables_and_counts(capsys: pytest.CaptureFixture[str],
                                                       files: dict[str, Path], kind: str) -> None:
    code, out, err = run(capsys, "check", str(files[kind]))
    assert (code, err) == (0, "")
    lines = out.splitlines()
    size = files[kind].stat().st_size
    title = "snapshot, format version 2" if kind == "snapshot" else "append-only log, format version 1"
    assert lines[0] == f"{files[kind]}: {title}, {size} bytes"
    assert f'  "values"  CyberDict  {len(VALUES)} items  ' in out
    assert f'  "list"  CyberList  {len(TABLES["list"])} items  ' in out
    assert '  "empty"  CyberDict  0 items  ' in out
    assert '  "\\u00fcn\\u00efcode \\u2603 name"  CyberList  0 items  ' in out
    assert lines[-1] == "ok: the file is whole"
    assert "warning" not in out
    if kind == "log":
        commands = sum(row["record"] == "command" for row in records(capsys, files[kind]))
        assert commands > len(TABLES) + len(VALUES)
        assert lines[1].startswith(f"records: 2 base (0 tables, 0 clients, 1 leases record, 1 clocks record), "
                                 f"{commands} commands from ")
        assert lines[2] == f"loads to: {len(TABLES)} tables, 1 client in the reply cache, 0 locks held now"
    else:
        assert lines[1] == f"holds: {len(TABLES)} tables, 1 client in the reply cache, 0 locks held now"


def test_check_torn_log_warns_and_exits_0(capsys: pytest.CaptureFixture[str], files: dict[str, Path],
                                          tmp_path: Path) -> None:
    data = files["log"].read_bytes()
    last = records(capsys, files["log"])[-1]
    assert last["command"] == "dict.delitem"
    torn = copy_with(tmp_path, files["log"], data[:-3])  # a crash while the last record was written
    code, out, err = run(capsys, "check", torn)
    cut = len(data) - 3 - last["offset"]
    assert (code, err) == (0, "")
    assert f"warning: torn last record: {cut} bytes at offset {last['offset']} would be dropped" in out
    assert '  "empty"  CyberDict  1 item  ' in out  # the torn delete is not applied, as the server would load it
    assert out.splitlines()[-1] == "ok: the file is whole apart from its torn last record"

    code, out, err = run(capsys, "dump", torn)
    assert code == 0
    assert f"warning: {torn}: torn last record: {cut} bytes at offset {last['offset']}" in err
    assert json.loads(out.splitlines()[-1])["offset"] < last["offset"]


@pytest.mark.parametrize("where", [0, 5, 12 + 30])  # the record's length, its header checksum, its body
def test_check_log_damaged_in_the_middle_fails_naming_the_offset(capsys: pytest.CaptureFixture[str],
                                                                  files: dict[str, Path], tmp_path: Path,
                                                                  where: int) -> None:
    rows = records(capsys, files["log"])
    middle = rows[len(rows) // 2]["offset"]
    data = bytearray(files["log"].read_bytes())
    data[middle + where] ^= 0x40
    damaged = copy_with(tmp_path, files["log"], bytes(data))
    for command in ("check", "dump"):
        code, out, err = run(capsys, command, damaged)
        assert (code, out) == (1, "")
        assert err.startswith(f"cyberdb: {damaged} is damaged at offset {middle}: ")


def test_check_snapshot_with_a_flipped_byte_is_refused(capsys: pytest.CaptureFixture[str], files: dict[str, Path],
                                                        tmp_path: Path) -> None:
    data = bytearray(files["snapshot"].read_bytes())
    at = len(data) // 2
    data[at] ^= 0x01
    damaged = copy_with(tmp_path, files["snapshot"], bytes(data))
    for command in ("check", "dump"):
        code, out, err = run(capsys, command, damaged)
        assert (code, out) == (1, "")
        found = re.fullmatch(rf"cyberdb: {re.escape(damaged)} is damaged at offset (\d+): checksum mismatch in a "
                             r"\d+-byte record\n", err)
        assert found is not None, err
        assert 12 <= int(found.group(1)) <= at  # the record that holds the flipped byte


def version_1(tables: dict[str, Any]) -> bytes:
    """A snapshot as cyberdb 1.0 wrote it: magic, version 1, reserved, length, SHA-256, payload."""
    payload = encode_value([[name, "dict" if type(t) is dict else "list", t] for name, t in tables.items()])
    return struct.pack("!8sHHQ32s", b"CYBERDB\x00", 1, 0, len(payload), hashlib.sha256(payload).digest()) + payload


def test_version_1_snapshot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "old.cdb"
    path.write_bytes(version_1(TABLES))
    code, out, err = run(capsys, "check", str(path))
    assert (code, err) == (0, "")
    assert out.startswith(f"{path}: snapshot, format version 1, {path.stat().st_size} bytes\n"
                          f"holds: {len(TABLES)} tables, 0 clients in the reply cache, 0 locks held now\n")
    code, out, err = run(capsys, "dump", str(path))
    assert (code, err) == (0, "")
    assert canon(tables_of(out)) == canon(TABLES)
    data = bytearray(path.read_bytes())
    data[-10] ^= 0x01
    path.write_bytes(bytes(data))
    code, out, err = run(capsys, "check", str(path))
    assert (code, out, err) == (1, "", f"cyberdb: {path} is corrupted: checksum mismatch\n")


@pytest.mark.parametrize(("data", "message"), [
    (b"", "is empty: neither a snapshot nor an append-only log"),
    (bytes(range(7, 250, 3)) + b"garbage", "is not a CyberDB data file"),
    (b"CYBERDB\x00" + b"\x00" * 60, "format version 0"),
    (b"CYBERAOF\x00\x09\x00\x00", "log format version 9"),
], ids=["empty", "garbage", "snapshot version 0", "log version 9"])
def test_check_garbage_fails(capsys: pytest.CaptureFixture[str], tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "garbage.aof"
    path.write_bytes(data)
    code, out, err = run(capsys, "check", str(path))
    assert (code, out) == (1, "")
    assert message in err


class _Evil:
    """Unpickling this makes a directory: the test fails if anything unpickles the file."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple[Any, ...]:
        return os.mkdir, (str(self.target),)


def test_check_pickle_of_cyberdb_09_explains_and_never_unpickles(capsys: pytest.CaptureFixture[str],
                                                                 tmp_path: Path) -> None:
    sentinel = tmp_path / "unpickled"
    path = tmp_path / "data.cdb"
    path.write_bytes(pickle.dumps({"centre": {"content": _Evil(sentinel)}}, protocol=4))
    for command in ("check", "dump"):
        code, out, err = run(capsys, command, str(path))
        assert (code, out) == (1, "")
        assert "looks like a pickle (a cyberdb 0.9.x file)" in err
    assert not sentinel.exists()


def test_check_log_cut_inside_its_header_is_a_torn_empty_log(capsys: pytest.CaptureFixture[str],
                                                             tmp_path: Path) -> None:
    path = tmp_path / "x"
    path.write_bytes(b"CYBERAO")
    code, out, err = run(capsys, "check", str(path))
    assert (code, err) == (0, "")
    assert "format version unknown (header cut short)" in out
    assert "warning: torn last record: 7 bytes at offset 0 would be dropped" in out


def test_check_in_a_subprocess(files: dict[str, Path], tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "cyberdb", "check", str(files["log"])],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout.splitlines()[-1] == "ok: the file is whole"
    damaged = copy_with(tmp_path, files["log"], files["log"].read_bytes()[:20] + b"\xff" * 40)
    proc = subprocess.run([sys.executable, "-m", "cyberdb", "check", damaged],
                          capture_output=True, text=True, timeout=60, check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert "is damaged at offset 12" in proc.stderr


# ---- dump --------------------------------------------------------------------------------------------------------


def test_dump_snapshot_round_trips_every_value(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    code, out, err = run(capsys, "dump", str(files["snapshot"]))
    assert (code, err) == (0, "")
    assert canon(tables_of(out)) == canon(TABLES)
    assert run(capsys, "dump", "--state", str(files["snapshot"]))[1] == out


def test_dump_log_state_is_what_the_log_loads_to(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    code, out, err = run(capsys, "dump", "--state", str(files["log"]))
    assert (code, err) == (0, "")
    assert canon(tables_of(out)) == canon(TABLES)
    snapshot = run(capsys, "dump", str(files["snapshot"]))[1]
    tables = [line for line in out.splitlines() if line.startswith('{"record":"table"')]
    assert tables == [line for line in snapshot.splitlines() if line.startswith('{"record":"table"')]
    assert out.splitlines()[-2:] == snapshot.splitlines()[-2:]  # the same client and (no) leases


def test_dump_log_records(capsys: pytest.CaptureFixture[str], files: dict[str, Path]) -> None:
    rows = records(capsys, files["log"])
    assert rows[0] == {"offset": 12, "record": "leases", "leases": []}
    assert rows[1]["record"] == "clocks" and rows[1]["versions"] == []
    commands = rows[2:]
    assert all(row["record"] == "command" for row in commands)
    assert [row["offset"] for row in rows] == sorted({row["offset"] for row in rows})
    assert len({row["client"] for row in commands}) == 1 and len(commands[0]["client"]) == 32
    assert [row["request"] for row in commands] == list(range(1, len(commands) + 1))
    for row in commands:
        assert dt.datetime.fromisoformat(row["time"]).timestamp() == pytest.approx(row["unix_time"], abs=1e-6)
    setitems = {}
    for row in commands:
        args = from_json(row["args"])
        if row["command"] == "dict.setitem" and args[0] == "values":
            setitems[args[1]] = args[2]
    assert canon(setitems) == canon(VALUES)
    creates = [from_json(row["args"]) for row in commands if row["command"] == "db.create"]
    assert [args[:2] for args in creates] == [[name, "dict" if type(t) is dict else "list"]
                                             for name, t in TABLES.items()]
    assert [row["command"] for row in commands[-2:]] == ["dict.setitem", "dict.delitem"]


def test_dump_log_base_records(capsys: pytest.CaptureFixture[str], files: dict[str, Path], tmp_path: Path) -> None:
    # a new log opened over a loaded snapshot starts with a base: its tables, reply cache and leases
    log = tmp_path / "data.aof"
    db = cyberdb.Server()
    db.load_db(str(files["snapshot"]))
    with serving(log, "always", db=db) as (_db, client), client.get_proxy() as proxy:
        proxy.get_cyberdict("empty")[(1, 2)] = b"x"
    rows = records(capsys, log)
    assert [row["record"] for row in rows] == ["table"] * len(TABLES) + ["client", "leases", "clocks", "command"]
    assert rows[0]["offset"] == 12
    base = "\n".join(json.dumps({k: v for k, v in row.items() if k != "offset"}) for row in rows[:-3])
    assert canon(tables_of(base)) == canon(TABLES)
    assert set(rows[len(TABLES)]) == {"offset", "record", "client", "ack", "floor", "replies"}
    assert rows[-1]["command"] == "dict.setitem"
    assert canon(from_json(rows[-1]["args"])) == canon(["empty", (1, 2), b"x"])
    code, out, _err = run(capsys, "check", str(log))
    assert code == 0
    assert (f"records: {len(TABLES) + 3} base ({len(TABLES)} tables, 1 client, 1 leases record, 1 clocks record), "
            "1 command") in out
    assert "loads to: 5 tables, 2 clients in the reply cache, 0 locks held now" in out


def test_dump_of_a_table_nested_to_the_limit(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    value: Any = "leaf"
    for _ in range(MAX_DEPTH - 1):  # the table itself is one level
        value = (value,)
    path = tmp_path / "deep.cdb"
    path.write_bytes(encode_snapshot({"deep": [value]}))
    code, out, err = run(capsys, "dump", str(path))
    assert (code, err) == (0, "")
    opening = '{"record":"table","table":"deep","kind":"list","content":['
    assert out.startswith(opening + '{"$tuple":[' * (MAX_DEPTH - 1) + '"leaf"')
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 20 * MAX_DEPTH))
    try:
        assert canon(tables_of(out)) == canon({"deep": [value]})
    finally:
        sys.setrecursionlimit(limit)


# ---- the JSON form -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (1, "1"), (1.0, "1.0"), (-0.0, "-0.0"), (2**53 - 1, "9007199254740991"), (2**53, '{"$int":"9007199254740992"}'),
    (-(2**53), '{"$int":"-9007199254740992"}'), (math.nan, '{"$float":"nan"}'), (-math.inf, '{"$float":"-inf"}'),
    (b"\x00", '{"$bytes":"AA=="}'), ((), '{"$tuple":[]}'), ({3, 1, 2}, '{"$set":[1,2,3]}'),
    ({"$bytes": "AA=="}, '{"$dict":[["$bytes","AA=="]]}'), ({"a": 1}, '{"a":1}'), ({1: 2}, '{"$dict":[[1,2]]}'),
    (Decimal("1.10"), '{"$decimal":"1.10"}'), (dt.timedelta(1, 2, 3), '{"$timedelta":[1,2,3]}'),
    (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=TZ), '{"$datetime":"2024-01-02T03:04:05-07:30"}'),
    (complex(1, math.inf), '{"$complex":[1.0,{"$float":"inf"}]}'), ("\u2603", '"\\u2603"'),
])
def test_json_form(value: Any, text: str) -> None:
    assert to_json(value) == text
    assert canon(from_json(json.loads(text))) == canon(value)


@pytest.mark.parametrize("text", [
    '{"$bytes":"AA==","a":1}', '{"$nope":1}', '{"$int":"1.5"}', '{"$bytes":"A"}', '{"$tuple":1}',
    '{"$dict":[[1]]}', '{"$float":"NaN"}', '{"$complex":[1,2]}', '{"$timedelta":[1,2]}', '{"$datetime":"x"}',
])
def test_json_form_refuses_what_to_json_never_writes(text: str) -> None:
    with pytest.raises(ValueError):
        from_json(json.loads(text))


def test_json_form_of_ints_beyond_str_conversion_limit() -> None:
    value = -(2**32000)  # about 9600 digits: str() refuses ints over 4300 digits by default
    assert from_json(json.loads(to_json(value))) == value


def test_json_form_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        to_json(object())


# ---- the operator's commands: --version, serve, info, shell -------------------------------------------------------

LINE_TIMEOUT = 30.0


def cli(*argv: str, stdin: str = "", password: str | None = PASSWORD,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cyberdb ARGV`` to completion (bounded in time), with ``$CYBERDB_PASSWORD`` set or not."""
    environ = {k: v for k, v in os.environ.items() if k != "CYBERDB_PASSWORD"}
    if password is not None:
        environ["CYBERDB_PASSWORD"] = password
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "cyberdb", *argv], input=stdin, capture_output=True, text=True,
                          timeout=60, env=environ, check=False)


class Serve:
    """``cyberdb serve`` in its own process, its stderr read line by line (the "listening on" line says it is up)."""

    def __init__(self, *argv: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        environ = dict(os.environ, CYBERDB_PASSWORD=PASSWORD, **(env or {}))
        self.proc = subprocess.Popen([sys.executable, "-m", "cyberdb", "serve", "--port", str(self.port), *argv],
                                     env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str) -> str:
        """The next stderr line matching ``pattern`` (lines before it are kept in ``lines``)."""
        deadline = time.monotonic() + LINE_TIMEOUT
        while True:
            try:
                line = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line matching {pattern!r} in {LINE_TIMEOUT} s: {self.lines}") from None
            if line is None:
                raise AssertionError(f"serve exited ({self.proc.wait(10)}) before {pattern!r}: {self.lines}")
            self.lines.append(line)
            if re.search(pattern, line):
                return line

    def stop(self) -> None:
        kill_by_pid(self.proc)
        self._reader.join(10)


@pytest.fixture
def serve() -> Iterator[Callable[..., Serve]]:
    started: list[Serve] = []

    def start(*argv: str, env: dict[str, str] | None = None) -> Serve:
        started.append(Serve(*argv, env=env))
        return started[-1]

    yield start
    for process in started:
        process.stop()


def test_version() -> None:
    result = cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"cyberdb {cyberdb.__version__}\n", "")


def test_serve_logs_listening_and_serves(serve: Callable[..., Serve]) -> None:
    srv = serve()
    line = srv.wait_for("listening on")
    assert f"listening on 127.0.0.1:{srv.port} (encrypt=False, tls=False)" in line
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10):  # listening when it says so
        pass
    client = cyberdb.connect("127.0.0.1", srv.port, PASSWORD)
    try:
        assert client.ping()
    finally:
        client.close()
    assert not any("connection from" in line for line in srv.lines)  # only with --log


def test_serve_refuses_encrypt_without_password() -> None:
    port = free_port()
    result = cli("serve", "--port", str(port), "--encrypt", password=None)
    assert result.returncode == 2 and result.stdout == ""
    assert "--encrypt needs a password" in result.stderr
    with socket.socket() as s:  # nothing was started: the port is still free
        s.bind(("127.0.0.1", port))


def big_snapshot(path: Path) -> None:
    with serving() as (db, client):
        with client.get_proxy() as proxy:
            for i in range(4):
                proxy.create_cyberdict(f"t{i}", content={k: "x" * 100 for k in range(200)})
        db.save_db(str(path))


def test_serve_shows_progress_of_a_long_load(serve: Callable[..., Serve], tmp_path: Path) -> None:
    snapshot = tmp_path / "big.cdb"
    big_snapshot(snapshot)
    srv = serve("--load", str(snapshot), env={"CYBERDB_PROGRESS_INTERVAL": "0"})  # every step counts as "long"
    srv.wait_for("listening on")
    progress = [line for line in srv.lines if f"loading {snapshot}:" in line]
    assert len(progress) >= 4, srv.lines  # one per table at least, then "done"
    assert re.search(r"loading .*: \d+% \([\d.]+ of [\d.]+ MiB, \d+ records, [\d.]+ s\)", progress[0])
    assert "done" in progress[-1]
    assert any("loaded 4 tables" in line for line in srv.lines)


def test_serve_shows_progress_of_a_long_log_replay(serve: Callable[..., Serve], tmp_path: Path) -> None:
    log = tmp_path / "data.aof"
    with serving(log, "always") as (_db, client):
        with client.get_proxy() as proxy:
            d = proxy.create_cyberdict("d")
            for i in range(20):
                d[i] = i
    srv = serve("--aof", str(log), env={"CYBERDB_PROGRESS_INTERVAL": "0"})
    srv.wait_for("listening on")
    assert sum(f"replaying {log}:" in line for line in srv.lines) >= 20, srv.lines
    client = cyberdb.connect("127.0.0.1", srv.port, PASSWORD)
    try:
        with client.get_proxy() as proxy:
            assert len(proxy.get_cyberdict("d")) == 20
    finally:
        client.close()


def test_small_loads_are_quiet(serve: Callable[..., Serve], tmp_path: Path) -> None:
    snapshot = tmp_path / "big.cdb"
    big_snapshot(snapshot)
    srv = serve("--load", str(snapshot), env={"CYBERDB_PROGRESS_INTERVAL": "3600"})  # the load is shorter
    srv.wait_for("listening on")
    assert not any("loading" in line for line in srv.lines), srv.lines


def test_saves_show_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    big_snapshot(tmp_path / "in.cdb")
    monkeypatch.setattr("cyberdb.server.progress.PROGRESS_INTERVAL", 0.0)
    db = cyberdb.Server()
    db.load_db(str(tmp_path / "in.cdb"))
    with caplog.at_level("INFO", logger="cyberdb.server.progress"):
        db.save_db(str(tmp_path / "out.cdb"))  # not serving: saved in this process
    lines = [r.getMessage() for r in caplog.records if r.name == "cyberdb.server.progress"]
    saving = [line for line in lines if line.startswith(f"saving {tmp_path / 'out.cdb'}: ")]
    assert len(saving) >= 4 and "4 of 4 tables" in saving[-1] and "done" in saving[-1], lines


@pytest.fixture(scope="module")
def info_server() -> Iterator[ServerProcess]:
    srv = ServerProcess()
    try:
        with proxy_of(srv) as proxy:
            proxy.create_cyberdict("users", content={i: i for i in range(12)})
            proxy.create_cyberlist("jobs", content=["a", "b", "c"])
        yield srv
    finally:
        srv.stop()


def test_info_json(info_server: ServerProcess) -> None:
    first = json.loads(cli("info", "--port", str(info_server.port), "--json").stdout)
    with proxy_of(info_server) as proxy:
        jobs = proxy.get_cyberlist("jobs")
        for i in range(100):
            jobs.append(i)
    url = f"cyberdb://:{PASSWORD}@127.0.0.1:{info_server.port}"
    result = cli("info", "--url", url, "--json", password=None)
    assert result.returncode == 0, result.stderr
    second = json.loads(result.stdout)
    assert second["tables"] == {"users": {"kind": "dict", "size": 12}, "jobs": {"kind": "list", "size": 103}}
    assert second["commands"] - first["commands"] >= 101
    assert second["ops_per_sec"] > 0
    assert second["version"] == cyberdb.__version__ and second["address"] == f"127.0.0.1:{info_server.port}"


def test_info_human_readable(info_server: ServerProcess) -> None:
    result = cli("info", "--port", str(info_server.port))
    assert result.returncode == 0 and result.stderr == ""
    out = result.stdout
    assert out.startswith(f"cyberdb {cyberdb.__version__} at 127.0.0.1:{info_server.port} (pid ")
    assert re.search(r"^memory: [\d.]+ MiB resident, no max_memory$", out, re.M)
    assert re.search(r"^clients: 1 connected, ", out, re.M)
    assert re.search(r"^commands: \d+ since the start, [\d.]+ ops/s", out, re.M)
    assert re.search(r"^tables: 2, 0 keys with an expiry$", out, re.M)
    assert re.search(r"^  dict +12  users$", out, re.M) and re.search(r"^  list +\d+  jobs$", out, re.M)
    assert "append log: off" in out and "backup: off" in out


def test_info_with_a_wrong_password_fails(info_server: ServerProcess) -> None:
    result = cli("info", "--port", str(info_server.port), password="wrong")
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith("cyberdb: ")


def test_info_refuses_a_bad_url() -> None:
    result = cli("info", "--url", "http://127.0.0.1:1")
    assert result.returncode == 2 and "cyberdb://" in result.stderr


def test_shell_through_stdin(info_server: ServerProcess) -> None:
    script = ('d = proxy.create_cyberdict("x"); d["a"] = 1\n'
              'print(proxy.get_cyberdict("x").todict())\n'
              'print(type(client).__name__, cyberdb.__version__)\n'
              '1 / 0\n'
              'print("still here")\n')
    result = cli("shell", "--port", str(info_server.port), stdin=script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["{'a': 1}", f"Client {cyberdb.__version__}", "still here"]
    assert f"connected to 127.0.0.1:{info_server.port}" in result.stderr  # the banner
    assert "ZeroDivisionError" in result.stderr
    with proxy_of(info_server) as proxy:
        assert proxy.get_cyberdict("x").todict() == {"a": 1}
        proxy.delete_table("x")


def test_shell_exit_status(info_server: ServerProcess) -> None:
    result = cli("shell", "--port", str(info_server.port), stdin='print("x")\nexit(3)\nprint("not run")\n')
    assert (result.returncode, result.stdout) == (3, "x\n")


@pytest.mark.parametrize("end", ["", "exit()\n"], ids=["eof", "exit"])
def test_shell_closes_its_connection(info_server: ServerProcess, capsys: pytest.CaptureFixture[str],
                                     monkeypatch: pytest.MonkeyPatch, end: str) -> None:
    # in this process, so that a connection left open would stay open (a process exiting closes everything)
    monkeypatch.setattr(sys, "stdin", io.StringIO("print(proxy.info()['connections'])\n" + end))
    monkeypatch.setenv("CYBERDB_PASSWORD", PASSWORD)
    assert main(["shell", "--port", str(info_server.port)]) == 0
    assert capsys.readouterr().out == "1\n"
    with proxy_of(info_server) as proxy:  # the shell's connection is gone: only this one is left
        deadline = time.monotonic() + 20
        while proxy.info()["connections"] != 1:
            assert time.monotonic() < deadline
            time.sleep(0.02)  # polling interval of a readiness check


def test_info_human_readable_persistence_and_slow_commands(make_server: Callable[..., ServerProcess],
                                                           tmp_path: Path) -> None:
    log, backup = tmp_path / "data.aof", tmp_path / "data.cdb"
    srv = make_server(extra=["--aof", str(log), "--fsync", "always", "--backup", str(backup), "--backup-cycle",
                             "3600", "--slowlog-threshold", "0.000000001"])
    with proxy_of(srv) as proxy:
        proxy.create_cyberdict("d")["k"] = 1
    result = cli("info", "--port", str(srv.port))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(rf"^append log: {re.escape(str(log))}, fsync always, [\d.]+ MiB, \d+ records, last fsync "
                     r"[\d.]+ s ago, 0 rewrites$", out, re.M), out
    assert f"backup: {backup} every 3600 s\n" in out
    assert "slow commands (newest first):" in out
    assert re.search(r"^  \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC +[\d.]+ ms  dict.setitem on d from 127.0.0.1:\d+$", out,
                     re.M), out
