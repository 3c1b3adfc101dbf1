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
top=$(pwd)
dir=$top/var/kannel
conf=${SB_DEV_CONF:-config/dev.conf}
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

die() {
    echo "kannel-dev: $*" >&2
    exit 1
}

is_installed() {
    for f in "$BEARERBOX" "$SMSBOX" "$FAKESMSC"; do
        if [ ! -x "$f" ]; then
            echo "no $f"
            return 1
        fi
    done
    return 0
}

# conf_get SECTION KEY: the value of KEY in [SECTION] of $conf (quotes
# around the section name or the value removed), empty when unset.
conf_get() {
    awk -v want="$1" -v key="$2" '
        function trim(s) { sub(/^[ \t]+/, "", s); sub(/[ \t\r]+$/, "", s);
                           return s }
        /^[ \t]*[#;]/ { next }
        /^[ \t]*\[/ {
            s = $0; sub(/^[ \t]*\[/, "", s); sub(/\][ \t\r]*$/, "", s)
            gsub(/"/, "", s); gsub(/[ \t]+/, " ", s); sec = trim(s); next
        }
        sec == want {
            i = index($0, "=")
            if (i == 0) next
            if (trim(substr($0, 1, i - 1)) != key) next
            v = trim(substr($0, i + 1))
            if (v ~ /^".*"$/) v = substr(v, 2, length(v) - 2)
            print v; exit
        }' "$conf"
}

# A secret written "@PATH" is read from that file (first line), as the
# daemon does; a relative PATH is next to the config file.
secret_value() {
    case $1 in
        @*)
            sv=${1#@}
            case $sv in /*) ;; *) sv=$(dirname "$conf")/$sv ;; esac
            [ -r "$sv" ] || die "cannot read $sv (a secret of $conf)"
            head -n 1 "$sv" | tr -d '\r' | sed 's/^[ \t]*//; s/[ \t]*$//'
            ;;
        *) printf '%s\n' "$1" ;;
    esac
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
    SENDSMS_PORT=$(printf '%s\n' "$url" |
        sed -n 's|^http://127\.0\.0\.1:\([0-9][0-9]*\)/.*|\1|p')
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

pid_of() {
    [ -s "$dir/$1.pid" ] && cat "$dir/$1.pid"
}

# alive NAME: the PID in NAME.pid runs the program NAME stands for (a PID
# reused by something else does not count).
alive() {
    a_pid=$(pid_of "$1") || return 1
    a_comm=$(cat "/proc/$a_pid/comm" 2>/dev/null) || return 1
    case $1 in
        fakesmsc-*) [ "$a_comm" = fakesmsc ] ;;
        *) [ "$a_comm" = "$1" ] ;;
    esac
}

any_alive() {
    for n in $PARTS; do
        if alive "$n"; then
            return 0
        fi
    done
    return 1
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

port_busy() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.settimeout(1.0)
try:
    s.connect(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

# spawn NAME LOG STDIN PROGRAM ARGS...: in a session of its own (Ctrl-C in
# the terminal of `make run` does not reach it; stop does), PID in
# NAME.pid. STDIN is "fifo" (mo.fifo, read-write) or "null".
spawn() {
    s_name=$1 s_log=$2 s_in=$3
    shift 3
    if [ "$s_in" = fifo ]; then
        setsid "$@" >>"$s_log" 2>&1 0<>"$dir/mo.fifo" &
    else
        setsid "$@" >>"$s_log" 2>&1 </dev/null &
    fi
    echo $! >"$dir/$s_name.pid"
}

# stop_part NAME: SIGTERM (bearerbox gets a second one after 0.5 s: after
# the first it waits for its queues to drain), SIGKILL after 10 s; only a
# live NAME is signalled.
stop_part() {
    if ! alive "$1"; then
        rm -f "$dir/$1.pid"
        return 0
    fi
    k_pid=$(pid_of "$1")
    kill -TERM "$k_pid" 2>/dev/null || true
    k_i=0
    while alive "$1"; do
        k_i=$((k_i + 1))
        if [ "$1" = bearerbox ] && [ "$k_i" -eq 5 ]; then
            kill -TERM "$k_pid" 2>/dev/null || true
        fi
        if [ "$k_i" -ge 100 ]; then
            kill -KILL "$k_pid" 2>/dev/null || true
            sleep 0.1
            break
        fi
        sleep 0.1
    done
    rm -f "$dir/$1.pid"
}

# smsbox first (it hands what it holds to bearerbox), then bearerbox; the
# fakesmsc usually leave with it.
stop_all() {
    for n in smsbox bearerbox fakesmsc-mt fakesmsc-mo; do
        stop_part "$n"
    done
}

render() {
    esc_url=$(printf '%s' "$POST_URL" | sed 's/[&|\\]/\\&/g')
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
    if any_alive; then
        # every part up with the same config: nothing to do
        if ready && cmp -s "$dir/kannel.conf.new" "$dir/kannel.conf"; then
            rm -f "$dir/kannel.conf.new"
            echo "kannel-dev: already running (scripts/kannel-dev.sh status)"
            return 0
        fi
        echo "kannel-dev: stopping the Kannel of an earlier run" >&2
        stop_all
    fi
    for p in "$ADMIN_PORT" "$SMSBOX_PORT" "$MT_PORT" "$MO_PORT" \
             "$SENDSMS_PORT"; do
        if port_busy "$p"; then
            rm -f "$dir/kannel.conf.new"
            die "127.0.0.1:$p is taken by another program; the dev Kannel" \
                "needs $ADMIN_PORT-$MO_PORT and $SENDSMS_PORT"
        fi
    done
    mv "$dir/kannel.conf.new" "$dir/kannel.conf"
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
        if [ "$i" -gt 200 ] || ! alive bearerbox; then
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
    spawn fakesmsc-mo "$dir/mo.log" fifo "$FAKESMSC" -H 127.0.0.1 \
        -r "$MO_PORT" -i 0 -v 1
    i=0
    until ready; do
        i=$((i + 1))
        for n in $PARTS; do
            if ! alive "$n"; then
                echo "kannel-dev: $n exited (logs in var/kannel/)" >&2
                i=1000
            fi
        done
        if [ "$i" -gt 200 ]; then
            stop_all
            die "Kannel not ready after 20 s (logs in var/kannel/)"
        fi
        sleep 0.1
    done
    echo "kannel-dev: running; sendsms on 127.0.0.1:$SENDSMS_PORT, short" \
         "number $NUMBER, MO posted to $public/webhooks/sms/$PROVIDER"
}

cmd_stop() {
    [ -d "$dir" ] || return 0
    stop_all
    rm -f "$dir/mo.fifo" "$dir/env"
    echo "kannel-dev: stopped"
}

cmd_status() {
    rc=0
    for n in $PARTS; do
        if alive "$n"; then
            echo "$n: running, pid $(pid_of "$n")"
        else
            echo "$n: not running"
            rc=1
        fi
    done
    if st=$(status_txt); then
        printf '%s\n' "$st" | grep -E '^ *(fake(mt|mo)\[|smsbox:)' || true
    fi
    return "$rc"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    installed)
        if reason=$(is_installed); then
            exit 0
        fi
        echo "$reason"
        exit 1
        ;;
    *)
        echo "usage: scripts/kannel-dev.sh start|stop|status|installed" >&2
        exit 2
        ;;
esac
