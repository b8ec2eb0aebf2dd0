"""Issue 9 item 7 end to end: live media ahead of the pre-roll on a 150 kbit/s link.

A real kiosk (fake camera and microphone, capture time drawn into every frame) reaches a real
mosquitto through tools/netproxy.ThrottleProxy at 150 kbit/s; the room connects directly. The
officer must get the present first — live packets arrive within about a second of their
capture from the first seconds on, voice without holes — and the complete evidence must still
hold the whole 5 s pre-roll (its drawn capture times decoded from complete.mp4)."""

from __future__ import annotations

import time

import av
import pytest
from pinkbutton.hal.stamp import read_stamp

from harness.netproxy import ThrottleProxy
from tests.helpers import RunningKiosk, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

pytestmark = pytest.mark.broker

PREROLL_S = 5.0
LIVE_S = 6.0
LINK_KBPS = 150
FPS = 15.0


def decoded_stamps(path) -> list[int]:
    with av.open(str(path)) as container:
        return [s for s in (read_stamp(f.to_ndarray(format="gray"))
                            for f in container.decode(video=0)) if s is not None]


@pytest.fixture(scope="module")
def slow_incident(tmp_path_factory, pki_dir, broker):
    tmp = tmp_path_factory.mktemp("livefirst")
    arrivals: list[tuple[float, dict]] = []  # (time.monotonic() at the room, media event)

    def on_room(kind: str, data: dict) -> None:  # room thread
        if kind == "media":
            arrivals.append((time.monotonic(), dict(data)))

    with ThrottleProxy("127.0.0.1", broker.port) as proxy:
        proxy.set_rate(LINK_KBPS)
        cfg = write_kiosk_config(tmp, pki_dir, proxy.port, "pb-test-0003",
                                 alert={"stream_s": LIVE_S})
        with RunningRoom(pki_dir, broker, tmp / "room.db", auto_ack=True,
                         evidence_dir=tmp / "evidence", client_id="room-livefirst") as room, \
                RunningKiosk(cfg, media=True) as kiosk:
            room.receiver.listeners.append(on_room)
            kiosk.events.wait_for("connected", timeout=15)
            time.sleep(PREROLL_S + 0.7)  # let the pre-roll fill
            kiosk.press()
            press_us = int(kiosk.events.wait_for("pressed")["at"] * 1e6)
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            kiosk.events.wait_for("stream_end", timeout=LIVE_S + 20)
            complete = room.events.wait_for(
                "evidence_complete", lambda d: d["alert_id"] == alert_id, timeout=40)
            evidence = room.events.wait_for("evidence", timeout=5)
    return {"press_us": press_us, "arrivals": arrivals, "complete": complete,
            "evidence": evidence, "alert_id": alert_id}


def test_live_media_arrives_within_a_second_from_the_start(slow_incident):
    press_us = slow_incident["press_us"]
    early = [(at * 1e6 - d["capture_us"]) / 1000 for at, d in slow_incident["arrivals"]
             if not d["preroll"] and d["capture_us"] < press_us + 5_000_000]
    assert len(early) > 100, f"only {len(early)} live packets in the first 5 s"
    early.sort()
    p95 = early[int(0.95 * (len(early) - 1))]
    # Goal 1 s (the bench reports it); generous here for a loaded 2-core host. Before the
    # fix live waited behind the whole pre-roll: several seconds.
    assert p95 <= 1500, f"live capture-to-room p95 {p95:.0f} ms in the first 5 s"


def test_live_voice_has_no_hole(slow_incident):
    press_us = slow_incident["press_us"]
    audio = sorted(d["capture_us"] for _, d in slow_incident["arrivals"]
                   if not d["preroll"] and d["stream"] == 2
                   and d["capture_us"] < press_us + LIVE_S * 1e6 - 500_000)
    assert audio and audio[0] < press_us + 500_000
    worst = max(b - a for a, b in zip(audio, audio[1:], strict=False))
    assert worst <= 100_000, f"a {worst / 1000:.0f} ms hole in the live voice"


def test_complete_evidence_holds_the_whole_preroll(slow_incident):
    done = slow_incident["complete"]
    assert done["gaps"] == [], done
    stamps = decoded_stamps(done["path"])
    press_us = slow_incident["press_us"]
    assert stamps[0] <= press_us - (PREROLL_S - 0.1) * 1e6, "pre-roll cut short"
    pre = [s for s in stamps if s < press_us]
    assert all(b > a for a, b in zip(stamps, stamps[1:], strict=False)), "out of order"
    worst = max(b - a for a, b in zip(pre, pre[1:], strict=False))
    assert worst < 2.5e6 / FPS, f"a {worst / 1000:.0f} ms hole in the pre-roll"
    assert len(pre) >= 0.95 * FPS * PREROLL_S
    # The live file showed the present; the pre-roll that came after it is no gap there.
    assert slow_incident["evidence"]["gaps"] == []
    assert slow_incident["evidence"]["preroll_behind"] > 0
