"""Blocking pops for job queues: ``l.pop(index, timeout=..., into=...)`` (end to end, real servers over TCP).

Order is made certain by waiting until the server reports the pop as blocked (``Server.info()["blocked"]`` of an
in-process server), never by sleeping.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import PASSWORD, ServerProcess, client_of, kill_by_pid, serving

import cyberdb
from cyberdb import protocol
from cyberdb.codec import decode_value, encode_value
from cyberdb.commands import BY_NAME
from cyberdb.connection import Connection

WAIT = 30.0  # seconds a pop that must be woken waits at most (the test fails rather than hangs)
WORKER_TIMEOUT = 120


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def db(request: pytest.FixtureRequest) -> Iterator[cyberdb.Server]:
    """An in-process server (its info() shows blocked pops), without and with encryption."""
    server = cyberdb.Server()
    server.start(port=0, password=PASSWORD, encrypt=request.param)
    request.addfinalizer(server.stop)
    server.encrypt = request.param  # type: ignore[attr-defined]  # for clients()
    yield server


@pytest.fixture
def clients(db: cyberdb.Server, request: pytest.FixtureRequest) -> Callable[[], cyberdb.Client]:
    """Make clients of ``db`` (closed after the test)."""
    made: list[cyberdb.Client] = []
    request.addfinalizer(lambda: [c.close() for c in made])

    def make() -> cyberdb.Client:
        made.append(client_of(db, encrypt=db.encrypt))  # type: ignore[attr-defined]
        return made[-1]

    return make


def wait_blocked(db: cyberdb.Server, n: int) -> None:
    """Poll until ``n`` pops wait on the server (a readiness check: polling interval, not synchronisation)."""
    deadline = time.monotonic() + WAIT
    while db.info()["blocked"] != n:
        assert time.monotonic() < deadline, f"{db.info()['blocked']} pops blocked, expected {n}"
        time.sleep(0.001)


class Popper(threading.Thread):
    """A thread that runs one ``pop`` on its own client and keeps what it returned or raised."""

    def __init__(self, client: cyberdb.Client, table: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(daemon=True)
        self.client, self.table, self.args, self.kwargs = client, table, args, kwargs
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with self.client.get_proxy() as proxy:
                self.result = proxy.get_cyberlist(self.table).pop(*self.args, **self.kwargs)
        except BaseException as exc:
            self.error = exc

    def outcome(self) -> Any:
        """Join (bounded) and return the result, or raise what the pop raised."""
        self.join(WAIT + 10)
        assert not self.is_alive(), "the pop never returned"
        if self.error is not None:
            raise self.error
        return self.result


# ---- not waiting -------------------------------------------------------------------------------------------------

def test_timeout_none_and_zero_do_not_wait(proxy: cyberdb.Proxy, name: str) -> None:
    q = proxy.create_cyberlist(name)
    for kwargs in ({}, {"timeout": None}, {"timeout": 0}, {"timeout": 0.0}):
        with pytest.raises(IndexError, match="pop from empty list"):
            q.pop(**kwargs)
    q.extend([1, 2, 3])
    assert q.pop(timeout=0) == 3 and q.pop(0, timeout=None) == 1 and q.tolist() == [2]


def test_bad_timeouts_raise_before_sending(proxy: cyberdb.Proxy, name: str) -> None:
    q = proxy.create_cyberlist(name, [1])
    with pytest.raises(ValueError):
        q.pop(timeout=-1)
    with pytest.raises(ValueError):
        q.pop(timeout=math.nan)
    with pytest.raises(TypeError):
        q.pop(timeout="1")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        q.pop(into=42)  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # only a table waits: a handle's pop has no timeout
        proxy.create_cyberdict(name + "-d", {"l": [1]}).ref("l").pop(0, timeout=1)  # type: ignore[call-arg]
    assert q.tolist() == [1]


def test_pop_with_timeout_on_an_empty_list_raises_index_error_when_it_ends(proxy: cyberdb.Proxy, name: str) -> None:
    q = proxy.create_cyberlist(name)
    with pytest.raises(IndexError, match="pop from empty list"):
        q.pop(timeout=0.2)
    with pytest.raises(IndexError, match="pop from empty list"):
        q.pop(0, timeout=0.05, into=proxy.create_cyberlist(name + "-p"))
    q.append("x")  # the connection goes on normally afterwards
    assert q.pop(timeout=0.2) == "x"


def test_a_non_empty_list_pops_at_once_even_with_an_infinite_timeout(proxy: cyberdb.Proxy, name: str) -> None:
    q = proxy.create_cyberlist(name, ["a", "b"])
    assert q.pop(0, timeout=math.inf) == "a"
    with pytest.raises(IndexError, match="pop index out of range"):
        q.pop(5, timeout=1)
    assert q.tolist() == ["b"]


# ---- waiting -----------------------------------------------------------------------------------------------------

def test_a_waiter_gets_an_item_appended_by_another_client(db: cyberdb.Server, clients: Callable[[], cyberdb.Client],
                                                           name: str) -> None:
    with clients().get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        popper = Popper(clients(), name, 0, timeout=WAIT)
        popper.start()
        wait_blocked(db, 1)
        q.append({"job": 1})
        assert popper.outcome() == {"job": 1}
        assert q.tolist() == [] and db.info()["blocked"] == 0


@pytest.mark.parametrize("write", ["append", "extend", "insert", "iadd", "setslice", "pipeline", "atomic", "transact"])
def test_any_write_that_fills_the_list_wakes_the_waiter(db: cyberdb.Server, clients: Callable[[], cyberdb.Client],
                                                        name: str, write: str) -> None:
    with clients().get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        popper = Popper(clients(), name, timeout=math.inf)
        popper.start()
        wait_blocked(db, 1)
        if write == "append":
            q.append("item")
        elif write == "extend":
            q.extend(["item"])
        elif write == "insert":
            q.insert(0, "item")
        elif write == "iadd":
            q += ["item"]
        elif write == "setslice":
            q[:] = ["item"]
        elif write in ("pipeline", "atomic"):
            with proxy.pipeline(atomic=write == "atomic") as pipe:
                pipe.get_cyberlist(name).append("item")
        else:
            proxy.transact(lambda tx: tx.get_cyberlist(name).append("item"))
        assert popper.outcome() == "item"
        assert q.tolist() == []


def test_waiters_are_served_first_come_first_served(db: cyberdb.Server, clients: Callable[[], cyberdb.Client],
                                                    name: str) -> None:
    with clients().get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        poppers = []
        for i in range(3):  # each starts once the one before is blocked: the order of arrival is certain
            poppers.append(Popper(clients(), name, 0, timeout=WAIT))
            poppers[-1].start()
            wait_blocked(db, i + 1)
        q.append(1)
        assert poppers[0].outcome() == 1
        q.extend([2, 3, 4])  # one write, two waiters: in order, and the rest stays
        assert [p.outcome() for p in poppers[1:]] == [2, 3]
        assert q.tolist() == [4]


def test_a_waiter_whose_connection_closed_is_dropped(db: cyberdb.Server, clients: Callable[[], cyberdb.Client],
                                                     name: str) -> None:
    client = clients()
    with client.get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        conn = Connection("127.0.0.1", db.port or 0, PASSWORD, db.encrypt)  # type: ignore[attr-defined]
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                conn.call(BY_NAME["list.bpop"].op, encode_value([name, 0, WAIT, None]), 1, 1)
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        wait_blocked(db, 1)
        conn.sock.shutdown(2)  # the client goes away while its pop waits
        wait_blocked(db, 0)
        thread.join(WAIT)
        conn.close()
        q.append("kept")
        assert q.tolist() == ["kept"]
        assert errors and isinstance(errors[0], cyberdb.ConnectionLostError)


def test_requests_sent_behind_a_waiting_pop_run_after_it_in_order(
        db: cyberdb.Server, clients: Callable[[], cyberdb.Client], name: str) -> None:
    with clients().get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        conn = Connection("127.0.0.1", db.port or 0, PASSWORD, db.encrypt)  # type: ignore[attr-defined]
        out: list[Any] = []
        requests = [(1, BY_NAME["list.bpop"].op, encode_value([name, 0, WAIT, None])),
                    (2, BY_NAME["list.append"].op, encode_value([name, "mine"])),
                    (3, BY_NAME["list.tolist"].op, encode_value([name]))]
        thread = threading.Thread(target=conn.call_many, args=(requests, 1, out), daemon=True)
        thread.start()
        wait_blocked(db, 1)
        q.append("theirs")
        thread.join(WAIT)
        conn.close()
        assert [(status, decode_value(body)) for status, body in out] == [
            (0, "theirs"), (0, None), (0, ["mine"])]
        assert db.info()["partial_bytes"] == 0  # what waited behind the pop is no longer counted as unfinished


def test_a_re_sent_blocked_pop_takes_the_place_of_the_first_and_runs_once(
        db: cyberdb.Server, clients: Callable[[], cyberdb.Client], name: str) -> None:
    # the client reconnected while its pop waited, before the server noticed that the old connection died
    client_id = os.urandom(protocol.CLIENT_ID_SIZE)
    encrypt = db.encrypt  # type: ignore[attr-defined]
    payload = encode_value([name, 0, WAIT, None])
    op = BY_NAME["list.bpop"].op
    with clients().get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        results: dict[str, Any] = {}

        def send(key: str) -> None:
            conn = Connection("127.0.0.1", db.port or 0, PASSWORD, encrypt, client_id=client_id)
            try:
                results[key] = conn.call(op, payload, 7, 7)
            except BaseException as exc:
                results[key] = exc
            finally:
                conn.close()

        first = threading.Thread(target=send, args=("first",), daemon=True)
        first.start()
        wait_blocked(db, 1)
        second = threading.Thread(target=send, args=("second",), daemon=True)
        second.start()
        first.join(WAIT)  # the server closes the first connection once the re-send parks
        assert isinstance(results["first"], cyberdb.ConnectionLostError)
        wait_blocked(db, 1)
        q.extend(["a", "b"])
        second.join(WAIT)
        assert results["second"] == "a"
        send("third")  # once more: answered from the reply cache, nothing else popped
        assert results["third"] == "a"
        assert q.tolist() == ["b"]


def test_served_and_timed_out_pops_in_the_append_only_log(tmp_path: Any, name: str) -> None:
    log = tmp_path / "data.aof"
    with serving(log) as (db, client), client.get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        proxy.create_cyberlist(name + "-p")
        with pytest.raises(IndexError):  # timed out: nothing ran, nothing is logged
            q.pop(timeout=0.05)
        other = client_of(db)
        try:
            popper = Popper(other, name, 0, timeout=WAIT, into=name + "-p")
            popper.start()
            wait_blocked(db, 1)
            q.extend(["a", "b"])
            assert popper.outcome() == "a"  # its reply waited for the log (fsync="always")
        finally:
            other.close()
    with serving(log) as (db, client), client.get_proxy() as proxy:
        assert proxy.get_cyberlist(name).tolist() == ["b"]
        assert proxy.get_cyberlist(name + "-p").tolist() == ["a"]


# ---- into: a reliable queue --------------------------------------------------------------------------------------

def test_into_moves_the_item_atomically(proxy: cyberdb.Proxy, name: str) -> None:
    q = proxy.create_cyberlist(name, ["j1", "j2", "j3"])
    processing = proxy.create_cyberlist(name + "-p", ["old"])
    assert q.pop(0, into=processing) == "j1"
    assert q.pop(0, timeout=1, into=name + "-p") == "j2"
    assert q.pop(into=q) == "j3"  # into itself: a rotation
    assert q.tolist() == ["j3"] and processing.tolist() == ["old", "j1", "j2"]


def test_a_missing_or_wrong_into_pops_nothing(proxy: cyberdb.Proxy, name: str) -> None:
    q = proxy.create_cyberlist(name, ["j1"])
    proxy.create_cyberdict(name + "-d")
    with pytest.raises(cyberdb.TableNotFoundError):
        q.pop(0, into=name + "-missing")
    with pytest.raises(cyberdb.TableNotFoundError):
        q.pop(0, timeout=1, into=name + "-missing")
    with pytest.raises(cyberdb.WrongTableTypeError):
        q.pop(0, timeout=1, into=name + "-d")
    assert q.tolist() == ["j1"]


def test_a_waiter_with_into_moves_what_arrives(db: cyberdb.Server, clients: Callable[[], cyberdb.Client],
                                               name: str) -> None:
    with clients().get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        processing = proxy.create_cyberlist(name + "-p")
        popper = Popper(clients(), name, 0, timeout=WAIT, into=name + "-p")
        popper.start()
        wait_blocked(db, 1)
        q.append("job")
        assert popper.outcome() == "job"
        assert q.tolist() == [] and processing.tolist() == ["job"]


def test_a_waiter_whose_into_was_deleted_meanwhile_pops_nothing(
        db: cyberdb.Server, clients: Callable[[], cyberdb.Client], name: str) -> None:
    with clients().get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        proxy.create_cyberlist(name + "-p")
        popper = Popper(clients(), name, 0, timeout=WAIT, into=name + "-p")
        popper.start()
        wait_blocked(db, 1)
        proxy.delete_table(name + "-p")
        q.append("job")
        with pytest.raises(cyberdb.TableNotFoundError):
            popper.outcome()
        assert q.tolist() == ["job"]


def test_a_move_into_a_list_with_a_waiter_wakes_it(db: cyberdb.Server, clients: Callable[[], cyberdb.Client],
                                                   name: str) -> None:
    with clients().get_proxy() as proxy:
        q = proxy.create_cyberlist(name)
        done = proxy.create_cyberlist(name + "-done")
        popper = Popper(clients(), name + "-done", timeout=WAIT)
        popper.start()
        wait_blocked(db, 1)
        q.append("job")
        assert q.pop(into=done) == "job"
        assert popper.outcome() == "job"
        assert done.tolist() == []


def test_into_in_an_atomic_batch_that_fails_is_rolled_back(proxy: cyberdb.Proxy, name: str) -> None:
    q = proxy.create_cyberlist(name, ["j1", "j2"])
    processing = proxy.create_cyberlist(name + "-p", ["p0"])
    with pytest.raises(cyberdb.BatchAbortedError), proxy.pipeline(atomic=True) as pipe:
        pq, pp = pipe.get_cyberlist(name), pipe.get_cyberlist(name + "-p")
        pq.pop(0, into=pp)
        pp.pop(0)  # the journal saves `processing` after the move, then the batch fails
        pq.pop(0, into=pp)
        pipe.get_cyberdict(name + "-missing")["x"] = 1
    assert q.tolist() == ["j1", "j2"] and processing.tolist() == ["p0"]


def test_into_a_bounded_list_follows_its_maxlen_and_rolls_back(proxy: cyberdb.Proxy, name: str) -> None:
    q = proxy.create_cyberlist(name, ["j1", "j2", "j3"])
    done = proxy.create_cyberlist(name + "-done", ["d1", "d2"], maxlen=2)
    assert q.pop(0, into=done) == "j1"  # the store's own append: the oldest item goes, as in deque(maxlen=2)
    assert done.tolist() == ["d2", "j1"]
    with pytest.raises(cyberdb.BatchAbortedError), proxy.pipeline(atomic=True) as pipe:
        pipe.get_cyberlist(name).pop(0, into=name + "-done")
        pipe.get_cyberdict(name + "-missing")["x"] = 1
    assert q.tolist() == ["j2", "j3"] and done.tolist() == ["d2", "j1"]


def test_into_in_a_transaction_moves_once(proxy: cyberdb.Proxy, name: str) -> None:
    q = proxy.create_cyberlist(name, ["j1", "j2"])
    processing = proxy.create_cyberlist(name + "-p")

    def take(tx: cyberdb.Transaction) -> Any:
        job = tx.get_cyberlist(name).pop(0, into=name + "-p")
        assert tx.get_cyberlist(name + "-p").tolist() == [job]
        return job

    assert proxy.transact(take) == "j1"
    assert q.tolist() == ["j2"] and processing.tolist() == ["j1"]


# ---- pipelines and batches do not wait -------------------------------------------------------------------------

def test_a_pop_with_timeout_in_a_pipeline_or_batch_does_not_wait(proxy: cyberdb.Proxy, name: str) -> None:
    proxy.create_cyberlist(name)
    with proxy.pipeline() as pipe:
        pending = pipe.get_cyberlist(name).pop(timeout=WAIT * 10)
    with pytest.raises(IndexError, match="pop from empty list"):
        pending.result()
    with pytest.raises(cyberdb.BatchAbortedError) as info, proxy.pipeline(atomic=True) as pipe:
        pipe.get_cyberlist(name).pop(timeout=math.inf)
    assert isinstance(info.value.error, IndexError)
    with pytest.raises(IndexError):
        proxy.transact(lambda tx: tx.get_cyberlist(name).pop(timeout=WAIT * 10))


# ---- processes ---------------------------------------------------------------------------------------------------

PROCESS = r'''
import json, sys
import cyberdb
host, port, encrypt, role, name, arg = sys.argv[1:7]
client = cyberdb.connect(host, int(port), password=__import__("os").environ["CYBERDB_PASSWORD"], encrypt=encrypt == "1")
with client.get_proxy() as proxy:
    q = proxy.get_cyberlist(name)
    if role == "produce":
        for i in range(int(arg.split(":")[1])):
            q.append(f"{arg.split(':')[0]}-{i}")
        out = "done"
    elif role == "work":
        out = []
        while True:
            job = q.pop(0, timeout=60)
            if job == "STOP":
                break
            out.append(job)
    else:  # hold: take one job into processing, say so, and wait to be killed
        job = q.pop(0, timeout=60, into=name + "-processing")
        print(json.dumps(job), flush=True)
        __import__("time").sleep(600)
client.close()
print(json.dumps(out), flush=True)
'''


def start(srv: ServerProcess, role: str, name: str, arg: str) -> subprocess.Popen[str]:
    """Start one producer or worker process (killed by PID by the caller's finalizer)."""
    env = dict(os.environ, CYBERDB_PASSWORD=srv.password or "")
    return subprocess.Popen(
        [sys.executable, "-c", PROCESS, srv.host, str(srv.port), "1" if srv.encrypt else "0", role, name, arg],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


@pytest.fixture
def procs(request: pytest.FixtureRequest) -> list[subprocess.Popen[str]]:
    """A list the test appends its processes to; all are killed by PID afterwards."""
    started: list[subprocess.Popen[str]] = []
    request.addfinalizer(lambda: [kill_by_pid(p) for p in started])
    return started


def last_line(proc: subprocess.Popen[str]) -> Any:
    out, err = proc.communicate(timeout=WORKER_TIMEOUT)
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def test_two_producers_and_two_workers_process_each_job_exactly_once(
        server: ServerProcess, proxy: cyberdb.Proxy, name: str, procs: list[subprocess.Popen[str]]) -> None:
    q = proxy.create_cyberlist(name)
    workers = [start(server, "work", name, "") for _ in range(2)]
    procs.extend(workers)
    producers = [start(server, "produce", name, f"p{i}:500") for i in range(2)]
    procs.extend(producers)
    assert [last_line(p) for p in producers] == ["done", "done"]
    q.extend(["STOP", "STOP"])  # after every job: the queue is first in, first out
    done = [job for w in workers for job in last_line(w)]
    assert len(done) == 1000
    assert sorted(done) == sorted(f"p{p}-{i}" for p in range(2) for i in range(500))
    assert q.tolist() == []


def test_a_killed_worker_leaves_its_job_in_processing(plain_server: ServerProcess, name: str,
                                                      procs: list[subprocess.Popen[str]]) -> None:
    client = plain_server.connect()
    try:
        with client.get_proxy() as proxy:
            q = proxy.create_cyberlist(name, ["job-1", "job-2"])
            processing = proxy.create_cyberlist(name + "-processing")
            worker = start(plain_server, "hold", name, "")
            procs.append(worker)
            assert worker.stdout is not None
            assert json.loads(worker.stdout.readline()) == "job-1"  # it holds the job now
            kill_by_pid(worker)
            assert processing.tolist() == ["job-1"] and q.tolist() == ["job-2"]
    finally:
        client.close()


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs /proc (Linux)")
def test_waiting_pops_cost_the_server_no_cpu(plain_server: ServerProcess, name: str) -> None:
    assert plain_server.proc is not None
    client = plain_server.connect()
    try:
        with client.get_proxy() as proxy:
            proxy.create_cyberlist(name)
        poppers = [Popper(client, name, timeout=1.0) for _ in range(4)]
        before = _cpu_seconds(plain_server.proc.pid)
        for p in poppers:
            p.start()
        for p in poppers:
            with pytest.raises(IndexError):
                p.outcome()
        used = _cpu_seconds(plain_server.proc.pid) - before
        assert used < 0.2, f"the server used {used:.2f} s of CPU while 4 pops waited 1 s (busy polling?)"
    finally:
        client.close()


def test_a_waiting_pop_outlives_the_socket_timeout_and_the_idle_timeout(make_server: Callable[..., ServerProcess],
                                                                        name: str) -> None:
    srv = make_server(extra=["--timeout", "1"])  # the server closes connections idle for 1 s
    client = srv.connect(socket_timeout=0.2, retry=cyberdb.Retry(timeout=0))  # no re-send would hide a cut
    try:
        with client.get_proxy() as proxy:
            q = proxy.create_cyberlist(name)
            with pytest.raises(IndexError, match="pop from empty list"):
                q.pop(timeout=1.5)  # neither the client's 0.2 s nor the server's 1 s idle limit cuts it
            q.append(1)
            assert q.pop(timeout=1) == 1
    finally:
        client.close()
