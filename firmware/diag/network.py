"""One bounded round trip to the broker: TCP connect, TLS handshake with the kiosk's own
certificates (firmware.transport's context), MQTT v5 CONNECT and its CONNACK.

The diag connects under its own client id (`<device>-diag`, clean start, no session kept),
so the kiosk's persistent session and its queued commands are never touched.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time

from pinkbutton.firmware.config import Config
from pinkbutton.firmware.diag.checks import Check, failed, passed
from pinkbutton.firmware.transport import (
    TlsFiles,
    TransportError,
    describe_connect_error,
    make_tls_context,
)

_CONNACK_REASONS = {
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized (is the certificate revoked?)",
    0x88: "server unavailable",
    0x8A: "banned",
}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _utf8(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, keepalive_s: int = 10) -> bytes:
    """MQTT v5 CONNECT: clean start, no will, no properties."""
    body = _utf8("MQTT") + bytes([5, 0x02]) + struct.pack("!H", keepalive_s) + b"\x00"
    body += _utf8(client_id)
    return b"\x10" + _varint(len(body)) + body


def _read_exact(sock: ssl.SSLSocket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        piece = sock.recv(n - len(data))
        if not piece:
            raise ConnectionResetError("closed")
        data += piece
    return data


def _read_length(sock: ssl.SSLSocket) -> int:
    """MQTT's variable-length "remaining length" (1 to 4 bytes)."""
    value = 0
    for shift in range(0, 28, 7):
        byte = _read_exact(sock, 1)[0]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value
    raise ConnectionResetError("malformed remaining length")


def network_check(config: Config, timeout_s: float | None = None) -> Check:
    """Connect to the configured broker as this kiosk; the detail gives each stage's time."""
    name = "network"
    b = config.broker
    host, port = b.host, b.port
    timeout = timeout_s if timeout_s is not None else b.connect_timeout_s
    try:
        ctx = make_tls_context(TlsFiles(b.ca, b.cert, b.key))
    except TransportError as e:
        return failed(name, str(e), "run `pinkbutton-diag check-config` for the certificate files")
    start = time.monotonic()
    stage = "tcp"
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        return failed(name, describe_connect_error(e, host, port, b.ca),
                      "check the network cable / modem and that the broker is up "
                      f"(broker.host {host}, port {port})")
    tcp_ms = (time.monotonic() - start) * 1000
    try:
        with raw, ctx.wrap_socket(raw, server_hostname=host) as tls:
            stage = "mqtt"
            tls_ms = (time.monotonic() - start) * 1000
            tls.sendall(connect_packet(f"{config.device.id}-diag"))
            kind = _read_exact(tls, 1)[0] >> 4
            if kind != 2:
                return failed(name, f"broker {host}:{port} answered CONNECT with packet type "
                              f"{kind}, not CONNACK", "check that broker.port is MQTT over TLS")
            rest = _read_exact(tls, _read_length(tls))
            if len(rest) < 2:
                return failed(name, f"broker {host}:{port} sent a malformed CONNACK",
                              "check that broker.port is an MQTT v5 broker")
            reason = rest[1]
            total_ms = (time.monotonic() - start) * 1000
            tls.sendall(b"\xe0\x00")  # DISCONNECT
    except ssl.SSLCertVerificationError as e:
        return failed(name, describe_connect_error(e, host, port, b.ca),
                      "install the deployment's CA as broker.ca (or fix broker.host)")
    except OSError as e:
        if stage == "mqtt" and isinstance(e, (ConnectionResetError, BrokenPipeError,
                                              ssl.SSLError)):
            # TLS 1.3: the broker checks our certificate after the handshake has finished.
            return failed(name, f"broker {host}:{port} closed the connection before CONNACK: "
                          "it probably refused our certificate (revoked, or from another CA)",
                          "have the control room check this kiosk's certificate")
        return failed(name, describe_connect_error(e, host, port, b.ca),
                      "check the network and that the broker is up")
    if reason != 0:
        why = _CONNACK_REASONS.get(reason, f"reason code {reason}")
        return failed(name, f"broker {host}:{port} refused the MQTT connect: {why}",
                      "have the control room check this kiosk's certificate and ACL")
    return passed(name, f"broker {host}:{port}: TCP {tcp_ms:.0f} ms, TLS {tls_ms:.0f} ms, "
                  f"MQTT CONNACK {total_ms:.0f} ms")
