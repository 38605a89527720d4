"""Client + server CPU per call with no network: the real Connection, ServerConnection and Store in one process.

A fake socket hands the client's bytes straight to the server's protocol object and its replies back, so the
number is the Python work of one round trip on both sides (no kernel, no scheduler): the figure to compare
between two versions of the code on a busy machine, where wall-clock ratios are noisy.

    bench/.venvs/main/bin/python bench/cpu.py [--encrypt]
    PYTHONPATH=/path/to/other/checkout/src bench/.venvs/main/bin/python bench/cpu.py   # another version
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from typing import Any

import cyberdb
from cyberdb import crypto
from cyberdb.server.net import ServerConnection, ServerContext
from cyberdb.server.store import Store

CALLS = 20_000
REPEATS = 7


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(bytes(data))

    def get_extra_info(self, key: str) -> Any:
        return ("127.0.0.1", 1)

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Socket:
    def __init__(self, ctx: ServerContext) -> None:
        self._transport = _Transport()
        self._server = ServerConnection(ctx)
        self._server.connection_made(self._transport)  # type: ignore[arg-type]

    def sendall(self, data: bytes) -> None:
        self._server.data_received(bytes(data))

    def recv(self, size: int, *flags: int) -> bytes:
        data = b"".join(self._transport.out)
        self._transport.out.clear()
        return data

    def setsockopt(self, *args: Any) -> None:
        pass

    def settimeout(self, timeout: float | None) -> None:
        pass

    def gettimeout(self) -> float | None:
        return None

    def close(self) -> None:
        pass


async def main(encrypt: bool) -> None:
    salt = os.urandom(16)
    ctx = ServerContext(store=Store(), master=crypto.derive_master_key("pw", salt), salt=salt,
                        iterations=crypto.PBKDF2_ITERATIONS, encrypt=encrypt, max_con=10, timeout=0, whitelist=None)
    socket.create_connection = lambda *a, **k: _Socket(ctx)  # type: ignore[assignment,misc]
    client = cyberdb.Client("127.0.0.1", 1, password="pw", encrypt=encrypt)
    with client.get_proxy() as proxy:
        d = proxy.create_cyberdict("d", {"k": 0})
        ops = {"set": lambda: d.__setitem__("k", "v" * 32), "get": lambda: d["k"]}
        if hasattr(d, "incr"):
            ops["incr"] = lambda: d.incr("n")
        for name, fn in ops.items():
            best = float("inf")
            for _ in range(REPEATS):
                start = time.perf_counter()
                for _ in range(CALLS):
                    fn()
                best = min(best, (time.perf_counter() - start) / CALLS * 1e6)
            print(f"{name:5} {best:6.2f} µs of client + server CPU per call (encrypt={encrypt})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encrypt", action="store_true")
    asyncio.run(main(parser.parse_args().encrypt))
