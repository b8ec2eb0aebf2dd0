"""`pinkbutton-sim scenario FILE`: a timeline run against a real broker and control room.

The runner makes a throwaway PKI (`pinkbutton-pki init`, a subprocess), starts a mosquitto
of its own (simulator/broker.py) on an ephemeral port, one or two control-room receivers
(`pinkbutton-controlroom run`, subprocesses in one share group, each with its own SQLite
database), and the fleet in this process (simulator/fleet.py: real firmware on fake
hardware), every device behind its own link (simulator/flakylink.py) so a step can cut it.
Once every device is online in every receiver's database the clock starts at 0 and the
steps run at their times; expectations are judged from what the room prints (ALERT,
DEVICE ... OFFLINE / back online, evidence ... complete), what the kiosks report (the ack)
and the receivers' databases (incidents, duplicates), read with sqlite3 as data.

Output: one line per step and per expectation (PASS/FAIL with the measured time), then a
summary; `--json`: the same as one JSON object per line. Exit 0 when every expectation
passed, 1 otherwise (or when the run could not be set up), 2 for a bad file.

Note on threads: the main thread runs the timeline and judges; a reader thread per receiver
pipe and the kiosks' state threads (through the fleet's line writer) only append
(time, source, line) to `Events` under its lock.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TextIO, cast

from pinkbutton.simulator.broker import BrokerError, Mosquitto, _die_with_parent
from pinkbutton.simulator.flakylink import FlakyLink
from pinkbutton.simulator.fleet import FleetRunner
from pinkbutton.simulator.fleetfile import Fleet, with_broker
from pinkbutton.simulator.scenariofile import Scenario, Step, load_scenario

SETUP_S = 90.0  # broker, receivers, every device online in the room (a loaded 2-core machine)
POLL_S = 0.05
GROUP = "scenario"


class SetupError(RuntimeError):
    """The run could not start (one line)."""


class Events:
    """Lines seen, each with the timeline time it arrived: ("room1", line) or ("fleet", line)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self.lines: list[tuple[float, str, str]] = []

    def add(self, source: str, line: str) -> None:
        with self._lock:
            self.lines.append((self.clock(), source, line))

    def since(self, t: float) -> list[tuple[float, str, str]]:
        with self._lock:
            return [e for e in self.lines if e[0] >= t]

    def wait_for(self, source: str, text: str, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self._lock:
                if any(s == source and text in line for _, s, line in self.lines):
                    return True
            time.sleep(POLL_S)
        return False


class _FleetLines(io.TextIOBase):
    """A text stream for FleetRunner: each whole line becomes an event."""

    def __init__(self, events: Events) -> None:
        super().__init__()
        self.events = events
        self._buf = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._buf += text
            *whole, self._buf = self._buf.split("\n")
        for line in whole:
            if line:
                self.events.add("fleet", line)
        return len(text)



class Receiver:
    """One `pinkbutton-controlroom run` subprocess (number n, from 1)."""

    def __init__(self, n: int, work: Path, pki: Path, port: int, scenario: Scenario,
                 events: Events) -> None:
        self.n, self.events = n, events
        self.db = work / f"room-{n}.db"
        self.source = f"room{n}"
        evidence = (["--evidence", str(work / f"evidence-{n}")] if scenario.room.evidence
                    else ["--no-evidence"])
        self.argv = [sys.executable, "-m", "pinkbutton.tools.controlroom.cli", "run",
                     "--host", "127.0.0.1", "--port", str(port), "--pki", str(pki),
                     "--db", str(self.db), "--client-id", f"{GROUP}-room-{n}",
                     "--group", GROUP, "--log-level", "info", *evidence,
                     *(["--auto-ack"] if scenario.room.auto_ack else [])]
        self.proc: subprocess.Popen[str] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        # _die_with_parent: SIGTERM to the receiver if the runner dies without cleaning up
        proc = self.proc = subprocess.Popen([*_die_with_parent(), *self.argv],
                                            stdin=subprocess.DEVNULL,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            text=True, start_new_session=True)
        marker = f"{self.source}#{self.starts}"
        for stream, source in ((proc.stdout, self.source), (proc.stderr, marker)):
            threading.Thread(target=self._read, args=(stream, source), daemon=True,
                             name=f"{source}-reader").start()

    def _read(self, stream: TextIO | None, source: str) -> None:
        if stream is None:
            return
        with contextlib.suppress(ValueError, OSError):
            for line in stream:
                self.events.add(source, line.rstrip("\n"))

    def wait_connected(self, timeout: float) -> None:
        if not self.events.wait_for(f"{self.source}#{self.starts}", "connected to broker",
                                    timeout):
            raise SetupError(f"control-room receiver {self.n} did not connect within "
                             f"{timeout:g} s{self._exit_note()}")

    def _exit_note(self) -> str:
        if self.proc is None or self.proc.poll() is None:
            return ""
        errors = [line for _, s, line in list(self.events.lines)
                  if s.startswith(f"{self.source}#")]
        return f" (exited {self.proc.returncode}: {errors[-1] if errors else 'no output'})"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def query(self, sql: str) -> list[tuple]:
        """Rows from this receiver's database ([] while it does not exist or is busy)."""
        if not self.db.exists():
            return []
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.db}?mode=ro", uri=True,
                                                    timeout=1.0)) as con:
                return con.execute(sql).fetchall()
        except sqlite3.Error:
            return []


@dataclass
class Result:
    step: Step
    ok: bool | None = None  # None: still open
    measured_s: float | None = None
    why: str = ""
    met: dict[str, float] = field(default_factory=dict)  # site -> time met


class ScenarioRun:
    def __init__(self, scenario: Scenario, pki: Path, work: Path, out: TextIO,
                 as_json: bool = False) -> None:
        self.s = scenario
        self.pki, self.work = pki, work
        self.out, self.as_json = out, as_json
        self.t0 = time.monotonic()
        self.events = Events(self.now)
        self.broker: Mosquitto | None = None
        self.receivers: list[Receiver] = []
        self.fleet: FleetRunner | None = None
        self.links: dict[str, FlakyLink] = {}
        self.results: list[Result] = []
        self.step_failures = 0

    def now(self) -> float:
        return time.monotonic() - self.t0

    # -- output -------------------------------------------------------------------------------

    def emit(self, kind: str, text: str, **data: object) -> None:
        if self.as_json:
            print(json.dumps({"type": kind, **data}), file=self.out, flush=True)
        else:
            print(text, file=self.out, flush=True)

    # -- setup / teardown ---------------------------------------------------------------------

    def setup(self) -> None:
        s = self.s
        broker = self.broker = Mosquitto(self.work / "broker", self.pki)
        broker.start(timeout=30)
        target = (broker.host, broker.port)
        for n in range(1, s.room.receivers + 1):
            self.receivers.append(Receiver(n, self.work, self.pki, broker.port, s,
                                           self.events))
        for r in self.receivers:
            r.start()
        for r in self.receivers:
            r.wait_connected(SETUP_S)
        sites = []
        for site in s.fleet.sites:  # every device behind its own link, so a step can cut it
            flaky = site.quirks.flaky_link
            link = FlakyLink(target, loss=flaky.loss if flaky else 0.0,
                             latency_ms=flaky.latency_ms if flaky else 0.0).start()
            self.links[site.id] = link
            site = with_broker(site, "127.0.0.1", link.port)
            sites.append(replace(site, quirks=replace(site.quirks, flaky_link=None)))
        fleet = Fleet(s.fleet.path, s.fleet.name, s.fleet.pki, s.fleet.state_dir, target,
                      tuple(sites))
        runner = self.fleet = FleetRunner(fleet, cast(TextIO, _FleetLines(self.events)))
        runner.start()
        ids = [site.device_id for site in s.fleet.sites]
        end = time.monotonic() + SETUP_S
        while True:
            missing = self._not_online(ids)
            if not missing:
                return
            if time.monotonic() > end:
                raise SetupError(f"{len(missing)} of {len(ids)} devices not online in the "
                                 f"room after {SETUP_S:g} s: {', '.join(missing[:5])}")
            time.sleep(0.2)

    def _not_online(self, ids: list[str]) -> list[str]:
        missing: set[str] = set()
        for r in self.receivers:
            online = {row[0] for row in r.query("SELECT device_id FROM devices WHERE online=1")}
            missing |= {i for i in ids if i not in online}
        return sorted(missing)

    def close(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()
        for link in self.links.values():
            link.close()
        for r in self.receivers:
            r.stop()
        if self.broker is not None:
            self.broker.stop()

    # -- the timeline -------------------------------------------------------------------------

    def run(self) -> int:
        s = self.s
        started = time.monotonic()
        self.setup()
        self.emit("setup", f"scenario {s.name}: {len(s.fleet.sites)} device(s) online in "
                  f"{len(self.receivers)} receiver(s) after {time.monotonic() - started:.1f} s; "
                  f"timeline of {s.max_s:g} s starts",
                  name=s.name, devices=len(s.fleet.sites), setup_s=time.monotonic() - started)
        self.t0 = time.monotonic()
        todo = list(s.steps)
        while True:
            now = self.now()
            while todo and todo[0].at <= now:
                step = todo.pop(0)
                if step.is_expectation:  # judged at once too: before the steps after it
                    self.results.append(Result(step))
                    self._judge(self.results[-1])
                else:
                    self._act(step)
            for r in self.results:
                if r.ok is None:
                    self._judge(r)
            if not todo and all(r.ok is not None for r in self.results):
                break
            if now >= s.max_s:
                for r in self.results:
                    if r.ok is None:
                        self._verdict(r, False, None, f"not met by max_s {s.max_s:g} s")
                break
            time.sleep(POLL_S)
        return self._summary()

    def _act(self, step: Step) -> None:
        at = self.now()
        ok, note = True, ""
        try:
            note = self._do(step)
        except (BrokerError, SetupError, OSError) as e:
            ok, note = False, str(e).splitlines()[0]
            self.step_failures += 1
        self.emit("step", f"{'ok  ' if ok else 'FAIL'}  {at:6.2f} s  {step.text}"
                  + (f"  ({note})" if note else ""),
                  step=step.text, at=step.at, t=round(at, 3), ok=ok, note=note)

    def _do(self, step: Step) -> str:
        assert self.fleet is not None and self.broker is not None
        v = step.verb
        if v == "press":
            for sid in step.sites:
                self.fleet.press(sid)
        elif v == "hold":
            for sid in step.sites:
                self.fleet.press(sid, step.number)
        elif v == "link_down":
            for sid in step.sites:
                self.links[sid].cut()
        elif v == "link_stall":
            for sid in step.sites:
                self.links[sid].stall()
        elif v == "link_up":
            for sid in step.sites:
                self.links[sid].restore()
        elif v in ("camera_cover", "camera_uncover"):
            for sid in step.sites:
                for camera in self.fleet.devices[sid].backend.cameras:
                    camera.covered = v == "camera_cover"
        elif v == "broker_restart":
            t = time.monotonic()
            self.broker.restart(timeout=30)
            return f"back after {time.monotonic() - t:.1f} s"
        elif v == "receiver_kill":
            self.receivers[int(step.number) - 1].kill()
        elif v == "receiver_start":
            r = self.receivers[int(step.number) - 1]
            if r.running:
                return "already running"
            r.start()
            r.wait_connected(30)
        return ""

    # -- judging ------------------------------------------------------------------------------

    def _judge(self, r: Result) -> None:
        step, now = r.step, self.now()
        deadline = step.at + (step.within or 0.0)
        if step.verb == "no_duplicates":
            dups = self._duplicates()
            self._verdict(r, not dups, 0.0, dups)
            return
        if step.verb == "incidents":
            count = len(self._incident_ids())
            if count == step.number:
                self._verdict(r, True, max(0.0, now - step.at), f"{count} incident(s)")
            elif now >= deadline:
                self._verdict(r, False, None, f"{count} incident(s), expected {step.number:g}")
            return
        for sid in step.sites:
            if sid not in r.met:
                t = self._event_time(step.verb, sid, step.at)
                if t is not None and t <= deadline:
                    r.met[sid] = t
        if len(r.met) == len(step.sites):
            slowest = max(r.met, key=lambda k: r.met[k])
            self._verdict(r, True, r.met[slowest] - step.at,
                          f"slowest {slowest}" if len(step.sites) > 1 else "")
        elif now > deadline + 0.5:  # lines already in flight when the window closed count
            missing = [sid for sid in step.sites if sid not in r.met]
            self._verdict(r, False, None, f"not within {step.within:g} s: "
                          f"{', '.join(missing[:5])}"
                          + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))

    def _event_time(self, verb: str, sid: str, since: float) -> float | None:
        assert self.fleet is not None
        site = self.fleet.fleet.find(sid)
        assert site is not None
        dev = site.device_id
        alert_ids = self.fleet.views[sid].persisted
        for t, source, line in self.events.since(since):
            words = line.split()
            if not words:
                continue
            if source.startswith("room") and "#" not in source:
                if verb == "alert_received" and words[0] == "ALERT" and dev in words[1:2]:
                    return t
                if verb == "device_offline" and line.startswith(f"DEVICE {dev} OFFLINE"):
                    return t
                if verb == "device_online" and line.startswith(f"DEVICE {dev} back online"):
                    return t
                if verb == "camera_fault" and words[0] == "EVENT" and dev in words[1:2] and \
                        " fault camera_covered" in line:
                    return t
                if verb == "camera_fault_cleared" and words[0] == "EVENT" and \
                        dev in words[1:2] and "fault cleared: camera_covered" in line:
                    return t
                if verb == "evidence_complete" and line.startswith("evidence for ") and \
                        len(words) > 3 and words[2] in alert_ids and words[3] == "complete:":
                    return t
            elif source == "fleet" and verb == "acked" and words[0] == sid and \
                    len(words) > 2 and words[2] == "ack":
                return t
        return None

    def _incident_ids(self) -> set[str]:
        ids: set[str] = set()
        for rec in self.receivers:
            ids |= {row[0] for row in rec.query("SELECT alert_id FROM incidents")}
        return ids

    def _duplicates(self) -> str:
        """'' when no alert is an incident in two receivers and no receiver announced one
        alert twice; otherwise what was duplicated."""
        seen: dict[str, int] = {}
        for rec in self.receivers:
            for (aid,) in rec.query("SELECT alert_id FROM incidents"):
                seen[aid] = seen.get(aid, 0) + 1
        twice = sorted(a for a, c in seen.items() if c > 1)
        alerts = sum(1 for _, s, line in self.events.lines
                     if s.startswith("room") and "#" not in s and line.startswith("ALERT "))
        if twice:
            return f"{len(twice)} alert(s) stored by both receivers: {', '.join(twice[:3])}"
        if alerts > len(seen):
            return f"{alerts} ALERT lines for {len(seen)} incident(s)"
        return ""

    def _verdict(self, r: Result, ok: bool, measured: float | None, why: str) -> None:
        r.ok, r.measured_s, r.why = ok, measured, why
        took = f"{measured:.2f} s" if measured is not None else "-"
        self.emit("expect", f"{'PASS' if ok else 'FAIL'}  {r.step.at:6.2f} s  {r.step.text}"
                  f"  {took}" + (f"  ({why})" if why else ""),
                  expect=r.step.text, at=r.step.at, ok=ok,
                  measured_s=None if measured is None else round(measured, 3), note=why)

    def _summary(self) -> int:
        passed = sum(1 for r in self.results if r.ok)
        failed = [r.step.text for r in self.results if not r.ok]
        ok = not failed and not self.step_failures
        steps = f", {self.step_failures} step(s) failed" if self.step_failures else ""
        self.emit("summary", f"{'PASS' if ok else 'FAIL'}  {self.s.name}: {passed} of "
                  f"{len(self.results)} expectations passed{steps} in {self.now():.1f} s"
                  + (f"; failed: {'; '.join(failed)}" if failed else ""),
                  name=self.s.name, ok=ok, passed=passed, total=len(self.results),
                  failed=failed, step_failures=self.step_failures,
                  timeline_s=round(self.now(), 3))
        return 0 if ok else 1


def make_pki(pki: Path, device_ids: list[str]) -> None:
    """A throwaway PKI for the run: `pinkbutton-pki init` as a subprocess (the simulator
    does not import tools)."""
    argv = [sys.executable, "-m", "pinkbutton.tools.pki", "init", str(pki)]
    for d in device_ids:
        argv += ["--device", d]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"pinkbutton-pki init failed: {last}")


def run_scenario(path: str | Path, out: TextIO, *, as_json: bool = False,
                 keep: bool = False) -> int:
    """Load (ConfigError: the caller exits 2), set up, run, tear down; 0 all passed, 1 not."""
    # State under a short path: each kiosk's control socket must fit in 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="pbs-", dir="/tmp"))
    try:
        pki, states = work / "pki", work / "state"
        scenario = load_scenario(path, pki=pki, state_dir=states)
        run = ScenarioRun(scenario, pki, work, out, as_json)
        try:
            make_pki(pki, [site.device_id for site in scenario.fleet.sites])
            return run.run()
        except (SetupError, BrokerError) as e:
            run.emit("error", f"FAIL  {scenario.name}: could not set up: "
                     f"{str(e).splitlines()[0]}", ok=False, error=str(e).splitlines()[0])
            return 1
        finally:
            run.close()
    finally:
        if keep:
            print(f"work folder kept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
