"""The kiosk's Debian package (`make deb`, packaging/deb/).

Both packages are built as `make deb` builds them; the arm64 one is inspected (aarch64 wheels,
Architecture and Depends); the amd64 one is installed on this machine with apt and checked as
an installer would: files and modes, the user and its groups, the venv on the system's numpy,
the commands, provisioning as the service user, `systemd-analyze verify` on the installed unit;
then removed (config and state stay) and purged (nothing stays), and the packages apt pulled in
for it are purged again, so the machine is left as it was.

Marked `deb`. Building needs dpkg-deb and pip's access to PyPI (or its cache: ~80 MB of wheels
the first time, then seconds); installing needs root and apt-get, else that test is skipped
with the reason. Measured on the shared 2-core machine: build ~10 s with a warm pip cache,
install, checks, remove and purge ~40 s.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tarfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pinkbutton.tools.pki import ca_paths, init_dev_pki, sign_csr

pytestmark = pytest.mark.deb

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "packaging" / "deb" / "build.sh"
UNIT = ROOT / "deploy" / "systemd" / "pinkbutton.service"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
CONFIG = Path("/etc/pinkbutton/kiosk.toml")
VENV = Path("/opt/pinkbutton/venv")
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
# Other engineers' tests may hold the dpkg lock for a while: wait for it, bounded.
APT = ["apt-get", "-y", "-q", "-o", "DPkg::Lock::Timeout=300"]


def _run(*argv: str | Path, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def _options(text: str) -> dict[str, str]:
    return {k.strip(): v.strip() for k, sep, v in (line.partition("=") for line in text.splitlines())
            if sep and not k.startswith(("#", "["))}


# --- without building ------------------------------------------------------------------------


def test_kiosk_unit_is_hardened_and_supervised() -> None:
    options = _options(UNIT.read_text())
    assert options["Type"] == "notify" and options["NotifyAccess"] == "main"
    assert int(options["WatchdogSec"]) > 0
    assert options["Restart"] == "always"
    assert options["User"] == options["Group"] == "pinkbutton"
    assert options["NoNewPrivileges"] == "yes"
    assert options["ProtectSystem"] == "strict"
    assert options["PrivateTmp"] == "yes"
    assert options["ProtectHome"] == "yes"
    assert options["StateDirectory"] == "pinkbutton" and options["StateDirectoryMode"] == "0700"
    assert options["ExecStart"].startswith(f"{VENV}/bin/pinkbutton run --config {CONFIG}")
    # GPIO, camera and microphone are device nodes: nothing that hides or allow-lists devices
    for hides_devices in ("PrivateDevices", "DevicePolicy", "DeviceAllow", "ProtectClock"):
        assert hides_devices not in options


def test_build_script_bad_architecture_is_one_line_exit_2() -> None:
    done = _run("sh", BUILD, "sparc")
    assert done.returncode == 2
    assert done.stderr == "build.sh: unknown architecture 'sparc' (amd64 or arm64)\n"


# --- built -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not found (a Debian machine builds the package)")
    dist = tmp_path_factory.mktemp("dist")
    env = {**os.environ, "DIST": str(dist), "PYTHON": sys.executable}
    done = _run("sh", BUILD, "amd64", "arm64", env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    built = {arch: dist / f"pinkbutton_{VERSION}_{arch}.deb" for arch in ("amd64", "arm64")}
    for deb in built.values():
        assert deb.is_file(), done.stdout
    return built


def _field(deb: Path, name: str) -> str:
    return _run("dpkg-deb", "--field", deb, name).stdout.strip()


def _members(deb: Path) -> dict[str, tarfile.TarInfo]:
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                          stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            members = {m.name.removeprefix("."): m for m in tar}
    return members


def test_arm64_package_carries_aarch64_wheels_and_the_pi_dependencies(debs) -> None:
    deb = debs["arm64"]
    assert _field(deb, "Architecture") == "arm64"
    assert _field(deb, "Version") == VERSION
    depends = [d.strip() for d in _field(deb, "Depends").split(",")]
    for package in ("python3-lgpio", "python3-picamera2", "python3-numpy", "python3-pyaudio",
                    "python3-venv", "python3 (>= 3.11)", "python3 (<< 3.12)"):
        assert package in depends, depends
    wheels = [Path(name).name for name in _members(deb) if name.endswith(".whl")]
    names = {w.split("-")[0].lower() for w in wheels}
    assert {"pinkbutton", "av", "cryptography", "cffi", "paho_mqtt", "gpiozero"} <= names, wheels
    assert not names & {"numpy", "pyaudio"}, wheels  # apt's: python3-numpy, python3-pyaudio
    for wheel in wheels:
        tags = wheel.removesuffix(".whl").split("-")[-3:]
        assert tags[2] == "any" or "aarch64" in tags[2], wheel
        assert tags[0] in ("py3", "py2.py3") or tags[0].startswith("cp3"), wheel
    # the CPython 3.11 builds of the compiled ones
    for compiled in ("av", "cffi", "cryptography"):
        wheel = next(w for w in wheels if w.split("-")[0] == compiled)
        assert "aarch64" in wheel and "cp311" in wheel, wheel
    # the amd64 one has x86_64 wheels and no Pi-only dependency
    amd64 = debs["amd64"]
    assert _field(amd64, "Architecture") == "amd64"
    assert "python3-picamera2" not in _field(amd64, "Depends")
    assert all("aarch64" not in name for name in _members(amd64))


def test_package_ships_the_repositorys_unit_and_example_config(debs) -> None:
    members = _members(debs["amd64"])
    with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs["amd64"])],
                          stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            contents = {m.name.removeprefix("."): tar.extractfile(m).read()
                        for m in tar if m.isfile()}
    assert contents["/lib/systemd/system/pinkbutton.service"] == UNIT.read_bytes()
    assert contents[str(CONFIG)] == (ROOT / "examples" / "kiosk.toml").read_bytes()
    assert members["/usr/bin/pinkbutton"].linkname == f"{VENV}/bin/pinkbutton"
    assert members["/usr/bin/pinkbutton-diag"].linkname == f"{VENV}/bin/pinkbutton-diag"
    for info in members.values():
        assert info.uname == "root" and info.gname == "root", info.name
    conffiles = _run("sh", "-c", f"dpkg-deb --ctrl-tarfile {debs['amd64']} | tar -xOf - ./conffiles")
    assert conffiles.stdout.split() == [str(CONFIG)]


# --- installed on this machine -----------------------------------------------------------------


def _installed_packages() -> set[str]:
    done = _run("dpkg-query", "-W", "-f", "${Package} ${Status}\n")
    return {line.split()[0] for line in done.stdout.splitlines() if line.endswith(" installed")}


def _mode(path: Path) -> tuple[str, str, str]:
    st = path.lstat()
    return (oct(stat.S_IMODE(st.st_mode)), pwd.getpwuid(st.st_uid).pw_name,
            grp.getgrgid(st.st_gid).gr_name)


@pytest.fixture
def machine() -> Iterator[None]:
    """Root with apt, pinkbutton not installed; afterwards pinkbutton purged and whatever apt
    installed for it purged again (only packages still auto-installed, only if nothing else
    would go with them)."""
    if os.geteuid() != 0:
        pytest.skip("installing the .deb needs root")
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        pytest.skip("installing the .deb needs apt-get and dpkg (Debian)")
    before = _installed_packages()
    if "pinkbutton" in before:
        pytest.skip("pinkbutton is installed on this machine already: apt-get purge pinkbutton")
    try:
        yield
    finally:
        _run(*APT, "purge", "pinkbutton", env=APT_ENV, timeout=600)
        pulled = sorted(_installed_packages() - before)
        auto = set(_run("apt-mark", "showauto", *pulled).stdout.split()) if pulled else set()
        pulled = [p for p in pulled if p in auto]
        if pulled:
            plan = _run(*APT, "-s", "purge", *pulled, env=APT_ENV)
            going = {line.split()[1] for line in plan.stdout.splitlines()
                     if line.startswith(("Purg ", "Remv "))}
            if going <= set(pulled):
                _run(*APT, "purge", *pulled, env=APT_ENV, timeout=600)
            else:
                print(f"left installed (others need them): {' '.join(pulled)}")


@pytest.mark.timeout(900)
def test_amd64_package_installs_runs_and_purges(debs, machine, tmp_path: Path) -> None:
    if "Candidate: (none)" in _run("apt-cache", "policy", "python3-numpy").stdout or \
            not _run("apt-cache", "policy", "python3-numpy").stdout:
        _run("apt-get", "update", "-qq", env=APT_ENV, timeout=600)
    done = _run(*APT, "install", debs["amd64"], env=APT_ENV, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if not _has_group("gpio"):  # not Raspberry Pi OS: said so, not made up
        assert "pinkbutton: no group 'gpio' on this machine" in done.stdout + done.stderr

    # files and modes
    listing = {path: _mode(Path(path)) for path in _run("dpkg", "-L", "pinkbutton").stdout.split()
               if Path(path).exists() or Path(path).is_symlink()}
    print("\n".join(f"{m[0]} {m[1]}:{m[2]} {p}" for p, m in sorted(listing.items())))
    assert _mode(Path("/etc/pinkbutton")) == ("0o750", "root", "pinkbutton")
    assert _mode(CONFIG) == ("0o640", "root", "pinkbutton")
    assert _mode(Path("/etc/pinkbutton/pki")) == ("0o700", "pinkbutton", "pinkbutton")
    assert _mode(Path("/var/lib/pinkbutton")) == ("0o700", "pinkbutton", "pinkbutton")
    unit = Path("/lib/systemd/system/pinkbutton.service")
    assert _mode(unit) == ("0o644", "root", "root")
    assert unit.read_bytes() == UNIT.read_bytes()
    for wheel in Path("/opt/pinkbutton/wheels").iterdir():
        assert _mode(wheel) == ("0o644", "root", "root")
    assert os.readlink("/usr/bin/pinkbutton") == f"{VENV}/bin/pinkbutton"
    assert Path("/etc/systemd/system/multi-user.target.wants/pinkbutton.service").resolve() \
        == unit.resolve()  # enabled: it starts at boot

    # the user and its groups
    user = pwd.getpwnam("pinkbutton")
    assert user.pw_uid < 1000 and user.pw_shell == "/usr/sbin/nologin"
    assert user.pw_dir == "/var/lib/pinkbutton"
    groups = {g.gr_name for g in grp.getgrall() if "pinkbutton" in g.gr_mem}
    assert {"video", "audio"} <= groups, groups
    assert ("gpio" in groups) == _has_group("gpio")

    # the commands, from the venv
    assert _run("/usr/bin/pinkbutton", "--version").stdout.strip() == f"pinkbutton {VERSION}"
    assert _run("/usr/bin/pinkbutton-diag", "--version").stdout.strip() == f"pinkbutton-diag {VERSION}"
    # the example config names certificates the kiosk does not have yet: one clear line
    missing = "[broker] ca: cannot read /etc/pinkbutton/pki/ca.pem: no such file"
    done = _run("/usr/bin/pinkbutton", "check-config", CONFIG)
    assert (done.returncode, done.stderr) == (2, f"pinkbutton: {CONFIG}: {missing}\n")
    done = _run("/usr/bin/pinkbutton-diag", "check-config", CONFIG)
    assert done.returncode == 1
    assert f"✗ certificate: {CONFIG}: {missing}" in done.stdout, done.stdout

    # the venv uses the system's numpy (python3-numpy), pinned: never a newer one of its own
    system = _run("/usr/bin/python3", "-I", "-c", "import numpy; print(numpy.__version__)")
    assert system.returncode == 0, "python3-numpy is a dependency: apt installs it"
    seen = _run(VENV / "bin" / "python", "-c",
                "import numpy; print(numpy.__version__, numpy.__file__)").stdout.split()
    assert seen == [system.stdout.strip(), "/usr/lib/python3/dist-packages/numpy/__init__.py"]
    assert (VENV / "pinkbutton-constraints.txt").read_text() == f"numpy=={seen[0]}\n"
    assert not list(VENV.glob("lib/python3*/site-packages/numpy"))
    # ... and the firmware works on it: H.264 from the fake camera, as the live stream does
    encode = _run(VENV / "bin" / "python", "-c", ENCODE, timeout=120)
    assert encode.stdout.split() == [seen[0], "5", "keyframe"], encode.stderr

    # provisioning as docs/deploy.md says: the key made by (and readable only by) the user
    done = _run("runuser", "-u", "pinkbutton", "--", "/usr/bin/pinkbutton", "enroll", "--config", CONFIG)
    assert done.returncode == 0, done.stderr
    key = Path("/etc/pinkbutton/pki/pb-psh-0001.key")
    assert _mode(key) == ("0o600", "pinkbutton", "pinkbutton")
    pki = tmp_path / "room-pki"
    init_dev_pki(pki)
    signed = sign_csr(pki, Path("/etc/pinkbutton/pki/pb-psh-0001.csr"))
    shutil.copyfile(signed, "/etc/pinkbutton/pki/pb-psh-0001.pem")
    shutil.copyfile(ca_paths(pki).cert, "/etc/pinkbutton/pki/ca.pem")
    done = _run("runuser", "-u", "pinkbutton", "--", "/usr/bin/pinkbutton", "check-config", CONFIG)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{CONFIG}: ok — device pb-psh-0001"), done.stdout
    # the technician's self-test on the installed venv (fake hardware: no Pi here)
    fake = tmp_path / "fake.toml"
    fake.write_text(CONFIG.read_text().replace('backend = "pi"', 'backend = "fake"')
                    .replace('state_dir = "/var/lib/pinkbutton"', f'state_dir = "{tmp_path}/st"'))
    done = _run("/usr/bin/pinkbutton-diag", "selftest", "--json", "--config", fake,
                env={**os.environ, "PINKBUTTON_HAL": "fake"}, timeout=120)
    checks = {c["name"]: c["ok"] for c in json.loads(done.stdout)["checks"]}
    assert checks["camera"] and checks["microphone"] and checks["certificate"], done.stdout

    # the installed unit
    if shutil.which("systemd-analyze"):
        done = _run("systemd-analyze", "verify", unit, timeout=60)
        ours = [line for line in (done.stdout + done.stderr).splitlines()
                if "pinkbutton" in line]
        assert done.returncode == 0 and not ours, done.stdout + done.stderr

    # an upgrade (here the same version again): the technician's config kept, modes too, the
    # venv rebuilt, provisioning untouched
    with CONFIG.open("a") as config:
        config.write("# edited on site\n")
    done = _run(*APT, "install", "--reinstall", debs["amd64"], env=APT_ENV, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert CONFIG.read_text().endswith("# edited on site\n")
    assert _mode(CONFIG) == ("0o640", "root", "pinkbutton")
    assert _mode(key) == ("0o600", "pinkbutton", "pinkbutton")
    done = _run("runuser", "-u", "pinkbutton", "--", "/usr/bin/pinkbutton", "check-config", CONFIG)
    assert done.returncode == 0, done.stderr

    # remove: the firmware goes, config and state stay (Debian policy: purge only)
    done = _run(*APT, "remove", "pinkbutton", env=APT_ENV, timeout=600)
    assert done.returncode == 0, done.stderr
    for gone in ("/opt/pinkbutton", "/usr/bin/pinkbutton", "/usr/bin/pinkbutton-diag", unit):
        assert not os.path.lexists(gone), gone
    assert CONFIG.exists() and key.exists() and Path("/var/lib/pinkbutton").is_dir()
    assert _mode(CONFIG) == ("0o640", "root", "pinkbutton")

    # purge: nothing left, not even the user
    done = _run(*APT, "purge", "pinkbutton", env=APT_ENV, timeout=600)
    assert done.returncode == 0, done.stderr
    for gone in ("/etc/pinkbutton", "/var/lib/pinkbutton", "/opt/pinkbutton",
                 "/etc/systemd/system/pinkbutton.service",
                 "/etc/systemd/system/multi-user.target.wants/pinkbutton.service"):
        assert not os.path.lexists(gone), gone
    assert "pinkbutton" not in _run("dpkg-statoverride", "--list").stdout
    assert not _has_user("pinkbutton") and not _has_group("pinkbutton")
    assert "pinkbutton" not in _installed_packages()


ENCODE = """
import numpy
from pinkbutton.firmware.media.encoder import VideoEncoder, nal_types
from pinkbutton.hal.clock import Clock
from pinkbutton.hal.fake.camera import FakeCamera
camera = FakeCamera(Clock(), 320, 240, 15)
encoder = VideoEncoder(320, 240, 15, codec="libx264")
packets = [p for _ in range(5) for p in encoder.encode(camera.capture_one())] + encoder.flush()
print(numpy.__version__, len(packets), "keyframe" if 5 in nal_types(packets[0].data) else "-")
"""


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _has_group(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True
