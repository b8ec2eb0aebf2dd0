"""How many alerts a second the control room records: SQLite vs PostgreSQL, one writer vs two.

Two tables (`make bench` runs it; docs/scaling.md quotes them):

1. store: N processes, each its own IncidentStore connection, record distinct alerts as a
   receiver does with auto-ack (record_alert, then mark acked: two transactions per alert,
   each durable: SQLite synchronous=FULL, PostgreSQL fsync on). Two SQLite writers share one
   file on one host; two PostgreSQL writers could be on two hosts.
2. end to end: a burst of alerts from 3 kiosks over the real mosquitto (mTLS) to 1 or 2
   auto-ack receiver processes in one share group; from the first publish until every alert
   is a row, acked. Each run also checks none is lost or doubled.

Everything runs on this machine (loopback PostgreSQL, throwaway cluster: harness/pg.py);
every phase is bounded in time. `python -m harness.bench_store [--alerts N] [--burst N]`.
"""

from __future__ import annotations

import multiprocessing
import secrets
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from pinkbutton.firmware import protocol as p
from pinkbutton.firmware.cliargs import OneLineParser, positive_int
from pinkbutton.hal.clock import iso8601

KIOSKS = ("pb-bench-0001", "pb-bench-0002", "pb-bench-0003")
SITE = p.Site("bench-site", "Bench Bazaar", 34.0, 71.5)
PHASE_S = 180.0  # each measurement gives up after this long


def _alert(device_id: str, seq: int) -> p.Alert:
    now = iso8601(time.time())
    return p.Alert(device_id=device_id, alert_id=str(uuid.uuid4()), seq=seq, kind="emergency",
                   pressed_at=now, pressed_mono=1.0, age_ms=5, announce=1, escalated=False,
                   presses=1, site=SITE, firmware="0.1.0", sent_at=now)


# -- 1. the store alone ------------------------------------------------------------------


def _writer(target: str, n: int, device_id: str, start: Any, done: Any) -> None:
    from pinkbutton.tools.controlroom.store import IncidentStore

    store = IncidentStore(target)
    alerts = [_alert(device_id, i + 1) for i in range(n)]
    start.wait(30)
    t0 = time.perf_counter()
    for a in alerts:
        at = iso8601(time.time())
        store.record_alert(a, at, 1.0, None)
        store.mark(a.alert_id, "acked", at, "bench")
    done.put(time.perf_counter() - t0)
    store.close()


def bench_store(target: str, writers: int, total: int) -> tuple[float, int]:
    """(seconds, rows) for `total` alerts split over `writers` processes."""
    from pinkbutton.tools.controlroom.store import IncidentStore

    IncidentStore(target).close()  # the schema, before the clock starts
    ctx = multiprocessing.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(target, total // writers, KIOSKS[k], start, done))
             for k in range(writers)]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # every writer connected and its alerts made
    t0 = time.perf_counter()
    start.set()
    for proc in procs:
        proc.join(PHASE_S)
        if proc.is_alive():
            proc.kill()
            raise SystemExit(f"bench_store: a writer did not finish within {PHASE_S:.0f} s")
    elapsed = time.perf_counter() - t0
    check = IncidentStore(target)
    rows = len([i for i in check.all_incidents() if i.acked_at])
    check.close()
    return elapsed, rows


# -- 2. end to end: kiosks -> mosquitto -> receivers -> database ---------------------------


def room_main(argv: list[str]) -> int:
    """One auto-ack receiver (a process of the end-to-end bench); stops at end of stdin."""
    from pinkbutton.firmware.transport import TlsFiles
    from pinkbutton.tools.controlroom.intake import IntakeLimits
    from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
    from pinkbutton.tools.pki import ca_paths, controlroom_paths

    ap = OneLineParser(prog="python -m harness.bench_store room")
    ap.add_argument("--port", type=positive_int, required=True)
    ap.add_argument("--pki", type=Path, required=True)
    ap.add_argument("--db", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--name", required=True)
    args = ap.parse_args(argv)
    ids = controlroom_paths(args.pki)
    connected = threading.Event()
    room = ControlRoomReceiver(
        host="localhost", port=args.port,
        tls=TlsFiles(ca_paths(args.pki).cert, ids.cert, ids.key), db_path=args.db,
        client_id=args.name, group=args.group, auto_ack=True, operator=args.name,
        out=lambda _line: None,
        listeners=[lambda kind, _d: connected.set() if kind == "connected" else None],
        limits=IntakeLimits(rate_per_s=100000.0, burst=100000, max_pending=100000))

    def ready() -> None:
        if connected.wait(30):
            print("ready", flush=True)

    def stdin() -> None:
        sys.stdin.read()
        room.stop()

    threading.Thread(target=ready, daemon=True).start()
    threading.Thread(target=stdin, daemon=True).start()
    room.run()
    return 0


def bench_e2e(target: str, receivers: int, burst: int, pki: Path, broker) -> tuple[float, int]:
    """(seconds from the first publish until every alert is an acked row, rows)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from pinkbutton.tools.controlroom.db import connect
    from pinkbutton.tools.controlroom.store import IncidentStore
    from pinkbutton.tools.pki import ca_paths, device_paths

    IncidentStore(target).close()
    group = f"bench-{secrets.token_hex(3)}"
    rooms = [subprocess.Popen(
        [sys.executable, "-m", "harness.bench_store", "room", "--port", str(broker.port),
         "--pki", str(pki), "--db", target, "--group", group, "--name", f"{group}-{n}"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for n in range(receivers)]
    clients = []
    try:
        for room in rooms:
            assert room.stdout is not None
            if room.stdout.readline().strip() != "ready":
                raise SystemExit("bench_store: a receiver did not connect within 30 s")
        time.sleep(0.5)  # share-group SUBACKs
        for device_id in KIOSKS:
            paths = device_paths(pki, device_id)
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=device_id,
                            protocol=mqtt.MQTTv5)
            c.tls_set(ca_certs=str(ca_paths(pki).cert), certfile=str(paths.cert),
                      keyfile=str(paths.key))
            c.connect(broker.host, broker.port)
            c.loop_start()
            clients.append(c)
        time.sleep(1.0)
        per = burst // len(KIOSKS)
        payloads = [(c, d, p.encode_alert(_alert(d, i + 1)))
                    for c, d in zip(clients, KIOSKS, strict=True) for i in range(per)]
        check = connect(target)  # one cheap count a poll: the bench must not load the database
        t0 = time.perf_counter()
        infos = [c.publish(p.topic(d, "alert"), body, qos=1) for c, d, body in payloads]
        deadline = time.monotonic() + PHASE_S
        want = per * len(KIOSKS)
        while True:
            acked = check.execute("SELECT COUNT(*) FROM incidents WHERE acked_at IS NOT NULL"
                                  ).fetchone()[0]
            if acked >= want or time.monotonic() > deadline:
                break
            time.sleep(0.02)
        elapsed = time.perf_counter() - t0
        check.close()
        for info in infos:
            info.wait_for_publish(10)
        time.sleep(0.3)
        store = IncidentStore(target)
        rows = store.all_incidents()
        store.close()
        if len(rows) != want or len({i.alert_id for i in rows}) != want:
            raise SystemExit(f"bench_store: {len(rows)} rows for {want} alerts")
        return elapsed, acked
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        for room in rooms:
            if room.stdin:
                room.stdin.close()
        for room in rooms:
            try:
                room.wait(20)
            except subprocess.TimeoutExpired:
                room.kill()
                room.wait(10)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["room"]:
        return room_main(argv[1:])
    ap = OneLineParser(prog="python -m harness.bench_store", description=(__doc__ or "")
                       .partition("\n")[0])
    ap.add_argument("--alerts", type=positive_int, default=2000,
                    help="alerts per store run (default 2000)")
    ap.add_argument("--burst", type=positive_int, default=600,
                    help="alerts per end-to-end run, from 3 kiosks (default 600)")
    args = ap.parse_args(argv)

    from pinkbutton.tools.pki import init_dev_pki

    from harness.broker import Mosquitto
    from harness.pg import Postgres, PostgresError

    work = Path(tempfile.mkdtemp(prefix="pinkbutton-bench-store-"))
    try:
        pg = Postgres(durable=True).start()
    except PostgresError as e:
        print(f"bench_store: {e}", file=sys.stderr)
        return 1
    try:
        print(f"store: {args.alerts} alerts, record + ack (2 durable transactions each)")
        print(f"{'backend':<12}{'writers':>8}{'seconds':>10}{'alerts/s':>10}")
        for backend in ("sqlite", "postgresql"):
            for writers in (1, 2):
                target = (str(work / f"store-{writers}.db") if backend == "sqlite"
                          else pg.create_database())
                elapsed, rows = bench_store(target, writers, args.alerts)
                print(f"{backend:<12}{writers:>8}{elapsed:>10.2f}{rows / elapsed:>10.0f}",
                      flush=True)
        pki = work / "pki"
        init_dev_pki(pki, KIOSKS)
        with Mosquitto(work / "broker", pki) as broker:
            print(f"\nend to end: a burst of {args.burst} alerts from {len(KIOSKS)} kiosks over "
                  "mosquitto (mTLS), auto-ack receivers in one share group")
            print(f"{'backend':<12}{'receivers':>10}{'seconds':>10}{'alerts/s':>10}")
            for backend, receivers in (("sqlite", 1), ("sqlite", 2), ("postgresql", 1),
                                       ("postgresql", 2)):
                target = (str(work / f"e2e-{receivers}.db") if backend == "sqlite"
                          else pg.create_database())
                elapsed, rows = bench_e2e(target, receivers, args.burst, pki, broker)
                print(f"{backend:<12}{receivers:>10}{elapsed:>10.2f}{rows / elapsed:>10.0f}",
                      flush=True)
        print("(2 SQLite receivers share one file on one host; PostgreSQL on 127.0.0.1, "
              "fsync on; one 2-core machine runs everything)")
    finally:
        pg.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
