"""DeviceMonitor: the control room's offline/online/back decisions, on a FakeClock."""

from __future__ import annotations

import pytest
from pinkbutton.firmware import protocol as p
from pinkbutton.hal.clock import FakeClock
from pinkbutton.tools.controlroom.supervision import DeviceMonitor, format_duration

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


# --- pinned at the boundaries (issue 15) -----------------------------------------------------


def test_exactly_at_the_offline_deadline_a_device_is_not_yet_offline(mon, clock):
    mon.heartbeat(beat(1, 0))  # at 1000: deadline 1000 + 2 x 10 + 1
    assert mon.next_deadline() == 1021.0
    assert mon.tick(1021.0) == []
    [n] = mon.tick(1021.001)
    assert (n.kind, n.at, n.gone_s) == ("offline", 1021.001, pytest.approx(21.001))


def test_several_kiosks_silent_in_one_tick_each_get_an_offline_notice(mon, clock):
    for device in ("pb-a", "pb-b", "pb-c"):
        mon.heartbeat(beat(1, 0, device=device))
    mon.heartbeat(beat(1, 0, device="pb-d", interval=100.0))  # not due yet
    notices = mon.tick(1030.0)
    assert [(n.kind, n.device_id) for n in notices] == [
        ("offline", "pb-a"), ("offline", "pb-b"), ("offline", "pb-c")]
    assert [v.online for v in mon.devices()] == [False, False, False, True]


def test_a_last_will_notice_names_the_device_and_when(mon, clock):
    mon.heartbeat(beat(1, 0))
    [n] = mon.status(DEV, False, now=1003.0)
    assert n == type(n)("offline", DEV, "offline status (Last Will or shutdown)", 1003.0, 0.0)
    assert n.text == f"{DEV} OFFLINE: offline status (Last Will or shutdown)"
    view = mon.device(DEV)
    assert (view.device_id, view.online, view.offline_since) == (DEV, False, 1003.0)
    [back] = mon.status(DEV, True, now=1010.0)
    assert back == type(n)("back", DEV, "status online", 1010.0, 7.0)
    assert back.text == f"{DEV} back online after 7 s"


def test_the_monitor_uses_the_time_it_is_given_not_its_clock(mon, clock):
    [n] = mon.heartbeat(beat(1, 0), now=5.0)
    assert n.at == 5.0 and mon.device(DEV).last_heartbeat == 5.0
    [n] = mon.status("pb-other", True, now=6.0)
    assert (n.kind, n.device_id, n.reason, n.at) == ("online", "pb-other", "status online", 6.0)
    [n] = mon.tick(now=26.5)
    assert (n.device_id, n.at, n.gone_s) == (DEV, 26.5, 21.5)
    assert mon.tick() == []  # and the clock (1000) when it is not given
    [n] = mon.heartbeat(beat(2, 10))
    assert (n.kind, n.at, n.gone_s) == ("back", 1000.0, pytest.approx(995.0))


def test_device_of_a_kiosk_known_only_from_its_status(mon):
    mon.status(DEV, True, state="idle")
    view = mon.device(DEV)
    assert view == mon.devices()[0]
    assert (view.device_id, view.online, view.state, view.last_heartbeat, view.interval_s) == (
        DEV, True, "idle", None, None)
    assert (view.faults, view.temperature_c, view.queue_depth, view.disk_free_mb,
            view.uptime_s, view.firmware, view.offline_since, view.offline_reason) == (
        (), None, None, None, None, None, None, None)
    mon.status(DEV, True)
    assert mon.device(DEV).state == "idle", "a status without a state keeps the known one"
    mon.status(DEV, False, state="offline")
    assert mon.device(DEV).state == "offline"


def test_device_carries_every_field_of_the_latest_heartbeat(mon):
    mon.heartbeat(beat(1, 5, disk_free_mb=0.0, temperature_c=-5.0, firmware="1.2.3",
                       state="streaming", queue_depth=0), now=7.0)
    v = mon.device(DEV)
    assert (v.device_id, v.online, v.last_heartbeat, v.state, v.disk_free_mb, v.temperature_c,
            v.uptime_s, v.firmware, v.queue_depth) == (
        DEV, True, 7.0, "streaming", 0.0, -5.0, 5, "1.2.3", 0)


def test_a_duplicate_heartbeat_is_not_a_sign_of_life(mon, clock):
    h = beat(3, 30)
    mon.heartbeat(h, now=1000.0)
    assert mon.heartbeat(h, now=1015.0) == []
    assert mon.device(DEV).last_heartbeat == 1000.0, "the copy does not move the deadline"
    assert mon.next_deadline() == 1021.0
    mon.heartbeat(beat(4, 30), now=1016.0)  # a new seq: news even with the same uptime
    assert mon.device(DEV).last_heartbeat == 1016.0
    mon.heartbeat(beat(4, 0.5), now=1017.0)  # the same seq after a restart: news too
    assert mon.device(DEV).last_heartbeat == 1017.0 and mon.device(DEV).uptime_s == 0.5


def test_back_after_an_offline_status_without_a_time_gone_says_how_long(mon):
    mon.status(DEV, False, now=10.0)  # first heard of as offline
    [n] = mon.status(DEV, True, now=10.5)
    assert (n.kind, n.gone_s) == ("back", 0.5)


@pytest.mark.parametrize(
    "seconds,text",
    [(9.94, "9.9 s"), (9.95, "10 s"), (10.5, "10 s"), (119.4, "119 s"), (119.5, "2 min 0 s"),
     (120, "2 min 0 s"), (3599, "59 min 59 s"), (7199, "119 min 59 s"), (7200, "2 h 0 min"),
     (36_000, "10 h 0 min")],
)
def test_format_duration_switches_units_exactly_at_its_limits(seconds, text):
    assert format_duration(seconds) == text
