#!/bin/sh
# chat.sh - the chat benchmark (the last section of `make bench`).
#
# Starts a private redis-server (unix socket, AOF appendfsync everysec), the
# plain daemon build/switchboard with [chat] limits raised (connections per
# address, message rates, idle timeouts, [http] max_connections), N agent
# users and one operator, all routed by one auto-assign queue, and the
# baseline relay tests/bench/chat/baseline.js (Node ws + redis, `npm ci`
# here) appending to the same Redis. Then tests/bench/chat/chatload.c (built
# here with cc + pkg-config libuv jansson) measures:
#
#   idle    CHAT_IDLE_CONNS (10000) chat sockets held open at once, each
#           after handshake + hello/welcome: the server's VmRSS growth
#           divided by the sockets (each target on a fresh process);
#   paced   CHAT_CUSTOMERS (1000) customers sending CHAT_RATE (5000)
#           messages/s in total for CHAT_DURATION (10) s while CHAT_AGENTS
#           (10) agents each reply 10 times a second: delivery latency from
#           the customer's send to the "entry" frame on the agent console
#           that holds the conversation (p50/p99), and messages/s delivered;
#   sat     the same customers in a closed loop, 2 messages each on their way
#           to the agent (the next is sent when one arrives), for
#           CHAT_SAT_DURATION (5) s: the highest messages/s delivered.
#
# Each run is done CHAT_RUNS (3) times, alternating switchboard and the
# baseline; the table shows medians and the ratios, and the issue's targets
# (<= 8 KiB per idle socket, p99 < 10 ms at 5,000 msgs/s, >= 1.5x the
# baseline's throughput) are printed for comparison, not judged. See
# tests/bench/chat/README.md for the exact definitions.
#
# Every process is stopped by PID; every wait is bounded. Exit status 1 when
# a server does not start or dies, or the setup fails (not for a target).
cd "$(dirname "$0")/../../.." || exit 1

SB_BIN=${SB_BIN:-build/switchboard}
IDLE=${CHAT_IDLE_CONNS:-10000}
CUST=${CHAT_CUSTOMERS:-1000}
AGENTS=${CHAT_AGENTS:-10}
RATE=${CHAT_RATE:-5000}
DUR=${CHAT_DURATION:-10}
SATDUR=${CHAT_SAT_DURATION:-5}
RUNS=${CHAT_RUNS:-3}
ROOT=$(pwd)
HERE=tests/bench/chat
LOAD=build/bench/chatload

for tool in cc pkg-config node npm redis-server redis-cli curl; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "chat bench: $tool not installed (make deps)" >&2
        exit 1
    fi
done
if [ ! -x "$SB_BIN" ]; then
    echo "chat bench: $SB_BIN missing (make)" >&2
    exit 1
fi

# --- the load generator and the baseline's packages
mkdir -p build/bench || exit 1
if [ ! -x "$LOAD" ] || [ "$HERE/chatload.c" -nt "$LOAD" ]; then
    # shellcheck disable=SC2046
    cc -std=c11 -O2 -Wall -Wextra -Wpedantic -o "$LOAD" "$HERE/chatload.c" \
        $(pkg-config --cflags --libs libuv jansson) || exit 1
fi
if [ ! -f "$HERE/node_modules/.package-lock.json" ] ||
    [ "$HERE/package-lock.json" -nt "$HERE/node_modules/.package-lock.json" ]
then
    (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error) || {
        echo "chat bench: npm ci failed in $HERE" >&2
        exit 1
    }
fi

ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((IDLE + 500)) ]
then
    echo "chat bench: ulimit -n $(ulimit -n) is below $((IDLE + 500))" >&2
    exit 1
fi

tmp=$(mktemp -d /tmp/sb-chatbench-XXXXXX) || exit 1
redis_pid=""
sb_pid=""
base_pid=""
load_pid=""

. tests/bench/lib.sh # stop_pid, free_port, wait_http, start_redis, start_nginx
cleanup() {
    stop_pid "$load_pid" 20
    stop_pid "$sb_pid" 150
    stop_pid "$base_pid" 50
    stop_pid "$redis_pid" 50
    load_pid=""
    sb_pid=""
    base_pid=""
    redis_pid=""
    if [ -n "$BENCH_KEEP" ]; then
        echo "chat bench: kept $tmp"
    else
        rm -rf "$tmp"
    fi
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP

# run_load ARGS...: chatload in the background (so that cleanup can stop
# it by PID), bounded by timeout; its stdout goes to $tmp/load.out and is
# shown as it comes.
run_load() {
    : > "$tmp/load.out"
    timeout -k 5 600 "$LOAD" "$@" > "$tmp/load.out" 2> "$tmp/load.err" &
    load_pid=$!
    wait "$load_pid"
    rc=$?
    load_pid=""
    sed 's/^/  /' "$tmp/load.out"
    cat "$tmp/load.out" >> "$tmp/results"
    if [ -s "$tmp/load.err" ]; then
        sed 's/^/  chatload: /' "$tmp/load.err" | head -20
    fi
    return $rc
}

load1=$(cut -d' ' -f1-3 /proc/loadavg)

# --- Redis
sock="$tmp/redis.sock"
if ! start_redis "$tmp"; then
    echo "chat bench: redis-server did not start" >&2
    exit 1
fi

# --- the daemon: N agents in one auto-assign queue, one operator
port=$(free_port)
password="chat-bench-$$"
hash=$(echo "$password" | "$SB_BIN" --hash-password) || exit 1
members=""
users=""
n=1
while [ "$n" -le "$AGENTS" ]; do
    members="$members${members:+, }a$n"
    users="$users
[user a$n]
role = agent
password = $hash
display_name = Agent $n
"
    n=$((n + 1))
done
cat > "$tmp/switchboard.conf" <<CONF
[core]
log_level = warning
drain_timeout = 5s
default_country = RU

[http]
max_body = 1M
public_url = http://127.0.0.1:$port
max_connections = $((IDLE + 2000))
www_dir = $ROOT/src/www

[listener main]
address = 127.0.0.1
port = $port

[redis]
socket = $sock
prefix = sb:

[chat]
www_dir = $ROOT/channels/webchat/www
conns_per_ip = 1000000
msgs_per_sec = 10000
ip_msgs_per_sec = 1000000
idle_timeout = 1h

[console]
idle_timeout = 1h

[routing]
default_queue = bench
capacity = 1000

[queue bench]
members = $members
strategy = least_busy
auto_assign = yes

[user benchop]
role = operator
password = $hash
display_name = Bench Operator
$users
CONF
if ! "$SB_BIN" -c "$tmp/switchboard.conf" --check >"$tmp/check.out" 2>&1; then
    echo "chat bench: config rejected:" >&2
    cat "$tmp/check.out" >&2
    exit 1
fi
"$SB_BIN" -c "$tmp/switchboard.conf" 2>"$tmp/switchboard.log" &
sb_pid=$!
if ! wait_http "http://127.0.0.1:$port/readyz" 30; then
    echo "chat bench: the daemon did not become ready:" >&2
    tail -20 "$tmp/switchboard.log" >&2
    exit 1
fi

# login USER: prints the session token.
login() {
    curl -s --max-time 30 -H 'Content-Type: application/json' \
        -d "{\"username\":\"$1\",\"password\":\"$password\"}" \
        "http://127.0.0.1:$port/api/v1/login" |
        sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p'
}
: > "$tmp/sb.tokens"
: > "$tmp/base.tokens"
n=1
while [ "$n" -le "$AGENTS" ]; do
    tok=$(login "a$n")
    if [ -z "$tok" ]; then
        echo "chat bench: login of a$n failed" >&2
        exit 1
    fi
    echo "agent $tok" >> "$tmp/sb.tokens"
    echo "agent baseline-$n" >> "$tmp/base.tokens"
    n=$((n + 1))
done
tok=$(login benchop)
if [ -z "$tok" ]; then
    echo "chat bench: login of benchop failed" >&2
    exit 1
fi
echo "operator $tok" >> "$tmp/sb.tokens"

# --- the baseline relay
bport=$(free_port)
node "$HERE/baseline.js" --port "$bport" --redis "$sock" \
    --stream bench:relay 2>"$tmp/baseline.log" &
base_pid=$!
if ! wait_http "http://127.0.0.1:$bport/healthz" 20; then
    echo "chat bench: the baseline relay did not start:" >&2
    tail -20 "$tmp/baseline.log" >&2
    exit 1
fi

# --- runs
: > "$tmp/results"
fail=0
echo "chat bench: $IDLE idle sockets per target"
run_load idle --label switchboard --port "$port" --pid "$sb_pid" \
    --conns "$IDLE" --max-secs 150 || fail=1
run_load idle --label baseline --port "$bport" --pid "$base_pid" \
    --conns "$IDLE" --max-secs 150 || fail=1
redis-cli -s "$sock" CONFIG RESETSTAT >/dev/null
echo "chat bench: $CUST customers, $AGENTS agents; $RATE msgs/s for" \
    "${DUR}s and saturation for ${SATDUR}s, $RUNS runs each"
run_load active --target "switchboard,$port,$tmp/sb.tokens,$sb_pid" \
    --target "baseline,$bport,$tmp/base.tokens,$base_pid" \
    --redis-pid "$redis_pid" --customers "$CUST" \
    --rate "$RATE" --duration "$DUR" --sat-duration "$SATDUR" \
    --runs "$RUNS" --window 2 --reply-rate 10 --drain 15 --max-secs 480 ||
    fail=1

for p in "$sb_pid" "$base_pid"; do
    if ! kill -0 "$p" 2>/dev/null; then
        echo "chat bench: a server died during the runs (pid $p):" >&2
        tail -20 "$tmp/switchboard.log" "$tmp/baseline.log" >&2
        fail=1
    fi
done
# Where Redis spent its time in the active phase (both targets; the
# baseline only XADDs): the five commands with the most microseconds.
redis-cli -s "$sock" INFO commandstats | tr -d '\r' | tr ':,=' '   ' |
    awk '$1 ~ /^cmdstat_/ { print $5, substr($1, 9), $3, $7 }' |
    sort -rn | head -5 |
    awk '{ printf "%s%s %d calls %.0fus/call", (NR > 1 ? ", " : ""), $2,
           $3, $4 } END { if (NR) printf "\n" }' > "$tmp/cmdstats"
errlines=$(grep -c '^<[0-3]>' "$tmp/switchboard.log")
warnlines=$(grep -c '^<4>' "$tmp/switchboard.log")
load2=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report
awk -v load1="$load1" -v load2="$load2" -v errl="$errlines" \
    -v warnl="$warnlines" -v rate="$RATE" -v fail="$fail" \
    -v cmdstats="$(cat "$tmp/cmdstats")" '
function median(a, n,    i, j, t) {
    if (n == 0) return -1
    for (i = 1; i <= n; i++)
        for (j = i + 1; j <= n; j++)
            if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function kv(line, key,    re, s) {
    re = " " key "=[^ ]*"
    if (!match(line, re)) return ""
    s = substr(line, RSTART + length(key) + 2, RLENGTH - length(key) - 2)
    return s
}
function ms(v) { return v < 0 ? "-" : sprintf("%.2fms", v) }
/^IDLE / { t = kv($0, "label"); idle[t] = kv($0, "bytes_per_conn")
           iopen[t] = kv($0, "open"); iconns[t] = kv($0, "conns") }
/^RUN / {
    t = kv($0, "label"); k = kv($0, "kind"); i = ++cnt[t, k]
    rate_[t, k, i] = kv($0, "msgs_per_s")
    p50[t, k, i] = kv($0, "p50_ms"); p99[t, k, i] = kv($0, "p99_ms")
    rp50[t, k, i] = kv($0, "reply_p50_ms")
    cs[t, k, i] = kv($0, "cpu_server"); cr[t, k, i] = kv($0, "cpu_redis")
    if (kv($0, "overload_at_s") + 0 > 0) over[t]++
    lost[t] += kv($0, "lost"); dup[t] += kv($0, "dup")
    errs[t] += kv($0, "chat_errors") + kv($0, "console_errors")
    closes[t] += kv($0, "closes")
}
/^SETUP FAILED/ { fail = 1 }
END {
    printf "\n%-11s %6s %8s %8s %9s %8s %9s %9s %8s %5s %4s %4s\n",
        "target", "idle", "msgs/s", "p50", "p99", "max", "sat p99",
        "reply p50", "cpu s/r", "lost", "dup", "err"
    printf "%-11s %6s %8s %8s %9s %8s %9s %9s %8s %5s %4s %4s\n",
        "", "B/conn", "@" rate, "", "", "msgs/s", "", "", "at max",
        "", "", ""
    split("switchboard baseline", order, " ")
    for (o = 1; o <= 2; o++) {
        t = order[o]
        for (k2 = 1; k2 <= 2; k2++) {
            k = k2 == 1 ? "paced" : "sat"
            n = cnt[t, k]
            for (i = 1; i <= n; i++) {
                a[i] = rate_[t, k, i]; b[i] = p50[t, k, i]
                c[i] = p99[t, k, i]; d[i] = rp50[t, k, i]
                e[i] = cs[t, k, i]; f[i] = cr[t, k, i]
            }
            m_rate[t, k] = median(a, n); m_p50[t, k] = median(b, n)
            m_p99[t, k] = median(c, n); m_rp50[t, k] = median(d, n)
            m_cs[t, k] = median(e, n); m_cr[t, k] = median(f, n)
        }
        printf "%-11s %6s %8s %8s %9s %8s %9s %9s %8s %5d %4d %4d\n", t,
            (t in idle) ? (iopen[t] == iconns[t] ? idle[t] : idle[t] "*") \
                        : "-",
            m_rate[t, "paced"] < 0 ? "-" : \
                sprintf("%.0f%s", m_rate[t, "paced"], over[t] ? "!" : ""),
            ms(m_p50[t, "paced"]), ms(m_p99[t, "paced"]),
            m_rate[t, "sat"] < 0 ? "-" : sprintf("%.0f", m_rate[t, "sat"]),
            ms(m_p99[t, "sat"]), ms(m_rp50[t, "paced"]),
            sprintf("%d/%d%%", m_cs[t, "sat"], m_cr[t, "sat"]),
            lost[t], dup[t], errs[t] + closes[t]
        if (over[t]) overs = overs " " t " (" over[t] " runs)"
    }
    print "idle: server RSS growth / open sockets; @" rate ", p50, p99: " \
        "paced runs, send -> agent entry; max: saturation runs; cpu s/r: " \
        "% of a core, server/redis"
    if (overs != "")
        printf "!: the server fell 1 s behind at %d msgs/s and the run " \
            "stopped offering:%s\n", rate, overs
    sb = m_rate["switchboard", "sat"]; bl = m_rate["baseline", "sat"]
    sp = m_rate["switchboard", "paced"]; bp = m_rate["baseline", "paced"]
    printf "\nswitchboard/baseline: max msgs/s %.2f, msgs/s at %d/s %.2f, " \
        "p99 at %d/s %.2f\n", (bl > 0 ? sb / bl : 0), rate,
        (bp > 0 ? sp / bp : 0), rate,
        (m_p99["baseline", "paced"] > 0 ? \
         m_p99["switchboard", "paced"] / m_p99["baseline", "paced"] : 0)
    printf "targets (issue 3, not judged here): <= 8192 B per idle socket, " \
        "p99 < 10ms at 5000 msgs/s, max msgs/s >= 1.5x the baseline\n"
    if (cmdstats != "")
        printf "redis, active phase, top commands by time: %s\n", cmdstats
    printf "daemon log: %d error, %d warning lines; load average %s " \
        "before, %s after (2 cores, shared)\n", errl, warnl, load1, load2
    if (fail) { print "chat bench: FAILED (see above)"; exit 1 }
    print "chat bench: ok"
}' "$tmp/results"
