# The campus button's main loop: button -> outbox -> MQTT over TLS -> LED, with the watchdog
# fed on every turn. Log lines ("<ticks_ms> <what>") go to the USB serial console.
import gc
import os
import time

import machine
import micropython
import pb_msg
from pb_backoff import Backoff
from pb_button import Button
from pb_led import Led
from pb_mqtt import MQTTClient, MQTTError
from pb_net import Net
from pb_outbox import Outbox

WDT_MS = 8000  # the RP2040's longest watchdog timeout is 8.3 s
LOOP_MS = 20  # longest sleep of one loop turn
HURRY_MS = 2000  # longest wait between broker attempts while an alert is unconfirmed


def log(msg):
    print("%d %s" % (time.ticks_ms(), msg))


def mem(what):
    gc.collect()
    peak = getattr(micropython, "mem_peak", None)
    log("mem: %s: heap used %d free %d%s" % (what, gc.mem_alloc(), gc.mem_free(),
                                             " peak %d" % peak() if peak else ""))


class App:
    def __init__(self, cfg):
        self.cfg = cfg
        timing = cfg["timing"]
        self.dev = cfg["device_id"]
        self.retry_ms = timing["retry_s"] * 1000
        self.ack_timeout_ms = timing["ack_timeout_s"] * 1000
        self.heartbeat_ms = timing["heartbeat_s"] * 1000
        self.keepalive_s = timing["keepalive_s"]
        self.help_ms = timing["help_s"] * 1000
        self.boot_ms = time.ticks_ms()
        self.wdt = machine.WDT(timeout=WDT_MS)
        self.led = Led(machine.Pin(cfg["pins"]["led"], machine.Pin.OUT))
        self.button = Button(cfg["pins"]["button"], timing["debounce_ms"])
        self.outbox = Outbox(log)
        self.net = Net(cfg, log)
        self.mqtt = None
        self.mqtt_backoff = Backoff(1000, 60_000)
        self.next_mqtt = self.boot_ms
        self.online_since = 0
        self.last_rx = self.last_tx = self.next_hb = self.boot_ms
        self.hb_seq = 0
        self.inflight = {}  # MQTT packet id -> alert_id
        self.pending = {}  # alert_id -> outbox record, until the room acknowledges or ends it
        self.incident = None  # the record of the current incident (may be acknowledged)
        self.help_until = None
        for rec in self.outbox.pending():
            rec["t0"] = None  # pressed in an earlier boot: aged by the wall clock
            rec["next"] = self.boot_ms
            self.pending[rec["alert_id"]] = rec
            self.incident = rec
        log("boot: %s, %d unconfirmed alert(s) in the outbox" % (self.dev, len(self.pending)))

    # -- the state the LED and the room see --------------------------------------------------

    def state(self):
        rec = self.incident
        if rec is None:
            return "idle"
        if rec.get("acked"):
            return "acknowledged"
        return "delivered" if rec.get("delivered") or rec.get("receipted") else "alerting"

    def pattern(self):
        state = self.state()
        if state == "alerting":
            return "sending"
        if state == "delivered":
            return "delivered"
        if state == "acknowledged":
            return "help_coming"
        if not self.net.joined:
            return "joining"
        return "idle" if self.mqtt is not None else "connecting"

    # -- events --------------------------------------------------------------------------------

    def on_press(self, at):
        rec = self.incident
        if rec is not None:  # a press during an incident extends it: never a second alert
            rec["presses"] += 1
            rec["next"] = time.ticks_ms()
            if rec["alert_id"] in self.pending:
                self.outbox.save(rec)
            log("press: incident %s extended (%d presses)" % (rec["alert_id"], rec["presses"]))
            return
        wall = pb_msg.wall_ms() - time.ticks_diff(time.ticks_ms(), at)
        rec = {"alert_id": pb_msg.uuid4(), "seq": 0, "kind": self.cfg["kind"],
               "pressed_ms": wall, "pressed_mono": time.ticks_diff(at, self.boot_ms) / 1000,
               "presses": 1, "announce": 0, "receipted": False}
        self.outbox.add(rec)  # on flash before the LED says "sending"
        rec["t0"] = at
        rec["next"] = time.ticks_ms()
        self.pending[rec["alert_id"]] = rec
        self.incident = rec
        self.help_until = None
        log("press: alert %s seq %d written to outbox" % (rec["alert_id"], rec["seq"]))
        if self.mqtt is None:
            self.next_mqtt = time.ticks_ms()  # try the broker now, whatever the backoff

    def on_message(self, topic, payload):
        self.last_rx = time.ticks_ms()
        parsed = pb_msg.parse_cmd(payload)
        if parsed is None:
            log("cmd: ignored a message that is not a v1 command")
            return
        cmd, alert_id = parsed
        rec = self.pending.get(alert_id) if alert_id else None
        if rec is None and self.incident is not None and self.incident["alert_id"] == alert_id:
            rec = self.incident
        if rec is None:
            log("cmd: %s for an alert this button does not have: ignored" % cmd)
            return
        log("cmd: %s %s" % (cmd, alert_id))
        if cmd == "receipt" and not rec.get("receipted"):
            rec["receipted"] = True
            rec["next"] = time.ticks_add(time.ticks_ms(), self.ack_timeout_ms)
            self.outbox.save(rec)
        elif cmd in ("ack", "dispatched"):
            rec["acked"] = True
            self.outbox.remove(alert_id)  # the room has it and an officer has seen it
            self.pending.pop(alert_id, None)
            if rec is self.incident:
                self.help_until = time.ticks_add(time.ticks_ms(), self.help_ms)
            mem("acknowledged")
        elif cmd == "end":
            self.outbox.remove(alert_id)
            self.pending.pop(alert_id, None)
            if rec is self.incident:
                self.incident = None

    def on_puback(self, pid):
        self.last_rx = time.ticks_ms()
        alert_id = self.inflight.pop(pid, None)
        rec = self.pending.get(alert_id) if alert_id else None
        if rec is not None and not rec.get("delivered"):
            rec["delivered"] = True
            log("puback: alert %s delivered to the broker" % alert_id)

    # -- the link ------------------------------------------------------------------------------

    def connect(self, now):
        broker = self.cfg["broker"]
        log("tls: connecting to %s:%d as %s" % (broker["host"], broker["port"], self.dev))
        self.wdt.feed()
        try:
            sock = self.net.tls_connect()
        except (OSError, ValueError) as e:  # mbedTLS reports a refused certificate as either
            self.mqtt_backoff_after(now, "tls: no connection to %s:%d: %s"
                                    % (broker["host"], broker["port"], _why(e)))
            return
        self.wdt.feed()
        client = MQTTClient(self.dev, self.keepalive_s, self.on_message, self.on_puback)
        will = (pb_msg.topic(self.dev, "status"),
                pb_msg.status(self.cfg, False, "offline", pb_msg.wall_ms()), True, 1)
        try:
            session = client.connect(sock, clean=False, will=will)
            client.subscribe(pb_msg.topic(self.dev, "cmd"), 1)
        except (OSError, MQTTError) as e:
            client.close()
            self.mqtt_backoff_after(now, "mqtt: %s" % _why(e))
            return
        self.mqtt = client
        self.mqtt_backoff.reset()
        self.online_since = pb_msg.wall_ms()
        self.last_rx = self.last_tx = now
        self.inflight = {}
        log("mqtt: connected (session present: %s)" % session)
        self.publish("status", pb_msg.status(self.cfg, True, self.state(), pb_msg.wall_ms()),
                     retain=True)
        self.next_hb = now
        for rec in self.pending.values():
            if not rec.get("receipted"):
                rec["next"] = now  # unconfirmed: announce again at once
        mem("connected")

    def mqtt_backoff_after(self, now, why):
        delay = self.mqtt_backoff.next_ms()
        if any(not rec.get("receipted") for rec in self.pending.values()):
            delay = min(delay, HURRY_MS)  # an alert waits for the room: keep trying
        log("%s; again in %d ms" % (why, delay))
        self.next_mqtt = time.ticks_add(now, delay)

    def drop(self, why):
        log("mqtt: connection lost: %s" % why)
        if self.mqtt is not None:
            self.mqtt.close()
        self.mqtt = None
        self.inflight = {}
        self.next_mqtt = time.ticks_ms()

    def publish(self, leaf, payload, qos=1, retain=False):
        assert self.mqtt is not None
        self.last_tx = time.ticks_ms()
        return self.mqtt.publish(pb_msg.topic(self.dev, leaf), payload, qos, retain)

    def announce(self, rec, now):
        age = time.ticks_diff(now, rec["t0"]) if rec["t0"] is not None \
            else pb_msg.wall_ms() - rec["pressed_ms"]
        rec["announce"] += 1
        escalated = rec["announce"] > 1 and age >= self.ack_timeout_ms
        pid = self.publish("alert", pb_msg.alert(self.cfg, rec, age, escalated))
        self.inflight[pid] = rec["alert_id"]
        rec["next"] = time.ticks_add(now, self.ack_timeout_ms if rec.get("receipted")
                                     else self.retry_ms)
        log("alert: %s announce %d published" % (rec["alert_id"], rec["announce"]))
        if rec["announce"] == 1:
            mem("alert published")

    def service(self, now):
        mqtt = self.mqtt
        assert mqtt is not None
        for rec in self.pending.values():
            if time.ticks_diff(now, rec["next"]) >= 0:
                self.announce(rec, now)
        if time.ticks_diff(now, self.next_hb) >= 0:
            self.hb_seq += 1
            try:
                st = os.statvfs("/")
                free_mb = st[0] * st[3] / 1048576
            except OSError:
                free_mb = None
            self.publish("health", pb_msg.health(
                self.cfg, self.hb_seq, time.ticks_diff(now, self.boot_ms) / 1000, self.state(),
                self.online_since, len(self.pending), free_mb), qos=0)
            self.next_hb = time.ticks_add(self.next_hb, self.heartbeat_ms)
            if time.ticks_diff(now, self.next_hb) >= 0:  # stalled: skip missed beats
                self.next_hb = time.ticks_add(now, self.heartbeat_ms)
        if time.ticks_diff(now, self.last_tx) >= self.keepalive_s * 500:
            self.last_tx = now
            mqtt.ping()
        if time.ticks_diff(now, self.last_rx) >= self.keepalive_s * 1500:
            self.drop("no answer from the broker for %d s" % (self.keepalive_s * 3 // 2))

    # -- the loop ------------------------------------------------------------------------------

    def run(self):
        shown = None
        state_sent = self.state()
        while True:
            self.wdt.feed()
            now = time.ticks_ms()
            for at in self.button.poll(now):
                self.on_press(at)
            if self.help_until is not None and time.ticks_diff(now, self.help_until) >= 0:
                self.help_until = None
                self.incident = None
            if not self.net.wifi(now):
                if self.mqtt is not None:
                    self.drop("Wi-Fi lost")
            elif self.mqtt is None and self.net.clock(now) and \
                    time.ticks_diff(now, self.next_mqtt) >= 0:
                self.connect(now)
            if self.mqtt is not None:
                try:
                    state = self.state()
                    if state != state_sent:
                        self.publish("status", pb_msg.status(self.cfg, True, state,
                                                             pb_msg.wall_ms()), retain=True)
                        state_sent = state
                    self.service(now)
                except (OSError, MQTTError) as e:
                    self.drop(_why(e))
            name = self.pattern()
            if name != shown:
                shown = name
                self.led.show(name)
                log("led: %s" % name)
            wait = min(self.led.tick(time.ticks_ms()), LOOP_MS)
            if self.mqtt is not None:
                try:
                    self.mqtt.poll(wait)
                except (OSError, MQTTError) as e:
                    self.drop(_why(e))
            else:
                time.sleep_ms(wait)


def _why(e):
    text = " ".join(str(a) for a in e.args) if e.args else type(e).__name__
    return " ".join(text.split()) or type(e).__name__
