"""Fleet files (TOML): many simulated kiosks, one per site, each with its own identity.

A fleet file is its own format; it produces one ordinary kiosk `Config` per site in memory,
validated by the kiosk's own `parse_config` (so a fleet can never run a config the firmware
would refuse). Any problem is a `ConfigError`: one line naming the file, the site and the key.

    [fleet]
    name = "Peshawar"
    device_prefix = "pb-psh-"      # device id = prefix + site id (= certificate CN)
    pki = "../../pki"              # ca.pem and devices/<device id>.pem/.key
    state_dir = "../../.fleet/peshawar"   # each device's state in <state_dir>/<device id>
    broker = "localhost:8883"
    media = false                  # camera and microphone per site (default: off, see below)

    [kiosk.health]                 # kiosk config sections for every device (examples/kiosk.toml):
    interval_s = 10.0              # alert, media, health, log, broker (not host/port/ca/cert/key)

    [[site]]
    id = "qissa-khwani"            # what `press ID` takes
    name = "Qissa Khwani Bazaar"
    kind = "market"                # market | bus_stand | university | park | college
    lat = 34.0079
    lon = 71.5785
    media = true                   # optional: this site's camera and microphone
    quirks.camera_covered = true   # optional: see QUIRKS

Media: 68 kiosks each encoding 640x480 H.264 for the pre-roll are more than a 2-core laptop
can do, so a fleet device has no camera or microphone unless its site (or `fleet.media`)
turns media on, and then it captures at FLEET_MEDIA (160x120 at 5 fps) unless `[kiosk.media]`
says otherwise. A quirk that needs the camera or microphone turns that device's media on.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pinkbutton.firmware import protocol
from pinkbutton.firmware.config import Config, ConfigError, parse_config, verify_certificates
from pinkbutton.firmware.durable import private_dir

KINDS = ("market", "bus_stand", "university", "park", "college")
# Site ids are typed by a trainer (`press qissa-khwani`) and become part of the device id.
SITE_ID_RE = re.compile(r"[a-z0-9][a-z0-9-]{0,40}")
DEFAULT_PREFIX = "pb-"
DEFAULT_BROKER = "localhost:8883"
# Camera/microphone of a fleet device with media on, unless [kiosk.media] says otherwise.
FLEET_MEDIA = {"width": 160, "height": 120, "fps": 5.0, "video_kbps": 100, "preroll_s": 2.0}
# Kiosk config sections a fleet may set for all its devices, and the broker keys it sets itself.
KIOSK_SECTIONS = ("broker", "alert", "media", "health", "log")
_FLEET_BROKER_KEYS = ("host", "port", "ca", "cert", "key")
MAX_SITES = 5000


@dataclass(frozen=True, slots=True)
class FlakyLink:
    loss: float  # share of chunks held back one retransmission timeout (0-0.9)
    latency_ms: float  # added each way


@dataclass(frozen=True, slots=True)
class Quirks:
    camera_covered: bool = False
    camera_frozen: bool = False
    mic_dead: bool = False
    stuck_button: bool = False
    flaky_link: FlakyLink | None = None
    slow_disk_ms: float | None = None  # every outbox write takes this much longer

    @property
    def camera_mode(self) -> str:
        return "covered" if self.camera_covered else "frozen" if self.camera_frozen else "ok"

    def names(self) -> list[str]:
        out = [n for n in ("camera_covered", "camera_frozen", "mic_dead", "stuck_button")
               if getattr(self, n)]
        if self.flaky_link is not None:
            out.append(f"flaky_link {self.flaky_link.loss:g} loss "
                       f"{self.flaky_link.latency_ms:g} ms")
        if self.slow_disk_ms is not None:
            out.append(f"slow_disk {self.slow_disk_ms:g} ms")
        return out


QUIRKS = ("camera_covered", "camera_frozen", "mic_dead", "stuck_button", "flaky_link",
          "slow_disk")


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    kind: str
    lat: float
    lon: float
    device_id: str
    config: Config  # the kiosk config this site's device runs with
    quirks: Quirks = field(default_factory=Quirks)


@dataclass(frozen=True, slots=True)
class Fleet:
    path: Path
    name: str
    pki: Path
    state_dir: Path
    broker: tuple[str, int]
    sites: tuple[Site, ...]

    def find(self, key: str) -> Site | None:
        """A site by its id or its device id."""
        for site in self.sites:
            if key in (site.id, site.device_id):
                return site
        return None


class _Bad(Exception):
    """A problem in the current table; becomes a ConfigError naming where."""


def load_fleet(path: str | Path, *, pki: Path | None = None, state_dir: Path | None = None,
               broker: str | None = None, check_certificates: bool = True) -> Fleet:
    """Read and validate a fleet file; `pki`, `state_dir` and `broker` override the file's."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read fleet file: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse_fleet(data, path, pki=pki, state_dir=state_dir, broker=broker,
                       check_certificates=check_certificates)


def parse_fleet(data: Mapping[str, Any], path: Path, *, pki: Path | None = None,
                state_dir: Path | None = None, broker: str | None = None,
                check_certificates: bool = True) -> Fleet:
    path = Path(path)
    base = path.absolute().parent
    for key in data:
        if key not in ("fleet", "kiosk", "site"):
            raise ConfigError(f"{path}: unknown section [{key}] (a fleet file has [fleet], "
                              "[kiosk.*] and [[site]])")
    head = _table(data.get("fleet"), path, "[fleet]", required=True)
    where = f"{path}: [fleet]"
    _only(head, ("name", "device_prefix", "pki", "state_dir", "broker", "media"), where)
    name = _text(head, "name", where, required=True, limit=200)
    prefix = _text(head, "device_prefix", where, default=DEFAULT_PREFIX, limit=20)
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", prefix):
        raise ConfigError(f"{where} device_prefix: {prefix!r}: use a-z, 0-9 and '-'")
    pki_dir = Path(os.path.normpath(
        pki if pki is not None else base / _text(head, "pki", where, required=True)))
    states = Path(os.path.normpath(
        state_dir if state_dir is not None
        else base / _text(head, "state_dir", where, required=True)))
    host_port = broker if broker is not None else _text(head, "broker", where,
                                                         default=DEFAULT_BROKER)
    host, port = _host_port(host_port, f"{where} broker" if broker is None else "--broker")
    media_default = _flag(head, "media", where, default=False)

    kiosk = _table(data.get("kiosk"), path, "[kiosk]")
    for section, table in kiosk.items():
        if section not in KIOSK_SECTIONS:
            raise ConfigError(f"{path}: [kiosk.{section}]: not a section a fleet sets (one of "
                              f"{', '.join(KIOSK_SECTIONS)})")
        if not isinstance(table, Mapping):
            raise ConfigError(f"{path}: [kiosk.{section}]: expected a table")
    for key in kiosk.get("broker", {}):
        if key in _FLEET_BROKER_KEYS:
            raise ConfigError(f"{path}: [kiosk.broker] {key}: set by the fleet ([fleet] broker, "
                              "pki), not per kiosk")

    raw_sites = data.get("site")
    if raw_sites is None:
        raise ConfigError(f"{path}: no sites: add [[site]] tables")
    if not isinstance(raw_sites, list) or not all(isinstance(s, Mapping) for s in raw_sites):
        raise ConfigError(f"{path}: site: expected [[site]] tables")
    if len(raw_sites) > MAX_SITES:
        raise ConfigError(f"{path}: {len(raw_sites)} sites, at most {MAX_SITES}")
    seen: dict[str, int] = {}
    sites = []
    for n, raw in enumerate(raw_sites, 1):
        sid = raw.get("id")
        where = f"{path}: site {n}" + (f" ({sid})" if isinstance(sid, str) else "")
        site = _site(raw, where, prefix, pki_dir, states, host, port, media_default, kiosk,
                     path)
        if site.id in seen:
            raise ConfigError(f"{where} id: {site.id!r} is already site {seen[site.id]}")
        seen[site.id] = n
        sites.append(site)
    if check_certificates:  # once the whole file is known to be right
        for n, site in enumerate(sites, 1):
            _certificates(site, f"{path}: site {n} ({site.id})", path)
    return Fleet(path, name, Path(pki_dir), Path(states), (host, port), tuple(sites))


def _site(raw: Mapping[str, Any], where: str, prefix: str, pki: Path, states: Path, host: str,
          port: int, media_default: bool, kiosk: Mapping[str, Any], path: Path) -> Site:
    _only(raw, ("id", "name", "kind", "lat", "lon", "media", "quirks"), where)
    sid = _text(raw, "id", where, required=True)
    if not SITE_ID_RE.fullmatch(sid):
        raise ConfigError(f"{where} id: {sid!r}: 1-41 characters of a-z, 0-9 and '-', starting "
                          "with a letter or digit")
    device_id = prefix + sid
    if not protocol.DEVICE_ID_RE.match(device_id) or device_id == "controlroom":
        raise ConfigError(f"{where} id: device id {device_id!r} (device_prefix + id) is not a "
                          "valid device id")
    name = _text(raw, "name", where, required=True, limit=protocol.MAX_SITE_NAME)
    kind = _text(raw, "kind", where, required=True)
    if kind not in KINDS:
        raise ConfigError(f"{where} kind: must be one of {', '.join(KINDS)}; got {kind!r}")
    lat = _number(raw, "lat", where, *protocol.LAT_RANGE)
    lon = _number(raw, "lon", where, *protocol.LON_RANGE)
    quirks = _quirks(raw.get("quirks", {}), f"{where} quirks")
    media = _flag(raw, "media", where, default=media_default)
    video = media or quirks.camera_covered or quirks.camera_frozen
    audio = media or quirks.mic_dead

    sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in kiosk.items()}
    dev = pki / "devices"
    sections["device"] = {"id": device_id, "site_id": sid, "site_name": name, "lat": lat,
                          "lon": lon, "state_dir": str(states / device_id)}
    sections["broker"] = {**sections.get("broker", {}), "host": host, "port": port,
                          "ca": str(pki / "ca.pem"), "cert": str(dev / f"{device_id}.pem"),
                          "key": str(dev / f"{device_id}.key")}
    sections["hal"] = {"backend": "fake"}
    sections["media"] = {**FLEET_MEDIA, **sections.get("media", {}), "video": video,
                         "audio": audio}
    try:
        config = parse_config(sections, path, check_certificates=False)
    except ConfigError as e:
        raise ConfigError(f"{where}: {_without_path(e, path)}") from None
    return Site(sid, name, kind, lat, lon, device_id, config, quirks)


def _certificates(site: Site, where: str, path: Path) -> None:
    try:
        verify_certificates(site.config)
    except ConfigError as e:
        text = _without_path(e, path)
        hint = (f" (make the fleet's certificates: pinkbutton-pki fleet {path})"
                if "cannot read" in text else "")
        raise ConfigError(f"{where}: {text}{hint}") from None


def _without_path(e: ConfigError, path: Path) -> str:
    """The kiosk config's message without its leading file name (the fleet names it)."""
    text = str(e)
    return text[len(str(path)) + 2:] if text.startswith(f"{path}: ") else text


def _quirks(raw: object, where: str) -> Quirks:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table such as {{ stuck_button = true }}")
    for key in raw:
        if key not in QUIRKS:
            raise ConfigError(f"{where}: unknown quirk {key!r} (one of {', '.join(QUIRKS)})")
    flags = {k: _flag(raw, k, where, default=False)
             for k in ("camera_covered", "camera_frozen", "mic_dead", "stuck_button")}
    if flags["camera_covered"] and flags["camera_frozen"]:
        raise ConfigError(f"{where}: camera_covered and camera_frozen: one camera, one mode")
    link = None
    if "flaky_link" in raw:
        table = _table(raw["flaky_link"], where, "flaky_link")
        w = f"{where} flaky_link"
        _only(table, ("loss", "latency_ms"), w)
        link = FlakyLink(loss=_number(table, "loss", w, 0.0, 0.9, default=0.0),
                         latency_ms=_number(table, "latency_ms", w, 0.0, 10000.0, default=0.0))
    slow = None
    if "slow_disk" in raw:
        table = _table(raw["slow_disk"], where, "slow_disk")
        w = f"{where} slow_disk"
        _only(table, ("delay_ms",), w)
        slow = _number(table, "delay_ms", w, 1.0, 10000.0, default=200.0)
    return Quirks(**flags, flaky_link=link, slow_disk_ms=slow)


# -- small rules: each raises ConfigError naming `where` and the key ------------------------------


def _table(value: object, where: str | Path, name: str, required: bool = False) -> Mapping:
    if value is None:
        if required:
            raise ConfigError(f"{where}: missing {name}")
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: {name}: expected a table")
    return value


def _only(table: Mapping, keys: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r} (one of {', '.join(keys)})")


def _text(table: Mapping, key: str, where: str, *, required: bool = False,
          default: str = "", limit: int = 1000) -> str:
    if key not in table:
        if required:
            raise ConfigError(f"{where} {key}: missing (required)")
        return default
    value = table[key]
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where} {key}: expected a non-empty string, got {value!r}"[:300])
    if len(value) > limit or not value.isprintable():
        raise ConfigError(f"{where} {key}: printable text of at most {limit} characters")
    return value


def _number(table: Mapping, key: str, where: str, lo: float, hi: float, *,
            default: float | None = None) -> float:
    if key not in table:
        if default is None:
            raise ConfigError(f"{where} {key}: missing (required)")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} {key}: expected a number, got {value!r}"[:300])
    if not lo <= value <= hi:  # NaN fails this too
        raise ConfigError(f"{where} {key}: must be between {lo:g} and {hi:g}, got {value:g}")
    return float(value)


def _flag(table: Mapping, key: str, where: str, *, default: bool) -> bool:
    value = table.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{where} {key}: expected true or false, got {value!r}"[:300])
    return value


def _host_port(text: str, where: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{where}: {text!r} is not \"host:port\"")
    return host.strip("[]"), int(port)


def make_state_dir(fleet: Fleet) -> None:
    """The fleet's state folder (0700), before any kiosk starts: a kiosk without its folder
    would keep its alerts in memory only, which a simulator must not hide."""
    try:
        private_dir(fleet.state_dir, tighten=False)
    except OSError as e:
        raise ConfigError(f"{fleet.path}: [fleet] state_dir: cannot make {fleet.state_dir}: "
                          f"{e.strerror or e}") from None


def with_broker(site: Site, host: str, port: int) -> Site:
    """The site's device connecting to another address (its flaky link's proxy)."""
    config = site.config
    return replace(site, config=replace(config, broker=replace(config.broker, host=host,
                                                                    port=port)))
