"""Pieces of the Pico W firmware (firmware/pico) run on the MicroPython unix port with the
test-only shims, no broker: the debouncer, the backoff, and the messages it builds, checked by
the CPython side's strict protocol decoders (firmware/protocol.py)."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap

import pytest
from pinkbutton.firmware import protocol as p

from tests.pico.device import FIRMWARE, SHIMS, micropython_binary


def run_mpy(code: str, tmp_path) -> dict:
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(code))
    result = subprocess.run(
        [micropython_binary(), "-X", "heapsize=192K", str(script)], cwd=tmp_path,
        env={**os.environ, "MICROPYPATH": f"{FIRMWARE}:{SHIMS}:.frozen"},
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_debounce_counts_a_press_once_ignores_bounces_and_replays_a_busy_loops_edges(tmp_path):
    out = run_mpy("""
        import json, time
        from pb_button import Button
        b = Button(15, 100)  # long, so that a loaded machine's late sleeps are no press
        pin = b.pin
        res = {}
        # contact bounce: 5 ms lows, never 100 ms stable
        for _ in range(4):
            pin._drive(0); time.sleep_ms(5); pin._drive(1); time.sleep_ms(5)
        time.sleep_ms(120)
        res["bounce"] = len(b.poll(time.ticks_ms()))
        # a press held 300 ms, polled often: counted once, at the contact
        t0 = time.ticks_ms()
        pin._drive(0)
        n = 0
        for _ in range(30):
            time.sleep_ms(10)
            presses = b.poll(time.ticks_ms())
            n += len(presses)
            if presses:
                res["at_ms"] = time.ticks_diff(presses[0], t0)
        pin._drive(1)
        time.sleep_ms(120)
        n += len(b.poll(time.ticks_ms()))
        res["held"] = n
        # two presses while the loop is busy (no poll at all): both replayed from the ring
        for _ in range(2):
            pin._drive(0); time.sleep_ms(150); pin._drive(1); time.sleep_ms(150)
        res["busy"] = len(b.poll(time.ticks_ms()))
        print(json.dumps(res))
    """, tmp_path)
    assert out["bounce"] == 0
    assert out["held"] == 1 and 0 <= out["at_ms"] <= 50
    assert out["busy"] == 2


def test_backoff_grows_to_its_cap_with_jitter_and_resets(tmp_path):
    out = run_mpy("""
        import json
        from pb_backoff import Backoff
        b = Backoff(1000, 60000)
        first = [b.next_ms() for _ in range(10)]
        b.reset()
        print(json.dumps({"first": first, "again": b.next_ms()}))
    """, tmp_path)
    first = out["first"]
    for n, delay in enumerate(first):
        cap = min(60000, 1000 << n)
        assert cap // 2 <= delay <= cap, (n, delay)
    assert 500 <= out["again"] <= 1000


@pytest.fixture
def messages(tmp_path) -> dict:
    return run_mpy("""
        import json
        import pb_msg
        cfg = {"device_id": "pb-gcu-b2-01", "timing": {"heartbeat_s": 30},
               "site": {"id": "lhr-gcu-b2", "name": "GCU Lahore \\u2014 block B", "lat": 31.5735,
                        "lon": 74.3094}}
        rec = {"alert_id": pb_msg.uuid4(), "seq": 7, "kind": "emergency",
               "pressed_ms": pb_msg.wall_ms(), "pressed_mono": 12.5, "presses": 2, "announce": 3}
        print(json.dumps({
            "alert": pb_msg.alert(cfg, rec, 31000, True),
            "status": pb_msg.status(cfg, False, "offline", pb_msg.wall_ms()),
            "health": pb_msg.health(cfg, 4, 120.5, "idle", pb_msg.wall_ms(), 0, 1.4),
            "uuids": [pb_msg.uuid4() for _ in range(50)],
            "cmd": pb_msg.parse_cmd('{"v":1,"type":"cmd","cmd":"ack","alert_id":"x"}'),
            "not_cmd": [pb_msg.parse_cmd(x) for x in ('[]', 'nope', '{"v":2,"type":"cmd"}')],
        }))
    """, tmp_path)


def test_the_picos_messages_pass_the_rooms_strict_decoders(messages):
    alert = p.decode_alert(messages["alert"], topic_device="pb-gcu-b2-01")
    assert alert.auth == "tls" and alert.signature is None
    assert (alert.seq, alert.announce, alert.escalated, alert.presses, alert.age_ms) == \
        (7, 3, True, 2, 31000)
    assert alert.site.name == "GCU Lahore \u2014 block B" and alert.firmware == "pico-0.1.0"
    assert alert.pressed_at.endswith("Z") and len(alert.pressed_at) == 24
    status = p.decode_status(messages["status"], topic_device="pb-gcu-b2-01")
    assert status.online is False and status.state == "offline"
    health = p.decode_health(messages["health"], topic_device="pb-gcu-b2-01")
    assert health.seq == 4 and health.interval_s == 30 and health.queue_depth == 0


def test_alert_ids_are_random_version_4_uuids(messages):
    import uuid
    ids = [uuid.UUID(x) for x in messages["uuids"]]
    assert len(set(ids)) == 50 and all(u.version == 4 for u in ids)
    assert all(str(u) == x for u, x in zip(ids, messages["uuids"], strict=True))


def test_only_v1_commands_are_taken(messages):
    assert messages["cmd"] == ["ack", "x"] and messages["not_cmd"] == [None, None, None]
