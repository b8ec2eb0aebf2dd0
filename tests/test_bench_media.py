"""tools/bench_media: the table says PASS/MISS per goal; a tiny real run fills every row.

Timings are never asserted (a loaded CI box would make that flaky): the real run checks that
something was measured for every row and that the values are physically possible.
"""

from __future__ import annotations

import math

import pytest

from harness import bench_media as bm
from harness.broker import BrokerError, find_mosquitto


def _result(**kw) -> bm.MediaResult:
    r = bm.MediaResult(incidents=2)
    r.first_frame_ms = [40.0, 60.0]
    r.g2g_ms = [10.0, 20.0, 30.0]
    r.video_kbps, r.audio_kbps = 300.0, 20.0
    r.video_cpu = bm.CpuPair(1.0, 1.0, 60.0)
    r.audio_cpu = bm.CpuPair(0.5, 0.5, 60.0)
    r.links = [bm.LinkResult(kbps, 10.0, g2g_ms=[100.0, 200.0], voice_frames=425,
                             voice_missing=0, preroll_s=5.2, complete_gaps=[])
               for kbps in bm.LINKS_KBPS]
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def test_every_goal_met_reads_pass_on_each_row():
    rows = bm.table_rows(_result())
    assert len(rows) == 6 + 3 * len(bm.LINKS_KBPS)
    assert [row[3] for row in rows] == ["PASS"] * len(rows)


def _link(kbps: int, **kw) -> list:
    lr = bm.LinkResult(kbps, 10.0, g2g_ms=[100.0, 200.0], voice_frames=425, voice_missing=0,
                       preroll_s=5.2, complete_gaps=[])
    for k, v in kw.items():
        setattr(lr, k, v)
    return [lr if x.kbps == kbps else x for x in _result().links]


@pytest.mark.parametrize(("kbps", "change", "row"), [
    (1000, {"g2g_ms": [100.0, 501.0]}, 6),  # p95 over 500 ms at 1 Mbit/s
    (150, {"g2g_ms": [100.0, 1001.0]}, 9),  # over 1 s at 150 kbit/s
    (150, {"voice_missing": 1}, 10),  # voice not gap-free
    (1000, {"preroll_s": 4.0}, 8),  # complete evidence lacks part of the pre-roll
    (150, {"complete_gaps": [[3, 4]]}, 11),
    (150, {"complete_gaps": None}, 11),  # no complete evidence at all
])
def test_live_first_rows_miss_on_their_own_goal(kbps, change, row):
    verdicts = [r[3] for r in bm.table_rows(_result(links=_link(kbps, **change)))]
    assert verdicts[row] == "MISS"
    assert verdicts.count("MISS") == 1


@pytest.mark.parametrize(
    ("field", "value", "row"),
    [
        ("first_frame_ms", [40.0, 301.0], 0),  # the worst incident counts
        ("g2g_ms", [151.0, 152.0, 10.0], 1),
        ("video_kbps", 501.0, 2),
        ("audio_kbps", 25.0, 3),
        ("video_cpu", bm.CpuPair(1.3, 1.0, 60.0), 4),
        ("audio_cpu", bm.CpuPair(0.7, 0.5, 60.0), 5),
    ],
)
def test_a_missed_goal_reads_miss_on_its_row_only(field, value, row):
    verdicts = [r[3] for r in bm.table_rows(_result(**{field: value}))]
    assert verdicts[row] == "MISS"
    assert verdicts.count("MISS") == 1


def test_nothing_measured_is_a_miss_not_a_pass():
    empty = bm.MediaResult(incidents=3)
    assert all(row[3] == "MISS" for row in bm.table_rows(empty))


def test_table_is_aligned_and_carries_notes():
    r = _result()
    r.notes.append("incident 1: evidence has seq gaps [(3, 4)]")
    lines = bm.format_table(r).splitlines()
    assert lines[0].startswith("Pink Button bench — media (640x480@15")
    value_col = lines[1].index("value")
    assert all(line[value_col - 2 : value_col] == "  " for line in lines[2:8])
    assert lines[-1] == "note: incident 1: evidence has seq gaps [(3, 4)]"


@pytest.mark.parametrize(("argv", "needle"), [
    (["--incidents", "0"], "must be at least 1"),
    (["--live", "99"], "--live must be between"),
    (["--cpu-frames", "x"], "not a whole number"),
])
def test_bad_options_exit_2_with_one_line(capsys, argv, needle):
    with pytest.raises(SystemExit) as exc:
        bm.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err


@pytest.mark.broker
def test_tiny_real_run_measures_every_row():
    try:
        find_mosquitto()
    except BrokerError as exc:
        pytest.skip(f"real-broker test skipped: {exc}")
    lines: list[str] = []
    r = bm.run_media_bench(
        1, live_s=1.5, preroll_wait_s=1.5, cpu_frames=30, deadline_s=150, link_live_s=3.0,
        progress=lines.append,
    )
    # Only informational notes (what the CPU rows compared); no failure notes.
    assert all(n.startswith(("H.264 CPU over", "Opus CPU over")) for n in r.notes), r.notes
    assert len(r.first_frame_ms) == 1 and 0 < r.first_frame_ms[0] < 5000
    # The live part of the incident is ~1.5 s at 15 fps: frames were decoded and stamped.
    assert len(r.g2g_ms) >= 5
    assert all(math.isfinite(v) and v >= 0 for v in r.g2g_ms)
    assert 0 < r.video_kbps < 5000 and 0 < r.audio_kbps < 200
    for pair in (r.video_cpu, r.audio_cpu):
        assert pair.ours_s > 0 and pair.ffmpeg_s > 0
    assert any(line.startswith("done in") for line in lines)
    # Both throttled links measured: live frames, live voice, a complete evidence file.
    assert [lr.kbps for lr in r.links] == list(bm.LINKS_KBPS)
    for lr in r.links:
        assert lr.g2g_ms and all(math.isfinite(v) and v >= 0 for v in lr.g2g_ms), lr
        assert lr.voice_missing is not None and lr.voice_frames > 0, lr
        assert lr.complete_gaps is not None and lr.preroll_s > 1.0, lr
    table = bm.format_table(r)
    assert len(table.splitlines()) >= 8 + 3 * len(bm.LINKS_KBPS)
