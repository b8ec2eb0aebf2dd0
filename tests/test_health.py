"""HealthReporter: heartbeat schedule and payloads (FakeClock, real files for the sensors)."""

from __future__ import annotations

import pytest
from pinkbutton.firmware import machine as m
from pinkbutton.firmware import protocol as p
from pinkbutton.firmware.health import HealthReporter, disk_free_mb, read_temperature_c
from pinkbutton.firmware.version import FIRMWARE_VERSION
from pinkbutton.hal.clock import FakeClock, iso8601

DEVICE = "pb-test-0001"


def idle(online: bool = True, faults: frozenset[str] = frozenset()) -> m.State:
    return m.State(mode=m.Mode.IDLE, settings=m.Settings(), online=online, faults=faults)


@pytest.fixture
def zone(tmp_path):
    path = tmp_path / "temp"
    path.write_text("48312\n")
    return path


def reporter(tmp_path, zone, interval: float = 10.0, clock: FakeClock | None = None):
    return HealthReporter(DEVICE, interval, clock or FakeClock(), tmp_path, thermal_zone=zone)


def test_heartbeat_carries_what_the_room_needs_and_survives_the_codec(tmp_path, zone):
    clock = FakeClock()
    r = reporter(tmp_path, zone, clock=clock)
    clock.advance(12.25)
    h = r.build(idle(faults=frozenset({"mic_failed", "camera_failed"})), 3, clock.wall() - 5,
                True)
    assert (h.device_id, h.seq, h.interval_s, h.state) == (DEVICE, 1, 10.0, "idle")
    assert h.uptime_s == 12.25
    assert h.queue_depth == 3
    assert h.temperature_c == 48.3
    assert h.disk_free_mb is not None and h.disk_free_mb > 0
    assert h.faults == ("camera_failed", "mic_failed")
    assert h.last_selftest == iso8601(clock.wall() - 5) and h.selftest_ok is True
    assert h.online_since == iso8601(clock.wall())
    assert (h.firmware, h.at) == (FIRMWARE_VERSION, iso8601(clock.wall()))
    assert p.decode_health(p.encode_health(h), topic_device=DEVICE) == h


def test_first_beat_due_at_once_then_on_a_fixed_grid(tmp_path, zone):
    clock = FakeClock()
    r = reporter(tmp_path, zone, clock=clock)
    assert r.due(clock.monotonic())
    start = clock.monotonic()
    r.build(idle(), 0, None, None)
    assert not r.due(clock.monotonic())
    assert r.next_due() == start + 10
    clock.advance(10.3)  # the loop woke late: the next beat stays on the grid
    assert r.due(clock.monotonic())
    r.build(idle(), 0, None, None)
    assert r.next_due() == start + 20


def test_beats_missed_by_a_stalled_loop_are_skipped_not_burst(tmp_path, zone):
    clock = FakeClock()
    r = reporter(tmp_path, zone, clock=clock)
    r.build(idle(), 0, None, None)
    clock.advance(35)
    second = r.build(idle(), 0, None, None)
    assert second.seq == 2
    assert not r.due(clock.monotonic())
    assert r.next_due() == clock.monotonic() + 10


def test_beat_sent_early_after_a_connect_restarts_the_grid(tmp_path, zone):
    clock = FakeClock()
    r = reporter(tmp_path, zone, clock=clock)
    r.build(idle(), 0, None, None)
    clock.advance(3)
    r.build(idle(), 0, None, None)  # reconnected: sent at once, before it was due
    assert r.next_due() == clock.monotonic() + 10


def test_online_since_follows_the_link(tmp_path, zone):
    clock = FakeClock()
    r = reporter(tmp_path, zone, clock=clock)
    r.link_changed(True)
    since = iso8601(clock.wall())
    clock.advance(30)
    assert r.build(idle(), 0, None, None).online_since == since
    r.link_changed(False)
    assert r.build(idle(online=False), 0, None, None).online_since is None
    clock.advance(1)
    # Without link_changed, build notices the link from the state.
    assert r.build(idle(), 0, None, None).online_since == iso8601(clock.wall())


@pytest.mark.parametrize("raw", ["", "hot", "999999", "-80000"])
def test_unreadable_or_implausible_temperature_is_none(tmp_path, raw):
    path = tmp_path / "temp"
    path.write_text(raw)
    assert read_temperature_c(path) is None
    assert read_temperature_c(tmp_path / "missing") is None


def test_disk_free_of_a_missing_directory_is_none(tmp_path):
    assert disk_free_mb(tmp_path / "nope") is None
    assert disk_free_mb(tmp_path) > 0


def test_bad_inputs_never_break_the_heartbeat(tmp_path, zone):
    r = reporter(tmp_path / "missing", tmp_path / "no-zone")
    h = r.build(idle(), "many", "not a time", "yes")  # type: ignore[arg-type]
    assert (h.queue_depth, h.last_selftest, h.selftest_ok) == (0, None, None)
    assert (h.disk_free_mb, h.temperature_c) == (None, None)
    p.decode_health(p.encode_health(h))
    many = frozenset(f"fault_{i:02d}" for i in range(40)) | {"x" * 100}
    h = r.build(idle(faults=many), -5, float("inf"), None)
    assert len(h.faults) == p.MAX_HEALTH_FAULTS and h.queue_depth == 0
    assert h.last_selftest is None
    p.decode_health(p.encode_health(h))


@pytest.mark.parametrize("interval", [0, -1, float("nan"), 86401, "10"])
def test_interval_must_be_sane(tmp_path, interval):
    with pytest.raises(ValueError, match="interval"):
        HealthReporter(DEVICE, interval, FakeClock(), tmp_path)


def test_heartbeat_lists_pending_evidence_only_as_valid_alert_ids(tmp_path, zone):
    r = reporter(tmp_path, zone)
    ids = [f"3f2a9c1e-{n:04d}-4111-8111-111111111111" for n in range(20)]
    h = r.build(idle(), 0, None, None, ["not-a-uuid", None, *ids])
    assert h.evidence_pending == tuple(ids[: p.MAX_HEALTH_EVIDENCE])
    assert p.decode_health(p.encode_health(h), topic_device=DEVICE) == h
    assert r.build(idle(), 0, None, None).evidence_pending == ()


def test_heartbeat_carries_certificate_days_left(tmp_path, zone):
    clock = FakeClock()
    day = 86400.0
    r = HealthReporter(DEVICE, 10.0, clock, tmp_path, thermal_zone=zone,
                       cert_not_after=clock.wall() + 30 * day - 1)
    h = r.build(idle(), 0, None, None)
    assert h.cert_days_left == 29  # 29 whole days and a bit: counted as certificate_check does
    assert p.decode_health(p.encode_health(h), topic_device=DEVICE).cert_days_left == 29
    clock.advance(31 * day)
    assert r.build(idle(), 0, None, None).cert_days_left == -2  # expired
    unknown = reporter(tmp_path, zone).build(idle(), 0, None, None)
    assert unknown.cert_days_left is None
