"""pinkbutton.firmware.config: every validation rule, path resolution, and certificate checks on real certs."""

from __future__ import annotations

import copy
import os
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pinkbutton.firmware.config import (
    AlertConfig,
    BrokerConfig,
    Config,
    ConfigError,
    DeviceConfig,
    HalConfig,
    LogConfig,
    load_config,
    parse_config,
    verify_certificates,
)
from pinkbutton.tools import pki

REPO = Path(__file__).resolve().parents[1]
CONFIG_PATH = Path("/etc/pinkbutton/kiosk.toml")

MINIMAL = {
    "device": {
        "id": "pb-test-0001",
        "site_id": "psh-001",
        "site_name": "Test Site",
        "lat": 34.0,
        "lon": 71.5,
        "state_dir": "/var/lib/pinkbutton",
    },
    "broker": {
        "host": "broker.local",
        "ca": "pki/ca.pem",
        "cert": "pki/dev.pem",
        "key": "pki/dev.key",
    },
}


def with_value(section: str, key: str, value: object, base: dict = MINIMAL) -> dict:
    data = copy.deepcopy(base)
    data.setdefault(section, {})[key] = value
    return data


def error_of(data: object, path: Path = CONFIG_PATH) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(data, path, check_certificates=False)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message


# --- good configs -------------------------------------------------------------------------------

FULL_TOML = """
[device]
id = "pb-psh-0001"
site_id = "psh-qk"
site_name = "Qissa Khwani Bazaar, Peshawar"
lat = 34.0079
lon = 71.5785
state_dir = "state"

[broker]
host = "control.example"
port = 18883
ca = "/abs/ca.pem"
cert = "pki/dev.pem"
key = "../keys/dev.key"
keepalive_s = 15
session_expiry_s = 3600
connect_timeout_s = 4
backoff_min_s = 0.25
backoff_max_s = 8.5

[hal]
backend = "fake"
button_pin = 5
led_pin = 6
buzzer_pin = 13
debounce_ms = 20
button_active_low = false

[alert]
ack_timeout_s = 45.5
stream_s = 60
cooldown_s = 2.5
retry_s = 1
kind = "test"

[log]
level = "debug"
"""


def test_full_config_round_trips_into_typed_dataclasses(tmp_path: Path) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    (conf_dir / "kiosk.toml").write_text(FULL_TOML)

    config = load_config(conf_dir / "kiosk.toml", check_certificates=False)

    assert config == Config(
        path=conf_dir / "kiosk.toml",
        device=DeviceConfig(
            id="pb-psh-0001",
            site_id="psh-qk",
            site_name="Qissa Khwani Bazaar, Peshawar",
            lat=34.0079,
            lon=71.5785,
            state_dir=conf_dir / "state",
        ),
        broker=BrokerConfig(
            host="control.example",
            port=18883,
            ca=Path("/abs/ca.pem"),
            cert=conf_dir / "pki/dev.pem",
            key=tmp_path / "keys/dev.key",
            keepalive_s=15,
            session_expiry_s=3600,
            connect_timeout_s=4.0,
            backoff_min_s=0.25,
            backoff_max_s=8.5,
        ),
        hal=HalConfig(
            backend="fake",
            button_pin=5,
            led_pin=6,
            buzzer_pin=13,
            debounce_ms=20,
            button_active_low=False,
        ),
        alert=AlertConfig(
            ack_timeout_s=45.5, stream_s=60.0, cooldown_s=2.5, retry_s=1.0, kind="test"
        ),
        log=LogConfig(level="debug"),
    )
    # ints given for float fields become floats, so arithmetic downstream is uniform
    assert type(config.alert.stream_s) is float
    assert type(config.broker.connect_timeout_s) is float


def test_minimal_config_gets_documented_defaults() -> None:
    config = parse_config(MINIMAL, CONFIG_PATH, check_certificates=False)
    assert config.hal == HalConfig(
        backend="pi", button_pin=17, led_pin=27, buzzer_pin=None, debounce_ms=50,
        button_active_low=True,
    )  # fmt: skip
    assert config.alert == AlertConfig(
        ack_timeout_s=30.0, stream_s=120.0, cooldown_s=10.0, retry_s=5.0, kind="emergency"
    )
    assert config.log == LogConfig(level="info")
    broker = config.broker
    assert (broker.port, broker.keepalive_s, broker.session_expiry_s) == (8883, 30, 86400)
    assert (broker.connect_timeout_s, broker.backoff_min_s, broker.backoff_max_s) == (10, 0.5, 30)


def test_config_is_frozen() -> None:
    config = parse_config(MINIMAL, CONFIG_PATH, check_certificates=False)
    with pytest.raises(AttributeError):
        config.device.id = "pb-other"  # type: ignore[misc]


def test_empty_optional_sections_are_allowed() -> None:
    data = {**MINIMAL, "hal": {}, "alert": {}, "log": {}}
    assert parse_config(data, CONFIG_PATH, check_certificates=False).hal == HalConfig()


@pytest.mark.parametrize("name", ["kiosk.toml", "sim.toml"])
def test_example_configs_parse(name: str) -> None:
    config = load_config(REPO / "examples" / name, check_certificates=False)
    if name == "kiosk.toml":
        assert config.device.id == "pb-psh-0001"
        assert config.device.site_name == "Qissa Khwani Bazaar, Peshawar"
        assert (config.device.lat, config.device.lon) == (34.0079, 71.5785)
        assert (config.broker.host, config.broker.port) == ("control.example.police.gov.pk", 8883)
        assert config.broker.ca.parent == Path("/etc/pinkbutton/pki")
        assert config.device.state_dir == Path("/var/lib/pinkbutton")
        assert config.hal.backend == "pi"
    else:
        assert config.hal.backend == "fake"
        assert config.broker.host == "localhost"
        # README's "by hand" steps create pki/ in the top folder; the sim has its own state dir
        assert config.broker.ca == REPO / "pki/ca.pem"
        assert config.device.state_dir == REPO / ".sim/pb-sim-0001"


def test_every_key_in_kiosk_example_is_commented_with_its_default() -> None:
    lines = (REPO / "examples/kiosk.toml").read_text().splitlines()
    config = load_config(REPO / "examples/kiosk.toml", check_certificates=False)
    for number, line in enumerate(lines):
        if "=" in line and not line.lstrip().startswith("#"):
            key = line.split("=")[0].strip()
            above = []
            for previous in reversed(lines[:number]):
                if not previous.startswith("#"):
                    break
                above.append(previous)
            comment = " ".join(above)
            assert above, f"kiosk.toml: key {key!r} has no comment"
            assert "Default" in comment or "required" in comment, f"{key}: no default stated"
    assert config.hal.buzzer_pin is not None  # the example shows the optional key in use


# --- relative paths -------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_directory_not_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "conf"
    elsewhere = tmp_path / "elsewhere"
    conf_dir.mkdir()
    elsewhere.mkdir()
    data = with_value("broker", "ca", "../shared/ca.pem")
    (conf_dir / "k.toml").write_text(_to_toml(data))
    monkeypatch.chdir(elsewhere)

    config = load_config(Path("../conf/k.toml"), check_certificates=False)

    assert config.broker.ca == tmp_path / "shared/ca.pem"
    assert config.broker.cert == conf_dir / "pki/dev.pem"
    assert config.device.state_dir == Path("/var/lib/pinkbutton")
    assert config.path == Path("../conf/k.toml")  # kept as given, for messages


# --- file-level errors ------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert str(info.value) == f"{missing}: cannot read config: no such file"


def test_config_path_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r": cannot read config: is a directory$"):
        load_config(tmp_path)


def test_toml_syntax_error_is_one_line_with_position(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nid = "pb-1"\nlat = = 3\n')
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    message = str(info.value)
    assert message.startswith(f"{bad}: invalid TOML: ")
    assert "line 3" in message and "column" in message
    assert "\n" not in message


def test_non_utf8_file(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[device]\nsite_name = "Caf\xe9"\n')
    with pytest.raises(ConfigError, match=r"latin1.toml: not UTF-8 text \(byte 25\)$"):
        load_config(bad)


# --- structure errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("section", ["device", "broker"])
def test_required_section_missing(section: str) -> None:
    data = {k: v for k, v in MINIMAL.items() if k != section}
    assert error_of(data) == f"{CONFIG_PATH}: missing required section [{section}]"


@pytest.mark.parametrize(
    ("section", "key"),
    [(s, k) for s in ("device", "broker") for k in MINIMAL[s]],
)
def test_required_key_missing(section: str, key: str) -> None:
    data = copy.deepcopy(MINIMAL)
    del data[section][key]
    assert error_of(data) == f"{CONFIG_PATH}: [{section}] {key}: missing (required)"


def test_unknown_section_suggests_the_closest() -> None:
    data = {**MINIMAL, "hall": {}}
    assert error_of(data) == f"{CONFIG_PATH}: unknown section [hall] (did you mean [hal]?)"


def test_unknown_section_without_a_close_match() -> None:
    data = {**MINIMAL, "zzzqqq": {"a": 1}}
    assert error_of(data) == f"{CONFIG_PATH}: unknown section [zzzqqq]"


def test_unknown_key_suggests_the_closest() -> None:
    data = with_value("alert", "ack_timout_s", 5)
    assert error_of(data) == (
        f"{CONFIG_PATH}: [alert] ack_timout_s: unknown key 'ack_timout_s' "
        "(did you mean 'ack_timeout_s'?)"
    )


def test_unknown_key_without_a_close_match() -> None:
    data = with_value("device", "colour", "pink")
    assert error_of(data) == f"{CONFIG_PATH}: [device] colour: unknown key 'colour'"


def test_section_that_is_not_a_table() -> None:
    data = {**MINIMAL, "log": "debug"}
    assert error_of(data) == f"{CONFIG_PATH}: [log]: expected a table, got string 'debug'"


# --- types ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        ("broker", "port", "8883", "expected an integer, got string '8883'"),
        ("broker", "port", 8883.0, "expected an integer, got float 8883.0"),
        ("hal", "button_pin", True, "expected an integer, got boolean true"),
        ("hal", "debounce_ms", [50], "expected an integer, got array [50]"),
        ("alert", "stream_s", "120", "expected a number, got string '120'"),
        ("alert", "ack_timeout_s", False, "expected a number, got boolean false"),
        ("device", "lat", {"deg": 34}, "expected a number, got table {'deg': 34}"),
        ("hal", "button_active_low", "yes", "expected a boolean (true or false), got string 'yes'"),
        ("hal", "button_active_low", 1, "expected a boolean (true or false), got integer 1"),
        ("device", "id", 1234, "expected a string, got integer 1234"),
        ("broker", "host", "  ", "must not be empty"),
        ("broker", "cert", "", "must not be empty"),
        ("broker", "key", "a\x00b", "path contains a NUL character"),
        ("log", "level", 10, "expected a string, got integer 10"),
    ],
)
def test_wrong_type_names_expected_type_and_value(
    section: str, key: str, value: object, problem: str
) -> None:
    assert (
        error_of(with_value(section, key, value)) == f"{CONFIG_PATH}: [{section}] {key}: {problem}"
    )


def test_long_values_are_shortened_in_messages() -> None:
    message = error_of(with_value("broker", "port", "x" * 500))
    assert len(message) < 150 and message.endswith("...")


# --- ranges ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value", "problem"),
    [
        ("broker", "port", 0, "must be between 1 and 65535, got 0"),
        ("broker", "port", 65536, "must be between 1 and 65535, got 65536"),
        ("device", "lat", 90.5, "must be between -90 and 90, got 90.5"),
        ("device", "lat", -91, "must be between -90 and 90, got -91"),
        ("device", "lon", 180.01, "must be between -180 and 180, got 180.01"),
        ("device", "lon", -181, "must be between -180 and 180, got -181"),
        ("device", "lat", float("nan"), "must be a finite number, got nan"),
        ("device", "lon", float("inf"), "must be a finite number, got inf"),
        ("alert", "stream_s", 10**400, f"out of range: {10**400}"),
        ("hal", "debounce_ms", 0, "must be between 1 and 1000, got 0"),
        ("hal", "debounce_ms", 1001, "must be between 1 and 1000, got 1001"),
        ("hal", "button_pin", -1, "must be between 0 and 27, got -1"),
        ("hal", "led_pin", 28, "must be between 0 and 27, got 28"),
        ("hal", "buzzer_pin", 40, "must be between 0 and 27, got 40"),
        ("broker", "keepalive_s", 0, "must be between 1 and 65535, got 0"),
        ("broker", "session_expiry_s", 0, "must be between 1 and 4294967295, got 0"),
        ("hal", "backend", "gpio", "must be one of pi, fake; got 'gpio'"),
        ("alert", "kind", "drill", "must be one of emergency, test; got 'drill'"),
        ("log", "level", "INFO", "must be one of debug, info, warning, error; got 'INFO'"),
        ("media", "audio_frame_ms", 30, "must be one of 20, 40, 60; got 30"),
        ("media", "audio_frame_ms", 60.0, "expected an integer, got float 60.0"),
    ],
)
def test_out_of_range(section: str, key: str, value: object, problem: str) -> None:
    assert (
        error_of(with_value(section, key, value)) == f"{CONFIG_PATH}: [{section}] {key}: {problem}"
    )


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ("broker", "connect_timeout_s"),
        ("broker", "backoff_min_s"),
        ("broker", "backoff_max_s"),
        ("alert", "ack_timeout_s"),
        ("alert", "stream_s"),
        ("alert", "cooldown_s"),
        ("alert", "retry_s"),
    ],
)
@pytest.mark.parametrize("value", [0, -1.5])
def test_timeouts_must_be_positive(section: str, key: str, value: float) -> None:
    assert error_of(with_value(section, key, value)) == (
        f"{CONFIG_PATH}: [{section}] {key}: must be greater than 0, got {value:g}"
    )


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("broker", "port", 1),
        ("broker", "port", 65535),
        ("device", "lat", -90),
        ("device", "lat", 90.0),
        ("device", "lon", -180),
        ("device", "lon", 180),
        ("hal", "debounce_ms", 1),
        ("hal", "debounce_ms", 1000),
        ("hal", "button_pin", 0),
        ("hal", "buzzer_pin", 26),
        ("alert", "retry_s", 0.001),
    ],
)
def test_range_boundaries_are_accepted(section: str, key: str, value: object) -> None:
    config = parse_config(with_value(section, key, value), CONFIG_PATH, check_certificates=False)
    assert getattr(getattr(config, section), key) == value


def test_backoff_min_may_not_exceed_max() -> None:
    data = with_value("broker", "backoff_min_s", 5)
    data["broker"]["backoff_max_s"] = 2
    assert error_of(data) == (
        f"{CONFIG_PATH}: [broker] backoff_min_s: 5 is greater than backoff_max_s 2"
    )
    data["broker"]["backoff_max_s"] = 5
    assert parse_config(data, CONFIG_PATH, check_certificates=False).broker.backoff_max_s == 5


def test_pins_may_not_collide() -> None:
    data = with_value("hal", "led_pin", 17)
    assert error_of(data) == f"{CONFIG_PATH}: [hal] led_pin: GPIO 17 is already the button_pin"
    data = with_value("hal", "buzzer_pin", 27)
    assert error_of(data) == f"{CONFIG_PATH}: [hal] buzzer_pin: GPIO 27 is already the led_pin"


# --- device id -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "device_id", ["a", "Pb-1", "-pb1", "pb_1", "pb 1", "pb-1\n", "pb.1", "é-1", "a" * 64]
)
def test_invalid_device_ids(device_id: str) -> None:
    message = error_of(with_value("device", "id", device_id))
    assert message.startswith(f"{CONFIG_PATH}: [device] id: {device_id!r} is not a valid device id")


def test_controlroom_is_reserved() -> None:
    assert error_of(with_value("device", "id", "controlroom")) == (
        f"{CONFIG_PATH}: [device] id: 'controlroom' is reserved for the control room"
    )


@pytest.mark.parametrize("device_id", ["ab", "0a", "pb-psh-0001", "a" * 63, "control-room"])
def test_valid_device_ids(device_id: str) -> None:
    config = parse_config(
        with_value("device", "id", device_id), CONFIG_PATH, check_certificates=False
    )
    assert config.device.id == device_id


# --- certificates (real ones, from tools.pki) -------------------------------------------------------------

DEVICE = "pb-cert-0001"


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    pki.init_ca(directory)
    pki.issue_device(directory, DEVICE)
    pki.issue_device(directory, "pb-other-0002")
    return directory


def write_cert_config(
    directory: Path, pki_dir: Path, *, device_id: str = DEVICE, **broker: object
) -> Path:
    paths = pki.device_paths(pki_dir, DEVICE)
    data = copy.deepcopy(MINIMAL)
    data["device"]["id"] = device_id
    data["broker"].update(
        ca=str(pki.ca_paths(pki_dir).cert), cert=str(paths.cert), key=str(paths.key)
    )
    data["broker"].update({k: str(v) for k, v in broker.items()})
    target = directory / "kiosk.toml"
    target.write_text(_to_toml(data))
    return target


def cert_error(config_file: Path, now: datetime | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(config_file, now=now)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{config_file}: [broker] ")
    return message


def test_good_certificates_pass_and_report_expiry(tmp_path: Path, pki_dir: Path) -> None:
    config_file = write_cert_config(tmp_path, pki_dir)
    now = datetime.now(UTC)
    config = load_config(config_file, now=now)
    status = verify_certificates(config, now=now)
    assert status.cn == DEVICE
    assert status.days_left(now) in (824, 825)  # pki's default lifetime, minus clock skew


@pytest.mark.parametrize("which", ["ca", "cert", "key"])
def test_missing_certificate_file(tmp_path: Path, pki_dir: Path, which: str) -> None:
    missing = tmp_path / f"missing-{which}.pem"
    config_file = write_cert_config(tmp_path, pki_dir, **{which: missing})
    assert cert_error(config_file) == (
        f"{config_file}: [broker] {which}: cannot read {missing}: no such file"
    )


def test_certificate_path_is_a_directory(tmp_path: Path, pki_dir: Path) -> None:
    config_file = write_cert_config(tmp_path, pki_dir, cert=tmp_path)
    assert cert_error(config_file).endswith(f"cert: cannot read {tmp_path}: is a directory")


def test_certificate_path_is_a_fifo_fails_instead_of_hanging(tmp_path: Path, pki_dir: Path) -> None:
    fifo = tmp_path / "ca.fifo"
    os.mkfifo(fifo)
    config_file = write_cert_config(tmp_path, pki_dir, ca=fifo)
    assert cert_error(config_file).endswith(f"ca: cannot read {fifo}: not a regular file")


def test_unreadable_key(tmp_path: Path, pki_dir: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 000 does not stop root reading the file")
    key = tmp_path / "locked.key"
    shutil.copy(pki.device_paths(pki_dir, DEVICE).key, key)
    key.chmod(0)
    config_file = write_cert_config(tmp_path, pki_dir, key=key)
    assert cert_error(config_file).endswith(f"key: cannot read {key}: permission denied")


@pytest.mark.parametrize(
    ("which", "problem"),
    [("ca", "is not a PEM certificate"), ("cert", "is not a PEM certificate"),
     ("key", "is not a PEM private key")],
)  # fmt: skip
def test_garbage_pem(tmp_path: Path, pki_dir: Path, which: str, problem: str) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n")
    config_file = write_cert_config(tmp_path, pki_dir, **{which: garbage})
    assert cert_error(config_file) == f"{config_file}: [broker] {which}: {garbage} {problem}"


def test_encrypted_key(tmp_path: Path, pki_dir: Path) -> None:
    plain = pki.device_paths(pki_dir, DEVICE).key
    key = serialization.load_pem_private_key(plain.read_bytes(), password=None)
    encrypted = tmp_path / "encrypted.key"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    config_file = write_cert_config(tmp_path, pki_dir, key=encrypted)
    assert cert_error(config_file).endswith("is encrypted; the kiosk needs an unencrypted key")


def test_key_not_matching_certificate(tmp_path: Path, pki_dir: Path) -> None:
    other_key = pki.device_paths(pki_dir, "pb-other-0002").key
    config_file = write_cert_config(tmp_path, pki_dir, key=other_key)
    cert = pki.device_paths(pki_dir, DEVICE).cert
    assert cert_error(config_file) == (
        f"{config_file}: [broker] key: {other_key} does not match certificate {cert}"
    )


def test_certificate_from_a_foreign_ca(tmp_path: Path, pki_dir: Path) -> None:
    foreign = tmp_path / "foreign"
    pki.init_ca(foreign, common_name="Somebody Else CA")
    issued = pki.issue_device(foreign, DEVICE)
    config_file = write_cert_config(tmp_path, pki_dir, cert=issued.cert, key=issued.key)
    assert cert_error(config_file) == (
        f"{config_file}: [broker] cert: {issued.cert} was issued by 'CN=Somebody Else CA', "
        f"not by the CA in {pki.ca_paths(pki_dir).cert} ('CN=Pink Button Dev CA')"
    )


def test_certificate_from_a_recreated_ca_with_the_same_name(tmp_path: Path, pki_dir: Path) -> None:
    # The classic field mistake: `pki init --force` made a new CA key under the same name.
    twin = tmp_path / "twin"
    pki.init_ca(twin)
    issued = pki.issue_device(twin, DEVICE)
    config_file = write_cert_config(tmp_path, pki_dir, cert=issued.cert, key=issued.key)
    assert cert_error(config_file).startswith(
        f"{config_file}: [broker] cert: {issued.cert} is not signed by the CA in "
    )


def test_cn_must_equal_device_id(tmp_path: Path, pki_dir: Path) -> None:
    config_file = write_cert_config(tmp_path, pki_dir, device_id="pb-b")
    assert cert_error(config_file) == (
        f"{config_file}: [broker] cert: certificate CN '{DEVICE}' does not match device.id "
        "'pb-b': the broker would deny every publish"
    )


def test_server_certificate_in_the_client_slot(tmp_path: Path, pki_dir: Path) -> None:
    issued = pki.issue(pki_dir, DEVICE, kind="server", out_dir=tmp_path)
    config_file = write_cert_config(tmp_path, pki_dir, cert=issued.cert, key=issued.key)
    assert cert_error(config_file).endswith(
        "certificate is not for client authentication (a server cert?)"
    )


def test_expired_certificate(tmp_path: Path, pki_dir: Path) -> None:
    issued = pki.issue(
        pki_dir, DEVICE, kind="client", out_dir=tmp_path,
        not_before=datetime(2024, 1, 1, tzinfo=UTC), not_after=datetime(2024, 6, 30, 12, 0, tzinfo=UTC),
    )  # fmt: skip
    config_file = write_cert_config(tmp_path, pki_dir, cert=issued.cert, key=issued.key)
    assert cert_error(config_file) == (
        f"{config_file}: [broker] cert: certificate expired on 2024-06-30 12:00 UTC"
    )


def test_expiry_uses_the_given_now(tmp_path: Path, pki_dir: Path) -> None:
    config_file = write_cert_config(tmp_path, pki_dir)
    not_after = verify_certificates(load_config(config_file)).not_after
    load_config(config_file, now=not_after - timedelta(seconds=1))
    message = cert_error(config_file, now=not_after + timedelta(seconds=1))
    assert message.endswith(f"certificate expired on {not_after:%Y-%m-%d %H:%M} UTC")


def test_not_yet_valid_certificate(tmp_path: Path, pki_dir: Path) -> None:
    start = datetime.now(UTC) + timedelta(days=3)
    issued = pki.issue(pki_dir, DEVICE, kind="client", out_dir=tmp_path, not_before=start)
    config_file = write_cert_config(tmp_path, pki_dir, cert=issued.cert, key=issued.key)
    assert cert_error(config_file) == (
        f"{config_file}: [broker] cert: certificate not valid until "
        f"{start:%Y-%m-%d %H:%M} UTC (is the clock right?)"
    )
    # a naive `now` is taken as UTC
    load_config(config_file, now=(start + timedelta(minutes=1)).replace(tzinfo=None))


def test_check_certificates_false_skips_the_files(tmp_path: Path, pki_dir: Path) -> None:
    config_file = write_cert_config(tmp_path, pki_dir, cert=tmp_path / "missing.pem")
    assert (
        load_config(config_file, check_certificates=False).broker.cert == tmp_path / "missing.pem"
    )


# --- property: nothing but ConfigError, ever ---------------------------------------------------------------

_SECTION_KEYS = {
    "device": list(MINIMAL["device"]),
    "broker": [*MINIMAL["broker"], "port", "keepalive_s", "session_expiry_s",
               "connect_timeout_s", "backoff_min_s", "backoff_max_s"],
    "hal": ["backend", "button_pin", "led_pin", "buzzer_pin", "debounce_ms", "button_active_low"],
    "alert": ["ack_timeout_s", "stream_s", "cooldown_s", "retry_s", "kind"],
    "log": ["level"],
}  # fmt: skip

toml_scalars = st.one_of(
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.datetimes(),
    st.dates(),
    st.times(),
    st.sampled_from(["pi", "fake", "test", "debug", "pb-x1", "/dev/null", ".", "", "\x00"]),
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
known_keys = st.sampled_from(sorted({k for keys in _SECTION_KEYS.values() for k in keys}))
section_tables = st.dictionaries(known_keys | st.text(max_size=12), toml_values, max_size=8)
documents = st.dictionaries(
    st.sampled_from(list(_SECTION_KEYS)) | st.text(max_size=8),
    section_tables | toml_values,
    max_size=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=documents, check=st.booleans())
def test_arbitrary_documents_raise_only_config_error(data: dict, check: bool) -> None:
    _parse_or_config_error(data, check)


@settings(max_examples=200, deadline=None)
@given(
    overrides=st.lists(
        st.tuples(st.sampled_from(list(_SECTION_KEYS)), known_keys, toml_values), max_size=4
    ),
    check=st.booleans(),
)
def test_mutated_good_documents_raise_only_config_error(overrides: list, check: bool) -> None:
    # Starting from a valid document reaches the range, cross-field and certificate checks.
    data = copy.deepcopy(MINIMAL)
    for section, key, value in overrides:
        data.setdefault(section, {})[key] = value
    _parse_or_config_error(data, check)


def _parse_or_config_error(data: dict, check: bool) -> None:
    try:
        config = parse_config(data, Path("/nonexistent/kiosk.toml"), check_certificates=check)
    except ConfigError as e:
        assert "\n" not in str(e) and str(e).startswith("/nonexistent/kiosk.toml: ")
    else:
        assert isinstance(config, Config)
        assert not check  # the certificate files do not exist, so checking must fail


# --- helpers --------------------------------------------------------------------------------------------------


def _to_toml(data: dict) -> str:
    """Just enough TOML writing for these tests (tables of scalars)."""
    lines = []
    for section, table in data.items():
        lines.append(f"[{section}]")
        for key, value in table.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, str):
                lines.append(f'{key} = "{value}"')
            else:
                lines.append(f"{key} = {value!r}")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("mode", "ok"), [(0o600, True), (0o640, True), (0o644, False),
                                          (0o606, False)])
def test_key_readable_by_every_user_is_refused(tmp_path: Path, pki_dir: Path, mode: int,
                                               ok: bool) -> None:
    key = tmp_path / "copy.key"
    shutil.copy(pki.device_paths(pki_dir, DEVICE).key, key)
    key.chmod(mode)
    config_file = write_cert_config(tmp_path, pki_dir, key=key)
    if ok:
        verify_certificates(load_config(config_file))
    else:
        assert cert_error(config_file) == (
            f"{config_file}: [broker] key: {key} is accessible to every user on this machine "
            f"(mode {mode:04o}); run: chmod 600 {key}"
        )


# --- the protocol's limits are the config's limits (one definition, firmware/protocol.py) -------


_TOML_TEXT = st.characters(blacklist_categories=("Cs",))  # TOML holds no lone surrogate


def _near(limit: int):
    """Short text, or text of a length right around `limit`."""
    return st.one_of(
        st.text(_TOML_TEXT, min_size=1, max_size=8),
        st.integers(limit - 2, limit + 2).flatmap(
            lambda n: st.text(_TOML_TEXT, min_size=n, max_size=n)),
    ).filter(str.strip)


@settings(max_examples=60, deadline=None)
@given(
    site_id=_near(64), site_name=_near(256),
    lat=st.floats(-100, 100), lon=st.floats(-200, 200),
)
def test_a_config_is_accepted_exactly_when_the_room_accepts_its_alert(site_id, site_name, lat, lon):
    from pinkbutton.firmware import protocol as p
    from pinkbutton.firmware.version import FIRMWARE_VERSION

    device = dict(MINIMAL["device"], site_id=site_id, site_name=site_name, lat=lat, lon=lon)
    try:
        config = parse_config({**MINIMAL, "device": device}, CONFIG_PATH, check_certificates=False)
    except ConfigError:
        config = None
    alert = p.Alert(
        device_id="pb-test-0001", alert_id="3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b", seq=1,
        kind="emergency", pressed_at="2026-11-23T09:31:54.123Z", pressed_mono=1.0, age_ms=1,
        announce=1, escalated=False, presses=1, site=p.Site(site_id, site_name, lat, lon),
        firmware=FIRMWARE_VERSION, sent_at="2026-11-23T09:31:54.135Z",
    )
    try:
        p.decode_alert(p.encode_alert(alert))
        room_accepts = True
    except p.ProtocolError:
        room_accepts = False
    assert (config is not None) == room_accepts


# --- media.mic_device -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [("USB", "USB"), (" hw:1,0 ", "hw:1,0"), (2, 2)])
def test_mic_device_takes_a_name_or_an_index(value: object, expected: object) -> None:
    config = parse_config(with_value("media", "mic_device", value), CONFIG_PATH,
                          check_certificates=False)
    assert config.media.mic_device == expected
    default = parse_config(MINIMAL, CONFIG_PATH, check_certificates=False)
    assert default.media.mic_device is None  # the system's default input


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "must not be empty (leave the key out for the system default)"),
        (-1, "device index must be between 0 and 255, got -1"),
        (True, "expected a device name (string) or index (integer), got boolean true"),
        (1.5, "expected a device name (string) or index (integer), got float 1.5"),
        ("usb\nmic", "'usb\\nmic' is not a device name: printable, at most 128 characters"),
    ],
)
def test_mic_device_errors_are_one_line(value: object, problem: str) -> None:
    assert error_of(with_value("media", "mic_device", value)) == (
        f"{CONFIG_PATH}: [media] mic_device: {problem}")
