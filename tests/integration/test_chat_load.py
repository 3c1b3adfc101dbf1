"""test_chat_load.py - many customers chatting at once with a few agents,
over real WebSockets, against the daemon and a real redis-server.

test_200_customers_5_agents: 200 customers, each on its own /chat/ws
socket (one thread each, blocking sockets), send 3 messages apiece
(Cyrillic text carrying the customer's unique tag and the message number;
each one sent after the agent's answer to the previous one). 5 agents,
each with one /console/ws socket, accept every offer, open the
conversation (the first message is in its timeline), and answer every
customer message they receive (the timeline or a live `entry` frame) with
a text naming the customer's tag, the message number and the agent.

Checked: every message is acknowledged and stored once; every stored
message reaches exactly one agent, the one holding the customer's
conversation, and no agent hears of conversations it does not hold; every
reply reaches its customer and no other; every conversation is assigned
exactly once (the agents' frames, the contact log and the API agree); no
agent goes over capacity (capacity 40 with 200 customers: exactly full).

test_two_instances: the same with 60 customers and 3 agents, the
customers on daemon A and the consoles on daemon B, one Redis: offers and
entries cross through Redis pub/sub, replies through the chat relay.

Console sockets are limited to 20 messages a second (docs/console-protocol.md,
"Limits"): each agent paces itself below that. Every wait is bounded; a
step that overruns fails with what was still missing.
"""

import collections
import hashlib
import json
import os
import re
import socket
import threading
import time

import harness
from harness import Client, Env, ROOT, log_by_source, timeout
from test_console import Second
from wsclient import Closed, WsClient

WWW = os.path.join(ROOT, "channels", "webchat", "www")
PROTO = "switchboard.agent.v1"

# The agent accounts share the cached password hash of a harness user (a
# hash carries its own salt, so it is valid for any user name): no extra
# argon2id runs under ASan.
PW_OF = "bob"

MSG_RE = re.compile(r"клиент (\S+), сообщение №(\d+)\.")
REPLY_RE = re.compile(r"^Ответ для (\S+) на №(\d+) — агент (\S+)$")
MESSAGES = 3


def customer_text(tag, k):
    return ("Здравствуйте! Я клиент %s, сообщение №%d. Где мой заказ? "
            "Ёжик «ok» 🦔" % (tag, k))


def reply_text(tag, k, agent):
    return "Ответ для %s на №%d — агент %s" % (tag, k, agent)


def vid_of(token):
    return hashlib.sha256(("switchboard.chat:" + token).encode()) \
        .hexdigest()[:32]


def display(agent):
    return "Агент " + agent[len("agent"):]


def load_env(agents, capacity, strategy):
    h = harness.secrets()["users"][PW_OF]["hash"]
    ov = {
        "routing": {"default_queue": "general", "offer_timeout": "2m",
                    "tick": "200ms"},
        "queue general": {"members": ", ".join(agents),
                          "strategy": strategy},
        # One client address for everybody: lift the per-address limits.
        "chat": {"www_dir": WWW, "conns_per_ip": "2000",
                 "ip_msgs_per_sec": "100000", "remote_wait": "5s"},
        "channels": {"chat": "chat"},
        "console": {"offline_grace": "60s"},
    }
    for a in agents:
        ov["user " + a] = {"role": "agent", "password": h,
                           "display_name": display(a)}
        ov["agent " + a] = {"capacity": str(capacity)}
    return Env(ov)


def login(env, user):
    r = env.client.post("/api/v1/login", {
        "username": user,
        "password": harness.secrets()["users"][PW_OF]["password"]},
        token=None)
    assert r.status == 200, "login %s: %r" % (user, r)
    return r.json["token"]


# --------------------------------------------------------------------------
# One agent: a console socket worked by a thread.

class Agent(threading.Thread):
    RATE = 12.0   # requests a second (the server allows 20, bursts of 2 s)
    BURST = 12.0

    def __init__(self, name, port, token, stop, limit):
        threading.Thread.__init__(self, daemon=True)
        self.name_ = name
        self.stop = stop
        self.deadline = time.monotonic() + limit
        self.ws = WsClient.connect(port, "/console/ws", protocol=PROTO)
        self.ws.send_json({"type": "auth", "token": token})
        self.early = []
        m, skipped = self.ws.recv_until(
            lambda m: m.get("type") == "result" and
            m.get("action") == "presence", 15.0,
            "%s: presence result after auth" % name)
        assert m.get("ok") and m["result"]["presence"] == "online", m
        self.early.extend(skipped)
        self.out = collections.deque()
        self.tokens = self.BURST
        self.last = time.monotonic()
        self.offers = collections.Counter()      # conv -> offers seen
        self.accepted = {}                        # conv -> customer
        self.assigned = collections.Counter()     # conv -> assigned events
        self.seen = {}                            # contact id -> (conv, text)
        self.entry_frames = collections.Counter()  # contact id -> frames
        self.foreign = []                         # frames not meant for us
        self.errors = []                          # error frames, bad results
        self.replies = {}                         # contact id -> result
        self.withdrawn = []
        self.max_held = 0
        self.closed = None
        self.crash = None
        self.sent = 0

    def push(self, obj):
        self.out.append(obj)

    def run(self):
        try:
            self._loop()
        except BaseException as e:  # reported by the test
            self.crash = "%s: %s" % (type(e).__name__, e)

    def _loop(self):
        for m in self.early:
            self.handle(m)
        last_ping = time.monotonic()
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            now = time.monotonic()
            self.tokens = min(self.BURST,
                              self.tokens + (now - self.last) * self.RATE)
            self.last = now
            if now - last_ping > 20 and self.tokens >= 1:
                self.out.appendleft({"type": "ping"})
                last_ping = now
            if self.out and self.tokens >= 1:
                self.ws.send_json(self.out.popleft())
                self.tokens -= 1
                self.sent += 1
                continue
            wait = 0.1 if not self.out else \
                max(0.005, (1 - self.tokens) / self.RATE)
            try:
                m = self.ws.recv_json(min(wait, 0.1))
            except socket.timeout:
                continue
            except Closed as e:
                self.closed = (e.code, e.reason)
                return
            self.handle(m)

    def note(self, conv, e):
        if e.get("direction") != "in" or e.get("type") != "message" or \
                e.get("channel") != "chat":
            return
        cid = e["id"]
        if e.get("conversation") != conv:
            self.foreign.append(("entry of another conversation", conv, cid,
                                 e.get("conversation")))
            return
        if cid in self.seen:
            return
        self.seen[cid] = (conv, e.get("text"))
        mm = MSG_RE.search(e.get("text") or "")
        if not mm:
            self.errors.append(("unparsable customer text", cid,
                                e.get("text")))
            return
        self.push({"type": "reply", "conversation": conv, "id": "r:" + cid,
                   "text": reply_text(mm.group(1), int(mm.group(2)),
                                      self.name_)})

    def handle(self, m):
        t = m.get("type")
        me = self.name_
        if t == "offer":
            cv = m.get("conversation")
            if m.get("agent") != me:
                self.foreign.append(("offer", cv, m.get("agent")))
                return
            self.offers[cv] += 1
            if self.offers[cv] == 1:
                self.push({"type": "accept", "conversation": cv,
                           "id": "a:" + cv})
        elif t == "result":
            act, rid = m.get("action"), m.get("id") or ""
            if act == "accept":
                cv = m.get("conversation")
                res = m.get("result") or {}
                if not m.get("ok") or res.get("agent") != me or \
                        res.get("state") != "assigned":
                    self.errors.append(("accept", cv, m))
                    return
                self.accepted[cv] = res.get("customer")
                self.max_held = max(self.max_held, len(self.accepted))
                self.push({"type": "open", "conversation": cv,
                           "id": "o:" + cv})
            elif act == "reply" and rid.startswith("r:"):
                self.replies[rid[2:]] = m.get("result")
        elif t == "timeline":
            cv = (m.get("id") or "")[2:]
            for e in reversed(m.get("entries") or []):
                self.note(cv, e)
        elif t == "entry":
            cv = m.get("conversation")
            e = m.get("entry") or {}
            if e.get("direction") != "in":
                return
            self.entry_frames[e.get("id")] += 1
            if cv not in self.accepted:
                self.foreign.append(("entry", cv, e.get("id")))
                return
            self.note(cv, e)
        elif t == "assigned":
            cv = m.get("conversation")
            if m.get("agent") != me:
                self.foreign.append(("assigned", cv, m.get("agent")))
                return
            self.assigned[cv] += 1
        elif t == "withdrawn":
            self.withdrawn.append((m.get("conversation"), m.get("reason")))
        elif t == "error":
            self.errors.append(("error", m.get("id"), m.get("code"),
                                m.get("message")))


# --------------------------------------------------------------------------
# One customer: a chat socket worked by a thread.

class Customer(threading.Thread):
    def __init__(self, idx, run_id, port, stop, deadline):
        threading.Thread.__init__(self, daemon=True)
        self.idx = idx
        self.tag = "%s-%03d" % (run_id, idx)
        self.port = port
        self.stop = stop
        self.deadline = deadline
        self.token = None
        self.acks = {}          # k -> contact id
        self.messages = []      # every "message" frame received
        self.got = {}           # k -> reply frame
        self.phase = "start"
        self.error = None
        self.done = threading.Event()
        self.ws = None

    def cid(self, k):
        return "m%d-%s" % (k, self.tag)

    def left(self):
        return self.deadline - time.monotonic()

    def frames_until(self, pred, what):
        """Read frames until pred(m); message frames are all kept."""
        while True:
            left = self.left()
            if left <= 0:
                raise AssertionError("deadline passed waiting for " + what)
            try:
                m = self.ws.recv_json(min(left, 5.0))
            except socket.timeout:
                continue
            if m.get("type") == "message":
                self.messages.append(m)
            elif m.get("type") == "error":
                raise AssertionError("error frame while waiting for %s: %r"
                                     % (what, m))
            if pred(m):
                return m

    def reply_for(self, k):
        def pred(m):
            if m.get("type") != "message":
                return False
            r = REPLY_RE.match(m.get("text") or "")
            return bool(r) and r.group(1) == self.tag and \
                int(r.group(2)) == k
        return pred

    def run(self):
        try:
            self.phase = "connect"
            self.ws = WsClient.connect(self.port, "/chat/ws",
                                       timeout=max(1.0, min(20.0,
                                                            self.left())))
            self.ws.send_json({"type": "hello", "lang": "ru",
                               "name": "Клиент №%d" % self.idx})
            self.phase = "welcome"
            w = self.frames_until(lambda m: m.get("type") == "welcome",
                                  "welcome")
            self.token = w["token"]
            for k in range(1, MESSAGES + 1):
                self.phase = "ack %d" % k
                cid = self.cid(k)
                self.ws.send_json({"type": "message", "id": cid,
                                   "text": customer_text(self.tag, k)})
                a = self.frames_until(lambda m: m.get("type") == "ack" and
                                      m.get("id") == cid, "ack of " + cid)
                self.acks[k] = a["contact"]
                self.phase = "reply %d" % k
                self.got[k] = self.frames_until(self.reply_for(k),
                                                "reply to " + cid)
            self.phase = "done"
        except BaseException as e:
            self.error = "%s: %s: %s" % (self.phase, type(e).__name__, e)
        finally:
            self.done.set()
        # Linger: anything else that reaches this socket is recorded.
        while self.ws is not None and not self.stop.is_set() and \
                self.error is None:
            try:
                m = self.ws.recv_json(0.2)
            except socket.timeout:
                continue
            except (Closed, OSError) as e:
                self.error = "after the replies: %s" % e
                break
            if m.get("type") == "message":
                self.messages.append(m)

    def close(self):
        if self.ws is not None:
            self.ws.close()


# --------------------------------------------------------------------------

def sample(xs, n=5):
    xs = list(xs)
    return "%d, e.g. %s" % (len(xs), xs[:n])


def chat_load(env, agents, ncust, capacity, cust_port, agent_port,
              chat_limit):
    """Run the scenario; assertions on everything collected."""
    stop = threading.Event()
    custs = []
    t0 = time.monotonic()
    # Step 1: agents online (login over HTTP, console auth, presence).
    ags = {}
    try:
        for a in agents:
            ags[a] = Agent(a, agent_port, login(env, a), stop,
                           chat_limit + 30)
        for a in ags.values():
            a.start()
        rows = {r["name"]: r for r in
                env.client.get("/api/v1/agents").json["agents"]}
        for a in agents:
            assert rows[a]["presence"] == "online" and \
                rows[a]["capacity"] == capacity, rows[a]
        # Step 2: the customers, started in waves of 20 (a listen backlog
        # of 200 simultaneous connects is not what is tested here).
        run_id = os.urandom(3).hex()
        deadline = time.monotonic() + chat_limit
        custs = [Customer(i, run_id, cust_port, stop, deadline)
                 for i in range(ncust)]
        for i, c in enumerate(custs):
            c.start()
            if i % 20 == 19:
                time.sleep(0.05)
        for c in custs:
            c.done.wait(max(0.1, deadline + 2 - time.monotonic()))
        took = time.monotonic() - t0
        stuck = [c for c in custs if not c.done.is_set() or c.error]
        phases = collections.Counter(c.phase for c in stuck)
        # Step 3: a quiet second for stray deliveries, then stop.
        time.sleep(1.0)
    finally:
        stop.set()
        for a in ags.values():
            a.join(10)
        for c in custs:
            c.join(5)
            c.close()
        for a in ags.values():
            a.ws.close()

    crashed = [(a.name_, a.crash) for a in ags.values() if a.crash]
    assert not crashed, "agent threads failed: %r" % crashed
    closed = [(a.name_, a.closed) for a in ags.values() if a.closed]
    assert not closed, "console sockets closed by the server: %r" % closed
    problems = []
    if stuck:
        problems.append("%d of %d customers did not finish within %ds "
                        "(phases %s); first: %s" % (
                            len(stuck), ncust, chat_limit, dict(phases),
                            [(c.tag, c.error) for c in stuck[:3]]))

    # Acks: every message acknowledged, contact ids distinct.
    acked = {}  # contact id -> (customer, k)
    for c in custs:
        for k, cid in c.acks.items():
            if cid in acked:
                problems.append("contact %s acked for %s and %s" % (
                    cid, acked[cid], (c.tag, k)))
            acked[cid] = (c, k)
    nacks = sum(len(c.acks) for c in custs)

    # Stored once: the log has each <visitor>:<client id> once, under the
    # acknowledged id.
    by_src = log_by_source(env.redis)
    for c in custs:
        if not c.token:
            continue
        v = vid_of(c.token)
        for k, cid in c.acks.items():
            ids = by_src.get("%s:%s" % (v, c.cid(k)), [])
            if ids != [cid]:
                problems.append("%s message %d acked as %s, in the log as "
                                "%s" % (c.tag, k, cid, ids))

    # Each stored message reached exactly one agent: the holder.
    holder = {}  # conversation -> agent (by accept)
    for a in ags.values():
        for cv in a.accepted:
            if cv in holder:
                problems.append("%s accepted by %s and %s" % (
                    cv, holder[cv], a.name_))
            holder[cv] = a.name_
    seen_by = collections.defaultdict(list)
    conv_of = {}
    for a in ags.values():
        for cid, (cv, _text) in a.seen.items():
            seen_by[cid].append(a.name_)
            conv_of[cid] = cv
            if holder.get(cv) != a.name_:
                problems.append("%s saw %s of %s held by %s" % (
                    a.name_, cid, cv, holder.get(cv)))
    lost = [(acked[cid][0].tag, acked[cid][1], cid) for cid in acked
            if cid not in seen_by]
    if lost:
        problems.append("messages acked but seen by no agent: " +
                        sample(lost))
    multi = {cid: who for cid, who in seen_by.items() if len(who) > 1}
    if multi:
        problems.append("messages seen by several agents: " +
                        sample(multi.items()))
    unknown = [cid for cid in seen_by if cid not in acked]
    if unknown:
        problems.append("agents saw messages no customer had acked: " +
                        sample(unknown))
    # One conversation per customer, held by the agent who saw it all.
    cust_conv = {}
    for c in custs:
        convs = {conv_of.get(cid) for cid in c.acks.values()}
        if len(convs) != 1 or None in convs:
            if c.acks:
                problems.append("%s's messages in conversations %s" % (
                    c.tag, convs))
            continue
        cust_conv[c.tag] = convs.pop()
    if len(set(cust_conv.values())) != len(cust_conv):
        problems.append("customers share conversations: %d customers, %d "
                        "conversations" % (len(cust_conv),
                                           len(set(cust_conv.values()))))

    # Agents: no foreign frames, no duplicate entry frames, no errors, no
    # more than capacity held, one assigned event per conversation.
    for a in ags.values():
        if a.foreign:
            problems.append("%s got frames for others: %s" % (
                a.name_, sample(a.foreign)))
        dup = {i: n for i, n in a.entry_frames.items() if n > 1}
        if dup:
            problems.append("%s got entry frames twice: %s" % (
                a.name_, sample(dup.items())))
        if a.errors:
            problems.append("%s: errors %s" % (a.name_, sample(a.errors)))
        if a.max_held > capacity:
            problems.append("%s held %d conversations, capacity %d" % (
                a.name_, a.max_held, capacity))
        bad = {cv: n for cv, n in a.assigned.items() if n != 1}
        missing = [cv for cv in a.accepted if cv not in a.assigned]
        if bad or missing:
            problems.append("%s: assigned events repeated %s, missing %s"
                            % (a.name_, bad, missing[:5]))
        offered_twice = {cv: n for cv, n in a.offers.items() if n > 1}
        if offered_twice:
            problems.append("%s offered the same conversation again: %s"
                            % (a.name_, sample(offered_twice.items())))
        for cid, res in a.replies.items():
            if not res or res.get("channel") != "chat":
                problems.append("%s: reply to %s went %r" % (
                    a.name_, cid, res))
                break
        noreply = [cid for cid in a.seen if cid not in a.replies]
        if noreply:
            problems.append("%s: replies without a result: %s" % (
                a.name_, sample(noreply)))
    if len(holder) != ncust:
        problems.append("%d conversations accepted for %d customers" % (
            len(holder), ncust))

    # Replies: each customer got exactly its 3 answers, from its holder.
    strays, wrong = [], []
    for c in custs:
        ks = collections.Counter()
        for m in c.messages:
            r = REPLY_RE.match(m.get("text") or "")
            if not r or r.group(1) != c.tag:
                strays.append((c.tag, m.get("text")))
                continue
            ks[int(r.group(2))] += 1
            hold = holder.get(cust_conv.get(c.tag))
            if r.group(3) != hold or m.get("name") != display(hold or "") \
                    or m.get("from") != "agent":
                wrong.append((c.tag, hold, m.get("name"), m.get("text")))
        if c.error is None and ks != collections.Counter(
                range(1, MESSAGES + 1)):
            wrong.append((c.tag, "replies by number", dict(ks)))
    if strays:
        problems.append("replies at the wrong customer: " + sample(strays))
    if wrong:
        problems.append("wrong or repeated replies: " + sample(wrong))

    # Redis/API state: one "assigned" decision per conversation, to the
    # agent who accepted; the agents' rows within capacity, no offers left.
    decisions = collections.defaultdict(list)
    for _eid, f in env.redis.xrange_all("sb:log"):
        if f.get("type") == "assignment":
            fl = json.loads(f.get("fields") or "{}")
            if fl.get("action") == "assigned":
                decisions[f["conversation"]].append(fl.get("agent") or
                                                    f.get("agent"))
    for cv, who in holder.items():
        if decisions.get(cv) != [who]:
            problems.append("%s accepted by %s; log decisions %s" % (
                cv, who, decisions.get(cv)))
    extra = [cv for cv in decisions if cv not in holder]
    if extra:
        problems.append("assigned in the log, accepted by nobody: " +
                        sample(extra))
    rows = {r["name"]: r for r in
            env.client.get("/api/v1/agents").json["agents"]}
    for name, a in ags.items():
        r = rows[name]
        if r["active"] != len(a.accepted) or r["active"] > r["capacity"] \
                or r["offers"] or \
                set(r["conversations"]) != set(a.accepted):
            problems.append("agent row %s: active %d capacity %d offers "
                            "%s; accepted %d" % (name, r["active"],
                                                 r["capacity"], r["offers"],
                                                 len(a.accepted)))
    r = env.client.get("/api/v1/conversations?state=assigned&limit=500")
    assert r.status == 200, r
    api = {x["id"]: x.get("agent") for x in r.json["conversations"]}
    if api != holder:
        diff = [(cv, api.get(cv), holder.get(cv))
                for cv in set(api) | set(holder)
                if api.get(cv) != holder.get(cv)]
        problems.append("API assigned conversations differ from accepts: "
                        + sample(diff))

    loads = {a.name_: len(a.accepted) for a in ags.values()}
    summary = ("%d customers, %d acks, %d seen, %d replies, loads %s, "
               "%.1fs" % (ncust, nacks, len(seen_by),
                          sum(len(a.replies) for a in ags.values()), loads,
                          took))
    print(summary)
    assert not problems, summary + "\n" + "\n".join(problems[:20])
    assert nacks == ncust * MESSAGES, summary


def relay_counts(port):
    """{result: n} of sb_chat_relay_total in the daemon's /metrics."""
    c = Client(port)
    try:
        r = c.get("/metrics", token=None)
    finally:
        c.close()
    assert r.status == 200, r
    out = {}
    for line in r.body.decode().splitlines():
        m = re.match(r'sb_chat_relay_total\{result="(\w+)"\} (\d+)', line)
        if m:
            out[m.group(1)] = int(m.group(2))
    return out


@timeout(120)
def test_200_customers_5_agents():
    agents = ["agent%d" % i for i in range(1, 6)]
    with load_env(agents, 40, "least_busy") as env:
        chat_load(env, agents, 200, 40, env.port, env.port, 75)


@timeout(120)
def test_two_instances():
    agents = ["agent%d" % i for i in range(1, 4)]
    with load_env(agents, 20, "round_robin") as env:
        b = Second(env)
        try:
            b.daemon.start(30.0)
            # Customers on A (env.port), consoles on B.
            chat_load(env, agents, 60, 20, env.port, b.port, 60)
            # Every reply went out on B and was relayed to A's sockets.
            relay = relay_counts(b.port)
            assert relay.get("delivered") == 60 * MESSAGES and \
                not relay.get("timeout") and not relay.get("refused"), \
                "sb_chat_relay_total on B: %r" % relay
        finally:
            b.daemon.stop()
        probs = b.problems()
        assert not probs, "\n".join(probs[:10])
