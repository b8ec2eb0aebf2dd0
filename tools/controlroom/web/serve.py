"""`pinkbutton-controlroom serve`: the receiver (as `run`) plus the web console behind HTTPS.

The receiver runs on its own thread with its own store connection; the console (uvicorn, on
the main thread) reads the same SQLite file and queues officers' actions for it there, just
as a console in another process would (`--web-only`: no receiver in this process).
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import threading
from pathlib import Path

LOOPBACK_NAMES = ("localhost",)


class ServeError(Exception):
    """Bad --listen or missing certificate: a usage error (exit 2)."""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ServeError(f"--listen {text!r}: give HOST:PORT, e.g. 127.0.0.1:8443")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ServeError(f"--listen {host}:{port}: {(e.strerror or str(e)).lower()}") from None
    sock.listen(128)
    return sock


def make_server(app, *, certfile: Path | None, keyfile: Path | None):
    """A uvicorn server for the app (TLS when given a certificate); run it with
    `server.run(sockets=[bind(...)])`, stop it with `server.should_exit = True`."""
    import uvicorn

    class Server(uvicorn.Server):
        # The caller owns SIGINT/SIGTERM (`serve` stops its receiver too; a test runs the
        # server on a thread): uvicorn's own handlers would re-raise the signal after its
        # shutdown and kill the process before the receiver closed its evidence files.
        @contextlib.contextmanager
        def capture_signals(self):
            yield

    config = uvicorn.Config(
        app, ssl_certfile=str(certfile) if certfile else None,
        ssl_keyfile=str(keyfile) if keyfile else None, log_level="warning", lifespan="on",
        server_header=False, proxy_headers=False, ws_ping_interval=20.0)
    return Server(config)


class ConsoleThread:
    """The console served on a thread (tests, `make demo`): `with ConsoleThread(...) as c:`
    then `c.url`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, *,
                 certfile: Path | None = None, keyfile: Path | None = None) -> None:
        self.server = make_server(app, certfile=certfile, keyfile=keyfile)
        self.sock = bind(host, port)
        scheme = "https" if certfile else "http"
        self.url = f"{scheme}://{host}:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="console", daemon=True)

    def __enter__(self) -> ConsoleThread:
        self.thread.start()
        for _ in range(200):  # bounded: 10 s
            if self.server.started:
                return self
            self.thread.join(0.05)
            if not self.thread.is_alive():
                break
        raise RuntimeError("the console did not start")

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
