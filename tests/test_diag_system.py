"""The self-test's own-health checks: SoC temperature, clock, DNS, and the indicator cycle."""

from __future__ import annotations

import os
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pinkbutton.firmware.config import load_config
from pinkbutton.firmware.diag.selftest import indicator_selftest
from pinkbutton.firmware.diag.system import (
    clock_check,
    dns_check,
    ntp_synchronized,
    temperature_check,
)
from pinkbutton.hal.base import Pattern
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.hal.fake.indicator import FakeIndicator

from tests.helpers import write_kiosk_config

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def zone(tmp_path: Path, millideg: str) -> Path:
    path = tmp_path / "temp"
    path.write_text(millideg + "\n")
    return path


def test_temperature_under_at_and_over_the_limit(tmp_path):
    ok = temperature_check(zone(tmp_path, "80000"), 80.0)
    assert ok.ok and ok.detail == "SoC at 80.0 °C (limit 80 °C)"
    hot = temperature_check(zone(tmp_path, "80100"), 80.0)
    assert not hot.ok and hot.detail == "SoC at 80.1 °C, over health.max_temp_c 80 °C"
    assert "ventilation" in hot.fix and hot.values == {"celsius": 80.1, "max_celsius": 80.0}


def test_no_thermal_sensor_is_said_not_guessed(tmp_path):
    c = temperature_check(tmp_path / "absent", 80.0)
    assert c.ok and c.detail == f"not measured: no thermal sensor at {tmp_path / 'absent'}"


def test_clock_before_the_certificate_start_fails_naming_both_dates():
    c = clock_check(datetime(2021, 1, 1, tzinfo=UTC), NOW - timedelta(days=1), True)
    assert not c.ok
    assert c.detail == ("the clock reads 2021-01-01 00:00 UTC, before the certificate's start "
                        "2026-11-30: not set from the network yet")
    assert "NTP" in c.fix


@pytest.mark.parametrize(("sync", "ok", "tail"), [
    (True, True, "synchronised (NTP)"),
    (False, False, "but is not synchronised (NTP)"),
    ("no timedatectl on this system", True, "NTP status unknown (no timedatectl on this system)"),
])
def test_clock_follows_systemds_ntp_status(sync, ok, tail):
    c = clock_check(NOW, NOW - timedelta(days=1), sync)
    assert c.ok is ok and c.detail.endswith(tail), c.detail


def fake_timedatectl(tmp_path: Path, monkeypatch, script: str) -> None:
    """The system's edge: timedatectl is systemd's, replaced by a script on PATH."""
    exe = tmp_path / "bin" / "timedatectl"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n" + script)
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")


@pytest.mark.parametrize(("script", "want"), [
    ('[ "$*" = "show -p NTPSynchronized --value" ] && echo yes\n', True),
    ('echo no\n', False),
    ('echo "System has not been booted with systemd" >&2; exit 1\n',
     "timedatectl: System has not been booted with systemd"),
])
def test_ntp_status_read_from_timedatectl(tmp_path, monkeypatch, script, want):
    fake_timedatectl(tmp_path, monkeypatch, script)
    assert ntp_synchronized() == want


def test_ntp_status_when_timedatectl_hangs_is_bounded(tmp_path, monkeypatch):
    fake_timedatectl(tmp_path, monkeypatch, "sleep 30\n")
    assert ntp_synchronized(timeout_s=0.3) == "timedatectl did not answer (TimeoutExpired)"


def test_dns_resolves_localhost_and_names_a_name_that_does_not_resolve():
    good = dns_check("localhost")
    assert good.ok and good.detail.startswith("localhost -> ") and good.values is not None
    assert "127.0.0.1" in good.values["addresses"] or "::1" in good.values["addresses"]
    bad = dns_check("no-such-broker.invalid")
    assert not bad.ok and "'no-such-broker.invalid'" in bad.detail
    assert "resolv.conf" in bad.fix


def test_indicator_cycles_every_pattern_then_off(tmp_path, pki_dir):
    cfg = load_config(write_kiosk_config(tmp_path, pki_dir, 1883))
    backend = FakeBackend()
    (check,) = indicator_selftest(backend, Clock(), cfg, step_s=0.0)
    assert check.ok, check
    (ind,) = backend.indicators
    assert isinstance(ind, FakeIndicator) and ind.closed
    shown = [p for p in Pattern if p is not Pattern.OFF] + [Pattern.OFF]
    assert ind.patterns() == shown
    assert check.values == {"patterns": [p.value for p in shown]}
    assert check.detail.startswith(f"LED GPIO{cfg.hal.led_pin} cycled through idle, sending")
    assert check.detail.endswith("did you see each one?")  # no buzzer configured


def test_an_indicator_that_does_not_take_a_pattern_fails(tmp_path, pki_dir, monkeypatch):
    cfg = load_config(write_kiosk_config(tmp_path, pki_dir, 1883))
    monkeypatch.setattr(FakeIndicator, "show", lambda self, pattern: None)
    (check,) = indicator_selftest(FakeBackend(), Clock(), cfg, step_s=0.0)
    assert not check.ok and "asked for idle" in check.detail
