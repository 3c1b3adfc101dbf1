#!/usr/bin/python3
"""smsbench.py - one run of the SMS benchmark (tests/bench/sms/sms.sh).

    smsbench.py --sb BIN --redis SOCK --dir DIR --run R [--n 20000]
        [--warmup 1000] [--mo 5000] [--conns 16] [--inflight 32]
        [--order switchboard,kannel] [--dlr-url URL] [--timeout 300]

Against a Redis already running on SOCK (sms.sh starts it with lib.sh),
this starts a private Kannel (tests/integration/kannel.py: bearerbox,
smsbox, a listening fakesmsc on the MT link, a fakesmsc MO injector) and
the daemon BIN on a free loopback port with [channels] sms = sms and
[sms-provider kannel] pointing at that Kannel (Kannel's sms-service posts
MO to the daemon's /webhooks/sms/kannel), then measures, against the same
Kannel:

  warm-up     WARMUP order.shipped SMS notifications (XADD sb:notify) to
              WARMUP numbers, creating the customers the measured ones are
              addressed to, and WARMUP sendsms calls straight to Kannel;
              both drained before anything is timed;
  switchboard N notifications XADDed to sb:notify (pipelined, chunks of
              1,000; phone round-robin over the warm-up numbers, channel
              sms, locale en, the shipped order.shipped template: one
              GSM-7 part), timed from the first XADD until the listening
              fakesmsc has received all N ("Got message" lines in its log,
              counted incrementally); also until the daemon has recorded
              all N "delivered" reports (sb:stats:ntf:report:delivered);
  kannel      N sendsms GETs of the same texts straight to Kannel by CONNS
              threads over persistent HTTP/1.1 connections (Python
              http.client), with the same dlr-mask (31) and a dlr-url on a
              local nginx when --dlr-url is given (so Kannel does the same
              work per message), timed from the first request until
              fakesmsc has received all N;
  inbound     MO MO lines (unique texts, 1,000 senders) written to a
              fakesmsc on the MO link at once; timed from the first line
              until the daemon has ingested all MO as sms contacts
              (sb:stats:contacts:sms, which only the contact ingest bumps).

The two outbound targets run one after the other in --order. Output lines:

  RESULT run=R target=switchboard|kannel|inbound n=N done=D secs=S rate=R
        [delivered_secs=S delivered_rate=R] [cpu_sb=% cpu_kannel=%]
  LOG run=R errors=E warnings=W

Every wait is bounded by --timeout; the daemon and Kannel are stopped by
PID at the end, failed or not. Exit status 1 when something did not start
or a target did not finish.
"""

import argparse
import http.client
import os
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import benchlib  # noqa: E402
from benchlib import CARRIER, harness, kannel, warn  # noqa: E402

SHORT = "4242"
SENDER = "+79990000000"
SECRET = "sms-bench-hook-secret"
MT_TOKEN = b": Got message "


def text_of(i):
    """What the order.shipped sms.en template renders for message i."""
    return "Order SO-%d has shipped with %s. Track it: %s" % (
        i, CARRIER, "https://t.example/%d" % i)


def phone_of(i, warm):
    return "+7916%07d" % (i % warm)


class MtCounter:
    """Counts "Got message" lines in the listening fakesmsc's log, reading
    only what was appended since the last call."""

    def __init__(self, path):
        self.log = benchlib.Appended(path)
        self.n = 0
        self.carry = b""

    def count(self):
        chunk = self.log.read()
        if chunk:
            data = self.carry + chunk
            self.n += data.count(MT_TOKEN)
            # Keep a tail that may hold the start of a token split between
            # two reads (shorter than the token: never counted twice).
            self.carry = data[-(len(MT_TOKEN) - 1):]
        return self.n


def wait_delivered(r, lo, hi, limit):
    """Until notifications nt_lo .. nt_hi are all in state delivered
    (re-reading only those that are not yet); returns (the time that
    happened or None, how many are delivered)."""
    pending = list(range(lo, hi + 1))
    total = len(pending)
    deadline = time.monotonic() + limit
    while True:
        left = []
        for i in range(0, len(pending), 5000):
            chunk = pending[i:i + 5000]
            states = r.pipeline([("HGET", "sb:ntf:nt_%d" % j, "state")
                                 for j in chunk])
            left += [j for j, st in zip(chunk, states) if st != b"delivered"]
        pending = left
        if not pending:
            return time.monotonic(), total
        if time.monotonic() >= deadline:
            return None, total - len(pending)
        time.sleep(0.2)


def daemon_config(port, sock, k, a):
    return benchlib.daemon_config(
        port, sock, a.batch, a.notify_inflight,
        notify="report_deadline = 10m\n") + """
[channels]
sms = sms

[sms]
providers = kannel

[sms-provider kannel]
type = kannel
url = {url}
username = {user}
password = {pw}
from = {sender}
numbers = {sender}, {short}
secret = {secret}
allow = 127.0.0.1
public_url = http://127.0.0.1:{port}
max_inflight = {inflight}
timeout = 10s
""".format(port=port, url=k.sendsms_url, user=k.user, pw=k.password,
           sender=SENDER, short=SHORT, secret=SECRET, inflight=a.inflight)


def xadd_notifications(r, first, count, warm):
    """count order.shipped SMS notifications, numbered from first."""
    for cmds in benchlib.chunks(first, count, lambda j: benchlib.shipped(
            j, "phone", phone_of(j, warm), "sms")):
        r.pipeline(cmds)


def sendsms_direct(k, first, count, warm, conns, dlr_url, limit):
    """count sendsms GETs over conns persistent connections; returns
    {status: count} ("err" for a connection that failed three times)."""
    codes = {}
    lock = threading.Lock()
    nxt = [first]
    end = first + count
    port = urllib.parse.urlsplit(k.sendsms_url).port
    deadline = time.monotonic() + limit

    def take():
        with lock:
            if nxt[0] >= end:
                return None
            i = nxt[0]
            nxt[0] += 1
            return i

    def worker():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            while time.monotonic() < deadline:
                i = take()
                if i is None:
                    return
                q = {"username": k.user, "password": k.password,
                     "from": SENDER, "to": phone_of(i, warm),
                     "text": text_of(i), "charset": "UTF-8", "coding": "0"}
                if dlr_url:
                    q["dlr-mask"] = "31"
                    q["dlr-url"] = dlr_url + "?a=%d&d=%%d&A=%%A&F=%%F" % i
                path = "/cgi-bin/sendsms?" + urllib.parse.urlencode(q)
                code = "err"
                for _ in range(3):
                    try:
                        conn.request("GET", path)
                        resp = conn.getresponse()
                        resp.read()
                        code = resp.status
                        if resp.will_close:
                            conn.close()
                        break
                    except (http.client.HTTPException, OSError):
                        conn.close()
                with lock:
                    codes[code] = codes.get(code, 0) + 1
        finally:
            conn.close()

    ts = [threading.Thread(target=worker, daemon=True) for _ in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(max(1.0, deadline - time.monotonic() + 5))
    return codes


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sb", required=True)
    ap.add_argument("--redis", required=True)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--run", default="1")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--warmup", type=int, default=1000)
    ap.add_argument("--mo", type=int, default=5000)
    ap.add_argument("--conns", type=int, default=16)
    ap.add_argument("--inflight", type=int, default=32)
    ap.add_argument("--batch", type=int, default=200)
    ap.add_argument("--notify-inflight", type=int, default=5000)
    ap.add_argument("--order", default="switchboard,kannel")
    ap.add_argument("--dlr-url", default="")
    ap.add_argument("--timeout", type=float, default=300.0)
    a = ap.parse_args()
    a.sb = os.path.abspath(a.sb)
    a.redis = os.path.abspath(a.redis)
    warm = max(1, a.warmup)
    os.makedirs(a.dir, exist_ok=True)
    port = harness.free_port()
    mo_url = "http://127.0.0.1:%d/webhooks/sms/kannel?secret=%s" % (
        port, SECRET)
    k = None
    sb = None
    r = None
    fail = 0
    log = os.path.join(a.dir, "switchboard.log")
    benchlib.setup("sms")
    try:
        k = kannel.Kannel(a.dir, mo_url, log_level=2, limit=30.0)
        sb = benchlib.Daemon(a.sb, a.dir, "switchboard",
                             daemon_config(port, a.redis, k, a), port)
        sb.start()
        if not sb.wait_ready(30.0, 0.1):
            warn("the daemon did not become ready")
            with open(log, errors="replace") as f:
                sys.stderr.write("".join(f.readlines()[-20:]))
            return 1
        r = benchlib.Resp(a.redis)
        mt = MtCounter(k.mt_log)
        pids = {"sb": [sb.proc.pid],
                "kannel": [p.pid for n, p in k.procs.items()
                           if n in ("bearerbox", "smsbox")]}

        # Warm-up: customers, connections, scripts; both paths.
        base = mt.count()
        seq0 = r.int("sb:seq:ntf")
        xadd_notifications(r, 0, warm, warm)
        codes = sendsms_direct(k, 0, warm, warm, a.conns, a.dlr_url,
                               a.timeout)
        ok = benchlib.wait_for(lambda: mt.count() - base >= 2 * warm,
                               a.timeout)
        okd, nd = wait_delivered(r, seq0 + 1, seq0 + warm, a.timeout)
        if ok is None or okd is None:
            warn("warm-up did not finish (fakesmsc %d of %d, delivered %d "
                 "of %d, sendsms %s)" % (mt.count() - base, 2 * warm, nd,
                                         warm, codes))
            return 1
        time.sleep(1.0)  # the last DLR callbacks settle

        first = warm
        for target in a.order.split(","):
            base = mt.count()
            cpu = benchlib.Cpu(pids)
            t0 = time.monotonic()
            extra = ""
            if target == "switchboard":
                d0 = r.int("sb:stats:ntf:report:delivered")
                seq0 = r.int("sb:seq:ntf")
                xadd_notifications(r, first, a.n, warm)
                t1 = benchlib.wait_for(lambda: mt.count() - base >= a.n,
                                       a.timeout)
                cpuf = cpu.fields()
                td, nd = wait_delivered(r, seq0 + 1, seq0 + a.n, a.timeout)
                # stats:ntf:report:delivered against the notifications
                # actually delivered (a report applied "early", before the
                # send result was recorded, may not be counted).
                counted = r.int("sb:stats:ntf:report:delivered") - d0
                extra = " delivered=%d report_counter=%d" % (nd, counted)
                if td is not None:
                    extra += " delivered_secs=%.2f delivered_rate=%.0f" % (
                        td - t0, a.n / (td - t0))
                else:
                    extra += " delivered_secs=-1 delivered_rate=0"
                    fail = 1
            elif target == "kannel":
                codes = sendsms_direct(k, first, a.n, warm, a.conns,
                                       a.dlr_url, a.timeout)
                t1 = benchlib.wait_for(lambda: mt.count() - base >= a.n,
                                       a.timeout)
                cpuf = cpu.fields()
                extra = " codes=%s" % ",".join(
                    "%s:%d" % kv for kv in sorted(codes.items(),
                                                  key=str))
            else:
                raise SystemExit("unknown target %r" % target)
            fail |= benchlib.result(a.run, "target=" + target, a.n,
                                    mt.count() - base, t0, t1, cpuf + extra)
            first += a.n
            time.sleep(1.0)

        # Inbound: MO through fakesmsc -> Kannel -> the daemon's webhook.
        if a.mo > 0:
            c0 = r.int("sb:stats:contacts:sms")
            lines = [k.mo_line(phone_of(i, 1000), SHORT,
                               "Question %d about my order" % i)
                     for i in range(a.mo)]
            cpu = benchlib.Cpu(pids)
            t0 = time.monotonic()
            k.inject_mo_bulk(lines)
            t1 = benchlib.wait_for(lambda: r.int("sb:stats:contacts:sms") -
                                   c0 >= a.mo, a.timeout, 0.05)
            cpuf = cpu.fields()
            k.mo_bulk_wait(10.0)
            fail |= benchlib.result(a.run, "target=inbound", a.mo,
                                    r.int("sb:stats:contacts:sms") - c0, t0,
                                    t1, cpuf)

        if not sb.alive():
            warn("the daemon died (exit %s)" % sb.proc.returncode)
            fail = 1
        return fail
    finally:
        if r is not None:
            r.close()
        if sb is not None:
            sb.stop()
        if k is not None:
            k.stop()
        benchlib.log_result(a.run, log)


if __name__ == "__main__":
    sys.exit(main())
