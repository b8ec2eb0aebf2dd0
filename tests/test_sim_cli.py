"""`pinkbutton-sim run` as a user runs it: a subprocess, bad configs, a real broker and room,
and no broker at all."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from harness.broker import free_port
from tests.helpers import assert_one_line_error, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

ROOT = Path(__file__).resolve().parent.parent


def sim(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pinkbutton.simulator.cli", "run", *args],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_missing_config_exits_2_with_one_line(tmp_path):
    missing = tmp_path / "nowhere.toml"
    assert_one_line_error(sim("--config", str(missing)), "nowhere.toml")


@pytest.mark.parametrize(
    "text",
    [
        "this is [not toml",
        '[device]\nid = "pb-test-0001"\nbogus_key = 1\n',
        "[nonsense]\n",
    ],
)
def test_bad_config_exits_2_with_one_line(tmp_path, text):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    assert_one_line_error(sim("--config", str(bad)), "bad.toml")


def json_events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


@pytest.mark.broker
def test_scripted_press_is_delivered_acked_and_shows_help_coming(tmp_path, pki_dir, broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, "pb-test-0002")
    with RunningRoom(pki_dir, broker, tmp_path / "room.db", auto_ack=True) as room:
        proc = sim("--config", str(cfg), "--press-after", "0.5", "--exit-after", "3", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    events = json_events(proc.stdout)
    persisted = next(e for e in events if e["event"] == "persisted")
    alert_id = persisted["alert_id"]

    def index(pred) -> int:
        for i, e in enumerate(events):
            if pred(e):
                return i
        raise AssertionError(f"missing event; got {[e['event'] for e in events]}")

    order = [
        index(lambda e: e["event"] == "persisted"),
        index(lambda e: e["event"] == "delivered" and e["alert_id"] == alert_id),
        index(lambda e: e["event"] == "cmd" and e["cmd"] == "ack" and e["alert_id"] == alert_id),
        index(lambda e: e["event"] == "indicator" and e["pattern"] == "help_coming"),
    ]
    assert order == sorted(order), order
    assert any(line.startswith("ALERT  pb-test-0002") for line in room.lines)


def test_without_a_broker_the_alert_stays_in_the_outbox_and_exit_is_1(tmp_path, pki_dir):
    cfg = write_kiosk_config(tmp_path, pki_dir, free_port(), "pb-test-0001")
    proc = sim("--config", str(cfg), "--press-after", "0.2", "--exit-after", "1.5", "--json")
    assert proc.returncode == 1, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert "1 alert(s) not delivered before exit (kept in the outbox)" in proc.stderr
    events = json_events(proc.stdout)
    assert [e["event"] for e in events].count("persisted") == 1
    assert not [e for e in events if e["event"] == "delivered"]


def test_missing_webcam_is_a_named_fault_and_the_press_still_alerts(tmp_path, pki_dir):
    cfg = write_kiosk_config(tmp_path, pki_dir, free_port(), "pb-test-0001")
    proc = sim("--config", str(cfg), "--webcam", str(tmp_path / "video9"),
               "--press-after", "0.2", "--exit-after", "1.5", "--json")
    assert "Traceback" not in proc.stderr
    assert "fault camera_failed: cannot open camera" in proc.stderr and "video9" in proc.stderr
    events = json_events(proc.stdout)
    assert [e["event"] for e in events].count("persisted") == 1  # media never holds it back


def test_on_a_terminal_the_timeline_is_one_steady_status_line() -> None:
    import io

    from pinkbutton.hal.clock import FakeClock
    from pinkbutton.simulator.cli import Timeline

    out = io.StringIO()
    clock = FakeClock()
    timeline = Timeline(clock, as_json=False, live=True, out=out)
    timeline("mode", {"from": "idle", "to": "alerting"})
    clock.advance(0.01)
    timeline("pressed", {"at": clock.monotonic(), "confirmed_after_ms": 50.0})
    timeline("indicator", {"pattern": "sending"})
    clock.advance(0.05)
    timeline("indicator", {"pattern": "help_coming"})
    assert "\n" not in out.getvalue()  # redrawn in place, never scrolled
    shown = out.getvalue().split("\r\x1b[K")[-1]
    assert shown.startswith("state alerting   LED help_coming  presses 1")
    assert "last [+50.0 ms] indicator pattern=help_coming" in shown
    timeline.close()
    assert out.getvalue().endswith("\n")


def test_off_a_terminal_the_timeline_prints_one_line_per_event() -> None:
    import io

    from pinkbutton.hal.clock import FakeClock
    from pinkbutton.simulator.cli import Timeline

    out = io.StringIO()
    timeline = Timeline(FakeClock(), as_json=False, live=False, out=out)
    timeline("mode", {"from": "idle", "to": "alerting"})
    timeline("indicator", {"pattern": "sending"})
    assert [line.split()[-1] for line in out.getvalue().splitlines()] == [
        "to=alerting", "pattern=sending"]


def test_the_simulator_presses_a_fake_button_whatever_pinkbutton_hal_says(
        tmp_path, pki_dir, monkeypatch):
    # PINKBUTTON_HAL picks the kiosk's backend; the simulator is fake hardware by definition.
    monkeypatch.setenv("PINKBUTTON_HAL", "pi")
    cfg = write_kiosk_config(tmp_path, pki_dir, free_port(), "pb-test-0001")
    proc = sim("--config", str(cfg), "--press-after", "0.2", "--exit-after", "1.5", "--json")
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 1, (proc.returncode, proc.stderr)  # no broker: kept in the outbox
    events = json_events(proc.stdout)
    assert [e["event"] for e in events].count("persisted") == 1
