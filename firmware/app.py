"""The kiosk runtime: thin glue around the pure state machine.

One thread (the caller of `run()`) owns the state. Everything else — paho's
network thread, the button backend's thread, the simulator's keyboard thread —
only puts items on `self._inbox`. Actions from `step()` are executed here, in
order; the machine guarantees PersistAlert comes before SetIndicator(SENDING).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pinkbutton.firmware import machine as m
from pinkbutton.firmware import monitor as mon
from pinkbutton.firmware import protocol as p
from pinkbutton.firmware import transport as t
from pinkbutton.firmware.alertid import AlertIds
from pinkbutton.firmware.backoff import Backoff
from pinkbutton.firmware.config import Config
from pinkbutton.firmware.connectlog import ConnectFailureLog
from pinkbutton.firmware.diag.control import ControlServer
from pinkbutton.firmware.health import THERMAL_ZONE, HealthReporter, read_temperature_c
from pinkbutton.firmware.outbox import BOOT_ID, Outbox, OutboxError
from pinkbutton.firmware.sdnotify import SdNotifier
from pinkbutton.firmware.streaming import MediaService
from pinkbutton.firmware.version import FIRMWARE_VERSION
from pinkbutton.firmware.watchdog import StageWatchdog
from pinkbutton.hal.base import (
    AudioChunk,
    Button,
    ButtonEvent,
    Camera,
    HalError,
    Indicator,
    Microphone,
    Pattern,
    Sounder,
    describe_error,
)
from pinkbutton.hal.clock import Clock, iso8601

log = logging.getLogger("pinkbutton.kiosk")
# An alert PUBACKed with "No matching subscribers" is announced again after this long (the
# room is reconnecting), then every retry_s as usual while no receipt comes.
NO_LISTENER_RETRY_S = 0.5
# A self-test waits at most this long for the running pipeline's frames and audio.
SELFTEST_CAPTURE_S = 5.0
SELFTEST_AUDIO_S = 0.5  # of microphone audio analysed
# The state thread's longest sleep when nothing is due: everything that must happen has a
# deadline or wakes it through the inbox; this only paces the stage watchdog's checks.
IDLE_TURN_S = 1.0

Listener = Callable[[str, dict], None]


@dataclass(frozen=True, slots=True)
class _Wake:
    """A raw button edge happened: poll the button."""


@dataclass(frozen=True, slots=True)
class _Pending:
    what: str  # alert | status | event
    topic: str
    alert_id: str | None = None


def settings_from(config: Config) -> m.Settings:
    a = config.alert
    return m.Settings(
        ack_timeout_s=a.ack_timeout_s, stream_s=a.stream_s, cooldown_s=a.cooldown_s,
        retry_s=a.retry_s,
    )


def load_signing_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    """The device's TLS key also signs alerts (end-to-end integrity past the broker)."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        log.warning("alerts will be unsigned: cannot load key %s: %s", path, e)
        return None
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


class Kiosk:
    def __init__(
        self,
        config: Config,
        button: Button,
        indicator: Indicator,
        *,
        clock: Clock | None = None,
        listeners: list[Listener] | None = None,
        camera: Camera | None = None,
        microphone: Microphone | None = None,
        notifier: SdNotifier | None = None,
        tamper: Button | None = None,
        thermal_zone: str | Path = THERMAL_ZONE,
        sounder: Sounder | None = None,
    ) -> None:
        """`sounder`: the loudspeaker of the self-test's acoustic loop (media.speaker_device);
        None: no loop test."""
        self.config = config
        self._thermal_zone = thermal_zone
        self.sounder = sounder
        self.device_id = config.device.id
        self.clock = clock or Clock()
        self.button = button
        self.indicator = indicator
        self.listeners: list[Listener] = list(listeners or [])
        self._inbox: queue.SimpleQueue = queue.SimpleQueue()
        self._pending: dict[int, _Pending] = {}
        self._stop = threading.Event()
        self._connect_log = ConnectFailureLog(log, self.clock)
        self.outbox, outbox_fault = Outbox.open_or_recover(config.device.state_dir / "outbox.db")
        if outbox_fault is not None:
            log.error("%s", outbox_fault)
            self._inbox.put(m.FaultRaised("outbox_damaged", outbox_fault))
        self.state = m.initial_state(settings_from(config), next_seq=self.outbox.next_seq())
        self._started_mono = self.clock.monotonic()
        self._ids = AlertIds.open(config.device.state_dir, BOOT_ID)
        # Alerts the control room has not confirmed (mirror of the outbox's pending rows).
        self._unconfirmed: dict[str, m.AlertDraft] = {}
        self._redeliver_at: float | None = None
        self._key = load_signing_key(config.broker.key)
        self._site = p.Site(
            config.device.site_id, config.device.site_name, config.device.lat, config.device.lon
        )
        b = config.broker
        self.transport = t.MqttTransport(
            client_id=self.device_id,
            host=b.host,
            port=b.port,
            tls=t.TlsFiles(b.ca, b.cert, b.key),
            on_event=self._on_transport_event,
            subscriptions=[(p.topic(self.device_id, "cmd"), 1)],
            will=t.Will(p.topic(self.device_id, "status"), self._status_payload("offline", False)),
            keepalive_s=b.keepalive_s,
            session_expiry_s=b.session_expiry_s,
            connect_timeout_s=b.connect_timeout_s,
            backoff=Backoff(b.backoff_min_s, b.backoff_max_s),
            fallbacks=b.fallback_hosts,
        )
        button.wakeup = lambda: self._inbox.put(_Wake())
        self.media: MediaService | None = None
        if camera is not None or microphone is not None:
            self.media = MediaService(
                config.media, camera, microphone, device_id=self.device_id,
                publish=self.transport.publish, clock=self.clock,
                on_fault=lambda name, why: self._inbox.put(m.FaultRaised(name, why)),
                evidence_dir=config.device.state_dir / "evidence",
            )
        self._init_supervision(notifier or SdNotifier())
        self._init_control()
        self._init_monitor(tamper)

    # -- called from any thread ---------------------------------------------

    def press(self, kind: str | None = None) -> None:
        """Inject a debounced press as if the button produced it (simulator, bench)."""
        self._inbox.put(("press", kind))

    def report_fault(self, name: str, detail: str) -> None:
        """Raise a fault from any thread (e.g. a device that could not be opened)."""
        self._inbox.put(m.FaultRaised(name, detail))

    def stop(self) -> None:
        self._stop.set()
        self._inbox.put(_Wake())

    # -- state thread -------------------------------------------------------

    def run(self) -> None:
        """Run until stop(); then say goodbye to the broker and release hardware."""
        self.transport.start()
        self.control.start()
        if self.media is not None:
            self.media.pipeline.on_beat = lambda: self.watchdog.beat("media-encoder")
            self.watchdog.register("media-encoder", self.config.health.stage_timeout_s,
                                   self._restart_encoder)
            self.media.start()
        self._dispatch(m.Boot())
        self._replay_outbox()
        self._monitor_start()  # after the alerts to replay: no detector goes first
        # Booted: outbox open, this thread running. Not waiting for the broker: a kiosk
        # without a link still takes presses and must not be killed by systemd for it.
        self.notifier.ready()
        try:
            while not self._stop.is_set():
                self._wait_and_handle()
        finally:
            self._shutdown()

    def _wait_and_handle(self) -> None:
        due = (m.next_deadline(self.state), self.button.next_deadline(), self._redeliver_at,
               self._supervision_deadline(), self._monitor_deadline())
        deadlines = [d for d in due if d is not None]
        timeout = IDLE_TURN_S
        if deadlines:
            timeout = min(timeout, max(0.0, min(deadlines) - self.clock.monotonic()))
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            item = None
        while item is not None:
            self._handle(item)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                item = None
        edges = self.button.poll()
        for ev in edges:
            if ev.pressed:
                self._press(None, ev.at)
            else:
                self._dispatch(m.Released())
        self._monitor_turn(edges)  # after the presses: no detector ever goes first
        self._dispatch(m.Tick())
        if self._redeliver_at is not None and self.clock.monotonic() >= self._redeliver_at:
            self._redeliver()
        self._supervise()

    def _replay_outbox(self) -> None:
        """After a crash or power loss: alerts the room has not confirmed are re-announced
        until its receipt, and the newest incident, if recent and never ended (confirmed or
        not), becomes the running incident again, so its stream goes on."""
        try:
            pending = self.outbox.pending_with_boot()
            open_incident = self.outbox.open_incident()
        except Exception as e:  # noqa: BLE001 - a damaged outbox must not stop the kiosk
            log.error("cannot read the outbox: %s", e)
            return
        now = self.clock.monotonic()
        for d, this_boot in pending:
            self._unconfirmed[d.alert_id] = self._on_this_clock(d, this_boot)
        if pending:
            first = self._unconfirmed[pending[0][0].alert_id]
            oldest = max(0.0, now - first.pressed_mono)
            log.warning("replaying %d unconfirmed alert(s) from the outbox, oldest pressed "
                        "%.0f s ago", len(pending), oldest)
            self._notify("replay", {"count": len(pending), "oldest_age_s": round(oldest, 1)})
            self._redeliver_at = now
            self.transport.hurry(True)
        newest = self._unconfirmed[pending[-1][0].alert_id] if pending else None
        if open_incident is not None and (newest is None or open_incident[0].seq > newest.seq):
            newest = self._on_this_clock(*open_incident)
            log.warning("alert %s was confirmed by the control room but its incident never "
                        "ended (the kiosk stopped mid-incident)", newest.alert_id)
        if newest is not None and now - newest.pressed_mono < self.state.settings.stream_s:
            self._dispatch(m.Resume(newest))

    def _on_this_clock(self, d: m.AlertDraft, this_boot: bool) -> m.AlertDraft:
        now = self.clock.monotonic()
        if this_boot and d.pressed_mono <= now:
            # Same boot (the process restarted): monotonic time is still valid and immune
            # to wall-clock steps.
            return d
        # An earlier boot: only the wall clock relates then and now.
        return replace(d, pressed_mono=now - max(0.0, self.clock.wall() - d.pressed_wall))

    def _redeliver(self) -> None:
        """Re-announce unconfirmed alerts every retry_s until the room's receipt removes them.

        The running incident is left to the machine while it is still undelivered (it
        retries until PUBACK). Once the broker has PUBACKed it, a missing receipt means the
        broker lost it (killed before persisting) or nobody was subscribed: re-announce it
        here too, or it would wait for the ack timeout's escalation."""
        self._redeliver_at = None
        if not self._unconfirmed:
            return
        self._redeliver_at = self.clock.monotonic() + self.state.settings.retry_s
        if not self.transport.connected:
            return
        incident = self.state.incident
        for alert_id, draft in list(self._unconfirmed.items()):
            if incident is None or alert_id != incident.draft.alert_id:
                self._publish_alert(draft)
            elif incident.delivered:
                self._publish_alert(incident.draft)  # its latest announce, escalation and presses

    def _confirmed(self, alert_id: str | None) -> None:
        if alert_id is None or alert_id not in self._unconfirmed:
            return
        try:
            self.outbox.mark_received(alert_id)
        except OutboxError as e:
            # The room has it; the worst case is one harmless replay after a reboot.
            # Re-announcing it every retry_s while the disk is full would be worse.
            log.error("%s", e)
        del self._unconfirmed[alert_id]
        if not self._unconfirmed:
            self.transport.hurry(False)
        self._notify("receipt", {"alert_id": alert_id})

    def _handle(self, item) -> None:
        match item:
            case _Wake():
                pass
            case ("press", kind):
                self._press(kind, self.clock.monotonic())
            case ("test_alert", alert_id, at):
                self._test_alert_start(alert_id, at)
            case ("stream_end", alert_id, stats):
                detail = {"alert_id": alert_id, **stats}
                ev = p.DeviceEvent(self.device_id, "stream_end", iso8601(self.clock.wall()), detail)
                self._publish("event", p.topic(self.device_id, "events"), p.encode_event(ev))
                self._notify("stream_end", detail)
            case ("selftest_captured", frames, audio, loop):
                self._selftest_finish(frames, audio, loop)
            case ("monitor", kind, at, value):
                self._observed(kind, at, value)
            case m.SelftestDone() | m.FaultRaised() | m.FaultCleared():
                self._dispatch(item)
            case t.Connected(session_present=sp, broker=broker):
                self._connect_log.connected()
                self._broker = broker or f"{self.transport.host}:{self.transport.port}"
                log.info("connected to broker %s (session %s)", self._broker,
                         "resumed" if sp else "new")
                self._notify("connected", {"broker": self._broker})
                self._dispatch(m.Connected())
                self.health.link_changed(True)
                self._send_heartbeat()  # at once: the room learns we are back without delay
                if self._unconfirmed:
                    self._redeliver_at = self.clock.monotonic()
            case t.Disconnected(reason=r):
                log.warning("lost broker connection: %s", r)
                self._notify("disconnected", {"reason": r})
                self._dispatch(m.Disconnected(r))
                self.health.link_changed(False)
            case t.ConnectFailed(reason=r, retry_in=d):
                self._connect_log.failed(r, d)
                self._notify("connect_failed", {"reason": r, "retry_in": d})
                if self.state.online:
                    self._dispatch(m.Disconnected(r))
            case t.PublishResult():
                self._on_publish_result(item)
            case t.SubscribeResult(topic=tp, ok=False, reason=r):
                log.error("broker denied subscription to %s: %s", tp, r)
                self._dispatch(m.FaultRaised("cmd_subscribe_denied", r))
            case t.SubscribeResult():
                pass
            case t.Message(topic=tp, payload=payload):
                self._on_message(tp, payload)
            case _:
                log.error("internal: unexpected inbox item %r", item)

    def _press(self, kind: str | None, at: float, alert_id: str | None = None) -> None:
        now = self.clock.monotonic()
        # Wall time of the contact itself, not of the debounce confirmation.
        wall = self.clock.wall() - max(0.0, now - at)
        self._notify("pressed", {"at": at, "confirmed_after_ms": round((now - at) * 1000, 1)})
        ev = m.Pressed(alert_id or self._ids.new(at), wall, kind or self.config.alert.kind)
        self._dispatch(ev, now=at)

    def _on_publish_result(self, r: t.PublishResult) -> None:
        pending = self._pending.pop(r.mid, None)
        if pending is None:
            if self.media is not None:  # media's, if it beat its publish() returning
                self.media.acked(r.mid)
            return
        if not r.ok:
            log.error("broker denied publish to %s: %s", pending.topic, r.reason)
            self._notify("publish_denied", {"topic": pending.topic, "reason": r.reason})
        # Only our own alerts (from _publish_alert) carry an id; nothing else is an alert result.
        if pending.what == "alert" and pending.alert_id is not None:
            if r.ok:
                self._mark_delivered(pending.alert_id)
            if r.no_subscribers:
                # No control room was subscribed (it is reconnecting, e.g. after a broker
                # restart): that copy reached nobody. Announce again soon, not after retry_s.
                log.warning("alert %s reached the broker but no control room is subscribed; "
                            "re-announcing in %.1f s", pending.alert_id, NO_LISTENER_RETRY_S)
                soon = self.clock.monotonic() + NO_LISTENER_RETRY_S
                if self._redeliver_at is None or soon < self._redeliver_at:
                    self._redeliver_at = soon
            self._dispatch(m.AlertPublished(pending.alert_id, r.ok, r.reason))

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic != p.topic(self.device_id, "cmd"):
            log.warning("ignored message on unexpected topic %s", topic)
            return
        try:
            cmd = p.decode_cmd(payload)
        except p.ProtocolError as e:
            log.warning("rejected cmd: %s", e)
            self._notify("cmd_rejected", {"reason": str(e)})
            return
        if cmd.cmd in ("receipt", "ack", "dispatched"):
            self._adopt_if_lost(cmd.alert_id)
        if cmd.cmd == "receipt":  # the room has stored it: it may leave the outbox
            self._confirmed(cmd.alert_id)
            return
        if cmd.cmd in ("nack", "evidence_complete"):  # evidence backfill: MediaService's job
            if self.media is not None:
                self.media.on_cmd(cmd)
            return
        log.info("cmd %s for %s from %s", cmd.cmd, cmd.alert_id, cmd.operator or "control room")
        self._notify("cmd", {"cmd": cmd.cmd, "alert_id": cmd.alert_id, "operator": cmd.operator})
        if cmd.cmd in ("ack", "dispatched", "end"):
            self._confirmed(cmd.alert_id)  # the room only acts on what it has stored
        self._dispatch(m.Command(cmd.cmd, cmd.alert_id, cmd.extend_s, cmd.operator))

    def _adopt_if_lost(self, alert_id: str | None) -> None:
        """The room has an alert this kiosk published but never committed (the commit failed,
        then the process restarted): if the id is this kiosk's own from this boot (see
        firmware/alertid.py), pressed before this process started and less than stream_s
        ago, commit it now and resume its incident, as a replay from the outbox would."""
        if alert_id is None or alert_id in self._unconfirmed:
            return
        incident = self.state.incident
        if incident is not None and incident.draft.alert_id == alert_id:
            return
        pressed = self._ids.pressed_mono(alert_id)
        now = self.clock.monotonic()
        if pressed is None or not (now - self.state.settings.stream_s < pressed
                                   < self._started_mono):
            return
        try:
            if self.outbox.knows(alert_id):
                return
        except Exception as e:  # noqa: BLE001 - a damaged outbox must not stop the kiosk
            log.error("cannot read the outbox: %s", e)
        wall = self.clock.wall()
        draft = m.AlertDraft(
            alert_id=alert_id, seq=self.state.next_seq, kind=self.config.alert.kind,
            pressed_wall=wall - (now - pressed), pressed_mono=pressed, presses=1, announce=1,
            escalated=False, follows=None,
        )
        log.warning("alert %s is at the control room but not in the outbox (published, then "
                    "the kiosk restarted before it was committed): taking its incident back",
                    alert_id)
        try:
            self.outbox.put(draft, wall)
        except OutboxError as e:
            log.error("%s", e)
        self._unconfirmed[alert_id] = draft
        self._notify("adopted", {"alert_id": alert_id, "age_s": round(now - pressed, 3)})
        self._dispatch(m.Resume(draft))

    def _dispatch(self, event: m.Event, now: float | None = None) -> None:
        before = self.state.mode
        self.state, actions = m.step(self.state, event, self.clock.monotonic() if now is None else now)
        if self.state.mode != before:
            log.info("state %s -> %s", before, self.state.mode)
            self._notify("mode", {"from": str(before), "to": str(self.state.mode)})
        # In the machine's order: PersistAlert (the fsync) comes before PublishAlert, so the
        # room never has an alert that a crash could take out of the outbox.
        for action in actions:
            self._execute(action)

    def _execute(self, a) -> None:
        match a:
            case m.SetIndicator(pattern=pat):
                self.indicator.show(pat)
                self._notify("indicator", {"pattern": str(pat)})
            case m.PersistAlert(draft=d):
                self._unconfirmed[d.alert_id] = d
                self.transport.hurry(True)  # offline: reconnect now, not after the backoff
                if self._redeliver_at is None:
                    self._redeliver_at = self.clock.monotonic() + self.state.settings.retry_s
                try:
                    self.outbox.put(d, self.clock.wall())
                except OutboxError as e:
                    # Still publish: a full disk must not silence the alert.
                    log.error("%s", e)
                    self._inbox.put(m.FaultRaised("outbox_write_failed", str(e)))
                self._notify("persisted", {"alert_id": d.alert_id, "seq": d.seq})
            case m.PublishAlert(draft=d):
                self._publish_alert(d)
            case m.PublishStatus(mode=mode):
                self._publish(
                    "status", p.topic(self.device_id, "status"),
                    self._status_payload(str(mode), True), retain=True,
                )
            case m.PublishEvent(kind=kind, detail=detail):
                ev = p.DeviceEvent(self.device_id, kind, iso8601(self.clock.wall()), dict(detail))
                self._publish("event", p.topic(self.device_id, "events"), p.encode_event(ev))
            case m.RunSelftest():
                self._selftest_start()
            case m.StartStream(alert_id=alert_id):
                if self.media is not None:
                    self.media.start_stream(alert_id)
                    self._watch_sender()
                self._notify("stream_start", {"alert_id": alert_id})
            case m.StopStream(alert_id=alert_id):
                try:  # over: a restart must not resume it
                    self.outbox.mark_ended(alert_id)
                except OutboxError as e:
                    log.error("%s", e)
                self.watchdog.unregister("media-sender")
                if self.media is not None:
                    self.media.stop_stream(lambda aid, st: self._inbox.put(("stream_end", aid, st)))
                else:
                    self._inbox.put(("stream_end", alert_id, {}))
            case m.Log(level=level, message=msg):
                log.log(logging.getLevelName(level.upper()), "%s", msg)
            case _:
                log.error("internal: unknown action %r", a)

    def _publish_alert(self, d: m.AlertDraft) -> None:
        now = self.clock.monotonic()
        alert = p.Alert(
            device_id=self.device_id, alert_id=d.alert_id, seq=d.seq, kind=d.kind,
            pressed_at=iso8601(d.pressed_wall), pressed_mono=round(d.pressed_mono, 6),
            age_ms=max(0, int((now - d.pressed_mono) * 1000)), announce=d.announce,
            escalated=d.escalated, presses=d.presses, site=self._site,
            firmware=FIRMWARE_VERSION, sent_at=iso8601(self.clock.wall()), follows=d.follows,
        )
        topic = p.topic(self.device_id, "alert")
        self._publish("alert", topic, p.encode_alert(alert, self._key), alert_id=d.alert_id)
        if d.escalated:
            log.warning("alert %s not acknowledged: re-announced (#%d, escalated)",
                        d.alert_id, d.announce)
        self._notify("alert_sent", {"alert_id": d.alert_id, "announce": d.announce})

    def _publish(self, what: str, topic: str, payload: bytes, *, retain: bool = False,
                 alert_id: str | None = None) -> int | None:
        try:
            mid = self.transport.publish(topic, payload, qos=1, retain=retain)
        except t.TransportError as e:
            log.error("%s", e)
            return None
        self._pending[mid] = _Pending(what, topic, alert_id)
        return mid

    def _on_transport_event(self, ev: object) -> None:
        """Network thread: everything goes to the state thread's inbox, except the PUBACK
        of a media publish in flight, which goes straight to the media sender (its window and
        RTT): a streaming kiosk gets 60 a second, and through the inbox each one woke the
        state thread for a whole turn. Anything else (an alert's, or a media PUBACK that beat
        its publish() returning) takes the inbox. No lock of ours is held across a publish
        here: paho calls this holding its own message lock, which publish() takes too."""
        if isinstance(ev, t.PublishResult) and self.media is not None \
                and self.media.ack_if_inflight(ev.mid):
            return
        self._inbox.put(ev)

    def _mark_delivered(self, alert_id: str) -> None:
        try:
            self.outbox.mark_delivered(alert_id)
        except OutboxError as e:
            log.error("%s", e)
        self._notify("delivered", {"alert_id": alert_id})

    def _status_payload(self, state: str, online: bool) -> bytes:
        return p.encode_status(p.Status(
            self.device_id, online, state, FIRMWARE_VERSION, iso8601(self.clock.wall())))

    # -- self-test: at boot, daily, on `cmd selftest` (one function for all three) ---------

    def _selftest_start(self) -> None:
        """State thread: capture what the running camera and microphone deliver over the
        next moments on a short thread (never the state thread: a press must not wait), then
        finish on the state thread with the faults raised by then."""
        if self._selftest_running:
            log.info("selftest already running; not started twice")
            return
        self._selftest_running = True
        pipeline = self.media.pipeline if self.media is not None else None
        want_video = pipeline is not None and pipeline.camera is not None
        want_audio = pipeline is not None and pipeline.microphone is not None
        since = self.clock.monotonic()

        def capture() -> None:
            frames, audio, loop = [], [], None
            end = self.clock.monotonic() + SELFTEST_CAPTURE_S
            try:
                while pipeline is not None and not self._stop.is_set():
                    frames, audio = pipeline.recent(since)
                    heard = sum(len(c.samples) / 2 / c.sample_rate for c in audio)
                    if ((not want_video or len(frames) >= 3)
                            and (not want_audio or heard >= SELFTEST_AUDIO_S)):
                        break
                    if self.clock.monotonic() >= end:
                        break
                    self._stop.wait(0.05)
                # Not into a press's audio: with an incident running there is no loop test.
                if (want_audio and self.sounder is not None and pipeline is not None
                        and self.state.incident is None):
                    loop = self._selftest_loop(pipeline)
            finally:
                self._inbox.put(("selftest_captured", frames if want_video else None,
                                 audio if want_audio else None, loop))

        threading.Thread(target=capture, name="selftest-capture", daemon=True).start()

    def _selftest_loop(self, pipeline) -> list[AudioChunk] | str:
        """selftest-capture thread: the acoustic loop on the RUNNING microphone (never
        opened twice): the sounder plays the test tone, and the pipeline's recent audio
        captured while it sounded is returned (a str: why the tone could not be played)."""
        from pinkbutton.firmware.diag.checks import LOOP_TONE_HZ, LOOP_TONE_S

        assert self.sounder is not None  # the caller checks
        start = self.clock.monotonic()
        try:
            self.sounder.play_tone(LOOP_TONE_HZ, LOOP_TONE_S)
        except Exception as e:  # noqa: BLE001 - a broken speaker fails the check, nothing else
            return describe_error(e)
        stop = self.clock.monotonic()
        deadline = stop + 2.0
        chunks: list[AudioChunk] = []
        while not self._stop.is_set():
            chunks = pipeline.recent(start)[1]
            last = chunks[-1] if chunks else None
            if last is not None and last.pts_us / 1e6 + last.frames / last.sample_rate >= stop:
                break
            if self.clock.monotonic() >= deadline:
                break
            self._stop.wait(0.02)
        skip = start + 0.1  # the output's latency: the tone's steady part only
        during = [c for c in chunks if c.pts_us / 1e6 >= skip
                  and c.pts_us / 1e6 + c.frames / c.sample_rate <= stop + 1e-6]
        return during if sum(c.frames for c in during) >= 4800 else chunks

    def _selftest_finish(self, frames, audio, loop=None) -> None:
        from datetime import UTC, datetime

        from pinkbutton.firmware.diag.inservice import run_checks

        self._selftest_running = False
        pressed = self.button.is_pressed
        checks = run_checks(button_pressed=pressed, faults=self.state.faults, frames=frames,
                            audio=audio, loop=loop, state_dir=self.config.device.state_dir,
                            cert_not_after=self._cert_expiry,
                            now=datetime.fromtimestamp(self.clock.wall(), UTC))
        bad = [c for c in checks if not c.ok]
        self._selftest_at, self._selftest_ok = self.clock.wall(), not bad
        self._selftest_failed = [c.name for c in bad]
        why = "; ".join(f"{c.name}: {c.detail}" for c in bad)[:500]
        if bad:
            log.warning("selftest failed: %s", why)
        else:
            log.info("selftest passed: %s", ", ".join(c.name for c in checks))
        self._notify("selftest", {"ok": not bad, "failed": self._selftest_failed})
        # held during the test: wiring short or jammed
        raised = frozenset({"button_stuck"}) if pressed else frozenset()
        self._dispatch(m.SelftestDone(raised, frozenset(c.name for c in bad), why))
        self._monitor_adopt(raised)  # the monitor clears it on release

    def _daily_selftest(self) -> None:
        """Once a day at `health.selftest_at` plus this device's offset; an incident
        defers it until the kiosk is idle again."""
        if self._daily_next is None or self.clock.wall() < self._daily_next:
            return
        if self.state.mode not in (m.Mode.IDLE, m.Mode.FAULT):
            return
        from pinkbutton.firmware.diag.inservice import next_daily

        h = self.config.health
        assert h.selftest_at is not None  # _daily_next is None otherwise
        self._daily_next = next_daily(self.clock.wall(), h.selftest_at, self._daily_offset)
        log.info("daily selftest; the next at %s", iso8601(self._daily_next))
        self._dispatch(m.Command("selftest", None, None, None))

    def _notify(self, kind: str, data: dict) -> None:
        for listener in self.listeners:
            listener(kind, data)

    def _shutdown(self) -> None:
        self.notifier.stopping()
        self.control.stop()
        if self.media is not None:
            self.media.close()
        if self.transport.connected:
            payload = self._status_payload("offline", False)
            mid = self._publish("status", p.topic(self.device_id, "status"), payload,
                                retain=True)
            if mid is not None:
                self._await_mid(mid, 1.0)
        self.transport.stop()
        self.indicator.show(Pattern.OFF)
        self.outbox.close()
        self.notifier.close()

    def _await_mid(self, mid: int, timeout: float) -> None:
        end = self.clock.monotonic() + timeout
        while self.clock.monotonic() < end:
            try:
                item = self._inbox.get(timeout=0.05)
            except queue.Empty:
                continue
            if isinstance(item, t.PublishResult) and item.mid == mid:
                return


    # -- supervision: heartbeat, stage watchdog, systemd (state thread) --------

    def _init_supervision(self, notifier: SdNotifier) -> None:
        h = self.config.health
        self._cert_expiry = _cert_expiry(self.config.broker.cert)
        self.health = HealthReporter(
            self.device_id, h.interval_s, self.clock, self.config.device.state_dir,
            thermal_zone=self._thermal_zone, cert_not_after=self._cert_expiry.timestamp() if self._cert_expiry else None,
            site=self._site)
        self._selftest_running = False
        self._selftest_failed: list[str] = []
        self._daily_next: float | None = None
        self._daily_offset = 0.0
        if h.selftest_at is not None:
            from pinkbutton.firmware.diag.inservice import device_offset_s, next_daily

            self._daily_offset = device_offset_s(self.device_id, h.selftest_spread_min * 60)
            self._daily_next = next_daily(self.clock.wall(), h.selftest_at, self._daily_offset)
        self.notifier = notifier
        self.watchdog = StageWatchdog(self.clock, self._stage_stuck)
        self._stuck_stages: set[str] = set()
        self._restarting: set[str] = set()
        self._selftest_at: float | None = None
        self._selftest_ok: bool | None = None
        self._broker = f"{self.transport.host}:{self.transport.port}"
        self._status_line = ""
        self._ping_every = notifier.watchdog_interval_s()  # None: systemd does not watch us
        self._next_ping = self.clock.monotonic()

    def _supervision_deadline(self) -> float | None:
        due = [self._next_ping] if self._ping_every is not None else []
        if self.state.online:
            due.append(self.health.next_due())
        return min(due) if due else None

    def _supervise(self) -> None:
        now = self.clock.monotonic()
        self.watchdog.check(now)
        healthy = self.watchdog.healthy(now)
        if healthy and self._stuck_stages:
            log.info("stages %s are making progress again", ", ".join(sorted(self._stuck_stages)))
            self._stuck_stages.clear()
            self._inbox.put(m.FaultCleared("stage_stuck"))
        if self.state.online and self.health.due(now):
            self._send_heartbeat()
        self._daily_selftest()
        line = f"{self.state.mode}, " + (f"online via {self._broker}" if self.state.online
                                          else "offline, reconnecting")
        if self.state.faults:
            line += f", faults: {', '.join(sorted(self.state.faults))}"
        if line != self._status_line:
            self._status_line = line
            self.notifier.status(line)
        # Pinged from this loop, so a stuck state thread stops the pings as surely as a
        # stuck media stage does: either way systemd restarts the kiosk.
        if self._ping_every is not None and now >= self._next_ping:
            self._next_ping = now + self._ping_every
            if healthy:
                self.notifier.watchdog()

    def _send_heartbeat(self) -> None:
        store = self.media.store if self.media is not None else None
        h = self.health.build(self.state, self._queue_depth(), self._selftest_at,
                              self._selftest_ok, store.pending() if store is not None else ())
        try:  # QoS 0, not retained: a heartbeat is only worth something when it is fresh
            self.transport.publish(p.topic(self.device_id, "health"), p.encode_health(h), qos=0)
        except t.TransportError as e:
            log.warning("heartbeat not sent: %s", e)
            return
        self._notify("health", {"seq": h.seq, "queue_depth": h.queue_depth})

    def _queue_depth(self) -> int:
        depth = len(self._unconfirmed)
        sender = self.media.sender if self.media is not None else None
        if sender is not None:
            depth += sender.stats().queue_packets
        return depth

    def _stage_stuck(self, name: str, silent_for: float) -> None:
        self._stuck_stages.add(name)
        self.report_fault("stage_stuck", f"{name} made no progress for {silent_for:.0f} s; "
                                         "restarting it")

    def _restart_encoder(self) -> None:
        assert self.media is not None  # registered with the watchdog only when there is media
        pipeline = self.media.pipeline

        def restart() -> None:
            pipeline.stop()  # waits (bounded) for the stuck thread, stops capture
            if not self._stop.is_set():  # not while the kiosk is shutting down
                pipeline.start()

        self._in_background("media-encoder", restart)

    def _watch_sender(self) -> None:
        sender = self.media.sender if self.media is not None else None
        if sender is None:
            return
        sender.on_beat = lambda: self.watchdog.beat("media-sender")
        self.watchdog.register("media-sender", self.config.health.stage_timeout_s,
                               lambda: self._in_background("media-sender",
                                                           lambda: _revive_sender(sender)))

    def _in_background(self, name: str, work: Callable[[], object]) -> None:
        """Run a stage restart off the state thread: joining a stuck thread can take
        seconds, and alerts must not wait for that."""
        if name in self._restarting:
            return

        def run() -> None:
            try:
                work()
            except Exception as e:  # noqa: BLE001 - the process watchdog is the last resort
                log.error("restarting %s failed: %s: %s", name, type(e).__name__, e)
            finally:
                self._restarting.discard(name)

        self._restarting.add(name)
        threading.Thread(target=run, name=f"restart-{name}", daemon=True).start()

    # -- running-fault detection (issue 11 item 5): firmware/monitor.py ------------------
    # The detectors live on the state thread and cost O(1) per observation; the statistics
    # (a frame's small luma grid, the audio level, the temperature file) are made on the
    # `fault-sampler` thread, so a press never waits for any of them.

    def _init_monitor(self, tamper: Button | None) -> None:
        h = self.config.health
        self.monitor = mon.Monitor(mon.MonitorSettings(
            button_stuck_s=h.button_stuck_s, camera_covered_s=h.camera_covered_s,
            camera_frozen_s=h.camera_frozen_s, mic_dead_s=h.mic_dead_s,
            max_temp_c=h.max_temp_c))
        self.tamper = tamper
        if tamper is not None:
            tamper.wakeup = lambda: self._inbox.put(_Wake())

    def _monitor_start(self) -> None:
        """State thread, at start: the levels as they are now, then the sampling thread."""
        now = self.clock.monotonic()
        self._apply_faults(self.monitor.button(now, self.button.is_pressed))
        if self.tamper is not None:
            self._apply_faults(self.monitor.tamper(now, self.tamper.is_pressed))
        if self.media is None and not Path(self._thermal_zone).exists():
            # Nothing to sample (no camera, no microphone, no thermal sensor): no thread
            # waking every second for nothing (a simulator runs a thousand such kiosks).
            log.info("fault sampling: no camera, microphone or thermal sensor (%s) to watch",
                     self._thermal_zone)
            return
        threading.Thread(target=self._sample_faults, name="fault-sampler", daemon=True).start()

    def _monitor_deadline(self) -> float | None:
        due = [self.monitor.next_deadline()]
        if self.tamper is not None:
            due.append(self.tamper.next_deadline())
        return min((d for d in due if d is not None), default=None)

    def _monitor_turn(self, edges: list[ButtonEvent]) -> None:
        """State thread, each loop turn after the presses were handled."""
        for ev in edges:
            self._apply_faults(self.monitor.button(ev.at, ev.pressed))
        if self.tamper is not None:
            for ev in self.tamper.poll():
                self._apply_faults(self.monitor.tamper(ev.at, ev.pressed))
        self._apply_faults(self.monitor.poll(self.clock.monotonic()))

    def _monitor_adopt(self, raised: frozenset[str]) -> None:
        for name in raised:
            self._apply_faults(self.monitor.adopt(self.clock.monotonic(), name))

    def _observed(self, kind: str, at: float, value) -> None:
        """State thread: an observation made by the sampling thread."""
        if kind == "frame":
            self._apply_faults(self.monitor.frame(at, value))
        elif kind == "audio":
            self._apply_faults(self.monitor.audio(at, value))
        elif kind == "temperature":
            self._apply_faults(self.monitor.temperature(at, value))

    def _apply_faults(self, transitions: list[mon.Transition]) -> None:
        for tr in transitions:
            self._dispatch(m.FaultRaised(tr.name, tr.detail) if tr.raised
                           else m.FaultCleared(tr.name))

    def _sample_faults(self) -> None:
        """`fault-sampler` thread (lowered priority): every `health.monitor_interval_s`, the
        newest frame the RUNNING pipeline captured (the camera is never opened twice) as a
        small luma grid, the microphone's level since the last sample, the SoC temperature;
        each handed to the state thread as an observation."""
        interval = self.config.health.monitor_interval_s
        pipeline = self.media.pipeline if self.media is not None else None
        previous: mon.FrameSample | None = None
        last_pts: int | None = None
        since = self.clock.monotonic()
        failed = False
        _lower_priority()
        while not self._stop.wait(interval):
            try:
                now = self.clock.monotonic()
                if pipeline is not None:
                    frames, audio = pipeline.recent(since)
                    since = now
                    # A frame seen before is not sampled again: it would look "frozen".
                    if frames and frames[-1].pts_us != last_pts:
                        last_pts = frames[-1].pts_us
                        previous = mon.sample_frame(frames[-1], previous)
                        self._inbox.put(("monitor", "frame", now, previous))
                    level = mon.audio_level_dbfs(audio)
                    if level is not None:
                        self._inbox.put(("monitor", "audio", now, level))
                celsius = read_temperature_c(self._thermal_zone)
                if celsius is not None:
                    self._inbox.put(("monitor", "temperature", now, celsius))
            except Exception as e:  # noqa: BLE001 - detection must not die, nor take the kiosk
                if not failed:
                    log.error("fault sampling failed: %s (retrying every %.1f s)",
                              describe_error(e), interval)
                failed = True

    # -- control socket (pinkbutton-diag status): its own thread, reads only ----------

    def _init_control(self) -> None:
        self._last_alert: dict | None = None
        self._cert_not_after: str | None = (
            iso8601(self._cert_expiry.timestamp()) if self._cert_expiry is not None else None)
        self.listeners.append(self._track_last_alert)
        self._test_alert: dict | None = None  # the last `pinkbutton-diag test-alert`
        self._test_alert_mono: float | None = None
        self.listeners.append(self._track_test_alert)
        self.control = ControlServer(self.config.device.state_dir, self.control_status,
                                     test_alert=self.request_test_alert)

    def _track_last_alert(self, kind: str, data: dict) -> None:
        """State thread: the last alert and how far it got, for `pinkbutton-diag status`."""
        outcome = {"persisted": "sending", "delivered": "delivered to the broker",
                   "receipt": "stored by the control room"}.get(kind)
        if kind == "cmd" and data.get("cmd") in ("ack", "dispatched", "end"):
            outcome = {"ack": "acknowledged", "dispatched": "help dispatched",
                       "end": "ended by the control room"}[data["cmd"]]
        if outcome is None:
            return
        alert_id = data.get("alert_id")
        last = self._last_alert
        if kind == "persisted" or last is None:  # `at`: pressed, or first heard of after a restart
            self._last_alert = {"alert_id": alert_id, "at": iso8601(self.clock.wall()),
                                "outcome": outcome, "operator": None}
        elif last.get("alert_id") == alert_id:
            operator = data.get("operator") if kind == "cmd" else last.get("operator")
            self._last_alert = {**last, "outcome": outcome, "operator": operator}

    # -- test alert (pinkbutton-diag test-alert) ----------------------------------------

    def request_test_alert(self) -> dict:
        """Control-socket thread: ask for an alert of kind `test`; the state thread presses
        it. Refused while an incident runs (a test never joins a real incident). Returns the
        control socket's reply."""
        incident = self.state.incident  # a plain read of a value replaced whole
        if incident is not None:
            return {"ok": False, "error": f"an incident is running ({incident.draft.alert_id}, "
                                          f"{incident.draft.kind}): no test alert now"}
        at = self.clock.monotonic()
        alert_id = self._ids.new(at)
        self._inbox.put(("test_alert", alert_id, at))
        return {"ok": True, "test_alert": {"alert_id": alert_id}}

    def _test_alert_start(self, alert_id: str, at: float) -> None:
        """State thread."""
        self._test_alert_mono = at
        self._test_alert = {"alert_id": alert_id, "requested_at": iso8601(self.clock.wall()),
                            "refused": None, "ms": {}, "operator": None}
        if self.state.incident is not None:  # a press came first
            self._test_alert = {**self._test_alert, "refused": "an incident started first"}
            return
        log.info("test alert %s asked for on the control socket", alert_id)
        self._press(m.TEST_KIND, at, alert_id)

    def _track_test_alert(self, kind: str, data: dict) -> None:
        """State thread: how far the test alert got, in ms after it was asked for; each
        stage once. The control socket's thread reads the dict, replaced whole."""
        test = self._test_alert
        if test is None or data.get("alert_id") != test["alert_id"] or self._test_alert_mono is None:
            return
        stage = {"persisted": "persisted", "delivered": "delivered", "receipt": "receipt"}.get(kind)
        operator = test["operator"]
        if kind == "cmd" and data.get("cmd") in ("ack", "dispatched", "end"):
            stage = data["cmd"]
            operator = data.get("operator") or operator
        if stage is None or stage in test["ms"]:
            return
        ms = round((self.clock.monotonic() - self._test_alert_mono) * 1000, 1)
        self._test_alert = {**test, "ms": {**test["ms"], stage: ms}, "operator": operator}

    def control_status(self) -> dict:
        """A snapshot for the control socket's thread: plain reads of values the state
        thread replaces whole (never mutated in place), so no lock is taken."""
        state = self.state
        evidence = self.config.device.state_dir / "evidence"
        try:
            pending_evidence = sum(1 for e in evidence.iterdir() if e.is_dir())
        except OSError:
            pending_evidence = 0
        return {
            "device_id": self.device_id,
            "site_name": self.config.device.site_name,
            "firmware": FIRMWARE_VERSION,
            "state": str(state.mode),
            "faults": sorted(state.faults),
            "broker": self._broker,
            "broker_connected": self.transport.connected,
            "last_alert": self._last_alert,
            "outbox_depth": len(self._unconfirmed),
            "pending_evidence": pending_evidence,
            "certificate_not_after": self._cert_not_after,
            "uptime_s": round(self.clock.monotonic() - self._started_mono, 1),
            "last_selftest_at": (iso8601(self._selftest_at)
                                 if self._selftest_at is not None else None),
            "last_selftest_ok": self._selftest_ok,
            "last_selftest_failed": list(self._selftest_failed),
            "test_alert": self._test_alert,
        }


def _cert_expiry(path: Path):
    """When the kiosk's certificate expires (aware datetime), or None if unreadable."""
    try:
        from cryptography import x509

        return x509.load_pem_x509_certificate(Path(path).read_bytes()).not_valid_after_utc
    except (OSError, ValueError) as e:
        log.warning("cannot read certificate expiry: %s", e)
        return None


def _revive_sender(sender) -> None:
    """A sender whose thread died is given a new one (same queue, same seq numbers, so the
    room's evidence continues). One that is alive but blocked cannot be stopped from here:
    the kiosk then stops its systemd pings and systemd restarts the process."""
    thread = getattr(sender, "_thread", None)
    if thread is not None and thread.is_alive():
        log.error("media sender thread is blocked; leaving it to the process watchdog")
        return
    sender._thread = threading.Thread(target=sender._run, name="media-sender", daemon=True)
    sender._thread.start()


def open_media_devices(backend, clock: Clock, config: Config):
    """Camera and microphone as configured. One that cannot be opened is returned as
    None plus a (fault name, reason) pair: the kiosk still starts, alerts are never
    held back by media."""
    media = config.media
    camera = microphone = None
    faults: list[tuple[str, str]] = []
    # Any exception, not only HalError: a vendor library can fail at import with anything
    # ("ValueError: numpy.dtype size changed"), and the button must keep working.
    if media.video:
        try:
            camera = backend.camera(clock, media.width, media.height, media.fps)
        except Exception as e:  # noqa: BLE001
            faults.append(("camera_failed", _one_line(e)))
    if media.audio:
        try:
            if media.mic_device is None:
                microphone = backend.microphone(clock, 48000)
            else:
                microphone = backend.microphone(clock, 48000, device=media.mic_device)
        except Exception as e:  # noqa: BLE001
            faults.append(("mic_failed", _one_line(e)))
    for name, why in faults:
        log.error("%s: %s (alerts still work)", name, why)
    return camera, microphone, faults


def open_tamper(backend, clock: Clock, config: Config,
                faults: list[tuple[str, str]]) -> Button | None:
    """The tamper switch if configured; one that cannot be opened is fault `tamper_failed`
    (appended to `faults`), never a stopped kiosk."""
    h = config.hal
    if h.tamper_pin is None:
        return None
    try:
        return backend.tamper(clock, h.tamper_pin, h.debounce_ms / 1000, h.tamper_active_high)
    except Exception as e:  # noqa: BLE001
        faults.append(("tamper_failed", _one_line(e)))
        log.error("tamper_failed: %s (alerts still work)", _one_line(e))
        return None


def _lower_priority() -> None:
    """Make the calling thread yield to the state, media and network threads (Linux: nice
    is per thread)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):
        pass


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    if isinstance(e, HalError) and text:
        return text[0]
    return describe_error(e)


def open_sounder(backend, clock: Clock, config: Config) -> Sounder | None:
    """The loudspeaker for the self-test's acoustic loop (`media.speaker_device`), or None
    (none configured, or it cannot be made: logged; the self-test then has no loop check)."""
    device = config.media.speaker_device
    if device is None or not config.media.audio:
        return None
    try:
        return backend.sounder(clock, device)
    except Exception as e:  # noqa: BLE001 - any library error: the kiosk still starts
        log.error("speaker %r for the acoustic loop test not available: %s", device,
                  describe_error(e))
        return None


def run_kiosk(config: Config, hal_override: str | None = None) -> int:
    """Entry point of `pinkbutton run`: real clock, chosen HAL, until SIGTERM/SIGINT."""
    import signal

    from pinkbutton.hal import get_backend

    clock = Clock()
    backend = get_backend(hal_override or config.hal.backend)
    h = config.hal
    button = backend.button(clock, h.button_pin, h.debounce_ms / 1000, h.button_active_low)
    indicator = backend.indicator(clock, h.led_pin, h.buzzer_pin)
    camera, microphone, faults = open_media_devices(backend, clock, config)
    tamper = open_tamper(backend, clock, config, faults)
    sounder = open_sounder(backend, clock, config)
    kiosk = Kiosk(config, button, indicator, clock=clock, camera=camera, microphone=microphone,
                  tamper=tamper, sounder=sounder)
    for name, why in faults:
        kiosk.report_fault(name, why)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: kiosk.stop())
    log.info("pinkbutton %s starting: device %s at %s", FIRMWARE_VERSION, config.device.id,
             config.device.site_name)
    kiosk.run()
    return 0
