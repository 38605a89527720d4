"""Tests of cyberdb.crypto: key derivation, proofs, per-session keys and AES-GCM sealing with counter nonces."""

from __future__ import annotations

import hashlib
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cyberdb import ProtocolError, crypto
from cyberdb.crypto import FrameCipher, derive_master_key, proof, session_keys, verify

MASTER = bytes(range(32))
TRANSCRIPT = b"hello-bytes" + b"challenge-bytes"


def cipher_pair(transcript: bytes = TRANSCRIPT, master: bytes = MASTER) -> tuple[FrameCipher, FrameCipher]:
    """(client, server) ciphers wired like protocol.py does: each side seals with the key the other opens with."""
    c2s, s2c = session_keys(master, transcript)
    return FrameCipher(c2s, s2c), FrameCipher(s2c, c2s)


# ---- FrameCipher -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"", b"x", b"hello world", bytes(range(256)) * 1000])
def test_seal_open_roundtrip(body: bytes) -> None:
    client, server = cipher_pair()
    sealed = client.seal(body)
    assert sealed != body
    assert len(sealed) == len(body) + crypto.TAG_SIZE
    if len(body) >= 8:  # (a single byte may occur in ciphertext by chance)
        assert body not in sealed
    assert server.open(sealed) == body
    sealed = server.seal(body)
    assert client.open(sealed) == body


def test_many_frames_in_order_both_directions() -> None:
    client, server = cipher_pair()
    for i in range(100):
        assert server.open(client.seal(b"req %d" % i)) == b"req %d" % i
        assert client.open(server.seal(b"rep %d" % i)) == b"rep %d" % i


def test_same_body_seals_differently_each_time() -> None:
    client, _ = cipher_pair()
    assert len({client.seal(b"same") for _ in range(10)}) == 10


def test_counter_nonce_is_the_gcm_nonce() -> None:
    # the documented wire format: 96-bit nonce = 32 zero bits + 64-bit big-endian counter
    c2s, _ = session_keys(MASTER, TRANSCRIPT)
    client, _ = cipher_pair()
    for counter in range(3):
        sealed = client.seal(b"frame")
        nonce = b"\x00" * 4 + counter.to_bytes(8, "big")
        assert AESGCM(c2s).decrypt(nonce, sealed, None) == b"frame"


def test_out_of_order_frame_is_refused_and_order_is_still_enforced() -> None:
    client, server = cipher_pair()
    frames = [client.seal(b"%d" % i) for i in range(4)]
    with pytest.raises(ProtocolError):
        server.open(frames[1])  # skipped frame 0
    # a failed open does not advance the expected counter
    assert server.open(frames[0]) == b"0"
    with pytest.raises(ProtocolError):
        server.open(frames[0])  # replay
    with pytest.raises(ProtocolError):
        server.open(frames[2])  # skipped frame 1
    assert server.open(frames[1]) == b"1"
    assert server.open(frames[2]) == b"2"
    assert server.open(frames[3]) == b"3"


@pytest.mark.parametrize("index", [0, 1, 7, -17, -1])
def test_tampered_frame_is_refused(index: int) -> None:
    client, server = cipher_pair()
    sealed = bytearray(client.seal(b"sixteen+ bytes of data"))
    sealed[index] ^= 0x80
    with pytest.raises(ProtocolError):
        server.open(bytes(sealed))


@pytest.mark.parametrize("sealed", [b"", b"\x00" * 15, b"\x00" * 16, os.urandom(64)])
def test_garbage_and_short_frames_are_refused(sealed: bytes) -> None:
    _, server = cipher_pair()
    with pytest.raises(ProtocolError):
        server.open(sealed)


def test_each_direction_has_its_own_key() -> None:
    client, server = cipher_pair()
    sealed = client.seal(b"request")
    with pytest.raises(ProtocolError):
        client.open(sealed)  # reflected back to the sender
    assert server.open(sealed) == b"request"


def test_frame_of_another_session_is_refused() -> None:
    client_a, _ = cipher_pair(b"transcript A")
    _, server_b = cipher_pair(b"transcript B")
    with pytest.raises(ProtocolError):
        server_b.open(client_a.seal(b"x"))


def test_repr_shows_counters_not_keys() -> None:
    c2s, s2c = session_keys(MASTER, TRANSCRIPT)
    cipher = FrameCipher(c2s, s2c)
    cipher.seal(b"x")
    text = repr(cipher)
    assert "sent=1" in text and "received=0" in text
    assert c2s.hex() not in text and s2c.hex() not in text


# ---- session keys ------------------------------------------------------------------------------------------------


def test_session_keys_shape_and_determinism() -> None:
    c2s, s2c = session_keys(MASTER, TRANSCRIPT)
    assert len(c2s) == len(s2c) == 32
    assert c2s != s2c
    assert session_keys(MASTER, TRANSCRIPT) == (c2s, s2c)
    assert MASTER not in (c2s, s2c)


def test_different_transcripts_give_different_keys() -> None:
    keys = {session_keys(MASTER, TRANSCRIPT + bytes([i])) for i in range(20)}
    keys.add(session_keys(MASTER, b""))
    assert len(keys) == 21
    flat = [k for pair in keys for k in pair]
    assert len(set(flat)) == len(flat)


def test_different_masters_give_different_keys() -> None:
    assert session_keys(MASTER, TRANSCRIPT) != session_keys(bytes(32), TRANSCRIPT)


# ---- proofs ------------------------------------------------------------------------------------------------------


def test_proof_differs_per_role() -> None:
    client = proof(MASTER, b"client", TRANSCRIPT)
    server = proof(MASTER, b"server", TRANSCRIPT)
    assert len(client) == len(server) == 32
    assert client != server


def test_proof_depends_on_master_and_transcript_and_is_deterministic() -> None:
    base = proof(MASTER, b"client", TRANSCRIPT)
    assert proof(MASTER, b"client", TRANSCRIPT) == base
    assert proof(bytes(32), b"client", TRANSCRIPT) != base
    assert proof(MASTER, b"client", TRANSCRIPT + b"!") != base
    # the role is separated from the transcript: moving bytes across the boundary changes the proof
    assert proof(MASTER, b"clien", b"t" + TRANSCRIPT) != base


def test_verify() -> None:
    good = proof(MASTER, b"client", TRANSCRIPT)
    assert verify(good, bytes(good))
    assert not verify(good, proof(MASTER, b"server", TRANSCRIPT))
    assert not verify(good, good[:-1])
    assert not verify(good, b"")


# ---- master key derivation ---------------------------------------------------------------------------------------


def test_derive_master_key_is_pbkdf2_sha256() -> None:
    salt = b"0123456789abcdef"
    key = derive_master_key("pässword", salt, 1000)
    assert key == hashlib.pbkdf2_hmac("sha256", "pässword".encode(), salt, 1000)
    assert len(key) == 32
    assert derive_master_key("pässword", salt) == hashlib.pbkdf2_hmac(
        "sha256", "pässword".encode(), salt, crypto.PBKDF2_ITERATIONS)


def test_derive_master_key_deterministic_and_distinct() -> None:
    salt_a, salt_b = b"a" * 16, b"b" * 16
    key = derive_master_key("pw", salt_a, 1000)
    assert derive_master_key("pw", salt_a, 1000) == key
    assert derive_master_key("pw", salt_b, 1000) != key
    assert derive_master_key("pw2", salt_a, 1000) != key
    assert derive_master_key("PW", salt_a, 1000) != key
    assert derive_master_key("pw", salt_a, 1001) != key


def test_derive_master_key_cache_never_mixes_entries() -> None:
    # many distinct inputs (more than the cache holds) each still give their own PBKDF2 result
    salt = b"s" * 16
    for i in range(100):
        password = f"pw-{i}"
        assert derive_master_key(password, salt, 10) == hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10)
    for i in range(100):
        password = f"pw-{i}"
        assert derive_master_key(password, salt, 10) == hashlib.pbkdf2_hmac("sha256", password.encode(), salt, 10)
