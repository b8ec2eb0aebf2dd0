"""Kill sweep harness (issue 9 item 2): press, kill -9 the kiosk k ms after the contact,
restart it, and see how the run ends, for many k in one long-lived process.

Starting two fresh Python processes per offset would take most of the sweep's time, so this
process imports everything once and forks a child per kiosk run: a real process with its own
paho connection, its own SQLite outbox and a real SIGKILL, without re-importing. The parent
starts no thread (forking a threaded process is unsafe) and only reads the room's database
with short-lived read-only connections. One JSON line per offset on stdout:

    {"k": 37, "ok": true, "pattern": "help_coming", "alert_id": "...", "new_incidents": 1}

`ok` is the issue's rule: either no new incident at the room and an idle kiosk, or exactly
one new incident, the one the restarted kiosk shows help_coming for.

`--slow-commit-ms` delays the first run's outbox commit (an SD card slow to fsync): a crash
window that exists at all is then some ms wide instead of well under one, so the 1 ms sweep
lands in it on several offsets instead of by luck.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import select
import signal
import sqlite3
import sys
import threading
import time
import traceback
from dataclasses import replace
from pathlib import Path

from pinkbutton.firmware.app import Kiosk
from pinkbutton.firmware.config import load_config
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend

SETTLE_AFTER_CONNECT_S = 1.0  # an idle restarted kiosk must have stayed idle this long
RUN_TIMEOUT_S = 15.0


def _kiosk(cfg, events: queue.SimpleQueue) -> tuple[Kiosk, object]:
    clock = Clock()
    backend = FakeBackend()
    button = backend.button(clock, 17, 0.05)
    indicator = backend.indicator(clock, 27)
    kiosk = Kiosk(cfg, button, indicator, clock=clock,
                  listeners=[lambda kind, data: events.put((kind, data))])
    threading.Thread(target=kiosk.run, name="kiosk", daemon=True).start()
    return kiosk, button


def _wait(events: queue.SimpleQueue, pred, timeout: float):
    end = time.monotonic() + timeout
    while (left := end - time.monotonic()) > 0:
        try:
            kind, data = events.get(timeout=left)
        except queue.Empty:
            break
        if pred(kind, data):
            return kind, data
    return None


def _first_run(cfg, slow_commit_s: float, out: int) -> None:
    """Child: boot, connect, go idle, press; tell the parent when; wait to be killed."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    kiosk, button = _kiosk(cfg, events)
    if slow_commit_s > 0:
        put = kiosk.outbox.put

        def slow_put(draft, wall):
            time.sleep(slow_commit_s)
            put(draft, wall)

        kiosk.outbox.put = slow_put
    seen: set[str] = set()

    def ready(kind: str, data: dict) -> bool:
        if kind == "connected" or (kind == "indicator" and data["pattern"] == "idle"):
            seen.add(kind)
        return seen == {"connected", "indicator"}

    if _wait(events, ready, 10) is None:
        os._exit(5)
    at = time.monotonic()
    button.press()
    os.write(out, f"{at!r}\n".encode())
    time.sleep(RUN_TIMEOUT_S)
    os._exit(3)  # not killed: the parent failed


def _restart(cfg, out: int) -> None:
    """Child: the same state dir again; report where the kiosk ends up."""
    events: queue.SimpleQueue = queue.SimpleQueue()
    kiosk, _ = _kiosk(cfg, events)
    pattern, alert_id, connected_at = None, None, None
    end = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < end:
        if connected_at is not None and pattern == "idle" \
                and time.monotonic() - connected_at >= SETTLE_AFTER_CONNECT_S:
            break
        try:
            kind, data = events.get(timeout=0.05)
        except queue.Empty:
            continue
        if kind == "connected":
            connected_at = time.monotonic()
        elif kind == "indicator":
            pattern = data["pattern"]
            if pattern == "help_coming":
                break
    if kiosk.state.incident is not None:
        alert_id = kiosk.state.incident.draft.alert_id
    os.write(out, (json.dumps({"pattern": pattern, "mode": str(kiosk.state.mode),
                               "alert_id": alert_id}) + "\n").encode())
    os._exit(0)


def _fork(target, *args) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            target(*args, w)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(4)
    os.close(w)
    return pid, r


def _read_line(fd: int, timeout: float) -> str | None:
    buf = b""
    end = time.monotonic() + timeout
    while b"\n" not in buf and (left := end - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    os.close(fd)
    return buf.decode().split("\n")[0] if b"\n" in buf else None


def _reap(pid: int) -> None:
    end = time.monotonic() + 5
    while time.monotonic() < end:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _incidents(db: Path) -> set[str]:
    if not db.exists():
        return set()
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
    try:
        return {a for (a,) in con.execute("SELECT alert_id FROM incidents")}
    finally:
        con.close()


def one_offset(cfg, k_ms: int, room_db: Path, slow_commit_s: float) -> dict:
    before = _incidents(room_db)
    pid, r = _fork(_first_run, cfg, slow_commit_s)
    line = _read_line(r, RUN_TIMEOUT_S)
    if line is None:
        os.kill(pid, signal.SIGKILL)
        _reap(pid)
        return {"k": k_ms, "ok": False, "error": "first run never pressed"}
    pressed = float(line)
    time.sleep(max(0.0, pressed + k_ms / 1000 - time.monotonic()))
    os.kill(pid, signal.SIGKILL)
    late_ms = (time.monotonic() - pressed) * 1000 - k_ms
    _reap(pid)
    pid, r = _fork(_restart, cfg)
    line = _read_line(r, RUN_TIMEOUT_S + 5)
    _reap(pid)
    if line is None:
        return {"k": k_ms, "ok": False, "error": "restarted kiosk did not report"}
    res = json.loads(line)
    # The room stores before it acks, so a help_coming kiosk's incident is there already;
    # an idle one gets a moment for anything still in flight to land.
    if res["pattern"] != "help_coming":
        time.sleep(0.3)
    new = sorted(_incidents(room_db) - before)
    if res["pattern"] == "help_coming":
        ok = new == [res["alert_id"]]
    else:
        ok = new == [] and res["pattern"] == "idle" and res["alert_id"] is None
    return {"k": k_ms, "ok": ok, "kill_late_ms": round(late_ms, 2), **res, "new_incidents": new}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--room-db", type=Path, required=True)
    ap.add_argument("--from-ms", type=int, default=0)
    ap.add_argument("--to-ms", type=int, default=100)
    ap.add_argument("--slow-commit-ms", type=float, default=0.0)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    base = load_config(args.config)
    failed = 0
    for k in range(args.from_ms, args.to_ms + 1):
        state = base.device.state_dir.parent / f"{base.device.state_dir.name}-k{k:03d}"
        cfg = replace(base, device=replace(base.device, state_dir=state))
        res = one_offset(cfg, k, args.room_db, args.slow_commit_ms / 1000)
        print(json.dumps(res), flush=True)
        failed += "error" in res
        if failed >= 3:
            print("kill sweep: giving up after 3 runs that could not be carried out",
                  file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
