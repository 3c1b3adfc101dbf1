#!/bin/sh
# mail-dev.sh - the private mailbox and relay of `make run`: start, stop,
# status.
#
#   scripts/mail-dev.sh start | stop | status | installed
#
# Runs a Dovecot (Debian package dovecot-imapd) serving plain IMAP on
# 127.0.0.1:10143 and an SMTP sink (tests/integration/smtpsink.py, with
# python3-aiosmtpd; both installed by scripts/deps.sh) on 127.0.0.1:10025,
# under ./var/mail. The ports clash neither with the daemon (8080), the dev
# Redis (a unix socket) nor the dev Kannel (13000-13013). Dovecot's config
# is config/dovecot-dev.conf.in filled with the user, the password and the
# port of [mailbox support] in config/dev.conf ($SB_DEV_CONF to use another
# file); the sink listens on [email] smtp_port. So the daemon, Dovecot and
# the sink always agree.
#
#   var/mail/maildir/<user>/  the support mailbox (Maildir: new/, cur/,
#                        tmp/); `scripts/mail-send` delivers into new/ as an
#                        MTA would, Dovecot gives it a UID when the daemon
#                        next polls
#   var/mail/sent/       every message the sink accepted: NNNNNNNN.eml and
#                        one JSON line each in index.jsonl (envelope);
#                        `scripts/mail-send --sent` prints them decoded
#   var/mail/dovecot/    dovecot.conf, users, dovecot.log, run/, lib/
#   var/mail/*.pid       one per process; stop signals exactly those PIDs
#   var/mail/env         ports, user, maildir, owner (for mail-send)
#
# Run as root, every Dovecot process runs as "nobody" ($SB_MAIL_RUN_USER):
# Dovecot refuses mail access as root. var/mail/dovecot and the maildir
# then belong to that user, and the directories above them must be
# searchable by it. The sink runs as the caller.
#
# `installed` exits 0 when Dovecot and aiosmtpd are there, else prints
# what is missing and exits 1. Both parts are started and stopped together.
set -eu
cd "$(dirname "$0")/.."
# shellcheck source=scripts/devlib.sh
. scripts/devlib.sh
dev_init mail-dev var/mail
ddir=$dir/dovecot
mdir=$dir/maildir
sent=$dir/sent
template=config/dovecot-dev.conf.in

DOVECOT=${SB_DOVECOT:-/usr/sbin/dovecot}
DOVECONF=${SB_DOVECONF:-/usr/bin/doveconf}
PYTHON=/usr/bin/python3
SINK=$top/tests/integration/smtpsink.py
MAILBOX=support
PARTS="dovecot smtpsink"

is_installed() {
    if [ ! -x "$DOVECOT" ]; then
        echo "no $DOVECOT (Debian package dovecot-imapd)"
        return 1
    fi
    if [ ! -x "$PYTHON" ] || ! "$PYTHON" -c 'import aiosmtpd' 2>/dev/null
    then
        echo "no aiosmtpd for $PYTHON (Debian package python3-aiosmtpd)"
        return 1
    fi
    if [ "$(id -u)" = 0 ] && ! command -v setpriv >/dev/null 2>&1; then
        echo "no setpriv (Debian package util-linux)"
        return 1
    fi
    return 0
}

# The values Dovecot and the sink share with the daemon's [mailbox
# support] and [email]; the account the Dovecot processes run as.
load_conf() {
    [ -r "$conf" ] || die "no $conf"
    sec="mailbox $MAILBOX"
    url=$(conf_get "$sec" url)
    [ -n "$url" ] || die "$conf has no [$sec] with a url"
    IMAP_PORT=$(loopback_port imap "$url")
    [ -n "$IMAP_PORT" ] ||
        die "[$sec] url must be imap://127.0.0.1:PORT/INBOX for the dev" \
            "Dovecot (it has no TLS)"
    MAIL_USER=$(conf_get "$sec" username)
    MAIL_PASSWORD=$(secret_value "$(conf_get "$sec" password)")
    ADDRESS=$(conf_get "$sec" address)
    [ -n "$ADDRESS" ] || ADDRESS=$MAIL_USER
    if [ -z "$MAIL_USER" ] || [ -z "$MAIL_PASSWORD" ]; then
        die "[$sec] needs username and password"
    fi
    # Each goes unescaped into a passwd-file line and a path.
    case $MAIL_USER in
        *[!A-Za-z0-9._@+-]*|.*)
            die "[$sec] username may only hold A-Z a-z 0-9 . _ @ + - for" \
                "the dev Dovecot" ;;
    esac
    case $MAIL_PASSWORD in
        *[!A-Za-z0-9._~+-]*)
            die "[$sec] password may only hold A-Z a-z 0-9 . _ ~ + - for" \
                "the dev Dovecot" ;;
    esac
    host=$(conf_get email smtp_host)
    case $host in
        127.0.0.1|localhost) ;;
        *) die "[email] smtp_host must be 127.0.0.1 for the dev SMTP sink" ;;
    esac
    SMTP_PORT=$(conf_get email smtp_port)
    [ -n "$SMTP_PORT" ] || SMTP_PORT=587
    case $SMTP_PORT in
        ''|*[!0-9]*) die "[email] smtp_port $SMTP_PORT: not a number" ;;
    esac
    [ "$(conf_get email smtp_tls)" = none ] ||
        die "[email] smtp_tls must be none: the dev SMTP sink has no TLS"
    [ "$IMAP_PORT" != "$SMTP_PORT" ] ||
        die "[mailbox $MAILBOX] and [email] name the same port $IMAP_PORT"
    if [ "$(id -u)" = 0 ]; then
        RUN_USER=${SB_MAIL_RUN_USER:-nobody}
    else
        RUN_USER=$(id -un)
    fi
    RUN_UID=$(id -u "$RUN_USER") || die "no user $RUN_USER"
    RUN_GID=$(id -g "$RUN_USER")
    RUN_GROUP=$(id -gn "$RUN_USER")
    [ "$RUN_UID" != 0 ] ||
        die "Dovecot refuses mail access as root: set SB_MAIL_RUN_USER"
    # Dovecot's sockets live in run/: a unix socket path has 107 bytes.
    [ "${#ddir}" -le 70 ] ||
        die "$ddir is too long a path for Dovecot's sockets (70 bytes" \
            "at most): check the repository out nearer to /"
}

# part_is NAME PID COMM: dovecot is the Dovecot master, smtpsink python3
# running smtpsink.py.
part_is() {
    case $1 in
        dovecot) [ "$3" = dovecot ] ;;
        smtpsink)
            [ "$3" = python3 ] || return 1
            tr '\0' ' ' <"/proc/$2/cmdline" 2>/dev/null |
                grep -q 'smtpsink\.py'
            ;;
        *) return 1 ;;
    esac
}

# imap_login: the dev user logs in (and the mailbox opens) over IMAP.
imap_login() {
    curl -sS --max-time 3 -u "$MAIL_USER:$MAIL_PASSWORD" \
        --url "imap://127.0.0.1:$IMAP_PORT/INBOX" -X NOOP >/dev/null 2>&1
}

dovecot_ready() {
    alive dovecot && port_busy "$IMAP_PORT" && imap_login
}

sink_ready() {
    alive smtpsink && [ -s "$sent/ready" ] && port_busy "$SMTP_PORT"
}

ready() {
    dovecot_ready && sink_ready
}

# as_run_user CMD...: CMD as the account Dovecot runs as.
as_run_user() {
    if [ "$(id -u)" = 0 ]; then
        setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups -- "$@"
    else
        "$@"
    fi
}

render() {
    sed -e "s|@DIR@|$(esc "$ddir")|g" \
        -e "s|@MAILDIR@|$(esc "$mdir")|g" \
        -e "s|@USER@|$(esc "$RUN_USER")|g" \
        -e "s|@GROUP@|$(esc "$RUN_GROUP")|g" \
        -e "s|@UID@|$RUN_UID|g" \
        -e "s|@GID@|$RUN_GID|g" \
        -e "s|@IMAP_PORT@|$IMAP_PORT|g" \
        "$template"
}

# own PATH...: give PATH to the account Dovecot runs as.
own() {
    if [ "$(id -u)" = 0 ]; then
        chown "$RUN_UID:$RUN_GID" "$@"
    fi
}

start_dovecot() {
    : >"$ddir/dovecot.out"
    own "$ddir/dovecot.out"
    if ! as_run_user "$DOVECONF" -c "$ddir/dovecot.conf" -n \
        >/dev/null 2>"$ddir/doveconf.err"; then
        cat "$ddir/doveconf.err" >&2
        die "Dovecot does not accept $ddir/dovecot.conf"
    fi
    # -F: the master stays in the foreground, so $! is its PID (setsid and
    # setpriv exec); the SIGTERM of stop takes its children and every IMAP
    # connection down with it.
    if [ "$(id -u)" = 0 ]; then
        set -- setpriv --reuid="$RUN_UID" --regid="$RUN_GID" --clear-groups --
    else
        set --
    fi
    spawn dovecot "$ddir/dovecot.out" null "$@" \
        "$DOVECOT" -F -c "$ddir/dovecot.conf"
}

start_sink() {
    mkdir -p "$sent"
    rm -f "$sent/ready"
    spawn smtpsink "$dir/smtpsink.log" null "$PYTHON" "$SINK" \
        --port "$SMTP_PORT" --dir "$sent" --hostname sink.dev.test
}

cmd_start() {
    reason=$(is_installed) ||
        die "not installed: $reason (sh scripts/deps.sh installs" \
            "dovecot-imapd and python3-aiosmtpd)"
    load_conf
    mkdir -p "$dir"
    chmod 755 "$dir"
    (umask 077 && mkdir -p "$ddir")
    (umask 077 && render >"$ddir/dovecot.conf.new")
    (umask 077 && printf '%s:{PLAIN}%s::::::\n' "$MAIL_USER" \
        "$MAIL_PASSWORD" >"$ddir/users.new")
    # both up with the same config: nothing to do
    if already_up ready "mail servers" "$ddir/dovecot.conf" "$ddir/users"
    then
        return 0
    fi
    if p=$(first_busy "$IMAP_PORT" "$SMTP_PORT"); then
        drop_new "$ddir/dovecot.conf" "$ddir/users"
        die "127.0.0.1:$p is taken by another program; the dev mail" \
            "servers need $IMAP_PORT (IMAP) and $SMTP_PORT (SMTP)"
    fi
    keep_new "$ddir/dovecot.conf" "$ddir/users"
    for d in "$ddir/run" "$ddir/lib" "$ddir/home" "$mdir/$MAIL_USER/cur" \
        "$mdir/$MAIL_USER/new" "$mdir/$MAIL_USER/tmp"; do
        (umask 077 && mkdir -p "$d")
    done
    chmod 755 "$ddir/run" # Dovecot wants its base_dir world-readable
    if [ "$(id -u)" = 0 ]; then
        chown -R "$RUN_UID:$RUN_GID" "$ddir" "$mdir"
        as_run_user test -w "$ddir" -a -w "$mdir/$MAIL_USER/new" ||
            die "$RUN_USER cannot write under $dir: a directory above it" \
                "is not searchable by others (chmod o+x it)"
    fi
    {
        echo "IMAP_PORT=$IMAP_PORT"
        echo "SMTP_PORT=$SMTP_PORT"
        echo "MAIL_USER=$MAIL_USER"
        echo "ADDRESS=$ADDRESS"
        echo "MAILDIR=$mdir/$MAIL_USER"
        echo "RUN_UID=$RUN_UID"
        echo "RUN_GID=$RUN_GID"
        echo "SENT=$sent"
    } >"$dir/env"

    start_dovecot
    start_sink
    if ! wait_up ready starting "logs: var/mail/smtpsink.log," \
        "var/mail/dovecot/dovecot.log"; then
        tail -n 10 "$ddir/dovecot.out" "$ddir/dovecot.log" \
            "$dir/smtpsink.log" >&2 2>/dev/null || true
        stop_all
        rm -f "$dir/env"
        die "the mail servers did not come up in 20 s"
    fi
    echo "mail-dev: running; IMAP imap://127.0.0.1:$IMAP_PORT/INBOX" \
         "(user $MAIL_USER), SMTP sink 127.0.0.1:$SMTP_PORT into var/mail/sent"
}

cmd_stop() {
    dev_stop "$dir/env" "$sent/ready"
}

count_files() {
    find "$1" -maxdepth 1 -type f 2>/dev/null | wc -l | tr -d ' '
}

cmd_status() {
    rc=0
    parts_status || rc=1
    for u in "$mdir"/*/; do
        [ -d "$u/new" ] || continue
        echo "mailbox $(basename "$u"): $(count_files "$u/new") new," \
             "$(count_files "$u/cur") taken in"
    done
    n=0
    [ -r "$sent/index.jsonl" ] && n=$(wc -l <"$sent/index.jsonl" | tr -d ' ')
    echo "sink: $n message(s) in var/mail/sent (scripts/mail-send --sent)"
    return "$rc"
}

dev_main "$@"
