"""`pinkbutton check-config` and `pinkbutton run` config handling, as a user runs them."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pinkbutton.firmware import cli
from pinkbutton.tools import pki
from pytest_mock import MockerFixture

from tests.helpers import assert_one_line_error

REPO = Path(__file__).resolve().parents[1]
DEVICE = "pb-cli-0001"


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    pki.init_ca(directory)
    pki.issue_device(directory, DEVICE)
    return directory


def write_config(directory: Path, pki_dir: Path, extra: str = "", cert: str | None = None) -> Path:
    paths = pki.device_paths(pki_dir, DEVICE)
    config_file = directory / "kiosk.toml"
    config_file.write_text(
        f"""
[device]
id = "{DEVICE}"
site_id = "psh-qk"
site_name = "Qissa Khwani Bazaar, Peshawar"
lat = 34.0079
lon = 71.5785
state_dir = "state"

[broker]
host = "localhost"
ca = "{pki.ca_paths(pki_dir).cert}"
cert = "{cert or paths.cert}"
key = "{paths.key}"
{extra}
"""
    )
    return config_file


def pinkbutton(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pinkbutton.firmware.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_check_config_ok(tmp_path: Path, pki_dir: Path) -> None:
    config_file = write_config(tmp_path, pki_dir)
    result = pinkbutton("check-config", str(config_file))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    match = re.fullmatch(
        rf"{re.escape(str(config_file))}: ok — device {DEVICE} at Qissa Khwani Bazaar, Peshawar, "
        r"broker localhost:8883, certificate valid until (\d{4}-\d\d-\d\d) \((\d+) days\)\n",
        result.stdout,
    )
    assert match, result.stdout
    until = datetime.strptime(match[1], "%Y-%m-%d").replace(tzinfo=UTC)
    assert 823 <= (until - datetime.now(UTC)).days <= 825
    assert int(match[2]) in (824, 825)


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            "keepalive = 10",
            r"\[broker\] keepalive: unknown key 'keepalive' \(did you mean 'keepalive_s'\?\)",
        ),
        ('port = "8883"', r"\[broker\] port: expected an integer, got string '8883'"),
        ("[hal]\nled_pin = 99", r"\[hal\] led_pin: must be between 0 and 27, got 99"),
    ],
)
def test_check_config_bad_value(tmp_path: Path, pki_dir: Path, extra: str, expected: str) -> None:
    config_file = write_config(tmp_path, pki_dir, extra=extra)
    result = pinkbutton("check-config", str(config_file))
    assert_one_line_config_error(result, rf"{re.escape(str(config_file))}: {expected}")


def test_check_config_missing_certificate(tmp_path: Path, pki_dir: Path) -> None:
    missing = tmp_path / "gone.pem"
    config_file = write_config(tmp_path, pki_dir, cert=str(missing))
    result = pinkbutton("check-config", str(config_file))
    assert_one_line_config_error(
        result,
        rf"{re.escape(str(config_file))}: \[broker\] cert: cannot read "
        rf"{re.escape(str(missing))}: no such file",
    )


def test_check_config_missing_file(tmp_path: Path) -> None:
    result = pinkbutton("check-config", str(tmp_path / "none.toml"))
    assert_one_line_config_error(
        result, rf"{re.escape(str(tmp_path))}/none.toml: cannot read config: no such file"
    )


def test_run_with_bad_config_exits_2_before_starting_anything(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[device\n")
    result = pinkbutton("run", "--config", str(bad), "--hal", "fake")
    assert_one_line_config_error(result, rf"{re.escape(str(bad))}: invalid TOML: .*line 1.*")


@pytest.mark.parametrize(
    "args", [[], ["check-config"], ["run"], ["run", "--config", "x", "--hal", "gpio"], ["nope"]]
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err  # one line, not argparse's usage block
    assert err.startswith("pinkbutton") and "usage error: " in err and "(try --help)" in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert re.fullmatch(r"pinkbutton \d+\.\d+\.\d+\S*\n", capsys.readouterr().out)


def assert_one_line_config_error(result: subprocess.CompletedProcess[str], pattern: str) -> None:
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr  # not even a blank line
    line = assert_one_line_error(result)
    assert re.fullmatch(rf"pinkbutton: {pattern}", line), line


# --- `run` hands the validated config to firmware.app.run_kiosk ---------------------------------------
# firmware.app is the runtime (another module); pytest-mock stands in for it at that one boundary.


def test_run_passes_config_and_hal_override(
    tmp_path: Path, pki_dir: Path, mocker: MockerFixture
) -> None:
    run_kiosk = mocker.patch("pinkbutton.firmware.app.run_kiosk", return_value=0)
    config_file = write_config(tmp_path, pki_dir, extra="[log]\nlevel = 'warning'")
    assert cli.main(["run", "--config", str(config_file), "--hal", "fake"]) == 0
    assert cli.main(["run", "--config", str(config_file)]) == 0
    (first_args, first_kw), (_, second_kw) = run_kiosk.call_args_list
    first = first_args[0]
    assert (first.device.id, first.device.state_dir) == (DEVICE, tmp_path / "state")
    assert (first_kw, second_kw) == ({"hal_override": "fake"}, {"hal_override": None})


def test_run_unexpected_exception_logs_one_line_and_exits_1(
    tmp_path: Path, pki_dir: Path, mocker: MockerFixture, caplog: pytest.LogCaptureFixture
) -> None:
    mocker.patch("pinkbutton.firmware.app.run_kiosk", side_effect=RuntimeError("camera exploded"))
    config_file = write_config(tmp_path, pki_dir)
    with caplog.at_level(logging.INFO, logger="pinkbutton"):
        assert cli.main(["run", "--config", str(config_file)]) == 1
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [r.getMessage() for r in errors] == ["unexpected error: RuntimeError: camera exploded"]
    assert errors[0].exc_info is None  # no traceback at info level


def test_run_missing_certificate_exits_2(
    tmp_path: Path, pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config_file = write_config(tmp_path, pki_dir, cert=str(tmp_path / "gone.pem"))
    assert cli.main(["run", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"pinkbutton: {config_file}: [broker] cert: cannot read ")


# --- the protocol's field limits are config limits (issue 9 item 1a) ------------------------------
# A site name the room would refuse must be refused here, where a technician still reads it.


def _with_site(pki_dir: Path, directory: Path, site_id: str, site_name: str) -> Path:
    config_file = write_config(directory, pki_dir)
    text = config_file.read_text()
    text = text.replace('site_id = "psh-qk"', f'site_id = "{site_id}"')
    text = text.replace('site_name = "Qissa Khwani Bazaar, Peshawar"', f'site_name = "{site_name}"')
    config_file.write_text(text)
    return config_file


@pytest.mark.parametrize(
    ("key", "site_id", "site_name", "limit"),
    [("site_name", "psh-qk", "x" * 257, 256), ("site_id", "s" * 65, "Bazaar", 64)],
)
def test_check_config_refuses_a_site_over_the_protocol_limit(
    tmp_path: Path, pki_dir: Path, key: str, site_id: str, site_name: str, limit: int
) -> None:
    config_file = _with_site(pki_dir, tmp_path, site_id, site_name)
    result = pinkbutton("check-config", str(config_file))
    assert_one_line_config_error(
        result,
        rf"{re.escape(str(config_file))}: \[device\] {key}: {limit + 1} characters, over the "
        rf"protocol's limit of {limit}",
    )


def test_check_config_accepts_a_site_at_the_protocol_limit(tmp_path: Path, pki_dir: Path) -> None:
    # 256 characters of a 4-byte script: the limit counts characters, as the codecs do.
    config_file = _with_site(pki_dir, tmp_path, "s" * 64, "\U0001F6A8" * 256)
    result = pinkbutton("check-config", str(config_file))
    assert result.returncode == 0, result.stderr
