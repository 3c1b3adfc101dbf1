"""test_email.py - the e-mail channel end to end (docs/email.md).

Every test runs its own Redis and daemon (harness.Env, started late so the
peers' ports are known first), a real Dovecot from dovecot.py (plain IMAP
on a free loopback port; IMAPS where a test says so) holding the support
mailbox, and an SMTP sink (smtpsink.py, run with Debian's /usr/bin/python3
as a child process, stopped by PID). The daemon is configured as
docs/email.md describes: [channels] email = email (sms = the file driver,
the fallback channel), [email] towards the sink (smtp_tls = none unless a
test is about STARTTLS), [mailbox support] polling every 200 ms and
marking \\Seen, and routing to alice ([queue general]). Mail "arrives" by
being written into the maildir's new/ as an MTA would; what the mailbox
holds (flags, folders) is read from the maildir, what the daemon did from
Redis (the contact log, sb:log) and the API, what it sent from the sink's
.eml files, parsed with Python's email package.

Covered: a KOI8-R mail (RFC 2047 subject and name, 8-bit body) fetched,
decoded to UTF-8, filed under the customer found by address (or a new
one), routed and offered to the online agent, and marked \\Seen only once
it is in the log (Redis stopped: the mail stays unseen); the agent's answer
as threaded mail (From the mailbox, Re: subject with the [#cv_N] tag,
In-Reply-To, References, Message-ID on our domain, UTF-8 body intact
through quoted-printable/base64 and dot-stuffing); the customer's reply
threads back, a stranger's reply to the same Message-ID and a stranger's
tag do not, the tag alone from the customer does, a fresh mail starts a
new conversation; auto-replies and DSNs logged as auto / bounce without a
conversation or an answer, a DSN of one of our notifications (text/
rfc822-headers or message/rfc822) failing its attempt and moving it to SMS
or the dead letters; the quarantine (nesting bomb, oversize, no sender)
never blocking the mailbox, its API, metric and replay; Dovecot stopped in
the middle of fetching 200 messages and a proxy cutting the connection in
the middle of a FETCH: every message logged exactly once; a UIDVALIDITY
change re-read without duplicates; SMTP 4xx (retry then sent), 552
(temporary), 5xx (next channel, dead letter), a silent sink and a sink
dropping the connection (temporary, within smtp_timeout); header injection
through template data, a customer's display name and an encoded subject
never reaching the sink as a header; STARTTLS with certificate
verification (and no mail in clear text or to an unknown certificate);
List-Unsubscribe (GET changes nothing, a forged link is refused, POST
records the opt-out; links on a plain-http public_url still sent);
attachments with RFC 2231 names and an HTML-only mail served through the
API with a sandbox CSP, over IMAPS; a 1 MB attachment and 150 small mails
behind it all fetched.

Every wait is bounded; Dovecot, the sink and the daemon are stopped by PID
whatever happens. Skipped (with the reason) where Dovecot or aiosmtpd is
missing.
"""

import base64
import email
import email.policy
import email.utils
import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

import apiutil
import dovecot
import harness
from apiutil import admin, get_ntf, post_ntf, wait_state
from harness import Env, q, timeout, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SINK_PY = os.path.join(HERE, "smtpsink.py")
DEBIAN_PY = os.environ.get("SB_SINK_PYTHON", "/usr/bin/python3")

MBOX = "support@example.test"        # the mailbox, and replies' From
MBOX_PASS = "imap-Pass-42"
FROM = "notify@example.test"         # [email] from: notifications
DOMAIN = "example.test"
# [email] public_url: the base of the List-Unsubscribe links, https as in
# production (RFC 8058 one-click needs https); the tests POST its path to
# the daemon's plain listener.
PUBLIC = "https://sb.example.test"
UNSUB_SECRET = "unsub-secret-0123456789abcdef-42"
SHIPPED = {"order": "SO-1001", "carrier": "СДЭК",
           "tracking_url": "https://track.example/SO-1001"}
PHONE = "+79161234567"
REDIS_ERRORS = (r"(?i)redis",)

# The customer's KOI8-R mail (KOI8-R has no "№" nor guillemets).
SUBJ_RU = "Где мой заказ 42? Ёлка и ёжик"
BODY_RU = ("Здравствуйте!\n"
           "Заказ 42 до сих пор не пришёл. Подскажите, пожалуйста, где он?\n"
           "Съешь же ещё этих мягких французских булок, да выпей чаю.\n"
           "\n"
           "С уважением,\n"
           "Иван Петров")
NAME_RU = "Иван Петров"
# The agent's answer: long lines (folded by QP/base64), a lone dot and a
# line starting with a dot (dot-stuffing), "From " at a line start.
REPLY_RU = ("Добрый день, Иван!\n"
            "Заказ 42 уже в пути: курьер «СДЭК» привезёт его завтра, с "
            "10:00 до 18:00, и позвонит за час до приезда — ждите звонка.\n"
            ".\n"
            ".точка в начале строки\n"
            "From here on, всё хорошо.\n"
            "Ёлка, ёжик, №42 — 100%")


# --------------------------------------------------------------------------
# Availability.

def sink_available():
    if not os.access(DEBIAN_PY, os.X_OK):
        return "no %s" % DEBIAN_PY
    p = subprocess.run([DEBIAN_PY, "-c", "import aiosmtpd"],
                       capture_output=True, timeout=30)
    if p.returncode != 0:
        return "aiosmtpd missing for %s (apt-get install python3-aiosmtpd)" \
            % DEBIAN_PY
    return None


def make_cert(d, cn="127.0.0.1"):
    """A self-signed cert.pem + key.pem for 127.0.0.1 in d."""
    os.makedirs(d, exist_ok=True)
    p = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "2", "-subj", "/CN=%s" % cn,
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
         "-keyout", os.path.join(d, "key.pem"),
         "-out", os.path.join(d, "cert.pem")],
        capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()[-500:]
    return os.path.join(d, "cert.pem")


# --------------------------------------------------------------------------
# The SMTP sink, as a child process.

class Sink:
    """smtpsink.py on 127.0.0.1 (a free port, kept over restarts) storing
    into d; args are its command-line switches."""

    def __init__(self, d, args=()):
        self.dir = d
        self.port = 0
        self.proc = None
        self.args = list(args)
        self.starts = 0

    def start(self, args=None, limit=20.0):
        if args is not None:
            self.args = list(args)
        os.makedirs(self.dir, exist_ok=True)
        ready = os.path.join(self.dir, "ready")
        if os.path.exists(ready):
            os.unlink(ready)
        out = open(os.path.join(self.dir, "sink.log"), "ab")
        try:
            self.proc = subprocess.Popen(
                [DEBIAN_PY, SINK_PY, "--port", str(self.port), "--dir",
                 self.dir] + self.args, stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT)
        finally:
            out.close()
        harness._register(self.proc, "smtpsink")
        self.starts += 1
        deadline = time.monotonic() + limit
        while not os.path.exists(ready):
            if self.proc.poll() is not None:
                raise AssertionError("smtpsink exited with %s: %s" % (
                    self.proc.returncode, self.log_tail()))
            if time.monotonic() > deadline:
                raise AssertionError("smtpsink not ready in %.0fs" % limit)
            time.sleep(0.03)
        with open(ready) as f:
            self.port = int(f.read().strip())
        return self

    def stop(self):
        if self.proc is not None:
            harness.stop_process(self.proc, signal.SIGTERM, 10.0)
            self.proc = None

    def restart(self, args):
        """Same port and store, other behaviour switches."""
        self.stop()
        for _ in range(100):
            try:
                return self.start(args)
            except AssertionError:
                if "Address already in use" not in self.log_tail():
                    raise
                time.sleep(0.1)
        raise AssertionError("smtpsink could not take port %d again"
                             % self.port)

    def log_tail(self):
        try:
            with open(os.path.join(self.dir, "sink.log"), "rb") as f:
                return f.read().decode(errors="replace")[-1500:]
        except OSError:
            return ""

    def index(self):
        path = os.path.join(self.dir, "index.jsonl")
        try:
            with open(path) as f:
                return [json.loads(ln) for ln in f if ln.strip()]
        except FileNotFoundError:
            return []

    def raw(self, n):
        with open(os.path.join(self.dir, "%08d.eml" % n), "rb") as f:
            return f.read()

    def mails(self):
        """[(index row, raw bytes, parsed EmailMessage)], oldest first."""
        out = []
        for row in self.index():
            raw = self.raw(row["n"])
            out.append((row, raw, email.message_from_bytes(
                raw, policy=email.policy.default)))
        return out

    def connections(self):
        try:
            with open(os.path.join(self.dir, "connections.jsonl")) as f:
                return sum(1 for ln in f if ln.strip())
        except FileNotFoundError:
            return 0

    def wait_count(self, n, limit=20.0):
        wait_until(lambda: len(self.index()) >= n, limit, 0.05,
                   "%d mail(s) at the sink" % n)
        return self.mails()


# --------------------------------------------------------------------------
# The rig: daemon + Dovecot + sink.

class MailRig:
    """with MailRig(...) as rig: rig.env, rig.dv (Dovecot), rig.sink.

    email / mailbox / notify / extra: overrides of [email], [mailbox
    support], [notify] and any other sections (a None value removes a
    key); sink_args: the sink's switches (sink=False: no sink, the relay
    port is closed); imaps: the mailbox over IMAPS (the poller trusting
    Dovecot's certificate through [mailbox] ca_file); start: False leaves
    the daemon for the test (rig.start())."""

    def __init__(self, email=None, mailbox=None, notify=None, extra=None,
                 sink_args=(), sink=True, imaps=False, expect_errors=(),
                 start=True):
        self.email = dict(email or {})
        self.mailbox = dict(mailbox or {})
        self.notify = dict(notify or {})
        self.extra = dict(extra or {})
        self.sink_args = list(sink_args)
        self.with_sink = sink
        self.imaps = imaps
        self.expect_errors = expect_errors
        self.autostart = start
        self.env = self.dv = self.sink = None
        self.tokens = {}

    def __enter__(self):
        for reason in (dovecot.available(),
                       sink_available() if self.with_sink else None):
            if reason:
                raise harness.Skip(reason)
        n = {"supersede_window": "0", "backoff_min": "200ms",
             "backoff_max": "1s", "poll_interval": "50ms",
             "report_deadline": "10m"}
        n.update(self.notify)
        ov = {"channels": {"email": "email", "sms": "file"},
              "routing": {"default_queue": "general",
                          "offer_timeout": "30s", "tick": "100ms"},
              "queue general": {"members": "alice"},
              "notify": n}
        self.env = Env(ov, start_daemon=False,
                       expect_errors=self.expect_errors)
        env = self.env.__enter__()
        try:
            self.dv = dovecot.Dovecot(env.tmp, users={MBOX: MBOX_PASS},
                                      imaps=self.imaps)
            if self.with_sink:
                self.sink = Sink(os.path.join(env.tmp, "sink"),
                                 self.sink_args).start()
                smtp_port = self.sink.port
            else:
                smtp_port = harness.free_port()
            for name, val in (("imap.secret", MBOX_PASS),
                              ("email-unsub.secret", UNSUB_SECRET)):
                with open(os.path.join(env.tmp, name), "w") as f:
                    f.write(val + "\n")
            em = {"from": FROM, "from_name": "Example Support",
                  "public_url": PUBLIC,
                  "unsubscribe_secret": "@" + os.path.join(
                      env.tmp, "email-unsub.secret"),
                  "smtp_host": "127.0.0.1", "smtp_port": str(smtp_port),
                  "smtp_tls": "none", "smtp_timeout": "3s",
                  "smtp_threads": "2"}
            em.update(self.email)
            mb = {"url": self.dv.url(tls=self.imaps), "username": MBOX,
                  "password": "@" + os.path.join(env.tmp, "imap.secret"),
                  "address": MBOX, "interval": "200ms", "after": "seen"}
            if self.imaps:
                mb["ca_file"] = self.dv.ca_file
            mb.update(self.mailbox)
            harness.merge_config(env.conf, {"email": em,
                                            "mailbox support": mb})
            harness.merge_config(env.conf, self.extra)
            env.write_config()
            if self.autostart:
                self.start()
            return self
        except BaseException:
            self._stop_peers()
            self.env.__exit__(*sys.exc_info())
            raise

    def start(self):
        self.env.write_config()
        self.env.daemon.start()

    def _stop_peers(self):
        if self.env is not None and self.env.daemon is not None and \
                self.env.daemon.proc is not None:
            self.env.daemon.stop()
        if self.sink is not None:
            self.sink.stop()
        if self.dv is not None:
            self.dv.stop()

    def __exit__(self, et, ev, tb):
        try:
            self._stop_peers()
        finally:
            if et is not None and self.dv is not None:
                print("dovecot log tail:\n" + self.dv.log_tail(15))
            if et is not None:
                print("daemon log tail:\n" + self.env.daemon.log_tail(40))
            return self.env.__exit__(et, ev, tb)

    # ---- agents ----------------------------------------------------------

    def agent(self, name="alice"):
        """A client logged in as name (an agent of queue general)."""
        if name not in self.tokens:
            self.tokens[name] = self.env.login(name)
        return self.env.new_client(self.tokens[name])

    def online(self, name="alice"):
        r = self.agent(name).put("/api/v1/agents/%s/presence" % name,
                                 {"state": "online"})
        assert r.status == 200 and r.json["presence"] == "online", r

    def boss(self):
        return admin(self.env)

    # ---- what the daemon logged ------------------------------------------

    def log(self):
        """sb:log entries as dicts (id, every field; fields parsed)."""
        out = []
        for eid, f in self.env.redis.xrange_all("sb:log"):
            e = dict(f)
            e["id"] = eid
            try:
                e["fields"] = json.loads(f.get("fields") or "{}")
            except ValueError:
                e["fields"] = {}
            out.append(e)
        return out

    def mail_in(self):
        return [e for e in self.log() if e.get("channel") == "email" and
                e.get("direction") == "in"]

    def by_mid(self):
        """{Message-ID without <>: [inbound e-mail entries]}."""
        out = {}
        for e in self.mail_in():
            out.setdefault(mid_of(e), []).append(e)
        return out

    def wait_mail(self, message_id, limit=20.0):
        """The inbound e-mail contact with that Message-ID (no <>)."""
        def pred():
            got = self.by_mid().get(message_id)
            return got[0] if got else None
        try:
            return wait_until(pred, limit, 0.05, "<%s> in the contact log"
                              % message_id)
        except AssertionError as e:
            logged = sorted(self.by_mid())
            box = [(m["message_id"], sorted(m["flags"]))
                   for m in self.dv.messages()]
            raise AssertionError("%s; logged (%d): %s; mailbox (%d): %s" % (
                e, len(logged), logged[:10], len(box), box[:10]))

    def wait_seen(self, message_id, limit=10.0):
        def pred():
            ms = [m for m in self.dv.messages()
                  if m["message_id"] == message_id]
            return ms and all(m["seen"] for m in ms) and ms
        return wait_until(pred, limit, 0.05, "<%s> \\Seen in the mailbox"
                          % message_id)

    def metrics(self):
        r = self.env.client.get("/metrics", token=None)
        assert r.status == 200, r
        return r.body.decode()

    def outbox(self):
        """The file driver's messages (SMS fallback): [(name, text)]."""
        d = os.path.join(self.env.tmp, "outbox")
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith(".txt"))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            with open(os.path.join(d, n), encoding="utf-8") as f:
                out.append((n, f.read()))
        return out


def mid_of(e):
    """The Message-ID of a logged mail, without <>."""
    m = (e.get("fields") or {}).get("message_id") or e.get("source_id") \
        or ""
    return m.strip().strip("<>")


def metric(text, name, **labels):
    """The sum of a metric family's samples matching labels (0 if none)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        m = re.match(r"^(\w+)(\{([^}]*)\})?\s+(\S+)", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(4))
    return total


def offers(env, cv):
    return env.redis.hgetall("sb:rt:conv:%s:offers" % cv)


def conv(env, cv):
    r = env.client.get("/api/v1/conversations/" + cv)
    assert r.status == 200, r
    return r.json


def customer_by_email(env, addr):
    r = env.client.get("/api/v1/customers?email=" + q(addr))
    return r.json if r.status == 200 else None


def norm(text):
    """Text with CRLF -> LF and no trailing blank space (for compares)."""
    return (text or "").replace("\r\n", "\n").rstrip()


def addr_of(value):
    """The address of a header value, or of a logged {"name","addr"}."""
    if isinstance(value, dict):
        return (value.get("addr") or "").lower()
    return email.utils.parseaddr(str(value or ""))[1].lower()


def header_names(raw):
    """Names of the top-level header fields of raw (bytes)."""
    head = raw.replace(b"\r\n", b"\n").split(b"\n\n", 1)[0]
    names = []
    for line in head.split(b"\n"):
        if line and line[:1] not in (b" ", b"\t"):
            names.append(line.split(b":", 1)[0].strip().lower().decode(
                "latin-1"))
    return names


# --------------------------------------------------------------------------
# Building mail.

def enc_word(text, charset="utf-8"):
    return "=?%s?B?%s?=" % (charset, base64.b64encode(
        text.encode(charset)).decode())


def mail(frm, subject, body, mid, to=MBOX, headers=(), charset="utf-8",
         cte="8bit", date=None):
    """A simple text/plain message as bytes (LF line ends, as a maildir
    holds them). subject: str (already encoded if it needs to be); body:
    str (encoded with charset) or bytes. A non-ASCII subject or sender
    name is sent as an RFC 2047 word."""
    if not subject.isascii():
        subject = enc_word(subject)
    if not frm.isascii():
        name, addr = email.utils.parseaddr(frm)
        frm = "%s <%s>" % (enc_word(name), addr)
    h = ["From: %s" % frm, "To: %s" % to, "Subject: %s" % subject,
         "Date: %s" % (date or email.utils.formatdate(localtime=False)),
         "Message-ID: <%s>" % mid, "MIME-Version: 1.0"]
    h += list(headers)
    h += ["Content-Type: text/plain; charset=%s" % charset,
          "Content-Transfer-Encoding: %s" % cte]
    if isinstance(body, str):
        body = body.encode(charset)
    return ("\n".join(h) + "\n\n").encode("ascii") + body + b"\n"


def koi8_mail(frm_addr, mid, subject=SUBJ_RU, body=BODY_RU, name=NAME_RU,
              headers=()):
    return mail("%s <%s>" % (enc_word(name, "koi8-r"), frm_addr),
                enc_word(subject, "koi8-r"), body.encode("koi8-r"), mid,
                to="Support <%s>" % MBOX, headers=headers,
                charset="koi8-r")


def dsn(orig_mid, rcpt, headers_part=True, status="5.1.1",
        action="failed", mid=None):
    """A delivery status notification (RFC 3464) about orig_mid (no <>):
    multipart/report with the original's headers (text/rfc822-headers)
    or the original message (message/rfc822)."""
    b = "dsn-boundary-%s" % hashlib.sha1(orig_mid.encode()).hexdigest()[:12]
    orig = ("From: Example Support <%s>\nTo: %s\nSubject: Order SO-1001\n"
            "Message-ID: <%s>\nDate: %s\n" % (
                FROM, rcpt, orig_mid, email.utils.formatdate()))
    if headers_part:
        part3 = "Content-Type: text/rfc822-headers\n\n" + orig
    else:
        part3 = ("Content-Type: message/rfc822\n\n" + orig +
                 "MIME-Version: 1.0\nContent-Type: text/plain\n\n"
                 "Your order has shipped.\n")
    text = """\
Return-Path: <>
From: Mail Delivery System <MAILER-DAEMON@mx.customer.test>
To: {frm}
Subject: Undelivered Mail Returned to Sender
Date: {date}
Message-ID: <{mid}>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status;
 boundary="{b}"

This is a MIME-encapsulated message.

--{b}
Content-Type: text/plain; charset=us-ascii

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<{rcpt}>: host mx.customer.test said: 550 {status} User unknown

--{b}
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.customer.test
Arrival-Date: {date}

Final-Recipient: rfc822; {rcpt}
Original-Recipient: rfc822; {rcpt}
Action: {action}
Status: {status}
Remote-MTA: dns; mx.customer.test
Diagnostic-Code: smtp; 550 {status} User unknown

--{b}
{part3}
--{b}--
""".format(frm=FROM, date=email.utils.formatdate(), b=b, rcpt=rcpt,
           status=status, action=action, part3=part3,
           mid=mid or "dsn-%s@mx.customer.test" % hashlib.sha1(
               orig_mid.encode()).hexdigest()[:16])
    return text.encode("ascii")


def nesting_bomb(depth, mid):
    """multipart/mixed nested depth levels deep."""
    parts = ["From: Bomber <bomber@customer.test>", "To: %s" % MBOX,
             "Subject: nesting bomb", "Message-ID: <%s>" % mid,
             "Date: %s" % email.utils.formatdate(), "MIME-Version: 1.0",
             'Content-Type: multipart/mixed; boundary="b0"', ""]
    for i in range(1, depth):
        parts += ["--b%d" % (i - 1),
                  'Content-Type: multipart/mixed; boundary="b%d"' % i, ""]
    parts += ["--b%d" % (depth - 1), "Content-Type: text/plain", "",
              "boom", "--b%d--" % (depth - 1)]
    for i in range(depth - 2, -1, -1):
        parts.append("--b%d--" % i)
    return ("\n".join(parts) + "\n").encode()


def ntf_mid(env, sink_mail):
    """(notification id, attempt n) from one of our Message-IDs."""
    mid = str(sink_mail["Message-ID"]).strip()
    m = re.match(r"^<(nt_\d+)\.(\d+)\.[^@<>\s]+@" + re.escape(DOMAIN) +
                 r">$", mid)
    assert m, "notification Message-ID not nt_N.K.<random>@%s: %r" % (
        DOMAIN, mid)
    return m.group(1), int(m.group(2)), mid.strip("<>")


def sink_for(sink, rcpt):
    return [(row, raw, m) for row, raw, m in sink.mails()
            if rcpt in [r.lower() for r in row["rcpt_tos"]]]


# --------------------------------------------------------------------------
# 1. A KOI8-R mail in: decoded, filed, routed, \Seen only once logged.

@timeout(120)
def test_koi8_mail_ingested_routed_seen_after_log():
    with MailRig(expect_errors=REDIS_ERRORS) as rig:
        env = rig.env
        rig.online("alice")
        # A known customer (the address in another case than the mail's).
        r = env.client.post("/api/v1/contacts", {
            "channel": "api", "email": "ivan.petrov@customer.test",
            "text": "signup", "conversation": "none"})
        assert r.status == 201, r
        known = r.json["customer"]

        # Redis away: the mail is fetched at most, never marked.
        env.redis.stop()
        rig.dv.deliver(koi8_mail("Ivan.Petrov@Customer.TEST",
                                 "koi8-1@customer.test"))
        time.sleep(2.0)  # ten polls
        ms = rig.dv.messages()
        assert len(ms) == 1 and not ms[0]["seen"], \
            "marked before it was logged (Redis down): %s" % (
                [(m["name"], m["flags"]) for m in ms])
        env.redis.start()

        e = rig.wait_mail("koi8-1@customer.test", 30)
        rig.wait_seen("koi8-1@customer.test")
        assert e["subject"] == SUBJ_RU, e["subject"]
        assert norm(e["text"]) == norm(BODY_RU), e["text"]
        assert e["customer"] == known, (e["customer"], known)
        f = e["fields"]
        assert f.get("kind") == "message", f
        assert f.get("mailbox") == "support", f
        assert addr_of(f.get("from")) == "ivan.petrov@customer.test", f
        assert f["from"].get("name") == NAME_RU, f
        assert [addr_of(x) for x in f.get("to")] == [MBOX], f
        assert int(f.get("uid")) == 1, f
        cv = e["conversation"]
        assert re.match(r"^cv_\d+$", cv or ""), e
        # Exactly one log entry for the mail, also after many more polls.
        time.sleep(1.0)
        assert len(rig.by_mid()["koi8-1@customer.test"]) == 1

        # Routed: offered to alice, the only online agent.
        wait_until(lambda: "alice" in offers(env, cv), 10, 0.05,
                   "an offer of %s to alice" % cv)
        c = conv(env, cv)
        assert c["channel"] == "email" and c["customer"] == known, c
        assert c["subject"] == SUBJ_RU, c
        r = rig.agent("alice").post("/api/v1/conversations/%s/accept" % cv)
        assert r.status == 200 and r.json["agent"] == "alice", r

        # The timeline through the API shows the same text.
        tl = apiutil.timeline(env, "conversations", cv)
        ins = [x for x in tl if x["direction"] == "in"]
        assert len(ins) == 1 and ins[0]["subject"] == SUBJ_RU and \
            norm(ins[0]["text"]) == norm(BODY_RU), ins

        # An unknown address: a new customer with that e-mail identity.
        assert customer_by_email(env, "petr@other.test") is None
        rig.dv.deliver(koi8_mail("petr@other.test", "koi8-2@other.test",
                                 subject="Вопрос о доставке",
                                 body="Добрый день! Сколько стоит "
                                 "доставка в Тверь?", name="Пётр"))
        e2 = rig.wait_mail("koi8-2@other.test")
        assert e2["subject"] == "Вопрос о доставке", e2
        assert norm(e2["text"]) == \
            "Добрый день! Сколько стоит доставка в Тверь?", e2["text"]
        cu = customer_by_email(env, "petr@other.test")
        assert cu and cu["id"] == e2["customer"] != known, (cu, e2)
        rig.wait_seen("koi8-2@other.test")
        m = rig.metrics()
        assert metric(m, "sb_mail_received_total", mailbox="support",
                      kind="message") == 2, [
            ln for ln in m.splitlines() if "sb_mail_" in ln]
        assert metric(m, "sb_imap_polls_total", mailbox="support") >= 5


# --------------------------------------------------------------------------
# 2+3. The agent's answer, threading both ways.

def first_conversation(rig, mid, frm="ivan@customer.test"):
    """Deliver a KOI8-R mail, wait until logged and offered; alice
    accepts. Returns the log entry."""
    rig.online("alice")
    rig.dv.deliver(koi8_mail(frm, mid))
    e = rig.wait_mail(mid)
    cv = e["conversation"]
    wait_until(lambda: "alice" in offers(rig.env, cv), 10, 0.05,
               "offer of %s" % cv)
    r = rig.agent("alice").post("/api/v1/conversations/%s/accept" % cv)
    assert r.status == 200, r
    return e


@timeout(150)
def test_reply_threaded_and_replies_thread_back():
    with MailRig() as rig:
        env = rig.env
        e = first_conversation(rig, "q1@customer.test")
        cv, cu = e["conversation"], e["customer"]

        r = rig.agent("alice").post("/api/v1/conversations/%s/messages" % cv,
                                    {"text": REPLY_RU, "client_id": "r1"})
        assert r.status == 201, r
        assert r.json["channel"] == "email", r.json
        mails = rig.sink.wait_count(1)
        assert len(mails) == 1, mails
        row, raw, m = mails[0]
        # Envelope and headers.
        assert row["rcpt_tos"] == ["ivan@customer.test"], row
        assert row["mail_from"].lower() in (MBOX, FROM), row
        assert addr_of(m["From"]) == MBOX, m["From"]
        assert addr_of(m["To"]) == "ivan@customer.test", m["To"]
        assert str(m["Subject"]) == "Re: %s [#%s]" % (SUBJ_RU, cv), \
            str(m["Subject"])
        assert str(m["In-Reply-To"]).strip() == "<q1@customer.test>", \
            m["In-Reply-To"]
        assert "<q1@customer.test>" in str(m["References"]).split(), \
            m["References"]
        our = str(m["Message-ID"]).strip()
        assert re.match(r"^<[^<>@\s]+@" + re.escape(DOMAIN) + r">$", our), \
            our
        assert m["Date"] is not None and m["MIME-Version"] is not None
        for name in ("from", "to", "subject", "message-id", "date"):
            assert header_names(raw).count(name) == 1, (name, raw[:800])
        # The body: UTF-8, intact through the transfer encoding and SMTP.
        body = m.get_body(("plain",))
        assert body.get_content_charset() == "utf-8", body["Content-Type"]
        assert body["Content-Transfer-Encoding"].lower() in (
            "quoted-printable", "base64"), body["Content-Transfer-Encoding"]
        assert norm(body.get_content()) == norm(REPLY_RU), \
            body.get_content()
        assert all(len(ln) <= 998 for ln in raw.split(b"\r\n")), \
            "line over 998 octets"
        assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b""), \
            "bare LF in the sent mail"
        # The answer is in the conversation's timeline.
        tl = apiutil.timeline(env, "conversations", cv)
        outs = [x for x in tl if x["direction"] == "out" and
                x["channel"] == "email"]
        assert len(outs) == 1 and norm(outs[0]["text"]) == norm(REPLY_RU), \
            outs

        # (a) A fresh mail from the same customer: a new conversation.
        rig.dv.deliver(mail("Ivan <ivan@customer.test>", "Другой вопрос",
                            "Есть ли у вас доставка в Тверь?",
                            "fresh@customer.test"))
        fresh = rig.wait_mail("fresh@customer.test")
        assert fresh["customer"] == cu, fresh
        cv2 = fresh["conversation"]
        assert cv2 and cv2 != cv, (cv, cv2)

        # (b) The customer's reply to our answer (no tag in the subject):
        # back in cv, not in the newer cv2.
        rig.dv.deliver(mail(
            "Ivan <ivan@customer.test>", "Re: " + enc_word(SUBJ_RU),
            "Спасибо!\n\n> Добрый день, Иван!", "reply1@customer.test",
            headers=["In-Reply-To: %s" % our,
                     "References: <q1@customer.test> %s" % our]))
        rep = rig.wait_mail("reply1@customer.test")
        assert rep["conversation"] == cv and rep["customer"] == cu, \
            (rep["conversation"], cv, cv2)
        assert rep["subject"] == "Re: " + SUBJ_RU, rep["subject"]
        assert norm(rep["text"]).startswith("Спасибо!"), rep["text"]
        assert rep["fields"]["in_reply_to"].strip("<>") == our.strip("<>"), \
            rep["fields"]

        # (c) References only (a mail program without In-Reply-To).
        rig.dv.deliver(mail(
            "Ivan <ivan@customer.test>", "Ещё одно", "И ещё вопрос.",
            "reply2@customer.test",
            headers=["References: <q1@customer.test>"]))
        assert rig.wait_mail("reply2@customer.test")["conversation"] == cv

        # (d) Only the [#cv_N] tag, from the same customer: joins cv.
        rig.dv.deliver(mail(
            "Ivan <ivan@customer.test>",
            enc_word("Про заказ [#%s]" % cv), "Пишу по тому же заказу.",
            "tag1@customer.test"))
        t1 = rig.wait_mail("tag1@customer.test")
        assert t1["conversation"] == cv, (t1["conversation"], cv)

        # (e) Someone else answering our Message-ID: their own
        # conversation, under their own customer.
        rig.dv.deliver(mail(
            "Olga <olga@elsewhere.test>", "Re: " + enc_word(SUBJ_RU),
            "Это не мой заказ.", "other1@elsewhere.test",
            headers=["In-Reply-To: %s" % our, "References: %s" % our]))
        o1 = rig.wait_mail("other1@elsewhere.test")
        assert o1["customer"] != cu, o1
        assert o1["conversation"] and o1["conversation"] not in (cv, cv2), \
            o1
        ocv = o1["conversation"]
        assert conv(env, ocv)["customer"] == o1["customer"]

        # (f) ... nor does someone else's [#cv_N] tag join it.
        rig.dv.deliver(mail(
            "Olga <olga@elsewhere.test>", "Вопрос [#%s]" % cv,
            "Чужой тег.", "other2@elsewhere.test"))
        o2 = rig.wait_mail("other2@elsewhere.test")
        assert o2["customer"] == o1["customer"], o2
        assert o2["conversation"] != cv, o2

        # cv holds exactly the customer's mails that name it.
        tl = apiutil.timeline(env, "conversations", cv)
        got = sorted(mid_of(x) for x in tl if x["direction"] == "in")
        assert got == sorted(["q1@customer.test", "reply1@customer.test",
                              "reply2@customer.test", "tag1@customer.test"]), \
            got
        # And nothing was sent but the one answer.
        time.sleep(0.5)
        assert len(rig.sink.index()) == 1, rig.sink.index()


# --------------------------------------------------------------------------
# 4. Automatic mail: logged, no conversation, no answer; bounces of our
# notifications fail their attempt.

@timeout(150)
def test_auto_replies_and_bounces():
    with MailRig() as rig:
        env = rig.env
        rig.online("alice")
        c = rig.boss()
        # A notification to fall back from (email, then SMS), and one with
        # e-mail only (then: a dead letter).
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "bounce1@customer.test", "phone": PHONE,
                         "channels": ["email", "sms"], "data": SHIPPED})
        b = post_ntf(c, {"event": "order.shipped", "email":
                         "bounce2@customer.test",
                         "channels": ["email"], "data": SHIPPED})
        for nid in (a["id"], b["id"]):
            n = wait_state(c, nid, "sent")
            assert [x["channel"] for x in n["attempts"]] == ["email"], n
        rig.sink.wait_count(2)
        mids = {}
        for rcpt in ("bounce1@customer.test", "bounce2@customer.test"):
            got = sink_for(rig.sink, rcpt)
            assert len(got) == 1, got
            row, raw, m = got[0]
            nid, k, mid = ntf_mid(env, m)
            assert k == 1, mid
            mids[rcpt] = (nid, mid)
        assert mids["bounce1@customer.test"][0] == a["id"], mids
        assert mids["bounce2@customer.test"][0] == b["id"], mids

        msgs = {
            "auto1@customer.test": mail(
                "Boss <boss@customer.test>", "Automatic reply: out of office",
                "I am on vacation until Monday.", "auto1@customer.test",
                headers=["Auto-Submitted: auto-replied"]),
            "auto2@customer.test": mail(
                "Boss2 <boss2@customer.test>", enc_word("Автоответ"),
                "Я в отпуске.", "auto2@customer.test",
                headers=["X-Autoreply: yes"]),
            "auto3@customer.test": mail(
                "List <news@customer.test>", "Weekly news",
                "Our news.", "auto3@customer.test",
                headers=["Precedence: bulk"]),
            "dsn-unknown@mx.customer.test": dsn(
                "unknown-42@elsewhere.test", "nobody@customer.test",
                mid="dsn-unknown@mx.customer.test"),
        }
        for raw in msgs.values():
            rig.dv.deliver(raw)
        ents = {mid: rig.wait_mail(mid) for mid in msgs}
        for mid, e in ents.items():
            want = "bounce" if mid.startswith("dsn") else "auto"
            assert e["fields"].get("kind") == want, (mid, e["fields"])
            assert not e.get("conversation"), (mid, e)
            rig.wait_seen(mid)

        # The DSNs of our two notifications (headers part; whole message).
        rig.dv.deliver(dsn(mids["bounce1@customer.test"][1],
                           "bounce1@customer.test", headers_part=True))
        rig.dv.deliver(dsn(mids["bounce2@customer.test"][1],
                           "bounce2@customer.test", headers_part=False))
        wait_until(lambda: len(get_ntf(c, a["id"])["attempts"]) == 2, 20,
                   0.1, "%s moved on to SMS" % a["id"])
        n = wait_state(c, a["id"], "sent")
        at = n["attempts"]
        assert [x["channel"] for x in at] == ["email", "sms"], n
        assert at[0].get("report") in ("undelivered", "failed") or \
            at[0]["result"] in ("permfail", "failed"), at[0]
        assert at[1]["result"] == "sent" and at[1]["to"] == PHONE, at[1]
        assert any("Order SO-1001" in t or "SO-1001" in t
                   for _n, t in rig.outbox()), rig.outbox()
        nb = wait_state(c, b["id"], "dead")
        assert [x["channel"] for x in nb["attempts"]] == ["email"], nb
        assert nb["attempts"][0].get("report") in ("undelivered", "failed") \
            or nb["attempts"][0]["result"] in ("permfail", "failed"), nb
        bounces = [e for e in rig.mail_in()
                   if e["fields"].get("kind") == "bounce"]
        assert len(bounces) == 3 and not any(
            e.get("conversation") for e in bounces), bounces

        # No conversation was opened, nothing answered, nobody offered.
        time.sleep(1.0)
        r = env.client.get("/api/v1/conversations?limit=200")
        assert r.status == 200, r
        assert r.json["conversations"] == [], r.json
        assert env.redis.cmd("SMEMBERS", "sb:rt:agent:alice:offers") == []
        assert len(rig.sink.index()) == 2, rig.sink.index()
        m = rig.metrics()
        assert metric(m, "sb_mail_received_total", mailbox="support",
                      kind="auto") == 3, m
        assert metric(m, "sb_mail_received_total", mailbox="support",
                      kind="bounce") == 3, m


# --------------------------------------------------------------------------
# 5. The quarantine.

NO_SENDER = ("To: %s\nSubject: no sender\nDate: %s\n"
             "Message-ID: <nosender@customer.test>\nMIME-Version: 1.0\n"
             "Content-Type: text/plain; charset=utf-8\n\nwho am I?\n"
             % (MBOX, email.utils.formatdate())).encode()


@timeout(150)
def test_quarantine_never_blocks_and_replays():
    big = mail("Big <big@customer.test>", "huge", "x" * 76,
               "big@customer.test") + (b"y" * 76 + b"\n") * 17000  # 1.3 MB
    # The bomb: 3,000 levels (about 210 KB, under max_size).
    with MailRig(email={"max_size": "1M", "max_depth": "10"}) as rig:
        env = rig.env
        rig.dv.deliver(nesting_bomb(3000, "bomb@customer.test"))  # 1
        rig.dv.deliver(big)                                         # 2
        rig.dv.deliver(NO_SENDER)                                   # 3
        rig.dv.deliver(mail("Good <good@customer.test>", "После бомбы",
                            "Хорошее письмо.", "good@customer.test"))
        e = rig.wait_mail("good@customer.test", 30)
        assert e["subject"] == "После бомбы" and \
            norm(e["text"]) == "Хорошее письмо.", e
        boss = rig.boss()

        def qlist():
            r = boss.get("/api/v1/quarantine")
            assert r.status == 200, r
            return r.json["entries"]
        wait_until(lambda: len(qlist()) == 3, 10, 0.1, "3 in quarantine")
        ents = qlist()
        by_uid = {int(x["uid"]): x for x in ents}
        assert sorted(by_uid) == [1, 2, 3], ents
        for x in ents:
            assert x["mailbox"] == "support" and x["reason"], x
            assert re.match(r"^mq_\d+$", x["id"]), x
        assert re.search(r"(?i)depth|nest", by_uid[1]["reason"]), by_uid[1]
        assert re.search(r"(?i)size|large|big", by_uid[2]["reason"]), \
            by_uid[2]
        assert re.search(r"(?i)sender|from", by_uid[3]["reason"]), by_uid[3]
        # None of them is in the log; all four are done for the mailbox.
        logged = rig.by_mid()
        for mid in ("bomb@customer.test", "big@customer.test",
                    "nosender@customer.test"):
            assert mid not in logged, mid
        wait_until(lambda: all(m["seen"] for m in rig.dv.messages()), 10,
                   0.1, "all four \\Seen")
        # Never fetched again in a loop.
        time.sleep(1.5)
        assert len(qlist()) == 3
        m = rig.metrics()
        assert metric(m, "sb_mail_quarantined_total", mailbox="support") \
            == 3, [ln for ln in m.splitlines() if "quarantined" in ln]
        r = boss.get("/api/v1/quarantine/" + by_uid[1]["id"])
        assert r.status == 200, r
        raw = r.json.get("raw")
        if raw is None:
            raw = base64.b64decode(r.json["raw_base64"]).decode()
        assert "bomb@customer.test" in raw and raw.count("--b2999--") == 1, \
            raw[:300]
        assert r.json["reason"] == by_uid[1]["reason"], r.json
        # Only operators: the "test" key has no admin scope.
        assert env.client.get("/api/v1/quarantine").status == 403

        # Replay: the bomb is still a bomb (stays, with its reason).
        r = boss.post("/api/v1/quarantine/%s/replay" % by_uid[1]["id"])
        assert r.status in (200, 422), r
        assert r.json["result"] == "quarantined" and r.json["reason"], r.json
        assert by_uid[1]["id"] in [x["id"] for x in qlist()]
        assert "bomb@customer.test" not in rig.by_mid()

        # 20 nested levels: over max_depth 10, quarantined; replayed once
        # the limit is 64, ingested, and gone from the quarantine.
        rig.dv.deliver(nesting_bomb(20, "deep20@customer.test"))   # 5
        wait_until(lambda: len(qlist()) == 4 or
                   "deep20@customer.test" in rig.by_mid(), 10, 0.1,
                   "deep20 handled")
        assert "deep20@customer.test" not in rig.by_mid(), \
            "20 nested levels accepted with [email] max_depth = 10"
        new = [x for x in qlist() if int(x["uid"]) == 5]
        assert len(new) == 1, qlist()
        env.daemon.stop()
        env.conf["email"]["max_depth"] = "64"
        env.write_config()
        env.daemon.start()
        boss = rig.boss()
        r = boss.post("/api/v1/quarantine/%s/replay" % new[0]["id"])
        assert r.status == 200, r
        assert r.json["result"] == "ingested" and r.json["contact"], r.json
        e = rig.wait_mail("deep20@customer.test", 5)
        assert e["id"] == r.json["contact"], (e["id"], r.json)
        assert norm(e["text"]) == "boom", e
        assert new[0]["id"] not in [x["id"] for x in qlist()]
        assert boss.post("/api/v1/quarantine/mq_999999/replay").status \
            == 404
        # The bomb stays quarantined and unlogged after all this.
        assert [x["id"] for x in qlist()].count(by_uid[1]["id"]) == 1


# --------------------------------------------------------------------------
# 6. The connection dropped mid-fetch: nothing lost, nothing twice.

def many(n, prefix, size=30000):
    out = []
    filler = ("Строка заполнения письма номер %d, чтобы оно было "
              "побольше.\n")
    for i in range(n):
        body = "Письмо %d из %d.\n" % (i + 1, n)
        k = 0
        while len(body.encode()) < size:
            k += 1
            body += filler % k
        out.append(mail("Bulk %d <bulk%d@customer.test>" % (i, i % 7),
                        "Bulk %d" % i, body, "%s-%d@customer.test" % (
                            prefix, i)))
    return out


def assert_exactly_once(rig, mids):
    by = rig.by_mid()
    missing = [m for m in mids if m not in by]
    dups = {m: [e["id"] for e in by[m]] for m in mids
            if len(by.get(m, [])) > 1}
    assert not missing, "%d never logged, e.g. %s" % (len(missing),
                                                       missing[:5])
    assert not dups, "%d logged twice, e.g. %s" % (len(dups),
                                                    list(dups.items())[:3])


@timeout(240)
def test_dovecot_stopped_mid_fetch():
    # enough mail, in small batches, that the daemon is still at it when
    # Dovecot stops (it takes in ~1,000 a second)
    N = 1000
    # small batches: many fetch/ingest/mark rounds to be caught in
    with MailRig(start=False, mailbox={"batch": "2"},
                 expect_errors=(r"(?i)imap", r"(?i)mailbox")) as rig:
        env = rig.env
        raws = many(N, "drop")
        mids = ["drop-%d@customer.test" % i for i in range(N)]
        rig.dv.deliver_many(raws)
        rig.start()
        wait_until(lambda: len(rig.mail_in()) >= 1, 60, 0.01,
                   "the first of %d mails logged" % N)
        rig.dv.stop()
        at_stop = len(rig.mail_in())
        assert 0 < at_stop < N, \
            "all %d were in before Dovecot could be stopped" % at_stop
        time.sleep(1.5)  # polls fail meanwhile
        assert env.daemon.alive()
        rig.dv.start()
        # Once more, later in the run.
        wait_until(lambda: len(rig.mail_in()) >= min(at_stop + 60, N - 1),
                   120, 0.01, "more mails after the restart")
        rig.dv.restart(pause=0.5)
        wait_until(lambda: len(rig.by_mid()) >= N, 180, 0.2,
                   "all %d mails logged" % N)
        time.sleep(1.0)
        assert_exactly_once(rig, mids)
        assert len(rig.mail_in()) == N, len(rig.mail_in())
        wait_until(lambda: all(m["seen"] for m in rig.dv.messages()), 20,
                   0.2, "all %d \\Seen" % N)
        assert len(rig.dv.messages()) == N
        r = rig.boss().get("/api/v1/quarantine")
        assert r.status == 200 and r.json["entries"] == [], r.json
        m = rig.metrics()
        assert metric(m, "sb_imap_errors_total", mailbox="support") >= 1, \
            [ln for ln in m.splitlines() if "imap" in ln]


class CutProxy:
    """A TCP proxy 127.0.0.1:port -> Dovecot that cuts connections: the
    first connection whose server-to-client bytes reach cuts[0] gets
    exactly that many bytes and is then closed on both sides, the next
    one to reach cuts[1] likewise, and so on: the server 'dropping' the
    connection in the middle of a response (a FETCH literal, for sizes
    inside a batch of bodies)."""

    def __init__(self, target_port, cuts):
        self.target = target_port
        self.pending = list(cuts)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(16)
        self.port = self.lsock.getsockname()[1]
        self.stop_ev = threading.Event()
        self.conns = 0
        self.cut_done = []   # (connection number, bytes passed)
        self.lock = threading.Lock()
        self.threads = []
        self.th = threading.Thread(target=self._accept, daemon=True)
        self.th.start()

    def _accept(self):
        self.lsock.settimeout(0.2)
        while not self.stop_ev.is_set():
            try:
                c, _ = self.lsock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with self.lock:
                self.conns += 1
                k = self.conns
            t = threading.Thread(target=self._pipe, args=(c, k),
                                 daemon=True)
            t.start()
            self.threads.append(t)

    def _take_cut(self, down, n):
        """The cut size this connection hits with n more bytes, or None."""
        with self.lock:
            if self.pending and down + n >= self.pending[0]:
                return self.pending.pop(0)
        return None

    def _pipe(self, c, k):
        try:
            s = socket.create_connection(("127.0.0.1", self.target), 5)
        except OSError:
            c.close()
            return
        down = 0
        socks = [c, s]
        deadline = time.monotonic() + 600
        try:
            while not self.stop_ev.is_set() and time.monotonic() < deadline:
                rd, _, _ = select.select(socks, [], [], 0.2)
                for x in rd:
                    data = x.recv(65536)
                    if not data:
                        return
                    if x is c:
                        s.sendall(data)
                        continue
                    cut = self._take_cut(down, len(data))
                    if cut is not None:
                        c.sendall(data[:max(0, cut - down)])
                        with self.lock:
                            self.cut_done.append((k, cut))
                        return
                    down += len(data)
                    c.sendall(data)
        except OSError:
            pass
        finally:
            for x in socks:
                try:
                    x.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                x.close()

    def close(self):
        self.stop_ev.set()
        self.lsock.close()
        self.th.join(5)
        for t in self.threads:
            t.join(5)


@timeout(180)
def test_connection_cut_mid_fetch_by_proxy():
    with MailRig(start=False,
                 expect_errors=(r"(?i)imap", r"(?i)mailbox")) as rig:
        env = rig.env
        raws = many(60, "cut", size=20000)
        mids = ["cut-%d@customer.test" % i for i in range(60)]
        rig.dv.deliver_many(raws)
        # Two connections are cut inside a FETCH literal (about 20 KB per
        # message): after ~5 and ~16 messages' worth of bytes.
        proxy = CutProxy(rig.dv.imap_port, [110000, 330000])
        try:
            env.conf["mailbox support"]["url"] = \
                "imap://127.0.0.1:%d/INBOX" % proxy.port
            rig.start()
            wait_until(lambda: len(rig.by_mid()) >= 60, 120, 0.1,
                       "all 60 mails logged")
            time.sleep(1.0)
            assert len(proxy.cut_done) == 2 and proxy.conns >= 3, \
                (proxy.cut_done, proxy.conns)
            assert_exactly_once(rig, mids)
            assert len(rig.mail_in()) == 60
            wait_until(lambda: all(m["seen"] for m in rig.dv.messages()),
                       20, 0.2, "all 60 \\Seen")
            r = rig.boss().get("/api/v1/quarantine")
            assert r.status == 200 and r.json["entries"] == [], \
                "a cut fetch was quarantined: %s" % r.json
        finally:
            env.daemon.stop()
            proxy.close()


# --------------------------------------------------------------------------
# 7. UIDVALIDITY change.

@timeout(120)
def test_uidvalidity_change_no_duplicates():
    with MailRig(expect_errors=(r"(?i)imap", r"(?i)mailbox")) as rig:
        env = rig.env
        first = ["uv-%d@customer.test" % i for i in range(3)]
        for i, mid in enumerate(first):
            rig.dv.deliver(mail("U%d <u%d@customer.test>" % (i, i),
                                "uv %d" % i, "письмо %d" % i, mid))
        for mid in first:
            rig.wait_mail(mid)
            rig.wait_seen(mid)
        st = rig.dv.status()
        pos = env.redis.hgetall("sb:imap:support")
        assert int(pos["uidvalidity"]) == st["UIDVALIDITY"], (pos, st)
        assert int(pos["last_uid"]) == 3, pos

        old, new = rig.dv.reset_uidvalidity(unseen=True)
        assert new != old
        later = ["uv-new-%d@customer.test" % i for i in range(2)]
        for i, mid in enumerate(later):
            rig.dv.deliver(mail("N%d <n%d@customer.test>" % (i, i),
                                "uv new %d" % i, "новое %d" % i, mid))
        for mid in later:
            rig.wait_mail(mid, 30)
        wait_until(lambda: all(m["seen"] for m in rig.dv.messages()), 20,
                   0.1, "the re-read mailbox all \\Seen")
        time.sleep(1.0)
        assert_exactly_once(rig, first + later)
        assert len(rig.mail_in()) == 5, [mid_of(e) for e in rig.mail_in()]
        pos = env.redis.hgetall("sb:imap:support")
        assert int(pos["uidvalidity"]) == new, (pos, old, new)
        assert int(pos["last_uid"]) == 5, pos
        # New mail keeps coming in after the resync.
        rig.dv.deliver(mail("Z <z@customer.test>", "после", "после",
                            "uv-after@customer.test"))
        rig.wait_mail("uv-after@customer.test")


# --------------------------------------------------------------------------
# 8. SMTP failures.

@timeout(120)
def test_smtp_4xx_retried_then_sent_552_temporary():
    with MailRig(sink_args=["--reply-rcpt",
                            "customer.test=451 4.3.0 try again later"],
                 notify={"max_attempts": "50", "backoff_max": "500ms"}) \
            as rig:
        c = rig.boss()
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "temp@customer.test", "channels": ["email"],
                         "data": SHIPPED})

        def tempfails():
            n = get_ntf(c, a["id"])
            return [x for x in n["attempts"] if x["result"] == "tempfail"]
        wait_until(lambda: len(tempfails()) >= 2, 20, 0.05,
                   "two tempfails against 451")
        assert rig.sink.index() == []
        n = get_ntf(c, a["id"])
        assert n["state"] not in ("sent", "dead"), n
        assert "451" in (tempfails()[0].get("reason") or ""), tempfails()
        rig.sink.restart([])
        n = wait_state(c, a["id"], "sent", 20)
        res = apiutil.results(n)
        assert res[-1] == "sent" and set(res[:-1]) == {"tempfail"}, res
        assert all(x["channel"] == "email" for x in n["attempts"]), n
        got = sink_for(rig.sink, "temp@customer.test")
        assert len(got) == 1, got
        # 552 (too many recipients) is temporary too.
        rig.sink.restart(["--reply-rcpt",
                          "toomany=552 5.5.3 too many recipients"])
        b = post_ntf(c, {"event": "order.shipped", "email":
                         "toomany@customer.test", "channels": ["email"],
                         "data": SHIPPED})
        wait_until(lambda: get_ntf(c, b["id"])["attempts"], 20, 0.05,
                   "an attempt")
        n = get_ntf(c, b["id"])
        assert n["attempts"][0]["result"] == "tempfail", n
        assert n["state"] not in ("dead",), n
        m = rig.metrics()
        assert metric(m, "sb_email_sent_total", result="tempfail") >= 2, m


@timeout(120)
def test_smtp_5xx_permanent_next_channel_or_dead():
    with MailRig(sink_args=["--reply-rcpt",
                            "reject=550 5.1.1 no such user"]) as rig:
        c = rig.boss()
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "reject@customer.test", "phone": PHONE,
                         "channels": ["email", "sms"], "data": SHIPPED})
        n = wait_state(c, a["id"], ("sent", "dead"), 20)
        assert [(x["channel"], x["result"]) for x in n["attempts"]] == \
            [("email", "permfail"), ("sms", "sent")], n
        assert "550" in (n["attempts"][0].get("reason") or ""), n
        b = post_ntf(c, {"event": "order.shipped", "email":
                         "reject2@customer.test", "channels": ["email"],
                         "data": SHIPPED})
        n = wait_state(c, b["id"], ("sent", "dead"), 20)
        assert n["state"] == "dead" and apiutil.results(n) == \
            ["permfail"], n
        r = c.get("/api/v1/dlq")
        assert b["id"] in [x["id"] for x in r.json["entries"]], r.json
        assert rig.sink.index() == []
        # The same relay still delivers to good addresses.
        d = post_ntf(c, {"event": "order.shipped", "email":
                         "fine@customer.test", "channels": ["email"],
                         "data": SHIPPED})
        wait_state(c, d["id"], "sent", 20)
        assert len(sink_for(rig.sink, "fine@customer.test")) == 1


@timeout(120)
def test_smtp_silent_and_dropping_server_tempfail():
    tmo = 2.0
    with MailRig(sink_args=["--silent"],
                 email={"smtp_timeout": "2s"},
                 notify={"max_attempts": "1"}) as rig:
        c = rig.boss()
        t0 = time.monotonic()
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "silent@customer.test", "phone": PHONE,
                         "channels": ["email", "sms"], "data": SHIPPED})
        wait_until(lambda: get_ntf(c, a["id"])["attempts"], tmo + 8, 0.05,
                   "the e-mail attempt's outcome")
        took = time.monotonic() - t0
        n = get_ntf(c, a["id"])
        assert n["attempts"][0]["result"] == "tempfail", n
        assert tmo * 0.7 <= took <= tmo + 5.0, \
            "silent relay: tempfail after %.1fs (smtp_timeout %.0fs)" % (
                took, tmo)
        n = wait_state(c, a["id"], "sent", 10)
        assert [x["channel"] for x in n["attempts"]] == ["email", "sms"], n
        assert rig.sink.connections() >= 1

        # A relay that drops the connection at DATA: temporary as well.
        rig.sink.restart(["--drop-after-rcpt"])
        b = post_ntf(c, {"event": "order.shipped", "email":
                         "drop@customer.test", "phone": PHONE,
                         "channels": ["email", "sms"], "data": SHIPPED})
        n = wait_state(c, b["id"], "sent", 15)
        assert [(x["channel"], x["result"]) for x in n["attempts"]] == \
            [("email", "tempfail"), ("sms", "sent")], n
        assert rig.sink.index() == []


def no_injection(sink, evil="evil.test"):
    """No mail at the sink has a Bcc header or an evil recipient."""
    for row, raw, m in sink.mails():
        assert not any(evil in r for r in row["rcpt_tos"]), row
        assert "bcc" not in header_names(raw), raw[:1000]
        assert m["Bcc"] is None, raw[:1000]


@timeout(150)
def test_header_injection_never_reaches_the_sink():
    evil = "SO-1\r\nBcc: victim@evil.test"
    with MailRig() as rig:
        env = rig.env
        c = rig.boss()
        # (1) Template data into the Subject (order.shipped: "Order
        # {{ data.order }} is on its way").
        data = dict(SHIPPED, order=evil)
        r = c.post("/api/v1/notifications", {
            "event": "order.shipped", "email": "inj1@customer.test",
            "channels": ["email"], "locale": "en", "data": data})
        assert r.status in (202, 400), r
        if r.status == 202:
            wait_state(c, r.json["id"], ("sent", "dead"), 20)
        # (2) A display name with CR/LF from a notification's inline
        # recipient.
        r = c.post("/api/v1/notifications", {
            "event": "order.shipped", "email": "inj2@customer.test",
            "name": "Eve\r\nBcc: victim@evil.test", "channels": ["email"],
            "data": SHIPPED})
        assert r.status in (202, 400), r
        if r.status == 202:
            wait_state(c, r.json["id"], ("sent", "dead"), 20)
        # (3) A customer whose mail carries encoded CR/LF in the name and
        # the subject, answered by the agent.
        rig.online("alice")
        rig.dv.deliver(mail(
            "%s <inj3@customer.test>" % enc_word(
                "Мэллори\r\nBcc: victim@evil.test"),
            enc_word("Вопрос\r\nBcc: victim@evil.test"),
            "Ответьте, пожалуйста.", "inj3@customer.test"))
        e = rig.wait_mail("inj3@customer.test")
        cv = e["conversation"]
        assert cv, e
        wait_until(lambda: "alice" in offers(env, cv), 10, 0.05, "offer")
        a = rig.agent("alice")
        r = a.post("/api/v1/conversations/%s/accept" % cv)
        assert r.status == 200, r
        r = a.post("/api/v1/conversations/%s/messages" % cv,
                   {"text": "Ответ", "client_id": "inj"})
        assert r.status in (201, 409, 422), r
        # (4) A plain notification afterwards still goes out (the relay
        # and the threads are fine).
        ok = post_ntf(c, {"event": "order.shipped", "email":
                          "ok@customer.test", "channels": ["email"],
                          "data": SHIPPED})
        wait_state(c, ok["id"], "sent", 20)
        time.sleep(1.0)
        no_injection(rig.sink)
        assert len(sink_for(rig.sink, "ok@customer.test")) == 1


# --------------------------------------------------------------------------
# STARTTLS.

@timeout(120)
def test_starttls_verified():
    with MailRig(start=False) as rig:
        env = rig.env
        certs = os.path.join(env.tmp, "sink-tls")
        ca = make_cert(certs)
        rig.sink.restart(["--tls", certs, "--require-tls"])
        env.conf["email"].update({"smtp_tls": "require",
                                  "smtp_verify": "yes",
                                  "smtp_ca_file": ca})
        rig.start()
        c = rig.boss()
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "tls@customer.test", "channels": ["email"],
                         "data": SHIPPED})
        wait_state(c, a["id"], "sent", 20)
        got = sink_for(rig.sink, "tls@customer.test")
        assert len(got) == 1 and got[0][0]["tls"] is True, got

        # A relay without STARTTLS: nothing goes out in clear text.
        rig.sink.restart([])
        b = post_ntf(c, {"event": "order.shipped", "email":
                         "clear@customer.test", "channels": ["email"],
                         "data": SHIPPED})
        wait_until(lambda: get_ntf(c, b["id"])["attempts"], 15, 0.05,
                   "an attempt")
        assert get_ntf(c, b["id"])["attempts"][0]["result"] in (
            "tempfail", "permfail"), get_ntf(c, b["id"])
        # A relay with a certificate nobody vouches for: refused too.
        other = os.path.join(env.tmp, "sink-tls-other")
        make_cert(other)
        rig.sink.restart(["--tls", other, "--require-tls"])
        d = post_ntf(c, {"event": "order.shipped", "email":
                         "untrusted@customer.test", "channels": ["email"],
                         "data": SHIPPED})
        wait_until(lambda: get_ntf(c, d["id"])["attempts"], 15, 0.05,
                   "an attempt")
        assert get_ntf(c, d["id"])["attempts"][0]["result"] in (
            "tempfail", "permfail"), get_ntf(c, d["id"])
        time.sleep(0.5)
        rcpts = [r for row in rig.sink.index() for r in row["rcpt_tos"]]
        assert rcpts == ["tls@customer.test"], rcpts


# --------------------------------------------------------------------------
# 9. List-Unsubscribe.

@timeout(120)
def test_list_unsubscribe():
    with MailRig() as rig:
        env = rig.env
        c = rig.boss()
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "unsub@customer.test", "channels": ["email"],
                         "data": SHIPPED})
        wait_state(c, a["id"], "sent", 20)
        cu = a["customer"]
        row, raw, m = rig.sink.wait_count(1)[0]
        assert str(m["Auto-Submitted"]).strip() == "auto-generated", raw[:800]
        assert str(m["List-Unsubscribe-Post"]).strip() == \
            "List-Unsubscribe=One-Click", raw[:800]
        lu = str(m["List-Unsubscribe"]).strip()
        mm = re.match(r"^<(%s(/webhooks/email/unsubscribe/(cu_\d+)\."
                      r"([^>/]+)))>$" % re.escape(PUBLIC), lu)
        assert mm, lu
        path, who, mac = mm.group(2), mm.group(3), mm.group(4)
        assert who == cu, (who, cu)

        def opt_out():
            r = env.client.get("/api/v1/customers/" + cu)
            assert r.status == 200, r
            return (r.json.get("preferences") or {}).get("opt_out") or {}

        form = {"Content-Type": "application/x-www-form-urlencoded"}
        body = "List-Unsubscribe=One-Click"
        # A GET (a link scanner) shows a page and changes nothing.
        r = env.client.get(path, token=None)
        assert r.status == 200, r
        assert "html" in (r.header("content-type") or ""), r.headers
        assert re.search(rb"(?i)<form[^>]*method=.?post", r.body), r.body
        assert opt_out() == {}, opt_out()
        # Forged links: another customer, a bad MAC.
        other = apiutil.post_ntf(c, {"event": "order.shipped", "email":
                                     "other@customer.test", "channels":
                                     ["email"], "data": SHIPPED})
        wait_state(c, other["id"], "sent", 20)
        bad_mac = mac[:-2] + ("AA" if not mac.endswith("AA") else "BB")
        for p in ("/webhooks/email/unsubscribe/%s.%s" % (other["customer"],
                                                         mac),
                  "/webhooks/email/unsubscribe/%s.%s" % (cu, bad_mac),
                  "/webhooks/email/unsubscribe/%s" % cu):
            r = env.client.post(p, body, token=None, headers=form)
            assert 400 <= r.status < 500, (p, r)
        assert opt_out() == {}, opt_out()
        r = env.client.get("/api/v1/customers/" + other["customer"])
        assert not (r.json.get("preferences") or {}).get("opt_out"), r.json
        # The one-click POST records the opt-out.
        r = env.client.post(path, body, token=None, headers=form)
        assert 200 <= r.status < 300, r
        oo = opt_out()
        assert "email" in oo, oo
        if isinstance(oo["email"], dict):
            assert oo["email"].get("source") == "list-unsubscribe", oo
        # Twice is harmless.
        r = env.client.post(path, body, token=None, headers=form)
        assert 200 <= r.status < 300, r
        m = rig.metrics()
        assert metric(m, "sb_email_unsubscribed_total") >= 1, m
        # No more e-mail for this customer.
        b = post_ntf(c, {"event": "order.shipped", "customer": cu,
                         "data": SHIPPED})
        n = wait_state(c, b["id"], ("sent", "dead"), 20)
        assert "email" not in [x["channel"] for x in n["attempts"]], n
        assert len(sink_for(rig.sink, "unsub@customer.test")) == 1

        # Links on [http] public_url (plain http, as in development): the
        # notification still goes out, with the link.
        env.daemon.stop()
        del env.conf["email"]["public_url"]
        env.write_config()
        env.daemon.start()
        c = rig.boss()
        d = post_ntf(c, {"event": "order.shipped", "email":
                         "dev@customer.test", "channels": ["email"],
                         "data": SHIPPED})
        n = wait_state(c, d["id"], ("sent", "dead"), 20)
        assert n["state"] == "sent", n
        got = sink_for(rig.sink, "dev@customer.test")
        assert len(got) == 1, got
        lu = str(got[0][2]["List-Unsubscribe"]).strip()
        assert lu.startswith("<http://127.0.0.1:%d/webhooks/email/"
                             "unsubscribe/cu_" % env.port), lu


# --------------------------------------------------------------------------
# 10. Attachments and HTML, over IMAPS.

PDF = bytes(range(256)) * 12 + b"%PDF-1.4 \x00\x01 end"
FNAME = "Счёт №42 (копия).pdf"
HTML = ("<html><head><title>t</title><script>alert('xss')</script>"
        "</head><body><p>Привет, <b>мир</b>!</p>"
        "<img src=\"http://tracker.example/p.png\">"
        "<p>Второй абзац &amp; всё.</p></body></html>")


def attachment_mail(mid):
    b = "att-b-1"
    pdf64 = base64.encodebytes(PDF).decode()
    return ("""\
From: Ivan <ivan@customer.test>
To: {mbox}
Subject: =?utf-8?B?{subj}?=
Date: {date}
Message-ID: <{mid}>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="{b}"

--{b}
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

=D0=A1=D1=87=D1=91=D1=82 =D0=B2=D0=BE =D0=B2=D0=BB=D0=BE=D0=B6=D0=B5=D0=BD=
=D0=B8=D0=B8.
--{b}
Content-Type: application/pdf; name*=utf-8''{pct}
Content-Disposition: attachment; filename*=utf-8''{pct}
Content-Transfer-Encoding: base64

{pdf}--{b}--
""".format(mbox=MBOX, date=email.utils.formatdate(), mid=mid, b=b,
           subj=base64.b64encode("Счёт".encode()).decode(),
           pct=urllib.parse.quote(FNAME.encode("utf-8"), safe=""),
           pdf=pdf64)).encode()


def html_mail(mid):
    return ("""\
From: Ivan <ivan@customer.test>
To: {mbox}
Subject: html only
Date: {date}
Message-ID: <{mid}>
MIME-Version: 1.0
Content-Type: text/html; charset=windows-1251
Content-Transfer-Encoding: 8bit

""".format(mbox=MBOX, date=email.utils.formatdate(), mid=mid)).encode() + \
        HTML.encode("cp1251") + b"\n"


@timeout(120)
def test_attachments_and_html_over_imaps():
    with MailRig(imaps=True) as rig:
        env = rig.env
        rig.dv.deliver(attachment_mail("att1@customer.test"))
        rig.dv.deliver(html_mail("html1@customer.test"))
        e = rig.wait_mail("att1@customer.test")
        assert e["subject"] == "Счёт", e
        assert norm(e["text"]) == "Счёт во вложении.", e["text"]
        atts = e["fields"].get("attachments")
        assert isinstance(atts, list) and len(atts) == 1, e["fields"]
        at = atts[0]
        assert at["filename"] == FNAME, at
        assert at["content_type"] == "application/pdf", at
        assert at["size"] == len(PDF), at
        assert at["sha256"] == hashlib.sha256(PDF).hexdigest(), at
        assert at["stored"] is True, at
        assert env.redis.cmd("EXISTS", "sb:blob:" + at["sha256"]) == 1

        a = rig.agent("alice")
        r = a.get("/api/v1/contacts/%s/attachments/0" % e["id"])
        assert r.status == 200, r
        assert r.body == PDF, (len(r.body), len(PDF))
        cd = r.header("content-disposition") or ""
        assert cd.lower().startswith("attachment"), cd
        assert urllib.parse.quote(FNAME.encode(), safe="").lower() in \
            cd.lower(), cd
        assert "text/html" not in (r.header("content-type") or ""), r.headers
        assert a.get("/api/v1/contacts/%s/attachments/1" % e["id"]).status \
            == 404
        assert env.new_client(None).get(
            "/api/v1/contacts/%s/attachments/0" % e["id"]).status == 401
        assert a.get("/api/v1/contacts/%s/html" % e["id"]).status == 404

        h = rig.wait_mail("html1@customer.test")
        text = norm(h["text"])
        assert "Привет, мир!" in text and "Второй абзац & всё." in text, \
            text
        assert "<" not in text and "alert" not in text, text
        hf = h["fields"].get("html")
        assert hf and hf["size"] > 0, h["fields"]
        r = a.get("/api/v1/contacts/%s/html" % h["id"])
        assert r.status == 200, r
        assert (r.header("content-type") or "").startswith("text/html"), \
            r.headers
        csp = r.header("content-security-policy") or ""
        assert re.search(r"(^|;)\s*sandbox(\s*;|\s*$)", csp) or \
            re.search(r"(^|;)\s*sandbox\s+[^;]*", csp), csp
        assert "allow-scripts" not in csp, csp
        assert re.search(r"default-src\s+'none'", csp), csp
        assert hashlib.sha256(r.body).hexdigest() == hf["sha256"], r.body
        assert "Привет".encode() in r.body or \
            "Привет".encode("cp1251") in r.body, r.body
        assert env.new_client(None).get(
            "/api/v1/contacts/%s/html" % h["id"]).status == 401
        # Both came over IMAPS (the poller verified Dovecot's cert).
        assert " TLS" in rig.dv.log_text() or "TLS," in rig.dv.log_text()


@timeout(120)
def test_large_mail_and_many_small_fetched():
    """A 1 MB attachment (well under max_size) and 150 small mails behind
    it: every one is fetched and logged, nothing is quarantined."""
    blob = hashlib.sha256(b"seed").digest() * (1024 * 1024 // 32)
    b = "big-b-1"
    big = ("""\
From: Ivan <ivan@customer.test>
To: {mbox}
Subject: scan
Date: {date}
Message-ID: <large1@customer.test>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="{b}"

--{b}
Content-Type: text/plain; charset=utf-8

Скан договора во вложении.
--{b}
Content-Type: application/octet-stream
Content-Disposition: attachment; filename="scan.bin"
Content-Transfer-Encoding: base64

{data}--{b}--
""".format(mbox=MBOX, date=email.utils.formatdate(), b=b,
           data=base64.encodebytes(blob).decode())).encode()
    with MailRig(start=False) as rig:
        rig.dv.deliver(big)
        mids = ["small-%d@customer.test" % i for i in range(150)]
        for i, mid in enumerate(mids):
            rig.dv.deliver(mail("S%d <s%d@customer.test>" % (i, i % 9),
                                "small %d" % i, "маленькое %d" % i, mid))
        rig.start()
        e = rig.wait_mail("large1@customer.test", 30)
        assert norm(e["text"]) == "Скан договора во вложении.", e["text"]
        at = e["fields"]["attachments"]
        assert len(at) == 1 and at[0]["size"] == len(blob) and \
            at[0]["stored"] is True, at
        r = rig.agent("alice").get("/api/v1/contacts/%s/attachments/0"
                                   % e["id"])
        assert r.status == 200 and r.body == blob, (r.status, len(r.body))
        wait_until(lambda: len(rig.by_mid()) >= 151, 60, 0.1,
                   "151 mails logged")
        assert_exactly_once(rig, mids + ["large1@customer.test"])
        r = rig.boss().get("/api/v1/quarantine")
        assert r.status == 200 and r.json["entries"] == [], r.json


@timeout(120)
def test_after_move_and_sbctl_quarantine():
    """[mailbox] after = move: what is in the log leaves INBOX for the
    folder named by move_to (the quarantined message too: it is done for
    the mailbox). sbctl quarantine list / show / replay work on it."""
    with MailRig(start=False,
                 mailbox={"after": "move", "move_to": "Processed"}) as rig:
        rig.dv.add_folder("Processed")
        rig.dv.deliver(mail("Ivan <ivan@customer.test>", "moved", "text",
                            "mv-1@customer.test"))
        rig.dv.deliver(nesting_bomb(100, "mv-bomb@customer.test"))
        rig.start()
        rig.wait_mail("mv-1@customer.test")
        wait_until(lambda: sorted(
            (m["folder"], m["message_id"]) for m in rig.dv.messages()) == [
            ("Processed", "mv-1@customer.test"),
            ("Processed", "mv-bomb@customer.test")], 20, 0.1,
            "both messages moved to Processed")

        env = rig.env
        sbctl = os.path.join(os.path.dirname(harness.SB_BIN), "sbctl")
        if not os.access(sbctl, os.X_OK):
            sbctl = os.path.join(harness.ROOT, "build", "sbctl")
        run_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "HOME": env.tmp,
                   "SB_URL": "http://127.0.0.1:%d" % env.port,
                   "SB_TOKEN": env.key("boss")}

        def sb(*args):
            p = subprocess.run([sbctl] + list(args), env=run_env,
                               capture_output=True, timeout=30)
            return p.returncode, p.stdout.decode(), p.stderr.decode()

        rc, out, err = sb("quarantine", "list")
        assert rc == 0, (rc, out, err)
        m = re.search(r"\b(mq_\d+)\b", out)
        assert m and "nesting deeper than" in out, out
        qid = m.group(1)
        rc, out, err = sb("quarantine", "show", qid)
        assert rc == 0 and "mv-bomb@customer.test" in out, (rc, out, err)
        assert "reason:" in out and "nesting" in out, out
        # replay: still too deep, stays, with one more try
        rc, out, err = sb("quarantine", "replay", qid)
        assert rc == 0 and "quarantined" in out, (rc, out, err)
        rc, out, err = sb("--json", "quarantine", "show", qid)
        assert rc == 0 and json.loads(out)["tries"] == 2, out
        rc, out, err = sb("quarantine", "show", "mq_999")
        assert rc == 1, (rc, out, err)
