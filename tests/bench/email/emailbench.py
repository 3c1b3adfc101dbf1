#!/usr/bin/python3
"""emailbench.py - one run of the e-mail benchmark (email.sh beside it).

    emailbench.py --sb BIN --redis SOCK --redis-pid PID --dir DIR --run R
        --postfix PFX [--copies 40] [--corpus-batch 50] [--imap-n 5000]
        [--batches 50,200] [--smtp-n 10000] [--smtp-warmup 1000]
        [--smtp-configs 2x100,2x1000,4x100,4x1000] [--notify-batch 200]
        [--notify-inflight 5000] [--order switchboard,source]
        [--phases corpus,imap,smtp] [--skip corpus,imap50]
        [--timeout 120] [--stall 10]

Against a Redis already running on SOCK (email.sh starts it with lib.sh;
this script FLUSHALLs it before every daemon start), with a private
Dovecot (tests/integration/dovecot.py: plain IMAP on a free loopback
port, one user per phase) and Postfix's smtp-sink / smtp-source in
PFX/sbin with their libraries in PFX/lib (email.sh puts them there), this
measures:

  corpus  parse + ingest: every tests/data/mail/*.eml, COPIES times over
          (each copy's Message-ID made unique: "bench.R.K." put in front
          of it; the two files without one get a unique last line, and
          stay headerless), delivered into the maildir of a mailbox before
          the daemon starts, Dovecot's index synced (STATUS), then the
          daemon started with [mailbox corpus] interval 100ms, batch 50
          (--corpus-batch):
          timed from starting the daemon until the poller's last_uid
          (<prefix>imap:corpus) has passed every message, i.e. every one
          is in the contact log or in the quarantine and marked \\Seen.
          So this is the whole inbound path (IMAP fetch, GMime parse on
          the worker pool, blobs, ingest), over real-world-shaped mail;
          contacts, quarantined and duplicates are counted.
  imap    IMAP fetch: IMAP_N small realistic mails (utf-8, koi8-r and
          windows-1251 in turn; 8bit, quoted-printable or base64; RFC 2047
          subjects and names; one in five multipart/alternative with HTML;
          1,000 senders) delivered and synced the same way, the daemon
          started with interval 100ms and batch B (each of --batches, a
          fresh mailbox and a fresh daemon each): timed from starting the
          daemon until <prefix>stats:contacts:email (bumped only by the
          contact ingest) reaches IMAP_N.
  smtp    SMTP send: first a capture (smtp-sink -d on one port, a daemon
          sends SMTP_WARMUP order.shipped notifications to SMTP_WARMUP
          addresses: the customers the measured runs address, and one
          rendered message kept as the baseline's payload); then one
          smtp-sink -c (no dump) on another port for all targets:
            switchboard  per config TxS of --smtp-configs ([email]
                         smtp_threads T, smtp_per_session S, smtp_tls
                         none), a fresh daemon, 200 notifications not
                         timed, then SMTP_N notifications XADDed to
                         sb:notify (pipelined, chunks of 1,000; email
                         round-robin over the warm-up addresses, channels
                         ["email"]), timed from the first XADD until the
                         sink's mesg counter has grown by SMTP_N (also
                         until sb:stats:ntf:sent:email has: sent_secs);
            source       smtp-source -d -s 1 -m SMTP_N -F FILE (one
                         connection, FILE = the captured message: the
                         same bytes), timed from its start until the
                         sink's counter has grown by SMTP_N.
          The targets run in --order (switchboard = all configs in turn).

Output lines (stdout):

  RESULT run=R target=corpus|imap|smtp|source [batch=B] [threads=T
        per_session=S] n=N done=D secs=S rate=R ... cpu_*=%
  INFO run=R ...       (sizes, start-up time, what a target did)
  LOG run=R errors=E warnings=W

Every wait is bounded by --timeout, and gives up after --stall seconds
without progress (the daemon's last IMAP poll error is then printed); the
daemon, Dovecot and the sinks are stopped by PID at the end of each step,
failed or not. Targets named in --skip are not run (email.sh skips what
did not finish in an earlier run). Exit status 1 when something did not
start or a target did not finish.
"""

import argparse
import base64
import email.header
import email.utils
import glob
import os
import pwd
import quopri
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))))

import benchlib  # noqa: E402
from benchlib import ROOT, Cpu, harness, say, warn  # noqa: E402
import dovecot  # noqa: E402

OUR = "support@example.test"
UNSUB = "email-bench-unsubscribe-secret-0123456789"
MBOX_PASS = "bench-Mail-Pass-1"
SINK_RE = re.compile(rb"mesg=(\d+)")


# --------------------------------------------------------------------------
# Waiting, the daemon.

def wait_progress(count, n, limit, stall, step=0.02):
    """Poll count() until it reaches n; gives up after limit seconds, or
    after stall seconds without it changing. Returns (the monotonic time
    n was reached or None, the last count)."""
    t0 = time.monotonic()
    deadline = t0 + limit
    last, moved = None, t0
    while True:
        c = count()
        now = time.monotonic()
        if c >= n:
            return now, c
        if c != last:
            last, moved = c, now
        if now >= deadline or now - moved >= stall:
            return None, c
        time.sleep(step)


def new_daemon(a, name, text, port):
    """The daemon on DIR/switchboard-NAME.conf (not started yet)."""
    return benchlib.Daemon(a.sb, a.dir, "switchboard-" + name, text, port,
                           mark=True)


def died(dm, name):
    """1 (and a warning) when the daemon is no longer running, else 0."""
    if dm.alive():
        return 0
    warn("the daemon died (%s)" % name)
    return 1


def daemon_config(a, port, smtp_port, threads=2, per_session=100,
                  mailbox=None):
    text = benchlib.daemon_config(port, a.redis, a.notify_batch,
                                  a.notify_inflight, www=True) + """
[channels]
email = email

[email]
from = {our}
from_name = Example Support
unsubscribe_secret = {unsub}
smtp_host = 127.0.0.1
smtp_port = {smtp_port}
smtp_tls = none
smtp_timeout = 10s
smtp_threads = {threads}
smtp_per_session = {per_session}
""".format(our=OUR, unsub=UNSUB, smtp_port=smtp_port, threads=threads,
           per_session=per_session)
    if mailbox:
        text += """
[mailbox {name}]
url = {url}
username = {user}
password = {pw}
address = {our}
interval = 100ms
batch = {batch}
after = seen
starttls = no
""".format(our=OUR, **mailbox)
    return text


# --------------------------------------------------------------------------
# Mail to fetch.

def corpus_copies(run, copies):
    """Every tests/data/mail/*.eml, copies times, each copy unique."""
    files = sorted(glob.glob(os.path.join(ROOT, "tests", "data", "mail",
                                          "*.eml")))
    raws = []
    for path in files:
        with open(path, "rb") as f:
            raws.append(f.read())
    out = []
    mid = re.compile(rb"(?im)^(message-id:[ \t]*(?:\r?\n[ \t]+)?<)")
    for k in range(copies):
        tag = b"bench.%s.%d." % (run.encode(), k)
        for raw in raws:
            m = re.search(rb"\r?\n\r?\n", raw)
            head_end = m.start() if m else len(raw)
            h = mid.search(raw, 0, head_end)
            if h:
                out.append(raw[:h.end()] + tag + raw[h.end():])
            else:
                out.append(raw + b"\r\n(" + tag + b")\r\n")
    return out, len(files)


FIRST = ["Иван", "Мария", "Алексей", "Ольга", "Дмитрий", "Елена", "Сергей",
         "Наталья", "Андрей", "Татьяна", "Peter", "Anna"]
LAST = ["Петров", "Иванова", "Смирнов", "Кузнецова", "Попов", "Соколова",
        "Лебедев", "Козлова", "Новиков", "Морозова", "Miller", "Schmidt"]
SUBJECTS = ["Вопрос по заказу SO-{n}", "Доставка заказа {n} задерживается",
            "Re: Счёт на оплату N {n}", "Возврат товара по заказу {n}",
            "Order {n}: wrong item delivered", "Смена адреса доставки {n}"]
BODIES = [
    "Здравствуйте!\n\nМой заказ SO-{n} до сих пор не доставлен, хотя срок "
    "истёк {d} дня назад.\nПодскажите, пожалуйста, когда ждать курьера?\n\n"
    "С уважением,\n{name}\nтел. +7 916 {p}\n",
    "Добрый день.\n\nПрошу выставить счёт на оплату заказа N {n} на "
    "юридическое лицо:\nООО \"Ромашка\", ИНН 77{p}{d}.\n\nСпасибо!\n{name}\n",
    "Hello,\n\nthe parcel for order {n} arrived today, but the box held a "
    "different item.\nHow do I return it?\n\nBest regards,\n{name}\n",
    "Здравствуйте,\n\nхочу вернуть товар из заказа {n}: не подошёл размер.\n"
    "Упаковка целая, чек сохранён.\n\n> {d} марта вы писали:\n> Заказ "
    "передан в доставку.\n\n--\n{name}\n",
]
CHARSETS = ["utf-8", "koi8-r", "windows-1251"]


def small_mail(i, tag, rnd):
    """One small realistic customer mail (bytes, LF line ends)."""
    cs = CHARSETS[i % 3]
    s = i % 1000
    first, last = FIRST[s % len(FIRST)], LAST[s % len(LAST)]
    name = "%s %s" % (first, last)
    addr = "customer%d@mail%d.example.ru" % (s, s % 17)
    n = 10000 + i
    subj = SUBJECTS[i % len(SUBJECTS)].format(n=n)
    body = BODIES[(i // 3) % len(BODIES)].format(
        n=n, d=1 + i % 9, name=name, p="%07d" % (s * 7919 % 10000000))
    enc = ["8bit", "quoted-printable", "base64"][(i // 5) % 3]
    if cs == "utf-8" and enc == "8bit":
        enc = "quoted-printable"
    raw_body = body.encode(cs)
    if enc == "base64":
        payload = base64.encodebytes(raw_body)
    elif enc == "quoted-printable":
        payload = quopri.encodestring(raw_body)
    else:
        payload = raw_body
    hname = email.header.Header(name, cs).encode()
    hsubj = email.header.Header(subj, cs).encode()
    date = email.utils.format_datetime(email.utils.localtime().replace(
        microsecond=0))
    head = ("Return-Path: <{addr}>\n"
            "Received: from mail{m}.example.ru (mail{m}.example.ru "
            "[192.0.2.{m}])\n\tby mx.example.test with ESMTPS id {r};\n\t"
            "{date}\n"
            "From: {hname} <{addr}>\n"
            "To: Example Support <{our}>\n"
            "Subject: {hsubj}\n"
            "Date: {date}\n"
            "Message-ID: <{tag}.{i}.{r}@mail{m}.example.ru>\n"
            "MIME-Version: 1.0\n"
            "X-Mailer: Bench Mail 1.0\n").format(
                addr=addr, m=s % 17, r="%08x" % rnd.getrandbits(32),
                date=date, hname=hname, our=OUR, hsubj=hsubj, tag=tag, i=i)
    if i % 5 == 4:
        html = ("<html><body><p>" + body.replace("\n\n", "</p><p>")
                .replace("\n", "<br>") + "</p></body></html>\n")
        hpay = base64.encodebytes(html.encode(cs))
        bnd = "=_bench_%d_%08x" % (i, rnd.getrandbits(32))
        text = (head + "Content-Type: multipart/alternative; "
                "boundary=\"%s\"\n\n" % bnd).encode("ascii")
        text += ("--%s\nContent-Type: text/plain; charset=\"%s\"\n"
                 "Content-Transfer-Encoding: %s\n\n" % (bnd, cs, enc)
                 ).encode("ascii") + payload
        text += ("\n--%s\nContent-Type: text/html; charset=\"%s\"\n"
                 "Content-Transfer-Encoding: base64\n\n" % (bnd, cs)
                 ).encode("ascii") + hpay
        text += ("\n--%s--\n" % bnd).encode("ascii")
        return text
    return (head + "Content-Type: text/plain; charset=\"%s\"\n"
            "Content-Transfer-Encoding: %s\n\n" % (cs, enc)
            ).encode("ascii") + payload


# --------------------------------------------------------------------------
# Inbound phases.

def deliver_and_sync(d, user, raws, limit):
    """Into user's INBOX (maildir new/), then STATUS until Dovecot has
    listed them all (UIDs assigned); returns (deliver secs, sync secs)."""
    t0 = time.monotonic()
    for raw in raws:
        d.deliver(raw, user=user)
    t1 = time.monotonic()
    deadline = t1 + limit
    while True:
        st = d.status(user=user)
        if st.get("MESSAGES", 0) >= len(raws):
            break
        if time.monotonic() > deadline:
            raise AssertionError("Dovecot listed %s of %d messages" % (
                st.get("MESSAGES"), len(raws)))
        time.sleep(0.2)
    return t1 - t0, time.monotonic() - t1


def run_inbound(a, r, d, kind, user, raws, batch, redis_pid):
    """One inbound target: fresh Redis contents, the mail in the maildir,
    a fresh daemon; returns 0 or 1."""
    n = len(raws)
    name = "corpus" if kind == "corpus" else "imap%d" % batch
    dsecs, ssecs = deliver_and_sync(d, user, raws, a.timeout)
    r.cmd("FLUSHALL")
    port = harness.free_port()
    dm = new_daemon(a, name, daemon_config(
        a, port, harness.free_port(),
        mailbox={"name": name, "url": d.url(), "user": user,
                 "pw": MBOX_PASS, "batch": batch}), port)
    try:
        cpu = None
        t0 = time.monotonic()
        dm.start()
        cpu = Cpu({"sb": [dm.proc.pid], "redis": [redis_pid]},
                  {"dovecot": d.proc.pid})
        if not dm.wait_ready(30.0):
            warn("the daemon did not become ready (%s)" % name)
            return 1
        tready = time.monotonic() - t0
        key = "sb:imap:" + name
        if kind == "corpus":
            def done():
                return r.hint(key, "last_uid")
        else:
            def done():
                return r.int("sb:stats:contacts:email")
        t1, _ = wait_progress(done, n, a.timeout, a.stall)
        cpuf = cpu.fields()
        contacts = r.int("sb:stats:contacts:email")
        quar = r.int("sb:stats:mailq:added")
        last = r.hint(key, "last_uid")
        xlen = r.cmd("XLEN", "sb:log")
        got = last if kind == "corpus" else contacts
        extra = ("contacts=%d quarantined=%d other=%d last_uid=%d "
                 "xlen_log=%d ready_secs=%.2f deliver_secs=%.2f "
                 "sync_secs=%.2f" % (contacts, quar,
                                     max(0, last - contacts - quar), last,
                                     xlen, tready, dsecs, ssecs))
        tgt = "target=corpus batch=%d" % batch if kind == "corpus" else \
            "target=imap batch=%d" % batch
        if benchlib.result(a.run, tgt, n, got, t0, t1,
                           "%s %s" % (cpuf, extra)):
            warn("%s: %d of %d done, no progress for %.0f s or over the "
                 "%.0f s limit; the daemon's last poll error: %s" % (
                     name, got, n, a.stall, a.timeout,
                     last_poll_error(dm.log, name)))
            return 1
        return died(dm, name)
    finally:
        dm.stop()


def last_poll_error(log, name):
    """The last 'poll failed mailbox=NAME' line of the daemon's log."""
    found = "none logged"
    try:
        with open(log, errors="replace") as f:
            for line in f:
                if "poll failed mailbox=%s " % name in line:
                    found = line.strip()[:200]
    except OSError:
        pass
    return found


# --------------------------------------------------------------------------
# SMTP.

class Sink:
    """Postfix's smtp-sink on a free loopback port: counting (-c, its
    running "mesg=N" counter read from its stdout) or dumping (-d, one
    file per message under dumpdir)."""

    def __init__(self, a, name, dumpdir=None):
        self.a = a
        self.port = harness.free_port()
        self.out = os.path.join(a.dir, "sink-%s.out" % name)
        self.appended = benchlib.Appended(self.out)
        self.carry = b""
        self.n = 0
        self.dumpdir = dumpdir
        args = [os.path.join(a.postfix, "sbin", "smtp-sink")]
        if os.getuid() == 0:
            args += ["-u", "nobody"]
        if dumpdir:
            os.makedirs(dumpdir, exist_ok=True)
            if os.getuid() == 0:
                pw = pwd.getpwnam("nobody")
                os.chown(dumpdir, pw.pw_uid, pw.pw_gid)
            args += ["-d", os.path.join(dumpdir, "m.")]
        else:
            args += ["-c"]
        args += ["127.0.0.1:%d" % self.port, "256"]
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.path.join(a.postfix, "lib")
        with open(self.out, "wb") as out:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=a.dir, env=env,
                preexec_fn=dovecot._die_with_parent)
        harness._register(self.proc, "smtp-sink")
        if benchlib.wait_for(lambda: self.proc.poll() is not None or
                             dovecot._port_open(self.port, 0.2), 10.0,
                             0.02) is None or \
                self.proc.poll() is not None:
            with open(self.out, "rb") as f:
                tail = f.read()[-500:].decode(errors="replace")
            self.stop()
            raise AssertionError("smtp-sink did not start: %s" % tail)

    def count(self):
        """Messages received so far (-c: the last mesg= on stdout)."""
        if self.dumpdir:
            try:
                return len(os.listdir(self.dumpdir))
            except OSError:
                return 0
        data = self.carry + self.appended.read()
        # keep the last (possibly partial) record for the next read
        cut = data.rfind(b"\r")
        if cut >= 0:
            m = SINK_RE.findall(data[:cut])
            if m:
                self.n = int(m[-1])
            data = data[cut + 1:]
        self.carry = data
        return self.n

    def stop(self):
        if self.proc is not None:
            harness.stop_process(self.proc, signal.SIGTERM, 10.0)
            self.proc = None


def dump_to_message(path):
    """An smtp-sink dump file -> the message as the client sent it (LF
    lines): the sink's X-*-Args lines and its Received header dropped."""
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")
    i = 0
    while i < len(lines) and re.match(
            rb"X-(Client-Addr|Client-Proto|Helo-Args|Mail-Args|Rcpt-Args):",
            lines[i]):
        i += 1
    if i < len(lines) and lines[i].startswith(b"Received: ") and \
            b"smtp-sink" in b"\n".join(lines[i:i + 3]):
        i += 1
        while i < len(lines) and lines[i][:1] in (b" ", b"\t"):
            i += 1
    msg = lines[i:]
    while msg and msg[-1] == b"":
        msg.pop()
    return b"\n".join(msg) + b"\n"


def who(i, warm):
    return "b%d@bench.example.com" % (i % warm)


def encode_notifications(first, count, warm):
    """count order.shipped e-mail notifications, numbered from first, as
    RESP bytes in chunks of (bytes, commands): encoded before the clock
    starts, so the timed part is the pipelined XADDs themselves."""
    return [benchlib.Resp.encode(cmds) for cmds in benchlib.chunks(
        first, count, lambda j: benchlib.shipped(
            j, "email", who(j, warm), '["email"]'))]


def send_encoded(r, chunks):
    for blob, n in chunks:
        r.send(blob, n)


def xadd_notifications(r, first, count, warm):
    send_encoded(r, encode_notifications(first, count, warm))


def smtp_daemon(a, name, sink_port, threads, per_session):
    port = harness.free_port()
    dm = new_daemon(a, name, daemon_config(a, port, sink_port, threads,
                                           per_session), port)
    dm.start()
    if not dm.wait_ready(30.0):
        dm.stop()
        raise AssertionError("the daemon did not become ready (%s)" % name)
    return dm


def smtp_capture(a, r, warm):
    """The warm-up: customers b0..b<warm-1> made, one rendered message
    kept; returns (path of the message, its size in bytes on the wire)."""
    r.cmd("FLUSHALL")
    sink = Sink(a, "capture", os.path.join(a.dir, "dump"))
    dm = None
    try:
        dm = smtp_daemon(a, "capture", sink.port, 2, 100)
        xadd_notifications(r, 0, warm, warm)
        if wait_progress(sink.count, warm, a.timeout, a.stall)[0] is None:
            raise AssertionError("capture: the sink got %d of %d" % (
                sink.count(), warm))
        if wait_progress(lambda: r.int("sb:stats:ntf:sent:email"), warm,
                         a.timeout, a.stall)[0] is None:
            raise AssertionError("capture: %d of %d recorded sent" % (
                r.int("sb:stats:ntf:sent:email"), warm))
        name = sorted(os.listdir(sink.dumpdir))[0]
        msg = dump_to_message(os.path.join(sink.dumpdir, name))
    finally:
        if dm is not None:
            dm.stop()
        sink.stop()
    path = os.path.join(a.dir, "message.eml")
    with open(path, "wb") as f:
        f.write(msg)
    wire = len(msg.replace(b"\n", b"\r\n"))
    return path, wire


def run_smtp_sb(a, r, sink, threads, per_session, first, warm, redis_pid):
    name = "smtp-%dx%d" % (threads, per_session)
    dm = smtp_daemon(a, name, sink.port, threads, per_session)
    try:
        # not timed: connections, scripts, the template cache
        base = sink.count()
        s0 = r.int("sb:stats:ntf:sent:email")
        xadd_notifications(r, first, 200, warm)
        if wait_progress(lambda: min(sink.count() - base,
                                     r.int("sb:stats:ntf:sent:email") - s0),
                         200, a.timeout, a.stall)[0] is None:
            raise AssertionError("%s: the warm-up did not finish" % name)
        first += 200
        time.sleep(0.5)
        base = sink.count()
        s0 = r.int("sb:stats:ntf:sent:email")
        f0 = r.int("sb:stats:ntf:tempfail:email")
        chunks = encode_notifications(first, a.smtp_n, warm)
        cpu = Cpu({"sb": [dm.proc.pid], "redis": [redis_pid],
                   "sink": [sink.proc.pid]})
        t0 = time.monotonic()
        send_encoded(r, chunks)
        tx = time.monotonic() - t0
        t1, _ = wait_progress(lambda: sink.count() - base, a.smtp_n,
                              a.timeout, a.stall)
        cpuf = cpu.fields()
        ts, _ = wait_progress(
            lambda: r.int("sb:stats:ntf:sent:email") - s0, a.smtp_n,
            a.timeout if t1 else 1.0, a.stall)
        done = sink.count() - base
        extra = "sent=%d tempfail=%d enqueue_secs=%.2f sent_secs=%s" % (
            r.int("sb:stats:ntf:sent:email") - s0,
            r.int("sb:stats:ntf:tempfail:email") - f0, tx,
            "%.2f" % (ts - t0) if ts else "-1")
        tgt = "target=smtp threads=%d per_session=%d" % (threads,
                                                          per_session)
        if benchlib.result(a.run, tgt, a.smtp_n, done, t0,
                           None if ts is None else t1,
                           "%s %s" % (cpuf, extra)):
            return 1
        return died(dm, name)
    finally:
        dm.stop()


def run_smtp_source(a, sink, msgfile, redis_pid):
    base = sink.count()
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.path.join(a.postfix, "lib")
    args = [os.path.join(a.postfix, "sbin", "smtp-source"),
            "-d", "-s", "1", "-m", str(a.smtp_n), "-f", OUR,
            "-t", "b1@bench.example.com", "-M", "bench.example.test",
            "-F", msgfile, "127.0.0.1:%d" % sink.port]
    errf = os.path.join(a.dir, "smtp-source.err")
    with open(errf, "wb") as err:
        t0 = time.monotonic()
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=err,
                             stderr=subprocess.STDOUT, env=env,
                             preexec_fn=dovecot._die_with_parent)
    harness._register(p, "smtp-source")
    try:
        cpu = Cpu({"source": [p.pid], "sink": [sink.proc.pid]})
        t1, _ = wait_progress(lambda: sink.count() - base, a.smtp_n,
                              a.timeout, a.stall)
        cpuf = cpu.fields()
        try:
            rc = p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        done = sink.count() - base
        if t1 is None or rc != 0:
            with open(errf, "rb") as f:
                warn("smtp-source exit %s: %s" % (
                    rc, f.read()[-300:].decode(errors="replace")))
            t1 = None
        return benchlib.result(a.run, "target=source", a.smtp_n, done, t0,
                               t1, cpuf)
    finally:
        harness.stop_process(p, signal.SIGTERM, 5.0)


def run_smtp(a, r, redis_pid):
    warm = max(1, a.smtp_warmup)
    msgfile, wire = smtp_capture(a, r, warm)
    say("INFO run=%s smtp_message_bytes=%d (the rendered order.shipped "
        "notification: multipart/alternative text + HTML)" % (a.run, wire))
    configs = []
    for c in a.smtp_configs.split(","):
        t, s = c.split("x")
        configs.append((int(t), int(s)))
    sink = Sink(a, "count")
    fail = 0
    first = warm
    try:
        for target in a.order.split(","):
            if target == "source":
                fail |= run_smtp_source(a, sink, msgfile, redis_pid)
                time.sleep(0.5)
                continue
            for t, s in configs:
                fail |= run_smtp_sb(a, r, sink, t, s, first, warm,
                                    redis_pid)
                first += 200 + a.smtp_n
                time.sleep(0.5)
    finally:
        sink.stop()
    return fail


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sb", required=True)
    ap.add_argument("--redis", required=True)
    ap.add_argument("--redis-pid", type=int, default=0)
    ap.add_argument("--dir", required=True)
    ap.add_argument("--postfix", required=True)
    ap.add_argument("--run", default="1")
    ap.add_argument("--copies", type=int, default=40)
    ap.add_argument("--corpus-batch", type=int, default=50)
    ap.add_argument("--skip", default="",
                    help="targets not to run: corpus, imapB (B a batch)")
    ap.add_argument("--imap-n", type=int, default=5000)
    ap.add_argument("--batches", default="50,200")
    ap.add_argument("--smtp-n", type=int, default=10000)
    ap.add_argument("--smtp-warmup", type=int, default=1000)
    ap.add_argument("--smtp-configs", default="2x100,2x1000,4x100,4x1000")
    ap.add_argument("--notify-batch", type=int, default=200)
    ap.add_argument("--notify-inflight", type=int, default=5000)
    ap.add_argument("--order", default="switchboard,source")
    ap.add_argument("--phases", default="corpus,imap,smtp")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--stall", type=float, default=10.0)
    a = ap.parse_args()
    a.sb = os.path.abspath(a.sb)
    a.redis = os.path.abspath(a.redis)
    a.postfix = os.path.abspath(a.postfix)
    a.dir = os.path.abspath(a.dir)
    os.makedirs(a.dir, exist_ok=True)
    phases = [p for p in a.phases.split(",") if p]
    log = os.path.join(a.dir, "switchboard.log")
    rnd = random.Random(int(a.run) if a.run.isdigit() else 1)
    benchlib.setup("email")

    fail = 0
    r = None
    d = None
    try:
        r = benchlib.Resp(a.redis)
        if "corpus" in phases or "imap" in phases:
            users = {"corpus@example.test": MBOX_PASS}
            batches = [int(b) for b in a.batches.split(",") if b]
            for b in batches:
                users["imap%d@example.test" % b] = MBOX_PASS
            d = dovecot.Dovecot(a.dir, users=users, limit=30.0)
            skip = set(x for x in a.skip.split(",") if x)
            if "corpus" in phases and "corpus" in skip:
                say("INFO run=%s skipped=corpus (did not finish in an "
                    "earlier run)" % a.run)
            elif "corpus" in phases:
                raws, nfiles = corpus_copies(a.run, a.copies)
                if not raws:
                    warn("no tests/data/mail/*.eml")
                    fail = 1
                else:
                    say("INFO run=%s corpus_files=%d copies=%d messages=%d "
                        "bytes=%d" % (a.run, nfiles, a.copies, len(raws),
                                      sum(len(x) for x in raws)))
                    fail |= run_inbound(a, r, d, "corpus",
                                        "corpus@example.test", raws,
                                        a.corpus_batch, a.redis_pid)
            said = False
            if "imap" in phases:
                for b in batches:
                    if "imap%d" % b in skip:
                        say("INFO run=%s skipped=imap%d (did not finish in "
                            "an earlier run)" % (a.run, b))
                        continue
                    tag = "bench.%s.b%d" % (a.run, b)
                    raws = [small_mail(i, tag, rnd)
                            for i in range(a.imap_n)]
                    if not said:
                        said = True
                        say("INFO run=%s imap_messages=%d avg_bytes=%d" % (
                            a.run, len(raws),
                            sum(len(x) for x in raws) // len(raws)))
                    fail |= run_inbound(a, r, d, "imap",
                                        "imap%d@example.test" % b, raws, b,
                                        a.redis_pid)
            d.stop()
            d = None
        if "smtp" in phases:
            fail |= run_smtp(a, r, a.redis_pid)
        return fail
    except (AssertionError, OSError, harness.RedisError,
            ConnectionError, harness.Skip) as e:
        warn(str(e))
        return 1
    finally:
        if r is not None:
            r.close()
        if d is not None:
            d.stop()
        harness.cleanup_all()
        benchlib.log_result(a.run, log)


if __name__ == "__main__":
    sys.exit(main())
