"""`pinkbutton-sim load`: N idle kiosks heartbeating, M streaming, K presses; a table and plots.

Every device is the firmware's own `Kiosk` on fake hardware (simulator/device.py, as
`pinkbutton-sim fleet` builds them, with the fleet's `DeviceView`), each with its own
certificate and mTLS connection, in worker processes of at most DEVICES_PER_WORKER devices
(paho's network loop and the kiosk's control socket use select(), which takes no file
descriptor above 1023; a kiosk holds about six), started one after the other. A streaming device's encoders are
replaced by pre-encoded replay (simulator/replay.py) so the sender, envelopes and MQTT are
the real ones and x264 is not what is measured.

What runs, in order (bounded: every wait has a deadline):
1. `OUT/fleet.toml` (the load's devices as a fleet file) and their certificates
   (`pinkbutton-pki fleet`, a command: the simulator never imports the tools);
2. the control room, `pinkbutton-controlroom run` as its own process (SQLite in OUT/room.db,
   evidence in OUT/evidence, auto-ack); its stdout and database are read as data. With
   `receivers` N > 1 (PostgreSQL only: SQLite is the single-receiver store), N such processes
   in one share group, each its own client id, one `--db` URL and one evidence folder; the
   room's CPU, RSS and ALERT lines are their sums;
3. an observer: an MQTT client with the control room's identity, subscribed (not shared) to
   every device's media, stamping each live video packet's arrival;
4. the idle devices' workers, then (RSS measured in between) the streaming devices' own;
5. for `duration` seconds: the streaming devices are pressed one by one over the first half
   (so "streams vs CPU" has a ramp), the K presses spread evenly over idle devices, CPU and
   RSS of this process and of the room sampled each second from /proc;
6. a drain (every alert a device wrote to its outbox stored by the room, <= DRAIN_S), stop.

Definitions (the table says them too):
- press -> received: the kiosk's debounced press -> the room's receipt: the room's own
  latency (received_at - pressed_at, from its database; pressed_at is the button's edge)
  minus the kiosk's debounce of that press (its `pressed` event's confirmed_after_ms). The
  room's latency itself, edge -> received, is a row of its own (it adds the 50 ms debounce);
- first frame: the button's edge (this machine's monotonic clock) -> the first live
  (not pre-roll) video packet of that alert at the observer;
- glass-to-glass (replay): capture time of the fake camera frame a replayed packet stands
  for -> its arrival at the observer (one machine, one monotonic clock); no encode, no decode;
- lost: alerts the devices wrote to their outboxes that the room never stored, plus presses
  that never became an alert; duplicated: ALERT lines the room printed (all its receivers)
  beyond one per stored alert.

The results are read from the room's database as data, SQLite or PostgreSQL (psycopg,
imported only for a URL), with the same queries; never through pinkbutton.tools (the
simulator does not import the tools).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

from pinkbutton.firmware import protocol
from pinkbutton.firmware.cliargs import redact_urls
from pinkbutton.firmware.config import ConfigError
from pinkbutton.firmware.media.encoder import OPUS_FRAME_MS
from pinkbutton.firmware.media.envelope import MediaError, decode_envelope
from pinkbutton.firmware.media.packet import Stream
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.simulator.device import SimDevice, build_device
from pinkbutton.simulator.fleet import DeviceView
from pinkbutton.simulator.fleetfile import Fleet, load_fleet
from pinkbutton.simulator.replay import clip, use_replay

# Bounds: refused with one line (exit 2) outside them.
MAX_IDLE = 3000
MAX_STREAMING = 50
MIN_DURATION_S, MAX_DURATION_S = 5, 900
MAX_PRESSES = 10_000
MAX_RECEIVERS = 4
DB_SCHEMES = ("postgresql://", "postgres://")
DB_CONNECT_S = 5
# Streaming devices' media: replayed, so the size is the broker's and sender's load, not x264's.
STREAM_MEDIA = {"width": 320, "height": 240, "fps": 10.0, "video_kbps": 300, "preroll_s": 2.0}
PKI_TIMEOUT_S = 600.0
ROOM_START_S = 30.0
DRAIN_S = 30.0
STOP_JOIN_S = 10.0
SAMPLE_S = 1.0
PREFIX = "pb-load-"
ROOM_CMD = (sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "run")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

Say = Callable[[str], None]


class LoadError(Exception):
    """The load run could not set itself up; the message is one line."""


class StoreError(LoadError):
    """The room's database could not be read; one line."""


@dataclass(frozen=True)
class LoadSpec:
    idle: int
    streaming: int
    duration_s: int
    presses: int
    out: Path
    pki: Path
    broker: tuple[str, int]
    heartbeat_s: float = 10.0
    state_dir: Path | None = None
    room_args: tuple[str, ...] = ()  # extra arguments for each `pinkbutton-controlroom run`
    receivers: int = 1  # `pinkbutton-controlroom run` processes in one share group
    db: str | None = None  # a postgresql:// URL; None: SQLite in OUT/room.db
    audio_frame_ms: int | None = None  # the streaming kiosks' Opus frame; None: the default

    @property
    def engine(self) -> str:
        """The room as the table names it: "1 receiver, SQLite", "2 receivers, PostgreSQL"."""
        n = self.receivers
        return f"{n} receiver{'s' if n > 1 else ''}, {'PostgreSQL' if self.db else 'SQLite'}"


def check_spec(spec: LoadSpec) -> None:
    """Raises ConfigError (one line) for values out of bounds."""
    if not 0 <= spec.idle <= MAX_IDLE:
        raise ConfigError(f"--idle: 0 to {MAX_IDLE} devices, got {spec.idle}")
    if not 0 <= spec.streaming <= MAX_STREAMING:
        raise ConfigError(f"--streaming: 0 to {MAX_STREAMING} devices, got {spec.streaming}")
    if spec.idle + spec.streaming == 0:
        raise ConfigError("--idle and --streaming are both 0: nothing to load")
    if not MIN_DURATION_S <= spec.duration_s <= MAX_DURATION_S:
        raise ConfigError(f"--duration: {MIN_DURATION_S} to {MAX_DURATION_S} s, "
                          f"got {spec.duration_s}")
    if not 0 <= spec.presses <= MAX_PRESSES:
        raise ConfigError(f"--presses: 0 to {MAX_PRESSES}, got {spec.presses}")
    if spec.presses and not spec.idle:
        raise ConfigError("--presses needs idle devices to press (--idle 1 or more)")
    if not 1 <= spec.receivers <= MAX_RECEIVERS:
        raise ConfigError(f"--receivers: 1 to {MAX_RECEIVERS}, got {spec.receivers}")
    if spec.db is not None and not spec.db.startswith(DB_SCHEMES):
        raise ConfigError(f"--db: a postgresql:// URL (SQLite is the default, OUT/room.db), "
                          f"got {redact_urls(spec.db)!r}")
    if spec.receivers > 1 and spec.db is None:
        raise ConfigError(f"--receivers {spec.receivers}: SQLite is the single-receiver store; "
                          "give --db postgresql://USER@HOST:PORT/DB")
    if spec.audio_frame_ms is not None and spec.audio_frame_ms not in OPUS_FRAME_MS:
        raise ConfigError(f"--audio-frame-ms: one of {', '.join(map(str, OPUS_FRAME_MS))}, "
                          f"got {spec.audio_frame_ms}")
    if not 1 <= spec.heartbeat_s <= 3600:
        raise ConfigError(f"--heartbeat: 1 to 3600 s, got {spec.heartbeat_s:g}")
    if spec.out.exists() and not spec.out.is_dir():
        raise ConfigError(f"--out {spec.out}: exists and is not a folder")
    if not (spec.pki / "ca.pem").is_file():
        raise ConfigError(f"--pki {spec.pki}: no ca.pem (make one: pinkbutton-pki init "
                          f"{spec.pki})")


def check_db(spec: LoadSpec) -> None:
    """Raises ConfigError (one line) when --db names a database that cannot be reached."""
    if spec.db is None:
        return
    try:
        import psycopg
    except ImportError:
        raise ConfigError(f"--db {redact_urls(spec.db)}: PostgreSQL needs psycopg "
                          "(pip install 'pinkbutton[room]')") from None
    try:
        psycopg.connect(spec.db, connect_timeout=DB_CONNECT_S).close()
    except (psycopg.Error, OSError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        raise ConfigError(f"--db {redact_urls(spec.db)}: {redact_urls(first)}") from None


def query(db: Path | str, sql: str) -> list[tuple]:
    """The rows of one read-only query on the room's database: a SQLite file or a
    postgresql:// URL (psycopg, imported only then). The SQL is the same for both.
    Raises StoreError (one line)."""
    if isinstance(db, str):
        import psycopg

        try:
            with psycopg.connect(db, connect_timeout=DB_CONNECT_S) as conn:
                return list(conn.execute(sql.encode()).fetchall())
        except (psycopg.Error, OSError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[-1]
            raise StoreError(f"{redact_urls(db)}: {redact_urls(first)}") from None
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=5)) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error as e:
        raise StoreError(f"{db}: {e}") from None


def fleet_text(spec: LoadSpec, state_dir: Path) -> str:
    """The load's devices as a fleet file: idle i0001.., streaming s001.. (media on)."""
    host, port = spec.broker
    lines = [
        "# written by pinkbutton-sim load; the devices of one load run",
        "[fleet]",
        f'name = "Load {spec.idle} idle + {spec.streaming} streaming"',
        f'device_prefix = "{PREFIX}"',
        f"pki = {json.dumps(str(spec.pki.absolute()))}",
        f"state_dir = {json.dumps(str(state_dir))}",
        f'broker = "{host}:{port}"',
        "",
        "[kiosk.health]",
        f"interval_s = {spec.heartbeat_s:g}",
        "",
        "[kiosk.media]",
        *(f"{k} = {v}" for k, v in STREAM_MEDIA.items()),
        *([f"audio_frame_ms = {spec.audio_frame_ms}"] if spec.audio_frame_ms else []),
        "",
        "[kiosk.alert]",
        f"stream_s = {spec.duration_s + DRAIN_S + 30:g}",  # streams last the whole run
        "",
    ]
    kinds = ("market", "bus_stand", "university", "park", "college")

    def site(sid: str, n: int, media: bool) -> list[str]:
        return ["[[site]]", f'id = "{sid}"', f'name = "Load site {sid}"',
                f'kind = "{kinds[n % len(kinds)]}"',
                f"lat = {33.95 + (n % 100) * 0.001:.4f}", f"lon = {71.45 + (n // 100) * 0.001:.4f}",
                f"media = {'true' if media else 'false'}", ""]

    for i in range(spec.idle):
        lines += site(f"i{i + 1:04d}", i, False)
    for j in range(spec.streaming):
        lines += site(f"s{j + 1:03d}", spec.idle + j, True)
    return "\n".join(lines)


# -- measuring -------------------------------------------------------------------------------------


def cpu_seconds(pid: int | str = "self") -> float | None:
    """utime + stime of a process (all its threads), from /proc; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_mib(pid: int | str = "self") -> float | None:
    try:
        pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return None
    return pages * PAGE / (1024 * 1024)


def percentile(samples: list[float], q: float) -> float:
    """Nearest rank (a value that was measured); NaN for no samples."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(1, -(-len(ordered) * q // 100))
    return ordered[int(rank) - 1]


@dataclass
class Sample:
    t: float  # seconds since the load started
    cpu_devices: float  # % of one core: this process (the observer) and every worker
    cpu_room: float  # every receiver of the room (summed)
    rss_devices: float  # MiB, this process and every worker
    rss_room: float  # every receiver (summed)
    streams: int  # alerts whose live video reached the observer in the last 2 s


@dataclass
class Result:
    idle: int
    streaming: int
    duration_s: int
    presses: int
    press_ms: list[float] = field(default_factory=list)  # press (debounced) -> received
    edge_ms: list[float] = field(default_factory=list)  # button edge -> received (the room's)
    press_t: list[float] = field(default_factory=list)  # when each was pressed (s since start)
    first_frame_ms: list[float] = field(default_factory=list)
    g2g_ms: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    rss_base_mib: float = float("nan")  # the idle workers before any device (summed)
    rss_idle_mib: float = float("nan")  # the idle workers with their devices online
    online_s: float = float("nan")  # the idle devices' time to all online
    alerts_written: int = 0
    stored: int = 0
    lost: int = 0
    unregistered: int = 0  # presses no kiosk registered (the simulator starved), not alerts
    duplicated: int = 0
    room_alert_lines: int = 0  # over every receiver
    room_cpu_s: float = float("nan")  # every receiver (summed)
    engine: str = "1 receiver, SQLite"
    room_rss_mib: list[float] = field(default_factory=list)  # each receiver, the last sample
    notes: list[str] = field(default_factory=list)

    @property
    def mib_per_idle(self) -> float:
        return (self.rss_idle_mib - self.rss_base_mib) / self.idle if self.idle else float("nan")

    def summary(self) -> dict:
        d = asdict(self)
        for key in ("press_ms", "edge_ms", "first_frame_ms", "g2g_ms"):
            s = d.pop(key)
            d[key.removesuffix("_ms")] = {f"p{q}": percentile(s, q) for q in (50, 95, 99)} | {
                "max": max(s, default=float("nan")), "n": len(s)}
        d["press_samples_ms"] = self.press_ms
        d["mib_per_idle"] = self.mib_per_idle
        d["samples"] = [asdict(s) for s in self.samples]
        return d


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


def format_table(r: Result, title: str) -> str:
    def row(label: str, s: list[float]) -> str:
        ps = "".join(f"{percentile(s, q):>9.1f}" for q in (50, 95, 99))
        return f"{label:<46}{ps}{max(s, default=float('nan')):>9.1f}{len(s):>7}"

    streams = [s for s in r.samples if s.streams]
    lines = [
        title,
        f"{'metric (ms)':<46}{'p50':>9}{'p95':>9}{'p99':>9}{'max':>9}{'n':>7}",
        row("press -> received (debounced press -> room)", r.press_ms),
        row("button edge -> received (room's latency)", r.edge_ms),
        row("first frame (edge -> 1st live video)", r.first_frame_ms),
        row("glass-to-glass (capture -> arrival, replay)", r.g2g_ms),
        f"{'resource':<46}{'mean':>9}{'max':>9}",
        f"{'CPU device side (% of a core)':<46}"
        f"{_mean([s.cpu_devices for s in r.samples]):>9.1f}"
        f"{max((s.cpu_devices for s in r.samples), default=float('nan')):>9.1f}",
        f"{'CPU room (% of a core)':<46}{_mean([s.cpu_room for s in r.samples]):>9.1f}"
        f"{max((s.cpu_room for s in r.samples), default=float('nan')):>9.1f}",
        f"{'RSS device side (MiB)':<46}{_mean([s.rss_devices for s in r.samples]):>9.1f}"
        f"{max((s.rss_devices for s in r.samples), default=float('nan')):>9.1f}",
        f"{'RSS room (MiB)':<46}{_mean([s.rss_room for s in r.samples]):>9.1f}"
        f"{max((s.rss_room for s in r.samples), default=float('nan')):>9.1f}",
        f"{'concurrent streams':<46}{_mean([s.streams for s in streams]):>9.1f}"
        f"{max((s.streams for s in r.samples), default=0):>9}",
        f"memory per idle device: {r.mib_per_idle:.2f} MiB "
        f"(idle workers: {r.rss_base_mib:.0f} MiB before the devices, {r.rss_idle_mib:.0f} "
        f"MiB with {r.idle} idle online after {r.online_s:.1f} s)",
        f"alerts: {r.presses} pressed, {r.alerts_written} written to outboxes, {r.stored} "
        f"stored by the room, lost {r.lost}, duplicated {r.duplicated}"
        + (f", presses not registered {r.unregistered}" if r.unregistered else ""),
        "press: the kiosk's debounced press (what `make bench` presses); the room's own "
        "latency runs from the button's edge, so it adds the 50 ms debounce. "
        "first frame: button edge -> first live video packet at an observer with the room's "
        "identity; glass-to-glass: fake camera capture time of the frame a pre-encoded "
        "packet stands for -> its arrival (no encode, no decode)",
    ]
    return "\n".join(lines + [f"note: {n}" for n in r.notes])


# -- the parts ---------------------------------------------------------------------------------


class PressTap:
    """A kiosk listener (its state thread): the time of each press, and the alert it became."""

    def __init__(self) -> None:
        self._pending: list[tuple[float, float]] = []
        self.alerts: dict[str, float] = {}  # alert_id -> press time (the edge, monotonic)
        self.debounce_ms: dict[str, float] = {}  # alert_id -> edge -> press confirmed
        self.presses = 0

    def __call__(self, kind: str, data: dict) -> None:
        if kind == "pressed":
            self.presses += 1
            self._pending.append((float(data["at"]), float(data["confirmed_after_ms"])))
        elif kind == "persisted" and self._pending:
            alert_id = str(data["alert_id"])
            self.alerts[alert_id], self.debounce_ms[alert_id] = self._pending.pop(0)


class Observer:
    """Every device's media, as the room receives it; stamps each live video packet."""

    def __init__(self, spec: LoadSpec, client_id: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._lock = threading.Lock()
        self.first: dict[str, float] = {}  # alert_id -> first live video arrival (monotonic)
        self.last: dict[str, float] = {}
        self.g2g_ms: list[float] = []
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(spec.pki / "ca.pem"),
                            certfile=str(spec.pki / "controlroom.pem"),
                            keyfile=str(spec.pki / "controlroom.key"))
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self._host, self._port = spec.broker

    def start(self) -> None:
        try:
            self.client.connect(self._host, self._port, keepalive=30)
        except OSError as e:
            raise LoadError(f"observer: cannot reach the broker {self._host}:{self._port}: "
                            f"{e}") from None
        self.client.loop_start()
        if not self.connected.wait(ROOM_START_S):
            raise LoadError("observer: no CONNACK from the broker in "
                            f"{ROOM_START_S:g} s (certificates of --pki?)")

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, _userdata, _flags, reason_code, _properties) -> None:
        if not reason_code.is_failure:
            client.subscribe(protocol.topic("+", "media/#"), qos=0)
            self.connected.set()

    def _on_message(self, _client, _userdata, msg) -> None:
        now = time.monotonic()
        try:
            env = decode_envelope(msg.payload)
        except MediaError:
            return
        if env.stream is not Stream.VIDEO or env.preroll or env.chunk_index != env.chunk_count - 1:
            return
        alert_id = msg.topic.rsplit("/", 1)[-1]
        with self._lock:
            self.first.setdefault(alert_id, now)
            self.last[alert_id] = now
            self.g2g_ms.append((now * 1e6 - env.capture_us) / 1000)

    def active(self, now: float, within_s: float = 2.0) -> int:
        with self._lock:
            return sum(now - t <= within_s for t in self.last.values())


class Receiver:
    """One `pinkbutton-controlroom run` process; stdout and stderr into OUT/NAME.out, .log."""

    def __init__(self, spec: LoadSpec, db: Path | str, name: str, client_id: str,
                 group: str) -> None:
        self.log = spec.out / f"{name}.log"
        cmd = [*ROOM_CMD,
               "--host", spec.broker[0], "--port", str(spec.broker[1]), "--pki", str(spec.pki),
               "--db", str(db), "--auto-ack", "--client-id", client_id,
               "--group", group, "--evidence", str(spec.out / "evidence"),
               "--device-certs", str(spec.pki / "devices"), "--log-level", "info",
               *spec.room_args]
        self.alert_lines = 0
        self.ready = threading.Event()
        self._out = open(spec.out / f"{name}.out", "w", encoding="utf-8")  # noqa: SIM115
        self._err = open(self.log, "w", encoding="utf-8")  # noqa: SIM115
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        self._threads = [threading.Thread(target=self._read, args=(self.proc.stdout, False),
                                          daemon=True),
                         threading.Thread(target=self._read, args=(self.proc.stderr, True),
                                          daemon=True)]
        for t in self._threads:
            t.start()

    def _read(self, stream: TextIO | None, is_err: bool) -> None:
        assert stream is not None
        sink = self._err if is_err else self._out
        for line in stream:
            sink.write(line)
            if is_err and "connected to broker" in line:
                self.ready.set()
            elif line.startswith("ALERT "):
                self.alert_lines += 1

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        for t in self._threads:
            t.join(5)
        self._out.close()
        self._err.close()


class Room:
    """The control room: `spec.receivers` receivers in one share group on one database
    (OUT/room.db, or the --db URL) and one evidence folder. One receiver's output is
    OUT/room.out and room.log; several receivers' are room-1.out, room-1.log, ..."""

    def __init__(self, spec: LoadSpec, tag: str) -> None:
        self.spec = spec
        self.db: Path | str = spec.db if spec.db is not None else spec.out / "room.db"
        n = spec.receivers
        self.receivers: list[Receiver] = []
        try:
            for i in range(1, n + 1):
                self.receivers.append(Receiver(
                    spec, self.db, "room" if n == 1 else f"room-{i}",
                    f"load-room-{tag}" if n == 1 else f"load-room-{tag}-{i}", f"load-{tag}"))
        except BaseException:
            self.stop()
            raise

    @property
    def pids(self) -> list[int]:
        return [r.proc.pid for r in self.receivers]

    @property
    def alert_lines(self) -> int:
        """ALERT lines over every receiver: a duplicate is one too many, whoever printed it."""
        return sum(r.alert_lines for r in self.receivers)

    def exited(self) -> Receiver | None:
        """A receiver that has exited, if any."""
        return next((r for r in self.receivers if r.proc.poll() is not None), None)

    def cpu_seconds(self) -> float | None:
        """CPU seconds of every receiver (summed); None once one is gone."""
        each = [cpu_seconds(pid) for pid in self.pids]
        return None if any(c is None for c in each) else sum(c or 0.0 for c in each)

    def rss_each(self) -> list[float]:
        return [rss_mib(pid) or 0.0 for pid in self.pids]

    def wait_ready(self) -> None:
        end = time.monotonic() + ROOM_START_S
        for r in self.receivers:
            while not r.ready.wait(0.2):
                if r.proc.poll() is not None or time.monotonic() > end:
                    tail = r.log.read_text(errors="replace").strip()
                    last = tail.splitlines()[-1] if tail else "no output"
                    raise LoadError(f"the control room ({r.log.stem}) did not connect in "
                                    f"{ROOM_START_S:g} s: {last[:300]}")
        time.sleep(0.3)  # its subscriptions acknowledged

    def stored(self, ids: set[str]) -> set[str]:
        """The alert ids of `ids` the room has stored (an incident or folded into one)."""
        if not ids:
            return set()
        try:
            rows = query(self.db, "SELECT alert_id FROM incidents UNION "
                                  "SELECT alert_id FROM folded")
        except StoreError:
            return set()  # not created yet, or not reachable now: asked again
        return ids & {r[0] for r in rows}

    def latencies(self) -> dict[str, float]:
        """alert_id -> the room's press -> received latency (ms)."""
        rows = query(self.db, "SELECT alert_id, latency_ms FROM incidents "
                              "WHERE latency_ms IS NOT NULL")
        folded = query(self.db, "SELECT alert_id, pressed_at, received_at FROM folded")
        out = {a: float(ms) for a, ms in rows}
        for a, pressed, received in folded:
            with contextlib.suppress(ValueError):
                out[a] = (_iso(received) - _iso(pressed)) * 1000
        return out

    def stop(self) -> None:
        for r in self.receivers:
            if r.proc.poll() is None:
                r.proc.terminate()  # all at once: each stops in its own time
        for r in self.receivers:
            r.stop()


def duplicated(alert_lines: int, stored: int) -> int:
    """ALERT lines printed (over every receiver) beyond one per distinct stored alert: two
    receivers that both announce one alert are one duplicate."""
    return max(0, alert_lines - stored)


def _iso(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Progress:
    """A progress bar on a terminal (rich, if installed), else a line every 10 %."""

    def __init__(self, total_s: float, out: TextIO) -> None:
        self.total, self.out = total_s, out
        self._bar = None
        self._step = -1
        if out.isatty():
            try:
                from rich.progress import Progress as RichProgress
            except ImportError:
                pass
            else:
                from rich.console import Console

                self._bar = RichProgress(console=Console(file=out), transient=False)
                self._task = self._bar.add_task("load", total=total_s)
                self._bar.start()

    def update(self, t: float, text: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, completed=min(t, self.total), description=text)
            return
        step = int(10 * min(t, self.total) / self.total)
        if step > self._step:
            self._step = step
            print(f"load: {10 * step:3d}%  {text}", file=self.out, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


# -- the run ----------------------------------------------------------------------------------------


DEVICES_PER_WORKER = 100  # paho's loop and the kiosk's control socket use select(): fds < 1024
STREAMING_PER_WORKER = 5  # a streaming kiosk's threads are busy: fewer share one GIL
WORKER_REPORT_S = 0.25


def _worker(cmds, reports, fleet_path: str, site_ids: list[str], streaming: bool,
            log_level: str) -> None:
    """One worker process: its slice of the fleet as real kiosks. Reads ("press", i) and
    ("stop",) from `cmds`; sends ("state", online, presses, [(alert_id, press time)], rss before
    any device) every WORKER_REPORT_S, then ("done",)."""
    import logging
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops its workers
    logging.basicConfig(level=log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    base = rss_mib() or float("nan")
    wanted = set(site_ids)
    clock = Clock()
    built: list[tuple[SimDevice, DeviceView, PressTap]] = []
    for site in load_fleet(fleet_path, check_certificates=False).sites:
        if site.id not in wanted:
            continue
        view, tap = DeviceView(site, lambda _v, _t: None), PressTap()
        device = build_device(site.config, clock, backend=FakeBackend(), listeners=[view, tap],
                              media=streaming)
        if streaming and device.kiosk.media is not None:
            m = site.config.media  # the fleet file's [kiosk.media]: STREAM_MEDIA, audio frame
            use_replay(device.kiosk.media.pipeline,
                       clip(m.width, m.height, m.fps, m.video_kbps, m.audio_kbps,
                            m.keyframe_interval_s, m.audio_frame_ms))
        view.kiosk = device.kiosk
        built.append((device, view, tap))
    threads = []
    for device, view, _tap in built:
        thread = threading.Thread(target=device.kiosk.run, daemon=True,
                                  name=f"kiosk-{view.site.id}")
        thread.start()
        threads.append(thread)
    sent: set[str] = set()

    def report() -> None:
        new = [(a, at, tap.debounce_ms.get(a, 0.0)) for _d, _v, tap in built
               for a, at in list(tap.alerts.items()) if a not in sent]
        sent.update(a for a, _at, _ms in new)
        reports.send(("state", sum(v.online for _d, v, _t in built),
                      sum(t.presses for _d, _v, t in built), new, base))

    try:
        while True:
            if cmds.poll(WORKER_REPORT_S):
                msg = cmds.recv()
                if msg[0] == "stop":
                    break
                built[msg[1]][0].press()
            report()
    except (EOFError, OSError):
        pass  # the parent has gone: stop
    finally:
        for device, _v, _t in built:
            device.kiosk.stop()
        end = time.monotonic() + STOP_JOIN_S
        for thread in threads:
            thread.join(max(0.0, end - time.monotonic()))
        with contextlib.suppress(OSError):
            report()
            reports.send(("done",))


class Worker:
    """A worker process as the parent sees it: what it last reported."""

    def __init__(self, fleet_path: Path, site_ids: list[str], streaming: bool,
                 log_level: str) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")  # not fork: this process has threads
        self.size, self.streaming = len(site_ids), streaming
        self._cmds, cmds = ctx.Pipe()
        reports, self._reports = ctx.Pipe()
        self.proc = ctx.Process(target=_worker, args=(cmds, reports, str(fleet_path),
                                                      site_ids, streaming, log_level),
                                daemon=True)
        self.proc.start()
        self.online = self.presses = 0
        self.alerts: dict[str, float] = {}  # alert_id -> press edge (monotonic)
        self.debounce_ms: dict[str, float] = {}
        self.base_rss = float("nan")
        self.done = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                msg = self._reports.recv()
                if msg[0] == "done":
                    break
                _kind, self.online, self.presses, new, self.base_rss = msg
                for alert_id, at, debounce_ms in new:
                    self.alerts[alert_id], self.debounce_ms[alert_id] = at, debounce_ms
        except (EOFError, OSError):
            pass
        self.done.set()

    @property
    def pid(self) -> int:
        assert self.proc.pid is not None
        return self.proc.pid

    def press(self, index: int) -> None:
        with contextlib.suppress(OSError):
            self._cmds.send(("press", index))

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self._cmds.send(("stop",))

    def join(self, timeout: float) -> None:
        self.done.wait(timeout)
        self.proc.join(max(0.5, timeout / 4))
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)


class LoadRun:
    def __init__(self, spec: LoadSpec, say: Say, progress_out: TextIO,
                 log_level: str = "warning") -> None:
        self.spec = spec
        self.say = say
        self.progress_out = progress_out
        self.log_level = log_level
        self.tag = secrets.token_hex(4)
        self.result = Result(spec.idle, spec.streaming, spec.duration_s, spec.presses,
                             engine=spec.engine)
        self.workers: list[Worker] = []

    def run(self) -> Result:
        spec = self.spec
        spec.out.mkdir(parents=True, exist_ok=True)
        own_state = spec.state_dir is None
        # each kiosk's control socket path must fit in 108 bytes: a short folder
        state = Path(tempfile.mkdtemp(prefix="pbl-", dir="/tmp")) if own_state else spec.state_dir
        assert state is not None
        room: Room | None = None
        observer: Observer | None = None
        try:
            fleet = self._fleet(state)
            room = Room(spec, self.tag)
            room.wait_ready()
            observer = Observer(spec, f"load-observer-{self.tag}")
            observer.start()
            self._devices(fleet)
            self._load(room, observer)
            self._finish(room, observer)
        finally:
            self._stop_devices()
            if observer is not None:
                observer.stop()
            if room is not None:
                self.result.room_cpu_s = room.cpu_seconds() or float("nan")
                room.stop()
            if own_state:
                shutil.rmtree(state, ignore_errors=True)
        return self.result

    def _fleet(self, state: Path) -> Fleet:
        spec = self.spec
        path = spec.out / "fleet.toml"
        path.write_text(fleet_text(spec, state))
        self.say(f"load: {spec.idle + spec.streaming} device certificates "
                 f"(pinkbutton-pki fleet {path})")
        try:
            proc = subprocess.run([sys.executable, "-m", "pinkbutton.tools.pki", "fleet",
                                   str(path), "--pki", str(spec.pki)], capture_output=True,
                                  text=True, timeout=PKI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise LoadError(f"pinkbutton-pki fleet took over {PKI_TIMEOUT_S:g} s") from None
        if proc.returncode != 0:
            raise LoadError(f"pinkbutton-pki fleet: {(proc.stderr or proc.stdout).strip()[:300]}")
        return load_fleet(path)

    def _start(self, fleet: Fleet, streaming: bool) -> list[Worker]:
        """Worker processes of at most DEVICES_PER_WORKER devices, started one after the
        other once the previous one's devices are online (1000 kiosks connecting at once
        are a TLS handshake storm that says more about the start than the load)."""
        ids = [s.id for s in fleet.sites if s.id.startswith("s") == streaming]
        per = STREAMING_PER_WORKER if streaming else DEVICES_PER_WORKER
        group: list[Worker] = []
        for i in range(0, len(ids), per):
            group.append(Worker(fleet.path, ids[i:i + per], streaming, self.log_level))
            self.workers.append(group[-1])
            self._wait_online(group[-1:], "streaming" if streaming else "idle")
        return group

    def _wait_online(self, group: list[Worker], what: str) -> float:
        start = time.monotonic()
        total = sum(w.size for w in group)
        limit = 60 + 0.5 * total
        while sum(w.online for w in group) < total:
            if time.monotonic() - start > limit or any(w.done.is_set() for w in group):
                n = sum(w.online for w in group)
                raise LoadError(f"only {n} of {total} {what} devices online after "
                                f"{time.monotonic() - start:.0f} s")
            time.sleep(0.2)
        return time.monotonic() - start

    def _rss(self, group: list[Worker]) -> float:
        return sum(rss_mib(w.pid) or 0.0 for w in group)

    def _devices(self, fleet: Fleet) -> None:
        r = self.result
        start = time.monotonic()
        idle = self._start(fleet, streaming=False)
        if idle:
            r.online_s = time.monotonic() - start
            time.sleep(2.0)  # settled: the first heartbeats sent
            r.rss_base_mib = sum(w.base_rss for w in idle)
            r.rss_idle_mib = self._rss(idle)
            self.say(f"load: {r.idle} idle devices online after {r.online_s:.1f} s "
                     f"({len(idle)} worker processes), {r.mib_per_idle:.2f} MiB each")
        streaming = self._start(fleet, streaming=True)
        if streaming:
            self.say(f"load: {r.streaming} streaming devices online")

    def _device_side(self) -> tuple[float | None, float]:
        """CPU seconds and RSS (MiB) of this process and every worker."""
        cpu = [cpu_seconds(), *(cpu_seconds(w.pid) for w in self.workers)]
        rss = (rss_mib() or 0.0) + self._rss(self.workers)
        return sum(c or 0.0 for c in cpu), rss

    def _load(self, room: Room, observer: Observer) -> None:
        spec, r = self.spec, self.result
        idle = [(w, i) for w in self.workers if not w.streaming for i in range(w.size)]
        streaming = [(w, i) for w in self.workers if w.streaming for i in range(w.size)]
        events: list[tuple[float, Worker, int, bool]] = []  # (at s, worker, index, a press)
        ramp = spec.duration_s / 2
        for j, (w, i) in enumerate(streaming):
            events.append((ramp * j / max(1, len(streaming)), w, i, False))
        for k in range(spec.presses):
            w, i = idle[k % len(idle)]
            events.append((spec.duration_s * (k + 0.5) / spec.presses, w, i, True))
        events.sort(key=lambda e: e[0])
        progress = Progress(spec.duration_s, self.progress_out)
        start = time.monotonic()
        pressed = 0
        (cpu_me, _rss), cpu_room, last = self._device_side(), room.cpu_seconds(), start
        next_sample = start + SAMPLE_S
        try:
            while True:
                now = time.monotonic()
                t = now - start
                while events and events[0][0] <= t:
                    _at, w, i, counts = events.pop(0)
                    w.press(i)
                    pressed += counts
                if now >= next_sample:
                    (me, rss), rm = self._device_side(), room.cpu_seconds()
                    r.room_rss_mib = room.rss_each()
                    dt = now - last
                    sample = Sample(
                        round(t, 2), 100 * ((me or 0) - (cpu_me or 0)) / dt,
                        100 * ((rm or 0) - (cpu_room or 0)) / dt if rm is not None else 0.0,
                        rss, sum(r.room_rss_mib), observer.active(now))
                    r.samples.append(sample)
                    cpu_me, cpu_room, last = me, rm, now
                    next_sample += SAMPLE_S
                    progress.update(t, f"{pressed}/{spec.presses} presses, {sample.streams} "
                                       f"streams, CPU {sample.cpu_devices:.0f}% + room "
                                       f"{sample.cpu_room:.0f}%")
                gone = room.exited()
                if gone is not None:
                    raise LoadError(f"the control room exited ({gone.proc.returncode}) during "
                                    f"the load; see {gone.log.name}")
                if t >= spec.duration_s:
                    break
                time.sleep(min(0.05, max(0.0, next_sample - time.monotonic())))
        finally:
            progress.close()

    def _written(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for w in self.workers:
            out.update(list(w.alerts.items()))
        return out

    def _finish(self, room: Room, observer: Observer) -> None:
        r = self.result
        end = time.monotonic() + DRAIN_S
        expected = r.presses + r.streaming
        time.sleep(2 * WORKER_REPORT_S)  # the workers' last presses reported
        written = self._written()
        stored = room.stored(set(written))
        while (len(stored) < len(written) or sum(w.presses for w in self.workers) < expected) \
                and time.monotonic() < end:
            time.sleep(0.5)
            written = self._written()
            stored = room.stored(set(written))
        time.sleep(1.0)  # an ALERT line printed late is still counted
        latencies = room.latencies()
        # one snapshot: the workers' reader threads may still add late alerts meanwhile
        written = self._written()
        stored = room.stored(set(written))
        idle_ids = {a for w in self.workers if not w.streaming for a in list(w.alerts)}
        pressed_ids = sorted((a for a in written if a in idle_ids), key=written.__getitem__)
        start_mono = min(written.values(), default=0.0)
        debounce = {a: ms for w in self.workers for a, ms in list(w.debounce_ms.items())}
        # the room's latency runs from the button's edge; the press is the debounced one
        r.edge_ms = [latencies[a] for a in pressed_ids if a in latencies]
        r.press_ms = [latencies[a] - debounce.get(a, 0.0) for a in pressed_ids if a in latencies]
        r.press_t = [written[a] - start_mono for a in pressed_ids if a in latencies]
        for w in self.workers:
            if w.streaming:
                for alert_id, at in list(w.alerts.items()):
                    first = observer.first.get(alert_id)
                    if first is not None:
                        r.first_frame_ms.append((first - at) * 1000)
        r.g2g_ms = list(observer.g2g_ms)
        presses_seen = sum(w.presses for w in self.workers)
        r.alerts_written = len(written)
        r.stored = len(stored)
        r.lost = len(written) - len(stored)
        if presses_seen > len(written):  # pressed again during its own open alert
            r.notes.append(f"{presses_seen - len(written)} press(es) during an open alert "
                           "(the kiosk's pressed_again, no new alert)")
        if presses_seen < expected:
            r.unregistered = expected - presses_seen
            r.notes.append(f"{r.unregistered} press(es) no kiosk registered within the drain: "
                           "the device side is starved of CPU (an overloaded simulator, not "
                           "a lost alert)")
        r.room_alert_lines = room.alert_lines
        r.duplicated = duplicated(room.alert_lines, len(latencies))
        if r.streaming and len(r.first_frame_ms) < r.streaming:
            r.notes.append(f"{r.streaming - len(r.first_frame_ms)} stream(s) without a live "
                           "frame at the observer")

    def _stop_devices(self) -> None:
        for w in self.workers:
            w.stop()
        end = time.monotonic() + STOP_JOIN_S + 5
        for w in self.workers:
            w.join(max(1.0, end - time.monotonic()))


# -- plots ------------------------------------------------------------------------------------------


def write_plots(r: Result, out: Path) -> list[Path]:
    """latency_hist.png, latency_over_time.png, streams_cpu.png (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def save(fig, name: str) -> Path:
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        return out / name

    paths = []
    title = f"{r.idle} idle + {r.streaming} streaming, {r.duration_s} s"

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist(r.press_ms or [0.0], bins=40, color="#d6337f")
    ax.set(xlabel="press -> received (ms)", ylabel="alerts",
           title=f"Press -> received, {len(r.press_ms)} alerts ({title})")
    for q, style in ((50, "--"), (99, ":")):
        if r.press_ms:
            ax.axvline(percentile(r.press_ms, q), color="black", linestyle=style,
                       label=f"p{q} {percentile(r.press_ms, q):.1f} ms")
    if r.press_ms:
        ax.legend()
    paths.append(save(fig, "latency_hist.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(r.press_t, r.press_ms, "o", markersize=3, color="#d6337f", label="press -> received")
    ax.set(xlabel="time since the first press (s)", ylabel="ms",
           title=f"Latency over time ({title})")
    ax.legend(loc="upper left")
    paths.append(save(fig, "latency_over_time.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    streams = [s.streams for s in r.samples]
    ax.plot(streams, [s.cpu_devices for s in r.samples], "o", markersize=3,
            label="device side (kiosk workers + parent)")
    ax.plot(streams, [s.cpu_room for s in r.samples], "s", markersize=3, label="control room")
    ax.set(xlabel="concurrent streams", ylabel="CPU (% of one core)",
           title=f"Streams vs CPU, 1 s samples ({title})")
    ax.legend(loc="upper left")
    paths.append(save(fig, "streams_cpu.png"))
    return paths


def run_load(spec: LoadSpec, out: TextIO, err: TextIO, log_level: str = "warning") -> int:
    """The `load` verb: 0 nothing lost, 1 lost or duplicated alerts, 2 bad setup (one line)."""
    check_spec(spec)
    check_db(spec)
    try:
        result = LoadRun(spec, lambda s: print(s, file=err, flush=True), err, log_level).run()
    except LoadError as e:
        print(f"pinkbutton-sim load: {e}", file=err)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: devices, workers and room were stopped
        print("pinkbutton-sim load: interrupted", file=err)
        return 1
    host, port = spec.broker
    engine = spec.engine + (f" {' '.join(spec.room_args)}" if spec.room_args else "")
    table = format_table(result, f"Pink Button load — {spec.idle} idle + {spec.streaming} "
                                 f"streaming, {spec.duration_s} s, {spec.presses} presses "
                                 f"(broker {host}:{port}; room: {engine})")
    print(table, file=out, flush=True)
    (spec.out / "table.txt").write_text(table + "\n")
    (spec.out / "summary.json").write_text(json.dumps(result.summary(), indent=1) + "\n")
    try:
        paths = write_plots(result, spec.out)
    except ImportError:
        print("pinkbutton-sim load: no plots: they need matplotlib "
              "(pip install 'pinkbutton[load]')", file=err)
    else:
        print("plots: " + "  ".join(str(p) for p in paths), file=out, flush=True)
    return 1 if result.lost or result.duplicated or result.unregistered else 0
