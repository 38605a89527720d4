"""Locks with fencing tokens on the Redis backend, against a real redis-server and a real 3-master cluster.

``proxy.lock()`` returns the server's own :class:`cyberdb.lock.Lock`; its three commands run as library functions
in the slot of the lock's name.  The server's lock tests of ``test_atomic.py`` run as they are, then what the
backend adds: lock-guarded read-modify-writes from 4 threads, strictly increasing tokens, a stale holder refused.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import test_atomic as atomic
import test_backend_redis as base

import cyberdb
from cyberdb.backend_redis import RedisBackendClient, RedisBackendProxy
from cyberdb.commands import BY_NAME

# the backend's fixtures (a server and a cluster; a proxy of each)
backend, rclient, rproxy = base.backend, base.rclient, base.rproxy


class _Server:
    """What the server's lock tests ask of their ``server`` fixture: ``connect()`` gives a new client."""

    def __init__(self, url: str) -> None:
        self.url = url

    def connect(self) -> RedisBackendClient:
        client = cyberdb.connect(self.url)
        assert isinstance(client, RedisBackendClient)
        return client


def test_server_lock_tests_on_redis(backend: tuple[str, Any], rproxy: RedisBackendProxy, name: str) -> None:
    atomic.test_lock_exclusion_timeout_and_tokens(_Server(backend[0]), name)  # type: ignore[arg-type]
    atomic.test_stale_holder_release_and_extend_are_refused(rproxy, name)  # type: ignore[arg-type]


def test_lock_guards_read_modify_writes_from_four_threads(rclient: RedisBackendClient, rproxy: RedisBackendProxy,
                                                           name: str) -> None:
    d = rproxy.create_cyberdict(name, {"n": 0})
    tokens: list[int] = []  # appended while holding the lock: in the order of acquisition
    errors: list[BaseException] = []

    def work() -> None:
        try:
            with rclient.get_proxy() as proxy:
                table = proxy.get_cyberdict(name)
                for _ in range(50):
                    with proxy.lock(name + "-lock", ttl=30, timeout=60) as lock:
                        assert lock.token is not None
                        tokens.append(lock.token)
                        table["n"] = table["n"] + 1  # a plain read-modify-write, safe only under the lock
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        assert errors == []
        assert d["n"] == 200
        assert len(tokens) == 200 and tokens == sorted(set(tokens))
    finally:
        rproxy.delete_table(name)


def test_a_stale_holder_is_refused_and_frees_nothing(rproxy: RedisBackendProxy, name: str) -> None:
    stale = rproxy.lock(name, ttl=0.05)
    assert stale.acquire(blocking=False)
    old = stale.token
    assert old is not None
    time.sleep(0.1)  # the lease ends (Redis expires the key)
    newer = rproxy.lock(name, ttl=10)
    assert newer.acquire(blocking=False)
    assert newer.token is not None and newer.token > old
    with pytest.raises(cyberdb.LockLostError, match=r"is no longer held with token \d+ \(its lease ended or "
                                                     r"another holder took it\)"):
        stale.release()
    stale.token = old
    with pytest.raises(cyberdb.LockLostError):
        stale.extend(10)
    assert not rproxy.lock(name).acquire(blocking=False)  # the newer holder still has it
    newer.extend(10)
    newer.release()
    with pytest.raises(cyberdb.LockLostError):  # released: its token is no longer the holder's
        rproxy.call(BY_NAME["lock.release"], [name, newer.token or 0])
    assert rproxy.lock(name).acquire(blocking=False)  # free again (left to expire)


def test_lock_names_arguments_and_a_closed_proxy(rclient: RedisBackendClient, rproxy: RedisBackendProxy) -> None:
    name = "{odd} name " + str(time.monotonic_ns())  # braces would end the hash tag early: a digest is used
    with rproxy.lock(name, ttl=5) as lock:
        assert not rproxy.lock(name).acquire(blocking=False)
        assert rproxy.lock(name + "x").acquire(blocking=False)  # another lock
        assert lock.locked()
    with pytest.raises(TypeError, match="lock name"):
        rproxy.lock(5).acquire()  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="ttl"):
        rproxy.lock(name, ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        rproxy.lock(name, ttl=10 ** 9).acquire()
    proxy = rclient.get_proxy()
    with pytest.raises(cyberdb.DisconnectedError):
        proxy.lock("x").acquire()
