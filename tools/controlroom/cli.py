"""`pinkbutton-controlroom`: run the reference receiver, or report on its incidents.

Exit codes: 0 ok, 1 failure, 2 bad usage or configuration.
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import NamedTuple

from pinkbutton.firmware.cliargs import OneLineParser, add_version, int_in, seconds
from pinkbutton.firmware.config import key_exposed
from pinkbutton.firmware.transport import TlsFiles, TransportError
from pinkbutton.tools.controlroom.db import is_url, redacted
from pinkbutton.tools.controlroom.escape import shown
from pinkbutton.tools.controlroom.store import FleetRow, IncidentStore, StoreError
from pinkbutton.tools.controlroom.terminal import location, ms, timeline_text


class UsageError(Exception):
    pass


def _tls(args) -> TlsFiles:
    pki = Path(args.pki) if args.pki else None
    ca = Path(args.ca) if args.ca else (pki / "ca.pem" if pki else None)
    cert = Path(args.cert) if args.cert else (pki / "controlroom.pem" if pki else None)
    key = Path(args.key) if args.key else (pki / "controlroom.key" if pki else None)
    for name, path in (("--ca", ca), ("--cert", cert), ("--key", key)):
        if path is None:
            raise UsageError(f"{name} is required (or --pki DIR holding ca.pem, controlroom.pem/.key)")
        if not stat.S_ISREG(_stat(name, path).st_mode):
            raise UsageError(f"{name} {path}: not a regular file")
    assert ca is not None and cert is not None and key is not None  # the loop raised otherwise
    if (problem := key_exposed(key)) is not None:  # refused as the kiosk refuses its own
        raise UsageError(f"--key {problem}")
    return TlsFiles(ca, cert, key)


def _stat(name: str, path: Path) -> os.stat_result:
    try:
        return path.stat()
    except FileNotFoundError:
        raise UsageError(f"{name} {path}: no such file") from None
    except OSError as e:  # an unreadable --pki directory, a file where a directory should be
        raise UsageError(f"{name} {path}: {(e.strerror or str(e)).lower()}") from None


def _db(args) -> Path | str:
    """--db: a SQLite file (Path) or a postgresql:// URL (str, checked when connecting)."""
    if is_url(args.db):
        return args.db
    db = Path(args.db)
    try:
        if db.is_dir():
            raise UsageError(f"--db {db}: is a directory; give the database file")
    except OSError as e:
        raise UsageError(f"--db {db}: {(e.strerror or str(e)).lower()}") from None
    return db


def _run(args) -> int:
    from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver

    tls = _tls(args)
    _db(args)
    device_certs = Path(args.device_certs) if args.device_certs else None
    if device_certs is not None and not device_certs.is_dir():
        raise UsageError(f"--device-certs {device_certs}: no such directory")
    viewer = None
    if args.view:
        from pinkbutton.tools.controlroom.viewer import LiveViewer, ViewerUnavailable

        if args.no_evidence:
            raise UsageError("--view needs media: drop --no-evidence")
        try:
            viewer = LiveViewer()
        except ViewerUnavailable as e:
            raise UsageError(str(e)) from None
    receiver = ControlRoomReceiver(
        host=args.host, port=args.port, tls=tls, db_path=args.db,
        client_id=args.client_id or f"controlroom-{socket.gethostname()}",
        group=args.group, auto_ack=args.auto_ack, operator=args.operator,
        device_certs=device_certs, out=lambda s: print(s, flush=True),
        session_expiry_s=args.session_expiry, viewer=viewer,
        evidence_dir=None if args.no_evidence else Path(args.evidence or
                                                       _evidence_default(args)),
    )
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: receiver.stop())
    if args.exit_after:
        threading.Timer(args.exit_after, receiver.stop).start()
    if sys.stdin is not None and sys.stdin.isatty():
        def keyboard() -> None:  # keyboard thread: only enqueues
            for line in sys.stdin:
                receiver.command(line)
        threading.Thread(target=keyboard, name="operator-input", daemon=True).start()
        print("type: list | ack ID | end ID | extend ID [SECONDS] | selftest DEVICE|all",
              flush=True)
    evidence = "no evidence" if receiver.recorder is None else \
        f"evidence in {receiver.recorder.directory}"
    print(f"control room listening on {args.host}:{args.port} (db {redacted(args.db)}, {evidence}, "
          f"{'auto-ack' if args.auto_ack else 'operator ack'})", flush=True)
    receiver.run()
    return 0


def _evidence_default(args) -> Path:
    """Evidence beside a SQLite file; with PostgreSQL, ./evidence (give --evidence: a
    directory every receiver of the group reaches)."""
    return Path("evidence") if is_url(args.db) else Path(args.db).parent / "evidence"


def _existing_db(args) -> Path | str:
    db = _db(args)
    if isinstance(db, Path) and not db.is_file():
        raise UsageError(f"--db {args.db}: no such file")
    return db


def _report(args) -> int:
    _existing_db(args)
    since, until = args.since, args.until
    if since and until and since.iso >= until.iso:
        raise UsageError(f"--since {since.typed} is not before --until {until.typed}")
    if args.period is None and (args.public or args.tz):
        raise UsageError(f"{'--public' if args.public else '--tz'} needs --period day|week|month")
    store = IncidentStore(args.db)
    try:
        if args.period is not None:
            return _accountability(args, store)
        incidents = store.incidents_received(since and since.iso, until and until.iso)
        if args.csv:
            _report_csv(incidents)
            return 0
        window = "".join(f" {w} {b.typed}" for w, b in (("since", since), ("until", until))
                         if b)
        # Every press: the kiosk's own count (re-announcements, pressed_again events) and
        # every press of the alerts folded into the incident.
        print(f"{len(incidents)} incident(s) in {redacted(args.db)}{window}, "
              f"{sum(i.presses for i in incidents)} press(es) in all")
        for inc in incidents:  # device-supplied text only through shown(): one safe line
            folded = f" ({inc.folded} alert(s) folded in)" if inc.folded else ""
            print(f"{inc.alert_id}  {shown(inc.device_id)}  {shown(inc.site_name) or '?'}  "
                  f"{shown(inc.kind, 32)}  {location(*store.location(inc.alert_id))}  "
                  f"latency {ms(inc.latency_ms)}  presses {inc.presses}{folded}  "
                  f"announces {inc.announces}"
                  f"{'  ESCALATED' if inc.escalated else ''}{'  FLAGGED' if inc.problems else ''}")
            if inc.problems:
                print(f"    flagged: {shown('; '.join(inc.problems), limit=2000)}")
            for at, what, detail in store.timeline(inc.alert_id):
                kiosk = "kiosk: " if what == "event" else ""
                print(f"    {shown(at, 40)}  {kiosk}{timeline_text(what, detail)}")
    finally:
        store.close()
    return 0


# -- the accountability report (issue 12 item 6): `report --period` ----------------------

def _accountability(args, store: IncidentStore) -> int:
    """The aggregated table per site and period (tools/controlroom/accountability.py)."""
    from pinkbutton.tools.controlroom import accountability as acc

    try:
        tz = args.tz or "UTC"
        acc.zone(tz)
        since = acc.parse_day(args.since.typed, tz) if args.since else None
        until = acc.parse_day(args.until.typed, tz) if args.until else None
        report = acc.from_store(store, args.period, since, until, tz, time.time(),
                                args.public)
    except acc.ReportError as e:
        raise UsageError(str(e)) from None
    if args.csv:
        sys.stdout.write(acc.csv_text(report))
    else:
        print("\n".join(acc.text_lines(report)))
    return 0


# -- end of the accountability report ----------------------------------------------------

CSV_COLUMNS = ("id", "device", "site", "kind", "pressed", "received", "acked", "ended",
               "presses", "latency ms", "problems")


def _cell(value: object) -> str:
    """Device text for a spreadsheet: escaped as on the terminal, and never a formula."""
    text = "" if value is None else shown(value, limit=2000)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def _report_csv(incidents) -> None:
    import csv

    out = csv.writer(sys.stdout, lineterminator="\n")
    out.writerow(CSV_COLUMNS)
    for inc in incidents:
        out.writerow([inc.alert_id, _cell(inc.device_id), _cell(inc.site_name), _cell(inc.kind),
                      _cell(inc.pressed_at), inc.received_at, inc.acked_at or "",
                      inc.ended_at or "", inc.presses,
                      "" if inc.latency_ms is None else round(inc.latency_ms),
                      _cell("; ".join(inc.problems))])


class Bound(NamedTuple):
    typed: str  # as the operator typed it
    iso: str  # as the store keeps times (ISO 8601 UTC, ms)


def utc_date(until: bool):
    """An argparse type: `YYYY-MM-DD` (a whole UTC day: --until includes it) or an ISO 8601
    time (UTC unless it says otherwise)."""
    from datetime import UTC, datetime, timedelta

    from pinkbutton.hal.clock import iso8601

    def convert(text: str) -> Bound:
        try:
            at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not a date: {text!r} (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], UTC)") from None
        if at.tzinfo is None:
            at = at.replace(tzinfo=UTC)
        if until and len(text.strip()) == 10:  # a date: through the end of that day
            at += timedelta(days=1)
        return Bound(text.strip(), iso8601(at.timestamp()))

    return convert


#: A certificate with fewer days left than this is shown WARN (as pinkbutton-diag fails it).
CERT_WARN_DAYS = 30


def fleet_line(row: FleetRow, now: float) -> str:
    """One line per kiosk; every device-supplied value through shown()."""
    beat = row.heartbeat or {}
    age = _age(row.heartbeat_at, now)
    interval = beat.get("interval_s")
    online = row.online
    if age is not None and isinstance(interval, int | float):
        if age > 2 * interval + 1:
            online = False  # heartbeats stopped (the room may not have been running to say so)
        elif online is None:
            online = True
    parts = [shown(row.device_id),
             "?" if online is None else ("online" if online else "OFFLINE")]
    parts.append(f"heartbeat {_ago(age)}" if age is not None else "heartbeat never")
    if row.selftest_at is None:
        parts.append("selftest never")
    elif row.selftest_ok:
        parts.append(f"selftest ok {shown(row.selftest_at, 40)}")
    else:
        failed = f" ({shown(row.selftest_failed, 200)})" if row.selftest_failed else ""
        parts.append(f"selftest FAILED {shown(row.selftest_at, 40)}{failed}")
    parts.append(f"firmware {shown(beat.get('firmware'), 32) if beat.get('firmware') else '?'}")
    days = beat.get("cert_days_left")
    if isinstance(days, int) and not isinstance(days, bool):
        parts.append(f"cert {days} d" + (" WARN" if days < CERT_WARN_DAYS else ""))
    else:
        parts.append("cert ?")
    temp, disk = beat.get("temperature_c"), beat.get("disk_free_mb")
    parts.append(f"temp {temp:.1f} C" if isinstance(temp, int | float) else "temp ?")
    parts.append(f"disk {disk:.0f} MiB free" if isinstance(disk, int | float) else "disk ?")
    if row.selftest_why and not row.selftest_ok:
        parts.append(f"why: {shown(row.selftest_why, 300)}")
    return "  ".join(parts)


def _age(iso: str | None, now: float) -> float | None:
    from pinkbutton.tools.controlroom.receiver import parse_iso

    at = parse_iso(iso) if iso else None
    return None if at is None else max(0.0, now - at)


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86400:.0f} d ago"


def _fleet(args) -> int:
    _existing_db(args)
    store = IncidentStore(args.db)
    try:
        rows = store.fleet()
    finally:
        store.close()
    print(f"{len(rows)} kiosk(s) in {redacted(args.db)}")
    now = time.time()
    for row in rows:
        print(fleet_line(row, now))
    return 0


# -- the web console (issue 12): `serve` and `user` ---------------------------------------

def _serve(args) -> int:
    try:
        from pinkbutton.tools.controlroom.web import serve as web
        from pinkbutton.tools.controlroom.web.accounts import AccountError, Accounts
        from pinkbutton.tools.controlroom.web.app import create_app
    except ImportError as e:
        raise UsageError(f"serve needs the web console's packages (missing {e.name}): "
                         "pip install 'pinkbutton[room]'") from None
    try:
        host, port = web.parse_listen(args.listen)
    except web.ServeError as e:
        raise UsageError(str(e)) from None
    if args.view:
        raise UsageError("--view is `run`'s ffplay viewer; the console shows the incident")
    certfile = keyfile = None
    if args.insecure_http:
        if not web.is_loopback(host):
            raise UsageError(f"--insecure-http only on a loopback address, not {host}: "
                             "officers' passwords would cross the network in clear")
    else:
        pki = Path(args.pki) if args.pki else None
        certfile = Path(args.web_cert) if args.web_cert else (
            pki / "pinkbutton-console.pem" if pki else None)
        keyfile = Path(args.web_key) if args.web_key else (
            pki / "pinkbutton-console.key" if pki else None)
        for name, path in (("--web-cert", certfile), ("--web-key", keyfile)):
            if path is None or not path.is_file():
                raise UsageError(f"{name} {path or '(none)'}: no such file; issue the console's "
                                 "certificate with: pinkbutton-pki web DIR --host NAME "
                                 "(or --insecure-http on 127.0.0.1 for development)")
        assert keyfile is not None
        if (problem := key_exposed(keyfile)) is not None:
            raise UsageError(f"--web-key {problem}")
    map_tiles = Path(args.map_tiles) if args.map_tiles else None  # the map's own tiles
    if map_tiles is not None and not map_tiles.is_dir():
        raise UsageError(f"--map-tiles {map_tiles}: no such directory (it holds Z/X/Y.png)")
    _db(args)
    evidence_dir = None if args.no_evidence else Path(args.evidence or
                                                     _evidence_default(args))
    receiver = hub = None
    if not args.web_only:
        from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
        from pinkbutton.tools.controlroom.web.live import LiveHub

        # The live view: the receiver feeds the hub (needs evidence recording on).
        hub = LiveHub() if evidence_dir is not None else None

        device_certs = Path(args.device_certs) if args.device_certs else None
        if device_certs is not None and not device_certs.is_dir():
            raise UsageError(f"--device-certs {device_certs}: no such directory")
        receiver = ControlRoomReceiver(  # as `run` makes it (no terminal viewer)
            host=args.host, port=args.port, tls=_tls(args), db_path=args.db,
            client_id=args.client_id or f"controlroom-{socket.gethostname()}",
            group=args.group, auto_ack=args.auto_ack, operator=args.operator,
            device_certs=device_certs, out=lambda s: print(s, flush=True),
            session_expiry_s=args.session_expiry, evidence_dir=evidence_dir, viewer=hub)
    try:
        accounts = Accounts(args.db)
    except AccountError as e:
        raise StoreError(str(e)) from None
    nobody = not accounts.users()
    accounts.close()
    try:
        sock = web.bind(host, port)
    except web.ServeError as e:
        raise UsageError(str(e)) from None
    server = web.make_server(create_app(args.db, evidence_dir, secure=certfile is not None,
                                        live_hub=hub, public_report=args.public_report,
                                        map_tiles=map_tiles),
                             certfile=certfile, keyfile=keyfile)
    shown_host = f"[{host}]" if ":" in host else host
    print(f"console on {'https' if certfile else 'http'}://{shown_host}:{sock.getsockname()[1]}/"
          f" (db {redacted(args.db)}{', web only' if receiver is None else ''})", flush=True)
    if args.public_report:  # the accountability report's public version, no login
        print(f"public accountability report on {'https' if certfile else 'http'}://"
              f"{shown_host}:{sock.getsockname()[1]}/report/public", flush=True)
    if nobody:
        print(f"no officer accounts yet: pinkbutton-controlroom user add NAME --role admin "
              f"--db {redacted(args.db)}", flush=True)
    thread = None
    if receiver is not None:
        thread = threading.Thread(target=receiver.run, name="receiver", daemon=True)
        thread.start()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: setattr(server, "should_exit", True))
    if args.exit_after:
        timer = threading.Timer(args.exit_after, lambda: setattr(server, "should_exit", True))
        timer.daemon = True  # a signal may end the console first
        timer.start()
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        if receiver is not None and thread is not None:
            receiver.stop()
            thread.join(10)
    return 0


def _user(args) -> int:
    from pinkbutton.tools.controlroom.web.accounts import AccountError, Accounts

    try:
        accounts = Accounts(_db(args))
    except AccountError as e:
        print(f"pinkbutton-controlroom: {e}", file=sys.stderr)
        return 1
    try:
        if args.user_command == "list":
            for u in accounts.users():
                print(f"{u.name}  {u.role}  created {u.created_at}"
                      f"{'  DISABLED' if u.disabled else ''}")
            return 0
        if sys.stdin is not None and sys.stdin.isatty():
            import getpass

            password = getpass.getpass(f"password for {args.name}: ")
            if getpass.getpass("again: ") != password:
                raise UsageError("the two passwords differ")
        else:
            password = (sys.stdin.readline() if sys.stdin is not None else "").rstrip("\r\n")
        try:
            accounts.add_user(args.name, args.role, password)
        except AccountError as e:
            raise UsageError(str(e)) from None
        accounts.audit("cli", "user_add", None, {"user": args.name, "role": args.role})
        print(f"user {args.name} ({args.role}) added to {redacted(args.db)}")
        return 0
    finally:
        accounts.close()


def build_parser() -> argparse.ArgumentParser:
    ap = OneLineParser(prog="pinkbutton-controlroom",
                                 description="Pink Button reference control-room receiver")
    add_version(ap)
    sub = ap.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    run = sub.add_parser("run", help="receive alerts, store incidents, send acknowledgements")
    run.add_argument("--host", default="localhost",
                     help="broker host name; must match its certificate (default localhost)")
    run.add_argument("--port", type=int_in(1, 65535), default=8883,
                     help="broker MQTT-over-TLS port (default 8883)")
    run.add_argument("--pki", help="directory with ca.pem, controlroom.pem, controlroom.key")
    run.add_argument("--ca", help="CA certificate that signed the broker (default: --pki/ca.pem)")
    run.add_argument("--cert", help="this receiver's certificate (default: --pki/controlroom.pem)")
    run.add_argument("--key", help="its private key, 0600 (default: --pki/controlroom.key)")
    run.add_argument("--db", default="controlroom.db",
                     help="incident database: a SQLite file, created if missing (default "
                     "controlroom.db), or postgresql://USER@HOST:PORT/DB shared by several "
                     "receivers (docs/scaling.md)")
    run.add_argument("--auto-ack", action="store_true", help="acknowledge every new alert")
    run.add_argument("--operator", default="control-room", help="name sent with acks")
    run.add_argument("--client-id", help="MQTT client id (unique per receiver)")
    run.add_argument("--group", default="controlroom", help="shared-subscription group")
    run.add_argument("--device-certs", help="directory of <device_id>.pem to verify signatures")
    run.add_argument("--session-expiry", type=int_in(0, 0xFFFFFFFF), default=0, metavar="S",
                     help="broker keeps this receiver's queue S seconds while it is offline "
                          "(default 0: a dead receiver stops taking alerts at once; kiosks "
                          "re-announce what no receiver stored)")
    run.add_argument("--evidence", metavar="DIR",
                     help="where evidence MP4s are written (default: evidence/ beside --db)")
    run.add_argument("--no-evidence", action="store_true", help="do not record media")
    run.add_argument("--view", action="store_true",
                     help="show the first incident's live video in ffplay (needs ffmpeg)")
    run.add_argument("--exit-after", type=seconds, metavar="S", help="stop after S seconds")
    run.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                     help="log level on stderr (default info)")
    rep = sub.add_parser("report", help="print incidents and their timelines")
    rep.add_argument("--db", default="controlroom.db",
                     help="the incident database to report on: a SQLite file (default "
                     "controlroom.db) or a postgresql:// URL")
    rep.add_argument("--since", type=utc_date(False), metavar="DATE",
                     help="only incidents received from DATE on (YYYY-MM-DD or an ISO time, UTC)")
    rep.add_argument("--until", type=utc_date(True), metavar="DATE",
                     help="only incidents received before DATE ends (YYYY-MM-DD: that day "
                          "included; or an ISO time, UTC)")
    rep.add_argument("--csv", action="store_true",
                     help="one CSV row per incident (id, device, site, kind, pressed, received, "
                          "acked, ended, presses, latency ms, problems) for a spreadsheet")
    # The accountability report (issue 12 item 6): aggregated per site and period.
    rep.add_argument("--period", choices=("day", "week", "month"),
                     help="the accountability table per site and day / ISO week / month: "
                          "presses, outcomes, time to view/ack/dispatch p50/p90, offline "
                          "hours (default range: the last 14 days / 12 weeks / 12 months)")
    rep.add_argument("--public", action="store_true",
                     help="with --period: the public version (sites and numbers only: no "
                          "officers, units, notes, devices or evidence)")
    rep.add_argument("--tz", metavar="ZONE",
                     help="with --period: the periods' time zone (IANA name; default UTC)")
    fleet = sub.add_parser("fleet", help="one line per kiosk: online, heartbeat, self-test, "
                                         "firmware, certificate, temperature, disk")
    fleet.add_argument("--db", default="controlroom.db",
                       help="the control room's database: a SQLite file (default "
                       "controlroom.db) or a postgresql:// URL")
    # The web console (issue 12): the receiver as `run` plus the console.
    serve = sub.add_parser("serve", parents=[run], add_help=False,
                           help="the receiver plus the officers' web console (HTTPS)")
    serve.add_argument("--listen", default="127.0.0.1:8443", metavar="HOST:PORT",
                       help="where the console listens (default 127.0.0.1:8443; port 0: any)")
    serve.add_argument("--web-cert", metavar="FILE",
                       help="HTTPS certificate (default: --pki/pinkbutton-console.pem, "
                            "from `pinkbutton-pki web DIR --host NAME`)")
    serve.add_argument("--web-key", metavar="FILE",
                       help="its key, 0600 (default: --pki/pinkbutton-console.key)")
    serve.add_argument("--insecure-http", action="store_true",
                       help="plain HTTP, only on a loopback address (development)")
    serve.add_argument("--web-only", action="store_true",
                       help="no receiver in this process (others share the --db)")
    serve.add_argument("--map-tiles", metavar="DIR",
                       help="the map's tiles, DIR/Z/X/Y.png made offline (docs/deploy.md); "
                            "default: the bundled country outline")
    serve.add_argument("--public-report", action="store_true",  # issue 12 item 6
                       help="serve the public accountability report at /report/public "
                            "without a login (sites and numbers only)")
    from pinkbutton.tools.controlroom.web.accounts import ROLES

    user = sub.add_parser("user", help="officers' accounts of the web console")
    usub = user.add_subparsers(dest="user_command", required=True, parser_class=OneLineParser)
    uadd = usub.add_parser("add", help="add an officer (password from the prompt or stdin)")
    uadd.add_argument("name", help="user name (letters, digits, '.', '_', '-')")
    uadd.add_argument("--role", required=True, choices=ROLES, help="operator, supervisor, admin")
    uadd.add_argument("--db", default="controlroom.db",
                      help="the control room's database: a SQLite file (default "
                       "controlroom.db) or a postgresql:// URL")
    ulist = usub.add_parser("list", help="list the officers")
    ulist.add_argument("--db", default="controlroom.db",
                       help="the control room's database: a SQLite file (default "
                       "controlroom.db) or a postgresql:// URL")
    return ap


def main(argv: list[str] | None = None) -> int:
    # Device text is escaped before it is printed; should anything slip through, a terminal
    # that cannot show it gets a backslash escape rather than a crash mid-incident.
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=getattr(args, "log_level", "info").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "fleet":
            return _fleet(args)
        if args.command in ("serve", "user"):
            return _serve(args) if args.command == "serve" else _user(args)
        return _run(args) if args.command == "run" else _report(args)
    except UsageError as e:
        print(f"pinkbutton-controlroom: {e}", file=sys.stderr)
        return 2
    except (StoreError, TransportError) as e:
        print(f"pinkbutton-controlroom: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
