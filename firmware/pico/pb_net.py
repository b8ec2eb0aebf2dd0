# Getting online: Wi-Fi join with backoff, the clock from NTP (the RTC starts in 2021, when
# every certificate looks not yet valid), then TLS to the broker with the device's certificate.
import socket
import ssl
import time

import network
import ntptime
from pb_backoff import Backoff

MIN_YEAR = 2025  # a clock before this has not been set


def _read(path):
    with open(path, "rb") as f:
        return f.read()


class Net:
    def __init__(self, cfg, log):
        self.cfg = cfg
        self.log = log
        self.wlan = network.WLAN(network.STA_IF)
        self.wlan.active(True)
        self.join_backoff = Backoff(1000, 60_000)
        self.ntp_backoff = Backoff(1000, 60_000)
        self.joining_since = None
        self.next_join = time.ticks_ms()
        self.next_ntp = time.ticks_ms()
        self.clock_synced = False
        self.joined = False
        tls = cfg["tls"]
        # One context for every connection: the certificates are parsed once, not per attempt.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED  # explicit: MicroPython's client default is CERT_NONE
        ctx.load_verify_locations(cadata=_read(tls["ca"]))
        ctx.load_cert_chain(_read(tls["cert"]), _read(tls["key"]))
        self.ctx = ctx

    def wifi(self, now):
        """True while joined; otherwise drives the join (non-blocking) with backoff."""
        if self.wlan.isconnected():
            if not self.joined:
                self.joined = True
                self.log("wifi: joined %s" % self.cfg["wifi"]["ssid"])
                self.join_backoff.reset()
                self.joining_since = None
            return True
        if self.joined:
            self.joined = False
            self.log("wifi: lost the access point")
        if self.joining_since is not None:
            limit = self.cfg["timing"]["join_timeout_s"] * 1000
            if time.ticks_diff(now, self.joining_since) < limit:
                return False
            delay = self.join_backoff.next_ms()
            self.log("wifi: not joined after %d s (status %d); again in %d ms"
                     % (limit // 1000, self.wlan.status(), delay))
            self.wlan.disconnect()
            self.joining_since = None
            self.next_join = time.ticks_add(now, delay)
        if time.ticks_diff(now, self.next_join) >= 0:
            self.wlan.connect(self.cfg["wifi"]["ssid"], self.cfg["wifi"]["key"])
            self.joining_since = now
        return False

    def clock(self, now):
        """True once the clock was set from NTP this boot (TLS needs it)."""
        if self.clock_synced:
            return True
        if time.ticks_diff(now, self.next_ntp) < 0:
            return False
        try:
            ntptime.host = self.cfg["ntp_host"]
            ntptime.settime()
            year = time.gmtime()[0]
            if year < MIN_YEAR:
                raise OSError("NTP gave year %d" % year)
            self.clock_synced = True
            self.log("ntp: clock set from %s" % self.cfg["ntp_host"])
            return True
        except (OSError, OverflowError) as e:
            delay = self.ntp_backoff.next_ms()
            self.log("ntp: %s: %r; again in %d ms" % (self.cfg["ntp_host"], e, delay))
            self.next_ntp = time.ticks_add(now, delay)
            return False

    def tls_connect(self, timeout_s=5):  # < the watchdog's 8 s, even for a black hole
        broker = self.cfg["broker"]
        addr = socket.getaddrinfo(broker["host"], broker["port"], 0, socket.SOCK_STREAM)[0][-1]
        sock = socket.socket()
        sock.settimeout(timeout_s)
        try:
            sock.connect(addr)
            # TLS 1.2+, the broker's certificate checked against ca.der and its host name.
            return self.ctx.wrap_socket(sock, server_hostname=broker["server_hostname"])
        except BaseException:
            sock.close()
            raise
