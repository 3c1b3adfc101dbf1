#!/bin/sh
# run-dev.sh - `make run`: a private Redis under ./var, the private Kannel
# of scripts/kannel-dev.sh under ./var/kannel (when Kannel is installed), the
# private Dovecot and SMTP sink of scripts/mail-dev.sh under ./var/mail (when
# Dovecot and aiosmtpd are installed) and the daemon on config/dev.conf, in
# the foreground. Ctrl-C stops the daemon (it drains and exits), then the
# mail servers, Kannel and Redis.
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
servers=
cleaned=no
cleanup() {
    [ "$cleaned" = no ] || return 0
    cleaned=yes
    for s in $servers; do
        sh "scripts/$s-dev.sh" stop || true
    done
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

# dev_server NAME: `scripts/NAME-dev.sh start` when its servers are
# installed; cleanup then stops them, even if start failed (the last
# started first). Sets up to yes, no (start failed) or missing ($why).
dev_server() {
    if ! why=$(sh "scripts/$1-dev.sh" installed); then
        up=missing
        return 0
    fi
    servers="$1 $servers"
    up=no
    if sh "scripts/$1-dev.sh" start; then
        up=yes
    fi
}

# env_get NAME KEY: KEY in var/NAME/env, which a started server writes.
env_get() {
    sed -n "s/^$2=//p" "var/$1/env"
}

# SMS: a private Kannel with a fake SMSC. Without it the daemon runs all
# the same; SMS sends then fail temporarily and are retried.
dev_server kannel
case $up in
    yes)
        sms_note="Kannel with a fake SMSC on 127.0.0.1, short number"
        sms_note="$sms_note $(env_get kannel NUMBER) (docs/sms.md)"
        ;;
    no)
        sms_note="the dev Kannel did not start (logs in var/kannel/): SMS"
        sms_note="$sms_note sends fail and are retried"
        ;;
    *)
        sms_note="Kannel is not installed ($why; sh scripts/deps.sh installs"
        sms_note="$sms_note it): SMS sends fail and are retried"
        ;;
esac

# E-mail: a private Dovecot (the support mailbox) and an SMTP sink. Without
# them the daemon runs all the same; it logs that the mailbox cannot be
# polled, and e-mail sends fail temporarily and are retried.
dev_server mail
mail_down="the mailbox is not polled, e-mail sends fail and are retried"
case $up in
    yes)
        mail_note="Dovecot imap://127.0.0.1:$(env_get mail IMAP_PORT)"
        mail_note="$mail_note ($(env_get mail MAIL_USER)), SMTP sink"
        mail_note="$mail_note 127.0.0.1:$(env_get mail SMTP_PORT)"
        mail_note="$mail_note (docs/email.md)"
        ;;
    no)
        mail_note="the dev mail servers did not start (logs in var/mail/):"
        mail_note="$mail_note $mail_down"
        ;;
    *)
        mail_note="not installed ($why; sh scripts/deps.sh installs it):"
        mail_note="$mail_note $mail_down"
        ;;
esac

cat <<MSG

  switchboard is starting on config/dev.conf

  Browser:      http://127.0.0.1:8080/      log in as operator / operator
                                            (or agent / agent)
  Health:       http://127.0.0.1:8080/healthz   /readyz   /metrics
  E-mail:       $mail_note
  SMS:          $sms_note
  Redis:        redis-cli -s $top/var/redis.sock

  Log a contact and read it back:
    K=sb_dev_fD0YuivJrrvRAn4Mqz0lGc7esv4wqyGzSOnUxse3c0o
    curl -s -H "Authorization: Bearer \$K" -d '{"channel":"phone","phone":"8 916 123-45-67","name":"Ivan","text":"asked about order 42"}' http://127.0.0.1:8080/api/v1/contacts
    curl -s -H "Authorization: Bearer \$K" 'http://127.0.0.1:8080/api/v1/customers?phone=%2B79161234567'
    build/sbctl --token \$K timeline cu_1

  Send an order notification (e-mailed to the dev SMTP sink, then in the
  timeline; scripts/mail-send --sent shows it):
    curl -s -H "Authorization: Bearer \$K" -d '{"event":"order.shipped","email":"ivan@example.com","locale":"ru","data":{"order":"A-42","carrier":"CDEK","tracking_url":"https://track.example/A-42"}}' http://127.0.0.1:8080/api/v1/notifications
    build/sbctl --token \$K notify nt_1
    redis-cli -s $top/var/redis.sock XADD sb:notify '*' event order.paid email ivan@example.com data '{"order":"A-42","amount":"1500.50","currency":"RUB"}'

  Write to the support mailbox as a customer (a KOI8-R mail from
  ivan@example.com), answer it in the agent console
  (http://127.0.0.1:8080/console/ as operator: presence online, accept the
  offer, reply), see the answer reach the SMTP sink with its In-Reply-To,
  and answer that as the customer: it lands in the same conversation:
    scripts/mail-send
    scripts/mail-send --sent
    scripts/mail-send --reply-to-last
    scripts/mail-send --help      (another sender, subject, text, charset)

  Text the gateway as a customer, answer in the agent console
  (http://127.0.0.1:8080/console/ as operator: presence online, accept the
  offer, reply) and see the answer arrive:
    scripts/sms-mo +79161234567 'Привет, где заказ?'
    scripts/sms-mo --log          (every SMS the gateway sent; -f follows)

  Send an order notification by SMS; its state becomes "delivered" when the
  fake SMSC's delivery report comes back (the POST answers its id nt_N):
    curl -s -H "Authorization: Bearer \$K" -d '{"event":"order.shipped","phone":"+79161234567","locale":"ru","channels":["sms"],"data":{"order":"A-42","carrier":"CDEK","tracking_url":"https://track.example/A-42"}}' http://127.0.0.1:8080/api/v1/notifications
    build/sbctl --token \$K notify nt_N
    scripts/sms-mo --log

  Ctrl-C stops everything.

MSG
build/switchboard -c config/dev.conf || true
