"""Key names of the Redis backend: one table = one hash slot.  No I/O in this module.

Every key of a table starts with ``cy:{TAG}:NAME:`` and ends with one letter, so a table's keys share the hash
slot of ``TAG`` (the table's name unless created with ``tag=``) and two tables never share a key:

- every table: ``m`` its kind (``dict`` or ``list``: the table exists exactly while ``m`` does);
- a CyberDict: ``v`` hash canon(key) -> codec(value), ``k`` hash canon(key) -> codec(key) only where the two
  differ (keeps the first-inserted key's type), ``o`` zset of canons scored by insertion, ``n`` the counter;
- a CyberList: ``l`` one Redis list of ``canon.element(x)``, ``n`` its version (bumped by every write).

A lock (``proxy.lock(name)``) is ``cy:lock:{NAME}`` (its holder's token, expiring with the lease) and
``cy:lock:{NAME}:fence`` (its token counter), in the slot of the lock's own name.

The registry (name -> kind and tag, in creation order) lives in the slot of the fixed tag ``{cy}``: on a cluster
it is on one master, apart from the tables (see docs/redis-backend.md).  A tag holding ``{`` or ``}`` (which would
end the hash tag early) is replaced by a digest of itself.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.crc import key_slot

__all__ = ["REGISTRY_KEYS", "REGISTRY_SLOT", "TableKeys", "key_tag", "lock_keys", "table_keys"]

REGISTRY_KEYS = (b"cy:{cy}:registry", b"cy:{cy}:registry-order", b"cy:{cy}:registry-count")
REGISTRY_SLOT = key_slot(REGISTRY_KEYS[0])


def key_tag(tag: str) -> bytes:
    """The hash tag of ``tag`` as it appears in keys (braces would end the tag early: those get a digest)."""
    raw = tag.encode("utf-8", "surrogatepass")
    if b"{" in raw or b"}" in raw or not raw:
        return b"#" + hashlib.sha1(raw).hexdigest().encode()  # noqa: S324 - a name, not a secret
    return raw


@dataclass(frozen=True, slots=True)
class TableKeys:
    """The keys of one table and their hash slot."""

    name: str
    kind: str
    tag: str
    slot: int
    m: bytes
    v: bytes
    k: bytes
    o: bytes
    n: bytes
    lst: bytes

    @property
    def dict_keys(self) -> list[bytes]:
        """KEYS of a dict function: m, v, k, o, n."""
        return [self.m, self.v, self.k, self.o, self.n]

    @property
    def list_keys(self) -> list[bytes]:
        """KEYS of a list function: m, l, n."""
        return [self.m, self.lst, self.n]

    @property
    def all_keys(self) -> list[bytes]:
        """Every key a table may have: m, v, k, o, n, l."""
        return [self.m, self.v, self.k, self.o, self.n, self.lst]


def table_keys(name: str, kind: str, tag: str) -> TableKeys:
    """The keys of table ``name`` (of ``kind``) in the slot of ``tag``."""
    prefix = b"cy:{" + key_tag(tag) + b"}:" + name.encode("utf-8", "surrogatepass") + b":"
    return TableKeys(name, kind, tag, key_slot(prefix + b"m"), prefix + b"m", prefix + b"v", prefix + b"k",
                     prefix + b"o", prefix + b"n", prefix + b"l")


def lock_keys(name: str) -> tuple[int, list[bytes]]:
    """The hash slot and the keys (the lock, its fence) of lock ``name``."""
    lock = b"cy:lock:{" + key_tag(name) + b"}"
    return key_slot(lock), [lock, lock + b":fence"]
