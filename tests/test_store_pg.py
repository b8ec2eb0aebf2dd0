"""The incident store on PostgreSQL shared by several receivers (issue 13): concurrent upserts
of one alert, command claims, schema creation racing, the console's change poll, two
receivers of one share group over the real mosquitto, and `serve --web-only` on the same
database. A throwaway cluster (harness/pg.py, tests/conftest.py); every wait is bounded."""

from __future__ import annotations

import http.cookiejar
import json
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid

import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.intake import IntakeLimits
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.controlroom.store import IncidentStore, StoreError
from pinkbutton.tools.controlroom.web.accounts import Accounts

from tests.conftest import TEST_DEVICES
from tests.helpers import Recorder, assert_one_line_error, room_tls

pytestmark = pytest.mark.timeout(120)

ROOM = [sys.executable, "-m", "pinkbutton.tools.controlroom.cli"]
SITE = p.Site("test-site", "Test Bazaar", 34.0, 71.5)


def alert(device_id: str = "pb-test-0001", alert_id: str | None = None, *, seq: int = 1,
          announce: int = 1, presses: int = 1, escalated: bool = False) -> p.Alert:
    now = iso8601(time.time())
    return p.Alert(device_id=device_id, alert_id=alert_id or str(uuid.uuid4()), seq=seq,
                   kind="emergency", pressed_at=now, pressed_mono=100.0, age_ms=5,
                   announce=announce, escalated=escalated, presses=presses, site=SITE,
                   firmware="0.1.0", sent_at=now)


def run_threads(targets) -> None:
    errors: list[BaseException] = []

    def guard(fn):
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=guard, args=(fn,), daemon=True) for fn in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "a thread did not finish within 60 s"
    assert not errors, errors


def test_concurrent_announcements_of_one_alert_from_two_receivers_make_one_row(pg_url):
    """Two receivers' connections (two threads each) upsert the same alert_id at once, with
    rising announce/presses: one row, exactly one 'new', the highest counts, no lost entry."""
    stores = [IncidentStore(pg_url) for _ in range(4)]
    a = alert()
    rounds = 25
    news: list[bool] = []
    lock = threading.Lock()

    def hammer(store: IncidentStore, offset: int) -> None:
        for i in range(rounds):
            n = 1 + i * 4 + offset  # every announce number once, over the four threads
            got = store.record_alert(alert(alert_id=a.alert_id, announce=n, presses=n,
                                           escalated=n > 50), iso8601(time.time()), 1.0, True)
            with lock:
                news.append(got)

    try:
        run_threads([lambda s=s, k=k: hammer(s, k) for k, s in enumerate(stores)])
        assert news.count(True) == 1 and len(news) == 4 * rounds
        rows = stores[0].all_incidents()
        assert [r.alert_id for r in rows] == [a.alert_id]
        top = 4 * rounds
        assert (rows[0].announces, rows[0].presses, rows[0].escalated) == (top, top, True)
        whats = [w for _, w, _ in stores[1].timeline(a.alert_id)]
        assert len(whats) == 4 * rounds and whats.count("received") == 1
    finally:
        for s in stores:
            s.close()


def test_commands_are_claimed_once_by_receivers_claiming_at_the_same_time(pg_url):
    web = IncidentStore(pg_url)
    a = alert()
    web.record_alert(a, iso8601(time.time()), 1.0, True)
    ids = [web.queue_command(a.alert_id, "ack", {}, "ana", iso8601(time.time()))
           for _ in range(200)]
    rooms = [IncidentStore(pg_url) for _ in range(4)]
    claimed: dict[int, list[int]] = {n: [] for n in range(4)}

    def claim(n: int) -> None:
        while True:
            got = rooms[n].claim_commands(f"room-{n}", limit=7)
            if not got:
                return
            assert len(got) <= 7
            claimed[n] += [c.id for c in got]

    try:
        run_threads([lambda n=n: claim(n) for n in range(4)])
        every = [i for n in claimed for i in claimed[n]]
        assert sorted(every) == ids  # each exactly once
        assert sum(1 for n in claimed if claimed[n]) >= 2  # really concurrent
        owners = {c["id"]: c["claimed_by"] for c in web.commands_of(a.alert_id)}
        assert all(owners[i] == f"room-{n}" for n in claimed for i in claimed[n])
    finally:
        for s in (web, *rooms):
            s.close()


def test_receivers_starting_at_once_create_the_schema_once(pg_url):
    """Schema creation under an advisory lock: four stores and two account tables opening
    a fresh database together all succeed, and a later open finds nothing to do."""
    opened: list[object] = []
    lock = threading.Lock()

    def open_one(kind) -> None:
        obj = kind(pg_url)
        with lock:
            opened.append(obj)

    try:
        run_threads([lambda: open_one(IncidentStore)] * 4 + [lambda: open_one(Accounts)] * 2)
    finally:
        for obj in opened:
            obj.close()  # type: ignore[attr-defined]
    store = IncidentStore(pg_url)
    try:
        a = alert()
        assert store.record_alert(a, iso8601(time.time()), 1.0, True)
        assert store.incident_rows("WHERE alert_id=?", (a.alert_id,))[0]["site_name"] == \
            "Test Bazaar"
    finally:
        store.close()


def test_data_version_changes_when_another_connection_commits(pg_url):
    console, room = IncidentStore(pg_url), IncidentStore(pg_url)
    try:
        first = console.data_version()
        assert console.data_version() == first  # nothing happened
        room.record_alert(alert(), iso8601(time.time()), 1.0, True)
        deadline = time.monotonic() + 10
        while console.data_version() == first:  # NOTIFY arrives with the commit
            assert time.monotonic() < deadline, "no change seen within 10 s"
            time.sleep(0.02)
        second = console.data_version()
        time.sleep(0.2)
        assert console.data_version() == second
    finally:
        console.close()
        room.close()


def test_an_unreachable_or_bad_postgresql_url_is_a_one_line_error(postgres, tmp_path):
    with pytest.raises(StoreError, match="cannot open incident database") as e:
        IncidentStore(f"postgresql://pinkbutton:s3cret@127.0.0.1:{postgres.port}/no_such_db")
    assert "\n" not in str(e.value) and "s3cret" not in str(e.value)
    assert "no_such_db" in str(e.value)
    proc = subprocess.run([*ROOM, "report", "--db", postgres.url_of("no_such_db")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and "no_such_db" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = subprocess.run([*ROOM, "fleet", "--db", str(tmp_path / "none.db")],
                          capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, "--db", "no such file")


def _receiver(pki_dir, broker, url: str, group: str, n: int, seen: Recorder):
    events = Recorder()
    r = ControlRoomReceiver(
        host="localhost", port=broker.port, tls=room_tls(pki_dir), db_path=url,
        client_id=f"{group}-{n}", group=group, auto_ack=True, operator=f"officer-{n}",
        out=lambda _line: None, listeners=[events, lambda k, d: seen(k, {**d, "room": n})],
        limits=IntakeLimits(rate_per_s=1000.0, burst=1000))  # every alert its own incident
    thread = threading.Thread(target=r.run, daemon=True)
    thread.start()
    return r, thread, events


@pytest.mark.broker
def test_two_receivers_of_one_share_group_on_one_postgresql_keep_each_alert_once(
        pg_url, pki_dir, broker, mqtt_client):
    """A burst from three kiosks over the real mosquitto, split between two receivers on
    different connections to one PostgreSQL; every alert also re-announced (so the other
    receiver may get it): each alert one row, none lost or doubled, acked exactly once by
    whichever receiver had it."""
    group = f"pg-{secrets.token_hex(3)}"
    seen = Recorder()
    rooms = [_receiver(pki_dir, broker, pg_url, group, n, seen) for n in (1, 2)]
    sent: list[p.Alert] = []
    try:
        for _, _, events in rooms:
            events.wait_for("connected", timeout=20)
        time.sleep(0.3)  # both share-group SUBACKs in
        devices = {d: mqtt_client(pki_dir, d, broker) for d in TEST_DEVICES}
        per_device = 20

        def burst(device_id: str) -> None:
            client = devices[device_id]
            mine = [alert(device_id, seq=i + 1) for i in range(per_device)]
            sent.extend(mine)
            for a in mine:
                client.publish(p.topic(device_id, "alert"), p.encode_alert(a),
                               qos=1).wait_for_publish(10)
            for a in mine:  # the re-announcement of every one
                again = alert(device_id, a.alert_id, seq=a.seq, announce=2, escalated=True)
                client.publish(p.topic(device_id, "alert"), p.encode_alert(again),
                               qos=1).wait_for_publish(10)

        run_threads([lambda d=d: burst(d) for d in TEST_DEVICES])
        check = IncidentStore(pg_url)
        try:
            want = len(TEST_DEVICES) * per_device
            deadline = time.monotonic() + 30
            while True:
                rows = check.all_incidents()
                done = [r for r in rows if r.acked_at and r.announces == 2]
                if len(done) == want or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            time.sleep(0.3)  # a late duplicate would show now
            rows = check.all_incidents()
            assert sorted(r.alert_id for r in rows) == sorted(a.alert_id for a in sent)
            assert all(r.announces == 2 and r.escalated for r in rows)
            assert all(r.acked_at is not None for r in rows)
            ackers = {r.acked_by for r in rows}
            for r in rows:
                whats = [w for _, w, _ in check.timeline(r.alert_id)]
                assert whats.count("received") == 1 and whats.count("acked") == 1, whats
        finally:
            check.close()
    finally:
        for r, thread, _ in rooms:
            r.stop()
            thread.join(10)
    by_room = {d["room"] for d in seen.of("alert")}
    assert by_room == {1, 2}, "the share group did not split the burst"
    assert ackers == {"officer-1", "officer-2"}  # acks from either side


# -- the console (`serve --web-only`) on the PostgreSQL a receiver writes to ---------------


def _login(base: str, user: str, password: str) -> urllib.request.OpenerDirector:
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    page = opener.open(base + "login", timeout=10).read().decode()
    csrf = re.search(r'name="csrf" value="([^"]+)"', page)
    assert csrf, page[:300]
    form = urllib.parse.urlencode({"csrf": csrf.group(1), "user": user,
                                   "password": password}).encode()
    opener.open(base + "login", data=form, timeout=10).read()
    assert any(c.name for c in jar), "no session cookie"
    return opener


@pytest.mark.broker
def test_console_web_only_on_postgresql_shows_an_alert_a_receiver_stored(
        pg_url, pki_dir, broker, mqtt_client):
    import websockets.sync.client as ws_client

    acc = Accounts(pg_url)
    try:
        acc.add_user("ana", "operator", "correct horse")
    finally:
        acc.close()
    proc = subprocess.Popen(
        [*ROOM, "serve", "--web-only", "--insecure-http", "--listen", "127.0.0.1:0",
         "--db", pg_url, "--no-evidence", "--exit-after", "60"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen = Recorder()
    room = None
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("console on http://127.0.0.1:"), (line, proc.poll())
        assert "web only" in line and "postgresql://" in line
        base = line.split()[2]
        opener = _login(base, "ana", "correct horse")
        assert json.loads(opener.open(base + "api/queue", timeout=10).read())["incidents"] == []
        jar_cookie = next(h for h in opener.handlers
                          if isinstance(h, urllib.request.HTTPCookieProcessor)).cookiejar
        cookie = "; ".join(f"{c.name}={c.value}" for c in jar_cookie)
        with ws_client.connect(base.replace("http://", "ws://") + "ws",
                               additional_headers={"Cookie": cookie}, open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["incidents"] == []  # on connect
            room = _receiver(pki_dir, broker, pg_url, f"pgweb-{secrets.token_hex(3)}", 1, seen)
            room[2].wait_for("connected", timeout=20)
            time.sleep(0.2)
            a = alert("pb-test-0002")
            body = json.loads(p.encode_alert(a))
            body["site"]["name"] = "<b>Saddar</b>"  # device text: shown escaped, kept as is
            device = mqtt_client(pki_dir, "pb-test-0002", broker)
            device.publish(p.topic(a.device_id, "alert"), json.dumps(body).encode(),
                           qos=1).wait_for_publish(10)
            room[2].wait_for("alert", lambda d: d.get("alert_id") == a.alert_id, timeout=20)
            stored = time.monotonic()
            # Pushed by the change poll (the NOTIFY of the receiver's commit; its 5 s periodic
            # refresh may come first: test_data_version_changes_... checks the poll itself).
            while True:
                left = 4.5 - (time.monotonic() - stored)
                assert left > 0, "the console did not push the new alert within 4.5 s"
                msg = json.loads(ws.recv(timeout=left))
                if msg.get("type") == "queue" and any(
                        i["alert_id"] == a.alert_id for i in msg["incidents"]):
                    break
        queue = json.loads(opener.open(base + "api/queue", timeout=10).read())
        assert [i["alert_id"] for i in queue["incidents"]] == [a.alert_id]
        page = opener.open(base + f"incident/{a.alert_id}", timeout=10).read().decode()
        assert "&lt;b&gt;Saddar&lt;/b&gt;" in page and "<b>Saddar</b>" not in page
    finally:
        if room is not None:
            room[0].stop()
            room[1].join(10)
        proc.terminate()
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_a_store_reconnects_after_its_connection_was_lost(postgres, pg_url):
    """The server ended the session (a restart, a failover): the call that meets the dead
    connection fails (its alert is re-announced by the kiosk), the next one reconnects."""
    import psycopg

    store = IncidentStore(pg_url)
    try:
        first, second = alert(), alert()
        assert store.record_alert(first, iso8601(time.time()), 1.0, True)
        version = store.data_version()
        with psycopg.connect(postgres.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE "
                          "datname = %s AND pid <> pg_backend_pid()", (pg_url.rsplit("/", 1)[1],))
        with pytest.raises(psycopg.OperationalError):
            store.record_alert(second, iso8601(time.time()), 1.0, True)
        assert store.record_alert(second, iso8601(time.time()), 1.0, True)  # reconnected
        assert {i.alert_id for i in store.all_incidents()} == {first.alert_id, second.alert_id}
        assert store.data_version() != version  # the console refreshes after a reconnect
    finally:
        store.close()


def test_report_fleet_and_user_add_take_a_postgresql_url(pg_url):
    store = IncidentStore(pg_url)
    try:
        a = alert("pb-test-0003")
        store.record_alert(a, iso8601(time.time()), 12.0, True)
        store.set_device("pb-test-0003", True, "idle", "0.1.0", iso8601(time.time()))
    finally:
        store.close()
    report = subprocess.run([*ROOM, "report", "--db", pg_url], capture_output=True, text=True,
                            timeout=60)
    assert report.returncode == 0, report.stderr
    assert "1 incident(s) in postgresql://" in report.stdout and a.alert_id in report.stdout
    fleet = subprocess.run([*ROOM, "fleet", "--db", pg_url], capture_output=True, text=True,
                           timeout=60)
    assert fleet.returncode == 0 and "1 kiosk(s)" in fleet.stdout and "pb-test-0003" in \
        fleet.stdout, fleet.stderr
    add = subprocess.run([*ROOM, "user", "add", "ana", "--role", "admin", "--db", pg_url],
                         input="a long password\n", capture_output=True, text=True, timeout=60)
    assert add.returncode == 0, add.stderr
    acc = Accounts(pg_url)
    try:
        assert acc.verify("ana", "a long password")
        assert [r["action"] for r in acc.audit_rows()] == ["user_add"]
    finally:
        acc.close()
