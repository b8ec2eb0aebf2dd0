"""The kiosk's durable outbox on a real SQLite file."""

from __future__ import annotations

import sqlite3

from pinkbutton.firmware.machine import AlertDraft
from pinkbutton.firmware.outbox import Outbox


def draft(n: int) -> AlertDraft:
    return AlertDraft(f"00000000-0000-4000-8000-{n:012d}", n, "emergency", 1.7e9 + n, 100.0 + n,
                      1, 1, False, None)


def test_pending_survives_reopen_until_receipt(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.put(draft(1), 1.0)
    box.put(draft(2), 2.0)
    box.mark_delivered(draft(1).alert_id)  # the broker has it: still pending
    box.close()
    box = Outbox(tmp_path / "outbox.db")
    assert [d.seq for d in box.pending()] == [1, 2]
    assert box.mark_received(draft(1).alert_id) is True
    assert box.mark_received(draft(1).alert_id) is False
    assert [d.seq for d in box.pending()] == [2]
    assert box.next_seq() == 3
    box.close()


def test_put_is_idempotent_by_alert_id(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.put(draft(1), 1.0)
    box.put(draft(1), 1.5)
    assert len(box.pending()) == 1
    box.close()


def test_corrupt_outbox_is_quarantined_and_recreated(tmp_path):
    path = tmp_path / "outbox.db"
    path.write_bytes(b"this is not sqlite at all " * 200)
    box, fault = Outbox.open_or_recover(path)
    assert fault is not None and "corrupt" in fault
    quarantined = list(tmp_path.glob("outbox.db.corrupt-*"))
    assert len(quarantined) == 1 and quarantined[0].read_bytes().startswith(b"this is not")
    box.put(draft(1), 1.0)  # new alerts still work
    assert [d.seq for d in box.pending()] == [1]
    box.close()
    assert sqlite3.connect(path).execute("SELECT count(*) FROM alerts").fetchone() == (1,)


def test_outbox_that_cannot_be_created_falls_back_to_memory(tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    box, fault = Outbox.open_or_recover(blocker / "outbox.db")
    assert fault is not None and "memory" in fault
    box.put(draft(1), 1.0)
    assert [d.seq for d in box.pending()] == [1]
    box.close()


def test_outbox_of_an_older_firmware_gains_the_receipt_column(tmp_path):
    path = tmp_path / "outbox.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE alerts (alert_id TEXT PRIMARY KEY, seq INTEGER NOT NULL UNIQUE, "
               "draft TEXT NOT NULL, created_wall REAL NOT NULL, delivered INTEGER NOT NULL "
               "DEFAULT 0)")
    db.commit()
    db.close()
    box = Outbox(path)
    box.put(draft(5), 1.0)
    assert [d.seq for d in box.pending()] == [5]
    box.close()


def test_alerts_remember_the_boot_they_were_pressed_in(tmp_path):
    from pinkbutton.firmware import outbox as ob

    box = Outbox(tmp_path / "outbox.db")
    box.put(draft(1), 1.0)
    assert box.pending_with_boot() == [(draft(1), ob.BOOT_ID is not None)]
    # The same file read after a reboot: the stored boot id no longer matches.
    box._db.execute("UPDATE alerts SET boot_id='an-earlier-boot'")
    assert box.pending_with_boot() == [(draft(1), False)]
    box.close()


def test_open_incident_is_the_newest_confirmed_alert_never_ended(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    assert box.open_incident() is None
    box.put(draft(1), 1.0)
    assert box.open_incident() is None  # not confirmed: the pending replay handles it
    box.mark_received(draft(1).alert_id)
    got = box.open_incident()
    assert got is not None and got[0] == draft(1)
    box.close()
    box = Outbox(tmp_path / "outbox.db")  # survives a restart
    assert box.open_incident()[0] == draft(1)
    box.mark_ended(draft(1).alert_id)
    assert box.open_incident() is None
    box.put(draft(2), 2.0)
    box.mark_received(draft(2).alert_id)
    assert box.open_incident()[0] == draft(2)
    box.close()
