"""Tests of cyberdb.server.persist and of Server.save_db/load_db/set_backup (in-process servers).

Snapshot files follow the layout documented in persist.py; the malformed ones here are built by hand from that
layout so that each test breaks exactly one thing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
import pickle
import resource
import struct
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD, proxy_of
from values import canon

import cyberdb
from cyberdb import PersistenceError
from cyberdb.codec import encode_value
from cyberdb.server.persist import decode_snapshot, encode_snapshot, read_snapshot, write_atomic

MAGIC = b"CYBERDB\x00"
HEADER = struct.Struct("!8sHHQ32s")  # magic, version, reserved, payload length, sha256(payload)
WAIT = 20.0  # deadline for polling a file written by the server's backup timer


TZ = dt.timezone(dt.timedelta(hours=-7, minutes=-30))
EVERY_VALUE: list[Any] = [
    None, True, False, 0, -1, 2**63 - 1, 2**64, -(2**63) - 1, 10**50,
    0.0, -0.0, 3.25, math.inf, -math.inf, math.nan,
    "", "text \u2603", b"", b"\x00\xffbytes",
    [], [1, [2, [3]]], (), (1, (2, ())), {}, {"a": {"b": [()]}}, set(), {1, "x", (2, 3)}, frozenset(),
    frozenset({frozenset({1})}),
    dt.datetime(2024, 1, 2, 3, 4, 5, 6), dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=TZ),
    dt.datetime(2024, 1, 2, tzinfo=dt.timezone.utc), dt.date(1999, 12, 31), dt.time(23, 59, 59, 1),
    dt.time(1, 2, tzinfo=TZ), dt.timedelta(days=-3, seconds=5, microseconds=7),
    Decimal("1.10"), Decimal("-0"), Decimal("NaN"), Decimal("sNaN"), Decimal("-Infinity"),
    uuid.UUID("12345678-1234-5678-1234-567812345678"), complex(1, -2), complex(math.nan, -0.0),
]
EVERY_KEY: list[Any] = [
    None, True, 0, -1, 2**64, 1.5, -0.0, "", "k", b"", b"k", (), (1, (2,)), frozenset(), frozenset({(1,)}),
    dt.datetime(2024, 1, 2, tzinfo=TZ), dt.date(2000, 1, 1), dt.time(5), dt.timedelta(1), Decimal("2.5"),
    uuid.UUID(int=1), 1j,
]


def sample_tables() -> dict[str, Any]:
    return {
        "values": {f"v{i}": v for i, v in enumerate(EVERY_VALUE)},
        "keys": {k: i for i, k in enumerate(EVERY_KEY)},
        "list": list(EVERY_VALUE),
        "empty dict": {},
        "empty list": [],
        "ünïcode table \u2603": [EVERY_VALUE, {"nested": EVERY_VALUE}],
    }


def build(payload: bytes, *, magic: bytes = MAGIC, version: int = 1, length: int | None = None,
          digest: bytes | None = None) -> bytes:
    """A snapshot file with a hand-made header (correct unless told otherwise)."""
    return HEADER.pack(magic, version, 0, len(payload) if length is None else length,
                       hashlib.sha256(payload).digest() if digest is None else digest) + payload


# ---- encode/decode_snapshot --------------------------------------------------------------------------------------


def test_snapshot_roundtrip_every_value_type() -> None:
    tables = sample_tables()
    data = encode_snapshot(tables)
    assert data.startswith(MAGIC)
    restored = decode_snapshot(data)
    assert list(restored) == list(tables)
    for name in tables:
        assert canon(restored[name]) == canon(tables[name]), name


def test_snapshot_of_no_tables() -> None:
    assert decode_snapshot(encode_snapshot({})) == {}


def test_snapshot_layout_matches_documentation() -> None:
    # version 2: magic, version, reserved, then records (length, crc32 of the body, crc32 of those 8 bytes,
    # body = kind byte + codec value), the last one END [number of records before it]
    tables = {"d": {"k": 1}, "l": [1, 2]}
    data = encode_snapshot(tables)
    assert data[:12] == MAGIC + struct.pack("!HH", 2, 0)
    bodies, offset = [], 12
    while offset < len(data):
        length, crc, head_crc = struct.unpack_from("!III", data, offset)
        body = data[offset + 12:offset + 12 + length]
        assert zlib.crc32(body) == crc and zlib.crc32(data[offset:offset + 8]) == head_crc
        bodies.append(body)
        offset += 12 + length
    assert bodies[0] == b"\x02" + encode_value(["d", "dict", {"k": 1}])
    assert bodies[1] == b"\x02" + encode_value(["l", "list", [1, 2]])
    assert bodies[-1] == b"\x05" + encode_value(len(bodies) - 1)
    payload = encode_value([["d", "dict", {"k": 1}], ["l", "list", [1, 2]]])
    assert decode_snapshot(build(payload)) == tables  # and a file written by someone else by the spec loads


# a version-1 file (what earlier releases wrote), built by its spec: the tests below check that reader
GOOD = build(encode_value([["d", "dict", {"k": "v" * 100}], ["l", "list", list(range(50))]]))


V2 = encode_snapshot({"d": {"k": "v" * 100}, "l": list(range(50))})


@pytest.mark.parametrize("cut", range(12, len(V2), 7))
def test_truncated_version_2_names_the_offset(cut: int) -> None:
    with pytest.raises(PersistenceError, match=r"truncated at offset \d+"):
        decode_snapshot(V2[:cut])


@pytest.mark.parametrize("at", [13, 40, 150, len(V2) - 3])
def test_flipped_byte_in_version_2_names_the_offset(at: int) -> None:
    data = bytearray(V2)
    data[at] ^= 0x10
    with pytest.raises(PersistenceError, match=r"(damaged|truncated) at offset \d+") as info:
        decode_snapshot(bytes(data), "backup.cdb")
    offset = int(str(info.value).split("offset ")[1].split(":")[0].split(" ")[0])
    assert offset <= at  # the record that holds the flipped byte, or the one before it


@pytest.mark.parametrize("cut", [HEADER.size, HEADER.size + 1, len(GOOD) // 2, len(GOOD) - 1])
def test_truncated_payload(cut: int) -> None:
    with pytest.raises(PersistenceError, match="truncated"):
        decode_snapshot(GOOD[:cut])


@pytest.mark.parametrize("cut", [len(MAGIC), len(MAGIC) + 2, HEADER.size - 1])
def test_truncated_header(cut: int) -> None:
    # the magic is intact: the file is a CyberDB file that was cut short, and the message should say so
    with pytest.raises(PersistenceError, match="truncated"):
        decode_snapshot(GOOD[:cut])


@pytest.mark.parametrize("data", [b"", b"C", MAGIC[:5]])
def test_too_short_to_be_anything(data: bytes) -> None:
    with pytest.raises(PersistenceError):
        decode_snapshot(data)


def test_huge_announced_length_is_truncation_not_allocation() -> None:
    payload = GOOD[HEADER.size:]
    with pytest.raises(PersistenceError, match="truncated"):
        decode_snapshot(build(payload, length=2**63))


@pytest.mark.parametrize("offset", [0, 1, 17, -1])
def test_flipped_payload_byte_fails_the_checksum(offset: int) -> None:
    data = bytearray(GOOD)
    data[HEADER.size + offset if offset >= 0 else offset] ^= 0x01
    with pytest.raises(PersistenceError, match="checksum"):
        decode_snapshot(bytes(data))


def test_flipped_digest_byte_fails_the_checksum() -> None:
    data = bytearray(GOOD)
    data[HEADER.size - 1] ^= 0x01
    with pytest.raises(PersistenceError, match="checksum"):
        decode_snapshot(bytes(data))


@pytest.mark.parametrize("magic", [b"CYBERDB\x01", b"cyberdb\x00", b"\x00" * 8, b"PK\x03\x04\x00\x00\x00\x00"])
def test_wrong_magic(magic: bytes) -> None:
    with pytest.raises(PersistenceError, match="not a CyberDB"):
        decode_snapshot(magic + GOOD[len(magic):])


def test_text_file_is_not_a_cyberdb_file() -> None:
    with pytest.raises(PersistenceError, match="not a CyberDB"):
        decode_snapshot(b'{"json": "is not a snapshot either", "padding": "..........................."}')


@pytest.mark.parametrize("protocol", range(2, pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_file_is_refused_with_an_explanation(tmp_path: Path, protocol: int) -> None:
    # what cyberdb 0.9.x wrote: a pickled dict of tables (built here, never unpickled)
    old = pickle.dumps({"centre": {"content": "Hello CyberDB!"}, "list": [1, 2]}, protocol=protocol)
    assert old[:1] == b"\x80"
    with pytest.raises(PersistenceError, match="pickle"):
        decode_snapshot(old)
    path = tmp_path / "data.cdb"
    path.write_bytes(old)
    with pytest.raises(PersistenceError, match="pickle") as info:
        read_snapshot(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("version", [0, 3, 0xFFFF])
def test_wrong_version(version: int) -> None:
    with pytest.raises(PersistenceError, match="version"):
        decode_snapshot(build(GOOD[HEADER.size:], version=version))


@pytest.mark.parametrize("extra", [b"\x00", b"garbage", GOOD])
def test_trailing_bytes(extra: bytes) -> None:
    with pytest.raises(PersistenceError, match="unexpected bytes"):
        decode_snapshot(GOOD + extra)


MALFORMED_PAYLOADS = {
    "not msgpack": (b"\xc1", "malformed"),
    "payload with extra data": (encode_value([]) + b"\x00", "malformed"),
    "unknown extension": (b"\xd4\x63\x00", "malformed"),
    "payload is a dict": (encode_value({"t": ["t", "dict", {}]}), "not a list"),
    "payload is a str": (encode_value("tables"), "not a list"),
    "payload is None": (encode_value(None), "not a list"),
    "entry not a list": (encode_value([("t", "dict", {})]), "not [name, kind, content]"),
    "entry of two": (encode_value([["t", "dict"]]), "not [name, kind, content]"),
    "entry of four": (encode_value([["t", "dict", {}, 1]]), "not [name, kind, content]"),
    "kind set": (encode_value([["t", "set", set()]]), "bad kind"),
    "kind None": (encode_value([["t", None, {}]]), "bad kind"),
    "dict kind with list content": (encode_value([["t", "dict", []]]), "bad kind or content"),
    "list kind with tuple content": (encode_value([["t", "list", ()]]), "bad kind or content"),
    "name not a str": (encode_value([[1, "dict", {}]]), "table name"),
    "empty name": (encode_value([["", "dict", {}]]), "table name"),
    "name too long": (encode_value([["n" * 5000, "dict", {}]]), "table name"),
    "duplicate name": (encode_value([["t", "dict", {}], ["t", "list", []]]), "duplicate"),
}


@pytest.mark.parametrize(("payload", "words"), MALFORMED_PAYLOADS.values(), ids=MALFORMED_PAYLOADS.keys())
def test_valid_checksum_over_a_malformed_payload(payload: bytes, words: str) -> None:
    with pytest.raises(PersistenceError) as info:
        decode_snapshot(build(payload), "backup.cdb")
    assert words in str(info.value)
    assert "backup.cdb" in str(info.value)


def test_read_snapshot_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PersistenceError, match="could not read"):
        read_snapshot(tmp_path / "nope.cdb")


def test_read_snapshot_of_a_directory(tmp_path: Path) -> None:
    with pytest.raises(PersistenceError):
        read_snapshot(tmp_path)


# ---- write_atomic ------------------------------------------------------------------------------------------------


def test_write_atomic_writes_and_replaces(tmp_path: Path) -> None:
    path = tmp_path / "data.cdb"
    write_atomic(path, b"first")
    assert path.read_bytes() == b"first"
    write_atomic(str(path), b"second, longer")
    assert path.read_bytes() == b"second, longer"
    write_atomic(path, b"")
    assert path.read_bytes() == b""
    assert os.listdir(tmp_path) == ["data.cdb"]


def test_write_atomic_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    write_atomic("rel.cdb", b"data")
    assert (tmp_path / "rel.cdb").read_bytes() == b"data"
    assert os.listdir(tmp_path) == ["rel.cdb"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_write_atomic_failure_keeps_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 failing: str) -> None:
    path = tmp_path / "data.cdb"
    path.write_bytes(b"old content")
    calls = []

    def broken(*args: Any) -> None:
        calls.append(args)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, failing, broken)
    with pytest.raises(PersistenceError, match="could not write") as info:
        write_atomic(path, b"new content")
    assert isinstance(info.value.__cause__, OSError)
    monkeypatch.undo()
    assert calls
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["data.cdb"]  # no temporary file left behind


def test_write_atomic_into_a_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(PersistenceError):
        write_atomic(tmp_path / "missing" / "data.cdb", b"x")
    assert os.listdir(tmp_path) == []


def test_concurrent_writers_of_the_same_file_both_succeed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. Server.save_db("data.cdb") while the backup timer writes data.cdb: neither may fail or corrupt the file
    path = tmp_path / "data.cdb"
    first = encode_snapshot({"t": ["first"] * 1000})
    second = encode_snapshot({"t": ["second"]})
    real_fsync = os.fsync
    first_in_fsync, second_done = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def fsync(fd: int) -> None:
        real_fsync(fd)
        if threading.current_thread() is writer and not first_in_fsync.is_set():
            first_in_fsync.set()
            # hold the first writer between writing its temp file and renaming it while the second one runs
            # (bounded: if writers are serialised by a lock, the second cannot finish until this one does)
            second_done.wait(5)

    def write_first() -> None:
        try:
            write_atomic(path, first)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    monkeypatch.setattr(os, "fsync", fsync)
    writer = threading.Thread(target=write_first)
    writer.start()
    try:
        assert first_in_fsync.wait(20)
        try:
            write_atomic(path, second)
        finally:
            second_done.set()
    finally:
        writer.join(20)
    assert not writer.is_alive()
    assert errors == []
    assert path.read_bytes() in (first, second)
    assert os.listdir(tmp_path) == ["data.cdb"]


# ---- Server.save_db / load_db / set_backup (in-process) -------------------------------------------------------


def fill(db: cyberdb.Server) -> dict[str, Any]:
    """Create tables holding every value type through a client; return what they should contain."""
    expected = {}
    with proxy_of(db) as proxy:
        for name, content in sample_tables().items():
            if type(content) is dict:
                proxy.create_cyberdict(name, content)
            else:
                proxy.create_cyberlist(name, content)
            expected[name] = content
    return expected


def contents(db: cyberdb.Server) -> dict[str, Any]:
    """Every table of a running server, read through a client."""
    out = {}
    with proxy_of(db) as proxy:
        for name, kind in proxy.tables().items():
            if kind == "CyberDict":
                out[name] = proxy.get_cyberdict(name).todict()
            else:
                out[name] = proxy.get_cyberlist(name).tolist()
    return out


def assert_same_tables(got: dict[str, Any], expected: dict[str, Any]) -> None:
    assert sorted(got) == sorted(expected)
    for name in expected:
        assert canon(got[name]) == canon(expected[name]), name


def wait_for(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling interval of a deadline-bounded wait, not a synchronisation sleep


def snapshot_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return read_snapshot(path)
    except PersistenceError:
        return None


def test_save_then_load_into_a_new_server_restores_every_type(in_process: Callable[..., cyberdb.Server],
                                                              tmp_path: Path) -> None:
    path = tmp_path / "data.cdb"
    source = in_process()
    expected = fill(source)
    source.save_db(str(path))
    assert os.listdir(tmp_path) == ["data.cdb"]

    fresh = cyberdb.Server()  # not started: load_db works on a stopped server too
    fresh.load_db(str(path))
    in_process(fresh)
    assert_same_tables(contents(fresh), expected)


def test_load_into_a_running_server_replaces_its_tables(in_process: Callable[..., cyberdb.Server],
                                                        tmp_path: Path) -> None:
    path = tmp_path / "data.cdb"
    source = in_process()
    expected = fill(source)
    source.save_db(str(path))
    target = in_process()
    with proxy_of(target) as proxy:
        proxy.create_cyberdict("old table", {"will": "go"})
    target.load_db(str(path))
    assert_same_tables(contents(target), expected)


def test_stopped_server_save_and_load(tmp_path: Path) -> None:
    path = tmp_path / "data.cdb"
    tables = sample_tables()
    write_atomic(path, encode_snapshot(tables))
    db = cyberdb.Server()
    db.load_db(str(path))
    again = tmp_path / "again.cdb"
    db.save_db(str(again))
    restored = read_snapshot(again)
    assert list(restored) == list(tables)
    for name in tables:
        assert canon(restored[name]) == canon(tables[name]), name


def test_save_db_without_tables_writes_a_valid_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.cdb"
    cyberdb.Server().save_db(str(path))
    assert read_snapshot(path) == {}


def test_save_db_failure_raises_persistence_error(tmp_path: Path) -> None:
    with pytest.raises(PersistenceError):
        cyberdb.Server().save_db(str(tmp_path / "missing-dir" / "data.cdb"))


def _corruptions(good: bytes) -> dict[str, bytes]:
    flipped = bytearray(good)
    flipped[-1] ^= 0x01
    return {
        "truncated": good[:-3],
        "flipped byte": bytes(flipped),
        "pickle": pickle.dumps({"t": {"k": "v"}}, protocol=4),
        "wrong magic": b"NOTCYBER" + good[8:],
        "trailing bytes": good + b"\x00",
        "bad table after good ones": build(encode_value([["ok", "dict", {"a": 1}], ["bad", "set", set()]])),
        "empty file": b"",
    }


@pytest.mark.parametrize("kind", list(_corruptions(GOOD)))
def test_corrupted_file_is_refused_and_nothing_is_loaded(in_process: Callable[..., cyberdb.Server],
                                                         tmp_path: Path, kind: str) -> None:
    db = in_process()
    expected = fill(db)
    other = encode_snapshot({"ok": {"a": 1}, "other": [1, 2, 3]})
    bad = tmp_path / "bad.cdb"
    bad.write_bytes(_corruptions(other)[kind])
    with pytest.raises(PersistenceError):
        db.load_db(str(bad))
    assert_same_tables(contents(db), expected)
    with pytest.raises(PersistenceError):
        db.load_db(str(tmp_path / "missing.cdb"))
    assert_same_tables(contents(db), expected)


def test_corrupted_file_is_refused_by_a_stopped_server(tmp_path: Path) -> None:
    path = tmp_path / "data.cdb"
    write_atomic(path, encode_snapshot({"keep": {"k": 1}}))
    db = cyberdb.Server()
    db.load_db(str(path))
    bad = tmp_path / "bad.cdb"
    bad.write_bytes(_corruptions(encode_snapshot({"x": [1]}))["flipped byte"])
    with pytest.raises(PersistenceError, match="checksum"):
        db.load_db(str(bad))
    out = tmp_path / "out.cdb"
    db.save_db(str(out))
    assert read_snapshot(out) == {"keep": {"k": 1}}


@pytest.mark.parametrize("when", ["before start", "after start"])
def test_set_backup_writes_periodically(in_process: Callable[..., cyberdb.Server], tmp_path: Path,
                                        when: str) -> None:
    path = tmp_path / "backup.cdb"
    db = cyberdb.Server()
    if when == "before start":
        db.set_backup(str(path), cycle=0.2)
    in_process(db)
    if when == "after start":
        db.set_backup(str(path), cycle=0.2)
    with proxy_of(db) as proxy:
        table = proxy.create_cyberdict("t", {"n": 0})
        wait_for(lambda: snapshot_or_none(path) == {"t": {"n": 0}}, "the first backup")
        table["n"] = 1  # a later cycle must pick up the change: the backup is periodic, not one-shot
        wait_for(lambda: snapshot_or_none(path) == {"t": {"n": 1}}, "a later backup")


def test_a_failed_backup_is_logged_keeps_the_previous_file_and_is_retried(
        in_process: Callable[..., cyberdb.Server], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # RLIMIT_FSIZE (inherited by the child that writes the backup) makes the write fail with EFBIG
    path = tmp_path / "backup.cdb"
    db = in_process()
    with proxy_of(db) as proxy:
        table = proxy.create_cyberdict("t", {"n": "small"})
        db.set_backup(str(path), cycle=0.1)
        wait_for(lambda: snapshot_or_none(path) == {"t": {"n": "small"}}, "the first backup")
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        caplog.set_level(logging.ERROR, logger="cyberdb")
        try:
            resource.setrlimit(resource.RLIMIT_FSIZE, (path.stat().st_size + 1000, hard))
            table["n"] = "large" * 10_000
            wait_for(lambda: "backup to" in caplog.text, "a failed backup to be logged")
            assert "failed (the previous file is kept; retried next cycle)" in caplog.text
            assert read_snapshot(path) == {"t": {"n": "small"}}
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        wait_for(lambda: snapshot_or_none(path) == {"t": {"n": "large" * 10_000}}, "the next cycle's backup")
    assert [p for p in os.listdir(tmp_path) if p.endswith(".tmp")] == []


def test_stop_writes_a_final_backup(tmp_path: Path) -> None:
    path = tmp_path / "backup.cdb"
    db = cyberdb.Server()
    db.set_backup(str(path), cycle=3600)  # no timer fires during the test: only stop() can write the file
    db.start(port=0, password=PASSWORD)
    try:
        with proxy_of(db) as proxy:
            proxy.create_cyberlist("l", [1])
            table = proxy.get_cyberlist("l")
            table.append(("written just before stop", Decimal("9.99"), dt.date(2030, 1, 1)))
        assert not path.exists()
    finally:
        db.stop()
    saved = read_snapshot(path)
    assert canon(saved) == canon({"l": [1, ("written just before stop", Decimal("9.99"), dt.date(2030, 1, 1))]})
    assert os.listdir(tmp_path) == ["backup.cdb"]


def test_set_backup_rejects_a_non_positive_cycle() -> None:
    db = cyberdb.Server()
    for cycle in (0, -1):
        with pytest.raises(ValueError):
            db.set_backup("x.cdb", cycle=cycle)


def test_write_atomic_is_what_the_server_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # save_db must go through the atomic writer (temp file + fsync + rename), not open(path, "wb")
    path = tmp_path / "data.cdb"
    path.write_bytes(b"old content")

    def broken_replace(*args: Any) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(PersistenceError):
        cyberdb.Server().save_db(str(path))
    monkeypatch.undo()
    assert path.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["data.cdb"]
