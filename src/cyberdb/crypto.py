"""Key derivation, handshake proofs and AES-256-GCM frame sealing with counter nonces.  No I/O.

Keys: ``master = PBKDF2-HMAC-SHA256(password, server_salt, iterations)`` is what both sides share; the
password itself never travels.  Each side proves knowledge of ``master`` with an HMAC over the handshake
transcript (which holds both sides' random nonces), and per-session keys for each direction come from HKDF over
``master`` and the transcript.  Every sealed frame uses the next value of a 64-bit counter as its nonce, and the
receiver expects exactly the next value: a tampered, replayed, dropped or reordered frame fails to open.
"""

from __future__ import annotations

import hashlib
import hmac
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import ProtocolError

__all__ = ["FrameCipher", "derive_master_key", "proof", "session_keys"]

PBKDF2_ITERATIONS = 100_000
MAX_ITERATIONS = 2_000_000  # a client refuses a server asking for more (it would be a CPU trap)
TAG_SIZE = 16
_NONCE = struct.Struct("!4xQ")  # 96-bit GCM nonce: 32 zero bits + 64-bit counter
_master_cache: dict[tuple[bytes, bytes, int], bytes] = {}


def derive_master_key(password: str | None, salt: bytes, iterations: int = PBKDF2_ITERATIONS) -> bytes:
    """Derive the shared 32-byte key from the password (cached: a pool opens many connections)."""
    secret = (password or "").encode()
    cache_key = (hashlib.sha256(secret).digest(), salt, iterations)
    key = _master_cache.get(cache_key)
    if key is None:
        key = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
        if len(_master_cache) > 64:
            _master_cache.clear()
        _master_cache[cache_key] = key
    return key


def proof(master: bytes, role: bytes, transcript: bytes) -> bytes:
    """HMAC-SHA256 proof that ``role`` (b"client"/b"server") knows ``master`` for this transcript."""
    return hmac.new(master, role + b"\x00" + transcript, hashlib.sha256).digest()


def verify(expected: bytes, got: bytes) -> bool:
    """Constant-time comparison of two proofs."""
    return hmac.compare_digest(expected, got)


def session_keys(master: bytes, transcript: bytes) -> tuple[bytes, bytes]:
    """Return (client->server key, server->client key) for one session."""
    okm = HKDF(algorithm=hashes.SHA256(), length=64, salt=hashlib.sha256(transcript).digest(),
               info=b"cyberdb v1 session keys").derive(master)
    return okm[:32], okm[32:]


class FrameCipher:
    """Seals outgoing and opens incoming frame bodies for one session (one direction each)."""

    __slots__ = ("_open", "_recv_counter", "_seal", "_send_counter")

    def __init__(self, send_key: bytes, recv_key: bytes) -> None:
        self._seal = AESGCM(send_key).encrypt
        self._open = AESGCM(recv_key).decrypt
        self._send_counter = 0
        self._recv_counter = 0

    def seal(self, body: bytes) -> bytes:
        """Encrypt and authenticate one frame body with the next send nonce."""
        nonce = _NONCE.pack(self._send_counter)
        self._send_counter += 1
        return self._seal(nonce, body, None)

    def open(self, sealed: bytes) -> bytes:
        """Decrypt one frame body; raise ``ProtocolError`` if it was tampered, replayed or reordered."""
        nonce = _NONCE.pack(self._recv_counter)
        try:
            body = self._open(nonce, sealed, None)
        except InvalidTag:
            raise ProtocolError("frame failed authentication (tampered, replayed or reordered)") from None
        self._recv_counter += 1
        return body

    def __repr__(self) -> str:
        return f"<FrameCipher sent={self._send_counter} received={self._recv_counter}>"
