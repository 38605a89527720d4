"""The value codec: Python values <-> bytes, with msgpack and extension types.  No I/O, never pickle.

Supported, nested freely, and decoded to the same type and value: ``None``, ``bool``, ``int`` (any size),
``float`` (nan/inf too), ``str``, ``bytes``, ``list``, ``tuple``, ``dict`` (any hashable keys), ``set``,
``frozenset``, ``datetime``/``date``/``time``/``timedelta``, ``Decimal``, ``UUID``, ``complex``.
Subclasses (``IntEnum``, ``OrderedDict``, ...) are refused with ``TypeError`` rather than silently changed.
Timezones survive as fixed UTC offsets (a ``zoneinfo`` zone comes back as the offset it had); ``fold`` is not
kept.  ``bytearray`` and ``memoryview`` are stored as ``bytes``.  Ints beyond 64 bits may have up to
``MAX_BIGINT_BYTES`` bytes.  Containers (list, tuple, set, frozenset, dict: one level each) nest at most
``MAX_DEPTH`` levels in a write's arguments (their list counting one) and in a stored table (the table counting
one): the server refuses deeper arguments with ``TypeError`` and a write at a path that would nest its table
deeper with ``ValueError``; the encoder refuses what msgpack itself cannot pack.  msgpack's own
``ExtType``/``Timestamp`` objects are not values: the encoder cannot refuse them, and the server closes a
connection that sends an unknown extension type.

``decode_value`` is given untrusted bytes: whatever is wrong with them, it raises ``ProtocolError`` only.
"""

from __future__ import annotations

import datetime as _dt
import operator
import struct
import threading
import uuid
from collections.abc import Collection
from decimal import Decimal
from itertools import chain, compress, repeat
from typing import Any

import msgpack

from .errors import ProtocolError

__all__ = ["MAX_DEPTH", "decode_value", "depth_exceeds", "encode_array", "encode_value"]

# Extension type codes: part of the protocol and of the file format, never renumber.
_TUPLE, _SET, _FROZENSET, _BIGINT, _DATETIME, _DATE, _TIME, _TIMEDELTA, _DECIMAL, _UUID, _COMPLEX = range(1, 12)
MAX_BIGINT_BYTES = 4096  # ints beyond 64 bits up to 2**32767: larger ones make comparisons quadratic (Decimal)
_COMPLEX_STRUCT = struct.Struct("!dd")
_TIMEDELTA_STRUCT = struct.Struct("!qqq")
# msgpack < 1.2 packs at most 511 nested containers (1.2 raised that to 1024); every version unpacks 1024.  A
# table may hold what a request can carry, and a reply may wrap a table's values one level deeper (items()
# pairs, a list's snapshot), so 500 keeps everything the server accepts encodable, for replies and snapshots,
# with any supported msgpack (and comparable within Python's default recursion limit).
MAX_DEPTH = 500
_CONTAINERS = frozenset({list, tuple, set, frozenset, dict})
_is_container = _CONTAINERS.__contains__

# A tuple, set or frozenset travels as a msgpack array whose first element is an empty extension value of its
# kind: (1, 2) -> [ext(TUPLE), 1, 2].  The whole value is then one msgpack call each way, so msgpack's own
# nesting limits bound the depth (a payload packed separately per level would recurse in C without a bound and
# crash the process).  On decoding, the extension becomes a private marker and the list hook turns
# [marker, ...] into the container; a marker anywhere else is malformed input, found by counting.
_MARKS = {code: msgpack.ExtType(code, b"") for code in (_TUPLE, _SET, _FROZENSET)}


class _Marker:
    """What a container's extension decodes to until the list hook replaces its array."""

    __slots__ = ("build",)

    def __init__(self, build: type) -> None:
        self.build = build


_MARK_OF_CODE = {_TUPLE: _Marker(tuple), _SET: _Marker(set), _FROZENSET: _Marker(frozenset)}
_KEEP_PACKER_BELOW = 1 << 20
_state = threading.local()  # markers seen minus markers consumed, per decode (decoding never yields)


def _default(obj: Any) -> Any:
    # strict_types=True sends every non-exact type here: tuples, subclasses, and the extension types.
    t = type(obj)
    if t is tuple:
        return [_MARKS[_TUPLE], *obj]
    if t is set:
        return [_MARKS[_SET], *obj]
    if t is frozenset:
        return [_MARKS[_FROZENSET], *obj]
    if t is int:  # outside the 64-bit range msgpack handles natively
        length = (obj.bit_length() + 8) // 8
        if length > MAX_BIGINT_BYTES:
            raise TypeError(f"CyberDB stores ints of up to {MAX_BIGINT_BYTES * 8 - 1} bits")
        return msgpack.ExtType(_BIGINT, obj.to_bytes(length, "big", signed=True))
    if t is _dt.datetime:
        return msgpack.ExtType(_DATETIME, _with_offset(obj))
    if t is _dt.date:
        return msgpack.ExtType(_DATE, obj.isoformat().encode())
    if t is _dt.time:
        return msgpack.ExtType(_TIME, _with_offset(obj))
    if t is _dt.timedelta:
        return msgpack.ExtType(_TIMEDELTA, _TIMEDELTA_STRUCT.pack(obj.days, obj.seconds, obj.microseconds))
    if t is Decimal:
        return msgpack.ExtType(_DECIMAL, str(obj).encode())
    if t is uuid.UUID:
        return msgpack.ExtType(_UUID, obj.bytes)
    if t is complex:
        return msgpack.ExtType(_COMPLEX, _COMPLEX_STRUCT.pack(obj.real, obj.imag))
    raise TypeError(f"CyberDB cannot store a value of type {t.__module__}.{t.__qualname__}")


def _with_offset(obj: _dt.datetime | _dt.time) -> bytes:
    # ISO text for the wall time, then "@" and the UTC offset in microseconds: isoformat() would round
    # offsets that are not whole seconds, and tzinfo objects other than fixed offsets cannot travel anyway
    text = obj.replace(tzinfo=None).isoformat()
    offset = obj.utcoffset()
    if offset is not None:
        text += f"@{offset // _dt.timedelta(microseconds=1)}"
    return text.encode()


def _read_offset(cls: type[_dt.datetime] | type[_dt.time], data: bytes) -> Any:
    text, sep, micros = data.decode().partition("@")
    value = cls.fromisoformat(text)
    if value.tzinfo is not None:
        raise ValueError("offset must be given after '@'")
    if sep:
        value = value.replace(tzinfo=_dt.timezone(_dt.timedelta(microseconds=int(micros))))
    return value


def _list_hook(items: list[Any]) -> Any:
    if items and type(items[0]) is _Marker:
        _state.pending -= 1
        return items[0].build(items[1:])
    return items


class _HasContainersError(Exception):
    """Raised by the first pass on the first tuple/set marker: decode again with the list hook."""


def _ext_hook_first_pass(code: int, data: bytes) -> Any:
    if code in _MARK_OF_CODE:
        raise _HasContainersError
    return _scalar_ext(code, data)


def _ext_hook(code: int, data: bytes) -> Any:
    mark = _MARK_OF_CODE.get(code)
    if mark is not None:
        if data:
            raise ValueError("container marker with a payload")
        _state.pending += 1
        return mark
    return _scalar_ext(code, data)


def _scalar_ext(code: int, data: bytes) -> Any:
    if code == _BIGINT:
        if len(data) > MAX_BIGINT_BYTES:
            raise ValueError("int too large")
        return int.from_bytes(data, "big", signed=True)
    if code == _DATETIME:
        return _read_offset(_dt.datetime, data)
    if code == _DATE:
        return _dt.date.fromisoformat(data.decode())
    if code == _TIME:
        return _read_offset(_dt.time, data)
    if code == _TIMEDELTA:
        return _dt.timedelta(*_TIMEDELTA_STRUCT.unpack(data))
    if code == _DECIMAL:
        return Decimal(data.decode())
    if code == _UUID:
        return uuid.UUID(bytes=data)
    if code == _COMPLEX:
        return complex(*_COMPLEX_STRUCT.unpack(data))
    raise ValueError(f"unknown extension type {code}")


def _new_packer() -> msgpack.Packer:
    return msgpack.Packer(default=_default, strict_types=True, use_bin_type=True, datetime=False)


def _unpackb(data: bytes | memoryview) -> Any:
    # Most values hold no tuple or set: decode once without the list hook (a Python call per array) and only
    # if a container marker turned up decode again with it.  timestamp=3: msgpack's own timestamp extension
    # (-1) can only ever decode to a datetime, a supported type.
    try:
        return msgpack.unpackb(data, ext_hook=_ext_hook_first_pass, raw=False, strict_map_key=False, timestamp=3)
    except _HasContainersError:
        pass
    _state.pending = 0
    value = msgpack.unpackb(data, ext_hook=_ext_hook, list_hook=_list_hook, raw=False, strict_map_key=False,
                            timestamp=3)
    if _state.pending:
        raise ValueError("a container marker outside the first place of an array")
    return value


def encode_value(obj: Any) -> bytes:
    """Encode a value; raise ``TypeError`` for an unsupported type (before anything is sent)."""
    # One Packer per thread, reused (building one per call costs more than packing a small value).  It is taken
    # out while in use: an encode_value() re-entered from inside pack() (a signal handler, a tzinfo method)
    # gets a fresh one instead of writing into the same buffer.
    packer = getattr(_state, "packer", None) or _new_packer()
    _state.packer = None
    data = b""
    try:
        data = packer.pack(obj)
        return data  # type: ignore[no-any-return]
    except TypeError:
        raise
    except (ValueError, OverflowError, RecursionError) as exc:  # msgpack's limits: nesting, a str over 4 GiB
        raise TypeError(f"CyberDB cannot encode this value: {exc}") from None
    finally:
        if len(data) <= _KEEP_PACKER_BELOW:  # a packer keeps its largest buffer: drop it after a big value
            _state.packer = packer


def decode_value(data: bytes | memoryview) -> Any:
    """Decode bytes from the network or a file; raise ``ProtocolError`` for anything malformed."""
    try:
        return _unpackb(data)
    except Exception as exc:  # untrusted input: every failure means "malformed", never a crash
        raise ProtocolError(f"malformed value: {type(exc).__name__}: {exc}") from None


def depth_exceeds(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` nests containers more than ``limit`` levels deep.

    A list, tuple, set, frozenset or dict counts one level, as in msgpack (a tuple travels as one array).  It
    walks level by level with C-speed passes instead of a Python call per item: a flat list of a million ints
    costs one ``set(map(type, ...))``, and only containers holding containers are looked into.  Never recurses.
    """
    kind = type(value)
    if kind not in _CONTAINERS:
        return False
    if limit < 1:
        return True
    # `level` holds the items inside depth + 1 containers; a container among them nests depth + 2 deep
    level: Collection[Any] = [*value, *value.values()] if kind is dict else value
    for _depth in range(limit - 1):
        kinds = set(map(type, level))
        if kinds.isdisjoint(_CONTAINERS):
            return False
        if not kinds <= _CONTAINERS:
            level = list(compress(level, map(_is_container, map(type, level))))
            kinds &= _CONTAINERS
        if dict in kinds:
            dicts = level if len(kinds) == 1 else list(compress(level, map(operator.is_, map(type, level),
                                                                            repeat(dict))))
            level = [*chain.from_iterable(level), *chain.from_iterable(map(dict.values, dicts))]  # keys, values
        elif len(level) == 1:
            level = next(iter(level))  # the items of one container: no copy
        else:
            level = list(chain.from_iterable(level))
    return not _CONTAINERS.isdisjoint(map(type, level))


def encode_array(parts: list[bytes]) -> bytes:
    """The encoding of a list whose items are already encoded (each by ``encode_value``)."""
    n = len(parts)
    if n < 16:
        head = bytes((0x90 | n,))
    elif n < 1 << 16:
        head = b"\xdc" + n.to_bytes(2, "big")
    else:
        head = b"\xdd" + n.to_bytes(4, "big")
    return head + b"".join(parts)
