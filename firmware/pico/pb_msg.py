# Protocol v1 messages (docs/protocol.md) as the Pico sends them. Its alerts are unsigned:
# "auth": "tls" says they are authenticated by the TLS client certificate alone.
import json
import os
import time

FIRMWARE = "pico-0.1.0"


def topic(device_id, leaf):
    return "pinkbutton/v1/dev/%s/%s" % (device_id, leaf)


def wall_ms():
    return time.time_ns() // 1_000_000


def iso(ms):
    t = time.gmtime(ms // 1000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ" % (t[0], t[1], t[2], t[3], t[4], t[5], ms % 1000)


def uuid4():
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = "".join("%02x" % x for x in b)
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def alert(cfg, rec, age_ms, escalated):
    site = cfg["site"]
    return json.dumps({
        "v": 1, "type": "alert", "device_id": cfg["device_id"], "alert_id": rec["alert_id"],
        "seq": rec["seq"], "kind": rec["kind"], "pressed_at": iso(rec["pressed_ms"]),
        "pressed_mono": rec["pressed_mono"], "age_ms": max(0, age_ms),
        "announce": rec["announce"], "escalated": escalated, "presses": rec["presses"],
        "site": {"id": site["id"], "name": site["name"], "lat": site["lat"], "lon": site["lon"]},
        "firmware": FIRMWARE, "sent_at": iso(wall_ms()), "follows": None, "auth": "tls",
    })


def status(cfg, online, state, at_ms):
    return json.dumps({"v": 1, "type": "status", "device_id": cfg["device_id"],
                       "online": online, "state": state, "firmware": FIRMWARE,
                       "at": iso(at_ms)})


def health(cfg, seq, uptime_s, state, online_since_ms, queue_depth, disk_free_mb):
    return json.dumps({
        "v": 1, "type": "health", "device_id": cfg["device_id"], "seq": seq,
        "uptime_s": uptime_s, "interval_s": cfg["timing"]["heartbeat_s"], "state": state,
        "online_since": iso(online_since_ms) if online_since_ms else None,
        "queue_depth": queue_depth, "disk_free_mb": disk_free_mb, "temperature_c": None,
        "last_selftest": None, "selftest_ok": None, "faults": [], "firmware": FIRMWARE,
        "at": iso(wall_ms()),
    })


def parse_cmd(payload):
    """(cmd, alert_id) of a v1 command, or None for anything else."""
    try:
        o = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(o, dict) or o.get("v") != 1 or o.get("type") != "cmd":
        return None
    cmd, alert_id = o.get("cmd"), o.get("alert_id")
    if not isinstance(cmd, str) or not (alert_id is None or isinstance(alert_id, str)):
        return None
    return cmd, alert_id
