#!/bin/sh
# email.sh - the e-mail benchmark (a stage of `make bench`; issue 6).
#
# Three figures, each the median of EMAIL_RUNS (3) runs; every run gets a
# fresh Redis (lib.sh start_redis: unix socket, AOF appendfsync everysec),
# a fresh private Dovecot and fresh daemons (build/switchboard, copied
# first so a rebuild cannot swap it mid-run); tests/bench/email/
# emailbench.py does one run (see its header for exactly what is timed):
#
#   corpus  parse + ingest rate: tests/data/mail/*.eml replayed
#           EMAIL_COPIES (40) times (unique Message-IDs) into a Dovecot
#           mailbox before the daemon starts, then fetched, parsed and
#           ingested: messages/s from starting the daemon until every one
#           is in the contact log or the quarantine (the poller's last_uid);
#   imap    IMAP fetch: EMAIL_IMAP_N (5000) small realistic mails (utf-8,
#           koi8-r, windows-1251) in the maildir before the daemon starts
#           ([mailbox] interval 100ms, batch each of EMAIL_BATCHES, 50 and
#           200): messages/s until the contacts count reaches 5000;
#   smtp    SMTP send: EMAIL_SMTP_N (10000) order.shipped notifications
#           XADDed to sb:notify (channels ["email"]) and sent to Postfix's
#           smtp-sink, for every [email] smtp_threads x smtp_per_session of
#           EMAIL_SMTP_CONFIGS (2x100,2x1000,4x100,4x1000; smtp_tls none),
#           side by side in the same run with smtp-source sending the same
#           count of the same message (captured from the daemon) over one
#           connection (-d -s 1 -m N -F message), before and after the
#           daemon's configs (the faster of the two counts: one connection
#           without pipelining waits on every reply, and swings with the
#           machine's load); both timed until the sink's counter has them
#           all. The ratio switchboard (the best
#           config) / smtp-source is the figure (target >= 0.8).
#
# smtp-sink and smtp-source come from Debian's postfix package, fetched
# with `apt-get download postfix` and unpacked with `dpkg -x` in a temp
# dir; the two programs and their libpostfix libraries are kept in
# build/postfix/{sbin,lib} (EMAIL_POSTFIX_DIR): nothing is installed, no
# MTA configured, no daemon started. When that is impossible the SMTP part
# is skipped with a message (not a failure). A target that does not finish
# (EMAIL_TIMEOUT, 120 s, or EMAIL_STALL, 10 s, without progress) is
# reported with the daemon's last poll error and not tried again in later
# runs.
#
# Every process is stopped by PID; every wait is bounded (each run by a
# timeout too). Exit status 1 when something does not start, dies, or a
# target does not finish (not for a missed ratio target, which is printed:
# the machine is shared). The last line sums it up:
#   email: corpus N msg/s | imap batch 50 N msg/s, batch 200 N msg/s |
#   smtp TxS N msg/s | smtp-source N msg/s | ratio R (target 0.8: met)
# Environment: SB_BIN, EMAIL_RUNS, EMAIL_COPIES, EMAIL_CORPUS_BATCH (50),
# EMAIL_IMAP_N, EMAIL_BATCHES, EMAIL_SMTP_N, EMAIL_SMTP_WARMUP (1000),
# EMAIL_SMTP_CONFIGS, EMAIL_PHASES (corpus,imap,smtp), EMAIL_TIMEOUT,
# EMAIL_STALL, EMAIL_POSTFIX_DIR, BENCH_KEEP (keep the temp dir).
cd "$(dirname "$0")/../../.." || exit 1

SB_BIN=${SB_BIN:-build/switchboard}
RUNS=${EMAIL_RUNS:-3}
COPIES=${EMAIL_COPIES:-40}
CBATCH=${EMAIL_CORPUS_BATCH:-50}
IMAP_N=${EMAIL_IMAP_N:-5000}
BATCHES=${EMAIL_BATCHES:-50,200}
SMTP_N=${EMAIL_SMTP_N:-10000}
WARM=${EMAIL_SMTP_WARMUP:-1000}
CONFIGS=${EMAIL_SMTP_CONFIGS:-2x100,2x1000,4x100,4x1000}
PHASES=${EMAIL_PHASES:-corpus,imap,smtp}
TIMEOUT=${EMAIL_TIMEOUT:-120}
STALL=${EMAIL_STALL:-10}
PFX=${EMAIL_POSTFIX_DIR:-build/postfix}
PY=/usr/bin/python3
HERE=tests/bench/email
BENCH=email

# stop_pid, free_port, wait_http, start_redis, start_nginx, bench_*
. tests/bench/lib.sh
bench_need "make deps: dovecot-imapd" $PY redis-server redis-cli curl \
    openssl /usr/sbin/dovecot

# pfx_ok: the unpacked smtp-sink and smtp-source run (they print their
# usage when started without arguments).
pfx_ok() {
    for b in smtp-sink smtp-source; do
        [ -x "$PFX/sbin/$b" ] || return 1
        LD_LIBRARY_PATH="$PFX/lib" "$PFX/sbin/$b" 2>&1 |
            grep -q usage || return 1
    done
    return 0
}

# fetch_postfix: Debian's postfix package downloaded (apt-get download) and
# unpacked (dpkg -x) in a temp dir, not installed: no postinst, no
# /etc/postfix, no MTA. Only smtp-sink, smtp-source and the libpostfix
# libraries they need are kept, in $PFX/sbin and $PFX/lib (the package's
# *.d directories must not land under build/: the Makefile includes every
# build/**/*.d). 0 or 1.
fetch_postfix() {
    pfx_ok && return 0
    ptmp=$(mktemp -d /tmp/sb-postfix-XXXXXX) || return 1
    # apt-get download writes into the current directory; as root it warns
    # that _apt cannot write there (harmless).
    if ! (cd "$ptmp" && timeout -k 5 120 apt-get download postfix) \
        > "$ptmp/download.log" 2>&1
    then
        sed 's/^/  /' "$ptmp/download.log" | tail -5 >&2
        rm -rf "$ptmp"
        return 1
    fi
    deb=$(ls "$ptmp"/postfix_*.deb 2>/dev/null | head -1)
    ok=1
    if [ -n "$deb" ] && dpkg -x "$deb" "$ptmp/root" &&
        mkdir -p "$PFX/sbin" "$PFX/lib" &&
        cp "$ptmp/root/usr/sbin/smtp-sink" "$ptmp/root/usr/sbin/smtp-source" \
            "$PFX/sbin/" &&
        cp "$ptmp"/root/usr/lib/postfix/libpostfix-*.so "$PFX/lib/" && pfx_ok
    then
        ok=0
    fi
    rm -rf "$ptmp"
    return $ok
}

case ",$PHASES," in
*,smtp,*)
    if ! fetch_postfix; then
        echo "email bench: SMTP part SKIPPED: Postfix's smtp-sink and" \
            "smtp-source could not be unpacked into $PFX (apt-get download" \
            "postfix failed; apt-get update first?)"
        PHASES=$(echo ",$PHASES," | sed 's/,smtp,/,/; s/^,//; s/,$//')
    fi
    ;;
esac

bench_tmp
# Dovecot and smtp-sink run as nobody when we are root: they must reach
# their directories below this one.
chmod 711 "$tmp"
bench_begin
skip=""

# email_run RUN: a fresh Redis, emailbench.py (which stops its daemons,
# Dovecot and sinks by PID); 2 when Redis does not start.
email_run() {
    d="$tmp/run-$1"
    echo "email bench: run $1"
    bench_redis "$d/redis" || return 2
    bench_driver "$d" $((TIMEOUT * 4 + 300)) $PY "$HERE/emailbench.py" \
        --sb "$SB_BIN" --redis "$d/redis/redis.sock" \
        --redis-pid "$redis_pid" --dir "$d" --postfix "$PFX" --run "$1" \
        --copies "$COPIES" --corpus-batch "$CBATCH" --imap-n "$IMAP_N" \
        --batches "$BATCHES" --smtp-n "$SMTP_N" --smtp-warmup "$WARM" \
        --smtp-configs "$CONFIGS" --order source,switchboard,source \
        --phases "$PHASES" --timeout "$TIMEOUT" --stall "$STALL" \
        --skip "$skip"
    erc=$?
    # an inbound target that did not finish is not tried again
    skip=$(sed -n 's/^RESULT .* target=corpus .* secs=-1 .*/corpus/p;
        s/^RESULT .* target=imap batch=\([0-9]*\) .* secs=-1 .*/imap\1/p' \
        "$tmp/results" | sort -u | tr '\n' ',')
    bench_stop_run
    bench_drop "$d/dovecot" "$d/dump"
    return $erc
}

echo "email bench: corpus x$COPIES, $IMAP_N IMAP mails (batch $BATCHES)," \
    "$SMTP_N SMTP notifications ($CONFIGS) vs smtp-source, $RUNS runs" \
    "(phases $PHASES)"
bench_runs email_run
bench_end

bench_report '
function rate(t) { return cnt[t] ? sprintf("%.0f msg/s", m[t]) : "-" }
# add(LINE, T, TG): one finished RESULT line of target T (kind TG).
function add(line, t, tg,    i, rn, f) {
    i = ++cnt[t]
    rt[t, i] = kv(line, "rate") + 0; sc[t, i] = kv(line, "secs") + 0
    rn = kv(line, "run"); runs[rn] = 1
    if (tg == "smtp" && rt[t, i] > rbest[rn]) rbest[rn] = rt[t, i]
    if (tg == "source") rsrc[rn] = rt[t, i]
    # CPU: % of one core over the timed part, and microseconds per message
    # (server = the daemon, or smtp-source; peer = Dovecot or smtp-sink)
    c1[t, i] = (tg == "source" ? kv(line, "cpu_source") : \
        kv(line, "cpu_sb")) + 0
    c2[t, i] = kv(line, "cpu_redis") + 0
    c3[t, i] = (tg == "smtp" || tg == "source") ? kv(line, "cpu_sink") + 0 \
        : kv(line, "cpu_dovecot") + 0
    f = sc[t, i] * 10000 / (kv(line, "n") + 0)
    u1[t, i] = c1[t, i] * f; u2[t, i] = c2[t, i] * f; u3[t, i] = c3[t, i] * f
    runs_line[t] = runs_line[t] " " kv(line, "rate")
    if (tg == "corpus")
        extra[t] = sprintf("contacts %s, quarantined %s, other %s of %s",
            kv(line, "contacts"), kv(line, "quarantined"),
            kv(line, "other"), kv(line, "n"))
    if (tg == "smtp")
        extra[t] = "sent recorded after " kv(line, "sent_secs") " s"
    if (tg == "source")
        extra[t] = "the faster of its two runs in each run"
}
/^RESULT / {
    tg = kv($0, "target")
    if (tg == "imap") t = "imap " kv($0, "batch")
    else if (tg == "smtp") t = "smtp " kv($0, "threads") "x" \
        kv($0, "per_session")
    else t = tg
    if (!(t in seen)) { seen[t] = 1; order[++nt] = t }
    if (kv($0, "secs") + 0 < 0) { short = short " " t "(run " \
        kv($0, "run") ")"; next }
    if (tg == "source") {
        # smtp-source, one connection without pipelining, waits on every
        # reply: it is measured before and after the daemon, and the
        # faster run counts (the ratio errs against switchboard)
        rn = kv($0, "run")
        if (kv($0, "rate") + 0 > srate[rn]) {
            srate[rn] = kv($0, "rate") + 0; sline[rn] = $0
        }
        next
    }
    add($0, t, tg)
}
/^INFO .*smtp_message_bytes=/ { msgsize = kv($0, "smtp_message_bytes") }
/^INFO .*corpus_files=/ { corpus = kv($0, "messages") " messages (" \
    kv($0, "corpus_files") " files x " kv($0, "copies") ")" }
END {
    for (rn = 1; rn in sline; rn++)
        add(sline[rn], "source", "source")
    printf "\n%-13s %9s %7s %14s %16s  %s\n", "target", "msg/s", "secs",
        "cpu% srv/rds/pr", "us/msg srv/rds/pr", "runs (msg/s)"
    for (o = 1; o <= nt; o++) {
        t = order[o]
        if (!cnt[t]) { printf "%-13s %9s\n", t, "DID NOT FINISH"; continue }
        nr = cnt[t]
        m[t] = med(rt, t, nr)
        printf "%-13s %9.0f %7.2f %14s %16s %s%s\n", t, m[t], med(sc, t, nr),
            sprintf("%d/%d/%d", med(c1, t, nr), med(c2, t, nr), med(c3, t, nr)),
            sprintf("%d/%d/%d", med(u1, t, nr), med(u2, t, nr), med(u3, t, nr)),
            runs_line[t],
            (t in extra ? "  (" extra[t] ")" : "")
        if (t ~ /^smtp / && m[t] > best) { best = m[t]; bestt = t }
    }
    if (corpus != "")
        print "corpus: " corpus " fetched over IMAP, parsed and ingested, " \
            "from the daemon start until all were in the contact log or " \
            "the quarantine"
    if (index(phases, "imap"))
        print "imap B: small mails (utf-8/koi8-r/windows-1251) in the " \
            "maildir before the start, [mailbox] batch B, until all were " \
            "contacts"
    if (bestt != "")
        print "smtp TxS: " smtp_n " notifications XADDed -> rendered -> " \
            "smtp_threads T, smtp_per_session S -> smtp-sink; source: " \
            "smtp-source -d -s 1 -m " smtp_n " -F (the same " msgsize \
            "-byte message, one connection)"
    print "cpu: srv = the daemon (smtp-source in its row), rds = Redis, " \
        "pr = the peer (Dovecot with its imap processes, or smtp-sink)"
    log_line(sprintf("; %d s", elapsed))
    split(batches, bs, ",")
    il = ""
    for (k = 1; k in bs; k++)
        il = il (k > 1 ? ", " : "") "batch " bs[k] " " rate("imap " bs[k])
    src = m["source"]
    if (index(phases, "smtp"))
        sl = sprintf("smtp %s %s | smtp-source %s | ratio %s (target 0.8: " \
            "%s)", (bestt == "" ? "-" : substr(bestt, 6)),
            (bestt == "" ? "-" : sprintf("%.0f msg/s", best)),
            rate("source"),
            (best > 0 && src > 0 ? sprintf("%.2f", best / src) : "-"),
            (best > 0 && src > 0 && best / src >= 0.8 ? "met" : "NOT met"))
    else
        sl = "smtp not run"
    pr = ""
    for (rn = 1; rn in runs; rn++)
        if (rbest[rn] > 0 && rsrc[rn] > 0)
            pr = pr sprintf(" %.2f", rbest[rn] / rsrc[rn])
    if (pr != "")
        print "smtp ratio per run (best config / smtp-source, same run):" pr
    printf "email: corpus %s | imap %s | %s\n", rate("corpus"), il, sl
    verdict("did not finish", short)
}' -v elapsed="$elapsed" -v phases="$PHASES" -v batches="$BATCHES" \
    -v configs="$CONFIGS" -v smtp_n="$SMTP_N"
