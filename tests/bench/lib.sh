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
