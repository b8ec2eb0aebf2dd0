"""`pinkbutton-sim fleet FILE`: every site of a fleet file as a real kiosk, in one process.

Each device is the firmware's own `Kiosk` (simulator/device.py) on fake hardware, with its
own certificate, mTLS connection, state directory and threads; a site's quirks set its fake
hardware (covered or frozen camera, dead microphone, stuck button), put a `FlakyLink` between
it and the broker, or slow its outbox's writes. Typed commands (one a line): a site id or
`press ID` presses its button, `hold ID S` holds it S seconds, `quit` stops the fleet.

What it shows: on a terminal a live table (rich), otherwise one line per change
(`SITE  DEVICE  what`), so tests and logs can read it.

Note on threads: each kiosk's state thread calls its `DeviceView` (a listener), which only
replaces plain values; the table is drawn from them by rich's refresh thread; commands come
from the caller's thread. Lines are written under one lock.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import TextIO

from pinkbutton.firmware.app import Kiosk
from pinkbutton.firmware.diag.cli import shown
from pinkbutton.firmware.outbox import Outbox
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.simulator.device import PRESS_HOLD_S, SimDevice, build_device
from pinkbutton.simulator.flakylink import FlakyLink
from pinkbutton.simulator.fleetfile import Fleet, Site, with_broker

STOP_JOIN_S = 5.0  # each kiosk says goodbye to the broker (<= 1 s) and closes


class DeviceView:
    """What the fleet shows of one device; fed by its kiosk's listener (state thread)."""

    def __init__(self, site: Site, report: Callable[[DeviceView, str], None]) -> None:
        self.site = site
        self.report = report
        self.online = False
        self.mode = "BOOT"
        self.pattern = "off"
        self.faults: tuple[str, ...] = ()
        self.presses = 0
        self.last = "starting"
        self.persisted: set[str] = set()
        self.delivered: set[str] = set()
        self.kiosk: Kiosk | None = None  # set once built: faults are read from its state

    def __call__(self, kind: str, data: dict) -> None:
        text = None
        if kind == "connected":
            self.online, text = True, "online"
        elif kind in ("disconnected", "connect_failed"):
            if self.online or kind == "disconnected":
                text = f"OFFLINE ({data.get('reason')})"
            self.online = False
        elif kind == "mode":
            self.mode = str(data["to"]).upper()
            text = f"state {self.mode}"
        elif kind == "indicator":
            self.pattern = str(data["pattern"])
            text = f"indicator {self.pattern}"
        elif kind == "pressed":
            self.presses += 1
            text = "button pressed"
        elif kind == "persisted":
            self.persisted.add(data["alert_id"])
            text = f"alert {data['alert_id'][:8]} written to the outbox"
        elif kind == "delivered":
            self.delivered.add(data["alert_id"])
            text = f"alert {data['alert_id'][:8]} delivered to the broker"
        elif kind == "receipt":
            text = f"alert {str(data['alert_id'])[:8]} stored by the control room"
        elif kind == "cmd":
            by = f" by {data['operator']}" if data.get("operator") else ""
            text = f"{data['cmd']}{by} (alert {str(data.get('alert_id'))[:8]})"
        elif kind == "selftest":
            text = "selftest ok" if data["ok"] else f"selftest FAILED: {', '.join(data['failed'])}"
        faults = tuple(sorted(self.kiosk.state.faults)) if self.kiosk is not None else ()
        if faults != self.faults:
            raised = [f for f in faults if f not in self.faults]
            cleared = [f for f in self.faults if f not in faults]
            self.faults = faults
            for name in raised:
                self._say(f"fault {name}")
            for name in cleared:
                self._say(f"fault cleared {name}")
        if text is not None:
            self._say(text)

    def _say(self, text: str) -> None:
        # an operator's name, a broker's reason: shown, never obeyed by the terminal
        text = shown(text)
        self.last = text
        self.report(self, text)


class _SlowOutbox:
    """A slow SD card: every write to the kiosk's outbox takes `delay_s` longer (quirk
    `slow_disk`). The real outbox does the work; reads pass straight through."""

    _WRITES = frozenset({"put", "mark_delivered", "mark_received", "mark_ended"})

    def __init__(self, outbox: Outbox, delay_s: float) -> None:
        self._outbox, self._delay_s = outbox, delay_s

    def __getattr__(self, name: str):
        attr = getattr(self._outbox, name)
        if name not in self._WRITES:
            return attr

        def slow(*args, **kwargs):
            time.sleep(self._delay_s)
            return attr(*args, **kwargs)

        return slow


class FleetRunner:
    def __init__(self, fleet: Fleet, out: TextIO, *, lines: bool = True,
                 worker: bool = False) -> None:
        self.fleet = fleet
        self.out = out
        self.lines = lines
        # a worker process of `--workers N` (simulator/fleetworkers.py): JSON lines for the
        # parent instead of text
        self.worker = worker
        self.clock = Clock()
        self.views: dict[str, DeviceView] = {}
        self.devices: dict[str, SimDevice] = {}
        self.links: dict[str, FlakyLink] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._all_online = False
        self.message = ""  # the last command's answer, for the table

    # -- start / stop -------------------------------------------------------------------------

    def start(self) -> None:
        for site in self.fleet.sites:
            q = site.quirks
            if q.flaky_link is not None:
                link = FlakyLink(self.fleet.broker, loss=q.flaky_link.loss,
                                 latency_ms=q.flaky_link.latency_ms).start()
                self.links[site.id] = link
                # the broker's certificate must name 127.0.0.1 (the dev PKI's does)
                site = with_broker(site, "127.0.0.1", link.port)
            view = DeviceView(site, self._report)
            backend = FakeBackend(button_stuck=q.stuck_button, camera_mode=q.camera_mode,
                                  microphone_mode="silent" if q.mic_dead else "ok")
            device = build_device(site.config, self.clock, backend=backend, listeners=[view])
            if q.slow_disk_ms is not None:  # replaces the attribute the state thread uses
                setattr(device.kiosk, "outbox",  # noqa: B010 - not an Outbox, on purpose
                        _SlowOutbox(device.kiosk.outbox, q.slow_disk_ms / 1000))
            view.kiosk = device.kiosk
            self.views[site.id] = view
            self.devices[site.id] = device
        for sid, device in self.devices.items():
            thread = threading.Thread(target=device.kiosk.run, name=f"kiosk-{sid}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        for device in self.devices.values():
            device.kiosk.stop()
        end = time.monotonic() + STOP_JOIN_S
        for thread in self._threads:
            thread.join(max(0.0, end - time.monotonic()))
        for link in self.links.values():
            link.close()

    # -- commands -----------------------------------------------------------------------------

    def press(self, key: str, hold_s: float = PRESS_HOLD_S) -> str:
        site = self.fleet.find(key)
        if site is None:
            return f"no site {key!r} in {self.fleet.name} (a site id or device id)"
        self.devices[site.id].press(hold_s)
        return f"{site.id}: pressed" + (f" for {hold_s:g} s" if hold_s != PRESS_HOLD_S else "")

    def command(self, line: str) -> bool:
        """One typed line; False once it says quit."""
        words = line.split()
        if not words:
            return True
        verb = words[0].lower()
        if verb in ("quit", "exit", "q"):
            return False
        if verb == "press" and len(words) == 2:
            answer = self.press(words[1])
        elif verb == "hold" and len(words) == 3:
            try:
                hold_s = float(words[2])
            except ValueError:
                hold_s = -1.0
            answer = (self.press(words[1], hold_s) if 0 < hold_s <= 3600
                      else f"hold {words[1]} S: S must be seconds (0-3600), not {words[2]!r}")
        elif len(words) == 1 and verb not in ("press", "hold"):
            answer = self.press(words[0])
        else:
            answer = "commands: SITE | press SITE | hold SITE SECONDS | quit"
        self.message = answer
        if self.worker:
            self._emit({"fleet": answer})
        else:
            self._write(f"fleet: {answer}")
        return True

    # -- what it shows ------------------------------------------------------------------------

    def online_count(self) -> int:
        return sum(v.online for v in self.views.values())

    def undelivered(self) -> int:
        return sum(len(v.persisted - v.delivered) for v in self.views.values())

    def _report(self, view: DeviceView, text: str) -> None:
        """A kiosk's state thread: one line per change (when not drawing the table)."""
        if self.worker:
            self._emit({"site": view.site.id, "text": text, "online": view.online,
                        "mode": view.mode, "pattern": view.pattern, "faults": list(view.faults),
                        "presses": view.presses})
            return
        self._write(f"{view.site.id}  {view.site.device_id}  {text}")
        if text != "online":
            return
        with self._lock:  # said once, whichever kiosk's thread completes the count
            first = not self._all_online and self.online_count() == len(self.fleet.sites)
            self._all_online = self._all_online or first
        if first:
            self._write(f"fleet: all {len(self.fleet.sites)} devices online after "
                        f"{time.monotonic() - self._started:.1f} s")

    def _emit(self, message: dict) -> None:
        self._write(json.dumps(message, ensure_ascii=True))

    def _write(self, line: str) -> None:
        if not self.lines:
            return
        with self._lock:
            with contextlib.suppress(ValueError, OSError):  # closed at exit
                print(line, file=self.out, flush=True)
