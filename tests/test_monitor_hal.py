"""The tamper switch input (issue 11 item 5): a debounced level, `is_pressed` = the case is open,
on the fake backend (settable level, a bad mode that starts open) and on the pi backend through
gpiozero's MockFactory pins, in both wirings; pins are claimed like every other GPIO."""

from __future__ import annotations

import pytest
from pinkbutton.hal import get_backend
from pinkbutton.hal.base import ButtonEvent, HalError
from pinkbutton.hal.clock import FakeClock
from pinkbutton.hal.fake import FakeBackend

DEBOUNCE = 0.05
PIN = 24


def test_fake_tamper_level_is_settable_and_debounced():
    clock = FakeClock()
    backend = FakeBackend()
    tamper = backend.tamper(clock, PIN, DEBOUNCE)
    assert tamper.is_pressed is False and backend.tampers == [tamper]
    opened_at = clock.monotonic()
    tamper.set_open(True)
    assert tamper.poll() == []
    clock.advance(DEBOUNCE)
    assert tamper.poll() == [ButtonEvent(True, opened_at, opened_at + DEBOUNCE)]
    assert tamper.is_pressed is True
    tamper.set_open(False)
    clock.advance(DEBOUNCE)
    assert [e.pressed for e in tamper.poll()] == [False]


def test_fake_tamper_bad_mode_starts_open_without_an_event():
    clock = FakeClock()
    tamper = FakeBackend(tamper_open=True).tamper(clock, PIN, DEBOUNCE)
    assert tamper.is_pressed is True
    clock.advance(1)
    assert tamper.poll() == []


def test_fake_tamper_pin_is_claimed():
    clock = FakeClock()
    backend = FakeBackend()
    backend.button(clock, 17)
    with pytest.raises(HalError, match="GPIO17 is already in use"):
        backend.tamper(clock, 17)
    backend.tamper(clock, PIN)
    with pytest.raises(HalError, match=f"GPIO{PIN} is already in use"):
        backend.indicator(clock, PIN)


@pytest.mark.parametrize("active_high", [True, False])
def test_pi_tamper_reads_open_in_both_wirings(active_high):
    mock = pytest.importorskip("gpiozero.pins.mock", reason="gpiozero is not installed")
    factory = mock.MockFactory()
    clock = FakeClock()
    backend = get_backend("pi", env={}, pin_factory=factory)
    pin = factory.pin(PIN)
    tamper = backend.tamper(clock, PIN, DEBOUNCE, active_high)
    try:
        # Pulled towards the open level, so a cut wire reads open too (a mock pin follows
        # its pull when opened; a real one is held by the shut switch).
        assert (pin.pull == "up") is active_high
        assert tamper.is_pressed is True
        # The lid is shut: the switch holds the pin at the closed level.
        pin.drive_low() if active_high else pin.drive_high()
        clock.advance(DEBOUNCE)
        assert [e.pressed for e in tamper.poll()] == [False]
        assert tamper.is_pressed is False
        opened_at = clock.monotonic()
        pin.drive_high() if active_high else pin.drive_low()
        clock.advance(DEBOUNCE)
        assert tamper.poll() == [ButtonEvent(True, opened_at, opened_at + DEBOUNCE)]
        assert tamper.is_pressed is True
        pin.drive_low() if active_high else pin.drive_high()
        clock.advance(DEBOUNCE)
        assert [e.pressed for e in tamper.poll()] == [False]
    finally:
        tamper.close()


def test_pi_tamper_open_at_start_reads_open():
    mock = pytest.importorskip("gpiozero.pins.mock", reason="gpiozero is not installed")
    factory = mock.MockFactory()
    factory.pin(PIN).drive_high()
    tamper = get_backend("pi", env={}, pin_factory=factory).tamper(FakeClock(), PIN)
    try:
        assert tamper.is_pressed is True
    finally:
        tamper.close()


# -- run_kiosk's opening of the switch: a broken one is a fault, never a stopped kiosk -----


def _config(tamper_pin: int | None):
    from pinkbutton.firmware.config import parse_config

    from tests.test_config import CONFIG_PATH, MINIMAL, with_value

    data = MINIMAL if tamper_pin is None else with_value("hal", "tamper_pin", tamper_pin)
    return parse_config(data, CONFIG_PATH, check_certificates=False)


class BrokenTamperBackend(FakeBackend):
    def tamper(self, *args, **kwargs):
        raise ValueError("GPIO busy\nsecond line")


def test_open_tamper_as_configured():
    from pinkbutton.firmware.app import open_tamper
    from pinkbutton.hal.fake import FakeTamper

    faults: list[tuple[str, str]] = []
    assert open_tamper(FakeBackend(), FakeClock(), _config(None), faults) is None
    tamper = open_tamper(FakeBackend(), FakeClock(), _config(PIN), faults)
    assert isinstance(tamper, FakeTamper) and tamper.pin == PIN and faults == []
    assert open_tamper(BrokenTamperBackend(), FakeClock(), _config(PIN), faults) is None
    assert faults == [("tamper_failed", "ValueError: GPIO busy")]
