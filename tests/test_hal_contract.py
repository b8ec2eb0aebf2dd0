"""One contract, every backend: what firmware may rely on from a Button and an Indicator.

Each backend gets a small driver that makes raw edges its own way: the fake through
FakeButton's controls, the pi backend through gpiozero's MockFactory pins (which do
not debounce, so the debouncing seen here is ours). Both run on a FakeClock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from pinkbutton.hal import Button, ButtonEvent, HalError, Indicator, Pattern, get_backend
from pinkbutton.hal.clock import FakeClock
from pinkbutton.hal.fake import FakeBackend, FakeButton

BUTTON_PIN = 17
LED_PIN = 18
BUZZER_PIN = 19
DEBOUNCE = 0.05


@dataclass
class Driver:
    """Opens devices on one backend and makes raw edges on a button's pin."""

    name: str
    clock: FakeClock
    open_button: Callable[..., Button]
    open_indicator: Callable[..., Indicator]
    press: Callable[[int], None]
    release: Callable[[int], None]
    bounce: Callable[[int, int], None]  # pin, number of toggles 2 ms apart
    led_lit: Callable[[int], bool] | None = None  # real pin level, where there is one
    opened: list = field(default_factory=list)

    def button(self, **kwargs) -> Button:
        device = self.open_button(self.clock, BUTTON_PIN, **kwargs)
        self.opened.append(device)
        return device

    def indicator(self, **kwargs) -> Indicator:
        device = self.open_indicator(self.clock, LED_PIN, **kwargs)
        self.opened.append(device)
        return device


def fake_driver(clock: FakeClock) -> Driver:
    backend = get_backend("fake", env={})
    assert isinstance(backend, FakeBackend)

    def button_on(pin: int) -> FakeButton:
        # The simulator finds its buttons the same way: through the backend's list.
        return next(b for b in backend.buttons if b.pin == pin and not b.closed)

    return Driver(
        name="fake",
        clock=clock,
        open_button=backend.button,
        open_indicator=backend.indicator,
        press=lambda pin: button_on(pin).press(),
        release=lambda pin: button_on(pin).release(),
        bounce=lambda pin, n: button_on(pin).bounce(n, interval=0.002),
    )


def pi_driver(clock: FakeClock) -> Driver:
    mock = pytest.importorskip("gpiozero.pins.mock", reason="gpiozero is not installed")
    factory = mock.MockFactory()
    backend = get_backend("pi", env={}, pin_factory=factory)

    def bounce(pin: int, n: int) -> None:
        mock_pin = factory.pin(pin)
        for _ in range(n):
            clock.sleep(0.002)
            mock_pin.drive_low() if mock_pin.state else mock_pin.drive_high()

    # Buttons are wired active-low: pressing pulls the pin to ground.
    return Driver(
        name="pi",
        clock=clock,
        open_button=backend.button,
        open_indicator=backend.indicator,
        press=lambda pin: factory.pin(pin).drive_low(),
        release=lambda pin: factory.pin(pin).drive_high(),
        bounce=bounce,
        led_lit=lambda pin: bool(factory.pin(pin).state),
    )


@pytest.fixture(params=["fake", "pi"])
def hw(request) -> Iterator[Driver]:
    make = {"fake": fake_driver, "pi": pi_driver}[request.param]
    driver = make(FakeClock())
    yield driver
    for device in driver.opened:
        device.close()  # stops LED threads; a second close must be harmless


# -- button ---------------------------------------------------------------------------------


def test_clean_press_gives_one_press_event_with_the_press_time(hw):
    button = hw.button()
    assert button.is_pressed is False
    pressed_at = hw.clock.monotonic()
    hw.press(BUTTON_PIN)
    assert button.poll() == []  # not stable yet
    assert button.next_deadline() == pressed_at + DEBOUNCE
    hw.clock.advance(DEBOUNCE)
    assert button.poll() == [ButtonEvent(True, at=pressed_at, confirmed_at=pressed_at + DEBOUNCE)]
    assert button.is_pressed is True
    assert button.next_deadline() is None
    hw.clock.advance(1)
    assert button.poll() == []


def test_release_gives_a_release_event(hw):
    button = hw.button()
    hw.press(BUTTON_PIN)
    hw.clock.advance(0.5)
    assert [e.pressed for e in button.poll()] == [True]
    released_at = hw.clock.monotonic()
    hw.release(BUTTON_PIN)
    hw.clock.advance(DEBOUNCE)
    assert button.poll() == [ButtonEvent(False, released_at, released_at + DEBOUNCE)]
    assert button.is_pressed is False


@pytest.mark.parametrize("toggles", [2, 4, 10])
def test_contact_bounce_then_stable_level_gives_exactly_one_event(hw, toggles):
    button = hw.button()
    hw.press(BUTTON_PIN)
    hw.bounce(BUTTON_PIN, toggles)  # even count: ends pressed, 2 ms after the last toggle
    settled_at = hw.clock.monotonic()
    assert button.poll() == []
    hw.clock.advance(1)
    assert button.poll() == [ButtonEvent(True, settled_at, settled_at + DEBOUNCE)]


def test_release_bounce_gives_exactly_one_release_event(hw):
    button = hw.button()
    hw.press(BUTTON_PIN)
    hw.clock.advance(1)
    button.poll()
    hw.release(BUTTON_PIN)
    hw.bounce(BUTTON_PIN, 6)
    hw.clock.advance(1)
    assert [e.pressed for e in button.poll()] == [False]


def test_glitch_shorter_than_debounce_gives_nothing(hw):
    button = hw.button()
    hw.press(BUTTON_PIN)
    hw.clock.advance(DEBOUNCE * 0.6)
    hw.release(BUTTON_PIN)
    hw.clock.advance(1)
    assert button.poll() == []
    assert button.is_pressed is False


def test_custom_debounce_time_is_honoured(hw):
    button = hw.button(debounce_s=0.2)
    pressed_at = hw.clock.monotonic()
    hw.press(BUTTON_PIN)
    hw.clock.advance(0.1)  # would be stable under the default 50 ms
    assert button.poll() == []
    hw.clock.advance(0.1)
    assert button.poll() == [ButtonEvent(True, pressed_at, pressed_at + 0.2)]


def test_wakeup_is_called_on_every_raw_edge(hw):
    button = hw.button()
    wakeups: list[float] = []
    button.wakeup = lambda: wakeups.append(hw.clock.monotonic())
    hw.press(BUTTON_PIN)
    hw.bounce(BUTTON_PIN, 3)
    assert len(wakeups) == 4
    assert wakeups == sorted(wakeups)


def test_a_pin_cannot_be_opened_twice_but_close_releases_it(hw):
    button = hw.button()
    with pytest.raises(HalError, match="GPIO17"):
        hw.button()
    button.close()
    button.close()  # idempotent
    again = hw.button()
    hw.press(BUTTON_PIN)
    hw.clock.advance(DEBOUNCE)
    assert [e.pressed for e in again.poll()] == [True]


# -- indicator ------------------------------------------------------------------------------


def test_indicator_starts_off_and_reports_each_pattern_it_shows(hw):
    indicator = hw.indicator(buzzer_pin=BUZZER_PIN)
    assert indicator.pattern is Pattern.OFF
    for pattern in Pattern:
        indicator.show(pattern)
        assert indicator.pattern is pattern
    indicator.show("idle")  # the config and the protocol carry plain strings
    assert indicator.pattern is Pattern.IDLE
    with pytest.raises(ValueError, match="blinky"):
        indicator.show("blinky")
    assert indicator.pattern is Pattern.IDLE


def test_indicator_drives_the_led_pin_where_there_is_one(hw):
    if hw.led_lit is None:
        pytest.skip(f"the {hw.name} backend has no LED pin level to read")
    indicator = hw.indicator()
    indicator.show(Pattern.HELP_COMING)
    assert hw.led_lit(LED_PIN) is True
    indicator.show(Pattern.OFF)
    assert hw.led_lit(LED_PIN) is False
    indicator.show(Pattern.HELP_COMING)
    indicator.close()
    assert hw.led_lit(LED_PIN) is False


def test_indicator_close_releases_its_pins(hw):
    indicator = hw.indicator(buzzer_pin=BUZZER_PIN)
    indicator.show(Pattern.SENDING)
    with pytest.raises(HalError):
        hw.indicator()
    indicator.close()
    indicator.close()
    assert indicator.pattern is Pattern.OFF
    again = hw.indicator(buzzer_pin=BUZZER_PIN)
    again.show(Pattern.FAULT)
    assert again.pattern is Pattern.FAULT


# -- pi only: wiring details the fake has no notion of --------------------------------------


@pytest.fixture
def mock_factory():
    mock = pytest.importorskip("gpiozero.pins.mock", reason="gpiozero is not installed")
    return mock.MockFactory()


def test_pi_active_high_button_is_pressed_by_driving_the_pin_high(mock_factory):
    clock = FakeClock()
    button = get_backend("pi", env={}, pin_factory=mock_factory).button(
        clock, BUTTON_PIN, active_low=False
    )
    try:
        mock_factory.pin(BUTTON_PIN).drive_high()
        clock.advance(DEBOUNCE)
        assert [e.pressed for e in button.poll()] == [True]
    finally:
        button.close()


def test_pi_button_already_down_when_opened_reads_pressed_without_an_event(mock_factory):
    # A stuck button at boot must surface as a fault (is_pressed), never as an alert.
    from gpiozero.pins.mock import MockPin

    class HeldDownPin(MockPin):
        def _set_pull(self, value):
            self._pull = value  # the closed contact holds the line at ground despite the pull-up

    mock_factory.pin(BUTTON_PIN, pin_class=HeldDownPin)
    clock = FakeClock()
    button = get_backend("pi", env={}, pin_factory=mock_factory).button(clock, BUTTON_PIN)
    try:
        clock.advance(1)
        assert button.poll() == []
        assert button.is_pressed is True
    finally:
        button.close()


def _lit_runs(steps: list[bool]) -> int:
    return sum(1 for i, lit in enumerate(steps) if lit and (i == 0 or not steps[i - 1]))


def test_pi_led_patterns_are_the_documented_ones():
    from pinkbutton.hal.pi.indicator import LED_SEGMENTS, STEP_S, led_steps

    assert set(LED_SEGMENTS) == set(Pattern)
    assert LED_SEGMENTS[Pattern.OFF] is None and LED_SEGMENTS[Pattern.HELP_COMING] is None
    period = {p: len(led_steps(s)) * STEP_S for p, s in LED_SEGMENTS.items() if s is not None}
    idle = led_steps(LED_SEGMENTS[Pattern.IDLE])
    assert period[Pattern.IDLE] == pytest.approx(3.0)
    assert _lit_runs(idle) == 1 and sum(idle) * STEP_S <= 0.2  # a short blink
    assert period[Pattern.SENDING] < period[Pattern.DELIVERED]  # fast vs slow
    assert _lit_runs(led_steps(LED_SEGMENTS[Pattern.FAULT])) == 2  # double blink


def test_pi_led_actually_blinks_while_sending(mock_factory):
    import time

    indicator = get_backend("pi", env={}, pin_factory=mock_factory).indicator(FakeClock(), LED_PIN)
    led_pin = mock_factory.pin(LED_PIN)
    try:
        led_pin.clear_states()
        indicator.show(Pattern.SENDING)
        give_up = time.monotonic() + 2  # gpiozero blinks on real time; 0.1 s per half period
        while len(led_pin.states) < 4 and time.monotonic() < give_up:
            time.sleep(0.01)
        levels = [state.state for state in led_pin.states]
        assert levels[1:4] == [True, False, True]
    finally:
        indicator.close()
    assert led_pin.state is False
