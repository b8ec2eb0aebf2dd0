"""The running firmware's local control socket: `state_dir/control.sock`.

Line JSON over a Unix stream socket: the client sends one request line (`{"cmd": "status"}`,
or `{"cmd": "test-alert"}` to have the kiosk send an alert of kind `test`), the kiosk answers
one line and closes. The socket is 0600 in the 0700 state directory, so only
the kiosk's own user (and root) can ask. A thread of its own serves it; it reads a snapshot
that the kiosk's state thread keeps current, so a slow or hostile client never holds up an alert.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("pinkbutton.control")

SOCKET_NAME = "control.sock"
MAX_REQUEST = 4096
CLIENT_TIMEOUT_S = 2.0


class NotRunning(Exception):
    """Nobody answers on the control socket: the firmware is not running."""


def socket_path(state_dir: Path) -> Path:
    return Path(state_dir) / SOCKET_NAME


# A Unix socket's address holds at most 107 bytes; a deeper state_dir is reached through
# /proc/self/fd/N, a short name for the directory opened by descriptor (Linux).
_MAX_ADDRESS = 100


@contextmanager
def _address(path: Path) -> Iterator[str]:
    if len(os.fsencode(path)) <= _MAX_ADDRESS:
        yield str(path)
        return
    fd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


class ControlServer:
    """Serves `status` requests from `snapshot()` (called on this server's thread; it must
    only read). `start()` returns at once and never raises: the socket is made on the
    server's own thread (checking a stale one can take a client timeout), and without a
    control socket the kiosk still alerts."""

    def __init__(self, state_dir: Path, snapshot: Callable[[], dict],
                 test_alert: Callable[[], dict] | None = None) -> None:
        """`test_alert()` (called on this server's thread; it must only enqueue) answers
        `{"cmd": "test-alert"}` with the whole reply: `{"ok": true, "test_alert":
        {"alert_id": …}}` or `{"ok": false, "error": …}`."""
        self.path = socket_path(state_dir)
        self._snapshot = snapshot
        self._test_alert = test_alert
        self._sock: socket.socket | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()  # _sock appearing vs stop(): one of them sees the other
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="control-socket", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._lock:
            self._stop.set()
            if self._sock is not None:
                # Wakes the server's poll() at once (Linux: a listening socket shut down is
                # readable and accept() fails), so the server needs no timeout to notice.
                with contextlib.suppress(OSError):
                    self._sock.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            # Not longer: a silent client may hold the thread for CLIENT_TIMEOUT_S; a socket
            # left behind when the process exits is replaced at the next start.
            self._thread.join(timeout=1.0)

    def _run(self) -> None:
        try:
            sock = self._bind()
        except OSError as e:
            log.error("control socket %s not available (pinkbutton-diag status will not "
                      "answer): %s", self.path, e.strerror or e)
            return
        with self._lock:
            self._sock = sock
        try:
            self._serve(sock)
        finally:
            sock.close()
            try:
                self.path.unlink()
            except OSError:
                pass

    def _bind(self) -> socket.socket:
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            mode = None
        if mode is not None:
            if not stat.S_ISSOCK(mode):
                raise OSError(f"{self.path} exists and is not a socket")
            try:
                request(self.path, "status")
            except NotRunning:
                self.path.unlink()  # left behind by a kiosk that died
            else:
                raise OSError("another firmware process answers on it")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Bound under a temporary name, made 0600, then renamed into place: the socket never
        # appears at its path with the umask's mode (a client, or a test, could find it there
        # between bind and chmod). The 0700 directory keeps others out meanwhile anyway.
        fresh = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        fresh.unlink(missing_ok=True)
        try:
            with _address(fresh) as address:
                sock.bind(address)
            os.chmod(fresh, 0o600)
            os.replace(fresh, self.path)
            sock.listen(4)
        except OSError:
            sock.close()
            fresh.unlink(missing_ok=True)
            raise
        return sock

    def _serve(self, sock: socket.socket) -> None:
        # poll(), not select(): a simulator runs hundreds of kiosks in one process, and
        # select() takes no descriptor above 1023. No timeout: stop() wakes it.
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        while not self._stop.is_set():
            poller.poll()
            if self._stop.is_set():
                break
            try:
                conn, _ = sock.accept()
            except OSError:
                continue
            with conn:
                try:
                    self._answer(conn)
                except Exception as e:  # noqa: BLE001 - a bad client must not end the server
                    log.warning("control socket: %s: %s", type(e).__name__, e)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(CLIENT_TIMEOUT_S)
        data = b""
        while b"\n" not in data and len(data) <= MAX_REQUEST:
            piece = conn.recv(MAX_REQUEST)
            if not piece:
                break
            data += piece
        try:
            req = json.loads(data.split(b"\n", 1)[0])
            cmd = req.get("cmd") if isinstance(req, dict) else None
        except ValueError:
            cmd = None
        if cmd == "status":
            reply = {"ok": True, "status": self._snapshot()}
        elif cmd == "test-alert" and self._test_alert is not None:
            reply = self._test_alert()
        else:
            known = "status, test-alert" if self._test_alert is not None else "status"
            reply = {"ok": False, "error": f"unknown request (known: {known})"}
        conn.sendall(json.dumps(reply).encode() + b"\n")


class Refused(ValueError):
    """The firmware answered, and said no (`error` is its one line)."""

    def __init__(self, cmd: str, error: str) -> None:
        super().__init__(f"firmware refused {cmd!r}: {error}")
        self.error = error


def request(path: Path, cmd: str, timeout_s: float = CLIENT_TIMEOUT_S,
            key: str = "status") -> dict:
    """Ask the running firmware; the reply's `key` part. Raises NotRunning when nobody
    answers on `path`, Refused when the firmware says no, ValueError for a bad answer."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout_s)
    with sock:
        try:
            with _address(path) as address:
                sock.connect(address)
        except (FileNotFoundError, ConnectionRefusedError) as e:
            raise NotRunning(f"no firmware answers on {path}") from e
        sock.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            piece = sock.recv(65536)
            if not piece:
                break
            data += piece
    reply = json.loads(data)
    if isinstance(reply, dict) and reply.get("ok") is False and isinstance(reply.get("error"), str):
        raise Refused(cmd, reply["error"])
    if not isinstance(reply, dict) or not reply.get("ok"):
        raise ValueError(f"firmware refused {cmd!r}: {reply}")
    status = reply.get(key)
    if not isinstance(status, dict):
        raise ValueError(f"firmware answered without a {key}")
    return status
