"""The canonical equality encoding: ``canon(a) == canon(b)`` exactly when ``a == b``.  No I/O, never pickle.

A storage that compares bytes (Redis hash fields, list elements scanned by Lua) needs, for each value, bytes that
are equal exactly when Python's ``==`` says so: ``1 == 1.0 == True == Decimal("1.000") == 1+0j``, ``{1, 2} ==
frozenset({2.0, 1})``.  ``canon(x)`` is the codec encoding (``encode_value``) of one *representative* of x's
equality class, so ``decode_value(canon(x)) == x``.  These bytes become field names in users' databases: the
rules below and the golden vectors in ``tests/test_canon.py`` are a file format, never change them.

Rules (each checked against CPython 3.11's ``==``):

- Numbers: a real value that is an integer becomes an ``int`` (``True``, ``1.0``, ``Decimal("1.000")``,
  ``1+0j``; ``-0.0`` and ``Decimal("-0")`` give ``0``).  Otherwise it becomes the ``float`` that equals it exactly
  (``Decimal("2.50")`` gives ``2.5``; ``Decimal("Infinity")`` gives ``inf``), else a ``Decimal`` without trailing
  zeros (``Decimal("0.10")`` gives ``Decimal("0.1")``, which is not ``0.1``).  An integral ``Decimal`` too large
  for the codec's ints (over 32767 bits) stays such a ``Decimal``: no storable int or float equals it.  A
  ``complex`` with ``imag != 0`` stays complex, with ``-0.0`` parts written as ``0.0``.
- An aware ``datetime`` becomes the same instant in UTC (or, when that is outside ``datetime.min``/``max``, the
  extreme wall time with the offset that keeps the instant).  A naive one stays as it is: it never equals an
  aware one, nor a ``date``.
- An aware ``time``: CPython compares aware times by ``seconds of the day - whole seconds of the offset``
  (rounded down), then microseconds, and ignores the offset's microseconds.  That is the rule kept here; the
  representative is the UTC time when that number lies within one day, else 00:00 or 23:59:59 with the offset
  that keeps it.  (With an offset that has microseconds, CPython's ``hash`` disagrees with its ``==``, so two
  such times can be distinct dict keys there and one here.)
- ``set`` and ``frozenset`` with equal elements are equal: both become the frozenset encoding with the
  element canons sorted as bytes.  A ``dict`` becomes a map sorted by key canon (then value canon).  Tuples and
  lists go element by element and stay apart (``[1] != (1,)``).
- ``str``, ``bytes`` (``bytearray``/``memoryview`` as the codec stores them, as bytes), ``None``, ``int``,
  ``date``, ``timedelta``, ``UUID`` and naive ``datetime``/``time`` are their own representatives.
- **NaN** (float, complex part, ``Decimal('NaN')``/``Decimal('sNaN')``), and any container holding one, has no
  representative: ``nan != nan``.  Only identity makes ``[x].count(x) == 1`` in Python, and values that cross
  the network are always new objects (today's server decodes a fresh object for each request), so here a NaN
  equals nothing, not even itself: its canon is ``0xC1`` and 16 fresh random bytes.  No msgpack encoding
  begins with ``0xC1``, so it never equals a stored canon.  ``Decimal('sNaN') == x`` raises in Python; here it
  is simply unequal.

``canon`` also accepts lists, dicts and sets, which are valid list elements; a caller that uses a canon as a
dict key checks hashability (``hash(key)``) itself.  tzinfo objects other than fixed offsets are compared through
the offset they give, as the codec stores them (the PEP 495 fold exceptions of ``==`` are not reproduced).

**List elements** (``element``): a self-canonical value (``canon(x) == encode_value(x)``) is stored as
``encode_value(x)``; any other as the *pair*::

    0xC1 | n: u32 big-endian | canon(x): n bytes | encode_value(x): the rest

A stored element's canon (``element_canon``, and in Lua) is therefore::

    if byte 1 == 0xC1 then canon = bytes 6 .. 5 + n  (n = struct.unpack(">I4", s, 2))  else canon = s

Two elements are equal exactly when their canons are equal.  Both forms must be checked: the pair of ``1.0``
has canon ``encode_value(1)``, which is also the plain element ``1``.  A stored element is never the single
byte ``0xC1`` (reserved for tombstones): a pair is at least 5 + 17 + 1 bytes long.
"""

from __future__ import annotations

import datetime as _dt
import math
import secrets
import uuid
from decimal import Decimal
from typing import Any

from .codec import MAX_BIGINT_BYTES, decode_value, encode_value
from .errors import ProtocolError

__all__ = ["PAIR", "canon", "canon_parts", "element", "element_canon", "element_value", "self_canonical"]

PAIR = 0xC1  # first byte of a pair element and of a NaN's canon: msgpack never emits it
_PAIR_BYTE = b"\xc1"
_NAN_RANDOM_BYTES = 16
_UTC = _dt.timezone.utc
_ZERO = _dt.timedelta(0)
_DAY = 86400
# the offset just above -24 h: its whole seconds (rounded down) are -86400, as a time's comparison sees them
_MIN_OFFSET = _dt.timedelta(seconds=-_DAY, microseconds=1)
# Integral Decimals from 10**_MAX_INT_DIGITS up cannot be codec ints (2**32767 < 10**9864): never build them
_MAX_INT_BITS = MAX_BIGINT_BYTES * 8 - 1
_MAX_INT_DIGITS = 9864
# the codec's container markers, msgpack ext 8 with no payload: ExtType(1, b"") (tuple), ExtType(3, b"") (frozenset)
_TUPLE_MARK = b"\xc7\x00\x01"
_FROZENSET_MARK = b"\xc7\x00\x03"
_TRUE = encode_value(1)
_FALSE = encode_value(0)

# Types whose every value is its own representative: canon(x) == encode_value(x), no work at all
_SELF = frozenset({str, int, bytes, type(None), bytearray, memoryview, _dt.date, _dt.timedelta, uuid.UUID})


class _NaNError(Exception):
    """Raised from any depth when a NaN turns up: the whole value then gets a fresh random canon."""


def _array_head(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def _map_head(n: int) -> bytes:
    if n < 16:
        return bytes((0x80 | n,))
    if n < 1 << 16:
        return b"\xde" + n.to_bytes(2, "big")
    return b"\xdf" + n.to_bytes(4, "big")


def _float(x: float) -> bytes | None:
    if x.is_integer():  # exact: int(x) of a float is its exact value, -0.0 gives 0
        return encode_value(int(x))
    if x != x:
        raise _NaNError
    return None  # non-integral finite, or +-inf: a float is its own representative


def _decimal(x: Decimal) -> bytes | None:
    if not x.is_finite():
        if x.is_nan():  # qNaN and sNaN (whose == raises): never equal to anything
            raise _NaNError
        return encode_value(float(x))
    if not x:
        return _FALSE
    if x.adjusted() < _MAX_INT_DIGITS:
        whole = int(x)  # exact truncation, no context
        if whole == x:
            if whole.bit_length() <= _MAX_INT_BITS:
                return encode_value(whole)
        else:
            f = float(x)  # correctly rounded; Decimal(f) is exact, so this tests exact equality
            if Decimal(f) == x:
                return encode_value(f)
    # strip trailing zeros from the digits by hand: Decimal.normalize() would round to the context's precision
    sign, digits, exponent = x.as_tuple()
    assert isinstance(exponent, int)
    end = len(digits)
    while digits[end - 1] == 0:
        end -= 1
    if end == len(digits):
        return None  # already without trailing zeros: its own representative
    return encode_value(Decimal((sign, digits[:end], exponent + len(digits) - end)))


def _complex(x: complex) -> bytes | None:
    imag = x.imag
    if imag == 0:
        real = x.real
        return _float(real) or encode_value(real)
    if x != x:
        raise _NaNError
    if x.real == 0 and math.copysign(1.0, x.real) < 0:
        return encode_value(complex(0.0, imag))
    return None


def _datetime(x: _dt.datetime) -> bytes | None:
    offset = x.utcoffset()
    if not offset:  # naive (None), or already UTC (a zero offset encodes as "@0" whatever the tzinfo)
        return None
    wall = x.replace(tzinfo=None)
    try:
        rep = (wall - offset).replace(tzinfo=_UTC)
    except OverflowError:  # the UTC instant is before datetime.min or after datetime.max: keep an extreme wall time
        edge = _dt.datetime.min if offset > _ZERO else _dt.datetime.max
        rep = edge.replace(tzinfo=_dt.timezone(edge - wall + offset))
        return _unless_same(encode_value(rep), x)
    return encode_value(rep)


def _time(x: _dt.time) -> bytes | None:
    offset = x.utcoffset()
    if offset is None or offset == _ZERO:
        return None
    # CPython's time_richcompare: h*3600 + m*60 + s - (offset.days*86400 + offset.seconds), then microseconds
    key = x.hour * 3600 + x.minute * 60 + x.second - (offset.days * _DAY + offset.seconds)
    micro = x.microsecond
    if 0 <= key < _DAY:
        return encode_value(_dt.time(key // 3600, key // 60 % 60, key % 60, micro, tzinfo=_UTC))
    if key < 0:
        rep = _dt.time(0, 0, 0, micro, tzinfo=_dt.timezone(_dt.timedelta(seconds=-key)))
    else:
        shift = max(_dt.timedelta(seconds=_DAY - 1 - key), _MIN_OFFSET)
        rep = _dt.time(23, 59, 59, micro, tzinfo=_dt.timezone(shift))
    return _unless_same(encode_value(rep), x)


def _unless_same(c: bytes, x: Any) -> bytes | None:
    # an extreme wall time may already be the representative: then x is self-canonical
    return None if c == encode_value(x) else c


_SCALARS: dict[type, Any] = {
    bool: lambda x: _TRUE if x else _FALSE,
    float: _float,
    Decimal: _decimal,
    complex: _complex,
    _dt.datetime: _datetime,
    _dt.time: _time,
}


def _walk(x: Any) -> bytes | None:
    """The canon of ``x``, or ``None`` when it is ``encode_value(x)``; raise ``_NaNError`` on a NaN inside.

    One Python frame per nesting level (plain loops, no comprehensions): the codec allows 500 levels.
    """
    t = type(x)
    if t in _SELF:
        return None
    scalar = _SCALARS.get(t)
    if scalar is not None:
        return scalar(x)  # type: ignore[no-any-return]
    if t is tuple or t is list:
        parts: list[bytes] | None = None
        i = 0
        for item in x:
            if type(item) not in _SELF:
                c = _walk(item)
                if c is not None:
                    if parts is None:
                        parts = [encode_value(y) for y in x[:i]]
                    parts.append(c)
                elif parts is not None:
                    parts.append(encode_value(item))
            elif parts is not None:
                parts.append(encode_value(item))
            i += 1
        if parts is None:
            return None
        if t is tuple:
            return _array_head(len(parts) + 1) + _TUPLE_MARK + b"".join(parts)
        return _array_head(len(parts)) + b"".join(parts)
    if t is frozenset or t is set:
        own = t is frozenset
        items: list[bytes] = []
        for item in x:
            c = _walk(item)
            if c is None:
                c = encode_value(item)
            else:
                own = False
            items.append(c)
        ordered = sorted(items)
        if own and ordered == items:
            return None
        return _array_head(len(items) + 1) + _FROZENSET_MARK + b"".join(ordered)
    if t is dict:
        own = True
        pairs: list[tuple[bytes, bytes]] = []
        for key, value in x.items():
            kc = _walk(key)
            vc = _walk(value)
            if kc is None:
                kc = encode_value(key)
            else:
                own = False
            if vc is None:
                vc = encode_value(value)
            else:
                own = False
            pairs.append((kc, vc))
        ordered_pairs = sorted(pairs)  # keys are unequal, so their canons decide; values only break odd ties
        if own and ordered_pairs == pairs:
            return None
        return _map_head(len(pairs)) + b"".join([kc + vc for kc, vc in ordered_pairs])
    raise TypeError(f"CyberDB cannot store a value of type {t.__module__}.{t.__qualname__}")


def _nan_canon() -> bytes:
    return _PAIR_BYTE + secrets.token_bytes(_NAN_RANDOM_BYTES)


def _walk_top(value: Any) -> bytes | None:
    try:
        return _walk(value)
    except _NaNError:
        return _nan_canon()
    except RecursionError:
        raise TypeError("CyberDB cannot encode this value: nested too deeply") from None


def canon(value: Any) -> bytes:
    """The canonical bytes of ``value``: equal for two values exactly when they are ``==`` (NaN: never).

    Raises:
        TypeError: a type the codec cannot store.
    """
    if type(value) in _SELF:
        return encode_value(value)
    c = _walk_top(value)
    return encode_value(value) if c is None else c


def canon_parts(value: Any) -> tuple[bytes, bytes | None]:
    """``(canon(value), encode_value(value))``, with ``None`` for the second when they are the same bytes."""
    if type(value) in _SELF:
        return encode_value(value), None
    c = _walk_top(value)
    if c is None:
        return encode_value(value), None
    return c, encode_value(value)


def self_canonical(value: Any) -> bool:
    """Whether ``canon(value) == encode_value(value)`` (a NaN never is: its canon is random)."""
    if type(value) in _SELF:
        return True
    return _walk_top(value) is None


def element(value: Any) -> bytes:
    """The stored bytes of a list element: ``encode_value(value)``, or the pair when it is not self-canonical."""
    if type(value) in _SELF:
        return encode_value(value)
    c = _walk_top(value)
    if c is None:
        return encode_value(value)
    return b"".join((_PAIR_BYTE, len(c).to_bytes(4, "big"), c, encode_value(value)))


def _split(stored: bytes) -> tuple[bytes, bytes] | None:
    """``(canon, encoding)`` of a pair element, ``None`` for a plain one; ``ProtocolError`` if malformed."""
    if not stored:
        raise ProtocolError("malformed list element: empty")
    if stored[0] != PAIR:
        return None
    n = int.from_bytes(stored[1:5], "big")
    if len(stored) <= 5 + n or n == 0:
        raise ProtocolError("malformed list element: truncated pair")
    return stored[5 : 5 + n], stored[5 + n :]


def element_value(stored: bytes) -> Any:
    """Decode a stored list element of either form.

    Raises:
        ProtocolError: the bytes are not an element.
    """
    parts = _split(stored)
    return decode_value(stored if parts is None else parts[1])


def element_canon(stored: bytes) -> bytes:
    """The canon of a stored list element: the bytes themselves, or a pair's canon part.

    Raises:
        ProtocolError: the bytes are not an element.
    """
    parts = _split(stored)
    return stored if parts is None else parts[0]
