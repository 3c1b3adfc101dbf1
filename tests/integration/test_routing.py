"""test_routing.py - the routing engine end to end over HTTP.

Each test starts the daemon (and a private Redis) through harness.Env with
[routing], [queue], [agent] and [rule] sections and several agent accounts
([user] role agent: alice and bob from the harness, carol, dave and eve
added here), posts chat/e-mail contacts to POST /api/v1/contacts as
customers would, and acts as the agents and the operator (olga) through the
routing API. What happened is read back from the API (conversations,
timelines, queues, agents, the contact log) and from Redis directly, on the
keys docs/routing.md documents. The last test runs two daemons on one Redis
and makes agents race for the same conversations.

Every wait is bounded (wait_until); offers that must time out use
offer_timeout/curator_timeout 1s and [routing] tick 100ms.
"""

import copy
import fcntl
import json
import os
import subprocess
import threading
import time

import apiutil
import harness
from harness import (Client, Daemon, Env, SAN_ENV, SB_BIN, free_port,
                     render_config, timeout, wait_until)

# Agent accounts beyond the harness' alice and bob (role agent).
EXTRA = {"carol": "carol-Пароль-5", "dave": "dave-password-6",
         "eve": "eve-password-7"}
OPERATOR = "olga"


# --------------------------------------------------------------------------
# Accounts and config.

def extra_users():
    """{name: argon2 hash} for EXTRA, made by the daemon once per run."""
    path = os.path.join(os.path.dirname(harness._cache_path()),
                        "routing-users.json")
    with open(path + ".lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get("bin") == SB_BIN and set(data["users"]) == set(EXTRA):
                return data["users"]
        except (OSError, ValueError, KeyError):
            pass
        users = {}
        env = dict(os.environ)
        env.update(SAN_ENV)
        for name, pw in EXTRA.items():
            p = subprocess.run([SB_BIN, "--hash-password"],
                               input=(pw + "\n").encode(),
                               capture_output=True, timeout=60, env=env)
            out = p.stdout.decode().strip()
            assert p.returncode == 0 and out.startswith("$argon2id$"), \
                "--hash-password: %r %r" % (out, p.stderr[-500:])
            users[name] = out
        with open(path + ".tmp", "w") as f:
            json.dump({"bin": SB_BIN, "users": users}, f)
        os.replace(path + ".tmp", path)
        return users


def password(env, name):
    return EXTRA[name] if name in EXTRA else env.password(name)


def routing_env(routing, queues, agents=None, rules=None, **kw):
    """An Env with the extra agents, [routing], [queue NAME] (dict of
    dicts, in order), [agent NAME] and [rule NAME] sections (in order)."""
    ov = {}
    for name, h in extra_users().items():
        ov["user " + name] = {"role": "agent", "password": h,
                              "display_name": name.capitalize()}
    ov["routing"] = dict(routing)
    for name, keys in queues.items():
        ov["queue " + name] = dict(keys)
    for name, keys in (agents or {}).items():
        ov["agent " + name] = dict(keys)
    for name, keys in (rules or {}).items():
        ov["rule " + name] = dict(keys)
    return Env(ov, **kw)


class Team:
    """Logged-in clients for agents and the operator, on one daemon port
    (or several: client(name, i) picks port i)."""

    def __init__(self, env, ports=None):
        self.env = env
        self.ports = ports or [env.port]
        self.tokens = {}
        self.clients = {}

    def token(self, name):
        if name not in self.tokens:
            r = self.env.client.post(
                "/api/v1/login",
                {"username": name, "password": password(self.env, name)},
                token=None)
            assert r.status == 200, "login %s: %r" % (name, r)
            self.tokens[name] = r.json["token"]
        return self.tokens[name]

    def __call__(self, name, i=0):
        i %= len(self.ports)
        key = (name, i)
        if key not in self.clients:
            c = Client(self.ports[i % len(self.ports)], self.token(name))
            self.env.clients.append(c)
            self.clients[key] = c
        return self.clients[key]

    def presence(self, name, state, i=0):
        r = self(name, i).put("/api/v1/agents/%s/presence" % name,
                              {"state": state})
        assert r.status == 200, "presence %s %s: %r" % (name, state, r)
        assert r.json["presence"] == state, r.json
        return r.json

    def step(self, who, cv, step, body=None, i=0):
        return self(who, i).post("/api/v1/conversations/%s/%s" % (cv, step),
                                 body)


def chat(env, email, text, client=None, **extra):
    """A customer's chat message; returns the POST /api/v1/contacts
    answer (customer, conversation ...)."""
    body = {"channel": "chat", "direction": "in", "email": email,
            "text": text}
    body.update(extra)
    r = (client or env.client).post("/api/v1/contacts", body)
    assert r.status == 201, "contact: %r" % r
    assert r.json["conversation"], r.json
    return r.json


def new_customer(env, email, **fields):
    """A customer made by an (unrouted) api contact, then PUT fields."""
    r = env.client.post("/api/v1/contacts",
                        {"channel": "api", "email": email, "text": "signup",
                         "conversation": "none"})
    assert r.status == 201, r
    cu = r.json["customer"]
    if fields:
        r = env.client.put("/api/v1/customers/" + cu, fields)
        assert r.status == 200, "PUT customer %s: %r" % (fields, r)
    return cu


def conv(env, cv, client=None):
    r = (client or env.client).get("/api/v1/conversations/" + cv)
    assert r.status == 200, r
    return r.json


def listing(env, client=None, **query):
    qs = "&".join("%s=%s" % kv for kv in query.items())
    r = (client or env.client).get("/api/v1/conversations?" + qs)
    assert r.status == 200, "list %s: %r" % (qs, r)
    return r.json["conversations"]


def view(env, cv, state=None):
    """The conversation as GET /api/v1/conversations lists it (with hop,
    position, offers), or None."""
    q = {"limit": 500}
    if state:
        q["state"] = state
    for c in listing(env, **q):
        if c["id"] == cv:
            return c
    return None


def offers(env, cv):
    """Redis: agent -> deadline of the pending offers of cv."""
    return {k: int(v) for k, v in
            env.redis.hgetall("sb:rt:conv:%s:offers" % cv).items()}


def wait_offers(env, cv, agents, limit=5.0):
    """Until exactly `agents` hold offers of cv (Redis); returns them."""
    want = set(agents)
    last = [None]

    def pred():
        last[0] = offers(env, cv)
        return set(last[0]) == want and last[0]
    try:
        return wait_until(pred, limit, 0.02, "offers of %s" % cv)
    except AssertionError:
        raise AssertionError("offers of %s: want %s within %.1fs, have %s; "
                             "conversation %s; decisions %s"
                             % (cv, sorted(want), limit, last[0],
                                conv(env, cv), actions(env, cv)))


def smembers(env, key):
    return sorted(x.decode() for x in env.redis.cmd("SMEMBERS", key) or [])


def zmembers(env, key):
    return [x.decode() for x in env.redis.cmd("ZRANGE", key, 0, -1) or []]


def timeline(env, cv):
    """The conversation's timeline through the API, oldest first."""
    return apiutil.timeline(env, "conversations", cv)


def decisions(env, cv):
    """The routing entries of cv's timeline: [(action, fields, entry)]."""
    out = []
    for e in timeline(env, cv):
        if e["type"] in ("assignment", "status"):
            assert e["direction"] == "internal", e
            out.append((e["fields"]["action"], e["fields"], e))
    return out


def actions(env, cv):
    return [a for a, _f, _e in decisions(env, cv)]


def agent_row(env, name, client=None):
    r = (client or env.client).get("/api/v1/agents")
    assert r.status == 200, r
    for a in r.json["agents"]:
        if a["name"] == name:
            return a
    raise AssertionError("agent %s not in GET /api/v1/agents" % name)


def queue_row(env, name, client=None):
    r = (client or env.client).get("/api/v1/queues")
    assert r.status == 200, r
    for qr in r.json["queues"]:
        if qr["name"] == name:
            return qr
    raise AssertionError("queue %s not in GET /api/v1/queues" % name)


# --------------------------------------------------------------------------
# Presence.

@timeout(90)
def test_presence_rights_and_withdrawal():
    with routing_env({"default_queue": "general", "offer_timeout": "30s",
                      "tick": "100ms"},
                     {"general": {"members": "alice, bob",
                                  "strategy": "round_robin"}}) as env:
        t = Team(env)
        # An agent sets its own presence: online, away, offline.
        for st in ("online", "away", "offline", "online"):
            before = int(time.time() * 1000)
            j = t.presence("alice", st)
            assert j["name"] == "alice" and j["capacity"] == 3, j
            h = env.redis.hgetall("sb:rt:agent:alice")
            assert h["presence"] == st, h
            assert before - 5 <= int(h["since"]) <= before + 5000, h
            assert agent_row(env, "alice")["presence"] == st
        # Not another agent's: 403, and nothing changes.
        r = t("alice").put("/api/v1/agents/bob/presence",
                           {"state": "online"})
        assert r.status == 403, r
        assert env.redis.cmd("HGET", "sb:rt:agent:bob", "presence") is None
        assert agent_row(env, "bob")["presence"] == "offline"
        # An operator may set anyone's; so may an admin API key.
        r = t(OPERATOR).put("/api/v1/agents/bob/presence",
                            {"state": "away"})
        assert r.status == 200 and r.json["presence"] == "away", r
        assert env.redis.cmd("HGET", "sb:rt:agent:bob",
                             "presence") == b"away"
        r = env.client.put("/api/v1/agents/bob/presence",
                           {"state": "online"}, token=env.key("boss"))
        assert r.status == 200 and r.json["presence"] == "online", r
        # ... but not a key without admin, nor an unknown state or agent.
        r = env.client.put("/api/v1/agents/bob/presence",
                           {"state": "offline"})
        assert r.status == 403, r
        r = t("alice").put("/api/v1/agents/alice/presence",
                           {"state": "busy"})
        assert r.status == 400, r
        r = t(OPERATOR).put("/api/v1/agents/nobody/presence",
                            {"state": "online"})
        assert r.status == 404, r
        assert agent_row(env, "bob")["presence"] == "online"

        # Going away withdraws the pending offer (reason away, not a
        # refusal): the conversation moves on to the other agent.
        r = t(OPERATOR).put("/api/v1/agents/bob/presence",
                            {"state": "offline"})
        assert r.status == 200, r
        cv = chat(env, "pres@example.com", "hi")["conversation"]
        wait_offers(env, cv, ["alice"])
        assert smembers(env, "sb:rt:agent:alice:offers") == [cv]
        t.presence("bob", "online")
        t.presence("alice", "away")
        wait_offers(env, cv, ["bob"])
        assert smembers(env, "sb:rt:agent:alice:offers") == []
        assert env.redis.hgetall("sb:rt:conv:%s:refused" % cv) == {}
        d = decisions(env, cv)
        wd = [f for a, f, _ in d if a == "withdrawn"]
        assert wd and wd[0]["agent"] == "alice" and \
            wd[0]["reason"] == "away", d
        # Going offline while holding a conversation keeps it assigned.
        r = t.step("bob", cv, "accept")
        assert r.status == 200 and r.json["state"] == "assigned", r
        t.presence("bob", "offline")
        c = conv(env, cv)
        assert c["state"] == "assigned" and c["agent"] == "bob", c
        assert smembers(env, "sb:rt:agent:bob:convs") == [cv]
        row = agent_row(env, "bob")
        assert row["presence"] == "offline" and row["active"] == 1, row


# --------------------------------------------------------------------------
# Rules choose the queue.

@timeout(90)
def test_rules_choose_queue():
    with routing_env(
            {"default_queue": "general", "vip_tiers": "vip",
             "offer_timeout": "30s", "tick": "100ms"},
            {"general": {"members": "alice"},
             "returns": {"members": "bob, carol",
                         "strategy": "round_robin"},
             "gold": {"members": "carol"},
             "mail": {"members": "dave"}},
            rules={"gold": {"tier": "gold", "queue": "gold"},
                   "returns": {"channel": "chat",
                               "keywords": "возврат, refund",
                               "queue": "returns"},
                   "mail": {"channel": "email", "queue": "mail"}}) as env:
        t = Team(env)
        # Nobody online: every conversation waits where the rules put it.
        got = {}
        for key, email, text, ch, want, rule in [
                ("r1", "r1@example.com", "Хочу ВОЗВРАТ денег", "chat",
                 "returns", "returns"),
                ("r2", "r2@example.com", "Please REFUND my order", "chat",
                 "returns", "returns"),
                ("g1", "g1@example.com", "возвращение домой", "chat",
                 "general", "default"),
                ("m1", "m1@example.com", "возврат по почте", "email",
                 "mail", "mail"),
                ("r3", "r3@example.com", "Возвратить товар", "chat",
                 "returns", "returns")]:
            body = {"channel": ch, "direction": "in", "email": email,
                    "text": text}
            if ch == "email":
                body["subject"] = "письмо"
            r = env.client.post("/api/v1/contacts", body)
            assert r.status == 201, r
            cv = r.json["conversation"]
            got[key] = cv
            c = conv(env, cv)
            assert c["state"] == "queued" and c["queue"] == want, \
                (key, text, c)
            q = [f for a, f, _ in decisions(env, cv) if a == "queued"]
            assert len(q) == 1 and q[0]["rule"] == rule and \
                q[0]["hop"] == "queue" and q[0]["queue"] == want, (key, q)
        # A gold customer: the tier rule comes first, whatever the text.
        cu = new_customer(env, "gold@example.com", tier="gold")
        j = chat(env, "gold@example.com", "возврат")
        assert j["customer"] == cu
        got["t1"] = j["conversation"]
        c = conv(env, got["t1"])
        assert c["queue"] == "gold", c

        # Positions: FIFO in each queue, from the API and Redis.
        assert zmembers(env, "sb:rt:q:returns:wait") == \
            [got["r1"], got["r2"], got["r3"]]
        for i, k in enumerate(("r1", "r2", "r3")):
            v = view(env, got[k])
            assert v["position"] == i + 1 and v["hop"] == "queue", v
            assert v["offers"] == [], v
        lst = listing(env, queue="returns", state="queued")
        assert sorted(x["id"] for x in lst) == \
            sorted([got["r1"], got["r2"], got["r3"]]), lst
        assert queue_row(env, "returns")["waiting"] == 3
        assert queue_row(env, "mail")["waiting"] == 1
        assert queue_row(env, "general")["waiting"] == 1

        # bob comes online: the head of returns is offered to him, and to
        # him only (round robin, one at a time; capacity 3 takes all).
        t.presence("bob", "online")
        wait_offers(env, got["r1"], ["bob"])
        wait_offers(env, got["r2"], ["bob"])
        wait_offers(env, got["r3"], ["bob"])
        assert offers(env, got["g1"]) == {} and offers(env, got["t1"]) == {}
        r = t.step("bob", got["r2"], "accept")
        assert r.status == 200 and r.json["agent"] == "bob", r
        assert [x["id"] for x in listing(env, agent="bob")] == [got["r2"]]


# --------------------------------------------------------------------------
# Strategies.

@timeout(90)
def test_round_robin_and_least_busy():
    with routing_env(
            {"default_queue": "rr", "offer_timeout": "30s", "tick": "100ms",
             "capacity": "3"},
            {"rr": {"members": "alice, bob, carol",
                    "strategy": "round_robin"},
             "lb": {"members": "alice, bob, carol",
                    "strategy": "least_busy"}},
            rules={"lb": {"keywords": "least", "queue": "lb"}}) as env:
        t = Team(env)
        for a in ("alice", "bob", "carol"):
            t.presence(a, "online")
        # round robin: alice, bob, carol, alice.
        rr = []
        for i, want in enumerate(["alice", "bob", "carol", "alice"]):
            cv = chat(env, "rr%d@example.com" % i, "hi")["conversation"]
            wait_offers(env, cv, [want])
            off = [f for a, f, _ in decisions(env, cv) if a == "offer"]
            assert off[-1]["strategy"] == "round_robin" and \
                off[-1]["agents"] == [want], off
            r = t.step(want, cv, "accept")
            assert r.status == 200 and r.json["agent"] == want, r
            rr.append(cv)
            time.sleep(0.01)
        # least busy: loads alice 2, bob 1, carol 1; bob got work before
        # carol, so bob; then carol; then all hold 2 and alice got work
        # longest ago.
        for i, want in enumerate(["bob", "carol", "alice"]):
            cv = chat(env, "lb%d@example.com" % i,
                      "the LEAST busy please")["conversation"]
            c = conv(env, cv)
            assert c["queue"] == "lb", c
            wait_offers(env, cv, [want])
            r = t.step(want, cv, "accept")
            assert r.status == 200, r
            time.sleep(0.01)
        for a, n in (("alice", 3), ("bob", 2), ("carol", 2)):
            row = agent_row(env, a)
            assert row["active"] == n and row["capacity"] == 3, row
            assert len(smembers(env, "sb:rt:agent:%s:convs" % a)) == n
        # alice is full: the next one goes to bob (least busy, older).
        cv = chat(env, "lb9@example.com", "least")["conversation"]
        wait_offers(env, cv, ["bob"])
        sk = [f for a, f, _ in decisions(env, cv) if a == "offer"][0]
        assert {"agent": "alice", "reason": "at_capacity"} in \
            sk["skipped"] and sk["eligible"] == ["bob", "carol"], sk


# --------------------------------------------------------------------------
# Accept, capacity, FIFO release, positions.

@timeout(90)
def test_accept_capacity_fifo():
    with routing_env({"default_queue": "general", "offer_timeout": "30s",
                      "tick": "100ms", "capacity": "1"},
                     {"general": {"members": "alice, bob",
                                  "strategy": "round_robin"}}) as env:
        t = Team(env)
        t.presence("alice", "online")
        c1 = chat(env, "c1@example.com", "first")["conversation"]
        wait_offers(env, c1, ["alice"])
        v = view(env, c1)
        assert v["state"] == "queued" and v["offers"] == ["alice"], v
        assert v["position"] == 1, v
        # Only the agent offered may accept.
        r = t.step("bob", c1, "accept")
        assert r.status == 409, r
        r = t.step("alice", c1, "accept")
        assert r.status == 200, r
        assert r.json["state"] == "assigned" and r.json["agent"] == "alice"
        assert [x["id"] for x in listing(env, agent="alice")] == [c1]
        assert [x["id"] for x in listing(env, agent="alice",
                                         state="assigned")] == [c1]
        c = conv(env, c1)
        assert c["state"] == "assigned" and c["agent"] == "alice", c
        assert env.redis.hgetall("sb:conv:" + c1)["state"] == "assigned"
        assert smembers(env, "sb:rt:agent:alice:convs") == [c1]
        assert offers(env, c1) == {}
        acc = [f for a, f, _ in decisions(env, c1) if a == "assigned"]
        assert len(acc) == 1 and acc[0]["reason"] == "accepted" and \
            acc[0]["agent"] == "alice", acc

        # Capacity 1: the next two wait, in order, with positions.
        t0 = time.monotonic()
        c2 = chat(env, "c2@example.com", "second")["conversation"]
        c3 = chat(env, "c3@example.com", "third")["conversation"]
        time.sleep(0.4)  # a few ticks: still nothing offered
        assert offers(env, c2) == {} and offers(env, c3) == {}
        assert view(env, c2)["position"] == 1
        assert view(env, c3)["position"] == 2
        assert zmembers(env, "sb:rt:q:general:wait") == [c2, c3]
        qr = queue_row(env, "general")
        waited = (time.monotonic() - t0) * 1000
        assert qr["waiting"] == 2, qr
        assert 300 <= qr["longest_wait"] <= waited + 2000, (qr, waited)
        assert qr["online"] == 1 and qr["busy"] == 1 and \
            qr["available"] == 0 and qr["active"] == 1, qr
        q2 = [f for a, f, _ in decisions(env, c2) if a == "queued"][0]
        assert q2["position"] == 1 and q2["eligible"] == [] and \
            {"agent": "alice", "reason": "at_capacity"} in q2["skipped"], q2
        r = t.step("alice", c2, "accept")
        assert r.status == 409, r
        row = agent_row(env, "alice")
        assert row["active"] == 1 and row["capacity"] == 1, row

        # Resolving c1 frees the slot: c2 (not c3) is offered at once.
        r = t.step("alice", c1, "resolve")
        assert r.status == 200 and r.json["state"] == "resolved", r
        wait_offers(env, c2, ["alice"], 2.0)
        assert offers(env, c3) == {}
        # c2 keeps its place while offered; c3 moves up once it is taken.
        assert view(env, c2)["position"] == 1
        assert view(env, c3)["position"] == 2
        r = t.step("alice", c2, "accept")
        assert r.status == 200, r
        assert view(env, c3)["position"] == 1
        assert zmembers(env, "sb:rt:q:general:wait") == [c3]
        assert conv(env, c1)["state"] == "resolved"
        assert conv(env, c1)["resolved"], conv(env, c1)
        # bob comes online with a free slot: c3 goes to him.
        t.presence("bob", "online")
        wait_offers(env, c3, ["bob"], 2.0)
        r = t.step("bob", c3, "accept")
        assert r.status == 200, r
        assert queue_row(env, "general")["waiting"] == 0
        # A capacity-1 agent never held two.
        assert smembers(env, "sb:rt:agent:alice:convs") == [c2]
        assert smembers(env, "sb:rt:agent:bob:convs") == [c3]

        # Priority: a VIP customer who writes later waits first.
        c4 = chat(env, "c4@example.com", "plain")["conversation"]
        new_customer(env, "c5@example.com", tier="VIP")
        c5 = chat(env, "c5@example.com", "vip")["conversation"]
        assert view(env, c5)["position"] == 1
        assert view(env, c4)["position"] == 2
        assert zmembers(env, "sb:rt:q:general:wait") == [c5, c4]
        r = t.step("alice", c2, "resolve")
        assert r.status == 200, r
        wait_offers(env, c5, ["alice"], 2.0)
        assert offers(env, c4) == {}


# --------------------------------------------------------------------------
# Decline and offer timeout.

@timeout(90)
def test_decline_and_timeout():
    with routing_env({"default_queue": "general", "offer_timeout": "1s",
                      "tick": "100ms", "capacity": "2"},
                     {"general": {"members": "alice, bob, carol",
                                  "strategy": "round_robin"}}) as env:
        t = Team(env)
        for a in ("alice", "bob", "carol"):
            t.presence(a, "online")
        cv = chat(env, "dt@example.com", "hello")["conversation"]
        wait_offers(env, cv, ["alice"])
        # alice declines: bob is offered it at once.
        r = t.step("alice", cv, "decline")
        assert r.status == 200, r
        assert r.json["offers"] == ["bob"], r.json
        dl = offers(env, cv)["bob"]
        # An agent cannot decline what it was not offered.
        r = t.step("carol", cv, "decline")
        assert r.status == 409, r
        # bob lets it time out (1s): carol gets it.
        t0 = time.monotonic()
        wait_offers(env, cv, ["carol"], 4.0)
        took = time.monotonic() - t0
        assert took >= 0.5, "offer to bob ended after %.2fs" % took
        assert int(time.time() * 1000) >= dl - 50
        r = t.step("bob", cv, "accept")
        assert r.status == 409, r
        # carol declines too: nobody is left; nobody is offered again.
        r = t.step("carol", cv, "decline")
        assert r.status == 200 and r.json["offers"] == [], r
        assert r.json["state"] == "queued", r.json
        assert env.redis.hgetall("sb:rt:conv:%s:refused" % cv) == {
            "alice": "declined", "bob": "timed_out", "carol": "declined"}
        deadline = time.monotonic() + 2.5  # > 2 offer timeouts
        while time.monotonic() < deadline:
            assert offers(env, cv) == {}, offers(env, cv)
            time.sleep(0.05)
        for a in ("alice", "bob", "carol"):
            assert smembers(env, "sb:rt:agent:%s:offers" % a) == []
        v = view(env, cv)
        assert v["state"] == "queued" and v["position"] == 1, v
        acts = actions(env, cv)
        assert acts == ["queued", "offer", "declined", "offer", "timed_out",
                        "offer", "declined"], acts
        d = decisions(env, cv)
        assert d[4][1]["agent"] == "bob" and d[4][2]["agent"] == "bob", d[4]
        assert d[5][1]["agents"] == ["carol"], d[5]
        sk = {s["agent"]: s["reason"] for s in d[5][1]["skipped"]}
        assert sk == {"alice": "declined", "bob": "timed_out"}, d[5]
        # They are free for other conversations: the next one is offered.
        cv2 = chat(env, "dt2@example.com", "another")["conversation"]
        got = wait_until(lambda: offers(env, cv2), 3.0, 0.02,
                         "an offer of the second conversation")
        assert len(got) == 1 and set(got) <= {"alice", "bob", "carol"}
        assert offers(env, cv) == {}
        # The operator can still assign the refused one directly.
        r = t.step(OPERATOR, cv, "assign", {"agent": "bob"})
        assert r.status == 200 and r.json["agent"] == "bob", r
        a = [f for a, f, _ in decisions(env, cv) if a == "assigned"]
        assert a and a[-1]["reason"] == "transfer" and \
            a[-1]["by"] == OPERATOR, a


@timeout(60)
def test_expired_offer_before_tick():
    # The tick is a minute away: the offer is past its deadline but still
    # in Redis, and accepting it is refused all the same.
    with routing_env({"default_queue": "general", "offer_timeout": "1s",
                      "tick": "60s"},
                     {"general": {"members": "alice"}}) as env:
        t = Team(env)
        t.presence("alice", "online")
        cv = chat(env, "late@example.com", "hello")["conversation"]
        wait_offers(env, cv, ["alice"])
        dl = offers(env, cv)["alice"]
        wait_until(lambda: time.time() * 1000 > dl + 150, 5.0, 0.05,
                   "the offer's deadline")
        assert offers(env, cv) == {"alice": dl}  # no tick has run
        r = t.step("alice", cv, "accept")
        assert r.status == 409 and r.json["error"] == "offer expired", r
        c = conv(env, cv)
        assert c["state"] == "queued" and c["agent"] is None, c
        assert smembers(env, "sb:rt:agent:alice:convs") == []


# --------------------------------------------------------------------------
# Curator first.

@timeout(100)
def test_curator_first():
    with routing_env(
            {"default_queue": "general", "curator_timeout": "1s",
             "offer_timeout": "30s", "tick": "100ms", "capacity": "3"},
            {"general": {"members": "dave"},
             "sales": {"members": "bob, carol", "team": "yes"}},
            agents={"alice": {"team": "sales"}}) as env:
        t = Team(env)
        t.presence("dave", "online")
        t.presence("bob", "online")
        t.presence("alice", "online")

        def customer(tag):
            email = "cur-%s@example.com" % tag
            cu = new_customer(env, email, curator="alice")
            r = env.client.get("/api/v1/customers/" + cu)
            assert r.json["curator"] == "alice", r.json
            return email

        # Online curator: offered to alice (hop curator, no queue); accept.
        e = customer("a")
        cv = chat(env, e, "Добрый день")["conversation"]
        wait_offers(env, cv, ["alice"])
        v = view(env, cv)
        assert v["hop"] == "curator" and v["queue"] is None, v
        assert env.redis.hgetall("sb:rt:conv:" + cv)["hop"] == "curator"
        r = t.step("alice", cv, "accept")
        assert r.status == 200 and r.json["agent"] == "alice" and \
            r.json["hop"] == "curator", r
        d = decisions(env, cv)
        assert [a for a, _, _ in d] == ["offer", "assigned"], d
        assert d[0][1]["hop"] == "curator" and d[0][1]["queue"] is None
        assert d[0][1]["agents"] == ["alice"], d[0]

        # The curator declines: the team queue (sales), bob is offered.
        e = customer("b")
        cv = chat(env, e, "hello")["conversation"]
        wait_offers(env, cv, ["alice"])
        r = t.step("alice", cv, "decline")
        assert r.status == 200, r
        wait_offers(env, cv, ["bob"])
        c = conv(env, cv)
        assert c["queue"] == "sales", c
        d = decisions(env, cv)
        assert [a for a, _, _ in d] == ["offer", "declined", "queued",
                                        "offer"], d
        qf = d[2][1]
        assert qf["hop"] == "team" and qf["queue"] == "sales" and \
            qf["curator"] == "alice" and \
            qf["curator_reason"] == "declined", qf
        assert d[3][1]["hop"] == "team" and d[3][1]["agents"] == ["bob"]

        # The curator lets it time out (1s): team queue.
        e = customer("c")
        cv = chat(env, e, "hello")["conversation"]
        wait_offers(env, cv, ["alice"])
        t0 = time.monotonic()
        wait_offers(env, cv, ["bob"], 4.0)
        assert time.monotonic() - t0 >= 0.5
        d = decisions(env, cv)
        assert [a for a, _, _ in d] == ["offer", "timed_out", "queued",
                                        "offer"], d
        assert d[2][1]["curator_reason"] == "timed_out", d[2]
        assert env.redis.hgetall("sb:rt:conv:%s:refused" % cv) == \
            {"alice": "timed_out"}

        # Curator offline: straight to the team queue.
        t.presence("alice", "offline")
        e = customer("d")
        cv = chat(env, e, "hello")["conversation"]
        wait_offers(env, cv, ["bob"])
        d = decisions(env, cv)
        assert [a for a, _, _ in d] == ["queued", "offer"], d
        assert d[0][1]["hop"] == "team" and \
            d[0][1]["curator_reason"] == "offline", d[0]

        # Curator and team offline: the default queue (dave).
        t.presence("bob", "offline")
        e = customer("e")
        cv = chat(env, e, "hello")["conversation"]
        wait_offers(env, cv, ["dave"])
        c = conv(env, cv)
        assert c["queue"] == "general", c
        d = decisions(env, cv)
        assert [a for a, _, _ in d] == ["queued", "offer"], d
        f = d[0][1]
        assert f["hop"] == "queue" and f["rule"] == "default" and \
            f["curator"] == "alice" and f["curator_reason"] == "offline" \
            and f["team"] == "sales" and \
            f["team_reason"] == "team_unavailable", f

        # Curator online but at capacity (3: it holds one, the operator
        # assigns two more): the team queue, where carol is online.
        t.presence("alice", "online")
        t.presence("carol", "online")
        for i in range(2):
            x = chat(env, "fill%d@example.com" % i, "x")["conversation"]
            r = t.step(OPERATOR, x, "assign", {"agent": "alice"})
            assert r.status == 200, r
        row = agent_row(env, "alice")
        assert row["active"] == 3 and row["offers"] == [], row
        e = customer("f")
        cv = chat(env, e, "hello")["conversation"]
        c = conv(env, cv)
        assert c["state"] == "queued" and c["queue"] == "sales", c
        d = decisions(env, cv)
        assert d[0][0] == "queued" and d[0][1]["hop"] == "team" and \
            d[0][1]["curator_reason"] == "at_capacity", d
        assert "alice" not in offers(env, cv)


# --------------------------------------------------------------------------
# Transfer, resolve, rights, reopen.

@timeout(100)
def test_transfer_resolve_reopen():
    with routing_env({"default_queue": "general", "offer_timeout": "30s",
                      "tick": "100ms", "capacity": "2"},
                     {"general": {"members": "alice, bob",
                                  "strategy": "round_robin"},
                      "support": {"members": "carol"}}) as env:
        t = Team(env)
        t.presence("alice", "online")
        cv = chat(env, "tr@example.com", "help me")["conversation"]
        wait_offers(env, cv, ["alice"])
        assert t.step("alice", cv, "accept").status == 200
        t.presence("bob", "online")
        t.presence("carol", "online")

        # Not bob's: bob may neither resolve nor transfer it.
        r = t.step("bob", cv, "resolve")
        assert r.status == 403, r
        r = t.step("bob", cv, "transfer", {"queue": "support"})
        assert r.status == 403, r
        r = t.step("bob", cv, "assign", {"agent": "alice"})
        assert r.status == 403, r
        assert conv(env, cv)["agent"] == "alice"
        # Bad transfers.
        r = t.step("alice", cv, "transfer", {})
        assert r.status == 400, r
        r = t.step("alice", cv, "transfer", {"queue": "nosuch"})
        assert r.status == 404, r

        # alice transfers to the support queue: carol is offered it.
        r = t.step("alice", cv, "transfer", {"queue": "support"})
        assert r.status == 200, r
        assert r.json["queue"] == "support" and r.json["hop"] == "transfer"
        wait_offers(env, cv, ["carol"])
        assert smembers(env, "sb:rt:agent:alice:convs") == []
        assert env.redis.hgetall("sb:rt:conv:%s:refused" % cv) == \
            {"alice": "transferred"}
        assert t.step("carol", cv, "accept").status == 200
        # carol transfers to agent bob: assigned directly.
        r = t.step("carol", cv, "transfer", {"agent": "bob"})
        assert r.status == 200 and r.json["state"] == "assigned" and \
            r.json["agent"] == "bob", r
        assert smembers(env, "sb:rt:agent:carol:convs") == []
        assert smembers(env, "sb:rt:agent:bob:convs") == [cv]
        # Transfer to an agent who is offline: 409.
        t.presence("alice", "offline")
        r = t(OPERATOR).post("/api/v1/conversations/%s/transfer" % cv,
                             {"agent": "alice"})
        assert r.status == 409, r
        # alice (not holding it) may not resolve it; the operator may.
        r = t.step("alice", cv, "resolve")
        assert r.status == 403, r
        r = t.step(OPERATOR, cv, "resolve")
        assert r.status == 200 and r.json["state"] == "resolved", r
        r = t.step(OPERATOR, cv, "resolve")
        assert r.status == 409, r
        c = conv(env, cv)
        assert c["state"] == "resolved" and c["resolved"], c
        assert smembers(env, "sb:rt:agent:bob:convs") == []
        assert env.redis.hgetall("sb:rt:conv:%s:refused" % cv) == {}
        assert cv in [x["id"] for x in listing(env, state="resolved")]
        assert cv not in [x["id"] for x in listing(env)]

        d = decisions(env, cv)
        acts = [a for a, _, _ in d]
        assert acts == ["queued", "offer", "assigned", "queued", "offer",
                        "assigned", "assigned", "resolved"], acts
        assert d[3][1]["hop"] == "transfer" and d[3][1]["from"] == "alice" \
            and d[3][1]["by"] == "alice" and d[3][1]["queue"] == "support"
        assert d[6][1]["reason"] == "transfer" and \
            d[6][1]["from"] == "carol" and d[6][1]["by"] == "carol", d[6]
        assert d[7][2]["type"] == "status" and d[7][1]["by"] == OPERATOR \
            and d[7][1]["agent"] == "bob", d[7]

        # The customer writes again into the same conversation: reopened
        # and routed again (alice is offline, bob gets it).
        j = chat(env, "tr@example.com", "it broke again", conversation=cv)
        assert j["conversation"] == cv, j
        wait_offers(env, cv, ["bob"])
        c = conv(env, cv)
        assert c["state"] == "queued" and c["queue"] == "general", c
        assert c["resolved"] is None, c
        d = decisions(env, cv)
        assert [a for a, _, _ in d][8:] == ["reopened", "queued", "offer"], d
        assert d[8][2]["type"] == "status", d[8]
        assert t.step("bob", cv, "accept").status == 200
        assert conv(env, cv)["agent"] == "bob"
        # The operator transfers it to carol on bob's behalf.
        r = t.step(OPERATOR, cv, "transfer", {"agent": "carol"})
        assert r.status == 200 and r.json["agent"] == "carol", r


# --------------------------------------------------------------------------
# Notes, views, the contact log.

@timeout(90)
def test_notes_views_log():
    with routing_env({"default_queue": "general", "offer_timeout": "30s",
                      "tick": "100ms", "capacity": "1"},
                     {"general": {"members": "alice, bob"},
                      "other": {"members": "carol", "sla": "1s"}},
                     agents={"bob": {"capacity": "4"}},
                     rules={"o": {"keywords": "other", "queue": "other"}}
                     ) as env:
        t = Team(env)
        t.presence("alice", "online")
        c1 = chat(env, "n1@example.com", "hello")["conversation"]
        wait_offers(env, c1, ["alice"])
        assert t.step("alice", c1, "accept").status == 200
        r = t.step("alice", c1, "notes", {"text": "VIP? <b>check</b>"})
        assert r.status == 201, r
        nid = r.json["id"]
        r = t.step(OPERATOR, c1, "notes", {"text": "ok — проверено"})
        assert r.status == 201, r
        r = t.step("alice", c1, "notes", {})
        assert r.status == 400, r
        tl = timeline(env, c1)
        notes = [e for e in tl if e["type"] == "note"]
        assert [n["text"] for n in notes] == ["VIP? <b>check</b>",
                                              "ok — проверено"], notes
        assert notes[0]["id"] == nid and notes[0]["agent"] == "alice"
        assert notes[1]["agent"] == OPERATOR, notes
        assert notes[0]["direction"] == "internal", notes[0]

        # Queues: waiting counts and the longest wait.
        t0 = time.monotonic()
        w1 = chat(env, "n2@example.com", "other please")["conversation"]
        w2 = chat(env, "n3@example.com", "other too")["conversation"]
        time.sleep(1.2)
        qr = queue_row(env, "other")
        el = (time.monotonic() - t0) * 1000
        assert qr["waiting"] == 2 and qr["open"] == 2, qr
        assert 1100 <= qr["longest_wait"] <= el + 1000, (qr, el)
        assert qr["strategy"] == "round_robin" and qr["offline"] == 1, qr
        assert qr["sla_breaches"] == 2, qr
        g = queue_row(env, "general")
        assert g["waiting"] == 0 and g["active"] == 1 and \
            g["online"] == 1 and g["busy"] == 1, g
        assert view(env, w1)["position"] == 1
        assert view(env, w2)["position"] == 2

        # Agents: presence, active, capacity ([agent] overrides).
        r = env.client.get("/api/v1/agents")
        assert r.status == 200, r
        rows = {a["name"]: a for a in r.json["agents"]}
        assert rows["alice"]["presence"] == "online" and \
            rows["alice"]["active"] == 1 and \
            rows["alice"]["capacity"] == 1 and \
            rows["alice"]["conversations"] == [c1], rows["alice"]
        assert rows["bob"]["presence"] == "offline" and \
            rows["bob"]["capacity"] == 4 and rows["bob"]["active"] == 0
        assert rows["carol"]["queues"] == ["other"], rows["carol"]

        # The contact log: after an id, after a bare time, rights.
        o = t(OPERATOR)
        r = o.get("/api/v1/log?limit=1000")
        assert r.status == 200, r
        ents = r.json["entries"]
        ids = [e["id"] for e in ents]
        raw = [i for i, _ in env.redis.xrange_all("sb:log")]
        assert ids == raw, (ids[:5], raw[:5])
        assert r.json["next_after"] == ids[-1]
        k = len(ids) // 2
        r = o.get("/api/v1/log?after=%s&limit=1000" % ids[k])
        assert r.status == 200, r
        assert [e["id"] for e in r.json["entries"]] == ids[k + 1:]
        r = o.get("/api/v1/log?after=%s&limit=2" % ids[k])
        assert [e["id"] for e in r.json["entries"]] == ids[k + 1:k + 3]
        ms = int(ids[k].split("-")[0])
        r = o.get("/api/v1/log?after=%d&limit=1000" % ms)
        assert r.status == 200, r
        assert [e["id"] for e in r.json["entries"]] == \
            [i for i in ids if int(i.split("-")[0]) > ms], r.json
        r = o.get("/api/v1/log?after=%d&limit=1000" % (ms - 1))
        assert [e["id"] for e in r.json["entries"]] == \
            [i for i in ids if int(i.split("-")[0]) >= ms]
        # Routing entries in the log carry their reason.
        off = [e for e in ents if e["type"] == "assignment" and
               e["conversation"] == c1 and e["fields"]["action"] == "offer"]
        assert off and off[0]["agent"] == "alice" and \
            off[0]["text"] == "offered to alice", off
        r = o.get("/api/v1/log?after=banana")
        assert r.status == 400, r
        r = t("alice").get("/api/v1/log")
        assert r.status == 403, r
        r = env.client.get("/api/v1/log")
        assert r.status == 403, r
        r = env.client.get("/api/v1/log", token=env.key("boss"))
        assert r.status == 200, r


# --------------------------------------------------------------------------
# Two daemons on one Redis.

class Second:
    """A second daemon on another port with the same Redis and prefix."""

    def __init__(self, env):
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


def multi_read(conn, agents):
    """One atomic snapshot: {agent: (convs set, offers count)}."""
    conn.cmd("MULTI")
    for a in agents:
        conn.cmd("SMEMBERS", "sb:rt:agent:%s:convs" % a)
        conn.cmd("SCARD", "sb:rt:agent:%s:offers" % a)
    res = conn.cmd("EXEC")
    out = {}
    for i, a in enumerate(agents):
        out[a] = ({x.decode() for x in res[2 * i]}, res[2 * i + 1])
    return out


@timeout(240)
def test_two_instances_one_redis():
    agents = ["alice", "bob", "carol", "dave", "eve"]
    cap = 8
    ncust = 40
    with routing_env({"default_queue": "general", "offer_timeout": "60s",
                      "tick": "100ms", "capacity": str(cap)},
                     {"general": {"members": ", ".join(agents),
                                  "strategy": "ring_all"}}) as env:
        b = Second(env)
        try:
            b.daemon.start(30.0)
            _two_instances(env, b, agents, cap, ncust)
        finally:
            b.daemon.stop()
        probs = b.problems()
        assert not probs, "\n".join(probs[:10])


def _two_instances(env, b, agents, cap, ncust):
    ports = [env.port, b.port]
    t = Team(env, ports)
    for i, a in enumerate(agents):
        t.presence(a, "online", i)
    stop = threading.Event()
    lock = threading.Lock()
    accepted = {}      # conv -> set of agents that got 200
    statuses = {}      # status -> count
    odd = []           # unexpected answers
    posted = {}        # customer index -> conversation
    samples = [0, 0]   # count, violations
    violations = []

    def guarded(fn):
        def run(*a):
            try:
                fn(*a)
            except Exception as e:  # recorded: the test fails with it
                with lock:
                    odd.append(("exception", fn.__name__, repr(e)))
        return run

    @guarded
    def poster(idx):
        cl = [Client(p, env.apikey) for p in ports]
        try:
            for i in idx:
                r = cl[i % 2].post("/api/v1/contacts", {
                    "channel": "chat", "direction": "in",
                    "email": "many%d@example.com" % i,
                    "text": "customer %d" % i,
                    "source_id": "many-%d" % i})
                if r.status != 201:
                    with lock:
                        odd.append(("post", i, r.status, r.body[:200]))
                    continue
                with lock:
                    posted[i] = r.json["conversation"]
        finally:
            for c in cl:
                c.close()

    @guarded
    def worker(name, k):
        cl = [Client(p, t.token(name)) for p in ports]
        n = k
        deadline = time.monotonic() + 120
        try:
            while not stop.is_set() and time.monotonic() < deadline:
                n += 1
                r = cl[n % 2].get("/api/v1/agents")
                if r.status != 200:
                    with lock:
                        odd.append(("agents", name, r.status, r.body[:200]))
                    time.sleep(0.05)
                    continue
                mine = [a for a in r.json["agents"] if a["name"] == name][0]
                for cv in mine["offers"]:
                    n += 1
                    r = cl[n % 2].post(
                        "/api/v1/conversations/%s/accept" % cv)
                    with lock:
                        statuses[r.status] = statuses.get(r.status, 0) + 1
                        if r.status == 200:
                            if r.json.get("agent") != name:
                                odd.append(("accept-agent", name, cv,
                                            r.body[:200]))
                            accepted.setdefault(cv, set()).add(name)
                        elif r.status != 409:
                            odd.append(("accept", name, cv, r.status,
                                        r.body[:200]))
                if not mine["offers"]:
                    time.sleep(0.02)
        finally:
            for c in cl:
                c.close()

    @guarded
    def monitor():
        conn = harness.RespConn(env.redis.sock)
        try:
            while not stop.is_set():
                snap = multi_read(conn, agents)
                seen = {}
                with lock:
                    for a, (convs, noff) in snap.items():
                        if len(convs) + noff > cap:
                            violations.append((a, len(convs), noff))
                        for c in convs:
                            if c in seen:
                                violations.append(("twice", c, seen[c], a))
                            seen[c] = a
                    samples[0] += 1
                time.sleep(0.003)
        finally:
            conn.close()

    threads = [threading.Thread(target=monitor, daemon=True)]
    threads += [threading.Thread(target=poster, args=(range(j, ncust, 4),),
                                 daemon=True) for j in range(4)]
    threads += [threading.Thread(target=worker, args=(a, i), daemon=True)
                for i, a in enumerate(agents)]
    for th in threads:
        th.start()
    def settled():
        with lock:
            if odd or violations or \
                    any(len(x) > 1 for x in accepted.values()):
                return True  # broken already: the asserts below say how
            return len(posted) == ncust and len(accepted) == ncust

    try:
        try:
            wait_until(settled, 150, 0.1, "all conversations accepted")
        except AssertionError:
            raise AssertionError(
                "within 150s: %d of %d conversations posted, %d accepted; "
                "accept answers %s" % (len(posted), ncust, len(accepted),
                                       statuses))
    finally:
        stop.set()
        for th in threads:
            th.join(30)
    print("accept answers %s, %d monitor samples" % (statuses, samples[0]))
    assert not odd, odd[:10]
    twice = {c: a for c, a in accepted.items() if len(a) != 1}
    assert not twice, "accepted by two agents: %s" % twice
    assert not violations, violations[:10]
    assert len(set(posted.values())) == ncust, posted
    assert set(accepted) == set(posted.values())
    assert samples[0] > 5, samples
    assert statuses.get(200, 0) >= ncust, statuses

    # Redis: every conversation held by exactly one agent, the one whose
    # accept succeeded; nobody over capacity (40 = 5 x 8: all full).
    snap = multi_read(env.redis, agents)
    holder = {}
    for a, (convs, noff) in snap.items():
        assert len(convs) == cap and noff == 0, (a, len(convs), noff)
        for c in convs:
            assert c not in holder, (c, holder.get(c), a)
            holder[c] = a
    assert set(holder) == set(posted.values())
    for c, a in holder.items():
        assert accepted[c] == {a}, (c, a, accepted[c])
        h = env.redis.hgetall("sb:conv:" + c)
        assert h["state"] == "assigned" and h["agent"] == a, (c, h)
    assert env.redis.cmd("ZCARD", "sb:rt:offers") == 0
    # The log: exactly one assignment decision per conversation.
    per = {}
    for _i, f in env.redis.xrange_all("sb:log"):
        if f.get("type") == "assignment" and \
                json.loads(f["fields"]).get("action") == "assigned":
            per.setdefault(f["conversation"], []).append(f["agent"])
    assert set(per) == set(holder), (len(per), len(holder))
    for c, who in per.items():
        assert who == [holder[c]], (c, who)
    # Both instances' APIs agree.
    for p in ports:
        cl = Client(p, env.apikey)
        try:
            r = cl.get("/api/v1/agents")
            assert r.status == 200, r
            for a in r.json["agents"]:
                if a["name"] in agents:
                    assert a["active"] == cap and a["capacity"] == cap and \
                        a["offers"] == [], a
                    assert set(a["conversations"]) == \
                        {c for c, x in holder.items() if x == a["name"]}
            r = cl.get("/api/v1/conversations?state=assigned&limit=500")
            assert r.status == 200, r
            got = {c["id"]: c["agent"] for c in r.json["conversations"]}
            assert got == holder, (len(got), len(holder))
        finally:
            cl.close()

    # Free everyone (the operator resolves, through both instances).
    for i, c in enumerate(sorted(holder)):
        r = t(OPERATOR, i).post("/api/v1/conversations/%s/resolve" % c)
        assert r.status == 200, r
    # Two agents, two instances, one ring_all offer, at the same moment:
    # exactly one 200, the other 409.
    for a in agents[2:]:
        t.presence(a, "away", 1)
    posters = [env.new_client(), Client(ports[1], env.apikey)]
    env.clients.append(posters[1])
    for rnd in range(10):
        cv = chat(env, "race%d@example.com" % rnd, "race",
                  client=posters[rnd % 2])["conversation"]
        wait_offers(env, cv, ["alice", "bob"])
        bar = threading.Barrier(2, timeout=20)
        res = {}

        def go(name, i):
            c = t(name, i)
            bar.wait()
            res[name] = c.post("/api/v1/conversations/%s/accept" % cv)

        ths = [threading.Thread(target=go, args=("alice", rnd % 2)),
               threading.Thread(target=go, args=("bob", (rnd + 1) % 2))]
        for th in ths:
            th.start()
        for th in ths:
            th.join(30)
        assert set(res) == {"alice", "bob"}, res
        st = sorted(r.status for r in res.values())
        assert st == [200, 409], (rnd, res)
        win = [n for n, r in res.items() if r.status == 200][0]
        lose = [n for n, r in res.items() if r.status == 409][0]
        assert res[win].json["agent"] == win, res[win].json
        assert res[lose].json["error"] == "no pending offer", res[lose].body
        h = env.redis.hgetall("sb:conv:" + cv)
        assert h["state"] == "assigned" and h["agent"] == win, h
        assert smembers(env, "sb:rt:agent:%s:convs" % win) == [cv]
        assert smembers(env, "sb:rt:agent:%s:convs" % lose) == []
        assert offers(env, cv) == {}
        d = decisions(env, cv)
        a = [f for x, f, _ in d if x == "assigned"]
        assert len(a) == 1 and a[0]["withdrawn"] == [lose], a
        r = t(OPERATOR, rnd).post("/api/v1/conversations/%s/resolve" % cv)
        assert r.status == 200, r
