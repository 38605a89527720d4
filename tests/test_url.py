"""Connection URLs (cyberdb.url.parse_url, cyberdb.from_url): one string configures a client, as redis.from_url."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import ServerProcess

import cyberdb
from cyberdb.url import parse_url


@pytest.mark.parametrize(("url", "expected"), [
    ("cyberdb://", {"host": "127.0.0.1", "port": 9980}),
    ("cyberdb://db.internal", {"host": "db.internal", "port": 9980}),
    ("cyberdb://:secret@h:1234/", {"host": "h", "port": 1234, "password": "secret"}),
    ("cyberdb://:p%40ss%3Aw%2Frd@h/", {"host": "h", "port": 9980, "password": "p@ss:w/rd"}),
    ("cyberdb://secret@h", {"host": "h", "port": 9980, "password": "secret"}),
    ("cyberdb://user:secret@h", {"host": "h", "port": 9980, "password": "secret"}),
    ("cyberdb://[::1]:9999/?encrypt=1", {"host": "::1", "port": 9999, "encrypt": True}),
    ("cyberdb://h/?encrypt=off&time_out=2.5&socket_timeout=1&max_connections=8&table_check_ttl=0",
     {"host": "h", "port": 9980, "encrypt": False, "time_out": 2.5, "socket_timeout": 1.0, "max_connections": 8,
      "table_check_ttl": 0.0}),
    ("cyberdbs://h/?tls_ca=/etc/ca.pem&tls_server_name=db",
     {"host": "h", "port": 9980, "tls": True, "tls_ca": "/etc/ca.pem", "tls_server_name": "db"}),
])
def test_parse_url(url: str, expected: dict[str, Any]) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(("url", "message"), [
    ("http://h:6379/", "starts with cyberdb://"),
    ("h:9980", "starts with cyberdb://"),
    ("cyberdb://h/0", "has no path"),
    ("cyberdb://h/?encrpt=1", "unknown option 'encrpt'"),
    ("cyberdb://h/?encrypt=maybe", "bad value 'maybe'"),
    ("cyberdb://h/?max_connections=many", "bad value"),
    ("cyberdb://h/?encrypt=1&encrypt=0", "given 2 times"),
    ("cyberdb://h:99999/", "bad port"),
    ("cyberdb://h/#x", "fragment"),
])
def test_bad_urls_raise_naming_the_problem(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_url(url)
    with pytest.raises(ValueError, match=message):
        cyberdb.from_url(url)


def test_from_url_is_lazy_and_connects_on_first_use(server: ServerProcess) -> None:
    url = f"cyberdb://:{server.password}@127.0.0.1:{server.port}/?encrypt={int(server.encrypt)}"
    client = cyberdb.from_url(url, time_out=30)
    assert "open=0" in repr(client.pool)  # nothing opened yet: an app can be imported while its server is down
    with client.get_proxy() as proxy:
        d = proxy.create_cyberdict("from_url")
        d["k"] = 1
        assert proxy.get_cyberdict("from_url").todict() == {"k": 1}
        proxy.delete_table("from_url")
    client.close()
    wrong = cyberdb.from_url(f"cyberdb://:wrong@127.0.0.1:{server.port}/?encrypt={int(server.encrypt)}")
    try:
        with pytest.raises(cyberdb.AuthenticationError), wrong.get_proxy():
            pass
    finally:
        wrong.close()


def test_keyword_options_override_the_url() -> None:
    client = cyberdb.from_url("cyberdb://:a@h:1/?encrypt=1", encrypt=False, port=2)
    assert (client.host, client.port, client.encrypt) == ("h", 2, False)
