"""Protocol v1 codecs: round trips, strict rejection with a reason, signatures, fuzzing."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pinkbutton.firmware import protocol as p

DEVICE = "pb-test-0001"
ALERT_ID = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
CMD_ID = "9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def make_alert(**overrides) -> p.Alert:
    fields = dict(
        device_id=DEVICE,
        alert_id=ALERT_ID,
        seq=7,
        kind="emergency",
        pressed_at="2026-11-23T09:31:54.123Z",
        pressed_mono=1234.5,
        age_ms=12,
        announce=1,
        escalated=False,
        presses=1,
        site=p.Site("psh-qk", "Qissa Khwani Bazaar", 34.0079, 71.5785),
        firmware="0.1.0",
        sent_at="2026-11-23T09:31:54.135Z",
    )
    fields.update(overrides)
    return p.Alert(**fields)


def alert_dict(**overrides) -> dict:
    d = json.loads(p.encode_alert(make_alert()))
    d.update(overrides)
    return d


def cmd_dict(**overrides) -> dict:
    d = json.loads(p.encode_cmd(p.Cmd("ack", CMD_ID, "2026-11-23T09:32:00Z", ALERT_ID, "op")))
    d.update(overrides)
    return d


def status_dict(**overrides) -> dict:
    d = json.loads(p.encode_status(p.Status(DEVICE, True, "idle", "0.1.0", "2026-11-23T09:00Z")))
    d.update(overrides)
    return d


def event_dict(**overrides) -> dict:
    d = json.loads(p.encode_event(p.DeviceEvent(DEVICE, "selftest", "2026-11-23T09:00Z", {})))
    d.update(overrides)
    return d


def raw(d: dict) -> bytes:
    return json.dumps(d).encode()


def reject(decode, payload, *words: str, **kw) -> str:
    with pytest.raises(p.ProtocolError) as info:
        decode(payload, **kw)
    reason = str(info.value)
    assert "\n" not in reason
    for word in words:
        assert word in reason, f"{word!r} not in {reason!r}"
    return reason


# -- round trips ---------------------------------------------------------------


def test_alert_round_trip_keeps_every_field():
    a = make_alert(announce=3, escalated=True, presses=4, follows=str(uuid.uuid4()))
    assert p.decode_alert(p.encode_alert(a), topic_device=DEVICE) == a


def test_signed_alert_round_trip_carries_signature():
    key = ec.generate_private_key(ec.SECP256R1())
    decoded = p.decode_alert(p.encode_alert(make_alert(), key))
    assert decoded.signature and decoded == make_alert(signature=decoded.signature)


def test_alert_encoding_is_canonical_json():
    payload = p.encode_alert(make_alert())
    obj = json.loads(payload)
    assert payload == json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    assert obj["v"] == 1 and obj["type"] == "alert" and "signature" not in obj


@pytest.mark.parametrize(
    "cmd",
    [
        p.Cmd("ack", CMD_ID, "2026-11-23T09:32:00Z", ALERT_ID, "officer-1"),
        p.Cmd("dispatched", CMD_ID, "t", ALERT_ID),
        p.Cmd("end", CMD_ID, "t", ALERT_ID),
        p.Cmd("selftest", CMD_ID, "t"),
        p.Cmd("extend", CMD_ID, "t", ALERT_ID, "officer-2", 90.0),
    ],
)
def test_cmd_round_trip(cmd):
    assert p.decode_cmd(p.encode_cmd(cmd)) == cmd


@pytest.mark.parametrize("online", [True, False])
def test_status_round_trip(online):
    s = p.Status(DEVICE, online, "offline" if not online else "idle", "0.1.0", "2026-11-23T09:00Z")
    assert p.decode_status(p.encode_status(s), topic_device=DEVICE) == s


def test_event_round_trip_with_detail():
    e = p.DeviceEvent(DEVICE, "fault", "2026-11-23T09:00Z", {"name": "button_stuck", "n": [1, 2]})
    assert p.decode_event(p.encode_event(e), topic_device=DEVICE) == e


def test_unknown_extra_fields_are_ignored_so_v1_can_grow():
    assert p.decode_alert(raw(alert_dict(battery_v=3.9))) == make_alert()
    assert p.decode_cmd(raw(cmd_dict(priority="high"))).cmd == "ack"


def test_uuid_is_normalised_to_lowercase_canonical_form():
    got = p.decode_alert(raw(alert_dict(alert_id=ALERT_ID.upper())))
    assert got.alert_id == ALERT_ID


# -- strict rejection ------------------------------------------------------------


def test_rejects_bad_json():
    reject(p.decode_alert, b"{not json", "not valid JSON")
    reject(p.decode_cmd, b"\xff\xfe\x00", "not valid JSON")


@pytest.mark.parametrize("payload", [b"[]", b"42", b'"alert"', b"null"])
def test_rejects_non_object(payload):
    reject(p.decode_alert, payload, "JSON object")


def test_rejects_oversize_payload_before_parsing():
    big = raw(alert_dict(pad="x" * p.MAX_JSON_BYTES))
    assert len(big) > 16 * 1024
    reject(p.decode_alert, big, "over the 16384 limit")


def test_rejects_deeply_nested_and_huge_numbers_as_protocol_errors():
    reject(p.decode_event, b"[" * 16000, "not valid JSON")
    reject(p.decode_cmd, b'{"v":1,"type":"cmd","x":' + b"1" * 5000 + b"}", "not valid JSON")


def test_rejects_missing_or_unknown_version():
    d = alert_dict()
    del d["v"]
    reject(p.decode_alert, raw(d), "'v'", "missing")
    reject(p.decode_alert, raw(alert_dict(v=2)), "unsupported protocol version 2")
    reject(p.decode_alert, raw(alert_dict(v="1")), "'v'", "not an integer")
    reject(p.decode_alert, raw(alert_dict(v=True)), "'v'")
    reject(p.decode_alert, raw(alert_dict(v=1.0)), "'v'")


@pytest.mark.parametrize(
    "decode,wrong",
    [
        (p.decode_alert, "cmd"),
        (p.decode_cmd, "alert"),
        (p.decode_status, "event"),
        (p.decode_event, "status"),
    ],
)
def test_rejects_wrong_type(decode, wrong):
    reject(decode, raw({"v": 1, "type": wrong}), "'type'", repr(wrong))


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("seq", "7", ("'seq'", "integer", "str")),
        ("seq", True, ("'seq'", "integer", "bool")),
        ("seq", 7.0, ("'seq'", "integer", "float")),
        ("seq", 0, ("'seq'", "out of range")),
        ("age_ms", -1, ("'age_ms'", "out of range")),
        ("announce", False, ("'announce'", "bool")),
        ("presses", None, ("'presses'", "null")),
        ("escalated", 1, ("'escalated'", "true or false")),
        ("pressed_mono", "1.5", ("'pressed_mono'", "finite number")),
        ("pressed_mono", True, ("'pressed_mono'", "finite number")),
        ("kind", "drill", ("'kind'", "emergency, test")),
        ("kind", 3, ("'kind'", "string")),
        ("site", [], ("'site'", "object")),
        ("firmware", "x" * 33, ("'firmware'", "longer than 32")),
        ("device_id", "PB_UPPER", ("'device_id'", "not a valid device id")),
    ],
)
def test_alert_rejects_wrong_field_types_and_values(field, value, words):
    reject(p.decode_alert, raw(alert_dict(**{field: value})), *words)


@pytest.mark.parametrize("literal", [b"NaN", b"Infinity", b"-Infinity", b"1e400"])
def test_alert_rejects_non_finite_numbers(literal):
    payload = raw(alert_dict(pressed_mono=0.5)).replace(
        b'"pressed_mono": 0.5', b'"pressed_mono": ' + literal
    )
    assert literal in payload
    reject(p.decode_alert, payload, "'pressed_mono'", "finite number")


@pytest.mark.parametrize(
    "lat,lon,field",
    [
        (90.5, 0, "'lat'"),
        (-91, 0, "'lat'"),
        (0, 180.01, "'lon'"),
        (0, -181, "'lon'"),
        (10**400, 0, "'lat'"),
        (float("nan"), 0, "'lat'"),
        (0, float("inf"), "'lon'"),
    ],
)
def test_alert_rejects_bad_coordinates(lat, lon, field):
    site = {"id": "s", "name": "n", "lat": lat, "lon": lon}
    reject(p.decode_alert, raw(alert_dict(site=site)), field)


@pytest.mark.parametrize("bad", ["not-a-uuid", "", "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6", 123])
def test_rejects_bad_uuids(bad):
    reject(p.decode_alert, raw(alert_dict(alert_id=bad)), "'alert_id'")
    reject(p.decode_alert, raw(alert_dict(follows=bad)), "'follows'")
    reject(p.decode_cmd, raw(cmd_dict(cmd_id=bad)), "'cmd_id'")
    reject(p.decode_cmd, raw(cmd_dict(alert_id=bad)), "'alert_id'")


def test_rejects_unknown_cmd():
    reject(p.decode_cmd, raw(cmd_dict(cmd="reboot")), "unknown cmd 'reboot'")
    reject(p.decode_cmd, raw(cmd_dict(cmd=5)), "'cmd'", "string")


@pytest.mark.parametrize("kind", ["ack", "dispatched", "end", "extend"])
def test_cmd_about_an_alert_needs_alert_id(kind):
    d = cmd_dict(cmd=kind, extend_s=60)
    del d["alert_id"]
    reject(p.decode_cmd, raw(d), f"cmd {kind!r} needs an alert_id")


@pytest.mark.parametrize("extend_s", [None, 0, 0.0])
def test_extend_needs_positive_extend_s(extend_s):
    reject(p.decode_cmd, raw(cmd_dict(cmd="extend", extend_s=extend_s)), "extend_s")


def test_extend_s_is_bounded():
    reject(p.decode_cmd, raw(cmd_dict(cmd="extend", extend_s=3601)), "'extend_s'", "out of range")
    reject(p.decode_cmd, raw(cmd_dict(cmd="extend", extend_s=-5)), "'extend_s'", "out of range")


def test_payload_device_must_match_topic_device():
    reject(
        p.decode_alert,
        p.encode_alert(make_alert()),
        "does not match topic device",
        topic_device="pb-test-0002",
    )
    status = p.encode_status(p.Status(DEVICE, True, "idle", "0.1.0"))
    reject(p.decode_status, status, "does not match", topic_device="pb-test-0002")
    event = p.encode_event(p.DeviceEvent(DEVICE, "selftest", "t"))
    reject(p.decode_event, event, "does not match", topic_device="pb-test-0002")


def test_status_and_event_field_checks():
    reject(p.decode_status, raw(status_dict(online="yes")), "'online'", "true or false")
    reject(p.decode_status, raw(status_dict(state=None)), "'state'", "string")
    reject(p.decode_event, raw(event_dict(detail=[1])), "'detail'", "object")
    reject(p.decode_event, raw(event_dict(kind=1)), "'kind'", "string")


# -- topics --------------------------------------------------------------------


@pytest.mark.parametrize("leaf", ["alert", "status", "health", "events", "cmd"])
def test_parse_topic_accepts_v1_topics(leaf):
    assert p.parse_topic(p.topic(DEVICE, leaf)) == p.TopicParts(DEVICE, leaf)


def test_parse_topic_accepts_media_topic():
    assert p.parse_topic(p.media_topic(DEVICE, ALERT_ID)) == p.TopicParts(DEVICE, "media", ALERT_ID)


@pytest.mark.parametrize(
    "name,words",
    [
        ("pinkbutton/v2/dev/pb-test-0001/alert", "not under"),
        ("other/v1/dev/pb-test-0001/alert", "not under"),
        ("pinkbutton/v1/dev/PB-UPPER/alert", "no valid device id"),
        ("pinkbutton/v1/dev/pb-test-0001", "no valid device id"),
        ("pinkbutton/v1/dev/pb-test-0001/video", "not a protocol v1 topic"),
        ("pinkbutton/v1/dev/pb-test-0001/alert/extra", "not a protocol v1 topic"),
        ("pinkbutton/v1/dev/pb-test-0001/media", "not a protocol v1 topic"),
        ("pinkbutton/v1/dev/+/alert", "no valid device id"),
    ],
)
def test_parse_topic_rejects_other_topics(name, words):
    reject(lambda n: p.parse_topic(n), name, words)


# -- signatures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def device_key():
    return ec.generate_private_key(ec.SECP256R1())


def test_signed_alert_verifies(device_key):
    payload = p.encode_alert(make_alert(), device_key)
    assert p.verify_alert(payload, device_key.public_key())


def test_signature_verifies_over_received_bytes_whatever_their_formatting(device_key):
    # A relay that re-serialises the JSON (spaces, key order) must not break verification.
    payload = p.encode_alert(make_alert(), device_key)
    reformatted = json.dumps(dict(reversed(list(json.loads(payload).items()))), indent=2)
    assert p.verify_alert(reformatted.encode(), device_key.public_key())


@pytest.mark.parametrize(
    "field,value",
    [
        ("seq", 8),
        ("escalated", True),
        ("kind", "test"),
        ("pressed_at", "2026-11-23T09:00:00Z"),
    ],
)
def test_tampered_alert_fails_verification(device_key, field, value):
    obj = json.loads(p.encode_alert(make_alert(), device_key))
    assert obj[field] != value
    obj[field] = value
    assert not p.verify_alert(raw(obj), device_key.public_key())


def test_tampered_site_fails_verification(device_key):
    obj = json.loads(p.encode_alert(make_alert(), device_key))
    obj["site"]["lat"] = 31.5204
    assert not p.verify_alert(raw(obj), device_key.public_key())


def test_another_devices_key_fails_verification(device_key):
    other = ec.generate_private_key(ec.SECP256R1())
    assert not p.verify_alert(p.encode_alert(make_alert(), other), device_key.public_key())


def test_missing_or_garbage_signature_fails_verification(device_key):
    pub = device_key.public_key()
    assert not p.verify_alert(p.encode_alert(make_alert()), pub)
    obj = json.loads(p.encode_alert(make_alert(), device_key))
    for garbage in ["!!not base64!!", "", base64.b64encode(b"\x00" * 64).decode(), 12, None]:
        obj["signature"] = garbage
        assert not p.verify_alert(raw(obj), pub), garbage


@pytest.mark.parametrize("payload", [b"", b"not json", b"[]", b"[" * 20000, b"\xff"])
def test_verify_on_garbage_payload_is_false(device_key, payload):
    assert not p.verify_alert(payload, device_key.public_key())


# -- fuzzing -------------------------------------------------------------------

DECODERS = (p.decode_alert, p.decode_cmd, p.decode_status, p.decode_event)

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from([2**53 + 1, -(10**400)])
    | st.floats()
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner, max_size=5)
    ),
    max_leaves=20,
)

VALID = {
    p.decode_alert: alert_dict(follows=str(uuid.uuid4()), signature="c2ln"),
    p.decode_cmd: cmd_dict(cmd="extend", extend_s=30.0),
    p.decode_status: status_dict(),
    p.decode_event: event_dict(detail={"a": 1}),
}


def only_protocol_errors(decode, payload: bytes) -> None:
    try:
        decode(payload)
    except p.ProtocolError as e:
        assert str(e) and "\n" not in str(e)


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.sampled_from(DECODERS), st.binary(max_size=300))
def test_decoders_on_arbitrary_bytes_raise_only_protocol_errors(decode, payload):
    only_protocol_errors(decode, payload)


@FUZZ
@given(
    st.sampled_from(DECODERS),
    st.dictionaries(st.text(max_size=12), json_values, max_size=8),
    st.booleans(),
)
def test_decoders_on_arbitrary_json_objects_raise_only_protocol_errors(decode, obj, stamp):
    if stamp:  # get past the version/type gate so field checks are exercised too
        obj = {**obj, "v": 1, "type": decode.__name__.removeprefix("decode_")}
    only_protocol_errors(decode, json.dumps(obj).encode())


def as_json(decoded) -> dict:
    """A decoded message as the JSON object it came from (the fields the decoder knows)."""
    from dataclasses import asdict

    return {**asdict(decoded), "v": p.PROTOCOL_VERSION,
            "type": type(decoded).__name__.lower().replace("deviceevent", "event")}


UUID_FIELDS = {"alert_id", "cmd_id", "follows"}


@FUZZ
@given(st.sampled_from(DECODERS), st.data(), json_values)
def test_valid_message_with_one_field_replaced_raises_only_protocol_errors(decode, data, value):
    obj = json.loads(json.dumps(VALID[decode]))
    target = obj
    in_site = decode is p.decode_alert and data.draw(st.booleans(), label="in site")
    if in_site:
        target = obj["site"]
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=8), label="key")
    target[key] = value
    only_protocol_errors(decode, json.dumps(obj).encode())
    try:
        decoded = decode(json.dumps(obj).encode())
    except p.ProtocolError:
        return
    # Accepted: the new value is what was decoded, or (a field the decoder does not know, or
    # `ranges` of a cmd that is not a nack) it changed nothing at all.
    got = as_json(decoded)
    got = got["site"] if in_site else got
    ignored = key not in got or (decode is p.decode_cmd and key == "ranges")
    if ignored:
        assert decoded == decode(raw(VALID[decode]))
    elif key in UUID_FIELDS:
        assert got[key] == str(uuid.UUID(value))
    else:
        assert got[key] == value and (type(got[key]) is bool) == (type(value) is bool)


def test_valid_fuzz_seeds_are_valid():
    # The replaced-field fuzz is only meaningful if its starting points decode, to the values
    # they were made from.
    for decode, obj in VALID.items():
        got = as_json(decode(raw(obj)))
        assert {key: got[key] for key in obj} == obj, decode.__name__
        assert all(got[key] is None for key in set(got) - set(obj)), decode.__name__


def test_signed_fields_are_every_alert_field_but_the_signature():
    from dataclasses import asdict

    a = p.Alert(device_id="pb-x-0001", alert_id="00000000-0000-4000-8000-000000000001", seq=1,
                kind="emergency", pressed_at="2026-11-23T10:00:00.000Z", pressed_mono=1.5,
                age_ms=3, announce=1, escalated=False, presses=1,
                site=p.Site("s1", "Site", 34.0, 71.5), firmware="0.1.0",
                sent_at="2026-11-23T10:00:00.003Z", follows=None, signature="x")
    expected = asdict(a)
    del expected["signature"]
    del expected["auth"]  # None: left out, like an unset signature (issue 14)
    assert a.signed_fields() == {**expected, "v": p.PROTOCOL_VERSION, "type": "alert"}


# -- lone surrogates, device ids, and salvaging what the strict decoder refuses (issue 9) ---------


def test_rejects_a_lone_surrogate_in_any_text_field():
    reject(p.decode_alert, raw(alert_dict(site={**alert_dict()["site"], "name": "a\ud800b"})),
           "'name'", "lone surrogate")
    reject(p.decode_alert, raw(alert_dict(firmware="\udfff")), "'firmware'", "lone surrogate")
    reject(p.decode_status, raw(status_dict(state="idle\udc00")), "'state'", "lone surrogate")
    reject(p.decode_event, raw(event_dict(kind="\ud83d")), "'kind'", "lone surrogate")
    reject(p.decode_cmd, raw(cmd_dict(operator="op\ud800")), "'operator'", "lone surrogate")
    # A proper pair, escaped or raw, is one character and fine.
    name = json.loads('"\\ud83d\\udea8 Bazaar"')
    got = p.decode_alert(raw(alert_dict(site={**alert_dict()["site"], "name": name})))
    assert got.site.name == "\U0001F6A8 Bazaar"


def test_device_id_with_a_trailing_newline_is_not_a_device_id():
    with pytest.raises(p.ProtocolError):
        p.parse_topic(f"{p.TOPIC_ROOT}/pb-test-0001\n/alert")
    reject(p.decode_alert, raw(alert_dict(device_id=DEVICE + "\n")), "not a valid device id")


def salvage(payload: bytes, device: str = DEVICE) -> p.SalvagedAlert:
    s = p.salvage_alert(payload, topic_device=device)
    assert all("\n" not in problem for problem in s.problems)
    return s


def test_salvage_of_a_good_alert_reads_it_all_and_finds_nothing_wrong():
    s = salvage(p.encode_alert(make_alert()))
    assert s.alert == make_alert() and s.problems == () and s.alert_id_known


def test_salvage_keeps_an_over_long_site_name_cut_to_the_limit():
    long = "N" * 300
    s = salvage(raw(alert_dict(site={**alert_dict()["site"], "name": long})))
    assert s.alert.site.name == "N" * p.MAX_SITE_NAME
    assert s.alert.alert_id == ALERT_ID and s.alert_id_known
    assert s.alert.seq == 7 and s.alert.site.lat == 34.0079 and s.alert.kind == "emergency"
    assert s.problems == ("field 'site.name' is longer than 256 characters",)


def test_salvage_replaces_a_lone_surrogate_and_says_so():
    s = salvage(raw(alert_dict(site={**alert_dict()["site"], "name": "Ba\ud800zaar"})))
    assert s.alert.site.name == "Ba\ufffdzaar"
    assert len(s.problems) == 1 and "'site.name'" in s.problems[0]


def test_salvage_reads_an_unknown_version_and_bad_fields_with_placeholders():
    s = salvage(raw(alert_dict(v=2, seq="7", kind="drill", device_id="pb-other-0002",
                               site={"name": "X", "lat": 999, "lon": "east"})))
    assert s.alert.device_id == DEVICE  # the topic, never the body, says who sent it
    assert s.alert.seq is None and s.alert.kind == "emergency"
    assert s.alert.site.name == "X" and s.alert.site.lat is None and s.alert.site.lon is None
    text = " | ".join(s.problems)
    for word in ("unsupported protocol version 2", "'seq'", "'kind'", "does not match topic",
                 "'site.id'", "'site.lat'", "'site.lon'"):
        assert word in text, (word, text)


@pytest.mark.parametrize("payload", [b"\x00\xffnot json", b"[1, 2]", b"null", b'{"v": 1, "type": "alert"}',
                                     b"{" * 20000, b"x" * (p.MAX_JSON_BYTES + 1)])
def test_salvage_of_unreadable_bodies_derives_a_stable_id(payload):
    s = salvage(payload)
    assert not s.alert_id_known and len(s.problems) >= 2  # what was wrong, and the derived id
    assert str(uuid.UUID(s.alert.alert_id)) == s.alert.alert_id
    assert salvage(payload).alert.alert_id == s.alert.alert_id  # a retry folds into it
    assert salvage(payload, "pb-test-0002").alert.alert_id != s.alert.alert_id
    assert s.alert.device_id == DEVICE and s.alert.kind == "emergency"


def test_salvage_id_ignores_what_changes_between_announcements():
    first = alert_dict(alert_id="nope")
    again = alert_dict(alert_id="nope", announce=2, escalated=True, age_ms=30000,
                       sent_at="2026-11-23T09:32:24.132Z", presses=2)
    assert salvage(raw(first)).alert.alert_id == salvage(raw(again)).alert.alert_id
    other = alert_dict(alert_id="nope", seq=8)
    assert salvage(raw(first)).alert.alert_id != salvage(raw(other)).alert.alert_id


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300) | st.builds(lambda d: raw(d), st.dictionaries(
    st.sampled_from(["v", "type", "alert_id", "seq", "site", "kind", "signature", "x"]),
    st.none() | st.booleans() | st.integers() | st.text(max_size=20)
    | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=4),
    max_size=8)))
def test_salvage_never_raises(payload):
    s = p.salvage_alert(payload, topic_device=DEVICE)
    assert s.alert.device_id == DEVICE and uuid.UUID(s.alert.alert_id)
    for text in (s.alert.site.name, s.alert.site.id, s.alert.firmware, s.alert.pressed_at):
        text.encode("utf-8")  # storable: no lone surrogate left
