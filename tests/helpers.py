"""Helpers for end-to-end tests: configs on disk, a running kiosk, event recorders."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pinkbutton.firmware.app import Kiosk
from pinkbutton.firmware.config import Config, load_config
from pinkbutton.firmware.transport import TlsFiles
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.tools.pki import ca_paths, controlroom_paths, device_paths


def assert_one_line_error(
    proc: subprocess.CompletedProcess, *words: str, code: int = 2
) -> str:
    """A command refused its input the way every Pink Button command must: exit `code`
    (2: usage or config), one line on stderr naming the problem, no traceback. Returns the
    line; each of `words` must be in it."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def write_kiosk_config(
    directory: Path, pki_dir: Path, port: int, device_id: str = "pb-test-0001", *,
    host: str = "localhost", ca: Path | None = None, cert: Path | None = None,
    key: Path | None = None, alert: dict | None = None,
) -> Path:
    dev = device_paths(pki_dir, device_id)
    alert_lines = "\n".join(f"{k} = {v!r}" for k, v in (alert or {}).items())
    path = directory / f"{device_id}.toml"
    path.write_text(f"""
[device]
id = "{device_id}"
site_id = "test-site"
site_name = "Test Bazaar"
lat = 34.0
lon = 71.5
state_dir = "{directory / ('state-' + device_id)}"

[broker]
host = "{host}"
port = {port}
ca = "{ca or ca_paths(pki_dir).cert}"
cert = "{cert or dev.cert}"
key = "{key or dev.key}"
backoff_min_s = 0.1
backoff_max_s = 0.5
keepalive_s = 5

[hal]
backend = "fake"

[alert]
{alert_lines}
""")
    return path


def room_tls(pki_dir: Path) -> TlsFiles:
    cr = controlroom_paths(pki_dir)
    return TlsFiles(ca_paths(pki_dir).cert, cr.cert, cr.key)


class Recorder:
    """Thread-safe list of (kind, data) from a kiosk's or receiver's listener hook."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []
        self._cv = threading.Condition()

    def __call__(self, kind: str, data: dict) -> None:
        with self._cv:
            self.items.append((kind, dict(data)))
            self._cv.notify_all()

    def of(self, kind: str) -> list[dict]:
        with self._cv:
            return [d for k, d in self.items if k == kind]

    def wait_for(self, kind: str, pred: Callable[[dict], bool] = lambda d: True,
                 timeout: float = 10.0) -> dict:
        end = time.monotonic() + timeout
        with self._cv:
            while True:
                for k, d in self.items:
                    if k == kind and pred(d):
                        return d
                left = end - time.monotonic()
                if left <= 0:
                    seen = [k for k, _ in self.items][-15:]
                    raise AssertionError(f"no {kind!r} event within {timeout} s; last: {seen}")
                self._cv.wait(left)


class RunningKiosk:
    """A Kiosk on fake hardware with a real clock, running in its own thread."""

    def __init__(self, config_path: Path, *, check_certificates: bool = True,
                 media: bool = False) -> None:
        self.config: Config = load_config(config_path, check_certificates=check_certificates)
        self.clock = Clock()
        backend = FakeBackend()
        self.button = backend.button(self.clock, 17, 0.05)
        self.indicator = backend.indicator(self.clock, 27)
        self.camera = self.microphone = None
        if media:
            c = self.config.media
            self.camera = backend.camera(self.clock, c.width, c.height, c.fps)
            self.microphone = backend.microphone(self.clock, 48000)
        self.events = Recorder()
        self.kiosk = Kiosk(self.config, self.button, self.indicator, clock=self.clock,
                           listeners=[self.events], camera=self.camera,
                           microphone=self.microphone)
        self.thread = threading.Thread(target=self.kiosk.run, name="kiosk-under-test",
                                       daemon=True)

    def __enter__(self) -> RunningKiosk:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kiosk.stop()
        self.thread.join(10)

    def press(self, hold: float = 0.12) -> None:
        """A real press through the fake button: raw edges, debounced by the kiosk."""
        self.button.press()
        time.sleep(hold)
        self.button.release()


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, what: str = "condition"):
    """Poll `predicate` until it returns something truthy; that value is returned."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.02)


# The control room's `incidents` table as it was before flagged and folded incidents (issue 9):
# migration tests build a database of that version from it.
INCIDENTS_TABLE_BEFORE_ISSUE_9 = """
CREATE TABLE incidents (
    alert_id TEXT PRIMARY KEY, device_id TEXT NOT NULL, seq INTEGER NOT NULL,
    kind TEXT NOT NULL, site_id TEXT NOT NULL, site_name TEXT NOT NULL, lat REAL NOT NULL,
    lon REAL NOT NULL, firmware TEXT NOT NULL, follows TEXT, pressed_at TEXT NOT NULL,
    received_at TEXT NOT NULL, latency_ms REAL, announces INTEGER NOT NULL DEFAULT 1,
    presses INTEGER NOT NULL DEFAULT 1, escalated INTEGER NOT NULL DEFAULT 0,
    signature_ok INTEGER, acked_at TEXT, acked_by TEXT, dispatched_at TEXT, ended_at TEXT
);
"""
