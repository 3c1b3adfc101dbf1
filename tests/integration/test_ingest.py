"""test_ingest.py - contacts in, customers, timelines, conversations, merge.

Everything asserted is read back, from the API and from Redis directly
(sb:log, sb:identity, sb:cust:*, sb:conv:*).
"""

import threading

from harness import Env, q, stream_id

C = "/api/v1/contacts"


def post_contact(env, body, expect=201):
    r = env.client.post(C, body)
    assert r.status == expect, "POST %r -> %r" % (body, r)
    return r.json


def log_entry(env, cid):
    rows = env.redis.cmd("XRANGE", "sb:log", cid, cid)
    assert rows, "contact %s not in sb:log" % cid
    flat = rows[0][1]
    return {flat[i].decode(): flat[i + 1].decode()
            for i in range(0, len(flat), 2)}


def test_ingest_and_lookup():
    with Env() as env:
        # An e-mail contact with a new conversation.
        a = post_contact(env, {
            "channel": "email", "email": "Ivan.Petrov@Example.COM",
            "name": "Иван Петров", "locale": "ru",
            "subject": "Заказ 42", "text": "Когда доставка?",
            "source_id": "mail-1", "conversation": "new"})
        assert a["duplicate"] is False and a["new_customer"] is True, a
        assert a["customer"].startswith("cu_"), a
        assert a["conversation"] and a["conversation"].startswith("cv_"), a
        cu, cv = a["customer"], a["conversation"]

        e = log_entry(env, a["id"])
        assert e["channel"] == "email" and e["customer"] == cu, e
        assert e["source_id"] == "mail-1" and e["conversation"] == cv, e
        assert e["type"] == "message" and e["direction"] == "in", e
        assert e["subject"] == "Заказ 42" and e["text"] == "Когда доставка?"
        # Addresses are case-folded into the identity index.
        owner = env.redis.cmd("HGET", "sb:identity",
                              "email:ivan.petrov@example.com")
        assert owner == cu.encode(), owner
        assert env.redis.hgetall("sb:cust:" + cu), "no sb:cust:" + cu

        r = env.client.get("/api/v1/customers?email=" +
                           q("ivan.petrov@example.com"))
        assert r.status == 200, r
        cust = r.json
        assert cust["id"] == cu and cust["name"] == "Иван Петров", cust
        assert cust["identities"]["email"] == ["ivan.petrov@example.com"]
        for k in ("locale", "timezone", "tier", "tags", "curator",
                  "preferences", "created", "updated"):
            assert k in cust, "customer lacks %s: %r" % (k, cust)
        r = env.client.get("/api/v1/customers?email=" +
                           q("IVAN.PETROV@example.com"))
        assert r.status == 200 and r.json["id"] == cu, r
        r = env.client.get("/api/v1/customers?email=" +
                           q("nobody@example.com"))
        assert r.status == 404 and "error" in r.json, r
        r = env.client.get("/api/v1/customers/" + cu)
        assert r.status == 200 and r.json["id"] == cu, r
        r = env.client.get("/api/v1/customers/cu_999999999")
        assert r.status == 404, r

        # Conversation read, and a second message continuing it.
        r = env.client.get("/api/v1/conversations/" + cv)
        assert r.status == 200, r
        conv = r.json
        assert conv["id"] == cv and conv["customer"] == cu, conv
        assert conv["channel"] == "email", conv
        for k in ("state", "queue", "agent", "subject", "created",
                  "first_response", "resolved", "updated"):
            assert k in conv, "conversation lacks %s: %r" % (k, conv)
        assert env.redis.hgetall("sb:conv:" + cv).get("customer") == cu
        b = post_contact(env, {"channel": "email",
                               "email": "ivan.petrov@example.com",
                               "text": "ещё вопрос", "conversation": cv,
                               "source_id": "mail-2"})
        assert b["customer"] == cu and b["conversation"] == cv, b
        assert b["new_customer"] is False, b
        r = env.client.get("/api/v1/conversations/cv_999999999")
        assert r.status == 404, r

        # A phone call in Russian national format; lookup by either format.
        p = post_contact(env, {"channel": "phone",
                               "phone": "8 (916) 123-45-67",
                               "direction": "out", "source_id": "pbx-1",
                               "fields": {"duration": 61, "agent": "alice"}})
        assert p["new_customer"] is True and p["customer"] != cu, p
        cp = p["customer"]
        assert env.redis.cmd("HGET", "sb:identity", "phone:+79161234567") \
            == cp.encode()
        for form in ("+7 916 123 45 67", "8 (916) 123-45-67", "89161234567",
                     "+79161234567"):
            r = env.client.get("/api/v1/customers?phone=" + q(form))
            assert r.status == 200 and r.json["id"] == cp, (form, r)
            assert r.json["identities"]["phone"] == ["+79161234567"], r.json
        e = log_entry(env, p["id"])
        assert e["type"] == "call" and e["direction"] == "out", e

        # A visit and an event for the e-mail customer.
        v = post_contact(env, {"channel": "visit", "customer": cu,
                               "text": "showroom", "source_id": "visit-1",
                               "ts": 1700000000000})
        assert v["customer"] == cu and v["new_customer"] is False, v
        ev = post_contact(env, {"channel": "event",
                                "email": "ivan.petrov@example.com",
                                "fields": {"event": "expo-2024",
                                           "came": True},
                                "source_id": "ev-1", "conversation": "none"})
        assert ev["customer"] == cu and ev["conversation"] is None, ev

        r = env.client.get("/api/v1/customers/%s/timeline" % cu)
        assert r.status == 200, r
        ents = r.json["entries"]
        ids = [x["id"] for x in ents]
        assert ids == [ev["id"], v["id"], b["id"], a["id"]], ids
        assert [x["type"] for x in ents] == ["event", "visit", "message",
                                            "message"], ents
        assert [x["channel"] for x in ents] == ["event", "visit", "email",
                                               "email"], ents
        assert ents[0]["fields"] == {"event": "expo-2024", "came": True}, \
            ents[0]
        assert ents[0]["conversation"] is None, ents[0]
        assert ents[1]["ts"] == 1700000000000, ents[1]
        assert ents[1]["at"] > 1700000000000, ents[1]
        assert ents[3]["subject"] == "Заказ 42", ents[3]
        assert ents[3]["source_id"] == "mail-1", ents[3]
        assert all(x["customer"] == cu for x in ents), ents
        assert r.json["next_before"] is None, r.json
        r = env.client.get("/api/v1/customers/%s/timeline" % cp)
        assert [x["id"] for x in r.json["entries"]] == [p["id"]], r.json


def test_timeline_paging():
    with Env() as env:
        first = post_contact(env, {"channel": "api",
                                   "email": "pager@example.com",
                                   "text": "0", "source_id": "pg-0",
                                   "conversation": "none"})
        cu = first["customer"]
        posted = [first["id"]]
        for i in range(1, 120):
            x = post_contact(env, {"channel": "api", "customer": cu,
                                   "text": str(i), "source_id": "pg-%d" % i,
                                   "conversation": "none"})
            posted.append(x["id"])
        assert len(set(posted)) == 120
        assert [stream_id(p) for p in posted] == \
            sorted(stream_id(p) for p in posted), "ids not increasing"
        newest_first = posted[::-1]
        logged = [eid for eid, f in env.redis.xrange_all("sb:log")
                  if f.get("customer") == cu]
        assert logged == posted, "sb:log holds %d of 120" % len(logged)

        for limit in (50, 7, 200, 1):
            got, texts = [], []
            before = None
            for _ in range(200):
                path = "/api/v1/customers/%s/timeline?limit=%d" % (cu, limit)
                if before:
                    path += "&before=" + q(before)
                r = env.client.get(path)
                assert r.status == 200, r
                page = r.json["entries"]
                assert len(page) <= limit, (limit, len(page))
                got += [x["id"] for x in page]
                texts += [x["text"] for x in page]
                before = r.json["next_before"]
                if before is None:
                    break
                assert page, "empty page with next_before"
                assert before == page[-1]["id"], (before, page[-1]["id"])
            assert got == newest_first, \
                "limit %d: %d entries, %d unique, order ok: %s" % (
                    limit, len(got), len(set(got)), got == newest_first)
            assert texts == [str(i) for i in range(119, -1, -1)], limit

        r = env.client.get("/api/v1/customers/%s/timeline" % cu)
        assert r.status == 200 and len(r.json["entries"]) == 50, r
        assert r.json["next_before"] == posted[-50], r.json["next_before"]
        # before= the oldest entry: nothing older.
        r = env.client.get("/api/v1/customers/%s/timeline?before=%s"
                           % (cu, q(posted[0])))
        assert r.status == 200 and r.json["entries"] == [], r
        assert r.json["next_before"] is None, r.json
        for bad in ("limit=0", "limit=201", "limit=abc", "before=garbage"):
            r = env.client.get("/api/v1/customers/%s/timeline?%s" % (cu, bad))
            assert r.status == 400, (bad, r)
        r = env.client.get("/api/v1/customers/cu_999999999/timeline")
        assert r.status == 404, r


def test_put_customer():
    with Env() as env:
        a = post_contact(env, {"channel": "email", "email": "put@example.com",
                               "source_id": "put-1"})
        other = post_contact(env, {"channel": "email",
                                   "email": "other@example.com",
                                   "source_id": "put-2"})
        cu = a["customer"]
        patch = {"name": "Пётр", "locale": "en", "timezone": "Europe/Moscow",
                 "tier": "gold", "tags": ["vip", "expo"], "curator": "alice",
                 "preferences": {"order": ["sms", "email"]},
                 "add_identities": {"phone": ["+7 (903) 765-43-21"],
                                    "email": ["Put2@Example.com"]}}
        r = env.client.put("/api/v1/customers/" + cu, patch)
        assert r.status == 200, r
        c = r.json
        for k in ("name", "locale", "timezone", "tier", "tags", "curator"):
            assert c[k] == patch[k], (k, c)
        assert c["preferences"].get("order") == ["sms", "email"], c
        assert sorted(c["identities"]["email"]) == ["put2@example.com",
                                                    "put@example.com"], c
        assert c["identities"]["phone"] == ["+79037654321"], c
        r = env.client.get("/api/v1/customers/" + cu)
        assert r.status == 200 and r.json["tier"] == "gold", r
        assert r.json["tags"] == ["vip", "expo"], r.json
        r = env.client.get("/api/v1/customers?phone=" + q("89037654321"))
        assert r.status == 200 and r.json["id"] == cu, r
        assert env.redis.cmd("HGET", "sb:identity", "email:put2@example.com") \
            == cu.encode()
        assert env.redis.hgetall("sb:cust:" + cu).get("name") == "Пётр"

        # Partial: only the name changes.
        r = env.client.put("/api/v1/customers/" + cu, {"name": "Pyotr"})
        assert r.status == 200 and r.json["name"] == "Pyotr", r
        assert r.json["tier"] == "gold" and r.json["locale"] == "en", r.json

        # An identity that belongs to someone else: 409, nothing changes.
        r = env.client.put("/api/v1/customers/" + cu, {
            "add_identities": {"email": ["other@example.com"]}})
        assert r.status == 409 and "error" in r.json, r
        assert env.redis.cmd("HGET", "sb:identity",
                             "email:other@example.com") == \
            other["customer"].encode()
        r = env.client.put("/api/v1/customers/" + cu, {
            "add_identities": {"email": ["not an address"]}})
        assert r.status == 400, r
        r = env.client.put("/api/v1/customers/cu_999999999", {"name": "x"})
        assert r.status == 404, r


def test_merge():
    with Env() as env:
        a = post_contact(env, {"channel": "email", "email": "anna@example.com",
                               "text": "a1", "source_id": "m-a1"})
        b = post_contact(env, {"channel": "phone",
                               "phone": "+7 916 555 00 11",
                               "source_id": "m-b1"})
        b2 = post_contact(env, {"channel": "sms", "phone": "89165550011",
                                "text": "b2", "source_id": "m-b2"})
        A, B = a["customer"], b["customer"]
        assert A != B and b2["customer"] == B, (a, b, b2)
        # One contact carries both: the identities of A and B meet.
        m = post_contact(env, {"channel": "api", "email": "anna@example.com",
                               "phone": "8 916 555-00-11", "text": "both",
                               "source_id": "m-both"})
        assert m["customer"] in (A, B), m
        props = []
        for cu in (A, B):
            r = env.client.get("/api/v1/customers/%s/merge-proposals" % cu)
            assert r.status == 200, r
            assert isinstance(r.json, dict) and \
                isinstance(r.json.get("proposals"), list), \
                "want {\"proposals\": [...]}, got %r" % r
            props += r.json["proposals"]
        assert any({p["a"], p["b"]} == {A, B} for p in props), props
        for p in props:
            assert "identity" in p and "at" in p, p

        # Nothing moved yet.
        assert env.redis.cmd("HGET", "sb:identity", "phone:+79165550011") \
            == B.encode()

        r = env.client.post("/api/v1/customers/%s/merge" % A, {"from": B})
        assert r.status == 200, r
        c = r.json
        assert c["id"] == A, c
        assert c["identities"]["email"] == ["anna@example.com"], c
        assert c["identities"]["phone"] == ["+79165550011"], c
        assert env.redis.cmd("HGET", "sb:identity", "phone:+79165550011") \
            == A.encode()
        r = env.client.get("/api/v1/customers/" + B)
        assert r.status == 200 and r.json["id"] == A, r
        r = env.client.get("/api/v1/customers?phone=" + q("+79165550011"))
        assert r.status == 200 and r.json["id"] == A, r

        r = env.client.get("/api/v1/customers/%s/timeline" % A)
        assert r.status == 200, r
        got = [x["id"] for x in r.json["entries"]]
        want = sorted({a["id"], b["id"], b2["id"], m["id"]}, key=stream_id,
                      reverse=True)
        assert got == want, (got, want)
        # The old id's timeline is the survivor's.
        r = env.client.get("/api/v1/customers/%s/timeline" % B)
        assert r.status == 200, r
        assert [x["id"] for x in r.json["entries"]] == want, r.json
        # New contacts by B's phone land on A.
        n = post_contact(env, {"channel": "sms", "phone": "+79165550011",
                               "text": "after", "source_id": "m-after"})
        assert n["customer"] == A and n["new_customer"] is False, n
        # Merging into itself is refused; unknown ids are 404.
        r = env.client.post("/api/v1/customers/%s/merge" % A, {"from": A})
        assert r.status in (400, 409), r
        r = env.client.post("/api/v1/customers/%s/merge" % A,
                            {"from": "cu_999999999"})
        assert r.status == 404, r
        # Agents may not merge; operators may.
        agent = env.new_client(env.login("alice"))
        c2 = post_contact(env, {"channel": "email", "email": "z@example.com",
                                "source_id": "m-z"})
        r = agent.post("/api/v1/customers/%s/merge" % A,
                       {"from": c2["customer"]})
        assert r.status == 403, r
        op = env.new_client(env.login("olga"))
        r = op.post("/api/v1/customers/%s/merge" % A,
                    {"from": c2["customer"]})
        assert r.status == 200 and r.json["id"] == A, r
        assert "z@example.com" in r.json["identities"]["email"], r.json


def test_idempotency():
    with Env() as env:
        body = {"channel": "api", "email": "idem@example.com",
                "text": "order paid", "source_id": "erp-7001",
                "conversation": "new"}
        r1 = env.client.post(C, body)
        assert r1.status == 201 and r1.json["duplicate"] is False, r1
        r2 = env.client.post(C, body)
        assert r2.status == 200, r2
        j1, j2 = r1.json, r2.json
        assert j2["duplicate"] is True, j2
        for k in ("id", "customer", "conversation"):
            assert j1[k] == j2[k], (k, j1, j2)
        # Even with a different body, the source id wins.
        r3 = env.client.post(C, dict(body, text="changed"))
        assert r3.status == 200 and r3.json["id"] == j1["id"], r3
        entries = [e for e in env.redis.xrange_all("sb:log")
                   if e[1].get("source_id") == "erp-7001"]
        assert len(entries) == 1, entries
        assert entries[0][0] == j1["id"]
        r = env.client.get("/api/v1/customers/%s/timeline" % j1["customer"])
        assert [x["id"] for x in r.json["entries"]] == [j1["id"]], r.json

        # The same source id raced on two connections: one entry, one 201.
        clients = [env.new_client(), env.new_client()]
        for rnd in range(20):
            body = {"channel": "api", "email": "idem%d@example.com" % rnd,
                    "text": "x", "source_id": "race-%d" % rnd,
                    "conversation": "none"}
            res = race(clients, [body, body])
            sts = sorted(r.status for r in res)
            assert sts == [200, 201], (rnd, res)
            assert res[0].json["id"] == res[1].json["id"], res
        by = {}
        for eid, f in env.redis.xrange_all("sb:log"):
            by.setdefault(f.get("source_id"), []).append(eid)
        for rnd in range(20):
            assert len(by.get("race-%d" % rnd, [])) == 1, (rnd, by)


def race(clients, bodies):
    """POST bodies[i] on clients[i] at the same moment; returns answers."""
    barrier = threading.Barrier(len(clients))
    out = [None] * len(clients)

    def go(i):
        barrier.wait(10)
        try:
            out[i] = clients[i].post(C, bodies[i])
        except Exception as e:  # reported below
            out[i] = e

    ts = [threading.Thread(target=go, args=(i,)) for i in range(len(clients))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(30)
    for o in out:
        assert o is not None and not isinstance(o, Exception), out
    return out


def test_concurrent_new_email():
    with Env() as env:
        clients = [env.new_client(), env.new_client()]
        for i in range(50):
            email = "racer%d@example.com" % i
            res = race(clients, [
                {"channel": "email", "email": email, "text": "a",
                 "source_id": "cc-%d-a" % i},
                {"channel": "email", "email": email.upper(), "text": "b",
                 "source_id": "cc-%d-b" % i}])
            assert [r.status for r in res] == [201, 201], (i, res)
            a, b = res[0].json, res[1].json
            assert a["customer"] == b["customer"], (email, a, b)
            assert [a["new_customer"], b["new_customer"]].count(True) == 1, \
                (email, a, b)
            owner = env.redis.cmd("HGET", "sb:identity", "email:" + email)
            assert owner == a["customer"].encode(), (email, owner, a)
        # Exactly 50 customers own e-mail identities, one each.
        idents = env.redis.hgetall("sb:identity")
        owners = {v for k, v in idents.items()
                  if k.startswith("email:racer")}
        assert len(owners) == 50, len(owners)
        for i in range(50):
            r = env.client.get("/api/v1/customers?email=" +
                               q("racer%d@example.com" % i))
            assert r.status == 200, r
            assert len(r.json["identities"]["email"]) == 1, r.json
