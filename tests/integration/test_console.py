"""test_console.py - the agent console WebSocket (/console/ws,
switchboard.agent.v1, docs/console-protocol.md) against the daemon and a
real Redis.

Each test starts the daemon through harness.Env with [routing], [queue],
[chat] and [channels] sections (chat replies through the web chat driver,
e-mail through the file driver's outbox) and talks to /console/ws with
wsclient.py as the console page does: auth first, then presence, offers,
accept, open, reply, note, transfer, resolve and watch. Customers write
through /chat/ws (wsclient, like the widget) or POST /api/v1/contacts.
test_two_instances runs a second daemon on the same Redis; test_origins
checks the Origin list across dashboard refreshes; test_message_limits the
size and rate limits.

Every wait is bounded (recv with a time limit, wait_until).
"""

import copy
import json
import os
import socket
import time

import harness
from harness import (Client, Daemon, Env, ROOT, free_port, render_config,
                     timeout, wait_until)
from wsclient import Closed, HandshakeRefused, WsClient

WWW = os.path.join(ROOT, "channels", "webchat", "www")
PROTO = "switchboard.agent.v1"
RU = "Здравствуйте! Где мой заказ №42? «Ёлка» — ёжик"
RU_REPLY = "Добрый день, Иван! Заказ уже в пути."
EMAIL = "ivan.petrov@example.com"


def console_env(console=None, queue=None, more=None, **kw):
    ov = {
        "routing": {"default_queue": "general", "offer_timeout": "30s",
                    "tick": "200ms"},
        "queue general": {"members": "alice, bob", "strategy": "round_robin",
                          "sla": "2m"},
        "chat": {"www_dir": WWW},
        "channels": {"chat": "chat", "email": "file", "sms": "file"},
        "console": {"offline_grace": "1s"},
    }
    ov["console"].update(console or {})
    ov["queue general"].update(queue or {})
    ov.update(more or {})
    return Env(ov, **kw)


class Console:
    """One console socket, authenticated as user; request() sends with an
    id and waits for the frame answering it."""

    def __init__(self, port, token, auth=True, **extra):
        self.ws = WsClient.connect(port, "/console/ws", protocol=PROTO)
        self.seq = 0
        self.frames = []  # frames read while looking for another
        if auth:
            self.ws.send_json(dict({"type": "auth", "token": token},
                                   **extra))
            self.hello = self.recv_type("hello")

    def send(self, obj):
        self.ws.send_json(obj)

    def recv_until(self, pred, limit=10.0, what="frame"):
        for i, m in enumerate(self.frames):
            if pred(m):
                del self.frames[i]
                return m
        m, skipped = self.ws.recv_until(pred, limit, what)
        self.frames.extend(skipped)
        return m

    def recv_type(self, t, limit=10.0, **match):
        def pred(m):
            return m.get("type") == t and all(m.get(k) == v
                                               for k, v in match.items())
        return self.recv_until(pred, limit, "%r frame %s" % (t, match))

    def request(self, obj, limit=10.0):
        self.seq += 1
        rid = "q%d" % self.seq
        obj = dict(obj, id=rid)
        self.send(obj)
        return self.recv_until(lambda m: m.get("id") == rid and
                               m.get("type") in ("result", "error",
                                                 "timeline"),
                               limit, "answer to %r" % obj)

    def ok(self, obj, limit=10.0):
        r = self.request(obj, limit)
        assert r["type"] in ("result", "timeline"), "%r -> %r" % (obj, r)
        return r

    def drain(self):
        self.frames = []

    def close(self):
        self.ws.close()


def visitor(env, port=None, **hello):
    ws = WsClient.connect(port or env.port, "/chat/ws")
    msg = {"type": "hello"}
    msg.update(hello)
    ws.send_json(msg)
    w = ws.recv_type("welcome")
    return ws, w


def chat_say(ws, cid, text):
    ws.send_json({"type": "message", "id": cid, "text": text})
    m, _ = ws.recv_until(lambda m: m.get("type") in ("ack", "error") and
                         m.get("id") == cid, 10.0, "ack of %s" % cid)
    assert m["type"] == "ack", m
    return m


def agent_row(env, name):
    r = env.client.get("/api/v1/agents")
    assert r.status == 200, r
    for a in r.json["agents"]:
        if a["name"] == name:
            return a
    raise AssertionError("no agent %s" % name)


def no_chat_message(ws, quiet=0.5):
    """True when no agent message reaches the visitor for quiet seconds
    (status or typing frames may come)."""
    deadline = time.monotonic() + quiet
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        try:
            m = ws.recv_json(left)
        except socket.timeout:
            return True
        if m.get("type") == "message":
            return False


def closed_with(ws, limit=10.0):
    code, reason = ws.wait_close(limit)
    return code, reason


# --------------------------------------------------------------------------

@timeout(90)
def test_auth_required():
    with console_env() as env:
        tok = env.login("alice")
        # Anything but auth first: 1008.
        for first in ({"type": "state"}, {"type": "presence",
                                          "state": "online"},
                      {"type": "auth"}, {"type": "auth", "token": ""},
                      {"token": tok}):
            c = Console(env.port, None, auth=False)
            c.send(first)
            code, reason = closed_with(c.ws)
            assert code == 1008, (first, code, reason)
        c = Console(env.port, None, auth=False)
        c.ws.send_text("not json")
        assert closed_with(c.ws)[0] == 1008
        # A wrong, a malformed and an API-key token: 1008 invalid session.
        for bad in ("x" * 43, "nope", env.apikey[:64]):
            c = Console(env.port, None, auth=False)
            c.send({"type": "auth", "token": bad})
            code, reason = closed_with(c.ws)
            assert code == 1008 and "session" in reason, (bad, code, reason)
        # A logged-out session is invalid too.
        tok2 = env.login("bob")
        r = env.client.post("/api/v1/logout", token=tok2)
        assert r.status in (200, 204), r
        c = Console(env.port, None, auth=False)
        c.send({"type": "auth", "token": tok2})
        assert closed_with(c.ws)[0] == 1008
        # ping is answered before auth; the socket stays open, then auth.
        c = Console(env.port, None, auth=False)
        c.send({"type": "ping"})
        assert c.recv_type("pong")["type"] == "pong"
        c.send({"type": "auth", "token": tok})
        h = c.recv_type("hello")
        assert h == {"type": "hello", "user": "alice", "role": "agent",
                     "name": "Alice"}, h
        st = c.recv_type("state")
        assert st["me"]["name"] == "alice", st
        assert st["me"]["queues"] == ["general"], st
        q = c.recv_type("queues")
        assert [x["name"] for x in q["queues"]] == ["general"], q
        # Errors after auth are frames, not closes.
        c.send({"type": "bogus"})
        assert c.recv_type("error")["code"] == "invalid"
        c.ws.send_text("{bad")
        assert c.recv_type("error")["code"] == "bad_json"
        r = c.request({"type": "open", "conversation": "cv_999"})
        assert r["type"] == "error" and r["code"] == "not_found", r
        r = c.request({"type": "transfer", "conversation": "cv_1",
                       "agent": "bob", "queue": "general"})
        assert r["type"] == "error" and r["code"] == "invalid", r
        r = c.request({"type": "presence", "state": "busy"})
        assert r["type"] == "error" and r["code"] == "invalid", r
        r = c.request({"type": "reply", "conversation": "cv_1", "text": ""})
        assert r["type"] == "error" and r["code"] == "invalid", r
        c.close()
        # Silent sockets are closed after 10 s without auth.
        c = Console(env.port, None, auth=False)
        t0 = time.monotonic()
        code, reason = closed_with(c.ws, 15.0)
        assert code == 1008 and "auth" in reason, (code, reason)
        assert 9.0 <= time.monotonic() - t0 <= 13.0


@timeout(90)
def test_presence_online_then_offline_after_grace():
    with console_env(console={"offline_grace": "2s"}) as env:
        tok = env.login("alice")
        assert agent_row(env, "alice")["presence"] == "offline"
        c = Console(env.port, tok)
        r = c.recv_type("result", action="presence")
        assert r["result"]["presence"] == "online", r
        ev = c.recv_type("presence")
        assert ev["agent"] == "alice" and ev["presence"] == "online", ev
        assert agent_row(env, "alice")["presence"] == "online"

        # The page sets away and online again.
        r = c.ok({"type": "presence", "state": "away"})
        assert r["action"] == "presence" and \
            r["result"]["presence"] == "away", r
        assert c.recv_type("presence", presence="away")["previous"] == \
            "online"
        assert agent_row(env, "alice")["presence"] == "away"
        c.ok({"type": "presence", "state": "online"})

        # A second console and a reload within the grace: still online.
        c2 = Console(env.port, tok)
        c.close()
        c2.close()
        time.sleep(0.5)
        c3 = Console(env.port, tok)
        time.sleep(3.0)
        assert agent_row(env, "alice")["presence"] == "online"

        # The last console gone: offline after the grace, not before.
        c3.close()
        t0 = time.monotonic()
        time.sleep(1.0)
        assert agent_row(env, "alice")["presence"] == "online"
        wait_until(lambda: agent_row(env, "alice")["presence"] ==
                   "offline", 5.0, 0.1, "alice offline")
        took = time.monotonic() - t0
        assert 1.9 <= took <= 4.5, took

        # Back: online again.
        c4 = Console(env.port, tok)
        c4.recv_type("presence", presence="online")
        assert agent_row(env, "alice")["presence"] == "online"
        c4.close()


@timeout(120)
def test_offer_accept_open_reply_note():
    with console_env() as env:
        # The customer's earlier contacts on other channels, no
        # conversation (not routed): an e-mail and an SMS.
        r = env.client.post("/api/v1/contacts", {
            "channel": "email", "email": EMAIL, "name": "Иван Петров",
            "subject": "Заказ №42", "text": "Письмо про заказ",
            "conversation": "none"})
        assert r.status == 201, r
        cu = r.json["customer"]
        r = env.client.post("/api/v1/contacts", {
            "channel": "sms", "customer": cu, "phone": "+79161234567",
            "text": "СМС про заказ", "conversation": "none"})
        assert r.status == 201 and r.json["customer"] == cu, r

        alice = Console(env.port, env.login("alice"))
        bob = Console(env.port, env.login("bob"))
        alice.recv_type("presence", presence="online")
        bob.recv_type("presence", presence="online")
        # bob away: the offer goes to alice.
        bob.ok({"type": "presence", "state": "away"})

        vis, w = visitor(env, email=EMAIL, name="Иван Петров")
        t0 = time.time() * 1000
        chat_say(vis, "m1", RU)
        offer = alice.recv_type("offer", limit=10.0)
        cv = offer["conversation"]
        assert offer["agent"] == "alice" and offer["customer"] == cu, offer
        assert offer["queue"] == "general", offer
        assert t0 + 25000 <= offer["expires"] <= t0 + 35000, offer

        r = alice.ok({"type": "accept", "conversation": cv})
        assert r["action"] == "accept" and r["conversation"] == cv, r
        assert r["result"]["state"] == "assigned", r
        assert r["result"]["agent"] == "alice", r
        ev = alice.recv_type("assigned", conversation=cv)
        assert ev["reason"] == "accepted", ev

        # The whole cross-channel timeline.
        tl = alice.ok({"type": "open", "conversation": cv})
        assert tl["type"] == "timeline", tl
        assert tl["conversation"]["id"] == cv, tl["conversation"]
        assert tl["conversation"]["channel"] == "chat"
        assert tl["customer"]["id"] == cu and \
            tl["customer"]["name"] == "Иван Петров", tl["customer"]
        ents = tl["entries"]
        chans = {e["channel"] for e in ents}
        assert {"chat", "email", "sms"} <= chans, chans
        texts = [e["text"] for e in ents]
        assert RU in texts and "Письмо про заказ" in texts and \
            "СМС про заказ" in texts, texts
        ats = [e["at"] for e in ents]
        assert ats == sorted(ats, reverse=True), "not newest first"
        assert any(e["type"] == "assignment" for e in ents), ents
        # Older page: everything before the newest entry.
        older = alice.ok({"type": "open", "conversation": cv,
                          "before": ents[0]["id"]})
        assert [e["id"] for e in older["entries"]] == \
            [e["id"] for e in ents[1:]], older["entries"]

        # Typing: the customer's reaches the console, the agent's the
        # widget.
        vis.send_json({"type": "typing"})
        ty = alice.recv_type("typing", conversation=cv)
        assert ty["from"] == "customer" and ty["agent"] == "alice", ty
        alice.send({"type": "typing", "conversation": cv})
        ty = vis.recv_type("typing")
        assert ty["from"] == "agent" and ty["name"] == "Alice", ty

        # Reply through the chat: the visitor gets it with the display name.
        alice.drain()
        r = alice.ok({"type": "reply", "conversation": cv,
                      "text": RU_REPLY})
        res = r["result"]
        assert res["channel"] == "chat", res
        assert res["tried"][0]["result"] == "ok", res
        m = vis.recv_type("message")
        assert m["text"] == RU_REPLY and m["name"] == "Alice", m
        assert m["from"] == "agent", m
        e = alice.recv_type("entry", conversation=cv)
        assert e["entry"]["id"] == res["contact"], (e, res)
        assert e["entry"]["direction"] == "out" and \
            e["entry"]["text"] == RU_REPLY, e

        # The customer writes again: an entry frame, live.
        chat_say(vis, "m2", "Спасибо! <b>жду</b>")
        e = alice.recv_type("entry", conversation=cv)
        assert e["entry"]["direction"] == "in", e
        assert e["entry"]["text"] == "Спасибо! <b>жду</b>", e

        # A note: result and entry.
        r = alice.ok({"type": "note", "conversation": cv,
                      "text": "Клиент VIP"})
        e = alice.recv_type("entry", conversation=cv)
        assert e["entry"]["id"] == r["result"]["contact"], (e, r)
        assert e["entry"]["type"] == "note" and \
            e["entry"]["direction"] == "internal", e
        assert e["entry"]["agent"] == "alice", e

        # bob may not act in alice's conversation.
        bob.ok({"type": "presence", "state": "online"})
        for req in ({"type": "reply", "text": "чужой ответ"},
                    {"type": "note", "text": "чужая заметка"},
                    {"type": "resolve"},
                    {"type": "transfer", "queue": "general"}):
            req["conversation"] = cv
            r = bob.request(req)
            assert r["type"] == "error" and r["code"] == "forbidden", \
                (req, r)
        assert no_chat_message(vis), "bob's reply reached the customer"

        # The visitor leaves: the reply falls back to e-mail (file driver).
        vis.close()
        time.sleep(0.3)
        r = alice.ok({"type": "reply", "conversation": cv,
                      "text": "Ответ по почте"})
        res = r["result"]
        assert res["channel"] == "email", res
        assert res["tried"][0]["channel"] == "chat" and \
            res["tried"][0]["result"] == "tempfail", res
        outbox = os.path.join(env.tmp, "outbox")
        files = wait_until(lambda: os.listdir(outbox), 5.0, 0.05, "outbox")
        body = b"".join(open(os.path.join(outbox, f), "rb").read()
                        for f in files)
        assert "Ответ по почте".encode() in body, body[:500]
        assert ("To: " + EMAIL).encode() in body, body[:500]

        # Resolve, and the resolved conversation takes no reply.
        r = alice.ok({"type": "resolve", "conversation": cv})
        assert r["result"]["state"] == "resolved", r
        alice.recv_type("resolved", conversation=cv)
        r = alice.request({"type": "reply", "conversation": cv,
                           "text": "поздно"})
        assert r["type"] == "error" and r["code"] == "conflict", r
        alice.close()
        bob.close()


@timeout(120)
def test_decline_transfer_supervisor():
    with console_env(more={"queue billing": {"members": "olga"}}) as env:
        alice = Console(env.port, env.login("alice"))
        bob = Console(env.port, env.login("bob"))
        olga = Console(env.port, env.login("olga"))
        for c in (alice, bob, olga):
            c.recv_type("presence", presence="online")
        bob.ok({"type": "presence", "state": "away"})
        olga.ok({"type": "presence", "state": "offline"})
        r = env.client.post("/api/v1/contacts", {
            "channel": "chat", "email": "anna@example.com",
            "text": "Нужна помощь"})
        assert r.status == 201, r
        cv = r.json["conversation"]
        alice.recv_type("offer", conversation=cv)
        # Decline: withdrawn; it waits (bob is away) and cannot be taken
        # back by accept.
        r = alice.ok({"type": "decline", "conversation": cv})
        assert r["action"] == "decline", r
        w = alice.recv_type("withdrawn", conversation=cv)
        assert w["reason"] == "declined", w
        r = alice.request({"type": "accept", "conversation": cv})
        assert r["type"] == "error" and r["code"] == "conflict", r
        # bob comes back: the offer goes to him; he accepts.
        bob.ok({"type": "presence", "state": "online"})
        bob.recv_type("offer", conversation=cv)
        bob.ok({"type": "accept", "conversation": cv})
        # Transfer to a queue: it waits there again (olga is offline).
        r = bob.ok({"type": "transfer", "conversation": cv,
                    "queue": "billing"})
        assert r["result"]["queue"] == "billing" and \
            r["result"]["state"] == "queued", r
        # bob no longer holds it.
        r = bob.request({"type": "resolve", "conversation": cv})
        assert r["type"] == "error" and r["code"] == "forbidden", r
        # The operator may act on any conversation: assign it to alice.
        r = olga.ok({"type": "transfer", "conversation": cv,
                     "agent": "alice"})
        assert r["result"]["agent"] == "alice" and \
            r["result"]["state"] == "assigned", r
        a = alice.recv_type("assigned", conversation=cv)
        assert a["reason"] == "transfer", a
        r = olga.ok({"type": "note", "conversation": cv,
                     "text": "проверено"})
        assert r["result"]["contact"]
        r = olga.ok({"type": "resolve", "conversation": cv})
        assert r["result"]["state"] == "resolved", r
        ev = alice.recv_type("resolved", conversation=cv)
        assert ev["by"] == "olga", ev
        for c in (alice, bob, olga):
            c.close()


@timeout(90)
def test_dashboard_watch():
    # No SLA here: with one, the board also refreshes every 5 s while a
    # conversation may still breach it (test_dashboard_sla).
    with console_env(queue={"sla": "0"}) as env:
        # A dashboard socket (presence false) leaves presence alone.
        olga = Console(env.port, env.login("olga"), presence=False)
        alice_tok = env.login("alice")
        # An agent's watch is refused.
        a = Console(env.port, alice_tok)
        r = a.request({"type": "watch"})
        assert r["type"] == "error" and r["code"] == "forbidden", r
        assert a.ws.no_message(1.5) or all(
            m.get("type") != "dashboard" for m in a.frames)
        a.close()
        # The operator's watch: a frame at once.
        olga.send({"type": "watch"})
        d = olga.recv_type("dashboard", limit=2.0)
        names = [q["name"] for q in d["queues"]]
        assert names == ["general"], names
        assert {x["name"] for x in d["agents"]} == {"alice", "bob", "olga",
                                                   "root"}, d["agents"]
        assert agent_row(env, "olga")["presence"] == "offline"
        wait_until(lambda: agent_row(env, "alice")["presence"] ==
                   "offline", 6.0, 0.1, "alice offline after the grace")
        # Quiet for a moment, then a change: a frame within 1 s.
        time.sleep(1.5)
        olga.drain()
        r = env.client.post("/api/v1/contacts", {
            "channel": "chat", "email": "wait@example.com",
            "text": "Есть кто?"})
        assert r.status == 201, r
        t0 = time.monotonic()
        d = olga.recv_until(lambda m: m.get("type") == "dashboard" and
                            m["queues"][0]["waiting"] == 1, 3.0,
                            "dashboard with 1 waiting")
        took = time.monotonic() - t0
        assert took <= 1.0, "dashboard frame after %.2fs" % took
        assert d["queues"][0]["longest_wait"] >= 0, d
        # An agent comes online: the frame shows it within 1 s.
        time.sleep(1.2)
        t0 = time.monotonic()
        a = Console(env.port, alice_tok)
        d = olga.recv_until(
            lambda m: m.get("type") == "dashboard" and any(
                x["name"] == "alice" and x["presence"] == "online" and
                (x["offers"] or x["active"]) for x in m["agents"]),
            3.0, "dashboard with alice online and offered")
        took = time.monotonic() - t0
        assert took <= 1.5, "dashboard frame after %.2fs" % took
        # Nothing changes: no frames (at most one straggler).
        time.sleep(1.5)
        olga.drain()
        n = 0
        for _ in range(5):
            try:
                m = olga.ws.recv_json(0.5)
                n += m.get("type") == "dashboard"
            except socket.timeout:
                pass
        assert n == 0, "%d dashboard frames while nothing changed" % n
        a.close()
        olga.close()


class Second:
    """Another daemon on the same Redis (and prefix), on its own port."""

    def __init__(self, env):
        self.tmp = os.path.join(env.tmp, "b")
        os.makedirs(self.tmp)
        self.port = free_port()
        self.stop_limit = env.stop_limit
        conf = copy.deepcopy(env.conf)
        conf["listener main"]["port"] = str(self.port)
        conf["http"]["public_url"] = "http://127.0.0.1:%d" % self.port
        conf["file"]["dir"] = os.path.join(self.tmp, "outbox")
        self.conf_path = os.path.join(self.tmp, "switchboard.conf")
        with open(self.conf_path, "w") as f:
            f.write(render_config(conf))
        self.daemon = Daemon(self)

    def problems(self):
        out = []
        for line in self.daemon.log_text().splitlines():
            if harness.SANITIZER_RE.search(line) or \
                    harness.ERRLINE_RE.match(line):
                out.append("daemon B: " + line.strip())
        for rc, how in self.daemon.rcs:
            if rc != 0:
                out.append("daemon B exit %s (%s)" % (rc, how))
        return out


@timeout(120)
def test_two_instances():
    with console_env() as env:
        b = Second(env)
        try:
            b.daemon.start(30.0)
            tok = env.login("alice")
            alice = Console(b.port, tok)  # the console on instance B
            alice.recv_type("presence", presence="online")
            # A chat posted to instance A (API) ...
            cl = Client(env.port, env.apikey)
            env.clients.append(cl)
            r = cl.post("/api/v1/contacts", {
                "channel": "chat", "email": "two@example.com",
                "text": "Сообщение на инстанс A"})
            assert r.status == 201, r
            cv = r.json["conversation"]
            # ... is offered to the console on B.
            o = alice.recv_type("offer", conversation=cv)
            assert o["agent"] == "alice", o
            alice.ok({"type": "accept", "conversation": cv})
            # A visitor on A writes in that conversation's customer's new
            # chat: the customer's next message on A reaches B live.
            r = cl.post("/api/v1/contacts", {
                "channel": "chat", "email": "two@example.com",
                "text": "Ещё одно"})
            assert r.status == 201 and r.json["conversation"] == cv, r
            e = alice.recv_type("entry", conversation=cv)
            assert e["entry"]["text"] == "Ещё одно", e
            # A visitor whose socket is on A, the agent on B: the offer,
            # the reply (relayed to A's socket) and the customer's typing.
            vis, _ = visitor(env)
            chat_say(vis, "v1", "Я на инстансе A")
            o = alice.recv_until(lambda m: m.get("type") == "offer" and
                                 m["conversation"] != cv, 10.0, "offer 2")
            cv2 = o["conversation"]
            alice.ok({"type": "accept", "conversation": cv2})
            r = alice.ok({"type": "reply", "conversation": cv2,
                          "text": "Ответ с инстанса B"})
            assert r["result"]["channel"] == "chat", r
            m = vis.recv_type("message")
            assert m["text"] == "Ответ с инстанса B" and \
                m["name"] == "Alice", m
            vis.send_json({"type": "typing"})
            alice.recv_type("typing", conversation=cv2)
            vis.close()
            # An operator watching on A sees alice busy (she is on B).
            olga = Console(env.port, env.login("olga"), presence=False)
            olga.send({"type": "watch"})
            d = olga.recv_until(
                lambda m: m.get("type") == "dashboard" and any(
                    x["name"] == "alice" and x["active"] == 2
                    for x in m["agents"]), 3.0, "alice busy on A's board")
            assert d["queues"][0]["busy"] == 1, d["queues"]
            assert agent_row(env, "alice")["active"] == 2
            olga.close()
            alice.close()
        finally:
            b.daemon.stop()
        probs = b.problems()
        assert not probs, "\n".join(probs[:10])


@timeout(60)
def test_message_limits():
    with console_env(console={"max_message": "2k"}) as env:
        c = Console(env.port, env.login("alice"))
        c.ws.send_text(json.dumps({"type": "note", "conversation": "cv_1",
                                   "text": "я" * 2000}))
        code, _ = closed_with(c.ws)
        assert code == 1009, code
        # Flooding: more than 20 messages a second (bursts of 2 s): 1008.
        c = Console(env.port, env.login("alice"))
        code = None
        try:
            for _ in range(200):
                c.send({"type": "ping"})
            code, _ = closed_with(c.ws)
        except (Closed, OSError):
            code = c.ws.closed[0] if c.ws.closed else 1008
        assert code == 1008, code


@timeout(60)
def test_origins():
    good = "https://console.example.com"
    with console_env(console={"origins": good}) as env:
        # The allowed origin (and none, as from a script) connects; the
        # dashboard keeps working across frames (the list stays valid).
        olga = WsClient.connect(env.port, "/console/ws", protocol=PROTO,
                                origin=good)
        olga.send_json({"type": "auth", "token": env.login("olga")})
        olga.recv_type("hello")
        olga.send_json({"type": "watch"})
        olga.recv_type("dashboard")
        r = env.client.post("/api/v1/contacts", {
            "channel": "chat", "email": "o@example.com", "text": "hi"})
        assert r.status == 201, r
        olga.recv_until(lambda m: m.get("type") == "dashboard" and
                        m["queues"][0]["waiting"] == 1, 3.0, "dashboard")
        for _ in range(3):
            ok = WsClient.connect(env.port, "/console/ws", protocol=PROTO,
                                  origin=good)
            ok.close()
            try:
                WsClient.connect(env.port, "/console/ws", protocol=PROTO,
                                 origin="http://evil.example.com")
                raise AssertionError("a foreign origin was let in")
            except HandshakeRefused:
                pass
        olga.close()


@timeout(60)
def test_dashboard_sla():
    with console_env(queue={"sla": "2s"}) as env:
        olga = Console(env.port, env.login("olga"), presence=False)
        olga.send({"type": "watch"})
        olga.recv_type("dashboard")
        r = env.client.post("/api/v1/contacts", {
            "channel": "chat", "email": "late@example.com",
            "text": "Ответьте, пожалуйста"})
        assert r.status == 201, r
        d = olga.recv_until(lambda m: m.get("type") == "dashboard" and
                            m["queues"][0]["waiting"] == 1, 3.0, "waiting")
        assert d["queues"][0]["sla_breaches"] == 0, d["queues"]
        # Nobody answers and nothing else happens: the breach shows by
        # itself within the 2 s target plus the 5 s refresh.
        t0 = time.monotonic()
        d = olga.recv_until(lambda m: m.get("type") == "dashboard" and
                            m["queues"][0]["sla_breaches"] == 1, 10.0,
                            "an SLA breach")
        assert time.monotonic() - t0 <= 8.5
        # Everything breached that can: no more periodic frames.
        olga.drain()
        assert olga.ws.no_message(6.0), "frames while nothing can change"
        olga.close()


@timeout(60)
def test_presence_across_instances():
    """An agent with consoles on two instances stays online while either
    is open: closing the one on A does not set her offline after A's grace;
    closing the last one (on B) does."""
    with console_env() as env:
        b = Second(env)
        try:
            b.daemon.start(30.0)
            tok = env.login("alice")
            on_a = Console(env.port, tok)
            on_a.recv_type("presence", presence="online")
            on_b = Console(b.port, tok)
            time.sleep(1.5)  # both instances have announced their console
            on_a.close()
            time.sleep(3.0)  # well past the 1 s grace on A
            assert agent_row(env, "alice")["presence"] == "online", \
                "set offline while a console on B was open"
            on_b.close()
            wait_until(lambda: agent_row(env, "alice")["presence"] ==
                       "offline", 8.0, 0.1, "offline after the last console")
        finally:
            b.daemon.stop()
        probs = b.problems()
        assert not probs, "\n".join(probs[:10])
