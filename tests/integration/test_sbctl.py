"""test_sbctl.py - the operator CLI against the real daemon.

Each test starts Redis and the daemon (harness.Env) with two queues and
four users, seeds data through the HTTP API, and runs the real sbctl binary
as a subprocess with SB_URL and SB_TOKEN (or the token file `sbctl login`
writes under a temporary XDG_CONFIG_HOME). Tables are parsed by the
positions of their header words in code points, so a table padded by bytes
instead of characters (Cyrillic names) fails. --json output is compared with
what the API answers. Exit codes: 0, 1 (the server refused), 2 (usage),
3 (unreachable: a closed port).

The binary: $SBCTL_BIN, else the sbctl next to $SB_BIN (build/asan/sbctl
under the default ASan daemon, so leaks and UB in sbctl fail too), else
build/sbctl.
"""

import json
import os
import queue
import re
import signal
import stat
import subprocess
import tempfile
import threading
import time

from harness import (Env, ROOT, SAN_ENV, SB_BIN, free_port, stop_process,
                     timeout, _register)


def sbctl_bin():
    b = os.environ.get("SBCTL_BIN")
    if not b:
        b = os.path.join(os.path.dirname(SB_BIN), "sbctl")
        if not os.path.exists(b):
            b = os.path.join(ROOT, "build", "sbctl")
    if not os.path.isabs(b):
        b = os.path.join(ROOT, b)
    assert os.access(b, os.X_OK), "no sbctl binary at %s (run make)" % b
    return b


SBCTL = sbctl_bin()

ROUTING = {
    "routing": {"default_queue": "general", "offer_timeout": "5m"},
    "queue general": {"members": "alice, bob", "strategy": "round_robin",
                      "sla": "10m"},
    "queue vip": {"members": "alice", "strategy": "least_busy"},
    "agent alice": {"capacity": "2"},
}

IVAN = "Иван Петров"
ANNA = "Анна Ёлкина"


class Sb:
    """Runs sbctl against one Env with a clean environment."""

    def __init__(self, env, token=None, url=None):
        self.env = env
        self.home = tempfile.mkdtemp(prefix="sb-ctl-", dir=env.tmp)
        self.xdg = os.path.join(self.home, "cfg")
        self.vars = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": self.home,
            "XDG_CONFIG_HOME": self.xdg,
            "SB_URL": url or "http://127.0.0.1:%d" % env.port,
            "LANG": "C.UTF-8",
        }
        self.vars.update(SAN_ENV)
        if token:
            self.vars["SB_TOKEN"] = token
        self.secrets = [token] if token else []

    def env_for(self, extra=None):
        e = dict(self.vars)
        for k, v in (extra or {}).items():
            if v is None:
                e.pop(k, None)
            else:
                e[k] = v
        return e

    def run(self, *args, input=None, extra=None, limit=30):
        p = subprocess.run([SBCTL] + list(args), input=input,
                           capture_output=True, timeout=limit,
                           env=self.env_for(extra))
        out = p.stdout.decode("utf-8")
        err = p.stderr.decode("utf-8", errors="replace")
        for s in self.secrets:
            assert s not in out and s not in err, \
                "sbctl %s printed the token" % " ".join(args)
        assert "Sanitizer" not in err and "runtime error" not in err, err
        return p.returncode, out, err

    def ok(self, *args, **kw):
        rc, out, err = self.run(*args, **kw)
        assert rc == 0, "sbctl %s: exit %d: %s%s" % (" ".join(args), rc,
                                                     out, err)
        return out

    def json(self, *args, **kw):
        out = self.ok("--json", *args, **kw)
        assert out.count("\n") == 1, "not one document: %r" % out[:300]
        return json.loads(out)

    def popen(self, *args, extra=None):
        p = subprocess.Popen([SBCTL] + list(args), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=self.env_for(extra))
        _register(p, "sbctl")
        return p


def table(text):
    """Rows of an sbctl table as dicts keyed by header words. Columns are
    found at the header words' positions (in code points); every row must
    have the two-space gap before each column there."""
    lines = text.rstrip("\n").split("\n")
    cols = [(m.start(), m.group()) for m in
            re.finditer(r"\S+(?: \S+)*", lines[0])]
    assert len(cols) >= 2, "no table header: %r" % lines[0]
    rows = []
    for ln in lines[1:]:
        row = {}
        for i, (start, name) in enumerate(cols):
            end = cols[i + 1][0] if i + 1 < len(cols) else None
            if i:
                assert ln[start - 2:start] == "  ", \
                    "column %s misaligned in %r" % (name, ln)
            row[name] = ln[start:end].strip()
        rows.append(row)
    return rows


def conv_queues(out):
    """The conversation queue table of `sbctl queues` (for an operator the
    notification queues follow it under a "notifications" line)."""
    return out.split("\n\nnotifications\n", 1)[0]


def by(rows, key):
    return {r[key]: r for r in rows}


def seed(env):
    """Two chat customers with Cyrillic names, routed to general. Returns
    {name: the answer to the post}."""
    out = {}
    for name, mail, subj in ((IVAN, "ivan@example.com", "Где мой заказ?"),
                             (ANNA, "anna@example.com", "Возврат")):
        r = env.client.post("/api/v1/contacts", {
            "channel": "chat", "email": mail, "name": name,
            "subject": subj, "text": "Здравствуйте\nпомогите"})
        assert r.status == 201, r
        out[name] = r.json
    return out


def online(env, sb, *agents):
    for a in agents:
        out = sb.ok("presence", a, "online")
        assert out.startswith("%s: online" % a), out
    c = env.new_client(env.login("olga"))
    agents_now = {g["name"]: g
                  for g in c.get("/api/v1/agents").json["agents"]}
    for a in agents:
        assert agents_now[a]["presence"] == "online", agents_now[a]


def test_login_writes_token_file():
    with Env(ROUTING) as env:
        sb = Sb(env)
        sb.secrets.append(env.password("olga"))
        path = os.path.join(sb.xdg, "switchboard", "token")
        # No token anywhere yet: the server says 401, exit 1.
        rc, out, err = sb.run("queues")
        assert rc == 1 and "401" in err, (rc, out, err)
        # A wrong password is refused and writes nothing.
        rc, out, err = sb.run("login", "olga", input=b"wrong\n")
        assert rc == 1 and "401" in err, (rc, out, err)
        assert not os.path.exists(path)
        # The right one, on stdin.
        out = sb.ok("login", "olga",
                    input=(env.password("olga") + "\n").encode())
        assert "logged in as olga (operator)" in out, out
        st = os.stat(path)
        assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) & \
            0o077 == 0
        with open(path) as f:
            tok = f.read().strip()
        sb.secrets.append(tok)
        assert len(tok) >= 32 and tok not in out
        r = env.client.get("/api/v1/me", token=tok)
        assert r.status == 200 and r.json["user"] == "olga", r
        # Later commands use the file (no SB_TOKEN, no --token).
        rows = table(conv_queues(sb.ok("queues")))
        assert [r["QUEUE"] for r in rows] == ["general", "vip"], rows
        # A looser file left by someone else is tightened on re-login.
        os.chmod(path, 0o644)
        j = sb.json("login", "olga",
                    input=(env.password("olga") + "\n").encode())
        assert j["user"] == "olga" and j["role"] == "operator", j
        assert j["token_file"] == path and "token" not in j, j
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with open(path) as f:
            tok2 = f.read().strip()
        sb.secrets.append(tok2)
        assert tok2 != tok
        # $SB_TOKEN wins over the file, --token over both.
        rc, out, err = sb.run("queues", extra={"SB_TOKEN": "sb_bad_x"})
        assert rc == 1 and "401" in err, (rc, err)
        rc, out, err = sb.run("--token", "nope", "queues",
                              extra={"SB_TOKEN": tok2})
        assert rc == 1 and "401" in err, (rc, err)
        sb.ok("--token", tok2, "queues", extra={"SB_TOKEN": "sb_bad_x"})


def test_tables_and_json():
    with Env(ROUTING) as env:
        tok = env.login("olga")
        sb = Sb(env, tok)
        api = env.new_client(tok)
        online(env, sb, "alice", "bob")
        seeded = seed(env)
        cv_ivan = seeded[IVAN]["conversation"]
        cv_anna = seeded[ANNA]["conversation"]

        # queues: both conversations wait in general, offered round-robin.
        qj = sb.json("queues")
        qa = api.get("/api/v1/queues").json
        assert [(x["name"], x["waiting"], x["online"]) for x in qj["queues"]] \
            == [(x["name"], x["waiting"], x["online"]) for x in qa["queues"]] \
            == [("general", 2, 2), ("vip", 0, 1)], (qj, qa)
        q = by(table(conv_queues(sb.ok("queues"))), "QUEUE")
        assert set(q) == {"general", "vip"}, q
        g = q["general"]
        assert g["STRATEGY"] == "round_robin", g
        assert g["WAITING"] == "2" and g["ONLINE"] == "2", g
        assert g["BUSY"] == "0" and g["SLA BREACHES"] == "0", g
        assert re.fullmatch(r"\d+s", g["LONGEST WAIT"]), g
        assert q["vip"]["WAITING"] == "0" and q["vip"]["ONLINE"] == "1"
        assert q["vip"]["LONGEST WAIT"] == "-", q["vip"]
        assert q["vip"]["STRATEGY"] == "least_busy", q["vip"]

        # agents: one offer each, nothing held yet.
        aj = sb.json("agents")
        assert {a["name"] for a in aj["agents"]} == \
            {"alice", "bob", "olga", "root"}, aj
        a = by(table(sb.ok("agents")), "AGENT")
        assert a["alice"]["PRESENCE"] == "online", a
        assert a["alice"]["ACTIVE"] == "0/2" and a["bob"]["ACTIVE"] == "0/3"
        assert a["alice"]["OFFERS"] == "1" and a["bob"]["OFFERS"] == "1", a
        assert a["alice"]["QUEUES"] == "general, vip", a
        assert a["olga"]["PRESENCE"] == "offline", a
        assert a["olga"]["IDLE SINCE"] == "-", a

        # bob takes his offer: he holds one, alice is still offered one.
        bob = env.new_client(env.login("bob"))
        bob_cv = [c for c in (cv_ivan, cv_anna) if bob.post(
            "/api/v1/conversations/%s/accept" % c).status == 200]
        assert len(bob_cv) == 1, bob_cv
        a = by(table(sb.ok("agents")), "AGENT")
        assert a["bob"]["ACTIVE"] == "1/3" and a["bob"]["OFFERS"] == "0", a
        assert a["bob"]["IDLE SINCE"] == "-", a
        q = by(table(conv_queues(sb.ok("queues"))), "QUEUE")
        assert q["general"]["WAITING"] == "1", q
        assert q["general"]["BUSY"] == "1", q

        # conversations: Cyrillic names and subjects line up.
        cj = sb.json("conversations")
        assert cj == api.get("/api/v1/conversations").json, cj
        rows = table(sb.ok("conversations"))
        c = by(rows, "ID")
        assert set(c) == {cv_ivan, cv_anna}, rows
        assert c[cv_ivan]["NAME"] == IVAN, c
        assert c[cv_anna]["NAME"] == ANNA, c
        assert c[cv_ivan]["SUBJECT"] == "Где мой заказ?", c
        assert c[cv_ivan]["CUSTOMER"] == seeded[IVAN]["customer"], c
        for r in rows:
            assert r["CHANNEL"] == "chat" and r["QUEUE"] == "general", r
            assert re.fullmatch(r"\d+s", r["AGE"]), r
        assert c[bob_cv[0]]["STATE"] == "assigned", c
        assert c[bob_cv[0]]["AGENT"] == "bob", c
        other = cv_anna if bob_cv[0] == cv_ivan else cv_ivan
        assert c[other]["STATE"] == "queued" and c[other]["AGENT"] == "-"
        # Filters reach the server.
        rows = table(sb.ok("conversations", "--state", "queued"))
        assert [r["ID"] for r in rows] == [other], rows
        rows = table(sb.ok("conversations", "--agent", "bob"))
        assert [r["ID"] for r in rows] == bob_cv, rows
        rows = table(sb.ok("conversations", "--queue", "vip"))
        assert rows == [], rows
        rows = table(sb.ok("conversations", "--limit", "1"))
        assert len(rows) == 1, rows
        j = sb.json("conversations", "--state", "assigned", "--limit", "5")
        assert [x["id"] for x in j["conversations"]] == bob_cv, j

        # timeline: the message and the routing decisions, newest first.
        cu = seeded[IVAN]["customer"]
        rows = table(sb.ok("timeline", cu))
        assert rows[-1]["TYPE"] == "message", rows
        assert rows[-1]["SUBJECT / TEXT"] == "Где мой заказ?", rows
        assert rows[-1]["CHANNEL"] == "chat" and rows[-1]["DIR"] == "in"
        assert any(r["TYPE"] == "assignment" for r in rows), rows
        # The older views still work.
        assert sb.json("find", "email", "ivan@example.com")["id"] == cu
        assert sb.json("customer", cu)["name"] == IVAN
        assert sb.json("conversation", cv_ivan)["customer"] == cu
        assert json.loads(sb.ok("customer", cu))["name"] == IVAN
        st = sb.ok("status")
        assert re.search(r"^ready +yes$", st, re.M), st
        assert sb.json("status") == {"status": "ready"}
        j = sb.json("timeline", cu, "2")
        assert len(j["entries"]) == 2, j
        assert j == api.get("/api/v1/customers/%s/timeline?limit=2"
                            % cu).json


def test_actions_and_exit_codes():
    with Env(ROUTING) as env:
        tok = env.login("olga")
        sb = Sb(env, tok)
        api = env.new_client(tok)
        online(env, sb, "alice", "bob")
        seeded = seed(env)
        cv = seeded[IVAN]["conversation"]
        cv2 = seeded[ANNA]["conversation"]

        out = sb.ok("transfer", cv, "--agent", "bob")
        assert out.strip() == "%s: assigned, agent bob, queue general" % cv
        assert api.get("/api/v1/conversations/" + cv).json["agent"] == "bob"
        j = sb.json("transfer", cv2, "--queue", "vip")
        assert j["id"] == cv2 and j["queue"] == "vip", j
        out = sb.ok("note", cv, "Перезвонить\tзавтра")
        assert re.fullmatch(r"note \d+-\d+ added to %s\n" % cv, out), out
        tl = api.get("/api/v1/conversations/%s/timeline" % cv).json
        assert any(e["type"] == "note" and
                   e["text"] == "Перезвонить\tзавтра"
                   for e in tl["entries"]), tl
        out = sb.ok("resolve", cv)
        assert out.startswith("%s: resolved" % cv), out
        assert api.get("/api/v1/conversations/" + cv).json["state"] == \
            "resolved"
        # 1: the server refused, with its error.
        rc, out, err = sb.run("resolve", cv)
        assert rc == 1 and out == "", (rc, out, err)
        assert "409" in err and "resolved" in err, err
        rc, out, err = sb.run("--json", "resolve", "cv_999999")
        assert rc == 1 and "404" in err and out == "", (rc, out, err)
        alice = Sb(env, env.login("alice"))
        rc, out, err = alice.run("presence", "bob", "away")
        assert rc == 1 and "403" in err, (rc, err)
        out = sb.ok("presence", "bob", "away")
        assert out.startswith("bob: away"), out
        rc, out, err = sb.run("conversations", "--state", "sleeping")
        assert rc == 1 and "400" in err, (rc, err)
        # 2: usage.
        for args in (("frobnicate",), (), ("queues", "--bogus"),
                     ("queues", "extra"), ("resolve",), ("note", cv),
                     ("transfer", cv), ("transfer", cv, "--agent", "a",
                                        "--queue", "b"),
                     ("presence", "bob", "asleep"),
                     ("conversations", "--limit", "0"),
                     ("tail", "--count", "x"), ("tail", "--since", "soon"),
                     ("queues", "--state", "new"), ("--nope", "queues")):
            rc, out, err = sb.run(*args)
            assert rc == 2, "sbctl %s: exit %d (%s)" % (args, rc, err)
            assert "usage: sbctl" in err and out == "", (args, out, err)
        for args in (("--help",), ("queues", "--help"),
                     ("tail", "--help")):
            rc, out, err = sb.run(*args)
            assert rc == 0 and out.startswith("usage: sbctl"), (args, rc)
        # 3: nothing listens there.
        down = Sb(env, tok, url="http://127.0.0.1:%d" % free_port())
        for args in (("queues",), ("--json", "agents"), ("status",),
                     ("resolve", cv)):
            rc, out, err = down.run(*args)
            assert rc == 3, "sbctl %s: exit %d (%s)" % (args, rc, err)
            assert out == "", out
        rc, out, err = down.run("conversations")
        assert rc == 3 and "cannot reach" in err, err


class Lines:
    """Reads a process's stdout (or stderr) lines in a thread."""

    def __init__(self, f):
        self.q = queue.Queue()
        self.all = []
        self.t = threading.Thread(target=self._run, args=(f,), daemon=True)
        self.t.start()

    def _run(self, f):
        for ln in iter(f.readline, b""):
            self.q.put(ln.decode("utf-8"))
        self.q.put(None)

    def get(self, limit, what="a line"):
        try:
            ln = self.q.get(timeout=limit)
        except queue.Empty:
            raise AssertionError("no %s in %.0fs" % (what, limit))
        assert ln is not None, "stream closed waiting for %s" % what
        self.all.append(ln)
        return ln

    def rest(self, limit=10):
        """Everything until the stream closes."""
        self.t.join(limit)
        out = []
        while True:
            try:
                ln = self.q.get_nowait()
            except queue.Empty:
                break
            if ln is not None:
                out.append(ln)
        return out


def post(env, subject, text=None, channel="phone"):
    body = {"channel": channel, "phone": "+79161234567",
            "conversation": "none"}
    if subject:
        body["subject"] = subject
    if text:
        body["text"] = text
    r = env.client.post("/api/v1/contacts", body)
    assert r.status == 201, r
    return r.json["id"]


@timeout(90)
def test_tail_count():
    with Env(ROUTING) as env:
        sb = Sb(env, env.login("olga"))
        before = post(env, "before tail")
        p = sb.popen("tail", "--count", "3")
        try:
            out = Lines(p.stdout)
            head = out.get(15, "tail header")
            assert head.split() == ["TIME", "CHANNEL", "DIR", "TYPE",
                                    "CUSTOMER", "CONV", "AGENT", "SUBJECT",
                                    "/", "TEXT"], head
            sent = [("первый", "текст"),
                    (None, "line one\n\tline two"), ("третий", None)]
            ids = [post(env, s, t) for s, t in sent]
            p.wait(timeout=20)
        finally:
            stop_process(p)
        assert p.returncode == 0, p.stderr.read()
        lines = out.rest()
        assert len(lines) == 3, lines
        rows = table(head + "".join(lines))
        assert [r["SUBJECT / TEXT"] for r in rows] == \
            ["первый", "line one line two", "третий"], rows
        cust = env.client.get("/api/v1/customers?phone=%2B79161234567")
        for r in rows:
            assert r["CHANNEL"] == "phone" and r["DIR"] == "in", r
            assert r["TYPE"] == "call" and r["CONV"] == "-", r
            assert r["CUSTOMER"] == cust.json["id"], r
            assert re.fullmatch(r"\d\d-\d\d \d\d:\d\d:\d\d", r["TIME"]), r
        assert "\t" not in "".join(lines)

        # --json from a contact id: one object per line, in order, the
        # first entry after `before` even though it was posted earlier.
        j = sb.ok("--json", "tail", "--since", before, "--count", "3",
                  limit=30)
        docs = [json.loads(x) for x in j.splitlines()]
        assert [d["id"] for d in docs] == ids, (docs, ids)
        assert docs[1]["text"] == "line one\n\tline two", docs


@timeout(90)
def test_tail_retries_and_stops():
    with Env(ROUTING) as env:
        sb = Sb(env, env.login("olga"))
        # SIGTERM on a quiet log: exit 0 at once.
        p = sb.popen("--json", "tail")
        try:
            time.sleep(1.2)
            assert p.poll() is None, "tail exited on its own"
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
        finally:
            stop_process(p)
        assert p.returncode == 0 and p.stdout.read() == b"", p.returncode

        # The daemon goes away: tail says so once, keeps polling, and
        # prints what is logged once the daemon is back.
        p = sb.popen("tail", "--count", "1")
        try:
            out = Lines(p.stdout)
            err = Lines(p.stderr)
            out.get(15, "tail header")
            env.daemon.stop()
            ln = err.get(10, "the unreachable notice")
            assert "cannot reach" in ln, ln
            time.sleep(2.0)  # four more polls
            assert p.poll() is None, "tail gave up"
            env.daemon.start()
            ln = err.get(10, "the back notice")
            assert "is back" in ln, ln
            post(env, "after restart")
            row = out.get(15, "the entry logged after the restart")
            assert "after restart" in row, row
            p.wait(timeout=10)
        finally:
            stop_process(p)
        assert p.returncode == 0, p.returncode
        assert err.rest() == [], err.all

        # SIGINT while the server is unreachable: exit 0, one notice.
        down = Sb(env, "sb_never_printed_42",
                  url="http://127.0.0.1:%d" % free_port())
        p = down.popen("tail")
        try:
            err = Lines(p.stderr)
            time.sleep(2.0)
            assert p.poll() is None, "tail gave up"
            p.send_signal(signal.SIGINT)
            p.wait(timeout=10)
        finally:
            stop_process(p)
        assert p.returncode == 0, p.returncode
        notices = [x for x in err.rest() if "cannot reach" in x]
        assert len(notices) == 1, notices


NOTIFY = {
    "channels": {"email": "file"},
    "file": {"fail_to": "dead@example.com"},
    "notify": {"supersede_window": "0", "stats_interval": "200ms"},
}


def wait_state(env, c, nid, want, limit=10.0):
    end = time.time() + limit
    while time.time() < end:
        r = c.get("/api/v1/notifications/" + nid)
        if r.status == 200 and r.json["state"] == want:
            return r.json
        time.sleep(0.05)
    raise AssertionError("%s never reached %s: %r" % (nid, want, r.json))


def test_notify_dlq_queues_template():
    with Env(dict(ROUTING, **NOTIFY)) as env:
        c = env.new_client(env.login("olga"))
        sb = Sb(env, token=c.token)
        r = c.post("/api/v1/notifications", {
            "event": "order.paid", "email": "dead@example.com",
            "channels": ["email"],
            "data": {"order": "A-7", "amount": "10", "currency": "RUB"}})
        assert r.status == 202, r
        nid = r.json["id"]
        wait_state(env, c, nid, "dead")

        rows = table(sb.ok("dlq", "list"))
        assert [x["NOTIFICATION"] for x in rows] == [nid], rows
        assert "fail_to" in rows[0]["REASON"], rows
        assert sb.json("dlq", "list") == c.get("/api/v1/dlq?limit=50").json

        out = sb.ok("notify", nid)
        assert out.startswith("%s  order.paid  customer " % nid), out
        assert "state dead" in out.split("\n")[0], out
        att = table(out.split("\n\n", 1)[1])
        assert len(att) == 1 and att[0]["RESULT"] == "permfail" and \
            att[0]["CHANNEL"] == "email" and \
            att[0]["TO"] == "dead@example.com", att

        # the queue tables: conversation queues, then the notifications
        deadline = time.time() + 5
        while True:
            j = sb.json("queues")
            if j.get("notifications", {}).get("dead") == 1:
                break
            assert time.time() < deadline, j
            time.sleep(0.1)
        out = sb.ok("queues")
        part = out.split("\nnotifications\n", 1)
        assert len(part) == 2, out
        figures = table(part[1].split("\n\n")[0])
        assert figures[0]["DEAD"] == "1", figures
        chans = by(table(part[1].split("\n\n")[1]), "CHANNEL")
        assert chans["email"]["DRIVER"] == "yes", chans
        assert chans["chat"]["DRIVER"] == "no", chans

        # retry: it goes round again (fail_to still refuses it) and dies
        # again with a second attempt; drop takes it off the list.
        out = sb.ok("dlq", "retry", nid)
        assert out == "%s: queued again\n" % nid, out
        deadline = time.time() + 10
        while True:
            j = c.get("/api/v1/notifications/" + nid).json
            if j["state"] == "dead" and len(j["attempts"]) == 2:
                break
            assert time.time() < deadline, j
            time.sleep(0.05)
        assert sb.ok("dlq", "drop", nid) == "%s: dropped\n" % nid
        assert c.get("/api/v1/dlq").json["entries"] == []
        ttl = env.redis.cmd("TTL", "sb:ntf:" + nid)
        assert 0 < ttl <= 30 * 86400, ttl  # kept for [notify] retention
        rc, out, err = sb.run("dlq", "drop", nid)
        assert rc == 1 and "404" in err, (rc, out, err)
        rc, out, err = sb.run("dlq", "retry")
        assert rc == 2, (rc, out, err)

        # template render runs locally, no server needed
        data = os.path.join(env.tmp, "data.json")
        with open(data, "w") as f:
            json.dump({"order": "A-7", "carrier": "СДЭК",
                       "tracking_url": "https://t.example/7"}, f)
        out = sb.ok("template", "render", "order.shipped", "email", "ru",
                    data, "--dir", os.path.join(ROOT, "config", "templates"),
                    extra={"SB_URL": "http://127.0.0.1:9"})
        assert "locale: ru" in out and "A-7" in out and "СДЭК" in out, out
        rc, out, err = sb.run("template", "render", "order.nope", "email",
                              "ru", data, "--dir",
                              os.path.join(ROOT, "config", "templates"))
        assert rc == 1 and err, (rc, out, err)
