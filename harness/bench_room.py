"""The alert bench's control room, in a process of its own (as in a deployment).

Run by harness.bench, not by hand. It is the reference ControlRoomReceiver with auto-ack; each
line it prints is `<kind> <key> <perf_counter>`, stamped in this process the moment the room
knows (`alert <alert_id> <t>` for a new alert, `status <device_id> <t>` when a device's status
arrives). CLOCK_MONOTONIC (perf_counter on Linux) is one clock for every process on a
machine, so the bench subtracts its own press time directly. Lines on stdin are operator
commands (`end <alert_id>`); end of input stops the room.

Why a process: kiosk and room in one Python process share one GIL, and each would make the
other's threads wait for it; in the field they are different machines.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

from pinkbutton.firmware.cliargs import OneLineParser, positive_int
from pinkbutton.firmware.transport import TlsFiles
from pinkbutton.tools.controlroom.intake import IntakeLimits
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.pki import ca_paths, controlroom_paths

# The bench kiosk presses again as soon as it is idle (~50 presses a second), far beyond what
# a kiosk in the field sends (IntakeLimits' defaults: 2 alerts a second). Its budget here keeps
# it on the normal path, as a well-behaved kiosk; the bench's flooding device (1000 a second)
# is still 10 times over it.
LIMITS = IntakeLimits(rate_per_s=100.0, burst=20)


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m harness.bench_room", description=(__doc__ or "").partition("\n")[0])
    parser.add_argument("--port", type=positive_int, required=True)
    parser.add_argument("--pki", type=Path, required=True)
    parser.add_argument("--db", type=Path, required=True)
    args = parser.parse_args(argv)
    lock = threading.Lock()

    def emit(kind: str, key: str, at: float) -> None:
        with lock:
            sys.stdout.write(f"{kind} {key} {at:.9f}\n")
            sys.stdout.flush()

    def listener(kind: str, data: dict) -> None:
        now = time.perf_counter()  # first thing: the listener's own work is not latency
        if kind == "alert" and data.get("new"):
            emit("alert", data["alert_id"], now)
        elif kind == "status":
            emit("status", data.get("device_id", "?"), now)

    identity = controlroom_paths(args.pki)
    room = ControlRoomReceiver(
        host="localhost", port=args.port,
        tls=TlsFiles(ca_paths(args.pki).cert, identity.cert, identity.key),
        db_path=args.db, client_id="controlroom-bench", auto_ack=True, operator="bench",
        device_certs=args.pki / "devices", out=lambda line: None, listeners=[listener],
        limits=LIMITS,
    )  # fmt: skip

    def commands() -> None:
        for line in sys.stdin:
            if line.strip():
                room.command(line.strip())
        room.stop()

    threading.Thread(target=commands, name="bench-room-stdin", daemon=True).start()
    room.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
