"""`make bench`: press -> alert latency, against a floor measured in the same run.

Everything runs on loopback in one temp dir: a dev PKI, a real mosquitto (mTLS + ACL), the
real Kiosk runtime on the fake HAL with a real clock, and the reference ControlRoomReceiver
with auto-ack in a process of its own (harness/bench_room.py). The floor is what the broker and TLS cost on their own: the mosquitto CLI
clients doing the same QoS 1 hop (device identity -> broker -> control-room identity). Then
the same presses again while another device floods the room with signed alerts (its own
certificate, mosquitto_pub, FLOOD_RATE a second): the per-device limits at the room must
keep the well-behaved kiosk's alert fast.

A benchmark reports; it does not fail. Exit 0 whether the goal is met or missed, 1 only
when the setup itself fails (one line on stderr).
"""

from __future__ import annotations

import io
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from pinkbutton.firmware.app import Kiosk
from pinkbutton.firmware.cliargs import OneLineParser, positive_float, positive_int
from pinkbutton.firmware.config import ConfigError, load_config
from pinkbutton.firmware.machine import AlertDraft
from pinkbutton.firmware.outbox import Outbox, OutboxError
from pinkbutton.firmware.transport import TransportError
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.controlroom.store import IncidentStore, StoreError
from pinkbutton.tools.pki import PkiError, ca_paths, controlroom_paths, device_paths, init_dev_pki

from harness.bench_room import LIMITS as ROOM_LIMITS
from harness.broker import BrokerError, Mosquitto

DEVICE_ID = "pb-bench-0001"
DEFAULT_PRESSES = 1000
QUICK_PRESSES = 100
DEADLINE_S = 240.0
FLOOR_SHARE = 0.25  # of the overall deadline; the presses get the rest
OUTBOX_PUTS = 200
WARMUP = 10  # first round trips pay for lazy imports, TLS session setup, page cache
STEP_TIMEOUT_S = 5.0
PROGRESS_EVERY = 100
GOAL_RATIO = 3.0
GOAL_ABS_MS = 10.0
PRESS_SHARE = 0.75  # floor and normal presses end by this share; the flooded presses get the rest
FLOOD_DEVICE = "pb-bench-flood"
FLOOD_PRESSES = 100  # at most; never more than --presses
FLOOD_RATE = 1000  # alerts per second from the flooding device
FLOOD_POOL = 5000  # distinct signed alerts, sent round and round (later rounds: duplicates)
FLOOD_GOAL_MS = 50.0  # press->alert p99 while another device floods (issue 9: 1.2 s)

Progress = Callable[[str], None]


class BenchError(Exception):
    """The bench could not set itself up; the message is one line."""


# -- statistics ---------------------------------------------------------------------------------


def percentile(samples: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always a value that was actually measured."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil without float surprises
    return ordered[int(rank) - 1]


@dataclass
class Series:
    label: str
    samples_ms: list[float] = field(default_factory=list)

    def p(self, q: float) -> float:
        return percentile(self.samples_ms, q)

    @property
    def n(self) -> int:
        return len(self.samples_ms)


@dataclass
class BenchResult:
    presses: int  # requested
    floor: Series
    press_alert: Series
    press_ack: Series
    press_persisted: Series
    outbox: Series
    notes: list[str] = field(default_factory=list)
    press_alert_flood: Series | None = None  # the same presses, another device flooding
    flood: str | None = None  # what the flooding device sent and what the room made of it

    def rows(self) -> list[Series]:
        flood = [] if self.press_alert_flood is None else [self.press_alert_flood]
        return [self.floor, self.press_alert, *flood, self.press_ack, self.press_persisted,
                self.outbox]


def goal_verdict(press_p99: float, floor_p99: float) -> tuple[float, bool]:
    """(press p99 / floor p99, goal met). NaN (nothing measured) never meets it."""
    ratio = press_p99 / floor_p99 if floor_p99 > 0 else float("nan")
    met = ratio <= GOAL_RATIO and press_p99 <= GOAL_ABS_MS
    return ratio, met


def format_table(result: BenchResult) -> str:
    ratio, met = goal_verdict(result.press_alert.p(99), result.floor.p(99))
    width = max(len(s.label) for s in result.rows()) + 2
    lines = [
        f"Pink Button bench — alert path (loopback, mTLS, MQTT v5, QoS 1), N={result.presses}",
        f"{'metric':<{width}}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}{'max ms':>9}{'n':>7}",
    ]
    for s in result.rows():
        cells = "".join(f"{v:>9.3f}" for v in (s.p(50), s.p(95), s.p(99), s.p(100)))
        lines.append(f"{s.label:<{width}}{cells}{s.n:>7}")
    lines.append(
        f"goal: press->alert p99 <= {GOAL_RATIO:g}x floor p99 ({ratio:.2f}x) and "
        f"<= {GOAL_ABS_MS:g} ms ({result.press_alert.p(99):.3f} ms): {'PASS' if met else 'MISS'}"
    )
    if result.press_alert_flood is not None:
        p99 = result.press_alert_flood.p(99)
        lines.append(f"goal: press->alert p99 while another device floods <= {FLOOD_GOAL_MS:g} ms "
                     f"({p99:.3f} ms): {'PASS' if p99 <= FLOOD_GOAL_MS else 'MISS'}")
    if result.flood is not None:
        lines.append(f"flood: {result.flood}")
    lines += [f"note: {n}" for n in result.notes]
    return "\n".join(lines)


# -- setup --------------------------------------------------------------------------------------


def write_config(directory: Path, pki_dir: Path, port: int) -> Path:
    """Kiosk config: ack timeout far away (no escalation mid-run), cooldown nearly zero."""
    dev = device_paths(pki_dir, DEVICE_ID)
    path = directory / f"{DEVICE_ID}.toml"
    path.write_text(f"""
[device]
id = "{DEVICE_ID}"
site_id = "bench-site"
site_name = "Bench Bazaar"
lat = 34.0
lon = 71.5
state_dir = "{directory / "kiosk-state"}"

[broker]
host = "localhost"
port = {port}
ca = "{ca_paths(pki_dir).cert}"
cert = "{dev.cert}"
key = "{dev.key}"
backoff_min_s = 0.1
backoff_max_s = 0.5

[hal]
backend = "fake"

[alert]
ack_timeout_s = 600.0
cooldown_s = 0.01
""")
    return path


class Timings:
    """perf_counter() stamps keyed by alert_id, written from the kiosk's and the receiver's
    threads (their listener callbacks), read by the bench thread."""

    def __init__(self) -> None:
        self._cv = threading.Condition()
        self.persisted: dict[str, float] = {}  # kiosk state thread
        self.last_persisted: str | None = None
        self.alert: dict[str, float] = {}  # receiver run thread
        self.ack: dict[str, float] = {}  # kiosk state thread
        self.idle = 0  # count of kiosk returns to idle
        self.room_saw_device = False

    def on_kiosk(self, kind: str, data: dict) -> None:
        now = time.perf_counter()  # first thing: the listener's own work is not latency
        with self._cv:
            if kind == "persisted":
                self.persisted[data["alert_id"]] = now
                self.last_persisted = data["alert_id"]
            elif kind == "cmd" and data.get("cmd") == "ack":
                self.ack.setdefault(data["alert_id"], now)
            elif kind == "mode" and data.get("to") == "idle":
                self.idle += 1
            else:
                return
            self._cv.notify_all()

    def on_room(self, kind: str, data: dict, at: float | None = None) -> None:
        now = time.perf_counter() if at is None else at  # `at`: stamped in the room's process
        with self._cv:
            if kind == "alert" and data.get("new"):
                self.alert[data["alert_id"]] = now
            elif kind == "status" and data.get("device_id") == DEVICE_ID:
                self.room_saw_device = True
            else:
                return
            self._cv.notify_all()

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        with self._cv:
            return self._cv.wait_for(pred, timeout)


class RoomProcess:
    """The control room as its own process (harness.bench_room), as in a deployment: in this
    process it would share the kiosk's GIL and each would delay the other's threads. Its
    stdout lines carry perf_counter stamps taken in the room (one CLOCK_MONOTONIC per
    machine); `command()` sends an operator command."""

    def __init__(self, work_dir: Path, pki: Path, port: int, timings: Timings) -> None:
        self._log = open(work_dir / "room.log", "wb")  # noqa: SIM115 - closed in stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "harness.bench_room", "--port", str(port), "--pki", str(pki),
             "--db", str(work_dir / "room.db")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )  # fmt: skip
        self._timings = timings
        self._reader = threading.Thread(target=self._read, name="bench-room-out", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            kind, key, at = line.split()
            field = "alert_id" if kind == "alert" else "device_id"
            self._timings.on_room(kind, {field: key, "new": True}, at=float(at))

    def command(self, line: str) -> None:
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass  # the room has gone: the bench notices the missing answer and says so

    def stop(self) -> None:
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.wait(10)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self._proc.kill()
            self._proc.wait(5)
        self._reader.join(5)
        self._log.close()


class Rig:
    """PKI, broker, kiosk and control room, all in one temp dir; a context manager."""

    def __init__(self, work_dir: Path) -> None:
        self.dir = work_dir
        self.pki = work_dir / "pki"
        self.timings = Timings()
        self.broker: Mosquitto | None = None
        self.kiosk: Kiosk | None = None
        self.room: ControlRoomReceiver | RoomProcess | None = None
        self._threads: list[threading.Thread] = []

    def start_broker(self) -> Mosquitto:
        try:
            init_dev_pki(self.pki, [DEVICE_ID, FLOOD_DEVICE])
            self.broker = Mosquitto(self.dir / "broker", self.pki, persistence=False)
            self.broker.start()
        except (PkiError, BrokerError, OSError) as e:
            raise BenchError(f"cannot start the broker: {str(e).splitlines()[0]}") from None
        return self.broker

    def start_clients(self) -> None:
        """The kiosk in this process, the room in its own; returns once both are ready."""
        assert self.broker is not None
        try:
            config = load_config(write_config(self.dir, self.pki, self.broker.port))
            clock = Clock()
            backend = FakeBackend()
            self.kiosk = Kiosk(
                config,
                backend.button(clock, 17, 0.05),
                backend.indicator(clock, 27),
                clock=clock,
                listeners=[self.timings.on_kiosk],
            )
            self.room = RoomProcess(self.dir, self.pki, self.broker.port, self.timings)
        except (ConfigError, TransportError, OSError) as e:
            raise BenchError(f"cannot set up kiosk/control room: {e}") from None
        thread = threading.Thread(target=self.kiosk.run, name="bench-kiosk", daemon=True)
        thread.start()
        self._threads.append(thread)
        # The room has seen the kiosk's retained status: both are connected and subscribed.
        t = self.timings
        if not t.wait(lambda: t.room_saw_device and t.idle >= 1, 15.0):
            raise BenchError(
                "kiosk and control room did not both come up within 15 s "
                f"(room saw device: {t.room_saw_device}, kiosk idle: {t.idle >= 1})"
            )

    def close(self) -> None:
        if self.kiosk is not None:
            self.kiosk.stop()
        if self.room is not None:
            self.room.stop()
        for thread in self._threads:
            thread.join(10)
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- measurements -------------------------------------------------------------------------------


def measure_presses(
    rig: Rig, n: int, deadline: float, progress: Progress
) -> tuple[Series, Series, Series, list[str]]:
    """One incident per press: press, alert at room, ack at kiosk, end, back to idle."""
    alert = Series("press -> alert at control room")
    ack = Series("press -> ack back at kiosk")
    persisted = Series("press -> alert durable at kiosk")
    notes: list[str] = []
    assert rig.kiosk is not None and rig.room is not None
    t = rig.timings
    for i in range(-WARMUP, n):
        if time.monotonic() > deadline:
            notes.append(f"deadline reached: {alert.n} of {n} presses measured")
            break
        before = t.last_persisted
        idle_before = t.idle
        t0 = time.perf_counter()
        rig.kiosk.press()
        if not t.wait(lambda b=before: t.last_persisted != b, STEP_TIMEOUT_S):
            notes.append(f"stopped after {alert.n} presses: press {i} was never persisted")
            break
        alert_id = t.last_persisted
        assert alert_id is not None  # the wait above saw it change from `before`
        if not t.wait(lambda a=alert_id: a in t.alert and a in t.ack, STEP_TIMEOUT_S):
            what = "alert at room" if alert_id not in t.alert else "ack at kiosk"
            notes.append(f"stopped after {alert.n} presses: no {what} within {STEP_TIMEOUT_S} s")
            break
        # `end` must run on the receiver's thread: command() queues it there.
        rig.room.command(f"end {alert_id}")
        if not t.wait(lambda n=idle_before: t.idle > n, STEP_TIMEOUT_S):
            notes.append(f"stopped after {alert.n} presses: kiosk did not return to idle")
            break
        if i < 0:
            continue
        persisted.samples_ms.append((t.persisted[alert_id] - t0) * 1000)
        alert.samples_ms.append((t.alert[alert_id] - t0) * 1000)
        ack.samples_ms.append((t.ack[alert_id] - t0) * 1000)
        if (i + 1) % PROGRESS_EVERY == 0:
            progress(f"presses: {i + 1}/{n}, press->alert p99 so far {alert.p(99):.3f} ms")
    return alert, ack, persisted, notes


class _LineReader:
    """Lines from a pipe with a timeout, without a helper thread (which would add its own hop)."""

    def __init__(self, stream) -> None:
        self._fd = stream.fileno()
        self._buf = b""

    def readline(self, timeout: float) -> bytes | None:
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self._fd], [], [], left)[0]:
                return None
            chunk = os.read(self._fd, 65536)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line


def _cli_tls(pki: Path, identity) -> list[str]:
    return [
        "--cafile",
        str(ca_paths(pki).cert),
        "--cert",
        str(identity.cert),
        "--key",
        str(identity.key),
    ]


def measure_floor(
    broker: Mosquitto, pki: Path, n: int, deadline: float, progress: Progress
) -> tuple[Series, list[str]]:
    """mosquitto_pub -l (device identity) -> broker -> mosquitto_sub (control room identity)."""
    series = Series("floor: mosquitto_pub -> mosquitto_sub")
    notes: list[str] = []
    pub_exe, sub_exe = shutil.which("mosquitto_pub"), shutil.which("mosquitto_sub")
    if not pub_exe or not sub_exe:
        raise BenchError("mosquitto_pub/mosquitto_sub not found: apt-get install mosquitto-clients")
    topic = f"pinkbutton/v1/dev/{DEVICE_ID}/events"
    common = ["-h", "localhost", "-p", str(broker.port), "-V", "mqttv5", "-q", "1", "-t", topic]
    sub = subprocess.Popen(
        [sub_exe, *common, *_cli_tls(pki, controlroom_paths(pki))],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    pub = subprocess.Popen(
        [pub_exe, *common, "-l", *_cli_tls(pki, device_paths(pki, DEVICE_ID))],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert pub.stdin is not None and sub.stdout is not None
    # Pipes with the default bufsize are BufferedReaders (typeshed says IO[bytes]): read1() is there.
    assert isinstance(pub.stderr, io.BufferedReader) and isinstance(sub.stderr, io.BufferedReader)
    reader = _LineReader(sub.stdout)
    try:
        # mosquitto_sub says nothing when its subscription is active: knock until heard.
        for k in range(100):
            pub.stdin.write(f"ready {k}\n".encode())
            pub.stdin.flush()
            if reader.readline(0.1) is not None:
                break
        else:
            err = (sub.stderr.read1(500) if sub.poll() is not None else b"").decode().strip()
            raise BenchError(f"mosquitto_sub got nothing from mosquitto_pub in 10 s {err}".strip())
        while reader.readline(0.2) is not None:  # drain the other knocks
            pass
        for i in range(-WARMUP, n):
            if time.monotonic() > deadline:
                notes.append(f"floor deadline reached: {series.n} of {n} round trips measured")
                break
            want = f"floor {i}".encode()
            t0 = time.perf_counter()
            pub.stdin.write(want + b"\n")
            pub.stdin.flush()
            got = reader.readline(STEP_TIMEOUT_S)
            t1 = time.perf_counter()
            if got != want:
                notes.append(f"floor stopped after {series.n}: expected {want!r}, got {got!r}")
                break
            if i >= 0:
                series.samples_ms.append((t1 - t0) * 1000)
            if (i + 1) % PROGRESS_EVERY == 0 and i >= 0:
                progress(f"floor: {i + 1}/{n}, p99 so far {series.p(99):.3f} ms")
    except BrokenPipeError:
        err = pub.stderr.read1(500).decode().strip() if pub.stderr else ""
        raise BenchError(f"mosquitto_pub exited: {err or 'no message'}") from None
    finally:
        for proc in (pub, sub):
            if proc.poll() is None:
                proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stream in (pub.stdin, sub.stdout, pub.stderr, sub.stderr):
            if stream is not None:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
    return series, notes


class Flooder:
    """Another device flooding the room: `rate` signed alerts a second (a pool of distinct
    ones, sent round and round) with its own certificate, through mosquitto_pub -l (a process
    of its own), paced by a thread, until stop()."""

    def __init__(self, broker: Mosquitto, pki: Path, rate: int = FLOOD_RATE,
                 pool: int = FLOOD_POOL) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from pinkbutton.firmware import protocol as p
        from pinkbutton.hal.clock import iso8601

        exe = shutil.which("mosquitto_pub")
        if not exe:
            raise BenchError("mosquitto_pub not found: apt-get install mosquitto-clients")
        dev = device_paths(pki, FLOOD_DEVICE)
        key = serialization.load_pem_private_key(dev.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)  # the dev PKI issues EC keys
        now = iso8601(time.time())
        site = p.Site("bench-flood", "Flooding kiosk", 34.0, 71.5)
        self._lines = [p.encode_alert(p.Alert(
            device_id=FLOOD_DEVICE, alert_id=str(uuid.uuid4()), seq=i + 1, kind="emergency",
            pressed_at=now, pressed_mono=1.0, age_ms=1, announce=1, escalated=False, presses=1,
            site=site, firmware="bench", sent_at=now), key) + b"\n" for i in range(pool)]
        self.distinct = pool
        self.rate = rate
        self.sent = 0
        self.elapsed_s = 0.0
        self._stop = threading.Event()
        self._proc = subprocess.Popen(
            [exe, "-h", "localhost", "-p", str(broker.port), "-V", "mqttv5", "-q", "1",
             "-t", f"pinkbutton/v1/dev/{FLOOD_DEVICE}/alert", "-l", *_cli_tls(pki, dev)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._thread = threading.Thread(target=self._pace, name="bench-flood", daemon=True)
        self._thread.start()

    def _pace(self) -> None:
        assert self._proc.stdin is not None
        tick, t0 = 0.02, time.monotonic()
        while not self._stop.is_set():
            due = int((time.monotonic() - t0) * self.rate) - self.sent
            if due > 0:
                chunk = [self._lines[(self.sent + k) % len(self._lines)] for k in range(due)]
                try:
                    self._proc.stdin.write(b"".join(chunk))
                    self._proc.stdin.flush()
                except (BrokenPipeError, ValueError):
                    break
                self.sent += due
            self._stop.wait(tick)
        self.elapsed_s = time.monotonic() - t0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        try:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.wait(10)
        except (BrokenPipeError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait(5)


def measure_presses_flooded(
    rig: Rig, n: int, deadline: float, progress: Progress
) -> tuple[Series, list[str], str]:
    """The presses of measure_presses while another device floods the room; also says what
    the flooding device sent and what the room had made of it by the last press."""
    assert rig.broker is not None
    flooder = Flooder(rig.broker, rig.pki)
    try:
        time.sleep(0.5)  # the flood is on before the first press
        alert, _ack, _persisted, notes = measure_presses(rig, n, deadline, progress)
    finally:
        flooder.stop()
    alert.label = "press -> alert at room, another device flooding"
    rate = flooder.sent / flooder.elapsed_s if flooder.elapsed_s else 0.0
    notes = [f"while flooding, {note}" for note in notes]
    try:
        store = IncidentStore(rig.dir / "room.db")
        try:
            mine = [i for i in store.all_incidents() if i.device_id == FLOOD_DEVICE]
            folded = sum(i.folded for i in mine)
        finally:
            store.close()
        stored = f"{len(mine)} incidents, {folded} alerts folded into them"
    except StoreError as e:
        stored = f"room store unreadable: {e}"
    flood = (f"{flooder.sent} signed alerts ({flooder.distinct} distinct) from {FLOOD_DEVICE} "
             f"in {flooder.elapsed_s:.1f} s ({rate:.0f}/s); room (limits {ROOM_LIMITS.rate_per_s:g}/s, "
             f"burst {ROOM_LIMITS.burst} per device): {stored}")
    return alert, notes, flood


def measure_outbox(directory: Path, n: int = OUTBOX_PUTS) -> Series:
    """Outbox.put on its own: one SQLite commit (WAL, synchronous=FULL: an fsync) per alert."""
    series = Series("outbox commit (SQLite WAL, FULL)")
    try:
        outbox = Outbox(directory / "outbox-bench.db")
    except OutboxError as e:
        raise BenchError(str(e)) from None
    try:
        for seq in range(1, n + 1):
            draft = AlertDraft(
                alert_id=f"00000000-0000-4000-8000-{seq:012d}",
                seq=seq,
                kind="test",
                pressed_wall=time.time(),
                pressed_mono=time.monotonic(),
                presses=1,
                announce=1,
                escalated=False,
                follows=None,
            )
            t0 = time.perf_counter()
            outbox.put(draft, time.time())
            series.samples_ms.append((time.perf_counter() - t0) * 1000)
    except OutboxError as e:
        raise BenchError(str(e)) from None
    finally:
        outbox.close()
    return series


def run_bench(
    presses: int = DEFAULT_PRESSES,
    *,
    deadline_s: float = DEADLINE_S,
    outbox_puts: int = OUTBOX_PUTS,
    progress: Progress = lambda line: None,
) -> BenchResult:
    start = time.monotonic()
    deadline = start + deadline_s
    with tempfile.TemporaryDirectory(prefix="pinkbutton-bench-") as tmp, Rig(Path(tmp)) as rig:
        progress("setting up PKI and mosquitto (mTLS + ACL)")
        broker = rig.start_broker()
        # The floor first, while nothing else is connected: the control room also subscribes
        # to .../events and would only add noise (and reject every floor line as malformed).
        progress(f"floor: {presses} round trips mosquitto_pub -> mosquitto_sub")
        floor, notes = measure_floor(
            broker, rig.pki, presses, start + deadline_s * FLOOR_SHARE, progress
        )
        progress("starting kiosk and control room")
        rig.start_clients()
        progress(f"presses: {presses}, one incident each")
        alert, ack, persisted, press_notes = measure_presses(
            rig, presses, start + deadline_s * PRESS_SHARE, progress)
        flood_presses = min(presses, FLOOD_PRESSES)
        progress(f"presses: {flood_presses} while {FLOOD_DEVICE} sends {FLOOD_RATE} alerts/s")
        flooded, flood_notes, flood = measure_presses_flooded(
            rig, flood_presses, deadline, progress)
        progress(f"outbox: {outbox_puts} commits")
        outbox = measure_outbox(Path(tmp), outbox_puts)
    return BenchResult(presses, floor, alert, ack, persisted, outbox,
                       notes + press_notes + flood_notes, flooded, flood)


# -- CLI ----------------------------------------------------------------------------------------


def run_and_print(name: str, run: Callable[[Progress], Any], table: Callable[[Any], str]) -> int:
    """What both benches do once their options are parsed: progress lines on stderr, the
    table on stdout, exit 0 whether goals are met or not, 1 (one line) if setup fails."""
    # Only real trouble on stderr; the kiosk's and room's info logs would drown the progress.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")

    def progress(line: str) -> None:
        print(f"{name}: {line}", file=sys.stderr, flush=True)

    try:
        result = run(progress)
    except BenchError as e:
        print(f"{name}: setup failed: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 1
    print(table(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m harness.bench", description=(__doc__ or "").partition("\n")[0])
    parser.add_argument(
        "--presses",
        type=positive_int,
        default=DEFAULT_PRESSES,
        help=f"presses and floor round trips (default {DEFAULT_PRESSES})",
    )
    parser.add_argument("--quick", action="store_true", help=f"same as --presses {QUICK_PRESSES}")
    parser.add_argument(
        "--deadline",
        type=positive_float,
        default=DEADLINE_S,
        help=f"overall time bound in seconds (default {DEADLINE_S:g})",
    )
    args = parser.parse_args(argv)
    presses = QUICK_PRESSES if args.quick else args.presses
    return run_and_print(
        "bench",
        lambda progress: run_bench(presses, deadline_s=args.deadline, progress=progress),
        format_table,
    )


if __name__ == "__main__":
    sys.exit(main())
