#!/bin/sh
# Build the kiosk's Debian packages: dist/pinkbutton_VERSION_ARCH.deb for each ARCH given
# (amd64, arm64; default both). `make deb` runs it.
#
# Each package carries the pinkbutton wheel and a wheel of every dependency for that
# architecture and CPython 3.11 (Raspberry Pi OS bookworm's), fetched with pip's --platform, so
# the kiosk installs without a network; numpy and PyAudio come from apt (python3-numpy,
# python3-pyaudio), picamera2 and lgpio too on arm64. No debhelper: the tree is staged in
# build/deb/ARCH/root and packed by dpkg-deb --root-owner-group (every file root's).
#
# Environment: PYTHON (default .venv/bin/python, needs pip), DIST (default dist).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
PYTHON=${PYTHON:-$top/.venv/bin/python}
DIST=${DIST:-$top/dist}
work=$top/build/deb
umask 022

fail() {  # CODE MESSAGE: one line, as every Pink Button command
    echo "build.sh: $2" >&2
    exit "$1"
}

[ $# -gt 0 ] || set -- amd64 arm64
for arch in "$@"; do
    case $arch in
        amd64|arm64) ;;
        *) fail 2 "unknown architecture '$arch' (amd64 or arm64)" ;;
    esac
done
[ -x "$PYTHON" ] || fail 2 "$PYTHON: no such Python (make deps, or set PYTHON)"
command -v dpkg-deb >/dev/null 2>&1 || fail 2 "dpkg-deb not found (apt-get install dpkg)"

version=$("$PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' \
    "$top/pyproject.toml")

# One build at a time (make deb beside the tests, or two test workers): they share build/deb and
# the setuptools build in the source tree.
mkdir -p "$work"
exec 9>"$work/.lock"
flock 9 || fail 1 "cannot lock $work/.lock"

# The wheels to fetch: the project's dependencies and its "pi" extra, less what apt provides.
"$PYTHON" - "$top/pyproject.toml" >"$work/requirements.txt" <<'PY'
import re, sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"]["pi"]:
    name = re.match(r"[A-Za-z0-9_.-]+", req).group(0).lower()
    if name not in ("numpy", "pyaudio"):  # python3-numpy, python3-pyaudio
        print(req)
PY

# The firmware's own wheel: pure Python, one for every architecture.
rm -rf "$work/wheel"
"$PYTHON" -m pip wheel --quiet --no-deps --wheel-dir "$work/wheel" "$top" \
    || fail 1 "cannot build the pinkbutton wheel"
wheel=$(find "$work/wheel" -name "pinkbutton-$version-*.whl")
[ -n "$wheel" ] || fail 1 "no pinkbutton-$version wheel in $work/wheel"

mkdir -p "$DIST"
for arch in "$@"; do
    case $arch in
        amd64) machine=x86_64; pi_depends="" ;;
        arm64) machine=aarch64; pi_depends=", python3-lgpio, python3-picamera2" ;;
    esac
    root=$work/$arch/root
    rm -rf "${work:?}/$arch"
    mkdir -p "$root/DEBIAN" "$root/opt/pinkbutton/wheels" "$root/etc/pinkbutton" \
        "$root/lib/systemd/system" "$root/usr/bin" "$root/usr/share/doc/pinkbutton"

    # manylinux tags up to glibc 2.36 (bookworm): pip takes --platform literally, one per tag.
    platforms="--platform manylinux2014_$machine"
    glibc=17
    while [ "$glibc" -le 36 ]; do
        platforms="$platforms --platform manylinux_2_${glibc}_$machine"
        glibc=$((glibc + 1))
    done
    # shellcheck disable=SC2086 # $platforms is a list of options
    "$PYTHON" -m pip download --quiet --only-binary=:all: $platforms --python-version 3.11 \
        --implementation cp --dest "$root/opt/pinkbutton/wheels" \
        --requirement "$work/requirements.txt" \
        || fail 1 "cannot fetch the $arch wheels (pip's message above)"
    cp "$wheel" "$root/opt/pinkbutton/wheels/"

    cp "$top/examples/kiosk.toml" "$root/etc/pinkbutton/kiosk.toml"
    cp "$top/deploy/systemd/pinkbutton.service" "$root/lib/systemd/system/"
    ln -s /opt/pinkbutton/venv/bin/pinkbutton "$root/usr/bin/pinkbutton"
    ln -s /opt/pinkbutton/venv/bin/pinkbutton-diag "$root/usr/bin/pinkbutton-diag"
    cp "$top/docs/deploy.md" "$root/usr/share/doc/pinkbutton/deploy.md"
    printf '%s\n' "Pink Button: firmware, simulator and field tools for public panic buttons." \
        "License: Apache-2.0 (/usr/share/common-licenses/Apache-2.0)." \
        "The wheels under /opt/pinkbutton/wheels carry their own licenses in their metadata." \
        >"$root/usr/share/doc/pinkbutton/copyright"
    chmod -R u=rwX,go=rX "$root"

    for script in postinst prerm postrm; do
        install -m 0755 "$here/$script" "$root/DEBIAN/$script"
    done
    echo /etc/pinkbutton/kiosk.toml >"$root/DEBIAN/conffiles"
    size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
    grep -v '^#' "$here/control.in" | sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" \
        -e "s/@SIZE@/$size/" -e "s/@PI_DEPENDS@/$pi_depends/" >"$root/DEBIAN/control"
    chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/conffiles"

    deb=$DIST/pinkbutton_${version}_$arch.deb
    # The wheels are zip files already: gzip, not xz, keeps the build quick.
    dpkg-deb --root-owner-group -Zgzip --build "$root" "$deb" >/dev/null \
        || fail 1 "dpkg-deb failed for $arch"
    echo "$deb ($(du -h "$deb" | cut -f1), $(find "$root/opt/pinkbutton/wheels" -name "*.whl" | wc -l) wheels)"
done
