"""ControlRoomReceiver: the reference receiver of the police control room.

Subscribes to every device's alerts through a shared subscription (several
receivers split the load), validates them, stores one incident per alert_id,
prints each alert with its site and latency, sends `cmd` messages (ack, end...)
and tracks devices online/offline from their retained status. Media and the evidence's
events reach every receiver of a share group; each incident's evidence is recorded and
confirmed by one of them, its owner (a lease in the store; docs/architecture.md, "Evidence
in a share group").

Note on threads: paho callbacks (network thread) and the operator's keyboard
thread only enqueue (alerts after a per-device budget check: intake.py); `run()`
owns the store and all decisions.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from pinkbutton.firmware import protocol as p
from pinkbutton.firmware import transport as t
from pinkbutton.firmware.backoff import Backoff
from pinkbutton.firmware.connectlog import ConnectFailureLog
from pinkbutton.firmware.media.envelope import MediaError, Reassembler, decode_envelope
from pinkbutton.hal.clock import Clock, iso8601
from pinkbutton.tools.controlroom.escape import shown
from pinkbutton.tools.controlroom.inbox import BULK, SUPERVISION, URGENT, Inbox
from pinkbutton.tools.controlroom.intake import FOLD_TURN, AlertIntake, IntakeLimits
from pinkbutton.tools.controlroom.store import Incident, IncidentStore
from pinkbutton.tools.controlroom.supervision import DeviceMonitor, Notice
from pinkbutton.tools.controlroom.terminal import (
    SHORT_ID,
    device_state,
    event_text,
    location,
    short_id,
)
from pinkbutton.tools.controlroom.terminal import ms as rounded_ms

log = logging.getLogger("pinkbutton.controlroom")

SHARE_GROUP = "controlroom"
#: The operator named on the room's own answer (ack, end) to a test alert.
TEST_OPERATOR = "automatic: test"
# Incident ids for an alert_id already taken by another device's incident (see _on_alert_body).
_FOREIGN_ID_NS = uuid.uuid5(uuid.NAMESPACE_URL, "pinkbutton:v1:alert-id-of-another-device")
Listener = Callable[[str, dict], None]


def alert_subscription(group: str = SHARE_GROUP) -> str:
    return f"$share/{group}/{p.TOPIC_ROOT}/+/alert"


def events_subscription(group: str = SHARE_GROUP) -> str:
    return f"$share/{group}/{p.TOPIC_ROOT}/+/events"


def media_subscription() -> str:
    # Not shared: every chunk of one incident must reach the same process. Every
    # receiver of a share group gets all media: the incident's evidence owner records it
    # (the others feed only their live view and stand by to take it over).
    return f"{p.TOPIC_ROOT}/+/media/+"


#: Heartbeats are stored together at most this often while the receiver is busy.
HEARTBEAT_FLUSH_S = 1.0


def inbox_lane(item: object) -> int:
    """The run thread's lane for `item` (tools/controlroom/inbox.py): media and the evidence
    events that must stay in order with it last, statuses and heartbeats before them,
    everything else (alerts first of all) first."""
    if not isinstance(item, t.Message):
        return URGENT
    if EVIDENCE_EVENTS_ID in item.subscription_ids or "/media/" in item.topic:
        return BULK
    if item.topic.endswith(("/status", "/health")):
        return SUPERVISION
    return URGENT


# -- media follows its incident (issue 13) ------------------------------------------------
#: Subscription identifier (MQTT v5) of the direct events subscription the evidence needs.
EVIDENCE_EVENTS_ID = 13
#: Device events the evidence needs, whichever receiver got the shared copy.
EVIDENCE_EVENTS = ("stream_end", "backfill")
#: How long an evidence owner's claim holds without renewal (another receiver then takes the
#: incident over), and how often the owner renews it / the others look for silent owners.
EVIDENCE_LEASE_S = 5.0
EVIDENCE_RENEW_S = 1.0
#: Incidents of other owners a receiver stands by for (events kept, bounded).
MAX_STANDBY = 1_000
MAX_STANDBY_EVENTS = 64


def evidence_events_subscription() -> tuple[str, int, int]:
    # Not shared, with its own subscription identifier: the shared copy of an event goes to
    # one receiver of the group (shown, noted once), this copy to every receiver, so a
    # `stream_end` or `backfill` report always reaches the incident's evidence owner.
    return (f"{p.TOPIC_ROOT}/+/events", 1, EVIDENCE_EVENTS_ID)


class _Standby:
    """An incident whose evidence another receiver owns: what this one needs to take it
    over (the device, the evidence events seen), and when it last heard of it."""

    __slots__ = ("device_id", "events", "seen_at")

    def __init__(self, device_id: str, seen_at: float) -> None:
        self.device_id, self.seen_at = device_id, seen_at
        self.events: list[p.DeviceEvent] = []
# -- end of media follows its incident --------------------------------------------------


def status_subscription() -> str:
    # Retained messages are not delivered to shared subscriptions: every receiver
    # subscribes to status directly.
    return f"{p.TOPIC_ROOT}/+/status"


def health_subscription() -> str:
    # Not shared either: every receiver judges for itself which kiosks are alive.
    return f"{p.TOPIC_ROOT}/+/health"


def _by_certificate(a: p.Alert) -> bool:
    """An unsigned alert marked as authenticated by the TLS client certificate alone."""
    return a.auth == "tls" and a.signature is None


def parse_iso(s: str) -> float | None:
    try:
        return datetime.fromisoformat(s.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class ControlRoomReceiver:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        tls: t.TlsFiles,
        db_path: Path | str,
        client_id: str = "controlroom",
        group: str = SHARE_GROUP,
        auto_ack: bool = False,
        operator: str = "control-room",
        device_certs: Path | None = None,
        clock: Clock | None = None,
        out: Callable[[str], None] = print,
        listeners: list[Listener] | None = None,
        backoff: Backoff | None = None,
        session_expiry_s: int = 0,
        evidence_dir: Path | None = None,
        viewer=None,
        limits: IntakeLimits | None = None,
        evidence_store=None,
    ) -> None:
        self.clock = clock or Clock()
        self.auto_ack = auto_ack
        self.operator = operator
        self.device_certs = device_certs
        self.out = out
        self.listeners = list(listeners or [])
        self.store = IncidentStore(db_path)
        self._inbox = Inbox(inbox_lane)  # alerts first; heartbeats, then media wait
        self._stop = threading.Event()
        self._pending: dict[int, str] = {}
        self._keys: dict[str, ec.EllipticCurvePublicKey] = {}
        self.recorder = None
        self.backfill = None  # BackfillManager when recording evidence
        self.viewer = viewer  # LiveViewer for --view, or None
        self._reassemblers: dict[str, Reassembler] = {}
        self._media_seen: set[str] = set()
        self._evidence_shown: set[str] = set()  # EVIDENCE line printed (once per incident)
        self._events_kept: dict[str, int] = {}  # device events noted per incident (_note_event)
        self._received: dict[str, float | None] = {}  # wall time each recorded incident's alert came
        self._timed: dict[str, set[str]] = {}  # first_media/first_keyframe noted per incident
        subscriptions: list[tuple[str, int] | tuple[str, int, int]] = [
            (alert_subscription(group), 1), (events_subscription(group), 1),
            (status_subscription(), 1), (health_subscription(), 0)]
        self.monitor = DeviceMonitor(self.clock)  # the one source of online/offline
        self._next_tick = 0.0
        self._beats: dict[str, tuple[p.Health, str]] = {}  # heartbeats not yet stored
        self._next_beats = 0.0
        self._worker, self._next_web = client_id, 0.0  # web console commands (_web_commands)
        self._connect_log = ConnectFailureLog(log, self.clock)
        # Per-device alert limits, decided on the network thread before anything is decoded.
        self.intake = AlertIntake(limits or IntakeLimits(), self.clock.monotonic,
                                  self.clock.wall, self._inbox.put)
        media_subscriptions: list[tuple[str, int] | tuple[str, int, int]] = []
        if evidence_dir is not None:
            from pinkbutton.tools.controlroom.backfill import (
                BackfillManager,  # PyAV only when recording
            )
            from pinkbutton.tools.controlroom.media import EvidenceRecorder

            self.recorder = EvidenceRecorder(evidence_dir, clock=self.clock)
            self.backfill = BackfillManager(
                evidence_dir, clock=self.clock, out=self.out, notify=self._backfill_notify,
                send_cmd=lambda kind, dev, aid, ranges: self._send(kind, dev, aid, None,
                                                                   ranges=ranges),
                store=evidence_store)
            media_subscriptions += [(media_subscription(), 1), evidence_events_subscription()]
        # Evidence ownership in a share group (issue 13): this receiver's name in the store.
        self._owner = client_id
        self.evidence_lease_s, self.evidence_renew_s = EVIDENCE_LEASE_S, EVIDENCE_RENEW_S
        self._role: dict[str, str] = {}  # alert_id -> "mine" | "other" | "done"
        self._standby: dict[str, _Standby] = {}
        self._next_lease = 0.0
        if device_certs is not None:  # load up front: keeps the first alert fast
            for pem in sorted(device_certs.glob("*.pem")):
                self._load_key(pem.stem)
        self.transport = t.MqttTransport(
            client_id=client_id, host=host, port=port, tls=tls, on_event=self.intake.offer,
            subscriptions=subscriptions,
            # One server reconnecting to its own broker: never wait long (kiosks are held
            # back while it is away: their alerts reach no subscriber).
            backoff=backoff or Backoff(0.2, 1.0),
            # 0 on purpose: mosquitto keeps handing a shared-subscription share to a member
            # that is offline but has a live session, so a receiver that crashed would hold
            # its share of alerts for the whole expiry. With 0 the session ends with the
            # connection and the survivors take every alert at once; what was in flight to
            # the dead one is re-announced by the kiosks (every alert.retry_s until receipted).
            session_expiry_s=session_expiry_s,
        )
        # Media (and the evidence events that keep its order) on a connection of its own:
        # the broker delivers one connection's messages in order, so on one connection an
        # alert waited behind every media message queued for this receiver (twenty streams
        # are ~1200 a second; under load, seconds of them). On run()'s inbox, media goes
        # in the bulk lane too (inbox.py). Its session ends with it, as the main one's.
        self.media_transport: t.MqttTransport | None = None
        if media_subscriptions:
            self.media_transport = t.MqttTransport(
                client_id=f"{client_id}-media", host=host, port=port, tls=tls,
                on_event=self._inbox.put, subscriptions=media_subscriptions,
                backoff=backoff or Backoff(0.2, 1.0), session_expiry_s=session_expiry_s)

    # -- any thread -----------------------------------------------------------

    def command(self, line: str) -> None:
        """Operator input ("ack 3f2a", "end 3f2a", "list"); handled on the run thread."""
        self._inbox.put(("operator", line))

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(("wake", None))

    # -- run thread -----------------------------------------------------------

    def run(self) -> None:
        self.transport.start()
        if self.media_transport is not None:
            self.media_transport.start()
        try:
            while not self._stop.is_set():
                self._tick_devices()
                self._flood_summary()
                self._web_commands()
                self._flush_heartbeats()
                if self.backfill is not None:
                    self._evidence_leases()
                    self.backfill.tick()  # NACKs and completed evidence, a few times a second
                try:
                    item = self._inbox.get(timeout=0.25)
                except queue.Empty:
                    if self.recorder is not None:
                        self.recorder.expire_held()
                    self._flush_heartbeats(force=True)  # idle: nothing waits behind them
                    continue
                try:
                    self._handle(item)
                except Exception:  # one bad message must not take the control room down
                    log.exception("internal error while handling %r", type(item).__name__)
        finally:
            self._flush_heartbeats(force=True)
            self.transport.stop()
            if self.media_transport is not None:
                self.media_transport.stop()
            if self.viewer is not None:
                self.viewer.close()
            if self.recorder is not None:
                for summary in self.recorder.close_all():
                    self._report_evidence(summary)
                assert self.backfill is not None  # made with the recorder
                self.backfill.close_all()
            self.store.close()

    def _handle(self, item) -> None:
        match item:
            case t.Message(topic=topic, payload=payload, subscription_ids=ids) if (
                    EVIDENCE_EVENTS_ID in ids):
                self._on_evidence_event(topic, payload)
            case t.Message(topic=topic, payload=payload, retain=retain) if topic.endswith(
                    ("/status", "/health")):
                self._on_supervision(topic, payload, retain)
            case t.Message(topic=topic, payload=payload):
                self._on_message(topic, payload)
            case t.Connected():
                log.info("connected to broker %s:%s", self.transport.host, self.transport.port)
                self._connect_log.connected()
                self._notify("connected", {})
            case t.ConnectFailed(reason=r, retry_in=d):
                self._connect_log.failed(r, d)
                self._notify("connect_failed", {"reason": r, "retry_in": d})
            case t.Disconnected(reason=r):
                log.warning("lost broker connection: %s", r)
            case t.SubscribeResult(topic=tp, ok=False, reason=r):
                log.error("broker denied subscription to %s: %s", tp, r)
            case t.PublishResult(mid=mid, ok=False, reason=r):
                log.error("broker denied %s: %s", self._pending.pop(mid, "publish"), r)
            case t.PublishResult(mid=mid):
                self._pending.pop(mid, None)
            case ("operator", line):
                self._operator(line)
            case ("fold", None):
                self._fold_turn()
            case _:
                pass

    def _on_message(self, topic: str, payload: bytes) -> None:
        received = self.clock.wall()
        try:
            parts = p.parse_topic(topic)
            if parts.leaf == "alert":
                self._on_alert_body(parts.device_id, payload, received)
            elif parts.leaf == "events":
                ev = p.decode_event(payload, topic_device=parts.device_id)
                # In words, each part escaped (terminal.event_text), never a dict.
                self.out(f"EVENT  {shown(ev.device_id)}  {event_text(ev.kind, ev.detail)}")
                self._note_event(ev, received)
                self._notify("event", {"device_id": ev.device_id, "kind": ev.kind,
                                       "detail": dict(ev.detail)})
                if ev.kind == "selftest":
                    self._record_selftest(ev)
                # stream_end and backfill reach the evidence over its own subscription.
            elif parts.leaf == "media" and self.recorder is not None:
                self._on_media(parts.device_id, parts.rest, payload)
        except (p.ProtocolError, MediaError) as e:
            log.warning("rejected message on %s: %s", shown(topic), shown(str(e)))
            self._notify("rejected", {"topic": topic, "reason": str(e)})

    def _on_alert_body(self, device_id: str, payload: bytes, received: float) -> None:
        """Every body on an authenticated device's alert topic becomes an incident: the
        broker's ACL ties the topic to the certificate, so the sender is known whatever the
        body says. A body the strict decoder refuses is salvaged (what can be read is read)
        and its incident flagged with what was wrong (docs/protocol.md)."""
        problems: list[str] = []
        id_known = True
        try:
            a = p.decode_alert(payload, topic_device=device_id)
        except p.ProtocolError as e:
            salvaged = p.salvage_alert(payload, topic_device=device_id)
            a, id_known = salvaged.alert, salvaged.alert_id_known
            problems += salvaged.problems
            log.warning("flagged alert on %s: %s", shown(p.topic(device_id, "alert")),
                        shown(str(e)))
        parent = self.store.folded_parent(a.alert_id) if id_known else None
        parent_inc = None if parent is None else self.store.incident(parent)
        if parent_inc is not None and parent_inc.ended_at is None:
            # Folded into an incident that is still open while the device was over its
            # budget: stored already; answer the re-announcement (receipt, and the ack if the
            # incident has one) instead of opening a second incident. Once that incident is
            # ended, an alert the kiosk still escalates becomes an incident of its own.
            self._reanswer(device_id, a.alert_id)
            return
        # An unsigned alert marked "auth": "tls" (a Pico W: no ECDSA) is authenticated by the
        # certificate that the topic is tied to: not checked, not flagged (docs/protocol.md).
        sig_ok = None if _by_certificate(a) else self._verify(device_id, payload)
        if sig_ok is False:
            problems.append(self._signature_problem(device_id, a))
            log.warning("alert %s from %s: %s", a.alert_id, shown(device_id), problems[-1])
        receipt_id = a.alert_id if id_known else None
        other = self.store.incident(a.alert_id)
        if other is not None and other.device_id != device_id:
            # Not folded into another device's incident (that would hide this one): its own
            # incident, under an id derived from the device and the alert_id it used.
            problems.append(f"alert_id {a.alert_id} is already an incident of device "
                            f"{other.device_id}: stored under its own id")
            a = replace(a, alert_id=str(uuid.uuid5(_FOREIGN_ID_NS, f"{device_id}\n{a.alert_id}")))
        self._on_alert(a, received, sig_ok, tuple(problems), receipt_id)

    def _on_alert(self, a: p.Alert, received: float, sig_ok: bool | None,
                  problems: tuple[str, ...], receipt_id: str | None) -> None:
        """`receipt_id`: the alert_id the kiosk knows this alert by (None: the body gave no
        readable one); usually the incident's own id."""
        id_known = receipt_id == a.alert_id  # the device's media and commands use this id
        latency = self._latency_ms(a, received)
        # Show the operator first; the durable write follows at once, and the ack
        # (which tells the kiosk "we have it") only after that write. Device text only
        # through shown(): one line, nothing that steers the terminal.
        known = self.store.incident(a.alert_id)
        device, site, aid = shown(a.device_id), shown(a.site.name) or "?", self._short(a.alert_id)
        flag = f"  FLAGGED: {shown('; '.join(problems), 1000)}" if problems else ""
        if _by_certificate(a):
            flag = "  authenticated by certificate (unsigned)" + flag
        test = a.kind == p.ALERT_KINDS[1]  # "test": its own line tag; answered, never dispatched
        if known is None:
            lat = rounded_ms(latency) if latency is not None else "unknown"
            seq = "?" if a.seq is None else a.seq
            if test:
                self.out(f"TEST   {device}  {site}  seq {seq}  latency {lat}  "
                         f"{location(a.site.lat, a.site.lon)}  id {aid}  "
                         f"(a test: answered automatically, never dispatched){flag}")
            else:
                self.out(f"ALERT  {device}  {site}  {a.kind}  seq {seq}  latency {lat}  "
                         f"{location(a.site.lat, a.site.lon)}  "
                         f"evidence {self._evidence_link(a, id_known)}  id {aid}{flag}")
        elif a.escalated and known.acked_at is None and not test:
            self.out(f"ESCALATED  {device}  {site}  not acknowledged "
                     f"(announce #{a.announce})  id {aid}{flag}")
        elif problems and not set(problems) <= set(known.problems):
            self.out(f"FLAGGED  {device}  {site}  announce #{a.announce}  id {aid}{flag}")
        self._notify("alert", {"alert_id": a.alert_id, "new": known is None,
                               "device_id": a.device_id, "announce": a.announce,
                               "latency_ms": latency, "problems": list(problems)})
        new = self.store.record_alert(a, iso8601(received), latency, sig_ok, problems)
        if new and self.recorder is not None and id_known:
            self._received[a.alert_id] = received
        # Stored durably: tell the kiosk it may drop the alert from its outbox. Sent for
        # every announcement, since an earlier receipt may have been lost. Not for an id
        # derived from an unreadable body: the kiosk knows no such alert.
        if receipt_id is not None:
            self._send("receipt", a.device_id, receipt_id, None)
        inc = self.store.incident(a.alert_id)
        try:
            self._answer(a, inc, new)
        finally:
            # After the ack: opening the evidence file takes tens of milliseconds.
            if new and self.recorder is not None and id_known:
                self._claim_evidence(a.alert_id, a.device_id, take_absent=True)

    # -- devices over their alert budget (tools/controlroom/intake.py) ------------

    def _fold_turn(self) -> None:
        """One batch of the fold path; more batches go behind whatever arrived meanwhile,
        so another device's alert waits for one batch at most."""
        batch, more = self.intake.take()
        if more:
            self._inbox.put(FOLD_TURN)
        groups: dict[str, list[tuple[p.Alert, bytes, float]]] = {}
        for device_id, payload, received in batch:
            try:
                a = p.decode_alert(payload, topic_device=device_id)
                known = self.store.known(a.alert_id)
            except Exception as e:  # noqa: BLE001 - counted in the summary line, not one per alert
                if not isinstance(e, p.ProtocolError):
                    log.exception("internal error on the fold path")
                self.intake.served(device_id, "rejected")
                continue
            if known:
                self._reanswer(device_id, a.alert_id)  # its receipt (or ack) was lost
                self.intake.served(device_id, "duplicates")
            else:
                groups.setdefault(device_id, []).append((a, payload, received))
        for device_id, alerts in groups.items():
            try:
                self._fold(device_id, alerts)
            except Exception:  # one device's trouble must not stall the others' batches
                log.exception("internal error while folding alerts of %s", device_id)

    def _fold(self, device_id: str, alerts: list[tuple[p.Alert, bytes, float]]) -> None:
        """Fold new alert_ids into the device's open incident (one transaction), then
        receipt each; with no open incident the first becomes one, by the normal path."""
        left = list(alerts)
        try:
            signed = {a.alert_id: None if _by_certificate(a) else self._verify(device_id, raw)
                      for a, raw, _ in left}
            while left:
                into, folded = self.store.fold_alerts(
                    device_id, [(a, iso8601(at), signed[a.alert_id]) for a, _, at in left])
                if into is not None:
                    break
                a, raw, at = left.pop(0)
                self.intake.served(device_id, "incidents", a.alert_id)
                self._on_alert_body(device_id, raw, at)
            else:
                return
            acked = self.store.incident(into)
            for alert_id in folded:
                self._send("receipt", device_id, alert_id, None)
                if acked is not None and acked.acked_at is not None:
                    # The kiosk shows its own newest alert: help is coming for it too.
                    self._send("ack", device_id, alert_id, acked.acked_by)
                self.intake.served(device_id, "folded", into)
            for _ in range(len(left) - len(folded)):
                self.intake.served(device_id, "duplicates")  # repeated within the batch
            left = []
            self._notify("folded", {"device_id": device_id, "into": into, "alert_ids": folded})
        finally:
            for _ in left:  # an error above: still release their places in the queue
                self.intake.served(device_id, "rejected")

    def _reanswer(self, device_id: str, alert_id: str) -> None:
        """An alert the room already has, announced again: its receipt, and its ack if its
        incident (its own, or the one it was folded into) is acknowledged."""
        inc = self.store.incident(self.store.folded_parent(alert_id) or alert_id)
        if inc is None or inc.device_id != device_id:
            return
        self._send("receipt", device_id, alert_id, None)
        if inc.acked_at is not None and inc.ended_at is None:
            self._send("ack", device_id, alert_id, inc.acked_by)

    def _flood_summary(self) -> None:
        for report in self.intake.summary():
            line = report.line()
            log.warning("%s", line)
            self.out(line)
            self._notify("flood", {"device_id": report.device_id, "over": report.over,
                                   "folded": report.folded, "dropped": report.dropped,
                                   "duplicates": report.duplicates, "into": report.into})

    def _signature_problem(self, device_id: str, a: p.Alert) -> str:
        if a.signature is None:
            return "signature missing"
        if device_id not in self._keys:
            return "signature not checked: no certificate of this device in --device-certs"
        return "signature does not verify"

    @staticmethod
    def _latency_ms(a: p.Alert, received: float) -> float | None:
        """Press to arrival. From the device's wall clock when it agrees with ours (the
        announcement's sent_at is within a minute behind our clock); otherwise from the
        device's monotonic age of the press, which a skewed wall clock cannot distort
        (it then lacks only the network transit, a few ms)."""
        pressed, sent = parse_iso(a.pressed_at), parse_iso(a.sent_at)
        if pressed is not None and sent is not None and -1.0 <= received - sent <= 60.0:
            return round((received - pressed) * 1000, 2)
        if a.age_ms is None:  # a flagged alert without a readable age: unknown
            return None
        log.warning("device %s wall clock is off by %.0f s: latency from its monotonic age",
                    a.device_id, received - sent if sent else float("nan"))
        return float(a.age_ms)

    def _answer(self, a: p.Alert, inc, new: bool) -> None:
        if inc is None:
            return
        if inc.kind == p.ALERT_KINDS[1]:
            self._answer_test(a, inc)
            return
        if inc.acked_at is not None:
            if not new:
                # The device announced again although we acked: our ack was lost. Resend.
                self._send("ack", a.device_id, a.alert_id, inc.acked_by)
        elif self.auto_ack:
            self.acknowledge(a.alert_id, self.operator)

    def _answer_test(self, a: p.Alert, inc) -> None:
        """A test (`pinkbutton-diag test-alert`, drills): acknowledged and ended at once by
        the room itself, so it takes no operator's time, is never escalated and never
        dispatched; the kiosk still shows its whole cycle up to "help is coming". Announced
        again (an answer was lost): answered again."""
        if inc.acked_at is None:
            self.acknowledge(a.alert_id, TEST_OPERATOR)
        else:
            self._send("ack", a.device_id, a.alert_id, inc.acked_by)
        if inc.ended_at is None:
            self.end(a.alert_id, TEST_OPERATOR)
        else:
            self._send("end", a.device_id, a.alert_id, TEST_OPERATOR)

    def _on_media(self, device_id: str, alert_id: str, payload: bytes) -> None:
        assert self.recorder is not None and self.backfill is not None  # only when recording
        env = decode_envelope(payload)
        # Whose evidence (None: its alert is not stored yet; the media is held meanwhile).
        role = self._evidence_role(alert_id, device_id)
        if role in (None, "mine") and self.backfill.claims(alert_id, env):
            return  # a copy of a packet we have, or a resent one we asked for
        # Wide seq window: the kiosk sends live media ahead of the pre-roll, so on a slow
        # link pre-roll seqs arrive thousands of seqs late (memory stays bounded by bytes).
        if role == "done":
            return  # confirmed complete: stragglers
        rp = self._reassemblers.setdefault(
            alert_id, Reassembler(max_seq_window=1 << 16)).add(env)
        if rp is None:
            return
        if role == "other":
            # Another receiver of the group records it: only the live view, and standing by.
            self._stand_by(alert_id, device_id)
            if self.viewer is not None:
                self.viewer.feed(alert_id, rp)
            return
        if alert_id not in self._media_seen:
            self._media_seen.add(alert_id)
            self._notify("first_media", {"alert_id": alert_id, "keyframe": rp.packet.keyframe})
        self.recorder.feed(alert_id, rp)
        self._note_timings(alert_id)
        self.backfill.record(alert_id, rp)
        if self.viewer is not None:
            self.viewer.feed(alert_id, rp)
        self._notify("media", {"alert_id": alert_id, "seq": rp.seq, "stream": int(rp.packet.stream),
                               "keyframe": rp.packet.keyframe, "preroll": rp.preroll,
                               "capture_us": rp.packet.pts_us})

    def _open_evidence(self, alert_id: str, device_id: str, live: bool = True) -> None:
        assert self.recorder is not None and self.backfill is not None  # callers check
        if live:  # not for an incident taken over after its stream ended: no live part
            self.recorder.open(alert_id, device_id)
        packets = self.recorder.path_for(alert_id, device_id).with_suffix(".packets")
        self.backfill.open(alert_id, device_id, packets.name)

    # -- media follows its incident (issue 13) ----------------------------------------------
    # Every receiver of a share group gets all media and, over EVIDENCE_EVENTS_ID, every
    # stream_end/backfill event. One of them owns an incident's evidence (the store's
    # evidence_owners row: the receiver that stored the alert claims it): it records the live
    # file and the packet log, asks for what is missing and confirms. The others feed their
    # live view and stand by; when the owner's lease runs out (killed, hung) one of them
    # takes the incident over: it continues the packet log in the shared evidence directory
    # (a new live part), replays the events it kept, and the kiosk's backfill fills in what
    # the dead owner had not written.

    def _claim_evidence(self, alert_id: str, device_id: str, *, take_absent: bool,
                        live: bool = True) -> str:
        assert self.recorder is not None and self.backfill is not None  # callers check
        got = self.store.claim_evidence(alert_id, self._owner, self.clock.wall(),
                                        self.evidence_lease_s, take_absent=take_absent)
        if got == "mine":
            self._role[alert_id] = "mine"
            self._standby.pop(alert_id, None)
            if not (self.recorder.is_open(alert_id) or self.backfill.tracking(alert_id)):
                self._open_evidence(alert_id, device_id, live=live)
            return got
        # Another receiver records it ("absent": the one that stored the alert is claiming
        # it now); what was held for it here is not needed.
        self._role[alert_id] = "done" if got == "done" else "other"
        self.recorder.drop_held(alert_id)
        self.backfill.drop_held(alert_id)
        if got != "done" and alert_id not in self._standby:
            self._stand_by(alert_id, device_id)
        return got

    def _evidence_role(self, alert_id: str, device_id: str) -> str | None:
        role = self._role.get(alert_id)
        if role is not None:
            return role
        inc = self.store.incident(alert_id)
        if inc is None or inc.device_id != device_id:
            return None  # its alert is not stored (yet): held as before
        if inc.ended_at is not None:  # not recorded anew; taken over only with its stream_end
            self._role[alert_id] = "other"
            self._stand_by(alert_id, device_id)
            return "other"
        # Stored long ago and nobody claimed it (a room restarted mid-incident, a store from
        # before owners): claim it now, as before; otherwise its receiver is claiming it.
        return self._claim_evidence(alert_id, device_id,
                                    take_absent=self._unclaimed_for_long(inc))

    def _unclaimed_for_long(self, inc: Incident) -> bool:
        """Its alert was stored more than a lease ago: an owner would have claimed it."""
        received = parse_iso(inc.received_at)
        return received is None or self.clock.wall() - received > self.evidence_lease_s

    def _stand_by(self, alert_id: str, device_id: str) -> _Standby:
        sb = self._standby.get(alert_id)
        if sb is None:
            while len(self._standby) >= MAX_STANDBY:
                self._standby.pop(next(iter(self._standby)))
            sb = self._standby[alert_id] = _Standby(device_id, self.clock.monotonic())
        sb.seen_at = self.clock.monotonic()
        return sb

    def _on_evidence_event(self, topic: str, payload: bytes) -> None:
        """The direct copy of a device event: only what the evidence needs (the shared copy
        is shown and noted by whichever receiver got it)."""
        try:
            parts = p.parse_topic(topic)
            ev = p.decode_event(payload, topic_device=parts.device_id)
        except p.ProtocolError:
            return  # the shared copy says why
        alert_id = ev.detail.get("alert_id")
        if ev.kind not in EVIDENCE_EVENTS or not isinstance(alert_id, str):
            return
        if ev.kind == "stream_end" and self.viewer is not None:
            self.viewer.end(alert_id)
        role = self._evidence_role(alert_id, ev.device_id)
        if role == "mine":
            if ev.kind == "stream_end":
                self._close_evidence(alert_id)
            assert self.backfill is not None  # subscribed only when recording
            self.backfill.on_event(ev)
        elif role != "done":
            sb = self._stand_by(alert_id, ev.device_id)
            if len(sb.events) < MAX_STANDBY_EVENTS:
                sb.events.append(ev)
            if ev.kind == "stream_end":
                self._reassemblers.pop(alert_id, None)

    def _evidence_leases(self) -> None:
        """Renew this receiver's leases; take over the incidents whose owner went silent."""
        now = self.clock.monotonic()
        if now < self._next_lease:
            return
        self._next_lease = now + self.evidence_renew_s
        assert self.recorder is not None and self.backfill is not None  # callers check
        wall = self.clock.wall()
        mine = sorted(set(self.recorder.open_ids()) | set(self.backfill.tracked_ids()))
        try:
            kept = self.store.renew_evidence(mine, self._owner, wall, self.evidence_lease_s)
        except Exception:  # noqa: BLE001 - a busy database: next turn
            log.exception("cannot renew evidence leases")
            return
        for alert_id in mine:
            if alert_id not in kept:
                self._lost_evidence(alert_id)
        for alert_id, sb in list(self._standby.items()):
            if now - sb.seen_at > self.backfill.idle_s:
                del self._standby[alert_id]
                continue
            ended = any(ev.kind == "stream_end" for ev in sb.events)
            inc = self.store.incident(alert_id)
            # An ended incident can be completed only with its stream_end's seq count.
            got = "absent" if inc is None or inc.device_id != sb.device_id or (
                inc.ended_at is not None and not ended) else \
                self._claim_evidence(alert_id, sb.device_id, live=not ended,
                                     take_absent=self._unclaimed_for_long(inc))
            if got == "done":
                self._standby.pop(alert_id, None)
            elif got == "mine":
                self._took_over(alert_id, sb)

    def _took_over(self, alert_id: str, sb: _Standby) -> None:
        assert self.backfill is not None  # callers check
        log.warning("evidence of %s taken over: its owner's lease ran out", shown(alert_id))
        self.out(f"EVIDENCE  {shown(sb.device_id)}  id {self._short(alert_id)}  taken over "
                 "from a silent receiver of the group")
        self._media_seen.add(alert_id)
        assert self.recorder is not None  # made with the backfill
        for ev in sb.events:
            self.backfill.on_event(ev)
            if ev.kind == "stream_end" and self.recorder.is_open(alert_id):
                self._close_evidence(alert_id)
        self._notify("evidence_taken_over", {"alert_id": alert_id,
                                             "events": len(sb.events)})

    def _lost_evidence(self, alert_id: str) -> None:
        """Another receiver holds the lease now (this one stalled past it): stop writing."""
        assert self.recorder is not None and self.backfill is not None  # callers check
        log.warning("evidence of %s is recorded by another receiver now: stopped here",
                    shown(alert_id))
        try:
            self.recorder.close(alert_id)
        except Exception:  # noqa: BLE001 - not open (backfill only)
            pass
        self.backfill.drop(alert_id)
        self._role[alert_id] = "other"
        inc = self.store.incident(alert_id)
        if inc is not None:
            self._stand_by(alert_id, inc.device_id)

    def _backfill_notify(self, kind: str, data: dict) -> None:
        if kind == "evidence_complete" and data.get("final"):
            self.store.finish_evidence(data["alert_id"], self._owner)
            self._role[data["alert_id"]] = "done"
        self._notify(kind, data)
    # -- end of media follows its incident --------------------------------------------------

    def _close_evidence(self, alert_id: str) -> None:
        if self.viewer is not None:
            self.viewer.end(alert_id)
        if self.recorder is None or alert_id not in self._media_seen \
                or alert_id in self._evidence_shown \
                or self._role.get(alert_id) == "other":  # another receiver records it
            return
        try:
            summary = self.recorder.close(alert_id)
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the room
            log.error("cannot finish evidence of %s: %s", shown(alert_id), e)
            return
        self._reassemblers.pop(alert_id, None)
        self._evidence_shown.add(alert_id)
        self._report_evidence(summary)

    def _alert_received(self, alert_id: str) -> float | None:
        if alert_id not in self._received:  # an incident from before this room restarted
            inc = self.store.incident(alert_id)
            self._received[alert_id] = parse_iso(inc.received_at) if inc else None
        return self._received[alert_id]

    def _timings_ms(self, summary) -> dict[str, int | None]:
        """First media / first keyframe in ms after the alert was received."""
        received = self._alert_received(summary.alert_id)
        return {what: None if at is None or received is None else round((at - received) * 1000)
                for what, at in (("first_media", summary.first_media_at),
                                 ("first_keyframe", summary.first_keyframe_at))}

    def _note_timings(self, alert_id: str) -> None:
        """Store each timing in the incident's timeline when it happens (so it sorts
        among the ack and the end); done per packet only until both are known."""
        from pinkbutton.tools.controlroom.media import (
            EvidenceError,  # loaded with the recorder (PyAV)
        )

        if alert_id in self._evidence_shown:
            return  # media after the evidence was closed: the timings are noted already
        noted = self._timed.setdefault(alert_id, set())
        if len(noted) == 2:
            return
        assert self.recorder is not None  # _on_media checked
        try:
            summary = self.recorder.summary(alert_id)
        except EvidenceError:
            return  # held until its alert comes
        for what, ms in self._timings_ms(summary).items():
            at = summary.first_media_at if what == "first_media" else summary.first_keyframe_at
            if ms is not None and what not in noted:
                assert at is not None  # a timing is known only with its time
                noted.add(what)
                self.store.note(alert_id, iso8601(at), what, {"ms": ms})

    def _report_evidence(self, summary) -> None:
        gaps = ", ".join(f"{a}-{b}" for a, b in summary.gaps) or "none"
        timings = self._timings_ms(summary)
        self._received.pop(summary.alert_id, None)
        self._timed.pop(summary.alert_id, None)
        shown = ", ".join(f"{what.replace('_', ' ')} " + ("?" if ms is None else f"{ms:+d} ms")
                          for what, ms in timings.items())
        self.out(f"EVIDENCE  {summary.path}  video {summary.video_packets}  audio "
                 f"{summary.audio_packets}  {summary.duration_s:.1f} s (pre-roll "
                 f"{summary.preroll_s:.1f} s)  {shown}  gaps {gaps}"
                 + (f"  (pre-roll behind live: {summary.preroll_behind} packets, in the "
                    "complete evidence)" if summary.preroll_behind else ""))
        self._notify("evidence", {"path": str(summary.path), "gaps": summary.gaps,
                                  "duration_s": summary.duration_s,
                                  "preroll_s": summary.preroll_s,
                                  "preroll_behind": summary.preroll_behind,
                                  "first_media_ms": timings["first_media"],
                                  "first_keyframe_ms": timings["first_keyframe"]})

    # -- device supervision (heartbeats, status, Last Will) ----------------------

    def _flush_heartbeats(self, force: bool = False) -> None:
        """Store the heartbeats that came since the last time, in one transaction: at most
        once every HEARTBEAT_FLUSH_S while busy (a thousand kiosks send a hundred a second:
        a commit each was the room's largest write load, twice over with two receivers on
        one PostgreSQL), at once when idle."""
        now = self.clock.monotonic()
        if not self._beats or (not force and now < self._next_beats):
            return
        self._next_beats = now + HEARTBEAT_FLUSH_S
        beats, self._beats = list(self._beats.values()), {}
        try:
            self.store.record_heartbeats(beats)
        except Exception:  # noqa: BLE001 - a busy database: the next ones come in seconds
            log.exception("cannot store %d heartbeats", len(beats))

    def _on_supervision(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            parts = p.parse_topic(topic)
            if parts.leaf == "health":
                h = p.decode_health(payload, topic_device=parts.device_id)
                notices = self.monitor.heartbeat(h)
                self._notify("health", {"device_id": h.device_id, "seq": h.seq,
                                        "queue_depth": h.queue_depth, "faults": list(h.faults)})
                # Written with the others of this second (_flush_heartbeats): one commit.
                self._beats[h.device_id] = (h, iso8601(self.clock.wall()))
                if self.backfill is not None and h.evidence_pending:
                    # The kiosk still holds evidence we gave up on: ask again.
                    self.backfill.resume(h.device_id, set(h.evidence_pending))
            elif parts.leaf == "status":
                s = p.decode_status(payload, topic_device=parts.device_id)
                notices = self.monitor.status(s.device_id, s.online, state=s.state,
                                              retained=retained)
                self._notify("status", {"device_id": s.device_id, "online": s.online,
                                        "state": s.state})
                if self.backfill is not None and s.online and not retained:
                    self.backfill.resume(s.device_id)  # back: ask again what it may still send
            else:
                raise p.ProtocolError(f"unexpected topic {topic}")
        except p.ProtocolError as e:
            log.warning("rejected message on %s: %s", shown(topic), shown(str(e)))
            self._notify("rejected", {"topic": topic, "reason": str(e)})
            return
        for notice in notices:
            self._device_notice(notice)

    def _record_selftest(self, ev: p.DeviceEvent) -> None:
        d = ev.detail
        ok = d.get("ok") is True
        failed = d.get("failed") if isinstance(d.get("failed"), str) else ""
        faults = d.get("faults") if isinstance(d.get("faults"), str) else ""
        why = d.get("why") if isinstance(d.get("why"), str) else ""
        self.store.record_selftest(ev.device_id, ev.at, ok, str(failed or faults)[:500],
                                   str(why)[:2000])

    def _tick_devices(self) -> None:
        now = self.clock.monotonic()
        if now < self._next_tick:
            return
        self._next_tick = now + 0.25
        for notice in self.monitor.tick(now):
            self._device_notice(notice)

    def _device_notice(self, n: Notice) -> None:
        """Store the change; show it when it is news (a device already known offline from
        an earlier run is not announced again on every room start)."""
        view = self.monitor.device(n.device_id)
        online = n.kind != "offline"
        state = "offline" if not online else (view.state if view and view.state else "online")
        firmware = (view.firmware if view else None) or ""
        changed = self.store.set_device(n.device_id, online, state, firmware,
                                        iso8601(self.clock.wall()), n.reason)
        if changed or n.kind == "back":
            self.out(f"DEVICE {shown(n.text)}")
        self._notify("device", {"device_id": n.device_id, "kind": n.kind, "text": n.text,
                                "gone_s": n.gone_s})

    def _verify(self, device_id: str, payload: bytes) -> bool | None:
        if self.device_certs is None:
            return None
        key = self._keys.get(device_id) or self._load_key(device_id)
        return False if key is None else p.verify_alert(payload, key)

    def _load_key(self, device_id: str) -> ec.EllipticCurvePublicKey | None:
        assert self.device_certs is not None  # callers check
        try:
            cert = x509.load_pem_x509_certificate(
                (self.device_certs / f"{device_id}.pem").read_bytes())
        except (OSError, ValueError) as e:
            log.warning("cannot load certificate of %s to check its signature: %s", device_id, e)
            return None
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):  # alerts are signed with P-256
            log.warning("certificate of %s has no EC key: its alert signatures cannot be checked",
                        device_id)
            return None
        self._keys[device_id] = key
        return key

    # -- operator actions -----------------------------------------------------

    def acknowledge(self, alert_id: str, operator: str) -> bool:
        inc = self.store.incident(alert_id)
        if inc is None or not self.store.mark(alert_id, "acked", iso8601(self.clock.wall()),
                                              operator):
            return False
        self._send("ack", inc.device_id, alert_id, operator)
        for folded in self.store.folded_into(alert_id):  # the kiosk may show one of these
            self._send("ack", inc.device_id, folded, operator)
        self.out(f"ACK    {shown(inc.device_id)}  {shown(inc.site_name) or '?'}  "
                 f"by {shown(operator)}  id {self._short(alert_id)}")
        return True

    def end(self, alert_id: str, operator: str, disposition: str | None = None) -> bool:
        inc = self.store.incident(alert_id)
        short = self._short(alert_id)  # as it was shown while open
        if inc is None or not self.store.mark(alert_id, "ended", iso8601(self.clock.wall()),
                                              operator, disposition):  # who, in the timeline
            return False
        self._send("end", inc.device_id, alert_id, operator)
        for folded in self.store.folded_into(alert_id):
            self._send("end", inc.device_id, folded, operator)
        self.out(f"END    {shown(inc.device_id)}  id {short}")
        self._close_evidence(alert_id)
        return True

    # -- web console commands (issue 12) -----------------------------------------
    # The console (tools/controlroom/web) may run in another process: it queues an
    # officer's action in the store's `commands` table and one receiver (whichever claims
    # it first) carries it out here, through the same path as the terminal's `ack`/`end`.

    def dispatch(self, alert_id: str, operator: str, unit: str, note: str = "") -> bool:
        inc = self.store.incident(alert_id)
        if inc is None or not self.store.dispatch(alert_id, iso8601(self.clock.wall()),
                                                  operator, unit, note):
            return False
        self._send("dispatched", inc.device_id, alert_id, operator)
        self.out(f"DISPATCHED  {shown(inc.device_id)}  {shown(unit)}  by {shown(operator)}  "
                 f"id {self._short(alert_id)}")
        return True

    def _web_commands(self) -> None:
        now = self.clock.monotonic()
        if now < self._next_web:
            return
        self._next_web = now + 0.2
        try:
            claimed = self.store.claim_commands(self._worker)
        except Exception:  # noqa: BLE001 - a busy database: next turn
            log.exception("cannot read the console's commands")
            return
        for c in claimed:
            try:
                done = self._web_command(c)
            except Exception:  # noqa: BLE001 - one bad command must not stop the room
                log.exception("console command %s %s failed", c.verb, c.alert_id)
                done = None
            self.store.finish_command(c.id, iso8601(self.clock.wall()), "failed" if done is None
                                      else "done" if done else "no change")
            self._notify("web_command", {"id": c.id, "verb": c.verb, "alert_id": c.alert_id,
                                         "done": done})

    def _web_command(self, c) -> bool:
        if c.verb == "selftest":  # the fleet page's button: a kiosk, no incident
            device_id = c.args.get("device_id")
            if not isinstance(device_id, str) or not p.DEVICE_ID_RE.fullmatch(device_id):
                return False
            self._send("selftest", device_id, None, c.by)
            self.out(f"SELFTEST asked of 1 kiosk(s): {device_id} (by {shown(c.by)}, console)")
            return True
        inc = self.store.incident(c.alert_id)
        if inc is None:
            return False
        if c.verb == "ack":
            return self.acknowledge(c.alert_id, c.by)
        if c.verb == "dispatch":
            return self.dispatch(c.alert_id, c.by, str(c.args.get("unit", "")),
                                 str(c.args.get("note", "")))
        if c.verb == "extend":
            if inc.ended_at is not None:
                return False
            seconds = float(c.args.get("seconds", 60.0))
            self._send("extend", inc.device_id, c.alert_id, c.by, seconds)
            self.store.note(c.alert_id, iso8601(self.clock.wall()), "extended",
                            {"by": c.by, "seconds": seconds})
            return True
        return self.end(c.alert_id, c.by, c.args.get("disposition"))  # end

    def selftest(self, device: str) -> list[str]:
        """Send `cmd selftest` to one kiosk or, for "all", every kiosk the room knows;
        returns the device ids it was sent to."""
        known = [row.device_id for row in self.store.fleet()]
        targets = known if device == "all" else [device]
        for device_id in targets:
            self._send("selftest", device_id, None, self.operator)
        return targets

    def _send(self, kind: str, device_id: str, alert_id: str | None, operator: str | None,
              extend_s: float | None = None, ranges: tuple | None = None) -> None:
        cmd = p.Cmd(cmd=kind, cmd_id=str(uuid.uuid4()), sent_at=iso8601(self.clock.wall()),
                    alert_id=alert_id, operator=operator, extend_s=extend_s, ranges=ranges)
        topic = p.topic(device_id, "cmd")
        try:
            mid = self.transport.publish(topic, p.encode_cmd(cmd), qos=1)
        except t.TransportError as e:
            log.error("cannot send %s to %s: %s", kind, device_id, e)
            return
        self._pending[mid] = f"{kind} to {topic}"
        self._notify("cmd_sent", {"cmd": kind, "alert_id": alert_id, "device_id": device_id})

    def _operator(self, line: str) -> None:
        words = line.split()
        if not words:
            return
        verb, args = words[0].lower(), words[1:]
        if verb in ("list", "ls"):
            self._list()
            return
        if verb == "selftest" and len(args) == 1:
            if args[0] != "all" and not p.DEVICE_ID_RE.fullmatch(args[0]):
                self.out(f"selftest: {shown(args[0])} is not a device id (or all)")
                return
            sent = self.selftest(args[0])
            self.out(f"SELFTEST asked of {len(sent)} kiosk(s): "
                     f"{shown(', '.join(sent), limit=400) or 'none known'}")
            return
        if verb in ("ack", "end", "extend") and args:
            matches = self._resolve(verb, args[0])
            if matches is None:
                return
            alert_id = matches[0].alert_id
            if verb == "ack":
                done = self.acknowledge(alert_id, self.operator)
            elif verb == "end":
                done = self.end(alert_id, self.operator)
            else:
                try:
                    seconds = float(args[1]) if len(args) > 1 else 60.0
                except ValueError:
                    seconds = float("nan")
                if not 0 < seconds < float("inf"):  # nan, inf and negatives too
                    self.out("extend: seconds must be a number above 0, e.g. 60")
                    return
                self._send("extend", matches[0].device_id, alert_id, self.operator, seconds)
                done = True
            if not done:
                self.out(f"{verb}: incident {shown(alert_id)} is already {verb}ed")
            return
        self.out("commands: list | ack ID | end ID | extend ID [SECONDS] | selftest DEVICE|all "
                 "(ID = first chars)")

    # -- the operator's terminal (issue 12): short ids, evidence link, list, events -------

    def _short(self, alert_id: str) -> str:
        """The id as shown: 8 characters, more while another open incident shares them."""
        rivals = self.store.find(alert_id[:SHORT_ID], open_only=True)  # by the primary key
        return short_id(alert_id, (i.alert_id for i in rivals))

    def _resolve(self, verb: str, prefix: str) -> list[Incident] | None:
        """The one incident an operator's id means: among open incidents first (the short
        ids are unique there), else among all; None (and a line saying why) otherwise."""
        matches = self.store.find(prefix, open_only=True) or self.store.find(prefix)
        if len(matches) == 1:
            return matches
        if not matches:
            self.out(f"{verb}: no incident id starts with {shown(prefix, 40)}")
            return None
        ids = [m.alert_id for m in matches]
        listed = ", ".join(f"{short_id(m.alert_id, ids)} ({shown(m.device_id)}, "
                           f"{shown(m.site_name, 60) or '?'})" for m in matches[:10])
        self.out(f"{verb}: {len(matches)} incidents match {shown(prefix, 40)}: {listed}; "
                 "give more of the id")
        return None

    def _evidence_link(self, a: p.Alert, id_known: bool) -> str:
        """Where this incident's evidence will be, relative to the evidence directory."""
        if self.recorder is None:
            return "off"
        if not id_known:
            return "none (no readable alert_id)"
        try:
            path = self.recorder.path_for(a.alert_id, a.device_id)
        except Exception:  # noqa: BLE001 - EvidenceError: a name unusable in a file name
            return "none"
        return shown(str(path.relative_to(self.recorder.directory)))

    def _list(self) -> None:
        """Open incidents, then every kiosk with the state the store gives it (shared by the
        receivers of one database): alerting, acknowledged, idle after the end."""
        open_ = self.store.open_incidents()
        ids = [i.alert_id for i in open_]
        for inc in open_:
            state = f"acked by {shown(inc.acked_by or '?', 64)}" if inc.acked_at else "WAITING"
            if inc.kind == p.ALERT_KINDS[1]:
                state += "  TEST"
            self.out(f"  {short_id(inc.alert_id, ids)}  {shown(inc.device_id)}  "
                     f"{shown(inc.site_name) or '?'}  {state}  received {inc.received_at}  "
                     f"presses {inc.presses}{'  FLAGGED' if inc.problems else ''}")
        for d in self.store.device_states():
            inc = d.open_incident
            state = device_state(None if inc is None else inc.acked_at is not None)
            online = "?" if d.online is None else ("online" if d.online else "OFFLINE")
            if inc is not None:
                since = inc.acked_at or inc.received_at
                state += f" (incident {short_id(inc.alert_id, ids)})"
            else:
                since = max(filter(None, (d.last_ended_at, d.changed_at)), default="?")
            self.out(f"  device {shown(d.device_id)}  {online}  {state}  since {since}")

    #: Device events kept per incident: events are not rate-limited like alerts, and each one
    #: kept is a write (fsync) on the run thread; a kiosk sends a handful per incident.
    EVENTS_KEPT_PER_INCIDENT = 1000

    def _note_event(self, ev: p.DeviceEvent, received: float) -> None:
        """A device event in its incident's timeline (for `report`); a `pressed_again`
        also counts its presses there. Past EVENTS_KEPT_PER_INCIDENT events of one incident,
        one line says so and the rest are only shown."""
        aid = ev.detail.get("alert_id")
        aid = aid if isinstance(aid, str) else None
        into = self.store.incident_of(ev.device_id, aid)
        if into is None:
            return
        kept = self._events_kept[into] = self._events_kept.get(into, 0) + 1
        if kept > self.EVENTS_KEPT_PER_INCIDENT:
            if kept == self.EVENTS_KEPT_PER_INCIDENT + 1:
                self.store.note(into, iso8601(received), "events_not_kept",
                                {"after": self.EVENTS_KEPT_PER_INCIDENT})
            return
        presses = ev.detail.get("presses")
        if ev.kind == "pressed_again" and aid and isinstance(presses, int) and presses > 0:
            self.store.pressed(ev.device_id, aid, presses)
        self.store.note(into, iso8601(received), "event",
                        {"kind": ev.kind, "detail": dict(ev.detail)})

    def _notify(self, kind: str, data: dict) -> None:
        for listener in self.listeners:
            listener(kind, data)
