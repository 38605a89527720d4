"""The wire protocol, sans-IO: frames, the handshake, and request/reply bodies.  No sockets, no asyncio.

Every frame is ``length (uint32, big-endian) + body``.  Bodies before authentication are small handshake
messages (at most ``max_preauth`` bytes); after it, a body is ``request id (uint32) + code (uint16) + payload``
``request id (uint64) + ack (uint64) + command id (uint16) + payload`` in a request and ``request id (uint64) +
status (uint16) + payload`` in a reply, where status is 0 (ok) or an error code and ``payload`` is a
codec-encoded value.  With encryption the whole body is sealed by :class:`~cyberdb.crypto.FrameCipher`.

Request ids are numbered per client (the 16-byte client id of the HELLO), not per connection, so a request
re-sent on a new connection keeps its number and the server can answer it from its reply cache instead of
running it again; ``ack`` tells the server that every request of this client numbered below it is finished,
so their cached replies can go (RIFL's design).  An all-zero client id asks for no reply cache.

Handshake (both sides prove they know the password-derived key; the password never travels)::

    client -> HELLO      b"CYDB" version flags client_nonce[32] client_id[16]
    server -> CHALLENGE  b"CYDB" version flags iterations salt[16] server_nonce[32]   (or REJECT b"CYNO" reason)
    client -> AUTH       HMAC(key, "client" | transcript)
    server -> WELCOME    b"CYOK" HMAC(key, "server" | transcript | client proof)        (or REJECT)

The server's and the client's side are :class:`ServerSession` and :class:`ClientSession`; transports feed them
bytes and write what they return.  After any error a session is dead and refuses further use.

Publish/subscribe: the server pushes each message to a subscribed connection as a reply frame with the reserved
request id ``PUSH_ID`` (clients number their requests from 1), status OK and payload ``[channel, value]``; it is
sealed in the order it is written, like a reply.  ``ClientSession.next_event`` returns such frames as well as
replies; ``next_reply`` refuses them (a connection that did not subscribe gets none).
"""

from __future__ import annotations

import collections
import enum
import os
import struct

from . import crypto
from .errors import AuthenticationError, ConnectionLostError, EncryptionMismatchError, ProtocolError
from .errors import ConnectionError as CyberConnectionError

__all__ = [
    "MAX_FRAME",
    "MAX_PREAUTH",
    "PUSH_ID",
    "ClientSession",
    "FrameDecoder",
    "ServerSession",
    "encode_frame",
    "push_frame",
]

VERSION = 2
MAX_FRAME = 64 << 20  # 64 MiB: one value or reply larger than this is refused
MAX_PREAUTH = 4096
FLAG_ENCRYPT = 0x01
MAGIC, REJECT, WELCOME = b"CYDB", b"CYNO", b"CYOK"
NONCE_SIZE, SALT_SIZE, PROOF_SIZE, CLIENT_ID_SIZE = 32, 16, 32, 16
ANONYMOUS = bytes(CLIENT_ID_SIZE)
STATUS_OK = 0
PUSH_ID = 0  # the request id of a pushed (published) message; no request has it

_LEN = struct.Struct("!I")
_REQUEST = struct.Struct("!QQH")  # request id, ack, command id
_REPLY = struct.Struct("!QH")  # request id, status
_FRAMED_REQUEST = struct.Struct("!IQQH")  # length + request header: a plain frame in one pack
_FRAMED_REPLY = struct.Struct("!IQH")
_HELLO = struct.Struct(f"!4sBB{NONCE_SIZE}s{CLIENT_ID_SIZE}s")
_CHALLENGE = struct.Struct(f"!4sBBI{SALT_SIZE}s{NONCE_SIZE}s")
_PUSH_HEADER = _REPLY.pack(PUSH_ID, STATUS_OK)
HEADER_SIZE = _REQUEST.size  # the larger of the two headers


def encode_frame(body: bytes) -> bytes:
    """Prefix a body with its length."""
    return _LEN.pack(len(body)) + body


class FrameDecoder:
    """Splits a byte stream into frame bodies; enforces the frame size limit before buffering a body.

    The usual case, a read holding exactly whole frames, copies nothing but the bodies; only a frame split
    across reads is accumulated in a bytearray.
    """

    __slots__ = ("_data", "_pos", "limit", "max_frame")

    def __init__(self, max_frame: int = MAX_FRAME, max_preauth: int = MAX_PREAUTH) -> None:
        self._data: bytes | bytearray = b""
        self._pos = 0
        self.max_frame = max_frame
        self.limit = max_preauth  # raised to max_frame once the peer is authenticated

    def feed(self, data: bytes) -> None:
        """Append received bytes (kept by reference when they start a new frame: pass immutable bytes)."""
        if type(data) is not bytes:
            data = bytes(data)
        if self._pos == len(self._data):  # everything before was consumed: keep the new bytes as they are
            self._data = data
            self._pos = 0
            return
        if type(self._data) is not bytearray:  # a partial frame is waiting: accumulate from now on
            self._data = bytearray(memoryview(self._data)[self._pos:])
            self._pos = 0
        self._data += data

    def next_frame(self) -> bytes | None:
        """Return the next complete frame body, or None if more data is needed.

        Raises:
            ProtocolError: the announced frame is larger than the current limit.
        """
        data, pos = self._data, self._pos
        available = len(data) - pos
        if available < 4:
            return None
        (length,) = _LEN.unpack_from(data, pos)
        if length > self.limit:
            raise ProtocolError(f"frame of {length} bytes exceeds the limit of {self.limit}")
        if available - 4 < length:
            if pos and type(data) is bytearray:  # drop consumed bytes while we wait for a big frame
                del data[:pos]
                self._pos = 0
            return None
        end = pos + 4 + length
        self._pos = end
        if type(data) is bytes:
            return data[pos + 4:end]
        return bytes(memoryview(data)[pos + 4:end])

    def pending(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._data) - self._pos

    def head(self, size: int) -> bytes:
        """The first ``size`` bytes received but not yet returned (to show what a peer sent)."""
        return bytes(self._data[self._pos:self._pos + size])


class State(enum.Enum):
    """Where a session stands."""

    HELLO = "hello"
    AUTH = "auth"
    READY = "ready"
    CLOSED = "closed"


class _Session:
    """What both sides share: the decoder, the cipher once keys exist, and the dead-after-error rule."""

    def __init__(self, max_frame: int) -> None:
        self.decoder = FrameDecoder(max_frame=max_frame)
        self._max_payload = max_frame - _REQUEST.size - crypto.TAG_SIZE  # any larger payload gets a closer look
        self.state = State.HELLO
        self._cipher: crypto.FrameCipher | None = None
        self._transcript = b""

    def feed(self, data: bytes) -> None:
        """Append received bytes."""
        if self.state is State.CLOSED:
            raise ProtocolError("session is closed")
        self.decoder.feed(data)

    def _next_body(self) -> bytes | None:
        if self.state is State.CLOSED:
            raise ProtocolError("session is closed")
        try:
            body = self.decoder.next_frame()
            if body is not None and self._cipher is not None:
                body = self._cipher.open(body)
        except ProtocolError:
            self.state = State.CLOSED
            raise
        return body

    def _seal(self, header: bytes, payload: bytes) -> bytes:
        """The frame of one message whose header is packed already (sealed when encrypting)."""
        if self.state is not State.READY:
            raise ProtocolError("session is closed")
        cipher = self._cipher
        if cipher is None:
            return _LEN.pack(len(header) + len(payload)) + header + payload
        sealed = cipher.seal(header + payload)
        return _LEN.pack(len(sealed)) + sealed

    def _next_message(self, header_size: int) -> bytes | None:
        """The next message body after the handshake (at least ``header_size`` bytes), or None."""
        body = self._next_body()
        if body is not None and len(body) < header_size:
            raise self._fail(ProtocolError("message shorter than its header"))
        return body

    def _fail(self, exc: Exception) -> Exception:
        self.state = State.CLOSED
        return exc

    def _set_ready(self, master: bytes, encrypt: bool, server_side: bool) -> None:
        if encrypt:
            c2s, s2c = crypto.session_keys(master, self._transcript)
            self._cipher = crypto.FrameCipher(s2c, c2s) if server_side else crypto.FrameCipher(c2s, s2c)
        self.decoder.limit = self.decoder.max_frame
        self.state = State.READY

    @property
    def ready(self) -> bool:
        """True once the handshake has completed."""
        return self.state is State.READY


class ServerSession(_Session):
    """The server's side of one connection."""

    def __init__(self, master: bytes, salt: bytes, iterations: int, encrypt: bool,
                 max_frame: int = MAX_FRAME) -> None:
        super().__init__(max_frame)
        self._master, self._salt, self._iterations, self._encrypt = master, salt, iterations, encrypt
        self._outbox: list[bytes] = []
        self.client_id = ANONYMOUS  # from the HELLO; ANONYMOUS asks for no reply cache

    def data_to_send(self) -> bytes:
        """Handshake bytes to write to the peer (and forget)."""
        out = b"".join(self._outbox)
        self._outbox.clear()
        return out

    def next_request(self) -> tuple[int, int, bytes, int] | None:
        """Return the next (request id, command id, payload, ack), handling handshake frames on the way.

        Raises:
            ProtocolError: malformed or oversized frame (close the connection).
            AuthenticationError: wrong proof; ``data_to_send()`` holds the refusal to write before closing.
        """
        while self.state is not State.READY:
            body = self._next_body()
            if body is None:
                return None
            self._handshake(body)
        body = self._next_message(_REQUEST.size)
        if body is None:
            return None
        req_id, ack, op = _REQUEST.unpack_from(body)
        return req_id, op, body[_REQUEST.size:], ack

    def _handshake(self, body: bytes) -> None:
        if self.state is State.HELLO:
            if len(body) < 6 or not body.startswith(MAGIC):
                raise self._fail(ProtocolError("not a CyberDB client (bad hello)"))
            version = body[4]
            if version != VERSION:  # checked before the size: an older client's HELLO is shorter
                self._outbox.append(reject_frame(f"unsupported protocol version {version}"))
                raise self._fail(ProtocolError(f"unsupported protocol version {version}"))
            if len(body) != _HELLO.size:
                raise self._fail(ProtocolError("not a CyberDB client (bad hello)"))
            self.client_id = _HELLO.unpack(body)[4]
            flags = FLAG_ENCRYPT if self._encrypt else 0
            challenge = _CHALLENGE.pack(MAGIC, VERSION, flags, self._iterations, self._salt, os.urandom(NONCE_SIZE))
            self._transcript = body + challenge
            self._outbox.append(encode_frame(challenge))
            self.state = State.AUTH
        elif self.state is State.AUTH:
            expected = crypto.proof(self._master, b"client", self._transcript)
            if len(body) != PROOF_SIZE or not crypto.verify(expected, body):
                self._outbox.append(reject_frame("authentication failed"))
                raise self._fail(AuthenticationError("authentication failed"))
            server_proof = crypto.proof(self._master, b"server", self._transcript + body)
            self._outbox.append(encode_frame(WELCOME + server_proof))
            self._set_ready(self._master, self._encrypt, server_side=True)
        else:
            raise self._fail(ProtocolError("session is closed"))

    def reply(self, req_id: int, status: int, payload: bytes) -> bytes:
        """Build the frame answering ``req_id``."""
        if self._cipher is None and self.state is State.READY:  # the hot path: one pack, one concatenation
            return _FRAMED_REPLY.pack(len(payload) + _REPLY.size, req_id, status) + payload
        return self._seal(_REPLY.pack(req_id, status), payload)

    def push(self, payload: bytes, plain: bytes | None = None) -> bytes:
        """The frame pushing a published message; ``plain`` is its unencrypted frame if built already.

        With encryption it is sealed now: write such frames in the order they are built, replies included.
        """
        if self._cipher is None and self.state is State.READY:
            return plain if plain is not None else push_frame(payload)
        return self._seal(_REPLY.pack(PUSH_ID, STATUS_OK), payload)


def push_frame(payload: bytes) -> bytes:
    """The unencrypted frame pushing a published message (payload: encoded ``[channel, value]``)."""
    return _FRAMED_REPLY.pack(len(payload) + _REPLY.size, PUSH_ID, STATUS_OK) + payload


def reject_frame(reason: str) -> bytes:
    """A pre-authentication refusal that tells the client why before the server closes."""
    return encode_frame(REJECT + reason.encode()[:MAX_PREAUTH - 8])


class ClientSession(_Session):
    """The client's side of one connection."""

    def __init__(self, password: str | None, encrypt: bool, max_frame: int = MAX_FRAME,
                 client_id: bytes = ANONYMOUS, peer: str = "") -> None:
        """``peer`` (e.g. ``"127.0.0.1:9980"``) names the server in errors."""
        super().__init__(max_frame)
        if len(client_id) != CLIENT_ID_SIZE:
            raise ValueError(f"a client id has {CLIENT_ID_SIZE} bytes")
        self._peer = peer
        self._password, self._encrypt, self._client_id = password, encrypt, client_id
        self._expected: collections.deque[int] = collections.deque()  # ids of requests awaiting a reply
        self._eof = False
        self._master = b""
        self._proof = b""

    def start(self) -> bytes:
        """The HELLO frame to send first."""
        hello = _HELLO.pack(MAGIC, VERSION, FLAG_ENCRYPT if self._encrypt else 0, os.urandom(NONCE_SIZE),
                            self._client_id)
        self._transcript = hello
        return encode_frame(hello)

    def handshake(self) -> bytes:
        """Process received handshake frames; return bytes to send (possibly empty).  Check ``ready`` after.

        Raises:
            AuthenticationError: wrong password, or the server could not prove it knows it.
            EncryptionMismatchError: the server's ``encrypt`` setting differs from ours.
            ConnectionError: the server refused the connection (whitelist, too many connections, ...).
            ProtocolError: the peer is not a CyberDB server.
        """
        out = b""
        while self.state is not State.READY:
            head = self.decoder.head(32)
            try:
                body = self._next_body()
            except ProtocolError as exc:  # e.g. b"HTTP/1.1 400" read as a length: a frame of 1213486160 bytes
                raise self._not_cyberdb(head) from exc
            if body is None:
                break
            if body.startswith(REJECT):
                reason = body[len(REJECT):].decode(errors="replace")
                cls = AuthenticationError if "authentication" in reason else CyberConnectionError
                raise self._fail(cls(f"server refused the connection: {reason}"))
            if self.state is State.HELLO:
                out += self._on_challenge(body)
            elif self.state is State.AUTH:
                self._on_welcome(body)
        return out

    def _on_challenge(self, body: bytes) -> bytes:
        if len(body) != _CHALLENGE.size or not body.startswith(MAGIC):
            raise self._not_cyberdb(encode_frame(body)[:32])
        _magic, version, flags, iterations, salt, _nonce = _CHALLENGE.unpack(body)
        if version != VERSION:
            raise self._fail(ProtocolError(f"server speaks protocol version {version}, we speak {VERSION}"))
        server_encrypt = bool(flags & FLAG_ENCRYPT)
        if server_encrypt != self._encrypt:
            raise self._fail(EncryptionMismatchError(
                f"the server has encrypt={server_encrypt} but this client has encrypt={self._encrypt}; "
                "both sides must use the same setting"))
        if not 1 <= iterations <= crypto.MAX_ITERATIONS:
            raise self._fail(ProtocolError(f"server asks for {iterations} key derivation iterations"))
        self._transcript += body
        self._master = crypto.derive_master_key(self._password, salt, iterations)
        self._proof = crypto.proof(self._master, b"client", self._transcript)
        self.state = State.AUTH
        return encode_frame(self._proof)

    def _not_cyberdb(self, head: bytes) -> ProtocolError:
        at = f" at {self._peer}" if self._peer else ""
        exc = ProtocolError(f"the peer{at} did not answer like a CyberDB server (it sent {head!r}...)")
        self._fail(exc)
        return exc

    def _on_welcome(self, body: bytes) -> None:
        expected = crypto.proof(self._master, b"server", self._transcript + self._proof)
        if not body.startswith(WELCOME) or not crypto.verify(expected, body[len(WELCOME):]):
            raise self._fail(AuthenticationError("the server could not prove it knows the password"))
        self._set_ready(self._master, self._encrypt, server_side=False)

    def feed(self, data: bytes) -> None:
        """Append received bytes; ``b""`` means the server closed the connection."""
        if not data:
            self._eof = True
        elif self.state is State.CLOSED:
            raise ProtocolError("session is closed")
        else:
            self.decoder.feed(data)

    def check_size(self, payload_size: int) -> None:
        """Refuse a request payload whose frame would exceed the frame limit, before anything is built or sent.

        Raises:
            ValueError: the frame would be larger than ``max_frame`` (the server would drop the connection).
        """
        size = _REQUEST.size + payload_size + (crypto.TAG_SIZE if self._encrypt else 0)
        if size > self.decoder.max_frame:
            raise ValueError(f"a request of {size} bytes exceeds the frame limit of {self.decoder.max_frame} bytes "
                             f"({self.decoder.max_frame / (1 << 20):g} MiB, cyberdb.protocol.MAX_FRAME); "
                             "nothing was sent: store the value in smaller pieces")

    def request(self, req_id: int, op: int, payload: bytes, ack: int = 0) -> bytes:
        """Build the frame of one request and expect its reply (replies come in request order).

        Raises:
            ValueError: the frame would exceed the frame limit (see ``check_size``); the session stays usable.
        """
        if self.state is not State.READY:
            raise ProtocolError("the handshake has not completed")
        if len(payload) > self._max_payload:  # one compare on the hot path
            self.check_size(len(payload))
        if self._cipher is None:  # the hot path: one pack, one concatenation
            frame = _FRAMED_REQUEST.pack(len(payload) + _REQUEST.size, req_id, ack, op) + payload
        else:
            frame = self._seal(_REQUEST.pack(req_id, ack, op), payload)
        self._expected.append(req_id)
        return frame

    @property
    def awaiting(self) -> int:
        """How many requests still wait for their reply."""
        return len(self._expected)

    def next_reply(self) -> tuple[int, int, bytes] | None:
        """Return the next (request id, status, payload), or None if more data is needed.

        Raises:
            ConnectionLostError: the server closed the connection while replies were awaited.
            ProtocolError: a reply to no request, or to another request than the oldest one waiting.
        """
        body = self._next_message(_REPLY.size)
        if body is None:
            if self._eof:
                self.state = State.CLOSED
                raise ConnectionLostError("the server closed the connection")
            return None
        return self._matched(body)

    def next_event(self) -> tuple[int, int, bytes] | None:
        """Like ``next_reply``, but also return pushed messages: ``(PUSH_ID, STATUS_OK, [channel, value])``.

        A push does not answer a request: the replies awaited stay awaited.

        Raises:
            ConnectionLostError: the server closed the connection.
            ProtocolError: a reply to no request, or to another request than the oldest one waiting.
        """
        body = self._next_message(_REPLY.size)
        if body is None:
            if self._eof:
                self.state = State.CLOSED
                raise ConnectionLostError("the server closed the connection")
            return None
        if body.startswith(_PUSH_HEADER):
            return PUSH_ID, STATUS_OK, body[_REPLY.size:]
        return self._matched(body)

    def _matched(self, body: bytes) -> tuple[int, int, bytes]:
        req_id, status = _REPLY.unpack_from(body)
        try:
            wanted = self._expected.popleft()
        except IndexError:
            wanted = None
        if wanted != req_id:
            raise self._fail(ProtocolError(f"reply to request {req_id} while waiting for {wanted}"))
        return req_id, status, body[_REPLY.size:]
