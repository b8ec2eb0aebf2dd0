"""A real mosquitto 2 with the Pink Button mTLS + ACL setup (scenarios, demo, tests, benchmarks).

The broker only talks TLS with client certificates; the certificate CN becomes the MQTT
username, and the ACL below keys on it, so a device can only publish under its own id.
`Mosquitto` is a context manager around one broker process with its own work dir
(config, ACL, persistence, log), so a scenario or a fault test can kill and restart it without
touching anyone else's broker. `pinkbutton-sim scenario` runs its broker with it;
harness/broker.py (the tests' fixture and `python -m harness.broker run`) uses it too.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

HOST = "127.0.0.1"
CONFIG_NAME = "mosquitto.conf"
ACL_NAME = "acl"
LOG_NAME = "mosquitto.log"
STDERR_NAME = "mosquitto.stderr"

# What ships (deploy/mosquitto/, installed by its install.sh under Debian's stock config) is
# what the tests run: the ACL file as it is, and the drop-in with only the listener line and the
# file paths replaced; the per-test options (log, persistence, `user root`) come on top.
DEPLOY_DIR = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto"
DROPIN_PATH = DEPLOY_DIR / "pinkbutton.conf"
ACL_PATH = DEPLOY_DIR / "pinkbutton.acl"

# The PKI folder's layout (tools/pki.py makes it; the simulator does not import tools, as
# simulator/fleetfile.py does not: tests/test_scenarios.py checks both agree).
CA_NAME = "ca.pem"
BROKER_NAME = "pinkbutton-broker"
CONTROLROOM_NAME = "controlroom"
CRL_NAME = "crl.pem"


def _pair(pki_dir: Path, name: str) -> tuple[Path, Path]:
    return Path(pki_dir) / f"{name}.pem", Path(pki_dir) / f"{name}.key"


def _acl_text() -> str:
    try:
        return ACL_PATH.read_text()
    except OSError as e:
        raise BrokerError(f"cannot read the broker's ACL {ACL_PATH}: {e.strerror or e} "
                          "(run from a checkout)") from None


class BrokerError(RuntimeError):
    """The broker could not be found, configured or started; message is one line + log tail."""


def dropin_lines(replace: dict[str, str]) -> list[str]:
    """The shipped drop-in's option lines, each option named in `replace` with that value."""
    lines = []
    for line in DROPIN_PATH.read_text().splitlines():
        key = line.split(" ", 1)[0]
        if not line.strip() or line.startswith("#"):
            continue
        lines.append(f"{key} {replace[key]}" if key in replace else line)
    missing = set(replace) - {line.split(" ", 1)[0] for line in lines}
    if missing:
        raise BrokerError(f"{DROPIN_PATH}: no {', '.join(sorted(missing))} line")
    return lines


def find_mosquitto() -> str:
    found = shutil.which("mosquitto")
    if found:
        return found
    for candidate in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if os.access(candidate, os.X_OK):
            return candidate
    raise BrokerError("mosquitto not found: apt-get install mosquitto")


def free_port() -> int:
    # Small race (someone may take it before mosquitto binds), acceptable on a test machine.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _require_free_port(port: int) -> None:
    # SO_REUSEADDR like mosquitto itself: TIME_WAIT leftovers from a restart are fine, a live
    # listener is not (its answers to our readiness probe would look like ours).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            raise BrokerError(f"port {port} on {HOST} is already in use") from None


def _die_with_parent() -> list[str]:
    """Prefix so mosquitto gets SIGTERM if we die without cleaning up (e.g. pytest killed).

    The kernel ties this to the *thread* that started it, so only use it from the main thread:
    a fault-injection thread that restarts the broker and then ends must not take it down.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "TERM", "--"]


def write_broker_config(
    work_dir: Path,
    pki_dir: Path,
    port: int,
    *,
    persistence: bool = True,
    log_file: Path | None = None,
) -> Path:
    work_dir = Path(work_dir).resolve()
    pki_dir = Path(pki_dir).resolve()
    server_cert, server_key = _pair(pki_dir, BROKER_NAME)
    ca_cert = pki_dir / CA_NAME
    for needed in (ca_cert, server_cert, server_key):
        if not needed.exists():
            raise BrokerError(f"missing {needed}: run 'pinkbutton-pki init {pki_dir}'")
    work_dir.mkdir(parents=True, exist_ok=True)
    acl_file = work_dir / ACL_NAME
    acl_file.write_text(_acl_text())
    log_file = Path(log_file).resolve() if log_file else work_dir / LOG_NAME

    lines = [
        f"# generated by simulator/broker.py from {DROPIN_PATH}; edits are overwritten",
        *dropin_lines({
            "listener": f"{port} {HOST}",
            "cafile": str(ca_cert),
            "certfile": str(server_cert),
            "keyfile": str(server_key),
            "acl_file": str(acl_file),
        }),
        *_crl_lines(pki_dir),  # after the listener block, as install.sh appends it
        # per-test: its own log and persistence (Debian's stock mosquitto.conf sets these)
        f"log_dest file {log_file}",
    ]
    if persistence:
        # Short autosave so a SIGKILL in a fault test loses at most ~1 s of queued state.
        lines += [
            "persistence true",
            f"persistence_location {work_dir}/",
            "autosave_interval 1",
        ]
    else:
        lines.append("persistence false")
    if os.geteuid() == 0:
        # As root mosquitto would drop to user `mosquitto`, which cannot read our 0600 keys.
        lines.append("user root")
    config = work_dir / CONFIG_NAME
    config.write_text("\n".join(lines) + "\n")
    return config


def _crl_lines(pki_dir: Path) -> list[str]:
    """`crlfile` once `pinkbutton-pki revoke` has made a CRL: a revoked (stolen) kiosk's
    certificate is then refused at the TLS handshake. mosquitto reads it at start."""
    crl = Path(pki_dir) / CRL_NAME
    return [f"crlfile {crl}"] if crl.exists() else []


class Mosquitto:
    """One mosquitto process on 127.0.0.1:<port> with its own config/persistence/log dir."""

    host = HOST

    def __init__(
        self,
        work_dir: Path,
        pki_dir: Path,
        port: int | None = None,
        *,
        log_to: Path | None = None,
        persistence: bool = True,
    ) -> None:
        self.work_dir = Path(work_dir).resolve()
        self.pki_dir = Path(pki_dir).resolve()
        self.port = port if port is not None else free_port()
        self.log_path = Path(log_to).resolve() if log_to else self.work_dir / LOG_NAME
        self.persistence = persistence
        self._proc: subprocess.Popen[bytes] | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        if self.running:
            return
        executable = find_mosquitto()
        _require_free_port(self.port)
        config = write_broker_config(
            self.work_dir,
            self.pki_dir,
            self.port,
            persistence=self.persistence,
            log_file=self.log_path,
        )
        # Config errors are printed before the log file opens, so keep stderr too.
        with open(self.work_dir / STDERR_NAME, "ab") as stderr:
            self._proc = subprocess.Popen(
                [*_die_with_parent(), executable, "-c", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,  # a Ctrl-C in the terminal goes to us, we stop it cleanly
            )
        deadline = time.monotonic() + timeout
        last_error = "no attempt"
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise BrokerError(
                    f"mosquitto exited with code {code} during startup\n{self.log_tail()}"
                )
            try:
                self._probe()
            except (OSError, BrokerError) as exc:
                last_error = str(exc) or type(exc).__name__
                time.sleep(0.02)
                continue
            # A probe answered by some other broker on this port must not count as ours.
            if self._proc.poll() is None:
                return
        self.kill()
        raise BrokerError(
            f"mosquitto not accepting TLS clients on {HOST}:{self.port} after {timeout:.0f} s "
            f"({last_error})\n{self.log_tail()}"
        )

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (mosquitto saves persistence on the way out), SIGKILL if it hangs."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        proc.send_signal(signal.SIGCONT)  # a paused broker must wake up to handle the SIGTERM
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL, as in a power cut: whatever was not autosaved is lost."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()

    def restart(self, timeout: float = 10.0) -> None:
        """Same port, same persistence dir, so durable sessions and queued messages survive."""
        self.stop()
        self.start(timeout)

    def pause(self) -> None:
        """SIGSTOP: the TCP connections stay up but nothing moves (a network stall)."""
        if self._proc is not None:
            self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._proc is not None:
            self._proc.send_signal(signal.SIGCONT)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / CA_NAME

    def log_tail(self, lines: int = 20) -> str:
        chunks = []
        for path in (self.work_dir / STDERR_NAME, self.log_path):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except FileNotFoundError:
                continue
            if text:
                chunks.append(f"--- {path} ---\n" + "\n".join(text))
        return "\n".join(chunks) or "(mosquitto wrote no log)"

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- readiness ----------------------------------------------------------------------------

    def _probe(self) -> None:
        """Ready means: full mTLS handshake and an MQTT CONNACK 'accepted' as the control room."""
        cert, key = _pair(self.pki_dir, CONTROLROOM_NAME)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(cert), str(key))
        with socket.create_connection((HOST, self.port), timeout=1.0) as raw:
            with context.wrap_socket(raw, server_hostname=HOST) as tls:
                tls.sendall(_mqtt311_connect(f"probe-{os.getpid()}-{secrets.token_hex(4)}"))
                connack = _recv_exactly(tls, 4)
                if connack[0] != 0x20 or connack[3] != 0:
                    raise BrokerError(f"probe CONNACK refused: {connack.hex()}")
                tls.sendall(b"\xe0\x00")  # DISCONNECT, so the broker logs a clean goodbye


def _mqtt311_connect(client_id: str) -> bytes:
    cid = client_id.encode()
    # protocol name "MQTT", level 4, flags: clean session, keepalive 10 s
    variable = b"\x00\x04MQTT\x04\x02\x00\x0a" + len(cid).to_bytes(2, "big") + cid
    assert len(variable) < 128  # single-byte remaining length
    return bytes([0x10, len(variable)]) + variable


def _recv_exactly(sock: ssl.SSLSocket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise BrokerError("broker closed the probe connection")
        data += chunk
    return data
