"""`pinkbutton`: the kiosk's console script.

Exit codes follow the gpiozero CLI convention: 0 ok, 1 failure at run time, 2 bad usage or bad
configuration (argparse already exits 2 for usage errors).
"""

from __future__ import annotations

import argparse
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path

from pinkbutton.firmware.cliargs import OneLineParser, add_version, quiet_on_closed_pipe
from pinkbutton.firmware.config import (
    ConfigError,
    check_state_dir,
    load_config,
    verify_certificates,
)
from pinkbutton.firmware.logsetup import configure_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_CONFIG = 2

log = logging.getLogger("pinkbutton")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="pinkbutton", description="Pink Button kiosk firmware.")
    add_version(parser)
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=OneLineParser
    )

    check = commands.add_parser(
        "check-config", help="validate a config file and its certificates, then exit"
    )
    check.add_argument("file", metavar="FILE", type=Path, help="the kiosk TOML config to check")

    enroll = commands.add_parser(
        "enroll", help="make this kiosk's private key (kept here) and a CSR for the control room"
    )
    from pinkbutton.firmware.enroll import add_enroll_arguments

    add_enroll_arguments(enroll)  # the same options as `pinkbutton-diag enroll`

    run = commands.add_parser("run", help="run the kiosk")
    run.add_argument("--config", required=True, metavar="FILE", type=Path,
                     help="the kiosk TOML config (see examples/kiosk.toml)")
    run.add_argument(
        "--hal",
        choices=("fake", "pi"),
        default=None,
        help="override [hal] backend from the config",
    )
    return parser


def _check_config(file: Path) -> int:
    now = datetime.now(UTC)
    config = load_config(file, check_certificates=False)
    check_state_dir(config)
    status = verify_certificates(config, now=now)
    print(
        f"{file}: ok — device {config.device.id} at {config.device.site_name}, "
        f"broker {config.broker.host}:{config.broker.port}, certificate valid until "
        f"{status.not_after:%Y-%m-%d} ({status.days_left(now)} days)"
    )
    return EXIT_OK


def _enroll(file: Path, new_key: bool) -> int:
    from pinkbutton.firmware.enroll import enroll_config, next_step

    try:
        config, done = enroll_config(file, new_key)
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        print(f"pinkbutton: cannot write{where}: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"key:  {done.key} ({'new' if done.new_key else 'kept'}, 0600: it never leaves this kiosk)")
    print(f"csr:  {done.csr} (CN {config.device.id})")
    print(f"next: {next_step(config, done)}")
    return EXIT_OK


def _run(file: Path, hal: str | None) -> int:
    from pinkbutton.firmware.outbox import OutboxError
    from pinkbutton.hal.base import HalError

    config = load_config(file)
    configure_logging(config.log.level)  # no timestamp of ours under journald: it adds one
    try:
        from pinkbutton.firmware.app import run_kiosk  # lazy: pulls in transport, HAL and media

        return run_kiosk(config, hal_override=hal)
    except HalError as e:  # wrong backend for this machine, pin busy...: a config problem
        print(f"pinkbutton: {config.path}: [hal] {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except OutboxError as e:
        print(f"pinkbutton: {e}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        log.info("interrupted")
        return EXIT_FAILURE
    except Exception as e:  # the last line of defence: one log line, not a traceback
        log.error("unexpected error: %s: %s", type(e).__name__, e)
        log.debug("traceback of the unexpected error", exc_info=True)
        return EXIT_FAILURE


@quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "check-config":
            return _check_config(args.file)
        if args.command == "enroll":
            return _enroll(args.config, args.new_key)
        return _run(args.config, args.hal)
    except ConfigError as e:
        print(f"pinkbutton: {e}", file=sys.stderr)
        return EXIT_BAD_CONFIG


if __name__ == "__main__":
    raise SystemExit(main())
