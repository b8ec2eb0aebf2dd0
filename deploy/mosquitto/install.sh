#!/bin/sh
# Install the Pink Button mosquitto drop-in beside Debian's stock /etc/mosquitto/mosquitto.conf:
#
#   sh deploy/mosquitto/install.sh PKI_DIR [MOSQUITTO_DIR]     (default /etc/mosquitto)
#
# copies from PKI_DIR (made by `pinkbutton-pki init`) ca.pem, the broker certificate and key,
# and crl.pem once `pinkbutton-pki revoke` has made one, to MOSQUITTO_DIR/certs/pinkbutton/
# (as root: owner root, group mosquitto, 0640 files in a 0750 dir, so the broker reads them as
# user mosquitto and nobody else does); the ACL to MOSQUITTO_DIR/pinkbutton.acl; and the
# drop-in to MOSQUITTO_DIR/conf.d/pinkbutton.conf (its paths moved to MOSQUITTO_DIR, `crlfile`
# added when there is a CRL). Run it again after every revocation or broker certificate
# renewal, then `systemctl restart mosquitto`. Exit 2 with one line on bad arguments.
set -eu

fail() { echo "install.sh: $1" >&2; exit 2; }

if [ $# -lt 1 ] || [ $# -gt 2 ]; then fail "usage: install.sh PKI_DIR [MOSQUITTO_DIR]"; fi
pki=$1
[ -d "$pki" ] || fail "$pki: no such directory (run 'pinkbutton-pki init $pki')"
for f in ca.pem pinkbutton-broker.pem pinkbutton-broker.key; do
    [ -r "$pki/$f" ] || fail "$pki/$f: missing or unreadable (run 'pinkbutton-pki init $pki')"
done
etc=${2:-/etc/mosquitto}
[ -d "$etc/conf.d" ] || fail "$etc/conf.d: no such directory (apt-get install mosquitto)"
etc=$(cd "$etc" && pwd)
case $etc in *'#'*) fail "$etc: a '#' in the path cannot be used in mosquitto.conf" ;; esac
here=$(cd "$(dirname "$0")" && pwd)

if [ "$(id -u)" -eq 0 ]; then
    getent group mosquitto >/dev/null || fail "no group 'mosquitto' (apt-get install mosquitto)"
    as_root=yes
else
    as_root=no  # a broker you start yourself reads the files as you
fi

# put MODE SOURCE DEST: install one file, group mosquitto when root
put() {
    if [ "$as_root" = yes ]; then
        install -m "$1" -o root -g mosquitto "$2" "$3"
    else
        install -m "$1" "$2" "$3"
    fi
}

certs=$etc/certs/pinkbutton
if [ "$as_root" = yes ]; then
    install -d -m 0750 -o root -g mosquitto "$certs"
else
    install -d -m 0750 "$certs"
fi
put 0640 "$pki/ca.pem" "$certs/ca.pem"
put 0640 "$pki/pinkbutton-broker.pem" "$certs/broker.pem"
put 0640 "$pki/pinkbutton-broker.key" "$certs/broker.key"
put 0644 "$here/pinkbutton.acl" "$etc/pinkbutton.acl"

tmp=$etc/conf.d/pinkbutton.conf.new  # include_dir reads only *.conf
sed "s#/etc/mosquitto/#$etc/#g" "$here/pinkbutton.conf" > "$tmp"
if [ -f "$pki/crl.pem" ]; then
    put 0640 "$pki/crl.pem" "$certs/crl.pem"
    printf 'crlfile %s\n' "$certs/crl.pem" >> "$tmp"
else
    rm -f "$certs/crl.pem"
fi
chmod 0644 "$tmp"
mv "$tmp" "$etc/conf.d/pinkbutton.conf"
echo "installed $etc/conf.d/pinkbutton.conf, $etc/pinkbutton.acl and $certs/; now: systemctl restart mosquitto"
