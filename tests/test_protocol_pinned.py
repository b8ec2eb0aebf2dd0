"""Protocol v1 limits pinned at their boundaries (issue 15): exactly at a limit accepted, one
past it rejected with the field named, and property tests that compare what a decoder accepts
with what the documented rule says (docs/protocol.md), not only that errors are well formed."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st
from pinkbutton.firmware import protocol as p

from tests.test_protocol import ALERT_ID, CMD_ID, DEVICE, alert_dict, cmd_dict, make_alert, raw
from tests.test_protocol_health import health_dict


def refused(decode, obj: dict, reason: str, **kw) -> None:
    with pytest.raises(p.ProtocolError) as info:
        decode(raw(obj), **kw)
    assert str(info.value) == reason


# --- alert -------------------------------------------------------------------------------------


def test_a_kiosks_first_alert_has_seq_1_and_seq_0_is_refused() -> None:
    assert p.decode_alert(raw(alert_dict(seq=1))).seq == 1
    assert p.decode_alert(raw(alert_dict(seq=2**53))).seq == 2**53
    refused(p.decode_alert, alert_dict(seq=0), "field 'seq' = 0 is out of range 1..9007199254740992")
    refused(p.decode_alert, alert_dict(seq=2**53 + 1),
            "field 'seq' = 9007199254740993 is out of range 1..9007199254740992")


@pytest.mark.parametrize("field,lo,hi", [
    ("age_ms", 0, 2**53), ("announce", 1, 1_000_000), ("presses", 1, 2**53),
])
def test_alert_integer_fields_are_inclusive_at_both_ends(field, lo, hi) -> None:
    assert getattr(p.decode_alert(raw(alert_dict(**{field: lo}))), field) == lo
    assert getattr(p.decode_alert(raw(alert_dict(**{field: hi}))), field) == hi
    for bad in (lo - 1, hi + 1):
        refused(p.decode_alert, alert_dict(**{field: bad}),
                f"field {field!r} = {bad} is out of range {lo}..{hi}")


@pytest.mark.parametrize("where,field,lo,hi", [
    ("site", "lat", *p.LAT_RANGE), ("site", "lon", *p.LON_RANGE), (None, "pressed_mono", 0, 1e12),
])
def test_alert_number_fields_are_inclusive_at_both_ends(where, field, lo, hi) -> None:
    def with_value(value) -> dict:
        d = alert_dict()
        (d[where] if where else d)[field] = value
        return d

    for ok in (lo, hi):
        alert = p.decode_alert(raw(with_value(ok)))
        assert getattr(alert.site if where else alert, field) == ok
    for bad in (lo - 0.5, hi + 0.5):
        refused(p.decode_alert, with_value(bad), f"field {field!r} = {bad} is out of range {lo}..{hi}")


@pytest.mark.parametrize("where,field,limit", [
    (None, "pressed_at", 40), (None, "sent_at", 40), (None, "firmware", 32),
    ("site", "id", 64), ("site", "name", 256), (None, "signature", 200),
])
def test_alert_strings_are_taken_up_to_their_limit(where, field, limit) -> None:
    def with_value(value) -> dict:
        d = alert_dict()
        (d[where] if where else d)[field] = value
        return d

    alert = p.decode_alert(raw(with_value("x" * limit)))
    assert getattr(alert.site if where else alert, field) == "x" * limit
    refused(p.decode_alert, with_value("x" * (limit + 1)),
            f"field {field!r} is longer than {limit} characters")


@pytest.mark.parametrize("field", ["alert_id", "device_id", "pressed_at", "sent_at", "firmware"])
def test_alert_required_strings_are_required(field) -> None:
    d = alert_dict()
    del d[field]
    refused(p.decode_alert, d, f"field {field!r} must be a string, got null")
    refused(p.decode_alert, alert_dict(**{field: None}), f"field {field!r} must be a string, got null")


def test_alert_optional_fields_may_be_null_or_absent() -> None:
    d = alert_dict()
    d.pop("follows", None)
    d.pop("signature", None)
    alert = p.decode_alert(raw(d))
    assert (alert.follows, alert.signature) == (None, None)
    alert = p.decode_alert(raw(alert_dict(follows=ALERT_ID.upper(), signature="c2ln")))
    assert (alert.follows, alert.signature) == (ALERT_ID, "c2ln")


def test_decoded_alert_carries_every_value_sent() -> None:
    assert p.decode_alert(p.encode_alert(make_alert())) == make_alert()
    assert p.decode_alert(p.encode_alert(make_alert()), topic_device=DEVICE) == make_alert()


# --- the signed canonical form ---------------------------------------------------------------


def documented_canonical(obj: dict) -> bytes:
    """docs/protocol.md: keys sorted, separators "," and ":", UTF-8 without \\u escapes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_non_ascii_text_is_signed_as_raw_utf8_as_documented() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    alert = make_alert(site=p.Site("psh-qk", "قصہ خوانی بازار — Qissa Khwāni", 34.0, 71.5))
    payload = p.encode_alert(alert, key)
    assert "قصہ خوانی".encode() in payload and b"\\u" not in payload
    body = json.loads(payload)
    signature = base64.b64decode(body.pop("signature"))
    assert payload == documented_canonical({**body, "signature": base64.b64encode(signature)
                                            .decode()})
    # An independent verifier following the document accepts it ...
    key.public_key().verify(signature, documented_canonical(body), ec.ECDSA(hashes.SHA256()))
    assert p.verify_alert(payload, key.public_key())
    # ... and so does ours when the same alert arrives with \u escapes (another JSON writer).
    escaped = json.dumps({**body, "signature": base64.b64encode(signature).decode()})
    assert "\\u" in escaped and p.verify_alert(escaped.encode(), key.public_key())
    assert p.decode_alert(payload).site.name == "قصہ خوانی بازار — Qissa Khwāni"


# --- cmd --------------------------------------------------------------------------------------


def test_cmd_id_is_required() -> None:
    d = cmd_dict()
    del d["cmd_id"]
    refused(p.decode_cmd, d, "field 'cmd_id' must be a string, got null")
    refused(p.decode_cmd, cmd_dict(cmd_id="nope"), "field 'cmd_id' is not a UUID: 'nope'")
    assert p.decode_cmd(raw(cmd_dict())).cmd_id == CMD_ID


def test_cmd_values_are_carried_and_limits_are_inclusive() -> None:
    c = p.decode_cmd(raw(cmd_dict(cmd="extend", extend_s=p.MAX_EXTEND_S, operator="o" * 64)))
    assert (c.cmd, c.cmd_id, c.alert_id, c.operator, c.extend_s, c.ranges) == (
        "extend", CMD_ID, ALERT_ID, "o" * 64, 3600.0, None)
    refused(p.decode_cmd, cmd_dict(cmd="extend", extend_s=3600.5),
            "field 'extend_s' = 3600.5 is out of range 0..3600.0")
    refused(p.decode_cmd, cmd_dict(operator="o" * 65), "field 'operator' is longer than 64 characters")
    refused(p.decode_cmd, cmd_dict(cmd="extend", extend_s=0), "cmd 'extend' needs extend_s > 0")
    refused(p.decode_cmd, cmd_dict(cmd="ack", alert_id=None), "cmd 'ack' needs an alert_id")
    c = p.decode_cmd(raw(cmd_dict(cmd="selftest", alert_id=None, operator=None)))
    assert (c.cmd, c.alert_id, c.operator, c.extend_s) == ("selftest", None, None, None)


def nack(ranges) -> dict:
    return cmd_dict(cmd="nack", ranges=ranges)


def test_a_nack_may_ask_for_exactly_4096_seqs_in_all_not_4097() -> None:
    assert p.decode_cmd(raw(nack([[0, 4095]]))).ranges == ((0, 4095),)
    split = [[0, 2047], [3000, 5047]]  # 2048 + 2048: each range small, the total at the limit
    assert p.decode_cmd(raw(nack(split))).ranges == ((0, 2047), (3000, 5047))
    refused(p.decode_cmd, nack([[0, 4096]]), "field 'ranges' asks for more than 4096 seqs")
    refused(p.decode_cmd, nack([[0, 2047], [3000, 5048]]),
            "field 'ranges' asks for more than 4096 seqs")


def test_a_nack_may_hold_64_ranges_not_65() -> None:
    ranges = [[2 * i, 2 * i] for i in range(64)]
    assert len(p.decode_cmd(raw(nack(ranges))).ranges) == 64
    refused(p.decode_cmd, nack(ranges + [[500, 500]]), "field 'ranges' has 65 ranges, over 64")


def test_nack_seqs_span_the_32_bit_envelope_seq() -> None:
    top = p.MAX_MEDIA_SEQ
    assert p.decode_cmd(raw(nack([[0, 0], [top, top]]))).ranges == ((0, 0), (top, top))
    refused(p.decode_cmd, nack([[top, top + 1]]), "field 'ranges'[0] must be [first, last] media seqs")
    refused(p.decode_cmd, nack([[-1, 0]]), "field 'ranges'[0] must be [first, last] media seqs")
    refused(p.decode_cmd, nack([[0, 1], [1, 2]]), "field 'ranges'[1] is not after the range before it")
    assert p.decode_cmd(raw(nack([[0, 1], [2, 3]]))).ranges == ((0, 1), (2, 3))
    refused(p.decode_cmd, nack([[5, 4]]), "field 'ranges'[0] has first 5 > last 4")
    refused(p.decode_cmd, nack([]), "field 'ranges' must be a non-empty list, got list")
    refused(p.decode_cmd, nack([[1, 2, 3]]), "field 'ranges'[0] must be [first, last] media seqs")


def model_nack(ranges: list[list[int]]) -> bool:
    """docs/protocol.md's rule for `ranges`, written independently of the decoder."""
    if not 1 <= len(ranges) <= 64:
        return False
    previous_last = -1
    for first, last in ranges:
        if not (0 <= first <= last <= 2**32 - 1) or first <= previous_last:
            return False
        previous_last = last
    return sum(last - first + 1 for first, last in ranges) <= 4096


seq = st.integers(0, 6000) | st.sampled_from([2**32 - 2, 2**32 - 1, 2**32, -1])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(seq, min_size=2, max_size=2).map(sorted), min_size=0, max_size=66)
       | st.lists(st.tuples(st.integers(0, 200), st.integers(0, 3000)), min_size=1, max_size=8)
       .map(lambda steps: _ascending(steps)))
def test_nack_accepts_exactly_what_the_documented_rule_allows(ranges) -> None:
    try:
        got = p.decode_cmd(raw(nack(ranges)))
    except p.ProtocolError:
        assert not model_nack(ranges), ranges
    else:
        assert model_nack(ranges), ranges
        assert got.ranges == tuple(tuple(r) for r in ranges)


def _ascending(steps: list[tuple[int, int]]) -> list[list[int]]:
    out, at = [], 0
    for gap, length in steps:
        out.append([at + gap, at + gap + length])
        at += gap + length + 1
    return out


# --- status -----------------------------------------------------------------------------------


def test_status_at_is_optional_and_carried_when_given() -> None:
    d = {"v": 1, "type": "status", "device_id": DEVICE, "online": False, "state": "offline",
         "firmware": "0.1.0"}
    assert p.decode_status(raw(d)) == p.Status(DEVICE, False, "offline", "0.1.0", None)
    assert p.decode_status(raw({**d, "at": None})).at is None
    s = p.decode_status(raw({**d, "at": "2026-11-23T09:00:00.000Z", "online": True}))
    assert s == p.Status(DEVICE, True, "offline", "0.1.0", "2026-11-23T09:00:00.000Z")
    refused(p.decode_status, {**d, "at": "x" * 41}, "field 'at' is longer than 40 characters")
    refused(p.decode_status, {**d, "state": "s" * 33}, "field 'state' is longer than 32 characters")


# --- health -------------------------------------------------------------------------------------


def test_a_full_disk_reporting_0_mb_free_is_a_valid_heartbeat() -> None:
    assert p.decode_health(raw(health_dict(disk_free_mb=0))).disk_free_mb == 0.0
    assert p.decode_health(raw(health_dict(disk_free_mb=None))).disk_free_mb is None
    refused(p.decode_health, health_dict(disk_free_mb=-0.5),
            "field 'disk_free_mb' = -0.5 is out of range 0..1000000000000.0")


@pytest.mark.parametrize("field,lo,hi", [
    ("uptime_s", 0, 1e12), ("temperature_c", -273.15, 1000), ("interval_s", None, 86400.0),
])
def test_heartbeat_numbers_are_inclusive_at_their_limits(field, lo, hi) -> None:
    assert getattr(p.decode_health(raw(health_dict(**{field: hi}))), field) == hi
    if lo is not None:
        assert getattr(p.decode_health(raw(health_dict(**{field: lo}))), field) == lo
        refused(p.decode_health, health_dict(**{field: lo - 0.5}),
                f"field {field!r} = {lo - 0.5} is out of range {lo}..{hi}")
    refused(p.decode_health, health_dict(**{field: hi + 0.5}),
            f"field {field!r} = {hi + 0.5} is out of range {0 if lo is None else lo}..{hi}")


def test_heartbeat_interval_must_be_above_zero_and_seq_starts_at_1() -> None:
    assert p.decode_health(raw(health_dict(interval_s=0.001))).interval_s == 0.001
    refused(p.decode_health, health_dict(interval_s=0), "field 'interval_s' must be > 0")
    assert p.decode_health(raw(health_dict(seq=1))).seq == 1
    refused(p.decode_health, health_dict(seq=0), "field 'seq' = 0 is out of range 1..9007199254740992")
    assert p.decode_health(raw(health_dict(queue_depth=0))).queue_depth == 0


def test_heartbeat_faults_limits() -> None:
    names = tuple(f"f{i}" for i in range(32))
    assert p.decode_health(raw(health_dict(faults=list(names)))).faults == names
    refused(p.decode_health, health_dict(faults=[*names, "x"]),
            "field 'faults' has 33 entries, over 32")
    assert p.decode_health(raw(health_dict(faults=["x" * 64]))).faults == ("x" * 64,)
    refused(p.decode_health, health_dict(faults=["x" * 65]),
            "field 'faults'[0] must be a string of 1..64 characters")
    refused(p.decode_health, health_dict(faults=["ok", ""]),
            "field 'faults'[1] must be a string of 1..64 characters")


# --- every refusal names its problem in one exact line ------------------------------------------


def _alert(**kw) -> bytes:
    return raw(alert_dict(**kw))


EXACT = [
    (p.decode_alert, b"x" * (p.MAX_JSON_BYTES + 1), "payload is 16385 bytes, over the 16384 limit"),
    (p.decode_alert, b"[" * 16_000, "not valid JSON: nested too deeply"),
    (p.decode_alert, b"[1, 2]", "payload must be a JSON object, got list"),
    (p.decode_alert, b'{"type": "alert"}', "field 'v' (protocol version) missing or not an integer"),
    (p.decode_alert, b'{"v": true}', "field 'v' (protocol version) missing or not an integer"),
    (p.decode_alert, b'{"v": 2}', "unsupported protocol version 2 (this side speaks 1)"),
    (p.decode_alert, b'{"v": 1, "type": "cmd"}', "field 'type' must be 'alert', got 'cmd'"),
    (p.decode_alert, b'{"v": 1}', "field 'type' must be 'alert', got None"),
    (p.decode_alert, _alert(site=[1]), "field 'site' must be an object, got list"),
    (p.decode_alert, _alert(kind="drill"), "field 'kind' must be one of emergency, test, got 'drill'"),
    (p.decode_alert, _alert(kind=None), "field 'kind' must be a string, got null"),
    (p.decode_alert, _alert(seq=7.0), "field 'seq' must be an integer, got float"),
    (p.decode_alert, _alert(seq=True), "field 'seq' must be an integer, got bool"),
    (p.decode_alert, _alert(pressed_mono="1"), "field 'pressed_mono' must be a finite number, got str"),
    (p.decode_alert, _alert(pressed_mono=True), "field 'pressed_mono' must be a finite number, got bool"),
    (p.decode_alert, _alert(pressed_mono=10**301), "field 'pressed_mono' must be a finite number, got int"),
    (p.decode_alert, _alert(escalated=1), "field 'escalated' must be true or false, got int"),
    (p.decode_alert, _alert(alert_id="x"), "field 'alert_id' is not a UUID: 'x'"),
    (p.decode_alert, _alert(device_id="PB-X"), "field 'device_id' is not a valid device id: 'PB-X'"),
    (p.decode_alert, _alert(device_id=5), "field 'device_id' must be a string, got int"),
    (p.decode_cmd, raw(cmd_dict(cmd="explode")),
     "unknown cmd 'explode' (expected one of ack, dispatched, end, selftest, extend, receipt, "
     "nack, evidence_complete)"),
    (p.decode_cmd, raw(cmd_dict(cmd="c" * 25)), "field 'cmd' is longer than 24 characters"),
    (p.decode_cmd, raw(cmd_dict(cmd="nack", ranges="0-9")),
     "field 'ranges' must be a non-empty list, got str"),
    (p.decode_cmd, raw(cmd_dict(cmd="nack", ranges=[[True, 1]])),
     "field 'ranges'[0] must be [first, last] media seqs"),
    (p.decode_cmd, raw(cmd_dict(cmd="nack", ranges=[[0, 1.0]])),
     "field 'ranges'[0] must be [first, last] media seqs"),
    (p.decode_cmd, raw(cmd_dict(cmd="nack", ranges=[0, 1])),
     "field 'ranges'[0] must be [first, last] media seqs"),
    (p.decode_event, raw({"v": 1, "type": "event", "device_id": DEVICE, "kind": "k", "at": "t",
                          "detail": []}), "field 'detail' must be an object, got list"),
    (p.decode_health, raw(health_dict(faults="camera")), "field 'faults' must be a list, got str"),
    (p.decode_health, raw(health_dict(selftest_ok=1)),
     "field 'selftest_ok' must be true, false or null, got int"),
    (p.decode_health, raw(health_dict(at="yesterday")),
     "field 'at' is not an ISO 8601 timestamp: 'yesterday'"),
    (p.decode_health, raw(health_dict(online_since="soon")),
     "field 'online_since' is not an ISO 8601 timestamp: 'soon'"),
    (p.decode_health, raw(health_dict(last_selftest="x" * 41)),
     "field 'last_selftest' is longer than 40 characters"),
]


@pytest.mark.parametrize("decode,payload,reason", EXACT)
def test_each_refusal_is_one_exact_line(decode, payload, reason) -> None:
    with pytest.raises(p.ProtocolError) as info:
        decode(payload)
    assert str(info.value) == reason


def test_a_payload_of_exactly_16_kib_is_read() -> None:
    d = alert_dict()
    base = len(raw(d))
    d["pad"] = "x" * (p.MAX_JSON_BYTES - base - len(', "pad": ""'))
    payload = raw(d)
    assert len(payload) == p.MAX_JSON_BYTES
    assert p.decode_alert(payload) == make_alert()
    assert p.decode_alert(payload.decode()) == make_alert(), "str payloads are taken as UTF-8"


def test_a_payload_must_come_from_the_device_of_its_topic() -> None:
    refused(p.decode_alert, alert_dict(), f"device id {DEVICE!r} in payload does not match topic "
            "device 'pb-other'", topic_device="pb-other")


def test_invalid_json_says_where() -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_status(b"{nope")
    assert str(info.value).startswith("not valid JSON: Expecting property name")


def test_topics_are_built_and_parsed_exactly() -> None:
    assert p.topic(DEVICE, "alert") == f"pinkbutton/v1/dev/{DEVICE}/alert"
    assert p.media_topic(DEVICE, ALERT_ID) == f"pinkbutton/v1/dev/{DEVICE}/media/{ALERT_ID}"
    assert p.parse_topic(f"pinkbutton/v1/dev/{DEVICE}/media/{ALERT_ID}").rest == ALERT_ID
    assert p.parse_topic(f"pinkbutton/v1/dev/{DEVICE}/cmd").rest == ""
    for name, reason in [
        ("x/alert", "topic 'x/alert' is not under pinkbutton/v1/dev/"),
        ("pinkbutton/v1/dev/A/alert", "topic 'pinkbutton/v1/dev/A/alert' has no valid device id"),
        ("pinkbutton/v1/dev/pb-1", "topic 'pinkbutton/v1/dev/pb-1' has no valid device id"),
        (f"pinkbutton/v1/dev/{DEVICE}/media",
         f"topic 'pinkbutton/v1/dev/{DEVICE}/media' is not a protocol v1 topic"),
        (f"pinkbutton/v1/dev/{DEVICE}/alert/x",
         f"topic 'pinkbutton/v1/dev/{DEVICE}/alert/x' is not a protocol v1 topic"),
    ]:
        with pytest.raises(p.ProtocolError) as info:
            p.parse_topic(name)
        assert str(info.value) == reason


# --- more limits at their edges ---------------------------------------------------------------


def test_a_huge_number_is_out_of_range_and_only_a_non_float_one_is_not_a_number() -> None:
    refused(p.decode_alert, alert_dict(pressed_mono=1e300),
            "field 'pressed_mono' = 1e+300 is out of range 0..1000000000000.0")
    refused(p.decode_alert, alert_dict(pressed_mono=10**300),
            f"field 'pressed_mono' = {10**300} is out of range 0..1000000000000.0")


def test_a_uuid_is_at_most_36_characters_even_in_a_form_python_would_parse() -> None:
    refused(p.decode_alert, alert_dict(alert_id="{" + ALERT_ID),
            "field 'alert_id' is longer than 36 characters")
    refused(p.decode_alert, alert_dict(alert_id="urn:uuid:" + ALERT_ID),
            "field 'alert_id' is longer than 36 characters")


def test_a_device_id_is_at_most_63_characters() -> None:
    longest = "pb" + "x" * 61
    assert p.decode_alert(raw(alert_dict(device_id=longest))).device_id == longest
    refused(p.decode_alert, alert_dict(device_id=longest + "x"),
            "field 'device_id' is longer than 63 characters")


def test_a_signature_with_a_character_outside_base64_does_not_verify() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    body = json.loads(p.encode_alert(make_alert(), key))
    assert p.verify_alert(raw(body), key.public_key())
    body["signature"] = body["signature"][:8] + "!" + body["signature"][8:]
    assert not p.verify_alert(raw(body), key.public_key())


def test_a_nack_survives_encoding_and_other_cmds_carry_no_ranges() -> None:
    c = p.Cmd("nack", CMD_ID, "t", ALERT_ID, ranges=((1, 5), (9, 9)))
    assert json.loads(p.encode_cmd(c))["ranges"] == [[1, 5], [9, 9]]
    assert p.decode_cmd(p.encode_cmd(c)) == c
    assert "ranges" not in json.loads(p.encode_cmd(p.Cmd("ack", CMD_ID, "t", ALERT_ID)))


@pytest.mark.parametrize("decode,make,field,limit", [
    (p.decode_cmd, cmd_dict, "sent_at", 40),
    (p.decode_status, lambda **kw: {"v": 1, "type": "status", "device_id": DEVICE,
                                    "online": True, "state": "idle", "firmware": "f", **kw},
     "firmware", 32),
    (p.decode_event, lambda **kw: {"v": 1, "type": "event", "device_id": DEVICE, "kind": "k",
                                   "at": "t", **kw}, "kind", 64),
    (p.decode_event, lambda **kw: {"v": 1, "type": "event", "device_id": DEVICE, "kind": "k",
                                   "at": "t", **kw}, "at", 40),
    (p.decode_health, health_dict, "firmware", 32),
])
def test_strings_are_taken_up_to_their_limit(decode, make, field, limit) -> None:
    assert getattr(decode(raw(make(**{field: "x" * limit}))), field) == "x" * limit
    refused(decode, make(**{field: "x" * (limit + 1)}),
            f"field {field!r} is longer than {limit} characters")


def test_an_event_without_detail_has_an_empty_one() -> None:
    e = p.decode_event(raw({"v": 1, "type": "event", "device_id": DEVICE, "kind": "k", "at": "t"}))
    assert e == p.DeviceEvent(DEVICE, "k", "t", {})


def test_a_one_character_fault_name_is_valid() -> None:
    assert p.decode_health(raw(health_dict(faults=["x"]))).faults == ("x",)


# --- salvage_alert: what the room reads of a refused alert body ---------------------------------


def salvaged(payload, device: str = DEVICE) -> p.SalvagedAlert:
    return p.salvage_alert(payload, topic_device=device)


def test_salvage_reads_every_field_at_its_limits_and_finds_nothing_wrong() -> None:
    follows = "11111111-1111-4111-8111-111111111111"
    body = alert_dict(seq=1, pressed_mono=1e12, age_ms=0, announce=1_000_000, presses=1,
                      escalated=True, follows=follows, signature="s" * p.MAX_SIGNATURE)
    s = salvaged(raw(body))
    assert s.problems == () and s.alert_id_known
    assert s.alert == make_alert(seq=1, pressed_mono=1e12, age_ms=0, announce=1_000_000,
                                 presses=1, escalated=True, follows=follows,
                                 signature="s" * p.MAX_SIGNATURE)
    s = salvaged(raw(alert_dict(pressed_mono=0)))
    assert s.alert.pressed_mono == 0 and s.problems == () and s.alert.signature is None


def test_salvage_falls_back_field_by_field_and_names_each_problem_exactly() -> None:
    body = alert_dict(seq=0, age_ms=-1, announce=0, presses=0, escalated="yes",
                      pressed_mono=1e12 + 1, kind="drill", firmware="f" * 33, pressed_at=5,
                      follows="nope", type="cmd", signature=7, site=[1])
    s = salvaged(raw(body))
    assert s.alert_id_known and s.alert.alert_id == ALERT_ID
    a = s.alert
    assert (a.seq, a.age_ms, a.announce, a.presses, a.escalated, a.pressed_mono) == (
        None, None, 1, 1, False, None)
    assert (a.kind, a.firmware, a.pressed_at, a.follows, a.signature) == (
        "emergency", "f" * 32, "", None, None)
    assert a.site == p.Site("", "", None, None)
    assert s.problems == (
        "field 'type' must be 'alert', got 'cmd'",
        "field 'kind' must be one of emergency, test, got 'drill': taken as emergency",
        "field 'site' must be an object, got list",
        "field 'seq' = 0 is out of range 1..9007199254740992",
        "field 'pressed_at' must be a string, got int",
        "field 'pressed_mono' = 1000000000001.0 is out of range 0..1000000000000.0",
        "field 'age_ms' = -1 is out of range 0..9007199254740992",
        "field 'announce' = 0 is out of range 1..1000000",
        "field 'escalated' must be true or false, got str",
        "field 'presses' = 0 is out of range 1..9007199254740992",
        "field 'site.id' must be a string, got null",
        "field 'site.name' must be a string, got null",
        "field 'site.lat' must be a finite number, got null",
        "field 'site.lon' must be a finite number, got null",
        "field 'firmware' is longer than 32 characters",
        "field 'follows' is not a UUID: 'nope'",
        "field 'signature' must be a string, got int",
    )


def test_salvage_of_bodies_that_are_not_alerts_says_exactly_why() -> None:
    assert salvaged(b"[1, 2]").problems == (
        "payload must be a JSON object, got list",
        "no readable alert_id: incident id derived from the body")
    assert salvaged(b"[" * 16_000).problems == (
        "not valid JSON: nested too deeply",
        "no readable alert_id: incident id derived from the body")
    assert salvaged(b'{"type": "alert"}').problems[0] == (
        "field 'v' (protocol version) missing or not an integer")
    over = b"x" * (p.MAX_JSON_BYTES + 1)
    assert salvaged(over).problems == (
        "payload is 16385 bytes, over the 16384 limit: not read",
        "no readable alert_id: incident id derived from the body")


def test_salvage_reads_a_body_of_exactly_16_kib() -> None:
    d = alert_dict(site={**alert_dict()["site"], "name": "n" * 300})
    d["pad"] = ""
    d["pad"] = "x" * (p.MAX_JSON_BYTES - len(raw(d)))
    assert len(raw(d)) == p.MAX_JSON_BYTES
    s = salvaged(raw(d))
    assert s.alert.seq == 7 and s.problems == ("field 'site.name' is longer than 256 characters",)


def test_salvage_of_a_text_payload_with_a_lone_surrogate_never_raises() -> None:
    text = json.dumps(alert_dict(firmware="v\ud8001"), ensure_ascii=False)
    s = salvaged(text)
    assert s.alert.alert_id == ALERT_ID and s.alert.seq == 7
    assert s.alert.firmware == "v\ufffd\ufffd\ufffd1"  # the surrogate's 3 bytes, each replaced
    assert s.problems[0].startswith("not valid UTF-8 (byte ")
    plain = salvaged(json.dumps(alert_dict(firmware="v2")))
    assert plain.problems == () and plain.alert.firmware == "v2"


@pytest.mark.parametrize("shown,value", [
    ("'" + "x" * 38 + "'", "x" * 38),  # repr of 40 characters: shown whole
    ("'" + "x" * 36 + "...", "x" * 39),  # 41: cut to 37 and marked
])
def test_salvage_quotes_a_bad_value_up_to_40_characters(shown, value) -> None:
    s = salvaged(raw(alert_dict(type=value)))
    assert s.problems == (f"field 'type' must be 'alert', got {shown}",)


def test_a_derived_alert_id_depends_on_the_body_not_on_its_key_order() -> None:
    a = salvaged(b'{"v": 1, "type": "alert", "seq": 3, "kind": "x"}').alert.alert_id
    b = salvaged(b'{"kind": "x", "seq": 3, "type": "alert", "v": 1}').alert.alert_id
    assert a == b
    assert salvaged(b"[1, 2]").alert.alert_id != salvaged(b"null").alert.alert_id
    assert salvaged(b"{}").alert.alert_id != salvaged(b"{ }").alert.alert_id


def test_a_derived_alert_id_is_fixed_for_a_given_body() -> None:
    """Stored incidents fold retries by it, across room restarts and versions."""
    body = json.dumps({"v": 1, "type": "alert", "alert_id": "nope", "site": {"name": "قصہ"}},
                      ensure_ascii=False).encode()
    assert salvaged(body).alert.alert_id == "4d32e244-7f64-52c1-a959-2393fdc76070"
    assert salvaged(b"[1, 2]").alert.alert_id == "3797ce45-86c9-5834-ae51-70d4a81b6e1b"


def test_a_derived_alert_id_is_the_one_docs_protocol_md_describes() -> None:
    """Another implementation of the room can compute it from the doc alone."""
    ns = uuid.uuid5(uuid.NAMESPACE_URL, "pinkbutton:v1:salvaged-alert")
    obj = {"v": 1, "type": "alert", "alert_id": "nope", "announce": 3, "presses": 2,
           "sent_at": "x", "site": {"name": "قصہ \ud800"}}
    basis = json.dumps({k: v for k, v in obj.items() if k not in ("announce", "presses", "sent_at")},
                       sort_keys=True, ensure_ascii=True)
    body = json.dumps(obj).encode()
    assert salvaged(body).alert.alert_id == str(uuid.uuid5(ns, f"{DEVICE}\n{basis}"))
    assert salvaged(b"[1, 2]").alert.alert_id == str(uuid.uuid5(ns, f"{DEVICE}\n{b'[1, 2]'.hex()}"))
