"""Who may connect and how much an unauthenticated peer may hold: the IP whitelist, the limits on peers still in
the handshake, the growing delay and ban for password guessing, and log lines in summary.

Plain bookkeeping with no I/O: the network layer (``net.py``) asks and records; nothing here touches a socket.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["LOOPBACK", "Guard", "IPNetwork", "Limits", "LogSummary", "address_allowed", "parse_networks"]

logger = logging.getLogger(__name__)

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"))
_NEVER_BANNED = frozenset({"127.0.0.1", "::1", "::ffff:127.0.0.1"})


def parse_networks(entries: Iterable[str]) -> list[IPNetwork]:
    """Parse addresses and CIDR ranges; raise ``ValueError`` for anything else.

    Loopback addresses are always added, as cyberdb 0.9.3 kept ``127.0.0.1`` allowed: a whitelist for remote hosts
    must not lock out the Flask workers on the server's own machine.
    """
    if isinstance(entries, str):
        raise TypeError("set_ip_whitelist takes a list of addresses, not a single string")
    networks = list(LOOPBACK)
    for entry in entries:
        net = ipaddress.ip_network(str(entry).strip(), strict=False)
        if net not in networks:
            networks.append(net)
    return networks


def address_allowed(host: str, networks: list[IPNetwork]) -> bool:
    """True if ``host`` (as given by the socket) lies in one of ``networks``."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in networks)


@dataclass(frozen=True)
class Limits:
    """What unauthenticated peers may hold, apart from ``max_con`` (see ``Server.set_limits``)."""

    max_unauthenticated: int = 1024
    max_unauthenticated_per_ip: int = 128
    handshake_timeout: float = 10.0
    min_frame_rate: int = 32 << 10  # bytes/s a frame must arrive at once started (after FRAME_GRACE seconds)
    max_partial_bytes: int = 512 << 20  # bytes of unfinished frames held for all connections together
    max_subscriber_buffer: int = 32 << 20  # bytes of unsent messages a subscriber may have before it is closed


class LogSummary:
    """At most one log line per key per ``interval`` seconds, with the count of events since the last line.

    What an attacker can repeat at will (failed passwords, refused connections) must not flood the log.
    """

    def __init__(self, interval: float, max_keys: int = 10_000) -> None:
        self.interval, self.max_keys = interval, max_keys
        self._keys: dict[object, list[float]] = {}  # key -> [events not logged yet, logged at]

    def warning(self, key: object, msg: str, *args: object) -> None:
        """Count one event under ``key``; log ``"<count> <msg % args>"`` if its last line is old enough."""
        now = time.monotonic()
        entry = self._keys.get(key)
        if entry is None:
            if len(self._keys) >= self.max_keys:  # bounded memory under a distributed attack
                self._keys = {k: e for k, e in self._keys.items() if now - e[1] < self.interval}
            entry = self._keys[key] = [0, -self.interval]
        entry[0] += 1
        if now - entry[1] >= self.interval:
            logger.warning("%d %s", int(entry[0]), msg % args)
            entry[0], entry[1] = 0, now


class Guard:
    """Slows password guessing per source address: a growing delay, then a temporary ban; logs in summary.

    From the ``FREE``-th failure within ``WINDOW`` seconds, each failed authentication is answered after
    ``0.1 * 2 ** (n - FREE)`` seconds (at most ``MAX_DELAY``); at ``BAN_AFTER`` failures the address is refused
    at once, before any handshake, for ``BAN`` seconds.  With the per-address budget of connections in the
    handshake (``Limits.max_unauthenticated_per_ip``) that bounds one address to about ``BAN_AFTER`` guesses per
    ``BAN + WINDOW`` seconds.  The log gets one line per address per ``WINDOW`` with the count, not one per guess.
    """

    FREE, BAN_AFTER, MAX_DELAY, BAN, WINDOW = 3, 10, 2.0, 300.0, 60.0
    # 127.0.0.1 and ::1 are slowed but never banned: a mistyped password in one local worker must not lock the
    # server's own host out for minutes (other loopback addresses, e.g. 127.0.0.2, are treated as remote)

    def __init__(self) -> None:
        self._failures: dict[str, list[float]] = {}  # host -> [failures, first failure, banned until]
        self.log = LogSummary(self.WINDOW)  # also used for refused connections (see ServerConnection._refuse)

    def banned(self, host: str) -> float:
        """Seconds left of ``host``'s ban (0: not banned)."""
        entry = self._failures.get(host)
        if entry is None:
            return 0.0
        return max(0.0, entry[2] - time.monotonic())

    def failed(self, host: str) -> float:
        """Record a failed authentication from ``host``; return the delay before answering it."""
        now = time.monotonic()
        entry = self._failures.get(host)
        if entry is None or now - entry[1] > self.WINDOW and entry[2] <= now:
            if len(self._failures) > 100_000:  # bounded memory under a distributed attack
                self._failures = {h: e for h, e in self._failures.items() if e[2] > now or now - e[1] <= self.WINDOW}
            entry = self._failures[host] = [0, now, 0.0]
        entry[0] += 1
        n = int(entry[0])
        self.log.warning(("auth", host), "failed authentication(s) from %s%s", host,
                         f"; refused for {self.BAN:.0f} s" if n >= self.BAN_AFTER else "")
        if n >= self.BAN_AFTER and host not in _NEVER_BANNED:
            entry[2] = now + self.BAN
        return 0.0 if n < self.FREE else min(self.MAX_DELAY, 0.1 * 2 ** (n - self.FREE))
