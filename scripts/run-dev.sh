#!/bin/sh
# run-dev.sh - `make run`: a private Redis under ./var and the daemon on
# config/dev.conf, in the foreground. Ctrl-C stops the daemon (it drains and
# exits), then Redis.
set -eu
cd "$(dirname "$0")/.."
top=$(pwd)
mkdir -p var/redis var/outbox

if [ -S var/redis.sock ] && redis-cli -s var/redis.sock ping >/dev/null 2>&1; then
    echo "run: a Redis is already answering on var/redis.sock (another make run?)" >&2
    exit 1
fi
rm -f var/redis.sock
redis-server --port 0 --unixsocket "$top/var/redis.sock" --unixsocketperm 700 \
    --appendonly yes --appendfsync always --save "" \
    --dir "$top/var/redis" --logfile "$top/var/redis.log" --daemonize no &
redis_pid=$!
cleanup() {
    kill "$redis_pid" 2>/dev/null || true
    wait "$redis_pid" 2>/dev/null || true
}
trap cleanup EXIT INT TERM

i=0
until redis-cli -s var/redis.sock ping >/dev/null 2>&1; do
    i=$((i + 1))
    if [ "$i" -gt 100 ]; then
        echo "run: redis-server did not start, see var/redis.log" >&2
        exit 1
    fi
    sleep 0.1
done

cat <<MSG

  switchboard is starting on config/dev.conf

  Browser:      http://127.0.0.1:8080/      log in as operator / operator
                                            (or agent / agent)
  Health:       http://127.0.0.1:8080/healthz   /readyz   /metrics
  Outbox:       $top/var/outbox (e-mail and SMS in development)
  Redis:        redis-cli -s $top/var/redis.sock

  Log a contact and read it back:
    K=sb_dev_fD0YuivJrrvRAn4Mqz0lGc7esv4wqyGzSOnUxse3c0o
    curl -s -H "Authorization: Bearer \$K" -d '{"channel":"phone","phone":"8 916 123-45-67","name":"Ivan","text":"asked about order 42"}' http://127.0.0.1:8080/api/v1/contacts
    curl -s -H "Authorization: Bearer \$K" 'http://127.0.0.1:8080/api/v1/customers?phone=%2B79161234567'
    build/sbctl --token \$K timeline cu_1

  Send an order notification (rendered into var/outbox, then in the timeline):
    curl -s -H "Authorization: Bearer \$K" -d '{"event":"order.shipped","email":"ivan@example.com","locale":"ru","data":{"order":"A-42","carrier":"CDEK","tracking_url":"https://track.example/A-42"}}' http://127.0.0.1:8080/api/v1/notifications
    build/sbctl --token \$K notify nt_1
    redis-cli -s $top/var/redis.sock XADD sb:notify '*' event order.paid email ivan@example.com data '{"order":"A-42","amount":"1500.50","currency":"RUB"}'

  Ctrl-C stops everything.

MSG
build/switchboard -c config/dev.conf || true
