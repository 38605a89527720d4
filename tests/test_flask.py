"""The Flask extension (cyberdb.flask.CyberDB) against real servers: configuration, one proxy per app context
returned at teardown (also when the view raises), use outside requests, and the seed app written with it
(examples/flask_ext/app.py) under real Gunicorn + gevent, with and without --preload.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import click
import pytest
from conftest import PASSWORD, ServerProcess, free_port, load_dev
from flask import Flask, abort, g

import cyberdb
from cyberdb.flask import DEFAULT_URL, CyberDB

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "flask_ext"
SEED_PASSWORD = "hWjYvVdqRC"
EXPECTED = {"code": 1, "content": "Hello CyberDB!"}


def url_of(port: int, password: str = PASSWORD, encrypt: bool = False) -> str:
    """A connection URL for a loopback server."""
    return f"cyberdb://:{password}@127.0.0.1:{port}/?encrypt={int(encrypt)}"


def close_clients(*apps: Flask) -> None:
    """Close each app's client."""
    for app in apps:
        app.extensions["cyberdb"].client.close()


@pytest.fixture
def make_app() -> Iterator[Any]:
    """Make apps with the extension on a URL (``config`` goes to app.config first); their clients are closed
    after the test (idle pooled sockets left to the GC are a ResourceWarning)."""
    apps: list[Flask] = []

    def make(url: str, **config: Any) -> tuple[Flask, CyberDB]:
        app = Flask(__name__)
        app.config.update(CYBERDB_URL=url, **config)
        apps.append(app)
        return app, CyberDB(app)

    yield make
    close_clients(*apps)


@pytest.fixture
def served(in_process: Any) -> Iterator[tuple[cyberdb.Server, str]]:
    """An in-process server (its connection count is visible) and its URL."""
    db = in_process()
    yield db, url_of(db.port)


def test_configuration_is_read_and_checked_by_init_app() -> None:
    app = Flask(__name__)
    db = CyberDB()
    db.init_app(app)
    assert app.config["CYBERDB_URL"] == DEFAULT_URL and app.config["CYBERDB_OPTIONS"] == {}
    assert "not yet made" in repr(app.extensions["cyberdb"])  # no client (and no connection) before first use
    with pytest.raises(RuntimeError, match="already registered"):
        db.init_app(app)

    app = Flask(__name__)
    CyberDB(app, url="cyberdb://:secret@db.internal:9999/?encrypt=1", time_out=900)
    client = app.extensions["cyberdb"].client
    assert (client.host, client.port, client.encrypt, client.pool.max_idle_time) == ("db.internal", 9999, True, 900)
    assert "secret" not in repr(app.extensions["cyberdb"])

    app = Flask(__name__)                                     # config wins over the constructor's defaults
    app.config.update(CYBERDB_URL="cyberdb://h1/", CYBERDB_OPTIONS={"port": 1234, "max_connections": 3})
    CyberDB(app, url="cyberdb://h2/", max_connections=9, socket_timeout=2.5)
    client = app.extensions["cyberdb"].client
    assert (client.host, client.port, client.pool.max_connections) == ("h1", 1234, 3)

    for config, error, match in [
        ({"CYBERDB_URL": "redis://h/"}, ValueError, "cyberdb://"),
        ({"CYBERDB_URL": "cyberdb://h/?encrpyt=1"}, ValueError, "unknown option 'encrpyt'"),
        ({"CYBERDB_OPTIONS": {"pasword": "x"}}, TypeError, "unknown CyberDB client option.*'pasword'"),
        ({"CYBERDB_OPTIONS": [("encrypt", True)]}, TypeError, "must be a dict"),
    ]:
        app = Flask(__name__)
        app.config.update(config)
        with pytest.raises(error, match=match):
            CyberDB(app)

    with Flask(__name__).app_context(), pytest.raises(RuntimeError, match="not initialized on this app"):
        CyberDB().proxy  # noqa: B018 - the property is what raises


def test_one_proxy_per_app_context_returned_at_teardown(served: tuple[cyberdb.Server, str], name: str,
                                                         make_app: Any) -> None:
    server, url = served
    app, db = make_app(url)
    seen: list[Any] = []

    @app.get("/")
    def index() -> dict[str, Any]:
        if name not in db.proxy.tables():
            db.proxy.create_cyberdict(name)
        table = db.get_cyberdict(name)
        seen.append((db.proxy, db.proxy, table, db.client))
        return {"n": table.incr("n")}

    client = app.test_client()
    assert client.get("/").json == {"n": 1}
    assert client.get("/").json == {"n": 2}
    (p1, p1_again, table1, c1), (p2, _, _, c2) = seen
    assert p1 is p1_again and p1 is not p2                    # one proxy per request
    assert c1 is c2 is app.extensions["cyberdb"].client       # one client per app
    with pytest.raises(cyberdb.DisconnectedError):            # the request's connection went back at teardown
        table1["n"]
    assert server.info()["connections"] == 1                  # ... and was reused by the next request


def test_connections_go_back_when_views_raise(served: tuple[cyberdb.Server, str], name: str,
                                              make_app: Any) -> None:
    server, url = served
    app, db = make_app(url, CYBERDB_OPTIONS={"max_connections": 1}, TESTING=True)

    @app.get("/boom")
    def boom() -> str:
        db.proxy.create_cyberdict(name) if name not in db.proxy.tables() else None
        db.get_cyberdict(name).incr("calls")
        raise RuntimeError("the view failed after using the database")

    @app.get("/gone")
    def gone() -> str:
        db.get_cyberdict(name).incr("calls")
        abort(404)

    @app.get("/ok")
    def ok() -> dict[str, Any]:
        return {"calls": db.get_cyberdict(name)["calls"]}

    with app.app_context():
        db.client.pool.wait_timeout = 2.0                     # a leaked connection would time the next one out
    client = app.test_client()
    with pytest.raises(RuntimeError, match="the view failed"):
        client.get("/boom")                                   # TESTING-style propagation ...
    app.config["PROPAGATE_EXCEPTIONS"] = False                # ... and as in production: a 500 page
    for _ in range(40):
        assert client.get("/boom").status_code == 500
        assert client.get("/gone").status_code == 404
    assert client.get("/ok").json == {"calls": 81}
    assert server.info()["connections"] == 1                  # no connection leaked: one, reused 82 times


def test_usable_outside_requests_with_an_app_context(served: tuple[cyberdb.Server, str], name: str,
                                                     make_app: Any) -> None:
    server, url = served
    app, db = make_app(url)

    @app.cli.command("seed")
    @click.argument("content")
    def seed(content: str) -> None:
        db.proxy.create_cyberdict(name, {"content": content})
        click.echo(f"seeded {db.get_cyberdict(name)['content']}")

    result = app.test_cli_runner().invoke(args=["seed", "Hello CyberDB!"])
    assert result.exit_code == 0, result.output
    assert result.output == "seeded Hello CyberDB!\n"
    with app.app_context():
        table = db.get_cyberdict(name)
        assert table["content"] == "Hello CyberDB!"
        assert g._cyberdb_proxy is db.proxy
    with pytest.raises(cyberdb.DisconnectedError):            # given back when the context ended
        table["content"]
    with pytest.raises(RuntimeError, match="application context"):
        db.proxy  # noqa: B018
    assert server.info()["connections"] == 1


def test_one_extension_serves_several_apps_each_with_its_client(served: tuple[cyberdb.Server, str],
                                                                make_server: Any, name: str) -> None:
    _server, url = served
    other = make_server(encrypt=True)
    db = CyberDB()
    first, second = Flask("first"), Flask("second")
    first.config["CYBERDB_URL"] = url
    second.config["CYBERDB_URL"] = url_of(other.port, encrypt=True)
    db.init_app(first)
    db.init_app(second)
    for app in (first, second):
        with app.app_context():
            db.proxy.create_cyberdict(name, {"app": app.name})
    for app in (first, second):
        with app.app_context():
            assert db.get_cyberdict(name)["app"] == app.name and db.client.encrypt is (app is second)
    assert first.extensions["cyberdb"].client is not second.extensions["cyberdb"].client
    close_clients(first, second)


# ---- the seed app written with the extension, under real Gunicorn + gevent ---------------------------------------

def seed_centre(server: ServerProcess, content: str) -> None:
    """Set table centre's content, as cyberdb_init.py does (creating the table the first time)."""
    client = server.connect()
    try:
        with client.get_proxy() as proxy:
            if "centre" not in proxy.tables():
                proxy.create_cyberdict("centre")
            proxy.get_cyberdict("centre")["content"] = content
    finally:
        client.close()


# With --preload the master imports the app; this hook makes the master *use* the client before forking, so the
# workers inherit a client with an open (encrypted) pooled connection that they must not share.
PRELOAD_HOOK = '''
def when_ready(server):
    from app import app, db
    with app.app_context():
        content = db.get_cyberdict("centre")["content"]
    server.log.info("master read %r through pid %s's client", content, __import__("os").getpid())
'''


@pytest.mark.deploy
@pytest.mark.timeout(180)
@pytest.mark.parametrize("preload", [False, True], ids=["fork-then-import", "preload"])
def test_the_flask_ext_example_under_gunicorn_and_gevent(make_server: Any, tmp_path: Path, preload: bool) -> None:
    dev = load_dev()
    gunicorn = Path(sys.executable).parent / "gunicorn"
    assert gunicorn.is_file(), f"no gunicorn next to {sys.executable}: pip install -e '.[dev]'"
    server = make_server(password=SEED_PASSWORD, encrypt=True)  # as cyberdb_serve.py: encrypt=True
    seed_centre(server, "Hello CyberDB!")
    port = free_port()
    argv = [str(gunicorn), "-w", "2", "-k", "gevent", "-b", f"127.0.0.1:{port}",
            "--control-socket", str(tmp_path / "gunicorn.ctl")]  # not the per-user default other runs share
    if preload:
        (tmp_path / "hooks.py").write_text(PRELOAD_HOOK)
        argv += ["--preload", "-c", str(tmp_path / "hooks.py")]
    env = dict(os.environ, FLASK_CYBERDB_URL=url_of(server.port, SEED_PASSWORD, encrypt=True))
    log = tmp_path / "gunicorn.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*argv, "app:app"], cwd=EXAMPLE, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}/"
        _, body = dev.wait_for_http(url, timeout=90, proc=proc)
        assert dev.is_expected_body(body), body

        def get(_: int) -> tuple[int, bytes]:
            try:
                return dev.http_get(url, timeout=15)  # type: ignore[no-any-return]
            except OSError as exc:
                return -1, repr(exc).encode()

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(get, range(200)))
        bad = [(status, body[:200]) for status, body in results if status != 200 or not dev.is_expected_body(body)]
        assert not bad, f"{len(bad)} of 200 failed, e.g. {bad[:3]}\n{log.read_text(errors='replace')[-4000:]}"
        # the table changes: every worker reads it on its own connection, not a cached or shared one
        seed_centre(server, "Hello again!")
        with ThreadPoolExecutor(16) as pool:
            again = list(pool.map(get, range(40)))
        assert all(s == 200 and b'"content":"Hello again!"' in b for s, b in again), again[:3]
        if preload:
            assert "master read 'Hello CyberDB!'" in log.read_text(errors="replace")
    finally:
        rc = dev.stop_process(proc, timeout=15, resend_every=1.0)
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]
    # dev.stop_process repeats SIGTERM every second (for workers still booting); one may reach a master that is
    # already shutting down, which then dies of it: a clean stop either way
    clean = rc == 0 or rc == -signal.SIGTERM and "Shutting down: Master" in text
    assert clean, f"gunicorn exited with {rc}\n{text[-4000:]}"
