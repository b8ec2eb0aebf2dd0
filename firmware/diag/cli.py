"""`pinkbutton-diag`: is this kiosk working, and if not, what exactly is broken?

Exit codes: 0 every check passed, 1 a check failed, 2 bad usage or a config that cannot be
read (one line on stderr, nothing checked). `--json` on every verb prints
`{"ok": bool, "checks": [{"name", "ok", "detail", "fix"}]}` instead of one ✓/✗ line per check.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from pinkbutton.firmware.cliargs import (
    OneLineParser,
    add_version,
    positive_float,
    positive_int,
    quiet_on_closed_pipe,
)
from pinkbutton.firmware.config import Config, ConfigError, check_state_dir, load_config
from pinkbutton.firmware.diag import control
from pinkbutton.firmware.diag.checks import Check, certificate_check, failed, passed

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "pinkbutton-diag"

# Controls (C0, DEL, C1), bidi overrides/isolates, line/paragraph separators, lone surrogates:
# text from the config, the broker or a device library is shown, never obeyed by the terminal.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")


def shown(text: object) -> str:
    """One safe line: unsafe characters become visible escapes (\\x1b, \\u202e)."""
    def escape(m: re.Match[str]) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    return _UNSAFE.sub(escape, str(text))


def _snapshot_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise argparse.ArgumentTypeError(f"{text!r} must end in .png, .jpg or .jpeg")
    return path


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog=PROG, description="Field diagnostics for a Pink Button kiosk.")
    add_version(parser)
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB",
                                  parser_class=OneLineParser)

    def json_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument("--json", action="store_true", help="print a JSON document")

    check = verbs.add_parser("check-config", help="the config file and its certificates")
    check.add_argument("file", metavar="FILE", type=Path, help="the kiosk TOML config")
    json_flag(check)

    selftest = verbs.add_parser(
        "selftest", help="test the hardware, disk, certificate and network (firmware stopped)")
    selftest.add_argument("--config", required=True, metavar="FILE", type=Path,
                          help="the kiosk TOML config")
    selftest.add_argument("--press-timeout", metavar="S", type=positive_float, default=None,
                          help="ask the technician to press the button within S seconds")
    selftest.add_argument("--snapshot", metavar="FILE", type=_snapshot_path, default=None,
                          help="save a camera frame as a .png or .jpg")
    json_flag(selftest)

    status = verbs.add_parser("status", help="ask the running firmware how it is")
    status.add_argument("--config", required=True, metavar="FILE", type=Path,
                        help="the kiosk TOML config (its state_dir holds control.sock)")
    json_flag(status)

    test_alert = verbs.add_parser(
        "test-alert", help="the running kiosk sends an alert of kind test: the round trip")
    test_alert.add_argument("--config", required=True, metavar="FILE", type=Path,
                            help="the kiosk TOML config (its state_dir holds control.sock)")
    test_alert.add_argument("--timeout", metavar="S", type=positive_float, default=10.0,
                            help="seconds to wait for the control room's receipt (default 10)")
    json_flag(test_alert)

    logs = verbs.add_parser("logs", help="the kiosk's recent log (journalctl -u pinkbutton)")
    logs.add_argument("-n", "--lines", metavar="N", type=positive_int, default=50,
                      help="how many of the latest entries (default 50)")
    logs.add_argument("--since", metavar="WHEN", default=None,
                      help="only entries since then, as journalctl takes it: "
                           "'2026-12-01 08:00', 'today', --since=-1h")
    logs.add_argument("-f", "--follow", action="store_true",
                      help="keep printing new entries until Ctrl-C")
    json_flag(logs)

    from pinkbutton.firmware.enroll import add_enroll_arguments

    enroll = verbs.add_parser(
        "enroll", help="make this kiosk's private key (kept here) and a CSR for the control room")
    add_enroll_arguments(enroll)  # the same options as `pinkbutton enroll`
    json_flag(enroll)
    return parser


# -- verbs -------------------------------------------------------------------------------------


def check_config(file: Path) -> list[Check]:
    """Raises ConfigError for a file that cannot be read as a config (exit 2)."""
    from pinkbutton.firmware.diag.selftest import certificate_selftest

    config = load_config(file, check_certificates=False)
    check_state_dir(config)
    return [passed("config", f"{file}: device {config.device.id} at {config.device.site_name}, "
                   f"broker {config.broker.host}:{config.broker.port}"),
            certificate_selftest(config)]


def enroll(file: Path, new_key: bool = False) -> tuple[list[Check], dict]:
    """`pinkbutton enroll`'s code (firmware/enroll.py) as checks. Raises ConfigError (exit 2);
    a file that cannot be written is a failed check."""
    from pinkbutton.firmware.enroll import enroll_config, next_step

    try:
        config, done = enroll_config(file, new_key)
    except OSError as e:
        where = f" {e.filename}" if e.filename else ""
        return [failed("key", f"cannot write{where}: {e.strerror or e}",
                       "run as the kiosk's user (sudo -u pinkbutton) or root")], {}
    return [passed("key", f"{done.key} ({'new' if done.new_key else 'kept'}, 0600: it never "
                   "leaves this kiosk)"),
            passed("csr", f"{done.csr} (CN {config.device.id})")], {
        "key": str(done.key), "csr": str(done.csr), "new_key": done.new_key,
        "next": next_step(config, done)}


#: After the room's receipt, how long to wait for its automatic ack and end of a test.
TEST_ANSWER_WAIT_S = 3.0
TEST_POLL_S = 0.02


def test_alert(config: Config, timeout_s: float = 10.0) -> tuple[list[Check], dict | None]:
    """Ask the running kiosk (control socket) for an alert of kind `test` and follow it: the
    outbox write, the broker's PUBACK, the room's receipt (required within `timeout_s`), its
    ack and end when it answers tests (it does: tools/controlroom). Never opens a second MQTT
    connection under the kiosk's identity: with the firmware stopped it only says so."""
    path = control.socket_path(config.device.state_dir)
    try:
        alert_id = str(control.request(path, "test-alert", key="test_alert")["alert_id"])
    except control.NotRunning:
        return [failed("firmware", "the kiosk is not running: no test alert sent",
                       "start it (sudo systemctl start pinkbutton), then test again")], None
    except PermissionError:
        return [failed("firmware", f"not allowed to ask it on {path}",
                       "run as the kiosk's user (sudo -u pinkbutton) or root")], None
    except control.Refused as e:
        return [failed("test alert", f"refused: {e.error}",
                       "wait until the kiosk is idle, then test again")], None
    except (OSError, ValueError, KeyError) as e:
        return [failed("firmware", f"no valid answer on {path}: {e}",
                       "restart the firmware (sudo systemctl restart pinkbutton)")], None
    start = time.monotonic()
    test: dict = {"alert_id": alert_id, "ms": {}}
    answer_by: float | None = None
    while True:
        try:
            got = control.request(path, "status").get("test_alert")
        except (control.NotRunning, OSError, ValueError):
            got = None  # restarting: keep asking until the time is up
        if isinstance(got, dict) and got.get("alert_id") == alert_id:
            test = got
        ms = _stages(test)
        now = time.monotonic()
        if test.get("refused") or "end" in ms:
            break
        if "receipt" in ms and answer_by is None:
            answer_by = now + TEST_ANSWER_WAIT_S
        if now >= (answer_by if answer_by is not None else start + timeout_s):
            break
        time.sleep(TEST_POLL_S)
    return _test_alert_checks(test, timeout_s), test


def _stages(test: dict) -> dict:
    ms = test.get("ms")
    return ms if isinstance(ms, dict) else {}


def _test_alert_checks(test: dict, timeout_s: float) -> list[Check]:
    ms = _stages(test)
    aid = test.get("alert_id")
    if test.get("refused"):
        return [failed("test alert", f"{aid} refused: {test['refused']}",
                       "wait until the kiosk is idle, then test again")]

    def after(stage: str) -> str:
        return f"after {ms[stage]:.1f} ms"

    checks = [passed("test alert", f"{aid} sent by the kiosk as kind test (never dispatched)")]
    checks.append(passed("outbox", f"written (fsync) {after('persisted')}") if "persisted" in ms
                  else failed("outbox", "the kiosk did not record the test alert",
                              "see `pinkbutton-diag logs`"))
    if "delivered" in ms:
        checks.append(passed("broker", f"PUBACK {after('delivered')}"))
    elif "receipt" not in ms:
        checks.append(failed("broker", f"no PUBACK within {timeout_s:g} s",
                             "the kiosk is not connected: `pinkbutton-diag status`, "
                             "`pinkbutton-diag selftest` (network)"))
    if "receipt" in ms:
        checks.append(passed("control room", f"stored it, receipt back at the kiosk "
                             f"{after('receipt')} (round trip press to room and back)"))
    else:
        checks.append(failed("control room", f"no receipt within {timeout_s:g} s",
                             "is the control room running? the test alert stays in the "
                             "kiosk's outbox until the room confirms it"))
        return checks
    if "ack" in ms:
        who = f" by {test['operator']}" if test.get("operator") else ""
        ended = f", ended {after('end')}" if "end" in ms else ""
        checks.append(passed("ack", f"acknowledged{who} {after('ack')}{ended}"))
    else:
        checks.append(passed("ack", f"none within {TEST_ANSWER_WAIT_S:g} s of the receipt "
                             "(this control room does not answer tests)"))
    return checks


def _firmware_running(config: Config) -> Check | None:
    """A failed check when the firmware runs (or we cannot tell), None when it is stopped."""
    path = control.socket_path(config.device.state_dir)
    try:
        control.request(path, "status")
    except control.NotRunning:
        return None
    except PermissionError:
        return failed("firmware", f"cannot tell whether the firmware runs: no permission for "
                      f"{path}", "run as the kiosk's user (sudo -u pinkbutton) or root")
    except (OSError, ValueError):
        pass  # something answers on the socket, if oddly: the firmware is there
    return failed("firmware", "the firmware is running: a self-test would fight it for "
                  "the button, camera and microphone",
                  "use `pinkbutton-diag status`, or stop the firmware first "
                  "(sudo systemctl stop pinkbutton)")


def selftest(config: Config, backend=None, *, press_timeout_s: float | None = None,
             snapshot: Path | None = None, say=print) -> list[Check]:
    from pinkbutton.firmware.diag.selftest import run_selftest

    if (running := _firmware_running(config)) is not None:
        return [running]
    if backend is None:
        from pinkbutton.hal import get_backend

        backend = get_backend(config.hal.backend)  # HalError: a config problem (exit 2)
    return run_selftest(config, backend, press_timeout_s=press_timeout_s, snapshot=snapshot,
                        say=say)


def status(config: Config, now: datetime | None = None) -> tuple[list[Check], dict | None]:
    path = control.socket_path(config.device.state_dir)
    try:
        s = control.request(path, "status")
    except control.NotRunning:
        return [failed("firmware", f"not running (nothing answers on {path})",
                       "start it (sudo systemctl start pinkbutton) or run "
                       "`pinkbutton-diag selftest`")], None
    except PermissionError:
        return [failed("firmware", f"not allowed to ask it on {path}",
                       "run as the kiosk's user (sudo -u pinkbutton) or root")], None
    except (OSError, ValueError) as e:
        return [failed("firmware", f"no valid answer on {path}: {e}",
                       "restart the firmware (sudo systemctl restart pinkbutton)")], None
    checks = [passed("firmware", f"running for {_duration(s.get('uptime_s'))}, state "
                     f"{s.get('state')}, firmware {s.get('firmware')}, device "
                     f"{s.get('device_id')} at {s.get('site_name')}")]
    faults = s.get("faults") or []
    checks.append(passed("faults", "none") if not faults else failed(
        "faults", ", ".join(map(str, faults)), "see `journalctl -u pinkbutton` for each fault"))
    broker = s.get("broker")
    checks.append(passed("broker", f"connected to {broker}") if s.get("broker_connected")
                  else failed("broker", f"not connected to {broker}",
                              "check the network; `journalctl -u pinkbutton` says why"))
    depth = s.get("outbox_depth") or 0
    checks.append(passed("outbox", "empty: every alert confirmed by the control room")
                  if not depth else failed(
                      "outbox", f"{depth} alert(s) not yet confirmed by the control room",
                      "check the broker connection; they are re-sent until confirmed"))
    last = s.get("last_alert")
    if last:
        who = f" by {last['operator']}" if last.get("operator") else ""
        detail = f"{last.get('alert_id')} at {last.get('at')}: {last.get('outcome')}{who}"
    else:
        detail = "none since the firmware started"
    checks.append(passed("last alert", detail))
    checks.append(passed("evidence", f"{s.get('pending_evidence', 0)} incident(s) of local "
                         "evidence waiting for the control room's confirmation"))
    if s.get("last_selftest_ok") is False:
        names = s.get("last_selftest_failed") or []
        what = f": {', '.join(str(n) for n in names)}" if isinstance(names, list) and names else ""
        checks.append(failed("selftest", f"the self-test at {s.get('last_selftest_at')} "
                             f"failed{what}", "see the faults above"))
    elif s.get("last_selftest_ok"):
        checks.append(passed("selftest", f"passed at {s.get('last_selftest_at')}"))
    not_after = s.get("certificate_not_after")
    if not_after:
        end = datetime.fromisoformat(str(not_after).replace("Z", "+00:00"))
        checks.append(certificate_check(end, now or datetime.now(UTC)))
    else:
        checks.append(failed("certificate", "the firmware could not read its certificate",
                             "run `pinkbutton-diag check-config`"))
    return checks, s


def _duration(seconds: object) -> str:
    s = int(float(seconds)) if isinstance(seconds, int | float) else 0
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return f"{d}d {h}h {m}m" if d else f"{h}h {m}m {s}s" if h else f"{m}m {s}s"


# -- output ------------------------------------------------------------------------------------


def render(checks: Sequence[Check], *, colour: bool) -> str:
    lines = []
    for c in checks:
        mark = "✓" if c.ok else "✗"
        if colour:
            mark = f"\x1b[32m{mark}\x1b[0m" if c.ok else f"\x1b[31m{mark}\x1b[0m"
        line = f"{mark} {shown(c.name)}: {shown(c.detail)}"
        if c.fix:
            line += f" — try: {shown(c.fix)}"
        lines.append(line)
    return "\n".join(lines)


def document(checks: Sequence[Check], extra: dict | list | None = None,
             key: str = "status") -> dict:
    doc: dict = {"ok": all(c.ok for c in checks), "checks": [c.as_json() for c in checks]}
    if extra is not None:
        doc[key] = extra
    return doc


def _logs(args: argparse.Namespace) -> int:
    from pinkbutton.firmware.diag.logs import LogsUsageError, follow_logs, read_logs

    def emit(line: str) -> None:
        print(line if args.json else shown(line), flush=True)

    try:
        if args.follow:
            check = follow_logs(args.lines, args.since, as_json=args.json, emit=emit)
            result = None
        else:
            result = read_logs(args.lines, args.since, as_json=args.json)
            check = result.check
    except LogsUsageError as e:
        print(f"{PROG}: usage error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        if result is not None or not check.ok:  # --follow --json: the records were the output
            print(json.dumps(document([check], result.records if result else [], "records"),
                             indent=2))
    else:
        for line in result.lines if result else []:
            print(shown(line))
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(render([check], colour=colour))
    return EXIT_OK if check.ok else EXIT_FAILED


@quiet_on_closed_pipe
def main(argv: list[str] | None = None, *, backend=None) -> int:
    """`backend`: a HAL backend to use instead of the config's (tests: a FakeBackend in a
    bad mode)."""
    args = _parser().parse_args(argv)
    as_json = args.json

    def say(text: str) -> None:  # prompts go to stderr so --json stays one document
        print(text, file=sys.stderr if as_json else sys.stdout, flush=True)

    extra, extra_key, after = None, "status", None
    try:
        if args.verb == "check-config":
            checks = check_config(args.file)
        elif args.verb == "test-alert":
            config = load_config(args.config, check_certificates=False)
            checks, extra = test_alert(config, args.timeout)
            extra_key = "test_alert"
        elif args.verb == "logs":
            return _logs(args)
        elif args.verb == "enroll":
            checks, extra = enroll(args.config, args.new_key)
            extra_key, after = "enroll", extra.get("next")
            extra = extra or None
        else:
            config = load_config(args.config, check_certificates=False)
            if args.verb == "selftest":
                checks = selftest(config, backend, press_timeout_s=args.press_timeout,
                                  snapshot=args.snapshot, say=say)
            else:
                checks, extra = status(config)
    except ConfigError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # noqa: BLE001 - HalError (backend) and the unexpected: one line
        from pinkbutton.hal.base import HalError

        if isinstance(e, HalError):
            print(f"{PROG}: {args.config}: [hal] {shown(e)}", file=sys.stderr)
            return EXIT_USAGE
        print(f"{PROG}: unexpected error: {type(e).__name__}: {shown(e)}", file=sys.stderr)
        return EXIT_FAILED
    if as_json:
        print(json.dumps(document(checks, extra, extra_key), indent=2))
    else:
        colour = sys.stdout.isatty() and not os.environ.get("NO_COLOR")
        print(render(checks, colour=colour))
        if after:
            print(f"next: {shown(after)}")
    return EXIT_OK if all(c.ok for c in checks) else EXIT_FAILED


if __name__ == "__main__":
    raise SystemExit(main())
