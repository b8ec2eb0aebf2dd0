"""A throttling TCP proxy on loopback: a weak mobile link you can turn with a knob.

Tests (and the bandwidth benchmark) put it between a kiosk and the broker to check that
media degrades the way it should: `set_rate()` (token bucket per direction, shared by all
connections like one radio link), `set_latency()`, `blackhole()` (a stalled link: sockets
stay open, no byte moves) and `drop_connections()` (a link reset).

Note on threads: one acceptor thread ("netproxy-accept"); per connection and direction one
reader thread (socket -> bounded buffer) and one writer thread (buffer -> socket, paced by
the bucket). The bounded buffer makes a stalled writer stall its reader, so back-pressure
reaches the sender through TCP exactly as on a real slow link. All threads are daemons and
exit within a fraction of a second of `close()`.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import socket
import sys
import threading
import time
from dataclasses import dataclass

# Held per direction per connection before the reader stops reading (then TCP pushes back).
_BUFFER_LIMIT = 64 * 1024
# Kernel receive buffer on our sockets: small, so the throttle is not hidden by megabytes of
# loopback buffering ahead of it.
_SOCKET_BUFFER = 64 * 1024
_READ_SIZE = 16 * 1024
_MIN_BURST = 1500  # one Ethernet MTU: a bucket smaller than a segment only adds jitter
_POLL = 0.05  # how often waiting threads re-check knobs and shutdown


class TokenBucket:
    """Bytes per second with a small burst; `None` rate = unlimited. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rate: float | None = None  # bytes/s
        self._burst = float(_MIN_BURST)
        self._tokens = 0.0
        self._stamp = time.monotonic()

    def set_rate(self, bytes_per_s: float | None) -> None:
        with self._lock:
            self._refill()
            self._rate = bytes_per_s
            # 20 ms worth of bytes: smooth at high rates, never below one segment.
            self._burst = max(float(_MIN_BURST), (bytes_per_s or 0.0) * 0.02)
            self._tokens = min(self._tokens, self._burst)

    @property
    def burst(self) -> int:
        with self._lock:
            return int(self._burst)

    def take(self, wanted: int, stop: threading.Event) -> int:
        """Block until some tokens are there; return how many bytes may go now (<= wanted).
        Returns 0 when `stop` is set."""
        while not stop.is_set():
            with self._lock:
                if self._rate is None:
                    return wanted
                self._refill()
                grant = min(wanted, int(self._burst))
                if self._tokens >= grant:
                    self._tokens -= grant
                    return grant
                wait = (grant - self._tokens) / self._rate
            stop.wait(min(wait, _POLL))
        return 0

    def _refill(self) -> None:
        now = time.monotonic()
        if self._rate is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now


@dataclass(frozen=True, slots=True)
class ProxyStats:
    bytes_up: int  # client -> target
    bytes_down: int  # target -> client
    connections: int  # currently open
    accepted: int  # since start


class _Pipe:
    """One direction of one connection: reader fills a bounded buffer, writer drains it."""

    def __init__(
        self,
        proxy: ThrottleProxy,
        conn: _Connection,
        src: socket.socket,
        dst: socket.socket,
        upstream: bool,
    ) -> None:
        self.proxy, self.conn, self.src, self.dst, self.upstream = proxy, conn, src, dst, upstream
        self.cv = threading.Condition()
        self.chunks: collections.deque[tuple[float, bytes]] = collections.deque()  # (due, data)
        self.buffered = 0
        self.eof = False

    def read_loop(self) -> None:
        stop = self.conn.closed
        try:
            while not stop.is_set():
                with self.cv:
                    while self.buffered >= _BUFFER_LIMIT and not stop.is_set():
                        self.cv.wait(_POLL)
                if stop.is_set():
                    return
                data = self.src.recv(_READ_SIZE)
                if not data:
                    break
                due = time.monotonic() + self.proxy.latency_s
                with self.cv:
                    self.chunks.append((due, data))
                    self.buffered += len(data)
                    self.cv.notify_all()
        except OSError:
            self.conn.close()
            return
        with self.cv:
            self.eof = True
            self.cv.notify_all()

    def write_loop(self) -> None:
        stop = self.conn.closed
        bucket = self.proxy.bucket(self.upstream)
        try:
            while not stop.is_set():
                with self.cv:
                    if not self.chunks:
                        if self.eof:
                            break
                        self.cv.wait(_POLL)
                        continue
                    due, data = self.chunks[0]
                if self.proxy.blackholed:
                    stop.wait(_POLL)
                    continue
                if due > time.monotonic():
                    stop.wait(min(_POLL, due - time.monotonic()))
                    continue
                grant = bucket.take(len(data), stop)
                if grant == 0 or self.proxy.blackholed:
                    continue  # the link stalled while we waited: the tokens are lost, like air
                # Counted before the send: once sendall returns, the peer may already have
                # the bytes and read stats() (counting after was a race a test caught).
                self.proxy.count(self.upstream, grant)
                self.dst.sendall(data[:grant])
                with self.cv:
                    if grant < len(data):
                        self.chunks[0] = (due, data[grant:])
                    else:
                        self.chunks.popleft()
                    self.buffered -= grant
                    self.cv.notify_all()
            if not stop.is_set():
                with contextlib.suppress(OSError):
                    self.dst.shutdown(socket.SHUT_WR)  # pass the half-close on
                self.conn.direction_done()
        except OSError:
            self.conn.close()


class _Connection:
    def __init__(self, proxy: ThrottleProxy, client: socket.socket, target: socket.socket) -> None:
        self.proxy = proxy
        self.client, self.target = client, target
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._done = 0
        up = _Pipe(proxy, self, client, target, upstream=True)
        down = _Pipe(proxy, self, target, client, upstream=False)
        self.threads = [
            threading.Thread(target=fn, name=f"netproxy-{name}", daemon=True)
            for fn, name in (
                (up.read_loop, "up-read"),
                (up.write_loop, "up-write"),
                (down.read_loop, "down-read"),
                (down.write_loop, "down-write"),
            )
        ]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def direction_done(self) -> None:
        with self._lock:
            self._done += 1
            both = self._done == 2
        if both:
            self.close()

    def close(self) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.closed.set()
        for sock in (self.client, self.target):
            # shutdown first: it wakes a thread blocked in recv() on this socket.
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.proxy.forget(self)


class ThrottleProxy:
    """TCP proxy from an ephemeral port on `listen_host` to `target_host:target_port`."""

    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        listen_host: str = "127.0.0.1",
        max_connections: int = 32,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self.target = (target_host, target_port)
        self.listen_host = listen_host
        self.max_connections = max_connections
        self.connect_timeout_s = connect_timeout_s
        self.latency_s = 0.0
        self.blackholed = False
        self._buckets = (TokenBucket(), TokenBucket())  # (down, up)
        self._lock = threading.Lock()
        self._connections: set[_Connection] = set()
        self._bytes = [0, 0]  # (down, up)
        self._accepted = 0
        self._stop = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.port = 0

    # -- knobs (any thread) ----------------------------------------------------

    def set_rate(self, kbit_per_s: float | None) -> None:
        """Limit each direction to `kbit_per_s` (1 kbit = 1000 bit); None = unlimited."""
        if kbit_per_s is not None and kbit_per_s <= 0:
            raise ValueError(f"rate must be positive kbit/s or None, got {kbit_per_s}")
        bytes_per_s = None if kbit_per_s is None else kbit_per_s * 1000 / 8
        for bucket in self._buckets:
            bucket.set_rate(bytes_per_s)

    def set_latency(self, ms: float) -> None:
        """One-way delay added to every byte, per direction (applies to bytes read from now)."""
        if ms < 0:
            raise ValueError(f"latency must be >= 0 ms, got {ms}")
        self.latency_s = ms / 1000

    def blackhole(self, on: bool) -> None:
        """Stall the link: no byte moves either way, sockets stay open; off resumes them."""
        self.blackholed = bool(on)

    def drop_connections(self) -> None:
        """Close every current connection (both sides), like a link reset."""
        with self._lock:
            current = list(self._connections)
        for conn in current:
            conn.close()

    def stats(self) -> ProxyStats:
        with self._lock:
            return ProxyStats(
                self._bytes[1], self._bytes[0], len(self._connections), self._accepted
            )

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> ThrottleProxy:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this from the listener.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
        listener.bind((self.listen_host, 0))
        listener.listen(16)
        listener.settimeout(_POLL * 2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = threading.Thread(
            target=self._accept_loop, name="netproxy-accept", daemon=True
        )
        self._acceptor.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._acceptor is not None:
            self._acceptor.join(2)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            threads = [t for c in self._connections for t in c.threads]
        self.drop_connections()
        for thread in threads:
            thread.join(1)

    def __enter__(self) -> ThrottleProxy:
        return self.start() if self._listener is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------

    def bucket(self, upstream: bool) -> TokenBucket:
        return self._buckets[int(upstream)]

    def count(self, upstream: bool, n: int) -> None:
        with self._lock:
            self._bytes[int(upstream)] += n

    def forget(self, conn: _Connection) -> None:
        with self._lock:
            self._connections.discard(conn)

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            with self._lock:
                full = len(self._connections) >= self.max_connections
            if full:
                client.close()
                continue
            try:
                target = socket.create_connection(self.target, timeout=self.connect_timeout_s)
            except OSError:
                client.close()  # the target is down: the client sees a reset, as it would
                continue
            target.settimeout(None)
            for sock in (client, target):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SOCKET_BUFFER)
            target.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _SOCKET_BUFFER)
            conn = _Connection(self, client, target)
            with self._lock:
                self._connections.add(conn)
                self._accepted += 1
            conn.start()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Throttling TCP proxy on loopback (testing aid).")
    ap.add_argument("target", help="host:port to forward to")
    ap.add_argument("--rate", type=float, default=None, help="kbit/s per direction")
    ap.add_argument("--latency", type=float, default=0.0, help="one-way delay in ms")
    args = ap.parse_args(argv)
    host, _, port = args.target.rpartition(":")
    if not host or not port.isdigit():
        print(f"netproxy: target must be host:port, got {args.target!r}", file=sys.stderr)
        return 2
    with ThrottleProxy(host, int(port)) as proxy:
        proxy.set_rate(args.rate)
        proxy.set_latency(args.latency)
        print(f"listening on 127.0.0.1:{proxy.port} -> {host}:{port}", flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
