#!/bin/sh
# bench.sh - throughput benchmark (`make bench`).
#
# Starts a private redis-server (unix socket, AOF appendfsync everysec), the
# plain daemon build/switchboard on a free loopback port and a private nginx
# (return 200) on another, then runs `wrk -t2 -c64 -d10s` three times
# against each target:
#   contacts  POST /api/v1/contacts (tests/bench/contacts.lua: a valid
#             contact, unique source_id per request, API key header)
#   healthz   GET /healthz on the daemon
#   nginx     GET / on nginx (the ceiling of this machine)
# and prints the median of the three runs (req/s, p50, p99) per target, the
# ratios contacts/healthz and contacts/nginx, and the non-2xx count (must be
# 0). Finally it checks that XLEN sb:log equals the number of 2xx answers to
# the contact runs. Every process is stopped by PID; the whole run is
# bounded (about 2 minutes). Exit status 1 on any failure.
#
# Then, with those servers stopped, the chat benchmark runs:
# tests/bench/chat/chat.sh (10,000 idle chat sockets, then customer -> agent
# delivery over WebSockets, side by side with a Node ws relay; about 2
# minutes more; see tests/bench/chat/README.md).
#
# Last, the notification benchmark: tests/bench/notify/notify.sh (100,000
# notifications XADDed, rendered and POSTed through the webhook channel to
# a local nginx, side by side with a BullMQ worker doing the same; its
# last line "notify: switchboard N/s ... | bullmq N/s ... | ratio R" sums
# it up; several minutes; see tests/bench/notify/README.md).
#
# Then SMS: tests/bench/sms/sms.sh (20,000 SMS notifications through
# switchboard -> Kannel -> fakesmsc, side by side with the same count sent
# straight to Kannel's sendsms; and fakesmsc MO messages -> contacts/s;
# about 2 minutes).
#
# Then e-mail: tests/bench/email/email.sh (corpus parse+ingest and 5,000
# IMAP fetches from a private Dovecot; 10,000 notifications over SMTP to
# Postfix's smtp-sink side by side with smtp-source; last line "email: ...";
# 2 to 4 minutes; see tests/bench/email/README.md).
#
# Environment: SB_BIN (default build/switchboard), BENCH_DURATION (10s),
# BENCH_CONNS (64), BENCH_RUNS (3), BENCH_CHAT (1; 0 skips the chat part),
# BENCH_NOTIFY (1; 0 skips the notification part), BENCH_SMS (1; 0 skips
# the SMS part), BENCH_EMAIL (1; 0 skips the e-mail part), the EMAIL_*
# variables of tests/bench/email/email.sh, and the CHAT_* and
# NOTIFY_* variables of tests/bench/chat/chat.sh and
# tests/bench/notify/notify.sh.
cd "$(dirname "$0")/../.." || exit 1

SB_BIN=${SB_BIN:-build/switchboard}
DUR=${BENCH_DURATION:-10s}
CONNS=${BENCH_CONNS:-64}
RUNS=${BENCH_RUNS:-3}
ROOT=$(pwd)

for tool in wrk redis-server redis-cli curl /usr/sbin/nginx; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench: $tool not installed (make deps)" >&2
        exit 1
    fi
done
if [ ! -x "$SB_BIN" ]; then
    echo "bench: $SB_BIN missing (make)" >&2
    exit 1
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true

tmp=$(mktemp -d /tmp/sb-bench-XXXXXX) || exit 1
redis_pid=""
sb_pid=""
nginx_pid=""

. tests/bench/lib.sh # stop_pid, free_port, wait_http, start_redis, start_nginx
cleanup() {
    stop_pid "$sb_pid" 150
    stop_pid "$nginx_pid" 50
    stop_pid "$redis_pid" 50
    sb_pid=""
    nginx_pid=""
    redis_pid=""
    if [ -n "$BENCH_KEEP" ]; then
        echo "bench: kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# --- Redis
sock="$tmp/redis.sock"
if ! start_redis "$tmp"; then
    echo "bench: redis-server did not start" >&2
    exit 1
fi

# --- the daemon
port=$(free_port)
keyout=$("$SB_BIN" --new-apikey bench) || exit 1
key=$(echo "$keyout" | sed -n 's/^key *= *//p')
hash=$(echo "$keyout" | sed -n 's/^hash *= *//p')
if [ -z "$key" ] || [ -z "$hash" ]; then
    echo "bench: unexpected --new-apikey output" >&2
    exit 1
fi
cat > "$tmp/switchboard.conf" <<CONF
[core]
log_level = warning
drain_timeout = 5s
default_country = RU

[http]
max_body = 1M
public_url = http://127.0.0.1:$port

[listener main]
address = 127.0.0.1
port = $port

[redis]
socket = $sock
prefix = sb:

[apikey bench]
hash = $hash
scopes = contacts,customers
CONF
"$SB_BIN" -c "$tmp/switchboard.conf" 2>"$tmp/switchboard.log" &
sb_pid=$!
if ! wait_http "http://127.0.0.1:$port/readyz" 30; then
    echo "bench: the daemon did not become ready:" >&2
    tail -20 "$tmp/switchboard.log" >&2
    exit 1
fi

# --- nginx
if ! start_nginx "$tmp/nginx" '{"status":"ok"}'; then
    echo "bench: nginx did not start" >&2
    exit 1
fi

# --- runs
# run_wrk TARGET N ARGS...: one wrk run; appends "TARGET rps p50 p99 ok
# non2xx errors" to $tmp/results.
run_wrk() {
    target=$1
    n=$2
    shift 2
    out="$tmp/wrk-$target-$n.out"
    SB_BENCH_KEY="$key" SB_BENCH_RUN="$n$$" timeout -k 5 60 \
        wrk -t2 -c"$CONNS" -d"$DUR" "$@" > "$out" 2>&1
    line=$(grep '^BENCH ' "$out")
    if [ -z "$line" ]; then
        echo "bench: wrk run failed for $target:" >&2
        cat "$out" >&2
        echo "$target 0 0 0 0 0 1" >> "$tmp/results"
        return
    fi
    echo "$line" | sed 's/[a-z0-9_]*=//g; s/^BENCH/'"$target"'/' \
        >> "$tmp/results"
    echo "  $target run $n: $line"
}

: > "$tmp/results"
echo "bench: wrk -t2 -c$CONNS -d$DUR, $RUNS runs per target"
r=1
while [ "$r" -le "$RUNS" ]; do
    run_wrk contacts "$r" -s tests/bench/contacts.lua \
        "http://127.0.0.1:$port/api/v1/contacts"
    run_wrk healthz "$r" -s tests/bench/count.lua \
        "http://127.0.0.1:$port/healthz"
    run_wrk nginx "$r" -s tests/bench/count.lua "http://127.0.0.1:$nport/"
    r=$((r + 1))
done

if ! kill -0 "$sb_pid" 2>/dev/null; then
    echo "bench: the daemon died during the runs:" >&2
    tail -20 "$tmp/switchboard.log" >&2
    exit 1
fi
xlen=$(redis-cli -s "$sock" XLEN sb:log)

# (d) exact count: every request waited for, so stored == acknowledged.
count_n=${BENCH_COUNT:-2000}
x0=$(redis-cli -s "$sock" XLEN sb:log)
cline=$(timeout -k 5 120 /usr/bin/python3 tests/bench/count.py "$port" \
    "$key" "$count_n" 8)
x1=$(redis-cli -s "$sock" XLEN sb:log)

# --- report
awk -v xlen="$xlen" -v cline="$cline" -v cdelta=$((x1 - x0)) '
function median(a, n,    i, j, t) {
    for (i = 1; i <= n; i++)
        for (j = i + 1; j <= n; j++)
            if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function ms(us) { return sprintf("%.2fms", us / 1000) }
{
    t = $1; k = ++cnt[t]
    rps[t, k] = $2; p50[t, k] = $3; p99[t, k] = $4
    ok[t] += $5; bad[t] += $6; err[t] += $7; sent[t] += $8
}
END {
    fail = 0
    printf "\n%-10s %12s %10s %10s %10s %8s\n", "target", "req/s", "p50",
        "p99", "non-2xx", "errors"
    split("contacts healthz nginx", order, " ")
    for (o = 1; o <= 3; o++) {
        t = order[o]; n = cnt[t]
        for (k = 1; k <= n; k++) {
            a[k] = rps[t, k]; b[k] = p50[t, k]; c[k] = p99[t, k]
        }
        m[t] = median(a, n)
        printf "%-10s %12.0f %10s %10s %10d %8d\n", t, m[t],
            ms(median(b, n)), ms(median(c, n)), bad[t], err[t]
        if (bad[t] > 0 || m[t] <= 0) fail = 1
    }
    printf "\ncontacts/healthz = %.2f   contacts/nginx = %.2f\n",
        (m["healthz"] > 0 ? m["contacts"] / m["healthz"] : 0),
        (m["nginx"] > 0 ? m["contacts"] / m["nginx"] : 0)
    # wrk drops the requests in flight when its time is up: the daemon
    # may have stored those (at most -c per run) without wrk seeing a 2xx.
    inflight = xlen - ok["contacts"]
    printf "wrk contacts: 2xx = %d, sent = %d, XLEN sb:log = %d " \
        "(stored, answer dropped by wrk at cutoff: %d): %s\n",
        ok["contacts"], sent["contacts"], xlen, inflight,
        (inflight >= 0 && xlen <= sent["contacts"]) ? "consistent" : "MISMATCH"
    if (inflight < 0 || xlen > sent["contacts"]) fail = 1
    split(cline, cf, /[ =]/)
    printf "exact count: posted %d, 2xx %d, other %d, errors %d, " \
        "XLEN grew by %d: %s\n", cf[3], cf[5], cf[7], cf[9], cdelta,
        (cf[5] == cdelta && cf[5] == cf[3]) ? "match" : "MISMATCH"
    if (cline == "" || cf[5] != cdelta || cf[5] != cf[3]) fail = 1
    if (fail) { print "bench: FAILED (non-2xx answers, a failed run or a " \
        "log count mismatch)"; exit 1 }
    print "bench: ok"
}' "$tmp/results"
status=$?

# --- the chat and notification benchmarks, each with its own servers
if [ "${BENCH_CHAT:-1}" != 0 ] || [ "${BENCH_NOTIFY:-1}" != 0 ] ||
    [ "${BENCH_SMS:-1}" != 0 ] || [ "${BENCH_EMAIL:-1}" != 0 ]; then
    cleanup
    trap - EXIT
fi
if [ "${BENCH_CHAT:-1}" != 0 ]; then
    echo
    SB_BIN="$SB_BIN" sh tests/bench/chat/chat.sh || status=1
fi
if [ "${BENCH_NOTIFY:-1}" != 0 ]; then
    echo
    SB_BIN="$SB_BIN" sh tests/bench/notify/notify.sh || status=1
fi
if [ "${BENCH_SMS:-1}" != 0 ]; then
    echo
    SB_BIN="$SB_BIN" sh tests/bench/sms/sms.sh || status=1
fi
if [ "${BENCH_EMAIL:-1}" != 0 ]; then
    echo
    SB_BIN="$SB_BIN" sh tests/bench/email/email.sh || status=1
fi
exit $status
