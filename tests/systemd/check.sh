#!/bin/sh
# check.sh - offline checks of the systemd unit, sysusers/tmpfiles snippets
# and the Redis drop-in.
#
#   sh tests/systemd/check.sh
#
# Works without a running systemd (in containers PID 1 is not systemd):
#
#  1. `systemd-analyze verify` on the unit. verify insists that ExecStart's
#     binary exists, and /usr/local/bin/switchboard is not installed on a
#     build machine, so it runs on a temporary copy of the unit whose
#     ExecStart points at build/switchboard when built, else /bin/true;
#     nothing else is changed. verify exits 0 even on unknown keys or bad
#     values (it only prints them), so any output at all is a failure.
#  2. `systemd-analyze security --offline=yes` on the same copy: prints
#     "systemd: exposure X.Y" and fails above MAX_EXPOSURE (default 2.0).
#  3. switchboard.sysusers and switchboard.tmpfiles applied to an empty
#     temporary root (systemd 252 has no --dry-run for tmpfiles; --root=
#     does the real thing, harmlessly): the user, its group membership, and
#     the directories' owners and modes are checked. Ownership needs root:
#     as another user only the syntax is checked. Skipped when the tools are
#     missing.
#  4. redis-switchboard.conf loaded by a private redis-server (socket in the
#     temporary directory, no TCP port, stopped by PID even on failure), and
#     the settings read back. Skipped when redis-server is missing.
#
# Exit 0 when everything ran passed (or was skipped), 1 otherwise.
cd "$(dirname "$0")/../.." || exit 1

: "${MAX_EXPOSURE:=2.0}"
UNIT=systemd/switchboard.service
SYSUSERS=systemd/switchboard.sysusers
TMPFILES=systemd/switchboard.tmpfiles
REDISCONF=systemd/redis-switchboard.conf

fail=0
redis_pid=""
tmp=$(mktemp -d /tmp/sbsystemd.XXXXXX) || exit 1
cleanup() {
    if [ -n "$redis_pid" ]; then
        kill "$redis_pid" 2>/dev/null
        wait "$redis_pid" 2>/dev/null
    fi
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

bad() {
    echo "systemd: FAIL: $*" >&2
    fail=1
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "systemd: skipped (systemd-analyze not installed)"
    exit 0
fi
for f in "$UNIT" "$SYSUSERS" "$TMPFILES" "$REDISCONF"; do
    [ -f "$f" ] || { bad "$f missing"; exit 1; }
done

# ---- 1. verify ---------------------------------------------------------
bin=/bin/true
[ -x build/switchboard ] && bin="$(pwd)/build/switchboard"
copy="$tmp/switchboard.service"
sed "s|^ExecStart=/usr/local/bin/switchboard |ExecStart=$bin |" \
    "$UNIT" > "$copy"
if ! grep -q "^ExecStart=$bin " "$copy"; then
    bad "no 'ExecStart=/usr/local/bin/switchboard ...' line in $UNIT"
fi
out=$(timeout 60 systemd-analyze verify "$copy" 2>&1)
rc=$?
if [ $rc -ne 0 ] || [ -n "$out" ]; then
    echo "$out" >&2
    bad "systemd-analyze verify (exit $rc)"
else
    echo "systemd: verify ok (ExecStart checked as $bin)"
fi

# ---- 2. exposure -------------------------------------------------------
out=$(timeout 60 systemd-analyze security --offline=yes "$copy" 2>&1)
score=$(printf '%s\n' "$out" |
    sed -n 's/.*Overall exposure level for [^:]*: *\([0-9][0-9]*\.[0-9]*\).*/\1/p' |
    tail -n 1)
if [ -z "$score" ]; then
    echo "$out" >&2
    bad "no exposure level in systemd-analyze security output"
else
    echo "systemd: exposure $score"
    if ! awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s + 0 <= m + 0) }'; then
        printf '%s\n' "$out" | grep -E '✗|Overall' >&2
        bad "exposure $score is above $MAX_EXPOSURE"
    fi
fi

# ---- 3. sysusers and tmpfiles in a scratch root ---------------------------
root="$tmp/root"
mkdir -p "$root/etc"
if ! command -v systemd-sysusers >/dev/null 2>&1; then
    echo "systemd: sysusers skipped (systemd-sysusers not installed)"
elif ! timeout 30 systemd-sysusers --root="$root" - < "$SYSUSERS" \
        > "$tmp/sysusers.log" 2>&1; then
    cat "$tmp/sysusers.log" >&2
    bad "systemd-sysusers rejected $SYSUSERS"
else
    uid=$(awk -F: '$1 == "switchboard" { print $3 }' "$root/etc/passwd")
    home=$(awk -F: '$1 == "switchboard" { print $6 }' "$root/etc/passwd")
    gid=$(awk -F: '$1 == "switchboard" { print $3 }' "$root/etc/group")
    [ -n "$uid" ] || bad "sysusers created no user switchboard"
    [ -n "$gid" ] || bad "sysusers created no group switchboard"
    [ "$home" = /var/lib/switchboard ] ||
        bad "home of switchboard is '$home', not /var/lib/switchboard"
    awk -F: '$1 == "redis" { n = split($4, m, ","); for (i = 1; i <= n; i++)
            if (m[i] == "switchboard") found = 1 }
        END { exit !found }' "$root/etc/group" ||
        bad "switchboard is not a member of group redis"
    [ $fail -eq 0 ] && echo "systemd: sysusers ok (uid $uid)"

    if ! command -v systemd-tmpfiles >/dev/null 2>&1; then
        echo "systemd: tmpfiles skipped (systemd-tmpfiles not installed)"
    elif [ "$(id -u)" -ne 0 ]; then
        # Without root the chown fails; still catch syntax errors.
        if timeout 30 systemd-tmpfiles --root="$root" --create - \
                < "$TMPFILES" 2>&1 | grep -v -e 'Operation not permitted' \
                -e 'Failed to .*chown' | grep -q .; then
            bad "systemd-tmpfiles complained about $TMPFILES"
        fi
        echo "systemd: tmpfiles syntax only (not root)"
    elif ! timeout 30 systemd-tmpfiles --root="$root" --create - \
            < "$TMPFILES" > "$tmp/tmpfiles.log" 2>&1 ||
            [ -s "$tmp/tmpfiles.log" ]; then
        cat "$tmp/tmpfiles.log" >&2
        bad "systemd-tmpfiles rejected $TMPFILES"
    else
        # path mode owner-uid
        while read -r path mode owner; do
            [ -n "$path" ] || continue
            got=$(stat -c '%a %u' "$root$path" 2>/dev/null)
            want="$mode $owner"
            [ "$got" = "$want" ] ||
                bad "$path is '$got', want '$want' (mode uid)"
        done <<EOF
/var/lib/switchboard 750 $uid
/var/lib/switchboard/outbox 750 $uid
/etc/switchboard 750 0
/etc/switchboard/credentials 700 0
EOF
        [ "$(stat -c %g "$root/etc/switchboard")" = "$gid" ] ||
            bad "/etc/switchboard is not group switchboard"
        [ $fail -eq 0 ] && echo "systemd: tmpfiles ok"
    fi
fi

# ---- 4. the Redis drop-in loads and means what it says --------------------
if ! command -v redis-server >/dev/null 2>&1 ||
        ! command -v redis-cli >/dev/null 2>&1; then
    echo "systemd: redis drop-in skipped (redis-server not installed)"
else
    grep -q '^unixsocket /run/redis/redis-server.sock$' "$REDISCONF" ||
        bad "$REDISCONF: unixsocket is not /run/redis/redis-server.sock"
    sock="$tmp/redis.sock"
    # The drop-in first, then what a test instance must change (later
    # lines win): private socket and data dir, no TCP, foreground.
    cat > "$tmp/redis.conf" <<EOF
include $(pwd)/$REDISCONF
unixsocket $sock
port 0
dir $tmp
daemonize no
logfile $tmp/redis.log
EOF
    redis-server "$tmp/redis.conf" > /dev/null 2>&1 &
    redis_pid=$!
    i=0
    while [ $i -lt 100 ] && [ ! -S "$sock" ]; do
        kill -0 "$redis_pid" 2>/dev/null || break
        sleep 0.1
        i=$((i + 1))
    done
    if [ ! -S "$sock" ]; then
        tail -n 20 "$tmp/redis.log" >&2 2>/dev/null
        bad "redis-server did not start with $REDISCONF"
    else
        got=$(for k in appendonly appendfsync maxmemory-policy \
                unixsocketperm; do
            timeout 5 redis-cli -s "$sock" --raw config get "$k" | tail -n 1
        done | tr '\n' ' ')
        if [ "$got" != "yes always noeviction 770 " ]; then
            bad "redis settings read back as '$got'"
        else
            echo "systemd: redis drop-in ok ($got)"
        fi
        timeout 5 redis-cli -s "$sock" shutdown nosave > /dev/null 2>&1
    fi
    kill "$redis_pid" 2>/dev/null
    wait "$redis_pid" 2>/dev/null
    redis_pid=""
fi

if [ $fail -ne 0 ]; then
    echo "systemd: FAILED"
    exit 1
fi
echo "systemd: all checks passed"
exit 0
