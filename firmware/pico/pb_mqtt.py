# A small MQTT 3.1.1 client for the Pico W: QoS 0/1 publish, subscribe, Last Will, keepalive,
# persistent session (clean session off). It runs over a socket the caller has already wrapped
# in TLS (pb_net.tls_connect). One write per packet; incoming packets are read whole.
import select
import struct

from micropython import const

_CONNECT = const(0x10)
_CONNACK = const(0x20)
_PUBLISH = const(0x30)
_PUBACK = const(0x40)
_SUBSCRIBE = const(0x82)
_SUBACK = const(0x90)
_PINGREQ = const(0xC0)
_PINGRESP = const(0xD0)
_DISCONNECT = const(0xE0)

CONNACK_REASONS = ("accepted", "unacceptable protocol version", "identifier rejected",
                   "server unavailable", "bad user name or password", "not authorized")


class MQTTError(Exception):
    pass


def _varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return out


def _str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("!H", len(b)) + b


class MQTTClient:
    def __init__(self, client_id, keepalive_s, on_message, on_puback):
        """on_message(topic: str, payload: bytes); on_puback(packet_id: int)."""
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.sock = None
        self._poll = select.poll()
        self._pid = 0
        self._one = bytearray(1)
        self.on_message = on_message
        self.on_puback = on_puback

    def connect(self, sock, clean=False, will=None):
        """`sock`: a connected (TLS) socket in blocking mode with a timeout. `will`: (topic,
        payload, retain, qos). Returns True when the broker had a session for us."""
        self.sock = sock
        flags = 0x02 if clean else 0x00
        payload = _str(self.client_id)
        if will is not None:
            topic, msg, retain, qos = will
            flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
            payload += _str(topic) + _str(msg)
        body = _str("MQTT") + bytes((4, flags)) + struct.pack("!H", self.keepalive_s) + payload
        self._send(_CONNECT, body)
        kind, data = self._read_packet()
        if kind != _CONNACK or len(data) != 2:
            raise MQTTError("no CONNACK (got packet type 0x%02x)" % kind)
        if data[1] != 0:
            reason = CONNACK_REASONS[data[1]] if data[1] < len(CONNACK_REASONS) else "?"
            raise MQTTError("CONNACK refused: %d %s" % (data[1], reason))
        self._poll.register(sock, select.POLLIN)
        return bool(data[0] & 1)

    def _next_pid(self):
        self._pid = self._pid % 65535 + 1
        return self._pid

    def publish(self, topic, msg, qos=1, retain=False):
        pid = self._next_pid() if qos else 0
        body = _str(topic) + (struct.pack("!H", pid) if qos else b"") + msg
        self._send(_PUBLISH | (qos << 1) | (1 if retain else 0), body)
        return pid

    def subscribe(self, topic, qos=1):
        pid = self._next_pid()
        self._send(_SUBSCRIBE, struct.pack("!H", pid) + _str(topic) + bytes((qos,)))
        return pid

    def ping(self):
        self._send(_PINGREQ, b"")

    def disconnect(self):
        try:
            self._send(_DISCONNECT, b"")
        finally:
            self.close()

    def close(self):
        if self.sock is not None:
            try:
                self._poll.unregister(self.sock)
            except (OSError, KeyError, ValueError):
                pass
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def poll(self, timeout_ms):
        """Wait up to `timeout_ms` for packets and handle every one that arrived. Returns how
        many came in (a PINGRESP counts: the link is alive). Raises OSError when it is gone."""
        count = 0
        while True:
            events = self._poll.poll(timeout_ms if count == 0 else 0)
            if not events:
                return count
            if events[0][1] & (select.POLLHUP | select.POLLERR):
                raise OSError("connection closed by the broker")
            kind, data = self._read_packet()
            count += 1
            if kind & 0xF0 == _PUBLISH:
                self._on_publish(kind, data)
            elif kind == _PUBACK:
                self.on_puback(struct.unpack("!H", data)[0])

    def _on_publish(self, kind, data):
        n = struct.unpack("!H", data[:2])[0]
        topic = bytes(data[2:2 + n]).decode()
        rest = 2 + n
        if kind & 0x06:
            pid = struct.unpack("!H", data[rest:rest + 2])[0]
            rest += 2
            self._send(_PUBACK, struct.pack("!H", pid))
        self.on_message(topic, bytes(data[rest:]))

    def _send(self, kind, body):
        if self.sock is None:
            raise OSError("not connected")
        self.sock.write(bytes((kind,)) + _varint(len(body)) + body)

    def _read_exactly(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        sock = self.sock
        if sock is None:
            raise OSError("not connected")
        while got < n:
            chunk = sock.read(n - got)
            if not chunk:
                raise OSError("connection closed by the broker")
            view[got:got + len(chunk)] = chunk
            got += len(chunk)
        return buf

    def _read_packet(self):
        kind = self._read_exactly(1)[0]
        size, shift = 0, 0
        while True:
            byte = self._read_exactly(1)[0]
            size |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
            if shift > 21:
                raise MQTTError("malformed remaining length")
        return kind, (self._read_exactly(size) if size else b"")
