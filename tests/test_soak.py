"""tools/soak: reconciliation counts lost and duplicated alerts; a tiny real soak (3 kiosk
processes, 15 presses, broker kills and a device kill) loses and duplicates nothing."""

from __future__ import annotations

from collections import Counter

import pytest

from harness import soak
from harness.broker import BrokerError, find_mosquitto


def test_reconcile_clean_run_has_nothing_lost_or_duplicated():
    lost, dup = soak.reconcile(
        {"d1": 2, "d2": 1},
        {"d1": ["a", "b"], "d2": ["c"]},
        {"a": "d1", "b": "d1", "c": "d2"},
        Counter({"a": 1, "b": 1, "c": 1}),
    )
    assert (lost, dup) == ([], [])


def test_reconcile_finds_a_persisted_alert_missing_from_the_store():
    lost, dup = soak.reconcile({"d1": 2}, {"d1": ["a", "b"]}, {"a": "d1"}, Counter({"a": 1}))
    assert lost == ["b"] and dup == []


def test_reconcile_finds_a_press_that_never_became_an_alert():
    lost, dup = soak.reconcile({"d1": 2}, {"d1": ["a"]}, {"a": "d1"}, Counter({"a": 1}))
    assert lost == ["d1: 1 press(es) never persisted"] and dup == []


def test_reconcile_finds_a_second_alert_for_one_press():
    # Two persists for one press, or an incident in the store no device persisted.
    lost, dup = soak.reconcile(
        {"d1": 1}, {"d1": ["a", "b"]}, {"a": "d1", "b": "d1"}, Counter({"a": 1, "b": 1})
    )
    assert lost == [] and dup == ["d1:b"]
    lost, dup = soak.reconcile(
        {"d1": 1}, {"d1": ["a"]}, {"a": "d1", "x": "d1"}, Counter({"a": 1, "x": 1})
    )
    assert lost == [] and dup == ["d1:x"]


def test_reconcile_finds_an_alert_the_room_opened_twice():
    _, dup = soak.reconcile({"d1": 1}, {"d1": ["a"]}, {"a": "d1"}, Counter({"a": 2}))
    assert dup == ["a opened 2x"]


def test_table_shows_every_row_and_the_recovery_verdict():
    r = soak.SoakResult(
        devices=3,
        presses=15,
        incidents=15,
        lost=[],
        duplicated=[],
        latencies_ms=[1.0, 2.0, 30.0],
        recoveries_s=[0.4, 2.5],
        broker_kills=2,
        stalls=0,
        device_kills=1,
        elapsed_s=20.2,
    )
    text = soak.format_table(r)
    assert text.splitlines()[0] == (
        "Pink Button soak — 3 devices, 15 presses, 2 broker kills, 0 stalls, 1 device kills, 20 s"
    )
    assert "lost                                0        (must be 0)" in text
    assert "p50 / p99" in text and "2.0 ms / 30.0 ms" in text
    assert "2.50 s" in text and "MISSED" in text


@pytest.mark.broker
def test_tiny_soak_loses_and_duplicates_nothing(tmp_path, capsys):
    try:
        find_mosquitto()
    except BrokerError as e:
        pytest.skip(f"real-broker soak skipped: {e}")
    opts = soak.SoakOptions(
        devices=3,
        presses=15,
        max_minutes=1.0,
        seed=5,
        press_gap_s=(0.1, 0.4),
        broker_kill_every_s=(1.0, 2.0),
        stall_every_s=(1.5, 2.5),
        device_kill_every_s=(1.0, 2.0),
        broker_down_s=(0.2, 0.6),
        stall_s=(0.3, 0.6),
        device_down_s=(0.1, 0.3),
        drain_s=25.0,
        work_dir=tmp_path / "soak",
    )
    result = soak.run_soak(opts)
    print(soak.format_table(result))
    assert result.broker_kills >= 1 and result.device_kills >= 1
    assert result.lost == [] and result.duplicated == []
    assert result.presses == 15 and result.incidents == 15
    assert len(result.latencies_ms) == 15
    table = capsys.readouterr().out
    assert "Pink Button soak — 3 devices, 15 presses" in table
    assert "lost                                0" in table


def test_keep_dir_with_a_previous_run_is_refused_with_exit_2(tmp_path, capsys):
    old = tmp_path / "old-run"
    old.mkdir()
    (old / "controlroom.db").write_bytes(b"a previous run's incidents")
    with pytest.raises(SystemExit) as exc:
        soak.main(["--keep", str(old), "--presses", "1"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not empty" in err
