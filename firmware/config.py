"""Typed, validated kiosk configuration (TOML).

A kiosk that boots with a typo in its config must say so in one line and refuse to start,
rather than run with a silently ignored key. So every section is a frozen dataclass, unknown
sections and keys are errors (with a "did you mean"), and the certificates the broker will
judge us by are checked here, before the first connect, where the message can still be clear.
"""

from __future__ import annotations

import difflib
import errno
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any, TypeVar

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pinkbutton.firmware import protocol
from pinkbutton.firmware.media.packet import DEFAULT_OPUS_FRAME_MS, OPUS_FRAME_MS

__all__ = [
    "AlertConfig",
    "BrokerConfig",
    "CertificateStatus",
    "Config",
    "ConfigError",
    "DeviceConfig",
    "HalConfig",
    "HealthConfig",
    "LogConfig",
    "load_config",
    "parse_config",
    "verify_certificates",
]


class ConfigError(Exception):
    """Bad configuration. str() is always one line naming the file (and section/key)."""

    def __init__(self, message: str) -> None:
        # One line, always: these end up in journald and on a field tech's phone screen.
        super().__init__(" ".join(message.splitlines()))


@dataclass(frozen=True, slots=True, kw_only=True)
class DeviceConfig:
    id: str
    site_id: str
    site_name: str
    lat: float
    lon: float
    state_dir: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    host: str
    port: int = 8883
    ca: Path
    cert: Path
    key: Path
    keepalive_s: int = 30
    session_expiry_s: int = 86400
    connect_timeout_s: float = 10.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0
    # Tried in order after `host:port` fails to connect (then round again): (host, port) pairs.
    fallback_hosts: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class HalConfig:
    backend: str = "pi"
    button_pin: int = 17
    led_pin: int = 27
    buzzer_pin: int | None = None
    debounce_ms: int = 50
    button_active_low: bool = True
    tamper_pin: int | None = None  # optional tamper switch (fault `tamper` while open)
    tamper_active_high: bool = True  # the pin reads high when the case is open


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertConfig:
    ack_timeout_s: float = 30.0
    stream_s: float = 120.0
    cooldown_s: float = 10.0
    retry_s: float = 5.0
    kind: str = "emergency"


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaConfig:
    video: bool = True
    audio: bool = True
    width: int = 640
    height: int = 480
    fps: float = 15.0
    video_kbps: int = 500
    keyframe_interval_s: float = 1.0
    encoder: str = "auto"
    audio_kbps: int = 24
    audio_frame_ms: int = DEFAULT_OPUS_FRAME_MS  # Opus frame, one per media message
    preroll_s: float = 5.0
    max_queue_kb: int = 512
    evidence_budget_mb: int = 512  # local incident evidence on disk; 0: not recorded
    mic_device: int | str | None = None  # None: the system default input
    # The loudspeaker of the acoustic loop test (an output's index or ALSA name, "default");
    # None: the kiosk has no speaker, no loop test.
    speaker_device: int | str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthConfig:
    interval_s: float = 10.0  # heartbeat period; the room calls a kiosk offline after 2 missed
    stage_timeout_s: float = 10.0  # a media stage silent this long is restarted and reported
    # Daily self-test at this local (hour, minute) plus a per-device offset within
    # selftest_spread_min; None ("off"): no daily self-test.
    selftest_at: tuple[int, int] | None = (3, 30)
    selftest_spread_min: int = 60
    # Running-fault detection (firmware/monitor.py): camera, microphone and temperature are
    # sampled every monitor_interval_s; each fault is raised after its hold time.
    monitor_interval_s: float = 1.0
    button_stuck_s: float = 10.0
    camera_covered_s: float = 30.0
    camera_frozen_s: float = 30.0
    mic_dead_s: float = 30.0
    max_temp_c: float = 80.0  # over_temperature above it, cleared below 5 °C under it


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    level: str = "info"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    path: Path  # as the caller gave it; used to name the file in messages
    device: DeviceConfig
    broker: BrokerConfig
    hal: HalConfig
    alert: AlertConfig
    log: LogConfig
    media: MediaConfig = MediaConfig()
    health: HealthConfig = HealthConfig()


@dataclass(frozen=True, slots=True)
class CertificateStatus:
    """What check-config reports about a certificate set that passed every check."""

    cn: str
    not_before: datetime
    not_after: datetime

    def days_left(self, now: datetime) -> int:
        return (self.not_after - now).days


# ---------------------------------------------------------------------------------------------
# Field rules. Each rule turns a raw TOML value into the typed value or returns a problem string.

_REQUIRED = object()
_DEVICE_ID = protocol.DEVICE_ID_RE  # what the codecs accept, one definition
_T = TypeVar("_T", str, int)  # a config choice: one of some strings or numbers
# The control room's own client identity; a device with this id could publish as the room.
_RESERVED_IDS = frozenset({"controlroom"})
_MAX_GPIO = 27  # BCM numbering on the 40-pin header
_MQTT_MAX_KEEPALIVE = 65535
_MQTT_MAX_SESSION_EXPIRY = 0xFFFFFFFF
_MAX_PEM_BYTES = 1 << 20  # a CA bundle is tens of KiB; anything bigger is the wrong file


class _Problem(Exception):
    """Raised by a rule; becomes ConfigError once the section and key are known."""


def _toml_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, datetime):
        return "datetime"
    if isinstance(value, date):
        return "date"
    if isinstance(value, time):
        return "time"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, Mapping):
        return "table"
    return type(value).__name__


def _show(value: object) -> str:
    text = ("true" if value else "false") if isinstance(value, bool) else repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{_toml_type(value)} {text}"


def _name(key: object) -> str:
    """A key as it would appear in TOML: bare if it can be, quoted otherwise."""
    if isinstance(key, str) and re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _expect_str(value: object) -> str:
    if not isinstance(value, str):
        raise _Problem(f"expected a string, got {_show(value)}")
    if not value.strip():
        raise _Problem("must not be empty")
    return value


def _expect_int(value: object) -> int:
    # bool is an int subclass in Python; in a config file `true` for a pin number is a mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Problem(f"expected an integer, got {_show(value)}")
    return value


def _expect_number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Problem(f"expected a number, got {_show(value)}")
    try:
        number = float(value)
    except OverflowError:
        raise _Problem(f"out of range: {value}") from None
    if not math.isfinite(number):
        raise _Problem(f"must be a finite number, got {value}")
    return number


def _expect_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Problem(f"expected a boolean (true or false), got {_show(value)}")
    return value


def _int_in(lo: int, hi: int) -> Callable[[object], int]:
    def rule(value: object) -> int:
        number = _expect_int(value)
        if not lo <= number <= hi:
            raise _Problem(f"must be between {lo} and {hi}, got {number}")
        return number

    return rule


def _number_in(lo: float, hi: float) -> Callable[[object], float]:
    def rule(value: object) -> float:
        number = _expect_number(value)
        if not lo <= number <= hi:
            raise _Problem(f"must be between {lo:g} and {hi:g}, got {number:g}")
        return number

    return rule


def _positive_number(value: object) -> float:
    number = _expect_number(value)
    if number <= 0:
        raise _Problem(f"must be greater than 0, got {number:g}")
    return number


def _protocol_text(limit: int) -> Callable[[object], str]:
    """A string the kiosk sends in its alerts: at most `limit` characters, the protocol's
    limit (firmware/protocol.py), so the room can never refuse what this config makes."""

    def rule(value: object) -> str:
        text = _expect_str(value)
        if len(text) > limit:
            raise _Problem(f"{len(text)} characters, over the protocol's limit of {limit}")
        return text

    return rule


def _one_of(*choices: _T, expect: Callable[[object], _T] = _expect_str
            ) -> Callable[[object], _T]:
    def rule(value: object) -> _T:
        got = expect(value)
        if got not in choices:
            raise _Problem(f"must be one of {', '.join(map(str, choices))}; got {got!r}")
        return got

    return rule


def _device_id(value: object) -> str:
    text = _expect_str(value)
    if not _DEVICE_ID.fullmatch(text):
        raise _Problem(
            f"{text!r} is not a valid device id: 2-63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    if text in _RESERVED_IDS:
        raise _Problem(f"{text!r} is reserved for the control room")
    return text


_HOST_PORT = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9.-]+))(?::(?P<port>[0-9]{1,5}))?")


def _host_port(value: object) -> tuple[str, int | None]:
    text = _expect_str(value)
    match = _HOST_PORT.fullmatch(text.strip())
    if match is None:
        raise _Problem(f"{text!r} is not \"host:port\" (IPv6 as \"[addr]:port\")")
    port = match["port"]
    if port is not None and not 1 <= int(port) <= 65535:
        raise _Problem(f"{text!r}: port must be between 1 and 65535")
    return match["v6"] or match["host"], None if port is None else int(port)


def _broker_list(value: object) -> tuple[tuple[str, int | None], ...]:
    """`["host:port", ...]`; a missing port means broker.port (filled in after parsing)."""
    if not isinstance(value, list):
        raise _Problem(f"expected an array of \"host:port\" strings, got {_show(value)}")
    if len(value) > 16:
        raise _Problem(f"at most 16 fallback brokers, got {len(value)}")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(_host_port(item))
        except _Problem as problem:
            raise _Problem(f"entry {i + 1}: {problem}") from None
    return tuple(out)


def _mic_device(value: object) -> int | str:
    """A PortAudio input: its index (an integer), or its ALSA name or a part of it."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= 255:
            raise _Problem(f"device index must be between 0 and 255, got {value}")
        return value
    if not isinstance(value, str):
        raise _Problem(f"expected a device name (string) or index (integer), got {_show(value)}")
    text = value.strip()
    if not text:
        raise _Problem("must not be empty (leave the key out for the system default)")
    if len(text) > 128 or not text.isprintable():
        raise _Problem(f"{value[:40]!r} is not a device name: printable, at most 128 characters")
    return text


def _speaker_device(value: object) -> int | str:
    """A PortAudio output: its index, or (part of) its ALSA name; "default" is the system's."""
    if isinstance(value, str) and not value.strip():
        raise _Problem('must not be empty (leave the key out when the kiosk has no speaker, '
                       'or "default")')
    return _mic_device(value)


def _daily_time(value: object) -> tuple[int, int] | None:
    """A local time "HH:MM", or "off" for no daily self-test."""
    text = _expect_str(value)
    if text == "off":
        return None
    hh, sep, mm = text.partition(":")
    if not (sep and len(hh) == 2 and len(mm) == 2 and hh.isdigit() and mm.isdigit()
            and int(hh) < 24 and int(mm) < 60):
        raise _Problem(f"expected a local time \"HH:MM\" (00:00-23:59) or \"off\", got {text!r}")
    return int(hh), int(mm)


def _path(value: object) -> str:
    text = _expect_str(value)
    if "\x00" in text:
        raise _Problem("path contains a NUL character")
    return text


@dataclass(frozen=True, slots=True)
class _Field:
    rule: Callable[[object], Any]
    default: object = _REQUIRED
    is_path: bool = False


_SCHEMA: dict[str, tuple[type, dict[str, _Field]]] = {
    "device": (
        DeviceConfig,
        {
            "id": _Field(_device_id),
            "site_id": _Field(_protocol_text(protocol.MAX_SITE_ID)),
            "site_name": _Field(_protocol_text(protocol.MAX_SITE_NAME)),
            "lat": _Field(_number_in(*protocol.LAT_RANGE)),
            "lon": _Field(_number_in(*protocol.LON_RANGE)),
            "state_dir": _Field(_path, is_path=True),
        },
    ),
    "broker": (
        BrokerConfig,
        {
            "host": _Field(_expect_str),
            "port": _Field(_int_in(1, 65535), 8883),
            "ca": _Field(_path, is_path=True),
            "cert": _Field(_path, is_path=True),
            "key": _Field(_path, is_path=True),
            "keepalive_s": _Field(_int_in(1, _MQTT_MAX_KEEPALIVE), 30),
            "session_expiry_s": _Field(_int_in(1, _MQTT_MAX_SESSION_EXPIRY), 86400),
            "connect_timeout_s": _Field(_positive_number, 10.0),
            "backoff_min_s": _Field(_positive_number, 0.5),
            "backoff_max_s": _Field(_positive_number, 30.0),
            "fallback_hosts": _Field(_broker_list, ()),
        },
    ),
    "hal": (
        HalConfig,
        {
            "backend": _Field(_one_of("pi", "fake"), "pi"),
            "button_pin": _Field(_int_in(0, _MAX_GPIO), 17),
            "led_pin": _Field(_int_in(0, _MAX_GPIO), 27),
            # TOML has no null: leaving the key out means "no buzzer".
            "buzzer_pin": _Field(_int_in(0, _MAX_GPIO), None),
            "debounce_ms": _Field(_int_in(1, 1000), 50),
            "button_active_low": _Field(_expect_bool, True),
            # TOML has no null: leaving the key out means "no tamper switch".
            "tamper_pin": _Field(_int_in(0, _MAX_GPIO), None),
            "tamper_active_high": _Field(_expect_bool, True),
        },
    ),
    "alert": (
        AlertConfig,
        {
            "ack_timeout_s": _Field(_positive_number, 30.0),
            "stream_s": _Field(_positive_number, 120.0),
            "cooldown_s": _Field(_positive_number, 10.0),
            "retry_s": _Field(_positive_number, 5.0),
            "kind": _Field(_one_of(*protocol.ALERT_KINDS), "emergency"),
        },
    ),
    "media": (
        MediaConfig,
        {
            "video": _Field(_expect_bool, True),
            "audio": _Field(_expect_bool, True),
            "width": _Field(_int_in(160, 1920), 640),
            "height": _Field(_int_in(120, 1080), 480),
            "fps": _Field(_number_in(1, 30), 15.0),
            "video_kbps": _Field(_int_in(50, 4000), 500),
            "keyframe_interval_s": _Field(_number_in(0.25, 10), 1.0),
            "encoder": _Field(_one_of("auto", "libx264", "h264_v4l2m2m"), "auto"),
            "audio_kbps": _Field(_int_in(6, 128), 24),
            "audio_frame_ms": _Field(_one_of(*OPUS_FRAME_MS, expect=_expect_int),
                                     DEFAULT_OPUS_FRAME_MS),
            "preroll_s": _Field(_number_in(0, 30), 5.0),
            "max_queue_kb": _Field(_int_in(64, 65536), 512),
            "evidence_budget_mb": _Field(_int_in(0, 1_000_000), 512),
            # TOML has no null: leaving the key out means the system's default input.
            "mic_device": _Field(_mic_device, None),
            "speaker_device": _Field(_speaker_device, None),
        },
    ),
    "health": (
        HealthConfig,
        {
            "interval_s": _Field(_number_in(0.1, 3600), 10.0),
            "stage_timeout_s": _Field(_number_in(1, 3600), 10.0),
            "selftest_at": _Field(_daily_time, (3, 30)),
            "selftest_spread_min": _Field(_int_in(0, 1440), 60),
            "monitor_interval_s": _Field(_number_in(0.1, 60), 1.0),
            "button_stuck_s": _Field(_number_in(0.1, 3600), 10.0),
            "camera_covered_s": _Field(_number_in(0.1, 86400), 30.0),
            "camera_frozen_s": _Field(_number_in(0.1, 86400), 30.0),
            "mic_dead_s": _Field(_number_in(0.1, 86400), 30.0),
            "max_temp_c": _Field(_number_in(40, 125), 80.0),
        },
    ),
    "log": (LogConfig, {"level": _Field(_one_of("debug", "info", "warning", "error"), "info")}),
}
_REQUIRED_SECTIONS = ("device", "broker")

# The schema and the dataclasses must describe the same keys; catch drift at import.
for _section, (_cls, _rules) in _SCHEMA.items():
    assert [f.name for f in fields(_cls)] == list(_rules), _section


def _did_you_mean(word: object, choices: list[str], fmt: str = "'{}'") -> str:
    match = difflib.get_close_matches(str(word), choices, n=1)
    return f" (did you mean {fmt.format(match[0])}?)" if match else ""


# ---------------------------------------------------------------------------------------------
# Parsing


def load_config(
    path: str | Path, *, check_certificates: bool = True, now: datetime | None = None
) -> Config:
    """Read and validate a config file. Raises ConfigError (one line) for any problem."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config: {_os_reason(e)}") from None
    except ValueError:  # embedded NUL in the path itself
        raise ConfigError(f"{path}: cannot read config: invalid file name") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse_config(data, path, check_certificates=check_certificates, now=now)


def parse_config(
    data: Mapping[str, Any],
    path: Path,
    *,
    check_certificates: bool = True,
    now: datetime | None = None,
) -> Config:
    """Validate already-parsed TOML. Relative paths resolve against path's directory."""
    path = Path(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a TOML document, got {_show(data)}")

    for section in data:
        if section not in _SCHEMA:
            hint = _did_you_mean(section, list(_SCHEMA), "[{}]")
            raise ConfigError(f"{path}: unknown section [{_name(section)}]{hint}")
    for section in _REQUIRED_SECTIONS:
        if section not in data:
            raise ConfigError(f"{path}: missing required section [{section}]")

    base_dir = path.absolute().parent
    sections = {name: _parse_section(name, data.get(name, {}), path, base_dir) for name in _SCHEMA}
    broker = sections["broker"]
    if broker.fallback_hosts:  # "host" alone means the primary's port
        sections["broker"] = replace(broker, fallback_hosts=tuple(
            (host, broker.port if port is None else port) for host, port in broker.fallback_hosts))
    config = Config(path=path, **sections)
    _check_cross_field(config)
    if check_certificates:
        verify_certificates(config, now=now)
    return config


def _parse_section(name: str, table: object, path: Path, base_dir: Path) -> Any:
    cls, rules = _SCHEMA[name]
    if not isinstance(table, Mapping):
        raise ConfigError(f"{path}: [{name}]: expected a table, got {_show(table)}")
    for key in table:
        if key not in rules:
            hint = _did_you_mean(key, list(rules))
            raise ConfigError(f"{path}: [{name}] {_name(key)}: unknown key {key!r}{hint}")
    values: dict[str, Any] = {}
    for key, spec in rules.items():
        if key not in table:
            if spec.default is _REQUIRED:
                raise ConfigError(f"{path}: [{name}] {key}: missing (required)")
            values[key] = spec.default
            continue
        try:
            value = spec.rule(table[key])
        except _Problem as problem:
            raise ConfigError(f"{path}: [{name}] {key}: {problem}") from None
        if spec.is_path:
            # Relative to the config file, not the cwd: systemd and a tech's shell differ.
            value = Path(os.path.normpath(base_dir / value))
        values[key] = value
    return cls(**values)


def _check_cross_field(config: Config) -> None:
    path, broker, hal = config.path, config.broker, config.hal
    for key in ("width", "height"):
        value = getattr(config.media, key)
        if value % 2:
            raise ConfigError(f"{path}: [media] {key}: must be even for YUV 4:2:0, got {value}")
    if broker.backoff_min_s > broker.backoff_max_s:
        raise ConfigError(
            f"{path}: [broker] backoff_min_s: {broker.backoff_min_s:g} is greater than "
            f"backoff_max_s {broker.backoff_max_s:g}"
        )
    if hal.led_pin == hal.button_pin:
        raise ConfigError(f"{path}: [hal] led_pin: GPIO {hal.led_pin} is already the button_pin")
    if hal.buzzer_pin is not None and hal.buzzer_pin in (hal.button_pin, hal.led_pin):
        other = "button_pin" if hal.buzzer_pin == hal.button_pin else "led_pin"
        raise ConfigError(f"{path}: [hal] buzzer_pin: GPIO {hal.buzzer_pin} is already the {other}")
    if hal.tamper_pin is not None:
        taken = {hal.button_pin: "button_pin", hal.led_pin: "led_pin"}
        if hal.buzzer_pin is not None:
            taken[hal.buzzer_pin] = "buzzer_pin"
        if hal.tamper_pin in taken:
            raise ConfigError(f"{path}: [hal] tamper_pin: GPIO {hal.tamper_pin} is already the "
                              f"{taken[hal.tamper_pin]}")
    health = config.health
    for key in ("camera_covered_s", "camera_frozen_s", "mic_dead_s"):
        hold = getattr(health, key)
        if hold < health.monitor_interval_s:
            raise ConfigError(f"{path}: [health] {key}: {hold:g} s is shorter than "
                              f"monitor_interval_s {health.monitor_interval_s:g} s")


# ---------------------------------------------------------------------------------------------
# Certificates: the broker checks all of this at connect time and answers with a bare
# disconnect. Checking here turns "it won't connect" into a sentence naming the cause.


def verify_certificates(config: Config, *, now: datetime | None = None) -> CertificateStatus:
    """Check broker.ca/cert/key as the broker will. Raises ConfigError naming the key."""
    broker, where = config.broker, f"{config.path}: [broker]"
    now = _utc(now or datetime.now(UTC))

    ca_bytes = _read(broker.ca, f"{where} ca")
    cert_bytes = _read(broker.cert, f"{where} cert")
    key_bytes = _read(broker.key, f"{where} key")

    try:
        cas = x509.load_pem_x509_certificates(ca_bytes)
    except ValueError:
        raise ConfigError(f"{where} ca: {broker.ca} is not a PEM certificate") from None
    try:
        cert = x509.load_pem_x509_certificate(cert_bytes)
    except ValueError:
        raise ConfigError(f"{where} cert: {broker.cert} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_bytes, password=None)
    except TypeError:
        raise ConfigError(
            f"{where} key: {broker.key} is encrypted; the kiosk needs an unencrypted key"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ConfigError(f"{where} key: {broker.key} is not a PEM private key") from None

    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise ConfigError(f"{where} key: {broker.key} does not match certificate {broker.cert}")
    # Checked once the file is known to be the right key, so a wrong file says that first.
    if (problem := key_exposed(broker.key)) is not None:
        raise ConfigError(f"{where} key: {problem}")

    issuers = [ca for ca in cas if ca.subject == cert.issuer]
    if not issuers:
        raise ConfigError(
            f"{where} cert: {broker.cert} was issued by '{cert.issuer.rfc4514_string()}', "
            f"not by the CA in {broker.ca} ('{cas[0].subject.rfc4514_string()}')"
        )
    ca = issuers[0]
    try:
        cert.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{where} cert: {broker.cert} is not signed by the CA in {broker.ca} "
            "(same CA name, different key: was the CA re-created?)"
        ) from None

    cn = _common_name(cert)
    if cn is None:
        raise ConfigError(f"{where} cert: certificate has no CN; it must be the device id")
    if cn != config.device.id:
        raise ConfigError(
            f"{where} cert: certificate CN '{cn}' does not match device.id "
            f"'{config.device.id}': the broker would deny every publish"
        )
    _check_client_usage(cert, f"{where} cert")

    _check_validity(ca, f"{where} ca: CA certificate", now)
    _check_validity(cert, f"{where} cert: certificate", now)
    return CertificateStatus(
        cn=cn, not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc
    )


def key_exposed(key: Path) -> str | None:
    """Why a private key file must be refused (every local user can access it), or None.

    Group access is allowed: root:pinkbutton 0640 is a sound setup. Shared by the kiosk
    (`broker.key`) and the control room (`--key`)."""
    mode = key.stat().st_mode
    if mode & 0o007:
        return (f"{key} is accessible to every user on this machine "
                f"(mode {stat.S_IMODE(mode):04o}); run: chmod 600 {key}")
    return None


def check_state_dir(config: Config) -> None:
    """`device.state_dir` must be a directory, or not exist yet (the kiosk makes it): a file
    there would leave the outbox in memory only. Raises ConfigError naming the key."""
    directory = config.device.state_dir
    try:
        mode = directory.stat().st_mode
    except FileNotFoundError:
        return
    except OSError as e:
        raise ConfigError(
            f"{config.path}: [device] state_dir: cannot use {directory}: {_os_reason(e)}"
        ) from None
    if not stat.S_ISDIR(mode):
        raise ConfigError(f"{config.path}: [device] state_dir: {directory} is not a directory")


def _read(path: Path, where: str) -> bytes:
    try:
        # stat first: opening a FIFO (or reading /dev/zero) would hang the boot instead of failing.
        if not stat.S_ISREG(path.stat().st_mode) and not path.is_dir():
            raise ConfigError(f"{where}: cannot read {path}: not a regular file")
        with path.open("rb") as f:
            data = f.read(_MAX_PEM_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{where}: cannot read {path}: {_os_reason(e)}") from None
    if len(data) > _MAX_PEM_BYTES:
        raise ConfigError(f"{where}: {path} is larger than {_MAX_PEM_BYTES} bytes; not a PEM file")
    return data


def _os_reason(e: OSError) -> str:
    reasons = {
        errno.ENOENT: "no such file",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
        errno.EISDIR: "is a directory",
        errno.ENOTDIR: "a parent is not a directory",
    }
    return reasons.get(e.errno or 0, (e.strerror or str(e)).lower())


def _spki(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _check_client_usage(cert: x509.Certificate, where: str) -> None:
    # A server certificate in the kiosk's slot passes every other check, then TLS rejects it.
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if ExtendedKeyUsageOID.CLIENT_AUTH not in usage:
        raise ConfigError(f"{where}: certificate is not for client authentication (a server cert?)")


def _check_validity(cert: x509.Certificate, what: str, now: datetime) -> None:
    if now > cert.not_valid_after_utc:
        raise ConfigError(f"{what} expired on {_stamp(cert.not_valid_after_utc)}")
    if now < cert.not_valid_before_utc:
        raise ConfigError(
            f"{what} not valid until {_stamp(cert.not_valid_before_utc)} (is the clock right?)"
        )


def _utc(moment: datetime) -> datetime:
    # A naive datetime from a caller means UTC: kiosks run in UTC and certificates are in UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")
