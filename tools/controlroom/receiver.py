"""ControlRoomReceiver: the reference receiver of the police control room.

Subscribes to every device's alerts through a shared subscription (several
receivers split the load), validates them, stores one incident per alert_id,
prints each alert with its site and latency, sends `cmd` messages (ack, end...)
and tracks devices online/offline from their retained status.

Note on threads: paho callbacks (network thread) and the operator's keyboard
thread only enqueue; `run()` owns the store and all decisions.
"""

from __future__ import annotations

import logging
import queue
import threading
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from cryptography import x509

from firmware import protocol as p
from firmware import transport as t
from firmware.backoff import Backoff
from firmware.clock import Clock, iso8601
from firmware.connectlog import ConnectFailureLog
from firmware.media.envelope import MediaError, Reassembler, decode_envelope
from tools.controlroom.store import IncidentStore
from tools.controlroom.supervision import DeviceMonitor, Notice

log = logging.getLogger("pinkbutton.controlroom")

SHARE_GROUP = "controlroom"
Listener = Callable[[str, dict], None]


def alert_subscription(group: str = SHARE_GROUP) -> str:
    return f"$share/{group}/{p.TOPIC_ROOT}/+/alert"


def events_subscription(group: str = SHARE_GROUP) -> str:
    return f"$share/{group}/{p.TOPIC_ROOT}/+/events"


def media_subscription() -> str:
    # Not shared: every chunk of one incident must reach the same process. Each
    # receiver records the evidence of the incidents whose alert it received;
    # media of other receivers' incidents is held briefly, then dropped.
    return f"{p.TOPIC_ROOT}/+/media/+"


def status_subscription() -> str:
    # Retained messages are not delivered to shared subscriptions: every receiver
    # subscribes to status directly.
    return f"{p.TOPIC_ROOT}/+/status"


def health_subscription() -> str:
    # Not shared either: every receiver judges for itself which kiosks are alive.
    return f"{p.TOPIC_ROOT}/+/health"


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
        session_expiry_s: int = 60,
        evidence_dir: Path | None = None,
        viewer=None,
    ) -> None:
        self.clock = clock or Clock()
        self.auto_ack = auto_ack
        self.operator = operator
        self.device_certs = device_certs
        self.out = out
        self.listeners = list(listeners or [])
        self.store = IncidentStore(db_path)
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._pending: dict[int, str] = {}
        self._keys: dict[str, object] = {}
        self.recorder = None
        self.backfill = None  # BackfillManager when recording evidence
        self.viewer = viewer  # LiveViewer for --view, or None
        self._reassemblers: dict[str, Reassembler] = {}
        self._media_seen: set[str] = set()
        self._received: dict[str, float] = {}  # wall time each recorded incident's alert came
        self._timed: dict[str, set[str]] = {}  # first_media/first_keyframe noted per incident
        subscriptions = [(alert_subscription(group), 1), (events_subscription(group), 1),
                         (status_subscription(), 1), (health_subscription(), 0)]
        self.monitor = DeviceMonitor(self.clock)  # the one source of online/offline
        self._next_tick = 0.0
        self._connect_log = ConnectFailureLog(log, self.clock)
        if evidence_dir is not None:
            from tools.controlroom.backfill import BackfillManager  # PyAV only when recording
            from tools.controlroom.media import EvidenceRecorder

            self.recorder = EvidenceRecorder(evidence_dir, clock=self.clock)
            self.backfill = BackfillManager(
                evidence_dir, clock=self.clock, out=self.out, notify=self._notify,
                send_cmd=lambda kind, dev, aid, ranges: self._send(kind, dev, aid, None,
                                                                   ranges=ranges))
            subscriptions.append((media_subscription(), 1))
        if device_certs is not None:  # load up front: keeps the first alert fast
            for pem in sorted(device_certs.glob("*.pem")):
                self._load_key(pem.stem)
        self.transport = t.MqttTransport(
            client_id=client_id, host=host, port=port, tls=tls, on_event=self._inbox.put,
            subscriptions=subscriptions,
            backoff=backoff or Backoff(0.2, 5.0),
            # Short on purpose: mosquitto keeps handing a shared-subscription share to a
            # member that is offline but has a live session. A receiver that crashed would
            # hold its share of alerts for the whole expiry; 60 s rides out a restart, and
            # kiosks re-announce any alert nobody acknowledged.
            session_expiry_s=session_expiry_s,
        )

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
        try:
            while not self._stop.is_set():
                self._tick_devices()
                if self.backfill is not None:
                    self.backfill.tick()  # NACKs and completed evidence, a few times a second
                try:
                    item = self._inbox.get(timeout=0.25)
                except queue.Empty:
                    if self.recorder is not None:
                        self.recorder.expire_held()
                    continue
                try:
                    self._handle(item)
                except Exception:  # one bad message must not take the control room down
                    log.exception("internal error while handling %r", type(item).__name__)
        finally:
            self.transport.stop()
            if self.viewer is not None:
                self.viewer.close()
            if self.recorder is not None:
                for summary in self.recorder.close_all():
                    self._report_evidence(summary)
                self.backfill.close_all()
            self.store.close()

    def _handle(self, item) -> None:
        match item:
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
            case _:
                pass

    def _on_message(self, topic: str, payload: bytes) -> None:
        received = self.clock.wall()
        try:
            parts = p.parse_topic(topic)
            if parts.leaf == "alert":
                alert = p.decode_alert(payload, topic_device=parts.device_id)
                self._on_alert(alert, payload, received)
            elif parts.leaf == "events":
                ev = p.decode_event(payload, topic_device=parts.device_id)
                self.out(f"EVENT  {ev.device_id}  {ev.kind}  {ev.detail}")
                self._notify("event", {"device_id": ev.device_id, "kind": ev.kind,
                                       "detail": dict(ev.detail)})
                if ev.kind == "stream_end" and isinstance(ev.detail.get("alert_id"), str):
                    self._close_evidence(ev.detail["alert_id"])
                if self.backfill is not None:
                    self.backfill.on_event(ev)
            elif parts.leaf == "media" and self.recorder is not None:
                self._on_media(parts.device_id, parts.rest, payload)
        except (p.ProtocolError, MediaError) as e:
            log.warning("rejected message on %s: %s", topic, e)
            self._notify("rejected", {"topic": topic, "reason": str(e)})

    def _on_alert(self, a: p.Alert, payload: bytes, received: float) -> None:
        latency = self._latency_ms(a, received)
        sig_ok = self._verify(a.device_id, payload)
        if sig_ok is False:
            log.warning("alert %s from %s has a bad or missing signature", a.alert_id, a.device_id)
        # Show the operator first; the durable write follows at once, and the ack
        # (which tells the kiosk "we have it") only after that write.
        known = self.store.incident(a.alert_id)
        if known is None:
            lat = f"{latency:.1f} ms" if latency is not None else "unknown"
            self.out(f"ALERT  {a.device_id}  {a.site.name}  {a.kind}  seq {a.seq}  "
                     f"latency {lat}  id {a.alert_id[:8]}")
        elif a.escalated and known.acked_at is None:
            self.out(f"ESCALATED  {a.device_id}  {a.site.name}  not acknowledged "
                     f"(announce #{a.announce})  id {a.alert_id[:8]}")
        self._notify("alert", {"alert_id": a.alert_id, "new": known is None,
                               "device_id": a.device_id, "announce": a.announce,
                               "latency_ms": latency})
        new = self.store.record_alert(a, iso8601(received), latency, sig_ok)
        if new and self.recorder is not None:
            self._received[a.alert_id] = received
        # Stored durably: tell the kiosk it may drop the alert from its outbox. Sent for
        # every announcement, since an earlier receipt may have been lost.
        self._send("receipt", a.device_id, a.alert_id, None)
        inc = self.store.incident(a.alert_id)
        try:
            self._answer(a, inc, new)
        finally:
            # After the ack: opening the evidence file takes tens of milliseconds.
            if new and self.recorder is not None:
                self._open_evidence(a.alert_id, a.device_id)

    @staticmethod
    def _latency_ms(a: p.Alert, received: float) -> float:
        """Press to arrival. From the device's wall clock when it agrees with ours (the
        announcement's sent_at is within a minute behind our clock); otherwise from the
        device's monotonic age of the press, which a skewed wall clock cannot distort
        (it then lacks only the network transit, a few ms)."""
        pressed, sent = parse_iso(a.pressed_at), parse_iso(a.sent_at)
        if pressed is not None and sent is not None and -1.0 <= received - sent <= 60.0:
            return round((received - pressed) * 1000, 2)
        log.warning("device %s wall clock is off by %.0f s: latency from its monotonic age",
                    a.device_id, received - sent if sent else float("nan"))
        return float(a.age_ms)

    def _answer(self, a: p.Alert, inc, new: bool) -> None:
        if inc is None:
            return
        if inc.acked_at is not None:
            if not new:
                # The device announced again although we acked: our ack was lost. Resend.
                self._send("ack", a.device_id, a.alert_id, inc.acked_by)
        elif self.auto_ack:
            self.acknowledge(a.alert_id, self.operator)

    def _on_media(self, device_id: str, alert_id: str, payload: bytes) -> None:
        env = decode_envelope(payload)
        if self.backfill.claims(alert_id, env):
            return  # a copy of a packet we have, or a resent one we asked for
        rp = self._reassemblers.setdefault(alert_id, Reassembler()).add(env)
        if rp is None:
            return
        if alert_id not in self._media_seen:
            self._media_seen.add(alert_id)
            inc = self.store.incident(alert_id)
            if inc is not None and inc.ended_at is None:
                # Known from before a restart of this room: keep recording its evidence.
                self._open_evidence(alert_id, inc.device_id)
            self._notify("first_media", {"alert_id": alert_id, "keyframe": rp.packet.keyframe})
        self.recorder.feed(alert_id, rp)
        self._note_timings(alert_id)
        self.backfill.record(alert_id, rp)
        if self.viewer is not None:
            self.viewer.feed(alert_id, rp)
        self._notify("media", {"alert_id": alert_id, "seq": rp.seq, "stream": int(rp.packet.stream),
                               "keyframe": rp.packet.keyframe, "preroll": rp.preroll,
                               "capture_us": rp.packet.pts_us})

    def _open_evidence(self, alert_id: str, device_id: str) -> None:
        self.recorder.open(alert_id, device_id)
        packets = self.recorder.path_for(alert_id, device_id).with_suffix(".packets")
        self.backfill.open(alert_id, device_id, packets.name)

    def _close_evidence(self, alert_id: str) -> None:
        if self.viewer is not None:
            self.viewer.end(alert_id)
        if self.recorder is None or alert_id not in self._media_seen:
            return
        try:
            summary = self.recorder.close(alert_id)
        except Exception as e:  # noqa: BLE001 - a broken file must not stop the room
            log.error("cannot finish evidence of %s: %s", alert_id, e)
            return
        self._reassemblers.pop(alert_id, None)
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
        from tools.controlroom.media import EvidenceError  # loaded with the recorder (PyAV)

        noted = self._timed.setdefault(alert_id, set())
        if len(noted) == 2:
            return
        try:
            summary = self.recorder.summary(alert_id)
        except EvidenceError:
            return  # held until its alert comes
        for what, ms in self._timings_ms(summary).items():
            at = summary.first_media_at if what == "first_media" else summary.first_keyframe_at
            if ms is not None and what not in noted:
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
                 f"{summary.preroll_s:.1f} s)  {shown}  gaps {gaps}")
        self._notify("evidence", {"path": str(summary.path), "gaps": summary.gaps,
                                  "duration_s": summary.duration_s,
                                  "preroll_s": summary.preroll_s,
                                  "first_media_ms": timings["first_media"],
                                  "first_keyframe_ms": timings["first_keyframe"]})

    # -- device supervision (heartbeats, status, Last Will) ----------------------

    def _on_supervision(self, topic: str, payload: bytes, retained: bool) -> None:
        try:
            parts = p.parse_topic(topic)
            if parts.leaf == "health":
                h = p.decode_health(payload, topic_device=parts.device_id)
                notices = self.monitor.heartbeat(h)
                self._notify("health", {"device_id": h.device_id, "seq": h.seq,
                                        "queue_depth": h.queue_depth, "faults": list(h.faults)})
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
            log.warning("rejected message on %s: %s", topic, e)
            self._notify("rejected", {"topic": topic, "reason": str(e)})
            return
        for notice in notices:
            self._device_notice(notice)

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
            self.out(f"DEVICE {n.text}")
        self._notify("device", {"device_id": n.device_id, "kind": n.kind, "text": n.text,
                                "gone_s": n.gone_s})

    def _verify(self, device_id: str, payload: bytes) -> bool | None:
        if self.device_certs is None:
            return None
        key = self._keys.get(device_id) or self._load_key(device_id)
        return False if key is None else p.verify_alert(payload, key)

    def _load_key(self, device_id: str):
        try:
            cert = x509.load_pem_x509_certificate(
                (self.device_certs / f"{device_id}.pem").read_bytes())
        except (OSError, ValueError) as e:
            log.warning("cannot load certificate of %s to check its signature: %s", device_id, e)
            return None
        self._keys[device_id] = cert.public_key()
        return self._keys[device_id]

    # -- operator actions -----------------------------------------------------

    def acknowledge(self, alert_id: str, operator: str) -> bool:
        inc = self.store.incident(alert_id)
        if inc is None or not self.store.mark(alert_id, "acked", iso8601(self.clock.wall()),
                                              operator):
            return False
        self._send("ack", inc.device_id, alert_id, operator)
        self.out(f"ACK    {inc.device_id}  {inc.site_name}  by {operator}  id {alert_id[:8]}")
        return True

    def end(self, alert_id: str, operator: str) -> bool:
        inc = self.store.incident(alert_id)
        if inc is None or not self.store.mark(alert_id, "ended", iso8601(self.clock.wall())):
            return False
        self._send("end", inc.device_id, alert_id, operator)
        self.out(f"END    {inc.device_id}  id {alert_id[:8]}")
        self._close_evidence(alert_id)
        return True

    def _send(self, kind: str, device_id: str, alert_id: str, operator: str | None,
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
            for inc in self.store.open_incidents():
                state = "acked" if inc.acked_at else "WAITING"
                self.out(f"  {inc.alert_id[:8]}  {inc.device_id}  {inc.site_name}  {state}  "
                         f"received {inc.received_at}")
            for dev, online, state, at in self.store.devices():
                self.out(f"  device {dev}  {'online' if online else 'OFFLINE'}  {state}  "
                         f"since {at}")
            return
        if verb in ("ack", "end", "extend") and args:
            matches = self.store.find(args[0])
            if len(matches) != 1:
                self.out(f"{verb}: {len(matches)} incidents match {args[0]!r}; give more of the id")
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
                    self.out("extend: seconds must be a number")
                    return
                self._send("extend", matches[0].device_id, alert_id, self.operator, seconds)
                done = True
            if not done:
                self.out(f"{verb}: incident {alert_id[:8]} is already {verb}ed")
            return
        self.out("commands: list | ack ID | end ID | extend ID [SECONDS] (ID = first chars)")

    def _notify(self, kind: str, data: dict) -> None:
        for listener in self.listeners:
            listener(kind, data)
