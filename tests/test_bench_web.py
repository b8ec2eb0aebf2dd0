"""harness/bench_web.py (`make bench`, the console in the browser): its in-page stamp reader
against hal/stamp.py, its table's goals and verdicts (one real run: tests/test_bench_web_run.py)."""

from __future__ import annotations

import base64

import numpy as np
import pytest
from pinkbutton.hal.stamp import BLACK, block_size, draw_stamp, read_stamp

from harness import bench_web
from tests.browser import chromium  # noqa: F401 - the module's browser fixture

ORIGIN = "http://bench-web.test/"


@pytest.fixture
def probe_page(chromium):  # noqa: F811
    """A page with bench_web's probe installed as in the bench (an origin of its own: the
    probe keeps the rows in sessionStorage)."""
    context = chromium.new_context()
    context.add_init_script(bench_web.PAGE_PROBE)
    page = context.new_page()
    page.route(ORIGIN, lambda route: route.fulfill(status=200, content_type="text/html",
                                                   body="<html><body></body></html>"))
    page.goto(ORIGIN)
    yield page
    context.close()


def js_read(page, plane: np.ndarray):
    """The probe's reader on a grey RGBA picture of `plane` (video-range luma as RGB)."""
    rgba = np.repeat(plane[:, :, None], 4, axis=2).astype(np.uint8)
    rgba[:, :, 3] = 255
    # RGB grey g reads back as luma 16 + 219 g / 255: undo that so both readers see `plane`.
    grey = np.clip(np.round((plane.astype(np.float64) - 16) * 255 / 219), 0, 255)
    rgba[:, :, :3] = grey[:, :, None].astype(np.uint8)
    return page.evaluate(
        "([b64, w]) => window.__pbReadStamp(Uint8Array.from(atob(b64), (c) => "
        "c.charCodeAt(0)), w)", [base64.b64encode(rgba.tobytes()).decode(), plane.shape[1]])


@pytest.mark.parametrize("width", [640, 320])
def test_the_page_reads_the_stamp_hal_stamp_draws(probe_page, width):
    rows = 2 * block_size(width)
    for value in (0, 1, 123_456_789_012, 2**53 - 1):
        plane = np.full((rows, width), 128, np.uint8)
        draw_stamp(plane, value)
        assert read_stamp(plane) == value
        assert js_read(probe_page, plane) == value
    # A misread block, a grey block, no stamp at all: none, as in hal/stamp.py.
    plane = np.full((rows, width), 128, np.uint8)
    draw_stamp(plane, 987_654_321)
    size = block_size(width)
    flipped = plane.copy()
    flipped[:size, 10 * size:11 * size] = 235 + BLACK - flipped[:size, 10 * size:11 * size]
    grey = plane.copy()
    grey[:size, 20 * size:21 * size] = 128
    for bad in (flipped, grey, np.full((rows, width), 128, np.uint8)):
        assert read_stamp(bad) is None
        assert js_read(probe_page, bad) is None


def test_the_probe_stamps_rows_when_they_enter_the_dom(probe_page):
    before = probe_page.evaluate("() => window.__pbWall()")
    probe_page.evaluate("""() => {
      const t = document.createElement("table"); t.innerHTML = "<tbody id='queue-body'></tbody>";
      document.body.appendChild(t);
      const tr = document.createElement("tr"); tr.dataset.alertId = "a-1";
      document.getElementById("queue-body").appendChild(tr);
    }""")
    rows = probe_page.wait_for_function("() => window.__pbRows()['a-1']", timeout=5000)
    assert before <= rows.json_value() <= probe_page.evaluate("() => window.__pbWall()")


def result(**kw) -> bench_web.WebResult:
    r = bench_web.WebResult(incidents=2, floor_ms=[80.0, 120.0], row_ms=[230.0, 480.0],
                            first_frame_ms=[500.0, 900.0], g2g_ms=[200.0] * 19 + [390.0],
                            ahead_ms=[120.0] * 20, catch_up_ms=[15000.0, 16000.0],
                            frames=400, skew_ms=[0.2])
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def verdicts(r: bench_web.WebResult) -> dict[str, str]:
    return {metric.strip(): verdict for metric, _, _, verdict in bench_web.table_rows(r)}


def test_each_goal_has_its_verdict():
    v = verdicts(result())
    assert v["press -> alert row in the DOM"] == "PASS"
    assert v["press -> first video frame painted"] == "PASS"
    assert v["glass-to-glass, live frames (capture -> painted)"] == "PASS"
    assert v["floor: row written to the store -> in the DOM (no MQTT)"] == ""
    v = verdicts(result(row_ms=[230.0, 501.0], first_frame_ms=[1001.0],
                        g2g_ms=[200.0] * 18 + [401.0] * 2))
    assert v["press -> alert row in the DOM"] == "MISS"  # the worst press counts
    assert v["press -> first video frame painted"] == "MISS"
    assert v["glass-to-glass, live frames (capture -> painted)"] == "MISS"  # p95
    # Nothing measured never passes.
    v = verdicts(result(row_ms=[], first_frame_ms=[], g2g_ms=[], ahead_ms=[]))
    assert set(v.values()) == {"", "MISS"}


def test_the_table_prints_every_row_with_its_figures():
    table = bench_web.format_table(result(notes=["something to know"]))
    lines = table.splitlines()
    assert lines[0].startswith("Pink Button bench — console in the browser")
    assert lines[1].split() == ["metric", "p50", "ms", "p95", "ms", "max", "ms", "n", "goal",
                                "ms", "verdict"]
    row = next(line for line in lines if line.startswith("press -> alert row in the DOM"))
    # p50 / p95 / max (nearest rank: measured values), n, goal, verdict
    assert row.split()[-8:] == ["230.0", "480.0", "480.0", "2", "max", "<=", "500", "PASS"]
    assert "note: something to know" in lines
    empty = bench_web.format_table(result(g2g_ms=[], ahead_ms=[]))
    g2g = next(line for line in empty.splitlines() if line.startswith("glass-to-glass"))
    assert g2g.split()[-8:] == ["nan", "nan", "nan", "0", "p95", "<=", "400", "MISS"]
