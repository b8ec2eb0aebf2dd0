"""Run a real mosquitto 2 with the Pink Button mTLS + ACL setup (demo, tests, benchmarks).

The broker only talks TLS with client certificates; the certificate CN becomes the MQTT
username, and the ACL keys on it, so a device can only publish under its own id.
`Mosquitto` (simulator/broker.py, shipped: `pinkbutton-sim scenario` runs it too) is a
context manager around one broker process with its own work dir (config, ACL, persistence,
log), so fault tests can kill and restart it without touching anyone else's broker. This
module is the tests' and harnesses' name for it, and `python -m harness.broker run`.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pinkbutton.firmware.cliargs import OneLineParser, add_version, int_in
from pinkbutton.simulator.broker import (  # noqa: F401 - the names tests and harnesses import
    HOST,
    BrokerError,
    Mosquitto,
    _mqtt311_connect,
    _recv_exactly,
    dropin_lines,
    find_mosquitto,
    free_port,
    write_broker_config,
)

# --- CLI ---------------------------------------------------------------------------------------


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="python -m harness.broker", description=(__doc__ or "").partition("\n")[0],
        epilog="run prints the port it listens on alone on stdout (for scripts), then one line "
               "on stderr with host, port and log file; it runs until Ctrl-C or SIGTERM.")
    add_version(parser)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="run mosquitto in the foreground until Ctrl-C")
    run.add_argument("--pki", type=Path, required=True, help="dir made by 'pinkbutton-pki init'")
    run.add_argument("--dir", type=Path, required=True, help="work dir: config, ACL, data, log")
    run.add_argument("--port", type=int_in(1, 65535), default=None,
                     help="listening port (default: a free ephemeral port)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    broker = Mosquitto(args.dir, args.pki, args.port)
    # SIGTERM from a Makefile or supervisor should stop mosquitto as cleanly as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        broker.start()
        print(broker.port, flush=True)  # stdout: just the port, for scripts
        print(
            f"mosquitto on {broker.host}:{broker.port} (mTLS), log {broker.log_path}; Ctrl-C stops",
            file=sys.stderr,
            flush=True,
        )
        while broker.running:
            time.sleep(0.5)
        print(f"error: mosquitto exited\n{broker.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    except (BrokerError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        broker.stop()


if __name__ == "__main__":
    sys.exit(main())
