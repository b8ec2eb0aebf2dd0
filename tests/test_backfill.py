"""Evidence backfill pieces: the `nack` / `evidence_complete` cmds, gap ranges, the room's
NACK timing and packet log, and the kiosk's Resender (byte-identical, live first, rate cap)."""

from __future__ import annotations

import hashlib
import json
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pinkbutton.firmware import protocol as p
from pinkbutton.firmware.media.envelope import (
    Reassembler,
    ReceivedPacket,
    decode_envelope,
    encode_packet,
)
from pinkbutton.firmware.media.localstore import LocalStore
from pinkbutton.firmware.media.packet import EncodedPacket, Stream
from pinkbutton.firmware.media.resend import Resender
from pinkbutton.hal.clock import FakeClock
from pinkbutton.tools.controlroom.backfill import (
    BackfillManager,
    IncidentBackfill,
    PacketLog,
    group_ranges,
    missing_ranges,
)
from pinkbutton.tools.controlroom.media import ffprobe_summary

from tests.helpers import wait_until

ALERT = "3f2a9c1e-1111-4111-8111-111111111111"
CMD_ID = "9b1d2c3e-2222-4222-8222-222222222222"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- cmd codec -------------------------------------------------------------------------


def nack(ranges, **over) -> bytes:
    d = json.loads(p.encode_cmd(p.Cmd("nack", CMD_ID, "t", ALERT, ranges=((0, 1),))))
    d["ranges"] = ranges
    d.update(over)
    return json.dumps(d).encode()


def test_nack_and_evidence_complete_round_trip():
    c = p.Cmd("nack", CMD_ID, "2026-11-23T09:32:00Z", ALERT, ranges=((3, 7), (9, 9)))
    assert p.decode_cmd(p.encode_cmd(c)) == c
    done = p.Cmd("evidence_complete", CMD_ID, "t", ALERT)
    assert p.decode_cmd(p.encode_cmd(done)) == done
    assert "ranges" not in json.loads(p.encode_cmd(done)), "other cmds keep their v1 shape"


@pytest.mark.parametrize(
    ("ranges", "reason"),
    [
        ([], "non-empty list"),
        (None, "non-empty list"),
        ([[5, 3]], "first 5 > last 3"),
        ([[1, 4], [4, 6]], "not after the range before it"),
        ([[6, 8], [1, 2]], "not after the range before it"),
        ([[1]], "[first, last]"),
        ([[1, 2, 3]], "[first, last]"),
        ([[-1, 2]], "[first, last]"),
        ([[True, 2]], "[first, last]"),
        ([[1.0, 2]], "[first, last]"),
        ([[0, 2**32]], "[first, last]"),
        ([[0, p.MAX_NACK_SEQS]], f"more than {p.MAX_NACK_SEQS} seqs"),
        ([[2 * i, 2 * i] for i in range(p.MAX_NACK_RANGES + 1)], "ranges, over"),
    ],
)
def test_nack_ranges_are_validated_strictly(ranges, reason):
    with pytest.raises(p.ProtocolError) as e:
        p.decode_cmd(nack(ranges))
    assert reason in str(e.value) and "\n" not in str(e.value)


def test_nack_and_evidence_complete_need_an_alert_id():
    for kind in ("nack", "evidence_complete"):
        with pytest.raises(p.ProtocolError, match=f"cmd '{kind}' needs an alert_id"):
            p.decode_cmd(nack([[1, 2]], cmd=kind, alert_id=None))


def test_ranges_on_other_cmds_are_ignored():
    assert p.decode_cmd(nack([[1, 2]], cmd="ack")).ranges is None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5),
    max_leaves=30,
)


@FUZZ
@given(json_values)
def test_nack_decoder_on_arbitrary_ranges_raises_only_protocol_errors(ranges):
    try:
        c = p.decode_cmd(nack(ranges))
    except p.ProtocolError as e:
        assert str(e) and "\n" not in str(e)
        return
    flat = [s for r in c.ranges for s in r]
    assert flat == sorted(flat) and all(a <= b for a, b in c.ranges)


@FUZZ
@given(st.sets(st.integers(0, 5000), min_size=1, max_size=300))
def test_valid_nacks_round_trip(seqs):
    ranges = tuple(group_ranges(sorted(seqs), max_ranges=p.MAX_NACK_RANGES,
                                max_seqs=p.MAX_NACK_SEQS))
    c = p.Cmd("nack", str(uuid.uuid4()), "t", ALERT, ranges=ranges)
    assert p.decode_cmd(p.encode_cmd(c)) == c


# -- gap ranges ------------------------------------------------------------------------


def test_missing_ranges_examples():
    assert missing_ranges({0, 1, 2}, 0, 2) == []
    assert missing_ranges({0, 3, 4, 8}, 0, 9) == [(1, 2), (5, 7), (9, 9)]
    assert missing_ranges(set(), 5, 4) == []
    assert missing_ranges({1}, 0, 9, skip={5}) == [(0, 0), (2, 4), (6, 9)]
    assert missing_ranges(set(), 0, 99, max_seqs=10) == [(0, 9)]
    assert missing_ranges({1, 3, 5}, 0, 6, max_ranges=2) == [(0, 0), (2, 2)]


@FUZZ
@given(st.sets(st.integers(0, 200)), st.integers(0, 200), st.integers(1, 10),
       st.integers(1, 300))
def test_missing_ranges_cover_exactly_the_missing_seqs(have, last, max_ranges, max_seqs):
    ranges = missing_ranges(have, 0, last, max_ranges=max_ranges, max_seqs=max_seqs)
    listed = [s for a, b in ranges for s in range(a, b + 1)]
    missing = [s for s in range(last + 1) if s not in have]
    assert listed == missing[: len(listed)], "ascending, disjoint, the first missing ones"
    assert len(ranges) <= max_ranges and len(listed) <= max_seqs
    assert all(b + 1 < c for (_, b), (c, _) in zip(ranges, ranges[1:], strict=False))
    if len(listed) < len(missing):
        assert len(ranges) == max_ranges or len(listed) == max_seqs


# -- the room: when to NACK, packet log -------------------------------------------------


def rp(seq: int) -> ReceivedPacket:
    pkt = EncodedPacket(Stream.AUDIO, bytes([seq % 256]) * 40, 1_000_000 + seq * 20_000, 20_000,
                        True)
    return ReceivedPacket(seq, pkt, seq * 20_000, False)


def incident(tmp_path, **kw) -> IncidentBackfill:
    opts = {"settle_s": 1.0, "retry_s": 4.0, "stall_s": 12.0, **kw}
    return IncidentBackfill(ALERT, "pb-test-0001", tmp_path / "x.packets", **opts)


def feed(inc: IncidentBackfill, seqs, now: float) -> None:
    for seq in seqs:
        inc.log.add(rp(seq))
        inc.on_packet(seq, now)


def test_nack_waits_for_the_settle_time_then_retries_then_gives_up(tmp_path):
    inc = incident(tmp_path)
    feed(inc, [0, 1, 2, 5, 6, 9], now=10.0)
    assert inc.due(10.5) == (), "a later seq arrived only 0.5 s ago: maybe just reordered"
    assert inc.due(11.0) == ((3, 4), (7, 8))
    assert inc.due(12.0) == (), "asked already; not again before retry_s"
    feed(inc, [3, 4], now=12.0)
    assert inc.due(15.0) == ((7, 8),)
    assert inc.due(19.0) == ((7, 8),)
    assert inc.due(30.0) == ((7, 8),), "the stream goes on: keep asking"
    assert not inc.finished(30.0), "no stream_end yet"
    inc.on_stream_end(10, now=30.0)
    assert inc.due(34.0) == ((7, 8),)
    assert inc.due(42.0) == (), "no new seq for stall_s since stream_end: given up"
    assert inc.finished(42.0) and inc.gaps() == [(7, 8)]


def test_stream_end_reveals_the_lost_tail_and_completion(tmp_path):
    inc = incident(tmp_path)
    feed(inc, range(10), now=0.0)
    inc.on_stream_end(14, now=5.0)
    assert inc.due(5.5) == ()
    assert inc.due(6.0) == ((10, 13),), "the tail nobody saw is asked for after stream_end"
    assert not inc.finished(6.0)
    feed(inc, [10, 11, 12], now=6.5)
    inc.unavailable.add(13)  # the kiosk said it never recorded seq 13
    assert inc.finished(7.0)
    assert inc.gaps() == [(13, 13)] and inc.all_given_up_are_unrecorded()


def test_packet_log_keeps_seq_order_and_survives_a_torn_tail(tmp_path):
    log = PacketLog(tmp_path / "a.packets")
    for seq in (3, 0, 2, 1, 2):
        log.add(rp(seq))
    assert len(log) == 4
    log.close()
    with open(tmp_path / "a.packets", "ab") as f:
        f.write(b"\x00\x00\x00\x07\x02")  # a record cut short by a crash
    log = PacketLog(tmp_path / "a.packets")
    got = list(log.in_order())
    assert [r.seq for r in got] == [0, 1, 2, 3]
    assert got[2] == rp(2)
    log.add(rp(4))
    log.close()
    assert [r.seq for r in PacketLog(tmp_path / "a.packets").in_order()] == [0, 1, 2, 3, 4]


# -- the kiosk: Resender ----------------------------------------------------------------


class Link:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()

    def publish(self, topic: str, payload: bytes, qos: int) -> int:
        with self.lock:
            self.sent.append((topic, payload))
            return len(self.sent)


def recorded_store(tmp_path, seqs) -> tuple[LocalStore, dict[int, list[bytes]]]:
    s = LocalStore(tmp_path / "ev", 10**8, on_fault=lambda n, d: None)
    s.begin(ALERT)
    out = {}
    for seq in seqs:
        pkt = EncodedPacket(Stream.AUDIO, bytes([seq % 256]) * 1000, 10**9 + seq * 20_000,
                            20_000, True)
        out[seq] = encode_packet(pkt, seq, 10**9)
        s.append(ALERT, seq, pkt.pts_us, out[seq])
    return s, out


def test_resender_sends_recorded_envelopes_byte_for_byte_and_reports_the_rest(tmp_path):
    store, recorded = recorded_store(tmp_path, range(20))
    link, reports = Link(), []
    r = Resender(link.publish, store, lambda a: f"media/{a}",
                 report=lambda a, d: reports.append(d))
    try:
        r.request(ALERT, ((3, 5), (18, 25)))
        wait_until(lambda: reports, timeout=10, what="resend report")
    finally:
        r.close()
        store.close()
    assert [m for _, m in link.sent] == [m for s in (3, 4, 5, 18, 19) for m in recorded[s]]
    assert {t for t, _ in link.sent} == {f"media/{ALERT}"}
    assert reports == [{"alert_id": ALERT, "requested": 11, "resent": 5,
                        "unavailable": [[20, 25]]}]


def test_resender_holds_back_while_live_media_is_waiting(tmp_path):
    store, _ = recorded_store(tmp_path, range(10))
    link, busy = Link(), threading.Event()
    busy.set()
    r = Resender(link.publish, store, lambda a: a, live_busy=busy.is_set, max_inflight=100)
    try:
        r.request(ALERT, ((0, 9),))
        store.sync(ALERT)
        threading.Event().wait(0.5)
        assert link.sent == [], "nothing may go out while live media is queued"
        busy.clear()
        wait_until(lambda: len(link.sent) == 10, timeout=10, what="resend after live drained")
    finally:
        r.close()
        store.close()


def test_resender_rate_and_window_are_bounded(tmp_path):
    store, _ = recorded_store(tmp_path, range(40))  # ~1 KB each
    link, clock = Link(), FakeClock()
    r = Resender(link.publish, store, lambda a: a, clock=clock, rate_bytes_s=5_000,
                 max_inflight=100)
    try:
        r.request(ALERT, ((0, 39),))
        wait_until(lambda: len(link.sent) >= 4, timeout=10, what="first bucket")
        threading.Event().wait(0.3)
        assert len(link.sent) <= 5, "the token bucket holds ~5 KB until time passes"
        clock.advance(1.0)
        wait_until(lambda: len(link.sent) >= 8, timeout=10, what="refill")
        threading.Event().wait(0.3)
        assert len(link.sent) <= 10
    finally:
        r.close()
        store.close()
    # Window: without PUBACKs at most max_inflight messages go out.
    store, _ = recorded_store(tmp_path / "w", range(40))
    link = Link()
    r = Resender(link.publish, store, lambda a: a, max_inflight=6, rate_bytes_s=10**9)
    try:
        r.request(ALERT, ((0, 39),))
        wait_until(lambda: len(link.sent) == 6, timeout=10, what="a full window")
        threading.Event().wait(0.3)
        assert len(link.sent) == 6
        for mid in (1, 2, 3):
            assert r.acked(mid)
        wait_until(lambda: len(link.sent) == 9, timeout=10, what="window reopened")
        assert not r.acked(999), "not one of ours"
    finally:
        r.close()
        store.close()


# -- the room: BackfillManager end to end, without a broker ------------------------------


class Sent:
    def __init__(self) -> None:
        self.cmds: list[tuple[str, str, str, tuple | None]] = []

    def __call__(self, kind, device_id, alert_id, ranges) -> None:
        self.cmds.append((kind, device_id, alert_id, ranges))


def envelopes(packets: list[EncodedPacket]) -> dict[int, list[bytes]]:
    origin = packets[0].pts_us
    return {seq: encode_packet(pkt, seq, origin) for seq, pkt in enumerate(packets)}


@pytest.fixture(scope="module")
def short_media():
    from tests.test_evidence import encode_audio, encode_video

    packets = encode_video(frames=45) + encode_audio()[:150]  # 3 s
    return sorted(packets, key=lambda x: (x.pts_us, x.stream))


def run_manager(tmp_path, short_media, lost: range, report_unavailable: bool):
    clock, sent, lines, notes = FakeClock(), Sent(), [], []
    mgr = BackfillManager(tmp_path, send_cmd=sent, out=lines.append,
                          notify=lambda k, d: notes.append((k, d)), clock=clock)
    mgr.open(ALERT, "pb-test-0001", "pb-test-0001-x.packets")
    messages = envelopes(short_media)
    live = Reassembler()
    for seq, msgs in messages.items():
        if seq in lost:
            continue
        for m in msgs:
            env = decode_envelope(m)
            assert not mgr.claims(ALERT, env), "live media is the caller's"
            rp_ = live.add(env)
            if rp_ is not None:
                mgr.record(ALERT, rp_)
    ev = p.DeviceEvent("pb-test-0001", "stream_end", "t",
                       {"alert_id": ALERT, "seq_count": len(messages)})
    mgr.on_event(ev)
    mgr.tick(force=True)
    assert [c[0] for c in sent.cmds] == [], "not before the settle time"
    clock.advance(1.0)
    mgr.tick(force=True)
    assert sent.cmds == [("nack", "pb-test-0001", ALERT, ((lost.start, lost.stop - 1),))]
    if report_unavailable:
        mgr.on_event(p.DeviceEvent("pb-test-0001", "backfill", "t", {
            "alert_id": ALERT, "unavailable": [[lost.start, lost.stop - 1], [10**9, 10**9 + 5]]}))
    else:
        for seq in lost:  # resent, twice (a duplicate is harmless)
            for m in messages[seq] + messages[seq]:
                assert mgr.claims(ALERT, decode_envelope(m))
    mgr.tick(force=True)
    done = mgr.completion(ALERT)
    assert done is not None
    assert sent.cmds[-1] == ("evidence_complete", "pb-test-0001", ALERT, None)
    manifest = json.loads(done.manifest.read_text())
    assert manifest["sha256"] == hashlib.sha256(done.path.read_bytes()).hexdigest()
    assert ffprobe_summary(done.path)["video"]["codec"] == "h264"
    return done, manifest, lines


def test_manager_nacks_the_hole_and_writes_complete_evidence(tmp_path, short_media):
    lost = range(40, 70)
    done, manifest, lines = run_manager(tmp_path, short_media, lost, report_unavailable=False)
    assert done.gaps == [] and done.backfilled == len(lost)
    assert manifest["packets"] == len(short_media) and manifest["gaps"] == []
    assert lines[-1].startswith(
        f"evidence for {ALERT} complete: {len(short_media)} packets, 0 gaps (backfilled 30)")


def test_manager_confirms_when_the_kiosk_never_recorded_the_rest(tmp_path, short_media):
    done, manifest, lines = run_manager(tmp_path, short_media, range(40, 70),
                                        report_unavailable=True)
    assert done.gaps == [(40, 69)] and manifest["gaps"] == [[40, 69]]
    assert "INCOMPLETE" in lines[-1] and "30 missing" in lines[-1]


def test_media_before_its_alert_is_logged_once_the_alert_opens_the_incident(tmp_path):
    clock, sent = FakeClock(), Sent()
    mgr = BackfillManager(tmp_path, send_cmd=sent, clock=clock)
    for seq in range(5):
        mgr.record(ALERT, rp(seq))  # the pre-roll overtook the alert
    mgr.record("other", rp(0))
    clock.advance(11.0)
    mgr.record("late", rp(0))  # expires what waited too long
    assert "other" not in mgr._held and ALERT not in mgr._held
    for seq in range(5):
        mgr.record(ALERT, rp(seq))
    mgr.open(ALERT, "pb-test-0001", "p.packets")
    mgr.record(ALERT, rp(5))
    clock.advance(2.0)
    mgr.tick(force=True)
    assert sent.cmds == [], "nothing to ask for: the held packets were logged"
    mgr.close_all()
    assert [r.seq for r in PacketLog(tmp_path / "p.packets").in_order()] == list(range(6))


def test_manager_merges_a_restarted_kiosks_stream_and_skips_what_it_reports(
    tmp_path, short_media
):
    """A kiosk restarted mid-incident goes on at a higher seq and reports the seqs in
    between as `skipped`: not asked for, not gaps, listed apart; the evidence completes."""
    clock, sent, lines = FakeClock(), Sent(), []
    mgr = BackfillManager(tmp_path, send_cmd=sent, out=lines.append, clock=clock)
    mgr.open(ALERT, "pb-test-0001", "pb-test-0001-x.packets")
    origin, cut, jump = short_media[0].pts_us, 100, 900
    seqs = [s if s < cut else s + jump for s in range(len(short_media))]
    live = Reassembler()

    def deliver(pairs) -> None:
        for seq, pkt in pairs:
            for m in encode_packet(pkt, seq, origin):
                env = decode_envelope(m)
                assert not mgr.claims(ALERT, env)
                got = live.add(env)
                if got is not None:
                    mgr.record(ALERT, got)

    pairs = list(zip(seqs, short_media, strict=True))
    deliver(pairs[:cut])
    report = {"alert_id": ALERT, "requested": 0, "resent": 0,
              "unavailable": [[cut, cut + jump - 1]], "skipped": [[cut, cut + jump - 1]]}
    mgr.on_event(p.DeviceEvent("pb-test-0001", "backfill", "t", report))
    # Malformed or oversized reports are ignored or capped, never trusted whole.
    for bad in ([[5, 2]], [[-1, 3]], "x", [[1.5, 2]], [[True, 3]]):
        mgr.on_event(p.DeviceEvent("pb-test-0001", "backfill", "t",
                                   {"alert_id": ALERT, "skipped": bad}))
    deliver(pairs[cut:])
    mgr.on_event(p.DeviceEvent("pb-test-0001", "stream_end", "t",
                               {"alert_id": ALERT, "seq_count": seqs[-1] + 1}))
    clock.advance(1.5)
    mgr.tick(force=True)
    assert [c[0] for c in sent.cmds] == ["evidence_complete"], "nothing to ask for"
    done = mgr.completion(ALERT)
    assert done is not None and done.gaps == []
    manifest = json.loads(done.manifest.read_text())
    assert manifest["gaps"] == [] and manifest["skipped"] == [[cut, cut + jump - 1]]
    assert manifest["packets"] == len(short_media)
    assert lines[-1].startswith(f"evidence for {ALERT} complete: {len(short_media)} packets, "
                                f"0 gaps (backfilled 0; kiosk restarted, seqs 100-999 unused")
    assert ffprobe_summary(done.path)["video"]["codec"] == "h264"


def test_skipped_reports_are_bounded(tmp_path):
    from pinkbutton.tools.controlroom.backfill import MAX_SKIPPED

    mgr = BackfillManager(tmp_path, send_cmd=Sent(), clock=FakeClock())
    mgr.open(ALERT, "pb-test-0001", "p.packets")
    for _ in range(3):
        mgr.on_event(p.DeviceEvent("pb-test-0001", "backfill", "t",
                                   {"alert_id": ALERT, "skipped": [[0, 2**32 - 1]]}))
    assert len(mgr._incidents[ALERT].skipped) == MAX_SKIPPED
    mgr.close_all()


# -- the room keeps asking while the kiosk makes progress (issue 9 item 6) --------------


def deliver_live(mgr, messages, skip) -> None:
    live = Reassembler()
    for seq, msgs in messages.items():
        if seq in skip:
            continue
        for m in msgs:
            got = live.add(decode_envelope(m))
            if got is not None:
                mgr.record(ALERT, got)


def asked_seqs(sent: Sent) -> set[int]:
    return {s for kind, _, _, ranges in sent.cmds if kind == "nack"
            for a, b in ranges for s in range(a, b + 1)}


def test_manager_keeps_asking_while_a_slow_kiosk_drains_its_backlog(tmp_path, short_media):
    """A slow link: the kiosk answers the NACKs a few packets a second, for longer than the
    old give-up window (5 nacks x 4 s). The room keeps asking while packets keep coming and
    ends with complete evidence, 0 missing, and confirms it."""
    clock, sent, lines = FakeClock(), Sent(), []
    mgr = BackfillManager(tmp_path, send_cmd=sent, out=lines.append, clock=clock)
    mgr.open(ALERT, "pb-test-0001", "pb-test-0001-x.packets")
    messages = envelopes(short_media)
    lost = list(range(30, len(messages)))  # the live stream lost most of it
    deliver_live(mgr, messages, set(lost))
    mgr.on_event(p.DeviceEvent("pb-test-0001", "stream_end", "t",
                               {"alert_id": ALERT, "seq_count": len(messages)}))
    backlog = list(lost)
    for _ in range(400):  # 0.5 s steps; the kiosk resends 3 packets a second
        clock.advance(0.5)
        mgr.tick(force=True)
        for seq in backlog[:2] if int(clock.monotonic() * 2) % 4 == 0 else backlog[:1]:
            if seq in asked_seqs(sent):
                for m in messages[seq]:
                    assert mgr.claims(ALERT, decode_envelope(m))
                backlog.remove(seq)
        if mgr.completion(ALERT) is not None:
            break
    took = clock.monotonic()
    assert took > 30, f"the backlog should outlast the old 21 s give-up window ({took} s)"
    done = mgr.completion(ALERT)
    assert done is not None, lines
    assert done.gaps == [] and done.backfilled == len(lost), lines
    assert not any("INCOMPLETE" in line for line in lines), lines
    assert sent.cmds[-1] == ("evidence_complete", "pb-test-0001", ALERT, None)


def test_manager_gives_up_without_progress_then_resumes_when_the_kiosk_returns(
    tmp_path, short_media
):
    """No new seq for stall_s: the room writes the evidence as INCOMPLETE but does not confirm
    it (the kiosk keeps its copy) and stays ready: the kiosk back online (or a heartbeat naming
    the alert in evidence_pending) makes it ask again, and the evidence completes."""
    clock, sent, lines, notes = FakeClock(), Sent(), [], []
    mgr = BackfillManager(tmp_path, send_cmd=sent, out=lines.append, clock=clock,
                          notify=lambda k, d: notes.append((k, d)))
    mgr.open(ALERT, "pb-test-0001", "pb-test-0001-x.packets")
    messages = envelopes(short_media)
    lost = range(40, 70)
    deliver_live(mgr, messages, set(lost))
    mgr.on_event(p.DeviceEvent("pb-test-0001", "stream_end", "t",
                               {"alert_id": ALERT, "seq_count": len(messages)}))
    for _ in range(30):  # the kiosk is offline: nothing comes for 30 s
        clock.advance(1.0)
        mgr.tick(force=True)
    nacks = [c for c in sent.cmds if c[0] == "nack"]
    assert 2 <= len(nacks) <= 7, "asked every retry_s until stall_s without progress"
    assert [c[0] for c in sent.cmds if c[0] != "nack"] == [], "never confirmed: gaps remain"
    assert mgr.completion(ALERT) is None
    assert sum(1 for line in lines if "INCOMPLETE" in line) == 1, lines
    done = [d for k, d in notes if k == "evidence_complete"]
    assert len(done) == 1 and not done[0]["final"] and done[0]["gaps"] == [(40, 69)]
    clock.advance(60.0)
    mgr.tick(force=True)
    assert len([c for c in sent.cmds if c[0] == "nack"]) == len(nacks), "dormant: no asking"
    assert mgr.resume("pb-test-0002") == 0, "another kiosk's return changes nothing"
    assert mgr.resume("pb-test-0001", {"3f2a9c1e-0000-4000-8000-000000000000"}) == 0
    assert mgr.resume("pb-test-0001", {ALERT}) == 1  # its heartbeat lists the alert
    assert mgr.resume("pb-test-0001") == 0, "at most once per stall_s"
    mgr.tick(force=True)
    assert sent.cmds[-1] == ("nack", "pb-test-0001", ALERT, ((40, 69),))
    for seq in lost:
        for m in messages[seq]:
            assert mgr.claims(ALERT, decode_envelope(m))
    clock.advance(1.0)
    mgr.tick(force=True)
    final = mgr.completion(ALERT)
    assert final is not None and final.gaps == [] and final.backfilled == len(lost)
    assert sent.cmds[-1] == ("evidence_complete", "pb-test-0001", ALERT, None)
    assert lines[-1].startswith(f"evidence for {ALERT} complete: {len(messages)} packets, 0 gaps")
    manifest = json.loads(final.manifest.read_text())
    assert manifest["gaps"] == [] and manifest["packets"] == len(messages)
    assert manifest["sha256"] == hashlib.sha256(final.path.read_bytes()).hexdigest()


def test_a_late_packet_wakes_a_dormant_incident(tmp_path, short_media):
    """The room gave up, then an asked-for seq still arrives (the kiosk was only slow): the
    room goes on asking without waiting for a reconnect."""
    clock, sent = FakeClock(), Sent()
    mgr = BackfillManager(tmp_path, send_cmd=sent, clock=clock, out=lambda s: None)
    mgr.open(ALERT, "pb-test-0001", "pb-test-0001-x.packets")
    messages = envelopes(short_media)
    deliver_live(mgr, messages, set(range(40, 70)))
    mgr.on_event(p.DeviceEvent("pb-test-0001", "stream_end", "t",
                               {"alert_id": ALERT, "seq_count": len(messages)}))
    for _ in range(30):
        clock.advance(1.0)
        mgr.tick(force=True)
    asked = len(sent.cmds)
    for m in messages[40]:
        assert mgr.claims(ALERT, decode_envelope(m))
    clock.advance(5.0)
    mgr.tick(force=True)
    assert len(sent.cmds) == asked + 1 and sent.cmds[-1][3] == ((41, 69),)


def test_a_missing_seq_is_always_asked_once_and_the_kiosk_gets_stall_s_to_answer(tmp_path):
    inc = incident(tmp_path, stall_s=1.0)  # no longer than settle_s
    feed(inc, range(10), now=0.0)
    inc.on_stream_end(14, now=5.0)
    assert inc.due(6.0) == ((10, 13),), "asked although stall_s passed since stream_end"
    assert not inc.finished(6.5), "the kiosk has stall_s to answer"
    assert inc.due(6.5) == () and inc.finished(7.0)
