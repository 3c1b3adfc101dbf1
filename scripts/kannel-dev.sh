#!/bin/sh
# kannel-dev.sh - the private Kannel of `make run`: start, stop, status.
#
#   scripts/kannel-dev.sh start | stop | status | installed
#
# Runs bearerbox, smsbox and two fakesmsc (Debian packages kannel and
# kannel-extras, installed by scripts/deps.sh) under ./var/kannel, on fixed
# 127.0.0.1 ports that clash neither with the daemon (8080) nor with the dev
# Redis (a unix socket): admin 13000, smsbox 13001, fake MT link 13002, fake
# MO link 13003, sendsms 13013 (the port of [sms-provider kannel] url).
# The config is config/kannel-dev.conf.in filled with the sendsms user, the
# callback secret and the short number of [sms-provider kannel] in
# config/dev.conf ($SB_DEV_CONF to use another file), so the daemon and
# Kannel always agree.
#
#   var/kannel/mt.log    what the listening fakesmsc received (every MT;
#                        `scripts/sms-mo --log` prints it decoded)
#   var/kannel/mo.fifo   the interactive fakesmsc's stdin: one MO per line
#                        (`scripts/sms-mo FROM TEXT` writes them)
#   var/kannel/*.pid     one per process; stop signals exactly those PIDs
#   var/kannel/env       ports, admin password, short number (for sms-mo)
#
# fakesmsc leaves when bearerbox goes, so the parts are started and stopped
# together. The MO fakesmsc opens its FIFO read-write: it never reaches end
# of file (an interactive fakesmsc aborts when its stdin closes), and a
# writer never blocks while it runs. `installed` exits 0 when the three
# programs are there, else prints what is missing and exits 1.
set -eu
cd "$(dirname "$0")/.."
# shellcheck source=scripts/devlib.sh
. scripts/devlib.sh
dev_init kannel-dev var/kannel
template=config/kannel-dev.conf.in

BEARERBOX=${SB_KANNEL_BEARERBOX:-/usr/sbin/bearerbox}
SMSBOX=${SB_KANNEL_SMSBOX:-/usr/sbin/smsbox}
FAKESMSC=${SB_KANNEL_FAKESMSC:-/usr/lib/kannel/test/fakesmsc}

ADMIN_PORT=13000
SMSBOX_PORT=13001
MT_PORT=13002
MO_PORT=13003
ADMIN_PASSWORD=sbdev-admin
PROVIDER=kannel
PARTS="bearerbox smsbox fakesmsc-mt fakesmsc-mo"
# smsbox first (it hands what it holds to bearerbox), then bearerbox; the
# fakesmsc usually leave with it. bearerbox gets a second SIGTERM: after the
# first it waits for its queues to drain.
STOP_ORDER="smsbox bearerbox fakesmsc-mt fakesmsc-mo"
TERM_TWICE=bearerbox

is_installed() {
    for f in "$BEARERBOX" "$SMSBOX" "$FAKESMSC"; do
        if [ ! -x "$f" ]; then
            echo "no $f"
            return 1
        fi
    done
    return 0
}

# The values Kannel shares with the daemon's [sms-provider kannel].
load_conf() {
    [ -r "$conf" ] || die "no $conf"
    sec="sms-provider $PROVIDER"
    [ "$(conf_get "$sec" type)" = kannel ] ||
        die "$conf has no [$sec] with type = kannel"
    url=$(conf_get "$sec" url)
    SMS_USER=$(conf_get "$sec" username)
    PASSWORD=$(secret_value "$(conf_get "$sec" password)")
    SECRET=$(secret_value "$(conf_get "$sec" secret)")
    NUMBER=$(conf_get "$sec" from)
    public=$(conf_get "$sec" public_url)
    [ -n "$public" ] || public=$(conf_get http public_url)
    [ -n "$public" ] || public=http://127.0.0.1:8080
    public=${public%/}
    SENDSMS_PORT=$(loopback_port http "$url")
    [ -n "$SENDSMS_PORT" ] ||
        die "[$sec] url must be http://127.0.0.1:PORT/... for the dev Kannel"
    if [ -z "$SMS_USER" ] || [ -z "$PASSWORD" ] || [ -z "$SECRET" ] ||
        [ -z "$NUMBER" ]; then
        die "[$sec] needs username, password, secret and from"
    fi
    # Each goes unescaped into a quoted Kannel value or a URL query.
    for v in "$SMS_USER" "$PASSWORD" "$SECRET" "$NUMBER"; do
        case $v in
            *[!A-Za-z0-9._~+-]*)
                die "[$sec] username, password, secret and from may only" \
                    "hold A-Z a-z 0-9 . _ ~ + - for the dev Kannel" ;;
        esac
    done
    case $public in
        *[!A-Za-z0-9.:/_~-]*) die "public_url $public: unexpected characters" ;;
    esac
    POST_URL="$public/webhooks/sms/$PROVIDER?secret=$SECRET"
    POST_URL="$POST_URL&from=%p&to=%P&time=%t&ts=%T&id=%I&coding=%c&charset=%C"
}

# part_is NAME PID COMM: the fakesmsc parts run fakesmsc, the others the
# program they are named after.
part_is() {
    case $1 in
        fakesmsc-*) [ "$3" = fakesmsc ] ;;
        *) [ "$3" = "$1" ] ;;
    esac
}

status_txt() {
    curl -sf --max-time 2 \
        "http://127.0.0.1:$ADMIN_PORT/status.txt?password=$ADMIN_PASSWORD"
}

# ready: smsbox connected, both links online, sendsms listening.
ready() {
    st=$(status_txt) || return 1
    printf '%s\n' "$st" | grep -q '^ *smsbox:' || return 1
    printf '%s\n' "$st" | grep -q '^ *fakemt\[fakemt\].*(online ' || return 1
    printf '%s\n' "$st" | grep -q '^ *fakemo\[fakemo\].*(online ' || return 1
    curl -s --max-time 2 -o /dev/null "http://127.0.0.1:$SENDSMS_PORT/"
}

render() {
    esc_url=$(esc "$POST_URL")
    sed -e "s|@DIR@|$dir|g" \
        -e "s|@ADMIN_PORT@|$ADMIN_PORT|g" \
        -e "s|@ADMIN_PASSWORD@|$ADMIN_PASSWORD|g" \
        -e "s|@SMSBOX_PORT@|$SMSBOX_PORT|g" \
        -e "s|@SENDSMS_PORT@|$SENDSMS_PORT|g" \
        -e "s|@MT_PORT@|$MT_PORT|g" \
        -e "s|@MO_PORT@|$MO_PORT|g" \
        -e "s|@USER@|$SMS_USER|g" \
        -e "s|@PASSWORD@|$PASSWORD|g" \
        -e "s|@POST_URL@|$esc_url|g" \
        "$template"
}

cmd_start() {
    reason=$(is_installed) ||
        die "Kannel is not installed: $reason (sh scripts/deps.sh installs" \
            "the packages kannel and kannel-extras)"
    load_conf
    mkdir -p "$dir"
    (umask 077 && render >"$dir/kannel.conf.new")
    # every part up with the same config: nothing to do
    if already_up ready Kannel "$dir/kannel.conf"; then
        return 0
    fi
    if p=$(first_busy "$ADMIN_PORT" "$SMSBOX_PORT" "$MT_PORT" "$MO_PORT" \
        "$SENDSMS_PORT"); then
        drop_new "$dir/kannel.conf"
        die "127.0.0.1:$p is taken by another program; the dev Kannel" \
            "needs $ADMIN_PORT-$MO_PORT and $SENDSMS_PORT"
    fi
    keep_new "$dir/kannel.conf"
    [ -e "$dir/kannel.store" ] || : >"$dir/kannel.store"
    {
        echo "ADMIN_PORT=$ADMIN_PORT"
        echo "ADMIN_PASSWORD=$ADMIN_PASSWORD"
        echo "SENDSMS_PORT=$SENDSMS_PORT"
        echo "MT_PORT=$MT_PORT"
        echo "MO_PORT=$MO_PORT"
        echo "NUMBER=$NUMBER"
    } >"$dir/env"
    rm -f "$dir/mo.fifo"
    mkfifo -m 600 "$dir/mo.fifo"

    spawn bearerbox "$dir/bearerbox.out" null \
        "$BEARERBOX" -v 2 "$dir/kannel.conf"
    i=0
    until status_txt >/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 200 ] || ! starting bearerbox; then
            tail -n 20 "$dir/bearerbox.out" "$dir/bearerbox.log" >&2 || true
            stop_all
            die "bearerbox did not start (see var/kannel/bearerbox.log)"
        fi
        sleep 0.1
    done
    spawn smsbox "$dir/smsbox.out" null "$SMSBOX" -v 2 "$dir/kannel.conf"
    # "-m 0": sends nothing; "-v 0 -D receive": a "Got message" line per MT
    spawn fakesmsc-mt "$dir/mt.log" null "$FAKESMSC" -H 127.0.0.1 \
        -r "$MT_PORT" -m 0 -v 0 -D receive "0 0 text unused"
    # interactive: one MO per line of its stdin; "-i 0": no pacing
    spawn fakesmsc-mo "$dir/mo.log" "$dir/mo.fifo" "$FAKESMSC" -H 127.0.0.1 \
        -r "$MO_PORT" -i 0 -v 1
    if ! wait_up ready starting "logs in var/kannel/"; then
        stop_all
        die "Kannel not ready after 20 s (logs in var/kannel/)"
    fi
    echo "kannel-dev: running; sendsms on 127.0.0.1:$SENDSMS_PORT, short" \
         "number $NUMBER, MO posted to $public/webhooks/sms/$PROVIDER"
}

cmd_stop() {
    dev_stop "$dir/mo.fifo" "$dir/env"
}

cmd_status() {
    rc=0
    parts_status || rc=1
    if st=$(status_txt); then
        printf '%s\n' "$st" | grep -E '^ *(fake(mt|mo)\[|smsbox:)' || true
    fi
    return "$rc"
}

dev_main "$@"
