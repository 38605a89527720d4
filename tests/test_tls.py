"""TLS: round trips (with and without encrypt=True), refused plain clients, wrong certificates and mutual TLS.

A throwaway CA, a server certificate for 127.0.0.1 (IP SAN) and a client certificate are made once per module
with the ``cryptography`` package; a second CA stands for "someone else's" certificates.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import PASSWORD, ServerProcess
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

import cyberdb
from cyberdb.cli import main
from cyberdb.connection import unreachable


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    other_client_cert: Path
    other_client_key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
           ca: bool = False, server: bool = False) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name, issuer_key = issuer if issuer is not None else (_name(subject), key)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False),
                                        critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                         x509.DNSName("localhost")]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey | None = None) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is not None:
        path.with_suffix(".key").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    d = tmp_path_factory.mktemp("tls")
    paths = {}
    cas = {}
    for label in ("ca", "other_ca"):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _issue(f"CyberDB test {label}", key, None, ca=True)
        _write(d / f"{label}.pem", cert)
        cas[label] = (cert.subject, key)
        paths[label] = d / f"{label}.pem"
    for label, ca, server in (("server", "ca", True), ("client", "ca", False), ("other_client", "other_ca", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        _write(d / f"{label}.pem", _issue("127.0.0.1" if server else label, key, cas[ca], server=server), key)
        paths[f"{label}_cert"] = d / f"{label}.pem"
        paths[f"{label}_key"] = d / f"{label}.key"
    return Certs(**paths)


@pytest.fixture(scope="module", params=[False, True], ids=["tls", "tls+encrypt"])
def tls_server(request: pytest.FixtureRequest, certs: Certs) -> Iterator[ServerProcess]:
    """A server process started with ``cyberdb serve --tls-cert --tls-key`` (and --encrypt)."""
    srv = ServerProcess(encrypt=request.param,
                        extra=["--tls-cert", str(certs.server_cert), "--tls-key", str(certs.server_key)])
    request.addfinalizer(srv.stop)
    yield srv


@pytest.fixture
def mtls_server(request: pytest.FixtureRequest, certs: Certs) -> Callable[..., cyberdb.Server]:
    """An in-process server with TLS; ``require`` makes it demand client certificates signed by the CA."""

    def start(require: bool = True) -> cyberdb.Server:
        db = cyberdb.Server()
        db.set_tls(str(certs.server_cert), str(certs.server_key), ca_file=str(certs.ca), require_client_cert=require)
        db.start(port=0, password=PASSWORD)
        request.addfinalizer(db.stop)
        return db

    return start


def _round_trip(client: cyberdb.Client, name: str) -> None:
    with client.get_proxy() as proxy:
        d = proxy.create_cyberdict(name)
        d["k"] = [1, "two", 3.0]
        assert proxy.get_cyberdict(name)["k"] == [1, "two", 3.0]
        proxy.delete_table(name)


def test_tls_round_trip(tls_server: ServerProcess, certs: Certs, name: str) -> None:
    client = tls_server.connect(tls=True, tls_ca=str(certs.ca))
    try:
        _round_trip(client, name)
        assert "tls=True" in repr(client)
    finally:
        client.close()


def test_tls_with_an_ssl_context(tls_server: ServerProcess, certs: Certs, name: str) -> None:
    context = ssl.create_default_context(cafile=str(certs.ca))
    client = tls_server.connect(tls=context, tls_server_name="localhost")
    try:
        _round_trip(client, name)
    finally:
        client.close()


def test_plain_client_is_refused_and_the_server_goes_on(tls_server: ServerProcess, certs: Certs,
                                                         name: str) -> None:
    with pytest.raises(cyberdb.ConnectionError, match="TLS"):
        tls_server.connect(socket_timeout=5.0)
    client = tls_server.connect(tls=True, tls_ca=str(certs.ca))
    try:
        _round_trip(client, name)
    finally:
        client.close()


def test_tls_client_against_a_plain_server_fails_clearly(plain_server: ServerProcess, certs: Certs) -> None:
    with pytest.raises(cyberdb.ConnectionError, match="TLS"):
        plain_server.connect(tls=True, tls_ca=str(certs.ca), socket_timeout=5.0)


def test_server_certificate_from_another_ca_is_refused(tls_server: ServerProcess, certs: Certs) -> None:
    with pytest.raises(cyberdb.ConnectionError, match="certificate verification") as info:
        tls_server.connect(tls=True, tls_ca=str(certs.other_ca))
    assert not unreachable(info.value)  # a retry cannot help: proxy.connect() fails at once


def test_server_name_is_checked(tls_server: ServerProcess, certs: Certs) -> None:
    with pytest.raises(cyberdb.ConnectionError, match="certificate verification"):
        tls_server.connect(tls=True, tls_ca=str(certs.ca), tls_server_name="db.example.com")


def test_mutual_tls(mtls_server: Callable[..., cyberdb.Server], certs: Certs, name: str) -> None:
    db = mtls_server()
    assert db.port is not None
    with pytest.raises(cyberdb.ConnectionError, match="client certificate"):
        cyberdb.connect(port=db.port, password=PASSWORD, tls=True, tls_ca=str(certs.ca))
    with pytest.raises(cyberdb.ConnectionError, match="TLS"):
        cyberdb.connect(port=db.port, password=PASSWORD, tls=True, tls_ca=str(certs.ca),
                        tls_cert=str(certs.other_client_cert), tls_key=str(certs.other_client_key))
    client = cyberdb.connect(port=db.port, password=PASSWORD, tls=True, tls_ca=str(certs.ca),
                             tls_cert=str(certs.client_cert), tls_key=str(certs.client_key))
    try:
        _round_trip(client, name)
    finally:
        client.close()
    with pytest.raises(cyberdb.AuthenticationError):  # the password is still checked inside TLS
        cyberdb.connect(port=db.port, password="wrong", tls=True, tls_ca=str(certs.ca),
                        tls_cert=str(certs.client_cert), tls_key=str(certs.client_key))


def test_pooled_tls_connection_is_reused_and_replaced_when_the_server_closes_it(
        mtls_server: Callable[..., cyberdb.Server], certs: Certs, name: str) -> None:
    db = mtls_server(require=False)
    assert db.port is not None
    port = db.port
    client = cyberdb.connect(port=port, password=PASSWORD, tls=True, tls_ca=str(certs.ca))
    try:
        for _ in range(5):  # one pooled connection serves all: an idle TLS socket is not taken for stale
            assert client.ping()
        assert db.info()["connections"] == 1
        conn = client.pool.get()
        assert not conn.is_stale()
        client.pool.release(conn)
        db.stop()
        deadline = time.monotonic() + 10
        while not conn.is_stale():  # the server's close (TLS close_notify / EOF) makes the idle socket readable
            assert time.monotonic() < deadline, "a closed TLS connection was not seen as stale"
            time.sleep(0.01)
        db.start(port=port, password=PASSWORD)  # the pool replaces the stale connection without an error
        _round_trip(client, name)
    finally:
        client.close()


def test_settings_are_checked(certs: Certs, capsys: pytest.CaptureFixture[str]) -> None:
    db = cyberdb.Server()
    with pytest.raises(ValueError, match="ca_file"):
        db.set_tls(str(certs.server_cert), str(certs.server_key), require_client_cert=True)
    with pytest.raises(ssl.SSLError):
        db.set_tls(str(certs.ca), str(certs.server_key))  # a key that does not match the certificate
    with pytest.raises(ValueError, match="tls=True"):
        cyberdb.Client(tls_ca=str(certs.ca))
    with pytest.raises(ValueError, match="not both"):
        cyberdb.Client(tls=ssl.create_default_context(), tls_ca=str(certs.ca))
    assert main(["serve", "--port", "0", "--tls-key", str(certs.server_key)]) == 1
    assert "--tls-cert" in capsys.readouterr().err
    assert main(["serve", "--port", "0", "--tls-cert", str(certs.server_cert)]) == 1  # no key, not in the file
    assert "cyberdb:" in capsys.readouterr().err


def test_gevent_greenlets_and_a_forked_child_over_tls(tls_server: ServerProcess, certs: Certs, name: str) -> None:
    # the client is made before fork (as with gunicorn --preload) and used by greenlets in the child: the child
    # builds its own TLS context (gevent's) and never touches the parent's TLS sockets
    code = textwrap.dedent("""
        import json, os, sys
        import cyberdb

        port, password, encrypt, ca, name = int(sys.argv[1]), sys.argv[2], sys.argv[3] == "True", *sys.argv[4:6]
        client = cyberdb.connect("127.0.0.1", port, password=password, encrypt=encrypt, tls=True, tls_ca=ca)
        with client.get_proxy() as proxy:
            proxy.create_cyberdict(name)
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            from gevent import monkey
            monkey.patch_all()
            import gevent

            def work(i):
                with client.get_proxy() as proxy:
                    d = proxy.get_cyberdict(name)
                    d[i] = i * i
                    gevent.sleep(0)
                    return d[i]

            jobs = [gevent.spawn(work, i) for i in range(50)]
            gevent.joinall(jobs, timeout=60, raise_error=True)
            os.write(w, json.dumps([j.value for j in jobs]).encode())
            os._exit(0)
        os.close(w)
        data = b""
        while chunk := os.read(r, 65536):
            data += chunk
        _, status = os.waitpid(pid, 0)
        with client.get_proxy() as proxy:  # the parent's pooled TLS connection still works
            d = proxy.get_cyberdict(name).todict()
            proxy.delete_table(name)
        client.close()
        ok = d == {i: i * i for i in range(50)}
        print(json.dumps({"child": json.loads(data or b"null"), "status": status, "ok": ok}))
    """)
    proc = subprocess.run([sys.executable, "-c", code, str(tls_server.port),
                           PASSWORD, str(tls_server.encrypt), str(certs.ca), name],
                          capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"child": [i * i for i in range(50)], "status": 0, "ok": True}, proc.stderr
