"""The real mosquitto enforces identity (mTLS) and per-device topics (ACL from the cert CN).

Negative delivery checks avoid sleeps: after the message that must NOT arrive, the same
publisher sends a marker that must arrive; mosquitto forwards one connection's messages in
order, so once the marker is in, the forbidden message would already have been seen.
"""

from __future__ import annotations

import datetime as dt
import queue
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pinkbutton.tools.pki import Issued, ca_paths, device_paths, init_ca, issue

from harness.broker import BrokerError, Mosquitto, free_port, write_broker_config

pytestmark = pytest.mark.broker

DEV1, DEV2 = "pb-test-0001", "pb-test-0002"
NOT_AUTHORIZED = 135


def topic(device_id: str, leaf: str) -> str:
    return f"pinkbutton/v1/dev/{device_id}/{leaf}"


class Inbox:
    """Collects messages; on_message runs on paho's network thread and only enqueues."""

    def __init__(self, client: mqtt.Client) -> None:
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        client.on_message = lambda _c, _u, message: self.messages.put(message)

    def until(self, payload: bytes, timeout: float = 5.0) -> list[tuple[str, bytes]]:
        """Everything received up to and including `payload` (fails if it never comes)."""
        seen: list[tuple[str, bytes]] = []
        while True:
            try:
                message = self.messages.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"{payload!r} not received; got {seen}") from None
            seen.append((message.topic, message.payload))
            if message.payload == payload:
                return seen


def subscribe(client: mqtt.Client, topic_filter: str) -> ReasonCode:
    done = threading.Event()
    granted: list[ReasonCode] = []

    def on_subscribe(_c, _u, _mid, reason_codes, _props) -> None:  # paho network thread
        granted.extend(reason_codes)
        done.set()

    client.on_subscribe = on_subscribe
    client.subscribe(topic_filter, qos=1)
    assert done.wait(5), f"no SUBACK for {topic_filter}"
    return granted[0]


def publish_qos1(client: mqtt.Client, topic_name: str, payload: bytes) -> ReasonCode:
    """Publish and return the PUBACK reason code (a denied publish still 'completes')."""
    acks: dict[int, ReasonCode] = {}
    acked = threading.Condition()

    def on_publish(_c, _u, mid, reason_code, _props) -> None:  # paho network thread
        with acked:
            acks[mid] = reason_code
            acked.notify_all()

    client.on_publish = on_publish
    info = client.publish(topic_name, payload, qos=1)
    with acked:
        assert acked.wait_for(lambda: info.mid in acks, timeout=5), f"no PUBACK for {topic_name}"
        return acks[info.mid]


def token() -> bytes:
    return secrets.token_hex(8).encode()


# --- authorization (ACL) -----------------------------------------------------------------------


def test_device_alert_reaches_control_room_through_shared_subscription(
    pki_dir: Path, fresh_broker: Mosquitto, mqtt_client
) -> None:
    # Own broker: a control room elsewhere in the session joining the same share group
    # would legitimately take half of the messages.
    room = mqtt_client(pki_dir, "controlroom", fresh_broker)
    inbox = Inbox(room)
    granted = subscribe(room, "$share/controlroom/pinkbutton/v1/dev/+/alert")
    assert not granted.is_failure, granted
    device = mqtt_client(pki_dir, DEV1, fresh_broker)

    payload = token()
    reason = publish_qos1(device, topic(DEV1, "alert"), payload)
    assert reason.value == 0, reason
    assert inbox.until(payload) == [(topic(DEV1, "alert"), payload)]


@pytest.mark.parametrize(
    "target",
    [
        topic(DEV2, "alert"),
        topic(DEV2, "media/0b5e2c1e"),
        topic(DEV2, "status"),
        topic(DEV1, "cmd"),  # a device may not command itself (or look like the room)
        topic("controlroom", "alert"),
        "somewhere/else",
    ],
)
def test_device_publish_outside_its_own_topics_is_refused_and_not_delivered(
    pki_dir: Path, broker: Mosquitto, mqtt_client, target: str
) -> None:
    room = mqtt_client(pki_dir, "controlroom", broker)
    inbox = Inbox(room)
    subscribe(room, "pinkbutton/v1/dev/#")
    device = mqtt_client(pki_dir, DEV1, broker)

    forbidden = token()
    reason = publish_qos1(device, target, forbidden)
    assert reason.value == NOT_AUTHORIZED, reason
    marker = token()
    assert publish_qos1(device, topic(DEV1, "events"), marker).value == 0
    assert forbidden not in [p for _, p in inbox.until(marker)]


def test_control_room_cannot_publish_as_a_device(
    pki_dir: Path, broker: Mosquitto, mqtt_client
) -> None:
    room = mqtt_client(pki_dir, "controlroom", broker)
    assert publish_qos1(room, topic(DEV1, "alert"), token()).value == NOT_AUTHORIZED
    assert publish_qos1(room, topic(DEV1, "status"), token()).value == NOT_AUTHORIZED


def test_device_cannot_read_another_devices_commands(
    pki_dir: Path, broker: Mosquitto, mqtt_client
) -> None:
    snoop = mqtt_client(pki_dir, DEV1, broker)
    snoop_inbox = Inbox(snoop)
    # mosquitto 2.0's acl_file does not check SUBSCRIBE at all (FIXME in its source), so the
    # SUBACK may grant; the ACL is enforced when messages are delivered. Either is acceptable
    # as long as nothing arrives.
    subscribe(snoop, topic(DEV2, "cmd"))
    subscribe(snoop, "pinkbutton/v1/dev/+/cmd")
    subscribe(snoop, "$share/snoop/pinkbutton/v1/dev/+/cmd")
    subscribe(snoop, "#")
    target = mqtt_client(pki_dir, DEV2, broker)
    target_inbox = Inbox(target)
    assert not subscribe(target, topic(DEV2, "cmd")).is_failure
    room = mqtt_client(pki_dir, "controlroom", broker)

    secret_cmd = token()
    assert publish_qos1(room, topic(DEV2, "cmd"), secret_cmd).value == 0
    assert target_inbox.until(secret_cmd) == [(topic(DEV2, "cmd"), secret_cmd)]

    marker = token()
    assert publish_qos1(room, topic(DEV1, "cmd"), marker).value == 0
    received = snoop_inbox.until(marker)
    assert secret_cmd not in [p for _, p in received]
    assert {t for t, _ in received} == {topic(DEV1, "cmd")}


def test_control_room_command_reaches_only_the_target_device(
    pki_dir: Path, broker: Mosquitto, mqtt_client
) -> None:
    inboxes = {}
    for device_id in (DEV1, DEV2, "pb-test-0003"):
        device = mqtt_client(pki_dir, device_id, broker)
        inboxes[device_id] = Inbox(device)
        assert not subscribe(device, topic(device_id, "cmd")).is_failure
    room = mqtt_client(pki_dir, "controlroom", broker)

    command = b'{"type":"ack","id":"%s"}' % token()
    assert publish_qos1(room, topic(DEV2, "cmd"), command).value == 0
    assert inboxes[DEV2].until(command) == [(topic(DEV2, "cmd"), command)]
    for other in (DEV1, "pb-test-0003"):
        marker = token()
        assert publish_qos1(room, topic(other, "cmd"), marker).value == 0
        assert inboxes[other].until(marker) == [(topic(other, "cmd"), marker)]


# --- authentication (mTLS) ---------------------------------------------------------------------


def attempt_connect(ca_file: Path, identity: Issued, broker: Mosquitto) -> str:
    """Try a full MQTT connect; report 'accepted', 'refused: ...' or 'closed: ...'."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"intruder-{secrets.token_hex(4)}",
        protocol=mqtt.MQTTv5,
    )
    client.tls_set(ca_certs=str(ca_file), certfile=str(identity.cert), keyfile=str(identity.key))
    outcome: queue.Queue[str] = queue.Queue()
    client.on_connect = lambda _c, _u, _f, rc, _p: outcome.put(
        f"refused: {rc}" if rc.is_failure else "accepted"
    )
    client.on_disconnect = lambda _c, _u, _f, rc, _p: outcome.put(f"closed: {rc}")
    try:
        # TLS 1.2 fails inside the handshake; TLS 1.3 finishes it and the broker closes after.
        client.connect(broker.host, broker.port)
        # Drive the loop here rather than in paho's thread, which would sleep before retrying.
        deadline = time.monotonic() + 5
        while outcome.empty() and time.monotonic() < deadline:
            client.loop(timeout=0.05)
    except ssl.SSLError as exc:
        return f"closed: {exc}"
    finally:
        client.disconnect()
    return outcome.get_nowait() if not outcome.empty() else "no answer"


def log_size(broker: Mosquitto) -> int:
    return broker.log_path.stat().st_size


def log_since(broker: Mosquitto, offset: int, timeout: float = 2.0) -> str:
    """Broker log written after `offset`; waits briefly because mosquitto logs asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        with open(broker.log_path, "rb") as log:
            log.seek(offset)
            text = log.read().decode(errors="replace")
        if "certificate verify failed" in text or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def test_valid_device_certificate_is_accepted(pki_dir: Path, broker: Mosquitto) -> None:
    # the positive control for the refusals below: same helper, good credentials
    assert (
        attempt_connect(ca_paths(pki_dir).cert, device_paths(pki_dir, DEV1), broker) == "accepted"
    )


def test_certificate_from_a_foreign_ca_is_refused(
    pki_dir: Path, broker: Mosquitto, tmp_path: Path
) -> None:
    foreign_ca = init_ca(tmp_path / "foreign", common_name="Pink Button Dev CA")
    impostor = issue(tmp_path, DEV1, kind="client", out_dir=tmp_path / "impostor", ca=foreign_ca)
    log_start = log_size(broker)
    result = attempt_connect(ca_paths(pki_dir).cert, impostor, broker)
    assert result.startswith("closed:"), result
    assert "certificate verify failed" in log_since(broker, log_start)


@pytest.mark.parametrize("window", ["expired", "not yet valid"])
def test_certificate_outside_its_validity_is_refused(
    pki_dir: Path, broker: Mosquitto, tmp_path: Path, window: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    if window == "expired":
        start, end = now - dt.timedelta(days=30), now - dt.timedelta(days=1)
    else:
        start, end = now + dt.timedelta(days=1), now + dt.timedelta(days=30)
    cert = issue(pki_dir, DEV1, kind="client", out_dir=tmp_path, not_before=start, not_after=end)
    log_start = log_size(broker)
    result = attempt_connect(ca_paths(pki_dir).cert, cert, broker)
    assert result.startswith("closed:"), result
    assert "certificate verify failed" in log_since(broker, log_start)


def test_client_that_trusts_another_ca_refuses_the_broker(
    pki_dir: Path, broker: Mosquitto, tmp_path: Path
) -> None:
    other_ca = init_ca(tmp_path / "other", common_name="Pink Button Dev CA")
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    device = device_paths(pki_dir, DEV1)
    client.tls_set(ca_certs=str(other_ca.cert), certfile=str(device.cert), keyfile=str(device.key))
    with pytest.raises(ssl.SSLCertVerificationError):
        client.connect(broker.host, broker.port)


# --- the harness itself (harness/broker.py) -------------------------------------------------------


def test_restart_keeps_port_and_persistent_sessions(
    pki_dir: Path, fresh_broker: Mosquitto, mqtt_client
) -> None:
    session = Properties(PacketTypes.CONNECT)
    session.SessionExpiryInterval = 300
    device = mqtt_client(
        pki_dir, DEV1, fresh_broker, client_id="acl-restart", clean_start=False, properties=session
    )
    assert not subscribe(device, topic(DEV1, "cmd")).is_failure
    device.disconnect()
    device.loop_stop()

    room = mqtt_client(pki_dir, "controlroom", fresh_broker)
    queued = token()
    assert publish_qos1(room, topic(DEV1, "cmd"), queued).value == 0
    room.disconnect()
    room.loop_stop()

    port = fresh_broker.port
    fresh_broker.restart()  # SIGTERM: mosquitto saves its database on the way out
    assert fresh_broker.port == port

    # The queued command must be there at CONNACK; set on_message before connecting.
    inbox_ready = queue.Queue()
    back = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="acl-restart", protocol=mqtt.MQTTv5)
    paths = device_paths(pki_dir, DEV1)
    back.tls_set(
        ca_certs=str(ca_paths(pki_dir).cert), certfile=str(paths.cert), keyfile=str(paths.key)
    )
    back.on_message = lambda _c, _u, message: inbox_ready.put(message.payload)
    back.connect(fresh_broker.host, fresh_broker.port, clean_start=False, properties=session)
    back.loop_start()
    try:
        assert inbox_ready.get(timeout=5) == queued
    finally:
        back.disconnect()
        back.loop_stop()


def test_kill_then_start_again(pki_dir: Path, fresh_broker: Mosquitto, mqtt_client) -> None:
    pid = fresh_broker.pid
    fresh_broker.kill()
    assert not fresh_broker.running
    fresh_broker.start()
    assert fresh_broker.running and fresh_broker.pid != pid
    mqtt_client(pki_dir, DEV1, fresh_broker)  # raises unless CONNACK success


def test_port_in_use_is_refused_before_starting(
    pki_dir: Path, broker: Mosquitto, tmp_path: Path
) -> None:
    squatter = Mosquitto(tmp_path / "second", pki_dir, port=broker.port)
    with pytest.raises(BrokerError, match=f"port {broker.port} .* already in use"):
        squatter.start(timeout=5)
    assert not squatter.running


def test_broker_that_dies_at_startup_reports_mosquittos_own_words(
    pki_dir: Path, tmp_path: Path
) -> None:
    broken_pki = tmp_path / "pki"
    shutil.copytree(pki_dir, broken_pki)
    (broken_pki / "pinkbutton-broker.key").write_text("not a key\n")
    dead = Mosquitto(tmp_path / "work", broken_pki)
    with pytest.raises(BrokerError, match="exited with code") as failure:
        dead.start(timeout=5)
    assert "key" in str(failure.value).split("\n", 1)[1].lower()  # the log tail follows
    assert not dead.running


def test_missing_pki_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match="pinkbutton-pki init"):
        write_broker_config(tmp_path / "work", tmp_path / "no-pki", free_port())


def test_cli_runs_in_foreground_prints_port_and_stops_on_sigterm(
    pki_dir: Path, tmp_path: Path, mqtt_client
) -> None:
    repo_root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "harness.broker",
            "run",
            "--pki",
            str(pki_dir),
            "--dir",
            str(tmp_path),
        ],
        cwd=repo_root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        port = int(proc.stdout.readline())
        running = Mosquitto(tmp_path, pki_dir, port)  # only used for host/port here
        mqtt_client(pki_dir, DEV1, running)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "u'pb-test-0001'" in (tmp_path / "mosquitto.log").read_text()
        with pytest.raises(ConnectionRefusedError):  # mosquitto went down with the CLI
            socket.create_connection((running.host, port), timeout=2).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_cli_usage_error_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "harness.broker", "run", "--dir", "x"],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
