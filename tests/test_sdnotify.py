"""SdNotifier against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import os
import secrets
import socket
import threading

import pytest
from pinkbutton.firmware.sdnotify import SdNotifier


class FakeSystemd:
    """A bound datagram socket, as systemd's notify socket is (path or abstract '@name')."""

    def __init__(self, address: str) -> None:
        self.env_value = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.sock.settimeout(5)

    def receive(self) -> str:
        return self.sock.recv(4096).decode()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def systemd(request, tmp_path):
    if request.param == "path":
        fake = FakeSystemd(str(tmp_path / "notify.sock"))
    else:
        fake = FakeSystemd(f"@pinkbutton-test-{secrets.token_hex(6)}")
    yield fake
    fake.close()


def test_each_notification_arrives_as_one_datagram(systemd):
    n = SdNotifier({"NOTIFY_SOCKET": systemd.env_value})
    assert n.enabled
    assert n.ready()
    assert systemd.receive() == "READY=1"
    assert n.status("idle, online via\nbroker:8883  ")
    assert systemd.receive() == "STATUS=idle, online via broker:8883"  # one line, always
    assert n.watchdog()
    assert systemd.receive() == "WATCHDOG=1"
    assert n.stopping()
    assert systemd.receive() == "STOPPING=1"
    assert n.notify("READY=1", "STATUS=up")
    assert systemd.receive() == "READY=1\nSTATUS=up"
    n.close()


def test_notifications_from_many_threads_arrive_whole(systemd):
    n = SdNotifier({"NOTIFY_SOCKET": systemd.env_value})
    sent: list[bool] = []
    threads = [threading.Thread(target=lambda: sent.extend(n.watchdog() for _ in range(5)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    got = [systemd.receive() for _ in range(sent.count(True))]
    assert got == ["WATCHDOG=1"] * len(got) and len(got) >= 1
    n.close()


def test_a_receiver_that_does_not_read_never_blocks_the_sender(systemd):
    # Linux queues ~10 datagrams per unix socket (net.unix.max_dgram_qlen); past that a
    # blocking sendto would hang the kiosk's state thread until systemd reads.
    n = SdNotifier({"NOTIFY_SOCKET": systemd.env_value})
    done = threading.Event()
    results: list[bool] = []

    def flood() -> None:
        results.extend(n.watchdog() for _ in range(200))
        done.set()

    threading.Thread(target=flood, daemon=True).start()
    assert done.wait(10), "sd_notify blocked on a full socket"
    assert results.count(True) >= 1 and results.count(False) >= 1
    assert systemd.receive() == "WATCHDOG=1"
    n.close()


@pytest.mark.parametrize("value", ["", "relative/path.sock", "@"])
def test_without_a_usable_notify_socket_everything_is_a_quiet_no_op(value):
    n = SdNotifier({"NOTIFY_SOCKET": value} if value else {})
    assert not n.enabled
    assert (n.ready(), n.watchdog(), n.status("x"), n.stopping()) == (False,) * 4
    assert n.watchdog_interval_s() is None


def test_a_vanished_socket_fails_quietly_and_is_logged_once(tmp_path, caplog):
    n = SdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    with caplog.at_level("DEBUG", logger="pinkbutton.sdnotify"):
        assert n.ready() is False
        assert n.watchdog() is False
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "gone.sock" in warnings[0].getMessage()


def test_a_socket_that_appears_later_is_used(tmp_path):
    path = tmp_path / "late.sock"
    n = SdNotifier({"NOTIFY_SOCKET": str(path)})
    assert n.ready() is False
    late = FakeSystemd(str(path))
    try:
        assert n.ready()
        assert late.receive() == "READY=1"
    finally:
        late.close()


@pytest.mark.parametrize(
    "env,expected",
    [
        ({"WATCHDOG_USEC": "20000000"}, 10.0),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "3000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "-5"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
)
def test_watchdog_interval_is_half_of_systemds(env, expected):
    assert SdNotifier(env).watchdog_interval_s() == expected
