"""test_sms_twilio.py - the SMS channel against a Twilio-shaped provider.

Each test starts twiliostub.py (a Twilio REST stub on a free loopback port,
in a thread of the test process) and the daemon with a private Redis
(harness.Env) configured as channels/sms/PROTOCOL.md describes: [channels]
sms = sms, [sms], and [sms-provider twilio] type twilio pointing at the
stub, public_url https://sb.example.com (the URL the provider calls, which
the webhooks are signed over; the test reaches the daemon at 127.0.0.1, so
a Host-header URL never matches). The tests play Twilio towards the
daemon with signed webhooks (twiliostub.post_incoming / post_status) and
read the results back from the API, Redis and /metrics.

Covered: the REST request we make (path, basic auth, To/From/Body with
Cyrillic intact, StatusCallback, parts on the attempt, no secret in the
log); status callbacks (sent, delivered, late and duplicate reports,
undelivered -> next channel, forged/unsigned/tampered -> 403 and nothing
changed); inbound messages (signed -> contact and customer by E.164,
duplicate MessageSid ingested once, forged -> 403 and nothing ingested,
the with-port URL form accepted, the Host header never trusted, the
rejection metric); provider answers (503 and 429 retried, Retry-After
honoured, 400 permanent); opt-out and opt-in words; an agent's reply going
out to the customer from the number they wrote to.
"""

import json
import time
import uuid

import twiliostub
from apiutil import admin, get_ntf, post_ntf, results, wait_state
from harness import Env, q, timeout, wait_until
from twiliostub import TwilioStub, post_incoming, post_status, sign

SID = "AC5ef8732a3c49700934481addd5ce1659"
TOKEN = "9f2e44c1d0b8a7e6f5c4b3a291807f6e"
OUR = "+15005550006"          # the default sender
OUR2 = "+15005550007"         # a second number of ours
PUBLIC = "https://sb.example.com"
HOOK = PUBLIC + "/webhooks/sms/twilio"
MSG_PATH = "/2010-04-01/Accounts/%s/Messages.json" % SID
SHIPPED = {"order": "SO-1001", "carrier": "СДЭК",
           "tracking_url": "https://track.example/SO-1001"}
SHIPPED_RU = ("Заказ № SO-1001 отправлен (СДЭК). Отследить: "
              "https://track.example/SO-1001")
OPTOUT_EN = "You will get no more SMS from us. Text START to come back."
OPTOUT_RU = "Вы отписаны от SMS. Чтобы вернуться, отправьте СТАРТ."
OPTIN_EN = "Welcome back: SMS notifications are on again."
OPTIN_RU = "Вы снова подписаны на SMS."


# --------------------------------------------------------------------------
# Helpers.

def tw_env(tw, extra=None, notify=None, **kw):
    """An Env whose sms channel is the sms driver with one Twilio provider
    (the stub), e-mail on the file driver, short notification backoff."""
    n = {"supersede_window": "0", "backoff_min": "200ms",
         "backoff_max": "2s", "poll_interval": "50ms"}
    n.update(notify or {})
    ov = {"channels": {"sms": "sms", "email": "file"},
          "sms": {"providers": "twilio", "default_country": "RU",
                  "max_parts": "6",
                  "optout_words": "STOP, СТОП, ОТПИСАТЬСЯ, UNSUBSCRIBE",
                  "optin_words": "START, СТАРТ, ПОДПИСАТЬСЯ",
                  "optout_reply_en": OPTOUT_EN, "optout_reply_ru": OPTOUT_RU,
                  "optin_reply_en": OPTIN_EN, "optin_reply_ru": OPTIN_RU},
          "sms-provider twilio": {"type": "twilio", "url": tw.url,
                                  "username": SID, "password": TOKEN,
                                  "from": OUR, "numbers": OUR + ", " + OUR2,
                                  "public_url": PUBLIC, "timeout": "5s"},
          "notify": n}
    for sec, keys in (extra or {}).items():
        ov.setdefault(sec, {}).update(keys)
    return Env(overrides=ov, **kw)


def daemon_url(env):
    return "http://127.0.0.1:%d" % env.port


def new_sid():
    return "SM" + uuid.uuid4().hex


def incoming(env, frm, to, body, sid=None, **kw):
    """A signed incoming message from Twilio; returns (answer, sid)."""
    sid = sid or new_sid()
    kw.setdefault("via", daemon_url(env))
    a = post_incoming(HOOK, kw.pop("token", TOKEN), frm, to, body, sid,
                      AccountSid=SID, **kw)
    return a, sid


def status_cb(env, url, sid, status, **kw):
    kw.setdefault("via", daemon_url(env))
    return post_status(url, kw.pop("token", TOKEN), sid, status,
                       AccountSid=SID, **kw)


def wait_report(c, nid, k, report, limit=5.0):
    """Until attempt k (1-based) of nid carries report; returns nid."""
    last = [None]

    def pred():
        last[0] = get_ntf(c, nid)
        atts = last[0]["attempts"]
        return len(atts) >= k and atts[k - 1].get("report") == report

    try:
        wait_until(pred, limit, 0.05, "%s.%d report %s" % (nid, k, report))
    except AssertionError as e:
        raise AssertionError("%s; last: %s" % (e, json.dumps(
            last[0], ensure_ascii=False)[:1500]))
    return last[0]


def wait_attempts(c, nid, k, limit=10.0):
    """Until nid has at least k attempts; returns it."""
    last = [None]

    def pred():
        last[0] = get_ntf(c, nid)
        return len(last[0]["attempts"]) >= k

    try:
        wait_until(pred, limit, 0.05, "%d attempts of %s" % (k, nid))
    except AssertionError as e:
        raise AssertionError("%s; last: %s" % (e, json.dumps(
            last[0], ensure_ascii=False)[:1500]))
    return last[0]


def customer_by_phone(env, phone):
    r = env.client.get("/api/v1/customers?phone=" + q(phone))
    if r.status == 404:
        return None
    assert r.status == 200, r
    return r.json


def customer(env, cu):
    r = env.client.get("/api/v1/customers/" + cu)
    assert r.status == 200, r
    return r.json


def timeline(env, cu):
    r = env.client.get("/api/v1/customers/%s/timeline?limit=200" % cu)
    assert r.status == 200, r
    return r.json["entries"]


def log_len(env):
    return env.redis.cmd("XLEN", "sb:log")


def rejected(env):
    """{(provider, reason): value} of sb_sms_webhook_rejected_total."""
    r = env.client.get("/metrics", token=None)
    assert r.status == 200, r
    out = {}
    for line in r.body.decode().splitlines():
        if not line.startswith("sb_sms_webhook_rejected_total"):
            continue
        name, _, rest = line.partition("{")
        if name != "sb_sms_webhook_rejected_total":
            continue
        labels, _, value = rest.rpartition("}")
        kv = dict(x.split("=", 1) for x in labels.split(",") if "=" in x)
        kv = {k.strip(): v.strip().strip('"') for k, v in kv.items()}
        out[(kv.get("provider"), kv.get("reason"))] = float(value)
    return out


def is_twiml_ok(a):
    ctype = a.headers.get("content-type", "")
    return a.status == 200 and "xml" in ctype and "<Response" in a.body


def sms_msgs(env, cu):
    """The customer's SMS messages (type message), newest first."""
    return [e for e in timeline(env, cu)
            if e["channel"] == "sms" and e["type"] == "message"]


def new_customer(env, phone, **fields):
    """A customer with that phone, made by an unrouted api contact."""
    r = env.client.post("/api/v1/contacts",
                        {"channel": "api", "phone": phone, "text": "signup",
                         "conversation": "none",
                         "source_id": "it-" + phone})
    assert r.status == 201, r
    cu = r.json["customer"]
    if fields:
        r = env.client.put("/api/v1/customers/" + cu, fields)
        assert r.status == 200, "PUT customer %s: %r" % (fields, r)
    return cu


# --------------------------------------------------------------------------
# 1. Our request.

def test_outbound_request_format():
    with TwilioStub(SID, TOKEN) as tw, tw_env(tw) as env:
        c = admin(env)
        a = post_ntf(c, {"event": "order.shipped", "phone": "+7 916 123-45-67",
                         "name": "Иван Петров", "locale": "ru",
                         "channels": ["sms"], "data": SHIPPED})
        m = tw.wait(1, what="the order.shipped SMS")[0]
        n = wait_state(c, a["id"], "sent")
        assert len(n["attempts"]) == 1, n
        at = n["attempts"][0]
        assert at["channel"] == "sms" and at["to"] == "+79161234567" and \
            at["result"] == "sent" and at["id"] == a["id"] + ".1", at

        assert m["method"] == "POST" and m["path"] == MSG_PATH, m
        assert m["auth_ok"], "basic auth %r" % m["headers"].get(
            "authorization")
        assert m["content_type"] == "application/x-www-form-urlencoded", m
        f = m["form"]
        assert len(m["pairs"]) == len(f), m["pairs"]
        assert f.get("To") == "+79161234567", f
        assert f.get("From") == OUR, f
        assert f.get("Body") == SHIPPED_RU, f
        assert f.get("StatusCallback") == HOOK + "/status?a=" + at["id"], f
        assert m["status"] == 201 and m["sid"], m
        # the provider's id and the cost (74 UCS-2 characters: 2 parts)
        assert at.get("provider_id") == m["sid"], (at, m["sid"])
        assert twiliostub.sms_segments(SHIPPED_RU) == ("ucs2", 74, 2)
        assert at.get("parts") == 2, at
        raw = m["raw"].decode("utf-8")
        assert TOKEN not in raw and TOKEN not in m["query"], raw

        # An English (GSM-7) text for another customer: its own parts.
        b = post_ntf(c, {"event": "order.shipped", "phone": "+79161234568",
                         "locale": "en", "channels": ["sms"],
                         "data": dict(SHIPPED, carrier="CDEK")})
        m2 = tw.wait(2)[1]
        n2 = wait_state(c, b["id"], "sent")
        body = m2["form"].get("Body", "")
        assert body == "Order SO-1001 has shipped with CDEK. Track it: " \
            "https://track.example/SO-1001", m2["form"]
        enc, _units, segs = twiliostub.sms_segments(body)
        assert enc == "gsm7" and segs == 1
        assert n2["attempts"][0].get("parts") == 1, n2
        assert m2["form"].get("To") == "+79161234568", m2["form"]
        assert m2["form"].get("StatusCallback") == \
            HOOK + "/status?a=" + b["id"] + ".1", m2["form"]

        # Nothing else went to the provider; no secret in the log.
        time.sleep(0.3)
        assert len(tw.requests()) == 2, tw.requests()
        log = env.daemon.log_text()
        assert TOKEN not in log, "the auth token is in the daemon log"
        assert SHIPPED_RU not in log, "a message body is in the daemon log"


def test_providers_default_to_file_order():
    """Without [sms] providers every [sms-provider] section is used, in
    file order (PROTOCOL.md): the driver starts and sends."""
    with TwilioStub(SID, TOKEN) as tw, \
            tw_env(tw, extra={"sms": {"providers": None}}) as env:
        assert "providers" not in env.conf["sms"]
        c = admin(env)
        a = post_ntf(c, {"event": "order.shipped", "phone": "+79161234569",
                         "locale": "ru", "channels": ["sms"],
                         "data": SHIPPED})
        m = tw.wait(1)[0]
        assert m["form"].get("Body") == SHIPPED_RU, m["form"]
        wait_state(c, a["id"], "sent")


# --------------------------------------------------------------------------
# 2. Status callbacks.

def test_status_callbacks():
    with TwilioStub(SID, TOKEN) as tw, tw_env(tw) as env:
        c = admin(env)
        a = post_ntf(c, {"event": "order.shipped", "phone": "+79161230001",
                         "locale": "ru", "channels": ["sms"],
                         "data": SHIPPED})
        m = tw.wait(1)[0]
        n = wait_state(c, a["id"], "sent")
        cb, sid = m["form"]["StatusCallback"], m["sid"]
        assert cb == HOOK + "/status?a=%s.1" % a["id"], cb
        path = cb[len(PUBLIC):]
        rej0 = sum(rejected(env).values())

        # Forged, unsigned, tampered, signed over the Host URL or over
        # another attempt's URL: 403, and the attempt does not move.
        forged = [
            ("wrong token", dict(token="not-the-token")),
            ("unsigned", dict(signature="")),
            ("garbage", dict(signature="AAAA")),
            ("tampered", dict(signature=sign(
                TOKEN, cb, twiliostub.status_params(sid, "sent",
                                                    AccountSid=SID)))),
            ("host url", dict(sign_url=daemon_url(env) + path)),
            ("other attempt", dict(sign_url=HOOK + "/status?a=%s.2"
                                   % a["id"])),
        ]
        for what, kw in forged:
            r = status_cb(env, cb, sid, "delivered", **kw)
            assert r.status == 403, "%s: %r" % (what, r)
            assert "error" in json.loads(r.body), (what, r.body)
        time.sleep(0.3)
        n = get_ntf(c, a["id"])
        assert n["state"] == "sent", n
        assert n["attempts"][0].get("report") in (None, "queued", "sent"), n
        rej1 = sum(rejected(env).values())
        assert rej1 - rej0 == len(forged), (rej0, rej1, rejected(env))
        assert all(k[0] == "twilio" for k in rejected(env)), rejected(env)

        # sent, then delivered: the notification is delivered.
        r = status_cb(env, cb, sid, "sent", To=m["form"]["To"], From=OUR)
        assert r.status == 200, r
        wait_report(c, a["id"], 1, "sent")
        assert get_ntf(c, a["id"])["state"] == "sent"
        r = status_cb(env, cb, sid, "delivered", To=m["form"]["To"],
                      From=OUR)
        assert r.status == 200, r
        n = wait_state(c, a["id"], "delivered", 5)
        assert n["attempts"][0]["report"] == "delivered", n
        # a late "sent" and a duplicate "delivered": 200, nothing moves
        for st in ("sent", "delivered", "queued"):
            r = status_cb(env, cb, sid, st)
            assert r.status == 200, (st, r)
        time.sleep(0.3)
        n = get_ntf(c, a["id"])
        assert n["state"] == "delivered", n
        assert n["attempts"][0]["report"] == "delivered", n
        reports = [e["fields"].get("report") for e in
                   reversed(timeline(env, a["customer"]))
                   if e["type"] == "status" and
                   e["fields"].get("notification") == a["id"]]
        assert reports == ["sent", "delivered"], reports

        # A report about an attempt nobody knows: 200 (logged).
        r = status_cb(env, HOOK + "/status?a=nt_999999.1", new_sid(),
                      "delivered")
        assert r.status == 200, r

        # undelivered (with Twilio's ErrorCode) moves on to the next
        # channel at once.
        b = post_ntf(c, {"event": "order.shipped", "phone": "+79161230002",
                         "email": "und@example.com", "locale": "ru",
                         "channels": ["sms", "email"], "data": SHIPPED})
        m2 = tw.wait(2)[1]
        wait_state(c, b["id"], "sent")
        r = status_cb(env, m2["form"]["StatusCallback"], m2["sid"],
                      "undelivered", ErrorCode=30003)
        assert r.status == 200, r
        n = wait_attempts(c, b["id"], 2)
        n = wait_state(c, b["id"], "sent")
        assert [x["channel"] for x in n["attempts"]] == ["sms", "email"], n
        assert n["attempts"][0]["report"] == "undelivered", n
        # a "delivered" after the final "undelivered" changes nothing
        r = status_cb(env, m2["form"]["StatusCallback"], m2["sid"],
                      "delivered")
        assert r.status == 200, r
        time.sleep(0.3)
        n = get_ntf(c, b["id"])
        assert n["attempts"][0]["report"] == "undelivered", n
        assert n["state"] == "sent", n
        assert len(tw.messages()) == 2, tw.messages()


# --------------------------------------------------------------------------
# 3. Inbound messages.

def test_inbound_signature_dedup_forged():
    # Our signer agrees with Twilio's published test vectors first.
    vp = {"CallSid": "CA1234567890ABCDE", "Caller": "+14158675309",
          "Digits": "1234", "From": "+14158675309", "To": "+18005551212"}
    assert sign("12345", "https://mycompany.com/myapp.php?foo=1&bar=2",
                vp) == "RSOYDt4T1cUTdK1PDd93/VVr8B8="
    assert sign("12345", "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                vp) == "kvajT1Ptam85bY51eRf/AJRuM3w="
    frm = "+79161112233"
    text = "Здравствуйте! Где мой заказ №42? ёЁ & 100% +1"
    with TwilioStub(SID, TOKEN) as tw, tw_env(tw) as env:
        rej0 = sum(rejected(env).values())
        assert customer_by_phone(env, frm) is None
        n0 = log_len(env)
        a, sid = incoming(env, frm, OUR, text)
        assert is_twiml_ok(a), (a, a.headers)
        assert log_len(env) == n0 + 1, "the contact is not in sb:log " \
            "when the webhook answers"
        cu = customer_by_phone(env, frm)
        assert cu is not None, "no customer for %s" % frm
        assert cu["identities"]["phone"] == [frm], cu
        ents = sms_msgs(env, cu["id"])
        assert len(ents) == 1, ents
        e = ents[0]
        assert e["type"] == "message" and e["direction"] == "in", e
        assert e["text"] == text, e
        assert e["conversation"], e
        assert sid in json.dumps(e), "MessageSid not kept on the " \
            "contact: %r" % e

        # The same MessageSid again (Twilio's retry): 200, ingested once.
        a, _ = incoming(env, frm, OUR, text, sid=sid)
        assert is_twiml_ok(a), a
        time.sleep(0.2)
        assert log_len(env) == n0 + 1
        assert len(sms_msgs(env, cu["id"])) == 1

        # Forged in every way: 403 JSON, nothing ingested, no customer.
        frm2 = "+79161114455"
        body2 = "Второе сообщение"
        sid2 = new_sid()
        params = twiliostub.incoming_params(frm2, OUR, body2, sid2, SID)
        host_url = daemon_url(env) + "/webhooks/sms/twilio"
        forged = [
            ("wrong token", dict(token="0" * 32)),
            ("unsigned", dict(signature="")),
            ("tampered body", dict(signature=sign(
                TOKEN, HOOK, twiliostub.incoming_params(
                    frm2, OUR, "другой текст", sid2, SID)))),
            ("host url", dict(sign_url=host_url)),
            ("host header", dict(sign_url="https://evil.example/webhooks/"
                                 "sms/twilio",
                                 headers={"Host": "evil.example"})),
            ("http scheme", dict(sign_url="http://sb.example.com/webhooks/"
                                 "sms/twilio")),
            ("other port", dict(sign_url="https://sb.example.com:8443/"
                                "webhooks/sms/twilio")),
        ]
        for what, kw in forged:
            a, _ = incoming(env, frm2, OUR, body2, sid=sid2, **kw)
            assert a.status == 403, "%s: %r" % (what, a)
            assert "error" in json.loads(a.body), (what, a.body)
        assert sign(TOKEN, HOOK, params) != sign(TOKEN, host_url, params)
        time.sleep(0.2)
        assert log_len(env) == n0 + 1, "a forged webhook was ingested"
        assert customer_by_phone(env, frm2) is None
        rej = rejected(env)
        assert sum(rej.values()) - rej0 == len(forged), rej
        assert set(k[0] for k in rej) == {"twilio"}, rej

        # Signed over the with-port form of the URL: accepted.
        a, _ = incoming(env, frm2, OUR, body2, sid=sid2,
                        sign_url="https://sb.example.com:443/webhooks/sms/"
                        "twilio")
        assert is_twiml_ok(a), a
        cu2 = customer_by_phone(env, frm2)
        assert cu2 is not None and cu2["identities"]["phone"] == [frm2], cu2
        ents = sms_msgs(env, cu2["id"])
        assert [e["text"] for e in ents] == [body2], ents
        assert sum(rejected(env).values()) - rej0 == len(forged)

        # A signed request without From: 400; an unknown provider: 404.
        n1 = log_len(env)
        a, _ = incoming(env, frm2, OUR, "no sender", extra={"From": None})
        assert a.status == 400, a
        a, _ = incoming(env, frm2, OUR, "to nobody",
                        via=daemon_url(env))
        assert a.status == 200, a  # control: the same but with From
        r = twiliostub.post_form(PUBLIC + "/webhooks/sms/nosuch", TOKEN,
                                 params, via=daemon_url(env))
        assert r.status == 404, r
        assert log_len(env) == n1 + 1
        assert tw.requests() == [], tw.requests()


# --------------------------------------------------------------------------
# 4. Provider answers: temporary and permanent failures.

@timeout(150)
def test_retries_503_429_400():
    with TwilioStub(SID, TOKEN) as tw, tw_env(tw) as env:
        c = admin(env)
        # 503, then the default 201: sent on the second attempt, then
        # delivered by its report.
        tw.push(503)
        a = post_ntf(c, {"event": "order.shipped", "phone": "+79162220001",
                         "locale": "ru", "channels": ["sms"],
                         "data": SHIPPED})
        n = wait_state(c, a["id"], ("sent", "dead"), 15)
        assert results(n) == ["tempfail", "sent"], n
        assert "503" in (n["attempts"][0].get("reason") or ""), n
        ms = tw.messages()
        assert [x["status"] for x in ms] == [503, 201], ms
        assert [x["form"]["StatusCallback"] for x in ms] == [
            HOOK + "/status?a=%s.%d" % (a["id"], k) for k in (1, 2)], ms
        assert ms[0]["form"]["Body"] == ms[1]["form"]["Body"] == SHIPPED_RU
        assert n["attempts"][1]["provider_id"] == ms[1]["sid"], n
        r = status_cb(env, ms[1]["form"]["StatusCallback"], ms[1]["sid"],
                      "delivered")
        assert r.status == 200, r
        n = wait_state(c, a["id"], "delivered", 5)
        assert n["attempts"][1]["report"] == "delivered", n

        # 429 with Retry-After: 2 -> not retried for 2 s.
        tw.clear()
        tw.push(429, retry_after=2)
        b = post_ntf(c, {"event": "order.shipped", "phone": "+79162220002",
                         "locale": "ru", "channels": ["sms"],
                         "data": SHIPPED})
        n = wait_state(c, b["id"], ("sent", "dead"), 15)
        assert results(n) == ["tempfail", "sent"], n
        att = n["attempts"]
        assert att[0]["retry_at"] >= att[0]["at"] + 1950, att
        ms = tw.messages()
        assert [x["status"] for x in ms] == [429, 201], ms
        gap = ms[1]["time"] - ms[0]["time"]
        assert gap >= 1.95, "retried %.3fs after a 429 with Retry-After: " \
            "2" % gap

        # 400 (Twilio 21211): permanent, the next channel at once.
        tw.clear()
        tw.push(*twiliostub.INVALID_TO)
        d = post_ntf(c, {"event": "order.shipped", "phone": "+79162220003",
                         "email": "bad-phone@example.com", "locale": "ru",
                         "channels": ["sms", "email"], "data": SHIPPED})
        n = wait_state(c, d["id"], ("sent", "dead"), 10)
        assert results(n) == ["permfail", "sent"], n
        assert [x["channel"] for x in n["attempts"]] == ["sms", "email"], n
        reason = n["attempts"][0].get("reason") or ""
        assert "400" in reason or "21211" in reason, n
        assert len(tw.messages()) == 1, tw.messages()
        # ... and with no channel left: a dead letter.
        tw.push(*twiliostub.INVALID_TO)
        e = post_ntf(c, {"event": "order.shipped", "phone": "+79162220004",
                         "locale": "ru", "channels": ["sms"],
                         "data": SHIPPED})
        n = wait_state(c, e["id"], ("sent", "dead"), 10)
        assert n["state"] == "dead" and results(n) == ["permfail"], n
        dl = c.get("/api/v1/dlq").json["entries"]
        assert [x["id"] for x in dl] == [e["id"]], dl
        time.sleep(0.5)
        assert len(tw.messages()) == 2, tw.messages()


# --------------------------------------------------------------------------
# 5. Opt-out and opt-in by SMS.

@timeout(150)
def test_opt_out_and_back_in():
    phone = "+79163330001"
    with TwilioStub(SID, TOKEN) as tw, tw_env(tw) as env:
        c = admin(env)
        cu = new_customer(env, phone)

        # A message that merely contains the word is not an opt-out.
        a, _ = incoming(env, phone, OUR, "STOP sending me paper mail please")
        assert is_twiml_ok(a), a
        assert customer(env, cu)["preferences"].get("opt_out", {}).get(
            "sms") is None
        time.sleep(0.3)
        assert tw.messages() == [], tw.messages()

        t0 = int(time.time() * 1000)
        a, _ = incoming(env, phone, OUR2, "  Stop \n")
        assert is_twiml_ok(a), a
        t1 = int(time.time() * 1000)
        prefs = customer(env, cu)["preferences"]
        oo = prefs.get("opt_out", {}).get("sms")
        assert isinstance(oo, dict), prefs
        assert oo.get("source") == "sms:" + phone, oo
        assert t0 - 1000 <= int(oo.get("at", 0)) <= t1 + 1000, (oo, t0, t1)
        ent = [e for e in timeline(env, cu) if e["type"] == "opt_out"]
        assert len(ent) == 1, timeline(env, cu)
        assert ent[0]["conversation"] is None, ent[0]
        # the confirmation, in English (Latin word, no locale)
        m = tw.wait(1, what="the opt-out confirmation")[0]
        assert m["form"].get("To") == phone, m["form"]
        assert m["form"].get("From") in (OUR, OUR2), m["form"]
        assert m["form"].get("Body") == OPTOUT_EN, m["form"]

        # No SMS notification for an opted-out customer, urgent or not.
        for prio in ("normal", "urgent"):
            n = post_ntf(c, {"event": "order.shipped", "customer": cu,
                             "channels": ["sms"], "priority": prio,
                             "data": SHIPPED})
            n = wait_state(c, n["id"], ("sent", "dead"))
            assert n["state"] == "dead" and n["attempts"] == [], n
            assert "opted out" in n["reason"], n
        time.sleep(0.3)
        assert len(tw.messages()) == 1, tw.messages()

        # A Cyrillic word from another number: the Russian confirmation.
        other = "+79163330002"
        a, _ = incoming(env, other, OUR, "стоп")
        assert is_twiml_ok(a), a
        m = tw.wait(2)[1]
        assert m["form"].get("To") == other and \
            m["form"].get("Body") == OPTOUT_RU, m["form"]
        cu2 = customer_by_phone(env, other)
        assert cu2 and cu2["preferences"]["opt_out"]["sms"]["source"] == \
            "sms:" + other, cu2

        # START: subscribed again, confirmed, and notifications flow.
        a, _ = incoming(env, phone, OUR2, "start")
        assert is_twiml_ok(a), a
        prefs = customer(env, cu)["preferences"]
        assert prefs.get("opt_out", {}).get("sms") is None, prefs
        m = tw.wait(3)[2]
        assert m["form"].get("To") == phone and \
            m["form"].get("Body") == OPTIN_EN, m["form"]
        n = post_ntf(c, {"event": "order.shipped", "customer": cu,
                         "channels": ["sms"], "locale": "ru",
                         "data": SHIPPED})
        n = wait_state(c, n["id"], ("sent", "dead"))
        assert n["state"] == "sent", n
        m = tw.wait(4)[3]
        assert m["form"].get("To") == phone and \
            m["form"].get("Body") == SHIPPED_RU, m["form"]
        # opt-out words never opened a conversation
        convs = [e for e in timeline(env, cu)
                 if e["type"] not in ("message", "notification", "status")]
        assert all(e["conversation"] is None for e in convs), convs


# --------------------------------------------------------------------------
# 6. Replies in an SMS conversation.

@timeout(120)
def test_agent_reply_goes_from_the_number_written_to():
    phone = "+79164440001"
    routing = {"routing": {"default_queue": "general", "offer_timeout": "30s",
                           "tick": "100ms", "capacity": "2"},
               "queue general": {"members": "alice",
                                 "strategy": "round_robin"}}
    with TwilioStub(SID, TOKEN) as tw, tw_env(tw, extra=routing) as env:
        alice = env.new_client(env.login("alice"))
        r = alice.put("/api/v1/agents/alice/presence", {"state": "online"})
        assert r.status == 200, r
        a, _ = incoming(env, phone, OUR2, "Привет! Когда доставка?")
        assert is_twiml_ok(a), a
        cu = customer_by_phone(env, phone)
        assert cu, "no customer"
        ents = sms_msgs(env, cu["id"])
        assert len(ents) == 1 and ents[0]["conversation"], ents
        cv = ents[0]["conversation"]
        r = env.client.get("/api/v1/conversations/" + cv)
        assert r.status == 200 and r.json["channel"] == "sms", r
        wait_until(lambda: "alice" in env.redis.hgetall(
            "sb:rt:conv:%s:offers" % cv), 5, 0.05, "the offer to alice")
        r = alice.post("/api/v1/conversations/%s/accept" % cv)
        assert r.status == 200, r
        text = "Здравствуйте! Курьер приедет завтра до 12:00."
        r = alice.post("/api/v1/conversations/%s/messages" % cv,
                       {"text": text})
        assert r.status == 201, r
        assert r.json["channel"] == "sms", r.json
        m = tw.wait(1, what="the agent's reply")[0]
        f = m["form"]
        assert m["auth_ok"] and m["path"] == MSG_PATH, m
        assert f.get("To") == phone, f
        assert f.get("From") == OUR2, "the reply went from %r, the " \
            "customer wrote to %s" % (f.get("From"), OUR2)
        assert text in f.get("Body", ""), f
        # the reply's contact: out, in the conversation, with its cost
        tl = timeline(env, cu["id"])
        rep = [e for e in tl if e["id"] == r.json["contact"]]
        assert len(rep) == 1, tl
        rep = rep[0]
        assert rep["direction"] == "out" and rep["channel"] == "sms" and \
            rep["conversation"] == cv, rep
        _e, _u, segs = twiliostub.sms_segments(f["Body"])
        assert (rep.get("fields") or {}).get("parts") == segs, rep
        assert rep.get("provider_id") == m["sid"], (rep, m["sid"])

        # The customer answers again: the same open conversation.
        a, _ = incoming(env, phone, OUR2, "Спасибо!")
        assert is_twiml_ok(a), a
        ins = [e for e in sms_msgs(env, cu["id"]) if e["direction"] == "in"]
        assert len(ins) == 2 and {e["conversation"] for e in ins} == {cv}, \
            ins
        time.sleep(0.3)
        assert len(tw.messages()) == 1, tw.messages()


@timeout(90)
def test_failover_rate_and_inflight():
    """Two providers in order: a 503 or a silent first one hands the same
    message to the second at once (one attempt, sent); the first one that
    did not answer is skipped by the next sends for a while. Then the
    rate limit (messages/s) and max_inflight hold under a burst."""
    with TwilioStub(SID, TOKEN) as tw1, TwilioStub(SID, TOKEN) as tw2:
        second = {"type": "twilio", "url": tw2.url, "username": SID,
                  "password": TOKEN, "from": OUR2, "public_url": PUBLIC,
                  "timeout": "2s"}
        extra = {"sms": {"providers": "twilio, backup"},
                 "sms-provider backup": second}
        with tw_env(tw1, extra) as env:
            c = admin(env)
            # 503 from the first: the second takes the same attempt.
            tw1.push(503)
            a = post_ntf(c, {"event": "order.shipped",
                             "phone": "+79163330001", "locale": "ru",
                             "channels": ["sms"], "data": SHIPPED})
            n = wait_state(c, a["id"], ("sent", "dead"), 10)
            assert results(n) == ["sent"], n
            m2 = tw2.wait(1, 5)
            assert m2[0]["form"]["From"] == OUR2, m2
            assert m2[0]["form"]["StatusCallback"].startswith(
                PUBLIC + "/webhooks/sms/backup/status?a="), m2
            assert [x["status"] for x in tw1.messages()] == [503]
            assert n["attempts"][0]["provider_id"] == m2[0]["sid"], n

            # A first provider that never answers (connection dropped):
            # failover, and the following sends skip it while it is down.
            tw1.clear()
            tw2.clear()
            # (twice: a request that met a closed keep-alive connection is
            # sent once more on a new one before it counts as failed)
            tw1.push(200, drop=True)
            tw1.push(200, drop=True)
            ids = []
            for i in range(3):
                # one after the other: sends queued before the failure
                # was seen still go to the first provider
                ids.append(post_ntf(c, {
                    "event": "order.shipped",
                    "phone": "+7916333001%d" % i, "locale": "ru",
                    "channels": ["sms"], "data": SHIPPED})["id"])
                n = wait_state(c, ids[-1], ("sent", "dead"), 10)
                assert results(n) == ["sent"], n
            assert tw1.sent() == [], tw1.messages()
            assert len(tw1.messages()) <= 2, tw1.messages()
            assert len(tw2.sent()) == 3, tw2.messages()
            text = env.client.get("/metrics").body.decode()
            assert 'sb_sms_failover_total{provider="twilio"} 2' in text, \
                [ln for ln in text.splitlines() if "failover" in ln]

    # rate = 5/s and max_inflight = 2 on one slow provider: 12 messages
    # take at least (12 - 5 tokens) / 5 = 1.4 s and never more than 2
    # requests are open at once.
    with TwilioStub(SID, TOKEN) as tw:
        for _ in range(12):
            tw.push(201, delay=0.15)
        extra = {"sms-provider twilio": {"rate": "5", "max_inflight": "2"}}
        with tw_env(tw, extra) as env:
            c = admin(env)
            t0 = time.monotonic()
            ids = [post_ntf(c, {"event": "order.shipped",
                                "phone": "+791644400%02d" % i,
                                "locale": "ru", "channels": ["sms"],
                                "data": SHIPPED})["id"] for i in range(12)]
            ms = tw.wait(12, 20)
            took = time.monotonic() - t0
            for nid in ids:
                wait_state(c, nid, "sent", 5)
            assert took >= 1.3, "12 messages at 5/s in %.2fs" % took
            # open requests at any instant, from arrival and answer times
            ev = sorted([(m["time"], 1) for m in ms] +
                        [(m["time"] + 0.15, -1) for m in ms])
            open_, peak = 0, 0
            for _, d in ev:
                open_ += d
                peak = max(peak, open_)
            assert peak <= 2, "%d requests open at once (max_inflight 2)" % \
                peak
