"""test_webchat.py - the customer web chat over real WebSockets.

Each test starts the daemon with a [chat] section (and a private Redis)
through harness.Env and talks to /chat/ws with wsclient.py, the way the
widget does: hello -> welcome, message -> ack, and the error frames and
close codes of PROTOCOL.md. What the daemon stored is read back through
the HTTP API and from Redis directly.

Delivery of agent replies (send()) is covered by tests/unit/test_webchat.c
against real sockets; here it would need the router's reply path.
"""

import json
import os
import re
import signal
import socket
import time

from harness import Env, ROOT, q, timeout, wait_until
from wsclient import Closed, HandshakeRefused, WsClient

WWW = os.path.join(ROOT, "channels", "webchat", "www")
CYR = "Здравствуйте! Где мой заказ №42? Ёжик 🦔 — «ok»"


def chat_env(extra=None, more=None, **kw):
    """An Env with [chat] (plus extra keys) and more config sections."""
    conf = {"www_dir": WWW}
    conf.update(extra or {})
    overrides = {"chat": conf}
    overrides.update(more or {})
    return Env(overrides, **kw)


def connect(env, **kw):
    return WsClient.connect(env.port, "/chat/ws", **kw)


def hello(ws, **fields):
    msg = {"type": "hello"}
    msg.update(fields)
    ws.send_json(msg)
    return ws.recv_type("welcome")


def send_msg(ws, cid, text):
    ws.send_json({"type": "message", "id": cid, "text": text})


def ack_of(ws, cid, timeout=10.0):
    m, skipped = ws.recv_until(
        lambda m: m.get("type") in ("ack", "error") and m.get("id") == cid,
        timeout, "ack of %s" % cid)
    assert m["type"] == "ack", "expected ack of %s, got %r" % (cid, m)
    return m


def vid_of(token):
    import hashlib
    return hashlib.sha256(("switchboard.chat:" + token).encode()) \
        .hexdigest()[:32]


def chat_entries(env, key, value):
    """Every sb:log entry whose field key equals value."""
    return [(i, f) for i, f in env.redis.xrange_all("sb:log")
            if f.get(key) == value]


def customer_of(env, token):
    cu = env.redis.cmd("HGET", "sb:identity", "chat:" + vid_of(token))
    assert cu, "no customer holds chat:<visitor id>"
    return cu.decode()


def test_hello_message_timeline():
    with chat_env() as env:
        ws = connect(env)
        w = hello(ws, lang="ru", name="Иван", email="Ivan.Petrov@Example.COM",
                  phone="8 (916) 123-45-67", page="https://shop.test/p/1")
        token = w["token"]
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", token), w
        assert w["conversation"] is None and w["history"] == [], w
        assert w["max_text"] == 3000, w

        send_msg(ws, "m1", CYR)
        a = ack_of(ws, "m1")
        assert re.fullmatch(r"\d+-\d+", a["contact"]), a
        st = ws.recv_type("status")
        assert st["state"] == "queued", st

        # Stored: the log entry, the customer with its identities, the
        # timeline seen through the API.
        cu = customer_of(env, token)
        rows = env.redis.cmd("XRANGE", "sb:log", a["contact"], a["contact"])
        assert rows, "acked contact not in sb:log"
        flat = rows[0][1]
        e = {flat[i].decode(): flat[i + 1].decode()
             for i in range(0, len(flat), 2)}
        assert e["channel"] == "chat" and e["direction"] == "in", e
        assert e["type"] == "message" and e["customer"] == cu, e
        assert e["text"] == CYR, (e["text"], CYR)
        assert e["source_id"] == vid_of(token) + ":m1", e
        assert json.loads(e["fields"]).get("page") == \
            "https://shop.test/p/1", e

        r = env.client.get("/api/v1/customers?email=" +
                           q("ivan.petrov@example.com"))
        assert r.status == 200 and r.json["id"] == cu, r
        assert r.json["name"] == "Иван", r.json
        assert r.json["identities"]["phone"] == ["+79161234567"], r.json
        assert r.json["identities"]["chat"] == [vid_of(token)], r.json
        r = env.client.get("/api/v1/customers/%s/timeline" % cu)
        assert r.status == 200, r
        ents = r.json["entries"]
        assert len(ents) == 1 and ents[0]["id"] == a["contact"], ents
        assert ents[0]["channel"] == "chat" and ents[0]["text"] == CYR
        conv = ents[0]["conversation"]
        assert conv and conv.startswith("cv_"), ents
        r = env.client.get("/api/v1/conversations/" + conv)
        assert r.status == 200 and r.json["channel"] == "chat", r

        # The token is the visitor's secret: not in Redis, not in the log.
        for k in env.redis.cmd("KEYS", "*"):
            assert token.encode() not in k, k
        dump = json.dumps(env.redis.xrange_all("sb:log"))
        assert token not in dump
        assert env.redis.cmd("HGET", "sb:identity", "chat:" + token) is None
        ws.close()
        env.daemon.stop()
        assert token not in env.daemon.log_text()


def test_resume_history_and_resend():
    with chat_env() as env:
        ws = connect(env)
        token = hello(ws)["token"]
        send_msg(ws, "a1", "первое")
        c1 = ack_of(ws, "a1")["contact"]
        send_msg(ws, "a2", "второе\nс переносом")
        c2 = ack_of(ws, "a2")["contact"]
        ws.shutdown()  # a dropped connection, no close frame

        ws = connect(env)
        w = hello(ws, token=token)
        assert w["token"] == token, w
        conv = w["conversation"]
        assert conv and conv.startswith("cv_"), w
        hist = w["history"]
        assert [h["client_id"] for h in hist] == ["a1", "a2"], hist
        assert [h["id"] for h in hist] == [c1, c2], hist
        assert [h["text"] for h in hist] == ["первое", "второе\nс переносом"]
        assert all(h["from"] == "customer" and isinstance(h["at"], int)
                   for h in hist), hist
        st = ws.recv_type("status")
        assert st["state"] == "queued", st

        # The widget resends what it had not seen acked: stored once, and
        # the ack names the original contact.
        send_msg(ws, "a2", "второе\nс переносом")
        assert ack_of(ws, "a2")["contact"] == c2
        send_msg(ws, "a3", "третье")
        c3 = ack_of(ws, "a3")["contact"]
        assert len(chat_entries(env, "source_id",
                                vid_of(token) + ":a2")) == 1
        cu = customer_of(env, token)
        r = env.client.get("/api/v1/conversations/%s/timeline" % conv)
        assert r.status == 200, r
        assert [e["id"] for e in r.json["entries"]] == [c3, c2, c1], r.json

        # Another visitor's message with the same client id is its own.
        other = connect(env)
        hello(other)
        send_msg(other, "a2", "чужое")
        c_other = ack_of(other, "a2")["contact"]
        assert c_other not in (c1, c2, c3)
        assert customer_of(env, token) == cu

        # A second tab of the same visitor sees what the first one writes.
        tab = connect(env)
        w2 = hello(tab, token=token)
        assert w2["conversation"] == conv and len(w2["history"]) == 3, w2
        send_msg(ws, "a4", "из первой вкладки")
        ack_of(ws, "a4")
        echo = tab.recv_type("message")
        assert echo["from"] == "customer" and echo["client_id"] == "a4", echo
        assert echo["text"] == "из первой вкладки", echo

        # An unknown (or never used) token: a new visitor, a new token.
        fresh = connect(env)
        w3 = hello(fresh, token="A" * 43)
        assert w3["token"] != "A" * 43 and w3["conversation"] is None, w3
        for s in (ws, other, tab, fresh):
            s.close()


def test_cyrillic_fragmented_roundtrip():
    with chat_env() as env:
        ws = connect(env)
        token = hello(ws)["token"]
        # Fragments split inside multi-byte characters: reassembled first,
        # validated as a whole.
        text = "Ёлка ёжик " * 20 + "🦔"
        ws.send_json({"type": "message", "id": "f1", "text": text},
                     fragments=7)
        c = ack_of(ws, "f1")["contact"]
        e = chat_entries(env, "source_id", vid_of(token) + ":f1")
        assert len(e) == 1 and e[0][0] == c and e[0][1]["text"] == text
        ws.close()
        ws = connect(env)
        w = hello(ws, token=token)
        assert w["history"][-1]["text"] == text, w["history"]
        ws.close()


def test_protocol_errors():
    with chat_env() as env:
        ws = connect(env)
        # Message before hello: an error frame, the socket stays.
        send_msg(ws, "x1", "too early")
        e = ws.recv_type("error")
        assert e["code"] == "no_hello", e
        # Invalid e-mail in hello: reported, the hello still goes through.
        ws.send_json({"type": "hello", "email": "not an address"})
        e = ws.recv_type("error")
        assert e["code"] == "invalid" and e["field"] == "email", e
        w = ws.recv_type("welcome")
        send_msg(ws, "x2", " \n\t ")
        e = ws.recv_type("error")
        assert e["code"] == "empty" and e["id"] == "x2", e
        send_msg(ws, "x3", "я" * 1501)  # 3002 bytes > max_text 3000
        e = ws.recv_type("error")
        assert e["code"] == "too_long" and e["id"] == "x3", e
        # That was four mistakes; the socket still works.
        send_msg(ws, "ok1", "я" * 1500)
        ack_of(ws, "ok1")
        assert len(chat_entries(env, "source_id",
                                vid_of(w["token"]) + ":ok1")) == 1
        # The fifth within a minute closes with 1008.
        ws.send_text("{not json")
        e = ws.recv_type("error")
        assert e["code"] == "bad_json", e
        code, reason = ws.wait_close()
        assert code == 1008, (code, reason)

        ws = connect(env)
        ws.send_json({"type": "frobnicate"})
        assert ws.recv_type("error")["code"] == "unknown_type"
        ws.send_text("[1, 2]")
        assert ws.recv_type("error")["code"] == "bad_json"
        ws.send_json({"no": "type"})
        assert ws.recv_type("error")["code"] == "bad_json"
        ws.send_text('{"type":"hello","type":"hello"}')
        assert ws.recv_type("error")["code"] == "bad_json"
        hello(ws)
        ws.send_json({"type": "hello"})
        assert ws.recv_type("error")["code"] == "bad_state"
        code, _ = ws.wait_close()
        assert code == 1008, code
        ws = connect(env)
        hello(ws)
        send_msg(ws, "bad id with spaces", "x")
        e = ws.recv_type("error")
        assert e["code"] == "invalid" and e["field"] == "id", e
        ws.send_json({"type": "message", "id": "n1", "text": 5})
        assert ws.recv_type("error")["field"] == "text"
        ws.send_json({"type": "typing"})
        ws.send_json({"type": "read", "up_to": "1-0"})
        ws.send_json({"type": "ping"})
        assert ws.recv_type("pong") == {"type": "pong"}
        # profile: normalised values back; an invalid phone is an error.
        ws.send_json({"type": "profile", "email": "Olga@Example.com"})
        p = ws.recv_type("profile")
        assert p["email"] == "olga@example.com", p
        ws.send_json({"type": "profile", "phone": "12ab"})
        e = ws.recv_type("error")
        assert e["field"] == "phone", e
        ws.close()

        r = env.client.get("/metrics", token=None)
        text = r.body.decode()
        for code in ("no_hello", "invalid", "empty", "too_long", "bad_json",
                     "unknown_type", "bad_state"):
            assert re.search(r'^sb_chat_errors_total\{code="%s"\} [1-9]'
                             % code, text, re.M), code
        assert re.search(r'^sb_chat_messages_total\{direction="in"\} 1$',
                         text, re.M), text
        assert re.search(r'^sb_ws_closed_total\{proto="switchboard.chat.v1",'
                         r'code="1008"\} 2$', text, re.M)


def test_size_binary_utf8():
    with chat_env() as env:
        big = json.dumps({"type": "message", "id": "b", "text": "x" * 5000})
        for frags in (1, 5):
            ws = connect(env)
            hello(ws)
            ws.send_text(big, fragments=frags)
            code, _ = ws.wait_close()
            assert code == 1009, (frags, code)
        ws = connect(env)
        ws.send_binary(b'{"type":"hello"}')
        assert ws.wait_close()[0] == 1003
        # Invalid UTF-8: a lone continuation byte, an overlong form, a
        # surrogate, and a sequence cut between two fragments' ends.
        for bad in (b'{"type":"hello","name":"\x80"}',
                    b'{"type":"hello","name":"\xc0\xaf"}',
                    b'{"type":"hello","name":"\xed\xa0\x80"}',
                    b'{"type":"hello","name":"\xd0"}'):
            ws = connect(env)
            ws.send_text(bad, fragments=2)
            code, _ = ws.wait_close()
            assert code == 1007, (bad, code)
        # A good message right at the limit still passes.
        ws = connect(env)
        hello(ws)
        pad = 4096 - len(json.dumps({"type": "ping", "p": ""}))
        ws.send_json({"type": "ping", "p": "y" * pad})
        assert ws.recv_type("pong")
        ws.close()


def test_rate_limit_per_socket():
    with chat_env({"msgs_per_sec": "5", "ip_msgs_per_sec": "1000"}) as env:
        # A burst of 2 s worth (10) passes, then 1008.
        ws = connect(env)
        ws.send_raw(b"".join(WsClient.frame(1, b'{"type":"ping"}')
                             for _ in range(40)))
        got = 0
        try:
            for i in range(40):
                ws.recv_type("pong", 5)
                got += 1
        except Closed as e:
            assert e.code == 1008, e
        else:
            raise AssertionError("40 messages at once were not limited")
        assert 8 <= got <= 12, got
        # A socket that keeps to the rate is never closed.
        ws = connect(env)
        for i in range(12):
            ws.send_json({"type": "ping"})
            ws.recv_type("pong")
            time.sleep(0.25)
        ws.close()


def test_rate_limit_per_address():
    with chat_env({"msgs_per_sec": "100", "ip_msgs_per_sec": "5"}) as env:
        # Two sockets, each far under its own limit (burst 200), together
        # over the address' (burst 10).
        a, b = connect(env), connect(env)
        frames = b"".join(WsClient.frame(1, b'{"type":"ping"}')
                          for _ in range(8))
        a.send_raw(frames)
        for _ in range(8):
            a.recv_type("pong")
        b.send_raw(frames)
        got = 0
        try:
            for _ in range(8):
                b.recv_type("pong", 5)
                got += 1
        except Closed as e:
            assert e.code == 1008, e
        else:
            raise AssertionError("the address' limit did not apply")
        assert got <= 3, got
        r = env.client.get("/metrics", token=None).body.decode()
        assert re.search(r'sb_ws_closed_total\{proto="switchboard.chat.v1",'
                         r'code="1008"\} 1', r), r
        a.close()


def test_origin_and_conns_per_ip():
    with chat_env({"origins": "https://shop.test, http://127.0.0.1:1",
                   "conns_per_ip": "3"}) as env:
        for origin in (None, "https://evil.test", "https://shop.test.evil",
                       "http://shop.test"):
            try:
                connect(env, origin=origin)
            except HandshakeRefused:
                pass
            else:
                raise AssertionError("origin %r was accepted" % origin)
        socks = [connect(env, origin="https://shop.test") for _ in range(3)]
        w = hello(socks[0])
        assert w["token"]
        try:
            connect(env, origin="https://shop.test")
        except HandshakeRefused:
            pass
        else:
            raise AssertionError("a 4th socket from one address was "
                                 "accepted")
        # One goes away: room for another.
        socks.pop().close()
        wait_until(lambda: _try_connect(env, "https://shop.test"), 5,
                   what="a socket after one closed")
        r = env.client.get("/metrics", token=None).body.decode()
        assert re.search(r'sb_ws_refused_total\{proto="switchboard.chat.v1",'
                         r'why="origin"\} 4', r), r
        assert re.search(r'sb_ws_refused_total\{proto="switchboard.chat.v1",'
                         r'why="per_ip"\} [1-9]', r), r
        for s in socks:
            s.close()


def _try_connect(env, origin):
    try:
        s = connect(env, origin=origin)
    except HandshakeRefused:
        return False
    s.close()
    return True


def test_subprotocol_and_path():
    with chat_env() as env:
        for kw in ({"protocol": None}, {"protocol": "other.v1"}):
            try:
                WsClient.connect(env.port, "/chat/ws", **kw)
            except (HandshakeRefused, AssertionError):
                pass
            else:
                raise AssertionError("upgrade accepted with %r" % kw)
        try:
            WsClient.connect(env.port, "/chat/other")
        except HandshakeRefused:
            pass
        else:
            raise AssertionError("upgrade accepted on /chat/other")


def test_idle_timeout():
    with chat_env({"idle_timeout": "2s"}) as env:
        quiet, chatty = connect(env), connect(env)
        hello(quiet)
        hello(chatty)
        t0 = time.monotonic()
        code = None
        for _ in range(40):
            chatty.send_json({"type": "ping"})
            chatty.recv_type("pong")
            try:
                quiet.recv(0.25)
            except socket.timeout:
                continue
            except Closed as e:
                code = e.code
                break
        took = time.monotonic() - t0
        assert code == 1001, code
        assert 1.5 <= took <= 5.0, took
        # The one that kept talking is still open.
        chatty.send_json({"type": "ping"})
        assert chatty.recv_type("pong")
        chatty.close()


@timeout(120)
def test_redis_outage():
    with chat_env(more={"redis": {"command_timeout": "1s"}},
                  expect_errors=[r"(?i)redis"]) as env:
        ws = connect(env)
        token = hello(ws)["token"]
        send_msg(ws, "r1", "до сбоя")
        ack_of(ws, "r1")
        env.redis.stop()
        wait_until(lambda: env.client.get("/readyz").status == 503, 10,
                   what="readyz 503")
        send_msg(ws, "r2", "во время сбоя")
        m, _ = ws.recv_until(lambda m: m.get("id") == "r2", 10, "answer")
        assert m["type"] == "error" and m["code"] == "unavailable", m
        # A resume during the outage: unavailable, hello again later.
        ws2 = connect(env)
        ws2.send_json({"type": "hello", "token": token})
        e = ws2.recv_type("error")
        assert e["code"] == "unavailable", e
        env.redis.start()
        wait_until(lambda: env.client.get("/readyz").status == 200, 15,
                   what="readyz 200")
        send_msg(ws, "r2", "во время сбоя")
        ack_of(ws, "r2")
        w = hello(ws2, token=token)
        assert [h["client_id"] for h in w["history"]] == ["r1", "r2"], w
        assert len(chat_entries(env, "source_id", vid_of(token) + ":r2")) \
            == 1

        # Redis hangs: the message is accepted by the connection but never
        # answered. No ack may come before the store's OK; after the
        # command timeout the visitor gets "unavailable".
        env.redis.proc.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            send_msg(ws, "r3", "зависший Redis")
            m, _ = ws.recv_until(lambda m: m.get("id") == "r3", 10,
                                 "answer to r3")
            took = time.monotonic() - t0
        finally:
            env.redis.proc.send_signal(signal.SIGCONT)
        assert m["type"] == "error" and m["code"] == "unavailable", m
        assert took >= 0.8, "answered in %.2fs, before the timeout" % took
        wait_until(lambda: env.client.get("/readyz").status == 200, 15,
                   what="readyz 200 after SIGCONT")
        send_msg(ws, "r3", "зависший Redis")
        ack_of(ws, "r3")
        assert len(chat_entries(env, "source_id", vid_of(token) + ":r3")) \
            == 1
        ws.close()
        ws2.close()


def test_pages_and_csp():
    with chat_env() as env:
        r = env.client.get("/chat/", token=None)
        assert r.status == 200, r
        assert r.header("content-type").startswith("text/html"), r.headers
        csp = r.header("content-security-policy") or ""
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        html = r.body.decode()
        assert re.search(r'<script src="widget\.js"[^>]*></script>', html)
        # Nothing the CSP would block: no inline script, no style
        # attributes or elements, no inline handlers.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), html
        assert not re.search(r"\sstyle=|<style|\son[a-z]+=", html, re.I)
        r = env.client.get("/chat/widget.js", token=None)
        assert r.status == 200, r
        assert r.header("content-type").startswith("text/javascript")
        js = r.body.decode()
        assert "switchboard.chat.v1" in js and "attachShadow" in js
        assert "innerHTML" not in js and "eval(" not in js
        assert env.client.get("/chat/nope.js", token=None).status == 404


def test_stop_with_open_sockets():
    with chat_env() as env:
        socks = []
        for i in range(5):
            s = connect(env)
            hello(s)
            socks.append(s)
        send_msg(socks[0], "s1", "перед остановкой")
        ack_of(socks[0], "s1")
        env.daemon.signal(signal.SIGTERM)
        codes = []
        for s in socks:
            try:
                codes.append(s.wait_close(10)[0])
            except AssertionError:
                codes.append(None)
        rc = env.daemon.reap(20)
        assert rc == 0, (rc, env.daemon.log_tail())
        assert all(c in (1001, 1006) for c in codes), codes
        print("close codes seen at SIGTERM: %r" % codes)


# --------------------------------------------------------------------------
# Live chat: routing status, agent replies, typing, two instances.
#
# The agents act as people would: through the REST API (presence, accept,
# reply, resolve) with their session tokens, and through a console
# WebSocket (/console/ws) for typing. The harness' users alice and bob
# (display names "Alice", "Bob") are the queue's members.

def live_env(capacity="3", extra=None, **kw):
    """[chat] plus routing: one queue "general" (alice, bob) that offers
    to one member at a time; offers last long enough not to expire."""
    more = {
        "routing": {"default_queue": "general", "offer_timeout": "60s",
                    "tick": "100ms", "capacity": capacity},
        "queue general": {"members": "alice, bob",
                          "strategy": "round_robin"},
        "agent alice": {"capacity": capacity},
    }
    return chat_env(extra, more, **kw)


class Agent:
    """An agent logged in on one daemon port (REST only)."""

    def __init__(self, env, name, port=None):
        self.name = name
        self.token = env.login(name)
        self.http = env.new_client(self.token)
        if port is not None:
            self.http.port = port

    def presence(self, state):
        r = self.http.put("/api/v1/agents/%s/presence" % self.name,
                          {"state": state})
        assert r.status == 200, r

    def step(self, conv, what, body=None, expect=200):
        r = self.http.post("/api/v1/conversations/%s/%s" % (conv, what),
                           body if body is not None else {})
        assert r.status == expect, (what, r)
        return r.json

    def accept(self, conv, limit=5.0):
        """Accept the pending offer (retried while it is not made yet)."""
        out = []

        def ok():
            r = self.http.post("/api/v1/conversations/%s/accept" % conv, {})
            assert r.status in (200, 409), r
            out.append(r)
            return r.status == 200
        wait_until(ok, limit, 0.1, "offer of %s to %s" % (conv, self.name))
        return out[-1].json

    def reply(self, conv, text, expect=201):
        return self.step(conv, "messages", {"text": text}, expect)

    def resolve(self, conv):
        return self.step(conv, "resolve")


def console(port, token):
    c = WsClient.connect(port, "/console/ws",
                         protocol="switchboard.agent.v1")
    c.send_json({"type": "auth", "token": token})
    c.recv_type("hello")
    return c


def conv_of(env, token, limit=10.0):
    """The visitor's conversation id (from its customer's timeline)."""
    cu = customer_of(env, token)
    out = []

    def found():
        r = env.client.get("/api/v1/customers/%s/timeline" % cu)
        for e in r.json.get("entries", []) if r.status == 200 else []:
            if e.get("conversation"):
                out.append(e["conversation"])
                return True
        return False
    wait_until(found, limit, what="conversation of the visitor")
    return out[0]


def newest_conv(env, token):
    """The conversation of the visitor's newest contact."""
    cu = customer_of(env, token)
    r = env.client.get("/api/v1/customers/%s/timeline" % cu)
    assert r.status == 200, r
    for e in r.json["entries"]:
        if e.get("conversation") and e.get("channel") == "chat":
            return e["conversation"]
    raise AssertionError("no chat conversation: %r" % r.json)


def status_of(ws, timeout=10.0):
    return ws.recv_type("status", timeout)


def visitor(env, cid, text, port=None):
    """A new visitor that wrote one message: (socket, token, conv)."""
    ws = WsClient.connect(port or env.port, "/chat/ws")
    token = hello(ws, lang="ru")["token"]
    send_msg(ws, cid, text)
    ack_of(ws, cid)
    return ws, token, conv_of(env, token)


def test_live_status_reply_resolve():
    with live_env() as env:
        alice = Agent(env, "alice")
        ws, token, conv = visitor(env, "l1", "Где мой заказ?")
        # The driver routed it: nobody online, so it waits, first in line.
        st = status_of(ws)
        assert st == {"type": "status", "state": "queued", "position": 1}, st
        r = env.client.get("/api/v1/conversations/" + conv)
        assert r.status == 200 and r.json["state"] == "queued", r
        assert r.json["queue"] == "general", r.json

        # A second tab resuming gets the live state with its position.
        tab = connect(env)
        w = hello(tab, token=token)
        assert w["conversation"] == conv, w
        assert status_of(tab) == st

        alice.presence("online")
        alice.accept(conv)
        for s in (ws, tab):
            st = status_of(s)
            assert st["state"] == "assigned" and st["name"] == "Alice", st

        rep = alice.reply(conv, "Заказ №42 уже в пути 🚚")
        assert rep["channel"] == "chat", rep
        for s in (ws, tab):
            m = s.recv_type("message")
            assert m["from"] == "agent" and m["name"] == "Alice", m
            assert m["text"] == "Заказ №42 уже в пути 🚚", m

        alice.resolve(conv)
        for s in (ws, tab):
            st = status_of(s)
            assert st == {"type": "status", "state": "resolved"}, st
        # Nothing is said twice: no more status frames.
        for s in (ws, tab):
            assert s.no_message(0.5)

        # Writing again reopens it (or opens a new one): routed again.
        send_msg(ws, "l2", "И ещё вопрос")
        ack_of(ws, "l2")
        st = status_of(ws)
        assert st["state"] == "queued", st
        if "position" not in st:  # "reopened", then the queue's place
            st = status_of(ws)
        assert st == {"type": "status", "state": "queued", "position": 1}, st
        conv2 = newest_conv(env, token)
        r = env.client.get("/api/v1/conversations/" + conv2)
        assert r.status == 200 and r.json["state"] == "queued", r
        alice.accept(conv2)
        st = status_of(ws)
        assert st["state"] == "assigned" and st["name"] == "Alice", st
        ws.close()
        tab.close()


def test_live_queue_positions():
    with live_env(capacity="1") as env:
        alice = Agent(env, "alice")
        socks, convs = [], []
        for i in range(3):
            ws, _, conv = visitor(env, "p%d" % i, "вопрос %d" % i)
            socks.append(ws)
            convs.append(conv)
            assert status_of(ws) == {"type": "status", "state": "queued",
                                     "position": i + 1}
        # The ones already waiting were not told anything new.
        for ws in socks:
            assert ws.no_message(0.3)

        alice.presence("online")
        alice.accept(convs[0])
        st = status_of(socks[0])
        assert st["state"] == "assigned" and st["name"] == "Alice", st
        # The others move up by one.
        for i in (1, 2):
            st = status_of(socks[i])
            assert st == {"type": "status", "state": "queued",
                          "position": i}, (i, st)
        # Resolving the first frees alice's slot: the next one is offered
        # (still first in line, position unchanged) and accepted.
        alice.resolve(convs[0])
        assert status_of(socks[0])["state"] == "resolved"
        alice.accept(convs[1])
        st = status_of(socks[1])
        assert st["state"] == "assigned" and st["name"] == "Alice", st
        assert status_of(socks[2]) == {"type": "status", "state": "queued",
                                       "position": 1}
        for ws in socks:
            ws.close()


def test_live_typing_both_ways():
    with live_env() as env:
        alice = Agent(env, "alice")
        con = console(env.port, alice.token)  # also sets alice online
        ws, token, conv = visitor(env, "t1", "Добрый день")
        assert status_of(ws)["state"] == "queued"
        alice.accept(conv)
        st = status_of(ws)
        assert st["state"] == "assigned" and st["name"] == "Alice", st

        # Agent -> customer.
        con.send_json({"type": "typing", "conversation": conv})
        t = ws.recv_type("typing")
        assert t == {"type": "typing", "from": "agent", "name": "Alice"}, t

        # Customer -> the assigned agent's console, at most one per 2 s
        # per socket.
        for _ in range(3):
            ws.send_json({"type": "typing"})
        t = con.recv_type("typing")
        assert t["from"] == "customer" and t["conversation"] == conv, t
        assert t["agent"] == "alice", t
        extra, _ = _drain(con, "typing", 1.0)
        assert extra == 0, "typing was not throttled"
        time.sleep(1.2)
        ws.send_json({"type": "typing"})
        t = con.recv_type("typing")
        assert t["from"] == "customer" and t["conversation"] == conv, t

        # The visitor comes back (the agent now known from the store, not
        # from an event) and still reaches the agent.
        ws.close()
        time.sleep(0.3)
        tab = connect(env)
        hello(tab, token=token)
        assert status_of(tab)["name"] == "Alice"
        tab.send_json({"type": "typing"})
        t = con.recv_type("typing")
        assert t["from"] == "customer" and t["agent"] == "alice", t
        for s in (tab, con):
            s.close()


def _drain(ws, typ, quiet):
    """Count frames of type typ until quiet seconds pass without any."""
    n, other = 0, []
    while True:
        try:
            m = ws.recv_json(quiet)
        except socket.timeout:
            return n, other
        if m.get("type") == typ:
            n += 1
        else:
            other.append(m)


class SecondDaemon:
    """Another daemon on the same Redis and prefix, on its own port."""

    def __init__(self, env):
        import copy
        from harness import Daemon, free_port, render_config
        self.tmp = os.path.join(env.tmp, "second")
        os.makedirs(self.tmp)
        self.port = free_port()
        self.stop_limit = env.stop_limit
        conf = copy.deepcopy(env.conf)
        conf["listener main"]["port"] = str(self.port)
        conf["http"]["public_url"] = "http://127.0.0.1:%d" % self.port
        self.conf_path = os.path.join(self.tmp, "switchboard.conf")
        with open(self.conf_path, "w") as f:
            f.write(render_config(conf))
        self.daemon = Daemon(self)

    def problems(self):
        import harness
        out = []
        for line in self.daemon.log_text().splitlines():
            if harness.SANITIZER_RE.search(line):
                out.append("second daemon sanitizer: " + line.strip())
            elif harness.ERRLINE_RE.match(line):
                out.append("second daemon error line: " + line.strip())
        for rc, how in self.daemon.rcs:
            if rc != 0:
                out.append("second daemon exit %s (%s)" % (rc, how))
        return out


@timeout(180)
def test_live_two_instances():
    with live_env(extra={"remote_wait": "1s"}) as env:
        b = SecondDaemon(env)
        try:
            b.daemon.start(30.0)
            _two_instances(env, b)
        finally:
            b.daemon.stop()
        probs = b.problems()
        assert not probs, "\n".join(probs[:10])


def _two_instances(env, b):
    # The visitor is on A; alice works through B only.
    alice = Agent(env, "alice", port=b.port)
    ws, token, conv = visitor(env, "x1", "Здравствуйте, я на первом")
    assert status_of(ws) == {"type": "status", "state": "queued",
                             "position": 1}
    con = console(b.port, alice.token)
    alice.accept(conv)
    st = status_of(ws)
    assert st["state"] == "assigned" and st["name"] == "Alice", st

    # A reply made on B reaches the socket on A (relayed, confirmed).
    t0 = time.monotonic()
    rep = alice.reply(conv, "Ответ со второго экземпляра")
    assert time.monotonic() - t0 < 1.0, "the relay waited for its timeout"
    assert rep["channel"] == "chat", rep
    assert rep["tried"][0]["result"] == "ok", rep
    m = ws.recv_type("message")
    assert m["from"] == "agent" and m["name"] == "Alice", m
    assert m["text"] == "Ответ со второго экземпляра", m

    # Typing crosses too, both ways.
    con.send_json({"type": "typing", "conversation": conv})
    assert ws.recv_type("typing")["name"] == "Alice"
    ws.send_json({"type": "typing"})
    t = con.recv_type("typing")
    assert t["from"] == "customer" and t["agent"] == "alice", t

    # The history on resume has the relayed reply, once.
    tab = connect(env)
    w = hello(tab, token=token)
    agent_msgs = [h for h in w["history"] if h["from"] == "agent"]
    assert [h["text"] for h in agent_msgs] == \
        ["Ответ со второго экземпляра"], w["history"]
    assert agent_msgs[0]["name"] == "Alice", agent_msgs
    tab.close()

    # The visitor leaves: nobody confirms, the reply is not claimed as
    # delivered; without e-mail or phone the customer is not reachable.
    ws.close()
    time.sleep(0.3)
    t0 = time.monotonic()
    r = alice.http.post("/api/v1/conversations/%s/messages" % conv,
                        {"text": "Вы ещё здесь?"})
    took = time.monotonic() - t0
    assert r.status == 409, r
    assert "not connected" in r.json.get("error", "") + json.dumps(r.json)
    assert 0.8 <= took <= 5.0, took
    ra = env.client.get("/metrics", token=None).body.decode()
    assert re.search(r'^sb_chat_messages_total\{direction="out"\} 1$', ra,
                     re.M), ra
    rb = b_metrics(b)
    assert re.search(r'^sb_chat_relay_total\{result="delivered"\} 1$', rb,
                     re.M), rb
    assert re.search(r'^sb_chat_relay_total\{result="timeout"\} 1$', rb,
                     re.M), rb

    # Resolved on B, seen on A by a visitor who came back.
    ws = connect(env)
    hello(ws, token=token)
    assert status_of(ws)["state"] == "assigned"
    alice.resolve(conv)
    assert status_of(ws) == {"type": "status", "state": "resolved"}
    ws.close()
    con.close()


def b_metrics(b):
    from harness import Client
    c = Client(b.port)
    try:
        return c.get("/metrics", token=None).body.decode()
    finally:
        c.close()


def test_sighup_reloads_chat_limits():
    """[chat] keys are reloadable: after SIGHUP a new Origin list and a
    smaller message limit apply to new sockets at once, without a restart."""
    import signal
    with chat_env({}) as env:
        ws = connect(env, origin="https://anywhere.test")
        hello(ws)
        ws.close()
        env.conf = dict(env.conf, chat=dict(env.conf["chat"],
                                            origins="https://shop.test",
                                            max_text="10"))
        env.write_config()
        pid_before = env.daemon.proc.pid
        env.daemon.signal(signal.SIGHUP)
        wait_until(lambda: not _try_connect(env, "https://anywhere.test"), 5,
                   what="the new Origin list applied")
        assert env.daemon.proc.pid == pid_before
        ws = connect(env, origin="https://shop.test")
        w = hello(ws)
        assert w["max_text"] == 10, w
        ws.send_json({"type": "message", "id": "m1", "text": "x" * 11})
        e = ws.recv_type("error")
        assert e["code"] == "too_long", e
        ws.close()
