"""Every command's usage errors are one line and exit 2 (firmware/cliargs.py)."""

from __future__ import annotations

import argparse

import pytest
from pinkbutton.firmware.cliargs import OneLineParser, int_in, positive_float, positive_int, seconds
from pinkbutton.simulator import cli as sim_cli
from pinkbutton.tools.controlroom import cli as room_cli


@pytest.mark.parametrize(("convert", "text", "value"), [
    (positive_int, "3", 3), (positive_float, "0.25", 0.25), (seconds, "0", 0.0),
    (int_in(1, 9), "9", 9),
])
def test_good_values_convert(convert, text, value):
    assert convert(text) == value


@pytest.mark.parametrize(("convert", "text", "needle"), [
    (positive_int, "0", "at least 1"), (positive_int, "1.5", "not a whole number"),
    (positive_float, "0", "above 0"), (positive_float, "-2", "above 0"),
    (positive_float, "inf", "above 0"), (positive_float, "nan", "above 0"),
    (positive_float, "x", "not a number"),
    (seconds, "-1", "0 or more"), (seconds, "nan", "0 or more"), (seconds, "x", "not a number"),
    (int_in(1, 9), "10", "between 1 and 9"), (int_in(1, 9), "1.5", "not a whole number"),
])
def test_bad_values_name_the_problem(convert, text, needle):
    with pytest.raises(argparse.ArgumentTypeError, match=needle):
        convert(text)


@pytest.mark.parametrize(("main", "argv", "prog"), [
    (sim_cli.main, ["run"], "pinkbutton-sim run"),
    (sim_cli.main, ["fly"], "pinkbutton-sim"),
    (room_cli.main, ["run", "--port", "x"], "pinkbutton-controlroom run"),
    (room_cli.main, ["run", "--port", "70000"], "pinkbutton-controlroom run"),
    # Out of MQTT's range these killed the room's network thread after it said "listening".
    (room_cli.main, ["run", "--session-expiry", "-1"], "pinkbutton-controlroom run"),
    (room_cli.main, ["run", "--session-expiry", "99999999999"], "pinkbutton-controlroom run"),
    (room_cli.main, ["run", "--exit-after", "nan"], "pinkbutton-controlroom run"),
    (room_cli.main, ["run", "--exit-after", "-5"], "pinkbutton-controlroom run"),
    (sim_cli.main, ["run", "--config", "x", "--exit-after", "nan"], "pinkbutton-sim run"),
    (sim_cli.main, ["run", "--config", "x", "--press-after", "inf"], "pinkbutton-sim run"),
])
def test_commands_print_one_line_and_exit_2(capsys, main, argv, prog):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith(f"{prog}: usage error: ")


def test_parser_error_goes_to_stderr_only(capsys):
    parser = OneLineParser(prog="x")
    parser.add_argument("--n", type=positive_int)
    with pytest.raises(SystemExit):
        parser.parse_args(["--n", "0"])
    out, err = capsys.readouterr()
    assert out == "" and err == "x: usage error: argument --n: must be at least 1, not 0 (try --help)\n"


def test_a_usage_error_never_shows_a_password_given_in_a_url(capsys):
    parser = OneLineParser(prog="x")
    parser.add_argument("--db")
    with pytest.raises(SystemExit):
        parser.parse_args(["--db", "postgresql://pb:s3cret@db.local:5432/room", "stray"])
    err = capsys.readouterr().err
    assert "s3cret" not in err and "postgresql://pb:***@db.local:5432/room" not in err
    assert err == "x: usage error: unrecognized arguments: stray (try --help)\n"
    with pytest.raises(SystemExit):
        parser.parse_args(["postgresql://pb:s3cret@db.local:5432/room"])
    err = capsys.readouterr().err
    assert "s3cret" not in err and "postgresql://pb:***@db.local:5432/room" in err
