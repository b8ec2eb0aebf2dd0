"""ThrottleProxy: real sockets on loopback, real broker through it."""

from __future__ import annotations

import socket
import threading
import time
from types import SimpleNamespace

import pytest

from harness.netproxy import ThrottleProxy


class SinkServer:
    """Counts every byte it receives (with arrival time); optionally echoes them back."""

    def __init__(self, echo: bool = False) -> None:
        self.echo = echo
        self.received: list[tuple[float, int]] = []
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.1)
        self.port = self._listener.getsockname()[1]
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        with conn:
            while not self._stop.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                with self._lock:
                    self.received.append((time.monotonic(), len(data)))
                if self.echo:
                    conn.sendall(data)

    def bytes_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(n for t, n in self.received if start <= t < end)

    def total(self) -> int:
        with self._lock:
            return sum(n for _, n in self.received)

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(2)
        self._listener.close()


@pytest.fixture
def sink():
    server = SinkServer()
    yield server
    server.close()


@pytest.fixture
def echo():
    server = SinkServer(echo=True)
    yield server
    server.close()


def _flood(port: int, stop: threading.Event) -> None:
    """Send as fast as the (throttled) path accepts until stopped or the link dies."""
    block = b"x" * 4096
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                sock.sendall(block)
            except TimeoutError:
                continue
            except OSError:
                return


def _recv_exactly(sock: socket.socket, n: int, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def test_throughput_follows_the_rate_limit(sink: SinkServer) -> None:
    with ThrottleProxy("127.0.0.1", sink.port) as proxy:
        proxy.set_rate(200)
        stop = threading.Event()
        sender = threading.Thread(target=_flood, args=(proxy.port, stop), daemon=True)
        sender.start()
        time.sleep(0.3)  # past the initial burst and buffer fill
        start = time.monotonic()
        time.sleep(2.0)
        end = time.monotonic()
        measured_kbit = sink.bytes_between(start, end) * 8 / 1000 / (end - start)
        stop.set()
        sender.join(3)
        assert 140 <= measured_kbit <= 260, f"measured {measured_kbit:.0f} kbit/s at 200"
        assert proxy.stats().bytes_up >= sink.bytes_between(start, end)


def test_unlimited_is_fast_and_rate_can_change_at_runtime(sink: SinkServer) -> None:
    with ThrottleProxy("127.0.0.1", sink.port) as proxy:
        stop = threading.Event()
        sender = threading.Thread(target=_flood, args=(proxy.port, stop), daemon=True)
        sender.start()
        time.sleep(0.5)
        fast = sink.total()
        proxy.set_rate(100)
        time.sleep(0.3)
        start = time.monotonic()
        time.sleep(1.0)
        slow_kbit = sink.bytes_between(start, time.monotonic()) * 8 / 1000
        stop.set()
        sender.join(3)
    assert fast * 8 / 1000 / 0.5 > 5_000, "unlimited proxy should move megabits per second"
    assert 60 <= slow_kbit <= 140, f"measured {slow_kbit:.0f} kbit/s at 100"


def test_blackhole_stalls_then_resumes(echo: SinkServer) -> None:
    with (
        ThrottleProxy("127.0.0.1", echo.port) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):
        sock.sendall(b"ping")
        assert _recv_exactly(sock, 4, 2.0) == b"ping"
        proxy.blackhole(True)
        sock.sendall(b"stalled")
        with pytest.raises(TimeoutError):
            _recv_exactly(sock, 7, 0.5)
        assert echo.total() == 4, "nothing may reach the target while blackholed"
        proxy.blackhole(False)
        assert _recv_exactly(sock, 7, 2.0) == b"stalled"
        stats = proxy.stats()
        assert (stats.bytes_up, stats.bytes_down) == (11, 11)


def test_latency_delays_each_direction(echo: SinkServer) -> None:
    with (
        ThrottleProxy("127.0.0.1", echo.port) as proxy,
        socket.create_connection(("127.0.0.1", proxy.port)) as sock,
    ):
        proxy.set_latency(150)
        start = time.monotonic()
        sock.sendall(b"hello")
        assert _recv_exactly(sock, 5, 2.0) == b"hello"
        elapsed = time.monotonic() - start
    assert 0.28 <= elapsed <= 1.0, f"round trip took {elapsed:.3f} s with 150 ms each way"


def test_drop_connections_closes_both_sides(echo: SinkServer) -> None:
    with ThrottleProxy("127.0.0.1", echo.port) as proxy:
        sock = socket.create_connection(("127.0.0.1", proxy.port))
        sock.sendall(b"a")
        assert _recv_exactly(sock, 1, 2.0) == b"a"
        assert proxy.stats().connections == 1
        proxy.drop_connections()
        sock.settimeout(2.0)
        try:
            closed = sock.recv(10) == b""
        except ConnectionResetError:
            closed = True
        sock.close()
        assert closed
        assert proxy.stats().connections == 0
        # The proxy itself keeps serving new connections after a reset.
        with socket.create_connection(("127.0.0.1", proxy.port)) as again:
            again.sendall(b"b")
            assert _recv_exactly(again, 1, 2.0) == b"b"


def test_close_stops_all_threads(echo: SinkServer) -> None:
    before = {t.name for t in threading.enumerate()}
    proxy = ThrottleProxy("127.0.0.1", echo.port).start()
    sock = socket.create_connection(("127.0.0.1", proxy.port))
    proxy.blackhole(True)
    sock.sendall(b"never")
    proxy.close()
    sock.close()
    time.sleep(0.1)
    left = [t.name for t in threading.enumerate() if t.name.startswith("netproxy")]
    assert not left or {*left} <= before, f"threads left running: {left}"


def test_bad_knob_values_are_refused() -> None:
    proxy = ThrottleProxy("127.0.0.1", 9)
    with pytest.raises(ValueError, match="rate must be positive"):
        proxy.set_rate(0)
    with pytest.raises(ValueError, match="latency"):
        proxy.set_latency(-1)


@pytest.mark.broker
def test_mqtt_through_the_proxy(broker, pki_dir, mqtt_client) -> None:
    room = mqtt_client(pki_dir, "controlroom", broker)
    got: list[tuple[float, bytes]] = []
    arrived = threading.Event()

    def on_message(_client, _userdata, msg) -> None:  # paho network thread
        got.append((time.monotonic(), bytes(msg.payload)))
        arrived.set()

    room.on_message = on_message
    topic = "pinkbutton/v1/dev/pb-test-0001/events"
    subscribed = threading.Event()
    room.on_subscribe = lambda *_args: subscribed.set()
    room.subscribe(topic, qos=1)
    assert subscribed.wait(5)
    with ThrottleProxy("127.0.0.1", broker.port) as proxy:
        # The broker certificate names localhost: TLS host checking passes through the proxy.
        via_proxy = SimpleNamespace(host="localhost", port=proxy.port)
        device = mqtt_client(pki_dir, "pb-test-0001", via_proxy)
        device.publish(topic, b"hello", qos=1).wait_for_publish(5)
        assert arrived.wait(5)
        assert got[0][1] == b"hello"
        # 20 KB at 100 kbit/s (12.5 KB/s) must take well over a second.
        proxy.set_rate(100)
        arrived.clear()
        start = time.monotonic()
        device.publish(topic, b"z" * 20_000, qos=1)
        assert arrived.wait(10)
        took = got[-1][0] - start
        assert len(got[-1][1]) == 20_000
        assert took >= 1.1, f"20 KB through 100 kbit/s arrived in {took:.2f} s"
        assert proxy.stats().bytes_up > 20_000
