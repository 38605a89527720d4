"""One nesting limit for client, server and files: ``codec.MAX_DEPTH`` and ``codec.depth_exceeds``.

Whatever the server accepts must stay encodable, in replies and in snapshots: a write whose arguments nest deeper
than ``MAX_DEPTH`` is refused with ``TypeError`` (also when a foreign encoder sent it), and a write at a path that
would nest its table deeper is refused with ``ValueError``, in both cases before anything changes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack
import pytest
from conftest import PASSWORD, ServerProcess, proxy_of
from hypothesis import given, settings
from hypothesis import strategies as st

import cyberdb
from cyberdb.codec import MAX_DEPTH, decode_value, depth_exceeds, encode_value
from cyberdb.commands import BY_NAME, MAX_PATH

Wrap = Callable[[Any], Any]


def nest(depth: int, *wraps: Wrap) -> Any:
    """``depth`` containers around 0, built without recursion; ``wraps`` are used in turn from the inside out."""
    value: Any = 0
    for i in range(depth):
        value = wraps[i % len(wraps)](value)
    return value


def in_list(v: Any) -> Any:
    return [v]


def in_tuple(v: Any) -> Any:
    return (v,)


def in_frozenset(v: Any) -> Any:
    return frozenset([v])


def in_dict(v: Any) -> Any:
    return {"k": v}


MIXED = (in_list, in_tuple, in_dict)

# each builds a value exactly `depth` containers deep
BUILDERS: dict[str, Callable[[int], Any]] = {
    "list": lambda depth: nest(depth, in_list),
    "tuple": lambda depth: nest(depth, in_tuple),
    "frozenset": lambda depth: nest(depth, in_frozenset),
    "dict value": lambda depth: nest(depth, in_dict),
    "dict key": lambda depth: {nest(depth - 1, in_tuple, in_frozenset): 1, "flat": 2},
    "set": lambda depth: {nest(depth - 1, in_frozenset, in_tuple), "flat"},
    "mixed": lambda depth: nest(depth, *MIXED),
}


def reference_depth(value: Any) -> int:
    """The nesting depth, the obvious recursive way (for small values only)."""
    if type(value) is dict:
        return 1 + max((reference_depth(x) for x in (*value, *value.values())), default=0)
    if type(value) in (list, tuple, set, frozenset):
        return 1 + max((reference_depth(x) for x in value), default=0)
    return 0


# ---- depth_exceeds (pure) ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(BUILDERS))
def test_depth_at_the_limit_and_one_past(kind: str) -> None:
    build = BUILDERS[kind]
    at_limit, past = build(MAX_DEPTH), build(MAX_DEPTH + 1)
    assert not depth_exceeds(at_limit)
    assert depth_exceeds(at_limit, MAX_DEPTH - 1)
    assert depth_exceeds(past)
    assert not depth_exceeds(past, MAX_DEPTH + 1)
    # decoded values (what the server checks) nest the same
    assert not depth_exceeds(decode_value(encode_value(at_limit)))
    assert depth_exceeds(decode_value(encode_value(past)))


def test_scalars_and_empty_containers() -> None:
    assert not depth_exceeds(0, 0) and not depth_exceeds("x" * 1000, 0) and not depth_exceeds(b"", 0)
    for empty in ([], (), set(), frozenset(), {}):
        assert depth_exceeds(empty, 0)
        assert not depth_exceeds(empty, 1)


def test_big_flat_values_and_one_nested_item_among_many() -> None:
    flat = list(range(1_000_000))
    assert not depth_exceeds(flat, 1) and depth_exceeds(flat, 0)
    assert not depth_exceeds(dict.fromkeys(range(100_000), "v"), 1)
    assert not depth_exceeds(set(range(100_000)), 1)
    # the one container among a hundred thousand scalars is found, at the end of a list or as a dict's value
    needle = [*range(100_000), [[0]]]
    assert depth_exceeds(needle, 2) and not depth_exceeds(needle, 3)
    table = {i: i for i in range(100_000)}
    table[-1] = {"a": [(1,)]}
    assert depth_exceeds(table, 3) and not depth_exceeds(table, 4)
    keyed = dict.fromkeys(range(100_000), 0)
    keyed[((0,),)] = 0  # a key nests too
    assert depth_exceeds(keyed, 2) and not depth_exceeds(keyed, 3)


def test_far_deeper_than_any_stack_and_cycles_never_recurse() -> None:
    deep = nest(100_000, in_list, in_tuple)
    assert depth_exceeds(deep)
    assert depth_exceeds(deep, 99_999) and not depth_exceeds(deep, 100_000)
    cycle: list[Any] = []
    cycle.append(cycle)
    assert depth_exceeds(cycle, 50)


_hashables = st.recursive(st.integers() | st.text(max_size=3),
                          lambda inner: st.lists(inner, max_size=3).map(tuple) | st.frozensets(inner, max_size=3),
                          max_leaves=6)
_values = st.recursive(
    st.integers() | st.text(max_size=3) | st.none(),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(_hashables, inner, max_size=4), st.sets(_hashables, max_size=4),
                            st.frozensets(_hashables, max_size=4)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_values, st.integers(min_value=0, max_value=8))
def test_depth_exceeds_agrees_with_the_recursive_definition(value: Any, limit: int) -> None:
    assert depth_exceeds(value, limit) == (reference_depth(value) > limit)


def test_the_encoder_packs_every_table_and_a_reply_wrapping_it() -> None:
    # MAX_DEPTH levels of table, plus one of reply (items() pairs, a list's snapshot), with this msgpack
    for kind in ("mixed", "list", "dict value"):
        reply = [BUILDERS[kind](MAX_DEPTH)]
        assert encode_value(decode_value(encode_value(reply))) == encode_value(reply)


# ---- end to end --------------------------------------------------------------------------------------------------


def _reloaded(db: cyberdb.Server, tmp_path: Path, start: Callable[..., cyberdb.Server]) -> cyberdb.Server:
    path = tmp_path / "data.cdb"
    db.save_db(str(path))
    fresh = cyberdb.Server()
    fresh.load_db(str(path))
    return start(fresh)


def test_the_deepest_value_a_client_can_write_is_stored_read_and_saved(
        in_process: Callable[..., cyberdb.Server], tmp_path: Path, name: str) -> None:
    deepest = nest(MAX_DEPTH - 1, *MIXED)  # d[k] = v sends [table, k, v]: MAX_DEPTH levels
    db = in_process()
    with proxy_of(db) as proxy:
        d = proxy.create_cyberdict(name)
        d["deep"] = deepest
        assert d["deep"] == deepest
        assert list(d.items()) == [("deep", deepest)]  # a reply one level deeper than the table
        with pytest.raises(TypeError, match=f"nest at most {MAX_DEPTH}"):
            d["deeper"] = [deepest]
        assert list(d.keys()) == ["deep"]
        d["after"] = 1  # the connection stays usable
    with proxy_of(_reloaded(db, tmp_path, in_process)) as proxy:
        assert proxy.get_cyberdict(name).todict() == {"deep": deepest, "after": 1}


def _path_table() -> tuple[list[str], dict[str, Any]]:
    """The longest path a write may take, and a table's content with a list at its end."""
    keys = [f"k{i}" for i in range(MAX_PATH)]
    content: Any = []
    for key in reversed(keys):
        content = {key: content}
    return keys, content


def test_a_path_write_past_the_limit_is_a_value_error_and_changes_nothing(
        in_process: Callable[..., cyberdb.Server], tmp_path: Path, name: str) -> None:
    keys, content = _path_table()
    room = MAX_DEPTH - 1 - MAX_PATH  # the table, then MAX_PATH levels down to the list, then the value
    fits, too_deep = nest(room, *MIXED), nest(room + 1, *MIXED)
    db = in_process()
    with proxy_of(db) as proxy:
        d = proxy.create_cyberdict(name, content)
        target = d.ref(*keys)
        target.append(fits)
        for write in (lambda: target.append(too_deep), lambda: target.extend([1, too_deep]),
                      lambda: target.insert(0, too_deep), lambda: d.ref(*keys[:-1]).update({"new": [too_deep]})):
            with pytest.raises(ValueError, match=f"deeper than the limit of {MAX_DEPTH}"):
                write()
        assert target.copy() == [fits]
        assert "new" not in d.ref(*keys[:-1]).keys()
    with proxy_of(_reloaded(db, tmp_path, in_process)) as proxy:
        assert proxy.get_cyberdict(name).ref(*keys).copy() == [fits]


def test_an_atomic_batch_with_a_too_deep_path_write_applies_nothing(proxy: cyberdb.Proxy, name: str) -> None:
    keys, content = _path_table()
    d = proxy.create_cyberdict(name, content)
    too_deep = nest(MAX_DEPTH - MAX_PATH, in_list)
    with pytest.raises(cyberdb.BatchAbortedError) as info, proxy.pipeline(atomic=True) as pipe:
        t = pipe.get_cyberdict(name)
        t["first"] = 1
        t.ref(*keys).append(too_deep)
    assert info.value.index == 1 and isinstance(info.value.error, ValueError)
    assert "first" not in d.keys() and d.ref(*keys).copy() == []


def _foreign_setitem(name: str, levels: int) -> bytes:
    """[name, "k", value] with the value ``levels`` arrays deep, as another msgpack library could send it."""
    return b"\x93" + msgpack.packb(name) + msgpack.packb("k") + b"\x91" * (levels - 1) + b"\x90"


@pytest.mark.parametrize("levels", [MAX_DEPTH, 1000])  # with the argument list: one past the limit, and 1001
def test_a_foreign_encoders_too_deep_write_is_refused_and_the_server_serves_on(
        server: ServerProcess, name: str, levels: int) -> None:
    conn = cyberdb.Connection(server.host, server.port, PASSWORD, server.encrypt)
    try:
        conn.call(BY_NAME["db.create"].op, encode_value([name, "dict", {}]), 1, 1)
        with pytest.raises(TypeError, match=f"nest at most {MAX_DEPTH}"):
            conn.call(BY_NAME["dict.setitem"].op, _foreign_setitem(name, levels), 2, 2)
        assert conn.call(BY_NAME["dict.len"].op, encode_value([name]), 3, 3) == 0  # nothing stored, still usable
        conn.call(BY_NAME["dict.setitem"].op, _foreign_setitem(name, MAX_DEPTH - 1), 4, 4)  # at the limit: stored
        assert conn.call(BY_NAME["dict.len"].op, encode_value([name]), 5, 5) == 1
    finally:
        conn.close()
    with proxy_of(server) as proxy:
        assert depth_exceeds(proxy.get_cyberdict(name)["k"], MAX_DEPTH - 2)  # read back whole
        assert not depth_exceeds(proxy.get_cyberdict(name)["k"], MAX_DEPTH - 1)
