"""Command-line parsing shared by every Pink Button command.

argparse's default error is the usage block plus the message over several lines; a field
technician reading a phone screen, or a script reading stderr, gets one line instead:
`prog: usage error: <what is wrong> (try --help)`, exit code 2.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import sys
from collections.abc import Callable
from typing import ParamSpec

_P = ParamSpec("_P")

#: Exit code of a command whose reader went away (`| head`): 128 + SIGPIPE, as C tools do.
EXIT_CLOSED_PIPE = 141


def quiet_on_closed_pipe(main: Callable[_P, int]) -> Callable[_P, int]:
    """A command piped into `head` (or a pager the user quit) stops quietly with exit 141,
    not with a BrokenPipeError traceback: its later writes, and the flush at exit, go to
    /dev/null."""

    @functools.wraps(main)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> int:
        try:
            try:
                code = main(*args, **kwargs)
            except SystemExit:  # argparse's --help / --version, or a usage error
                sys.stdout.flush()
                raise
            sys.stdout.flush()
            return code
        except BrokenPipeError:
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_CLOSED_PIPE

    return wrapper


#: user:password@ in a URL (`--db postgresql://pb:secret@host/db`, `--broker`, ...).
_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@/\s]*@")


def redact_urls(text: str) -> str:
    """`text` with every URL's password shown as ***: usage errors quote what was typed, and
    they end up on screens, in shell history dumps and CI logs."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: usage error: {redact_urls(message)} (try --help)\n")


def add_version(parser: argparse.ArgumentParser) -> None:
    """`--version` on a command's top-level parser: '<prog> <installed version>'."""
    from pinkbutton.firmware.version import FIRMWARE_VERSION

    parser.add_argument("--version", action="version", version=f"{parser.prog} {FIRMWARE_VERSION}",
                        help="print the version and exit")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def seconds(text: str) -> float:
    """A finite duration of 0 or more seconds (`nan` and `inf` are not durations)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be 0 or more seconds, not {text}")
    return value


def int_in(lo: int, hi: int):
    """An argparse type: a whole number in [lo, hi]."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, not {value}")
        return value

    return convert
