"""Every command's usage errors are one line and exit 2 (firmware/cliargs.py)."""

from __future__ import annotations

import argparse

import pytest

from firmware.cliargs import OneLineParser, positive_float, positive_int
from simulator import cli as sim_cli
from tools.controlroom import cli as room_cli


@pytest.mark.parametrize(("convert", "text", "value"), [
    (positive_int, "3", 3), (positive_float, "0.25", 0.25),
])
def test_good_values_convert(convert, text, value):
    assert convert(text) == value


@pytest.mark.parametrize(("convert", "text", "needle"), [
    (positive_int, "0", "at least 1"), (positive_int, "1.5", "not a whole number"),
    (positive_float, "0", "above 0"), (positive_float, "-2", "above 0"),
    (positive_float, "inf", "above 0"), (positive_float, "nan", "above 0"),
    (positive_float, "x", "not a number"),
])
def test_bad_values_name_the_problem(convert, text, needle):
    with pytest.raises(argparse.ArgumentTypeError, match=needle):
        convert(text)


@pytest.mark.parametrize(("main", "argv", "prog"), [
    (sim_cli.main, ["run"], "pinkbutton-sim run"),
    (sim_cli.main, ["fly"], "pinkbutton-sim"),
    (room_cli.main, ["run", "--port", "x"], "pinkbutton-controlroom run"),
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
