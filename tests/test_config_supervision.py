"""Config for supervision: [health] and broker.fallback_hosts (one-line errors)."""

from __future__ import annotations

import pytest
from pinkbutton.firmware.config import HealthConfig, parse_config

from tests.test_config import CONFIG_PATH, MINIMAL, error_of, with_value


def parse(data: dict):
    return parse_config(data, CONFIG_PATH, check_certificates=False)


def test_defaults_heartbeat_every_10_s_and_no_fallback_brokers():
    config = parse(MINIMAL)
    assert config.health == HealthConfig(interval_s=10.0, stage_timeout_s=10.0)
    assert config.broker.fallback_hosts == ()


def test_health_section_is_read():
    data = with_value("health", "interval_s", 0.5)
    data["health"]["stage_timeout_s"] = 30
    assert parse(data).health == HealthConfig(interval_s=0.5, stage_timeout_s=30.0)


def test_fallback_hosts_in_order_a_bare_host_takes_the_primary_port():
    data = with_value("broker", "fallback_hosts", ["b2.example:8884", "b3.example", "[::1]:1883",
                                                   "10.0.0.7:8883"])
    data["broker"]["port"] = 9883
    assert parse(data).broker.fallback_hosts == (
        ("b2.example", 8884), ("b3.example", 9883), ("::1", 1883), ("10.0.0.7", 8883))


@pytest.mark.parametrize(
    "value,words",
    [
        ("b2:8883", ("[broker] fallback_hosts:", "array")),
        ([8883], ("entry 1", "expected a string")),
        (["ok:1", "b2:0"], ("entry 2", "between 1 and 65535")),
        (["b2:99999"], ("entry 1", "between 1 and 65535")),
        (["b2:port"], ("entry 1", "host:port")),
        (["tcp://b2:8883"], ("entry 1", "host:port")),
        (["b 2:8883"], ("entry 1", "host:port")),
        ([""], ("entry 1", "empty")),
        (["h:1"] * 17, ("at most 16",)),
    ],
)
def test_bad_fallback_hosts_are_one_line_errors(value, words):
    message = error_of(with_value("broker", "fallback_hosts", value))
    assert "\n" not in message and str(CONFIG_PATH) in message
    for w in words:
        assert w in message, message


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("interval_s", 0, ("[health] interval_s", "between 0.1 and 3600")),
        ("interval_s", "10", ("[health] interval_s", "number")),
        ("stage_timeout_s", 0.5, ("[health] stage_timeout_s", "between 1 and 3600")),
        ("interval", 10, ("unknown key", "did you mean 'interval_s'")),
    ],
)
def test_bad_health_values_are_one_line_errors(key, value, words):
    message = error_of(with_value("health", key, value))
    for w in words:
        assert w in message, message


def test_daily_selftest_time_and_spread_default_and_read():
    assert (parse(MINIMAL).health.selftest_at, parse(MINIMAL).health.selftest_spread_min) == (
        (3, 30), 60)
    data = with_value("health", "selftest_at", "23:05")
    data["health"]["selftest_spread_min"] = 0
    health = parse(data).health
    assert (health.selftest_at, health.selftest_spread_min) == ((23, 5), 0)
    assert parse(with_value("health", "selftest_at", "off")).health.selftest_at is None


@pytest.mark.parametrize(
    "key,value,words",
    [
        ("selftest_at", "3:30", ("[health] selftest_at", "HH:MM")),
        ("selftest_at", "24:00", ("[health] selftest_at", "HH:MM")),
        ("selftest_at", "03:60", ("[health] selftest_at", "HH:MM")),
        ("selftest_at", 330, ("[health] selftest_at", "string")),
        ("selftest_spread_min", 1441, ("[health] selftest_spread_min", "between 0 and 1440")),
        ("selftest_spread_min", -1, ("[health] selftest_spread_min", "between 0 and 1440")),
    ],
)
def test_bad_daily_selftest_values_are_one_line_errors(key, value, words):
    message = error_of(with_value("health", key, value))
    assert "\n" not in message
    for w in words:
        assert w in message, message
