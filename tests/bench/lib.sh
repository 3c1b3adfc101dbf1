#!/bin/sh
# lib.sh - helpers shared by the benchmark scripts (sourced, POSIX sh).

stop_pid() {
    # stop_pid PID LIMIT_TENTHS: SIGTERM, wait, SIGKILL.
    [ -n "$1" ] || return 0
    kill -TERM "$1" 2>/dev/null || return 0
    i=0
    while kill -0 "$1" 2>/dev/null && [ "$i" -lt "$2" ]; do
        sleep 0.1
        i=$((i + 1))
    done
    kill -KILL "$1" 2>/dev/null
    wait "$1" 2>/dev/null
    return 0
}


free_port() {
    /usr/bin/python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# wait_http URL SECONDS: until a 200.
wait_http() {
    i=0
    while [ "$i" -lt $(($2 * 10)) ]; do
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "$1")
        [ "$code" = 200 ] && return 0
        sleep 0.1
        i=$((i + 1))
    done
    return 1
}


# start_redis DIR: a fresh private redis-server (unix socket DIR/redis.sock,
# AOF appendfsync everysec, as every benchmark runs it); sets redis_pid.
# 0, or 1 when it does not answer within 10 s.
start_redis() {
    mkdir -p "$1"
    redis-server --port 0 --unixsocket "$1/redis.sock" --unixsocketperm 700 \
        --appendonly yes --appendfsync everysec --save "" --dir "$1" \
        --daemonize no --logfile "$1/redis.log" >/dev/null 2>&1 &
    redis_pid=$!
    i=0
    until [ "$(redis-cli -s "$1/redis.sock" ping 2>/dev/null)" = PONG ]; do
        i=$((i + 1))
        [ "$i" -gt 100 ] && return 1
        sleep 0.1
    done
    return 0
}

# start_nginx DIR BODY: a private nginx on a free loopback port answering
# every request 200 with the JSON BODY (keep-alive, no access log); sets
# nginx_pid and nport. 0, or 1 (its error log printed) when it does not
# answer within 10 s.
start_nginx() {
    nport=$(free_port)
    mkdir -p "$1"
    cat > "$1/nginx.conf" <<CONF
daemon off;
worker_processes 1;
pid $1/nginx.pid;
error_log $1/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $1/body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {
        listen 127.0.0.1:$nport;
        location / {
            default_type application/json;
            return 200 '$2';
        }
    }
}
CONF
    /usr/sbin/nginx -p "$1" -e "$1/error.log" -c "$1/nginx.conf" \
        >/dev/null 2>&1 &
    nginx_pid=$!
    if ! wait_http "http://127.0.0.1:$nport/" 10; then
        cat "$1/error.log" >&2
        return 1
    fi
    return 0
}

# --- The stages (notify, sms, email): one shape. A stage sets BENCH (its
# name: "sms") and RUNS, sources this file, and then:
#   bench_need HINT TOOL...  the tools and SB_BIN there, or exit 1
#   bench_tmp                tmp, a private SB_BIN, the traps
#   bench_begin              load1, start, an empty $tmp/results, fail=0
#   bench_runs FN            FN 1 .. FN RUNS, each run's processes stopped
#   bench_end                load2, elapsed
#   bench_report PROG ARGS   the table: awk PROG over $tmp/results
# The processes a run may leave are in run_pid (the stage's driver), sb_pid,
# worker_pid and redis_pid; a stage-wide nginx in nginx_pid.

# bench_need HINT TOOL...: every TOOL on PATH (else "not installed (HINT)")
# and SB_BIN executable, or a message and exit 1.
bench_need() {
    bench_hint=$1
    shift
    for bench_tool in "$@"; do
        if ! command -v "$bench_tool" >/dev/null 2>&1; then
            echo "$BENCH bench: $bench_tool not installed ($bench_hint)" >&2
            exit 1
        fi
    done
    if [ ! -x "$SB_BIN" ]; then
        echo "$BENCH bench: $SB_BIN missing (make)" >&2
        exit 1
    fi
}

# bench_tmp: tmp = a fresh /tmp/sb-<BENCH>bench-XXXXXX, removed on exit
# (kept with BENCH_KEEP) after bench_cleanup has stopped every process; SB_BIN
# = a private copy in it: build/ is shared, and a rebuild during the runs
# must not swap the binary between runs (or fail a start with ETXTBSY).
# Exit 1 on failure; INT, TERM and HUP exit 1 (through the cleanup).
bench_tmp() {
    run_pid=""
    sb_pid=""
    worker_pid=""
    redis_pid=""
    nginx_pid=""
    tmp=$(mktemp -d "/tmp/sb-${BENCH}bench-XXXXXX") || exit 1
    trap bench_cleanup EXIT
    trap 'exit 1' INT TERM HUP
    cp "$SB_BIN" "$tmp/switchboard" || exit 1
    SB_BIN=$tmp/switchboard
}

# bench_stop_run: the processes of a run stopped by PID, the driver first
# (smsbench.py and emailbench.py stop their own daemons, Kannel, Dovecot and
# sinks by PID), Redis last.
bench_stop_run() {
    stop_pid "$run_pid" 300
    stop_pid "$sb_pid" 150
    stop_pid "$worker_pid" 50
    stop_pid "$redis_pid" 50
    run_pid=""
    sb_pid=""
    worker_pid=""
    redis_pid=""
}

bench_cleanup() {
    bench_stop_run
    stop_pid "$nginx_pid" 50
    nginx_pid=""
    if [ -n "$BENCH_KEEP" ]; then
        echo "$BENCH bench: kept $tmp"
    else
        rm -rf "$tmp"
    fi
}

# bench_redis DIR: start_redis DIR, or a message and 1.
bench_redis() {
    start_redis "$1" && return 0
    echo "$BENCH bench: redis-server did not start" >&2
    return 1
}

# bench_nginx DIR BODY: start_nginx DIR BODY, or a message and exit 1.
bench_nginx() {
    if ! start_nginx "$1" "$2"; then
        echo "$BENCH bench: nginx did not start" >&2
        exit 1
    fi
}

# bench_drop PATH...: removed, unless BENCH_KEEP is set.
bench_drop() {
    [ -n "$BENCH_KEEP" ] || rm -rf "$@"
}

bench_begin() {
    load1=$(cut -d' ' -f1-3 /proc/loadavg)
    start=$(date +%s)
    : > "$tmp/results"
    fail=0
}

# bench_end: load2, and elapsed (seconds since bench_begin).
bench_end() {
    load2=$(cut -d' ' -f1-3 /proc/loadavg)
    # shellcheck disable=SC2034 # read by the stage's report
    elapsed=$(($(date +%s) - start))
}

# bench_runs FN: FN 1, FN 2 .. FN RUNS, the run's processes stopped after
# each; fail=1 when one returns non-zero, and no more runs after a 2.
bench_runs() {
    bench_r=1
    while [ "$bench_r" -le "$RUNS" ]; do
        "$1" "$bench_r"
        bench_rc=$?
        bench_stop_run
        [ "$bench_rc" = 0 ] || fail=1
        [ "$bench_rc" = 2 ] && break
        bench_r=$((bench_r + 1))
    done
}

# bench_bg LIMIT OUT ERR CMD...: CMD under `timeout -k 10 LIMIT` in the
# background (run_pid: an interrupt stops it by PID), stdout to OUT, stderr
# to ERR; waits for it and returns its exit status.
bench_bg() {
    bench_limit=$1
    bench_out=$2
    bench_err=$3
    shift 3
    timeout -k 10 "$bench_limit" "$@" > "$bench_out" 2> "$bench_err" &
    run_pid=$!
    wait "$run_pid"
    bench_rc=$?
    run_pid=""
    return $bench_rc
}

# bench_log_top LOG WIDTH: the five commonest error and warning lines of a
# daemon log (cut to WIDTH), when it has any.
bench_log_top() {
    if grep -q '^<[0-4]>' "$1" 2>/dev/null; then
        grep '^<[0-4]>' "$1" | cut -c1-"$2" | sort | uniq -c | sort -rn |
            head -5 | sed 's/^/  daemon log: /'
    fi
}

# bench_driver DIR LIMIT CMD...: one run's driver (smsbench.py,
# emailbench.py) through bench_bg, its output in DIR/bench.out and
# DIR/bench.err; both shown indented (the last 20 lines of stderr), stdout
# appended to $tmp/results, the top of DIR/switchboard.log shown. The
# driver's exit status.
bench_driver() {
    bench_dir=$1
    bench_lim=$2
    shift 2
    bench_bg "$bench_lim" "$bench_dir/bench.out" "$bench_dir/bench.err" "$@"
    bench_st=$?
    sed 's/^/  /' "$bench_dir/bench.out"
    [ -s "$bench_dir/bench.err" ] && sed 's/^/  /' "$bench_dir/bench.err" |
        tail -20
    cat "$bench_dir/bench.out" >> "$tmp/results"
    bench_log_top "$bench_dir/switchboard.log" 160
    return $bench_st
}

# BENCH_AWK: what every stage's report (an awk program over "KIND k=v ..."
# lines) starts with:
#   median(a, k)     the median of a[1..k] (sorts it); -1 when k is 0
#   med(x, key, k)   the median of x[key, 1] .. x[key, k]
#   kv(line, key)    the value of " key=value" in line, or ""
#   LOG lines        errl, warnl: the daemon's error and warning lines
#   log_line(tail)   "daemon log: ...; load average ... (2 cores, shared)"
#                    with tail before the newline
#   verdict(what, short)  "BENCH bench: what:short" when short is not
#                    empty (a failure), then "BENCH bench: FAILED (see
#                    above)" and exit 1 when fail is set, else "... ok"
BENCH_AWK='
function median(a, k,    i, j, t) {
    if (k == 0) return -1
    for (i = 1; i <= k; i++)
        for (j = i + 1; j <= k; j++)
            if (a[j] < a[i]) { t = a[i]; a[i] = a[j]; a[j] = t }
    return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
}
function med(x, key, k,    i, a) {
    for (i = 1; i <= k; i++) a[i] = x[key, i]
    return median(a, k)
}
function kv(line, key,    re) {
    re = " " key "=[^ ]*"
    if (!match(line, re)) return ""
    return substr(line, RSTART + length(key) + 2,
                  RLENGTH - length(key) - 2)
}
function log_line(tail) {
    printf "daemon log: %d error, %d warning lines; load average %s " \
        "before, %s after (2 cores, shared)%s\n", errl, warnl, load1,
        load2, tail
}
function verdict(what, short) {
    if (short != "") {
        print bench " bench: " what ":" short
        fail = 1
    }
    if (fail) { print bench " bench: FAILED (see above)"; exit 1 }
    print bench " bench: ok"
}
/^LOG / { errl += kv($0, "errors"); warnl += kv($0, "warnings") }
'

# bench_report PROG [AWK-ARGS...]: awk BENCH_AWK PROG over $tmp/results with
# bench, fail, load1, load2 and AWK-ARGS (-v name=value) set; its status.
bench_report() {
    bench_prog=$1
    shift
    awk -v bench="$BENCH" -v fail="$fail" -v load1="$load1" \
        -v load2="$load2" "$@" "$BENCH_AWK$bench_prog" "$tmp/results"
}
