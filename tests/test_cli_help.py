"""Every command says its version and explains every option (`--help` is the first manual)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest
from pinkbutton.firmware import cli as kiosk_cli
from pinkbutton.firmware.diag import cli as diag_cli
from pinkbutton.firmware.version import FIRMWARE_VERSION
from pinkbutton.simulator import cli as sim_cli
from pinkbutton.tools import pki
from pinkbutton.tools.controlroom import cli as room_cli

from harness import broker

PARSERS = {
    "pinkbutton": kiosk_cli._parser,
    "pinkbutton-sim": sim_cli.build_parser,
    "pinkbutton-controlroom": room_cli.build_parser,
    "pinkbutton-pki": pki._build_parser,
    "pinkbutton-diag": diag_cli._parser,
    "python -m harness.broker": broker.build_parser,
}
MODULES = {
    "pinkbutton": "pinkbutton.firmware.cli",
    "pinkbutton-sim": "pinkbutton.simulator.cli",
    "pinkbutton-controlroom": "pinkbutton.tools.controlroom.cli",
    "pinkbutton-pki": "pinkbutton.tools.pki",
    "pinkbutton-diag": "pinkbutton.firmware.diag.cli",
    "python -m harness.broker": "harness.broker",
}


def _walk(parser: argparse.ArgumentParser, path: str):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield path, action


@pytest.mark.parametrize("prog", sorted(PARSERS))
def test_every_option_and_argument_has_help_text(prog: str) -> None:
    missing = [f"{path} {'/'.join(a.option_strings) or a.dest}"
               for path, a in _walk(PARSERS[prog](), prog) if not (a.help or "").strip()]
    assert missing == []


@pytest.mark.parametrize("prog", sorted(MODULES))
def test_version_prints_the_installed_version(prog: str) -> None:
    out = subprocess.run([sys.executable, "-m", MODULES[prog], "--version"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stdout.strip(), out.stderr) == (0, f"{prog} {FIRMWARE_VERSION}", "")


def test_version_comes_from_package_metadata() -> None:
    from importlib.metadata import version

    assert FIRMWARE_VERSION == version("pinkbutton")


@pytest.mark.parametrize("module", ["harness.bench", "harness.bench_media", "harness.bench_room",
                                    "harness.broker", "harness.demo", "pinkbutton.tools.pki"])
def test_help_works_with_docstrings_stripped(module: str) -> None:
    # python -OO (PYTHONOPTIMIZE=2) drops docstrings: __doc__ is None, the parser still builds.
    out = subprocess.run([sys.executable, "-OO", "-m", module, "--help"],
                         capture_output=True, text=True, timeout=60)
    assert (out.returncode, out.stderr) == (0, "")
    assert out.stdout.startswith("usage: ")
