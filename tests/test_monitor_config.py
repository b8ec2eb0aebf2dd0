"""The running-fault detectors' configuration (issue 11 item 5): `[hal] tamper_pin` and
`tamper_active_high`, `[health]` hold times, sampling period and `max_temp_c`; defaults,
one-line errors through `pinkbutton check-config` (exit 2), and the documentation of every key."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pinkbutton.firmware.config import ConfigError, HalConfig, HealthConfig, parse_config
from pinkbutton.firmware.monitor import MonitorSettings

from tests.helpers import assert_one_line_error
from tests.test_config import CONFIG_PATH, MINIMAL, with_value

REPO = Path(__file__).resolve().parents[1]


def parse(data: dict):
    return parse_config(data, CONFIG_PATH, check_certificates=False)


def error_of(data: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_defaults():
    config = parse(MINIMAL)
    assert (config.hal.tamper_pin, config.hal.tamper_active_high) == (None, True)
    h = config.health
    assert (h.monitor_interval_s, h.button_stuck_s, h.camera_covered_s, h.camera_frozen_s,
            h.mic_dead_s, h.max_temp_c) == (1.0, 10.0, 30.0, 30.0, 30.0, 80.0)
    # The monitor's own defaults are the config's.
    d = MonitorSettings()
    assert (d.button_stuck_s, d.camera_covered_s, d.camera_frozen_s, d.mic_dead_s,
            d.max_temp_c) == (10.0, 30.0, 30.0, 30.0, 80.0)


def test_values_are_read():
    data = with_value("hal", "tamper_pin", 23)
    data = with_value("hal", "tamper_active_high", False, data)
    for key, value in (("monitor_interval_s", 0.2), ("button_stuck_s", 3), ("max_temp_c", 70),
                       ("camera_covered_s", 1.5), ("camera_frozen_s", 2), ("mic_dead_s", 4)):
        data = with_value("health", key, value, data)
    config = parse(data)
    assert config.hal == HalConfig(tamper_pin=23, tamper_active_high=False)
    assert config.health == HealthConfig(monitor_interval_s=0.2, button_stuck_s=3.0,
                                         max_temp_c=70.0, camera_covered_s=1.5,
                                         camera_frozen_s=2.0, mic_dead_s=4.0)
    assert type(config.health.max_temp_c) is float


@pytest.mark.parametrize(("pin_key", "pin"), [("button_pin", 17), ("led_pin", 27),
                                               ("buzzer_pin", 22)])
def test_tamper_pin_cannot_share_a_gpio(pin_key, pin):
    data = with_value("hal", "buzzer_pin", 22)
    data = with_value("hal", "tamper_pin", pin, data)
    assert error_of(data) == (f"{CONFIG_PATH}: [hal] tamper_pin: GPIO {pin} is already the "
                              f"{pin_key}")


@pytest.mark.parametrize(("section", "key", "value", "words"), [
    ("hal", "tamper_pin", 28, ["[hal] tamper_pin", "0", "27"]),
    ("hal", "tamper_pin", True, ["[hal] tamper_pin", "integer"]),
    ("hal", "tamper_active_high", "yes", ["[hal] tamper_active_high", "boolean"]),
    ("health", "button_stuck_s", 0, ["[health] button_stuck_s"]),
    ("health", "camera_covered_s", -1, ["[health] camera_covered_s"]),
    ("health", "camera_frozen_s", "30", ["[health] camera_frozen_s"]),
    ("health", "mic_dead_s", 0.01, ["[health] mic_dead_s"]),
    ("health", "monitor_interval_s", 0, ["[health] monitor_interval_s"]),
    ("health", "monitor_interval_s", 61, ["[health] monitor_interval_s"]),
    ("health", "max_temp_c", 20, ["[health] max_temp_c"]),
    ("health", "max_temp_c", 200, ["[health] max_temp_c"]),
])
def test_bad_values_are_one_line_errors(section, key, value, words):
    message = error_of(with_value(section, key, value))
    for word in words:
        assert word in message, (word, message)


def test_a_hold_shorter_than_the_sampling_period_is_refused():
    """A camera or microphone fault is decided on samples: a hold shorter than the period
    between them could never be met as configured."""
    data = with_value("health", "monitor_interval_s", 2.0)
    data = with_value("health", "camera_covered_s", 1.0, data)
    assert error_of(data) == (f"{CONFIG_PATH}: [health] camera_covered_s: 1 s is shorter than "
                              "monitor_interval_s 2 s")


def test_check_config_exits_2_with_one_line(tmp_path):
    cfg = tmp_path / "kiosk.toml"
    text = (REPO / "examples" / "kiosk.toml").read_text()
    cfg.write_text(text.replace("[hal]\n", "[hal]\ntamper_pin = 17\n", 1))
    proc = subprocess.run([sys.executable, "-m", "pinkbutton.firmware.cli", "check-config",
                           str(cfg)], capture_output=True, text=True, timeout=60)
    assert_one_line_error(proc, "tamper_pin", "GPIO 17", "button_pin")


def test_every_new_key_is_documented_in_the_example_and_the_readme():
    example = (REPO / "examples" / "kiosk.toml").read_text()
    readme = (REPO / "README.md").read_text()
    for key in ("tamper_pin", "tamper_active_high", "monitor_interval_s", "button_stuck_s",
                "camera_covered_s", "camera_frozen_s", "mic_dead_s", "max_temp_c"):
        assert f"\n{key} = " in example or f"\n# {key} = " in example, key
        assert key in readme, key
