"""Tests of cyberdb.codec: every supported type round-trips exactly; everything else is refused safely.

Pure tests (no server): values are compared with ``canon()``, which spells out type and value recursively, so
``0`` vs ``False``, ``()`` vs ``[]``, ``-0.0`` vs ``0.0`` and ``nan`` all count.
"""

from __future__ import annotations

import collections
import datetime as dt
import enum
import math
import pickle
import subprocess
import sys
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

import msgpack
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from values import canon

from cyberdb import ProtocolError
from cyberdb.codec import decode_value, encode_value

SUPPORTED_TYPES = (
    type(None), bool, int, float, str, bytes, list, tuple, dict, set, frozenset,
    dt.datetime, dt.date, dt.time, dt.timedelta, Decimal, uuid.UUID, complex,
)


def roundtrip(value: Any) -> Any:
    data = encode_value(value)
    assert type(data) is bytes
    return decode_value(data)


def assert_roundtrips(value: Any) -> None:
    assert canon(roundtrip(value)) == canon(value)


def only_supported(value: Any) -> bool:
    """True if ``value`` and everything inside it is of a supported type (exactly, no subclasses)."""
    t = type(value)
    if t not in SUPPORTED_TYPES:
        return False
    if t in (list, tuple, set, frozenset):
        return all(only_supported(v) for v in value)
    if t is dict:
        return all(only_supported(k) and only_supported(v) for k, v in value.items())
    return True


class _FixedZone(dt.tzinfo):
    """A tzinfo that is not datetime.timezone (like a zoneinfo zone), without needing tzdata."""

    def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(hours=-3, minutes=-30)

    def dst(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)

    def tzname(self, d: dt.datetime | None) -> str:
        return "X"


UTC_PLUS = dt.timezone(dt.timedelta(hours=5, minutes=30))
ODD_ZONE = dt.timezone(-dt.timedelta(hours=23, minutes=59, seconds=59, microseconds=999999))

SCALARS = [
    None, True, False,
    0, 1, -1, 2**63 - 1, -(2**63), 2**63, 2**64 - 1, 2**64, -(2**63) - 1, 2**1000 + 12345, -(2**1000),
    0.0, -0.0, 1.5, -2.25e-308, 5e-324, 1.7976931348623157e308, math.inf, -math.inf, math.nan,
    "", "hello", "ünïcödé \u2603 \U0001f600", "\x00nul", "x" * 100_000,
    b"", b"\x00\xff", bytes(range(256)) * 100,
    dt.datetime(2024, 2, 29, 23, 59, 59, 999999),
    dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.timezone.utc),
    dt.datetime(1, 1, 1, tzinfo=UTC_PLUS),
    dt.datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=ODD_ZONE),
    dt.datetime.min, dt.datetime.max,
    dt.date(2000, 1, 1), dt.date.min, dt.date.max,
    dt.time(0, 0), dt.time(23, 59, 59, 999999), dt.time(12, 30, tzinfo=UTC_PLUS), dt.time.max,
    dt.timedelta(0), dt.timedelta(days=-1, microseconds=1), dt.timedelta.min, dt.timedelta.max,
    Decimal("0"), Decimal("-0"), Decimal("3.14159265358979323846264338327950288"), Decimal("1E+999999"),
    Decimal("NaN"), Decimal("-NaN"), Decimal("sNaN"), Decimal("Infinity"), Decimal("-Infinity"),
    uuid.UUID(int=0), uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.uuid4(),
    0j, complex(1.5, -2.5), complex(-0.0, -0.0), complex(math.nan, math.inf),
]

CONTAINERS = [
    [], (), {}, set(), frozenset(),
    ((),), (((),),), ([],), [()], (1,), ((1, 2), (3, (4, (5,)))),
    [None, True, 0, 0.0, "", b"", (), [], {}, set(), frozenset()],
    {(1, 2): "tuple key", 3: "int key", frozenset({1, 2}): "frozenset key", "s": 1, b"b": 2, None: 3,
     True: 4, 2.5: 5, (): 6, frozenset(): 7, ((1,), frozenset({(2,)})): 8, Decimal("1.5"): 9,
     uuid.UUID(int=7): 10, dt.date(2020, 1, 1): 11, 2**70: 12, 1j: 13},
    {1, "a", (1, 2), frozenset({3}), None, b"x", 2**80},
    frozenset({frozenset({frozenset()}), (1, (2,))}),
    {"nested": [{"a": (1, [2, {3: {4, 5}}])}, [[[[[]]]]]], "tuple in list": [(1,), ()]},
]


@pytest.mark.parametrize("value", SCALARS + CONTAINERS, ids=repr)
def test_roundtrip_keeps_type_and_value(value: Any) -> None:
    assert_roundtrips(value)


@pytest.mark.parametrize("value", SCALARS + CONTAINERS, ids=repr)
def test_roundtrip_nested_in_every_container(value: Any) -> None:
    try:
        hash(value)
        key = value
    except TypeError:  # lists, dicts, sets, tuples holding them, Decimal("sNaN")
        key = "unhashable"
    for wrapped in ([value], (value,), {"k": value}, [[(value, [value])]], {(1, key): value}, {key: value}):
        assert_roundtrips(wrapped)
    if key != "unhashable":
        assert_roundtrips({key})
        assert_roundtrips(frozenset({key}))


@pytest.mark.parametrize(("value", "expected_type"), [
    (0, int), (1, int), (False, bool), (True, bool), (0.0, float), (-0.0, float), ("", str), (b"", bytes),
    ((), tuple), ([], list), ({}, dict), (set(), set), (frozenset(), frozenset), (None, type(None)),
    (Decimal(0), Decimal), (0j, complex), (dt.timedelta(0), dt.timedelta), (2**64, int), (-(2**63) - 1, int),
])
def test_falsy_and_boundary_values_keep_their_type(value: Any, expected_type: type) -> None:
    result = roundtrip(value)
    assert type(result) is expected_type
    assert canon(result) == canon(value)


def test_bool_and_int_are_not_confused_inside_containers() -> None:
    result = roundtrip([0, False, 1, True, (0, False), {0: False}])
    assert [type(v) for v in result[:4]] == [int, bool, int, bool]
    assert [type(v) for v in result[4]] == [int, bool]
    ((k, v),) = result[5].items()
    assert type(k) is int and type(v) is bool


def test_special_floats_and_decimals_survive() -> None:
    f_nan, f_negzero, d_nan, d_snan, c = roundtrip([math.nan, -0.0, Decimal("NaN"), Decimal("sNaN"),
                                                   complex(-0.0, math.nan)])
    assert math.isnan(f_nan)
    assert f_negzero == 0.0 and math.copysign(1.0, f_negzero) == -1.0
    assert d_nan.is_qnan() and d_snan.is_snan()
    assert math.copysign(1.0, c.real) == -1.0 and math.isnan(c.imag)


def test_aware_datetime_keeps_instant_and_offset() -> None:
    value = dt.datetime(2021, 3, 28, 1, 30, tzinfo=UTC_PLUS)
    result = roundtrip(value)
    assert result == value
    assert result.utcoffset() == dt.timedelta(hours=5, minutes=30)
    naive = roundtrip(dt.datetime(2021, 3, 28, 1, 30))
    assert naive.tzinfo is None


def test_foreign_tzinfo_comes_back_as_its_fixed_offset() -> None:
    value = dt.datetime(2022, 7, 1, 8, 0, tzinfo=_FixedZone())
    result = roundtrip(value)
    assert type(result) is dt.datetime
    assert result == value
    assert result.utcoffset() == dt.timedelta(hours=-3, minutes=-30)


def test_big_ints_at_every_byte_boundary() -> None:
    values = []
    for bits in range(60, 140):
        values += [2**bits, 2**bits - 1, -(2**bits), -(2**bits) - 1]
    result = roundtrip(values)
    assert result == values
    assert all(type(v) is int for v in result)


def test_tuple_and_list_stay_distinct_at_every_depth() -> None:
    value: Any = ()
    for i in range(30):
        value = [value] if i % 2 else (value,)
    assert_roundtrips(value)


# ---- hypothesis: arbitrary nested values -------------------------------------------------------------------

_offsets = st.timedeltas(min_value=-dt.timedelta(hours=23, minutes=59), max_value=dt.timedelta(hours=23, minutes=59))
_zones = st.none() | st.builds(dt.timezone, _offsets)

_hashable_leaves = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**300), max_value=2**300),
    st.floats(), st.text(), st.binary(),
    st.datetimes(timezones=_zones), st.dates(), st.times(timezones=_zones), st.timedeltas(),
    st.decimals(allow_nan=False), st.uuids(), st.complex_numbers(),
)
_leaves = _hashable_leaves | st.decimals(allow_nan=True, allow_infinity=True)  # sNaN cannot be hashed

hashables = st.recursive(
    _hashable_leaves,
    lambda inner: st.lists(inner, max_size=4).map(tuple) | st.frozensets(inner, max_size=4),
    max_leaves=8,
)

values = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.lists(inner, max_size=5).map(tuple),
        st.dictionaries(hashables, inner, max_size=5),
        st.sets(hashables, max_size=5),
        st.frozensets(hashables, max_size=5),
    ),
    max_leaves=25,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(values)
def test_hypothesis_values_roundtrip(value: Any) -> None:
    assert_roundtrips(value)


@FUZZ
@given(values)
def test_decoded_values_encode_again(value: Any) -> None:
    # what the server decodes it must be able to store, reply with and persist
    assert canon(roundtrip(roundtrip(value))) == canon(value)


# ---- unsupported types ---------------------------------------------------------------------------------------


class _Plain:
    pass


class _Color(enum.IntEnum):
    RED = 1


class _Point(NamedTuple):
    x: int
    y: int


class _MyStr(str):
    pass


class _MyDict(dict):  # type: ignore[type-arg]
    pass


def _function() -> None:
    pass


UNSUPPORTED = [
    object(), _Plain(), _Color.RED, collections.OrderedDict(a=1), _function, lambda: None, slice(1, 2), len,
    _Point(1, 2), collections.defaultdict(list), _MyStr("s"), _MyDict(), int, Ellipsis, NotImplemented,
    iter([]), range(3),
]
# msgpack.Timestamp and msgpack.ExtType are packed by msgpack itself before our hook sees them, so the encoder
# cannot refuse them (documented in codec.py); what matters is that the decoder never lets them back in:
# see test_msgpack_timestamp_decodes_to_a_supported_datetime and the "ext type" cases of MALICIOUS.


@pytest.mark.parametrize("value", UNSUPPORTED, ids=lambda v: type(v).__name__)
def test_unsupported_types_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError):
        encode_value(value)


@pytest.mark.parametrize("value", UNSUPPORTED[:8], ids=lambda v: type(v).__name__)
def test_unsupported_types_raise_type_error_when_nested(value: Any) -> None:
    wrappers: list[Any] = [[1, value], (value,), {"k": [value]}, [{"k": (value,)}]]
    try:
        hash(value)
    except TypeError:
        pass
    else:
        wrappers += [{(1, value): 1}, {value}, frozenset({("x", value)})]
    for wrapped in wrappers:
        with pytest.raises(TypeError):
            encode_value(wrapped)


@pytest.mark.parametrize("kind", [list, tuple, frozenset])
def test_too_deep_nesting_raises_type_error(kind: type) -> None:
    value: Any = kind()
    for _ in range(5000):
        value = kind([value])
    with pytest.raises(TypeError):
        encode_value(value)


# ---- untrusted input: only ProtocolError ---------------------------------------------------------------------


def decode_or_protocol_error(data: bytes) -> None:
    """decode_value may return a value made of supported types, or raise ProtocolError: nothing else."""
    try:
        value = decode_value(data)
    except ProtocolError:
        return
    assert only_supported(value), repr(value)


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=200))
@example(b"")
@example(b"\xc1")  # the one byte msgpack never uses
@example(b"\xdd\xff\xff\xff\xff")  # an array announcing 4 G items
@example(b"\xdf\xff\xff\xff\xff")  # a map announcing 4 G entries
@example(b"\xc6\xff\xff\xff\xff")  # a bin announcing 4 GiB
def test_random_bytes_raise_only_protocol_error(data: bytes) -> None:
    decode_or_protocol_error(data)


@settings(max_examples=1000, deadline=None)
@given(st.integers(min_value=0, max_value=127), st.binary(max_size=64))
def test_random_extension_payloads_raise_only_protocol_error(code: int, payload: bytes) -> None:
    decode_or_protocol_error(msgpack.packb(msgpack.ExtType(code, payload)))


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_truncated_encoding_raises_protocol_error(value: Any, data: st.DataObject) -> None:
    encoded = encode_value(value)
    cut = data.draw(st.integers(min_value=0, max_value=len(encoded) - 1))
    with pytest.raises(ProtocolError):
        decode_value(encoded[:cut])


@settings(max_examples=300, deadline=None)
@given(values, st.binary(min_size=1, max_size=8))
def test_trailing_bytes_raise_protocol_error(value: Any, extra: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_value(encode_value(value) + extra)


def _raw_ext(code: int, payload: bytes) -> bytes:
    """An ext8 object with any type code, including the negative ones msgpack reserves."""
    return b"\xc7" + bytes([len(payload), code & 0xFF]) + payload


MALICIOUS = {
    "map with array key": b"\x81\x92\x01\x02\xa1v",
    "map with map key": b"\x81\x81\x01\x02\x01",
    "set of lists": msgpack.packb(msgpack.ExtType(2, msgpack.packb([[1], [2]]))),
    "frozenset containing a dict": msgpack.packb(msgpack.ExtType(3, msgpack.packb([{1: 2}]))),
    "dict key tuple holding a list": b"\x81" + msgpack.packb(msgpack.ExtType(1, msgpack.packb([[1]]))) + b"\x01",
    "ext type 99": msgpack.packb(msgpack.ExtType(99, b"payload")),
    "ext type 0": msgpack.packb(msgpack.ExtType(0, b"\x90")),
    "ext type 12": msgpack.packb(msgpack.ExtType(12, b"\x90")),
    "ext type 127": msgpack.packb(msgpack.ExtType(127, b"")),
    "ext type -2": _raw_ext(-2, b"abc"),
    "ext type -128": _raw_ext(-128, b"abc"),
    "bad timestamp": _raw_ext(-1, b"x"),
    "truncated ext header": b"\xc7\x10",
    "truncated ext payload": b"\xc7\x10\x01\x91",
    "truncated fixext": b"\xd6\x05\x00",
    "tuple ext not an array": msgpack.packb(msgpack.ExtType(1, msgpack.packb({1: 2}))),
    "set ext with trailing data": msgpack.packb(msgpack.ExtType(2, msgpack.packb([1]) + b"\x01")),
    "tuple ext not msgpack": msgpack.packb(msgpack.ExtType(1, b"\xc1")),
    "datetime not utf-8": msgpack.packb(msgpack.ExtType(5, b"\xff\xfe")),
    "datetime not iso": msgpack.packb(msgpack.ExtType(5, b"yesterday")),
    "datetime offset of 25 h": msgpack.packb(msgpack.ExtType(5, b"2020-01-01T00:00:00+25:00")),
    "date out of range": msgpack.packb(msgpack.ExtType(6, b"10000-01-01")),
    "time not iso": msgpack.packb(msgpack.ExtType(7, b"25:61")),
    "timedelta wrong size": msgpack.packb(msgpack.ExtType(8, b"\x00" * 23)),
    "timedelta out of range": msgpack.packb(msgpack.ExtType(8, b"\x7f" + b"\xff" * 23)),
    "decimal garbage": msgpack.packb(msgpack.ExtType(9, b"1.2.3")),
    "decimal not utf-8": msgpack.packb(msgpack.ExtType(9, b"\xff")),
    "uuid wrong size": msgpack.packb(msgpack.ExtType(10, b"\x00" * 15)),
    "complex wrong size": msgpack.packb(msgpack.ExtType(11, b"\x00" * 15)),
    "str not utf-8": b"\xa2\xff\xfe",
    "array announcing more than present": b"\x93\x01",
}


@pytest.mark.parametrize("data", MALICIOUS.values(), ids=MALICIOUS.keys())
def test_malicious_input_raises_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        decode_value(data)


@pytest.mark.parametrize("ts", [msgpack.Timestamp(1, 0), msgpack.Timestamp(2**33, 5)])
def test_msgpack_timestamp_decodes_to_a_supported_datetime(ts: msgpack.Timestamp) -> None:
    value = decode_value(msgpack.packb(ts))
    assert type(value) is dt.datetime
    assert value == ts.to_datetime()


class _WritesMarker:
    """Unpickling this would call ``open(path, "w")`` and so create the marker file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_pickle_payload_is_refused_and_never_executed(tmp_path: Path, protocol: int) -> None:
    marker = tmp_path / "pwned"
    # pickle.dumps only calls __reduce__ (which returns a tuple); nothing here ever unpickles the bytes
    payload = pickle.dumps(_WritesMarker(str(marker)), protocol=protocol)
    assert b"open" in payload and str(marker).encode() in payload
    with pytest.raises(ProtocolError):
        decode_value(payload)
    for code in (1, 2, 3, 5, 9, 99):  # the same bytes smuggled inside an extension type
        with pytest.raises(ProtocolError):
            decode_value(msgpack.packb(msgpack.ExtType(code, payload)))
    assert not marker.exists()


# ---- nesting depth must never crash the process ----------------------------------------------------------------

_DEPTH_SCRIPT = r"""
import sys
from cyberdb import ProtocolError
from cyberdb.codec import decode_value
data = sys.stdin.buffer.read()
try:
    value = decode_value(data)
except ProtocolError:
    print("ProtocolError")
else:
    depth = 0
    while value:
        (value,) = value
        depth += 1
    print("depth", depth)
"""


def _nested_tuples(depth: int) -> bytes:
    """The encoding of ``depth`` nested 1-tuples around ``()``, built without recursion."""
    mark = msgpack.packb(msgpack.ExtType(1, b""))  # a tuple is an array led by this marker
    data = b"\x91" + mark
    for _ in range(depth):
        data = b"\x92" + mark + data
    return data


def _tuples(depth: int) -> tuple[Any, ...]:
    value: tuple[Any, ...] = ()
    for _ in range(depth):
        value = (value,)
    return value


def test_nested_tuple_builder_matches_the_encoder() -> None:
    assert _nested_tuples(3) == encode_value(_tuples(3))


_MIXED_DEPTH_SCRIPT = r"""
from cyberdb.codec import decode_value, encode_value
value = []
for _ in range(31):  # tuples separated by 1000 levels of lists: once enough to overflow the C stack
    inner = value
    for _ in range(1000):
        inner = [inner]
    value = (inner,)
try:
    encode_value(value)
except TypeError:
    print("TypeError")
"""


def test_deep_lists_between_tuples_are_refused_without_crashing() -> None:
    proc = subprocess.run([sys.executable, "-c", _MIXED_DEPTH_SCRIPT], capture_output=True, timeout=60)
    assert proc.returncode == 0, f"rc={proc.returncode} {proc.stderr.decode(errors='replace')[-500:]}"
    assert proc.stdout.strip() == b"TypeError"


def _nested_lists(depth: int) -> bytes:
    return b"\x91" * depth + b"\x90"


@pytest.mark.parametrize("depth", [10, 150, 200, 300, 1000, 100_000])
@pytest.mark.parametrize("build", [_nested_tuples, _nested_lists], ids=["tuples", "lists"])
def test_deep_nesting_is_decoded_or_refused_without_crashing(build: Any, depth: int) -> None:
    # run in a child: a C stack overflow would kill the test runner itself
    data = build(depth)
    proc = subprocess.run([sys.executable, "-c", _DEPTH_SCRIPT], input=data, capture_output=True, timeout=60)
    assert proc.returncode == 0, f"decoding {len(data)} bytes crashed the process: rc={proc.returncode} " \
                                 f"{proc.stderr.decode(errors='replace')[-500:]}"
    out = proc.stdout.decode().strip()
    assert out in ("ProtocolError", f"depth {depth}")


def test_every_value_encode_accepts_decodes_back() -> None:
    # the largest nesting encode_value accepts must be decodable (in a child, in case it crashes)
    script = r"""
from cyberdb.codec import decode_value, encode_value
value = ()
for depth in range(1, 2000):
    value = (value,)
    try:
        data = encode_value(value)
    except (TypeError, RecursionError):
        break
    assert encode_value(decode_value(data)) == data, depth  # (== on the tuples would hit the recursion limit)
print("ok", depth)
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert proc.returncode == 0, f"rc={proc.returncode} {proc.stderr.decode(errors='replace')[-500:]}"
    assert proc.stdout.startswith(b"ok")


@pytest.mark.parametrize("offset", [dt.timedelta(microseconds=1), -dt.timedelta(hours=23, seconds=59, microseconds=7)])
def test_offsets_that_are_not_whole_seconds_survive(offset: dt.timedelta) -> None:
    for value in (dt.datetime(2000, 1, 1, tzinfo=dt.timezone(offset)), dt.time(12, 0, tzinfo=dt.timezone(offset))):
        back = roundtrip(value)
        assert back == value or type(value) is dt.time  # aware times do not compare across offsets
        assert back.utcoffset() == value.utcoffset() and back.replace(tzinfo=None) == value.replace(tzinfo=None)


class _EncodingZone(dt.tzinfo):
    """A tzinfo whose utcoffset() itself encodes a value: encode_value re-entered from inside pack()."""

    def utcoffset(self, d: dt.datetime | None) -> dt.timedelta:
        encode_value(["from inside", list(range(50))])
        return dt.timedelta(hours=1)

    def dst(self, d: dt.datetime | None) -> dt.timedelta:
        return dt.timedelta(0)


def test_encode_value_is_reentrant() -> None:
    value = ["before", dt.datetime(2020, 1, 1, tzinfo=_EncodingZone()), "after"]
    back = decode_value(encode_value(value))
    assert back[0] == "before" and back[2] == "after"
    assert back[1].utcoffset() == dt.timedelta(hours=1)
