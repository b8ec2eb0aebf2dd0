"""Protocol v1: topics and JSON codecs with strict validation.

Every decoder raises ProtocolError with a one-line reason; callers log it and
drop the message. Nothing here does I/O. See docs/protocol.md.
"""

from __future__ import annotations

import base64
import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any, Literal, overload

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

PROTOCOL_VERSION = 1
TOPIC_ROOT = "pinkbutton/v1/dev"
MAX_JSON_BYTES = 16 * 1024
# \Z, not $: "$" also matches before a trailing newline, and a device id is printed.
DEVICE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{1,62}\Z")
ALERT_KINDS = ("emergency", "test")
# `auth` on an alert: how it is authenticated when it carries no signature. "tls": by the
# sender's TLS client certificate alone (the topic), e.g. a Pico W, which has no ECDSA.
ALERT_AUTHS = ("tls",)
CMD_KINDS = (
    "ack", "dispatched", "end", "selftest", "extend", "receipt", "nack", "evidence_complete",
)
MAX_EXTEND_S = 3600.0

# The protocol's text limits, in characters (code points, as len() counts them). The codecs
# check against these and firmware/config.py refuses a config value over them, so a kiosk
# can never announce what the room would refuse.
MAX_SITE_ID = 64
MAX_SITE_NAME = 256
MAX_KIND = 256  # alert kind, before it is checked against ALERT_KINDS
MAX_FIRMWARE = 32
MAX_TIMESTAMP = 40
MAX_SIGNATURE = 200
MAX_OPERATOR = 64
MAX_STATE = 32
MAX_EVENT_KIND = 64
MAX_CMD_NAME = 24
LAT_RANGE = (-90.0, 90.0)
LON_RANGE = (-180.0, 180.0)


class ProtocolError(ValueError):
    """A message that does not follow protocol v1; str() is the reason."""


# -- topics -----------------------------------------------------------------


def topic(device_id: str, leaf: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/{leaf}"


def media_topic(device_id: str, alert_id: str) -> str:
    return f"{TOPIC_ROOT}/{device_id}/media/{alert_id}"


@dataclass(frozen=True, slots=True)
class TopicParts:
    device_id: str
    leaf: str  # alert | status | health | events | cmd | media
    rest: str = ""  # alert_id for media


def parse_topic(name: str) -> TopicParts:
    prefix = TOPIC_ROOT + "/"
    if not name.startswith(prefix):
        raise ProtocolError(f"topic {name!r} is not under {TOPIC_ROOT}/")
    parts = name[len(prefix) :].split("/")
    if len(parts) < 2 or not DEVICE_ID_RE.match(parts[0]):
        raise ProtocolError(f"topic {name!r} has no valid device id")
    leaf = parts[1]
    if leaf == "media" and len(parts) == 3:
        return TopicParts(parts[0], leaf, parts[2])
    if leaf in ("alert", "status", "health", "events", "cmd") and len(parts) == 2:
        return TopicParts(parts[0], leaf)
    raise ProtocolError(f"topic {name!r} is not a protocol v1 topic")


# -- field checks -----------------------------------------------------------


def _load(payload: bytes | str, expected_type: str) -> dict[str, Any]:
    if isinstance(payload, str):
        payload = payload.encode()
    if len(payload) > MAX_JSON_BYTES:
        raise ProtocolError(f"payload is {len(payload)} bytes, over the {MAX_JSON_BYTES} limit")
    try:
        obj = json.loads(payload)
    except RecursionError:
        raise ProtocolError("not valid JSON: nested too deeply") from None
    except ValueError as e:  # also int strings over Python's digit limit, bad UTF-8
        raise ProtocolError(f"not valid JSON: {e}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(f"payload must be a JSON object, got {type(obj).__name__}")
    v = obj.get("v")
    if type(v) is not int:
        raise ProtocolError("field 'v' (protocol version) missing or not an integer")
    if v != PROTOCOL_VERSION:
        raise ProtocolError(f"unsupported protocol version {v} (this side speaks {PROTOCOL_VERSION})")
    if obj.get("type") != expected_type:
        raise ProtocolError(f"field 'type' must be {expected_type!r}, got {obj.get('type')!r}")
    return obj


# The overloads say what the checks guarantee: a field that is not optional is never None.
@overload
def _str(obj: Mapping, key: str, *, optional: Literal[False] = False, max_len: int = 256) -> str: ...
@overload
def _str(obj: Mapping, key: str, *, optional: bool, max_len: int = 256) -> str | None: ...
def _str(obj: Mapping, key: str, *, optional: bool = False, max_len: int = 256) -> str | None:
    val = obj.get(key)
    if val is None and optional:
        return None
    if not isinstance(val, str):
        raise ProtocolError(f"field {key!r} must be a string, got {_tname(val)}")
    if len(val) > max_len:
        raise ProtocolError(f"field {key!r} is longer than {max_len} characters")
    if _SURROGATE.search(val):  # only a crafted \ud800 escape makes one; no UTF-8 can hold it
        raise ProtocolError(f"field {key!r} contains a lone surrogate, which is not text")
    return val


_SURROGATE = re.compile("[\ud800-\udfff]")


def _int(obj: Mapping, key: str, *, lo: int = 0, hi: int = 2**53) -> int:
    val = obj.get(key)
    if type(val) is not int:
        raise ProtocolError(f"field {key!r} must be an integer, got {_tname(val)}")
    if not lo <= val <= hi:
        raise ProtocolError(f"field {key!r} = {val} is out of range {lo}..{hi}")
    return val


@overload
def _num(obj: Mapping, key: str, *, lo: float, hi: float, optional: Literal[False] = False) -> float: ...
@overload
def _num(obj: Mapping, key: str, *, lo: float, hi: float, optional: bool) -> float | None: ...
def _num(obj: Mapping, key: str, *, lo: float, hi: float, optional: bool = False) -> float | None:
    val = obj.get(key)
    if val is None and optional:
        return None
    # abs() first: math.isfinite() raises OverflowError on an int too large for a float.
    # (the isinstance() adds nothing at run time; it tells the type checker what type() found)
    if type(val) not in (int, float) or not isinstance(val, int | float) or abs(val) > 1e300 or not math.isfinite(val):
        raise ProtocolError(f"field {key!r} must be a finite number, got {_tname(val)}")
    if not lo <= val <= hi:
        raise ProtocolError(f"field {key!r} = {val} is out of range {lo}..{hi}")
    return float(val)


def _bool(obj: Mapping, key: str) -> bool:
    val = obj.get(key)
    if type(val) is not bool:
        raise ProtocolError(f"field {key!r} must be true or false, got {_tname(val)}")
    return val


@overload
def _uuid(obj: Mapping, key: str, *, optional: Literal[False] = False) -> str: ...
@overload
def _uuid(obj: Mapping, key: str, *, optional: bool) -> str | None: ...
def _uuid(obj: Mapping, key: str, *, optional: bool = False) -> str | None:
    val = _str(obj, key, optional=optional, max_len=36)
    if val is None:
        return None
    try:
        return str(uuid.UUID(val))
    except ValueError:
        raise ProtocolError(f"field {key!r} is not a UUID: {val!r}") from None


def _device_id(obj: Mapping, key: str, expected: str | None) -> str:
    val = _str(obj, key, max_len=63)
    if not DEVICE_ID_RE.match(val):
        raise ProtocolError(f"field {key!r} is not a valid device id: {val!r}")
    if expected is not None and val != expected:
        raise ProtocolError(f"device id {val!r} in payload does not match topic device {expected!r}")
    return val


def _tname(val: Any) -> str:
    return "null" if val is None else type(val).__name__


def _dumps(obj: Mapping) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False).encode()


# -- alert ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Site:
    id: str
    name: str
    lat: float
    lon: float


@dataclass(frozen=True, slots=True)
class Alert:
    device_id: str
    alert_id: str
    seq: int
    kind: str
    pressed_at: str  # wall clock, ISO 8601 UTC
    pressed_mono: float  # device monotonic seconds at the press
    age_ms: int  # device monotonic ms from press to this announcement (immune to wall-clock jumps)
    announce: int  # 1 = first announcement, +1 per re-announcement
    escalated: bool
    presses: int
    site: Site
    firmware: str
    sent_at: str
    follows: str | None = None
    signature: str | None = None
    auth: str | None = None  # "tls": unsigned, authenticated by the certificate; left out if None

    def signed_fields(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive deep copy is a third of the kiosk's CPU
        # time between the press and the publish.
        d = {name: getattr(self, name) for name in _ALERT_FIELDS}
        d["site"] = {name: getattr(self.site, name) for name in _SITE_FIELDS}
        d.update(v=PROTOCOL_VERSION, type="alert")
        if self.auth is not None:
            d["auth"] = self.auth
        return d


_ALERT_FIELDS = tuple(f.name for f in fields(Alert) if f.name not in ("signature", "auth"))
_SITE_FIELDS = tuple(f.name for f in fields(Site))


def encode_alert(alert: Alert, key: ec.EllipticCurvePrivateKey | None = None) -> bytes:
    """JSON bytes; signed with the device key (ECDSA P-256, SHA-256) when given."""
    body = alert.signed_fields()
    if key is not None:
        sig = key.sign(_dumps(body), ec.ECDSA(hashes.SHA256()))
        body["signature"] = base64.b64encode(sig).decode()
    return _dumps(body)


def decode_alert(payload: bytes | str, *, topic_device: str | None = None) -> Alert:
    o = _load(payload, "alert")
    site = o.get("site")
    if not isinstance(site, dict):
        raise ProtocolError(f"field 'site' must be an object, got {_tname(site)}")
    kind = _str(o, "kind", max_len=MAX_KIND)
    if kind not in ALERT_KINDS:
        raise ProtocolError(f"field 'kind' must be one of {', '.join(ALERT_KINDS)}, got {kind!r}")
    alert = Alert(
        device_id=_device_id(o, "device_id", topic_device),
        alert_id=_uuid(o, "alert_id"),
        seq=_int(o, "seq", lo=1),
        kind=kind,
        pressed_at=_str(o, "pressed_at", max_len=MAX_TIMESTAMP),
        pressed_mono=_num(o, "pressed_mono", lo=0, hi=1e12),
        age_ms=_int(o, "age_ms", lo=0),
        announce=_int(o, "announce", lo=1, hi=1_000_000),
        escalated=_bool(o, "escalated"),
        presses=_int(o, "presses", lo=1),
        site=Site(
            id=_str(site, "id", max_len=MAX_SITE_ID),
            name=_str(site, "name", max_len=MAX_SITE_NAME),
            lat=_num(site, "lat", lo=LAT_RANGE[0], hi=LAT_RANGE[1]),
            lon=_num(site, "lon", lo=LON_RANGE[0], hi=LON_RANGE[1]),
        ),
        firmware=_str(o, "firmware", max_len=MAX_FIRMWARE),
        sent_at=_str(o, "sent_at", max_len=MAX_TIMESTAMP),
        follows=_uuid(o, "follows", optional=True),
        signature=_str(o, "signature", optional=True, max_len=MAX_SIGNATURE),
        auth=_auth(o),
    )
    return alert


def _auth(obj: Mapping) -> str | None:
    val = obj.get("auth")
    if val is None or (isinstance(val, str) and val in ALERT_AUTHS):
        return val
    raise ProtocolError(f"field 'auth' must be {' or '.join(map(repr, ALERT_AUTHS))} or "
                        f"absent, got {_short(val)}")


@dataclass(frozen=True, slots=True)
class SalvagedAlert:
    """What the room could read of an alert body that decode_alert refused.

    The topic (the sender's certificate) is the one authoritative part: `alert.device_id`
    is always the topic's device. A field that could not be read is None (a number) or ""
    (text); too-long text is cut to its limit and lone surrogates are replaced by U+FFFD;
    an unreadable `kind` counts as "emergency" (never suppress a dispatch), an unreadable
    `announce` and `presses` as 1. When no alert_id could be read, `alert.alert_id` is a
    UUID derived from the device and the body, so retries of one bad body fold into one
    incident, and `alert_id_known` is False (the device cannot be sent a receipt for it).
    """

    alert: Alert
    problems: tuple[str, ...]  # one line each: what was wrong with the body
    alert_id_known: bool


_SALVAGE_NS = uuid.uuid5(uuid.NAMESPACE_URL, "pinkbutton:v1:salvaged-alert")
# Left out of the derived id: these change between announcements of one incident.
_VOLATILE = ("announce", "escalated", "age_ms", "sent_at", "presses", "signature")


def salvage_alert(payload: bytes | str, *, topic_device: str) -> SalvagedAlert:
    """Read what can be read of an alert body, field by field, with the strict rules of
    decode_alert; never raises. See SalvagedAlert and docs/protocol.md."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogatepass")
    problems: list[str] = []
    unread = object()
    obj: Any = unread
    if len(payload) > MAX_JSON_BYTES:
        problems.append(f"payload is {len(payload)} bytes, over the {MAX_JSON_BYTES} limit: "
                        "not read")
    else:
        try:
            body = payload.decode("utf-8")
        except UnicodeDecodeError as e:
            problems.append(f"not valid UTF-8 (byte {e.start}): read with replacements")
            body = payload.decode("utf-8", "replace")
        try:
            obj = json.loads(body)
        except RecursionError:
            problems.append("not valid JSON: nested too deeply")
        except ValueError as e:
            problems.append(f"not valid JSON: {e}")
    if obj is not unread and not isinstance(obj, dict):
        problems.append(f"payload must be a JSON object, got {_tname(obj)}")
    is_object = isinstance(obj, dict)  # else every field is simply unknown: no list of them
    o: dict[str, Any] = obj if is_object else {}
    if is_object:
        v = o.get("v")
        if type(v) is not int:
            problems.append("field 'v' (protocol version) missing or not an integer")
        elif v != PROTOCOL_VERSION:
            problems.append(f"unsupported protocol version {v} "
                            f"(this side speaks {PROTOCOL_VERSION}): read as {PROTOCOL_VERSION}")
        if o.get("type") != "alert":
            problems.append(f"field 'type' must be 'alert', got {_short(o.get('type'))}")

    # Any: a salvaged Alert carries None where the body gave nothing readable (the room's
    # store keeps those columns nullable); its fields are typed for a valid alert.
    def read(check, fallback, where: Mapping = o, prefix: str = "") -> Any:
        try:
            return check(where)
        except ProtocolError as e:
            if is_object:
                problems.append(str(e).replace("field '", f"field '{prefix}", 1))
            return fallback

    def text(key: str, max_len: int, where: Mapping = o, prefix: str = "",
             optional: bool = False) -> Any:
        val = where.get(key)
        repaired = (_SURROGATE.sub("\ufffd", val[:max_len]) if isinstance(val, str)
                    else (None if optional else ""))
        return read(lambda w: _str(w, key, max_len=max_len, optional=optional), repaired,
                    where, prefix)

    device_id = topic_device
    read(lambda w: _device_id(w, "device_id", topic_device), None)
    alert_id = read(lambda w: _uuid(w, "alert_id"), None)
    kind = text("kind", MAX_KIND)
    if kind not in ALERT_KINDS:
        if kind:
            problems.append(f"field 'kind' must be one of {', '.join(ALERT_KINDS)}, got "
                            f"{_short(kind)}: taken as emergency")
        kind = "emergency"
    site = o.get("site")
    if not isinstance(site, dict):
        if is_object:
            problems.append(f"field 'site' must be an object, got {_tname(site)}")
        site = {}
    alert = Alert(
        device_id=device_id,
        alert_id=alert_id or _derived_alert_id(topic_device, o, payload),
        seq=read(lambda w: _int(w, "seq", lo=1), None),
        kind=kind,
        pressed_at=text("pressed_at", MAX_TIMESTAMP),
        pressed_mono=read(lambda w: _num(w, "pressed_mono", lo=0, hi=1e12), None),
        age_ms=read(lambda w: _int(w, "age_ms", lo=0), None),
        announce=read(lambda w: _int(w, "announce", lo=1, hi=1_000_000), 1),
        escalated=read(lambda w: _bool(w, "escalated"), False),
        presses=read(lambda w: _int(w, "presses", lo=1), 1),
        site=Site(
            id=text("id", MAX_SITE_ID, site, "site."),
            name=text("name", MAX_SITE_NAME, site, "site."),
            lat=read(lambda w: _num(w, "lat", lo=LAT_RANGE[0], hi=LAT_RANGE[1]), None,
                     site, "site."),
            lon=read(lambda w: _num(w, "lon", lo=LON_RANGE[0], hi=LON_RANGE[1]), None,
                     site, "site."),
        ),
        firmware=text("firmware", MAX_FIRMWARE),
        sent_at=text("sent_at", MAX_TIMESTAMP),
        follows=read(lambda w: _uuid(w, "follows", optional=True), None),
        signature=text("signature", MAX_SIGNATURE, optional=True),
        auth=read(_auth, None),
    )
    if alert_id is None:
        problems.append("no readable alert_id: incident id derived from the body")
    return SalvagedAlert(alert, tuple(problems), alert_id is not None)


def _derived_alert_id(device_id: str, obj: dict[str, Any], payload: bytes) -> str:
    try:
        basis = json.dumps({k: v for k, v in obj.items() if k not in _VOLATILE},
                           sort_keys=True, ensure_ascii=True, default=str) if obj else None
    except (ValueError, RecursionError):
        basis = None
    if basis is None:
        basis = payload.hex()
    return str(uuid.uuid5(_SALVAGE_NS, f"{device_id}\n{basis}"))


def _short(val: Any) -> str:
    text = repr(val)
    return text if len(text) <= 40 else text[:37] + "..."


def verify_alert(payload: bytes | str, public_key: ec.EllipticCurvePublicKey) -> bool:
    """True when the received alert bytes carry a valid signature by `public_key`.

    Verifies over the canonical form of what was received (not a re-encoding of
    the decoded Alert), so number formatting cannot break a good signature.
    """
    try:
        obj = json.loads(payload)
        sig = base64.b64decode(obj.pop("signature"), validate=True)
        public_key.verify(sig, _dumps(obj), ec.ECDSA(hashes.SHA256()))
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError, InvalidSignature):
        return False
    return True


# -- cmd --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cmd:
    cmd: str
    cmd_id: str
    sent_at: str
    alert_id: str | None = None
    operator: str | None = None
    extend_s: float | None = None
    # nack: the media seqs the room is missing, inclusive [first, last] ranges, ascending.
    ranges: tuple[tuple[int, int], ...] | None = None


# Bounds of one nack: a room missing more asks again once these are filled.
MAX_NACK_RANGES = 64
MAX_NACK_SEQS = 4096
MAX_MEDIA_SEQ = 2**32 - 1  # the envelope's seq is 32 bits


def encode_cmd(c: Cmd) -> bytes:
    d = asdict(c)
    if c.ranges is None:
        del d["ranges"]  # the other cmds keep their v1 shape
    return _dumps({**d, "v": PROTOCOL_VERSION, "type": "cmd"})


def decode_cmd(payload: bytes | str) -> Cmd:
    o = _load(payload, "cmd")
    kind = _str(o, "cmd", max_len=MAX_CMD_NAME)
    if kind not in CMD_KINDS:
        raise ProtocolError(f"unknown cmd {kind!r} (expected one of {', '.join(CMD_KINDS)})")
    c = Cmd(
        cmd=kind,
        cmd_id=_uuid(o, "cmd_id"),
        sent_at=_str(o, "sent_at", max_len=MAX_TIMESTAMP),
        alert_id=_uuid(o, "alert_id", optional=True),
        operator=_str(o, "operator", optional=True, max_len=MAX_OPERATOR),
        extend_s=_num(o, "extend_s", lo=0, hi=MAX_EXTEND_S, optional=True),
        ranges=_ranges(o, "ranges") if kind == "nack" else None,
    )
    if kind != "selftest" and c.alert_id is None:
        raise ProtocolError(f"cmd {kind!r} needs an alert_id")
    if kind == "extend" and not c.extend_s:
        raise ProtocolError("cmd 'extend' needs extend_s > 0")
    return c


def _ranges(obj: Mapping, key: str) -> tuple[tuple[int, int], ...]:
    """A nack's seq ranges: 1..MAX_NACK_RANGES pairs [first, last], ascending, disjoint,
    at most MAX_NACK_SEQS seqs in all (what one resend round may cost the device)."""
    val = obj.get(key)
    if not isinstance(val, list) or not val:
        raise ProtocolError(f"field {key!r} must be a non-empty list, got {_tname(val)}")
    if len(val) > MAX_NACK_RANGES:
        raise ProtocolError(f"field {key!r} has {len(val)} ranges, over {MAX_NACK_RANGES}")
    out: list[tuple[int, int]] = []
    total = 0
    for i, pair in enumerate(val):
        if (not isinstance(pair, list) or len(pair) != 2
                or any(type(x) is not int or not 0 <= x <= MAX_MEDIA_SEQ for x in pair)):
            raise ProtocolError(f"field {key!r}[{i}] must be [first, last] media seqs")
        first, last = pair
        if first > last:
            raise ProtocolError(f"field {key!r}[{i}] has first {first} > last {last}")
        if out and first <= out[-1][1]:
            raise ProtocolError(f"field {key!r}[{i}] is not after the range before it")
        total += last - first + 1
        if total > MAX_NACK_SEQS:
            raise ProtocolError(f"field {key!r} asks for more than {MAX_NACK_SEQS} seqs")
        out.append((first, last))
    return tuple(out)


# -- status / events --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    device_id: str
    online: bool
    state: str
    firmware: str
    at: str | None = None


def encode_status(s: Status) -> bytes:
    return _dumps({**asdict(s), "v": PROTOCOL_VERSION, "type": "status"})


def decode_status(payload: bytes | str, *, topic_device: str | None = None) -> Status:
    o = _load(payload, "status")
    return Status(
        device_id=_device_id(o, "device_id", topic_device),
        online=_bool(o, "online"),
        state=_str(o, "state", max_len=MAX_STATE),
        firmware=_str(o, "firmware", max_len=MAX_FIRMWARE),
        at=_str(o, "at", optional=True, max_len=MAX_TIMESTAMP),
    )


@dataclass(frozen=True, slots=True)
class DeviceEvent:
    device_id: str
    kind: str
    at: str
    detail: dict[str, Any] = field(default_factory=dict)


def encode_event(e: DeviceEvent) -> bytes:
    return _dumps({**asdict(e), "v": PROTOCOL_VERSION, "type": "event"})


def decode_event(payload: bytes | str, *, topic_device: str | None = None) -> DeviceEvent:
    o = _load(payload, "event")
    detail = o.get("detail", {})
    if not isinstance(detail, dict):
        raise ProtocolError(f"field 'detail' must be an object, got {_tname(detail)}")
    return DeviceEvent(
        device_id=_device_id(o, "device_id", topic_device),
        kind=_str(o, "kind", max_len=MAX_EVENT_KIND),
        at=_str(o, "at", max_len=MAX_TIMESTAMP),
        detail=detail,
    )


# -- health (heartbeat) -----------------------------------------------------

MAX_HEALTH_FAULTS = 32
MAX_HEALTH_INTERVAL_S = 86400.0
MAX_HEALTH_EVIDENCE = 16  # alert ids listed in evidence_pending


@dataclass(frozen=True, slots=True)
class Health:
    """One heartbeat. `interval_s` is the sender's own period, so the room can tell a
    missed beat from a slow sender without sharing configuration."""

    device_id: str
    seq: int  # 1 for the first heartbeat after the process started, +1 per heartbeat
    uptime_s: float  # seconds since the kiosk process started (a drop means a restart)
    interval_s: float
    state: str
    online_since: str | None  # when the current broker connection came up
    queue_depth: int  # undelivered alerts + queued media
    disk_free_mb: float | None  # free space where the outbox and evidence live
    temperature_c: float | None
    last_selftest: str | None
    selftest_ok: bool | None
    faults: tuple[str, ...]
    firmware: str
    at: str
    # Alerts whose local evidence the room has not confirmed yet (oldest first, at most
    # MAX_HEALTH_EVIDENCE): the room asks again for what it lacks. Optional (older firmware).
    evidence_pending: tuple[str, ...] = ()
    # Whole days until the kiosk's certificate expires (negative: expired); None when the
    # kiosk cannot read it. Optional (older firmware sends none).
    cert_days_left: int | None = None
    # Where the kiosk is (its configured site, as in its alerts), so the room's map shows a
    # kiosk before its first alert. Optional (older firmware, the Pico W send none).
    site: Site | None = None


#: A certificate's days left are reported within +-this (100 years).
MAX_CERT_DAYS = 36500


def encode_health(h: Health) -> bytes:
    return _dumps({**asdict(h), "faults": list(h.faults),
                   "evidence_pending": list(h.evidence_pending[:MAX_HEALTH_EVIDENCE]),
                   "v": PROTOCOL_VERSION, "type": "health"})


def decode_health(payload: bytes | str, *, topic_device: str | None = None) -> Health:
    o = _load(payload, "health")
    interval = _num(o, "interval_s", lo=0, hi=MAX_HEALTH_INTERVAL_S)
    if interval <= 0:
        raise ProtocolError("field 'interval_s' must be > 0")
    faults = o.get("faults")
    if not isinstance(faults, list):
        raise ProtocolError(f"field 'faults' must be a list, got {_tname(faults)}")
    if len(faults) > MAX_HEALTH_FAULTS:
        raise ProtocolError(f"field 'faults' has {len(faults)} entries, over {MAX_HEALTH_FAULTS}")
    for i, name in enumerate(faults):
        if not isinstance(name, str) or not 0 < len(name) <= 64:
            raise ProtocolError(f"field 'faults'[{i}] must be a string of 1..64 characters")
    selftest_ok = o.get("selftest_ok")
    if selftest_ok is not None and type(selftest_ok) is not bool:
        raise ProtocolError(f"field 'selftest_ok' must be true, false or null, got {_tname(selftest_ok)}")
    pending = o.get("evidence_pending", [])
    if not isinstance(pending, list):
        raise ProtocolError(f"field 'evidence_pending' must be a list, got {_tname(pending)}")
    if len(pending) > MAX_HEALTH_EVIDENCE:
        raise ProtocolError(
            f"field 'evidence_pending' has {len(pending)} entries, over {MAX_HEALTH_EVIDENCE}")
    pending_ids = tuple(_uuid({f"evidence_pending[{i}]": a}, f"evidence_pending[{i}]")
                        for i, a in enumerate(pending))
    site = o.get("site")
    if site is not None and not isinstance(site, dict):
        raise ProtocolError(f"field 'site' must be an object or null, got {_tname(site)}")
    return Health(
        device_id=_device_id(o, "device_id", topic_device),
        seq=_int(o, "seq", lo=1),
        uptime_s=_num(o, "uptime_s", lo=0, hi=1e12),
        interval_s=interval,
        state=_str(o, "state", max_len=MAX_STATE),
        online_since=_iso(o, "online_since", optional=True),
        queue_depth=_int(o, "queue_depth", lo=0),
        disk_free_mb=_num(o, "disk_free_mb", lo=0, hi=1e12, optional=True),
        temperature_c=_num(o, "temperature_c", lo=-273.15, hi=1000, optional=True),
        last_selftest=_iso(o, "last_selftest", optional=True),
        selftest_ok=selftest_ok,
        faults=tuple(faults),
        firmware=_str(o, "firmware", max_len=MAX_FIRMWARE),
        at=_iso(o, "at"),
        evidence_pending=pending_ids,
        cert_days_left=(None if o.get("cert_days_left") is None else
                        _int(o, "cert_days_left", lo=-MAX_CERT_DAYS, hi=MAX_CERT_DAYS)),
        site=None if site is None else Site(
            id=_str(site, "id", max_len=MAX_SITE_ID),
            name=_str(site, "name", max_len=MAX_SITE_NAME),
            lat=_num(site, "lat", lo=LAT_RANGE[0], hi=LAT_RANGE[1]),
            lon=_num(site, "lon", lo=LON_RANGE[0], hi=LON_RANGE[1])),
    )


@overload
def _iso(obj: Mapping, key: str, *, optional: Literal[False] = False) -> str: ...
@overload
def _iso(obj: Mapping, key: str, *, optional: bool) -> str | None: ...
def _iso(obj: Mapping, key: str, *, optional: bool = False) -> str | None:
    """An ISO 8601 timestamp string (checked by parsing it; `Z` accepted)."""
    val = _str(obj, key, optional=optional, max_len=MAX_TIMESTAMP)
    if val is None:
        return None
    try:
        datetime.fromisoformat(val.replace("Z", "+00:00"))
    except ValueError:
        raise ProtocolError(f"field {key!r} is not an ISO 8601 timestamp: {val!r}") from None
    return val
