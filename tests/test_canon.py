"""The canonical equality encoding: golden bytes, ``canon(a) == canon(b)`` iff ``a == b``, list element forms."""

from __future__ import annotations

import datetime as dt
import enum
import itertools
import math
import uuid
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyberdb.canon import PAIR, canon, canon_parts, element, element_canon, element_value, self_canonical
from cyberdb.codec import decode_value, encode_value
from cyberdb.errors import ProtocolError

D = Decimal


def tz(**delta: int) -> dt.timezone:
    return dt.timezone(dt.timedelta(**delta))


# Canon bytes are field names in users' Redis databases: these vectors freeze the format.  Never edit one; a
# change of format needs a migration.
GOLDEN: list[tuple[str, Any, str]] = [
    ("none", None, "c0"),
    ("str", "a", "a161"),
    ("bytes", b"a", "c40161"),
    ("bytearray", bytearray(b"a"), "c40161"),
    ("int", 1, "01"),
    ("int_neg", -1, "ff"),
    ("int_2_64", 2**64, "c70904010000000000000000"),
    ("int_2_53_plus_1", 2**53 + 1, "cf0020000000000001"),
    ("true", True, "01"),
    ("false", False, "00"),
    ("float_one", 1.0, "01"),
    ("float_neg_zero", -0.0, "00"),
    ("float_half", 0.5, "cb3fe0000000000000"),
    ("float_tenth", 0.1, "cb3fb999999999999a"),
    ("float_2_64", float(2**64), "c70904010000000000000000"),
    ("float_inf", float("inf"), "cb7ff0000000000000"),
    ("float_neg_inf", float("-inf"), "cbfff0000000000000"),
    ("dec_one", D("1.000"), "01"),
    ("dec_neg_zero", D("-0"), "00"),
    ("dec_zero_exp", D("0E-5"), "00"),
    ("dec_2_64", D(2**64), "c70904010000000000000000"),
    ("dec_half", D("0.50"), "cb3fe0000000000000"),
    ("dec_tenth", D("0.10"), "c70309302e31"),
    ("dec_small", D("-1.2300E-40"), "c709092d312e3233452d3430"),
    ("dec_1e3", D("1E+3"), "cd03e8"),
    ("dec_inf", D("Infinity"), "cb7ff0000000000000"),
    ("dec_neg_inf", D("-Infinity"), "cbfff0000000000000"),
    ("dec_huge", D("100E+9998"), "d70931452b3130303030"),
    ("dec_long", D("1.0000000000000000000000000000010"),
     "c72009312e303030303030303030303030303030303030303030303030303030303031"),
    ("complex_real", 1 + 0j, "01"),
    ("complex_neg_zero_imag", complex(2.5, -0.0), "cb4004000000000000"),
    ("complex", complex(1, 2), "d80b3ff00000000000004000000000000000"),
    ("complex_neg_zero_real", complex(-0.0, 1), "d80b00000000000000003ff0000000000000"),
    ("date", dt.date(2024, 2, 29), "c70a06323032342d30322d3239"),
    ("datetime_naive", dt.datetime(2024, 2, 29, 12, 30, 0, 5),
     "c71a05323032342d30322d32395431323a33303a30302e303030303035"),
    ("datetime_utc", dt.datetime(2024, 2, 29, 12, 30, tzinfo=dt.timezone.utc),
     "c71505323032342d30322d32395431323a33303a30304030"),
    ("datetime_plus_2", dt.datetime(2024, 2, 29, 14, 30, tzinfo=tz(hours=2)),
     "c71505323032342d30322d32395431323a33303a30304030"),
    ("datetime_micro_offset", dt.datetime(2024, 2, 29, 12, 30, tzinfo=tz(microseconds=-1)),
     "c71c05323032342d30322d32395431323a33303a30302e3030303030314030"),
    ("datetime_below_min", dt.datetime(1, 1, 1, 1, tzinfo=tz(hours=5)),
     "c71f05303030312d30312d30315430303a30303a3030403134343030303030303030"),
    ("datetime_above_max", dt.datetime(9999, 12, 31, 23, tzinfo=tz(hours=-5)),
     "c72705393939392d31322d33315432333a35393a35392e393939393939402d3134343030303030303031"),
    ("time_naive", dt.time(12, 30), "d70731323a33303a3030"),
    ("time_plus_1", dt.time(12, 30, tzinfo=tz(hours=1)), "c70a0731313a33303a30304030"),
    ("time_before_midnight", dt.time(0, 30, tzinfo=tz(hours=1)), "c7130730303a30303a30304031383030303030303030"),
    ("time_after_midnight", dt.time(23, 30, 0, 7, tzinfo=tz(hours=-1)),
     "c71b0732333a35393a35392e303030303037402d31383031303030303030"),
    ("time_micro_offset", dt.time(0, 0, 1, tzinfo=tz(microseconds=-1)), "c70a0730303a30303a30324030"),
    ("time_min_offset", dt.time(23, 59, 59, tzinfo=tz(seconds=-86399, microseconds=-1)),
     "c7150732333a35393a3539402d3836333939393939393939"),
    ("timedelta", dt.timedelta(days=-1, seconds=5), "c71808ffffffffffffffff00000000000000050000000000000000"),
    ("uuid", uuid.UUID(int=1), "d80a00000000000000000000000000000001"),
    ("tuple", (1, "a"), "93c7000101a161"),
    ("tuple_float", (1.0, "a"), "93c7000101a161"),
    ("tuple_nested", ((True,), [D("2.0")]), "93c7000192c70001019102"),
    ("list", [1, 2], "920102"),
    ("list_mixed", [1.0, (2,)], "920192c7000102"),
    ("empty_tuple", (), "91c70001"),
    ("empty_list", [], "90"),
    ("frozenset", frozenset({1, 2}), "93c700030102"),
    ("set", {2.0, True}, "93c700030102"),
    ("empty_set", set(), "91c70003"),
    ("set_mixed", {"b", "a", 3}, "94c7000303a161a162"),
    ("dict", {1: "a"}, "8101a161"),
    ("dict_keys", {"b": 1.0, True: None, "a": frozenset({0.5})}, "8301c0a16192c70003cb3fe0000000000000a16201"),
]

# The stored list element: plain codec bytes, or 0xC1 | u32 len | canon | codec
GOLDEN_ELEMENTS: list[tuple[Any, str]] = [
    (1, "01"),
    ("a", "a161"),
    (1.0, "c10000000101cb3ff0000000000000"),
    ((1.0, "a"), "c10000000793c7000101a16193c70001cb3ff0000000000000a161"),
    (D("0.10"), "c100000006c70309302e31d609302e3130"),
    ({True: 2}, "c10000000381010281c302"),
]


@pytest.mark.parametrize(("value", "expected"), [(v, h) for _, v, h in GOLDEN], ids=[n for n, _, _ in GOLDEN])
def test_golden_canon(value: Any, expected: str) -> None:
    assert canon(value).hex() == expected
    assert canon_parts(value)[0].hex() == expected
    assert decode_value(bytes.fromhex(expected)) == value


@pytest.mark.parametrize(("value", "expected"), GOLDEN_ELEMENTS)
def test_golden_element(value: Any, expected: str) -> None:
    assert element(value).hex() == expected
    assert element_value(bytes.fromhex(expected)) == value
    assert element_canon(bytes.fromhex(expected)) == canon(value)


def pad(x: Decimal, zeros: int) -> Decimal:
    """The same finite Decimal with ``zeros`` more trailing zeros (exact: no context rounding)."""
    sign, digits, exponent = x.as_tuple()
    assert isinstance(exponent, int)
    return D((sign, (*digits, *(0,) * zeros), exponent - zeros))


def has_nan(x: Any) -> bool:
    t = type(x)
    if t is float:
        return math.isnan(x)
    if t is complex:
        return math.isnan(x.real) or math.isnan(x.imag)
    if t is Decimal:
        return bool(x.is_nan())
    if t is dict:
        return any(has_nan(k) or has_nan(v) for k, v in x.items())
    if t in (list, tuple, set, frozenset):
        return any(map(has_nan, x))
    return False


NAN = float("nan")
INSTANT = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.timezone.utc)
POOL: list[Any] = [
    0, -0.0, 0.0, False, D("-0"), D("0E+3"), 0j, complex(0.0, -0.0),
    1, 1.0, True, D("1.000"), D(1), 1 + 0j, complex(1, -0.0),
    -1, -1.0, D("-1"), 2, 2.0, 3,
    2**64, float(2**64), D(2**64), D("18446744073709551616.000"), 2**64 + 1,
    2**53, 2**53 + 1, float(2**53), float(2**53 + 1), D(2**53 + 1), 2**63 - 1, -(2**63),
    0.5, D("0.5"), D("0.50"), complex(0.5, 0), 0.1, D("0.1"), D(0.1), D("0.10"), 0.25, D("2.5E-1"),
    D("1E-400"), D("1.0E-400"), D("1E+400"), D("10E+399"), 1e300, D(1e300), D("100E+9998"), D("1E+10000"),
    NAN, NAN, float("nan"), D("NaN"), D("sNaN"), complex(NAN, 1), complex(1, NAN), complex(NAN, 0),
    float("inf"), D("Infinity"), complex(float("inf"), 0), float("-inf"), D("-Infinity"), complex(float("inf"), 1),
    complex(1, 2), complex(1.0, 2.0), complex(-0.0, 2), complex(0.0, 2), complex(1, -2),
    "a", "", "1", b"a", b"", bytearray(b"a"), None,
    (1, "a"), (1.0, "a"), (True, "a"), (D("1.0"), "a"), ("a", 1), (1,), [1], (1, 2), [1, 2], [1.0, 2.0], (),
    [], ((1,),), ((1.0,),), ([1],), (NAN,), [NAN], (1, (2, (3.0,))), (1, (2, (3,))),
    frozenset({1, 2}), {1, 2}, {True, 2.0}, frozenset({D("1"), complex(2, 0)}), frozenset({1}), frozenset(),
    set(), frozenset({frozenset({1}), (1.0,)}), frozenset({frozenset({True}), (1,)}), frozenset({NAN}),
    {1: "a"}, {1.0: "a"}, {True: "a"}, {1: "b"}, {1: "a", 2: "b"}, {2.0: "b", True: "a"}, {}, {"a": [1]},
    {"a": [1.0]}, {"a": (1,)}, {(1, 2): {0.5: None}}, {(1.0, 2): {D("0.50"): None}}, {frozenset(): 1},
    {"x": NAN},
    INSTANT, INSTANT.astimezone(tz(hours=2)), INSTANT.astimezone(tz(hours=-9, minutes=-30)),
    INSTANT.astimezone(tz(microseconds=1)), INSTANT.replace(tzinfo=None), INSTANT.replace(tzinfo=tz(hours=2)),
    INSTANT.date(), dt.datetime(2024, 5, 1), dt.date(2024, 5, 1),
    dt.datetime(1, 1, 1, 1, tzinfo=tz(hours=5)), dt.datetime(1, 1, 1, 2, tzinfo=tz(hours=6)),
    dt.datetime(1, 1, 1, tzinfo=tz(hours=4)), dt.datetime(9999, 12, 31, 23, tzinfo=tz(hours=-5)),
    dt.datetime(9999, 12, 31, 22, tzinfo=tz(hours=-6)),
    dt.time(12), dt.time(12, tzinfo=dt.timezone.utc), dt.time(13, tzinfo=tz(hours=1)), dt.time(11, tzinfo=tz(hours=-1)),
    dt.time(0, 30, tzinfo=tz(hours=1)), dt.time(1, 30, tzinfo=tz(hours=2)), dt.time(23, 30, tzinfo=dt.timezone.utc),
    dt.time(0, 0, 30, tzinfo=tz(seconds=30)), dt.time(0, tzinfo=dt.timezone.utc), dt.time(0),
    dt.time(23, 30, tzinfo=tz(hours=-1)), dt.time(22, 30, tzinfo=tz(hours=-2)), dt.time(0, 30, tzinfo=tz(hours=-1)),
    dt.time(0, 0, 0, 0, tzinfo=tz(microseconds=1)), dt.time(0, 0, 1, tzinfo=tz(microseconds=-1)),
    dt.time(0, 0, 2, tzinfo=dt.timezone.utc),
    dt.timedelta(0), dt.timedelta(days=1), dt.timedelta(hours=24), dt.timedelta(microseconds=-1),
    uuid.UUID(int=1), uuid.UUID(int=2),
]


def test_pool_pairs_iff_equal() -> None:
    canons = [canon(x) for x in POOL]
    for (i, a, ca), (j, b, cb) in itertools.product(zip(range(len(POOL)), POOL, canons, strict=True), repeat=2):
        if has_nan(a) or has_nan(b):
            # documented: a NaN equals nothing, not even the same object (each call draws a fresh canon)
            assert ca != cb or i == j, (a, b)
        else:
            assert (ca == cb) == (a == b), (a, b)


def test_pool_representatives() -> None:
    for x in POOL:
        c, enc = canon_parts(x)
        if has_nan(x):
            assert c[0] == PAIR and len(c) == 17 and enc == encode_value(x)
            assert not self_canonical(x)
            continue
        assert c == canon(x)
        rep = decode_value(c)
        assert rep == x, x
        assert canon(rep) == c  # the representative is in its own class
        assert self_canonical(x) == (c == encode_value(x)) == (enc is None), x
        if type(rep) not in (set, frozenset, dict):  # a frozenset's iteration order is its hash order
            assert self_canonical(rep), rep


def test_pool_elements() -> None:
    for x in POOL:
        stored = element(x)
        back = element_value(stored)
        assert type(back) is (bytes if type(x) is bytearray else type(x))
        if has_nan(x):
            assert stored[0] == PAIR and element_canon(stored)[0] == PAIR
            assert element_canon(stored) != element_canon(element(x))
            continue
        assert back == x
        assert element_canon(stored) == canon(x)
        assert (stored == encode_value(x)) == self_canonical(x)
        if not self_canonical(x):
            n = int.from_bytes(stored[1:5], "big")
            assert stored[0] == PAIR and stored[5 : 5 + n] == canon(x) and stored[5 + n :] == encode_value(x)


def test_nan_never_equal() -> None:
    for x in (NAN, D("NaN"), D("sNaN"), complex(NAN, 0), complex(0, NAN), (1, NAN), [[NAN]], {1: {2: NAN}},
              frozenset({(NAN,)})):
        assert canon(x) != canon(x)
        assert canon(x)[0] == PAIR and len(canon(x)) == 17
        assert not self_canonical(x)
    with pytest.raises(Exception, match="InvalidOperation"):  # Python refuses; we just say "unequal"
        _ = D("sNaN") == 1


def test_element_malformed() -> None:
    for bad in (b"", b"\xc1", b"\xc1\x00\x00\x00", b"\xc1\x00\x00\x00\x02\x01", b"\xc1\x00\x00\x00\x00\x01",
                b"\xc1\xff\xff\xff\xff\x01\x02"):
        with pytest.raises(ProtocolError):
            element_canon(bad)
        with pytest.raises(ProtocolError):
            element_value(bad)
    with pytest.raises(ProtocolError):
        element_value(b"\xc1\x00\x00\x00\x01\x01\xc1")  # the codec part is decoded as untrusted bytes


class Color(enum.IntEnum):
    RED = 1


def test_unsupported_types() -> None:
    for bad in (Color.RED, object(), (1, object()), [1.0, Color.RED], {1: object()}, {object()}, 2**32767, (2**32767,)):
        with pytest.raises(TypeError):
            canon(bad)
        with pytest.raises(TypeError):
            element(bad)


def test_decimal_int_boundary() -> None:
    # ints up to 32767 bits are storable; an equal Decimal gives the int's canon, a larger one stays a Decimal
    top = 2**32767 - 1
    padded = pad(D(top), 3)  # Decimal arithmetic would round to the context's 28 digits: build it exactly
    assert padded == top and canon(D(top)) == canon(padded) == canon(top) == encode_value(top)
    assert canon(D(-top)) == encode_value(-top)
    big = D(top + 1)
    assert decode_value(canon(big)) == big and canon(big) == canon(pad(big, 1)) != canon(D(top))
    assert canon(D(2**32767 + 2)) != canon(big)


def test_decimal_beyond_context_precision() -> None:
    assert canon(D("1.0000000000000000000000000000010")) == canon(D("1.000000000000000000000000000001"))
    assert canon(D("1.000000000000000000000000000001")) != canon(D(1))
    assert canon(D("1.00000000000000000000000000000000000000")) == canon(1)


def test_depth() -> None:
    deep_float: Any = 1.0
    deep_int: Any = 1
    for _ in range(498):
        deep_float, deep_int = (deep_float,), (deep_int,)
    assert canon(deep_float) == canon(deep_int) == encode_value(deep_int)
    too_deep: Any = 1.0
    for _ in range(5000):
        too_deep = [too_deep]
    with pytest.raises(TypeError):
        canon(too_deep)


# --- property tests -----------------------------------------------------------------------------------------------

_offsets = st.one_of(st.integers(-14, 14).map(lambda h: tz(hours=h)), st.integers(-86399, 86399).map(lambda s: tz(
    seconds=s)), st.integers(-86_399_999_999, 86_399_999_999).map(lambda us: tz(microseconds=us)))
_second_offsets = st.one_of(st.integers(-14, 14).map(lambda h: tz(hours=h)),
                            st.integers(-86399, 86399).map(lambda s: tz(seconds=s)))
_ints = st.one_of(st.integers(-3, 3), st.integers(),
                  st.sampled_from([2**53, 2**53 + 1, 2**63 - 1, 2**63, 2**64, -(2**63) - 1, 2**100]))
_floats = st.one_of(st.floats(allow_nan=False), st.integers(-(2**70), 2**70).map(float),
                    st.sampled_from([0.5, -0.0, 0.1, 2.5, float("inf")]))
_decimals = st.one_of(
    st.builds(lambda s, d, e: D((s, tuple(d), e)), st.integers(0, 1), st.lists(st.integers(0, 9), min_size=1,
                                                                               max_size=30), st.integers(-40, 40)),
    st.decimals(allow_nan=False), _floats.map(D))
_complexes = st.one_of(st.complex_numbers(allow_nan=False),
                       st.builds(complex, _floats, st.sampled_from([0.0, -0.0, 1.0, 0.5])))
_datetimes = st.one_of(st.datetimes(), st.datetimes(timezones=_offsets),
                       st.datetimes(max_value=dt.datetime(1, 1, 2), timezones=_offsets),
                       st.datetimes(min_value=dt.datetime(9999, 12, 30), timezones=_offsets))
_hashable_leaves = st.one_of(
    st.none(), st.booleans(), _ints, _floats, _decimals, _complexes, st.text(max_size=3), st.binary(max_size=3),
    st.dates(), _datetimes, st.times(), st.times(timezones=_second_offsets), st.timedeltas(),
    st.integers(0, 3).map(lambda i: uuid.UUID(int=i)))
_hashables = st.recursive(_hashable_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=3).map(tuple), st.frozensets(inner, max_size=3)), max_leaves=6)
_values = st.recursive(_hashables, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple), st.sets(_hashables, max_size=3),
    st.dictionaries(_hashables, inner, max_size=3)), max_leaves=8)


def _twin(draw: Any, x: Any, hashable: bool = False) -> Any:
    """An equal value spelled with other types, found without ``canon``: exercises every rule independently."""
    t = type(x)
    options: list[Any] = [x]
    if t is bool or t is int:
        options += [D(x), _padded(D(x), draw)]
        if x in (0, 1):
            options.append(bool(x))
        if abs(x) < 2**1000 and float(x) == x:
            options += [float(x), complex(x, -0.0)]
    elif t is float:
        options += [D(x), complex(x, draw(st.sampled_from([0.0, -0.0])))]
        if math.isfinite(x):
            options.append(_padded(D(x), draw))
        if x.is_integer():
            options.append(int(x))
        if x == 0:
            options.append(-x)
    elif t is Decimal:
        if x.is_finite():
            options.append(_padded(x, draw))
            if D(float(x)) == x:
                options += [float(x), complex(float(x), 0)]
            if x.adjusted() < 300 and x == int(x):
                options.append(int(x))
        else:
            options.append(float(x))
    elif t is complex:
        if x.imag == 0:
            return _twin(draw, x.real)
        if x.real == 0:
            options.append(complex(-x.real, x.imag))
    elif t is dt.datetime and x.utcoffset() is not None:
        try:
            options.append(x.astimezone(draw(_offsets)))
        except OverflowError:
            pass
    elif t is dt.time and x.utcoffset() is not None:
        offset = x.utcoffset()
        assert offset is not None
        new = draw(_second_offsets)
        new_offset = new.utcoffset(None)
        key = x.hour * 3600 + x.minute * 60 + x.second - (offset.days * 86400 + offset.seconds)
        wall = key + new_offset.days * 86400 + new_offset.seconds
        if 0 <= wall < 86400:
            options.append(dt.time(wall // 3600, wall // 60 % 60, wall % 60, x.microsecond, tzinfo=new))
    elif t is tuple or t is list:
        return t(_twin(draw, i, hashable) for i in x)
    elif t is set or t is frozenset:
        kind = frozenset if hashable else draw(st.sampled_from([set, frozenset]))
        return kind(_twin(draw, i, True) for i in x)
    elif t is dict:
        items = [(_twin(draw, k, True), _twin(draw, v)) for k, v in x.items()]
        return dict(draw(st.permutations(items)))
    return draw(st.sampled_from(options))


def _padded(x: Decimal, draw: Any) -> Decimal:
    return pad(x, draw(st.integers(0, 5)))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_property_iff(data: st.DataObject) -> None:
    values = data.draw(st.lists(_values, min_size=1, max_size=4))
    twins = [_twin(data.draw, v) for v in values]
    for v, w in zip(values, twins, strict=True):
        assert v == w, (v, w)  # the twin generator itself follows Python
    pool = values + twins
    canons = [canon(x) for x in pool]
    for (a, ca), (b, cb) in itertools.product(zip(pool, canons, strict=True), repeat=2):
        assert (ca == cb) == (a == b), (a, b)
    for x, c in zip(pool, canons, strict=True):
        assert decode_value(c) == x
        assert self_canonical(x) == (c == encode_value(x))
        stored = element(x)
        assert element_canon(stored) == c
        back = element_value(stored)
        assert back == x and canon(back) == c


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.times(max_value=dt.time(0, 0, 3), timezones=st.one_of(st.none(), _offsets)),
                          st.times(min_value=dt.time(23, 59, 57), timezones=_offsets),
                          st.times(timezones=st.sampled_from([tz(microseconds=u) for u in (-1, 0, 1, 999_999)]))),
                min_size=2, max_size=6))
def test_property_times_follow_cpython(times: list[dt.time]) -> None:
    # any offset, microseconds too: equality follows CPython's == (whose hash disagrees for such offsets)
    for a, b in itertools.product(times, repeat=2):
        assert (canon(a) == canon(b)) == (a == b), (a, b)
    for a in times:
        assert decode_value(canon(a)) == a


@settings(max_examples=200, deadline=None)
@given(st.floats(allow_nan=False), st.integers(0, 3))
def test_property_decimal_vs_float(f: float, zeros: int) -> None:
    exact = D(f)
    assert canon(exact) == canon(f)
    text = D(repr(f))
    assert (canon(text) == canon(f)) == (text == f)
    if math.isfinite(f):
        assert canon(pad(text, zeros)) == canon(text)
