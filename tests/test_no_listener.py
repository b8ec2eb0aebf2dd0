"""An alert the broker took while no control room was subscribed reached nobody.

With MQTT v5 the broker says so in the PUBACK (reason 16, "No matching subscribers"). The
room keeps no session while it is away (a dead receiver must not hold alerts), so this happens
whenever the room reconnects later than the kiosk, e.g. after a broker restart. The kiosk then
announces again within NO_LISTENER_RETRY_S instead of waiting retry_s.
"""

from __future__ import annotations

import time

import pytest
from pinkbutton.firmware.app import NO_LISTENER_RETRY_S

from tests.helpers import RunningKiosk, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

pytestmark = pytest.mark.broker

RETRY_S = 20.0  # far longer than the test waits: only the no-listener path can deliver


def test_alert_that_reached_no_room_is_announced_again_soon(tmp_path, pki_dir, fresh_broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, alert={"retry_s": RETRY_S})
    with RunningKiosk(cfg) as kiosk:
        kiosk.events.wait_for("connected")
        kiosk.press()
        delivered = kiosk.events.wait_for("delivered")  # PUBACK: the broker has it ...
        time.sleep(0.3)
        assert kiosk.events.of("receipt") == []  # ... but nobody was there to store it
        started = time.monotonic()
        with RunningRoom(pki_dir, fresh_broker, tmp_path / "room.db") as room:
            got = room.events.wait_for("alert", lambda d: d["alert_id"] == delivered["alert_id"],
                                       timeout=5.0)
            waited = time.monotonic() - started
            assert got["new"]
            kiosk.events.wait_for("receipt", lambda d: d["alert_id"] == delivered["alert_id"],
                                  timeout=5.0)
            kiosk.events.wait_for("indicator", lambda d: d["pattern"] == "help_coming")
    # the room's connect + subscribe, then at most one no-listener interval (and its jitter)
    assert waited < 3.0 + NO_LISTENER_RETRY_S, waited
