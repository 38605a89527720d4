"""Publish/subscribe: proxy.publish() and proxy.subscribe(), end to end against real servers, plus the sans-IO part."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from conftest import PASSWORD, ServerProcess
from values import canon

import cyberdb
from cyberdb import protocol
from cyberdb.codec import decode_value, encode_value
from cyberdb.commands import BY_NAME

WAIT = 20.0  # seconds a bounded poll may take before the test fails (never reached when things work)
PUBLISH, SUBSCRIBE, TABLES = (BY_NAME[n].op for n in ("db.publish", "db.subscribe", "db.tables"))

VALUES: list[Any] = [0, -1, 2**200, -(2**100), 1.5, float("inf"), "text", "ünïcode", b"\x00bytes", None, True,
                     {"a": [1, {"b": (2, 3)}], 4: {5, 6}}, [1, [2, [3]]], (1, "two"), {1, 2, 3}, Decimal("1.10"),
                     "", [], {}]


def poll(condition: Any, what: str) -> None:
    """Wait until ``condition()`` is true, for at most WAIT seconds."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting until {what}")
        time.sleep(0.01)  # polling interval, not a synchronisation sleep


@pytest.fixture
def channel(name: str) -> str:
    """A channel name no other test uses."""
    return f"ch-{name}"


# ---- end to end, plain and encrypted (the `server` fixture) --------------------------------------------------------

def test_publish_without_subscribers_returns_zero(proxy: cyberdb.Proxy, channel: str) -> None:
    assert proxy.publish(channel, "nobody listens") == 0


def test_many_subscribers_get_every_message_in_order(proxy: cyberdb.Proxy, channel: str) -> None:
    messages = [VALUES[i % len(VALUES)] if i % 3 else i for i in range(200)]
    subs = [proxy.subscribe(channel, timeout=WAIT) for _ in range(20)]
    try:
        for value in messages:
            assert proxy.publish(channel, value) == 20
        for sub in subs:
            got = [sub.get(WAIT) for _ in messages]
            assert [canon(m) for m in got] == [canon((channel, v)) for v in messages]
    finally:
        for sub in subs:
            sub.close()


def test_several_channels_subscribe_and_unsubscribe(proxy: cyberdb.Proxy, channel: str) -> None:
    a, b, c = channel + "-a", channel + "-b", channel + "-c"
    with proxy.subscribe(a, b, timeout=WAIT) as sub:
        assert sub.channels == frozenset({a, b})
        assert proxy.publish(a, 1) == 1
        assert proxy.publish(c, 2) == 0
        assert proxy.publish(b, 3) == 1
        sub.subscribe(c)
        assert sub.channels == frozenset({a, b, c})
        assert proxy.publish(c, 4) == 1
        sub.unsubscribe(a)
        assert sub.channels == frozenset({b, c})
        assert proxy.publish(a, 5) == 0
        assert proxy.publish(b, 6) == 1
        assert [sub.get(WAIT) for _ in range(4)] == [(a, 1), (b, 3), (c, 4), (b, 6)]
        sub.unsubscribe()
        assert sub.channels == frozenset()
        assert proxy.publish(b, 7) == 0
        assert sub.ping() is True


def test_messages_pushed_during_a_subscribe_are_kept(proxy: cyberdb.Proxy, channel: str) -> None:
    with proxy.subscribe(channel, timeout=WAIT) as sub:
        proxy.publish(channel, "before")  # arrives while the next subscribe waits for its reply
        sub.subscribe(channel + "-more")
        assert sub.get(WAIT) == (channel, "before")


def test_timeout_ends_the_iteration(proxy: cyberdb.Proxy, channel: str) -> None:
    with proxy.subscribe(channel, timeout=0.2) as sub:
        proxy.publish(channel, 1)
        proxy.publish(channel, 2)
        assert list(sub) == [(channel, 1), (channel, 2)]  # ends: no third message comes
        assert sub.get(timeout=0.05) is None
        proxy.publish(channel, 3)
        assert sub.get(timeout=WAIT) == (channel, 3)  # still subscribed after a timeout


def test_a_closed_subscriber_is_no_longer_counted(proxy: cyberdb.Proxy, channel: str) -> None:
    stays = proxy.subscribe(channel)
    leaves = proxy.subscribe(channel)
    try:
        assert proxy.publish(channel, "both") == 2
        leaves.close()
        poll(lambda: proxy.publish(channel, "one") == 1, "the closed subscriber is not counted")
        with pytest.raises(cyberdb.DisconnectedError):
            leaves.get()
        assert stays.get(WAIT) == (channel, "both")
    finally:
        stays.close()


def test_subscription_uses_its_own_connection(server: ServerProcess, channel: str) -> None:
    client = server.connect(max_connections=1)
    try:
        with client.get_proxy() as proxy, proxy.subscribe(channel) as sub:
            assert proxy.publish(channel, "x") == 1  # the pool's one connection is still the proxy's
            assert sub.get(WAIT) == (channel, "x")
    finally:
        client.close()


def test_subscribe_needs_a_connected_proxy(client: cyberdb.Client, channel: str) -> None:
    proxy = client.get_proxy()
    with pytest.raises(cyberdb.DisconnectedError):
        proxy.subscribe(channel)


def test_bad_channels_are_refused(proxy: cyberdb.Proxy, channel: str) -> None:
    for bad in ("", "x" * 1025, 42, None):
        with pytest.raises(TypeError):
            proxy.publish(bad, 1)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            proxy.subscribe(bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        proxy.publish(channel, object())  # not a storable value: nothing is sent


def test_subscribe_mode_allows_only_pubsub_and_ping(client: cyberdb.Client, channel: str) -> None:
    conn = client._new_connection()  # a raw connection, as another client library would use the protocol
    try:
        assert conn.call(SUBSCRIBE, encode_value([[channel]]), 1, 1) == [channel]
        with pytest.raises(TypeError, match="subscribe mode"):
            conn.call(TABLES, encode_value([]), 2, 2)
        with pytest.raises(TypeError, match="subscribe mode"):
            conn.call(PUBLISH, encode_value([channel, 1]), 3, 3)
        assert conn.call(BY_NAME["db.ping"].op, encode_value([]), 4, 4) is True
        assert conn.call(BY_NAME["db.unsubscribe"].op, encode_value([[]]), 5, 5) == []
        assert type(conn.call(TABLES, encode_value([]), 6, 6)) is list  # out of subscribe mode again
    finally:
        conn.close()


def test_a_resent_publish_is_delivered_once(proxy: cyberdb.Proxy, client: cyberdb.Client, channel: str) -> None:
    req_id, _ack = client._begin()  # a request number of this client, as a lost reply's re-send would keep
    payload = encode_value([channel, "once"])
    first, second = client._new_connection(), client._new_connection()
    try:
        with proxy.subscribe(channel, timeout=0.5) as sub:
            assert first.call(PUBLISH, payload, req_id, req_id) == 1
            first.close()  # the reply "was lost": the client re-sends on a new connection with the same number
            assert second.call(PUBLISH, payload, req_id, req_id) == 1  # answered from the reply cache
            client._end(req_id)
            assert proxy.publish(channel, "after") == 1
            assert list(sub) == [(channel, "once"), (channel, "after")]
    finally:
        second.close()


def test_gevent_subscriber_waits_cooperatively(server: ServerProcess, channel: str) -> None:
    script = """
        from gevent import monkey
        monkey.patch_all()
        import json, sys
        import gevent
        import cyberdb

        port, password, encrypt, channel = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "True", sys.argv[4]
        client = cyberdb.connect("127.0.0.1", port, password=password, encrypt=encrypt)
        with client.get_proxy() as proxy:
            subs = [proxy.subscribe(channel, timeout=30) for _ in range(5)]

            def listen(sub):
                got = [sub.get(30) for _ in range(10)]  # blocks this greenlet only
                sub.close()
                return [value for _channel, value in got]

            jobs = [gevent.spawn(listen, sub) for sub in subs]
            gevent.sleep(0)  # let every listener start waiting on its socket
            counts = [proxy.publish(channel, i) for i in range(10)]
            gevent.joinall(jobs, timeout=60, raise_error=True)
        client.close()
        print(json.dumps({"counts": counts, "got": [j.value for j in jobs]}))
    """
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script), str(server.port), PASSWORD,
                           str(server.encrypt), channel], capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"counts": [5] * 10, "got": [list(range(10))] * 5}


# ---- server settings -----------------------------------------------------------------------------------------------

def test_slow_subscriber_is_dropped_and_others_get_everything(in_process: Any, channel: str,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    db = cyberdb.Server()
    db.set_limits(max_subscriber_buffer=64 << 10)
    in_process(db)
    client = cyberdb.connect("127.0.0.1", db.port, password=PASSWORD)
    value = b"x" * 4096
    received: list[Any] = []
    try:
        with client.get_proxy() as proxy, proxy.subscribe(channel) as healthy, proxy.subscribe(channel) as slow:
            def read() -> None:
                while True:
                    message = healthy.get(WAIT)
                    if message is None or message[1] == "end":
                        return
                    received.append(message[1])

            reader = threading.Thread(target=read)
            reader.start()
            sent = 0
            deadline = time.monotonic() + WAIT
            while proxy.publish(channel, (sent, value)) == 2:  # `slow` never reads: the server drops it
                sent += 1
                assert time.monotonic() < deadline, "the slow subscriber was never dropped"
            sent += 1
            for i in range(sent, sent + 100):  # the publisher keeps publishing, to the healthy one only
                assert proxy.publish(channel, (i, value)) == 1
            proxy.publish(channel, "end")
            reader.join(WAIT)
            assert not reader.is_alive()
            assert [n for n, _v in received] == list(range(sent + 100))
            with pytest.raises(cyberdb.ConnectionLostError):
                while slow.get(WAIT) is not None:  # what was buffered before the server closed it, then EOF
                    pass
    finally:
        client.close()
    assert [r.message for r in caplog.records if "closing subscriber" in r.message]


def test_serve_takes_max_subscriber_buffer(make_server: Any, channel: str) -> None:
    srv = make_server(extra=["--max-subscriber-buffer", "1000"])
    client = srv.connect()
    try:
        with client.get_proxy() as proxy, proxy.subscribe(channel) as slow:
            poll(lambda: proxy.publish(channel, b"x" * 200_000) == 0, "the slow subscriber is dropped")
            with pytest.raises(cyberdb.ConnectionLostError):
                while slow.get(WAIT) is not None:
                    pass
    finally:
        client.close()


def test_idle_timeout_spares_subscribers(make_server: Any, channel: str) -> None:
    srv = make_server(extra=["--timeout", "0.3"])
    client = srv.connect()
    try:
        with client.get_proxy() as proxy, proxy.subscribe(channel) as sub:
            idle = client._new_connection()
            try:
                poll(idle.is_stale, "the server closes an idle connection")  # the idle timeout has passed
            finally:
                idle.close()
            assert proxy.publish(channel, "still here") == 1
            assert sub.get(WAIT) == (channel, "still here")
    finally:
        client.close()


def test_set_limits_takes_max_subscriber_buffer(in_process: Any) -> None:
    db = in_process()
    db.set_limits(max_subscriber_buffer=1 << 20)
    with pytest.raises(ValueError):
        db.set_limits(max_subscriber_buffer=0)


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_publish_with_an_append_log_is_not_logged(tmp_path: Any, channel: str, encrypt: bool) -> None:
    db = cyberdb.Server()
    db.set_append_log(str(tmp_path / "log.aof"), fsync="always")
    db.start(port=0, password=PASSWORD, encrypt=encrypt)
    try:
        client = cyberdb.connect("127.0.0.1", db.port, password=PASSWORD, encrypt=encrypt)
        with client.get_proxy() as proxy, proxy.subscribe(channel, timeout=WAIT) as sub:
            d = proxy.create_cyberdict("t")
            assert proxy.publish(channel, "not persisted-marker") == 1
            assert sub.get(WAIT) == (channel, "not persisted-marker")
            # replies held for the log and pushes keep their order (with encrypt=True: their nonces' order)
            with client.get_proxy() as writer:
                w = writer.get_cyberdict("t")
                for i in range(50):
                    with writer.pipeline() as pipe:
                        pipe.get_cyberdict("t")[i] = i
                        pipe.get_cyberdict("t")[-i - 1] = i
                    proxy.publish(channel, i)
                    sub.subscribe(f"{channel}-{i}")
                    w[i + 1000] = i
            assert [sub.get(WAIT) for _ in range(50)] == [(channel, i) for i in range(50)]
            assert len(d) == 150
        client.close()
    finally:
        db.stop()
    assert b"persisted-marker" not in (tmp_path / "log.aof").read_bytes()


class _Transport:
    """What ServerConnection needs of an asyncio transport, keeping what is written."""

    def __init__(self) -> None:
        self.out = bytearray()
        self.closing = False

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else None

    def write(self, data: bytes) -> None:
        self.out += data

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _SlowLog:
    """An append-only log that acknowledges nothing until ``release()``: every reply waits in ``hold``."""

    error = None

    def __init__(self) -> None:
        self.held: list[tuple[Any, bytes]] = []

    def ready(self) -> bool:
        return False

    def refuses(self, spec: Any, args: Any) -> bool:
        return False

    def hold(self, holder: Any, data: bytes) -> None:
        self.held.append((holder, data))

    def release(self) -> None:
        held, self.held = self.held, []
        for holder, data in held:
            holder.release(data)


@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "encrypted"])
def test_pushes_wait_behind_replies_held_for_the_log(encrypt: bool) -> None:
    """A push to a connection whose replies wait for the log is sent after them: with encryption, in nonce order."""
    import asyncio

    from cyberdb import crypto
    from cyberdb.server.net import ServerConnection, ServerContext
    from cyberdb.server.store import Store

    salt = b"s" * protocol.SALT_SIZE
    master = crypto.derive_master_key(PASSWORD, salt, 1)
    log = _SlowLog()
    ctx = ServerContext(Store(), master, salt, 1, encrypt, 10, 0, None, log=log)  # type: ignore[arg-type]

    def connect() -> tuple[ServerConnection, _Transport, protocol.ClientSession]:
        conn, transport = ServerConnection(ctx), _Transport()
        conn.connection_made(transport)  # type: ignore[arg-type]
        session = protocol.ClientSession(PASSWORD, encrypt)
        conn.data_received(session.start())
        while not session.ready:
            session.feed(bytes(transport.out))
            transport.out.clear()
            conn.data_received(session.handshake())
        return conn, transport, session

    async def run() -> list[Any]:
        sub_conn, sub_out, sub = connect()
        pub_conn, _pub_out, pub = connect()
        create = sub.request(1, BY_NAME["db.create"].op, encode_value(["t", "dict", {}]))
        subscribe = sub.request(2, SUBSCRIBE, encode_value([["news"]]))
        sub_conn.data_received(create + subscribe)  # a write, then a subscribe: both replies wait for the log
        pub_conn.data_received(pub.request(1, PUBLISH, encode_value(["news", "hello"])))
        assert not sub_out.out  # the push waits behind them
        log.release()
        sub.feed(bytes(sub_out.out))
        events = []
        while (event := sub.next_event()) is not None:
            events.append((event[0], decode_value(event[2])))
        return events

    assert asyncio.run(run()) == [(1, None), (2, ["news"]), (protocol.PUSH_ID, ["news", "hello"])]


# ---- sans-IO ---------------------------------------------------------------------------------------------------------

@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def sessions(request: pytest.FixtureRequest) -> Iterator[tuple[protocol.ClientSession, protocol.ServerSession]]:
    """A client and a server session after the handshake, in memory."""
    from cyberdb import crypto

    salt = b"s" * protocol.SALT_SIZE
    master = crypto.derive_master_key(PASSWORD, salt, 1)
    server = protocol.ServerSession(master, salt, 1, request.param)
    client = protocol.ClientSession(PASSWORD, request.param, client_id=b"c" * protocol.CLIENT_ID_SIZE)
    server.feed(client.start())
    while not (client.ready and server.ready):
        assert server.next_request() is None
        client.feed(server.data_to_send())
        out = client.handshake()
        if out:
            server.feed(out)
    yield client, server


def test_next_event_returns_pushes_and_keeps_replies_matched(
        sessions: tuple[protocol.ClientSession, protocol.ServerSession]) -> None:
    client, server = sessions
    message = encode_value(["news", {"n": 1}])
    client.request(1, SUBSCRIBE, encode_value([["news"]]))
    stream = server.push(message, protocol.push_frame(message)) + server.reply(1, 0, encode_value(["news"]))
    stream += server.push(message)
    for i in range(len(stream)):  # one byte at a time
        client.feed(stream[i:i + 1])
    events = [client.next_event(), client.next_event(), client.next_event(), client.next_event()]
    assert [e[0] for e in events if e] == [protocol.PUSH_ID, 1, protocol.PUSH_ID]
    assert events[3] is None
    assert decode_value(events[0][2]) == ["news", {"n": 1}]  # type: ignore[index]
    assert client.awaiting == 0


def test_next_reply_refuses_a_push(sessions: tuple[protocol.ClientSession, protocol.ServerSession]) -> None:
    client, server = sessions
    client.request(1, TABLES, encode_value([]))
    client.feed(server.push(encode_value(["news", 1])))
    with pytest.raises(cyberdb.ProtocolError):
        client.next_reply()


def test_client_request_ids_never_use_push_id(client: cyberdb.Client) -> None:
    first, _ack = client._begin()
    client._end(first)
    assert first != protocol.PUSH_ID and protocol.PUSH_ID == 0
