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

