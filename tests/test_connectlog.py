"""ConnectFailureLog on a FakeClock, alone and through the kiosk's and the control room's
own handling of ConnectFailed (both must rate-limit the same way)."""

from __future__ import annotations

import logging

import pytest
from pinkbutton.firmware import transport as t
from pinkbutton.firmware.connectlog import ConnectFailureLog
from pinkbutton.hal.clock import FakeClock
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver

from tests.fault_helpers import ClockedKiosk
from tests.helpers import room_tls, write_kiosk_config

REFUSED = "broker localhost:8883 refused the connection"
TLS = "broker localhost:8883: certificate rejected"


def _levels(caplog, name: str) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == name]


def test_first_failure_changes_and_a_reminder_a_minute_are_errors(caplog):
    clock = FakeClock()
    logger = logging.getLogger("test.connectlog")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    cl = ConnectFailureLog(logger, clock)
    assert cl.failed(REFUSED, 0.5)
    for _ in range(5):  # 50 s of retries with the same reason: quiet
        clock.advance(10)
        assert not cl.failed(REFUSED, 1.0)
    clock.advance(10)  # 60 s after the last ERROR: a reminder with the count
    assert cl.failed(REFUSED, 1.0)
    assert not cl.failed(REFUSED, 1.0)
    assert cl.failed(TLS, 2.0)  # the cause changed: said at once
    assert cl.failed(REFUSED, 2.0)  # and changed back
    errors = [m for lvl, m in _levels(caplog, logger.name) if lvl == "ERROR"]
    assert errors == [f"{REFUSED}; retrying in 0.5 s",
                      f"{REFUSED}; retrying in 1.0 s (7 attempts so far)",
                      f"{TLS}; retrying in 2.0 s (9 attempts so far)",
                      f"{REFUSED}; retrying in 2.0 s (10 attempts so far)"]
    assert sum(lvl == "DEBUG" for lvl, _ in _levels(caplog, logger.name)) == 6


def test_a_new_outage_after_connecting_starts_over(caplog):
    clock = FakeClock()
    logger = logging.getLogger("test.connectlog2")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    cl = ConnectFailureLog(logger, clock)
    cl.failed(REFUSED, 0.5)
    cl.failed(REFUSED, 0.5)
    cl.connected()
    clock.advance(5)
    assert cl.failed(REFUSED, 0.5), "first failure of a new outage must be an ERROR"
    assert cl.attempts == 1
    assert _levels(caplog, logger.name)[-1] == ("ERROR", f"{REFUSED}; retrying in 0.5 s")


@pytest.fixture
def room(tmp_path, pki_dir):
    clock = FakeClock()
    r = ControlRoomReceiver(host="localhost", port=8883, tls=room_tls(pki_dir),
                            db_path=tmp_path / "room.db", clock=clock, out=lambda _s: None)
    yield r, clock, "pinkbutton.controlroom"
    r.store.close()


@pytest.fixture
def kiosk(tmp_path, pki_dir):
    clock = FakeClock()
    k = ClockedKiosk(write_kiosk_config(tmp_path, pki_dir, 8883), clock).kiosk
    yield k, clock, "pinkbutton.kiosk"
    k.outbox.close()


@pytest.mark.parametrize("who", ["room", "kiosk"])
def test_room_and_kiosk_rate_limit_reconnect_errors_alike(request, caplog, who):
    app, clock, logger = request.getfixturevalue(who)
    caplog.set_level(logging.DEBUG, logger=logger)
    for _ in range(30):  # 59 s of a broker refusing every 2 s
        app._handle(t.ConnectFailed(REFUSED, 2.0))
        clock.advance(2)
    app._handle(t.ConnectFailed(REFUSED, 2.0))  # 60 s on: one reminder
    app._handle(t.ConnectFailed(TLS, 2.0))  # new cause: at once
    errors = [m for lvl, m in _levels(caplog, logger) if lvl == "ERROR"]
    assert errors == [f"{REFUSED}; retrying in 2.0 s",
                      f"{REFUSED}; retrying in 2.0 s (31 attempts so far)",
                      f"{TLS}; retrying in 2.0 s (32 attempts so far)"]
    app._handle(t.Connected(session_present=False))
    app._handle(t.ConnectFailed(TLS, 2.0))  # a new outage, same cause: still news
    errors = [m for lvl, m in _levels(caplog, logger) if lvl == "ERROR"]
    assert errors[3:] == [f"{TLS}; retrying in 2.0 s"]
