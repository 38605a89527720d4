"""Differential tests: random operation sequences on a CyberDict/CyberList and on a plain dict/list must agree.

After every step the return value (or the exception's type and args), the full contents and the length of the
table must equal those of the model, compared *with types* (``1`` vs ``True`` vs ``1.0``, ``-0.0`` vs ``0.0``,
tuple vs list) and, for dicts, with key order.
"""

from __future__ import annotations

import copy
import functools
import operator
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

import cyberdb

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
MAX_STEPS = 30

# ---- values ------------------------------------------------------------------------------------------------

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(),
    st.floats(allow_nan=False),
    st.sampled_from([0.0, -0.0, 1.0, float("inf")]),
    st.text(alphabet="abé", max_size=3),
    st.text(max_size=6),
    st.binary(max_size=4),
)
HASHABLES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3).map(tuple), max_leaves=5)
VALUES = st.recursive(
    HASHABLES,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(HASHABLES, inner, max_size=3),
    ),
    max_leaves=8,
)
UNHASHABLES = st.one_of(st.lists(SCALARS, max_size=2), st.dictionaries(st.integers(0, 2), SCALARS, max_size=1))
KEYS = st.one_of(HASHABLES, UNHASHABLES)  # an unhashable key must give dict's own TypeError

# list element kinds: within "num", "str" or "bytes" all elements compare, so sort() without a key cannot raise
ELEMENTS = {
    "num": st.one_of(st.integers(-3, 3), st.integers(), st.booleans(),
                     st.floats(allow_nan=False), st.sampled_from([0.0, -0.0, 1.0])),
    "str": st.text(alphabet="abcé", max_size=3),
    "bytes": st.binary(max_size=3),
    "mixed": VALUES,
}


def typed(x: Any) -> Any:
    """A structure equal for two values only if they are equal *and* of the same types (and dict order)."""
    t = type(x)
    if t is dict:
        return ("dict", [(typed(k), typed(v)) for k, v in x.items()])
    if t is list or t is tuple:
        return (t.__name__, [typed(item) for item in x])
    if t is float:
        return ("float", repr(x))
    if t is set or t is frozenset:
        return (t.__name__, sorted(repr(typed(item)) for item in x))
    return (t.__qualname__, x)


def outcome(fn: Callable[[Any], Any], target: Any) -> Any:
    """What calling ``fn(target)`` did: its typed result, or the exception's type and typed args."""
    try:
        result = fn(target)
    except Exception as exc:  # compared below: type and args must match the builtin's
        return ("raise", type(exc), typed(exc.args))
    return ("ok", typed(result))


def pick(draw: Callable[..., Any], pool: list[Any], fresh: st.SearchStrategy[Any]) -> Any:
    """An existing element of ``pool`` half of the time (if any), else a freshly drawn value."""
    if pool and draw(st.booleans()):
        return draw(st.sampled_from(pool))
    return draw(fresh)


Op = tuple[str, Callable[[Any], Any]]


def run_steps(data: st.DataObject, table: Any, model: Any, make_op: Callable[[Callable[..., Any], Any], Op],
              contents: Callable[[Any], Any]) -> None:
    """Apply random operations to ``table`` and ``model``; compare after each step."""
    for _ in range(data.draw(st.integers(1, MAX_STEPS), label="steps")):
        label, fn = make_op(data.draw, model)
        note(label)
        expected = outcome(fn, model)
        got = outcome(fn, table)
        assert got == expected, f"{label}: expected {expected!r}, got {got!r}"
        assert typed(contents(table)) == typed(model), f"contents differ after {label}"
        assert len(table) == len(model), f"len differs after {label}"


# ---- CyberDict vs dict ---------------------------------------------------------------------------------------


def _ior(other: Any) -> Callable[[Any], Any]:
    def fn(target: Any) -> Any:
        alias = target
        alias |= other
        return alias is target  # `|=` must update in place and give back the same object

    return fn


def dict_op(draw: Callable[..., Any], model: dict[Any, Any]) -> Op:
    """Draw one dict operation; only what that operation needs is drawn (generation dominates the run time)."""
    keys = list(model)

    def key() -> Any:
        return pick(draw, keys, KEYS)

    def value() -> Any:
        return draw(VALUES)

    def other() -> dict[Any, Any]:
        result = dict(draw(st.dictionaries(HASHABLES, VALUES, max_size=4)))
        if keys and draw(st.booleans()):  # overlapping with the table, so that updates replace values
            result = {**{k: draw(VALUES) for k in keys[: draw(st.integers(1, len(keys)))]}, **result}
        return result

    def similar() -> dict[Any, Any]:
        result = copy.deepcopy(model)  # equal half of the time, so that `==` is not always False
        if result and draw(st.booleans()):
            result[draw(st.sampled_from(list(result)))] = value()
        return result

    def kwargs() -> dict[str, Any]:
        return dict(draw(st.dictionaries(st.text(max_size=3), VALUES, max_size=3)))

    name = draw(st.sampled_from([
        "getitem", "setitem", "delitem", "contains", "len", "get", "get_default", "setdefault",
        "setdefault_default", "pop", "pop_default", "popitem", "clear", "update_dict", "update_pairs",
        "update_kwargs", "update_both", "update_bad_pairs", "update_not_iterable", "keys", "values", "items",
        "iter", "reversed", "copy", "eq", "ne", "or", "ror", "ior", "ior_pairs",
    ]))
    if name == "getitem":
        k = key()
        return f"d[{k!r}]", lambda t: t[k]
    if name == "setitem":
        k, v = key(), value()
        return f"d[{k!r}] = {v!r}", lambda t: t.__setitem__(k, v)
    if name == "delitem":
        k = key()
        return f"del d[{k!r}]", lambda t: t.__delitem__(k)
    if name == "contains":
        k = key()
        return f"{k!r} in d", lambda t: k in t
    if name == "len":
        return "len(d)", len
    if name == "get":
        k = key()
        return f"d.get({k!r})", lambda t: t.get(k)
    if name == "get_default":
        k, v = key(), value()
        return f"d.get({k!r}, {v!r})", lambda t: t.get(k, v)
    if name == "setdefault":
        k = key()
        return f"d.setdefault({k!r})", lambda t: t.setdefault(k)
    if name == "setdefault_default":
        k, v = key(), value()
        return f"d.setdefault({k!r}, {v!r})", lambda t: t.setdefault(k, v)
    if name == "pop":
        k = key()
        return f"d.pop({k!r})", lambda t: t.pop(k)
    if name == "pop_default":
        k, v = key(), value()
        return f"d.pop({k!r}, {v!r})", lambda t: t.pop(k, v)
    if name == "popitem":
        return "d.popitem()", lambda t: t.popitem()
    if name == "clear":
        return "d.clear()", lambda t: t.clear()
    if name == "update_dict":
        o = other()
        return f"d.update({o!r})", lambda t: t.update(o)
    if name == "update_pairs":
        pairs = list(other().items())
        return f"d.update({pairs!r})", lambda t: t.update(pairs)
    if name == "update_kwargs":
        kw = kwargs()
        return f"d.update(**{kw!r})", lambda t: t.update(**kw)
    if name == "update_both":
        o, kw = other(), kwargs()
        return f"d.update({o!r}, **{kw!r})", lambda t: t.update(o, **kw)
    if name == "update_bad_pairs":
        # the bad element comes first: dict.update applies the pairs before it, CyberDict.update is atomic
        k = key()
        return f"d.update([({k!r}, 1, 2), (1, 2)])", lambda t: t.update([(k, 1, 2), (1, 2)])
    if name == "update_not_iterable":
        return "d.update(5)", lambda t: t.update(5)
    if name == "keys":
        return "list(d.keys())", lambda t: list(t.keys())
    if name == "values":
        return "list(d.values())", lambda t: list(t.values())
    if name == "items":
        return "list(d.items())", lambda t: list(t.items())
    if name == "iter":
        return "list(d)", lambda t: [k for k in t]
    if name == "reversed":
        return "list(reversed(d))", lambda t: list(reversed(t))
    if name == "copy":
        return "d.copy()", lambda t: t.copy()
    if name == "eq":
        o = similar()
        return f"d == {o!r}", lambda t: t == o
    if name == "ne":
        o = similar()
        return f"d != {o!r}", lambda t: t != o
    if name == "or":
        o = other()
        return f"d | {o!r}", lambda t: t | o
    if name == "ror":
        o = other()
        return f"{o!r} | d", lambda t: o | t
    if name == "ior":
        o = other()
        return f"d |= {o!r}", _ior(o)
    assert name == "ior_pairs"
    pairs = list(other().items())
    return f"d |= {pairs!r}", _ior(pairs)


@SETTINGS
@given(data=st.data())
def test_cyberdict_behaves_like_dict(proxy: cyberdb.Proxy, data: st.DataObject) -> None:
    initial = data.draw(st.dictionaries(HASHABLES, VALUES, max_size=6), label="initial")
    name = f"diff-dict-{uuid.uuid4().hex}"
    table = proxy.create_cyberdict(name, initial)
    try:
        model = copy.deepcopy(initial)
        assert typed(table.todict()) == typed(model)
        run_steps(data, table, model, dict_op, lambda t: t.todict())
    finally:
        proxy.delete_table(name)


# ---- CyberList vs list ---------------------------------------------------------------------------------------


def _inplace(op: Callable[[Any, Any], Any], other: Any) -> Callable[[Any], Any]:
    def fn(target: Any) -> Any:
        alias = op(target, other)
        return alias is target  # `+=`/`*=` must update in place and give back the same object

    return fn


def _iadd(a: Any, b: Any) -> Any:
    a += b
    return a


def _imul(a: Any, b: Any) -> Any:
    a *= b
    return a


def _cmp_repr_desc(a: Any, b: Any) -> int:
    ra, rb = repr(a), repr(b)
    return (ra < rb) - (ra > rb)


def _repr_key(x: Any) -> Any:
    return (type(x).__name__, repr(x))


COMPARISONS: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "eq": ("==", operator.eq),
    "ne": ("!=", operator.ne),
    "lt": ("<", operator.lt),
    "le": ("<=", operator.le),
    "gt": (">", operator.gt),
    "ge": (">=", operator.ge),
    "rlt": ("> (reflected: other < l)", lambda t, o: o < t),
    "rge": ("<= (reflected: other >= l)", lambda t, o: o >= t),
}


def list_op_factory(kind: str) -> Callable[[Callable[..., Any], list[Any]], Op]:
    """The operation drawer for lists whose elements are of ``kind``."""
    element = ELEMENTS[kind]
    names = [
        "getitem", "getitem_far", "getslice", "setitem", "setslice", "setslice_extended", "setslice_not_iterable",
        "delitem", "delslice", "append", "extend", "extend_iterator", "insert", "pop", "pop_index", "remove",
        "count", "index", "index_start", "index_start_stop", "reverse", "sort_key", "sort_cmp",
        "clear", "copy", "contains", "len", "add", "add_tuple", "radd", "iadd", "iadd_tuple", "mul", "rmul", "imul",
        *COMPARISONS, "reversed", "iter",
    ]
    if kind != "mixed":
        names += ["sort", "sort_reverse", "sort_identity_key"]
    else:
        # `other < l` runs CyberList.__gt__ (as for any non-list class): a TypeError between mixed elements
        # then names '>' and the operands the other way round, so only the unreflected forms are compared here
        names = [n for n in names if n not in ("rlt", "rge")]

    def list_op(draw: Callable[..., Any], model: list[Any]) -> Op:
        n = len(model)

        def index() -> int:
            return int(draw(st.integers(-n - 3, n + 3)))

        def bound() -> int | None:
            return draw(st.one_of(st.none(), st.integers(-n - 3, n + 3)))  # type: ignore[no-any-return]

        def a_slice(step_zero: bool = True) -> slice:
            steps = [-3, -2, -1, 1, 2, 3, 0] if step_zero else [-3, -2, -1, 1, 2, 3]
            return slice(bound(), bound(), draw(st.one_of(st.none(), st.sampled_from(steps))))

        def value() -> Any:
            return pick(draw, model, element)

        def items(max_size: int = 4) -> list[Any]:
            return list(draw(st.lists(element, max_size=max_size)))

        def other() -> list[Any]:
            result = list(model[: draw(st.integers(0, n))])  # often a prefix, so that all orderings occur
            if draw(st.booleans()):
                result += items(2)
            return result

        name = draw(st.sampled_from(names))
        if name == "getitem":
            i = index()
            return f"l[{i}]", lambda t: t[i]
        if name == "getitem_far":
            return "l[-10**6]", lambda t: t[-(10**6)]
        if name == "getslice":
            sl = a_slice()
            return f"l[{sl}]", lambda t: t[sl]
        if name == "setitem":
            i, v = index(), value()
            return f"l[{i}] = {v!r}", lambda t: t.__setitem__(i, v)
        if name == "setslice":
            sl, new = slice(bound(), bound()), items()
            return f"l[{sl}] = {new!r}", lambda t: t.__setitem__(sl, new)
        if name == "setslice_extended":
            sl = a_slice()
            if sl.step not in (None, 0) and draw(st.booleans()):  # often the right length, so that it succeeds
                size = len(range(*sl.indices(n)))
                new = list(draw(st.lists(element, min_size=size, max_size=size)))
            else:
                new = items()
            return f"l[{sl}] = {tuple(new)!r}", lambda t: t.__setitem__(sl, tuple(new))
        if name == "setslice_not_iterable":
            # no step 0 here: list checks the step first (ValueError), see test_tables.py for that case
            sl = a_slice(step_zero=False)
            return f"l[{sl}] = 5", lambda t: t.__setitem__(sl, 5)
        if name == "delitem":
            i = index()
            return f"del l[{i}]", lambda t: t.__delitem__(i)
        if name == "delslice":
            sl = a_slice()
            return f"del l[{sl}]", lambda t: t.__delitem__(sl)
        if name == "append":
            v = value()
            return f"l.append({v!r})", lambda t: t.append(v)
        if name == "extend":
            new = items()
            return f"l.extend({new!r})", lambda t: t.extend(new)
        if name == "extend_iterator":
            new_t = tuple(items())
            return f"l.extend(iter({new_t!r}))", lambda t: t.extend(iter(new_t))
        if name == "insert":
            i, v = index(), value()
            return f"l.insert({i}, {v!r})", lambda t: t.insert(i, v)
        if name == "pop":
            return "l.pop()", lambda t: t.pop()
        if name == "pop_index":
            i = index()
            return f"l.pop({i})", lambda t: t.pop(i)
        if name == "remove":
            v = value()
            return f"l.remove({v!r})", lambda t: t.remove(v)
        if name == "count":
            v = value()
            return f"l.count({v!r})", lambda t: t.count(v)
        if name == "index":
            v = value()
            return f"l.index({v!r})", lambda t: t.index(v)
        if name == "index_start":
            v, i = value(), index()
            return f"l.index({v!r}, {i})", lambda t: t.index(v, i)
        if name == "index_start_stop":
            v, i, j = value(), index(), index()
            return f"l.index({v!r}, {i}, {j})", lambda t: t.index(v, i, j)
        if name == "reverse":
            return "l.reverse()", lambda t: t.reverse()
        if name == "sort":
            return "l.sort()", lambda t: t.sort()
        if name == "sort_reverse":
            return "l.sort(reverse=True)", lambda t: t.sort(reverse=True)
        if name == "sort_identity_key":
            return "l.sort(key=lambda x: x, reverse=True)", lambda t: t.sort(key=lambda x: x, reverse=True)
        if name == "sort_key":
            return "l.sort(key=_repr_key)", lambda t: t.sort(key=_repr_key)
        if name == "sort_cmp":
            return "l.sort(key=cmp_to_key(_cmp_repr_desc))", lambda t: t.sort(key=functools.cmp_to_key(_cmp_repr_desc))
        if name == "clear":
            return "l.clear()", lambda t: t.clear()
        if name == "copy":
            return "l.copy()", lambda t: t.copy()
        if name == "contains":
            v = value()
            return f"{v!r} in l", lambda t: v in t
        if name == "len":
            return "len(l)", len
        if name == "add":
            new = items()
            return f"l + {new!r}", lambda t: t + new
        if name == "add_tuple":
            new_t = tuple(items())
            return f"l + {new_t!r}", lambda t: t + new_t
        if name == "radd":
            new = items()
            return f"{new!r} + l", lambda t: new + t
        if name == "iadd":
            new = items()
            return f"l += {new!r}", _inplace(_iadd, new)
        if name == "iadd_tuple":
            new_t = tuple(items())
            return f"l += {new_t!r}", _inplace(_iadd, new_t)
        if name in ("mul", "rmul", "imul"):
            times = draw(st.integers(-2, 3))
            if name == "mul":
                return f"l * {times}", lambda t: t * times
            if name == "rmul":
                return f"{times} * l", lambda t: times * t
            return f"l *= {times}", _inplace(_imul, times)
        if name in COMPARISONS:
            o, (symbol, compare) = other(), COMPARISONS[name]
            return f"l {symbol} {o!r}", lambda t: compare(t, o)
        if name == "reversed":
            return "list(reversed(l))", lambda t: list(reversed(t))
        assert name == "iter"
        return "list(l)", lambda t: [x for x in t]

    return list_op


@pytest.mark.parametrize("kind", sorted(ELEMENTS))
@SETTINGS
@given(data=st.data())
def test_cyberlist_behaves_like_list(proxy: cyberdb.Proxy, kind: str, data: st.DataObject) -> None:
    initial = data.draw(st.lists(ELEMENTS[kind], max_size=8), label="initial")
    name = f"diff-list-{uuid.uuid4().hex}"
    table = proxy.create_cyberlist(name, initial)
    try:
        model = copy.deepcopy(initial)
        assert typed(table.tolist()) == typed(model)
        run_steps(data, table, model, list_op_factory(kind), lambda t: t.tolist())
    finally:
        proxy.delete_table(name)
