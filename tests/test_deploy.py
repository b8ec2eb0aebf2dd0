"""What ships in deploy/ works on a real Debian control room: the mosquitto drop-in under the
stock /etc/mosquitto/mosquitto.conf (real mosquitto, as user `mosquitto` when run as root), and
the systemd units (`systemd-analyze verify`)."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from pinkbutton.tools.pki import ca_paths, init_dev_pki, revoke_device

from harness.broker import HOST, free_port, write_broker_config
from tests.test_broker_acl import NOT_AUTHORIZED, Inbox, publish_qos1, subscribe, token, topic

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
DROPIN = DEPLOY / "mosquitto" / "pinkbutton.conf"
ACL = DEPLOY / "mosquitto" / "pinkbutton.acl"
INSTALL = DEPLOY / "mosquitto" / "install.sh"
STOCK_CONF = Path("/etc/mosquitto/mosquitto.conf")
DEV1, DEV2 = "pb-test-0001", "pb-test-0002"
# Global options Debian's stock mosquitto.conf sets: repeating one makes mosquitto refuse to start.
STOCK_GLOBALS = {"pid_file", "persistence", "persistence_location", "log_dest", "include_dir",
                 "user"}


def _options(path: Path) -> list[tuple[str, str]]:
    pairs = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            pairs.append((key, value.strip()))
    return pairs


def test_dropin_sets_no_global_option_of_the_stock_config() -> None:
    keys = {key for key, _ in _options(DROPIN)}
    assert not keys & STOCK_GLOBALS, keys & STOCK_GLOBALS
    assert {"require_certificate", "use_identity_as_username", "acl_file", "cafile",
            "certfile", "keyfile"} <= keys
    assert ("allow_anonymous", "false") in _options(DROPIN)
    assert ("listener", "8883") in _options(DROPIN)


def test_harness_config_is_built_from_the_shipped_dropin_and_acl(
    pki_dir: Path, tmp_path: Path
) -> None:
    config = write_broker_config(tmp_path, pki_dir, 18830)
    generated = dict(_options(config))
    # Everything the drop-in says reaches the test broker, except the per-test substitutions.
    per_test = {"listener", "cafile", "certfile", "keyfile", "acl_file"}
    for key, value in _options(DROPIN):
        if key not in per_test and key != "log_type":
            assert generated.get(key) == value, key
    assert generated["listener"] == f"18830 {HOST}"
    assert Path(generated["acl_file"]).read_text() == ACL.read_text()


# --- the drop-in under Debian's stock mosquitto.conf, real mosquitto ----------------------------


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A tmp dir user `mosquitto` can traverse (pytest's own tmp base is 0700 root)."""
    directory = Path(tempfile.mkdtemp(prefix="pb-dropin-"))
    directory.chmod(0o755)
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _install_like_debian(pki_dir: Path, root: Path, port: int) -> Path:
    """Stock mosquitto.conf copied to root/, its paths moved under root/, the drop-in installed
    by deploy/mosquitto/install.sh into root/etc/mosquitto; returns the main config."""
    etc = root / "etc" / "mosquitto"
    (etc / "conf.d").mkdir(parents=True)
    subprocess.run(["sh", str(INSTALL), str(pki_dir), str(etc)], check=True,
                   capture_output=True, timeout=30)
    # Only the listener line changes for the test: an ephemeral port on loopback.
    dropin = etc / "conf.d" / "pinkbutton.conf"
    text = dropin.read_text()
    assert "\nlistener 8883\n" in text
    dropin.write_text(text.replace("\nlistener 8883\n", f"\nlistener {port} {HOST}\n"))

    for sub in ("run", "lib", "log"):
        (root / sub).mkdir()
        if os.geteuid() == 0:  # as on Debian (the service's ExecStartPre): owned by mosquitto
            user = pwd.getpwnam("mosquitto")
            os.chown(root / sub, user.pw_uid, user.pw_gid)
    stock = STOCK_CONF.read_text()
    rewrites = {
        "pid_file": f"{root}/run/mosquitto.pid",
        "persistence_location": f"{root}/lib/",
        "log_dest": f"file {root}/log/mosquitto.log",
        "include_dir": f"{etc}/conf.d",
    }
    for key, value in rewrites.items():
        stock, count = re.subn(rf"(?m)^{key} .*$", f"{key} {value}", stock)
        assert count == 1, f"stock mosquitto.conf has no single {key} line"
    main = etc / "mosquitto.conf"
    main.write_text(stock)
    return main


@contextlib.contextmanager
def _stock_broker(pki_dir: Path, root: Path, mqtt_client) -> Iterator[tuple[object, Path]]:
    """mosquitto -c <stock config with our drop-in>; yields (broker address, its log) once the
    control room is connected (that client is the probe), stops it afterwards."""
    if not STOCK_CONF.is_file():
        pytest.skip(f"{STOCK_CONF} absent: the Debian mosquitto package is not installed")
    if os.geteuid() == 0 and not _has_user("mosquitto"):
        pytest.skip("no user 'mosquitto' (the Debian mosquitto package creates it)")
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    main = _install_like_debian(pki_dir, root, port)
    log = root / "log" / "mosquitto.log"
    stderr_path = root / "stderr"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([mosquitto, "-c", str(main)], stdin=subprocess.DEVNULL,
                                stdout=stderr, stderr=stderr, start_new_session=True)
    try:
        broker = SimpleNamespace(host=HOST, port=port)
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"mosquitto exited {proc.returncode}: "
                                     f"{stderr_path.read_text()} {_read(log)}")
            try:
                mqtt_client(pki_dir, "controlroom", broker, timeout=2)
                break
            except (OSError, AssertionError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        if os.geteuid() == 0:  # dropped privileges, as the Debian service runs it
            assert _process_user(proc.pid) == "mosquitto"
        text = _read(log) + stderr_path.read_text()
        assert "duplicate" not in text.lower(), text
        assert "Error" not in text, text
        yield broker, log
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_log(log: Path, needle: str) -> None:
    deadline = time.monotonic() + 10
    while needle not in _read(log):
        assert time.monotonic() < deadline, f"{needle!r} not in {log}: {_read(log)}"
        time.sleep(0.1)


def test_dropin_runs_under_debian_stock_config_with_mtls_and_acl(
    pki_dir: Path, world_dir: Path, mqtt_client
) -> None:
    # The PKI fixture's dir is 0700 root: install.sh copies what the broker needs under etc/.
    with _stock_broker(pki_dir, world_dir, mqtt_client) as (broker, log):
        room = mqtt_client(pki_dir, "controlroom", broker)
        inbox = Inbox(room)
        assert not subscribe(room, "pinkbutton/v1/dev/+/alert").is_failure
        device = mqtt_client(pki_dir, DEV1, broker)
        forged, marker = token(), token()
        assert publish_qos1(device, topic(DEV2, "alert"), forged).value == NOT_AUTHORIZED
        assert publish_qos1(device, topic(DEV1, "alert"), marker).value == 0
        # in order from one connection: the forged one would have arrived before the marker
        assert inbox.until(marker) == [(topic(DEV1, "alert"), marker)]
        _refused_without_certificate(pki_dir, broker.port)
        _wait_for_log(log, "peer did not return a certificate")  # the broker's word for it


def test_install_script_adds_the_crl_and_a_revoked_kiosk_is_refused(
    tmp_path: Path, world_dir: Path, mqtt_client
) -> None:
    pki = tmp_path / "pki"
    init_dev_pki(pki, (DEV1, DEV2))
    revoke_device(pki, DEV2)
    with _stock_broker(pki, world_dir, mqtt_client) as (broker, log):
        dropin = (world_dir / "etc" / "mosquitto" / "conf.d" / "pinkbutton.conf").read_text()
        assert dropin.rstrip().endswith(f"crlfile {world_dir}/etc/mosquitto/certs/pinkbutton/crl.pem")
        mqtt_client(pki, DEV1, broker)
        with pytest.raises((AssertionError, OSError)):
            mqtt_client(pki, DEV2, broker, timeout=5)
        _wait_for_log(log, "certificate verify failed")  # the CRL says revoked


def _refused_without_certificate(pki_dir: Path, port: int) -> None:
    """TLS without a client certificate (anonymous) is refused; so is plain MQTT without TLS."""
    client = shutil.which("mosquitto_pub")
    context = ssl.create_default_context(cafile=str(ca_paths(pki_dir).cert))
    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        with socket.create_connection((HOST, port), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=HOST) as tls:
                # TLS 1.3: the refusal of the missing certificate arrives with the first read.
                tls.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x0a\x00\x00")
                if not tls.recv(4):
                    raise ConnectionError("closed")
    if client is not None:  # plain TCP, no TLS at all: no CONNACK either
        done = subprocess.run([client, "-h", HOST, "-p", str(port), "-t", topic(DEV1, "alert"),
                               "-m", "x", "-q", "1"], capture_output=True, timeout=30)
        assert done.returncode != 0


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _process_user(pid: int) -> str:
    uid = Path(f"/proc/{pid}").stat().st_uid
    return pwd.getpwuid(uid).pw_name


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


# --- systemd units -----------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["pinkbutton-controlroom.service", "pinkbutton.service"])
def test_systemd_unit_verifies(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (it comes with systemd)")
    source = DEPLOY / "systemd" / unit
    text = source.read_text()
    # The units run /opt/pinkbutton/bin/* (the kiosk's package: /opt/pinkbutton/venv/bin/*);
    # verify checks that the binary exists, so point it at the venv running the tests, which has
    # the same console scripts.
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "pinkbutton-controlroom").exists():
        pytest.skip(f"{venv_bin} has no pinkbutton console scripts (pip install -e .)")
    assert re.search(r"/opt/pinkbutton/(venv/)?bin/", text)
    copy = tmp_path / unit
    copy.write_text(re.sub(r"/opt/pinkbutton/(venv/)?bin/", f"{venv_bin}/", text))
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=60)
    # verify warns (exit 0) on unknown keys and bad values, and also reports unrelated units of
    # the host that the unit pulls in: every line naming ours counts
    ours = [line for line in (done.stdout + done.stderr).splitlines() if unit in line]
    assert not ours, "\n".join(ours)
    assert done.returncode == 0, done.stderr


def test_controlroom_unit_is_hardened() -> None:
    text = (DEPLOY / "systemd" / "pinkbutton-controlroom.service").read_text()
    options = dict(_options_ini(text))
    assert options["User"] and options["User"] != "root"
    assert options["NoNewPrivileges"] == "yes"
    assert options["ProtectSystem"] == "strict"
    assert options["PrivateTmp"] == "yes"
    assert options["Restart"] == "always"
    assert "/var/lib/pinkbutton-controlroom" in options["ReadWritePaths"]


def _options_ini(text: str) -> list[tuple[str, str]]:
    return [(k.strip(), v.strip()) for k, _, v in
            (line.partition("=") for line in text.splitlines())
            if not k.startswith(("#", "[")) and _]


def shell_scripts() -> list[Path]:
    """Every shell script in the repository: a `.sh` name or a sh/bash shebang (tracked files,
    or the working tree's when this is not a git checkout)."""
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                               timeout=30, check=True).stdout.splitlines()
        files = [ROOT / n for n in names]
    except (OSError, subprocess.SubprocessError):
        files = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    found = []
    for path in files:
        if not path.is_file() or "tests" in path.relative_to(ROOT).parts[:1]:
            continue
        with path.open("rb") as f:
            first = f.readline(200)
        if path.suffix == ".sh" or re.match(rb"#!\s*/(usr/)?bin/(env\s+)?(ba|da)?sh\b", first):
            found.append(path)
    return sorted(found)


def test_every_shipped_shell_script_is_found_for_shellcheck() -> None:
    names = {str(p.relative_to(ROOT)) for p in shell_scripts()}
    assert {"deploy/mosquitto/install.sh", "packaging/deb/build.sh", "packaging/deb/postinst",
            "packaging/deb/prerm", "packaging/deb/postrm", ".ci/run"} <= names, names


@pytest.mark.parametrize("script", shell_scripts(), ids=lambda path: str(path.relative_to(ROOT)))
def test_install_script_passes_shellcheck(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    done = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("doc", ["docs/deploy.md", "docs/protocol.md"])
def test_acl_quoted_in_the_docs_is_the_shipped_one(doc: str) -> None:
    rules = re.compile(r"^\s*((?:pattern|topic) (?:read|write|readwrite) \S+|user \S+)\s*$")
    quoted = [m.group(1) for line in (ROOT / doc).read_text().splitlines()
              if (m := rules.match(line))]
    shipped = [f"{key} {value}" for key, value in _options(ACL)]
    assert quoted == shipped


@pytest.mark.parametrize("args, problem", [
    ([], "usage: install.sh PKI_DIR [MOSQUITTO_DIR]"),
    (["{tmp}/no-pki"], "no-pki: no such directory"),
    (["{tmp}"], "ca.pem: missing or unreadable"),
    (["{pki}", "{tmp}"], "conf.d: no such directory (apt-get install mosquitto)"),
])
def test_install_script_bad_input_is_one_line_exit_2(
    args: list[str], problem: str, tmp_path: Path, pki_dir: Path
) -> None:
    argv = [a.format(tmp=tmp_path, pki=pki_dir) for a in args]
    done = subprocess.run(["sh", str(INSTALL), *argv], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert len(done.stderr.splitlines()) == 1 and problem in done.stderr, done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing written
