"""`pinkbutton-diag test-alert` (issue 11 item 1): the running kiosk sends an alert of kind
`test` (asked over its control socket), the control room shows it as TEST and answers it
itself (ack, end: never escalated, never dispatched), and the diag prints the round trip. End
to end over the real mosquitto with mTLS; the machine's rule that a real press never joins a
test incident is checked on `step()` itself."""

from __future__ import annotations

import json

import pytest
from pinkbutton.firmware.diag.cli import main
from pinkbutton.firmware.machine import (
    AlertPublished,
    Boot,
    Connected,
    Mode,
    PersistAlert,
    Pressed,
    PublishEvent,
    SelftestDone,
    StartStream,
    StopStream,
    initial_state,
    step,
)
from pinkbutton.tools.controlroom.receiver import TEST_OPERATOR
from pinkbutton.tools.controlroom.store import IncidentStore

from tests.helpers import RunningKiosk, wait_until, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

DEVICE = "pb-test-0003"
WALL = 1_767_225_600.0


# -- the machine --------------------------------------------------------------------------------


def run(state, *events, now: float = 0.0):
    actions: list = []
    for event in events:
        state, more = step(state, event, now)
        actions += more
    return state, actions


def idle():
    return run(initial_state(), Boot(), SelftestDone(frozenset()), Connected())[0]


def test_a_real_press_during_a_test_starts_a_real_incident():
    testing, _ = run(idle(), Pressed("t1", WALL, "test"), AlertPublished("t1", ok=True))
    assert testing.mode is Mode.STREAMING and testing.incident.draft.kind == "test"
    state, actions = step(testing, Pressed("real", WALL + 5), 5.0)
    assert state.mode is Mode.ALERTING
    assert state.incident.draft.alert_id == "real" and state.incident.draft.kind == "emergency"
    assert state.incident.draft.presses == 1 and state.incident.draft.seq == 2
    assert actions[0] == StopStream("t1")  # the test's stream stops before the real one starts
    assert [a.draft.alert_id for a in actions if isinstance(a, PersistAlert)] == ["real"]
    assert StartStream("real") in actions


def test_a_test_press_during_a_test_and_a_press_during_a_real_incident_count_as_before():
    testing, _ = run(idle(), Pressed("t1", WALL, "test"))
    state, actions = step(testing, Pressed("t2", WALL, "test"), 1.0)  # drills: same kind
    assert state.incident.draft.alert_id == "t1" and state.incident.draft.presses == 2
    assert PublishEvent("pressed_again", {"alert_id": "t1", "presses": 2}) in actions
    real, _ = run(idle(), Pressed("r1", WALL))
    state, actions = step(real, Pressed("r2", WALL), 1.0)
    assert state.incident.draft.alert_id == "r1" and state.incident.draft.presses == 2


# -- end to end ---------------------------------------------------------------------------------


def kiosk_config(tmp_path, pki_dir, port):
    path = write_kiosk_config(tmp_path, pki_dir, port, DEVICE)
    path.write_text(path.read_text() + "\n[media]\nvideo = false\naudio = false\n")
    return path


def started(kiosk: RunningKiosk) -> None:
    wait_until((kiosk.config.device.state_dir / "control.sock").exists, what="control socket")
    kiosk.events.wait_for("connected")


def diag_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    return code, json.loads(capsys.readouterr().out)


@pytest.mark.timeout(90)
def test_test_alert_round_trip_shown_as_test_and_answered_by_the_room(capsys, tmp_path, pki_dir,
                                                                      broker):
    cfg = kiosk_config(tmp_path, pki_dir, broker.port)
    db = tmp_path / "room.db"
    # auto_ack off: the room answers a test on its own, with no operator and no --auto-ack.
    with RunningRoom(pki_dir, broker, db, auto_ack=False) as room, RunningKiosk(cfg) as kiosk:
        started(kiosk)
        code, doc = diag_json(capsys, "test-alert", "--config", str(cfg))
        assert code == 0, doc
        test = doc["test_alert"]
        ms = test["ms"]
        assert set(ms) == {"persisted", "delivered", "receipt", "ack", "end"}
        assert ms["persisted"] <= ms["delivered"] and ms["persisted"] <= ms["receipt"]
        assert ms["receipt"] <= ms["end"] and ms["receipt"] < 10_000
        assert test["operator"] == TEST_OPERATOR and test["refused"] is None
        assert [c["name"] for c in doc["checks"]] == [
            "test alert", "outbox", "broker", "control room", "ack"]
        assert all(c["ok"] for c in doc["checks"])
        assert f"acknowledged by {TEST_OPERATOR}" in doc["checks"][-1]["detail"]
        kiosk.events.wait_for("mode", lambda d: d["to"] == "cooldown")
        patterns = [d["pattern"] for d in kiosk.events.of("indicator")]
        assert "help_coming" in patterns  # the kiosk showed the whole cycle

        # The room: a TEST line, no ALERT or ESCALATED line, stored as kind test, answered.
        aid = test["alert_id"]
        tagged = [line for line in room.lines if aid[:8] in line]
        assert tagged[0].startswith(f"TEST   {DEVICE}  Test Bazaar  seq ")
        assert "never dispatched" in tagged[0]
        assert not any(line.startswith(("ALERT", "ESCALATED")) for line in room.lines)
        inc = IncidentStore(db).incident(aid)
        assert inc is not None and inc.kind == "test"
        assert inc.acked_by == TEST_OPERATOR and inc.ended_at
        assert "dispatched" not in [d["cmd"] for d in room.events.of("cmd_sent")]

        # The human output: one ✓ line per stage, with the round trip.
        wait_until(lambda: kiosk.kiosk.state.mode is Mode.IDLE, timeout=20, what="idle again")
        assert main(["test-alert", "--config", str(cfg)]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line[:2] for line in lines] == ["✓ "] * 5
        assert lines[0].endswith("sent by the kiosk as kind test (never dispatched)")
        assert lines[3].startswith("✓ control room: stored it, receipt back at the kiosk after ")
        assert "(round trip press to room and back)" in lines[3]


@pytest.mark.timeout(90)
def test_no_room_exits_1_and_a_real_press_during_the_test_is_a_real_alert(capsys, tmp_path,
                                                                          pki_dir, broker):
    cfg = kiosk_config(tmp_path, pki_dir, broker.port)
    with RunningKiosk(cfg) as kiosk:
        started(kiosk)
        code, doc = diag_json(capsys, "test-alert", "--config", str(cfg), "--timeout", "1")
        assert code == 1
        room_check = next(c for c in doc["checks"] if c["name"] == "control room")
        assert room_check["ok"] is False
        assert room_check["detail"] == "no receipt within 1 s"
        assert "stays in the kiosk's outbox" in room_check["fix"]
        test_id = doc["test_alert"]["alert_id"]
        assert kiosk.kiosk.state.incident.draft.kind == "test"

        # Someone presses for real while the unanswered test is running: a real alert.
        kiosk.press()
        persisted = kiosk.events.wait_for("persisted", lambda d: d["alert_id"] != test_id)
        incident = kiosk.kiosk.state.incident
        assert incident.draft.alert_id == persisted["alert_id"]
        assert incident.draft.kind == "emergency" and incident.draft.presses == 1

        # ... and during that real incident a test alert is refused, not folded into it.
        code, doc = diag_json(capsys, "test-alert", "--config", str(cfg), "--timeout", "1")
        assert code == 1
        assert doc["checks"][0]["name"] == "test alert" and not doc["checks"][0]["ok"]
        assert doc["checks"][0]["detail"].startswith("refused: an incident is running")
        assert kiosk.kiosk.state.incident.draft.presses == 1


def test_firmware_stopped_exits_1_the_kiosk_is_not_running(capsys, tmp_path, pki_dir):
    cfg = kiosk_config(tmp_path, pki_dir, 1)
    code, doc = diag_json(capsys, "test-alert", "--config", str(cfg))
    assert code == 1
    assert doc["checks"] == [{"name": "firmware", "ok": False,
                              "detail": "the kiosk is not running: no test alert sent",
                              "fix": "start it (sudo systemctl start pinkbutton), then test "
                                     "again"}]
    assert "test_alert" not in doc
