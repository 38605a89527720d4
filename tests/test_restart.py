"""Clients ride out server restarts: reads and writes (exactly once) wait, then fail with a clear error.

A restart is either clean, SIGTERM (the server writes its ``--backup`` file and exits) and a new process on the
same port that ``--load``s the file, or a crash, SIGKILL of a server with an append-only log (``--fsync
always``) and a new process that replays it; with a pause in between.  Everything is bounded in time and
stopped by PID.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import PASSWORD, ServerProcess, kill_by_pid, proxy_of

import cyberdb

PAUSES = (0.3, 0.6, 1.0)  # seconds between the old process's exit and the new one's start
RETRYING = "retrying for up to"  # what the client logs when a connection fails and its retry budget starts


class Restartable:
    """A server whose data survives restarts.

    ``sigterm``: ``--backup FILE`` always, ``--load FILE`` from the second start on, stopped by SIGTERM.
    ``sigkill``: ``--aof FILE --fsync always``, killed by SIGKILL (the log is all that survives).
    """

    def __init__(self, tmp_path: Path, mode: str = "sigterm") -> None:
        self.mode = mode
        self.backup = tmp_path / "data.cdb"
        log = ["--aof", str(tmp_path / "data.aof"), "--fsync", "always"]
        self.srv = ServerProcess(extra=["--backup", str(self.backup)] if mode == "sigterm" else log)
        self.stderr: list[str] = []

    def restart(self, pause: float) -> None:
        """Stop the process (and wait for its exit), wait ``pause`` seconds, start a new one on the port."""
        self.stderr.append(self.srv.stop(signal.SIGKILL if self.mode == "sigkill" else signal.SIGTERM))
        time.sleep(pause)  # the outage itself (what the clients must wait out), not a synchronisation
        if self.mode == "sigterm":
            self.srv.extra = ["--backup", str(self.backup), "--load", str(self.backup)]
        self.srv.start()

    def stop(self) -> None:
        """Stop the current process (a finalizer)."""
        self.stderr.append(self.srv.stop())


@pytest.fixture(params=["sigterm", "sigkill"])
def restartable(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Restartable]:
    """A restartable server (restarted cleanly, or killed with an append-only log), stopped by PID at the end."""
    server = Restartable(tmp_path, request.param)
    request.addfinalizer(server.stop)
    yield server
    for err in server.stderr:
        assert "Traceback" not in err, err


def _wait_for_progress(progress: Callable[[], int], more: int = 100, timeout: float = 60.0) -> None:
    """Block until ``progress()`` grew by ``more`` (the clients got answers), or fail after ``timeout`` s."""
    target = progress() + more
    deadline = time.monotonic() + timeout
    while progress() < target:
        assert time.monotonic() < deadline, f"no progress in {timeout} s ({progress()} < {target})"
        time.sleep(0.01)  # polling interval of a progress check


def _progress(counts: list[int], errors: list[BaseException]) -> int:
    """Work done so far; fails at once when a client raised (instead of waiting for progress in vain)."""
    assert not errors, errors[:3]
    return sum(counts)


def _restart_under_load(server: Restartable, progress: Callable[[], int]) -> None:
    """Restart with each pause of PAUSES once the clients made progress; return once they work again."""
    for pause in PAUSES:
        _wait_for_progress(progress)
        server.restart(pause)
    _wait_for_progress(progress)


def _threads_through_restarts(server: Restartable, client: cyberdb.Client,
                              one_round: Callable[[cyberdb.Proxy, int], None], counts: list[int]) -> None:
    """Run rounds ``one_round(proxy, t)`` in threads t = 0 .. len(counts) - 1, each round with a new proxy of
    ``client``, while ``server`` restarts under load (``counts[t]`` is thread t's progress); then one more round
    each.  Fails if a thread raised or is stuck."""
    errors: list[BaseException] = []
    stop = threading.Event()

    def run(t: int) -> None:
        try:
            while True:
                last = stop.is_set()  # one more round after the flag: it runs after the last restart
                # a new proxy each round, held across the round: connect() must wait out restarts too, and
                # held connections break mid-call
                with client.get_proxy() as proxy:
                    one_round(proxy, t)
                if last:
                    return
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in range(len(counts))]
    for t in threads:
        t.start()
    try:
        _restart_under_load(server, lambda: _progress(counts, errors))
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads)


# ---- reads ----------------------------------------------------------------------------------------------------


def test_8_threads_read_through_restarts(restartable: Restartable, name: str,
                                         caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cyberdb")
    client = restartable.srv.connect()
    with client.get_proxy() as proxy:
        proxy.create_cyberdict(name, {k: k * k for k in range(100)})
    reads = [0] * 8

    def read(proxy: cyberdb.Proxy, t: int) -> None:
        d = proxy.get_cyberdict(name)
        for i in range(20):
            k = (t * 31 + i * 7 + reads[t]) % 100
            assert d[k] == k * k, (k, d[k])
            reads[t] += 1

    _threads_through_restarts(restartable, client, read, reads)
    assert all(reads)
    assert any(RETRYING in r.getMessage() for r in caplog.records)  # the readers really met the outages
    client.close()


def test_100_gevent_greenlets_read_and_write_through_restarts(restartable: Restartable, name: str,
                                                              tmp_path: Path, request: pytest.FixtureRequest) -> None:
    srv = restartable.srv
    with proxy_of(srv) as proxy:
        proxy.create_cyberdict(name, {k: k * k for k in range(100)})
        proxy.create_cyberlist(name + "-log")
    progress, stop = tmp_path / "progress", tmp_path / "stop"
    code = textwrap.dedent("""
        from gevent import monkey
        monkey.patch_all()
        import json, logging, os, sys
        import gevent
        import cyberdb

        port, password, name, progress, stop = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
        retrying = []

        class Count(logging.Handler):
            def emit(self, record):
                if "retrying for up to" in record.getMessage():
                    retrying.append(1)

        logging.getLogger("cyberdb").addHandler(Count())
        logging.getLogger("cyberdb").setLevel(logging.INFO)
        client = cyberdb.connect("127.0.0.1", port, password=password)
        reads, acked, errors = [0] * 100, [0] * 100, []

        def read(g):
            try:
                while True:
                    last = os.path.exists(stop)  # one more round after the flag: it runs after the last restart
                    with client.get_proxy() as proxy:
                        d = proxy.get_cyberdict(name)
                        for i in range(10):
                            k = (g * 31 + i * 7 + reads[g]) % 100
                            value = d[k]
                            if value != k * k:
                                errors.append(f"d[{k}] == {value!r}")
                            reads[g] += 1
                        proxy.get_cyberlist(name + "-log").append([g, acked[g]])
                        acked[g] += 1
                    if last:
                        return
            except BaseException as exc:
                errors.append(repr(exc))

        def report():
            while True:
                with open(progress + ".tmp", "w") as f:
                    f.write(str(sum(reads)))
                os.replace(progress + ".tmp", progress)
                gevent.sleep(0.02)

        reporter = gevent.spawn(report)
        jobs = [gevent.spawn(read, g) for g in range(100)]
        gevent.joinall(jobs, timeout=150)
        reporter.kill()
        print(json.dumps({"errors": errors[:5], "reads": reads, "acked": acked,
                          "unfinished": sum(not j.ready() for j in jobs), "retrying": len(retrying)}))
    """)
    child = subprocess.Popen([sys.executable, "-c", code, str(srv.port), PASSWORD, name, str(progress), str(stop)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    request.addfinalizer(lambda: kill_by_pid(child))

    def reads_so_far() -> int:
        if child.poll() is not None:
            out, err = child.communicate()
            raise AssertionError(f"the reader process exited early: {out} {err}")
        try:
            return int(progress.read_text() or 0)
        except FileNotFoundError:
            return 0

    _restart_under_load(restartable, reads_so_far)
    stop.touch()
    out, err = child.communicate(timeout=180)
    assert child.returncode == 0, err
    result = json.loads(out.strip().splitlines()[-1])
    assert result["errors"] == []
    assert result["unfinished"] == 0
    assert all(result["reads"])
    assert result["retrying"] > 0  # the greenlets really met the outages
    with proxy_of(srv) as proxy:
        records = proxy.get_cyberlist(name + "-log").tolist()
    for g, count in enumerate(result["acked"]):  # every acknowledged write once, in order; none lost or doubled
        assert [n for (w, n) in records if w == g] == list(range(count)), g
    assert len(records) == sum(result["acked"])


# ---- writes ---------------------------------------------------------------------------------------------------


def test_appends_across_restarts_are_kept_exactly_once(restartable: Restartable, name: str,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cyberdb")
    client = restartable.srv.connect()
    with client.get_proxy() as proxy:
        proxy.create_cyberlist(name)
    acked = [0] * 8  # acked[t]: records (t, 0) .. (t, acked[t] - 1) were acknowledged

    def write(proxy: cyberdb.Proxy, t: int) -> None:
        lst = proxy.get_cyberlist(name)
        for _ in range(20):
            lst.append((t, acked[t]))
            acked[t] += 1

    _threads_through_restarts(restartable, client, write, acked)
    with client.get_proxy() as proxy:
        items = proxy.get_cyberlist(name).tolist()
    for n in range(8):  # every acknowledged record, once, in the order it was written
        assert [i for (w, i) in items if w == n] == list(range(acked[n])), n
    assert len(items) == sum(acked)
    assert any(RETRYING in r.getMessage() for r in caplog.records)  # the writers really met the outages
    client.close()


# ---- the end of the budget, and what is never retried ----------------------------------------------------------


def test_a_call_gives_up_with_a_clear_error_when_the_budget_ends(restartable: Restartable, name: str) -> None:
    srv = restartable.srv
    client = srv.connect(retry=cyberdb.Retry(timeout=0.5))
    proxy = client.get_proxy()
    proxy.connect()
    d = proxy.create_cyberdict(name, {"k": 1})
    restartable.stop()  # and no restart
    started = time.monotonic()
    with pytest.raises(cyberdb.ConnectionLostError) as info:
        d["k"]
    assert time.monotonic() - started >= 0.5  # a lower bound: the budget was used up, not skipped
    assert isinstance(info.value, cyberdb.ConnectionError)
    message = str(info.value)
    assert f"{srv.host}:{srv.port}" in message and "after retrying for" in message and "dict.get" in message
    proxy.close()
    client.close()


def test_proxy_connect_gives_up_with_a_clear_error_when_the_budget_ends(restartable: Restartable) -> None:
    srv = restartable.srv
    client = srv.connect(retry=cyberdb.Retry(timeout=0.5))
    restartable.stop()
    client.reset()  # no idle connection left: connect() must dial
    started = time.monotonic()
    with pytest.raises(cyberdb.ConnectionError) as info:
        client.get_proxy().connect()
    assert time.monotonic() - started >= 0.5
    assert f"{srv.host}:{srv.port}" in str(info.value) and "after retrying for" in str(info.value)
    with pytest.raises(cyberdb.ConnectionError) as first:  # cyberdb.connect() checks the settings: no waiting
        srv.connect(retry=cyberdb.Retry(timeout=60))
    assert "after retrying" not in str(first.value)


def test_a_wrong_password_is_not_retried(plain_server: ServerProcess, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cyberdb")
    with pytest.raises(cyberdb.AuthenticationError):
        plain_server.connect(password="wrong", retry=cyberdb.Retry(timeout=60))
    client = cyberdb.Client(plain_server.host, plain_server.port, password="wrong", retry=cyberdb.Retry(timeout=60))
    with pytest.raises(cyberdb.AuthenticationError):
        client.get_proxy().connect()  # connect() retries only what the transport did, not what the server said
    assert not any(RETRYING in r.getMessage() for r in caplog.records)


def test_a_refusal_by_the_server_is_not_retried(make_server, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="cyberdb")
    srv = make_server(extra=["--max-con", "1"])
    deadline = time.monotonic() + 10
    while True:  # the start-up probe holds the one slot until the server notices that it closed
        try:
            holder = cyberdb.Connection(srv.host, srv.port, PASSWORD, False)
            break
        except cyberdb.ConnectionError:
            assert time.monotonic() < deadline
            time.sleep(0.01)  # polling interval
    client = cyberdb.Client(srv.host, srv.port, password=PASSWORD, retry=cyberdb.Retry(timeout=60))
    with pytest.raises(cyberdb.ConnectionError, match="too many connections"):
        client.get_proxy().connect()
    assert not any(RETRYING in r.getMessage() for r in caplog.records)
    holder.close()


# ---- the policy (pure) ----------------------------------------------------------------------------------------


def test_retry_backs_off_with_jitter_until_its_timeout() -> None:
    policy = cyberdb.Retry()
    exc = cyberdb.ConnectionLostError("x")
    assert policy.timeout == 30.0 and policy.attempts is None
    assert policy.next_delay(0, exc, 0.0) == 0.0  # the first re-send is immediate
    for attempt in range(1, 40):
        full = min(policy.max_delay, policy.backoff * 2 ** (attempt - 1))
        delay = policy.next_delay(attempt, exc, 1.0)
        assert delay is not None and full / 2 <= delay <= full
    assert policy.next_delay(1000, exc, 29.0) is not None  # no count limit by default
    last = policy.next_delay(10, exc, 29.9)
    assert last is not None and last <= 0.1 + 1e-9  # the last try falls on the deadline
    assert policy.next_delay(10, exc, 30.0) is None
    assert len({policy.next_delay(10, exc, 1.0) for _ in range(20)}) > 1  # jittered


def test_retry_attempts_still_cap_the_re_sends() -> None:
    exc = cyberdb.ConnectionLostError("x")
    assert cyberdb.Retry(attempts=3).next_delay(2, exc, 0.0) is not None
    assert cyberdb.Retry(attempts=3).next_delay(3, exc, 0.0) is None
    assert cyberdb.Retry(attempts=0).next_delay(0, exc, 0.0) is None
    assert cyberdb.Retry(timeout=0).next_delay(0, exc, 0.0) is None
    for bad in ({"attempts": -1}, {"timeout": -1.0}, {"backoff": -0.1}):
        with pytest.raises(ValueError):
            cyberdb.Retry(**bad)
