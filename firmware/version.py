"""Firmware version, reported in alerts, status and heartbeats and by every command's --version.

One version: the installed package's metadata (pyproject.toml). A source tree that was never
installed reports "0+unknown" rather than a number nobody released.
"""

from importlib.metadata import PackageNotFoundError, version


def _installed_version() -> str:
    try:
        return version("pinkbutton")
    except PackageNotFoundError:
        return "0+unknown"


FIRMWARE_VERSION = _installed_version()
