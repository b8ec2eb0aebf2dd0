"""Scenario files (TOML): a fleet, a control room and a timeline of steps and expectations.

`pinkbutton-sim scenario FILE` runs one (simulator/scenario.py). Any problem in the file is a
`ConfigError`: one line naming the file, the step and what is wrong (exit 2).

    [scenario]
    name = "Single press"
    max_s = 20                     # the timeline is cut here (required, at most 600 s)
    fleet = "../fleets/campus.toml"  # optional: a fleet file; otherwise [fleet] + [[site]] here

    [fleet]                        # the fleet-file format (simulator/fleetfile.py), without
    name = "One bazaar"            # pki, state_dir and broker: the runner makes its own
    device_prefix = "pb-sc-"

    [kiosk.health]                 # kiosk sections for every device (with `fleet = FILE`:
    interval_s = 1.0               # merged over the fleet file's), e.g. short heartbeats

    [[site]]
    id = "bazaar"
    ...

    [room]
    receivers = 1                  # 1, or 2 in one share group (failover)
    auto_ack = true                # the room acknowledges every new alert (default true)
    evidence = true                # record the media of sites with media (default true)

    [districts]                    # optional names for groups of sites
    saddar = ["bazaar", "bus-stand"]

    [[step]]
    at = 1.0                       # seconds after every device is online in the room
    action = "press bazaar"

    [[step]]
    at = 1.0
    expect = "alert_received bazaar within 2"

Actions: `press T`, `hold T S`, `link_down T` (cut), `link_stall T` (silent), `link_up T`,
`broker_restart`,
`receiver_kill N`, `receiver_start N`, `camera_cover T`, `camera_uncover T`, where T is one or
more site ids, district names or `all`.

Expectations: `alert_received T within W`, `acked T within W`, `evidence_complete T within W`,
`device_offline T within W`, `device_online T within W` (back online), `camera_fault T
within W` and `camera_fault_cleared T within W` (the room shows the kiosk's camera_covered
fault raised, cleared), each met when its event happens for every site of T between `at`
and `at + W`; `incidents == N` (optionally `within W`), and `no_duplicates`, checked at `at`.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pinkbutton.firmware.config import ConfigError
from pinkbutton.simulator.fleetfile import Fleet, parse_fleet

MAX_S = 600.0
MAX_STEPS = 1000
ACTIONS = ("press", "hold", "link_down", "link_stall", "link_up", "broker_restart", "receiver_kill",
           "receiver_start", "camera_cover", "camera_uncover")
TIMED = ("alert_received", "acked", "evidence_complete", "device_offline", "device_online",
         "camera_fault", "camera_fault_cleared")
CHECKS = ("incidents", "no_duplicates")
_TOP = ("scenario", "fleet", "kiosk", "site", "room", "districts", "step")


@dataclass(frozen=True, slots=True)
class Room:
    receivers: int = 1
    auto_ack: bool = True
    evidence: bool = True


@dataclass(frozen=True, slots=True)
class Step:
    n: int  # its place in the file, from 1
    at: float
    text: str  # as written, for the output
    verb: str  # an action or an expectation
    sites: tuple[str, ...] = ()  # site ids (targets resolved)
    number: float = 0.0  # hold's seconds, receiver's number, incidents' count
    within: float | None = None  # an expectation's window

    @property
    def is_expectation(self) -> bool:
        return self.verb in TIMED or self.verb in CHECKS


@dataclass(frozen=True, slots=True)
class Scenario:
    path: Path
    name: str
    max_s: float
    fleet: Fleet
    room: Room
    steps: tuple[Step, ...]  # in time order (the file's order at equal times)

    @property
    def expectations(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.is_expectation)


def load_scenario(path: str | Path, *, pki: Path, state_dir: Path,
                  broker: str = "127.0.0.1:8883") -> Scenario:
    """Read and validate a scenario; its devices use `pki`, `state_dir` and `broker` (the
    runner's own, made before the run; certificates are not checked here)."""
    path = Path(path)
    data = _read_toml(path, "scenario file")
    for key in data:
        if key not in _TOP:
            raise ConfigError(f"{path}: unknown section [{key}] (one of {', '.join(_TOP)})")
    head = data.get("scenario")
    if not isinstance(head, Mapping):
        raise ConfigError(f"{path}: missing [scenario] (name, max_s)")
    where = f"{path}: [scenario]"
    _only(head, ("name", "description", "max_s", "fleet"), where)
    name = head.get("name")
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise ConfigError(f"{where} name: expected a non-empty string")
    max_s = _number(head, "max_s", where, 1.0, MAX_S)
    fleet = _fleet(data, head, path, pki, state_dir, broker)
    room = _room(data.get("room", {}), f"{path}: [room]")
    districts = _districts(data.get("districts", {}), fleet, f"{path}: [districts]")
    raw_steps = data.get("step")
    if not isinstance(raw_steps, list) or not raw_steps or \
            not all(isinstance(s, Mapping) for s in raw_steps):
        raise ConfigError(f"{path}: no timeline: add [[step]] tables (at, action or expect)")
    if len(raw_steps) > MAX_STEPS:
        raise ConfigError(f"{path}: {len(raw_steps)} steps, at most {MAX_STEPS}")
    steps = [_step(n, raw, path, max_s, fleet, room, districts)
             for n, raw in enumerate(raw_steps, 1)]
    if not any(s.is_expectation for s in steps):
        raise ConfigError(f"{path}: no expectation: add a [[step]] with expect = ...")
    steps.sort(key=lambda s: (s.at, s.n))
    return Scenario(path, name, max_s, fleet, room, tuple(steps))


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text (byte {e.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def _fleet(data: Mapping[str, Any], head: Mapping[str, Any], path: Path, pki: Path,
           state_dir: Path, broker: str) -> Fleet:
    if "fleet" in head:
        ref = head["fleet"]
        if not isinstance(ref, str) or not ref.strip():
            raise ConfigError(f"{path}: [scenario] fleet: expected the path of a fleet file")
        if "fleet" in data or "site" in data:
            raise ConfigError(f"{path}: [scenario] fleet names a fleet file: leave out "
                              "[fleet] and [[site]] here")
        fleet_path = (path.absolute().parent / ref)
        fleet_data = _read_toml(fleet_path, "fleet file")
        kiosk = data.get("kiosk", {})
        if not isinstance(kiosk, Mapping):
            raise ConfigError(f"{path}: [kiosk]: expected a table")
        merged = dict(fleet_data.get("kiosk", {}))
        for section, table in kiosk.items():  # the scenario's keys over the fleet file's
            base = merged.get(section, {})
            if isinstance(base, Mapping) and isinstance(table, Mapping):
                merged[section] = {**base, **table}
            else:
                merged[section] = table
        fleet_data = {**fleet_data, "kiosk": merged} if merged else fleet_data
        return parse_fleet(fleet_data, fleet_path, pki=pki, state_dir=state_dir,
                           broker=broker, check_certificates=False)
    if "fleet" not in data:
        raise ConfigError(f"{path}: no fleet: add [fleet] and [[site]] tables, or "
                          "[scenario] fleet = \"a fleet file\"")
    fleet_data = {k: v for k, v in data.items() if k in ("fleet", "kiosk", "site")}
    return parse_fleet(fleet_data, path, pki=pki, state_dir=state_dir, broker=broker,
                       check_certificates=False)


def _room(raw: object, where: str) -> Room:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table")
    _only(raw, ("receivers", "auto_ack", "evidence"), where)
    receivers = raw.get("receivers", 1)
    if isinstance(receivers, bool) or receivers not in (1, 2):
        raise ConfigError(f"{where} receivers: 1, or 2 (a share group), not {receivers!r}")
    flags = {}
    for key in ("auto_ack", "evidence"):
        value = raw.get(key, True)
        if not isinstance(value, bool):
            raise ConfigError(f"{where} {key}: expected true or false, got {value!r}")
        flags[key] = value
    return Room(receivers, **flags)


def _districts(raw: object, fleet: Fleet, where: str) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table of name = [site ids]")
    out = {}
    for name, ids in raw.items():
        if name == "all" or fleet.find(name) is not None:
            raise ConfigError(f"{where} {name}: the name of a site (or 'all'): choose another")
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise ConfigError(f"{where} {name}: expected a non-empty list of site ids")
        for i in ids:
            if fleet.find(i) is None:
                raise ConfigError(f"{where} {name}: no site {i!r} in the fleet")
        out[name] = tuple(dict.fromkeys(fleet.find(i).id for i in ids))  # type: ignore[union-attr]
    return out


def _step(n: int, raw: Mapping[str, Any], path: Path, max_s: float, fleet: Fleet, room: Room,
          districts: Mapping[str, tuple[str, ...]]) -> Step:
    where = f"{path}: step {n}"
    _only(raw, ("at", "action", "expect"), where)
    at = _number(raw, "at", where, 0.0, max_s)
    where = f"{path}: step {n} (at {at:g})"
    if ("action" in raw) == ("expect" in raw):
        raise ConfigError(f"{where}: give one of action or expect")
    key = "action" if "action" in raw else "expect"
    text = raw[key]
    if not isinstance(text, str) or not text.split():
        raise ConfigError(f"{where} {key}: expected a string such as \"press SITE\"")
    words = text.split()
    verb, args = words[0], words[1:]
    known = ACTIONS if key == "action" else (*TIMED, *CHECKS)
    if verb not in known:
        raise ConfigError(f"{where} {key}: unknown {key} {verb!r} (one of {', '.join(known)})")
    where = f"{where} {key} {text!r}"

    def targets(words: list[str]) -> tuple[str, ...]:
        if not words:
            raise ConfigError(f"{where}: name the sites (site ids, districts or all)")
        ids: list[str] = []
        for w in words:
            if w == "all":
                ids += [s.id for s in fleet.sites]
            elif w in districts:
                ids += districts[w]
            elif (site := fleet.find(w)) is not None:
                ids.append(site.id)
            else:
                raise ConfigError(f"{where}: no site or district {w!r}")
        return tuple(dict.fromkeys(ids))

    def number(word: str, what: str, lo: float, hi: float) -> float:
        try:
            value = float(word)
        except ValueError:
            value = float("nan")
        if not lo <= value <= hi:
            raise ConfigError(f"{where}: {what} must be a number from {lo:g} to {hi:g}, "
                              f"not {word!r}")
        return value

    def within(words: list[str]) -> tuple[list[str], float]:
        if len(words) < 2 or words[-2] != "within":
            raise ConfigError(f"{where}: end it with 'within SECONDS'")
        w = number(words[-1], "within", 0.001, max_s)
        if at + w > max_s:
            raise ConfigError(f"{where}: ends at {at + w:g} s, after max_s {max_s:g}")
        return words[:-2], w

    if verb in ("press", "link_down", "link_stall", "link_up"):
        return Step(n, at, text, verb, targets(args))
    if verb in ("camera_cover", "camera_uncover"):
        sites = targets(args)
        for sid in sites:
            site = fleet.find(sid)
            assert site is not None
            if not site.config.media.video:
                raise ConfigError(f"{where}: site {sid} has no camera (set media = true)")
        return Step(n, at, text, verb, sites)
    if verb == "hold":
        if len(args) < 2:
            raise ConfigError(f"{where}: hold SITES SECONDS")
        return Step(n, at, text, verb, targets(args[:-1]),
                    number=number(args[-1], "the hold", 0.01, 3600))
    if verb == "broker_restart":
        if args:
            raise ConfigError(f"{where}: broker_restart takes nothing")
        return Step(n, at, text, verb)
    if verb in ("receiver_kill", "receiver_start"):
        if len(args) != 1:
            raise ConfigError(f"{where}: {verb} N (1 to {room.receivers})")
        return Step(n, at, text, verb, number=number(args[0], "the receiver", 1, room.receivers))
    if verb in TIMED:
        rest, w = within(args)
        return Step(n, at, text, verb, targets(rest), within=w)
    if verb == "no_duplicates":
        if args:
            raise ConfigError(f"{where}: no_duplicates takes nothing")
        return Step(n, at, text, verb)
    # incidents == N [within W]
    rest, w = within(args) if "within" in args else (args, None)
    if len(rest) != 2 or rest[0] != "==":
        raise ConfigError(f"{where}: incidents == N [within SECONDS]")
    count = number(rest[1], "N", 0, 100000)
    if count != int(count):
        raise ConfigError(f"{where}: N must be a whole number, not {rest[1]!r}")
    return Step(n, at, text, verb, number=count, within=w)


def _only(table: Mapping, keys: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in keys:
            raise ConfigError(f"{where}: unknown key {key!r} (one of {', '.join(keys)})")


def _number(table: Mapping, key: str, where: str, lo: float, hi: float) -> float:
    if key not in table:
        raise ConfigError(f"{where} {key}: missing (required)")
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{where} {key}: expected a number, got {value!r}"[:300])
    if not lo <= value <= hi:
        raise ConfigError(f"{where} {key}: must be between {lo:g} and {hi:g}, got {value:g}")
    return float(value)
