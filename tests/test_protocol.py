"""Tests of cyberdb.protocol, sans-IO: frame decoding and a client and a server session run against each other.

No sockets: the tests carry bytes between a ``ClientSession`` and a ``ServerSession`` by hand (and record them,
to check what travels).
"""

from __future__ import annotations

import os
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cyberdb import (
    AuthenticationError,
    ConnectionLostError,
    CyberDBError,
    EncryptionMismatchError,
    ProtocolError,
    crypto,
)
from cyberdb import ConnectionError as CyberConnectionError
from cyberdb.codec import decode_value, encode_value
from cyberdb.protocol import MAX_FRAME, MAX_PREAUTH, ClientSession, FrameDecoder, ServerSession, encode_frame

PASSWORD = "correct horse \u00e9 battery staple 7f3a"


# ---- FrameDecoder ----------------------------------------------------------------------------------------------


def drain(dec: FrameDecoder) -> list[bytes]:
    frames = []
    while (frame := dec.next_frame()) is not None:
        frames.append(frame)
    return frames


BODIES = [b"", b"x", b"hello world", bytes(range(256)), b"\x00" * 4096]


def test_encode_frame_is_length_prefixed() -> None:
    assert encode_frame(b"abc") == b"\x00\x00\x00\x03abc"
    assert encode_frame(b"") == b"\x00\x00\x00\x00"


def test_decoder_whole_frames() -> None:
    dec = FrameDecoder()
    for body in BODIES:
        dec.feed(encode_frame(body))
        assert dec.next_frame() == body
        assert dec.next_frame() is None
        assert dec.pending() == 0


def test_decoder_one_byte_at_a_time() -> None:
    dec = FrameDecoder()
    stream = b"".join(encode_frame(b) for b in BODIES)
    got = []
    for i in range(len(stream)):
        dec.feed(stream[i:i + 1])
        got += drain(dec)
    assert got == BODIES
    assert dec.pending() == 0


def test_decoder_several_frames_in_one_feed() -> None:
    dec = FrameDecoder()
    dec.feed(b"".join(encode_frame(b) for b in BODIES))
    assert drain(dec) == BODIES
    assert dec.pending() == 0


def test_decoder_keeps_trailing_partial_data() -> None:
    dec = FrameDecoder()
    partial = encode_frame(b"second frame")[:7]
    dec.feed(encode_frame(b"first") + partial)
    assert dec.next_frame() == b"first"
    assert dec.next_frame() is None
    assert dec.pending() == len(partial)
    dec.feed(encode_frame(b"second frame")[7:] + encode_frame(b"third")[:2])
    assert dec.next_frame() == b"second frame"
    assert dec.next_frame() is None
    dec.feed(encode_frame(b"third")[2:])
    assert dec.next_frame() == b"third"
    assert dec.next_frame() is None


def test_decoder_partial_length_prefix_needs_more_data() -> None:
    dec = FrameDecoder()
    dec.feed(b"\x00\x00\x00")
    assert dec.next_frame() is None
    dec.feed(b"\x02ab")
    assert dec.next_frame() == b"ab"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=10), st.data())
def test_decoder_any_split_of_a_stream(bodies: list[bytes], data: st.DataObject) -> None:
    stream = b"".join(encode_frame(b) for b in bodies)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=20)))
    dec = FrameDecoder()
    got: list[bytes] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        dec.feed(stream[start:cut])
        start = cut
        got += drain(dec)
    assert got == bodies


def test_preauth_limit_is_enforced_before_the_body_arrives() -> None:
    dec = FrameDecoder()
    assert dec.limit == MAX_PREAUTH == 4096
    dec.feed(struct.pack("!I", 4096))  # exactly the limit: waits for the body
    assert dec.next_frame() is None
    dec = FrameDecoder()
    dec.feed(struct.pack("!I", 4097))  # only the length prefix has arrived
    with pytest.raises(ProtocolError):
        dec.next_frame()


def test_post_auth_limit_is_max_frame() -> None:
    dec = FrameDecoder(max_frame=10_000)
    dec.limit = dec.max_frame  # what a session does once authenticated
    dec.feed(encode_frame(b"y" * 10_000))
    assert dec.next_frame() == b"y" * 10_000
    dec.feed(struct.pack("!I", 10_001))
    with pytest.raises(ProtocolError):
        dec.next_frame()


def test_default_max_frame() -> None:
    dec = FrameDecoder()
    assert dec.max_frame == MAX_FRAME
    dec.limit = dec.max_frame
    dec.feed(struct.pack("!I", MAX_FRAME + 1))
    with pytest.raises(ProtocolError):
        dec.next_frame()


def test_huge_announced_length_raises_even_when_fed_byte_by_byte() -> None:
    dec = FrameDecoder()
    for byte in struct.pack("!I", 0xFFFFFFFF):
        dec.feed(bytes([byte]))
    with pytest.raises(ProtocolError):
        dec.next_frame()


# ---- sessions in memory ----------------------------------------------------------------------------------------


class Pair:
    """A client and a server session, plus every byte that passed between them."""

    def __init__(self, encrypt: bool, client_encrypt: bool | None = None, client_password: str | None = PASSWORD,
                 server_password: str | None = PASSWORD, max_frame: int = MAX_FRAME) -> None:
        self.salt = os.urandom(16)
        self.master = crypto.derive_master_key(server_password, self.salt)  # like Server._prepare
        self.server = ServerSession(self.master, self.salt, crypto.PBKDF2_ITERATIONS, encrypt, max_frame=max_frame)
        self.client = ClientSession(client_password, encrypt if client_encrypt is None else client_encrypt,
                                    max_frame=max_frame)
        self.wire: list[bytes] = []

    def to_server(self, data: bytes) -> None:
        self.wire.append(data)
        self.server.feed(data)

    def to_client(self, data: bytes) -> None:
        self.wire.append(data)
        self.client.feed(data)

    def handshake(self) -> None:
        """Run the whole handshake; assert each step does what the protocol says."""
        self.to_server(self.client.start())
        assert self.server.next_request() is None
        self.to_client(self.server.data_to_send())
        auth = self.client.handshake()
        assert auth and not self.client.ready
        self.to_server(auth)
        assert self.server.next_request() is None
        assert self.server.ready
        self.to_client(self.server.data_to_send())
        assert self.client.handshake() == b""
        assert self.client.ready

    def call(self, req_id: int, op: int, args: Any, result: Any, status: int = 0) -> Any:
        """One request and its reply through both sessions; returns what the client decoded."""
        self.to_server(self.client.request(req_id, op, encode_value(args)))
        got = self.server.next_request()
        assert got is not None
        rid, rop, payload, _ack = got
        assert (rid, rop) == (req_id, op)
        assert decode_value(payload) == args
        assert self.server.next_request() is None
        self.to_client(self.server.reply(req_id, status, encode_value(result)))
        reply = self.client.next_reply()
        assert reply is not None
        rid, rstatus, payload = reply
        assert (rid, rstatus) == (req_id, status)
        assert self.client.next_reply() is None
        return decode_value(payload)

    def wire_bytes(self) -> bytes:
        return b"".join(self.wire)


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def encrypt(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def pair(encrypt: bool) -> Pair:
    p = Pair(encrypt)
    p.handshake()
    return p


def test_handshake_completes_and_requests_roundtrip(pair: Pair) -> None:
    assert pair.call(1, 7, ["table", "key"], "value") == "value"
    assert pair.call(2, 8, [(1, 2), {3}], {"nested": [1.5, None]}) == {"nested": [1.5, None]}
    assert pair.call(0xFFFFFFFF, 0xFFFF, [], None) is None
    assert pair.call(3, 1, ["missing"], ["missing"], status=1) == ["missing"]


def test_many_requests_pipelined_in_one_feed(pair: Pair) -> None:
    pair.to_server(b"".join(pair.client.request(i, 100 + i, encode_value([i])) for i in range(50)))
    replies = []
    while (req := pair.server.next_request()) is not None:
        req_id, op, payload, _ack = req
        assert op == 100 + req_id
        replies.append(pair.server.reply(req_id, 0, encode_value(decode_value(payload)[0] * 2)))
    assert len(replies) == 50
    pair.to_client(b"".join(replies))
    got = []
    while (rep := pair.client.next_reply()) is not None:
        got.append((rep[0], decode_value(rep[2])))
    assert got == [(i, i * 2) for i in range(50)]


def test_requests_fed_one_byte_at_a_time(pair: Pair) -> None:
    stream = b"".join(pair.client.request(i, 5, encode_value(["x" * i])) for i in range(5))
    got = []
    for i in range(len(stream)):
        pair.server.feed(stream[i:i + 1])
        while (req := pair.server.next_request()) is not None:
            got.append((req[0], req[1], decode_value(req[2])))
    assert got == [(i, 5, ["x" * i]) for i in range(5)]
    stream = b"".join(pair.server.reply(i, 0, encode_value(i)) for i in range(5))
    replies = []
    for i in range(len(stream)):
        pair.client.feed(stream[i:i + 1])
        while (rep := pair.client.next_reply()) is not None:
            replies.append((rep[0], decode_value(rep[2])))
    assert replies == [(i, i) for i in range(5)]


def test_handshake_one_byte_at_a_time(encrypt: bool) -> None:
    p = Pair(encrypt)
    hello = p.client.start()
    for i in range(len(hello)):
        p.server.feed(hello[i:i + 1])
        assert p.server.next_request() is None
    challenge = p.server.data_to_send()
    assert challenge
    auth = b""
    for i in range(len(challenge)):
        p.client.feed(challenge[i:i + 1])
        auth += p.client.handshake()
    for i in range(len(auth)):
        p.server.feed(auth[i:i + 1])
        assert p.server.next_request() is None
    assert p.server.ready
    welcome = p.server.data_to_send()
    for i in range(len(welcome)):
        p.client.feed(welcome[i:i + 1])
        assert p.client.handshake() == b""
    assert p.client.ready
    assert p.call(9, 9, ["after"], "ok") == "ok"


def test_large_frames_allowed_after_authentication(pair: Pair) -> None:
    big = "z" * (MAX_PREAUTH * 4)
    assert pair.call(1, 1, [big], big) == big


def test_max_frame_enforced_after_authentication(encrypt: bool) -> None:
    p = Pair(encrypt, max_frame=20_000)
    p.handshake()
    assert p.call(1, 1, ["q" * 15_000], None) is None
    p.server.feed(struct.pack("!I", 20_001))
    with pytest.raises(ProtocolError):
        p.server.next_request()
    p.client.feed(struct.pack("!I", 20_001))
    with pytest.raises(ProtocolError):
        p.client.next_reply()


def test_preauth_limit_on_the_server_session() -> None:
    p = Pair(False)
    p.server.feed(struct.pack("!I", MAX_PREAUTH + 1))
    with pytest.raises(ProtocolError):
        p.server.next_request()
    with pytest.raises(ProtocolError):
        p.server.feed(b"more")


def test_preauth_limit_on_the_client_session() -> None:
    p = Pair(False)
    p.client.start()
    p.client.feed(struct.pack("!I", MAX_PREAUTH + 1))
    with pytest.raises(ProtocolError):
        p.client.handshake()


def test_preauth_limit_applies_until_the_proof_is_checked(encrypt: bool) -> None:
    p = Pair(encrypt)
    p.to_server(p.client.start())
    assert p.server.next_request() is None
    p.server.feed(struct.pack("!I", MAX_PREAUTH + 1))  # instead of the proof: a big frame
    with pytest.raises(ProtocolError):
        p.server.next_request()
    assert not p.server.ready


def test_sealed_frames_hide_the_payload(encrypt: bool) -> None:
    p = Pair(encrypt)
    p.handshake()
    secret = "the-payload-1234567890"
    p.call(1, 1, [secret], secret + "-reply")
    visible = secret.encode() in p.wire_bytes()
    assert visible is not encrypt


def test_password_and_key_never_travel(encrypt: bool) -> None:
    p = Pair(encrypt)
    p.handshake()
    p.call(1, 1, ["k"], "v")
    wire = p.wire_bytes()
    for needle in (PASSWORD.encode(), PASSWORD.encode("utf-16-le"), PASSWORD.encode("latin-1", "replace"),
                   p.master, b"battery"):
        assert needle not in wire


def test_password_never_travels_on_a_failed_login() -> None:
    p = Pair(False, client_password=PASSWORD + "x")
    p.to_server(p.client.start())
    p.server.next_request()
    p.to_client(p.server.data_to_send())
    p.to_server(p.client.handshake())
    with pytest.raises(AuthenticationError):
        p.server.next_request()
    p.to_client(p.server.data_to_send())
    with pytest.raises(AuthenticationError):
        p.client.handshake()
    for needle in (PASSWORD.encode(), b"battery"):
        assert needle not in p.wire_bytes()


def test_sessions_use_fresh_nonces() -> None:
    assert ClientSession(PASSWORD, True).start() != ClientSession(PASSWORD, True).start()
    a, b = Pair(True), Pair(True)
    a.handshake()
    b.handshake()
    # the same request in two sessions never produces the same bytes (fresh keys per session)
    assert a.client.request(1, 1, b"same") != b.client.request(1, 1, b"same")


@pytest.mark.parametrize("password", [None, ""])
def test_no_password_on_both_sides(encrypt: bool, password: str | None) -> None:
    p = Pair(encrypt, client_password=password, server_password=password)
    p.handshake()
    assert p.call(1, 1, [], 42) == 42


# ---- refusals ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("client_password", ["wrong", PASSWORD + " ", None, ""])
def test_wrong_password(encrypt: bool, client_password: str | None) -> None:
    p = Pair(encrypt, client_password=client_password)
    p.to_server(p.client.start())
    assert p.server.next_request() is None
    p.to_client(p.server.data_to_send())
    p.to_server(p.client.handshake())
    with pytest.raises(AuthenticationError):
        p.server.next_request()
    assert not p.server.ready
    refusal = p.server.data_to_send()
    assert refusal  # the server tells the client why before closing
    p.to_client(refusal)
    with pytest.raises(AuthenticationError):
        p.client.handshake()
    assert not p.client.ready
    with pytest.raises(ProtocolError):
        p.server.feed(b"\x00\x00\x00\x01x")
    with pytest.raises(ProtocolError):
        p.client.feed(b"\x00\x00\x00\x01x")


def test_server_without_the_key_cannot_fool_the_client(encrypt: bool) -> None:
    p = Pair(encrypt)
    p.to_server(p.client.start())
    p.server.next_request()
    p.to_client(p.server.data_to_send())
    p.client.handshake()
    p.client.feed(encode_frame(b"CYOK" + b"\x00" * 32))  # a WELCOME with a made-up server proof
    with pytest.raises(AuthenticationError):
        p.client.handshake()
    assert not p.client.ready


@pytest.mark.parametrize(("server_encrypt", "client_encrypt"), [(False, True), (True, False)])
def test_encrypt_mismatch(server_encrypt: bool, client_encrypt: bool) -> None:
    p = Pair(server_encrypt, client_encrypt=client_encrypt)
    p.to_server(p.client.start())
    assert p.server.next_request() is None
    p.to_client(p.server.data_to_send())
    with pytest.raises(EncryptionMismatchError) as info:
        p.client.handshake()
    assert isinstance(info.value, CyberConnectionError)
    assert not p.client.ready
    with pytest.raises(ProtocolError):
        p.client.feed(b"x")


GARBAGE_HELLOS = {
    "http request": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "framed text": encode_frame(b"hello, is this redis?"),
    "empty frame": encode_frame(b""),
    "right size, wrong magic": encode_frame(b"XXXX" + b"\x01\x00" + b"\x00" * 32),
    "hello plus a byte": encode_frame(b"CYDB\x01\x00" + b"\x00" * 33),
    "proof before hello": encode_frame(b"\x00" * 32),
    "tls client hello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 40,
}


@pytest.mark.parametrize("garbage", GARBAGE_HELLOS.values(), ids=GARBAGE_HELLOS.keys())
def test_garbage_instead_of_hello(encrypt: bool, garbage: bytes) -> None:
    p = Pair(encrypt)
    p.server.feed(garbage)
    with pytest.raises(ProtocolError):
        p.server.next_request()
    assert not p.server.ready
    with pytest.raises(ProtocolError):
        p.server.feed(p.client.start())


def test_unsupported_version_is_refused_with_a_reason() -> None:
    p = Pair(False)
    hello = bytearray(p.client.start())
    hello[8] = 99  # 4 length + 4 magic: the version byte
    p.server.feed(bytes(hello))
    with pytest.raises(ProtocolError):
        p.server.next_request()
    p.client.feed(p.server.data_to_send())
    with pytest.raises(CyberConnectionError, match="version"):
        p.client.handshake()


GARBAGE_CHALLENGES = {
    "framed text": encode_frame(b"+OK redis"),
    "too short": encode_frame(b"CYDB\x01"),
    "wrong magic": encode_frame(b"XXXX" + b"\x01\x00" + struct.pack("!I", 1000) + b"\x00" * 48),
    "wrong version": encode_frame(b"CYDB" + b"\x07\x00" + struct.pack("!I", 1000) + b"\x00" * 48),
    "zero iterations": encode_frame(b"CYDB" + b"\x01\x00" + struct.pack("!I", 0) + b"\x00" * 48),
    "cpu trap iterations": encode_frame(b"CYDB" + b"\x01\x00" + struct.pack("!I", crypto.MAX_ITERATIONS + 1)
                                        + b"\x00" * 48),
}


@pytest.mark.parametrize("garbage", GARBAGE_CHALLENGES.values(), ids=GARBAGE_CHALLENGES.keys())
def test_garbage_instead_of_challenge(garbage: bytes) -> None:
    p = Pair(False)
    p.client.start()
    p.client.feed(garbage)
    with pytest.raises(ProtocolError):
        p.client.handshake()
    assert not p.client.ready


def test_request_shorter_than_its_header() -> None:
    p = Pair(False)
    p.handshake()
    p.server.feed(encode_frame(b"\x00\x01"))
    with pytest.raises(ProtocolError):
        p.server.next_request()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_to_a_server_raise_only_protocol_errors(data: bytes) -> None:
    server = ServerSession(b"k" * 32, b"s" * 16, 1000, False)
    try:
        server.feed(data)
        while server.next_request() is not None:
            pass
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_to_a_client_raise_only_cyberdb_errors(data: bytes) -> None:
    client = ClientSession("pw", False)
    client.start()
    try:
        client.feed(data)
        client.handshake()
    except CyberDBError:  # ProtocolError, or a refusal if the bytes happen to start with a reject frame
        pass
    assert not client.ready


# ---- sealed frames: tampering, replay, reordering ------------------------------------------------------------


@pytest.fixture
def sealed() -> Pair:
    p = Pair(True)
    p.handshake()
    return p


def _flip(frame: bytes, index: int) -> bytes:
    out = bytearray(frame)
    out[index] ^= 0x01
    return bytes(out)


@pytest.mark.parametrize("where", [4, 5, 10, -1, -16])  # first sealed byte ... inside the GCM tag
def test_tampered_request_is_rejected(sealed: Pair, where: int) -> None:
    frame = sealed.client.request(1, 1, encode_value(["k"]))
    sealed.server.feed(_flip(frame, where))
    with pytest.raises(ProtocolError):
        sealed.server.next_request()


@pytest.mark.parametrize("where", [4, 9, -1])
def test_tampered_reply_is_rejected(sealed: Pair, where: int) -> None:
    frame = sealed.server.reply(1, 0, encode_value("v"))
    sealed.client.feed(_flip(frame, where))
    with pytest.raises(ProtocolError):
        sealed.client.next_reply()


def test_truncated_sealed_frame_is_rejected(sealed: Pair) -> None:
    frame = sealed.client.request(1, 1, encode_value(["k"]))
    body = frame[4:]
    sealed.server.feed(encode_frame(body[:-1]))
    with pytest.raises(ProtocolError):
        sealed.server.next_request()


def test_replayed_request_is_rejected(sealed: Pair) -> None:
    frame = sealed.client.request(1, 1, encode_value(["k"]))
    sealed.server.feed(frame)
    assert sealed.server.next_request() is not None
    sealed.server.feed(frame)
    with pytest.raises(ProtocolError):
        sealed.server.next_request()


def test_replayed_reply_is_rejected(sealed: Pair) -> None:
    sealed.client.request(1, 1, encode_value(["k"]))
    frame = sealed.server.reply(1, 0, encode_value("v"))
    sealed.client.feed(frame + frame)
    assert sealed.client.next_reply() is not None
    with pytest.raises(ProtocolError):
        sealed.client.next_reply()


def test_swapped_requests_are_rejected(sealed: Pair) -> None:
    first = sealed.client.request(1, 1, encode_value(["a"]))
    second = sealed.client.request(2, 1, encode_value(["b"]))
    sealed.server.feed(second + first)
    with pytest.raises(ProtocolError):
        sealed.server.next_request()


def test_swapped_replies_are_rejected(sealed: Pair) -> None:
    first = sealed.server.reply(1, 0, encode_value("a"))
    second = sealed.server.reply(2, 0, encode_value("b"))
    sealed.client.feed(second + first)
    with pytest.raises(ProtocolError):
        sealed.client.next_reply()


def test_dropped_request_is_detected(sealed: Pair) -> None:
    sealed.client.request(1, 1, encode_value(["lost"]))
    sealed.server.feed(sealed.client.request(2, 1, encode_value(["next"])))
    with pytest.raises(ProtocolError):
        sealed.server.next_request()


def test_frame_from_another_session_is_rejected(sealed: Pair) -> None:
    other = Pair(True)
    other.handshake()
    sealed.server.feed(other.client.request(1, 1, encode_value(["k"])))
    with pytest.raises(ProtocolError):
        sealed.server.next_request()


def test_own_request_reflected_back_is_rejected(sealed: Pair) -> None:
    # each direction has its own key: a request bounced back to the client is not a valid reply
    sealed.client.feed(sealed.client.request(1, 1, encode_value(["k"])))
    with pytest.raises(ProtocolError):
        sealed.client.next_reply()


# ---- a dead session refuses further use --------------------------------------------------------------------------


def test_server_session_is_dead_after_an_error(sealed: Pair) -> None:
    first = sealed.client.request(1, 1, encode_value(["a"]))
    second = sealed.client.request(2, 1, encode_value(["b"]))
    sealed.server.feed(second + first)
    with pytest.raises(ProtocolError):
        sealed.server.next_request()
    # `first` is still buffered and would open with the expected counter: it must not be executed
    with pytest.raises(ProtocolError):
        sealed.server.next_request()
    with pytest.raises(ProtocolError):
        sealed.server.feed(sealed.client.request(3, 1, encode_value(["c"])))


def test_client_session_is_dead_after_an_error(sealed: Pair) -> None:
    first = sealed.server.reply(1, 0, encode_value("a"))
    second = sealed.server.reply(2, 0, encode_value("b"))
    sealed.client.feed(second + first)
    with pytest.raises(ProtocolError):
        sealed.client.next_reply()
    # `first` is still buffered and would open with the expected counter: it must not be returned
    with pytest.raises(ProtocolError):
        sealed.client.next_reply()
    with pytest.raises(ProtocolError):
        sealed.client.feed(sealed.server.reply(3, 0, encode_value("c")))


def test_plain_client_session_is_dead_after_an_error() -> None:
    p = Pair(False)
    p.handshake()
    p.client.feed(encode_frame(b"\x00") + p.server.reply(1, 0, encode_value("valid")))
    with pytest.raises(ProtocolError):
        p.client.next_reply()  # a reply shorter than its header
    with pytest.raises(ProtocolError):
        p.client.next_reply()  # the valid reply behind it must not be returned


def test_dead_sessions_refuse_to_build_frames(sealed: Pair) -> None:
    tampered_reply = _flip(sealed.server.reply(1, 0, b"\x90"), 6)  # built while the server session is alive
    sealed.server.feed(_flip(sealed.client.request(1, 1, b"\x90"), 6))
    with pytest.raises(ProtocolError):
        sealed.server.next_request()
    with pytest.raises(ProtocolError):
        sealed.server.reply(1, 0, b"\x90")
    sealed.client.feed(tampered_reply)
    with pytest.raises(ProtocolError):
        sealed.client.next_reply()
    with pytest.raises(ProtocolError):
        sealed.client.request(2, 1, b"\x90")


def test_replies_must_answer_the_oldest_waiting_request(pair: Pair) -> None:
    pair.client.request(5, 1, encode_value([]), ack=5)
    pair.client.request(6, 1, encode_value([]), ack=5)
    assert pair.client.awaiting == 2
    pair.to_client(pair.server.reply(6, 0, encode_value(None)))
    with pytest.raises(ProtocolError):
        pair.client.next_reply()


def test_eof_while_a_reply_is_awaited_is_a_lost_connection(pair: Pair) -> None:
    pair.client.request(1, 1, encode_value([]))
    pair.client.feed(b"")
    with pytest.raises(ConnectionLostError):
        pair.client.next_reply()


def test_request_carries_its_number_and_ack(pair: Pair) -> None:
    pair.to_server(pair.client.request(2**40, 104, encode_value(["t"]), ack=2**40 - 3))
    assert pair.server.next_request() == (2**40, 104, encode_value(["t"]), 2**40 - 3)


def test_hello_carries_the_client_id() -> None:
    client = ClientSession("pw", False, client_id=b"c" * 16)
    server = ServerSession(b"k" * 32, b"s" * 16, 1000, False)
    server.feed(client.start())
    assert server.next_request() is None
    assert server.client_id == b"c" * 16
