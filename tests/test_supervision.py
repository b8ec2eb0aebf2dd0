"""DeviceMonitor: the control room's offline/online/back decisions, on a FakeClock."""

from __future__ import annotations

import pytest

from firmware import protocol as p
from firmware.clock import FakeClock
from tools.controlroom.supervision import DeviceMonitor, format_duration

DEV = "pb-test-0001"


def beat(seq: int, uptime: float, interval: float = 10.0, device: str = DEV, **kw) -> p.Health:
    fields = dict(
        device_id=device, seq=seq, uptime_s=uptime, interval_s=interval, state="idle",
        online_since=None, queue_depth=0, disk_free_mb=100.0, temperature_c=40.0,
        last_selftest=None, selftest_ok=None, faults=(), firmware="0.1.0",
        at="2026-11-23T09:00:00.000Z",
    )
    fields.update(kw)
    return p.Health(**fields)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def mon(clock) -> DeviceMonitor:
    return DeviceMonitor(clock, grace_s=1.0)


def kinds(notices) -> list[str]:
    return [n.kind for n in notices]


def test_first_heartbeat_brings_a_device_online(mon):
    [n] = mon.heartbeat(beat(1, 0.1))
    assert (n.kind, n.device_id, n.reason) == ("online", DEV, "heartbeat")
    assert n.text == f"{DEV} online (heartbeat)"
    assert mon.device(DEV).online is True


def test_offline_after_two_missed_heartbeats_plus_grace_not_before(mon, clock):
    mon.heartbeat(beat(1, 0))
    assert mon.next_deadline() == clock.monotonic() + 21
    clock.advance(20.9)
    assert mon.tick() == []
    clock.advance(0.2)
    [n] = mon.tick()
    assert n.kind == "offline"
    assert n.text == f"{DEV} OFFLINE: no heartbeat for 21 s (2 missed, every 10 s)"
    assert n.gone_s == pytest.approx(21.1)
    assert mon.tick() == []  # said once
    assert mon.next_deadline() is None
    view = mon.device(DEV)
    assert view.online is False and "no heartbeat" in view.offline_reason


def test_heartbeats_in_time_keep_it_online(mon, clock):
    for seq in range(1, 30):
        mon.heartbeat(beat(seq, seq * 10.0))
        clock.advance(10.5)
        assert mon.tick() == []


def test_back_online_says_how_long_it_was_gone_since_its_last_sign_of_life(mon, clock):
    mon.heartbeat(beat(5, 50))
    clock.advance(22)
    assert kinds(mon.tick()) == ["offline"]
    clock.advance(13)
    [n] = mon.heartbeat(beat(1, 0.2))  # it rebooted
    assert n.kind == "back" and n.gone_s == pytest.approx(35)
    assert n.text == f"{DEV} back online after 35 s"
    assert mon.device(DEV).online and mon.device(DEV).offline_since is None


def test_each_device_is_judged_by_its_own_interval(mon, clock):
    mon.heartbeat(beat(1, 0, interval=0.5, device="pb-fast"))
    mon.heartbeat(beat(1, 0, interval=60, device="pb-slow"))
    clock.advance(2.5)
    [n] = mon.tick()
    assert n.device_id == "pb-fast"
    assert n.text == "pb-fast OFFLINE: no heartbeat for 2.5 s (2 missed, every 0.5 s)"
    clock.advance(100)
    assert mon.tick() == []  # 102.5 s: under 2 x 60 + 1
    clock.advance(20)
    assert [x.device_id for x in mon.tick()] == ["pb-slow"]


def test_last_will_marks_offline_at_once_then_back_with_status(mon, clock):
    mon.heartbeat(beat(1, 0))
    clock.advance(3)
    [n] = mon.status(DEV, False, state="offline")
    assert n.kind == "offline" and "Last Will" in n.reason and n.gone_s == 0
    assert mon.status(DEV, False) == []  # already offline: no second notice
    clock.advance(7)
    [n] = mon.status(DEV, True, state="idle")
    assert n.kind == "back" and n.gone_s == pytest.approx(7)


def test_last_will_after_missed_heartbeats_is_not_a_second_notice(mon, clock):
    mon.heartbeat(beat(1, 0))
    clock.advance(25)
    assert kinds(mon.tick()) == ["offline"]
    assert mon.status(DEV, False) == []


def test_online_status_counts_as_a_sign_of_life(mon, clock):
    mon.heartbeat(beat(1, 0))
    clock.advance(15)
    assert mon.status(DEV, True) == []
    clock.advance(15)
    assert mon.tick() == []  # 15 s since the status, under 21
    clock.advance(7)
    assert kinds(mon.tick()) == ["offline"]


def test_a_retained_online_status_never_revives_a_silent_device(mon, clock):
    mon.heartbeat(beat(1, 0))
    clock.advance(25)
    assert kinds(mon.tick()) == ["offline"]
    assert mon.status(DEV, True, retained=True) == []  # the room re-subscribed
    assert mon.device(DEV).online is False
    assert kinds(mon.status(DEV, True)) == ["back"]  # a live one does


def test_a_retained_status_introduces_an_unknown_device(mon):
    assert kinds(mon.status("pb-new", True, retained=True)) == ["online"]
    assert kinds(mon.status("pb-gone", False, retained=True)) == ["offline"]


def test_a_device_without_heartbeats_is_never_timed_out(mon, clock):
    mon.status(DEV, True)
    clock.advance(10_000)
    assert mon.tick() == [] and mon.next_deadline() is None


def test_the_same_heartbeat_twice_is_not_news_but_a_restart_is(mon, clock):
    h = beat(3, 30)
    mon.heartbeat(h)
    clock.advance(1)
    assert mon.heartbeat(h) == []
    assert mon.heartbeat(beat(1, 0.1)) == []  # restarted between beats: alive, no notice
    assert mon.device(DEV).uptime_s == 0.1


def test_device_view_carries_the_latest_heartbeat(mon):
    mon.heartbeat(beat(1, 5, faults=("camera_failed",), queue_depth=4, temperature_c=71.5))
    v = mon.devices()[0]
    assert (v.device_id, v.faults, v.queue_depth, v.temperature_c, v.interval_s) == (
        DEV, ("camera_failed",), 4, 71.5, 10.0)
    assert mon.device("pb-unknown") is None


@pytest.mark.parametrize(
    "seconds,text",
    [(0, "0 s"), (0.46, "0.5 s"), (2.0, "2 s"), (9.96, "10 s"), (21.4, "21 s"), (119, "119 s"),
     (185, "3 min 5 s"), (7380, "2 h 3 min"), (-3, "0 s")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
