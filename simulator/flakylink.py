"""A flaky mobile link for one simulated kiosk: a loopback TCP proxy to the broker.

A fleet site with `quirks.flaky_link = { loss = L, latency_ms = D }` connects through one of
these. TCP hides loss from the application; what a kiosk sees of a lost segment is the wait
for its retransmission. So every chunk is delayed `latency_ms` each way, and a share `loss`
of them is held one more retransmission timeout (`0.2 s + 2 x latency`, Linux's minimum RTO
plus a round trip), with the bytes behind it waiting too (order is kept, as TCP keeps it).

(harness/netproxy.py is the tests' throttling proxy; the simulator never imports the
harness, so the little it needs is here.)

Note on threads: one acceptor thread; per connection and direction a reader (socket ->
queue of (due, bytes)) and a writer (queue -> socket when due). All are daemons and end
within ~0.1 s of `close()`.
"""

from __future__ import annotations

import collections
import contextlib
import random
import socket
import threading
import time

_READ = 16 * 1024
_POLL = 0.1
_MIN_RTO_S = 0.2


class FlakyLink:
    def __init__(self, target: tuple[str, int], *, loss: float = 0.0, latency_ms: float = 0.0,
                 seed: int | None = None) -> None:
        self.target = target
        self.loss = loss
        self.latency_s = latency_ms / 1000
        self._random = random.Random(seed)
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self.held = 0  # chunks held back as "lost" (retransmitted), for the table and tests
        self.is_cut = False  # a dead link (a scenario's link_down): see cut()
        self.is_stalled = False  # a silent link (a scenario's link_stall): see stall()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(_POLL)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept, name=f"flakylink-{self.port}",
                                         daemon=True)

    def start(self) -> FlakyLink:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            for s in self._sockets:
                with contextlib.suppress(OSError):
                    s.close()
        self._thread.join(1.0)

    def cut(self) -> None:
        """The link dies (a mobile network outage): its connections are dropped at once and
        new ones refused until `restore()`; the broker publishes the kiosk's Last Will."""
        with self._lock:
            self.is_cut = True
            sockets, self._sockets = self._sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def stall(self) -> None:
        """The link goes silent (a mobile network that drops everything without a word):
        connections stay open, nothing moves either way until `restore()`, then what was
        sent meanwhile arrives (as TCP retransmits it). Only heartbeats missing tell."""
        self.is_stalled = True

    def restore(self) -> None:
        with self._lock:
            self.is_cut = False
            self.is_stalled = False

    def _delay(self) -> float:
        """Delay of one chunk: the link's latency, plus an RTO if it was "lost"."""
        extra = 0.0
        if self.loss and self._random.random() < self.loss:
            extra = _MIN_RTO_S + 2 * self.latency_s
            self.held += 1
        return self.latency_s + extra

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.is_cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()  # as a dead link: the kiosk retries with its backoff
                continue
            for s in (client, upstream):
                s.settimeout(None)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self.is_cut:  # cut while this one was connecting
                    client.close()
                    upstream.close()
                    continue
                self._sockets += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                _Pipe(self, src, dst).start()


class _Pipe:
    def __init__(self, link: FlakyLink, src: socket.socket, dst: socket.socket) -> None:
        self.link, self.src, self.dst = link, src, dst
        self.cv = threading.Condition()
        self.chunks: collections.deque[tuple[float, bytes]] = collections.deque()
        self.last_due = 0.0
        self.eof = False

    def start(self) -> None:
        threading.Thread(target=self._read, name="flakylink-read", daemon=True).start()
        threading.Thread(target=self._write, name="flakylink-write", daemon=True).start()

    def _read(self) -> None:
        try:
            while not self.link._stop.is_set():
                data = self.src.recv(_READ)
                if not data:
                    break
                with self.cv:
                    # never before the chunk ahead of it: TCP delivers in order
                    self.last_due = max(self.last_due, time.monotonic() + self.link._delay())
                    self.chunks.append((self.last_due, data))
                    self.cv.notify()
        except OSError:
            pass
        with self.cv:
            self.eof = True
            self.cv.notify()

    def _write(self) -> None:
        try:
            while not self.link._stop.is_set():
                with self.cv:
                    if not self.chunks:
                        if self.eof:
                            break
                        self.cv.wait(_POLL)
                        continue
                    due, data = self.chunks[0]
                    wait = due - time.monotonic()
                    if wait > 0 or self.link.is_stalled:
                        self.cv.wait(min(wait, _POLL) if wait > 0 else _POLL)
                        continue
                    self.chunks.popleft()
                self.dst.sendall(data)
        except OSError:
            pass
        for s in (self.src, self.dst):  # one side gone: the connection is gone
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
