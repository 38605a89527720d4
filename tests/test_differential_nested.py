"""Differential tests of nested handles (``ref``), ``incr``, pipelines and atomic batches against plain Python.

The model is a plain ``dict`` and a plain ``list`` holding nested dicts, lists and scalars; the server holds the
same content in a CyberDict and a CyberList.  Every call is made on the server (on a table, or through a handle
at a random path, immediately, in a pipeline or in an atomic batch) and on the model (``local_apply`` walks the
same path with Python's indexing and calls the same method).  Results must be equal, errors of the same type
(with the same args, except for ``TypeError``, whose wording is not promised), and the whole content of both
tables must equal the model after each step, compared with ``canon`` (types and key order included).

What the model does where a handle is documented to differ from a plain value (see ``CyberRef``):

- a path walks dicts and lists only, with Python's indexing (``l[True]`` is ``l[1]``, ``d[1]`` finds the key
  ``True``): indexing into any other value (a str, a tuple, a number) is a TypeError;
- a handle has the methods of CyberDict and CyberList: on a value of another type (or of the other kind) they
  raise TypeError, even where the plain value has such a method (``str.count``) or has none (AttributeError);
- ``ref.incr(amount)`` adds to the value the handle points at (a missing last dict key counts as 0), and
  ``t.incr(key, amount)`` to the value at ``key``;
- ``update()`` is all-or-nothing, and ``l *= n`` stores copies of nested values, not the same objects again;
- what the client checks before sending (the argument of ``update()``, that a slice is assigned an iterable)
  fails before the path is walked.
"""

from __future__ import annotations

import contextlib
import copy
import operator
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from values import canon

import cyberdb

SETTINGS = settings(max_examples=50, deadline=None, report_multiple_bugs=False,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
MAX_STEPS = 30
MAX_BATCHES = 4
MAX_BATCH_CALLS = 12

# ---- values --------------------------------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "c", 0, 1, 2, (1, "a")])  # few keys, so that random paths often exist
NUMBER_TYPES = (int, float, Decimal)
NUMBERS = st.one_of(
    st.integers(-5, 5),
    st.integers(),
    st.sampled_from([0.0, -0.0, 0.5, 2.5, 1e300]),
    st.floats(-1e6, 1e6),
    st.decimals(min_value=-1000, max_value=1000, places=2),
)
SCALARS = st.one_of(  # numbers twice: they are what incr() needs
    st.none(), st.booleans(), NUMBERS, NUMBERS, st.text(alphabet="ab", max_size=2), st.binary(max_size=2),
    st.tuples(st.integers(0, 2)),
)


def _nest(inner: st.SearchStrategy[Any], size: int) -> st.SearchStrategy[Any]:
    return st.one_of(st.lists(inner, max_size=size), st.dictionaries(KEYS, inner, max_size=size))


NESTED = st.recursive(SCALARS, lambda inner: _nest(inner, 4), max_leaves=10)
SMALL = st.recursive(SCALARS, lambda inner: _nest(inner, 2), max_leaves=3)
DICT_ROOT = st.dictionaries(KEYS, NESTED, min_size=1, max_size=5)
LIST_ROOT = st.lists(NESTED, min_size=1, max_size=5)
AMOUNTS = st.one_of(NUMBERS, st.booleans(), st.sampled_from(["1", None, [1]]))
# a key or index that usually does not exist, or is of a type the container refuses (a str for a list, a list for a
# dict); a bool indexes a list as in Python (l[True] is l[1])
BAD_KEYS = st.one_of(KEYS, st.integers(-8, 8), st.sampled_from([True, False, "zz", ["x"]]))
MISSING: Any = object()  # "the path does not lead anywhere"


# ---- the model: plain Python, with the documented rules of handles -------------------------------------------------


def local_walk(root: Any, path: tuple[Any, ...] | list[Any]) -> Any:
    """``root[path[0]][path[1]]...`` with Python's indexing; a handle walks dicts and lists only."""
    value = root
    for key in path:
        if type(value) is not dict and type(value) is not list:
            raise TypeError(f"'{type(value).__name__}' object is not subscriptable (by a handle)")
        value = value[key]
    return value


def local_incr(container: Any, key: Any, amount: Any) -> Any:
    """``container[key] = container.get(key, 0) + amount``, numbers only (no bools); nothing changes on error."""
    if type(amount) not in NUMBER_TYPES:
        raise TypeError(f"incr() adds a number, not {type(amount).__name__}")
    if type(container) is dict:
        current = container.get(key, 0)
    elif type(container) is list:
        current = container[key]
    else:
        raise TypeError(f"a {type(container).__name__} has no incr()")
    if type(current) not in NUMBER_TYPES:
        raise TypeError(f"incr() needs a number, not {type(current).__name__}")
    container[key] = new = current + amount  # float + Decimal raises TypeError before anything changes
    return new


def _same(x: Any) -> Any:
    return x


def _update(t: Any, other: Any, kwargs: dict[str, Any]) -> None:
    items: dict[Any, Any] = {}
    items.update(other, **kwargs)  # all or nothing: a bad element raises before anything changes
    t.update(items)


def _iadd_is(t: Any, other: Any) -> bool:
    alias = t
    alias += other
    return alias is t  # `+=` must update in place and give back the same object


def _ior_is(t: Any, other: Any) -> bool:
    alias = t
    alias |= other
    return alias is t


def _imul_is(t: Any, n: int) -> bool:
    alias = t
    alias *= n
    return alias is t


def _imul_none(t: Any, n: int) -> None:
    t *= n  # one request (queued in a pipeline; `__imul__` gives back the table, not a Pending)


def _local_imul(t: list[Any], n: int) -> None:
    """``t *= n`` as the server does it: the repeated items are copies, never the same objects again."""
    original = t[:]
    t *= n
    if n > 1:
        t[len(original):] = [copy.deepcopy(x) for _ in range(n - 1) for x in original]


def _local_imul_is(t: list[Any], n: int) -> bool:
    _local_imul(t, n)
    return True


def _repr_key(x: Any) -> Any:
    return (type(x).__name__, repr(x))


@dataclass(frozen=True)
class Method:
    """One operation: the values it applies to, how it is called, and how its result is compared.

    ``call(target, *args)`` works on a table, a handle and a plain value alike; when ``queueable`` it makes
    exactly one request (a Pending in a pipeline).  ``local`` replaces it on the plain value where the
    documented behaviour differs from the builtin's.
    """

    needs: str  # "dict", "list", "container" (either) or "any"
    call: Callable[..., Any]
    post: Callable[[Any], Any] = _same  # shapes a result for comparison (a keys view -> a list)
    local: Callable[..., Any] | None = None
    queueable: bool = True


METHODS: dict[str, Method] = {
    # dicts and lists
    "getitem": Method("container", operator.getitem),
    "setitem": Method("container", operator.setitem),
    "delitem": Method("container", operator.delitem),
    # len() and `in` need their answer at once (Python insists on an int / a bool): a pipeline refuses them
    "len": Method("container", len, queueable=False),
    "contains": Method("container", lambda t, x: x in t, queueable=False),
    "clear": Method("container", lambda t: t.clear()),
    "pop": Method("container", lambda t, *a: t.pop(*a)),
    # any value
    "copy": Method("any", lambda t: t.copy(), local=copy.deepcopy),
    "iter": Method("any", lambda t: [x for x in t], queueable=False),
    "reversed": Method("any", lambda t: list(reversed(t)), queueable=False),
    "eq": Method("any", operator.eq, queueable=False),
    "ne": Method("any", operator.ne, queueable=False),
    # dicts
    "get": Method("dict", lambda t, *a: t.get(*a)),
    "setdefault": Method("dict", lambda t, *a: t.setdefault(*a)),
    "popitem": Method("dict", lambda t: t.popitem()),
    "update": Method("dict", lambda t, other, kw: t.update(other, **kw), local=_update),
    "keys": Method("dict", lambda t: t.keys(), post=list),
    "values": Method("dict", lambda t: t.values(), post=list),
    "items": Method("dict", lambda t: t.items(), post=list),
    "todict": Method("dict", lambda t: t.todict(), local=copy.deepcopy),
    "or": Method("dict", operator.or_, queueable=False),
    "ror": Method("dict", lambda t, o: o | t, queueable=False),
    "ior": Method("dict", _ior_is, queueable=False),
    # lists
    "getslice": Method("list", operator.getitem),
    "setslice": Method("list", operator.setitem),
    "delslice": Method("list", operator.delitem),
    "append": Method("list", lambda t, x: t.append(x)),
    "extend": Method("list", lambda t, x: t.extend(x)),
    "insert": Method("list", lambda t, i, x: t.insert(i, x)),
    "remove": Method("list", lambda t, x: t.remove(x)),
    "count": Method("list", lambda t, x: t.count(x)),
    "index": Method("list", lambda t, *a: t.index(*a)),
    "reverse": Method("list", lambda t: t.reverse()),
    "sort": Method("list", lambda t, reverse: t.sort(reverse=reverse)),
    "sort_key": Method("list", lambda t, reverse: t.sort(key=_repr_key, reverse=reverse), queueable=False),
    "tolist": Method("list", lambda t: t.tolist(), local=copy.deepcopy),
    "imul": Method("list", _imul_none, local=_local_imul),
    "imul_is": Method("list", _imul_is, local=_local_imul_is, queueable=False),
    "iadd": Method("list", _iadd_is, queueable=False),
    "add": Method("list", operator.add, queueable=False),
    "radd": Method("list", lambda t, o: o + t, queueable=False),
    "mul": Method("list", operator.mul, queueable=False),
    "rmul": Method("list", lambda t, n: n * t, queueable=False),
    "lt": Method("list", operator.lt, queueable=False),
    "le": Method("list", operator.le, queueable=False),
    "gt": Method("list", operator.gt, queueable=False),
    "ge": Method("list", operator.ge, queueable=False),
    # tables only: t.incr(key, amount) (a handle's incr(amount) is "incr", see local_apply)
    "incr_at": Method("container", lambda t, key, amount: t.incr(key, amount), local=local_incr),
}
WRITES = frozenset({
    "setitem", "delitem", "clear", "pop", "setdefault", "popitem", "update", "setslice", "delslice", "append",
    "extend", "insert", "remove", "reverse", "sort", "imul", "incr", "incr_at",
})
# writes the batch journal undoes without copying the table (a single-key dict write, a list append)
JOURNAL_SHORTCUTS = ("setitem", "setdefault", "incr_at", "append")


# arguments a handle checks on the client (with the builtin's own errors) before anything is sent
CLIENT_CHECKS: dict[str, Callable[..., Any]] = {
    "setslice": lambda _slice, value: list(value),
    "update": lambda other, kwargs: dict(other, **kwargs),
}


def _fits(needs: str, value: Any) -> bool:
    if needs == "dict":
        return type(value) is dict
    if needs == "list":
        return type(value) is list
    if needs == "container":
        return type(value) is dict or type(value) is list
    return True


def local_apply(root: Any, path: tuple[Any, ...], name: str, args: tuple[Any, ...]) -> Any:
    """What ``t.ref(*path).<name>(*args)`` (or, with an empty path, ``t.<name>(*args)``) does, on plain values."""
    args = copy.deepcopy(args)  # the server stores what it decodes: the model must not share objects with the calls
    if name in CLIENT_CHECKS:
        CLIENT_CHECKS[name](*args)  # checked on the client, before the server walks the path
    if name == "incr":
        *parent, last = path
        return local_incr(local_walk(root, parent), last, *args)
    target = local_walk(root, path)
    method = METHODS[name]
    if not _fits(method.needs, target):
        raise TypeError(f"a {type(target).__name__} has no {name}() (by a handle)")
    return (method.local or method.call)(target, *args)


# ---- calls ---------------------------------------------------------------------------------------------------------

TABLE_NAMES = ("d", "l")


@dataclass(frozen=True)
class Call:
    """One call on table ``table`` (0: the dict, 1: the list), on the table itself or through a handle."""

    table: int
    path: tuple[Any, ...]  # () for the table itself
    split: int  # 0 < split < len(path): the handle is made as t.ref(*path[:split]).ref(*path[split:])
    name: str
    args: tuple[Any, ...]

    def __str__(self) -> str:
        where = TABLE_NAMES[self.table]
        if self.path:
            parts = [self.path]
            if 0 < self.split < len(self.path):
                parts = [self.path[: self.split], self.path[self.split:]]
            where += "".join(f".ref{tuple(p)!r}" for p in parts)
        return f"{where}.{self.name}{self.args!r}"

    def remote(self, tables: list[Any]) -> Any:
        """Make the call on the server's tables (or on a pipeline's)."""
        target = tables[self.table]
        if self.path:
            if 0 < self.split < len(self.path):
                target = target.ref(*self.path[: self.split]).ref(*self.path[self.split:])
            else:
                target = target.ref(*self.path)
        if self.name == "incr":
            return target.incr(*self.args)
        return METHODS[self.name].call(target, *self.args)

    def local(self, roots: list[Any]) -> Any:
        """Make the call on the model."""
        return local_apply(roots[self.table], self.path, self.name, self.args)

    def post(self, result: Any) -> Any:
        """Shape a result for comparison."""
        return METHODS[self.name].post(result) if self.name in METHODS else result


def failure(exc: BaseException) -> Any:
    """How an error is compared: its type, and its args unless it is a TypeError."""
    if type(exc) is TypeError:
        return ("raise", TypeError)  # wording not promised: the library words its own checks
    return ("raise", type(exc), canon(exc.args))


def outcome(fn: Callable[[], Any], post: Callable[[Any], Any] = _same) -> Any:
    """What ``fn()`` did: its result (shaped by ``post``, then made comparable), or its error."""
    try:
        result = post(fn())
    except Exception as exc:  # compared with the model's
        return failure(exc)
    return ("ok", canon(result))


def settled(result: Any, post: Callable[[Any], Any]) -> Any:
    """How a pipeline's entry in ``results`` (a value, or the call's exception) compares with ``outcome``."""
    return failure(result) if isinstance(result, BaseException) else outcome(lambda: result, post)


ROOT_OPS = (
    sorted(n for n, m in METHODS.items() if m.needs != "list"),
    sorted(n for n, m in METHODS.items() if m.needs != "dict"),
)
REFILL = (["setitem", "setdefault", "update"], ["append", "extend", "insert", "setslice"])
REF_OPS = sorted([n for n in METHODS if n != "incr_at"] + ["incr"])
OPS_BY_TYPE: dict[type, list[str]] = {
    dict: sorted(n for n in REF_OPS if METHODS.get(n, METHODS["copy"]).needs != "list"),
    list: sorted(n for n in REF_OPS if METHODS.get(n, METHODS["copy"]).needs != "dict"),
}
NUMBER_OPS = ["incr", "incr", "copy", "eq", "iter", "len"]
OTHER_OPS = ["incr", "copy", "eq", "ne", "iter", "reversed", "len", "getitem", "contains", "count", "append"]


def draw_key(draw: Callable[..., Any], value: Any, fresh_odds: int) -> Any:
    """A key or index of ``value``: one that exists, except once in ``fresh_odds`` (then usually a bad one)."""
    if value and type(value) in (dict, list) and draw(st.integers(0, fresh_odds - 1)) < fresh_odds - 1:
        if type(value) is dict:
            return draw(st.sampled_from(list(value)))
        return draw(st.integers(-len(value), len(value) - 1))
    return draw(BAD_KEYS)


def draw_path(draw: Callable[..., Any], root: Any, fresh_odds: int) -> tuple[tuple[Any, ...], Any]:
    """A path of one to four keys into ``root`` and the value there (MISSING if there is none).

    It goes on into a non-empty dict or list two times in three; into anything else (which fails) once in eight.
    """
    path: list[Any] = []
    value = root
    while len(path) < 4:
        deeper = value and type(value) in (dict, list)
        if path and draw(st.integers(0, 23)) < (8 if deeper else 21):
            break
        key = draw_key(draw, value, fresh_odds)
        path.append(key)
        if value is not MISSING:
            try:
                value = local_walk(value, [key])
            except Exception:  # the path leads nowhere: the rest of it is drawn at random
                value = MISSING
    return tuple(path), value


def draw_args(draw: Callable[..., Any], name: str, target: Any, fresh_odds: int) -> tuple[Any, ...]:
    """Arguments for ``name`` on ``target`` (which may be MISSING or of the wrong type)."""
    is_list, is_dict = type(target) is list, type(target) is dict
    n = len(target) if is_list else 2

    def key() -> Any:
        return draw_key(draw, target, fresh_odds)

    def value() -> Any:
        return draw(SMALL)

    def element() -> Any:
        if is_list and target and draw(st.booleans()):
            return draw(st.sampled_from(target))
        return value()

    def index() -> int:
        return int(draw(st.integers(-n - 2, n + 1)))

    def bound() -> int | None:
        return draw(st.one_of(st.none(), st.integers(-n - 2, n + 2)))  # type: ignore[no-any-return]

    def a_slice(step_zero: bool) -> slice:
        steps = [-2, -1, 1, 2, 3, 0] if step_zero else [-2, -1, 1, 2, 3]
        return slice(bound(), bound(), draw(st.one_of(st.none(), st.sampled_from(steps))))

    def items() -> list[Any]:
        return list(draw(st.lists(SMALL, max_size=3)))

    def optional(*more: Callable[[], Any]) -> tuple[Any, ...]:
        return tuple(f() for f in more[: draw(st.integers(0, len(more)))])

    if name in ("getitem", "delitem"):
        return (key(),)
    if name == "setitem":
        return (key(), value())
    if name == "contains":
        return (element() if is_list else key(),)
    if name == "pop":
        if is_list or (not is_dict and draw(st.booleans())):
            return optional(index)
        return (key(), *optional(value))
    if name in ("get", "setdefault"):
        return (key(), *optional(value))
    if name == "update":
        pairs = draw(st.dictionaries(KEYS, SMALL, max_size=3))
        if is_dict and target and draw(st.booleans()):  # overlapping with the dict, so that values are replaced
            pairs = {draw(st.sampled_from(list(target))): value(), **pairs}
        other = draw(st.sampled_from([pairs, list(pairs.items()), 5]))  # 5: not iterable, a TypeError
        return (other, dict(draw(st.dictionaries(st.sampled_from(["a", "b", "x"]), SMALL, max_size=2))))
    if name in ("eq", "ne"):
        similar = copy.deepcopy(target) if target is not MISSING and draw(st.booleans()) else value()
        if type(similar) is dict and similar and draw(st.booleans()):
            similar[draw(st.sampled_from(list(similar)))] = value()
        return (similar,)
    if name in ("or", "ror", "ior"):
        return (dict(draw(st.dictionaries(KEYS, SMALL, max_size=3))),)
    if name in ("getslice", "delslice"):
        return (a_slice(step_zero=True),)
    if name == "setslice":
        # no step 0 here: the client checks it before the server looks at the value's type (test_tables.py has it)
        sl = a_slice(step_zero=False)
        new: Any = items()
        if sl.step not in (None, 1) and is_list and draw(st.booleans()):  # often the right length, so that it works
            new = [value() for _ in range(len(range(*sl.indices(n))))]
        return (sl, draw(st.sampled_from([new, tuple(new), 5])))
    if name in ("append", "remove", "count"):
        return (element(),)
    if name in ("extend", "add", "radd", "iadd"):
        new_items = items()
        return (tuple(new_items) if name in ("extend", "iadd") and draw(st.booleans()) else new_items,)
    if name == "insert":
        return (index(), value())
    if name == "index":
        return (element(), *optional(index, index))
    if name in ("sort", "sort_key"):
        return (draw(st.booleans()),)
    if name in ("imul", "imul_is", "mul", "rmul"):
        return (draw(st.integers(-1, 3)),)
    if name in ("lt", "le", "gt", "ge"):
        prefix = list(target[: draw(st.integers(0, n))]) if is_list else []  # often a prefix: all orderings occur
        return (prefix + (items() if draw(st.booleans()) else []),)
    if name == "incr":
        return (draw(AMOUNTS),)
    if name == "incr_at":
        return (key(), draw(AMOUNTS))
    return ()


def draw_call(draw: Callable[..., Any], model: list[Any], queueable: bool = False, writes: bool = False,
              fresh_odds: int = 6) -> Call:
    """A random call on one of the two tables, itself or at a random path (mostly one its value has).

    ``queueable``: only calls a pipeline can queue; ``writes``: mostly writes; ``fresh_odds``: a key is a fresh
    (usually missing) one once in that many draws.
    """
    table = draw(st.integers(0, 1))
    if not model[table] and draw(st.integers(0, 7)) < 7:  # an empty table: mostly refill it
        path: tuple[Any, ...] = ()
        target = model[table]
        names = REFILL[table]
    elif draw(st.booleans()):
        path, target = (), model[table]
        names = ROOT_OPS[table]
    else:
        path, target = draw_path(draw, model[table], fresh_odds)
        if target is MISSING:
            names = ["incr"] if draw(st.booleans()) else REF_OPS  # incr at a missing dict key is valid
        elif type(target) in OPS_BY_TYPE:
            names = OPS_BY_TYPE[type(target)]
        else:
            names = NUMBER_OPS if type(target) in NUMBER_TYPES else OTHER_OPS
        if draw(st.integers(0, 7)) == 7:
            names = REF_OPS  # any method: one the value lacks raises TypeError
    if queueable:
        names = [n for n in names if n not in METHODS or METHODS[n].queueable]
    if writes and draw(st.integers(0, 3)) < 3:
        names = [n for n in names if n in WRITES] or names
        names += [n for n in JOURNAL_SHORTCUTS if n in names]  # twice as likely: their undo is recorded apart
    name = draw(st.sampled_from(names))
    args = copy.deepcopy(draw_args(draw, name, target, fresh_odds))  # not the model's objects: it changes later
    split = draw(st.integers(0, len(path) - 1)) if len(path) > 1 else 0
    return Call(table, path, split, name, args)


# ---- tables --------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def two_tables(proxy: cyberdb.Proxy, roots: list[Any]) -> Iterator[list[Any]]:
    """A new CyberDict and CyberList with ``roots`` as content, deleted afterwards."""
    prefix = f"nested-{uuid.uuid4().hex}"
    made: list[Any] = []
    try:
        made.append(proxy.create_cyberdict(f"{prefix}-d", roots[0]))
        made.append(proxy.create_cyberlist(f"{prefix}-l", roots[1]))
        yield made
    finally:
        for table in made:
            proxy.delete_table(table.name)


def contents(tables: list[Any]) -> Any:
    """The whole content of both tables, comparable with ``canon(model)`` (key order included)."""
    return canon([tables[0].todict(), tables[1].tolist()])


def exact_contents(tables: list[Any]) -> Any:
    """Both tables' content as ``(key, value)`` pairs in order, and items in order."""
    return canon((list(tables[0].todict().items()), tables[1].tolist()))


def pipeline_handles(pipe: cyberdb.Pipeline, tables: list[Any]) -> list[Any]:
    """The two tables, with their calls queued in ``pipe``."""
    return [pipe.get_cyberdict(tables[0].name), pipe.get_cyberlist(tables[1].name)]


def queue_calls(pipe: cyberdb.Pipeline, handles: list[Any], calls: list[Call]) -> list[Any]:
    """Queue every call; per call ``("queued", position, what it returned)`` or ``("raised", exc)`` at once."""
    slots: list[Any] = []
    for call in calls:
        before = len(pipe)
        try:
            returned = call.remote(handles)
        except Exception as exc:  # refused on the client: nothing may be queued
            assert len(pipe) == before, f"{call} raised {exc!r} but queued a request"
            slots.append(("raised", exc))
        else:
            assert len(pipe) == before + 1, f"{call} queued {len(pipe) - before} requests"
            # a method whose result is always None returns None, not its Pending: its result is then in
            # pipe.results only (test_pipeline_methods_that_return_none_give_a_pending)
            assert returned is None or isinstance(returned, cyberdb.Pending), f"{call} returned {returned!r}"
            slots.append(("queued", before, returned))
    return slots


# ---- 1. handles and incr, one call at a time -----------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_handles_and_incr_behave_like_nested_python_values(proxy: cyberdb.Proxy, data: st.DataObject) -> None:
    roots = [data.draw(DICT_ROOT, label="dict"), data.draw(LIST_ROOT, label="list")]
    with two_tables(proxy, roots) as tables:
        model = copy.deepcopy(roots)
        assert contents(tables) == canon(model)
        for _ in range(data.draw(st.integers(1, MAX_STEPS), label="steps")):
            call = draw_call(data.draw, model)
            note(str(call))
            expected = outcome(partial(call.local, model), call.post)
            got = outcome(partial(call.remote, tables), call.post)
            assert got == expected, f"{call}: expected {expected!r}, got {got!r}"
            assert contents(tables) == canon(model), f"contents differ after {call}"
            event(f"{'at a path' if call.path else 'on a table'}: {expected[0]}")


# ---- 2. pipelines: the same results as one call at a time ----------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_pipeline_gives_the_results_of_sequential_calls(proxy: cyberdb.Proxy, data: st.DataObject) -> None:
    roots = [data.draw(DICT_ROOT, label="dict"), data.draw(LIST_ROOT, label="list")]
    with two_tables(proxy, roots) as piped, two_tables(proxy, roots) as sequential:
        model = copy.deepcopy(roots)
        calls: list[Call] = []
        expected: list[Any] = []
        for _ in range(data.draw(st.integers(1, MAX_STEPS), label="calls")):
            call = draw_call(data.draw, model, queueable=True)
            note(str(call))
            calls.append(call)
            expected.append(outcome(partial(call.local, model), call.post))
        for call, exp in zip(calls, expected, strict=True):
            got = outcome(partial(call.remote, sequential), call.post)
            assert got == exp, f"sequential {call}: expected {exp!r}, got {got!r}"
        assert contents(sequential) == canon(model)

        with proxy.pipeline() as pipe:
            slots = queue_calls(pipe, pipeline_handles(pipe, piped), calls)
        assert len(pipe.results) == sum(slot[0] == "queued" for slot in slots)
        for call, slot, exp in zip(calls, slots, expected, strict=True):
            if slot[0] == "raised":
                got = failure(slot[1])
            else:
                _, position, returned = slot
                got = settled(pipe.results[position], call.post)
                if isinstance(returned, cyberdb.Pending):
                    assert returned.done()
                    assert outcome(returned.result, call.post) == got, f"{call}: Pending and results differ"
            assert got == exp, f"pipelined {call}: expected {exp!r}, got {got!r}"
        assert contents(piped) == canon(model), "contents differ after the pipeline"


NOT_QUEUEABLE: dict[str, Callable[[list[Any]], Any]] = {
    "iterate a dict": lambda h: next(iter(h[0])),
    "iterate a list": lambda h: next(iter(h[1])),
    "reversed list": lambda h: next(reversed(h[1])),
    "dict ==": lambda h: h[0] == {},
    "list !=": lambda h: h[1] != [],
    "list <": lambda h: h[1] < [1],
    "list >=": lambda h: h[1] >= [1],
    "repr dict": lambda h: repr(h[0]),
    "repr list": lambda h: repr(h[1]),
    "sort with a key": lambda h: h[1].sort(key=_repr_key),
    "list +": lambda h: h[1] + [1],
    "+ list": lambda h: [1] + h[1],
    "list *": lambda h: h[1] * 2,
    "dict |": lambda h: h[0] | {},
    "| dict": lambda h: {} | h[0],
    "iterate a handle": lambda h: next(iter(h[0].ref("n"))),
    "handle ==": lambda h: h[0].ref("n") == [],
    "handle <": lambda h: h[1].ref(0) < [],
    "sort a handle with a key": lambda h: h[1].ref(0).sort(key=_repr_key),
    "len of a dict": lambda h: len(h[0]),
    "len of a list": lambda h: len(h[1]),
    "in a dict": lambda h: "n" in h[0],
    "in a list": lambda h: 0 in h[1],
    "len of a handle": lambda h: len(h[0].ref("n")),
    "in a handle": lambda h: 3 in h[0].ref("n"),
}


@pytest.mark.parametrize("what", sorted(NOT_QUEUEABLE))
def test_pipeline_refuses_what_needs_a_reply_and_queues_nothing(proxy: cyberdb.Proxy, what: str) -> None:
    with two_tables(proxy, [{"n": [3, 1]}, [[2, 1], 0]]) as tables:
        with proxy.pipeline() as pipe:
            handles = pipeline_handles(pipe, tables)
            first = handles[1].incr(1, 5)
            with pytest.raises(TypeError):
                NOT_QUEUEABLE[what](handles)
            assert len(pipe) == 1
            second = handles[0].ref("n").pop()
        assert first.result() == 5 and second.result() == 1
        assert pipe.results == [5, 1]
        assert contents(tables) == canon([{"n": [3]}, [[2, 1], 5]])


# ---- 3. atomic batches: all, or nothing at all ---------------------------------------------------------------------


def draw_batch_call(draw: Callable[..., Any], model: list[Any], fails: bool) -> Call | None:
    """A call (mostly a write) that fails (or succeeds) on the model as it is, tried on a copy; or None."""
    for _ in range(5):
        call = draw_call(draw, model, queueable=True, writes=True, fresh_odds=1 if fails else 8)
        trial = copy.deepcopy(model)
        if (outcome(partial(call.local, trial))[0] == "raise") == fails:
            return call
    return None


@SETTINGS
@given(data=st.data())
def test_atomic_batch_applies_all_or_nothing(proxy: cyberdb.Proxy, data: st.DataObject) -> None:
    roots = [data.draw(DICT_ROOT, label="dict"), data.draw(LIST_ROOT, label="list")]
    with two_tables(proxy, roots) as batched, two_tables(proxy, roots) as sequential:
        model = copy.deepcopy(roots)
        for _ in range(data.draw(st.integers(1, MAX_BATCHES), label="batches")):
            before = [batched[0].todict(), batched[1].tolist()]
            before_exact = exact_contents(batched)
            calls: list[Call] = []
            expected: list[Any] = []
            # mostly calls that succeed, so that a failure comes after many writes to undo (often at the end)
            size = data.draw(st.integers(1, MAX_BATCH_CALLS), label="calls")
            for i in range(size):
                fails = data.draw(st.integers(0, 9)) == 9 if i < size - 1 else data.draw(st.booleans())
                call = draw_batch_call(data.draw, model, fails)
                if call is not None:
                    calls.append(call)
                    expected.append(outcome(partial(call.local, model), call.post))
            for call in calls:
                note(str(call))
            for call, exp in zip(calls, expected, strict=True):
                got = outcome(partial(call.remote, sequential), call.post)
                assert got == exp, f"sequential {call}: expected {exp!r}, got {got!r}"

            aborted: cyberdb.BatchAbortedError | None = None
            try:
                with proxy.pipeline(atomic=True) as pipe:
                    slots = queue_calls(pipe, pipeline_handles(pipe, batched), calls)
            except cyberdb.BatchAbortedError as exc:
                aborted = exc
            queued = [i for i, slot in enumerate(slots) if slot[0] == "queued"]
            for i, slot in enumerate(slots):
                if slot[0] == "raised":  # refused on the client, as it was sequentially; not part of the batch
                    assert failure(slot[1]) == expected[i], str(calls[i])
            failing = [position for position, i in enumerate(queued) if expected[i][0] == "raise"]

            if not failing:
                assert aborted is None
                assert len(pipe.results) == len(queued)
                for position, i in enumerate(queued):
                    returned = slots[i][2]
                    got = settled(pipe.results[position], calls[i].post)
                    if isinstance(returned, cyberdb.Pending):
                        assert outcome(returned.result, calls[i].post) == got
                    assert got == expected[i], f"batched {calls[i]}: expected {expected[i]!r}, got {got!r}"
                assert contents(batched) == contents(sequential) == canon(model), "contents differ after the batch"
                event("batch applied")
                continue

            first = failing[0]
            assert aborted is not None, f"{calls[queued[first]]} failed sequentially, but the batch did not abort"
            assert aborted.index == first, f"the batch names call {aborted.index}, the first failing is {first}"
            assert failure(aborted.error) == expected[queued[first]], f"{calls[queued[first]]}: {aborted.error!r}"
            for position, i in enumerate(queued):
                returned = slots[i][2]
                if isinstance(returned, cyberdb.Pending):
                    with pytest.raises(BaseException) as info:
                        returned.result()
                    assert info.value is (aborted.error if position == first else aborted)
            assert exact_contents(batched) == before_exact, "an aborted batch changed the tables"
            event("batch aborted at its first call" if first == 0 else "batch aborted after some calls")
            # the sequential run went on after its failure: start the next batch from what the batch left
            sequential[0].clear()
            sequential[0].update(before[0])
            sequential[1][:] = before[1]
            model = copy.deepcopy(before)
            assert exact_contents(sequential) == before_exact


# ---- regular tests: the rollback journal, documented deviations, and bugs found ------------------------------------


def _abort(proxy: cyberdb.Proxy, tables: list[Any], fill: Callable[[list[Any]], None]) -> cyberdb.BatchAbortedError:
    with pytest.raises(cyberdb.BatchAbortedError) as info, proxy.pipeline(atomic=True) as pipe:
        fill(pipeline_handles(pipe, tables))
    return info.value


def test_aborted_batch_restores_key_order_after_deletes_and_reinserts(proxy: cyberdb.Proxy) -> None:
    with two_tables(proxy, [{"a": 1, "b": [1, {"x": 2}], "c": 3}, [[1], {"k": [2]}]]) as tables:
        before = exact_contents(tables)

        def fill(h: list[Any]) -> None:
            d, lst = h
            d["a"] = 10  # several writes to the same key
            d.incr("a", 5)
            d.setdefault("z", [0])
            d.ref("z").append(1)  # a nested write into a key the batch added
            d.ref("b", 1, "x").incr()  # nested, then whole-table writes of the same table
            del d["a"]  # a delete, then a re-insert: "a" would move to the end
            d["a"] = 1
            d.ref("b").append("after")
            d.popitem()
            d.update({"c": 4, "new": 5})
            lst.ref(1, "k").extend([3, 4])  # the second table, nested and whole
            lst.insert(0, "first")
            lst.ref(1).append(9)  # index 1 is now what was at 0
            lst.append(7)
            lst.sort(reverse=True)  # fails: a str and a list do not compare; everything before is undone
            lst.reverse()

        error = _abort(proxy, tables, fill)
        assert error.index == 14 and type(error.error) is TypeError
        assert exact_contents(tables) == before


def test_aborted_batch_restores_a_nested_value_replaced_by_a_top_level_write(proxy: cyberdb.Proxy) -> None:
    with two_tables(proxy, [{"a": {"x": [1]}, "b": 0}, [[0], [1]]]) as tables:
        before = exact_contents(tables)

        def fill(h: list[Any]) -> None:
            d, lst = h
            d.ref("a", "x").append(2)
            d["a"] = "replaced"
            d["a"] = {"x": []}
            d.ref("a", "x").append(3)
            d.ref("a").clear()
            lst.ref(0).append(5)
            lst[0] = [9]
            lst.ref(0).append(6)
            del lst[0]
            lst.ref(-1).insert(0, 8)
            lst *= 2
            lst.ref(1).append(4)
            d.pop("missing")

        error = _abort(proxy, tables, fill)
        assert error.index == 12 and type(error.error) is KeyError and error.error.args == ("missing",)
        assert exact_contents(tables) == before


def test_aborted_batch_undoes_single_key_writes_and_appends(proxy: cyberdb.Proxy) -> None:
    with two_tables(proxy, [{"a": 1, "b": 2}, [1]]) as tables:
        before = exact_contents(tables)

        def fill(h: list[Any]) -> None:
            d, lst = h
            d["new"] = [1]  # a new key: undone by deleting it
            d.incr("a", 2)  # an existing key: undone by putting the old value back
            d.incr("other")
            d.setdefault("b", 5)
            d.setdefault("c", {})
            d.ref("new").append(2)
            d["a"] = "again"
            lst.append([0])
            lst.append(2)
            lst.ref(1).append(1)
            lst.append(3)
            lst.remove("missing")

        error = _abort(proxy, tables, fill)
        assert error.index == 11 and type(error.error) is ValueError
        assert exact_contents(tables) == before


def test_multiplied_nested_lists_hold_no_shared_values(proxy: cyberdb.Proxy, name: str) -> None:
    d = proxy.create_cyberdict(name, {"a": [[1], {"k": 0}]})
    try:
        handle: Any = d.ref("a")  # Any: CyberRef borrows CyberList's methods, which mypy types for CyberList
        handle *= 2
        handle.ref(0).append(2)  # a shared inner list would change in both copies
        d.ref("a", 1).ref("k").incr()
        assert d.todict() == {"a": [[1, 2], {"k": 1}, [1], {"k": 0}]}
    finally:
        proxy.delete_table(name)


def test_ref_incr_adds_to_the_value_the_handle_points_at(proxy: cyberdb.Proxy, name: str) -> None:
    """The documented deviation: on a handle, incr(amount) is not incr(key) of a nested dict."""
    d = proxy.create_cyberdict(name, {"stats": {"hits": 1}})
    try:
        with pytest.raises(TypeError):
            d.ref("stats").incr(2)  # the handle points at a dict, not at a number
        assert d.ref("stats").ref("hits").incr(2) == 3
        assert d.ref("stats", "misses").incr(Decimal("0.5")) == Decimal("0.5")  # a missing last key counts as 0
        with pytest.raises(TypeError):
            d.ref("stats", "hits").incr(True)
        assert canon(d.todict()) == canon({"stats": {"hits": 3, "misses": Decimal("0.5")}})
    finally:
        proxy.delete_table(name)


# Bugs found by the tests above, as minimal examples: they fail until the library is fixed.


def test_bool_index_into_a_nested_list_works_as_in_python(proxy: cyberdb.Proxy, name: str) -> None:
    """``d["a"][True]`` is ``d["a"][1]`` in Python, and ``d.ref("a")[True]`` agrees; a path must too.

    store.walk() and store._incr() refuse any list index whose type is not exactly int, with a TypeError Python
    never raises ("list indices must be integers or slices, not bool"); ``l.ref(True)`` and ``l.incr(True)`` work
    only because the client converts a table-level index with operator.index().
    """
    d = proxy.create_cyberdict(name, {"a": [10, 20]})
    try:
        assert d.ref("a")[True] == 20
        assert d.ref("a", True).copy() == 20
        assert d.ref("a", True).incr() == 21
        assert d.todict() == {"a": [10, 21]}
    finally:
        proxy.delete_table(name)


def test_pipeline_methods_that_return_none_give_a_pending(proxy: cyberdb.Proxy, name: str) -> None:
    """The README: pipeline tables "queue calls that return cyberdb.Pending".

    But a method whose result is always None (``remove``, ``append``, ``clear``, ``update``, ``sort``, ...) returns
    None in a pipeline, so the error of such a call (``remove`` of a missing value) can only be found by its
    position in ``pipe.results``: tables.py drops the Pending (``self._run(...)`` without ``return``).
    """
    proxy.create_cyberlist(name, [1])
    try:
        with proxy.pipeline() as pipe:
            table: Any = pipe.get_cyberlist(name)  # Any: remove() is typed to return None
            removed = table.remove(5)
        assert isinstance(removed, cyberdb.Pending)
        with pytest.raises(ValueError):
            removed.result()
    finally:
        proxy.delete_table(name)


def test_iterating_a_pipeline_list_queues_nothing(proxy: cyberdb.Proxy, name: str) -> None:
    """``list(t)`` on a pipeline's CyberList raises TypeError (it needs a reply), but leaves a ``list.len`` queued.

    list() asks ``len(t)`` for a size hint first: that queues a request and returns a Pending, list() swallows
    the TypeError of the hint, and only then does iterating raise.  The stray call shifts ``pipe.results``.
    """
    proxy.create_cyberlist(name, [1, 2])
    try:
        with proxy.pipeline() as pipe:
            t = pipe.get_cyberlist(name)
            with pytest.raises(TypeError):
                list(t)
            assert len(pipe) == 0
            t.append(3)
        assert pipe.results == [None]
    finally:
        proxy.delete_table(name)
