"""test_notifications.py - order and service notifications end to end.

Both doors (POST /api/v1/notifications and XADD <prefix>notify), the
rendered e-mail in the file driver's outbox, the webhook channel against
httpsink.py (retries, Retry-After, permanent failures), fallback to the next
channel, dead letters and their API, idempotency under concurrency, quiet
hours, supersession by ref, not_before, opt-out, the notify metrics and a
template reload on SIGHUP.

Every test runs its own Redis and daemon (harness.Env) and, when it needs
one, its own httpsink on a free loopback port, stopped by PID at the end.
The e-mail and SMS channels go to the file driver; each message is one file
in <tmp>/outbox ("<ms>-<attempt id>.txt": headers, a blank line, the text,
then the HTML part after a separator line).
"""

import datetime
import http.client
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time

import harness
from apiutil import admin, get_ntf, post_ntf, results, wait_state
from harness import Env, free_port, q, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
SECRET = "whsec-itest-0123456789abcdef"
HTML_SEP = "-----8<----- text/html -----8<-----\n"
SHIPPED = {"order": "SO-1001", "carrier": "<b>&\"",
           "tracking_url": "https://track.example/x?a=1&b=2"}
PAID = {"order": "SO-1001", "amount": 1500, "currency": "RUB"}


# --------------------------------------------------------------------------
# Helpers.

class Sink:
    """httpsink.py on a free loopback port (verifying our signatures)."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "httpsink.py"), "--port",
             "0", "--verify-secret", SECRET],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        harness._register(self.proc, "httpsink")
        ready, _, _ = select.select([self.proc.stdout], [], [], 15.0)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.close()
            raise AssertionError("httpsink did not start: %r" % line)
        self.port = int(line)
        self.url = "http://127.0.0.1:%d/hook" % self.port

    def call(self, method, path, body=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            out = r.read()
            assert r.status == 200, "httpsink %s %s: %d %r" % (
                method, path, r.status, out)
            return json.loads(out)
        finally:
            c.close()

    def control(self, **kw):
        return self.call("POST", "/_control", kw)

    def requests(self):
        return self.call("GET", "/_requests")

    def count(self):
        return self.call("GET", "/_count")

    def close(self):
        harness.stop_process(self.proc, signal.SIGTERM, 5.0)
        self.proc.stdout.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def ntf_env(notify=None, sink=None, extra=None, **kw):
    """An Env with e-mail and SMS on the file driver, the webhook channel
    pointed at sink (or at a closed port), no supersession wait unless
    asked for, and notify overrides."""
    n = {"supersede_window": "0", "backoff_min": "200ms",
         "backoff_max": "2s", "poll_interval": "50ms"}
    n.update(notify or {})
    ov = {"channels": {"email": "file", "sms": "file", "webhook": "webhook"},
          "webhook": {"url": sink.url if sink else
                      "http://127.0.0.1:%d/hook" % free_port(),
                      "secret": SECRET, "timeout": "5s",
                      "connect_timeout": "2s"},
          "notify": n}
    for sec, keys in (extra or {}).items():
        ov.setdefault(sec, {}).update(keys)
    return Env(overrides=ov, **kw)


def outbox(env):
    """The messages written so far, oldest first: [{"name", "headers",
    "text", "html"}]."""
    d = os.path.join(env.tmp, "outbox")
    try:
        names = sorted(n for n in os.listdir(d)
                       if not n.startswith(".") and n.endswith(".txt"))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        with open(os.path.join(d, n), encoding="utf-8") as f:
            raw = f.read()
        head, _, body = raw.partition("\n\n")
        hdrs = {}
        for line in head.split("\n"):
            k, _, v = line.partition(": ")
            hdrs[k] = v
        text, sep, html = body.partition(HTML_SEP)
        out.append({"name": n, "headers": hdrs, "text": text,
                    "html": html if sep else None})
    return out


def outbox_for(env, ntf):
    """Outbox messages of one notification (Id header nt_N.k)."""
    return [m for m in outbox(env)
            if m["headers"].get("Id", "").split(".")[0] == ntf]


def new_customer(env, email=None, phone=None, name="Test"):
    """A customer made through the contacts API (nothing is sent)."""
    body = {"channel": "email" if email else "sms", "direction": "in",
            "subject": "hello", "text": "a question", "name": name,
            "conversation": "none",
            "source_id": "it-%s" % (email or phone)}
    if email:
        body["email"] = email
    if phone:
        body["phone"] = phone
    r = env.client.post("/api/v1/contacts", body)
    assert r.status in (200, 201, 202), r
    return r.json["customer"]


def xadd(env, fields):
    args = ["XADD", "sb:notify", "*"]
    for k, v in fields.items():
        args += [k, v]
    return env.redis.cmd(*args).decode()


def rfc3339(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000.0, datetime.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ms % 1000)


def metric_samples(text, name):
    """[(labels dict, value)] of one metric family's samples."""
    out = []
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        m = re.match(r"^(\w+)(\{([^}]*)\})?\s+(\S+)$", line)
        if not m or m.group(1) != name:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
        out.append((labels, float(m.group(4))))
    return out


# --------------------------------------------------------------------------
# 1. The API door.

def test_api_email_rendered_russian():
    with ntf_env() as env:
        c = admin(env)
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "ivan@example.com", "name": "Иван Петров",
                         "locale": "ru", "channels": ["email"],
                         "data": SHIPPED})
        assert re.match(r"^nt_\d+$", a["id"]), a
        assert a["duplicate"] is False and a["customer"].startswith("cu_"), a
        n = wait_state(c, a["id"], "sent")
        assert len(n["attempts"]) == 1, n
        at = n["attempts"][0]
        assert at["result"] == "sent" and at["channel"] == "email" and \
            at["to"] == "ivan@example.com" and at["n"] == 1 and \
            at["id"] == a["id"] + ".1", at
        assert n["event"] == "order.shipped" and n["data"] == SHIPPED, n

        msgs = outbox_for(env, a["id"])
        assert len(msgs) == 1, outbox(env)
        m = msgs[0]
        assert at.get("provider_id") == m["name"], (at, m["name"])
        h = m["headers"]
        assert h["To"] == "ivan@example.com", h
        assert h["Subject"] == "Заказ № SO-1001 отправлен", h
        assert h["Customer"] == a["customer"], h
        assert "Здравствуйте, Иван Петров!" in m["text"], m["text"]
        assert "Перевозчик: <b>&\"\n" in m["text"], m["text"]
        assert "https://track.example/x?a=1&b=2" in m["text"], m["text"]
        assert "&lt;" not in m["text"] and "&amp;" not in m["text"]
        html = m["html"]
        assert html and '<html lang="ru">' in html, html
        assert "Перевозчик: &lt;b&gt;&amp;&quot;</p>" in html, html
        assert "<b>&\"" not in html, html
        assert 'href="https://track.example/x?a=1&amp;b=2"' in html, html

        # The customer's timeline: a "notification" entry for the send.
        r = c.get("/api/v1/customers/%s/timeline" % a["customer"])
        assert r.status == 200, r
        ents = [e for e in r.json["entries"]
                if e["type"] == "notification" and
                e["fields"].get("notification") == a["id"]]
        assert len(ents) == 1, r.json
        e = ents[0]
        assert e["channel"] == "email" and e["direction"] == "out", e
        assert e["fields"]["event"] == "order.shipped" and \
            e["fields"]["state"] == "sent", e
        assert e["subject"] == "Заказ № SO-1001 отправлен", e


# --------------------------------------------------------------------------
# 2. The stream door.

def test_stream_door_and_rejects():
    with ntf_env() as env:
        c = admin(env)
        # The same request through both doors renders the same message.
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "olga@example.com", "name": "Ольга", "locale": "ru",
                         "channels": ["email"], "data": SHIPPED})
        wait_state(c, a["id"], "sent")
        fields = {"event": "order.shipped", "email": "olga@example.com",
                  "name": "Ольга", "locale": "ru", "channels": "email",
                  "data": json.dumps(SHIPPED, ensure_ascii=False)}
        eid = xadd(env, fields)
        wait_until(lambda: len(outbox(env)) == 2, 10, what="stream send")
        api_msg = outbox_for(env, a["id"])[0]
        m = [x for x in outbox(env) if
             x["headers"]["Id"].split(".")[0] != a["id"]][0]
        sid = m["headers"]["Id"].split(".")[0]
        n = wait_state(c, sid, "sent")
        assert n["src"] == "stream:" + eid, n
        assert n["customer"] == a["customer"], (n, a)
        assert results(n) == ["sent"], n
        assert m["headers"]["Subject"] == api_msg["headers"]["Subject"]
        assert m["text"] == api_msg["text"] and \
            m["html"] == api_msg["html"], (m, api_msg)

        # Bad entries go to the rejects stream; the next good one is sent.
        good = dict(fields, email="next@example.com", locale="en")
        bad = [
            (dict(fields, event="order.teleported"), "order.teleported"),
            (dict(fields, data='{"order": "SO-1",'), "data"),
            (dict(fields, phone="12"), "phone"),
            (dict(fields, colour="green"), "colour"),
        ]
        ids = [xadd(env, f) for f, _ in bad]
        gid = xadd(env, good)

        def rejects():
            return env.redis.xrange_all("sb:notify:rejects")

        wait_until(lambda: len(rejects()) >= len(bad), 10,
                   what="%d rejects" % len(bad))
        rej = {f["source"]: f for _, f in rejects()}
        for (f, word), i in zip(bad, ids):
            assert i in rej, "entry %s (%r) not rejected: %r" % (i, f, rej)
            assert word in rej[i]["reason"], \
                "reject reason %r does not name %r" % (rej[i]["reason"], word)
            raw = json.loads(rej[i]["fields"])
            assert raw.get("event") == f["event"], raw
            assert int(rej[i]["at"]) > 0
        assert "unknown event" in rej[ids[0]]["reason"], rej[ids[0]]
        assert "unknown field" in rej[ids[3]]["reason"], rej[ids[3]]
        assert gid not in rej, rej[gid]
        wait_until(lambda: any(x["headers"]["To"] == "next@example.com"
                               for x in outbox(env)), 10,
                   what="the good entry after the bad ones")
        m = [x for x in outbox(env)
             if x["headers"]["To"] == "next@example.com"][0]
        assert m["headers"]["Subject"] == "Order SO-1001 is on its way", m
        assert len(outbox(env)) == 3, [x["name"] for x in outbox(env)]
        assert len(rejects()) == len(bad)


# --------------------------------------------------------------------------
# 3. Refusals.

def test_bad_requests_and_auth():
    with ntf_env() as env:
        c = admin(env)
        ok = {"event": "order.shipped", "email": "a@example.com",
              "data": SHIPPED}
        no_carrier = dict(SHIPPED)
        del no_carrier["carrier"]
        cases = [
            (dict(ok, event="order.teleported"), "event", "unknown event"),
            (dict(ok, data=no_carrier), "data.carrier", "data.carrier"),
            (dict(ok, email="not-an-email"), "email", "email"),
            (dict(ok, email="a@"), "email", "email"),
            (dict(ok, not_before="tomorrow"), "not_before", "not_before"),
            (dict(ok, not_before="2026-13-01T09:00:00Z"), "not_before",
             "not_before"),
            (dict(ok, channels=["email", "pigeon"]), "channels", "channel"),
            (dict(ok, channels="email"), "channels", "channels"),
            (dict(ok, channels=[]), "channels", "channels"),
            (dict(ok, event=7), "event", "string"),
            (dict(ok, data="order SO-1"), "data", "data"),
            (dict(ok, data=["SO-1"]), "data", "data"),
            (dict(ok, email=["a@example.com"]), "email", "string"),
            (dict(ok, priority="high"), "priority", "priority"),
            (dict(ok, customer="42"), "customer", "customer"),
            ({"event": "order.shipped", "data": SHIPPED}, "customer",
             "required"),
        ]
        for body, field, word in cases:
            r = c.post("/api/v1/notifications", body)
            assert r.status == 400, "%r -> %r" % (body, r)
            j = r.json
            assert j.get("field") == field, \
                "%r -> field %r, want %r (%r)" % (body, j.get("field"),
                                                  field, j)
            assert word in j.get("error", ""), \
                "%r -> error %r does not mention %r" % (body, j, word)
        r = c.post("/api/v1/notifications", b"{not json")
        assert r.status == 400, r
        # Nothing was accepted.
        assert env.redis.cmd("GET", "sb:seq:ntf") is None
        assert env.redis.cmd("EXISTS", "sb:notify") == 0 or \
            env.redis.cmd("XLEN", "sb:notify") == 0

        # No key: 401; a key without the notify scope: 403; with it: 202.
        r = c.post("/api/v1/notifications", ok, token=None)
        assert r.status == 401, r
        r = c.post("/api/v1/notifications", ok, token="sb_boss_forged")
        assert r.status == 401, r
        r = c.post("/api/v1/notifications", ok, token=env.apikey)
        assert r.status == 403, r
        for path in ("/api/v1/dlq", "/api/v1/notify/queues"):
            assert c.get(path, token=env.apikey).status == 403, path
            assert c.get(path, token=None).status == 401, path
        lim = env.new_client(env.key("limited"))
        a = post_ntf(lim, ok)
        assert get_ntf(lim, a["id"])["id"] == a["id"]
        assert lim.get("/api/v1/dlq").status == 200
        assert c.get("/api/v1/notifications/" + a["id"],
                     token=env.apikey).status == 403
        wait_state(c, a["id"], "sent")


def test_unknown_ids_are_404():
    """NOTFOUND from the notify scripts is a 404 (not a 503)."""
    fail_to = "bounce@example.com"
    with ntf_env(extra={"file": {"fail_to": fail_to}}) as env:
        c = admin(env)
        sent = post_ntf(c, {"event": "order.shipped", "email":
                            "ok@example.com", "channels": ["email"],
                            "data": SHIPPED})
        dead = post_ntf(c, {"event": "order.shipped", "email": fail_to,
                            "channels": ["email"], "data": SHIPPED})
        wait_state(c, sent["id"], "sent")
        wait_state(c, dead["id"], "dead")
        r = c.request("DELETE", "/api/v1/dlq/" + dead["id"])
        assert r.status == 200, r
        checks = [
            ("POST", "/api/v1/notifications",
             {"event": "order.shipped", "customer": "cu_999",
              "data": SHIPPED}),
            ("GET", "/api/v1/notifications/nt_999", None),
            ("GET", "/api/v1/notifications/bogus", None),
            ("POST", "/api/v1/dlq/nt_999/retry", None),
            ("DELETE", "/api/v1/dlq/nt_999", None),
            ("POST", "/api/v1/dlq/%s/retry" % sent["id"], None),
            ("DELETE", "/api/v1/dlq/%s" % sent["id"], None),
            ("POST", "/api/v1/dlq/%s/retry" % dead["id"], None),
            ("DELETE", "/api/v1/dlq/%s" % dead["id"], None),
        ]
        wrong = []
        for method, path, body in checks:
            r = c.request(method, path, body)
            if r.status != 404:
                wrong.append("%s %s -> %d %s" % (method, path, r.status,
                                                 r.body[:80].decode()))
        assert not wrong, "want 404:\n  " + "\n  ".join(wrong)
        assert env.redis.cmd("GET", "sb:seq:ntf") == b"2"
        assert get_ntf(c, sent["id"])["state"] == "sent"
        assert get_ntf(c, dead["id"])["state"] == "dead"


# --------------------------------------------------------------------------
# 4. Idempotency.

def test_idempotency_concurrent():
    with ntf_env() as env:
        body = {"event": "order.shipped", "email": "idem@example.com",
                "channels": ["email"], "data": SHIPPED,
                "idempotency_key": "shop-SO-1001-shipped"}
        n = 20
        barrier = threading.Barrier(n)
        answers = [None] * n

        def worker(i):
            c = harness.Client(env.port, env.key("limited"), timeout=20.0)
            try:
                barrier.wait(10)
                r = c.post("/api/v1/notifications", body)
                answers[i] = (r.status, r.json if r.status == 202 else r.body)
            except Exception as e:  # reported below
                answers[i] = ("error", repr(e))
            finally:
                c.close()

        ts = [threading.Thread(target=worker, args=(i,), daemon=True)
              for i in range(n)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        assert all(a is not None and a[0] == 202 for a in answers), answers
        ids = {a[1]["id"] for a in answers}
        assert len(ids) == 1, "different ids: %r" % answers
        fresh = [a for a in answers if a[1]["duplicate"] is False]
        assert len(fresh) == 1, "want exactly one duplicate=false: %r" % (
            answers)
        nid = ids.pop()
        c = admin(env)
        wait_state(c, nid, "sent")
        time.sleep(0.5)
        assert len(outbox(env)) == 1, [m["name"] for m in outbox(env)]
        assert env.redis.cmd("GET", "sb:seq:ntf") == b"1"
        # Later too: the same id, nothing sent again.
        a = post_ntf(c, body)
        assert a["id"] == nid and a["duplicate"] is True, a
        time.sleep(0.3)
        assert len(outbox(env)) == 1


# --------------------------------------------------------------------------
# 5. Retries.

def test_webhook_retries_and_retry_after():
    with Sink() as sink, ntf_env(sink=sink) as env:
        c = admin(env)
        sink.control(mode="script", script=[500, 503, 200])
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "hook@example.com", "channels": ["webhook"],
                         "data": SHIPPED})
        n = wait_state(c, a["id"], ("sent", "dead"), 15)
        assert n["state"] == "sent", n
        assert results(n) == ["tempfail", "tempfail", "sent"], n
        att = n["attempts"]
        assert [x["channel"] for x in att] == ["webhook"] * 3, att
        assert [x["id"] for x in att] == ["%s.%d" % (a["id"], k)
                                          for k in (1, 2, 3)], att
        assert att[0]["reason"] == "http 500" and \
            att[1]["reason"] == "http 503", att
        r1, r2 = att[0]["retry_at"], att[1]["retry_at"]
        assert "retry_at" not in att[2], att
        # backoff 200ms * 2^(n-1), jittered into [d/2, d], counted from
        # the answer (a little before "at", when the result was written)
        assert att[0]["at"] + 50 <= r1 <= att[0]["at"] + 200, att
        assert att[1]["at"] + 150 <= r2 <= att[1]["at"] + 400, att
        assert r1 < r2, att
        assert att[1]["at"] >= r1 and att[2]["at"] >= r2, att
        reqs = sink.requests()
        assert [x["headers"].get("x-switchboard-id") for x in reqs] == \
            [x["id"] for x in att], reqs
        assert all(x["signature_ok"] for x in reqs), reqs
        body = json.loads(reqs[-1]["body"])
        assert body["customer"] == a["customer"] and \
            body["notification"]["event"] == "order.shipped", body
        assert att[2]["provider_id"] == "sink-%d" % reqs[-1]["seq"], att

        # 429 with Retry-After: 1 -> the next try waits at least 1 s.
        sink.call("GET", "/_requests?clear=1")
        sink.control(mode="script", script=[429, 200], retry_after=1)
        b = post_ntf(c, {"event": "order.shipped", "customer":
                         a["customer"], "channels": ["webhook"],
                         "data": SHIPPED})
        n = wait_state(c, b["id"], ("sent", "dead"), 15)
        assert results(n) == ["tempfail", "sent"], n
        att = n["attempts"]
        assert att[0]["reason"] == "http 429", att
        assert att[0]["retry_at"] >= att[0]["at"] + 950, att
        reqs = sink.requests()
        assert len(reqs) == 2, reqs
        gap = reqs[1]["time"] - reqs[0]["time"]
        assert gap >= 0.99, "retried %.3fs after a 429 with Retry-After: " \
            "1" % gap
        assert sink.count()["bad_signatures"] == 0


# --------------------------------------------------------------------------
# 6. Fallback and dead letters.

def test_fallback_dead_letter_retry_drop():
    fail_to = "bounce@example.com"
    with Sink() as sink, ntf_env(sink=sink,
                                 extra={"file": {"fail_to": fail_to}}) as env:
        c = admin(env)
        sink.control(mode="fail400")
        a = post_ntf(c, {"event": "order.shipped", "email": fail_to,
                         "channels": ["webhook", "email"], "data": SHIPPED})
        n = wait_state(c, a["id"], "dead")
        assert results(n) == ["permfail", "permfail"], n
        assert [x["channel"] for x in n["attempts"]] == ["webhook", "email"]
        assert n["attempts"][0]["reason"] == "http 400", n
        assert n["attempts"][1]["reason"] == "rejected by fail_to", n
        assert "rejected by fail_to" in n["reason"], n
        assert sink.count()["count"] == 1
        assert outbox(env) == []

        r = c.get("/api/v1/dlq")
        assert r.status == 200, r
        ents = r.json["entries"]
        assert [e["id"] for e in ents] == [a["id"]], r.json
        e = ents[0]
        assert e["reason"] == n["reason"] and \
            e["event"] == "order.shipped" and \
            e["customer"] == a["customer"] and e["at"] > 0, e
        assert r.json["next_before"] is None, r.json

        # Retry once the receiver is fixed: webhook first again -> sent.
        sink.control(mode="ok")
        r = c.post("/api/v1/dlq/%s/retry" % a["id"])
        assert r.status == 200 and r.json == {"ok": True}, r
        n = wait_state(c, a["id"], ("sent", "dead"))
        assert n["state"] == "sent", n
        assert results(n) == ["permfail", "permfail", "sent"], n
        assert n["attempts"][2]["channel"] == "webhook", n
        assert c.get("/api/v1/dlq").json["entries"] == []

        # Another dead one, dropped: gone from the list, still dead.
        b = post_ntf(c, {"event": "order.shipped", "email": fail_to,
                         "channels": ["email"], "data": SHIPPED})
        d = post_ntf(c, {"event": "order.paid", "email": fail_to,
                         "channels": ["email"], "data": PAID})
        wait_state(c, b["id"], "dead")
        wait_state(c, d["id"], "dead")
        r = c.get("/api/v1/dlq?limit=1")
        assert r.status == 200, r
        assert [x["id"] for x in r.json["entries"]] == [d["id"]], r.json
        nb = r.json["next_before"]
        assert nb, r.json
        r = c.get("/api/v1/dlq?limit=1&before=" + q(nb))
        assert [x["id"] for x in r.json["entries"]] == [b["id"]], r.json
        r = c.request("DELETE", "/api/v1/dlq/" + b["id"])
        assert r.status == 200 and r.json == {"ok": True}, r
        ids = [x["id"] for x in c.get("/api/v1/dlq").json["entries"]]
        assert ids == [d["id"]], ids
        assert get_ntf(c, b["id"])["state"] == "dead"
        assert c.get("/api/v1/dlq?limit=0").status == 400
        time.sleep(0.3)
        assert get_ntf(c, b["id"])["state"] == "dead"
        assert outbox(env) == []


# --------------------------------------------------------------------------
# 7. Exhausted retries move on.

def test_exhausted_retries_next_channel():
    with Sink() as sink, ntf_env(sink=sink,
                                 notify={"max_attempts": "2"}) as env:
        c = admin(env)
        sink.control(mode="fail500")
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "ex@example.com", "channels": ["webhook", "email"],
                         "data": SHIPPED})
        n = wait_state(c, a["id"], ("sent", "dead"), 15)
        assert n["state"] == "sent", n
        assert results(n) == ["tempfail", "tempfail", "sent"], n
        assert [x["channel"] for x in n["attempts"]] == \
            ["webhook", "webhook", "email"], n
        assert "retry_at" in n["attempts"][0], n
        assert "retry_at" not in n["attempts"][1], n
        assert sink.count()["count"] == 2
        assert len(outbox_for(env, a["id"])) == 1, outbox(env)


# --------------------------------------------------------------------------
# 8. Quiet hours.

def hhmm(ms):
    t = datetime.datetime.fromtimestamp(ms / 1000.0, datetime.timezone.utc)
    return t.strftime("%H:%M")


def next_utc_time(now_ms, hm):
    """The first UTC instant after now_ms at the clock time hm (HH:MM)."""
    now = datetime.datetime.fromtimestamp(now_ms / 1000.0,
                                          datetime.timezone.utc)
    h, m = map(int, hm.split(":"))
    t = now.replace(hour=h, minute=m, second=0, microsecond=0)
    if t <= now:
        t += datetime.timedelta(days=1)
    return int(t.timestamp() * 1000)


def test_quiet_hours_hold_urgent_goes():
    with ntf_env() as env:
        c = admin(env)
        cu = new_customer(env, email="night@example.com")
        now = int(time.time() * 1000)
        qh = {"from": hhmm(now - 3600000), "to": hhmm(now + 3600000)}
        r = c.put("/api/v1/customers/" + cu,
                  {"timezone": "UTC", "preferences": {"quiet_hours": qh}})
        assert r.status == 200, r
        a = post_ntf(c, {"event": "order.shipped", "customer": cu,
                         "channels": ["email"], "data": SHIPPED})
        n = wait_state(c, a["id"], ("held", "sent", "dead"))
        assert n["state"] == "held", n
        assert n["attempts"] == [], n
        score = env.redis.cmd("ZSCORE", "sb:ntf:due", a["id"])
        assert score is not None, "held but not on the schedule"
        assert int(float(score)) == next_utc_time(now, qh["to"]), \
            (score, qh, now)

        u = post_ntf(c, {"event": "order.shipped", "customer": cu,
                         "channels": ["email"], "data": SHIPPED,
                         "priority": "urgent"})
        n = wait_state(c, u["id"], ("sent", "held", "dead"))
        assert n["state"] == "sent", n
        time.sleep(0.5)
        assert [m["headers"]["Id"] for m in outbox(env)] == \
            [u["id"] + ".1"], outbox(env)
        assert get_ntf(c, a["id"])["state"] == "held"

        # The window is the customer's: moved away from now, the next one
        # goes at once.
        later = {"from": hhmm(now + 2 * 3600000),
                 "to": hhmm(now + 3 * 3600000)}
        r = c.put("/api/v1/customers/" + cu,
                  {"preferences": {"quiet_hours": later}})
        assert r.status == 200, r
        b = post_ntf(c, {"event": "order.shipped", "customer": cu,
                         "channels": ["email"], "data": SHIPPED})
        wait_state(c, b["id"], "sent")


# --------------------------------------------------------------------------
# 9. Supersession.

def test_supersession_by_ref():
    with ntf_env(notify={"supersede_window": "2s"}) as env:
        c = admin(env)
        base = {"email": "sup@example.com", "channels": ["email"],
                "ref": "SO-1001"}
        t0 = time.monotonic()
        a = post_ntf(c, dict(base, event="order.created", data=PAID))
        b = post_ntf(c, dict(base, event="order.paid", data=PAID))
        other = post_ntf(c, dict(base, event="order.created", ref="SO-2002",
                                 data=dict(PAID, order="SO-2002")))
        s = post_ntf(c, dict(base, event="order.shipped", data=SHIPPED))
        assert time.monotonic() - t0 < 1.0
        for x in (a, b, other, s):
            assert x["state"] == "scheduled", x
        na, nb = get_ntf(c, a["id"]), get_ntf(c, b["id"])
        assert na["state"] == "superseded" and nb["state"] == "superseded", \
            (na, nb)
        assert nb["superseded_by"] == s["id"], nb
        assert na["superseded_by"] in (b["id"], s["id"]), na
        # Still waiting inside the window.
        assert outbox(env) == []
        ns = wait_state(c, s["id"], "sent", 10)
        assert ns["sent_at"] - ns["created"] >= 1900, ns
        no = wait_state(c, other["id"], "sent", 10)
        time.sleep(0.5)
        got = sorted(m["headers"]["Id"] for m in outbox(env))
        assert got == sorted([s["id"] + ".1", other["id"] + ".1"]), got
        for x in (a, b):
            n = get_ntf(c, x["id"])
            assert n["state"] == "superseded" and n["attempts"] == [], n
        assert no["event"] == "order.created" and no["ref"] == "SO-2002"
        m = outbox_for(env, s["id"])[0]
        assert m["headers"]["Subject"] == "Order SO-1001 is on its way", m
        # urgent skips the window
        u = post_ntf(c, dict(base, event="order.delivered", ref="SO-3003",
                             priority="urgent",
                             data={"order": "SO-3003"}))
        assert u["state"] == "accepted", u
        wait_state(c, u["id"], "sent", 2)


# --------------------------------------------------------------------------
# 10. not_before and opt-out.

def test_not_before_and_opt_out():
    with ntf_env() as env:
        c = admin(env)
        nb = (int(time.time()) + 3) * 1000
        a = post_ntf(c, {"event": "order.shipped", "email":
                         "later@example.com", "channels": ["email"],
                         "data": SHIPPED, "not_before": rfc3339(nb)})
        assert a["state"] == "scheduled", a
        assert int(float(env.redis.cmd("ZSCORE", "sb:ntf:due",
                                       a["id"]))) == nb
        time.sleep(max(0.0, (nb - 1000) / 1000.0 - time.time()))
        n = get_ntf(c, a["id"])
        assert n["state"] == "scheduled" and n["not_before"] == nb, n
        assert outbox(env) == []
        n = wait_state(c, a["id"], "sent", 8)
        assert n["sent_at"] >= nb, n
        assert len(outbox_for(env, a["id"])) == 1

        # Opted out of e-mail, a phone known: SMS instead.
        cu = new_customer(env, email="oo@example.com")
        r = c.put("/api/v1/customers/" + cu,
                  {"add_identities": {"phone": ["+7 916 123-45-67"]}})
        assert r.status == 200, r
        first = post_ntf(c, {"event": "order.shipped", "customer": cu,
                             "data": SHIPPED})
        n = wait_state(c, first["id"], ("sent", "dead"))
        assert [x["channel"] for x in n["attempts"]] == ["email"], n
        r = c.put("/api/v1/customers/" + cu,
                  {"preferences": {"opt_out": {"email": True}}})
        assert r.status == 200, r
        b = post_ntf(c, {"event": "order.shipped", "customer": cu,
                         "data": SHIPPED})
        n = wait_state(c, b["id"], ("sent", "dead"))
        assert n["state"] == "sent", n
        assert [(x["channel"], x["to"]) for x in n["attempts"]] == \
            [("sms", "+79161234567")], n
        m = outbox_for(env, b["id"])
        assert len(m) == 1 and m[0]["headers"]["To"] == "+79161234567", m
        # opt_in subscribes again: e-mail is first once more
        r = c.put("/api/v1/customers/" + cu,
                  {"preferences": {"opt_in": {"email": True}}})
        assert r.status == 200, r
        assert r.json["preferences"]["opt_out"] == {}, r.json
        e = post_ntf(c, {"event": "order.shipped", "customer": cu,
                         "data": SHIPPED})
        n = wait_state(c, e["id"], ("sent", "dead"))
        assert [x["channel"] for x in n["attempts"]] == ["email"], n


def test_opt_out_nothing_left_is_dead():
    """Opted out of e-mail and no phone: dead, and the reason says why
    (default channel order email, sms, chat; chat has no driver here)."""
    with ntf_env() as env:
        c = admin(env)
        cu2 = new_customer(env, email="oo2@example.com")
        r = c.put("/api/v1/customers/" + cu2,
                  {"preferences": {"opt_out": {"email": True}}})
        assert r.status == 200, r
        d = post_ntf(c, {"event": "order.shipped", "customer": cu2,
                         "data": SHIPPED})
        n = wait_state(c, d["id"], ("sent", "dead"))
        assert n["state"] == "dead" and n["attempts"] == [], n
        assert "opted out" in n["reason"], n
        dl = c.get("/api/v1/dlq").json["entries"]
        assert [x["id"] for x in dl] == [d["id"]] and \
            "opted out" in dl[0]["reason"], dl


# --------------------------------------------------------------------------
# 11. Metrics.

def test_notify_metrics():
    fail_to = "bounce@example.com"
    with ntf_env(notify={"stats_interval": "200ms"},
                 extra={"file": {"fail_to": fail_to}}) as env:
        c = admin(env)
        a = post_ntf(c, {"event": "order.shipped", "email": "m@example.com",
                         "channels": ["email"], "data": SHIPPED})
        d = post_ntf(c, {"event": "order.shipped", "email": fail_to,
                         "channels": ["email"], "data": SHIPPED})
        xadd(env, {"event": "nope", "email": "m@example.com"})
        wait_state(c, a["id"], "sent")
        wait_state(c, d["id"], "dead")
        last = [""]

        def fetch():
            r = env.client.get("/metrics")
            assert r.status == 200, r
            last[0] = r.body.decode()
            return last[0]

        def ready():
            t = fetch()
            dead = metric_samples(t, "sb_notify_dead_letters")
            rej = metric_samples(t, "sb_notify_rejects")
            return dead and dead[0][1] == 1 and rej and rej[0][1] == 1

        try:
            wait_until(ready, 5, 0.1, "notify gauges")
        except AssertionError:
            raise AssertionError("gauges not updated:\n" + "\n".join(
                ln for ln in last[0].splitlines() if "sb_notify" in ln))
        text = last[0]
        sends = {(lb.get("channel"), lb.get("result")): v
                 for lb, v in metric_samples(text, "sb_notify_sends_total")}
        assert sends.get(("email", "ok")) == 1, sends
        assert sends.get(("email", "permfail")) == 1, sends
        assert "# TYPE sb_notify_sends_total counter" in text
        assert "# TYPE sb_notify_dead_letters gauge" in text
        assert "# TYPE sb_notify_rejects gauge" in text
        assert metric_samples(text, "sb_notify_backlog"), text
        r = c.get("/api/v1/notify/queues")
        assert r.status == 200, r
        qs = r.json
        assert qs["dead"] == 1 and qs["rejects"] == 1 and \
            qs["backlog"] == 0 and qs["pending"] == 0, qs
        assert qs["channels"]["email"]["driver"] is True, qs
        promtool = shutil.which("promtool")
        if promtool is None:
            print("promtool missing: lint skipped")
            return
        p = subprocess.run([promtool, "check", "metrics"],
                           input=text.encode(), capture_output=True,
                           timeout=60)
        assert p.returncode == 0, "promtool check metrics: %s%s" % (
            p.stdout.decode(), p.stderr.decode())


# --------------------------------------------------------------------------
# 12. Templates on SIGHUP.

def test_sighup_reloads_templates():
    with ntf_env(start_daemon=False) as env:
        tdir = os.path.join(env.tmp, "templates")
        shutil.copytree(os.path.join(ROOT, "config", "templates"), tdir)
        env.conf["notify"]["templates"] = tdir
        env.write_config()
        env.daemon.start()
        c = admin(env)
        path = os.path.join(tdir, "order.shipped", "email.en")
        with open(path, encoding="utf-8") as f:
            orig = f.read()
        body = {"event": "order.shipped", "email": "hup@example.com",
                "channels": ["email"], "locale": "en", "data": SHIPPED}

        def send_subject():
            a = post_ntf(c, body)
            wait_state(c, a["id"], "sent")
            return outbox_for(env, a["id"])[0]["headers"]["Subject"]

        def reload(count):
            env.daemon.signal(signal.SIGHUP)
            wait_until(lambda: env.daemon.log_text().count(
                "config reloaded") >= count, 10, what="reload %d" % count)

        assert send_subject() == "Order SO-1001 is on its way"
        edited = orig.replace("Subject: Order {{ data.order }} is on its "
                              "way", "Subject: Parcel {{ data.order }} "
                              "left the warehouse")
        assert edited != orig
        with open(path, "w", encoding="utf-8") as f:
            f.write(edited)
        reload(1)
        assert send_subject() == "Parcel SO-1001 left the warehouse"

        env.expect_errors(r"templates not reloaded")
        with open(path, "w", encoding="utf-8") as f:
            f.write("Subject: Broken {{ data.order\n\nText\n")
        reload(2)
        log = env.daemon.log_text()
        errs = [ln for ln in log.splitlines()
                if ln.startswith("<3>") and "templates not reloaded" in ln]
        assert errs, env.daemon.log_tail()
        assert "email.en" in errs[0] or "unclosed" in errs[0], errs
        assert send_subject() == "Parcel SO-1001 left the warehouse"
        assert env.daemon.alive()


def test_reply_opens_linked_conversation_and_timeline():
    """An SMS answer to an SMS notification opens a conversation that
    carries the notification and its ref; the customer's timeline holds
    the notification beside the conversation. An e-mail arriving later
    (other channel) is not linked."""
    with ntf_env() as env:
        c = admin(env)
        n = post_ntf(c, {"event": "service.updated", "phone": "+79161110022",
                         "channels": ["sms"], "ref": "T-900",
                         "data": {"ticket": "T-900", "status": "в работе"}})
        wait_state(c, n["id"], "sent")
        r = env.client.post("/api/v1/contacts", {
            "channel": "sms", "direction": "in", "phone": "+79161110022",
            "text": "Когда приедет инженер?"})
        assert r.status == 201, r
        conv = r.json["conversation"]
        cv = env.client.get("/api/v1/conversations/" + conv).json
        assert cv["notification"] == n["id"] and cv["ref"] == "T-900", cv
        r = env.client.post("/api/v1/contacts", {
            "channel": "email", "direction": "in",
            "email": "other@example.com", "phone": "+79161110022",
            "text": "hello"})
        assert r.status == 201, r
        cv2 = env.client.get("/api/v1/conversations/" +
                             r.json["conversation"]).json
        assert "ref" not in cv2 or cv2["ref"] in (None, ""), cv2
        tl = env.client.get("/api/v1/customers/%s/timeline" %
                            n["customer"]).json["entries"]
        kinds = [(e["type"], e["channel"]) for e in tl]
        assert ("notification", "sms") in kinds, kinds
        assert ("message", "sms") in kinds, kinds
        ent = [e for e in tl if e["type"] == "notification"][0]
        assert ent["fields"]["notification"] == n["id"], ent
        assert ent["fields"]["ref"] == "T-900", ent


def test_throttle_rate_and_concurrency():
    """[throttle webhook] rate 20/s with a burst of 1 spreads 21 sends over
    at least a second; concurrency 2 against a slow sink keeps at most two
    requests open (two connections) and takes its time."""
    with Sink() as sink, ntf_env(sink=sink, extra={
            "throttle webhook": {"rate": "20", "burst": "1"}}) as env:
        c = admin(env)
        ids = [post_ntf(c, {"event": "order.shipped",
                            "email": "t%d@example.com" % i,
                            "channels": ["webhook"],
                            "data": SHIPPED})["id"] for i in range(21)]
        for nid in ids:
            wait_state(c, nid, "sent", 15)
        ts = sorted(x["time"] for x in sink.requests())
        assert len(ts) == 21, ts
        assert ts[-1] - ts[0] >= 0.9, "21 sends at 20/s took %.3fs" % (
            ts[-1] - ts[0])
    with Sink() as sink, ntf_env(sink=sink, extra={
            "throttle webhook": {"concurrency": "2"}}) as env:
        c = admin(env)
        sink.control(mode="slow", delay_ms=200)
        t0 = time.time()
        ids = [post_ntf(c, {"event": "order.shipped",
                            "email": "s%d@example.com" % i,
                            "channels": ["webhook"],
                            "data": SHIPPED})["id"] for i in range(8)]
        for nid in ids:
            wait_state(c, nid, "sent", 15)
        took = time.time() - t0
        assert took >= 0.75, "8 slow sends two at a time took %.2fs" % took
        assert sink.count()["connections"] <= 2, sink.count()


def test_stream_trimmed_only_below_pending():
    """Processed entries are trimmed away; an entry still in hand (its
    webhook hangs) stays, and so does everything after it."""
    with Sink() as sink, ntf_env(sink=sink, notify={
            "stats_interval": "200ms"}, extra={
            "webhook": {"timeout": "30s"}}) as env:
        sink.control(mode="slow", delay_ms=20000)
        fields = {"event": "order.shipped", "email": "trim@example.com",
                  "channels": "email",
                  "data": json.dumps(SHIPPED, ensure_ascii=False)}
        first = [xadd(env, fields) for _ in range(5)]
        wait_until(lambda: len(outbox(env)) == 5, 10, 0.05, "5 sent")
        wait_until(lambda: env.redis.cmd("XLEN", "sb:notify") == 0, 5, 0.05,
                   "the stream trimmed")
        held = xadd(env, dict(fields, channels="webhook"))
        wait_until(lambda: sink.count()["count"] == 1, 10, 0.05,
                   "the webhook in flight")
        later = [xadd(env, fields) for _ in range(5)]
        wait_until(lambda: len(outbox(env)) == 10, 10, 0.05, "10 sent")
        time.sleep(0.6)  # a few trims
        ids = [e[0].decode() for e in
               env.redis.cmd("XRANGE", "sb:notify", "-", "+")]
        assert ids and ids[0] == held, (ids, held)
        assert not set(first) & set(ids), ids
        pend = env.redis.cmd("XPENDING", "sb:notify", "switchboard")
        assert pend[0] == 1 and pend[1].decode() == held, pend
        # what came after the held entry stays too (MINID keeps >= it)
        assert set(later) <= set(ids), (later, ids)


def test_stream_entry_without_channel_is_dead_at_once():
    """A stream entry whose only channel has no driver is a dead letter at
    once, with the reason, and never sent."""
    with ntf_env() as env:
        c = admin(env)
        eid = xadd(env, {"event": "order.shipped", "email": "nc@example.com",
                         "channels": "chat",
                         "data": json.dumps(SHIPPED, ensure_ascii=False)})
        wait_until(lambda: env.redis.cmd("XLEN", "sb:notify:dead") == 1, 10,
                   0.05, "a dead letter")
        dl = c.get("/api/v1/dlq").json["entries"]
        assert len(dl) == 1 and "chat: no driver" in dl[0]["reason"], dl
        n = get_ntf(c, dl[0]["id"])
        assert n["state"] == "dead" and n["attempts"] == [], n
        assert n["src"] == "stream:" + eid, n
        assert outbox(env) == [], outbox(env)
