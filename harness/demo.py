"""`make demo`: one simulated press, end to end, on this machine.

Creates the dev PKI, starts mosquitto (mTLS + ACL) on a free loopback port, the
control room (auto-ack) and one simulated kiosk as real processes, presses the
button once and prints the timeline from contact to "help is coming". Stops
everything it started; safe to run again.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from pinkbutton.firmware.cliargs import OneLineParser
from pinkbutton.tools.controlroom.store import IncidentStore
from pinkbutton.tools.pki import init_dev_pki

from harness.broker import BrokerError, Mosquitto, free_port

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
DEVICE = "pb-sim-0001"
PREROLL_S = 5.0
PRESS_AT_S = 6.0  # after the pre-roll has filled
EXIT_AT_S = 11.0
SITE = "Qissa Khwani Bazaar, Peshawar (simulated)"


def say(msg: str) -> None:
    print(msg, flush=True)


class Proc:
    """A child process whose output lines are collected by a reader thread."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.lines: list[str] = []
        self._log = log.open("w")
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, text=True, cwd=ROOT)
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

    def stop(self) -> None:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()


def write_sim_config(path: Path, port: int) -> None:
    pki = DEMO / "pki"
    path.write_text(f"""# written by harness/demo.py
[device]
id = "{DEVICE}"
site_id = "sim-qissa-khwani"
site_name = "{SITE}"
lat = 34.0079
lon = 71.5785
state_dir = "{DEMO / 'state' / DEVICE}"

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


def main(argv: list[str] | None = None) -> int:
    # No options; the parser gives --help and refuses stray arguments (before starting
    # anything) instead of running the whole demo.
    OneLineParser(prog="python -m harness.demo", description=(__doc__ or "").partition("\n")[0]).parse_args(argv)
    DEMO.mkdir(exist_ok=True)
    # A fresh simulated kiosk every run: an earlier run stopped mid-incident would otherwise
    # be resumed by this one (as a real kiosk does after a crash), and absorb this press.
    shutil.rmtree(DEMO / "state", ignore_errors=True)
    py = sys.executable
    env_note = f"(logs in {DEMO.relative_to(ROOT)}/)"
    say(f"1/5 development PKI in {DEMO.relative_to(ROOT)}/pki (CA, broker, control room, {DEVICE})")
    init_dev_pki(DEMO / "pki", [DEVICE])
    port = free_port()
    say(f"2/5 mosquitto with mutual TLS on 127.0.0.1:{port}")
    broker = Mosquitto(DEMO / "broker", DEMO / "pki", port)
    procs: list[Proc] = []
    try:
        broker.start()
        db = DEMO / "controlroom.db"
        say("3/5 control room (auto-ack)")
        room = Proc("controlroom", [
            py, "-m", "pinkbutton.tools.controlroom.cli", "run", "--host", "localhost", "--port", str(port),
            "--pki", str(DEMO / "pki"), "--db", str(db), "--auto-ack", "--operator", "demo-officer",
            "--device-certs", str(DEMO / "pki" / "devices"), "--client-id", "demo-controlroom",
            "--evidence", str(DEMO / "evidence"),
        ], DEMO / "controlroom.log")
        procs.append(room)
        if not room.wait_for("connected to broker", 15):
            say("demo: the control room did not connect " + env_note)
            say("\n".join(room.lines[-10:]))
            return 1
        cfg = DEMO / "sim.toml"
        write_sim_config(cfg, port)
        say(f"4/5 simulated kiosk {DEVICE} (camera + microphone): filling the {PREROLL_S:.0f} s "
            f"pre-roll, pressing at {PRESS_AT_S:.0f} s, streaming until {EXIT_AT_S:.0f} s")
        sim = Proc("sim", [py, "-m", "pinkbutton.simulator.cli", "run", "--config", str(cfg),
                           "--press-after", str(PRESS_AT_S), "--exit-after", str(EXIT_AT_S),
                           "--json", "--log-level", "warning"], DEMO / "sim.log")
        procs.append(sim)
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
        return print_evidence(room.lines) or status
    except BrokerError as e:
        say(f"demo: {e}")
        return 1
    finally:
        for proc in procs:
            proc.stop()
        broker.stop()


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
        say("demo: FAILED, the control room wrote no evidence file (see .demo/controlroom.log)")
        return 1
    words = lines[-1].split()
    path = Path(words[1])
    say(f"    evidence: {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")
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
