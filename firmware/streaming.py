"""MediaService: the kiosk's live A/V, from capture to MQTT.

Capture and encoding run all the time so the pre-roll (RAM only) always holds
the last seconds; during an incident a MediaSender publishes the pre-roll and
then the live stream on `media/{alert_id}`. Media never holds back the alert:
every failure here becomes a fault report, never an exception to the caller.

Backfill: while an incident streams, every packet is also recorded on the kiosk's disk
(LocalStore, under state_dir/evidence). The control room asks for what it missed with a
`nack` cmd and a Resender publishes it again from disk; `evidence_complete` lets the
recording go. See docs/protocol.md "Evidence backfill".

Live first: the sender publishes live media ahead of the pre-roll (its behind lane, docs/
architecture.md "Media path"). A `nack` for pre-roll seqs still waiting there is not
answered from disk (they are on their way); what is left of them when the stream stops goes
to the Resender, from the local recording.

Restart mid-incident: the kiosk resumes the alert and streams it again; a SeqLease record
makes the new run go on after the earlier run's seqs and on its media timeline, and the
LocalStore continues the same recording, so the room merges both runs into one evidence.

Note on threads: `start_stream`/`stop_stream`/`acked` are called from the
kiosk's state thread; the pipeline runs its own encoder thread and the sender
its own publishing thread; `on_fault` is called from the encoder thread and
must only enqueue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

from pinkbutton.firmware import protocol as p
from pinkbutton.firmware.config import MediaConfig
from pinkbutton.firmware.media.adaptation import AdaptationController, VideoLevel
from pinkbutton.firmware.media.encoder import AudioEncoder, VideoEncoder
from pinkbutton.firmware.media.localstore import LocalStore
from pinkbutton.firmware.media.pipeline import MediaPipeline
from pinkbutton.firmware.media.preroll import PreRollBuffer
from pinkbutton.firmware.media.resend import Resender
from pinkbutton.firmware.media.sender import MediaSender
from pinkbutton.firmware.media.seqlease import ResumePoint, SeqLease
from pinkbutton.hal.base import Camera, Microphone
from pinkbutton.hal.clock import Clock, iso8601

log = logging.getLogger("pinkbutton.media")

Publish = Callable[[str, bytes, int], int]
LEASE_FILE = "stream-seq.json"  # in the evidence directory; LocalStore only reads directories
FaultSink = Callable[[str, str], None]
# Step video down once the PUBACK round trip (bytes waiting in the network) passes this: the
# live picture should reach the room within about a second, and on a slow link each message's
# MQTT/TLS overhead alone fills it at the top level (150 kbit/s: 600 ms reacted ~5 s late).
RTT_HIGH_MS, RTT_LOW_MS = 400.0, 200.0


class MediaService:
    def __init__(
        self,
        config: MediaConfig,
        camera: Camera | None,
        microphone: Microphone | None,
        *,
        device_id: str,
        publish: Publish,
        on_fault: FaultSink,
        clock: Clock | None = None,
        evidence_dir: Path | None = None,
    ) -> None:
        self.config = config
        self.device_id = device_id
        self.clock = clock or Clock()
        self._publish = publish
        self._on_fault = on_fault
        video = None
        if camera is not None:
            try:
                video = VideoEncoder(
                    config.width, config.height, config.fps, bitrate_kbps=config.video_kbps,
                    keyframe_interval_s=config.keyframe_interval_s, codec=config.encoder,
                )
            except Exception as e:  # an encoder that cannot open must not stop the kiosk
                on_fault("video_encoder_failed", str(e))
                camera = None
        audio = AudioEncoder(48000, bitrate_kbps=config.audio_kbps,
                             frame_ms=config.audio_frame_ms) if microphone else None
        self.pipeline = MediaPipeline(
            camera, microphone, video, audio, PreRollBuffer(config.preroll_s),
            on_fault=on_fault, clock=self.clock,
        )
        self.sender: MediaSender | None = None
        self.alert_id: str | None = None
        self.store: LocalStore | None = None
        self.resender: Resender | None = None
        # The seq/origin record of the stream being sent (restart mid-incident), next to
        # the local evidence; kept even when local recording is off.
        self.lease_path = None if evidence_dir is None else Path(evidence_dir) / LEASE_FILE
        self._seq_after: dict[str, int] = {}
        if evidence_dir is not None and config.evidence_budget_mb > 0:
            try:
                self.store = LocalStore(evidence_dir, config.evidence_budget_mb * 1024 * 1024,
                                        on_fault=on_fault, clock=self.clock)
            except OSError as e:  # no local evidence; live streaming still works
                on_fault("evidence_write_failed", f"cannot use {evidence_dir}: {e}")
        if self.store is not None:
            self.resender = Resender(
                publish, self.store, lambda a: p.media_topic(self.device_id, a),
                live_busy=self._live_busy, report=self._report_backfill, clock=self.clock,
            )

    def start(self) -> None:
        self.pipeline.start()

    def start_stream(self, alert_id: str) -> None:
        if self.alert_id == alert_id:
            return
        self.stop_stream()
        recorder: Callable[[int, int, list[bytes]], None] | None = None
        lease, start = None, ResumePoint(0, False, None, None)
        if self.lease_path is not None:
            # A stream of an alert that already streamed (the kiosk restarted mid-incident)
            # goes on after the seqs and on the media timeline of the earlier run.
            lease = SeqLease(self.lease_path, alert_id, clock=self.clock,
                             on_fault=self._on_fault)
            recorded = self.store.last_seq(alert_id) if self.store is not None else None
            floor = self._seq_after.get(alert_id, 0)
            start = lease.resume(recorded, floor)
        if self.store is not None:
            store = self.store
            store.begin(alert_id)

            def record(seq: int, capture_us: int, messages: list[bytes]) -> None:
                store.append(alert_id, seq, capture_us, messages)
            recorder = record

        self.sender = MediaSender(
            self._publish, p.media_topic(self.device_id, alert_id),
            max_queue_bytes=self.config.max_queue_kb * 1024, clock=self.clock,
            controller=AdaptationController(ladder_for(self.config), rtt_high_ms=RTT_HIGH_MS,
                                            rtt_low_ms=RTT_LOW_MS),
            on_level=self._on_level,
            recorder=recorder, first_seq=start.first_seq, resumed=start.resumed,
            origin_for=lambda capture_us: start.origin_for(capture_us, self.clock),
            reserve=None if lease is None else lease.reserve,
        )
        self.alert_id = alert_id
        if start.resumed:
            log.warning("media of alert %s resumes at seq %d%s", alert_id, start.first_seq,
                        f" (seqs {start.skipped[0]}-{start.skipped[1]} skipped)"
                        if start.skipped else "")
            if start.skipped is not None:
                # Seqs the earlier run may never have used (or lost with the kill): the room
                # must not wait for them. Queued until the broker is reachable.
                a, b = start.skipped
                self._report_backfill(alert_id, {
                    "alert_id": alert_id, "requested": 0, "resent": 0,
                    "unavailable": [[a, b]], "skipped": [[a, b]],
                })
        self.pipeline.start_stream(self.sender.submit)
        log.info("streaming media for alert %s", alert_id)

    def stop_stream(self, on_done: Callable[[str, dict], None] | None = None) -> None:
        """Stop the incident's stream. The sender drains on its own small thread (the
        state thread must not wait for the network); `on_done(alert_id, stats)` is
        called from that thread when it has, and must only enqueue."""
        sender, alert_id = self.sender, self.alert_id
        if sender is None:
            return
        assert alert_id is not None  # start_stream sets both
        self.pipeline.stop_stream()
        self.sender, self.alert_id = None, None
        self._seq_after = {alert_id: sender.stats().seq_count}  # a restart of this stream
        # Back to full quality for the next incident.
        c = self.config
        self.pipeline.set_video_level(width=c.width, height=c.height, fps=c.fps,
                                      bitrate_kbps=c.video_kbps)

        store = self.store

        resender = self.resender

        def drain() -> None:
            sender.wait_idle(2.0)
            rest = sender.take_behind()  # pre-roll the link had no room for yet
            sender.close()
            if store is not None:
                store.finish(alert_id)
            if rest and resender is not None:
                # From the local recording, byte-identical, behind any later live media.
                resender.request(alert_id, tuple(seq_ranges(rest)))
            elif rest:
                log.warning("media for alert %s: %d pre-roll packets not sent (no local "
                            "recording to send them from)", alert_id, len(rest))
            stats = sender.stats()
            log.info("media for alert %s ended: %s", alert_id, stats)
            if on_done is not None:
                on_done(alert_id, _stats_dict(stats))

        threading.Thread(target=drain, name="media-drain", daemon=True).start()

    def acked(self, mid: int) -> None:
        if self.resender is not None and self.resender.acked(mid):
            return
        if self.sender is not None:
            self.sender.acked(mid)

    def ack_if_inflight(self, mid: int) -> bool:
        """The network thread's fast path for media PUBACKs: True if `mid` was a media
        publish in flight (now settled); False for anything else, which then takes the
        state thread's path (`acked`, which also keeps a PUBACK that beat its publish)."""
        if self.resender is not None and self.resender.ack_if_inflight(mid):
            return True
        sender = self.sender
        return sender is not None and sender.ack_if_inflight(mid)

    def on_cmd(self, cmd: p.Cmd) -> None:
        """`nack` and `evidence_complete` from the control room (state thread)."""
        if self.store is None or cmd.alert_id is None:
            log.info("cmd %s for %s ignored: no local evidence", cmd.cmd, cmd.alert_id)
        elif cmd.cmd == "nack" and cmd.ranges and self.resender is not None:
            ranges = cmd.ranges
            sender = self.sender
            if sender is not None and self.alert_id == cmd.alert_id:
                # Pre-roll still in the sender's behind lane is on its way: sending it from
                # disk too would only take the slow link's room twice.
                coming = sender.behind_seqs()
                if coming:
                    ranges = tuple(seq_ranges(
                        s for a, b in ranges for s in range(a, b + 1) if s not in coming))
            if ranges:
                self.resender.request(cmd.alert_id, ranges)
        elif cmd.cmd == "evidence_complete":
            self.store.confirm(cmd.alert_id)

    def close(self) -> None:
        self.stop_stream()
        self.pipeline.stop()
        if self.resender is not None:
            self.resender.close()
        if self.store is not None:
            self.store.close()

    def _live_busy(self) -> bool:
        sender = self.sender
        return sender is not None and sender.backlogged()

    def _report_backfill(self, alert_id: str, detail: dict) -> None:
        # Resend thread. Tells the room what this kiosk never recorded, so it stops asking.
        ev = p.DeviceEvent(self.device_id, "backfill", iso8601(self.clock.wall()), detail)
        try:
            self._publish(p.topic(self.device_id, "events"), p.encode_event(ev), 1)
        except Exception as e:  # noqa: BLE001 - the room asks again; nothing is lost
            log.warning("backfill report for %s not sent: %s", alert_id, e)

    def _on_level(self, level: VideoLevel) -> None:
        # Sender thread: the pipeline applies it on its encoder thread.
        log.info("link adaptation: video now %s", level)
        self.pipeline.set_video_level(width=level.width, height=level.height, fps=level.fps,
                                      bitrate_kbps=level.bitrate_kbps)


def seq_ranges(seqs: Iterable[int]) -> list[tuple[int, int]]:
    """Seqs as ascending inclusive ranges."""
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


def ladder_for(c: MediaConfig) -> list[VideoLevel]:
    """The default ladder scaled to the configured top level: bitrate first, then frame
    rate, then resolution (halved, kept even)."""
    w2, h2 = max(2, c.width // 2 // 2 * 2), max(2, c.height // 2 // 2 * 2)
    fps = max(1, round(c.fps))
    fps_low = max(1, round(c.fps * 2 / 3))
    return [
        VideoLevel(c.width, c.height, fps, c.video_kbps),
        VideoLevel(c.width, c.height, fps, max(50, c.video_kbps * 3 // 5)),
        VideoLevel(c.width, c.height, fps_low, max(50, c.video_kbps * 2 // 5)),
        VideoLevel(w2, h2, fps_low, max(50, c.video_kbps * 3 // 10)),
        VideoLevel(w2, h2, max(1, round(c.fps / 3)), max(50, c.video_kbps // 5)),
    ]


def _stats_dict(stats) -> dict:
    try:
        from dataclasses import asdict

        return {k: v for k, v in asdict(stats).items() if isinstance(v, int | float | str)}
    except TypeError:
        return {}
