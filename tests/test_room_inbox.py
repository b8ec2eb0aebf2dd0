"""The room's run-thread queue: an alert is handled before heartbeats and media queued ahead of
it, and each lane keeps its order (tools/controlroom/inbox.py)."""

from __future__ import annotations

import queue
import threading
import time

import pytest
from pinkbutton.firmware import transport as t
from pinkbutton.tools.controlroom.inbox import BULK, SUPERVISION, URGENT, Inbox
from pinkbutton.tools.controlroom.receiver import EVIDENCE_EVENTS_ID, inbox_lane


def media(n: int) -> t.Message:
    return t.Message(f"pinkbutton/v1/dev/pb-1/media/a-{n}", bytes([n % 256]), False, ())


def alert(n: int) -> t.Message:
    return t.Message("pinkbutton/v1/dev/pb-1/alert", bytes([n]), False, ())


def health(n: int) -> t.Message:
    return t.Message(f"pinkbutton/v1/dev/pb-{n}/health", b"{}", False, ())


def test_an_alert_put_after_media_and_heartbeats_comes_out_first_and_each_lane_keeps_its_order():
    box = Inbox(inbox_lane)
    for i in range(3):
        box.put(media(i))
        box.put(health(i))
    box.put(alert(1))
    box.put(("operator", "ack 1"))
    box.put(media(3))
    got = [box.get(0) for _ in range(9)]
    assert got == [alert(1), ("operator", "ack 1"), health(0), health(1), health(2),
                   media(0), media(1), media(2), media(3)]
    assert box.empty()


def test_stream_end_on_the_evidence_subscription_stays_behind_the_media_before_it():
    end = t.Message("pinkbutton/v1/dev/pb-1/events", b"{}", False, (EVIDENCE_EVENTS_ID,))
    shared_event = t.Message("pinkbutton/v1/dev/pb-1/events", b"{}", False, ())
    status = t.Message("pinkbutton/v1/dev/pb-1/status", b"{}", True, ())
    assert inbox_lane(end) == inbox_lane(media(0)) == BULK
    assert inbox_lane(status) == inbox_lane(health(1)) == SUPERVISION
    assert inbox_lane(shared_event) == inbox_lane(alert(0)) == URGENT
    assert inbox_lane(("fold", None)) == inbox_lane(t.Connected(False, "x")) == URGENT
    box = Inbox(inbox_lane)
    box.put(media(0))
    box.put(end)
    box.put(shared_event)
    assert [box.get(0), box.get(0), box.get(0)] == [shared_event, media(0), end]


def test_get_waits_for_a_put_from_another_thread_and_times_out_on_nothing():
    box = Inbox(inbox_lane)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        box.get(0.05)
    assert time.monotonic() - start >= 0.04
    threading.Timer(0.05, box.put, args=(alert(2),)).start()
    assert box.get(5) == alert(2)


def test_heartbeats_stored_together_each_keep_their_device_and_time(tmp_path):
    from pinkbutton.firmware import protocol as p
    from pinkbutton.tools.controlroom.store import IncidentStore

    store = IncidentStore(tmp_path / "room.db")
    try:
        beats = [(p.Health(device_id=f"pb-x-{n:04d}", seq=n, uptime_s=n, interval_s=10,
                           state="idle", online_since=None, queue_depth=0, disk_free_mb=1,
                           temperature_c=None, last_selftest=None, selftest_ok=None,
                           faults=(), firmware="t", at="2026-12-02T00:00:00.000Z"),
                  f"2026-12-02T00:00:{n:02d}.000Z") for n in (3, 1, 2)]
        store.record_heartbeats(beats)
        store.record_heartbeats([])  # nothing: no transaction
        rows = {r.device_id: r for r in store.fleet()}
        assert sorted(rows) == ["pb-x-0001", "pb-x-0002", "pb-x-0003"]
        assert rows["pb-x-0002"].heartbeat_at == "2026-12-02T00:00:02.000Z"
    finally:
        store.close()
