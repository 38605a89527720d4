"""Helpers about values shared by the tests (not fixtures)."""

from __future__ import annotations

import datetime as dt
from typing import Any


def canon(x: Any) -> Any:
    """A comparable spelling of ``x`` that includes the exact type of every part (and nan, -0.0, order)."""
    t = type(x)
    if t is list or t is tuple:
        return (t.__name__, tuple(canon(i) for i in x))
    if t is set or t is frozenset:
        return (t.__name__, tuple(sorted((canon(i) for i in x), key=repr)))
    if t is dict:  # insertion order is part of a dict's value
        return ("dict", tuple((canon(k), canon(v)) for k, v in x.items()))
    if t is dt.datetime or t is dt.time:
        # timezones are documented to come back as fixed offsets: compare the offset, not the tzinfo object
        return (t.__name__, x.replace(tzinfo=None, fold=0).isoformat(), x.utcoffset())
    return (f"{t.__module__}.{t.__qualname__}", repr(x))
