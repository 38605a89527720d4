"""CyberDBCache (cyberdb.cache) against real servers: cachelib's API and semantics, then the real Flask-Caching and
Flask-Session packages using it through the Flask test client.

Expiry is waited for by polling the table with a bounded deadline (keys expire on the server's clock), never by
sleeping for the timeout.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from conftest import PASSWORD, ServerProcess
from flask import Flask, jsonify, session
from flask_caching import Cache
from flask_session import Session

import cyberdb
from cyberdb.cache import CyberDBCache
from cyberdb.flask import CyberDB

EXPIRY_DEADLINE = 15.0  # seconds: a 1 s expiry is observed well within this, even on a loaded machine


def url_of(srv: ServerProcess) -> str:
    """The connection URL of a test server (its password and encryption)."""
    return f"cyberdb://:{srv.password}@{srv.host}:{srv.port}/?encrypt={int(srv.encrypt)}"


def wait_until(predicate: Callable[[], bool], what: str, deadline: float = EXPIRY_DEADLINE) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``deadline`` seconds."""
    end = time.monotonic() + deadline
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"{what} did not happen within {deadline} s")
        time.sleep(0.05)  # polling interval of a bounded wait, not a synchronisation sleep


@pytest.fixture
def make_cache(server: ServerProcess, name: str) -> Iterator[Callable[..., CyberDBCache]]:
    """Make CyberDBCaches on ``server`` (table ``name`` unless told otherwise); their clients are closed after."""
    made: list[CyberDBCache] = []

    def make(**kwargs: Any) -> CyberDBCache:
        kwargs.setdefault("table", name)
        cache = CyberDBCache(url_of(server), **kwargs)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        cache.client.close()


def test_the_cachelib_api(make_cache: Callable[..., CyberDBCache], proxy: cyberdb.Proxy, name: str) -> None:
    cache = make_cache()
    assert name not in proxy.tables()
    assert cache.get("a") is None and not cache.has("a")  # the table is made on first use
    assert proxy.tables()[name] == "CyberDict"
    values = [None, True, 0, 2**70, 1.5, "s", b"\x00", (1, [2, {"k": (3,)}]), {1, 2}, frozenset({3}),
              Decimal("1.10"), uuid.UUID(int=7), dt.datetime(2026, 1, 2, 3, 4, 5), 1 + 2j]
    for i, value in enumerate(values):
        assert cache.set(f"v{i}", value) is True
        got = cache.get(f"v{i}")
        assert got == value and type(got) is type(value)
    assert cache.has("v0") and cache.get("v0") is None  # a stored None is there, unlike a missing key
    assert cache.get_many("v1", "missing", "v7") == [True, None, (1, [2, {"k": (3,)}])]
    assert cache.get_dict("v4", "v5") == {"v4": 1.5, "v5": "s"}
    assert cache.add("v5", "other") is False and cache.get("v5") == "s"
    assert cache.add("new", "n") is True and cache.get("new") == "n"
    assert cache.set_many({"m1": 1, "m2": [2]}) == ["m1", "m2"]
    assert cache.get_many("m1", "m2") == [1, [2]]
    assert cache.delete("m1") is True and cache.delete("m1") is False
    assert cache.delete_many("m2", "never-there") == ["m2", "never-there"]
    assert not cache.has("m2")
    assert cache.inc("n") == 1 and cache.inc("n", 5) == 6 and cache.dec("n", 2) == 4 and cache.dec("d") == -1
    assert cache.get("n") == 4
    cache.set("text", "x")
    with pytest.raises(TypeError):
        cache.inc("text")
    assert cache.clear() is True
    assert proxy.get_cyberdict(name).todict() == {}
    assert cache.get_many() == [] and cache.set_many({}) == [] and cache.delete_many() == []


def test_timeouts_follow_cachelib(make_cache: Callable[..., CyberDBCache], proxy: cyberdb.Proxy, name: str) -> None:
    cache = make_cache(default_timeout=100)
    cache.set("default", 1)                                   # None -> default_timeout
    table = proxy.get_cyberdict(name)
    left = table.ttl("default")
    assert left is not None and 90 < left <= 100
    cache.set("never", 1, timeout=0)                          # 0 -> never expires
    assert table.ttl("never") is None
    cache.set("delta", 1, timeout=dt.timedelta(minutes=2))
    left = table.ttl("delta")
    assert left is not None and 110 < left <= 120
    cache.set("default", 2, timeout=0)                        # storing again replaces the expiry
    assert table.ttl("default") is None
    cache.set("gone", 1, timeout=-1)                          # expired at once: nothing stored
    assert not cache.has("gone")
    cache.set_many({"a": 1, "b": 2}, timeout=50)
    assert all(0 < (table.ttl(k) or 0) <= 50 for k in ("a", "b"))
    assert cache.add("added", 1, timeout=30)                  # add sets the expiry in the same atomic step
    left = table.ttl("added")
    assert left is not None and 0 < left <= 30
    cache.inc("a")                                            # incr keeps an expiry, as Redis INCRBY
    assert table.ttl("a") is not None and cache.get("a") == 2

    cache.set("short", "v", timeout=1)
    cache.add("short-add", "v", timeout=1)
    wait_until(lambda: not cache.has("short") and not cache.has("short-add"), "expiry of 1 s keys")
    assert cache.get("short") is None and "short" not in table
    assert cache.add("short", "again") is True                # absent again, so add succeeds


def test_add_is_atomic_under_contention(make_cache: Callable[..., CyberDBCache]) -> None:
    caches = [make_cache() for _ in range(4)]                 # four clients, as four workers
    winners: list[int] = []
    barrier = threading.Barrier(8)

    def contend(i: int) -> None:
        barrier.wait(10)
        if caches[i % 4].add("lock", i, timeout=60):
            winners.append(i)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(winners) == 1, winners
    assert caches[0].get("lock") == winners[0]


def test_inc_is_atomic_across_clients(make_cache: Callable[..., CyberDBCache]) -> None:
    caches = [make_cache() for _ in range(4)]

    def bump(cache: CyberDBCache) -> None:
        for _ in range(50):
            cache.inc("hits")

    threads = [threading.Thread(target=bump, args=(c,)) for c in caches]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert caches[0].get("hits") == 200


def test_unstorable_values_raise_a_clear_type_error(make_cache: Callable[..., CyberDBCache], name: str,
                                                     proxy: cyberdb.Proxy) -> None:
    cache = make_cache()
    cache.set("kept", 1)

    class Thing:
        pass

    for call in (lambda: cache.set("bad", Thing()), lambda: cache.add("bad", Thing()),
                 lambda: cache.set_many({"ok": 1, "bad": {"nested": Thing()}})):
        with pytest.raises(TypeError, match=r"cannot store a value of type .*Thing.*cache key 'bad'.*never pickles"):
            call()
    assert proxy.get_cyberdict(name).todict() == {"kept": 1}  # nothing stored, not even set_many's good item


def test_key_prefixes_share_a_table_and_clear_only_their_keys(make_cache: Callable[..., CyberDBCache],
                                                              proxy: cyberdb.Proxy, name: str) -> None:
    a, b = make_cache(key_prefix="a:"), make_cache(key_prefix=lambda: "b:")
    a.set("k", 1)
    b.set("k", 2)
    assert (a.get("k"), b.get("k")) == (1, 2)
    assert set(proxy.get_cyberdict(name).keys()) == {"a:k", "b:k"}
    a.clear()
    assert a.get("k") is None and b.get("k") == 2
    make_cache().clear()                                      # no prefix: the whole table
    assert proxy.get_cyberdict(name).todict() == {}


def test_the_table_is_made_bounded_and_made_again_if_deleted(make_cache: Callable[..., CyberDBCache],
                                                             proxy: cyberdb.Proxy, name: str) -> None:
    cache = make_cache(maxsize=3)
    for i in range(5):
        cache.set(f"k{i}", i)
    assert proxy.get_cyberdict(name).todict() == {"k2": 2, "k3": 3, "k4": 4}  # least recently used evicted
    proxy.delete_table(name)
    cache.set("again", 1)
    assert cache.get_many("again") == [1]
    cache.delete_many("again")                                # the atomic-batch path finds the table too
    proxy.delete_table(name)
    assert cache.add("x", 1) is True and cache.get("x") == 1  # and so does the transaction


def test_constructor_checks() -> None:
    client = cyberdb.Client()
    with pytest.raises(ValueError, match="either client= or a url"):
        CyberDBCache("cyberdb://127.0.0.1/", client=client)
    with pytest.raises(ValueError, match="unknown option"):
        CyberDBCache("cyberdb://127.0.0.1/?encrpyt=1")
    with pytest.raises(ValueError, match="table"):
        CyberDBCache(table="")
    assert CyberDBCache(client=client).client is client
    assert "secret" not in repr(CyberDBCache("cyberdb://:secret@127.0.0.1/"))


# ---- Flask-Caching ---------------------------------------------------------------------------------------------

@pytest.fixture
def caching_app(server: ServerProcess, name: str) -> Iterator[Callable[..., tuple[Flask, Cache]]]:
    """Make Flask apps with Flask-Caching on CyberDBCache (CACHE_TYPE = "cyberdb.cache.factory"), table ``name``;
    their cache clients are closed after the test."""
    caches: list[Cache] = []

    def make(**config: Any) -> tuple[Flask, Cache]:
        app = Flask(__name__)
        app.config.update(CACHE_TYPE="cyberdb.cache.factory", CACHE_CYBERDB_URL=url_of(server),
                          CACHE_CYBERDB_TABLE=name, **config)
        caches.append(Cache(app))
        return app, caches[-1]

    yield make
    for cache in caches:
        cache.cache.client.close()


def test_flask_caching_memoize_cached_and_delete_memoized(caching_app: Callable[..., tuple[Flask, Cache]],
                                                          proxy: cyberdb.Proxy, name: str) -> None:
    app, cache = caching_app(CACHE_DEFAULT_TIMEOUT=60)
    backend = cache.cache
    assert isinstance(backend, CyberDBCache) and backend.table == name and backend.default_timeout == 60
    assert backend.key_prefix == "flask_cache_"               # Flask-Caching's CACHE_KEY_PREFIX
    calls = {"square": 0, "view": 0}

    @cache.memoize()
    def square(x: int) -> dict[str, Any]:
        calls["square"] += 1
        return {"x": x, "square": x * x, "at": (x, "t")}

    @app.get("/page")
    @cache.cached(timeout=60)
    def page() -> dict[str, Any]:
        calls["view"] += 1
        return {"n": calls["view"]}

    with app.app_context():
        assert square(3) == square(3) == {"x": 3, "square": 9, "at": (3, "t")}
        assert square(4)["square"] == 16
        assert calls["square"] == 2
        cache.delete_memoized(square, 3)                      # only square(3)
        square(3), square(4)
        assert calls["square"] == 3
        cache.delete_memoized(square)                         # every square(...)
        square(3), square(4)
        assert calls["square"] == 5
    client = app.test_client()
    assert client.get("/page").json == client.get("/page").json == {"n": 1}
    assert calls["view"] == 1
    stored = proxy.get_cyberdict(name).todict()
    assert any(k.startswith("flask_cache_view//page") for k in stored), stored
    with app.app_context():
        cache.clear()
    assert proxy.get_cyberdict(name).todict() == {}
    assert client.get("/page").json == {"n": 2}


def test_flask_caching_timeouts_expire(caching_app: Callable[..., tuple[Flask, Cache]], proxy: cyberdb.Proxy,
                                       name: str) -> None:
    app, cache = caching_app()
    calls = {"n": 0}

    @app.get("/")
    @cache.cached(timeout=1)
    def index() -> str:
        calls["n"] += 1
        return f"computed {calls['n']}"

    client = app.test_client()
    assert client.get("/").text == client.get("/").text == "computed 1"
    table = proxy.get_cyberdict(name)
    (key,) = table.keys()
    assert 0 < (table.ttl(key) or 0) <= 1
    wait_until(lambda: key not in table, "expiry of the cached view")
    assert client.get("/").text == "computed 2"


def test_flask_caching_refuses_response_objects_and_caches_data(caching_app: Callable[..., tuple[Flask, Cache]],
                                                                caplog: pytest.LogCaptureFixture) -> None:
    app, cache = caching_app()
    calls = {"response": 0, "data": 0}

    @app.get("/response")
    @cache.cached(timeout=60)
    def response_view() -> Any:
        calls["response"] += 1
        return jsonify(n=calls["response"])                   # a Response object: not storable

    @cache.cached(timeout=60, key_prefix="report-data")     # the documented way: cache the data ...
    def report_data() -> dict[str, int]:
        calls["data"] += 1
        return {"n": calls["data"]}

    @app.get("/data")
    def data_view() -> Any:
        return jsonify(report_data())                         # ... and build the Response from it

    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="flask_caching"):
        assert client.get("/response").json == {"n": 1}
        assert client.get("/response").json == {"n": 2}       # never cached: Flask-Caching logs and goes on
    assert any("cannot store a value of type flask.wrappers.Response" in str(r.exc_info[1])
               for r in caplog.records if r.exc_info), caplog.text
    assert client.get("/data").json == client.get("/data").json == {"n": 1}
    app.debug = True                                          # in debug mode Flask-Caching re-raises it
    with pytest.raises(TypeError, match="flask.wrappers.Response.*cache key"):
        client.get("/response")


def test_flask_caching_shares_the_extensions_client(server: ServerProcess, name: str) -> None:
    app = Flask(__name__)
    app.config.update(CYBERDB_URL=url_of(server), CACHE_TYPE="cyberdb.cache.factory", CACHE_CYBERDB_TABLE=name)
    CyberDB(app)
    cache = Cache(app)
    assert cache.cache.client is app.extensions["cyberdb"].client  # one pool per process
    with app.app_context():
        cache.set("k", [1])
        assert cache.get("k") == [1]
    app.extensions["cyberdb"].client.close()

    other = Flask(__name__)                                   # CACHE_OPTIONS: cyberdb.Client arguments
    other.config.update(CACHE_TYPE="cyberdb.cache.factory", CACHE_CYBERDB_TABLE=name,
                        CACHE_CYBERDB_URL=f"cyberdb://{server.host}:{server.port}/",
                        CACHE_OPTIONS={"password": PASSWORD, "encrypt": server.encrypt})
    cache = Cache(other)
    with other.app_context():
        assert cache.get("k") == [1]
    cache.cache.client.close()


# ---- Flask-Session ---------------------------------------------------------------------------------------------

def session_app(srv: ServerProcess, table: str, **config: Any) -> Flask:
    """A login-style app with Flask-Session on CyberDBCache (SESSION_TYPE = "cachelib")."""
    app = Flask(__name__)
    app.config.update(SESSION_TYPE="cachelib", SESSION_CACHELIB=CyberDBCache(url_of(srv), table=table), TESTING=True,
                      **config)
    Session(app)

    @app.post("/login/<user>")
    def login(user: str) -> dict[str, Any]:
        session["user"] = user
        session["since"] = dt.datetime(2026, 12, 2, 1, 0)
        return {"ok": True}

    @app.get("/whoami")
    def whoami() -> dict[str, Any]:
        session["visits"] = session.get("visits", 0) + 1
        return {"user": session.get("user"), "visits": session["visits"], "since_type": type(session.get("since"))
                .__name__}

    @app.post("/logout")
    def logout() -> dict[str, Any]:
        session.clear()
        return {"ok": True}

    @app.post("/bad")
    def bad() -> dict[str, Any]:
        session["obj"] = object()
        return {"ok": True}

    return app


def _close_session_client(app: Flask) -> None:
    app.config["SESSION_CACHELIB"].client.close()


def test_flask_session_survives_requests_and_app_instances(server: ServerProcess, proxy: cyberdb.Proxy,
                                                            name: str) -> None:
    first, second = session_app(server, name), session_app(server, name)  # two apps, e.g. two hosts
    try:
        a = first.test_client()
        assert a.post("/login/ann").json == {"ok": True}
        assert a.get("/whoami").json == {"user": "ann", "visits": 1, "since_type": "datetime"}
        assert a.get("/whoami").json["visits"] == 2
        cookie = a.get_cookie("session")
        assert cookie is not None
        stored = proxy.get_cyberdict(name)
        key = f"session:{cookie.value}"                       # Flask-Session's key prefix, our codec's values
        assert stored[key]["user"] == "ann" and stored[key]["visits"] == 2
        b = second.test_client()
        b.set_cookie("session", cookie.value)
        assert b.get("/whoami").json == {"user": "ann", "visits": 3, "since_type": "datetime"}
        assert a.get("/whoami").json["visits"] == 4            # one session, seen by both apps
        assert 0 < (stored.ttl(key) or 0) <= 31 * 86400        # PERMANENT_SESSION_LIFETIME, 31 days
        assert a.post("/logout").json == {"ok": True}
        assert key not in stored
        assert b.get("/whoami").json["user"] is None
        with pytest.raises(TypeError, match="builtins.object.*cache key 'session:"):
            a.post("/bad")
    finally:
        _close_session_client(first)
        _close_session_client(second)


def test_flask_sessions_expire(server: ServerProcess, proxy: cyberdb.Proxy, name: str) -> None:
    app = session_app(server, name, PERMANENT_SESSION_LIFETIME=dt.timedelta(seconds=1))
    try:
        client = app.test_client()
        client.post("/login/bob")
        cookie = client.get_cookie("session")
        assert cookie is not None
        stored, key = proxy.get_cyberdict(name), f"session:{cookie.value}"
        assert stored[key]["user"] == "bob" and 0 < (stored.ttl(key) or 0) <= 1
        wait_until(lambda: key not in stored, "expiry of the session")
        assert client.get("/whoami").json["user"] is None      # the old cookie finds nothing: a new session
    finally:
        _close_session_client(app)
