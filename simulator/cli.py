"""`pinkbutton-sim`: the real firmware on fake hardware, on a laptop or in CI.

    pinkbutton-sim run --config examples/sim.toml            # Enter presses the button
    pinkbutton-sim run --config F --press-after 1 --exit-after 5   # scripted
    pinkbutton-sim fleet examples/fleets/peshawar.toml       # 68 kiosks; type a site id to press
    pinkbutton-sim scenario examples/scenarios/single-press.toml   # a timeline, PASS/FAIL
    pinkbutton-sim load --idle 500 --streaming 20 --duration 60 --presses 100 --pki P --out D

Exit codes: 0 ok (every press delivered; every expectation of a scenario passed), 1 a
press was not delivered before exit (a scenario: an expectation failed), 2 bad usage or
configuration.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TextIO

from pinkbutton.firmware.cliargs import (
    OneLineParser,
    add_version,
    int_in,
    quiet_on_closed_pipe,
    seconds,
)
from pinkbutton.firmware.config import ConfigError, load_config
from pinkbutton.hal.base import HalError
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend


class Timeline:
    """Prints what the kiosk does, with times relative to the first press.

    On a terminal it is one steady status line, redrawn in place (state, LED pattern, last
    event), as a trainer watches a kiosk; otherwise (a pipe, a harness, `--json`) one line per
    event.

    Note on threads: called from the kiosk's state thread only.
    """

    def __init__(self, clock: Clock, as_json: bool, live: bool = False,
                 out: TextIO | None = None) -> None:
        self.clock = clock
        self.as_json = as_json
        self.live = live and not as_json
        self.out = out or sys.stdout
        self.t0: float | None = None
        self.presses = 0
        self.delivered: set[str] = set()
        self.persisted: set[str] = set()
        self.mode = "starting"
        self.pattern = "off"

    def __call__(self, kind: str, data: dict) -> None:
        now = self.clock.monotonic()
        if kind == "pressed":
            self.presses += 1
            if self.t0 is None:
                self.t0 = data["at"]
        elif kind == "persisted":
            self.persisted.add(data["alert_id"])
        elif kind == "delivered":
            self.delivered.add(data["alert_id"])
        elif kind == "mode":
            self.mode = str(data["to"])
        elif kind == "indicator":
            self.pattern = str(data["pattern"])
        rel = None if self.t0 is None else round((now - self.t0) * 1000, 1)
        if self.as_json:
            print(json.dumps({"event": kind, "t_ms": rel, **data}), file=self.out, flush=True)
            return
        stamp = f"+{rel:8.1f} ms" if rel is not None else " " * 11 + "  "
        details = "  ".join(f"{k}={v}" for k, v in data.items() if k != "at")
        if self.live:
            line = (f"state {self.mode:<10} LED {self.pattern:<12} presses {self.presses}  "
                    f"last [{'' if rel is None else f'+{rel:.1f} ms'}] {kind} {details}")
            self.out.write("\r\x1b[K" + line[:200])
            self.out.flush()
        else:
            print(f"[{stamp}] {kind:<14} {details}", file=self.out, flush=True)

    def close(self) -> None:
        if self.live:
            self.out.write("\n")
            self.out.flush()

    @property
    def undelivered(self) -> set[str]:
        return self.persisted - self.delivered


def _run(args) -> int:
    from pinkbutton.simulator.device import PRESS_HOLD_S, build_device

    config = load_config(args.config)
    logging.basicConfig(level=(args.log_level or config.log.level).upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    clock = Clock()
    interactive = sys.stdin is not None and sys.stdin.isatty() and not args.stdin_presses
    timeline = Timeline(clock, args.json, live=interactive and sys.stdout.isatty())
    webcam = None
    if args.webcam and not args.no_media and config.media.video:
        from pinkbutton.hal.v4l2 import V4l2Camera

        m = config.media
        webcam = V4l2Camera(clock, m.width, m.height, m.fps, device=args.webcam)
    # always fake hardware: PINKBUTTON_HAL is the kiosk's choice, not ours
    device = build_device(config, clock, backend=FakeBackend(), listeners=[timeline],
                          media=not args.no_media, camera=webcam)
    kiosk = device.kiosk

    def press() -> None:  # timer/keyboard thread: raw edges only, the kiosk thread debounces
        device.press(PRESS_HOLD_S)

    timers = []
    if args.press_after is not None:
        timers.append(threading.Timer(args.press_after, press))
    if args.exit_after is not None:
        timers.append(threading.Timer(args.exit_after, kiosk.stop))
    for tm in timers:
        tm.daemon = True
        tm.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: kiosk.stop())
    if args.stdin_presses:
        def scripted() -> None:  # a harness (the soak) presses by writing lines
            for _ in sys.stdin:
                press()
            kiosk.stop()  # the harness closed our input: stop cleanly
        threading.Thread(target=scripted, name="stdin-presses", daemon=True).start()
    elif sys.stdin is not None and sys.stdin.isatty():
        def keyboard() -> None:
            for _ in sys.stdin:
                press()
        threading.Thread(target=keyboard, name="keyboard", daemon=True).start()
        print(f"simulated button {config.device.id} at {config.device.site_name}: "
              "press Enter to press the button, Ctrl-C to quit", flush=True)
    kiosk.run()
    timeline.close()
    if timeline.undelivered:
        print(f"pinkbutton-sim: {len(timeline.undelivered)} alert(s) not delivered before exit "
              "(kept in the outbox)", file=sys.stderr)
        return 1
    return 0


def _fleet(args) -> int:
    from dataclasses import replace

    from pinkbutton.simulator.fleet import FleetRunner
    from pinkbutton.simulator.fleetfile import load_fleet, make_state_dir
    from pinkbutton.simulator.fleetworkers import WorkerFleet

    fleet = load_fleet(args.file, pki=args.pki, state_dir=args.state_dir, broker=args.broker)
    make_state_dir(fleet)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    table = sys.stdout.isatty() and not args.lines
    if table:
        try:
            import rich  # noqa: F401
        except ImportError:
            print("pinkbutton-sim: the live table needs rich (pip install 'pinkbutton[sim]'); "
                  "printing lines", file=sys.stderr)
            table = False
    runner: FleetRunner | WorkerFleet
    if args.worker_of is not None:  # one of the processes of --workers N: its share, as JSON
        share = set(args.worker_of.split(","))
        fleet = replace(fleet, sites=tuple(s for s in fleet.sites if s.id in share))
        runner, table = FleetRunner(fleet, sys.stdout, worker=True), False
    elif args.workers > 1:
        runner = WorkerFleet(fleet, sys.stdout, workers=args.workers, lines=not table,
                             log_level=args.log_level)
    else:
        runner = FleetRunner(fleet, sys.stdout, lines=not table)
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    if args.exit_after is not None:
        timer = threading.Timer(args.exit_after, done.set)
        timer.daemon = True
        timer.start()

    def commands() -> None:  # typed (or piped) lines; the end of input stops reading only
        for line in sys.stdin:
            if not runner.command(line):
                done.set()
                return
        if args.worker_of is not None:  # a worker's parent is gone: never run on orphaned
            done.set()

    live = None
    if table:  # started before the kiosks, so their first log lines print above the table
        from pinkbutton.simulator.fleettable import render
        from rich.live import Live
        from rich.logging import RichHandler

        live = Live(refresh_per_second=2, screen=False, vertical_overflow="crop",
                    get_renderable=lambda: render(runner, live.console.size.height if live
                                                  else None))
        live.start()
        logging.getLogger().handlers[:] = [RichHandler(console=live.console, show_path=False)]
    try:
        runner.start()
        if sys.stdin is not None:
            threading.Thread(target=commands, name="fleet-commands", daemon=True).start()
        while not done.wait(0.5):
            pass
    finally:
        runner.stop()
        if live is not None:
            live.stop()
    left = runner.undelivered()
    if args.worker_of is not None:
        print(json.dumps({"undelivered": left}), flush=True)
        return 1 if left else 0
    if isinstance(runner, WorkerFleet) and runner.failed:
        print(f"pinkbutton-sim: {runner.failed}", file=sys.stderr)
        return 1
    if left:
        print(f"pinkbutton-sim: {left} alert(s) not delivered before exit (kept in the outboxes)",
              file=sys.stderr)
        return 1
    return 0


# -- `scenario` (simulator/scenario.py) ---------------------------------------------------------


def _scenario(args) -> int:
    from pinkbutton.simulator.scenario import run_scenario

    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    def interrupt(*_) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)  # tear down the broker and receivers as on Ctrl-C
    try:
        return run_scenario(args.file, sys.stdout, as_json=args.json, keep=args.keep)
    except KeyboardInterrupt:
        print("pinkbutton-sim: scenario interrupted", file=sys.stderr)
        return 1


def _add_scenario_parser(sub) -> None:
    sc = sub.add_parser("scenario", help="run a scenario file against a broker and control room "
                                         "of its own: PASS/FAIL per expectation")
    sc.add_argument("file", metavar="FILE", help="scenario file (examples/scenarios/*.toml)")
    sc.add_argument("--json", action="store_true", help="one JSON object per line")
    sc.add_argument("--keep", action="store_true",
                    help="keep the run's work folder (PKI, broker log, databases)")
    sc.add_argument("--log-level", default="critical",
                    choices=["debug", "info", "warning", "error", "critical"],
                    help="the kiosks' log level on stderr (default: critical: a scenario's "
                         "outages make the errors it expects)")

# -- end of `scenario` ---------------------------------------------------------------------------


# -- load (issue 13 item 4): simulator/load.py ----------------------------------------------------


def _load(args) -> int:
    from pinkbutton.simulator.fleetfile import _host_port
    from pinkbutton.simulator.load import LoadSpec, run_load

    spec = LoadSpec(idle=args.idle, streaming=args.streaming, duration_s=args.duration,
                    presses=args.presses, out=args.out, pki=args.pki,
                    broker=_host_port(args.broker, "--broker"), heartbeat_s=args.heartbeat,
                    state_dir=args.state_dir, room_args=tuple(args.room_arg),
                    receivers=args.receivers, db=args.db,
                    audio_frame_ms=args.audio_frame_ms)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def interrupted(*_) -> None:  # SIGTERM as Ctrl-C: the run stops its workers and room
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    return run_load(spec, sys.stdout, sys.stderr, args.log_level)


def _add_load(sub) -> None:
    load = sub.add_parser("load", help="N idle + M streaming kiosks, K presses: latency, CPU "
                                       "and memory table, plots in --out")
    load.add_argument("--idle", type=int, default=100, metavar="N",
                      help="idle devices, heartbeating (default 100, at most 3000)")
    load.add_argument("--streaming", type=int, default=0, metavar="M",
                      help="devices pressed and streaming pre-encoded media (at most 50)")
    load.add_argument("--duration", type=int, default=30, metavar="S",
                      help="seconds of load after all are online (5-900, default 30)")
    load.add_argument("--presses", type=int, default=20, metavar="K",
                      help="presses spread over the idle devices and the duration (default 20)")
    load.add_argument("--out", type=Path, required=True, metavar="DIR",
                      help="output folder: table.txt, summary.json, PNG plots, room.db")
    load.add_argument("--pki", type=Path, required=True, metavar="DIR",
                      help="the PKI the broker trusts (ca.pem, controlroom.*; device "
                           "certificates are made in DIR/devices)")
    load.add_argument("--broker", default="localhost:8883", metavar="HOST:PORT",
                      help="the broker (default localhost:8883)")
    load.add_argument("--heartbeat", type=float, default=10.0, metavar="S",
                      help="each device's heartbeat period (default 10 s)")
    load.add_argument("--state-dir", type=Path, metavar="DIR",
                      help="devices' state (default: a temp folder under /tmp, removed)")
    load.add_argument("--receivers", type=int, default=1, metavar="N",
                      help="control room receivers in one share group (1-4, default 1; more "
                           "than 1 needs --db: SQLite is the single-receiver store)")
    load.add_argument("--db", metavar="URL",
                      help="the room's database, a postgresql:// URL shared by every receiver "
                           "(default: SQLite in DIR/room.db)")
    load.add_argument("--audio-frame-ms", type=int, metavar="MS",
                      help="the streaming kiosks' Opus frame, one per media message (20, 40 "
                           "or 60; default the kiosk's, media.audio_frame_ms)")
    load.add_argument("--room-arg", action="append", default=[], metavar="ARG",
                      help="extra argument for pinkbutton-controlroom run (repeatable)")
    load.add_argument("--log-level", default="warning",
                      choices=["debug", "info", "warning", "error"],
                      help="log level on stderr (default: warning)")


# -- end of load ----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="pinkbutton-sim",
                                 description="Run the Pink Button firmware on simulated hardware")
    add_version(ap)
    sub = ap.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="one simulated button (Enter presses it)")
    run.add_argument("--config", required=True, help="kiosk TOML config (hal.backend is ignored)")
    run.add_argument("--press-after", type=seconds, metavar="S", help="press once after S seconds")
    run.add_argument("--exit-after", type=seconds, metavar="S", help="stop after S seconds")
    run.add_argument("--json", action="store_true", help="one JSON object per line")
    run.add_argument("--no-media", action="store_true", help="no simulated camera/microphone")
    run.add_argument("--webcam", metavar="DEVICE",
                     help="a real V4L2 webcam (e.g. /dev/video0) instead of the simulated camera")
    run.add_argument("--stdin-presses", action="store_true",
                     help="each line on stdin presses the button, end of input stops (harnesses)")
    run.add_argument("--log-level", default=None, choices=["debug", "info", "warning", "error"],
                     help="log level on stderr (default: the config's log.level)")
    fleet = sub.add_parser("fleet", help="every site of a fleet file as a simulated kiosk "
                                          "(type a site id + Enter to press)")
    fleet.add_argument("file", metavar="FILE", help="fleet file (examples/fleets/peshawar.toml)")
    fleet.add_argument("--pki", type=Path, metavar="DIR",
                       help="PKI folder (default: the file's [fleet] pki)")
    fleet.add_argument("--state-dir", type=Path, metavar="DIR",
                       help="devices' state folder (default: the file's [fleet] state_dir)")
    fleet.add_argument("--broker", metavar="HOST:PORT",
                       help="the broker (default: the file's [fleet] broker)")
    fleet.add_argument("--exit-after", type=seconds, metavar="S", help="stop after S seconds")
    fleet.add_argument("--workers", type=int_in(1, 64), default=1, metavar="N",
                       help="run the kiosks in N worker processes (default 1: all in this one)")
    fleet.add_argument("--worker-of", metavar="IDS", help=argparse.SUPPRESS)
    fleet.add_argument("--lines", action="store_true",
                       help="one line per change even on a terminal (no table)")
    fleet.add_argument("--log-level", default="warning",
                       choices=["debug", "info", "warning", "error"],
                       help="log level on stderr (default: warning)")
    _add_scenario_parser(sub)
    _add_load(sub)
    return ap


@quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "scenario":
            return _scenario(args)
        if args.command == "load":
            return _load(args)
        return _fleet(args) if args.command == "fleet" else _run(args)
    except ConfigError as e:
        print(f"pinkbutton-sim: {e}", file=sys.stderr)
        return 2
    except HalError as e:
        print(f"pinkbutton-sim: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
