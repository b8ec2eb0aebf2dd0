"""The `health` heartbeat codec: round trip, strict rejection with a reason, fuzzing."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pinkbutton.firmware import protocol as p

DEVICE = "pb-test-0001"


def make_health(**overrides) -> p.Health:
    fields = dict(
        device_id=DEVICE, seq=3, uptime_s=31.5, interval_s=10.0, state="idle",
        online_since="2026-11-23T09:00:00.000Z", queue_depth=2, disk_free_mb=812.5,
        temperature_c=48.2, last_selftest="2026-11-23T08:59:59.000Z", selftest_ok=True,
        faults=("camera_failed",), firmware="0.1.0", at="2026-11-23T09:00:30.000Z",
        cert_days_left=412,
    )
    fields.update(overrides)
    return p.Health(**fields)


def health_dict(**overrides) -> dict:
    d = json.loads(p.encode_health(make_health()))
    d.update(overrides)
    return d


def reject(obj: dict, *words: str, topic_device: str | None = None) -> None:
    with pytest.raises(p.ProtocolError) as err:
        p.decode_health(json.dumps(obj).encode(), topic_device=topic_device)
    message = str(err.value)
    assert "\n" not in message
    for w in words:
        assert w in message, message


def test_round_trip_keeps_every_field():
    h = make_health()
    assert p.decode_health(p.encode_health(h), topic_device=DEVICE) == h


def test_round_trip_with_unknown_sensors_and_no_selftest():
    h = make_health(online_since=None, disk_free_mb=None, temperature_c=None,
                    last_selftest=None, selftest_ok=None, faults=())
    assert p.decode_health(p.encode_health(h)) == h


def test_encoding_carries_version_and_type():
    d = json.loads(p.encode_health(make_health()))
    assert (d["v"], d["type"]) == (1, "health")
    assert d["faults"] == ["camera_failed"]


def test_site_round_trips_is_optional_and_checked_like_the_alerts():
    site = p.Site("psh-qk", "Qissa Khwani <b>", 34.0079, 71.5785)
    h = make_health(site=site)
    assert p.decode_health(p.encode_health(h)) == h
    assert json.loads(p.encode_health(h))["site"] == {"id": "psh-qk", "lat": 34.0079,
                                                       "lon": 71.5785, "name": "Qissa Khwani <b>"}
    assert p.decode_health(p.encode_health(make_health())).site is None  # null
    reject(health_dict(site="Peshawar"), "site", "object")
    reject(health_dict(site={"id": "x", "name": "y", "lat": 91, "lon": 0}), "lat")
    reject(health_dict(site={"id": "x", "name": "y", "lat": 1}), "lon")


def test_cert_days_left_round_trips_and_is_optional_and_bounded():
    for days in (412, 0, -3, None):
        h = make_health(cert_days_left=days)
        assert p.decode_health(p.encode_health(h)).cert_days_left == days
    old = health_dict()
    del old["cert_days_left"]  # older firmware: no such field
    assert p.decode_health(json.dumps(old).encode()).cert_days_left is None
    reject(health_dict(cert_days_left=12.5), "cert_days_left", "integer")
    reject(health_dict(cert_days_left="30"), "cert_days_left")
    reject(health_dict(cert_days_left=p.MAX_CERT_DAYS + 1), "cert_days_left", "out of range")


def test_health_topic_parses():
    parts = p.parse_topic(p.topic(DEVICE, "health"))
    assert (parts.device_id, parts.leaf) == (DEVICE, "health")


@pytest.mark.parametrize(
    "field,value,words",
    [
        ("interval_s", 0, ("'interval_s'", "> 0")),
        ("interval_s", -1, ("'interval_s'",)),
        ("interval_s", 86401, ("'interval_s'",)),
        ("interval_s", "10", ("'interval_s'",)),
        ("seq", 0, ("'seq'",)),
        ("seq", 1.5, ("'seq'",)),
        ("uptime_s", -0.1, ("'uptime_s'",)),
        ("queue_depth", -1, ("'queue_depth'",)),
        ("queue_depth", True, ("'queue_depth'",)),
        ("temperature_c", -300, ("'temperature_c'",)),
        ("disk_free_mb", "lots", ("'disk_free_mb'",)),
        ("faults", "camera_failed", ("'faults'", "list")),
        ("faults", [1], ("'faults'[0]",)),
        ("faults", [""], ("'faults'[0]",)),
        ("faults", ["x" * 65], ("'faults'[0]",)),
        ("faults", ["f"] * 33, ("'faults'", "over 32")),
        ("selftest_ok", 1, ("'selftest_ok'", "true, false or null")),
        ("selftest_ok", "yes", ("'selftest_ok'",)),
        ("at", "yesterday", ("'at'", "ISO 8601")),
        ("at", None, ("'at'",)),
        ("last_selftest", "2026-13-45", ("'last_selftest'", "ISO 8601")),
        ("online_since", 5, ("'online_since'",)),
        ("state", "x" * 33, ("'state'",)),
        ("firmware", None, ("'firmware'",)),
    ],
)
def test_rejects_bad_fields_with_the_field_named(field, value, words):
    reject(health_dict(**{field: value}), *words)


def test_rejects_missing_field_and_wrong_type():
    d = health_dict()
    del d["queue_depth"]
    reject(d, "'queue_depth'")
    reject(health_dict(type="status"), "'type'")


def test_payload_device_must_match_topic_device():
    reject(health_dict(), "pb-test-0002", topic_device="pb-test-0002")


# -- fuzzing ---------------------------------------------------------------------

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.sampled_from([2**53 + 1, -(10**400)])
    | st.floats() | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner,
                                                                   max_size=5),
    max_leaves=20,
)
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def only_protocol_errors(payload: bytes) -> None:
    try:
        p.decode_health(payload)
    except p.ProtocolError as e:
        assert str(e) and "\n" not in str(e)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_on_arbitrary_bytes_raises_only_protocol_errors(payload):
    only_protocol_errors(payload)


@FUZZ
@given(st.dictionaries(st.text(max_size=12), json_values, max_size=8))
def test_decode_on_arbitrary_objects_raises_only_protocol_errors(obj):
    only_protocol_errors(json.dumps({**obj, "v": 1, "type": "health"}).encode())


@FUZZ
@given(st.data(), json_values)
def test_valid_heartbeat_with_one_field_replaced_raises_only_protocol_errors(data, value):
    obj = health_dict()
    key = data.draw(st.sampled_from(sorted(obj)) | st.text(max_size=8), label="key")
    obj[key] = value
    only_protocol_errors(json.dumps(obj).encode())
    try:
        got = p.decode_health(json.dumps(obj).encode())
    except p.ProtocolError:
        return
    # Accepted: the decoded heartbeat carries the new value, or ignored an unknown field.
    if key in p.Health.__dataclass_fields__:
        expected = tuple(value) if key in ("faults", "evidence_pending") else value
        assert getattr(got, key) == expected
        assert (type(getattr(got, key)) is bool) == (type(value) is bool)
    else:
        assert got == make_health()


# docs/protocol.md: the heartbeat fields that are "or null" (and so may be left out).
OPTIONAL = {"online_since", "disk_free_mb", "temperature_c", "last_selftest", "selftest_ok",
            "evidence_pending", "cert_days_left", "site"}
EMPTY = {"evidence_pending": ()}  # what a left-out optional field decodes as (else None)


@FUZZ
@given(st.data())
def test_valid_heartbeat_with_one_field_removed_raises_only_protocol_errors(data):
    obj = health_dict()
    key = data.draw(st.sampled_from(sorted(obj)), label="key")
    del obj[key]
    only_protocol_errors(json.dumps(obj).encode())
    try:
        got = p.decode_health(json.dumps(obj).encode())
    except p.ProtocolError:
        assert key not in OPTIONAL, f"{key} is optional"
        return
    assert key in OPTIONAL, f"{key} is required"
    assert getattr(got, key) == EMPTY.get(key)


@pytest.mark.parametrize("key", sorted(OPTIONAL))
def test_each_optional_heartbeat_field_may_be_left_out(key) -> None:
    obj = health_dict()
    del obj[key]
    assert getattr(p.decode_health(json.dumps(obj).encode()), key) == EMPTY.get(key)




def test_evidence_pending_round_trips_and_is_optional():
    ids = ("3f2a9c1e-1111-4111-8111-111111111111", "3f2a9c1e-2222-4222-8222-222222222222")
    h = make_health(evidence_pending=ids)
    assert json.loads(p.encode_health(h))["evidence_pending"] == list(ids)
    assert p.decode_health(p.encode_health(h)) == h
    older = health_dict()
    del older["evidence_pending"]  # firmware from before the field: nothing pending
    assert p.decode_health(json.dumps(older).encode()).evidence_pending == ()


@pytest.mark.parametrize("value, words", [
    ("3f2a9c1e-1111-4111-8111-111111111111", ["evidence_pending", "list"]),
    (["not-a-uuid"], ["evidence_pending[0]", "UUID"]),
    ([7], ["evidence_pending[0]"]),
    (["3f2a9c1e-1111-4111-8111-111111111111"] * 17, ["evidence_pending", "17", "16"]),
])
def test_evidence_pending_is_checked(value, words):
    reject(health_dict(evidence_pending=value), *words)
