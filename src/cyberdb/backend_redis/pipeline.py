"""Pipelines on the Redis backend: queued table calls sent together, one plain Redis pipeline per node and round.

``with proxy.pipeline() as pipe:`` is :class:`cyberdb.pipeline.Pipeline`'s API (calls return a
:class:`~cyberdb.pipeline.Pending`; ``pipe.results`` in call order; each call on its own, one failing call does
not stop the others); only ``execute`` differs.  The plans of :mod:`.plans` are plain functions that ask their
:class:`~.plans.Runner` for one reply at a time, so a call runs here by *replay*: the plan runs with the replies
known so far, and the first request it makes beyond them is what the call sends next (plans are deterministic
given their replies).  Each round sends the next request of every call that may go, grouped by the master of its
table's slot, as one plain pipeline (no MULTI) per node, sent to every node before any is read; the replies
extend the replays.

**Order.** Calls on different tables are independent (a command touches one table), so only the order of calls on
the same table matters, and it is kept: a call whose next request may be followed by another one that depends on
the table's state (the compare-and-set paths: ``incr`` -- whose one-call fast path hands over to a compare-and-set
for Decimals, bools, big ints --, slices, ``sort``, ``*=``, ``ref()`` paths) holds back the later calls of its
table (of its key, for a dict call on one key) until it is done; a simple call (one request, plus at most the
order-free ``GET m`` that tells a miss from a deleted table) does not; and one table's calls of a round all go
to one node (a call sent with ``ASKING`` holds back the rest of its table).  So a pipeline of simple calls costs
one round trip (all nodes at once), and each compare-and-set call adds its own round trips for its table only.

**Redirections and lost replies.** A request answered ``MOVED``/``ASK``/``TRYAGAIN``/``CLUSTERDOWN`` was not run:
it is sent again in a later round (after reading the slot map again; ``ASKING`` first on the node named), as are
the later *reads* of its table in that round (a later write of that table cannot have run: every write function
names all of its table's keys, which the node does not all hold).  If a node's replies are lost, every call of
that node's round fails with ``ConnectionLostError``/``TimeoutError`` and nothing of it is sent again: a write
may have run, and is never applied twice.  I/O only through ``Router.send_many``/``read_many``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import redis
from redis.exceptions import AskError, ClusterDownError, MovedError, ResponseError, TryAgainError

from .. import protocol
from ..commands import CommandSpec
from ..errors import ConnectionLostError, CyberDBError, ServerError, TimeoutError
from ..pipeline import Pending, Pipeline
from .layout import TableKeys
from .paths import run_at_path
from .plans import PLANS, encode_key
from .routing import REDIRECTS, UNAVAILABLE_FOR

if TYPE_CHECKING:
    from .client import RedisBackendProxy

__all__ = ["RedisPipeline"]

logger = logging.getLogger(__name__)

# commands whose plan makes one request (plus, after a miss, the order-free GET m of check_table)
SIMPLE = frozenset({
    "dict.getitem", "dict.get", "dict.contains", "dict.len", "dict.setitem", "dict.set", "dict.delitem",
    "dict.setdefault", "dict.pop", "dict.popitem", "dict.clear", "dict.update", "dict.keys", "dict.values",
    "dict.items", "dict.todict", "dict.copy", "dict.scan",
    "list.getitem", "list.setitem", "list.delitem", "list.len", "list.contains", "list.append", "list.extend",
    "list.insert", "list.pop", "list.remove", "list.count", "list.index", "list.reverse", "list.clear",
    "list.tolist", "list.copy", "list.snapshot", "list.replace_if", "list.scan",
})
# dict commands about one key (args[1]): only calls on that key (or the whole table) wait behind them
KEYED = frozenset({"dict.getitem", "dict.get", "dict.contains", "dict.setitem", "dict.set", "dict.delitem",
                   "dict.setdefault", "dict.pop", "dict.incr"})
# simple commands whose plan returns None whatever its (non-error) reply
RESULT_NONE = frozenset({"dict.setitem", "dict.set", "dict.clear", "dict.update", "list.setitem", "list.delitem",
                         "list.append", "list.extend", "list.insert", "list.remove", "list.reverse", "list.clear"})
_REDIRECTED = (MovedError, AskError, TryAgainError, ClusterDownError)
_NOT_RUN = "function not found"


class _Need(BaseException):  # noqa: N818 - not an error: "this plan needs the reply of this request"
    """Raised by the replay runner at a plan's first request beyond the known replies (BaseException, so that
    a plan's own ``except Exception`` never swallows it)."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.args_ = args


class _Replay:
    """A :class:`~.plans.Runner` that answers from known replies and stops (``_Need``) at the next request."""

    __slots__ = ("_i", "_proxy", "_replies")

    def __init__(self, proxy: RedisBackendProxy, replies: list[Any]) -> None:
        self._proxy, self._replies, self._i = proxy, replies, 0

    def cmd(self, t: TableKeys, *args: Any) -> Any:
        if self._i == len(self._replies):
            raise _Need(args)
        reply = self._replies[self._i]
        self._i += 1
        if isinstance(reply, Exception):
            raise reply
        return reply

    def fcall(self, t: TableKeys, function: str, keys: list[bytes], *args: Any) -> Any:
        return self.cmd(t, "FCALL", function, len(keys), *keys, *args)

    def fcall_ro(self, t: TableKeys, function: str, keys: list[bytes], *args: Any) -> Any:
        return self.cmd(t, "FCALL_RO", function, len(keys), *keys, *args)

    def check_table(self, t: TableKeys) -> None:
        self._proxy.check_kind(t, self.cmd(t, "GET", t.m))


class _Call:
    """One queued call while its pipeline runs."""

    __slots__ = ("args", "ask", "deadline", "moved", "not_before", "pending", "replies", "request", "scope",
                 "simple", "spec", "t")

    def __init__(self, spec: CommandSpec, args: list[Any], pending: Pending) -> None:
        self.spec, self.args, self.pending = spec, args, pending
        self.t: TableKeys | None = None
        self.replies: list[Any] = []
        self.request: tuple[Any, ...] | None = None  # the next command to send; None once done
        self.ask: tuple[str, int] | None = None  # send it with ASKING to this node
        self.simple = spec.name in SIMPLE and not spec.path
        self.scope: bytes | None = None  # the dict key (canon) it is about; None: the whole table
        self.moved = 0
        self.not_before = 0.0
        self.deadline: float | None = None

    def fail(self, error: BaseException) -> None:
        self.request = None
        self.pending._fail(error)


class RedisPipeline(Pipeline):
    """A non-atomic pipeline of a :class:`~.client.RedisBackendProxy` (see the module docstring)."""

    def __init__(self, proxy: RedisBackendProxy) -> None:
        """A pipeline whose calls run on ``proxy``'s Redis server or cluster."""
        super().__init__(proxy, atomic=False)  # type: ignore[arg-type]
        self._backend = proxy

    def __repr__(self) -> str:
        return f"<RedisPipeline queued={len(self._queue)}>"

    def execute(self) -> list[Any]:
        """Send every queued call, shape each reply into its Pending and return ``results`` (values or errors)."""
        queue, self._queue = self._queue, []
        calls = [_Call(spec, args, pending) for spec, args, _step, pending in queue]
        # tables with a call that may hold others back: only there are a dict call's keys worth computing
        holding = {str(c.args[0]) for c in calls if not c.simple}
        live = [c for c in calls if self._start(c, str(c.args[0]) in holding)]
        while live:
            self._round(live)
            live = [c for c in live if c.request is not None]
        self.results = [p._error if p._error is not None else p._value for _s, _a, _b, p in queue]
        return self.results

    # ---- one call ---------------------------------------------------------------------------------------------

    def _start(self, c: _Call, keyed: bool) -> bool:
        """Find the call's table and first request; False if it is already settled (an error on the client)."""
        spec, args = c.spec, c.args
        try:
            if (not spec.path and spec.name not in PLANS) or spec.kind is None:
                from .client import NotSupportedError  # noqa: PLC0415 - a cycle otherwise

                raise NotSupportedError(f"{spec.name} (this command) is not supported on the Redis backend yet")
            if not spec.min_args <= len(args) - 1 <= spec.max_args:
                raise TypeError(f"{spec.name} takes {spec.min_args}..{spec.max_args} arguments, got {len(args) - 1}")
            c.t = self._backend._table(args[0], None if spec.path else spec.kind)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            c.fail(_transport(exc, spec.name))
            return False
        except Exception as exc:  # the call's own error, as the server would report it
            c.fail(exc)
            return False
        if keyed and c.t.kind == "dict":
            key: Any = None
            if spec.name in KEYED and (spec.name != "dict.incr" or _inserts_at_once(args[2])):
                key = args[1]
            elif spec.path and type(args[1]) is list and args[1]:
                key = args[1][0]
            if key is not None:
                try:
                    c.scope = encode_key(key)[0]
                except TypeError:
                    pass  # (an unhashable key: the call fails on its own; it stays ordered with the whole table)
        return self._advance(c)

    def _advance(self, c: _Call) -> bool:
        """Replay the call's plan with its replies: settle it, or set its next request (True: still running)."""
        assert c.t is not None
        spec, t = c.spec, c.t
        runner = _Replay(self._backend, c.replies)
        try:
            if spec.path:
                result = run_at_path(runner, t, spec, c.args)
            else:
                result = PLANS[spec.name](runner, t, *c.args[1:])
        except _Need as need:
            c.request = need.args_
            return True
        except ResponseError as exc:  # a library error (CYBER ...) or another Redis error reply
            c.fail(self._backend._error(exc, t))
            return False
        except Exception as exc:  # the command's own error, raised by its plan
            c.fail(exc)
            return False
        c.request = None
        c.pending._resolve(protocol.STATUS_OK, result)
        return False

    # ---- one round --------------------------------------------------------------------------------------------

    def _round(self, live: list[_Call]) -> None:
        """Send the next request of every call that may go now, one pipeline per node; take in the replies."""
        router = self._backend._router
        now = time.monotonic()
        whole: set[str] = set()  # tables whose later calls wait
        keys: set[tuple[str, bytes]] = set()  # dict keys whose later calls wait
        partly: set[str] = set()  # tables with a waiting key (a whole-table call waits behind it)
        by_node: dict[tuple[str, int], list[_Call]] = {}
        table_node: dict[str, tuple[str, int]] = {}
        soonest: float | None = None
        for c in live:
            assert c.t is not None
            name = c.t.name
            if name in whole or (c.scope is None and name in partly) or (name, c.scope) in keys:
                hold = True
            elif c.not_before > now:
                hold = True
                soonest = c.not_before if soonest is None else min(soonest, c.not_before)
            else:
                try:
                    addr = c.ask or router.node_of(c.t.slot)
                except (redis.ConnectionError, redis.TimeoutError, ClusterDownError) as exc:
                    c.fail(_transport(exc, c.spec.name) if not isinstance(exc, ClusterDownError)
                           else TimeoutError(f"{c.spec.name}: {exc}"))
                    continue
                if table_node.setdefault(name, addr) != addr:
                    hold = True  # one table's calls of a round go to one node, so that they stay in order
                else:
                    by_node.setdefault(addr, []).append(c)
                    hold = not c.simple or c.ask is not None  # later calls of its table (or key) wait for it
            if hold:
                if c.scope is None:
                    whole.add(name)
                else:
                    keys.add((name, c.scope))
                    partly.add(name)
        if not by_node:
            if soonest is not None:
                time.sleep(max(0.0, soonest - time.monotonic()))
            return
        refresh = False
        # every node gets its commands first, then the replies are read: the nodes work at the same time
        sent: dict[tuple[str, int], Any] = {}
        for addr, group in by_node.items():
            try:
                sent[addr] = router.send_many(addr, [(c.request or (), c.ask is not None) for c in group])
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                sent[addr] = exc
        try:
            for addr, group in by_node.items():
                refresh |= self._take(addr, group, sent.pop(addr))
        finally:
            for left in sent.values():  # (only if reading raised something unexpected)
                if not isinstance(left, Exception):
                    router.discard(left)
        if refresh:
            _refresh_quietly(router)

    def _take(self, addr: tuple[str, int], group: list[_Call], sent: Any) -> bool:
        """Read one node's replies into its calls; True if the slot map must be read again."""
        refresh = False
        try:
            if isinstance(sent, Exception):
                raise sent
            replies = self._backend._router.read_many(sent)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # the node's replies are lost: any of these calls may have run, so none is sent again
            error = _transport(exc, "pipeline")
            for c in group:
                c.fail(error)
            return True
        redirected: set[str] = set()
        for c, reply in zip(group, replies, strict=True):
            assert c.t is not None and c.request is not None
            c.ask = None
            if isinstance(reply, _REDIRECTED) or (isinstance(reply, ResponseError)
                                                  and _NOT_RUN in str(reply).lower()):
                redirected.add(c.t.name)
                refresh |= self._redirected(c, reply, addr)
                continue
            if c.t.name in redirected and c.request[0] not in ("FCALL", "FUNCTION"):
                continue  # a read after a redirected request of its table: sent again, in order
            if c.spec.name in RESULT_NONE and not c.replies and not c.spec.path \
                    and not isinstance(reply, Exception):
                c.request = None  # (its plan would return None: no need to run it again)
                c.pending._resolve(protocol.STATUS_OK, None)
                continue
            c.replies.append(reply)
            self._advance(c)
        return refresh

    def _redirected(self, c: _Call, reply: Exception, addr: tuple[str, int]) -> bool:
        """Prepare a request that was not run to go again; True if the slot map must be read again."""
        assert c.t is not None
        logger.debug("pipeline, slot %s: %s %s", c.t.slot, type(reply).__name__, reply)
        if isinstance(reply, MovedError):
            c.moved += 1
            if c.moved > REDIRECTS:
                c.fail(ServerError(f"slot {c.t.slot}: still MOVED after {REDIRECTS} redirections"))
            return True
        if isinstance(reply, AskError):
            c.ask = (reply.host, int(reply.port))
            return False
        if isinstance(reply, (TryAgainError, ClusterDownError)):
            now = time.monotonic()
            if c.deadline is None:
                c.deadline = now + UNAVAILABLE_FOR
            if now >= c.deadline:
                c.fail(TimeoutError(f"slot {c.t.slot} unavailable for {UNAVAILABLE_FOR:g} s: {reply}"))
            waited = now + UNAVAILABLE_FOR - c.deadline
            c.moved, c.not_before = 0, now + min(0.1, max(0.002, waited))  # 2 ms doubling, to 100 ms
            return isinstance(reply, ClusterDownError)
        try:  # "function not found": a node without the library (restarted, promoted); the call did not run
            self._backend._router.load_library_on(addr)
        except (redis.ConnectionError, redis.TimeoutError, ResponseError) as exc:
            c.fail(_transport(exc, "loading the function library") if not isinstance(exc, ResponseError)
                   else ServerError(f"Redis: {exc}"))
        return False


def _inserts_at_once(amount: Any) -> bool:
    """Whether ``d.incr(k, amount)`` of a missing key is the library's one call, in its place in the order.

    Only then may later calls on other keys go before it is done: its compare-and-set (a Decimal or big int
    amount, an inf/nan result) could insert the key after theirs, and dict order would differ from the server's.
    """
    return (type(amount) is int and -(1 << 53) < amount < 1 << 53) or (type(amount) is float
                                                                         and math.isfinite(amount))


def _transport(exc: Exception, what: str) -> CyberDBError:
    """redis-py's transport error as CyberDB's (as ``client._mapped`` does)."""
    if isinstance(exc, redis.TimeoutError):
        return TimeoutError(f"{what}: Redis timed out (the call may or may not have been applied): {exc}")
    return ConnectionLostError(f"{what}: Redis connection lost (the call may or may not have been applied): {exc}")


def _refresh_quietly(router: Any) -> None:
    try:
        router.refresh()
    except (redis.ConnectionError, redis.TimeoutError):
        pass  # the next round's commands will find out
