"""`make bench`, console half: press -> alert row in the browser, press -> first video frame
painted in the browser, browser glass-to-glass of live frames.

One run on loopback in a temp dir: a dev PKI, a real mosquitto (mTLS + ACL), the real Kiosk
runtime on the fake HAL (640x480@15 camera drawing each frame's capture time, hal/stamp.py, and
the fake microphone; 5 s pre-roll, the default), and `pinkbutton-controlroom serve` in a
process of its own (the receiver with auto-ack, evidence and the live view, plus the console
over HTTPS with a certificate from the PKI). Debian's chromium, driven by Playwright, is an
officer logged in on the queue page.

Per incident: the kiosk is pressed (wall time taken just before: the 50 ms debounce is in
every figure); a MutationObserver in the page stamps the moment the alert's row is in the DOM
(performance.timeOrigin + performance.now()); the page opens the incident at once (the officer
clicks the row the moment it appears); requestVideoFrameCallback stamps every picture the
video element presents (expectedDisplayTime) and the page reads the capture time drawn into
that picture (hal/stamp.py's decoder, ported to JS below, on a canvas). One machine, one
clock: glass-to-glass = paint time - capture time. The player shows the pre-roll first, played
faster until it is near the live edge (static/live.js); "live frames" are the pictures painted
from the moment it got there (the first picture captured after the press and played at normal
speed), LIVE_FRAMES of them (LIVE_S seconds at the camera's rate). The incident is then ended
through the store's commands table, as an officer's click does.

The floor, measured in the same run on the same page, interleaved with the presses: an
incident row written straight into the store (no kiosk, no MQTT, no receiver) -> the row in
the DOM: what the console's store poller and WebSocket push cost on their own.

A benchmark reports; it does not fail. Exit 0 whether goals are met or missed, 1 only when
the setup itself fails (one line on stderr).
"""

from __future__ import annotations

import math
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pinkbutton.firmware import protocol
from pinkbutton.firmware.app import Kiosk
from pinkbutton.firmware.cliargs import OneLineParser, positive_float, positive_int
from pinkbutton.firmware.config import ConfigError, load_config
from pinkbutton.firmware.transport import TransportError
from pinkbutton.hal.clock import Clock, iso8601
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.tools.controlroom.store import IncidentStore
from pinkbutton.tools.controlroom.web.accounts import Accounts
from pinkbutton.tools.pki import PkiError, issue_web

from harness.bench import (
    DEVICE_ID,
    BenchError,
    Progress,
    Rig,
    percentile,
    run_and_print,
    write_config,
)

try:
    from playwright.sync_api import Error as PlaywrightError
except ImportError:  # start_browser says what is missing
    PlaywrightError = RuntimeError  # noqa: N816

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 640, 480, 15
SAMPLE_RATE = 48000
PREROLL_WAIT_S = 5.7  # the kiosk's 5 s pre-roll fills first
DEFAULT_INCIDENTS = 10
LIVE_S = 5.0  # live frames measured per incident, once the player is at the live edge
# ... counted in pictures, not in seconds of the bench's clock: a stall under load (the player's
# 'waiting', in the table) then delays the sample instead of shrinking it.
LIVE_FRAMES = int(LIVE_S * FPS)
CATCH_UP_TIMEOUT_S = 40.0  # press -> the player at the live edge, at most
STEP_TIMEOUT_S = 10.0
DEADLINE_S = 420.0
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--autoplay-policy=no-user-gesture-required"]
OFFICER = "bench-officer"

GOAL_ROW_MS = 500.0
GOAL_FIRST_FRAME_MS = 1000.0
GOAL_G2G_P95_MS = 400.0

# Installed in every page of the officer's browser before the page's own scripts (Playwright
# add_init_script; the console's CSP does not apply to it). Wall clock in the page:
# performance.timeOrigin + performance.now().
PAGE_PROBE = r"""
(() => {
  const wall = () => performance.timeOrigin + performance.now();
  window.__pbWall = wall;
  // -- the queue: when each alert's row is first in the DOM (kept across navigations) --------
  const KEY = "pb-bench-rows";
  const rows = JSON.parse(sessionStorage.getItem(KEY) || "{}");
  let open = null;
  function scan(at) {
    let changed = false;
    document.querySelectorAll("#queue-body tr[data-alert-id]").forEach((tr) => {
      const id = tr.dataset.alertId;
      if (!(id in rows)) { rows[id] = at; changed = true; }
    });
    if (changed) sessionStorage.setItem(KEY, JSON.stringify(rows));
    if (open !== null && open in rows) {  // the officer clicks the new row at once
      const id = open;
      open = null;
      location.assign("/incident/" + encodeURIComponent(id));
    }
  }
  new MutationObserver(() => scan(wall())).observe(document, {childList: true, subtree: true});
  window.__pbRows = () => JSON.parse(sessionStorage.getItem(KEY) || "{}");
  window.__pbOpen = (id) => { open = id; if (id !== null) scan(wall()); };

  // -- the incident: every picture the video element presents, with its drawn capture time ----
  const BLOCKS = 40, LOW = 80, HIGH = 176;
  function crc8(bytes) {
    let crc = 0;
    for (const b of bytes) {
      crc ^= b;
      for (let i = 0; i < 8; i++) crc = crc & 0x80 ? ((crc << 1) ^ 0x07) & 0xff : (crc << 1) & 0xff;
    }
    return crc;
  }
  // hal/stamp.py's read_stamp on the top rows of the picture (RGBA -> video-range luma).
  function readStamp(rgba, width) {
    const size = Math.floor(width / BLOCKS);
    if (size < 2) return null;
    const lo = Math.floor(size / 4), hi = size - Math.floor(size / 4);
    const bits = [];
    for (let row = 0; row < 2; row++) {
      for (let b = 0; b < BLOCKS; b++) {
        let sum = 0, n = 0;
        for (let y = row * size + lo; y < row * size + hi; y++) {
          for (let x = b * size + lo; x < b * size + hi; x++) {
            const i = (y * width + x) * 4;
            sum += 16 + (65.481 * rgba[i] + 128.553 * rgba[i + 1] + 24.966 * rgba[i + 2]) / 255;
            n++;
          }
        }
        const mean = sum / n;
        if (mean > LOW && mean < HIGH) return null;
        bits.push(mean >= HIGH ? 1 : 0);
      }
    }
    if (bits.slice(0, 4).join("") !== "1010" || bits.slice(-4).join("") !== "0101") return null;
    let value = 0n;
    for (let i = 4; i < 68; i++) value = (value << 1n) | BigInt(bits[i]);
    let crc = 0;
    for (let i = 68; i < 76; i++) crc = (crc << 1) | bits[i];
    const bytes = [];
    for (let i = 7; i >= 0; i--) bytes.push(Number((value >> BigInt(8 * i)) & 0xffn));
    return crc8(bytes) === crc ? Number(value) : null;
  }
  window.__pbReadStamp = readStamp;
  window.__pbFrames = [];

  // -- when each video fragment of the live view's WebSocket reaches the page ------------------
  // [decode time in seconds, wall time] per video fragment (fMP4: moof/traf/tfhd + tfdt; the
  // timescale from the init segment's mdhd), read before live.js gets the message.
  window.__pbArrivals = [];
  function boxes(d, start, end, visit) {
    let i = start;
    while (i + 8 <= end) {
      const size = d.getUint32(i), kind = String.fromCharCode(
        d.getUint8(i + 4), d.getUint8(i + 5), d.getUint8(i + 6), d.getUint8(i + 7));
      if (size < 8 || i + size > end) return;
      visit(kind, i + 8, i + size);
      i += size;
    }
  }
  const scales = {};  // track id -> timescale (video tracks only)
  function onInit(d) {
    boxes(d, 0, d.byteLength, (k, a, b) => { if (k === "moov") boxes(d, a, b, (k2, a2, b2) => {
      if (k2 !== "trak") return;
      let id = null, scale = null, video = false;
      boxes(d, a2, b2, (k3, a3, b3) => {
        if (k3 === "tkhd") id = d.getUint32(a3 + (d.getUint8(a3) === 1 ? 20 : 12));
        if (k3 === "mdia") boxes(d, a3, b3, (k4, a4) => {
          if (k4 === "mdhd") scale = d.getUint32(a4 + (d.getUint8(a4) === 1 ? 20 : 12));
          if (k4 === "hdlr") video = d.getUint32(a4 + 8) === 0x76696465;  // "vide"
        });
      });
      if (video && id !== null && scale) scales[id] = scale;
    }); });
  }
  function onFragment(d, at) {
    boxes(d, 0, d.byteLength, (k, a, b) => { if (k === "moof") boxes(d, a, b, (k2, a2, b2) => {
      if (k2 !== "traf") return;
      let id = null, dts = null;
      boxes(d, a2, b2, (k3, a3) => {
        if (k3 === "tfhd") id = d.getUint32(a3 + 4);
        if (k3 === "tfdt") dts = d.getUint8(a3) === 1
          ? Number(d.getBigUint64(a3 + 4)) : d.getUint32(a3 + 4);
      });
      if (id in scales && dts !== null) window.__pbArrivals.push([dts / scales[id], at]);
    }); });
  }
  const NativeWebSocket = window.WebSocket;
  window.WebSocket = class extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      if (!String(url).includes("/live/")) return;
      let first = true;
      this.addEventListener("message", (ev) => {
        if (!(ev.data instanceof ArrayBuffer)) return;
        const at = wall(), d = new DataView(ev.data);
        if (first) { first = false; onInit(d); } else onFragment(d, at);
      });
    }
  };
  document.addEventListener("DOMContentLoaded", () => {
    const video = document.getElementById("live-video");
    if (!video || !video.requestVideoFrameCallback) return;
    const canvas = document.createElement("canvas");
    const g = canvas.getContext("2d", {willReadFrequently: true});
    const onFrame = (now, md) => {
      const width = md.width, rows = Math.floor(width / BLOCKS) * 2;
      let stamp = null;
      if (width && rows) {
        canvas.width = width; canvas.height = rows;
        g.drawImage(video, 0, 0, width, rows, 0, 0, width, rows);
        stamp = readStamp(g.getImageData(0, 0, width, rows).data, width);
      }
      const b = video.buffered;
      window.__pbFrames.push({
        paint: performance.timeOrigin + md.expectedDisplayTime,
        presented: performance.timeOrigin + md.presentationTime,
        media: md.mediaTime, rate: video.playbackRate, stamp: stamp,
        ahead: b.length ? b.end(b.length - 1) - md.mediaTime : null,
      });
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  });
})();
"""


# -- results ------------------------------------------------------------------------------------


@dataclass
class WebResult:
    incidents: int  # requested
    floor_ms: list[float] = field(default_factory=list)
    row_ms: list[float] = field(default_factory=list)
    first_frame_ms: list[float] = field(default_factory=list)
    g2g_ms: list[float] = field(default_factory=list)  # live frames, every incident
    ahead_ms: list[float] = field(default_factory=list)  # buffered ahead of each live frame
    arrive_ms: list[float] = field(default_factory=list)  # capture -> its fragment in the page
    in_page_ms: list[float] = field(default_factory=list)  # its fragment in the page -> painted
    catch_up_ms: list[float] = field(default_factory=list)  # press -> at the live edge
    frames: int = 0  # pictures presented in all
    unreadable: int = 0  # of which no stamp could be read
    skew_ms: list[float] = field(default_factory=list)  # page clock - bench clock
    stalls: int = 0  # the video element's 'waiting' events (live.js counts them)
    live_faster: int = 0  # live frames painted while the player played faster than 1x
    notes: list[str] = field(default_factory=list)


def _verdict(values: list[float], q: float, goal: float | None) -> str:
    if goal is None:
        return ""
    value = percentile(values, q)
    return "PASS" if not math.isnan(value) and value <= goal else "MISS"


def table_rows(r: WebResult) -> list[tuple[str, list[float], str, str]]:
    """(metric, samples ms, goal, verdict)."""
    return [
        ("floor: row written to the store -> in the DOM (no MQTT)", r.floor_ms, "", ""),
        ("press -> alert row in the DOM", r.row_ms, f"max <= {GOAL_ROW_MS:g}",
         _verdict(r.row_ms, 100, GOAL_ROW_MS)),
        ("press -> first video frame painted", r.first_frame_ms,
         f"max <= {GOAL_FIRST_FRAME_MS:g}", _verdict(r.first_frame_ms, 100, GOAL_FIRST_FRAME_MS)),
        ("glass-to-glass, live frames (capture -> painted)", r.g2g_ms,
         f"p95 <= {GOAL_G2G_P95_MS:g}", _verdict(r.g2g_ms, 95, GOAL_G2G_P95_MS)),
        ("  capture -> its fragment in the page (WebSocket)", r.arrive_ms, "", ""),
        ("  fragment in the page -> painted (MSE, decode)", r.in_page_ms, "", ""),
        ("  buffered ahead of the picture when painted", r.ahead_ms, "", ""),
        ("press -> player at the live edge (pre-roll played)", r.catch_up_ms, "", ""),
    ]


def format_table(r: WebResult) -> str:
    rows = table_rows(r)
    width = max(len(m) for m, *_ in rows) + 2
    head = (f"{'metric':<{width}}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'n':>7}  "
            f"{'goal ms':<14}verdict")
    lines = [f"Pink Button bench — console in the browser (chromium, HTTPS, {WIDTH}x{HEIGHT}@{FPS}"
             f" H.264 + Opus, loopback mTLS), incidents={r.incidents}", head]
    for metric, samples, goal, verdict in rows:
        cells = "".join(f"{percentile(samples, q):>9.1f}" for q in (50, 95, 100))
        lines.append(f"{metric:<{width}}{cells}{len(samples):>7}  {goal:<14}{verdict}".rstrip())
    skew = max((abs(s) for s in r.skew_ms), default=math.nan)
    lines.append(f"pictures presented {r.frames}, capture time unreadable in {r.unreadable}; "
                 f"page clock vs bench clock within {skew:.1f} ms (corrected)")
    lines.append(f"player: {r.stalls} stalls (video 'waiting'), {r.live_faster} of "
                 f"{len(r.g2g_ms)} live frames played faster than 1x to get back to the edge")
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


# -- the rig ------------------------------------------------------------------------------------


class ConsoleProcess:
    """`pinkbutton-controlroom serve` (receiver with auto-ack + console, HTTPS) as a process."""

    def __init__(self, work: Path, pki: Path, port: int) -> None:
        self.db = work / "room.db"
        self.lines: list[str] = []
        self._log = open(work / "serve.log", "w")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "serve",
             "--host", "localhost", "--port", str(port), "--pki", str(pki), "--db", str(self.db),
             "--auto-ack", "--operator", "bench", "--device-certs", str(pki / "devices"),
             "--client-id", "controlroom-bench-web", "--evidence", str(work / "evidence"),
             "--listen", "127.0.0.1:0", "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            text=True, cwd=ROOT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        threading.Thread(target=self._read, name="bench-web-serve", daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self._log.write(line)
            self._log.flush()

    def url(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for line in self.lines:
                if found := re.search(r"console on (https://\S+?)/? ", line):
                    return found.group(1)
            if self._proc.poll() is not None:
                break
            time.sleep(0.05)
        raise BenchError("the console did not start: " + " / ".join(self.lines[-3:]))

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)
        self._log.close()


class WebRig(Rig):
    """harness.bench's rig (PKI, broker, kiosk) with a camera and microphone on the kiosk, the
    room as `serve` in its own process and an officer's chromium."""

    def __init__(self, work_dir: Path) -> None:
        super().__init__(work_dir)
        self.console: ConsoleProcess | None = None
        self.url = ""
        self.password = secrets.token_urlsafe(12)
        self.store: IncidentStore | None = None
        self._pw: Any = None
        self.browser: Any = None
        self.page: Any = None

    def start_clients(self) -> None:
        assert self.broker is not None
        try:
            issue_web(self.pki, ["127.0.0.1"])
            db = self.dir / "room.db"
            accounts = Accounts(db)
            accounts.add_user(OFFICER, "operator", self.password)
            accounts.close()
            self.console = ConsoleProcess(self.dir, self.pki, self.broker.port)
            self.url = self.console.url(30.0)
            config = load_config(write_config(self.dir, self.pki, self.broker.port))
            clock = Clock()
            backend = FakeBackend()
            self.kiosk = Kiosk(
                config, backend.button(clock, 17, 0.05), backend.indicator(clock, 27),
                clock=clock, listeners=[self.timings.on_kiosk],
                camera=backend.camera(clock, WIDTH, HEIGHT, FPS),
                microphone=backend.microphone(clock, SAMPLE_RATE))
            self.store = IncidentStore(db)
        except (ConfigError, TransportError, PkiError, OSError) as e:
            raise BenchError(f"cannot set up kiosk/console: {e}") from None
        thread = threading.Thread(target=self.kiosk.run, name="bench-kiosk", daemon=True)
        thread.start()
        self._threads.append(thread)
        end = time.monotonic() + 20.0
        while not (self.timings.idle >= 1 and self._room_knows_kiosk()):
            if time.monotonic() > end:
                raise BenchError("kiosk and control room did not both come up within 20 s")
            time.sleep(0.1)

    def _room_knows_kiosk(self) -> bool:
        assert self.store is not None
        return any(d[0] == DEVICE_ID and d[1] for d in self.store.devices())

    def start_browser(self) -> None:
        if not CHROMIUM.exists():
            raise BenchError(f"no {CHROMIUM}: apt-get install chromium")
        try:
            from playwright.sync_api import sync_playwright
        except ImportError:
            raise BenchError("playwright is not installed: pip install -e '.[dev]'") from None
        self._pw = sync_playwright().start()
        self.browser = self._pw.chromium.launch(executable_path=str(CHROMIUM),
                                                args=CHROMIUM_ARGS, headless=True,
                                                timeout=60_000)
        context = self.browser.new_context(ignore_https_errors=True)  # the bench's own CA
        context.set_default_timeout(STEP_TIMEOUT_S * 2000)
        context.add_init_script(PAGE_PROBE)
        # Everything the page loads must come from the console itself.
        self.foreign: list[str] = []
        context.on("request", self._request)
        self.page = context.new_page()
        self.page.goto(self.url + "/login")
        self.page.fill("input[name=user]", OFFICER)
        self.page.fill("input[name=password]", self.password)
        self.page.click("button[type=submit]")
        self.page.wait_for_url(self.url + "/")

    def _request(self, request) -> None:
        if not request.url.startswith(self.url + "/"):
            self.foreign.append(request.url)

    def close(self) -> None:
        if self.browser is not None:
            self.browser.close()
        if self._pw is not None:
            self._pw.stop()
        if self.store is not None:
            self.store.close()
        super().close()  # kiosk, broker
        if self.console is not None:
            self.console.stop()


# -- measurements -------------------------------------------------------------------------------


def wait_js(page, function: str, arg: Any = None, timeout: float = STEP_TIMEOUT_S) -> Any:
    """Poll a JS function until it returns something truthy (page.wait_for_function builds
    its predicate with `new Function`, which the console's CSP refuses)."""
    end = time.monotonic() + timeout
    while True:
        value = page.evaluate(function, arg)
        if value or time.monotonic() > end:
            return value
        time.sleep(0.02)


def page_skew(page) -> float:
    """Page wall clock minus this process's wall clock, seconds (best of a few round trips)."""
    best = (math.inf, 0.0)
    for _ in range(5):
        before = time.time()
        page_now = page.evaluate("window.__pbWall()") / 1000
        after = time.time()
        best = min(best, (after - before, page_now - (before + after) / 2))
    return best[1]


def on_queue(rig: WebRig) -> None:
    rig.page.goto(rig.url + "/")
    if not wait_js(rig.page, "() => window.pbConsole && window.pbConsole.messages > 0"):
        raise BenchError("the queue page got nothing over its WebSocket")


def measure_floor(rig: WebRig, skew: float) -> float | None:
    """A row written straight into the store -> in the queue page's DOM (ms)."""
    assert rig.store is not None
    alert_id = str(uuid.uuid4())
    now = time.time()
    alert = protocol.Alert(
        device_id="pb-bench-floor", alert_id=alert_id, seq=1, kind="emergency",
        pressed_at=iso8601(now), pressed_mono=time.monotonic(), age_ms=0, announce=1,
        escalated=False, presses=1, site=protocol.Site("bench-floor", "Floor row", 34.0, 71.5),
        firmware="bench", sent_at=iso8601(now))
    written = time.time()
    rig.store.record_alert(alert, iso8601(written), 0.0, True)
    seen = wait_js(rig.page, "(id) => window.__pbRows()[id]", alert_id)
    rig.store.mark(alert_id, "ended", iso8601(time.time()), "bench", "test")
    return None if not seen else (seen / 1000 - skew - written) * 1000


def measure_incident(rig: WebRig, wall_minus_mono: float, result: WebResult,
                     progress: Progress, i: int) -> bool:
    """One press, watched in the browser; False when the run cannot go on."""
    assert rig.kiosk is not None and rig.store is not None
    t = rig.timings
    skew = page_skew(rig.page)
    result.skew_ms.append(skew * 1000)
    floor = measure_floor(rig, skew)
    if floor is None:
        result.notes.append(f"incident {i + 1}: the floor's row never reached the page")
    else:
        result.floor_ms.append(floor)
    before, idle_before = t.last_persisted, t.idle
    pressed = time.time()
    rig.kiosk.press()
    if not t.wait(lambda: t.last_persisted != before, STEP_TIMEOUT_S):
        result.notes.append(f"stopped after {i} incidents: a press was never persisted")
        return False
    alert_id = t.last_persisted
    assert alert_id is not None
    rig.page.evaluate("(id) => window.__pbOpen(id)", alert_id)
    try:
        rig.page.wait_for_url(re.compile(r".*/incident/.*"), timeout=STEP_TIMEOUT_S * 1000)
        rig.page.wait_for_load_state("domcontentloaded")
    except PlaywrightError:  # its timeout: said in the notes
        result.notes.append(f"incident {i + 1}: the alert's row was not seen and opened within "
                            f"{STEP_TIMEOUT_S:g} s")
        rig.page.evaluate("() => window.__pbOpen(null)")  # no navigation while we leave
        end_incident(rig, alert_id, idle_before)
        return True
    row = rig.page.evaluate("(id) => window.__pbRows()[id]", alert_id)
    if row:
        result.row_ms.append((row / 1000 - skew - pressed) * 1000)
    # Until the player is at the live edge, then LIVE_S more seconds of pictures.
    deadline = time.monotonic() + CATCH_UP_TIMEOUT_S
    press_mono_us = (pressed - wall_minus_mono) * 1e6
    probe = ("(pressUs) => { const f = window.__pbFrames; const at = f.findIndex((x) => "
             "x.stamp !== null && x.stamp >= pressUs && x.rate === 1); "
             "return at < 0 ? null : [at, f[at].paint, f.length - at]; }")
    edge = None
    while time.monotonic() < deadline:
        edge = rig.page.evaluate(probe, press_mono_us)
        if edge is not None and edge[2] >= LIVE_FRAMES:
            break
        time.sleep(0.2)
    frames = rig.page.evaluate("() => window.__pbFrames")
    arrivals = {round(t, 3): at for t, at in rig.page.evaluate("() => window.__pbArrivals")}
    result.stalls += rig.page.evaluate(
        "() => window.pbConsole && pbConsole.live ? pbConsole.live.state.stalls : 0")
    end_incident(rig, alert_id, idle_before)
    result.frames += len(frames)
    result.unreadable += sum(1 for f in frames if f["stamp"] is None)
    if frames:
        result.first_frame_ms.append((frames[0]["paint"] / 1000 - skew - pressed) * 1000)
    else:
        result.notes.append(f"incident {i + 1}: no picture painted in {CATCH_UP_TIMEOUT_S:g} s")
    if edge is None:
        result.notes.append(f"incident {i + 1}: the player did not reach the live edge in "
                            f"{CATCH_UP_TIMEOUT_S:g} s")
        return True
    at, edge_paint = edge[0], edge[1]
    result.catch_up_ms.append((edge_paint / 1000 - skew - pressed) * 1000)
    for f in frames[at:at + LIVE_FRAMES]:
        if f["stamp"] is None:
            continue
        captured = f["stamp"] / 1e6 + wall_minus_mono
        result.g2g_ms.append((f["paint"] / 1000 - skew - captured) * 1000)
        arrived = arrivals.get(round(f["media"], 3))
        if arrived is not None:
            result.arrive_ms.append((arrived / 1000 - skew - captured) * 1000)
            result.in_page_ms.append(f["paint"] - arrived)
        result.ahead_ms.append(max(0.0, f["ahead"] or 0.0) * 1000)
        result.live_faster += f["rate"] > 1
    progress(f"incident {i + 1}/{result.incidents}: row {result.row_ms[-1]:.0f} ms, "
             f"first frame {result.first_frame_ms[-1]:.0f} ms, live glass-to-glass p50 "
             f"{percentile(result.g2g_ms, 50):.0f} ms so far" if row and frames else
             f"incident {i + 1}/{result.incidents}: incomplete (see the notes)")
    return True


def end_incident(rig: WebRig, alert_id: str, idle_before: int) -> None:
    """Ended as an officer's click does (the store's commands table; serve's receiver sends
    the kiosk its `end`); then back to the queue."""
    assert rig.store is not None
    t = rig.timings
    rig.store.queue_command(alert_id, "end", {"disposition": "test"}, OFFICER,
                            iso8601(time.time()))
    if not t.wait(lambda: t.idle > idle_before, STEP_TIMEOUT_S * 2):
        raise BenchError(f"the kiosk was not back to idle {STEP_TIMEOUT_S * 2:g} s after the "
                         "end")
    on_queue(rig)


def run_web_bench(incidents: int = DEFAULT_INCIDENTS, *, deadline_s: float = DEADLINE_S,
                  progress: Progress = lambda line: None) -> WebResult:
    start = time.monotonic()
    result = WebResult(incidents)
    with tempfile.TemporaryDirectory(prefix="pinkbutton-bench-web-") as tmp, \
            WebRig(Path(tmp)) as rig:
        progress("setting up PKI and mosquitto (mTLS + ACL)")
        rig.start_broker()
        progress("starting `pinkbutton-controlroom serve` (HTTPS) and the kiosk (fake camera + mic)")
        rig.start_clients()
        progress("chromium: an officer logs in")
        rig.start_browser()
        on_queue(rig)
        progress(f"filling the pre-roll for {PREROLL_WAIT_S:g} s")
        time.sleep(PREROLL_WAIT_S)
        wall_minus_mono = time.time() - time.monotonic()  # the kiosk's stamps: CLOCK_MONOTONIC
        for i in range(incidents):
            if time.monotonic() + CATCH_UP_TIMEOUT_S + STEP_TIMEOUT_S > start + deadline_s:
                result.notes.append(f"deadline reached: {i} of {incidents} incidents measured")
                break
            try:
                if not measure_incident(rig, wall_minus_mono, result, progress, i):
                    break
            except (BenchError, PlaywrightError) as e:  # the table shows what was measured
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                result.notes.append(f"stopped in incident {i + 1}: {first}")
                break
        if rig.foreign:
            result.notes.append(f"requests outside the console: {rig.foreign[:3]}")
    progress(f"done in {time.monotonic() - start:.0f} s")
    return result


# -- CLI ----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m harness.bench_web",
                           description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--incidents", type=positive_int, default=DEFAULT_INCIDENTS,
                        help=f"presses, one incident each (default {DEFAULT_INCIDENTS})")
    parser.add_argument("--deadline", type=positive_float, default=DEADLINE_S,
                        help=f"overall time bound in seconds (default {DEADLINE_S:g})")
    args = parser.parse_args(argv)
    return run_and_print(
        "bench-web",
        lambda progress: run_web_bench(args.incidents, deadline_s=args.deadline,
                                       progress=progress),
        format_table)


if __name__ == "__main__":
    sys.exit(main())
