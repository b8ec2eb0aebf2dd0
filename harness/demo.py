"""`make demo`: one simulated press, end to end, on this machine.

Creates the dev PKI, starts mosquitto (mTLS + ACL) on a free loopback port, the
control room with its web console (`pinkbutton-controlroom serve`, auto-ack, HTTPS with
a certificate from the dev PKI on 127.0.0.1) and one simulated kiosk as real processes,
creates an officer account with a new password, prints the console's URL and that login,
presses the button once and prints the timeline from contact to "help is coming". Stops
everything it started; safe to run again. `--hold` (`make demo DEMO_HOLD=1`) keeps the
room, the console and a kiosk up until Ctrl-C, for a trainer to click around.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pinkbutton.firmware.cliargs import OneLineParser
from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.store import IncidentStore
from pinkbutton.tools.controlroom.web.accounts import Accounts
from pinkbutton.tools.pki import init_dev_pki, issue_web

from harness.broker import BrokerError, Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DEVICE = "pb-sim-0001"
PREROLL_S = 5.0
PRESS_AT_S = 6.0  # after the pre-roll has filled
EXIT_AT_S = 11.0
SITE = "Qissa Khwani Bazaar, Peshawar (simulated)"
OFFICER, OFFICER_ROLE = "officer", "admin"


def say(msg: str) -> None:
    print(msg, flush=True)


class Proc:
    """A child process whose output lines are collected by a reader thread."""

    def __init__(self, name: str, argv: list[str], log: Path, stdin: bool = False) -> None:
        self.name = name
        self.lines: list[str] = []
        self._log = log.open("w")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  text=True, cwd=ROOT)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.p.stdout is not None  # stdout=PIPE
        for line in self.p.stdout:
            self.lines.append(line.rstrip("\n"))
            self._log.write(line)
            self._log.flush()

    def wait_for(self, text: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if any(text in line for line in self.lines):
                return True
            if self.p.poll() is not None:
                return False
            time.sleep(0.02)
        return False

    def line_with(self, text: str) -> str | None:
        return next((line for line in self.lines if text in line), None)

    def stop(self) -> None:
        if self.p.stdin is not None:
            with contextlib.suppress(OSError):
                self.p.stdin.close()
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def write_sim_config(path: Path, port: int, demo: Path) -> None:
    pki = demo / "pki"
    path.write_text(f"""# written by harness/demo.py
[device]
id = "{DEVICE}"
site_id = "sim-qissa-khwani"
site_name = "{SITE}"
lat = 34.0079
lon = 71.5785
state_dir = "{demo / 'state' / DEVICE}"

[broker]
host = "localhost"
port = {port}
ca = "{pki / 'ca.pem'}"
cert = "{pki / 'devices' / (DEVICE + '.pem')}"
key = "{pki / 'devices' / (DEVICE + '.key')}"
backoff_min_s = 0.2
backoff_max_s = 2.0

[hal]
backend = "fake"
""")


def shown(path: Path) -> str:
    return str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


def new_officer(db: Path) -> str:
    """The demo's officer account in the room's database: a new password every run."""
    password = secrets.token_urlsafe(12)
    accounts = Accounts(db)
    try:
        accounts.add_user(OFFICER, OFFICER_ROLE, password)
    finally:
        accounts.close()
    return password


def main(argv: list[str] | None = None) -> int:
    # The parser gives --help and refuses stray arguments (before starting anything)
    # instead of running the whole demo.
    parser = OneLineParser(prog="python -m harness.demo",
                           description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--hold", action="store_true",
                        help="keep the room, the console and a kiosk up until Ctrl-C "
                             "(Enter presses the kiosk's button again)")
    parser.add_argument("--dir", type=Path, default=DEMO,
                        help=f"where the demo keeps its PKI, database, evidence and logs "
                             f"(default {shown(DEMO)})")
    args = parser.parse_args(argv)
    demo: Path = args.dir.resolve()
    demo.mkdir(parents=True, exist_ok=True)
    # A fresh simulated kiosk every run: an earlier run stopped mid-incident would otherwise
    # be resumed by this one (as a real kiosk does after a crash), and absorb this press.
    # A fresh room database too: the officer's password is new every run.
    shutil.rmtree(demo / "state", ignore_errors=True)
    db = demo / "controlroom.db"
    for old in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        old.unlink(missing_ok=True)
    py = sys.executable
    env_note = f"(logs in {shown(demo)}/)"
    say(f"1/5 development PKI in {shown(demo)}/pki (CA, broker, control room, {DEVICE}, "
        "the console's HTTPS certificate)")
    init_dev_pki(demo / "pki", [DEVICE])
    issue_web(demo / "pki", ["127.0.0.1", "localhost"])
    port = free_port()
    say(f"2/5 mosquitto with mutual TLS on 127.0.0.1:{port}")
    broker = Mosquitto(demo / "broker", demo / "pki", port)
    procs: list[Proc] = []
    # SIGTERM stops the demo as Ctrl-C does: everything it started is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        broker.start()
        password = new_officer(db)
        say("3/5 control room and its web console (auto-ack)")
        room = Proc("controlroom", [
            py, "-m", "pinkbutton.tools.controlroom.cli", "serve", "--host", "localhost",
            "--port", str(port), "--pki", str(demo / "pki"), "--db", str(db), "--auto-ack",
            "--operator", "demo-officer", "--device-certs", str(demo / "pki" / "devices"),
            "--client-id", "demo-controlroom", "--evidence", str(demo / "evidence"),
            "--listen", "127.0.0.1:0",
        ], demo / "controlroom.log")
        procs.append(room)
        if not room.wait_for("connected to broker", 15) or not room.wait_for("console on ", 5):
            say("demo: the control room did not start " + env_note)
            say("\n".join(room.lines[-10:]))
            return 1
        url = console_url(room)
        say(f"    console: {url}  (HTTPS, certificate from the demo's CA "
            f"{shown(demo / 'pki' / 'ca.pem')}: the browser warns once)")
        say(f"    login:   {OFFICER} / {password}  (role {OFFICER_ROLE}; a new password "
            "every run)")
        cfg = demo / "sim.toml"
        write_sim_config(cfg, port, demo)
        say(f"4/5 simulated kiosk {DEVICE} (camera + microphone): filling the {PREROLL_S:.0f} s "
            f"pre-roll, pressing at {PRESS_AT_S:.0f} s, streaming until {EXIT_AT_S:.0f} s")
        # Held, the kiosk keeps running (Enter presses it again) and the incident is ended
        # from the room's side, as an officer's click does; else the kiosk exits by itself.
        until = ["--stdin-presses"] if args.hold else ["--exit-after", str(EXIT_AT_S)]
        sim = Proc("sim", [py, "-m", "pinkbutton.simulator.cli", "run", "--config", str(cfg),
                           "--press-after", str(PRESS_AT_S), *until,
                           "--json", "--log-level", "warning"], demo / "sim.log",
                   stdin=args.hold)
        procs.append(sim)
        if args.hold:
            time.sleep(EXIT_AT_S)
            end_incident(db, sim)
            room.wait_for("EVIDENCE", 15)  # the kiosk's stream_end closes the file
        else:
            sim.p.wait(EXIT_AT_S + 30)
            time.sleep(0.5)
            room.stop()
        events = []
        for line in sim.lines:
            if line.startswith("{"):
                events.append(json.loads(line))
            else:
                say(f"    kiosk: {line}")
        say("5/5 timeline of the press")
        status = print_timeline(events, db)
        status = print_evidence(room.lines) or status
        if not args.hold:
            say("    the console stopped with the demo; `make demo DEMO_HOLD=1` keeps it up")
            return status
        return hold(room, sim, demo, url, password, status)
    except KeyboardInterrupt:
        say("demo: interrupted: stopping")
        return 1
    except BrokerError as e:
        say(f"demo: {e}")
        return 1
    finally:
        for proc in procs:
            proc.stop()
        broker.stop()


def console_url(room: Proc) -> str:
    line = room.line_with("console on ") or ""
    found = re.search(r"console on (\S+)", line)
    return found.group(1) if found else "?"


def end_incident(db: Path, sim: Proc) -> None:
    """End this run's incident as an officer's click in the console does (the store's
    commands table; the receiver carries it out): the kiosk stops streaming."""
    persisted = [e for e in (json.loads(line) for line in sim.lines if line.startswith("{"))
                 if e.get("event") == "persisted"]
    if not persisted:
        return  # print_timeline says what is missing
    store = IncidentStore(db)
    try:
        store.queue_command(persisted[-1]["alert_id"], "end", {"disposition": "test"},
                            "demo-officer", iso8601(time.time()))
    finally:
        store.close()


def hold(room: Proc, kiosk: Proc, demo: Path, url: str, password: str, status: int) -> int:
    """Keep the room, the console and the kiosk up until Ctrl-C."""

    def presses() -> None:  # each Enter typed here presses the kiosk's button
        for _ in sys.stdin:
            if kiosk.p.poll() is None and kiosk.p.stdin is not None:
                with contextlib.suppress(OSError):
                    kiosk.p.stdin.write("\n")
                    kiosk.p.stdin.flush()
                    say("    pressed")

    if sys.stdin is not None and sys.stdin.isatty():
        threading.Thread(target=presses, name="presses", daemon=True).start()
    say(f"holding: the room, its console and kiosk {DEVICE} stay up until Ctrl-C")
    say(f"    console: {url}")
    say(f"    login:   {OFFICER} / {password}")
    say("    Enter presses the kiosk's button again (the room acknowledges by itself)")
    try:
        while room.p.poll() is None:
            time.sleep(0.2)
        say(f"demo: the control room stopped (see {shown(demo)}/controlroom.log)")
        return 1
    except KeyboardInterrupt:
        say("demo: stopping")
        return status


def print_timeline(events: list[dict], db: Path) -> int:
    # Only what followed this run's press (t_ms is relative to it, None before): an earlier
    # run stopped mid-incident leaves alerts that this run's kiosk replays first.
    events = [e for e in events if e.get("t_ms") is not None]

    def first(kind: str, **match) -> dict | None:
        for e in events:
            if e["event"] == kind and all(e.get(k) == v for k, v in match.items()):
                if alert_id is None or e.get("alert_id", alert_id) == alert_id:
                    return e
        return None

    alert_id = None
    persisted = first("persisted")
    if persisted is None:
        say("demo: the simulated kiosk never registered a press")
        return 1
    alert_id = persisted["alert_id"]
    store = IncidentStore(db)
    incident = store.incident(alert_id)
    store.close()
    pressed = first("pressed")
    rows = [(0.0, "button pressed (contact)", "kiosk")]
    if pressed:
        rows.append((pressed["t_ms"], f"press confirmed (stable {pressed['confirmed_after_ms']} ms"
                     ", debounce)", "kiosk"))
    rows.append((persisted["t_ms"], f"alert seq {persisted['seq']} written to outbox (fsync)",
                 "kiosk"))
    sending = first("indicator", pattern="sending")
    if sending:
        rows.append((sending["t_ms"], "indicator: sending", "kiosk"))
    if incident is not None and incident.latency_ms is not None:
        rows.append((incident.latency_ms, f"alert received at control room ({incident.site_name})",
                     "control room"))
    delivered = first("delivered")
    if delivered:
        rows.append((delivered["t_ms"], "broker PUBACK: delivered; indicator: delivered", "kiosk"))
    cmd = first("cmd", cmd="ack")
    if cmd:
        rows.append((cmd["t_ms"], f"operator ack received at kiosk (by {cmd['operator']})", "kiosk"))
    help_coming = first("indicator", pattern="help_coming")
    if help_coming:
        rows.append((help_coming["t_ms"], "indicator: help_coming", "kiosk"))
    say(f"    alert {alert_id}")
    for t_ms, what, where in sorted(rows, key=lambda r: r[0]):
        say(f"    +{t_ms:8.1f} ms  {what:<58} [{where}]")
    missing = [name for name, ok in (("press confirmed", pressed),
                                     ("alert at control room", incident is not None),
                                     ("delivery (PUBACK)", delivered), ("operator ack", cmd),
                                     ("indicator help_coming", help_coming)) if not ok]
    if missing:
        say(f"demo: FAILED, missing: {', '.join(missing)} (logs in .demo/)")
        return 1
    assert incident is not None and pressed is not None and help_coming is not None  # not missing
    say(f"demo: ok — press to alert at control room {incident.latency_ms:.1f} ms "
        f"(includes {pressed['confirmed_after_ms']} ms debounce), press to 'help is coming' "
        f"{help_coming['t_ms']:.1f} ms")
    return 0


def print_evidence(room_lines: list[str]) -> int:
    """The evidence file the control room wrote, checked with ffprobe."""
    from pinkbutton.tools.controlroom.media import EvidenceError, ffprobe_summary

    lines = [line for line in room_lines if line.startswith("EVIDENCE")]
    if not lines:
        say("demo: FAILED, the control room wrote no evidence file (see its log)")
        return 1
    words = lines[-1].split()
    path = Path(words[1])
    say(f"    evidence: {shown(path)}")
    say(f"    control room: {' '.join(words[2:])}")
    try:
        info = ffprobe_summary(path)
    except EvidenceError as e:
        say(f"demo: FAILED, {e}")
        return 1
    for st in info["streams"]:
        size = f" {st['width']}x{st['height']}" if st.get("width") else ""
        say(f"    ffprobe: {st['type']} {st['codec']}{size}, {st['duration_s']:.2f} s")
    say(f"    ffprobe: duration {info['duration_s']:.2f} s")
    if not (info.get("video") and info.get("audio")):
        say("demo: FAILED, the evidence lacks a video or an audio stream")
        return 1
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
