"""twiliostub.py - a Twilio-shaped SMS provider for the tests (stdlib only).

    with TwilioStub(account_sid, auth_token) as tw:
        ... [sms-provider twilio] url = tw.url ...
        tw.push(503); tw.push(429, retry_after=2); tw.push(*INVALID_TO)
        msgs = tw.wait(2)          # the Messages POSTs received so far
        msgs[0]["form"]["Body"], msgs[0]["sid"], msgs[0]["status"] ...

The stub is a threaded HTTP/1.1 server (keep-alive) on a free 127.0.0.1
port, run in a thread of the test process and stopped when the `with`
block ends. It implements the one request switchboard makes of Twilio:

    POST /2010-04-01/Accounts/{AccountSid}/Messages.json
    Authorization: Basic base64(AccountSid:AuthToken)
    form: To, From, Body, StatusCallback (others are recorded too)

A request without the right credentials (or for another account) is
answered 401 with Twilio's error JSON (code 20003). A missing To, From or
Body is a 400 like Twilio's (21604, 21603, 21602). Otherwise the next
canned answer queued with push() is given, and with none left a 201 with a
message resource as Twilio returns it: {"sid": "SM<32 hex>", "status":
"queued", "to", "from", "body", "num_segments": "N" (GSM-7 160/153 per
part, else UCS-2 70/67), "account_sid", "direction": "outbound-api", ...}.
Every request to any path is recorded: seq, time, method, path, query,
headers (names lowercased), raw body, form (name -> last value), pairs (all
name/value pairs in order), auth_ok, and the answer given (status, sid).

The module also plays Twilio towards switchboard, from Twilio's documented
webhook security scheme: sign() computes X-Twilio-Signature (HMAC-SHA1 keyed
with the auth token over the URL followed by every POST parameter, sorted by
name, as name + value; base64), and post_incoming() / post_status() send a
signed incoming-message webhook or status callback, returning
(status, body) (an Answer tuple that also carries .headers).
"""

import base64
import collections
import hashlib
import hmac
import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
import uuid
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

API_VERSION = "2010-04-01"
MESSAGES_RE = re.compile(r"^/2010-04-01/Accounts/([^/]+)/Messages\.json$")

# Twilio's own error for a bad destination, as a push() argument list.
INVALID_TO = (400, {"code": 21211, "message":
                    "The 'To' number is not a valid phone number.",
                    "more_info": "https://www.twilio.com/docs/errors/21211",
                    "status": 400})

REASONS = {200: "OK", 201: "Created", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable"}

# GSM 03.38: the basic character set, and the extension table (two
# septets each: ESC + the character).
GSM7_BASIC = ("@\u00a3$\u00a5\u00e8\u00e9\u00f9\u00ec\u00f2\u00c7\n\u00d8"
              "\u00f8\r\u00c5\u00e5\u0394_\u03a6\u0393\u039b\u03a9\u03a0"
              "\u03a8\u03a3\u0398\u039e\u00c6\u00e6\u00df\u00c9 !\"#\u00a4"
              "%&'()*+,-./0123456789:;<=>?\u00a1ABCDEFGHIJKLMNOPQRSTUVWXYZ"
              "\u00c4\u00d6\u00d1\u00dc\u00a7\u00bfabcdefghijklmnopqrstuvwxyz"
              "\u00e4\u00f6\u00f1\u00fc\u00e0")
GSM7_EXT = "\f^{}\\[~]|\u20ac"


def sms_segments(text):
    """(encoding, units, segments) of text as an SMS: "gsm7" counting
    septets (160 in one part, 153 per part when concatenated) or "ucs2"
    counting UTF-16 code units (70, 67). An empty text is one part."""
    septets = 0
    for ch in text:
        if ch in GSM7_BASIC:
            septets += 1
        elif ch in GSM7_EXT:
            septets += 2
        else:
            units = len(text.encode("utf-16-le")) // 2
            return "ucs2", units, 1 if units <= 70 else -(-units // 67)
    return "gsm7", septets, 1 if septets <= 160 else -(-septets // 153)


def basic_auth(user, password):
    raw = ("%s:%s" % (user, password)).encode("utf-8")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def error_body(status, code, message):
    return {"code": code, "message": message,
            "more_info": "https://www.twilio.com/docs/errors/%d" % code,
            "status": status}


# --------------------------------------------------------------------------
# The provider.

class _Canned:
    def __init__(self, status, body, headers, delay, drop):
        self.status = status
        self.body = body
        self.headers = list(headers or [])
        self.delay = delay
        self.drop = drop


class TwilioStub:
    """The provider; see the module docstring."""

    def __init__(self, account_sid, auth_token, timeout=30.0):
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.canned = collections.deque()
        self.records = []
        self.timeout = timeout
        self.srv = None
        self.thread = None
        self.port = None
        self.url = None

    # -- lifetime --------------------------------------------------------

    def start(self):
        srv = _Server(("127.0.0.1", 0), _Handler)
        srv.stub = self
        self.srv = srv
        self.port = srv.server_address[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.thread = threading.Thread(target=srv.serve_forever,
                                       kwargs={"poll_interval": 0.1},
                                       name="twiliostub", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.srv is None:
            return
        self.srv.shutdown()
        self.srv.server_close()
        self.thread.join(10)
        self.srv = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- control ---------------------------------------------------------

    def push(self, status, body=None, headers=None, retry_after=None,
             delay=0.0, drop=False):
        """Queue one answer for the next authenticated Messages POST: a
        status with body (dict -> JSON, str/bytes as is, None -> Twilio's
        default for the status: the message resource for 2xx, an error
        object otherwise), extra headers [(name, value)], a Retry-After,
        a delay (seconds) before answering, or drop=True to close the
        connection without an answer. Canned answers are used in order
        before the default 201."""
        hdrs = list(headers or [])
        if retry_after is not None:
            hdrs.append(("Retry-After", str(retry_after)))
        with self.lock:
            self.canned.append(_Canned(status, body, hdrs, delay, drop))

    def pending(self):
        """Canned answers not used yet."""
        with self.lock:
            return len(self.canned)

    def requests(self):
        """Every request recorded, oldest first (copies)."""
        with self.lock:
            return [dict(r) for r in self.records]

    def messages(self):
        """The Messages POSTs recorded, oldest first."""
        return [r for r in self.requests() if r["messages"]]

    def sent(self):
        """The Messages POSTs answered 2xx (the messages Twilio took)."""
        return [r for r in self.messages() if 200 <= r["status"] < 300]

    def wait(self, n, limit=10.0, what=None):
        """Wait until at least n Messages POSTs were answered; returns
        messages(). AssertionError after limit seconds."""
        deadline = time.monotonic() + limit
        with self.cond:
            while True:
                have = [r for r in self.records if r["messages"] and
                        r["status"] is not None]
                if len(have) >= n:
                    return [dict(r) for r in have]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        "twiliostub: %d request(s) to Messages.json within "
                        "%.1fs (%s), have %d: %s" % (
                            n, limit, what or "waiting", len(have),
                            json.dumps([r["form"] for r in have],
                                       ensure_ascii=False)[:1500]))
                self.cond.wait(min(left, 0.2))

    def clear(self):
        with self.lock:
            self.records = []
            self.canned.clear()

    # -- the handler's side ------------------------------------------------

    def _record(self, rec):
        with self.cond:
            rec["seq"] = len(self.records) + 1
            self.records.append(rec)
            return rec["seq"]

    def _answered(self, rec, status, sid):
        with self.cond:
            rec["status"] = status
            rec["sid"] = sid
            self.cond.notify_all()

    def _take(self):
        with self.lock:
            return self.canned.popleft() if self.canned else None

    def message_resource(self, sid, form):
        now = formatdate(usegmt=True)
        body = form.get("Body", "")
        _enc, _units, segs = sms_segments(body)
        base = "/%s/Accounts/%s/Messages/%s" % (API_VERSION,
                                                self.account_sid, sid)
        return {
            "account_sid": self.account_sid, "api_version": API_VERSION,
            "body": body, "date_created": now, "date_sent": None,
            "date_updated": now, "direction": "outbound-api",
            "error_code": None, "error_message": None,
            "from": form.get("From"), "messaging_service_sid": None,
            "num_media": "0", "num_segments": str(segs), "price": None,
            "price_unit": "USD", "sid": sid, "status": "queued",
            "subresource_uris": {"media": base + "/Media.json"},
            "to": form.get("To"), "uri": base + ".json"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    address_family = socket.AF_INET

    def handle_error(self, request, client_address):
        pass  # a client hanging up mid-request is not news


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "twiliostub"
    sys_version = ""
    timeout = 30

    def log_message(self, fmt, *args):
        pass

    def _body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            for _ in range(100000):
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n",
                                                            b""):
                        pass
                    break
                parts.append(self.rfile.read(size))
                self.rfile.readline(8)
            return b"".join(parts)
        n = int(self.headers.get("Content-Length", "0") or "0")
        if n < 0 or n > (16 << 20):
            raise ValueError("bad Content-Length")
        return self.rfile.read(n) if n else b""

    def _send(self, status, body, extra=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body, ensure_ascii=False).encode("utf-8")
        elif isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status, REASONS.get(status))
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def _handle(self):
        stub = self.server.stub
        try:
            raw = self._body()
        except ValueError:
            self.close_connection = True
            self._send(400, error_body(400, 20001, "bad body"))
            return
        url = urllib.parse.urlsplit(self.path)
        hdrs = {k.lower(): v for k, v in self.headers.items()}
        ctype = hdrs.get("content-type", "").split(";")[0].strip().lower()
        pairs = []
        if ctype == "application/x-www-form-urlencoded":
            pairs = urllib.parse.parse_qsl(raw.decode("utf-8", "replace"),
                                           keep_blank_values=True)
        m = MESSAGES_RE.match(url.path)
        rec = {"seq": 0, "time": time.time(), "method": self.command,
               "path": url.path, "query": url.query, "headers": hdrs,
               "raw": raw, "form": dict(pairs), "pairs": pairs,
               "content_type": ctype, "messages": False,
               "auth_ok": hdrs.get("authorization") == basic_auth(
                   stub.account_sid, stub.auth_token),
               "status": None, "sid": None}
        stub._record(rec)
        if not m:
            stub._answered(rec, 404, None)
            self._send(404, error_body(
                404, 20404, "The requested resource %s was not found" %
                url.path))
            return
        if self.command != "POST":
            stub._answered(rec, 405, None)
            self._send(405, error_body(405, 20004, "Method not allowed"),
                       [("Allow", "POST")])
            return
        rec["messages"] = True
        if not rec["auth_ok"] or m.group(1) != stub.account_sid:
            rec["auth_ok"] = False
            stub._answered(rec, 401, None)
            self._send(401, error_body(401, 20003, "Authenticate"),
                       [("WWW-Authenticate", 'Basic realm="Twilio API"')])
            return
        form = rec["form"]
        for field, code, what in (("To", 21604, "A 'To' phone number is "
                                   "required."),
                                  ("From", 21603, "A 'From' phone number "
                                   "is required."),
                                  ("Body", 21602, "Message body is "
                                   "required.")):
            if not form.get(field):
                stub._answered(rec, 400, None)
                self._send(400, error_body(400, code, what))
                return
        c = stub._take()
        if c is not None and c.delay:
            time.sleep(c.delay)
        if c is not None and c.drop:
            stub._answered(rec, 0, None)
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        status = c.status if c is not None else 201
        extra = c.headers if c is not None else []
        body = c.body if c is not None else None
        sid = None
        if 200 <= status < 300:
            sid = "SM" + uuid.uuid4().hex
            if body is None:
                body = stub.message_resource(sid, form)
            elif isinstance(body, dict) and "sid" in body:
                sid = body["sid"]
        elif body is None:
            code = {429: 20429, 503: 20503}.get(status, 20500)
            body = error_body(status, code, REASONS.get(status, "Error"))
        stub._answered(rec, status, sid)
        self._send(status, body, extra)

    def do_POST(self):
        self._handle()

    def do_GET(self):
        self._handle()

    def do_PUT(self):
        self._handle()

    def do_DELETE(self):
        self._handle()


# --------------------------------------------------------------------------
# Twilio towards switchboard.

def sign(token, url, params):
    """X-Twilio-Signature of a form POST to url: HMAC-SHA1 keyed with the
    auth token over url followed by each parameter as name + value, in
    order of name (a repeated name in order of value), base64-encoded.
    params: a dict or a list of (name, value) pairs."""
    pairs = list(params.items()) if isinstance(params, dict) else \
        list(params)
    data = url + "".join(k + v for k, v in sorted(pairs))
    mac = hmac.new(token.encode("utf-8"), data.encode("utf-8"),
                   hashlib.sha1).digest()
    return base64.b64encode(mac).decode("ascii")


class Answer(tuple):
    """(status, body) as a tuple, with .status, .body and .headers
    (lowercased names)."""

    def __new__(cls, status, body, headers):
        t = tuple.__new__(cls, (status, body))
        t.headers = headers
        return t

    @property
    def status(self):
        return self[0]

    @property
    def body(self):
        return self[1]


def post_form(url, token, params, via=None, sign_url=None, signature=None,
              headers=None, timeout=10.0):
    """POST params (dict or pairs) form-encoded to url as Twilio does,
    signed over sign_url (default url) with token; signature overrides the
    header (None: computed; "": no header at all). via ("http://host:port")
    sends the request there instead of to url's host (the URL Twilio
    believes it calls stays url, as behind a proxy). Returns an Answer."""
    pairs = list(params.items()) if isinstance(params, dict) else \
        list(params)
    u = urllib.parse.urlsplit(url)
    target = urllib.parse.urlsplit(via) if via else u
    if target.scheme != "http":
        raise ValueError("post_form sends plain http only: %r" % (via or url))
    path = u.path or "/"
    if u.query:
        path += "?" + u.query
    if signature is None:
        signature = sign(token, sign_url or url, pairs)
    body = urllib.parse.urlencode(pairs).encode("ascii")
    hdrs = {"Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "TwilioProxy/1.1",
            "Accept": "*/*",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4())}
    if signature != "":
        hdrs["X-Twilio-Signature"] = signature
    hdrs.update(headers or {})
    c = http.client.HTTPConnection(target.hostname, target.port or 80,
                                   timeout=timeout)
    try:
        c.request("POST", path, body=body, headers=hdrs)
        r = c.getresponse()
        data = r.read()
        return Answer(r.status, data.decode("utf-8", "replace"),
                      {k.lower(): v for k, v in r.getheaders()})
    finally:
        c.close()


def incoming_params(From, To, Body, MessageSid, AccountSid, extra=None):
    """The form of Twilio's incoming-message webhook (SMS, no media)."""
    _enc, _units, segs = sms_segments(Body)
    p = [("ToCountry", "US"), ("ToState", "CA"), ("SmsMessageSid", MessageSid),
         ("NumMedia", "0"), ("ToCity", ""), ("FromZip", ""),
         ("SmsSid", MessageSid), ("FromState", ""), ("SmsStatus", "received"),
         ("FromCity", ""), ("Body", Body), ("FromCountry", "RU"), ("To", To),
         ("ToZip", ""), ("NumSegments", str(segs)),
         ("MessageSid", MessageSid), ("AccountSid", AccountSid),
         ("From", From), ("ApiVersion", API_VERSION)]
    for k, v in (extra or {}).items():
        p = [x for x in p if x[0] != k]
        if v is not None:
            p.append((k, v))
    return p


def post_incoming(sb_url, token, From, To, Body, MessageSid, AccountSid=None,
                  extra=None, **kw):
    """Twilio's incoming-message webhook: POST to sb_url (the webhook URL
    as configured at Twilio, e.g. https://sb.example.com/webhooks/sms/
    twilio; pass via= the daemon's real address) with From, To, Body,
    MessageSid and the other fields Twilio sends, signed. extra: fields to
    add or replace (None removes). Other keywords go to post_form()."""
    params = incoming_params(From, To, Body, MessageSid,
                             AccountSid or "AC" + "0" * 32, extra)
    return post_form(sb_url, token, params, **kw)


def status_params(MessageSid, MessageStatus, ErrorCode=None, To=None,
                  From=None, AccountSid=None, extra=None):
    """The form of Twilio's status callback (as post_status sends it)."""
    p = [("SmsSid", MessageSid), ("SmsStatus", MessageStatus),
         ("MessageStatus", MessageStatus), ("MessageSid", MessageSid),
         ("AccountSid", AccountSid or "AC" + "0" * 32),
         ("ApiVersion", API_VERSION)]
    if To is not None:
        p.append(("To", To))
    if From is not None:
        p.append(("From", From))
    if ErrorCode is not None:
        p.append(("ErrorCode", str(ErrorCode)))
    for k, v in (extra or {}).items():
        p = [x for x in p if x[0] != k]
        if v is not None:
            p.append((k, v))
    return p


def post_status(callback_url, token, MessageSid, MessageStatus,
                ErrorCode=None, To=None, From=None, AccountSid=None,
                extra=None, **kw):
    """Twilio's status callback: POST to callback_url (the StatusCallback
    switchboard gave, query included; pass via= the daemon's real
    address) with MessageSid, MessageStatus (and SmsSid/SmsStatus as
    Twilio sends them), ErrorCode when given, signed over callback_url.
    Other keywords go to post_form(). Returns (status, body)."""
    p = status_params(MessageSid, MessageStatus, ErrorCode, To, From,
                      AccountSid, extra)
    return post_form(callback_url, token, p, **kw)
