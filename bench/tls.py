"""TLS cost, CyberDB vs Redis: single-call set/get, one client, everything on one core (started by bench/run tls).

Runs bench.py's `set` and `get` (d[k] = v / d[k] vs HSET / HGET, one client) against, in one run, interleaved:
CyberDB plain, CyberDB encrypt=True, CyberDB over TLS; redis-server plain and over TLS (redis-py 8 and 5.0.x).
A throwaway CA and a server certificate for 127.0.0.1 are made in a temporary directory (the `cryptography`
package, a CyberDB dependency); clients verify the server against that CA. Prints ops/s, p50/p99 and the ratios
CyberDB TLS / Redis TLS and TLS / plain. If redis-server was built without TLS, that is printed and CyberDB TLS
is compared to plain Redis instead. Everything listens on 127.0.0.1 only and is stopped by PID (bench/_proc.py).
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import math
import os
import platform
import ssl
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _proc import HOST, Procs, free_port, install_signal_handlers, redis_server_argv, run_guarded, wait_port
from bench import Bench, System, _ratio

HERE = Path(__file__).resolve().parent
OPS = ["set", "get"]


def make_certs(d: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 signed by it; returns (ca, cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name, signer: ec.EllipticCurvePrivateKey,
             ca: bool) -> x509.Certificate:
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
             .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            usage = x509.KeyUsage(True, False, False, False, False, True, True, False, False)
            b = b.add_extension(usage, critical=True)
            b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(HOST))]),
                                critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, srv_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "cyberdb bench CA")])
    ca_cert = cert("cyberdb bench CA", ca_key, ca_name, ca_key, ca=True)
    srv_cert = cert(HOST, srv_key, ca_name, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    paths = (d / "ca.pem", d / "server.pem", d / "server.key")
    paths[0].write_bytes(ca_cert.public_bytes(pem))
    paths[1].write_bytes(srv_cert.public_bytes(pem))
    paths[2].write_bytes(srv_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def redis_has_tls(tmp: Path, ca: Path, cert: Path, key: Path) -> tuple[bool, str]:
    """Whether this redis-server accepts the TLS options (Debian's is built with TLS); and why not."""
    port = free_port()
    probe = Procs(tmp)
    try:
        proc = probe.spawn("redis-tls-probe", [*redis_server_argv(port, tmp), *_redis_tls_args(port, ca, cert, key)],
                           tmp)
        try:
            _wait_tls(proc, port, ca, 10.0)
            return True, ""
        except Exception as e:  # noqa: BLE001 - any failure means "no TLS here"
            log = tmp / "redis-tls-probe.log"
            text = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            return False, f"{e}; {' | '.join(text)}"
    finally:
        probe.stop_all()


def _redis_tls_args(port: int, ca: Path, cert: Path, key: Path) -> list[str]:
    return ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(cert), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no"]


def _wait_tls(proc, port: int, ca: Path, timeout: float) -> None:  # type: ignore[no-untyped-def]
    """Return once proc answers PING with +PONG over TLS on port."""
    wait_port(proc, port, timeout, b"*1\r\n$4\r\nPING\r\n", ssl.create_default_context(cafile=str(ca)))


class TlsBench(Bench):
    """Bench with TLS servers: program "cyberdb-tls" (_cyberdb_server.py --tls-*) and "redis-tls"."""

    def __init__(self, *a, certs: tuple[Path, Path, Path], **kw) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*a, **kw)
        self.certs = certs

    def start_server(self, key: str) -> None:
        program, extra = self.servers[key]
        if key in self.ports or program not in ("cyberdb-tls", "redis-tls"):
            super().start_server(key)
            return
        ca, cert, tls_key = self.certs
        port = free_port()
        if program == "redis-tls":
            argv = [*redis_server_argv(port, self.tmp), *_redis_tls_args(port, ca, cert, tls_key), *extra]
        else:
            argv = [sys.executable, str(HERE / "_cyberdb_server.py"), "--host", HOST, "--port", str(port),
                    "--tls-cert", str(cert), "--tls-key", str(tls_key), *extra]
        proc = self.procs.spawn(key, argv, self.tmp, self.env, cpus=self.server_cpus)
        if program == "redis-tls":
            _wait_tls(proc, port, ca, self.args.start_timeout)
        else:
            wait_port(proc, port, self.args.start_timeout)
        self.ports[key] = port


def systems_for(ca: Path, redis_tls: bool, redis5: bool) -> tuple[dict[str, tuple[str, tuple[str, ...]]], list[System]]:
    servers: dict[str, tuple[str, tuple[str, ...]]] = {
        "cyberdb": ("cyberdb", ()),
        "cyberdb+enc": ("cyberdb", ("--encrypt",)),
        "cyberdb+tls": ("cyberdb-tls", ()),
        "redis": ("redis", ()),
    }
    tls_ca = ("--tls-ca", str(ca))
    systems = [
        System("cyberdb", "cyberdb", "cyberdb", doc="CyberDB, encrypt=False"),
        System("cyberdb+enc", "cyberdb", "cyberdb+enc", doc="CyberDB, encrypt=True", client_args=("--encrypt",)),
        System("cyberdb+tls", "cyberdb", "cyberdb+tls", doc="CyberDB over TLS (encrypt=False)", client_args=tls_ca),
        System("redis", "redis", "redis", doc="redis-server + redis-py 8, plain TCP"),
    ]
    if redis5:
        systems.append(System("redis-py5", "redis", "redis", python="redis5_python", doc="redis-py 5.0.x, plain TCP"))
    if redis_tls:
        servers["redis+tls"] = ("redis-tls", ())
        systems.append(System("redis+tls", "redis", "redis+tls", doc="redis-server TLS + redis-py 8 (ssl=True)",
                              client_args=tls_ca))
        if redis5:
            systems.append(System("redis-py5+tls", "redis", "redis+tls", python="redis5_python",
                                  doc="redis-server TLS + redis-py 5.0.x (ssl=True)", client_args=tls_ca))
    return servers, systems


def report(bench: Bench, systems: list[System], redis_tls: bool, why: str) -> None:
    a = bench.args
    print()
    print(f"TLS cost, CyberDB vs Redis  ops={a.ops}  warmup={a.warmup}  rounds={a.rounds}  clients=1"
          f"  value={a.value_size} B  keys={a.keys}")
    print(f"python {platform.python_version()}  {platform.platform()}  cpus={os.cpu_count()}"
          f"  affinity={sorted(os.sched_getaffinity(0))}  {ssl.OPENSSL_VERSION}")
    if "redis-server" in bench.info:
        print(bench.info["redis-server"])
    if not redis_tls:
        print(f"NOTE: redis-server has no TLS here ({why}); CyberDB TLS is compared to plain Redis.")
    for system in systems:
        info = ", ".join(f"{k}={v}" for k, v in bench.info.get(system.name, {}).items())
        print(f"  {system.name:<14} {system.doc}  [{info}]")
    print()
    head = f"{'op':<4} {'system':<14} {'ops/s':>10} {'p50 µs':>8} {'p99 µs':>8} {'spread':>7}"
    print(head)
    print("-" * len(head))
    for op in OPS:
        for system in systems:
            samples = bench.results.get((op, 1, system.name), [])
            if not samples:
                continue
            ops_s = statistics.median(s.ops_s for s in samples)
            spread = (max(s.ops_s for s in samples) - min(s.ops_s for s in samples)) / ops_s * 100
            print(f"{op:<4} {system.name:<14} {ops_s:>10,.0f} {statistics.median(s.p50_us for s in samples):>8.1f}"
                  f" {statistics.median(s.p99_us for s in samples):>8.1f}"
                  f" {(f'{spread:.0f}%' if len(samples) > 1 else '-'):>7}")
        print()
    names = {s.name for s in systems}
    rtls = "redis+tls" if redis_tls else "redis"
    rtls5 = "redis-py5+tls" if redis_tls else "redis-py5"
    pairs = [
        ("cyberdb+tls", rtls, f"CyberDB TLS / Redis{' TLS' if redis_tls else ' (plain, no TLS build)'} (redis-py 8)"),
        ("cyberdb+tls", rtls5, f"CyberDB TLS / Redis{' TLS' if redis_tls else ' (plain)'} (redis-py 5)"),
        ("cyberdb", "redis", "CyberDB plain / Redis plain (redis-py 8)"),
        ("cyberdb+tls", "cyberdb", "CyberDB TLS / CyberDB plain"),
        ("cyberdb+tls", "cyberdb+enc", "CyberDB TLS / CyberDB encrypt=True"),
        ("redis+tls", "redis", "Redis TLS / Redis plain (redis-py 8)"),
        ("redis-py5+tls", "redis-py5", "Redis TLS / Redis plain (redis-py 5)"),
    ]
    print("ratios of ops/s (median over rounds of the same round's ratio):")
    for mine, base, label in pairs:
        if mine in names and base in names:
            vals = "   ".join(f"{op} {_fmt(_ratio(bench, op, 1, mine, base))}" for op in OPS)
            print(f"  {label:<46} {vals}")


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ops", type=int, default=10000, help="timed ops per measurement (10000)")
    p.add_argument("--warmup", type=int, default=500, help="untimed ops before each measurement (500)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; medians are printed (5)")
    p.add_argument("--cpus", default="0", help="pin this run and everything it starts (taskset-style, '0'); '' = no")
    p.add_argument("--redis5-python", default="", help="interpreter with redis==5.0.x for the redis-py 5 rows")
    p.add_argument("--value-size", type=int, default=32, help="bytes per value (32)")
    p.add_argument("--start-timeout", type=float, default=30)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if args.ops < 1 or args.rounds < 1 or not 0 <= args.warmup <= args.ops:
        p.error("--ops and --rounds must be >= 1, 0 <= --warmup <= --ops")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cpus:
        from bench import _cpus

        os.sched_setaffinity(0, _cpus(args.cpus))  # children inherit it, like `taskset -c 0 bench/run`
    install_signal_handlers()
    with tempfile.TemporaryDirectory(prefix="cyberdb-bench-tls-") as tmp_s:
        tmp = Path(tmp_s)
        certs = make_certs(tmp)
        version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
        redis_tls, why = redis_has_tls(tmp, *certs)
        if not redis_tls:
            print(f"note: {version}: no TLS ({why}); comparing to plain Redis", file=sys.stderr)
        servers, systems = systems_for(certs[0], redis_tls, bool(args.redis5_python))
        ns = argparse.Namespace(
            ops=args.ops, warmup=args.warmup, rounds=args.rounds, clients=[1], operations=OPS, keys=1000,
            list_len=10, value_size=args.value_size, server_cpus="", client_cpus="", timeout=600.0,
            start_timeout=args.start_timeout, quiet=args.quiet, redis5_python=args.redis5_python,
        )
        procs = Procs(tmp)
        bench = TlsBench(ns, procs, tmp, servers=servers, certs=certs)
        rc = run_guarded(procs, "tls", lambda: bench.run(systems, echo=False))
        if rc:
            return rc
    report(bench, systems, redis_tls, why)
    return 0


if __name__ == "__main__":
    sys.exit(main())
