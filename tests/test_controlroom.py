"""Control room: the SQLite incident store, the `pinkbutton-controlroom` CLI, and receivers
against a real mosquitto over mTLS (one incident per alert_id, shared-subscription split)."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from pinkbutton.firmware import protocol as p
from pinkbutton.hal.clock import iso8601
from pinkbutton.tools.controlroom.receiver import ControlRoomReceiver
from pinkbutton.tools.controlroom.store import IncidentStore
from pinkbutton.tools.pki import device_paths

from tests.helpers import (
    INCIDENTS_TABLE_BEFORE_ISSUE_9,
    Recorder,
    assert_one_line_error,
    room_tls,
)

ROOT = Path(__file__).resolve().parent.parent
SITE = p.Site("test-site", "Test Bazaar", 34.0, 71.5)


def make_alert(
    device_id: str = "pb-test-0001",
    alert_id: str | None = None,
    *,
    seq: int = 1,
    announce: int = 1,
    escalated: bool = False,
    presses: int = 1,
) -> p.Alert:
    now = iso8601(time.time())
    return p.Alert(
        device_id=device_id,
        alert_id=alert_id or str(uuid.uuid4()),
        seq=seq,
        kind="emergency",
        pressed_at=now,
        pressed_mono=100.0,
        age_ms=5,
        announce=announce,
        escalated=escalated,
        presses=presses,
        site=SITE,
        firmware="0.1.0",
        sent_at=now,
    )


# -- IncidentStore --------------------------------------------------------------


@pytest.fixture
def store(db_target):  # a SQLite file, then a PostgreSQL database (tests/conftest.py)
    s = IncidentStore(db_target)
    yield s
    s.close()


def test_record_alert_is_new_once_per_alert_id(store):
    a = make_alert()
    assert store.record_alert(a, "2026-11-23T10:00:00Z", 3.5, True) is True
    assert store.record_alert(a, "2026-11-23T10:00:01Z", 4.0, True) is False
    assert store.record_alert(make_alert(), "2026-11-23T10:00:02Z", 1.0, None) is True
    assert len(store.all_incidents()) == 2


def test_reannouncement_updates_the_one_row(store):
    a = make_alert()
    store.record_alert(a, "2026-11-23T10:00:00Z", 3.5, True)
    again = make_alert(alert_id=a.alert_id, announce=2, escalated=True, presses=3)
    assert store.record_alert(again, "2026-11-23T10:00:30Z", 30000.0, True) is False
    rows = store.all_incidents()
    assert len(rows) == 1
    inc = rows[0]
    assert (inc.announces, inc.escalated, inc.presses) == (2, True, 3)
    assert inc.received_at == "2026-11-23T10:00:00Z" and inc.latency_ms == 3.5
    # A late, stale first announcement never lowers what we know.
    store.record_alert(a, "2026-11-23T10:00:31Z", 1.0, True)
    inc = store.incident(a.alert_id)
    assert (inc.announces, inc.escalated, inc.presses) == (2, True, 3)


def test_mark_acked_only_once(store):
    a = make_alert()
    store.record_alert(a, "2026-11-23T10:00:00Z", 1.0, None)
    assert store.mark(a.alert_id, "acked", "2026-11-23T10:00:05Z", "officer-1") is True
    assert store.mark(a.alert_id, "acked", "2026-11-23T10:00:09Z", "officer-2") is False
    inc = store.incident(a.alert_id)
    assert (inc.acked_at, inc.acked_by) == ("2026-11-23T10:00:05Z", "officer-1")
    assert store.mark(str(uuid.uuid4()), "acked", "2026-11-23T10:00:05Z", "x") is False
    assert [w for _, w, _ in store.timeline(a.alert_id)].count("acked") == 1


def test_timeline_keeps_the_order_of_events(store):
    a = make_alert()
    store.record_alert(a, "2026-11-23T10:00:00Z", 1.0, None)
    store.record_alert(a, "2026-11-23T10:00:01Z", 1.0, None)
    store.record_alert(
        make_alert(alert_id=a.alert_id, announce=2, escalated=True),
        "2026-11-23T10:00:30Z",
        2.0,
        None,
    )
    store.mark(a.alert_id, "acked", "2026-11-23T10:00:31Z", "officer-1")
    store.mark(a.alert_id, "dispatched", "2026-11-23T10:00:40Z")
    store.note(a.alert_id, "2026-11-23T10:00:41Z", "operator_note", {"text": "team 4"})
    store.mark(a.alert_id, "ended", "2026-11-23T10:05:00Z")
    timeline = store.timeline(a.alert_id)
    assert [w for _, w, _ in timeline] == [
        "received",
        "duplicate",
        "escalated",
        "acked",
        "dispatched",
        "operator_note",
        "ended",
    ]
    assert timeline[0][2] == {"announce": 1, "latency_ms": 1.0}
    assert timeline[3][2] == {"by": "officer-1"}
    assert store.open_incidents() == []


def test_set_device_reports_only_online_offline_changes(store):
    assert store.set_device("pb-test-0001", True, "idle", "0.1.0", "t1") is True
    assert store.set_device("pb-test-0001", True, "streaming", "0.1.0", "t2") is False
    assert store.set_device("pb-test-0001", False, "offline", "0.1.0", "t3") is True
    assert store.set_device("pb-test-0001", False, "offline", "0.1.0", "t4") is False
    assert store.set_device("pb-test-0002", False, "offline", "0.1.0", "t5") is True
    assert store.devices() == [
        ("pb-test-0001", False, "offline", "t4"),
        ("pb-test-0002", False, "offline", "t5"),
    ]


def test_data_survives_reopening_the_file(tmp_path):
    path = tmp_path / "room.db"
    a = make_alert()
    first = IncidentStore(path)
    first.record_alert(a, "2026-11-23T10:00:00Z", 2.0, True)
    first.mark(a.alert_id, "acked", "2026-11-23T10:00:03Z", "officer-1")
    first.set_device("pb-test-0001", True, "acknowledged", "0.1.0", "t")
    first.close()
    again = IncidentStore(path)
    try:
        inc = again.incident(a.alert_id)
        assert inc is not None and inc.acked_by == "officer-1" and inc.site_name == "Test Bazaar"
        assert [w for _, w, _ in again.timeline(a.alert_id)] == ["received", "acked"]
        assert again.devices()[0][:2] == ("pb-test-0001", True)
        assert again.record_alert(a, "2026-11-23T10:01:00Z", 1.0, True) is False
    finally:
        again.close()


# -- CLI: usage errors and report -------------------------------------------------


def controlroom_cli(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pinkbutton.tools.controlroom.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_run_with_missing_pki_dir_exits_2_naming_the_file(tmp_path):
    missing = tmp_path / "no-pki"
    proc = controlroom_cli("run", "--pki", str(missing), "--db", str(tmp_path / "db"))
    assert_one_line_error(proc, str(missing / "ca.pem"), "no such file")


def test_run_with_missing_ca_file_exits_2_naming_the_file(tmp_path, pki_dir):
    missing = tmp_path / "nope-ca.pem"
    proc = controlroom_cli(
        "run", "--pki", str(pki_dir), "--ca", str(missing), "--db", str(tmp_path / "db")
    )
    assert_one_line_error(proc, "--ca", str(missing))


def test_run_with_port_out_of_range_exits_2(tmp_path, pki_dir):
    proc = controlroom_cli(
        "run", "--pki", str(pki_dir), "--port", "70000", "--db", str(tmp_path / "db")
    )
    assert_one_line_error(proc, "--port", "between 1 and 65535, not 70000")


def test_report_on_missing_db_exits_2(tmp_path):
    proc = controlroom_cli("report", "--db", str(tmp_path / "missing.db"))
    assert_one_line_error(proc, "missing.db", "no such file")
    assert not (tmp_path / "missing.db").exists(), "report must not create a database"


def test_report_prints_incident_and_timeline(tmp_path):
    db = tmp_path / "room.db"
    a = make_alert("pb-test-0002", seq=4)
    s = IncidentStore(db)
    s.record_alert(a, "2026-11-23T10:00:00Z", 12.34, True)
    s.record_alert(
        make_alert("pb-test-0002", a.alert_id, announce=2, escalated=True),
        "2026-11-23T10:00:30Z",
        30000.0,
        True,
    )
    s.mark(a.alert_id, "acked", "2026-11-23T10:00:31Z", "officer-7")
    s.close()
    proc = controlroom_cli("report", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert out[0] == f"1 incident(s) in {db}, 1 press(es) in all"
    assert out[1].startswith(f"{a.alert_id}  pb-test-0002  Test Bazaar  emergency")
    assert "latency 12 ms" in out[1] and "announces 2" in out[1] and "ESCALATED" in out[1]
    events = [line.split()[1] for line in out[2:]]
    assert events == ["received,", "escalated:", "acknowledged"]
    assert out[3].endswith("latency 30.0 s") and out[4].endswith("acknowledged by officer-7")


# -- against a real broker ----------------------------------------------------------


class LineReader:
    """Collects a subprocess stream's lines on a thread so the test can wait for one."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self._cv = threading.Condition()
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream) -> None:
        for line in stream:
            with self._cv:
                self.lines.append(line.rstrip("\n"))
                self._cv.notify_all()

    def wait_for(self, text: str, timeout: float = 10.0) -> str:
        end = time.monotonic() + timeout
        with self._cv:
            while True:
                for line in self.lines:
                    if text in line:
                        return line
                left = end - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no line with {text!r} in {timeout} s: {self.lines}")
                self._cv.wait(left)


def device_key(pki_dir: Path, device_id: str):
    return serialization.load_pem_private_key(
        device_paths(pki_dir, device_id).key.read_bytes(), password=None
    )


@pytest.mark.broker
def test_cli_run_receives_signed_alert_and_acks_the_device(tmp_path, pki_dir, broker, mqtt_client):
    device = "pb-test-0003"
    acks: list[bytes] = []
    got_ack = threading.Event()
    dev = mqtt_client(pki_dir, device, broker)

    def on_message(_client, _userdata, msg) -> None:  # paho network thread
        acks.append(bytes(msg.payload))
        if len(acks) >= 2:
            got_ack.set()

    dev.on_message = on_message
    dev.subscribe(p.topic(device, "cmd"), qos=1)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pinkbutton.tools.controlroom.cli",
            "run",
            "--host",
            "localhost",
            "--port",
            str(broker.port),
            "--pki",
            str(pki_dir),
            "--db",
            str(tmp_path / "room.db"),
            "--auto-ack",
            "--exit-after",
            "4",
            "--client-id",
            f"cli-{secrets.token_hex(3)}",
            "--group",
            f"cli-{secrets.token_hex(3)}",
        ],
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = LineReader(proc.stdout), LineReader(proc.stderr)
        err.wait_for("connected to broker")
        time.sleep(0.3)  # let the SUBACKs land
        alert = make_alert(device)
        payload = p.encode_alert(alert, device_key(pki_dir, device))
        dev.publish(p.topic(device, "alert"), payload, qos=1).wait_for_publish(5)
        out.wait_for(f"ALERT  {device}")
        out.wait_for("ACK    ")
        assert got_ack.wait(5), "the device never received the ack"
        assert proc.wait(15) == 0, err.lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # First the receipt (stored durably: the kiosk may drop it from its outbox), then the ack.
    receipt, cmd = (p.decode_cmd(x) for x in acks[:2])
    assert (receipt.cmd, receipt.alert_id) == ("receipt", alert.alert_id)
    assert (cmd.cmd, cmd.alert_id, cmd.operator) == ("ack", alert.alert_id, "control-room")
    assert "Traceback" not in "\n".join(err.lines)
    room = IncidentStore(tmp_path / "room.db")
    try:
        assert [i.alert_id for i in room.all_incidents()] == [alert.alert_id]
    finally:
        room.close()


@pytest.mark.broker
def test_two_receivers_in_one_share_group_split_alerts_without_loss_or_overlap(
    tmp_path, pki_dir, broker, mqtt_client
):
    group = f"split-{secrets.token_hex(3)}"
    seen = Recorder()
    rooms = []
    for n in (1, 2):
        events = Recorder()
        r = ControlRoomReceiver(
            host="localhost",
            port=broker.port,
            tls=room_tls(pki_dir),
            db_path=tmp_path / f"room{n}.db",
            client_id=f"{group}-{n}",
            group=group,
            out=lambda _line: None,
            listeners=[events, lambda k, d, n=n: seen(k, {**d, "room": n})],
        )
        thread = threading.Thread(target=r.run, daemon=True)
        thread.start()
        rooms.append((r, thread, events))
    try:
        for _, _, events in rooms:
            events.wait_for("connected")
        time.sleep(0.3)  # both share-group SUBACKs in
        device = mqtt_client(pki_dir, "pb-test-0001", broker)
        sent = [make_alert("pb-test-0001", seq=i + 1) for i in range(10)]
        for a in sent:
            device.publish(
                p.topic(a.device_id, "alert"), p.encode_alert(a), qos=1
            ).wait_for_publish(5)
        deadline = time.monotonic() + 10
        while len(seen.of("alert")) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # a duplicate delivery would show up now
    finally:
        for r, thread, _ in rooms:
            r.stop()
            thread.join(10)
    by_room = {1: set(), 2: set()}
    for d in seen.of("alert"):
        by_room[d["room"]].add(d["alert_id"])
    assert by_room[1] and by_room[2], f"not split: {[len(v) for v in by_room.values()]}"
    assert not by_room[1] & by_room[2], "an alert reached both receivers"
    stored = []
    for n in (1, 2):
        s = IncidentStore(tmp_path / f"room{n}.db")
        stored += [i.alert_id for i in s.all_incidents()]
        s.close()
    assert len(stored) == 10 and set(stored) == {a.alert_id for a in sent}
    assert json.dumps(sorted(stored)) == json.dumps(sorted(by_room[1] | by_room[2]))


# -- flagged incidents: what was wrong with an alert body is stored with it (issue 9) -------------

def salvaged(payload: bytes, device: str = "pb-test-0001") -> p.SalvagedAlert:
    return p.salvage_alert(payload, topic_device=device)


def test_store_migrates_a_database_from_before_flagged_incidents(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(INCIDENTS_TABLE_BEFORE_ISSUE_9)
    a = make_alert()
    old.execute("INSERT INTO incidents(alert_id, device_id, seq, kind, site_id, site_name, lat, "
                "lon, firmware, pressed_at, received_at, acked_at, acked_by) "
                "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (a.alert_id, a.device_id, 3, "emergency", "s", "Old Bazaar", 34.0, 71.5, "0.1.0",
                 a.pressed_at, "2026-11-23T10:00:00Z", "2026-11-23T10:00:05Z", "officer-1"))
    old.commit()
    old.close()
    for _ in range(2):  # a second open finds nothing left to migrate
        s = IncidentStore(path)
        try:
            inc = s.incident(a.alert_id)
            assert (inc.seq, inc.site_name, inc.acked_by, inc.problems) == (
                3, "Old Bazaar", "officer-1", ())
            bad = salvaged(b"not json at all")
            s.record_alert(bad.alert, "2026-11-23T10:01:00Z", None, None, bad.problems)
            got = s.incident(bad.alert.alert_id)
            assert got.seq is None and got.problems == bad.problems
        finally:
            s.close()


def test_problems_of_every_announcement_are_kept_once(store):
    a = make_alert()
    assert store.record_alert(a, "2026-11-23T10:00:00Z", 1.0, None) is True
    assert store.incident(a.alert_id).problems == ()
    store.record_alert(a, "2026-11-23T10:00:01Z", 1.0, False, ("signature invalid",))
    store.record_alert(a, "2026-11-23T10:00:02Z", 1.0, False, ("signature invalid", "x"))
    assert store.incident(a.alert_id).problems == ("signature invalid", "x")
    timeline = store.timeline(a.alert_id)
    assert timeline[1][2]["problems"] == ["signature invalid"] and "problems" not in timeline[0][2]


def test_report_shows_flagged_incidents_escaped_one_line_each(tmp_path):
    db = tmp_path / "room.db"
    body = json.loads(p.encode_alert(make_alert("pb-test-0002")))
    body["site"]["name"] = "Bazaar\nACK    pb-test-0002  Bazaar  by officer-x\x1b[2J\u202e" + "x" * 300
    bad = salvaged(json.dumps(body).encode(), "pb-test-0002")
    s = IncidentStore(db)
    s.record_alert(bad.alert, "2026-11-23T10:00:00Z", None, None, bad.problems)
    s.close()
    proc = controlroom_cli("report", "--db", str(db))
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.splitlines()
    assert len(out) == 4, out  # header, the incident, its flags, one timeline entry
    assert out[1].startswith(f"{bad.alert.alert_id}  pb-test-0002  Bazaar\\nACK    pb-test")
    assert "\\x1b[2J\\u202e" in out[1] and "FLAGGED" in out[1]
    assert "field 'site.name' is longer than 256 characters" in out[2]
    assert not any(line.startswith("ACK") for line in out)
    assert "\x1b" not in proc.stdout and "\u202e" not in proc.stdout
