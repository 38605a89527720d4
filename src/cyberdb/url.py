"""Connection URLs: one string that configures a client, as ``redis.from_url`` does.  No I/O in this module.

``cyberdb://[:PASSWORD@]HOST[:PORT][/][?OPTION=VALUE&...]`` — the password is percent-decoded (a user name, if
given, is ignored, as Redis URLs without ACLs do), the port defaults to 9980, an IPv6 host is written in
brackets.  ``cyberdbs://`` is the same with ``tls=1``.  Options (query parameters):

- ``encrypt`` (``1``/``0``, ``true``/``false``, ``yes``/``no``, ``on``/``off``),
- ``time_out``, ``socket_timeout`` (seconds, floats), ``max_connections`` (an int), ``table_check_ttl``,
- ``tls`` (boolean), ``tls_ca``, ``tls_cert``, ``tls_key``, ``tls_server_name`` (paths and a name).

Keyword arguments given next to the URL (``from_url(url, encrypt=True)``) override what the URL says.  Anything
else in the URL raises ``ValueError`` naming it: a typo must not silently drop a setting such as ``encrypt``.
"""

from __future__ import annotations

import urllib.parse
from typing import Any

__all__ = ["DEFAULT_PORT", "DEFAULT_URL", "SCHEMES", "parse_url"]

DEFAULT_PORT = 9980
DEFAULT_URL = "cyberdb://127.0.0.1:9980/"  # what the Flask extension and the cache use when given no URL
SCHEMES = ("cyberdb", "cyberdbs")
_BOOLS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}
_FLOATS = ("time_out", "socket_timeout", "table_check_ttl")
_INTS = ("max_connections",)
_STRINGS = ("tls_ca", "tls_cert", "tls_key", "tls_server_name")
_FLAGS = ("encrypt", "tls")


def parse_url(url: str) -> dict[str, Any]:
    """The keyword arguments of ``cyberdb.connect`` (``host``, ``port``, ``password``, ...) that ``url`` gives.

    Raises:
        ValueError: not a ``cyberdb://`` or ``cyberdbs://`` URL, a bad port, or an unknown or malformed option.
    """
    if not isinstance(url, str):
        raise TypeError(f"a connection URL is a str, not {type(url).__name__}")
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"a CyberDB URL starts with cyberdb:// or cyberdbs://, not {parts.scheme or url!r}://")
    if parts.path not in ("", "/"):
        raise ValueError(f"a CyberDB URL has no path (a server has one database), got {parts.path!r}")
    if parts.fragment:
        raise ValueError("a CyberDB URL has no #fragment")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad port in CyberDB URL: {exc}") from None
    options: dict[str, Any] = {"host": parts.hostname or "127.0.0.1", "port": DEFAULT_PORT if port is None else port}
    if parts.password is not None:
        options["password"] = urllib.parse.unquote(parts.password)
    elif parts.username:  # cyberdb://secret@host: a password without the colon, as people type it
        options["password"] = urllib.parse.unquote(parts.username)
    if parts.scheme == "cyberdbs":
        options["tls"] = True
    for name, values in urllib.parse.parse_qs(parts.query, keep_blank_values=True, strict_parsing=False).items():
        if len(values) != 1:
            raise ValueError(f"option {name!r} is given {len(values)} times in the CyberDB URL")
        options[name] = _option(name, values[0])
    return options


def _option(name: str, value: str) -> Any:
    try:
        if name in _FLAGS:
            return _BOOLS[value.lower()]
        if name in _FLOATS:
            return float(value)
        if name in _INTS:
            return int(value)
    except (KeyError, ValueError):
        raise ValueError(f"bad value {value!r} for option {name!r} in the CyberDB URL") from None
    if name in _STRINGS:
        return value
    known = ", ".join(_FLAGS + _FLOATS + _INTS + _STRINGS)
    raise ValueError(f"unknown option {name!r} in the CyberDB URL (known: {known})")
