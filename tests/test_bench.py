"""tools/bench: statistics, verdict and table are right; a tiny real run fills every row.

Timings are never asserted (a loaded CI box would make that flaky); causality is: every
press is persisted before the room sees it, and the room sees it before the ack comes back.
"""

from __future__ import annotations

import math

import pytest

from harness import bench
from harness.broker import BrokerError, find_mosquitto


def test_percentile_is_nearest_rank_over_measured_values():
    samples = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert bench.percentile(samples, 50) == 50.0
    assert bench.percentile(samples, 99) == 99.0
    assert bench.percentile(samples, 100) == 100.0
    assert bench.percentile([7.0], 99) == 7.0
    assert bench.percentile([1.0, 2.0, 3.0], 50) == 2.0
    assert math.isnan(bench.percentile([], 50))


@pytest.mark.parametrize(
    ("press_p99", "floor_p99", "ratio", "met"),
    [
        (3.0, 1.0, 3.0, True),  # exactly 3x and under 10 ms
        (3.1, 1.0, 3.1, False),  # over the ratio
        (10.5, 5.0, 2.1, False),  # ratio fine, absolute too slow
        (1.0, 0.0, math.nan, False),  # no floor measured: never a pass
    ],
)
def test_goal_verdict(press_p99, floor_p99, ratio, met):
    got_ratio, got_met = bench.goal_verdict(press_p99, floor_p99)
    assert got_met is met
    assert (math.isnan(got_ratio) and math.isnan(ratio)) or got_ratio == pytest.approx(ratio)


def _result(floor, alert) -> bench.BenchResult:
    def series(label, samples):
        return bench.Series(label, list(samples))

    return bench.BenchResult(
        presses=3,
        floor=series("floor: mosquitto_pub -> mosquitto_sub", floor),
        press_alert=series("press -> alert at control room", alert),
        press_ack=series("press -> ack back at kiosk", [a + 1 for a in alert]),
        press_persisted=series("press -> alert durable at kiosk", [0.5, 0.5, 0.5]),
        outbox=series("outbox commit (SQLite WAL, FULL)", [0.25]),
        notes=["deadline reached: 3 of 3 presses measured"],
    )


def test_table_has_one_aligned_row_per_metric_and_the_verdict():
    text = bench.format_table(_result([0.2, 0.3, 0.4], [0.5, 0.6, 1.2]))
    lines = text.splitlines()
    assert lines[0].startswith("Pink Button bench") and "N=3" in lines[0]
    header, rows = lines[1], lines[2:7]
    assert header.split() == ["metric", "p50", "ms", "p95", "ms", "p99", "ms", "max", "ms", "n"]
    assert [r.split("  ")[0] for r in rows] == [
        "floor: mosquitto_pub -> mosquitto_sub",
        "press -> alert at control room",
        "press -> ack back at kiosk",
        "press -> alert durable at kiosk",
        "outbox commit (SQLite WAL, FULL)",
    ]
    assert {len(r) for r in rows} == {len(header)}  # aligned
    alert_cells = rows[1].split()[-5:]
    assert alert_cells == ["0.600", "1.200", "1.200", "1.200", "3"]
    assert lines[7] == (
        "goal: press->alert p99 <= 3x floor p99 (3.00x) and <= 10 ms (1.200 ms): PASS"
    )
    assert lines[8] == "note: deadline reached: 3 of 3 presses measured"


def test_table_has_the_flooded_row_beside_the_normal_one_and_its_own_goal():
    result = _result([0.2, 0.3, 0.4], [0.5, 0.6, 1.2])
    result.press_alert_flood = bench.Series(
        "press -> alert at room, another device flooding", [3.0, 4.0, 60.0])
    result.flood = "3000 signed alerts (5000 distinct) from pb-bench-flood in 3.0 s (1000/s)"
    lines = bench.format_table(result).splitlines()
    assert [r.split("  ")[0] for r in lines[2:5]] == [
        "floor: mosquitto_pub -> mosquitto_sub",
        "press -> alert at control room",
        "press -> alert at room, another device flooding",
    ]
    assert lines[4].split()[-5:] == ["4.000", "60.000", "60.000", "60.000", "3"]
    assert lines[9] == "goal: press->alert p99 while another device floods <= 50 ms (60.000 ms): MISS"
    assert lines[10] == f"flood: {result.flood}"
    result.press_alert_flood.samples_ms[-1] = 50.0
    assert bench.format_table(result).splitlines()[9].endswith("(50.000 ms): PASS")


def test_table_says_miss_when_press_path_is_too_slow():
    text = bench.format_table(_result([0.2, 0.3, 0.4], [5.0, 6.0, 12.0]))
    assert text.splitlines()[7].endswith("(12.000 ms): MISS")


def test_bad_options_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exc:
        bench.main(["--presses", "0"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "must be at least 1" in err


@pytest.mark.broker
def test_tiny_real_run_fills_every_row_in_causal_order():
    try:
        find_mosquitto()
    except BrokerError as exc:
        pytest.skip(f"real-broker test skipped: {exc}")
    lines: list[str] = []
    result = bench.run_bench(20, deadline_s=60, outbox_puts=20, progress=lines.append)

    assert result.notes == []
    for s in result.rows():
        assert s.n == 20, s.label
        assert all(math.isfinite(v) and v > 0 for v in s.samples_ms), s.label
    for durable, alert, ack in zip(
        result.press_persisted.samples_ms,
        result.press_alert.samples_ms,
        result.press_ack.samples_ms,
        strict=True,
    ):
        # The outbox commit and the room's copy of the alert both come before the ack is
        # back at the kiosk.
        assert durable < ack and alert < ack
    assert any(line.startswith("presses:") for line in lines)
    assert result.flood is not None and f"from {bench.FLOOD_DEVICE}" in result.flood
    table = bench.format_table(result)
    assert table.splitlines()[-2].startswith("goal: press->alert p99 while another device")
    goals = [line for line in table.splitlines() if line.startswith("goal: ")]
    assert len(goals) == 2 and all(g.endswith(("PASS", "MISS")) for g in goals)
    assert table.splitlines()[-1] == f"flood: {result.flood}"
