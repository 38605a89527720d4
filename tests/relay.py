"""A TCP relay for tests that lose replies: it sits between a client and a real server and can hold one reply.

Each accepted connection gets its own connection to the server and two pump threads (one per direction).
The relay does not parse frames: ``hold_next_reply()`` arms it, and the first chunk of server->client bytes
seen on any connection after that is held back instead of forwarded (``held`` is set: the server has run
the request).  ``drop_held()`` then cuts that connection, both ends, without ever forwarding the held bytes,
so the client sees its connection close while it waits for the reply.

Arm only while the client's connection is established and idle (the handshake done), and send one request:
its reply is then the first chunk the server writes.  Sockets are woken by ``shutdown()`` (the relay owns
them; no fork shares them) and closed by the last of their pump threads, so no descriptor is reused while a
thread still reads it.  ``close()`` stops everything and joins every thread.
"""

from __future__ import annotations

import socket
import threading

__all__ = ["Relay"]

JOIN_TIMEOUT = 10.0  # seconds: bounds every join; a thread still alive after it is reported by close()
_CHUNK = 1 << 16


class _Pair:
    """One relayed connection: the client's socket, the server's socket, and their two pump threads."""

    def __init__(self, downstream: socket.socket, upstream: socket.socket) -> None:
        self.downstream, self.upstream = downstream, upstream
        self.threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = 2

    def cut(self) -> None:
        """Wake both pumps: the client sees its connection close, and so does the server."""
        with self._lock:  # never shut down a descriptor that a pump has just closed (and the OS reused)
            if self._running == 0:
                return
            for sock in (self.downstream, self.upstream):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass  # not connected any more

    def pump_done(self) -> None:
        """Called by each pump as it ends; the last one closes both sockets."""
        with self._lock:
            self._running -= 1
            if self._running == 0:
                self.downstream.close()
                self.upstream.close()

    def join(self, timeout: float) -> bool:
        """Wait for both pumps; True if they ended."""
        for t in self.threads:
            t.join(timeout)
        return not any(t.is_alive() for t in self.threads)


class Relay:
    """Relays 127.0.0.1:<port> to a server; see the module docstring."""

    def __init__(self, target_host: str, target_port: int) -> None:
        """Listen on a free loopback port and start accepting."""
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.host, self.port = self._listener.getsockname()[:2]
        self._lock = threading.Lock()
        self._closing = False
        self._armed = False
        self._pairs: list[_Pair] = []
        self._held_pair: _Pair | None = None
        self.held = threading.Event()  # a reply has been captured and held back
        self.held_bytes = b""
        self.accepted = 0  # connections accepted so far (a reconnect shows here)
        self._acceptor = threading.Thread(target=self._accept_loop, name="relay-accept", daemon=True)
        self._acceptor.start()

    def __repr__(self) -> str:
        return f"<Relay {self.host}:{self.port} -> {self.target[0]}:{self.target[1]} accepted={self.accepted}>"

    # ---- control ---------------------------------------------------------------------------------------------

    def hold_next_reply(self) -> None:
        """Hold back the next chunk the server sends on any connection (and stop that connection's replies)."""
        with self._lock:
            if self._held_pair is not None or self._armed:
                raise RuntimeError("a reply is already held or about to be")
            self.held.clear()
            self.held_bytes = b""
            self._armed = True

    def drop_held(self) -> None:
        """Cut the connection whose reply is held, never forwarding it; wait until its pumps have ended."""
        with self._lock:
            pair, self._held_pair = self._held_pair, None
        if pair is None:
            raise RuntimeError("no reply is held")
        pair.cut()
        if not pair.join(JOIN_TIMEOUT):
            raise RuntimeError("the relay's pump threads did not end")

    def close(self) -> None:
        """Stop accepting, cut every connection and join every thread (idempotent)."""
        with self._lock:
            already, self._closing = self._closing, True
            self._armed = False
            self._held_pair = None
        if not already:
            try:  # wake accept(): closing a listener from another thread does not
                socket.create_connection((self.host, self.port), timeout=JOIN_TIMEOUT).close()
            except OSError:
                pass
        self._acceptor.join(JOIN_TIMEOUT)
        self._listener.close()
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.cut()
        stuck = [pair for pair in pairs if not pair.join(JOIN_TIMEOUT)]
        if self._acceptor.is_alive() or stuck:
            raise RuntimeError(f"{self!r}: threads did not end")

    # ---- threads ---------------------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while True:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                closing = self._closing
            if closing:
                downstream.close()
                return
            try:
                upstream = socket.create_connection(self.target, timeout=JOIN_TIMEOUT)
                upstream.settimeout(None)
            except OSError:
                downstream.close()
                continue
            for sock in (downstream, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            pair = _Pair(downstream, upstream)
            pair.threads = [
                threading.Thread(target=self._pump, args=(pair, downstream, upstream, False),
                                 name="relay-up", daemon=True),
                threading.Thread(target=self._pump, args=(pair, upstream, downstream, True),
                                 name="relay-down", daemon=True),
            ]
            with self._lock:
                if self._closing:  # close() has already listed the pairs: this one would be missed
                    downstream.close()
                    upstream.close()
                    return
                self._pairs.append(pair)
                self.accepted += 1
            for t in pair.threads:
                t.start()

    def _pump(self, pair: _Pair, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while True:
                try:
                    data = src.recv(_CHUNK)
                except OSError:
                    data = b""
                if not data:
                    pair.cut()  # one side ended: end the other too
                    return
                if replies:
                    with self._lock:
                        hold = self._armed
                        if hold:
                            self._armed = False
                            self._held_pair = pair
                            self.held_bytes = data
                    if hold:
                        self.held.set()
                        return  # forward nothing more on this connection; drop_held() cuts it
                try:
                    dst.sendall(data)
                except OSError:
                    pair.cut()
                    return
        finally:
            pair.pump_done()
