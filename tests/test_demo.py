"""tools/demo's timeline: only this run's press, even when the kiosk first replays alerts an
earlier, interrupted run left in its outbox (their events carry no t_ms)."""

from __future__ import annotations

import pytest

from harness import demo

OLD, NEW = "68937217-0195-4d8b-8685-5e5216f219dc", "1bc6cacd-9f28-4d39-99aa-fad3204ca1c1"


def events() -> list[dict]:
    replayed = [
        {"event": "delivered", "t_ms": None, "alert_id": OLD},
        {"event": "receipt", "t_ms": None, "alert_id": OLD},
        {"event": "cmd", "t_ms": None, "cmd": "ack", "alert_id": OLD, "operator": "earlier"},
    ]
    this_run = [
        {"event": "pressed", "t_ms": 50.2, "confirmed_after_ms": 50.1},
        {"event": "persisted", "t_ms": 58.3, "alert_id": NEW, "seq": 8},
        {"event": "indicator", "t_ms": 58.5, "pattern": "sending"},
        {"event": "delivered", "t_ms": 75.7, "alert_id": NEW},
        {"event": "cmd", "t_ms": 97.1, "cmd": "ack", "alert_id": NEW, "operator": "demo-officer"},
        {"event": "indicator", "t_ms": 97.4, "pattern": "help_coming"},
    ]
    return replayed + this_run


def test_replayed_alerts_do_not_enter_the_timeline(tmp_path, capsys):
    # No incident in this (empty) room database: the timeline names what is missing.
    status = demo.print_timeline(events(), tmp_path / "room.db")
    out = capsys.readouterr().out
    assert status == 1
    assert f"alert {NEW}" in out and OLD not in out and "earlier" not in out
    assert "+    75.7 ms  broker PUBACK" in out and "by demo-officer" in out
    assert "missing: alert at control room" in out


def test_no_press_in_this_run_is_a_clear_failure(tmp_path, capsys):
    status = demo.print_timeline(events()[:3], tmp_path / "room.db")
    assert status == 1
    assert "never registered a press" in capsys.readouterr().out


def test_help_and_stray_arguments_do_not_run_the_demo(capsys):
    with pytest.raises(SystemExit) as exc:
        demo.main(["--help"])
    assert exc.value.code == 0 and "one simulated press" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        demo.main(["--fast"])
    assert exc.value.code == 2
    assert "usage error: unrecognized arguments: --fast" in capsys.readouterr().err


@pytest.mark.parametrize("drop", ["pressed", "help_coming"])
def test_a_missing_step_is_named_even_when_the_room_has_the_alert(tmp_path, capsys, drop):
    from pinkbutton.tools.controlroom.store import IncidentStore

    from tests.test_protocol import make_alert

    store = IncidentStore(tmp_path / "room.db")
    store.record_alert(make_alert(alert_id=NEW), "2026-11-23T09:31:54.140Z", 12.5, True)
    store.close()
    kept = [e for e in events() if drop not in (e["event"], e.get("pattern"))]
    status = demo.print_timeline(kept, tmp_path / "room.db")
    out = capsys.readouterr().out
    assert status == 1
    assert "missing: " + {"pressed": "press confirmed",
                          "help_coming": "indicator help_coming"}[drop] in out


def test_a_complete_run_prints_ok(tmp_path, capsys):
    from pinkbutton.tools.controlroom.store import IncidentStore

    from tests.test_protocol import make_alert

    store = IncidentStore(tmp_path / "room.db")
    store.record_alert(make_alert(alert_id=NEW), "2026-11-23T09:31:54.140Z", 12.5, True)
    store.close()
    assert demo.print_timeline(events(), tmp_path / "room.db") == 0
    assert "demo: ok — press to alert at control room 12.5 ms (includes 50.1 ms debounce)" in (
        capsys.readouterr().out)
