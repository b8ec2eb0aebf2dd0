"""static/live.js keeps near the live edge: how it sets the playback rate from how far the
playhead is behind the newest buffered media. Run in Debian's chromium on the real live.js,
with the page's WebSocket and MediaSource replaced by stand-ins whose buffered range the test
sets (the real stream is harness/bench_web.py's and tests/test_web_live.py's business)."""

from __future__ import annotations

from pinkbutton.tools.controlroom.web.live import STATIC_DIR

from tests.browser import chromium  # noqa: F401 - the module's browser fixture

STANDINS = """
window.__ws = [];
window.WebSocket = class {
  constructor(url) { this.url = url; window.__ws.push(this); }
  close() {}
};
class FakeSourceBuffer extends EventTarget {
  constructor() { super(); this.updating = false; this.mode = ""; this.ranges = []; }
  get buffered() {
    const r = this.ranges;
    return {length: r.length, start: (i) => r[i][0], end: (i) => r[i][1]};
  }
  appendBuffer() {}
  remove() {}
}
window.MediaSource = class extends EventTarget {
  constructor() {
    super();
    this.readyState = "open";
    setTimeout(() => this.dispatchEvent(new Event("sourceopen")), 0);
  }
  static isTypeSupported() { return true; }
  addSourceBuffer() { window.__sb = new FakeSourceBuffer(); return window.__sb; }
  endOfStream() {}
};
URL.createObjectURL = () => "blob:stand-in";
URL.revokeObjectURL = () => {};
window.__video = {
  muted: false, autoplay: false, playsInline: false, currentTime: 0, playbackRate: 1,
  paused: false, ended: false, src: "",
  addEventListener() {}, removeEventListener() {}, play() { return Promise.resolve(); },
};
"""

NUDGE = 1.1  # live.js's nudgeRate: a little faster, back to the latency it aims at

# Puts the playhead `behind` seconds before the end of the buffered media, lets the player
# look (its SourceBuffer's updateend runs follow()), and returns the rate it chose.
AT = """(behind) => {
  window.__video.currentTime = 10 - behind;
  window.__sb.dispatchEvent(new Event("updateend"));
  return window.__video.playbackRate;
}"""


def playing(chromium, stream: dict):  # noqa: F811
    """A page playing the real live.js on the stand-ins: the stream message (its fields plus
    `stream`) received, 10 s of media buffered."""
    page = chromium.new_page()
    page.set_content("<html><body></body></html>")
    page.add_script_tag(content=STANDINS)
    page.add_script_tag(content=(STATIC_DIR / "live.js").read_text())
    page.evaluate("""(extra) => {
      window.__player = PinkLive.play(window.__video, "ws://127.0.0.1:9/live/x",
                                      {from: "auto", unmuteOnGesture: false});
      window.__ws[0].onmessage({data: JSON.stringify(
        Object.assign({type: "stream", mime: "video/mp4", from: "live"}, extra))});
    }""", stream)
    page.wait_for_function("() => window.__sb !== undefined", timeout=10_000)
    # The playhead at the edge before the media is there: the player's own 250 ms timer may
    # look first, and from 0 (10 s behind) it would start playing 1.5x faster.
    page.evaluate("() => { window.__video.currentTime = 10; window.__sb.ranges = [[0, 10]]; }")
    return page


def test_the_player_nudges_down_to_the_latency_it_aims_at_not_to_the_upper_bound(chromium):  # noqa: F811
    page = playing(chromium, {})
    try:
        page.evaluate(AT, 0.15)  # joined at the live edge: the first look seeks there
        # liveWithin is 0.15 s; beyond 0.25 s the player plays a little faster...
        assert page.evaluate(AT, 0.15) == 1
        assert page.evaluate(AT, 0.35) == NUDGE
        # ...and keeps doing so until it is back at 0.15 s, not only back under 0.25 s
        # (it used to stop at once: the player sat at 0.25 s, 0.1 s later than aimed at).
        assert page.evaluate(AT, 0.22) == NUDGE
        assert page.evaluate(AT, 0.16) == NUDGE
        assert page.evaluate(AT, 0.14) == 1
        # Settled, a little drift (one frame late) does not start a nudge.
        assert page.evaluate(AT, 0.22) == 1
        # Far behind: faster; coming back it nudges all the way down too.
        assert page.evaluate(AT, 2.0) == 1.5
        assert page.evaluate(AT, 0.5) == NUDGE
        assert page.evaluate(AT, 0.2) == NUDGE
        assert page.evaluate(AT, 0.1) == 1
    finally:
        page.close()


def test_with_60_ms_opus_frames_the_player_aims_five_frames_behind_the_edge(chromium):  # noqa: F811
    """The stream message says the kiosk's Opus frame (media.audio_frame_ms = 60, a weak
    link's setting): media arrives in bigger steps, so the player keeps 0.3 s behind the
    edge (at 0.15 s it ran dry and stalled); 20 ms frames keep 0.15 s (test above)."""
    page = playing(chromium, {"audio_frame_ms": 60})
    try:
        page.evaluate(AT, 0.3)  # joined at the live edge: the first look seeks there
        assert page.evaluate("() => window.__video.currentTime") == 10 - 0.3
        assert page.evaluate(AT, 0.3) == 1
        assert page.evaluate(AT, 0.35) == 1  # within 0.1 s of the aim: no nudge
        assert page.evaluate(AT, 0.45) == NUDGE
        assert page.evaluate(AT, 0.32) == NUDGE  # nudged down to the aim...
        assert page.evaluate(AT, 0.28) == 1  # ...and no further
    finally:
        page.close()
