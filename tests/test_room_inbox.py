"""The room's run-thread queue: an alert is handled before media queued ahead of it, and each
lane keeps its order (tools/controlroom/inbox.py). End to end: tests/test_sim_load.py."""

from __future__ import annotations

import queue
import threading
import time

import pytest
from pinkbutton.firmware import transport as t
from pinkbutton.tools.controlroom.inbox import Inbox
from pinkbutton.tools.controlroom.receiver import EVIDENCE_EVENTS_ID, is_bulk


def media(n: int) -> t.Message:
    return t.Message(f"pinkbutton/v1/dev/pb-1/media/a-{n}", bytes([n % 256]), False, ())


def alert(n: int) -> t.Message:
    return t.Message("pinkbutton/v1/dev/pb-1/alert", bytes([n]), False, ())


def test_an_alert_put_after_media_comes_out_first_and_each_lane_keeps_its_order():
    box = Inbox(is_bulk)
    for i in range(3):
        box.put(media(i))
    box.put(alert(1))
    box.put(("operator", "ack 1"))
    box.put(media(3))
    got = [box.get(0) for _ in range(6)]
    assert got == [alert(1), ("operator", "ack 1"), media(0), media(1), media(2), media(3)]
    assert box.empty()


def test_stream_end_on_the_evidence_subscription_stays_behind_the_media_before_it():
    end = t.Message("pinkbutton/v1/dev/pb-1/events", b"{}", False, (EVIDENCE_EVENTS_ID,))
    shared_event = t.Message("pinkbutton/v1/dev/pb-1/events", b"{}", False, ())
    assert is_bulk(end) and is_bulk(media(0))
    assert not is_bulk(shared_event) and not is_bulk(alert(0))
    assert not is_bulk(("fold", None)) and not is_bulk(t.Connected(False, "x"))
    box = Inbox(is_bulk)
    box.put(media(0))
    box.put(end)
    box.put(shared_event)
    assert [box.get(0), box.get(0), box.get(0)] == [shared_event, media(0), end]


def test_get_waits_for_a_put_from_another_thread_and_times_out_on_nothing():
    box = Inbox(is_bulk)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        box.get(0.05)
    assert time.monotonic() - start >= 0.04
    threading.Timer(0.05, box.put, args=(alert(2),)).start()
    assert box.get(5) == alert(2)
