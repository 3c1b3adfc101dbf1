"""kannel.py - a real Kannel (bearerbox + smsbox + fakesmsc) for the tests.

    k = Kannel(tmpdir, "http://127.0.0.1:PORT/webhooks/sms/kannel?k=secret")
    try:
        ... k.sendsms_url, k.user, k.password, k.inject_mo(...),
        ... k.mt_messages(), k.restart()
    finally:
        k.stop()

The fixture writes its own kannel.conf into tmpdir (every port a free
127.0.0.1 port, every listener bound to 127.0.0.1 and allowing 127.0.0.1
only) and starts, as children of the test process (registered with
harness._register, killed with it through PR_SET_PDEATHSIG, stopped by
PID): bearerbox, smsbox, a listening fakesmsc on the "fakemt" link that
prints every MT it receives, and an interactive fakesmsc on the "fakemo"
link whose stdin is the MO injector. Only the Python 3 stdlib is used.

Topology and formats (Kannel 1.4.5, Debian 12):

  MT: sendsms (GET/POST http://127.0.0.1:SENDSMS/cgi-bin/sendsms with user,
      pass, from, to, text, charset, coding, dlr-mask, dlr-url) -> smsbox ->
      bearerbox -> link "fakemt" -> fakesmsc, which logs
      "Got message N: <FROM TO TYPE DATA>", TYPE "text" (DATA raw UTF-8,
      which Kannel only fills with what GSM-7/Latin-1 can hold: Cyrillic
      sent with coding 0 arrives as "?"), "ucs-2" (DATA form-url-encoded
      UTF-16BE: "+" is a space byte), "data" (url-encoded 8-bit) or "udh"
      (url-encoded UDH, then url-encoded data). mt_messages() decodes them.
      Answer: 202 "0: Accepted for delivery" (or "3: Queued for later
      delivery" when bearerbox is down but smsbox is up).
  MO: inject_mo() -> fakesmsc -> link "fakemo" -> bearerbox -> smsbox ->
      HTTP POST to mo_url + "from=%p&to=%P&text=%a&time=%t&ts=%T&smsc=%i&
      id=%I&coding=%c&charset=%C" (joined with "?" or "&"). The body is the
      text: Content-Type 'text/plain; charset="UTF-8"' for coding 0, and
      'text/plain; charset="UTF-16BE"' (raw UTF-16BE bytes) for coding 2
      unless mo_recode=True (then the body, the text parameter and the
      charset are UTF-8 and coding reads 0, as for a 7-bit MO). Headers
      X-Kannel-From, -To, -Time, -SMSC, -Coding, -Service. In the query,
      text for coding 2 is the url-encoded UTF-16BE bytes. The answer body
      is never sent back as an SMS (max-messages = 0).
      A failed POST (not 2xx, or connection refused) is retried
      http_retry times, http_queue_delay seconds apart; with the default
      0 Kannel drops the MO.
  DLR: sendsms with dlr-mask and dlr-url -> Kannel GETs the dlr-url with
      its escapes filled: %d status, %A SMSC reply, %F foreign id, %T unix
      time, %p the phone (the MT's "to"), %P the short number. fakesmsc
      (smsc_fake) only ever reports success: status 8 ("SMSC accepted",
      %A = "ACK/", %F empty) for mask bit 8 and status 1 ("delivered", %F =
      a UUID) for mask bits 1/2; 2 (failed), 4 (buffered) and 16 (SMSC
      reject) are never produced. DLRs are kept in bearerbox's memory
      (dlr-storage = internal): a restart between the MT and its DLR loses
      that DLR (fakesmsc reports at once, so in practice there is none).
  Store: bearerbox keeps queued messages in a file store (store-type =
      file) in tmpdir, so restart() keeps what was accepted but not yet
      delivered; stop() keeps it too (a new Kannel on the same tmpdir
      would resend it).

Quirks met: fakesmsc exits when bearerbox goes away, so restart() starts
new fakesmsc processes too (the MT log is appended to, so mt_messages()
spans restarts); an interactive fakesmsc aborts ("double free", SIGABRT)
when its stdin is closed, which is harmless; a non-interactive fakesmsc
with "-m 1" never exits by itself. The interactive injector reads its stdin
255 bytes at a time through stdio but polls the descriptor, so the end of a
longer line (a 70-character Cyrillic SMS is ~340 bytes url-encoded) sits
unread until more input arrives: inject_mo() writes an empty line (which
fakesmsc ignores) when the MO is not counted after 0.2 s. The fake link
takes one client at a time. inject_mo() returns once bearerbox has
received the MO (its "fakemo" rcvd counter moved), not once it was POSTed.
"""

import ctypes
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request

import harness

BEARERBOX = os.environ.get("SB_KANNEL_BEARERBOX", "/usr/sbin/bearerbox")
SMSBOX = os.environ.get("SB_KANNEL_SMSBOX", "/usr/sbin/smsbox")
FAKESMSC = os.environ.get("SB_KANNEL_FAKESMSC",
                          "/usr/lib/kannel/test/fakesmsc")

MO_PARAMS = ("from=%p&to=%P&text=%a&time=%t&ts=%T&smsc=%i&id=%I"
             "&coding=%c&charset=%C")
# Bytes left as they are in fakesmsc's url-encoded DATA (shorter lines).
_SAFE = ("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
         "-_.!*'()@:,;/=?")
_GOT_RE = re.compile(r"Got message (\d+): <(.*)>\s*$")
_PR_SET_PDEATHSIG = 1


def available():
    """None when Kannel can run here, else the reason it cannot."""
    for path, pkg in ((BEARERBOX, "kannel"), (SMSBOX, "kannel"),
                      (FAKESMSC, "kannel-extras")):
        if not os.access(path, os.X_OK):
            return "no %s (apt-get install %s; see scripts/deps.sh)" % (
                path, pkg)
    return None


def _die_with_parent():
    """preexec_fn: SIGKILL this child when the test process dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _unplus(s):
    """Form-url-decode to bytes ("+" is a space, as Kannel writes it)."""
    return urllib.parse.unquote_to_bytes(s.replace("+", " "))


def decode_mt_line(body):
    """One fakesmsc line "FROM TO TYPE DATA" as a dict: from, to, type,
    text (str), raw (bytes of the message data), udh (bytes or None)."""
    parts = body.split(" ", 3)
    while len(parts) < 4:
        parts.append("")
    frm, to, typ, data = parts
    udh = None
    if typ == "text":
        raw = data.encode("utf-8", "surrogateescape")
        text = raw.decode("utf-8", "replace")
    elif typ in ("ucs-2", "ucs2"):
        raw = _unplus(data)
        text = raw.decode("utf-16-be", "replace")
    elif typ == "utf8":
        raw = _unplus(data)
        text = raw.decode("utf-8", "replace")
    elif typ == "udh":
        u, _, d = data.partition(" ")
        udh, raw = _unplus(u), _unplus(d)
        text = raw.decode("latin-1")
    else:  # "data" and anything unforeseen: 8-bit bytes
        raw = _unplus(data)
        text = raw.decode("latin-1")
    return {"from": frm, "to": to, "type": typ, "text": text, "raw": raw,
            "udh": udh}


class Kannel:
    """A private Kannel on loopback; see the module comment.

    Options (keyword): user, password, admin_password, mo_recode (bool:
    UCS-2 MO recoded to UTF-8 before the POST), http_retry (retries of a
    failed MO POST), http_queue_delay (seconds between them), log_level
    (Kannel's: 0 debug .. 4 panic), mo_params (the query appended to
    mo_url; "" for none), start (False: write the config only), limit
    (seconds to wait for start-up)."""

    def __init__(self, tmpdir, mo_url, **opts):
        reason = available()
        if reason:
            raise harness.Skip("Kannel not installed: " + reason)
        self.dir = os.path.join(tmpdir, "kannel")
        os.makedirs(self.dir, exist_ok=True)
        self.user = opts.pop("user", "sbtest")
        self.password = opts.pop("password", "sbtest-Pass-1")
        self.admin_password = opts.pop("admin_password", "sbadmin-Pass-2")
        self.mo_recode = bool(opts.pop("mo_recode", False))
        self.http_retry = int(opts.pop("http_retry", 0))
        self.http_queue_delay = int(opts.pop("http_queue_delay", 1))
        self.log_level = int(opts.pop("log_level", 1))
        params = opts.pop("mo_params", MO_PARAMS)
        start = opts.pop("start", True)
        self.limit = float(opts.pop("limit", 20.0))
        if opts:
            raise TypeError("unknown Kannel option(s): %s"
                            % ", ".join(sorted(opts)))
        if params:
            mo_url += ("&" if "?" in mo_url else "?") + params
        self.mo_url = mo_url
        self.admin_port = harness.free_port()
        self.smsbox_port = harness.free_port()
        self.sendsms_port = harness.free_port()
        self.mt_port = harness.free_port()
        self.mo_port = harness.free_port()
        ports = {self.admin_port, self.smsbox_port, self.sendsms_port,
                 self.mt_port, self.mo_port}
        if len(ports) != 5:
            raise AssertionError("free_port gave the same port twice")
        self.sendsms_url = "http://127.0.0.1:%d/cgi-bin/sendsms" % (
            self.sendsms_port)
        self.admin_url = "http://127.0.0.1:%d" % self.admin_port
        self.conf = os.path.join(self.dir, "kannel.conf")
        self.mt_log = os.path.join(self.dir, "fakesmsc-mt.log")
        self.mo_log = os.path.join(self.dir, "fakesmsc-mo.log")
        self.procs = {}
        self.starts = 0
        self._write_conf()
        if start:
            self.start()

    # ----------------------------------------------------------------------
    # Configuration and processes.

    def _write_conf(self):
        def q(s):
            if '"' in s or "\n" in s:
                raise ValueError("Kannel config value with a quote: %r" % s)
            return '"%s"' % s
        d = self.dir
        groups = [
            ("core", [
                ("admin-port", self.admin_port),
                ("admin-interface", q("127.0.0.1")),
                ("admin-password", q(self.admin_password)),
                ("status-password", q(self.admin_password)),
                ("admin-deny-ip", q("*.*.*.*")),
                ("admin-allow-ip", q("127.0.0.1")),
                ("smsbox-port", self.smsbox_port),
                ("smsbox-interface", q("127.0.0.1")),
                ("box-deny-ip", q("*.*.*.*")),
                ("box-allow-ip", q("127.0.0.1")),
                ("log-file", q(os.path.join(d, "bearerbox.log"))),
                ("log-level", self.log_level),
                ("access-log", q(os.path.join(d, "bearerbox-access.log"))),
                ("dlr-storage", "internal"),
                ("store-type", "file"),
                ("store-location", q(os.path.join(d, "kannel.store"))),
                ("store-dump-freq", 1),
            ]),
            # MT: the listening fakesmsc connects here; "-m 0" keeps it
            # from sending anything, it only logs what it receives.
            ("smsc", [
                ("smsc", "fake"), ("smsc-id", "fakemt"),
                ("port", self.mt_port), ("our-host", q("127.0.0.1")),
                ("connect-allow-ip", q("127.0.0.1")),
            ]),
            # MO: the injector fakesmsc; no MT is ever routed here.
            ("smsc", [
                ("smsc", "fake"), ("smsc-id", "fakemo"),
                ("port", self.mo_port), ("our-host", q("127.0.0.1")),
                ("connect-allow-ip", q("127.0.0.1")),
                ("allowed-smsc-id", "fakemo"),
            ]),
            ("smsbox", [
                ("bearerbox-host", q("127.0.0.1")),
                ("bearerbox-port", self.smsbox_port),
                ("sendsms-port", self.sendsms_port),
                ("sendsms-interface", q("127.0.0.1")),
                ("log-file", q(os.path.join(d, "smsbox.log"))),
                ("log-level", self.log_level),
                ("access-log", q(os.path.join(d, "smsbox-access.log"))),
                ("mo-recode", "true" if self.mo_recode else "false"),
                ("http-request-retry", self.http_retry),
                ("http-queue-delay", self.http_queue_delay),
            ]),
            ("sendsms-user", [
                ("username", q(self.user)),
                ("password", q(self.password)),
                ("user-allow-ip", q("127.0.0.1")),
                ("max-messages", 10),
                ("concatenation", "true"),
            ]),
            ("sms-service", [
                ("keyword", "default"), ("name", "mo-webhook"),
                ("catch-all", "true"),
                ("post-url", q(self.mo_url)),
                ("send-sender", "true"),
                ("max-messages", 0),
                ("omit-empty", "true"),
            ]),
        ]
        lines = ["# written by tests/integration/kannel.py"]
        for name, keys in groups:
            lines.append("")
            lines.append("group = %s" % name)
            lines += ["%s = %s" % kv for kv in keys]
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")
        # An empty store spares bearerbox's "couldn't open" errors.
        store = os.path.join(d, "kannel.store")
        if not os.path.exists(store):
            open(store, "wb").close()

    def _spawn(self, name, args, log, stdin=subprocess.DEVNULL):
        out = open(log, "ab")
        try:
            p = subprocess.Popen(args, stdin=stdin, stdout=out,
                                 stderr=subprocess.STDOUT, cwd=self.dir,
                                 preexec_fn=_die_with_parent)
        finally:
            out.close()
        harness._register(p, name)
        self.procs[name] = p
        return p

    def _check_alive(self, what):
        for name, p in self.procs.items():
            if p.poll() is not None:
                raise AssertionError(
                    "kannel: %s exited with %s while waiting for %s:\n%s"
                    % (name, p.returncode, what, self.log_tail(name)))

    def _wait(self, pred, what, limit=None):
        deadline = time.monotonic() + (limit or self.limit)
        while True:
            self._check_alive(what)
            v = pred()
            if v:
                return v
            if time.monotonic() >= deadline:
                raise AssertionError("kannel: no %s after %.0fs:\n%s"
                                     % (what, limit or self.limit,
                                        self.log_tail("bearerbox")))
            time.sleep(0.05)

    def start(self):
        """Start bearerbox, smsbox and both fakesmsc; wait until the admin
        page answers, smsbox is connected and both links are online."""
        if self.procs:
            raise AssertionError("kannel: already running")
        self.starts += 1
        try:
            self._spawn("bearerbox", [BEARERBOX, "-v", "2", self.conf],
                        os.path.join(self.dir, "bearerbox.out"))
            self._wait(lambda: self.admin_status() is not None,
                       "bearerbox admin page")
            self._spawn("smsbox", [SMSBOX, "-v", "2", self.conf],
                        os.path.join(self.dir, "smsbox.out"))
            # "-D receive" at "-v 0" prints each MT as "Got message N".
            self._spawn("fakesmsc-mt",
                        [FAKESMSC, "-H", "127.0.0.1", "-r",
                         str(self.mt_port), "-m", "0", "-v", "0",
                         "-D", "receive", "0 0 text unused"], self.mt_log)
            # Interactive (no message argument): one MO per stdin line;
            # "-i 0", or it sends one line per second.
            self._spawn("fakesmsc-mo",
                        [FAKESMSC, "-H", "127.0.0.1", "-r",
                         str(self.mo_port), "-i", "0", "-v", "1"],
                        self.mo_log, stdin=subprocess.PIPE)
            self._wait(self._ready, "smsbox and online fakemt/fakemo links")
        except BaseException:
            self._stop_procs()
            raise

    def _ready(self):
        st = self.admin_status()
        if st is None:
            return False
        box = re.search(r"Box connections:\s*\n\s*smsbox:", st)
        return bool(box) and self._link_online(st, "fakemt") and \
            self._link_online(st, "fakemo") and self._sendsms_up()

    @staticmethod
    def _link_online(status, smsc_id):
        return re.search(r"^\s*%s\[%s\].*\(online " % (smsc_id, smsc_id),
                         status, re.M) is not None

    def _sendsms_up(self):
        try:
            socket.create_connection(("127.0.0.1", self.sendsms_port),
                                     1.0).close()
            return True
        except OSError:
            return False

    def _stop_procs(self):
        """smsbox first (it flushes to bearerbox), then bearerbox, then
        the fakesmsc; each by PID, SIGKILL after a limit."""
        errs = []
        mo = self.procs.get("fakesmsc-mo")
        if mo is not None and mo.stdin is not None:
            try:
                mo.stdin.close()
            except OSError:
                pass
        for name in ("smsbox", "bearerbox", "fakesmsc-mt", "fakesmsc-mo"):
            p = self.procs.pop(name, None)
            if p is None:
                continue
            try:
                if name == "bearerbox":
                    self._stop_bearerbox(p)
                harness.stop_process(p, signal.SIGTERM, 10.0)
            except Exception as e:  # keep stopping the others
                errs.append("%s: %s" % (name, e))
        for name in list(self.procs):
            harness.stop_process(self.procs.pop(name), signal.SIGKILL, 5.0)
        if errs:
            raise AssertionError("kannel: stop: " + "; ".join(errs))

    @staticmethod
    def _stop_bearerbox(p):
        """bearerbox's first SIGTERM waits (without bound) until its queues
        are delivered, which never happens while a link is down; a second
        one ("killing nevertheless") makes it leave at once, keeping what
        is queued in the store."""
        if p.poll() is not None:
            return
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=1.5)
        except subprocess.TimeoutExpired:
            p.send_signal(signal.SIGTERM)

    def stop(self):
        """Stop every process this fixture started (idempotent)."""
        self._stop_procs()

    def stop_part(self, name):
        """Stop one process by its name ("smsbox", "fakesmsc-mt", ...) to
        make Kannel queue: without fakesmsc-mt the fakemt link goes offline
        and bearerbox keeps MT in its store; without smsbox it keeps MO.
        restart() brings everything back."""
        p = self.procs.pop(name)
        if name == "fakesmsc-mo" and p.stdin is not None:
            p.stdin.close()
        harness.stop_process(p, signal.SIGTERM, 10.0)

    def restart(self):
        """Stop bearerbox, smsbox and fakesmsc, start them again with the
        same config and ports (messages in the store survive)."""
        self._stop_procs()
        self.procs = {}
        self.start()

    def running(self):
        return bool(self.procs) and all(p.poll() is None
                                        for p in self.procs.values())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def log_tail(self, name="bearerbox", n=20):
        files = {"bearerbox": ["bearerbox.out", "bearerbox.log"],
                 "smsbox": ["smsbox.out", "smsbox.log"],
                 "fakesmsc-mt": ["fakesmsc-mt.log"],
                 "fakesmsc-mo": ["fakesmsc-mo.log"]}.get(name, [])
        out = []
        for fn in files:
            try:
                with open(os.path.join(self.dir, fn), "rb") as f:
                    lines = f.read().decode("utf-8", "replace").splitlines()
            except OSError:
                continue
            out.append("--- %s" % fn)
            out += lines[-n:]
        return "\n".join(out)

    # ----------------------------------------------------------------------
    # Status, MT and MO.

    def admin_status(self):
        """bearerbox's status.txt as text, or None when it does not
        answer."""
        url = "%s/status.txt?password=%s" % (
            self.admin_url, urllib.parse.quote(self.admin_password))
        try:
            with urllib.request.urlopen(url, timeout=2.0) as r:
                if r.status != 200:
                    return None
                return r.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return None

    def link_counters(self, smsc_id):
        """(received sms, sent sms, sent dlr) of one link, from the status
        page; None when it does not answer or lists no such link."""
        st = self.admin_status()
        if st is None:
            return None
        m = re.search(r"^\s*%s\[%s\].*rcvd: sms (\d+) .*sent: sms (\d+) "
                      r"\([^)]*\) / dlr (\d+)" % (smsc_id, smsc_id), st, re.M)
        if not m:
            return None
        return tuple(int(x) for x in m.groups())

    def sendsms(self, frm, to, text, **params):
        """One sendsms GET (text as UTF-8 with charset=UTF-8, coding=2
        unless given); returns (HTTP status, body str). A convenience for
        tests; the driver talks to sendsms_url itself."""
        q = {"user": self.user, "pass": self.password, "from": frm,
             "to": to, "text": text, "charset": "UTF-8"}
        if any(ord(c) > 127 for c in text):
            q["coding"] = "2"
        q.update({k.replace("_", "-"): str(v) for k, v in params.items()})
        url = self.sendsms_url + "?" + urllib.parse.urlencode(q)
        try:
            with urllib.request.urlopen(url, timeout=10.0) as r:
                return r.status, r.read().decode("utf-8", "replace")
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode("utf-8", "replace")

    def mt_messages(self):
        """Every MT the listening fakesmsc received so far (over restarts),
        oldest first: dicts with from, to, text (str), type, raw, udh."""
        try:
            with open(self.mt_log, "rb") as f:
                data = f.read().decode("utf-8", "surrogateescape")
        except OSError:
            return []
        out = []
        for line in data.splitlines():
            m = _GOT_RE.search(line)
            if m:
                out.append(decode_mt_line(m.group(2)))
        return out

    @staticmethod
    def mo_line(from_, to, text, coding=None):
        """The fakesmsc line for one MO. coding: None (ASCII as "text",
        anything else as UCS-2), 0/"text", 2/"ucs2", "utf8", or
        1/"data" (text: bytes or str, sent as 8-bit)."""
        if " " in from_ or " " in to or not from_ or not to:
            raise ValueError("MO numbers must be non-empty, without spaces")
        if coding is None:
            coding = 0 if all(32 <= ord(c) < 127 for c in text) else 2
        if coding in (0, "text"):
            if "\n" in text or "\r" in text:
                raise ValueError("text MO must be one line; use coding=2")
            return "%s %s text %s" % (from_, to, text)
        if coding in (2, "ucs2"):
            data, typ = text.encode("utf-16-be"), "ucs2"
        elif coding == "utf8":
            data, typ = text.encode("utf-8"), "utf8"
        elif coding in (1, "data"):
            data = text if isinstance(text, bytes) else text.encode("latin-1")
            typ = "data"
        else:
            raise ValueError("unknown MO coding %r" % (coding,))
        return "%s %s %s %s" % (from_, to, typ,
                                urllib.parse.quote(data, safe=_SAFE))

    def inject_mo(self, from_, to, text, coding=None, limit=10.0):
        """Send one MO through the injector fakesmsc; returns once bearerbox
        has received it (the fakemo link's counter moved)."""
        line = self.mo_line(from_, to, text, coding).encode("utf-8")
        before = self.link_counters("fakemo")
        if before is None:
            raise AssertionError("kannel: not running (no fakemo link)")
        p = self.procs["fakesmsc-mo"]
        p.stdin.write(line + b"\n")
        p.stdin.flush()
        deadline = time.monotonic() + limit
        nudge = time.monotonic() + 0.2
        while True:
            self._check_alive("MO counted by bearerbox")
            c = self.link_counters("fakemo")
            if c is not None and c[0] > before[0]:
                return
            now = time.monotonic()
            if now >= deadline:
                raise AssertionError(
                    "kannel: MO not received by bearerbox in %.0fs:\n%s"
                    % (limit, self.log_tail("fakesmsc-mo")))
            if now >= nudge:
                # fakesmsc polls fd 0 but reads through stdio: the end of a
                # line longer than its 255-byte buffer waits in stdio until
                # more input comes. An empty line wakes it and is ignored.
                p.stdin.write(b"\n")
                p.stdin.flush()
                nudge = now + 0.3
            time.sleep(0.03)

    # ----------------------------------------------------------------------
    # Added for the SMS driver tests and benchmark (test_sms_kannel.py,
    # tests/bench/sms/): concatenated MT reassembled, fast counting, bulk MO.

    def mt_assembled(self):
        """Every MT the listening fakesmsc received (over restarts), with
        the parts of a concatenated SMS joined (see assemble_mt), oldest
        first."""
        try:
            with open(self.mt_log, "rb") as f:
                data = f.read().decode("utf-8", "surrogateescape")
        except OSError:
            return []
        bodies = []
        for line in data.splitlines():
            m = _GOT_RE.search(line)
            if m:
                bodies.append(m.group(2))
        return assemble_mt(bodies)

    def mt_count(self):
        """How many SMS (parts) the listening fakesmsc received so far;
        cheap enough to poll during a benchmark (counts log lines)."""
        try:
            with open(self.mt_log, "rb") as f:
                return f.read().count(b": Got message ")
        except OSError:
            return 0

    def inject_mo_bulk(self, lines):
        """Send many MO lines (see mo_line) at full speed: the interactive
        injector handles one line per wake-up of its stdin, so it is
        stopped and a fakesmsc reading a file (always readable) takes the
        fakemo link instead; it leaves at the end of the file (aborting,
        harmlessly, as the interactive one does). Returns its Popen at
        once; mo_bulk_wait() waits for it, start_injector() brings the
        interactive injector back for inject_mo()."""
        if self.procs.get("fakesmsc-mo-bulk") is not None:
            raise AssertionError("kannel: a bulk MO injection is running")
        if "fakesmsc-mo" in self.procs:
            self.stop_part("fakesmsc-mo")
        self._bulk_n = getattr(self, "_bulk_n", 0) + 1
        path = os.path.join(self.dir, "mo-bulk-%d.txt" % self._bulk_n)
        with open(path, "wb") as f:
            for ln in lines:
                if "\n" in ln:
                    raise ValueError("MO line with a newline: %r" % ln)
                f.write(ln.encode("utf-8") + b"\n")
        src = open(path, "rb")
        try:
            p = self._spawn("fakesmsc-mo-bulk",
                            [FAKESMSC, "-H", "127.0.0.1", "-r",
                             str(self.mo_port), "-i", "0", "-v", "1"],
                            self.mo_log, stdin=src)
        finally:
            src.close()
        return p

    def mo_bulk_wait(self, limit=120.0):
        """Wait (bounded) for the bulk injector to reach the end of its
        file; it is then forgotten. Returns its exit code (0, or 134 for
        fakesmsc's abort at the end of input); SIGKILL after limit."""
        p = self.procs.get("fakesmsc-mo-bulk")
        if p is None:
            return None
        try:
            p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            pass
        self.procs.pop("fakesmsc-mo-bulk", None)
        rc, _ = harness.stop_process(p, signal.SIGKILL, 5.0)
        return rc

    def start_injector(self):
        """The interactive MO injector again (after inject_mo_bulk)."""
        self.mo_bulk_wait(10.0)
        if "fakesmsc-mo" in self.procs:
            return
        self._spawn("fakesmsc-mo",
                    [FAKESMSC, "-H", "127.0.0.1", "-r", str(self.mo_port),
                     "-i", "0", "-v", "1"], self.mo_log,
                    stdin=subprocess.PIPE)
        self._wait(lambda: self._link_online(self.admin_status() or "",
                                             "fakemo"),
                   "the fakemo link online again")


def split_mt_line(body):
    """One fakesmsc line "FROM TO TYPE DATA" as a dict like decode_mt_line,
    except that a concatenated part ("FROM TO udh UDH KIND DATA", KIND
    being "data" for both 8-bit and UCS-2 parts) has its UDH in "udh" and
    only its payload in "raw"; "ref", "total", "seq" come from the UDH's
    concatenation element (8- or 16-bit reference), None without one."""
    parts = body.split(" ", 3)
    while len(parts) < 4:
        parts.append("")
    if parts[2] != "udh":
        d = decode_mt_line(body)
        d.update(ref=None, total=None, seq=None)
        return d
    u, _, rest = parts[3].partition(" ")
    kind, _, data = rest.partition(" ")
    if not data and kind not in ("data", "text", "ucs-2", "ucs2"):
        kind, data = "data", rest  # no kind word: payload only
    udh = _unplus(u)
    raw = data.encode("utf-8", "surrogateescape") if kind == "text" \
        else _unplus(data)
    ref = total = seq = None
    i = 1  # udh[0] is the header length
    while i + 1 < len(udh):
        iei, ln = udh[i], udh[i + 1]
        val = udh[i + 2:i + 2 + ln]
        if iei == 0 and ln == 3 and len(val) == 3:
            ref, total, seq = val[0], val[1], val[2]
        elif iei == 8 and ln == 4 and len(val) == 4:
            ref, total, seq = (val[0] << 8) | val[1], val[2], val[3]
        i += 2 + ln
    return {"from": parts[0], "to": parts[1], "type": "udh", "kind": kind,
            "raw": raw, "udh": udh, "ref": ref, "total": total, "seq": seq,
            "text": raw.decode("latin-1")}


def _guess_text(raw):
    """Text of a reassembled payload: UTF-16BE when it reads as UCS-2 (even
    length, decodable, most high bytes below 0x20, as for Latin and
    Cyrillic), else UTF-8/Latin-1. A guess: compare raw when it matters."""
    if len(raw) % 2 == 0 and raw:
        high = raw[0::2]
        if sum(1 for b in high if b < 0x20) * 2 >= len(high):
            try:
                return raw.decode("utf-16-be"), "ucs-2"
            except UnicodeDecodeError:
                pass
    try:
        return raw.decode("utf-8"), "text"
    except UnicodeDecodeError:
        return raw.decode("latin-1"), "data"


def assemble_mt(bodies):
    """fakesmsc lines (the part inside "Got message N: <...>") as messages:
    single SMS as split_mt_line gives them (plus parts=1); the parts of a
    concatenated SMS (same from, to, reference and total) joined in
    sequence order once all have arrived, as one dict with from, to, type
    ("ucs-2" or "text", guessed), text, raw (the joined payload), parts
    (the total) and udh=None. Incomplete ones are left out. Order: by the
    arrival of the last part."""
    out = []
    pending = {}
    for body in bodies:
        m = split_mt_line(body)
        if m["ref"] is None or not m["total"]:
            m["parts"] = 1
            out.append(m)
            continue
        key = (m["from"], m["to"], m["ref"], m["total"])
        got = pending.setdefault(key, {})
        got[m["seq"]] = m["raw"]
        if len(got) >= m["total"] and \
                all(s in got for s in range(1, m["total"] + 1)):
            del pending[key]
            raw = b"".join(got[s] for s in range(1, m["total"] + 1))
            text, typ = _guess_text(raw)
            out.append({"from": m["from"], "to": m["to"], "type": typ,
                        "text": text, "raw": raw, "udh": None,
                        "parts": m["total"], "ref": m["ref"],
                        "total": m["total"], "seq": None})
    return out
