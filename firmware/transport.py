"""MQTT v5 over mutual TLS: the one narrow boundary between Pink Button and the broker.

Used by the kiosk and by the control-room receiver. Note on threads: all paho
callbacks run on this transport's network thread and only turn what happened
into a TransportEvent handed to `on_event` (which must only enqueue). The
owner's thread calls `publish()`, which only queues the packet and wakes the
network thread: that thread alone touches the TLS socket (see `_run`).
"""

from __future__ import annotations

import contextlib
import logging
import random
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pinkbutton.firmware.backoff import Backoff

log = logging.getLogger("pinkbutton.transport")
NO_MATCHING_SUBSCRIBERS = 16  # MQTT v5 PUBACK reason code: the broker has it, nobody subscribed

#: While `hurry()` is on (an alert is waiting), a failed connect is retried after at most
#: this long (equal jitter: half to all of it), whatever the backoff has grown to.
URGENT_RETRY_S = 0.5
#: The network thread's select() timeout. It is woken at once by the socket (the broker
#: spoke) and by paho's socket pair (a publish or stop() queued a packet), so this only
#: paces keepalive bookkeeping: an idle kiosk wakes once a second, not 20 times.
LOOP_TIMEOUT_S = 1.0


# -- events handed to the owner ---------------------------------------------


@dataclass(frozen=True, slots=True)
class Connected:
    session_present: bool
    broker: str = ""  # "host:port" of the broker we are now on


@dataclass(frozen=True, slots=True)
class Disconnected:
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    reason: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The broker's answer to a QoS>=1 publish. ok is False when the broker denied
    it (e.g. reason 135 Not authorized): paho still calls that "published"."""

    mid: int
    ok: bool
    reason: str
    # PUBACK reason 16 "No matching subscribers": the broker has it, but nobody (no control
    # room) was subscribed, so nobody will ever get this copy.
    no_subscribers: bool = False


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    topic: str
    ok: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    retain: bool
    # MQTT v5 subscription identifiers of the subscription(s) that matched (a subscription
    # given as (topic, qos, id)): tells a shared subscription's copy from a direct one's.
    subscription_ids: tuple[int, ...] = ()


TransportEvent = Connected | Disconnected | ConnectFailed | PublishResult | SubscribeResult | Message


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class TransportError(Exception):
    """Cannot even set up the transport (unreadable certificate, bad key...)."""


def make_tls_context(tls: TlsFiles) -> ssl.SSLContext:
    """TLS >= 1.2, broker verified against our CA *and* host name, client cert presented."""
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca))
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(str(tls.cert), str(tls.key))
    except (OSError, ssl.SSLError) as e:
        raise TransportError(f"cannot load TLS files ({tls.ca}, {tls.cert}): {e}") from None
    return ctx


# OpenSSL verify results that mean "the chain does not lead to the CA we were given": the
# broker's certificate was issued by another CA (a PKI made twice, or the wrong ca.pem).
_OTHER_CA_CODES = frozenset({
    18,  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
    19,  # X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN
    20,  # X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY
    21,  # X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE
})


def describe_connect_error(exc: BaseException, host: str, port: int,
                           ca: Path | None = None) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        why = f"broker {host}:{port} certificate rejected: {exc.verify_message}"
        if exc.verify_code in _OTHER_CA_CODES and ca is not None:
            why += f" (it is signed by a different CA than broker.ca {ca})"
        return why
    if isinstance(exc, ssl.SSLError):
        return f"TLS handshake with {host}:{port} failed: {exc.reason or exc}"
    if isinstance(exc, ConnectionRefusedError):
        return f"broker {host}:{port} refused the connection (not running?)"
    if isinstance(exc, TimeoutError):
        return f"broker {host}:{port} did not answer in time"
    if isinstance(exc, OSError):
        return f"cannot reach broker {host}:{port}: {exc.strerror or exc}"
    return f"cannot connect to {host}:{port}: {exc}"


def _writes_happen_in_loop(client, userdata, sock) -> None:
    """paho's register-write hook: nothing to do, loop() on the network thread writes."""


class MqttTransport:
    """A persistent MQTT v5 session (clean_start false + session expiry) that keeps
    reconnecting with capped, jittered exponential backoff until `stop()`.

    Failover: with `fallbacks`, a connect attempt that fails moves on to the next broker of
    [primary, *fallbacks] at once; the backoff delay applies only after a whole round has
    failed. A connection that was up and then dropped is retried on the same broker first
    (the usual cause is the link, not the broker). `host`/`port` name the current broker.

    Urgency: `hurry(True)` (the kiosk has an alert waiting) makes a disconnected transport try
    at once and then every <= URGENT_RETRY_S, not after the backoff's current delay (up to
    `max_s`, 30 s by default); `hurry(False)` returns to the backoff.

    Dead links: paho sends PINGREQ after `keepalive_s` of silence and drops the connection
    when no PINGRESP comes back within another `keepalive_s`, also when the socket is
    stalled (nothing can be written): a dead link is noticed within ~2x keepalive.
    """

    def __init__(
        self,
        *,
        client_id: str,
        host: str,
        port: int,
        tls: TlsFiles,
        on_event: Callable[[TransportEvent], None],
        subscriptions: Sequence[tuple[str, int] | tuple[str, int, int]] = (),
        will: Will | None = None,
        keepalive_s: int = 30,
        session_expiry_s: int = 86400,
        connect_timeout_s: float = 10.0,
        backoff: Backoff | None = None,
        max_queued: int = 1000,
        fallbacks: Sequence[tuple[str, int]] = (),
    ) -> None:
        self.host, self.port = host, port
        self._brokers = [(host, port), *((h, int(p)) for h, p in fallbacks)]
        self._current = 0
        self._failed_in_round = 0  # consecutive failed attempts since the last connection
        self._on_event = on_event
        self._ca = tls.ca
        self._subscriptions = list(subscriptions)
        self._keepalive = keepalive_s
        self._session_expiry = session_expiry_s
        self._backoff = backoff or Backoff()
        self._stop = threading.Event()
        self._wake = threading.Event()  # stop() or hurry(): end the wait between attempts
        self._urgent = False  # set by the owner thread, read by the network thread
        self._thread: threading.Thread | None = None
        self._connack = threading.Event()
        self._last_error = ""  # last socket error paho logged (loop thread only)
        self._sub_mids: dict[int, list[str]] = {}

        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
            reconnect_on_failure=False,  # we own the reconnect policy (jitter)
        )
        c.tls_set_context(make_tls_context(tls))
        c.connect_timeout = connect_timeout_s
        c.max_queued_messages_set(max_queued)
        # paho allows 20 unacknowledged QoS 1 messages by default; media keeps up to 32 in
        # flight, and an alert must never wait behind video.
        c.max_inflight_messages_set(100)
        if will is not None:
            c.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_log = self._on_log
        # Without this, paho's publish() (owner thread) writes to the socket itself while
        # the network thread may be inside SSL_read on the same SSL object: OpenSSL does not
        # allow that (seen as "bad record mac", dropped connections, heap corruption). With a
        # register-write hook paho only queues and wakes loop(), which writes on our thread.
        c.on_socket_register_write = _writes_happen_in_loop
        self._client = c

    # -- owner-facing API (owner thread) ------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="mqtt-network", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """The network thread says DISCONNECT (no will) at once, then exits."""
        self._stop.set()
        self._wake.set()
        # Queue the DISCONNECT: with the register-write hook paho only queues it and wakes
        # the network thread's select() (its socket pair), which writes it. Nothing else
        # would wake that select before LOOP_TIMEOUT_S.
        with contextlib.suppress(Exception):
            self._client.disconnect()
        if self._thread is not None:
            self._thread.join(timeout)

    def hurry(self, urgent: bool) -> None:
        """Something must go out (an alert): while disconnected, try to connect now and then
        every <= URGENT_RETRY_S until connected. False: back to the plain backoff."""
        self._urgent = urgent
        if urgent:
            self._wake.set()

    @property
    def connected(self) -> bool:
        return self._client.is_connected()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Queue a publish; returns its mid (matched by a later PublishResult for qos>=1).

        While disconnected, QoS 1 messages wait in paho's session queue and are
        sent on reconnect; a full queue raises TransportError.
        """
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
            raise TransportError(f"outgoing queue full, cannot publish to {topic}")
        return info.mid

    # -- network thread -----------------------------------------------------

    def _run(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry
        while not self._stop.is_set():
            self._connack.clear()
            self._last_error = ""
            self.host, self.port = self._brokers[self._current]
            try:
                self._client.connect(
                    self.host, self.port, keepalive=self._keepalive, clean_start=False,
                    properties=props,
                )
            except (OSError, ValueError) as e:
                self._fail(describe_connect_error(e, self.host, self.port, self._ca),
                           attempt_failed=True)
                continue
            self._set_nodelay()
            while not self._stop.is_set():
                rc = self._client.loop(timeout=LOOP_TIMEOUT_S)
                if rc != mqtt.MQTT_ERR_SUCCESS:
                    break
            if self._stop.is_set():
                self._say_goodbye()
                break
            if not self._connack.is_set():
                # TLS 1.3: a broker that rejects our certificate lets the handshake
                # finish and then drops us before CONNACK.
                detail = f" ({self._last_error})" if self._last_error else ""
                self._fail(
                    f"broker {self.host}:{self.port} closed the connection before CONNACK: "
                    f"it probably refused our certificate (expired, not yet valid, or not "
                    f"signed by the CA it trusts){detail}",
                    attempt_failed=True,
                )
            else:
                self._fail(None)

    def _say_goodbye(self) -> None:
        # Clean DISCONNECT so the broker does not publish our will; written here, on the
        # only thread that touches the socket.
        try:
            self._client.disconnect()
            self._client.loop_write()
        except Exception:  # already down; nothing to tell the broker
            pass

    def _set_nodelay(self) -> None:
        # paho leaves Nagle on: a PUBACK followed by a small PUBLISH (an ack
        # command) would wait ~40 ms for the peer's delayed ACK.
        sock = self._client.socket()
        try:
            if isinstance(sock, socket.socket):  # TLS over TCP: an ssl.SSLSocket
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def _fail(self, reason: str | None, *, attempt_failed: bool = False) -> None:
        delay = None
        if attempt_failed and len(self._brokers) > 1:
            self._failed_in_round += 1
            self._current = (self._current + 1) % len(self._brokers)
            host, port = self._brokers[self._current]
            reason = f"{reason}; next broker {host}:{port}"
            if self._failed_in_round % len(self._brokers):
                delay = 0.0  # brokers left to try in this round: no reason to wait
        if delay is None:
            delay = self._backoff.next_delay()
        if self._urgent:
            delay = min(delay, URGENT_RETRY_S / 2 + random.uniform(0, URGENT_RETRY_S / 2))
        if reason is not None:
            self._on_event(ConnectFailed(reason, delay))
        # hurry(True) during the attempt or the wait: try again at once.
        self._wake.wait(delay)
        self._wake.clear()

    # -- paho callbacks (network thread: only enqueue) ----------------------

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._last_error = f"CONNACK {reason_code}"
            client.disconnect()
            return
        self._connack.set()
        self._wake.clear()  # a hurry() from before this connection is served
        self._backoff.reset()
        self._failed_in_round = 0
        # Subscribing is transport bookkeeping, not application state, so it is
        # done here; persistent sessions keep them anyway, this covers a new session.
        for topic, qos, *sub_id in self._subscriptions:
            props = None
            if sub_id:  # (topic, qos, subscription identifier)
                props = Properties(PacketTypes.SUBSCRIBE)
                props.SubscriptionIdentifier = sub_id[0]
            _, mid = client.subscribe(topic, qos=qos, properties=props)
            self._sub_mids[mid] = [topic]
        self._on_event(Connected(bool(flags.session_present), f"{self.host}:{self.port}"))

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connack.is_set() and not self._stop.is_set():
            reason = str(reason_code)
            if self._last_error:
                reason += f" ({self._last_error})"
            self._on_event(Disconnected(reason))

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self._on_event(PublishResult(mid, not reason_code.is_failure, str(reason_code),
                                     reason_code.value == NO_MATCHING_SUBSCRIBERS))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        for topic, rc in zip(self._sub_mids.pop(mid, ["?"]), reason_codes, strict=False):
            self._on_event(SubscribeResult(topic, not rc.is_failure, str(rc)))

    def _on_message(self, client, userdata, msg) -> None:
        ids = getattr(msg.properties, "SubscriptionIdentifier", None) or ()
        self._on_event(Message(msg.topic, bytes(msg.payload), bool(msg.retain), tuple(ids)))

    def _on_log(self, client, userdata, level, buf) -> None:
        if level == mqtt.MQTT_LOG_ERR:
            self._last_error = buf
