"""What the console keeps in the store (dispatch, disposition, first view, the commands a
receiver carries out), officers' accounts and the audit log, and the `serve` / `user` /
`pinkbutton-pki web` commands. Real SQLite, real HTTPS; no browser."""

from __future__ import annotations

import sqlite3
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from pinkbutton.tools.controlroom.store import ADDED_COLUMNS, IncidentStore
from pinkbutton.tools.controlroom.web.accounts import AccountError, Accounts
from pinkbutton.tools.pki import issue_web

from tests.helpers import assert_one_line_error
from tests.test_web_auth import stored_incident

ROOM = [sys.executable, "-m", "pinkbutton.tools.controlroom.cli"]


def test_a_database_from_before_the_console_gains_its_columns_and_keeps_its_rows(tmp_path):
    db = tmp_path / "room.db"
    alert_id = stored_incident(db)
    old = sqlite3.connect(db)  # the incidents table as it was before issue 12
    for name, _ in ADDED_COLUMNS[1:]:
        old.execute(f"ALTER TABLE incidents DROP COLUMN {name}")
    old.execute("DROP TABLE commands")
    old.commit()
    old.close()
    store = IncidentStore(db)
    try:
        assert store.incident(alert_id).site_name == "Old Bazaar"
        assert store.dispatch(alert_id, "2026-12-01T10:00:00Z", "officer-1", "Unit 3", "north")
        assert store.queue_command(alert_id, "ack", {}, "officer-1", "2026-12-01T10:00:01Z")
        row = store.incident_rows("WHERE alert_id=?", (alert_id,))[0]
        assert (row["dispatch_unit"], row["dispatch_note"], row["dispatched_by"]) == (
            "Unit 3", "north", "officer-1")
    finally:
        store.close()


def test_dispatch_disposition_and_first_view_are_kept_and_on_the_timeline(db_target):
    db = db_target  # a SQLite file, then a PostgreSQL database (tests/conftest.py)
    alert_id = stored_incident(db)
    store = IncidentStore(db)
    try:
        assert store.viewed(alert_id, "2026-12-01T10:00:01Z", "ana")
        assert not store.viewed(alert_id, "2026-12-01T10:00:02Z", "ana")  # once per officer
        assert store.viewed(alert_id, "2026-12-01T10:00:03Z", "ben")
        assert store.dispatch(alert_id, "2026-12-01T10:00:04Z", "ana", "Unit 1", "")
        assert store.dispatch(alert_id, "2026-12-01T10:00:05Z", "ben", "Unit 2", "backup")
        with pytest.raises(ValueError, match="disposition"):
            store.mark(alert_id, "ended", "2026-12-01T10:00:06Z", "ben", "aliens")
        assert store.mark(alert_id, "ended", "2026-12-01T10:00:06Z", "ben", "prank")
        assert not store.dispatch(alert_id, "2026-12-01T10:00:07Z", "ana", "Unit 3", "")
        row = store.incident_rows("WHERE alert_id=?", (alert_id,))[0]
        assert (row["first_viewed_by"], row["first_viewed_at"]) == ("ana", "2026-12-01T10:00:01Z")
        assert (row["dispatched_at"], row["dispatch_unit"], row["dispatched_by"]) == (
            "2026-12-01T10:00:04Z", "Unit 2", "ben")
        assert (row["ended_by"], row["disposition"]) == ("ben", "prank")
        assert [(w, d) for _, w, d in store.timeline(alert_id)][1:] == [
            ("viewed", {"by": "ana"}), ("viewed", {"by": "ben"}),
            ("dispatched", {"by": "ana", "unit": "Unit 1", "note": ""}),
            ("dispatched", {"by": "ben", "unit": "Unit 2", "note": "backup"}),
            ("ended", {"by": "ben", "disposition": "prank"})]
    finally:
        store.close()


def test_each_command_is_claimed_by_exactly_one_receiver(db_target):
    db = db_target
    alert_id = stored_incident(db)
    web, room_a, room_b = IncidentStore(db), IncidentStore(db), IncidentStore(db)
    try:
        ids = [web.queue_command(alert_id, "ack", {}, "ana", "2026-12-01T10:00:00Z")
               for _ in range(5)]
        with pytest.raises(ValueError, match="command"):
            web.queue_command(alert_id, "selfdestruct", {}, "ana", "2026-12-01T10:00:00Z")
        got_a = room_a.claim_commands("a", limit=3)
        got_b = room_b.claim_commands("b")
        assert sorted(c.id for c in got_a + got_b) == ids
        assert room_a.claim_commands("a") == [] and room_b.claim_commands("b") == []
        room_a.finish_command(got_a[0].id, "2026-12-01T10:00:01Z", "done")
        states = [(c["claimed_by"], c["result"]) for c in web.commands_of(alert_id)]
        assert states == [("a", "done"), ("a", None), ("a", None), ("b", None), ("b", None)]
    finally:
        for s in (web, room_a, room_b):
            s.close()


def test_passwords_are_salted_scrypt_and_the_audit_log_is_append_only(db_target):
    db = db_target
    acc = Accounts(db)
    try:
        acc.add_user("ana", "operator", "same password")
        acc.add_user("ben", "admin", "same password")
        with pytest.raises(AccountError, match="exists"):
            acc.add_user("ana", "admin", "another password")
        for bad in (("x y", "operator", "long enough"), ("cy", "root", "long enough"),
                    ("cy", "operator", "short")):
            with pytest.raises(AccountError):
                acc.add_user(*bad)
        rows = acc._db.execute("SELECT salt, hash, kdf FROM users ORDER BY name").fetchall()
        assert rows[0][0] != rows[1][0] and rows[0][1] != rows[1][1]  # salt per user
        assert rows[0][2].startswith("scrypt:") and len(rows[0][1]) == 32
        assert acc.verify("ana", "same password") and not acc.verify("ana", "same passwore")
        assert not acc.verify("nobody", "same password")
        token = acc.new_session("ana")
        assert acc.session(token).role == "operator" and acc.session("forged") is None
        stored = acc._db.execute("SELECT token_sha256 FROM sessions").fetchone()[0]
        assert token not in stored  # only its digest is kept
        acc._db.execute("UPDATE sessions SET expires=0")
        assert acc.session(token) is None  # expired
        acc.audit("ana", "login")
        for sql in ("UPDATE audit SET \"user\"='ben'", "DELETE FROM audit"):
            with pytest.raises(acc._db.errors, match="append-only"):
                acc._db.execute(sql)
        assert [r["user"] for r in acc.audit_rows()] == ["ana"]
    finally:
        acc.close()


def test_user_add_reads_the_password_from_stdin_and_refuses_bad_input(tmp_path):
    db = str(tmp_path / "room.db")
    ok = subprocess.run([*ROOM, "user", "add", "ana", "--role", "supervisor", "--db", db],
                        input="a good password\n", capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert "a good password" not in ok.stdout + ok.stderr
    acc = Accounts(db)
    try:
        assert acc.verify("ana", "a good password")
        assert [(u.name, u.role) for u in acc.users()] == [("ana", "supervisor")]
    finally:
        acc.close()
    for argv, stdin, words in (
            (["ana", "--role", "admin"], "another password\n", ("exists",)),
            (["cy", "--role", "admin"], "short\n", ("password",)),
            (["c y", "--role", "admin"], "a good password\n", ("user name",)),
            (["cy", "--role", "boss"], "a good password\n", ("--role", "boss"))):
        proc = subprocess.run([*ROOM, "user", "add", *argv, "--db", db], input=stdin,
                              capture_output=True, text=True, timeout=60)
        assert_one_line_error(proc, *words)


def test_serve_refuses_bad_listen_plain_http_off_loopback_and_a_missing_certificate(
        tmp_path, pki_dir):
    db = str(tmp_path / "room.db")
    for argv, words in (
            (["--listen", "0.0.0.0:0", "--insecure-http"], ("--insecure-http", "loopback")),
            (["--listen", "nonsense"], ("--listen", "HOST:PORT")),
            (["--listen", "127.0.0.1:0", "--pki", str(pki_dir), "--web-cert",
              str(tmp_path / "none.pem")], ("--web-cert", "pinkbutton-pki web"))):
        proc = subprocess.run([*ROOM, "serve", "--web-only", "--db", db, *argv],
                              capture_output=True, text=True, timeout=60)
        assert_one_line_error(proc, *words)


def _https_get(url: str, ca: Path) -> tuple[int, str]:
    ctx = ssl.create_default_context(cafile=str(ca))  # verified against the PKI's CA
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


@pytest.mark.broker
def test_serve_runs_the_receiver_and_the_console_over_https_with_the_pki_certificate(
        tmp_path, pki_dir, broker):
    pki = tmp_path / "pki"  # a copy: the web certificate goes beside the session's PKI
    pki.mkdir(mode=0o700)
    for name in ("ca.pem", "ca.key", "controlroom.pem", "controlroom.key"):
        (pki / name).write_bytes((pki_dir / name).read_bytes())
        (pki / name).chmod(0o600)
    issue_web(pki, ["127.0.0.1"])
    db = tmp_path / "room.db"
    proc = subprocess.Popen(
        [*ROOM, "serve", "--port", str(broker.port), "--pki", str(pki), "--db", str(db),
         "--listen", "127.0.0.1:0", "--group", "serve-test", "--client-id", "serve-test",
         "--exit-after", "30"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("console on https://127.0.0.1:"), line
        url = line.split()[2]
        assert "user add" in (proc.stdout.readline() if proc.stdout else "")  # no officer yet
        status, body = _https_get(url + "login", pki / "ca.pem")
        assert status == 200 and "Officer login" in body
        assert _https_get(url + "api/queue", pki / "ca.pem")[0] == 401
        err_lines: list[str] = []
        reader = threading.Thread(target=lambda: err_lines.extend(proc.stderr or []),
                                  daemon=True)
        reader.start()
        deadline = time.monotonic() + 20  # the receiver in the same process reaches the broker
        while not any("connected to broker" in x for x in err_lines):
            assert time.monotonic() < deadline, err_lines
            time.sleep(0.05)
        proc.terminate()  # SIGTERM: the console and the receiver stop cleanly
        proc.wait(20)
        reader.join(10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, err_lines
    assert "Traceback" not in "".join(err_lines)


def test_every_template_and_static_file_ships_as_package_data():
    import fnmatch
    import tomllib

    root = Path(__file__).parent.parent
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "pinkbutton.tools.controlroom.web" in config["packages"]
    globs = config["package-data"]["pinkbutton.tools.controlroom.web"]
    web = root / "tools" / "controlroom" / "web"
    files = [p.relative_to(web).as_posix() for d in ("templates", "static")
             for p in (web / d).rglob("*") if p.is_file()]
    assert files and all(any(fnmatch.fnmatch(f, g) for g in globs) for f in files), files
    for f in files:  # every asset local: nothing in them points off the machine
        if f.startswith("static/vendor/"):
            continue  # third-party as published (e.g. SVG's namespace URI, images): the
            # browser tests (test_web_map) record every request the map page makes
        text = (web / f).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text, f
