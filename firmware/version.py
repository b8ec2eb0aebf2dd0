"""Firmware version, reported in alerts and status."""

FIRMWARE_VERSION = "0.1.0"
