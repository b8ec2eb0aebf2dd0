"""Supervision end to end (issue 5): heartbeats to the control room over real mosquitto and
mTLS, offline after missed heartbeats and back, broker failover, systemd sd_notify from a
real kiosk process, and the stage watchdog taking a hung encoder out of the systemd pings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from pinkbutton.firmware.app import Kiosk
from pinkbutton.firmware.backoff import Backoff
from pinkbutton.firmware.config import load_config
from pinkbutton.firmware.sdnotify import SdNotifier
from pinkbutton.firmware.transport import ConnectFailed, MqttTransport, TlsFiles
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake import FakeBackend
from pinkbutton.tools.pki import ca_paths, device_paths

from harness.broker import Mosquitto, free_port
from tests.fault_helpers import REPO, SimProcess, tune_config
from tests.helpers import Recorder, RunningKiosk, wait_until, write_kiosk_config
from tests.test_e2e_alert import RunningRoom

pytestmark = [pytest.mark.broker, pytest.mark.timeout(90)]

DEVICE = "pb-test-0002"


def add_section(cfg: Path, text: str) -> Path:
    cfg.write_text(cfg.read_text() + "\n" + text.strip() + "\n")
    return cfg


def line_with(lines: list[str], *words: str) -> str | None:
    return next((ln for ln in list(lines) if all(w in ln for w in words)), None)


# -- heartbeats, offline after 2 missed, back online ---------------------------------------


def test_room_sees_heartbeats_marks_a_silent_kiosk_offline_and_back(tmp_path, pki_dir,
                                                                    fresh_broker):
    cfg = add_section(write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE),
                      "[health]\ninterval_s = 0.5")
    with RunningRoom(pki_dir, fresh_broker, tmp_path / "room.db") as room, \
            SimProcess(cfg) as sim:
        sim.events.wait_for("connected", timeout=15)
        room.events.wait_for("health", lambda d: d["device_id"] == DEVICE and d["seq"] >= 3,
                             timeout=15)
        beats = [d for d in room.events.of("health") if d["device_id"] == DEVICE]
        assert [d["seq"] for d in beats] == list(range(1, len(beats) + 1))
        assert all(d["queue_depth"] == 0 for d in beats)
        assert wait_until(lambda: line_with(room.lines, f"DEVICE {DEVICE} online"), 5)
        # Frozen: the TCP connection stays open, so the broker's Last Will is ~7.5 s away
        # (1.5 x keepalive 5 s); only the missing heartbeats can tell the room sooner.
        os.kill(sim.proc.pid, signal.SIGSTOP)
        try:
            stopped = time.monotonic()
            offline = wait_until(lambda: line_with(room.lines, DEVICE, "OFFLINE"), timeout=20,
                                 what="OFFLINE notice")
            noticed_s = time.monotonic() - stopped
        finally:
            os.kill(sim.proc.pid, signal.SIGCONT)
        assert "no heartbeat for" in offline and "(2 missed, every 0.5 s)" in offline, offline
        print(f"kiosk frozen -> room OFFLINE after {noticed_s:.1f} s: {offline}")
        back = wait_until(lambda: line_with(room.lines, DEVICE, "back online after"),
                          timeout=20, what="back online notice")
        assert float(back.split("after ")[1].split(" s")[0]) >= 1.0, back
        log = room.receiver.store.device_log(DEVICE)
        assert [online for _, online, _ in log][:3] == [True, False, True], log
        assert "no heartbeat" in log[1][2]


def test_killed_kiosk_is_offline_at_once_by_its_last_will_and_back_after_restart(
        tmp_path, pki_dir, fresh_broker):
    cfg = add_section(write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE),
                      "[health]\ninterval_s = 0.5")
    with RunningRoom(pki_dir, fresh_broker, tmp_path / "room.db") as room:
        with SimProcess(cfg) as sim:
            sim.events.wait_for("connected", timeout=15)
            room.events.wait_for("health", lambda d: d["device_id"] == DEVICE, timeout=15)
            sim.kill9()  # the kernel closes the socket: the broker publishes the Last Will
        offline = wait_until(lambda: line_with(room.lines, DEVICE, "OFFLINE"), timeout=10,
                             what="OFFLINE notice")
        time.sleep(1.0)
        with SimProcess(cfg) as sim:
            sim.events.wait_for("connected", timeout=15)
            back = wait_until(lambda: line_with(room.lines, DEVICE, "back online after"),
                              timeout=15, what="back online notice")
        assert float(back.split("after ")[1].split(" s")[0]) >= 1.0, back
        time.sleep(2.0)  # the goodbye of the second run and any late Will settle
        # One OFFLINE per outage: Will and missed heartbeats do not both announce it.
        assert [ln for ln in room.lines if DEVICE in ln and "OFFLINE" in ln][0] == offline
        assert len([ln for ln in room.lines if DEVICE in ln and "OFFLINE" in ln]) <= 2


def test_a_bad_heartbeat_is_rejected_with_a_reason(tmp_path, pki_dir, broker, mqtt_client):
    with RunningRoom(pki_dir, broker, tmp_path / "room.db") as room:
        dev = mqtt_client(pki_dir, "pb-test-0003", broker)
        dev.publish("pinkbutton/v1/dev/pb-test-0003/health", b'{"v":1,"type":"health"}', qos=0)
        got = room.events.wait_for("rejected", lambda d: d["topic"].endswith("/health"))
        assert "'interval_s'" in got["reason"]
        view = room.receiver.monitor.device("pb-test-0003")  # maybe known from a retained status
        assert view is None or view.last_heartbeat is None


# -- broker failover ------------------------------------------------------------------------


def test_dead_primary_broker_fails_over_to_the_fallback_and_delivers(tmp_path, pki_dir,
                                                                     fresh_broker):
    dead = free_port()  # nothing listens here
    cfg = tune_config(write_kiosk_config(tmp_path, pki_dir, dead, DEVICE),
                      fallback_hosts=[f"localhost:{fresh_broker.port}"])
    with RunningRoom(pki_dir, fresh_broker, tmp_path / "room.db") as room, \
            RunningKiosk(cfg) as kiosk:
        got = kiosk.events.wait_for("connected", timeout=15)
        assert got["broker"] == f"localhost:{fresh_broker.port}"
        failed = kiosk.events.of("connect_failed")
        assert failed and f"localhost:{dead}" in failed[0]["reason"]
        assert f"next broker localhost:{fresh_broker.port}" in failed[0]["reason"]
        assert failed[0]["retry_in"] == 0.0  # the fallback is tried at once
        time.sleep(0.3)  # cmd subscription acknowledged
        kiosk.press()
        alert_id = kiosk.events.wait_for("persisted")["alert_id"]
        kiosk.events.wait_for("receipt", timeout=15)
        assert room.receiver.store.incident(alert_id) is not None


def test_all_brokers_dead_each_round_tries_every_broker_then_backs_off(tmp_path, pki_dir):
    dead = [free_port(), free_port(), free_port()]
    dev = device_paths(pki_dir, DEVICE)
    events = Recorder()
    transport = MqttTransport(
        client_id=DEVICE, host="localhost", port=dead[0],
        tls=TlsFiles(ca_paths(pki_dir).cert, dev.cert, dev.key),
        on_event=lambda ev: events(type(ev).__name__, {"ev": ev}),
        backoff=Backoff(0.05, 0.2), fallbacks=[("localhost", dead[1]), ("127.0.0.1", dead[2])],
    )
    transport.start()
    try:
        wait_until(lambda: len(events.of("ConnectFailed")) >= 7, timeout=20, what="7 failures")
    finally:
        transport.stop()
    failed: list[ConnectFailed] = [d["ev"] for d in events.of("ConnectFailed")][:7]
    tried = [f.reason.split("broker ")[1].split(" ")[0] for f in failed]
    ring = [f"localhost:{dead[0]}", f"localhost:{dead[1]}", f"127.0.0.1:{dead[2]}"]
    assert tried == (ring * 3)[:7], tried
    assert [f.retry_in == 0.0 for f in failed] == [True, True, False] * 2 + [True]


def test_primary_broker_killed_kiosk_moves_to_the_second_broker(tmp_path, pki_dir,
                                                               fresh_broker):
    with Mosquitto(tmp_path / "second", pki_dir) as second:
        cfg = tune_config(write_kiosk_config(tmp_path, pki_dir, fresh_broker.port, DEVICE),
                          fallback_hosts=[f"localhost:{second.port}"], keepalive_s=2)
        with RunningRoom(pki_dir, second, tmp_path / "room.db") as room, \
                RunningKiosk(cfg) as kiosk:
            got = kiosk.events.wait_for("connected", timeout=15)
            assert got["broker"] == f"localhost:{fresh_broker.port}"
            fresh_broker.kill()
            kiosk.events.wait_for("connected",
                                  lambda d: d["broker"] == f"localhost:{second.port}",
                                  timeout=20)
            time.sleep(0.3)
            kiosk.press()
            alert_id = kiosk.events.wait_for("persisted")["alert_id"]
            kiosk.events.wait_for("receipt", timeout=15)
            assert [i.alert_id for i in room.receiver.store.all_incidents()] == [alert_id]
            # The room on the second broker hears this kiosk's heartbeats too.
            room.events.wait_for("health", lambda d: d["device_id"] == DEVICE, timeout=15)


# -- systemd: READY, WATCHDOG, STATUS, STOPPING from a real kiosk process ------------------


class NotifySocket:
    """What systemd listens on: a datagram socket; every datagram is recorded."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages = Recorder()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096).decode()
            except TimeoutError:
                continue
            except OSError:
                return
            for line in data.splitlines():
                key, _, value = line.partition("=")
                self.messages(key, {"value": value, "at": time.monotonic()})

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def start_kiosk_process(cfg: Path, notify: Path, watchdog_usec: int) -> subprocess.Popen:
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": str(watchdog_usec)}
    env.pop("WATCHDOG_PID", None)
    return subprocess.Popen(
        [sys.executable, "-m", "pinkbutton.simulator.cli", "run", "--config", str(cfg), "--no-media",
         "--json"],
        cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )


def stop_process(proc: subprocess.Popen) -> int:
    try:
        return proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_kiosk_process_tells_systemd_ready_watchdog_status_and_stopping(tmp_path, pki_dir,
                                                                       broker):
    cfg = write_kiosk_config(tmp_path, pki_dir, broker.port, DEVICE)
    with NotifySocket(tmp_path / "notify.sock") as systemd:
        proc = start_kiosk_process(cfg, systemd.path, watchdog_usec=1_000_000)  # ping every 0.5 s
        try:
            systemd.messages.wait_for("READY", timeout=20)
            systemd.messages.wait_for("STATUS", lambda d: "online via localhost" in d["value"],
                                      timeout=15)
            wait_until(lambda: len(systemd.messages.of("WATCHDOG")) >= 4, timeout=15,
                       what="4 watchdog pings")
            pings = [d["at"] for d in systemd.messages.of("WATCHDOG")]
            assert all(d["value"] == "1" for d in systemd.messages.of("WATCHDOG"))
            # Never slower than systemd's period (1 s), with slack for a busy machine.
            assert max(b - a for a, b in zip(pings, pings[1:], strict=False)) < 3.0, pings
            assert systemd.messages.of("STOPPING") == []
            proc.send_signal(signal.SIGTERM)
            systemd.messages.wait_for("STOPPING", timeout=15)
        finally:
            rc = stop_process(proc)
        assert rc == 0, proc.stderr.read()[-2000:]
        kinds = [k for k, _ in systemd.messages.items]
        assert kinds.index("READY") < kinds.index("STOPPING")
        assert kinds[-1] == "STOPPING" or "WATCHDOG" not in kinds[kinds.index("STOPPING"):]


def test_kiosk_without_a_broker_is_still_ready_and_alive_for_systemd(tmp_path, pki_dir):
    cfg = write_kiosk_config(tmp_path, pki_dir, free_port(), DEVICE)  # nobody listens
    with NotifySocket(tmp_path / "notify.sock") as systemd:
        proc = start_kiosk_process(cfg, systemd.path, watchdog_usec=1_000_000)
        try:
            systemd.messages.wait_for("READY", timeout=20)
            systemd.messages.wait_for("STATUS", lambda d: "offline" in d["value"], timeout=10)
            wait_until(lambda: len(systemd.messages.of("WATCHDOG")) >= 3, timeout=15,
                       what="watchdog pings while offline")
            proc.send_signal(signal.SIGTERM)
            systemd.messages.wait_for("STOPPING", timeout=15)
        finally:
            rc = stop_process(proc)
        assert rc == 0


# -- stage watchdog: a hung encoder is restarted, and systemd stops hearing from us ---------


class MediaKiosk:
    """A Kiosk with a small fake camera, a systemd notify socket and WATCHDOG_USEC=0.4 s."""

    def __init__(self, cfg: Path, notify: NotifySocket) -> None:
        config = load_config(cfg)
        clock = Clock()
        backend = FakeBackend()
        self.events = Recorder()
        self.button = backend.button(clock, 17, 0.05)
        notifier = SdNotifier({"NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "400000"})
        self.kiosk = Kiosk(config, self.button, backend.indicator(clock, 27), clock=clock,
                           listeners=[self.events], camera=backend.camera(clock, 160, 120, 5),
                           notifier=notifier)
        self.thread = threading.Thread(target=self.kiosk.run, daemon=True)

    def __enter__(self) -> MediaKiosk:
        self.thread.start()
        self.events.wait_for("connected", timeout=15)
        return self

    def __exit__(self, *exc) -> None:
        self.kiosk.stop()
        self.thread.join(15)

    def press(self) -> None:
        self.button.press()
        time.sleep(0.12)
        self.button.release()


def media_config(tmp_path: Path, pki_dir: Path, port: int) -> Path:
    return add_section(write_kiosk_config(tmp_path, pki_dir, port, DEVICE),
                       "[health]\nstage_timeout_s = 1\n\n"
                       "[media]\nwidth = 160\nheight = 120\nfps = 5\naudio = false")


def test_hung_encoder_is_reported_restarted_and_holds_back_systemd_pings(tmp_path, pki_dir,
                                                                         broker):
    cfg = media_config(tmp_path, pki_dir, broker.port)
    with NotifySocket(tmp_path / "notify.sock") as systemd, MediaKiosk(cfg, systemd) as mk:
        kiosk = mk.kiosk
        pipeline = kiosk.media.pipeline
        wait_until(lambda: pipeline.stats.video_packets > 0, timeout=15, what="video encoded")
        release = threading.Event()
        real_encode = pipeline.video.encode

        def hung_encode(frame):
            release.wait(30)  # the encoder hangs (a wedged driver, a codec bug)
            return real_encode(frame)

        pipeline.video.encode = hung_encode
        wait_until(lambda: "stage_stuck" in kiosk.state.faults, timeout=15,
                   what="stage_stuck fault")
        assert kiosk.watchdog.restarts("media-encoder") >= 1
        # While the stage is stuck, systemd hears nothing: give it a full second.
        time.sleep(0.3)
        before = len(systemd.messages.of("WATCHDOG"))
        time.sleep(1.0)
        assert len(systemd.messages.of("WATCHDOG")) == before, "pings went on while stuck"
        status = systemd.messages.of("STATUS")[-1]["value"]
        assert "stage_stuck" in status, status
        # The driver recovers: the restarted pipeline encodes again, fault cleared, pings back.
        pipeline.video.encode = real_encode
        release.set()
        wait_until(lambda: "stage_stuck" not in kiosk.state.faults, timeout=30,
                   what="stage_stuck cleared")
        encoded = pipeline.stats.video_packets
        wait_until(lambda: pipeline.stats.video_packets > encoded, timeout=15,
                   what="encoding again after the restart")
        wait_until(lambda: len(systemd.messages.of("WATCHDOG")) > before, timeout=10,
                   what="pings resumed")


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_dead_media_sender_thread_is_revived_and_the_stream_goes_on(tmp_path, pki_dir, broker):
    cfg = media_config(tmp_path, pki_dir, broker.port)
    with RunningRoom(pki_dir, broker, tmp_path / "room.db") as room, \
            NotifySocket(tmp_path / "notify.sock") as systemd, MediaKiosk(cfg, systemd) as mk:
        time.sleep(0.3)
        mk.press()
        mk.events.wait_for("stream_start", timeout=15)
        sender = mk.kiosk.media.sender
        wait_until(lambda: sender.stats().sent_video > 0, timeout=15, what="media sent")
        real_pump = sender.pump

        def crash_once():
            sender.pump = real_pump
            raise RuntimeError("bug in the sender loop")  # escapes: the thread dies

        sender.pump = crash_once
        # Revived within one stage timeout, so the fault is brief: the room's EVENT lines
        # are its record.
        wait_until(lambda: line_with(room.lines, "EVENT", DEVICE, "fault", "media-sender"),
                   timeout=15, what="stage_stuck fault reported to the room")
        assert mk.kiosk.watchdog.restarts("media-sender") >= 1
        sent = sender.stats().sent_video
        wait_until(lambda: sender.stats().sent_video > sent, timeout=15,
                   what="the revived sender publishing again")
        wait_until(lambda: line_with(room.lines, "EVENT", DEVICE, "fault cleared: stage_stuck"),
                   timeout=15, what="stage_stuck cleared")
        assert "stage_stuck" not in mk.kiosk.state.faults
