"""Issue 12, live video and voice in the browser, end to end: a kiosk on the fake HAL (its
camera draws each frame's capture time, hal/stamp.py) presses through the real mosquitto (mTLS)
to a real ControlRoomReceiver whose live hook feeds the LiveHub; a Starlette app serves the
hub's WebSocket route and static/live.js; Debian's Chromium (Playwright, never a downloaded
browser) plays it through Media Source Extensions. Read back from the page: the video
element's clock, the capture times drawn into the frames it shows (pixels read back and
decoded with hal.stamp.read_stamp) and the audio it decoded."""

from __future__ import annotations

import base64
import secrets
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pinkbutton.hal.stamp import block_size, read_stamp
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.controlroom.web.live import STATIC_DIR, LiveHub, live_route

from tests.helpers import Recorder, RunningKiosk, room_tls, write_kiosk_config

pytestmark = pytest.mark.broker

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]
PREROLL_S = 2.0
LIVE_S = 12.0  # the kiosk ends the stream itself this long after the press
EARLY_S = 4.0
COOKIE = "pb-test-session"

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>live</title></head>
<body>
<video id="v" width="640" height="480"></video>
<canvas id="c" hidden></canvas>
<script src="/static/live.js"></script>
<script>
  window.start = (alertId, from, muted) => {
    window.player = PinkLive.play(document.getElementById("v"), "/live/" + alertId,
                                  {from: from, muted: !!muted});
  };
  // The picture on screen now: its top rows as video-range luma (what hal/stamp reads),
  // with the media clock and the wall clock of the read.
  window.grab = () => {
    const v = document.getElementById("v");
    if (!v.videoWidth || v.readyState < 2) return null;
    const c = document.getElementById("c");
    const rows = Math.floor(v.videoWidth / 40) * 2;
    c.width = v.videoWidth; c.height = rows;
    const g = c.getContext("2d", {willReadFrequently: true});
    g.drawImage(v, 0, 0, v.videoWidth, rows, 0, 0, v.videoWidth, rows);
    const rgba = g.getImageData(0, 0, v.videoWidth, rows).data;
    let s = "";
    for (let i = 0; i < rgba.length; i += 4) {
      const y = 16 + (65.481 * rgba[i] + 128.553 * rgba[i + 1] + 24.966 * rgba[i + 2]) / 255;
      s += String.fromCharCode(Math.max(0, Math.min(255, Math.round(y))));
    }
    return {at: Date.now(), t: v.currentTime, rate: v.playbackRate, w: v.videoWidth,
            rows: rows, y: btoa(s), audio: v.webkitAudioDecodedByteCount,
            frames: v.webkitDecodedFrameCount, state: window.player.state};
  };
</script>
</body></html>"""


class Server:
    """uvicorn on 127.0.0.1, an ephemeral port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                                    log_level="warning",
                                                    ws="websockets-sansio"))
        self.thread = threading.Thread(target=self.server.run, name="uvicorn", daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        end = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < end and self.thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def make_app(hub: LiveHub):
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    async def page(request):
        return HTMLResponse(PAGE)

    # The app's login check: here a cookie the test sets in the browser.
    return Starlette(routes=[
        Route("/", page),
        live_route(hub, lambda ws: ws.cookies.get("session") == COOKIE),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ])


@pytest.fixture(scope="module")
def room(tmp_path_factory, pki_dir, broker):
    """A receiver (evidence recorded) feeding a LiveHub, served by a Starlette app."""
    tmp = tmp_path_factory.mktemp("web-live")
    # A viewer opening the incident within EARLY_S of its first media gets the pre-roll.
    hub = LiveHub(early_s=EARLY_S)
    events = Recorder()
    receiver = ControlRoomReceiver(
        host="localhost", port=broker.port, tls=room_tls(pki_dir), db_path=tmp / "room.db",
        client_id=f"room-{secrets.token_hex(4)}", group=f"room-{secrets.token_hex(4)}",
        auto_ack=True, operator="officer-1", out=lambda line: None, listeners=[events],
        evidence_dir=tmp / "evidence", viewer=hub)
    thread = threading.Thread(target=receiver.run, name="room-under-test", daemon=True)
    thread.start()
    try:
        events.wait_for("connected")
        time.sleep(0.1)  # subscriptions acknowledged
        with Server(make_app(hub)) as server:
            yield {"hub": hub, "events": events, "port": server.port, "tmp": tmp}
    finally:
        receiver.stop()  # closes the hub too (the receiver's viewer hook)
        thread.join(15)


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is needed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def open_page(browser, port: int, requests: list[str]):
    context = browser.new_context()
    context.add_cookies([{"name": "session", "value": COOKIE, "domain": "127.0.0.1",
                          "path": "/"}])
    page = context.new_page()
    page.on("request", lambda r: requests.append(r.url))
    page.on("websocket", lambda ws: requests.append(ws.url))
    page.goto(f"http://127.0.0.1:{port}/")
    page.wait_for_function("window.PinkLive !== undefined", timeout=10_000)
    return context, page


def stamp_of(sample: dict) -> int | None:
    y = np.frombuffer(base64.b64decode(sample["y"]), dtype=np.uint8)
    plane = y.reshape(sample["rows"], sample["w"])
    assert sample["rows"] == 2 * block_size(sample["w"])
    return read_stamp(plane)


def watch(page, seconds: float, every: float = 0.1) -> list[dict]:
    """Samples of what the page shows for `seconds` (bounded)."""
    out, end = [], time.monotonic() + seconds
    while True:
        s = page.evaluate("window.grab()")
        if s is not None:
            s["stamp"] = stamp_of(s)
            out.append(s)
        if time.monotonic() >= end:
            return out
        time.sleep(every)


@pytest.fixture(scope="module")
def incident(room, browser, tmp_path_factory, pki_dir, broker):
    """One press; a browser opens the incident when the alert arrives (the officer clicks
    the new row) and another joins 6 s later at the live edge."""
    tmp = tmp_path_factory.mktemp("web-live-kiosk")
    cfg = write_kiosk_config(tmp, pki_dir, broker.port, "pb-test-0003",
                             alert={"stream_s": LIVE_S})
    cfg.write_text(cfg.read_text() + f"\n[media]\npreroll_s = {PREROLL_S}\n")
    # Capture stamps are CLOCK_MONOTONIC µs (one machine): this maps them to the wall clock.
    wall_minus_mono = time.time() - time.monotonic()
    requests: list[str] = []
    with RunningKiosk(cfg, media=True) as kiosk:
        kiosk.events.wait_for("connected")
        context, page = open_page(browser, room["port"], requests)
        late_context = None
        try:
            time.sleep(PREROLL_S + 1.2)  # the pre-roll fills
            kiosk.press()
            press_us = int(kiosk.events.wait_for("pressed")["at"] * 1e6)
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            room["events"].wait_for("alert", lambda d: d["alert_id"] == alert_id, timeout=15)
            opened_at = time.monotonic()
            page.evaluate("([id, from]) => window.start(id, from)", [alert_id, "auto"])
            early = watch(page, 6.0)
            late_context, late_page = open_page(browser, room["port"], requests)
            joined_late_us = int(time.monotonic() * 1e6)
            late_page.evaluate("([id, from]) => window.start(id, from)", [alert_id, "auto"])
            late: list[dict] = []
            end = time.monotonic() + 5.0
            while time.monotonic() < end:  # both, side by side
                early += watch(page, 0.0)
                late += watch(late_page, 0.1)
            state = page.evaluate("window.player.state")
        finally:
            context.close()
            if late_context is not None:
                late_context.close()
    return {"early": early, "late": late, "press_us": press_us, "alert_id": alert_id,
            "state": state, "requests": requests, "wall_minus_mono": wall_minus_mono,
            "opened_at": opened_at, "joined_late_us": joined_late_us}


def test_video_element_plays_frames_whose_drawn_capture_times_advance(incident):
    early = incident["early"]
    assert len(early) >= 40, f"only {len(early)} samples with a picture"
    times = [s["t"] for s in early]
    assert times[-1] - times[0] >= 5.0, f"the video clock barely moved: {times[0]}..{times[-1]}"
    stamps = [s["stamp"] for s in early if s["stamp"] is not None]
    assert len(stamps) >= 0.9 * len(early), "drawn capture times unreadable in the browser"
    assert all(b >= a for a, b in zip(stamps, stamps[1:], strict=False)), "went back in time"
    assert stamps[-1] - stamps[0] >= 5_000_000
    assert incident["state"]["mime"].startswith('video/mp4; codecs="avc1.')
    assert incident["state"]["error"] is None


def test_audio_is_decoded(incident):
    assert "opus" in incident["state"]["mime"]
    audio = [s["audio"] for s in incident["early"]]
    assert audio[-1] > audio[0] > 0, "no audio decoded"


def test_a_viewer_who_opens_at_the_press_sees_the_preroll_then_catches_up_with_live(incident):
    press = incident["press_us"]
    stamps = [s["stamp"] for s in incident["early"] if s["stamp"] is not None]
    # Frames captured before the press: the pre-roll, from its first keyframe.
    assert stamps[0] < press - 1_000_000, (stamps[0] - press) / 1e6
    # ...then the present: played faster until near the live edge.
    assert stamps[-1] > press + 5_000_000
    assert incident["early"][0]["state"]["from"] == "start"


def test_a_viewer_who_joins_later_starts_at_the_live_edge(incident):
    late = [s for s in incident["late"] if s["stamp"] is not None]
    assert late, "the late viewer showed nothing"
    # Not the pre-roll: the newest keyframe when it joined (one keyframe interval back at most,
    # plus the way through a busy machine).
    first = late[0]["stamp"]
    assert first > incident["press_us"] + 4_000_000
    assert first > incident["joined_late_us"] - 3_000_000
    assert late[0]["state"]["from"] == "live"


def test_glass_to_glass_near_the_live_edge(incident):
    """Drawn capture time vs the wall clock when the browser showed the frame: a figure for
    the report; bounded loosely (a shared 2-core machine), the bench has the goal."""
    offset = incident["wall_minus_mono"]
    figures = {}
    for who, samples in (("early", incident["early"][-25:]), ("late", incident["late"][5:])):
        g2g = sorted(s["at"] / 1000 - (s["stamp"] / 1e6 + offset)
                     for s in samples if s["stamp"] is not None)
        assert g2g, f"the {who} viewer never showed a readable frame near the live edge"
        figures[who] = (statistics.median(g2g), g2g[int(0.95 * (len(g2g) - 1))], len(g2g))
    print("browser glass-to-glass near the live edge (p50, p95, samples): "
          + ", ".join(f"{who} {a * 1000:.0f} ms {b * 1000:.0f} ms {n}"
                      for who, (a, b, n) in figures.items()))
    print(f"stalls (video 'waiting'): {incident['state']['stalls']}")
    # The late viewer joined at the live edge: it must be there. The early one has been
    # catching up from the pre-roll (played faster) for the 11 s watched; how close it got
    # depends on the machine's load: ~0.5 s alone, 2.3 and 3.5 s in two full `-n 4` runs of
    # a shared 2-core machine (the same with the room of before its media connection, under
    # an artificial CPU hog). It must still have caught up most of the way.
    # The late viewer, alone ~0.2-0.6 s; under a CPU hog 0.25-0.84 s (4 runs) with the live
    # view of before 2026-12-02 and 0.4-1.2 s with today's (LiveMux's capture-order hold); a
    # full fresh-clone `-n 4` run gave 1.83 s with 4 stalls. 3 s still catches what today's
    # A/B found: the muxer's interleaving at 1 us put it 3.4-4.2 s behind.
    assert 0 < figures["late"][0] < 3.0, figures["late"]
    assert 0 < figures["early"][0] < 5.0, figures["early"]


def test_nothing_is_requested_outside_127_0_0_1(incident):
    assert incident["requests"]
    for url in incident["requests"]:
        assert url.startswith(("http://127.0.0.1:", "ws://127.0.0.1:")), url


def test_websocket_without_login_is_refused(room):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus) as refused:
        connect(f"ws://127.0.0.1:{room['port']}/live/some-alert?from=live", open_timeout=10)
    assert refused.value.response.status_code == 403




def test_a_resolution_step_and_the_end_of_the_stream_play_through(browser):
    """The adaptation ladder's 640x480 -> 320x240 step (new SPS/PPS in band, one init
    segment) plays on; after the end the player stops at the last picture. Sound comes on
    with the first click."""
    from dataclasses import replace

    from tests.test_evidence import FPS, as_received, encode_audio, encode_video

    big = encode_video(640, 480, 2 * FPS)
    small = [replace(p, pts_us=p.pts_us + 2_000_000) for p in encode_video(320, 240, 2 * FPS)]
    packets = sorted(big + small + encode_audio()[:200], key=lambda p: (p.pts_us, p.stream))
    hub = LiveHub()
    try:
        for rp in as_received(packets):
            hub.feed("step", rp)
        hub.end("step")
        assert hub.flush()
        with Server(make_app(hub)) as server:
            context, page = open_page(browser, server.port, [])
            try:
                # As on the console: muted until the officer's first click (autoplay policy).
                page.evaluate("window.start('step', 'start', true)")
                assert page.evaluate("document.getElementById('v').muted")
                page.mouse.click(5, 5)
                assert not page.evaluate("document.getElementById('v').muted")
                seen, end = [], time.monotonic() + 20
                probe = ("(() => { const v = document.getElementById('v'); "
                         "return [v.currentTime, v.videoWidth, v.ended]; })()")
                while time.monotonic() < end:
                    t, width, ended = page.evaluate(probe)
                    seen.append((t, width))
                    if ended:
                        break
                    time.sleep(0.1)
                assert ended, f"never reached the end: {seen[-3:]}"
                time.sleep(1.0)
                t_after, _, still_ended = page.evaluate(probe)
            finally:
                context.close()
    finally:
        hub.close()
    widths = [w for _, w in seen if w]
    assert widths[0] == 640 and widths[-1] == 320, widths
    assert t_after == pytest.approx(4.0, abs=0.2) and still_ended, "played again after the end"
