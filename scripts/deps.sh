#!/bin/sh
# deps.sh - install exactly the Debian 12 packages switchboard needs to build,
# run and test. Idempotent and non-interactive: packages already present are
# not touched, and apt is only consulted when something is missing.
set -eu

PKGS="build-essential pkg-config clang
libuv1-dev libwebsockets-dev libwebsockets-evlib-uv libhiredis-dev
libcurl4-openssl-dev libesmtp-dev libjansson-dev libgmime-3.0-dev
libsodium-dev libsystemd-dev libinih-dev libssl-dev
redis-server redis-tools curl
libcmocka-dev valgrind libclang-rt-14-dev
prometheus systemd
kannel kannel-extras
dovecot-imapd python3-aiosmtpd
wrk nginx-light
chromium fonts-dejavu-core"

missing=""
for p in $PKGS; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
        missing="$missing $p"
    fi
done

# The browser tests need node (>= 20) and npm. The machines we run on bring
# Node.js 20 with its npm; only where there is no node at all do we take
# Debian's (18 on Debian 12: tests/run-all.sh then skips the browser tests).
if ! command -v node >/dev/null 2>&1; then
    missing="$missing nodejs npm"
fi

if [ -z "$missing" ]; then
    exit 0
fi

echo "deps: installing:$missing"
if [ "$(id -u)" -ne 0 ]; then
    SUDO=sudo
else
    SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing
# The Debian redis-server package starts a system instance on 6379; we never
# use it (tests and `make run` start private servers), so leave it alone.
