#!/bin/sh
# sms.sh - the SMS benchmark (a stage of `make bench`; issue 5).
#
# 20,000 order.shipped SMS notifications through switchboard -> Kannel ->
# fakesmsc, side by side in the same run with the same count sent straight
# to Kannel's sendsms by a keep-alive client (Python http.client, SMS_CONNS
# threads, one persistent connection each: what Kannel can do here), both
# timed until the listening fakesmsc has received them all; the ratio
# switchboard / direct is the figure (target >= 0.9). Then inbound: SMS_MO
# MO messages written to a fakesmsc on Kannel's MO link, timed until the
# daemon has ingested them all as contacts. tests/bench/sms/smsbench.py does
# one run (see its header for exactly what is timed); this script gives
# each run a fresh Redis (lib.sh start_redis: unix socket, AOF appendfsync
# everysec) and runs SMS_RUNS (3) of them, alternating which outbound target
# goes first, then prints the medians.
#
# Kannel is a private one per run (tests/integration/kannel.py: bearerbox,
# smsbox, fakesmsc on free 127.0.0.1 ports, log level warning), started by
# smsbench.py; the daemon is build/switchboard (SB_BIN, copied first so a
# rebuild cannot swap it mid-run) with [channels] sms = sms, [sms-provider
# kannel] max_inflight = SMS_INFLIGHT (32, the driver's default) and
# dlr_mask 31 (the default). The direct client asks for the same delivery
# reports (dlr-mask 31) on a dlr-url served by a local nginx (lib.sh
# start_nginx), so Kannel does the same work per message on both paths
# (SMS_BASELINE_DLR=0: no reports on the direct path).
#
# Every process is stopped by PID; every wait is bounded (SMS_TIMEOUT, 300
# s, per phase; the whole script by a timeout per run). Exit status 1 when
# something does not start, dies, or a run does not finish (not for a
# missed ratio target, which is printed: the machine is shared).
# Environment: SB_BIN, SMS_N (20000), SMS_WARMUP (1000), SMS_MO (5000),
# SMS_RUNS (3), SMS_CONNS (16), SMS_INFLIGHT (32), SMS_TIMEOUT (300),
# SMS_BASELINE_DLR (1), BENCH_KEEP (keep the temp dir).
cd "$(dirname "$0")/../../.." || exit 1

SB_BIN=${SB_BIN:-build/switchboard}
N=${SMS_N:-20000}
WARM=${SMS_WARMUP:-1000}
MO=${SMS_MO:-5000}
RUNS=${SMS_RUNS:-3}
CONNS=${SMS_CONNS:-16}
INFLIGHT=${SMS_INFLIGHT:-32}
TIMEOUT=${SMS_TIMEOUT:-300}
BDLR=${SMS_BASELINE_DLR:-1}
HERE=tests/bench/sms
BENCH=sms

# stop_pid, free_port, wait_http, start_redis, start_nginx, bench_*
. tests/bench/lib.sh
bench_need "make deps: kannel, kannel-extras" python3 redis-server \
    redis-cli curl /usr/sbin/nginx /usr/sbin/bearerbox /usr/sbin/smsbox \
    /usr/lib/kannel/test/fakesmsc
bench_tmp
bench_begin

dlr_url=""
if [ "$BDLR" != 0 ]; then
    bench_nginx "$tmp/nginx" 'ok'
    dlr_url="http://127.0.0.1:$nport/dlr"
fi

# sms_run RUN: a fresh Redis, smsbench.py (which stops its daemon and Kannel
# by PID); 2 when Redis does not start.
sms_run() {
    if [ $(($1 % 2)) = 1 ]; then
        order=switchboard,kannel
    else
        order=kannel,switchboard
    fi
    d="$tmp/run-$1"
    echo "sms bench: run $1 ($order, then inbound)"
    bench_redis "$d" || return 2
    bench_driver "$d" $((TIMEOUT * 6 + 120)) python3 "$HERE/smsbench.py" \
        --sb "$SB_BIN" --redis "$d/redis.sock" --dir "$d" --run "$1" \
        --n "$N" --warmup "$WARM" --mo "$MO" --conns "$CONNS" \
        --inflight "$INFLIGHT" --order "$order" --dlr-url "$dlr_url" \
        --timeout "$TIMEOUT"
    src=$?
    bench_stop_run
    bench_drop "$d/kannel"
    return $src
}

echo "sms bench: $N SMS notifications via switchboard vs $N sendsms" \
    "direct ($CONNS keep-alive connections), $MO MO inbound, $WARM warm-up," \
    "$RUNS runs"
bench_runs sms_run
bench_end

bench_report '
/^RESULT / {
    t = kv($0, "target"); i = ++cnt[t]
    rate[t, i] = kv($0, "rate") + 0; secs[t, i] = kv($0, "secs") + 0
    csb[t, i] = kv($0, "cpu_sb") + 0; ck[t, i] = kv($0, "cpu_kannel") + 0
    dr[t, i] = kv($0, "delivered_rate") + 0
    if (kv($0, "done") + 0 < kv($0, "n") + 0) short = short " " t
    runs_line[t] = runs_line[t] sprintf(" %s", kv($0, "rate"))
}
END {
    printf "\n%-12s %8s %8s %11s %13s %s\n", "target", "msg/s", "secs",
        "delivered/s", "cpu% sb/kan", "runs (msg/s)"
    split("switchboard kannel inbound", order, " ")
    for (o = 1; o <= 3; o++) {
        t = order[o]
        if (!cnt[t]) continue
        m[t] = med(rate, t, cnt[t]); d = med(dr, t, cnt[t])
        printf "%-12s %8.0f %8.2f %11s %13s%s\n", t, m[t],
            med(secs, t, cnt[t]),
            (t == "switchboard" ? sprintf("%.0f", d) : "-"),
            sprintf("%d/%d", med(csb, t, cnt[t]), med(ck, t, cnt[t])),
            runs_line[t]
    }
    print "switchboard: " n " notifications XADDed -> rendered -> sendsms " \
        "-> fakesmsc, from the first XADD to the last SMS at fakesmsc " \
        "(delivered/s: until all " n " delivery reports were recorded)"
    print "kannel: the same " n " texts by sendsms straight to Kannel (" \
        conns " keep-alive connections), until the last at fakesmsc"
    print "inbound: " mo " MO via fakesmsc -> Kannel -> POST " \
        "/webhooks/sms/kannel, until all were contacts in Redis"
    log_line("")
    sb = m["switchboard"]; kn = m["kannel"]
    printf "sms: switchboard %.0f msg/s | kannel direct %.0f msg/s | " \
        "ratio %s (target 0.9: %s) | inbound %.0f contacts/s\n", sb, kn,
        (sb > 0 && kn > 0 ? sprintf("%.2f", sb / kn) : "-"),
        (sb > 0 && kn > 0 && sb / kn >= 0.9 ? "met" : "NOT met"),
        m["inbound"]
    verdict("runs did not finish", short)
}' -v n="$N" -v mo="$MO" -v conns="$CONNS"
