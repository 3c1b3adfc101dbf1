#!/bin/sh
# notify.sh - the notification benchmark (a stage of `make bench`).
#
# 100,000 order.shipped notifications are enqueued to Redis, rendered, and
# POSTed through the webhook channel to a local nginx sink (keep-alive,
# `return 200 '{"id":"x"}'` for POST /hook), side by side with a baseline
# doing the same job: a BullMQ worker (tests/bench/notify/baseline/
# worker.js, concurrency 50, http.Agent keepAlive; `npm ci` there).
#
# Each run of each target gets a fresh private redis-server (unix socket,
# AOF appendfsync everysec) and a fresh consumer; nginx is shared. The run
# (tests/bench/notify/load.js) does, for both targets alike:
#   warm-up  NOTIFY_CUSTOMERS (1000) notifications to recipients by e-mail:
#            for switchboard these create the customers addressed later by
#            id (cu_N); the baseline needs none and gets the same jobs;
#   burst    NOTIFY_N (100000) notifications enqueued as fast as one
#            pipelined connection goes (switchboard: XADD to sb:notify;
#            baseline: Queue.addBulk), then drained: notifications/s from
#            the first enqueue to the last recorded send, and enqueue-to-
#            send latency p50/p99 (which includes waiting behind the whole
#            backlog);
#   paced    NOTIFY_PACED (10000) more at NOTIFY_RATE (1000)/s, open loop:
#            the latency a notification sees when the consumer keeps up.
# Times come from Redis after each run (see load.js for the exact fields).
# Runs alternate the order of the targets; NOTIFY_RUNS (3) of each, and the
# table shows medians. The issue's targets (>= 30,000 notifications/s and
# >= 3x the baseline, burst) are printed, not judged: the machine is shared
# and the load generator runs on the same two cores.
#
# The daemon: build/switchboard (plain -O2) with [notify] batch =
# NOTIFY_BATCH (200), max_inflight = NOTIFY_INFLIGHT (5000),
# supersede_window 0, [throttle webhook] concurrency = NOTIFY_CONCURRENCY
# (256: more than the driver's max_inflight, 512, would be refused and
# retried), [channels] webhook = webhook, [webhook] url = the sink. Where
# Redis spent its time in each burst (INFO commandstats, per-script SLOWLOG
# figures) is printed with the table, with the CPU of every process.
#
# Every process is stopped by PID; every wait is bounded (a run by
# NOTIFY_TIMEOUT, 180 s, for its drain). Exit status 1 when a server does
# not start or dies or a run does not finish (not for a missed target).
# Environment: SB_BIN, NOTIFY_N, NOTIFY_CUSTOMERS, NOTIFY_PACED,
# NOTIFY_RATE, NOTIFY_RUNS, NOTIFY_BATCH, NOTIFY_INFLIGHT,
# NOTIFY_CONCURRENCY ([throttle webhook] concurrency, 256),
# NOTIFY_BULLMQ_CONCURRENCY (50), NOTIFY_TIMEOUT, NOTIFY_BASELINE (1; 0
# skips the baseline), BENCH_KEEP (keep the temp dir).
cd "$(dirname "$0")/../../.." || exit 1

SB_BIN=${SB_BIN:-build/switchboard}
N=${NOTIFY_N:-100000}
CUST=${NOTIFY_CUSTOMERS:-1000}
PACED=${NOTIFY_PACED:-10000}
RATE=${NOTIFY_RATE:-1000}
RUNS=${NOTIFY_RUNS:-3}
BATCH=${NOTIFY_BATCH:-200}
INFLIGHT=${NOTIFY_INFLIGHT:-5000}
CONC=${NOTIFY_CONCURRENCY:-256}
BQCONC=${NOTIFY_BULLMQ_CONCURRENCY:-50}
TIMEOUT=${NOTIFY_TIMEOUT:-180}
BASELINE=${NOTIFY_BASELINE:-1}
ROOT=$(pwd)
HERE=tests/bench/notify
SECRET="notify-bench-secret-$$"
BENCH=notify

# stop_pid, free_port, wait_http, start_redis, start_nginx, bench_*
. tests/bench/lib.sh
bench_need "make deps" node npm redis-server redis-cli curl /usr/sbin/nginx
if [ ! -f "$HERE/baseline/node_modules/.package-lock.json" ] ||
    [ "$HERE/baseline/package-lock.json" -nt \
      "$HERE/baseline/node_modules/.package-lock.json" ]
then
    (cd "$HERE/baseline" && npm ci --no-audit --no-fund --loglevel=error) ||
    {
        echo "notify bench: npm ci failed in $HERE/baseline" >&2
        exit 1
    }
fi

bench_tmp
bench_begin

# --- the sink
bench_nginx "$tmp/nginx" '{"id":"x"}'

# run_load RUN TARGET DIR ARGS...: load.js in the background (bench_bg),
# bounded by timeout; its lines go to $tmp/results tagged with the run, and
# are shown.
run_load() {
    r=$1
    t=$2
    d=$3
    shift 3
    bench_bg $((TIMEOUT * 2 + 120)) "$d/load.out" "$d/load.err" \
        node "$HERE/load.js" --target "$t" \
        --redis "$d/redis.sock" --n "$N" --warmup "$CUST" --paced "$PACED" \
        --rate "$RATE" --timeout "$TIMEOUT" --pid "redis=$redis_pid" \
        --pid "nginx=$nginx_pid" "$@"
    rc=$?
    sed 's/^/  /' "$d/load.out"
    sed "s/^\\([A-Z]*\\) /\\1 run=$r /" "$d/load.out" >> "$tmp/results"
    if [ -s "$d/load.err" ]; then
        sed 's/^/  /' "$d/load.err" | head -20
    fi
    return $rc
}

# run_switchboard RUN
run_switchboard() {
    d="$tmp/sb-$1"
    bench_redis "$d" || return 1
    port=$(free_port)
    cat > "$d/switchboard.conf" <<CONF
[core]
log_level = warning
drain_timeout = 5s
default_country = RU

[http]
max_body = 1M
public_url = http://127.0.0.1:$port
www_dir = $ROOT/src/www

[listener main]
address = 127.0.0.1
port = $port

[redis]
socket = $d/redis.sock
prefix = sb:

[notify]
templates = $ROOT/config/templates
supersede_window = 0
batch = $BATCH
max_inflight = $INFLIGHT

[throttle webhook]
concurrency = $CONC

[channels]
webhook = webhook

[webhook]
url = http://127.0.0.1:$nport/hook
secret = $SECRET
CONF
    if ! "$SB_BIN" -c "$d/switchboard.conf" --check >"$d/check.out" 2>&1
    then
        echo "notify bench: config rejected:" >&2
        cat "$d/check.out" >&2
        return 1
    fi
    "$SB_BIN" -c "$d/switchboard.conf" 2>"$d/switchboard.log" &
    sb_pid=$!
    if ! wait_http "http://127.0.0.1:$port/readyz" 30; then
        echo "notify bench: the daemon did not become ready:" >&2
        tail -20 "$d/switchboard.log" >&2
        return 1
    fi
    rc=0
    run_load "$1" switchboard "$d" --pid "server=$sb_pid" \
        --lua "$ROOT/src/lua" || rc=1
    if ! kill -0 "$sb_pid" 2>/dev/null; then
        echo "notify bench: the daemon died:" >&2
        tail -20 "$d/switchboard.log" >&2
        rc=1
    fi
    errl=$(grep -c '^<[0-3]>' "$d/switchboard.log")
    warnl=$(grep -c '^<4>' "$d/switchboard.log")
    echo "LOG run=$1 target=switchboard errors=$errl warnings=$warnl" \
        >> "$tmp/results"
    bench_log_top "$d/switchboard.log" 200
    bench_stop_run
    bench_drop "$d"
    return $rc
}

# run_bullmq RUN
run_bullmq() {
    d="$tmp/bq-$1"
    bench_redis "$d" || return 1
    node "$HERE/baseline/worker.js" --redis "$d/redis.sock" \
        --url "http://127.0.0.1:$nport/hook" --secret "$SECRET" \
        --concurrency "$BQCONC" --templates "$ROOT/config/templates" \
        2>"$d/worker.log" &
    worker_pid=$!
    i=0
    until grep -q '^worker: ready' "$d/worker.log" 2>/dev/null; do
        i=$((i + 1))
        if [ "$i" -gt 200 ] || ! kill -0 "$worker_pid" 2>/dev/null; then
            echo "notify bench: the BullMQ worker did not start:" >&2
            tail -20 "$d/worker.log" >&2
            return 1
        fi
        sleep 0.1
    done
    rc=0
    run_load "$1" bullmq "$d" --pid "server=$worker_pid" || rc=1
    if ! kill -0 "$worker_pid" 2>/dev/null; then
        echo "notify bench: the BullMQ worker died:" >&2
        tail -20 "$d/worker.log" >&2
        rc=1
    fi
    bench_stop_run
    bench_drop "$d"
    return $rc
}

# notify_run RUN: both targets (their order alternating), or switchboard
# alone.
notify_run() {
    if [ "$BASELINE" = 0 ]; then
        order=switchboard
    elif [ $(($1 % 2)) = 1 ]; then
        order="switchboard bullmq"
    else
        order="bullmq switchboard"
    fi
    nrc=0
    for nt in $order; do
        echo "notify bench: run $1, $nt"
        "run_$nt" "$1" || nrc=1
        bench_stop_run # also after a failed start
    done
    return $nrc
}

# --- runs
echo "notify bench: $N notifications (burst) + $PACED at $RATE/s (paced)," \
    "$CUST customers, $RUNS runs per target"
bench_runs notify_run
bench_end

# --- report
bench_report '
function ms(v) { return v < 0 ? "-" : sprintf("%.0fms", v) }
function summary(t) {
    if (!cnt[t, "burst"]) return "-"
    return sprintf("%.0f/s p50 %s p99 %s", m[t, "burst", "rate"],
                   ms(m[t, "burst", "p50_ms"]), ms(m[t, "burst", "p99_ms"]))
}
BEGIN {
    nf = split("rate p50_ms p99_ms enqueue_secs cpu_server cpu_redis " \
               "cpu_nginx us_server us_redis us_nginx", fields, " ")
}
/^RESULT / {
    t = kv($0, "target"); k = kv($0, "kind"); i = ++cnt[t, k]
    for (f = 1; f <= nf; f++)
        v[t, k, fields[f], i] = kv($0, fields[f]) + 0
    if (kv($0, "done") + 0 < kv($0, "n") + 0) short[t]++
    # paced: the target did not keep up with the offered rate
    if (k == "paced" && kv($0, "rate") + 0 < 0.9 * rate) slow[t]++
}
/^REDIS / {
    t = kv($0, "target"); redis[t] = $0
    sub(/^REDIS run=[0-9]+ target=[a-z]+ /, "", redis[t])
}
END {
    printf "\n%-11s %9s %7s %7s %5s | %8s %6s %6s | %-15s %s\n",
        "target", "burst n/s", "p50", "p99", "enq s", "@" rate "/s",
        "p50", "p99", "cpu% srv/rds/ngx", "cpu us/ntf srv/rds/ngx"
    split("switchboard bullmq", order, " ")
    for (o = 1; o <= 2; o++) {
        t = order[o]
        if (!cnt[t, "burst"]) continue
        for (kk = 1; kk <= 2; kk++) {
            k = kk == 1 ? "burst" : "paced"
            for (f = 1; f <= nf; f++)
                m[t, k, fields[f]] = med(v, t SUBSEP k SUBSEP fields[f],
                                         cnt[t, k])
        }
        printf "%-11s %9.0f %7s %7s %5.1f | %8s %6s %6s | %-15s %s\n", t,
            m[t, "burst", "rate"], ms(m[t, "burst", "p50_ms"]),
            ms(m[t, "burst", "p99_ms"]), m[t, "burst", "enqueue_secs"],
            (m[t, "paced", "rate"] < 0 ? "-" : sprintf("%.0f%s",
                m[t, "paced", "rate"], slow[t] ? "!" : "")),
            ms(m[t, "paced", "p50_ms"]), ms(m[t, "paced", "p99_ms"]),
            sprintf("%d/%d/%d", m[t, "burst", "cpu_server"],
                    m[t, "burst", "cpu_redis"], m[t, "burst", "cpu_nginx"]),
            sprintf("%d/%d/%d", m[t, "burst", "us_server"],
                    m[t, "burst", "us_redis"], m[t, "burst", "us_nginx"])
        if (short[t]) shorts = shorts " " t "(" short[t] ")"
    }
    print "burst: " n " enqueued at once; n/s from the first enqueue to " \
        "the last send; p50/p99 enqueue -> send, including the wait " \
        "behind the backlog; enq s: time to enqueue them all"
    print "@" rate "/s: paced runs, n/s delivered (!: under 90% of the " \
        "offered rate, the latency then includes queueing)"
    print "cpu: during the burst, % of one core and CPU microseconds per " \
        "notification (server = the daemon or the BullMQ worker)"
    for (o = 1; o <= 2; o++)
        if (order[o] in redis)
            print "redis, " order[o] " burst (last run): " redis[order[o]]
    log_line("")
    sb = m["switchboard", "burst", "rate"]; bq = m["bullmq", "burst", "rate"]
    printf "notify: switchboard %s | bullmq %s | ratio %s (target 3.0), " \
        "target 30000/s: %s\n", summary("switchboard"), summary("bullmq"),
        (sb > 0 && bq > 0 ? sprintf("%.2f", sb / bq) : "-"),
        (sb >= 30000 ? "met" : "NOT met")
    verdict("runs did not finish", shorts)
}' -v rate="$RATE" -v n="$N"
