"""Backend choice: config name vs PINKBUTTON_HAL, and the errors a field tech will see."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from pinkbutton.hal import (
    Backend,
    BackendUnavailable,
    HalError,
    UnknownBackend,
    get_backend,
    register_backend,
    registry,
)
from pinkbutton.hal.clock import FakeClock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.hal.registry import known_backends


def test_configured_name_is_used_when_the_environment_says_nothing():
    assert isinstance(get_backend("fake", env={}), FakeBackend)


def test_environment_wins_over_the_configured_name_and_warns_when_it_picks_the_fake(caplog):
    with caplog.at_level(logging.WARNING, logger="pinkbutton.hal.registry"):
        backend = get_backend("pi", env={"PINKBUTTON_HAL": "fake"})
    assert backend.name == "fake"
    assert "PINKBUTTON_HAL=fake overrides the configured HAL backend 'pi'" in caplog.text


def test_environment_alone_chooses_the_backend_and_is_case_insensitive():
    assert get_backend(None, env={"PINKBUTTON_HAL": " Fake "}).name == "fake"


def test_empty_environment_variable_counts_as_unset():
    with pytest.raises(HalError, match="no HAL backend chosen"):
        get_backend(None, env={"PINKBUTTON_HAL": ""})


def test_no_backend_chosen_is_an_error_never_a_silent_fake():
    with pytest.raises(HalError) as caught:
        get_backend(None, env={})
    assert str(caught.value) == (
        "no HAL backend chosen: set hal.backend in the config or PINKBUTTON_HAL=fake|pi"
    )


def test_unknown_name_lists_the_known_backends():
    with pytest.raises(UnknownBackend) as caught:
        get_backend("arduino", env={})
    message = str(caught.value)
    assert "'arduino'" in message
    assert "fake" in message and "pi" in message


def test_unknown_name_from_the_environment_is_refused_too():
    with pytest.raises(UnknownBackend, match="'gpio'"):
        get_backend("fake", env={"PINKBUTTON_HAL": "gpio"})


def test_pi_without_gpiozero_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiozero", None)  # makes `import gpiozero` fail
    with pytest.raises(BackendUnavailable) as caught:
        get_backend("pi", env={})
    message = str(caught.value)
    assert message.startswith("HAL backend 'pi' needs gpiozero: pip install gpiozero (")
    assert "\n" not in message


def test_pi_with_gpiozero_but_no_gpio_driver_is_unavailable_not_a_crash(monkeypatch):
    pytest.importorskip("gpiozero", reason="needs gpiozero to reach its pin-factory lookup")
    from gpiozero import Device

    # As on a laptop (no lgpio/RPi.GPIO/pigpio, no Pi revision), gpiozero finds no driver;
    # naming a missing factory gets there without its fallback warnings, even on a Pi.
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    monkeypatch.setattr(Device, "pin_factory", None)
    backend = get_backend("pi", env={})
    with pytest.raises(BackendUnavailable, match="no GPIO driver for button on GPIO17"):
        backend.button(FakeClock(), 17)


def test_registered_backend_gets_the_options(monkeypatch):
    made: list[dict] = []

    class RecordingBackend(Backend):
        name = "recording"

        def __init__(self, **options):
            made.append(options)

    monkeypatch.setattr(registry, "_factories", dict(registry._factories))  # undone afterwards
    register_backend("recording", RecordingBackend)
    backend = get_backend("recording", env={}, speed=3)
    assert backend.name == "recording"
    assert made == [{"speed": 3}]
    assert "recording" in known_backends()


def test_importing_hal_does_not_import_gpiozero():
    code = (
        "import sys, hal, hal.fake, hal.pi, hal.pi.button, hal.pi.indicator\n"
        "hal.get_backend('fake', env={})\n"
        "print('gpiozero' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "False"
