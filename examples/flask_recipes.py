"""Flask recipes on CyberDB: a cache decorator with expiry, a job queue with a worker, live updates.

Run it as is: it starts a CyberDB server on a free loopback port, drives the app with Flask's test client, and
stops everything.  In a real deployment the app runs under Gunicorn (see examples/flask_gunicorn) and the worker
is its own process (`python -c "import flask_recipes as r; r.work_forever()"`).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

from flask import Flask, Response, g, request

import cyberdb

PASSWORD = "recipes-example"
client: cyberdb.Client | None = None  # one client (and connection pool) per process
app = Flask(__name__)


@app.before_request
def before_request() -> None:
    """A proxy per request, from the process's pool."""
    assert client is not None
    g.db = client.get_proxy()
    g.db.connect()


@app.teardown_request
def teardown_request(exc: BaseException | None) -> None:
    """The proxy goes back to the pool, also when the view raised."""
    db = g.pop("db", None)
    if db is not None:
        db.close()


# ---- 1. a cache decorator with expiry --------------------------------------------------------------------------

def cached(ttl: float) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Cache a view's result in the CyberDict "cache" for ``ttl`` seconds, per path and query string."""
    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            cache = g.db.get_cyberdict("cache")
            key = f"{view.__name__}:{request.full_path}"
            hit = cache.get(key)  # an expired entry is simply absent
            if hit is not None:
                return hit
            result = view(*args, **kwargs)
            cache.set(key, result, ttl=ttl)
            return result
        return wrapper
    return decorate


calls = {"report": 0}


@app.get("/report")
@cached(ttl=30)
def report() -> dict[str, Any]:
    """An expensive view: computed once per 30 s, whatever the number of workers."""
    calls["report"] += 1
    return {"total": sum(range(1_000_000)), "computed_at": time.time()}


# ---- 2. a job queue with a worker -----------------------------------------------------------------------------

@app.post("/jobs")
def submit() -> dict[str, Any]:
    """Queue a job; a worker picks it up within a millisecond."""
    job = request.get_json()
    g.db.get_cyberlist("jobs").append(job)
    return {"queued": job}


def work(proxy: cyberdb.Proxy, timeout: float = 30) -> Any | None:
    """Take one job (waiting up to ``timeout`` s), run it, record the result; None if no job came.

    ``into=processing`` moves the job atomically: if this worker dies mid-job, the job stays in "processing"
    for a supervisor to re-queue, instead of being lost.
    """
    jobs, processing = proxy.get_cyberlist("jobs"), proxy.get_cyberlist("processing")
    try:
        job = jobs.pop(0, timeout=timeout, into=processing)
    except IndexError:
        return None
    result = {"job": job, "square": job["n"] ** 2}
    proxy.get_cyberdict("results")[job["id"]] = result
    processing.remove(job)  # done: no longer in flight
    proxy.publish("events", {"done": job["id"]})  # live update for whoever listens
    return result


def work_forever() -> None:
    """The worker process's main loop."""
    assert client is not None
    with client.get_proxy() as proxy:
        while True:
            work(proxy)


# ---- 3. live updates with publish/subscribe --------------------------------------------------------------------

@app.get("/events")
def events() -> Response:
    """Server-sent events: every message published on "events", as it comes (stops after 10 s of silence)."""
    assert client is not None
    db = client  # the stream outlives the request's proxy: it takes its own

    def stream() -> Iterator[str]:
        with db.get_proxy() as proxy, proxy.subscribe("events", timeout=10) as sub:
            for _channel, value in sub:
                yield f"data: {json.dumps(value)}\n\n"
    return Response(stream(), mimetype="text/event-stream")


def main() -> None:
    """Start a server, exercise each recipe, print what happened, stop."""
    global client
    server = cyberdb.Server()
    server.start(host="127.0.0.1", port=0, password=PASSWORD)
    try:
        client = cyberdb.connect("127.0.0.1", server.port, password=PASSWORD)
        with client.get_proxy() as proxy:
            proxy.create_cyberdict("cache")
            proxy.create_cyberlist("jobs")
            proxy.create_cyberlist("processing")
            proxy.create_cyberdict("results")
        web = app.test_client()
        first, second = web.get("/report").get_json(), web.get("/report").get_json()
        print("cache: computed", calls["report"], "time(s), same answer:", first == second)

        with client.get_proxy() as proxy:
            got: list[Any] = []
            worker = threading.Thread(target=lambda: got.append(work(proxy, timeout=10)))
            worker.start()  # waits for a job
            with client.get_proxy() as listener, listener.subscribe("events", timeout=10) as sub:
                web.post("/jobs", json={"id": "j1", "n": 12})
                worker.join()
                print("queue: worker got", got[0])
                print("events: received", sub.get(timeout=10))
            print("queue: in flight after the job:", proxy.get_cyberlist("processing").tolist())
    finally:
        if client is not None:
            client.close()
        server.stop()


if __name__ == "__main__":
    main()
