"""`make soak`: many presses across many simulated kiosks while the broker and devices die.

One temp dir holds a dev PKI, a real mosquitto (mTLS, persistence on), one reference
ControlRoomReceiver (auto-ack) and N kiosk *processes* (`pinkbutton-sim run --stdin-presses`):
real firmware on the fake HAL, so a device kill is a real SIGKILL and its restart replays the
outbox from disk. A scheduler presses random idle devices (so every press is one expected
incident), ends each incident from the room after the auto-ack, and injects faults at random
bounded intervals: broker kill -9 + restart, broker stall (SIGSTOP/SIGCONT), device kill -9 +
restart. At the end every alert_id a device persisted must be in the room's incident store
exactly once, and no press may have produced a second alert_id.

Exit codes: 0 nothing lost or duplicated, 1 something was (the ids are listed), 2 the soak
could not set itself up (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pinkbutton.firmware.cliargs import OneLineParser, positive_float, positive_int
from pinkbutton.firmware.transport import TlsFiles
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.pki import PkiError, ca_paths, controlroom_paths, device_paths, init_dev_pki

from harness.bench import percentile
from harness.broker import BrokerError, Mosquitto

PROGRESS_EVERY = 50
RECOVERY_GOAL_S = 2.0
TICK_S = 0.02
STOP_TIMEOUT_S = 5.0
RECOVERY_WAIT_S = 30.0  # a first alert later than this after a restart is reported as such

Progress = Callable[[str], None]


class SoakError(Exception):
    """The soak could not set itself up; the message is one line."""


@dataclass
class SoakOptions:
    devices: int = 20
    presses: int = 1000
    max_minutes: float = 15.0
    seed: int | None = None
    # Seconds between presses (uniform); the scheduler also needs an idle device.
    press_gap_s: tuple[float, float] = (0.05, 0.6)
    # Seconds between faults of each kind (uniform), None = never.
    broker_kill_every_s: tuple[float, float] | None = (25.0, 70.0)
    stall_every_s: tuple[float, float] | None = (25.0, 70.0)
    device_kill_every_s: tuple[float, float] | None = (15.0, 50.0)
    broker_down_s: tuple[float, float] = (0.3, 3.0)
    stall_s: tuple[float, float] = (1.0, 4.0)
    device_down_s: tuple[float, float] = (0.1, 2.0)
    end_delay_s: tuple[float, float] = (0.0, 0.3)  # the operator's "end" after the auto-ack
    drain_s: float = 90.0  # reserved at the end for the backlog to arrive
    work_dir: Path | None = None  # default: a temp dir, removed unless something went wrong


@dataclass
class SoakResult:
    devices: int
    presses: int
    incidents: int
    lost: list[str]
    duplicated: list[str]
    latencies_ms: list[float]
    recoveries_s: list[float | None]
    broker_kills: int
    stalls: int
    device_kills: int
    elapsed_s: float
    notes: list[str] = field(default_factory=list)
    # Broker back -> first alert PUBACKed at any kiosk (the kiosk's part of the recovery;
    # the room's reconnect is not in it).
    kiosk_recoveries_s: list[float | None] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.lost and not self.duplicated


# -- the table ----------------------------------------------------------------------------------


def _recovery(recoveries: list[float | None]) -> str:
    measured = [x for x in recoveries if x is not None]
    if not recoveries:
        return "n/a (no broker restart)"
    if len(measured) < len(recoveries):
        return f"> {RECOVERY_WAIT_S:g} s (no alert after a restart)"
    worst = max(measured)
    verdict = "met" if worst < RECOVERY_GOAL_S else "MISSED"
    return f"{worst:.2f} s   (goal < {RECOVERY_GOAL_S:g} s after the broker is back: {verdict})"


def format_table(r: SoakResult) -> str:
    recovery = _recovery(r.recoveries_s)
    w = 36
    lines = [
        f"Pink Button soak — {r.devices} devices, {r.presses} presses, {r.broker_kills} broker "
        f"kills, {r.stalls} stalls, {r.device_kills} device kills, {r.elapsed_s:.0f} s",
        f"{'presses':<{w}}{r.presses}",
        f"{'incidents received':<{w}}{r.incidents}",
        f"{'lost':<{w}}{len(r.lost):<9}(must be 0)",
        f"{'duplicated':<{w}}{len(r.duplicated):<9}(must be 0)",
        f"{'press -> received p50 / p99':<{w}}"
        f"{percentile(r.latencies_ms, 50):.1f} ms / {percentile(r.latencies_ms, 99):.1f} ms",
        f"{'max recovery after broker restart':<{w}}{recovery}",
    ]
    if r.kiosk_recoveries_s:
        lines.append(f"{'  of which kiosk (alert at broker)':<{w}}"
                     f"{_recovery(r.kiosk_recoveries_s)}")
    lines += [f"note: {n}" for n in r.notes]
    return "\n".join(lines)


# -- pure reconciliation --------------------------------------------------------------------------


def reconcile(
    presses: dict[str, int],
    persisted: dict[str, list[str]],
    stored: dict[str, str],
    new_counts: Counter,
) -> tuple[list[str], list[str]]:
    """(lost, duplicated) from what devices did and what the room stored.

    presses: device -> presses made; persisted: device -> alert_ids it committed to its outbox
    (in order, across restarts); stored: alert_id -> device_id of every incident in the room's
    store; new_counts: alert_id -> times the room announced it as a *new* incident.
    Lost: a persisted alert missing from the store, or a press that never became an alert.
    Duplicated: any alert_id beyond one per press on a device (a second persist for one
    press, or an incident the device never persisted), or one alert opened twice by the room.
    """
    lost: list[str] = []
    duplicated: list[str] = []
    for _device, ids in sorted(persisted.items()):
        lost += [a for a in ids if a not in stored]
    by_device: dict[str, set[str]] = {}
    for alert_id, device in stored.items():
        by_device.setdefault(device, set()).add(alert_id)
    for device in sorted(set(presses) | set(persisted) | set(by_device)):
        made = presses.get(device, 0)
        ids = list(dict.fromkeys(persisted.get(device, [])))
        known = ids + sorted(by_device.get(device, set()) - set(ids))
        if len(known) > made:
            duplicated += [f"{device}:{a}" for a in known[made:]]
        missing = made - len(ids)
        if missing > 0:
            lost += [f"{device}: {missing} press(es) never persisted"]
    duplicated += [f"{a} opened {n}x" for a, n in sorted(new_counts.items()) if n > 1]
    return lost, duplicated


# -- one kiosk process ----------------------------------------------------------------------------


def write_device_config(directory: Path, pki_dir: Path, port: int, device_id: str) -> Path:
    """Production defaults (the reconnect backoff too: 0.5 s up to 30 s) except a short
    keepalive, cooldown and stream (so a device whose "end" was lost is idle again soon)."""
    dev = device_paths(pki_dir, device_id)
    path = directory / f"{device_id}.toml"
    path.write_text(f"""
[device]
id = "{device_id}"
site_id = "soak-{device_id}"
site_name = "Soak site {device_id}"
lat = 34.0
lon = 71.5
state_dir = "{directory / ("state-" + device_id)}"

[broker]
host = "localhost"
port = {port}
ca = "{ca_paths(pki_dir).cert}"
cert = "{dev.cert}"
key = "{dev.key}"
keepalive_s = 5

[hal]
backend = "fake"

[alert]
cooldown_s = 0.2
stream_s = 15.0
""")
    return path


class DeviceProcess:
    """One `pinkbutton-sim run --json --stdin-presses` process and what it told us.

    Note on threads: the reader thread parses stdout and updates the fields under `lock`
    (shared with the soak); the soak thread presses, kills and restarts.
    """

    def __init__(self, device_id: str, config: Path, log_dir: Path, lock: threading.Lock) -> None:
        self.device_id = device_id
        self.config = config
        self.log_path = log_dir / f"{device_id}.log"
        self.lock = lock
        self.proc: subprocess.Popen[bytes] | None = None
        self.mode = "down"
        self.awaiting_persist = False  # pressed, alert not yet durable: not a fair kill point
        self.presses = 0
        self.persisted: list[str] = []
        self.replays = 0
        self.starts = 0
        self.restart_at: float | None = None
        self.idle_since = 0.0
        self.delivered_at: list[float] = []  # when each alert PUBACK was reported

    def start(self) -> None:
        cmd = [
            sys.executable,
            "-m",
            "pinkbutton.simulator.cli",
            "run",
            "--config",
            str(self.config),
            "--json",
            "--no-media",
            "--stdin-presses",
            "--log-level",
            "warning",
        ]
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                cwd=Path(__file__).resolve().parent.parent,
            )
        with self.lock:
            self.proc, self.mode, self.starts = proc, "starting", self.starts + 1
            self.restart_at = None
        threading.Thread(
            target=self._read, args=(proc,), name=f"read-{self.device_id}", daemon=True
        ).start()

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None  # stdout=PIPE
        for raw in proc.stdout:  # reader thread
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            kind = ev.get("event")
            with self.lock:
                if kind == "delivered":
                    self.delivered_at.append(time.monotonic())
                if proc is not self.proc:
                    # Lines a killed process wrote before dying are still facts (they were
                    # printed after the fsync); only its mode no longer matters.
                    if kind == "persisted":
                        self._persisted(ev["alert_id"])
                    continue
                if kind == "persisted":
                    self._persisted(ev["alert_id"])
                elif kind == "mode":
                    self.mode = ev.get("to", self.mode)
                    if self.mode == "idle":
                        self.idle_since = time.monotonic()
                elif kind == "replay":
                    self.replays += 1

    def _persisted(self, alert_id: str) -> None:
        self.persisted.append(alert_id)
        self.awaiting_persist = False

    @property
    def pressable(self) -> bool:
        return self.proc is not None and self.mode == "idle" and not self.awaiting_persist

    def press(self) -> bool:
        """Soak thread, with `lock` held."""
        if self.proc is None or self.proc.stdin is None:
            return False
        try:
            self.proc.stdin.write(b"\n")
            self.proc.stdin.flush()
        except (OSError, ValueError, AttributeError):
            return False
        self.presses += 1
        self.awaiting_persist = True
        self.mode = "pressed"  # until the process tells us its new mode
        return True

    def kill(self) -> None:
        """SIGKILL, as in a power cut (soak thread, `lock` not held: wait() may block)."""
        with self.lock:
            proc, self.proc, self.mode = self.proc, None, "down"
        if proc is not None:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)

    def close_input(self) -> None:
        """The sim stops cleanly at the end of its input (soak thread)."""
        with self.lock:
            proc = self.proc
        if proc is not None:
            assert proc.stdin is not None  # stdin=PIPE
            try:
                proc.stdin.close()
            except OSError:
                pass

    def stop(self) -> None:
        """Close its stdin, wait for the clean stop, kill if it hangs."""
        self.close_input()
        with self.lock:
            proc = self.proc
        if proc is None:
            return
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT_S)
        with self.lock:
            self.proc, self.mode = None, "down"


# -- the soak -------------------------------------------------------------------------------------


class Soak:
    def __init__(self, opts: SoakOptions, work_dir: Path, progress: Progress) -> None:
        self.opts = opts
        self.work = work_dir
        self.progress = progress
        self.rng = random.Random(opts.seed)
        self.lock = threading.Lock()
        self.devices: list[DeviceProcess] = []
        self.broker: Mosquitto | None = None
        self.room: ControlRoomReceiver | None = None
        self.room_thread: threading.Thread | None = None
        self.db_path = work_dir / "controlroom.db"
        # Room listener data (room run thread writes, soak thread reads, under lock).
        self.new_counts: Counter = Counter()
        self.latencies: list[float] = []
        self.alert_times: list[float] = []  # monotonic stamps of every alert the room saw
        self.to_end: list[tuple[float, str]] = []
        self.broker_kills = self.stalls = self.device_kills = 0
        self.recoveries: list[float | None] = []
        self.kiosk_recoveries: list[float | None] = []
        self._awaiting_recovery: float | None = None  # when the broker came back
        self.notes: list[str] = []

    # -- setup / teardown ---------------------------------------------------------------------

    def setup(self) -> None:
        ids = [f"pb-soak-{i:04d}" for i in range(1, self.opts.devices + 1)]
        pki = self.work / "pki"
        try:
            init_dev_pki(pki, ids)
        except (PkiError, OSError) as e:
            raise SoakError(f"cannot create the dev PKI: {e}") from None
        self.broker = Mosquitto(self.work / "broker", pki, persistence=True)
        try:
            self.broker.start()
        except BrokerError as e:
            raise SoakError(str(e).splitlines()[0]) from None
        cr = controlroom_paths(pki)
        self.room = ControlRoomReceiver(
            host="localhost",
            port=self.broker.port,
            tls=TlsFiles(ca_paths(pki).cert, cr.cert, cr.key),
            db_path=self.db_path,
            client_id=f"soak-room-{self.rng.getrandbits(32):08x}",
            group=f"soak{self.rng.getrandbits(32):08x}",
            auto_ack=True,
            out=lambda _line: None,
            listeners=[self._on_room],  # the room's own default backoff (0.2 s up to 5 s)
        )
        self.room_thread = threading.Thread(target=self.room.run, name="controlroom", daemon=True)
        self.room_thread.start()
        logs = self.work / "logs"
        logs.mkdir(exist_ok=True)
        for device_id in ids:
            cfg = write_device_config(self.work, pki, self.broker.port, device_id)
            self.devices.append(DeviceProcess(device_id, cfg, logs, self.lock))
        for d in self.devices:
            d.start()
        if not self._wait(lambda: all(d.mode == "idle" for d in self.devices), 60.0):
            stuck = [d.device_id for d in self.devices if d.mode != "idle"]
            raise SoakError(
                f"devices not idle 60 s after start: {', '.join(stuck)} (logs in {logs})"
            )

    def teardown(self) -> None:
        for d in self.devices:  # all at once: each says goodbye to the broker (~1 s)
            d.close_input()
        for d in self.devices:
            d.stop()
        if self.room is not None:
            self.room.stop()
            assert self.room_thread is not None  # made with the room
            self.room_thread.join(STOP_TIMEOUT_S)
        if self.broker is not None:
            self.broker.resume()
            self.broker.stop()

    def _on_room(self, kind: str, data: dict) -> None:
        if kind != "alert":  # room run thread
            return
        now = time.monotonic()
        with self.lock:
            self.alert_times.append(now)
            if data.get("new"):
                self.new_counts[data["alert_id"]] += 1
                if data.get("latency_ms") is not None:
                    self.latencies.append(float(data["latency_ms"]))
                self.to_end.append(
                    (now + self.rng.uniform(*self.opts.end_delay_s), data["alert_id"])
                )

    def _wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if pred():
                    return True
            time.sleep(0.05)
        with self.lock:
            return pred()

    # -- main loop ----------------------------------------------------------------------------

    def run(self) -> SoakResult:
        assert self.broker is not None  # setup() made it
        o = self.opts
        t0 = time.monotonic()
        hard_end = t0 + o.max_minutes * 60
        press_end = hard_end - min(o.drain_s, o.max_minutes * 60 / 3)
        nxt = {
            "press": t0,
            "broker_kill": self._after(t0, o.broker_kill_every_s),
            "stall": self._after(t0, o.stall_every_s),
            "device_kill": self._after(t0, o.device_kill_every_s),
        }
        broker_back_at: float | None = None  # broker is down until then
        stall_until: float | None = None
        made = 0
        while made < o.presses and time.monotonic() < press_end:
            now = time.monotonic()
            self._send_ends(now)
            self._restart_devices(now)
            self._check_recovery(now)
            if broker_back_at is not None and now >= broker_back_at:
                self._broker_back()
                broker_back_at = None
            if stall_until is not None and now >= stall_until:
                self.broker.resume()
                stall_until = None
            broker_busy = (
                broker_back_at is not None
                or stall_until is not None
                or self._awaiting_recovery is not None
            )
            if now >= nxt["broker_kill"] and not broker_busy:
                self.broker.kill()
                self.broker_kills += 1
                broker_back_at = now + self.rng.uniform(*o.broker_down_s)
                # A press while the broker is down makes sure an alert waits for its return.
                if self._press_one():
                    made += 1
                    if made % PROGRESS_EVERY == 0:
                        self._report(made, t0)
                nxt["broker_kill"] = self._after(now, o.broker_kill_every_s)
            elif now >= nxt["stall"] and not broker_busy:
                self.broker.pause()
                self.stalls += 1
                stall_until = now + self.rng.uniform(*o.stall_s)
                nxt["stall"] = self._after(now, o.stall_every_s)
            if now >= nxt["device_kill"]:
                self._kill_device(now)
                nxt["device_kill"] = self._after(now, o.device_kill_every_s)
            if now >= nxt["press"] and made < o.presses:
                if self._press_one():
                    made += 1
                    if made % PROGRESS_EVERY == 0:
                        self._report(made, t0)
                    nxt["press"] = now + self.rng.uniform(*o.press_gap_s)
            time.sleep(TICK_S)
        if made < o.presses:
            self.notes.append(f"time ran out: {made} of {o.presses} presses made")
        # Faults off; let everything that was pressed arrive.
        if stall_until is not None:
            self.broker.resume()
        if broker_back_at is not None:
            self._broker_back()
        self._drain(hard_end)
        lost, duplicated = self._reconcile()
        return SoakResult(
            devices=o.devices,
            presses=made,
            incidents=self._stored_count(),
            lost=lost,
            duplicated=duplicated,
            latencies_ms=list(self.latencies),
            recoveries_s=list(self.recoveries),
            kiosk_recoveries_s=list(self.kiosk_recoveries),
            broker_kills=self.broker_kills,
            stalls=self.stalls,
            device_kills=self.device_kills,
            elapsed_s=time.monotonic() - t0,
            notes=self.notes,
        )

    def _after(self, now: float, every: tuple[float, float] | None) -> float:
        return float("inf") if every is None else now + self.rng.uniform(*every)

    def _press_one(self) -> int:
        with self.lock:
            idle = [d for d in self.devices if d.pressable]
            if not idle:
                return 0
            return int(self.rng.choice(idle).press())

    def _send_ends(self, now: float) -> None:
        with self.lock:
            due = [a for at, a in self.to_end if at <= now]
            self.to_end = [(at, a) for at, a in self.to_end if at > now]
        assert self.room is not None  # setup() made it
        for alert_id in due:
            self.room.command(f"end {alert_id}")

    def _kill_device(self, now: float) -> None:
        with self.lock:
            # Never between the press and its fsync: a press during a power cut is the one
            # thing the device cannot promise (docs/reliability.md).
            fair = [d for d in self.devices if d.proc is not None and not d.awaiting_persist]
        if not fair:
            return
        d = self.rng.choice(fair)
        d.kill()
        self.device_kills += 1
        with self.lock:
            d.restart_at = now + self.rng.uniform(*self.opts.device_down_s)

    def _restart_devices(self, now: float) -> None:
        with self.lock:
            due = [d for d in self.devices if d.restart_at is not None and d.restart_at <= now]
        for d in due:
            d.start()

    def _broker_back(self) -> None:
        assert self.broker is not None  # setup() made it
        try:
            self.broker.start()
        except BrokerError as e:
            self.notes.append(f"broker restart failed once: {str(e).splitlines()[0]}")
            time.sleep(0.5)
            self.broker.start()  # a second failure ends the soak with its error
        self._awaiting_recovery = time.monotonic()

    def _check_recovery(self, now: float) -> None:
        back = self._awaiting_recovery
        if back is None:
            return
        with self.lock:
            first = next((t for t in self.alert_times if t >= back), None)
            at_broker = min((t for d in self.devices for t in d.delivered_at if t >= back),
                            default=None)
        if first is not None and at_broker is not None:
            self.recoveries.append(first - back)
            self.kiosk_recoveries.append(at_broker - back)
            self._awaiting_recovery = None
        elif now - back > RECOVERY_WAIT_S:
            self.recoveries.append(None if first is None else first - back)
            self.kiosk_recoveries.append(None if at_broker is None else at_broker - back)
            self._awaiting_recovery = None

    def _report(self, made: int, t0: float) -> None:
        with self.lock:
            received = sum(self.new_counts.values())
        self.progress(
            f"soak: {made}/{self.opts.presses} presses, {received} incidents received, "
            f"{self.broker_kills} broker kills, {self.stalls} stalls, {self.device_kills} "
            f"device kills, {time.monotonic() - t0:.0f} s"
        )

    def _drain(self, hard_end: float) -> None:
        """Restart dead devices, then wait (bounded) until every persisted alert is stored,
        every incident ended and every device idle."""
        for d in self.devices:
            if d.proc is None:
                d.start()

        def settled() -> bool:
            ids = {a for d in self.devices for a in d.persisted}
            return (
                ids <= set(self.new_counts)
                and not self.to_end
                and all(d.mode == "idle" for d in self.devices)
            )

        while time.monotonic() < hard_end:
            now = time.monotonic()
            self._send_ends(now)
            self._check_recovery(now)
            with self.lock:
                if settled():
                    break
            time.sleep(0.05)
        else:
            with self.lock:
                busy = [f"{d.device_id}={d.mode}" for d in self.devices if d.mode != "idle"]
            self.notes.append("drain deadline reached; not idle: " + (", ".join(busy) or "none"))
        if self._awaiting_recovery is not None:
            self.recoveries.append(None)
            self.kiosk_recoveries.append(None)
            self._awaiting_recovery = None
        replays = sum(d.replays for d in self.devices)
        if replays:
            self.notes.append(f"{replays} device restart(s) replayed unconfirmed alerts")

    def _stored(self) -> dict[str, str]:
        # Own read-only connection: the room's store belongs to its run thread.
        db = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=5.0)
        try:
            return dict(db.execute("SELECT alert_id, device_id FROM incidents"))
        finally:
            db.close()

    def _stored_count(self) -> int:
        return len(self._stored())

    def _reconcile(self) -> tuple[list[str], list[str]]:
        with self.lock:
            presses = {d.device_id: d.presses for d in self.devices}
            persisted = {d.device_id: list(d.persisted) for d in self.devices}
            new_counts = Counter(self.new_counts)
        return reconcile(presses, persisted, self._stored(), new_counts)


def run_soak(opts: SoakOptions, progress: Progress = lambda _m: None) -> SoakResult:
    """Set up, soak, tear down. Raises SoakError when the rig cannot be built."""
    own_dir = opts.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="pinkbutton-soak-")) if opts.work_dir is None else Path(opts.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    soak = Soak(opts, work, progress)
    # The room's reconnect errors are expected here (we kill its broker): keep them in a file.
    room_log = logging.getLogger("pinkbutton")
    handler = logging.FileHandler(work / "controlroom.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    room_log.addHandler(handler)
    room_log.propagate = False
    ok = False
    try:
        soak.setup()
        result = soak.run()
        ok = result.ok
        if not ok:
            result.notes.append(f"work dir kept for investigation: {work}")
        return result
    finally:
        soak.teardown()
        room_log.removeHandler(handler)
        room_log.propagate = True
        handler.close()
        if own_dir and ok:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


# -- CLI ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(
        prog="python -m harness.soak",
        description="Soak: presses across simulated kiosks with broker kills, "
        "stalls and device kills; 0 lost, 0 duplicated or exit 1",
    )
    ap.add_argument("--devices", type=positive_int, default=20)
    ap.add_argument("--presses", type=positive_int, default=1000)
    ap.add_argument("--max-minutes", type=positive_float, default=15.0)
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    ap.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="work in DIR and keep it (PKI, broker log, device logs, room db)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.keep is not None and args.keep.exists() and any(args.keep.iterdir()):
        # A previous run's room database would be reconciled as this run's incidents.
        parser.error(f"--keep {args.keep}: directory is not empty (give a new or empty one)")
    logging.basicConfig(
        level=logging.ERROR,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    opts = SoakOptions(
        devices=args.devices,
        presses=args.presses,
        max_minutes=args.max_minutes,
        seed=seed,
        work_dir=args.keep,
    )
    print(
        f"soak: seed {seed}, {args.devices} devices, {args.presses} presses, "
        f"at most {args.max_minutes:g} min",
        file=sys.stderr,
        flush=True,
    )
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        result = run_soak(opts, lambda m: print(m, file=sys.stderr, flush=True))
    except (SoakError, BrokerError) as e:
        print(f"soak: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return 2
    print(format_table(result), flush=True)
    if not result.ok:
        for a in result.lost:
            print(f"lost: {a}", file=sys.stderr)
        for a in result.duplicated:
            print(f"duplicated: {a}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
