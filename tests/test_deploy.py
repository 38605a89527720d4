"""End-to-end tests of the seed deployment: CyberDB server, Gunicorn + gevent + Flask, restart from data.cdb.

The three seed files run byte for byte unmodified from tmp_path, on the fixed ports 9980 and 8000 they name.
Starting, readiness (connect / HTTP 200, never sleep) and stopping by PID (SIGTERM, then SIGKILL) are
dev.py's, the same code `python3 dev.py demo` runs; dev.py stays at the repo root because it must work
before the package is installed, so it is loaded here by path.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from conftest import load_dev

import cyberdb

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "hWjYvVdqRC"
REQUESTS = 200
THREADS = 32
REQUEST_TIMEOUT = 15.0

# Generous: each step has its own deadline in dev.py, this only bounds the sum.
pytestmark = [pytest.mark.deploy, pytest.mark.timeout(300)]


dev = load_dev()


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[Any]:
    """A dev.Deployment in tmp_path using this interpreter's venv; stops all it started, by PID."""
    dev.check_ports_free(wait=30.0)  # a previous test's processes may still be exiting
    python = Path(sys.executable)  # not resolved: the venv's bin dir is what holds gunicorn
    assert (python.parent / "gunicorn").is_file(), f"no gunicorn next to {python}: pip install -e '.[dev]'"
    deployment = dev.Deployment(tmp_path, python, say=print)
    try:
        yield deployment
    finally:
        deployment.stop_all()


def _copy_seed_verbatim(deployment: Any) -> None:
    """Copy the seed files to the work dir; check they equal examples/ and ../shared/seed byte for byte."""
    deployment.copy_seed()
    sources = [dev.EXAMPLE_DIR]
    if dev.SHARED_SEED_DIR.is_dir():
        sources.append(dev.SHARED_SEED_DIR)
    for name in dev.SEED_FILES:
        copied = (deployment.workdir / name).read_bytes()
        for source in sources:
            assert copied == (source / name).read_bytes(), f"{name} differs from {source / name}"


def _get(_: int) -> tuple[int, bytes]:
    """GET / once; a transport failure becomes status -1 with the error as body."""
    try:
        return dev.http_get(dev.URL, timeout=REQUEST_TIMEOUT)
    except OSError as exc:
        return -1, repr(exc).encode()


def _assert_concurrent_requests_ok(deployment: Any) -> None:
    """Send REQUESTS concurrent GET / and require 200 with exactly the seed's JSON from every one."""
    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(_get, range(REQUESTS)))
    bad = [
        (i, status, body[:300])
        for i, (status, body) in enumerate(results)
        if status != 200 or not dev.is_expected_body(body)
    ]
    assert not bad, (
        f"{len(bad)} of {REQUESTS} requests failed, first ones (index, status, body): {bad[:5]}\n"
        f"{deployment.log_text()}"
    )


def _connect() -> Any:
    """Connect to the served database the way app.py does."""
    return cyberdb.connect("127.0.0.1", 9980, password=PASSWORD, encrypt=True)


def _read_centre() -> dict[str, Any]:
    """Return table centre as a plain dict, read through a fresh client."""
    client = _connect()
    try:
        with client.get_proxy() as proxy:
            return proxy.get_cyberdict("centre").todict()
    finally:
        client.close()


def _stop_server_cleanly(deployment: Any) -> None:
    """SIGTERM cyberdb_serve.py, which must save its backup (set_backup) and exit 0 without SIGKILL."""
    rc = deployment.stop_server()
    assert rc == 0, f"cyberdb_serve.py exited with {rc} on SIGTERM, not 0\n{deployment.log_text()}"


def test_seed_deployment_serves_concurrent_requests_and_survives_restart(deployment: Any) -> None:
    _copy_seed_verbatim(deployment)
    deployment.run_init()
    deployment.start_server()
    body = deployment.start_gunicorn()
    assert dev.is_expected_body(body), body
    _assert_concurrent_requests_ok(deployment)

    # Restart the database under the running Gunicorn: its workers hold pooled connections to the old
    # server, which the pool must replace instead of failing requests.
    _stop_server_cleanly(deployment)
    deployment.start_server()
    _assert_concurrent_requests_ok(deployment)
    centre = _read_centre()
    assert centre == {"content": "Hello CyberDB!"}, f"after restart from data.cdb\n{deployment.log_text()}"
    for name in dev.SEED_FILES:
        assert (deployment.workdir / name).read_bytes() == (dev.EXAMPLE_DIR / name).read_bytes(), name


def test_sigterm_saves_client_writes(deployment: Any) -> None:
    _copy_seed_verbatim(deployment)
    deployment.run_init()
    deployment.start_server()
    client = _connect()
    try:
        with client.get_proxy() as proxy:
            centre = proxy.get_cyberdict("centre")
            centre["visits"] = 7
            assert centre.todict() == {"content": "Hello CyberDB!", "visits": 7}
    finally:
        client.close()

    # Nothing saved data.cdb since the write but the SIGTERM handler (the backup cycle is 300 s).
    _stop_server_cleanly(deployment)
    deployment.start_server()
    centre = _read_centre()
    assert centre == {"content": "Hello CyberDB!", "visits": 7}, (
        f"the write was not saved on SIGTERM\n{deployment.log_text()}"
    )
