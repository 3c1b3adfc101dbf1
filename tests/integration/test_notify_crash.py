"""test_notify_crash.py - notifications survive crashes, restarts, peers.

Every test feeds the stream sb:notify directly (pipelined XADDs of valid
order.created entries for the webhook channel) and points the webhook
driver at tests/integration/httpsink.py, which records every request with
its X-Switchboard-Id (the attempt id "nt_N.k") and checks the signature.
Afterwards the Redis state is read back: every stream entry we added must
have exactly one notification hash (src "stream:<entry id>") in a final
state, nothing may be left pending or scheduled, and the sink's requests
are counted per notification id, so a notification sent twice shows up.

  - kill -9 of the daemon during 20,000 sends, restart with the same
    consumer name: all sent, duplicates bounded by [notify] max_inflight;
  - two instances on one Redis: all sent once, both did work;
  - Redis killed and restarted (appendfsync always) mid-run;
  - a dead consumer's entries are claimed by another instance, and an
    entry delivered too often (a poison entry) ends in the rejects stream;
  - SIGTERM drains what is in hand: exit 0, every send recorded, nothing
    sent twice after the restart.
"""

import collections
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time

from harness import Env, RedisError, RespConn, stop_process, timeout

HERE = os.path.dirname(os.path.abspath(__file__))
SINK = os.path.join(HERE, "httpsink.py")
SECRET = "itest-webhook-secret-0123456789"
STREAM = "sb:notify"
GROUP = "switchboard"
MAX_INFLIGHT = 200
REDIS_ERRORS = [r"(?i)redis"]
STALL = 30.0  # seconds without progress that fail a wait early


# --------------------------------------------------------------------------
# The webhook receiver.

class Sink:
    """httpsink.py on a free loopback port, stopped by PID on exit."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, SINK, "--port", "0", "--verify-secret", SECRET,
             "--max-records", "200000"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        line = self.proc.stdout.readline()
        if not line.strip().isdigit():
            stop_process(self.proc, signal.SIGKILL, 5.0)
            raise AssertionError("httpsink did not start: %r" % line)
        self.port = int(line)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 5.0)
            self.proc.stdout.close()
            self.proc = None

    @property
    def url(self):
        return "http://127.0.0.1:%d/hook" % self.port

    def call(self, method, path, body=None, limit=60.0):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=limit)
        try:
            data = json.dumps(body).encode() if body is not None else None
            c.request(method, path, body=data,
                      headers={"Content-Type": "application/json"})
            r = c.getresponse()
            raw = r.read()
            assert r.status == 200, "sink %s %s: %d %r" % (
                method, path, r.status, raw[:200])
            return json.loads(raw)
        finally:
            c.close()

    def control(self, **kw):
        return self.call("POST", "/_control", kw)

    def counts(self):
        return self.call("GET", "/_count")

    def count(self):
        return self.counts()["count"]

    def requests(self):
        return self.call("GET", "/_requests")


def sends_by_ntf(reqs):
    """{notification id: requests} over the sink's records; the header's
    attempt id and the body's notification id must agree, and every
    signature must verify."""
    by = collections.Counter()
    for r in reqs:
        if r["path"] != "/hook":
            continue
        aid = r["headers"].get("x-switchboard-id", "")
        ntf, dot, k = aid.rpartition(".")
        assert dot and ntf.startswith("nt_") and k.isdigit(), \
            "bad X-Switchboard-Id %r" % aid
        assert r["signature_ok"] is True, "bad signature on %s" % aid
        body = json.loads(r["body"])
        assert body.get("id") == aid, (aid, body.get("id"))
        assert body.get("notification", {}).get("notification") == ntf, \
            "attempt %s carries notification %r" % (
                aid, body.get("notification"))
        by[ntf] += 1
    return by


def dup_ids(by):
    return sorted((n for n, c in by.items() if c > 1),
                  key=lambda s: int(s[3:]))


# --------------------------------------------------------------------------
# Config.

def conf(sink, consumer, **kw):
    """Overrides for an instance sending notifications to the sink."""
    notify = {"consumer": consumer, "claim_idle": kw.pop("claim_idle", "2s"),
              "claim_interval": kw.pop("claim_interval", "500ms"),
              "max_inflight": kw.pop("max_inflight", str(MAX_INFLIGHT)),
              "batch": kw.pop("batch", "100"),
              "max_deliveries": kw.pop("max_deliveries", "5")}
    ov = {"channels": {"webhook": "webhook"},
          "webhook": {"url": sink.url, "secret": SECRET,
                      "timeout": kw.pop("webhook_timeout", "10s")},
          "notify": notify,
          "throttle webhook": {
              "concurrency": kw.pop("concurrency", str(MAX_INFLIGHT))}}
    assert not kw, kw
    return ov


# --------------------------------------------------------------------------
# Redis helpers.

def pipeline(redis, cmds, chunk=2000):
    """Send cmds in pipelined chunks on a fresh connection; the replies in
    order (an error reply fails the test)."""
    conn = RespConn(redis.sock, 60.0)
    out = []
    try:
        for i in range(0, len(cmds), chunk):
            part = cmds[i:i + chunk]
            conn.sock.sendall(b"".join(RespConn._enc(c) for c in part))
            for c in part:
                r = conn._read()
                if isinstance(r, RedisError):
                    raise AssertionError("%s: %s" % (c[0], r))
                out.append(r)
    finally:
        conn.close()
    return out


def xadd_notifications(redis, n, tag, customers=200):
    """XADD n valid order.created entries for the webhook channel; their
    stream ids in order."""
    cmds = []
    for i in range(n):
        data = {"order": "%s-%d" % (tag, i), "amount": "%d.50" % (i % 90),
                "currency": "EUR"}
        cmds.append(["XADD", STREAM, "*", "event", "order.created",
                     "email", "%s%d@crash.example.com" % (tag, i % customers),
                     "data", json.dumps(data), "channels", "webhook"])
    return [r.decode() for r in pipeline(redis, cmds)]


def pairs(flat):
    return {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)}


def group_info(redis):
    for g in redis.cmd("XINFO", "GROUPS", STREAM):
        d = pairs(g)
        if d["name"] == GROUP.encode():
            return d
    return None


def settled(redis):
    """Every entry read, acknowledged, nothing scheduled."""
    try:
        last = pairs(redis.cmd("XINFO", "STREAM", STREAM))[
            "last-generated-id"]
        g = group_info(redis)
        due = redis.cmd("ZCARD", "sb:ntf:due")
    except (OSError, ConnectionError, RedisError):
        return False
    return g is not None and g["pending"] == 0 and \
        g["last-delivered-id"] == last and due == 0


def wait_moving(pred, snapshot, limit, what, stall=STALL, tail=None):
    """Poll pred() until true. Fails after limit seconds, or earlier when
    snapshot() (a figure of progress) has not changed for stall seconds:
    a stuck dispatcher fails fast instead of using up the whole limit."""
    t0 = time.monotonic()
    last, since = None, t0
    while not pred():
        now = time.monotonic()
        snap = snapshot()
        if snap != last:
            last, since = snap, now
        if now - t0 > limit or now - since > stall:
            raise AssertionError("%s after %.0fs waiting for %s (entries "
                                 "read, pending, sink requests: %r)%s" % (
                "timed out" if now - t0 > limit else
                "no progress for %.0fs" % stall, now - t0, what, snap,
                "\n" + tail() if tail else ""))
        time.sleep(0.1)


def progress(redis, sink=None):
    """(entries read by the group, pending, sink requests) or None."""
    try:
        g = group_info(redis)
    except (OSError, ConnectionError, RedisError):
        g = None
    return (g and g.get("entries-read"), g and g["pending"],
            sink.count() if sink else None)


def wait_settled(env, sink, limit):
    wait_moving(lambda: settled(env.redis), lambda: progress(env.redis, sink),
                limit, "every notification final",
                tail=lambda: env.daemon.log_tail(15))


def wait_sink(env, sink, count, limit):
    wait_moving(lambda: sink.count() >= count,
                lambda: progress(env.redis, sink), limit,
                "%d requests at the sink" % count,
                tail=lambda: env.daemon.log_tail(15))


def notifications(redis):
    """{ntf id: {"state", "src", "reason", "attempts"}} for every hash
    sb:ntf:nt_N."""
    keys, cursor = [], b"0"
    for _ in range(100000):
        cursor, batch = redis.cmd("SCAN", cursor, "MATCH", "sb:ntf:nt_*",
                                  "COUNT", 5000)
        keys.extend(k.decode() for k in batch if k.count(b":") == 2)
        if cursor == b"0":
            break
    keys = sorted(set(keys))
    rows = pipeline(redis, [["HMGET", k, "state", "src", "reason",
                             "attempts"] for k in keys])
    out = {}
    for k, row in zip(keys, rows):
        out[k[len("sb:ntf:"):]] = {
            "state": (row[0] or b"").decode(), "src": (row[1] or b"").decode(),
            "reason": (row[2] or b"").decode(errors="replace"),
            "attempts": (row[3] or b"").decode()}
    return out


def pending_of(redis, consumer):
    """Entry ids pending for one consumer."""
    rows = redis.cmd("XPENDING", STREAM, GROUP, "-", "+", 100000, consumer)
    return [r[0].decode() for r in rows or []]


def check_delivered(redis, ids, reqs, rejected=()):
    """Each stream entry in ids became exactly one notification, now sent
    (or dead with a reason), and each sent one reached the sink; the
    rejects stream holds exactly the entries in rejected. Returns (sink
    requests per notification, {state: count})."""
    rejects = redis.xrange_all("sb:notify:rejects")
    assert sorted(f.get("source") for _e, f in rejects) == \
        sorted(rejected), "rejects: %r" % rejects[:5]
    ntfs = notifications(redis)
    by_src = collections.defaultdict(list)
    for nid, h in ntfs.items():
        by_src[h["src"]].append(nid)
    missing = [e for e in ids if not by_src.get("stream:" + e)]
    assert not missing, "%d of %d entries have no notification (lost), " \
        "e.g. %s" % (len(missing), len(ids), missing[:5])
    made = [e for e in rejected if by_src.get("stream:" + e)]
    assert not made, "rejected entries became notifications: %r" % made
    twice = {e: by_src["stream:" + e] for e in ids
             if len(by_src["stream:" + e]) > 1}
    assert not twice, "%d entries accepted more than once, e.g. %r" % (
        len(twice), list(twice.items())[:3])
    mine = {by_src["stream:" + e][0] for e in ids}
    extra = sorted(set(ntfs) - mine)
    assert not extra, "%d notifications nobody asked for, e.g. %r" % (
        len(extra), [(x, ntfs[x]) for x in extra[:3]])
    states = collections.Counter(ntfs[n]["state"] for n in mine)
    bad = [(n, ntfs[n]["state"], ntfs[n]["reason"]) for n in mine
           if ntfs[n]["state"] != "sent" and
           not (ntfs[n]["state"] == "dead" and ntfs[n]["reason"])]
    assert not bad, "%d notifications not final: %r (states %r)" % (
        len(bad), bad[:5], dict(states))
    by = sends_by_ntf(reqs)
    unseen = [n for n in mine
              if ntfs[n]["state"] == "sent" and n not in by]
    assert not unseen, "%d notifications marked sent never reached the " \
        "sink, e.g. %s" % (len(unseen), unseen[:5])
    strangers = set(by) - mine
    assert not strangers, "the sink got notifications we did not add: %s" \
        % sorted(strangers)[:5]
    return by, states


def metric_sum(text, name, **labels):
    """Sum of a metric's samples whose labels include the given ones."""
    tot = 0.0
    for line in text.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)',
                     line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"',
                               m.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            tot += float(m.group(3))
    return tot


def metrics(env):
    r = env.client.get("/metrics", token=None)
    assert r.status == 200, r
    return r.body.decode()


# --------------------------------------------------------------------------
# Tests.

@timeout(280)
def test_kill9_during_20000():
    n = 20000
    with Sink() as sink, Env(overrides=conf(sink, "crash-1")) as env:
        # A receiver that takes a moment: the kill finds requests open.
        sink.control(mode="slow", delay_ms=20)
        t0 = time.monotonic()
        ids = xadd_notifications(env.redis, n, "k")
        wait_sink(env, sink, n * 3 // 10, 90)
        env.daemon.kill9()
        at_kill = sink.count()
        assert at_kill < n, "all %d sent before the kill" % n
        time.sleep(0.3)
        env.daemon.start()
        wait_settled(env, sink, 150)
        took = time.monotonic() - t0
        reqs = sink.requests()
        by, states = check_delivered(env.redis, ids, reqs)
        dups = dup_ids(by)
        bad_sig = sink.counts()["bad_signatures"]
        print("kill -9 at %d of %d sent; %d requests in all; duplicates "
              "(notifications sent twice or more): %d (bound %d); states "
              "%r; %.1fs" % (at_kill, n, len(reqs), len(dups), MAX_INFLIGHT,
                             dict(states), took))
        assert bad_sig == 0, "%d requests with a bad signature" % bad_sig
        assert len(dups) <= MAX_INFLIGHT, \
            "%d notifications sent more than once (max_inflight %d), " \
            "e.g. %s" % (len(dups), MAX_INFLIGHT, dups[:10])
        # The restarted instance is the same consumer: no stray consumer
        # left holding entries.
        cons = [pairs(c) for c in env.redis.cmd("XINFO", "CONSUMERS",
                                                STREAM, GROUP)]
        assert [c["name"] for c in cons] == [b"crash-1"], cons


@timeout(150)
def test_two_instances_share_the_stream():
    n = 5000
    with Sink() as sink, Env(overrides=conf(sink, "pair-a")) as ea:
        ov = conf(sink, "pair-b")
        ov["redis"] = {"socket": ea.redis.sock}
        with Env(overrides=ov, start_redis=False) as eb:
            ids = xadd_notifications(ea.redis, n, "p")
            wait_settled(ea, sink, 100)
            reqs = sink.requests()
            by, states = check_delivered(ea.redis, ids, reqs)
            dups = dup_ids(by)
            assert not dups, "%d notifications sent twice by two " \
                "instances, e.g. %s" % (len(dups), dups[:10])
            assert len(reqs) == n, len(reqs)
            ma, mb = metrics(ea), metrics(eb)
            read = [metric_sum(m, "sb_notify_entries_read_total")
                    for m in (ma, mb)]
            ok = [metric_sum(m, "sb_notify_sends_total", channel="webhook",
                             result="ok") for m in (ma, mb)]
            cons = {c["name"].decode(): c for c in (
                pairs(x) for x in ea.redis.cmd("XINFO", "CONSUMERS", STREAM,
                                               GROUP))}
            print("entries read a=%d b=%d; webhook sends ok a=%d b=%d; "
                  "consumers %s" % (read[0], read[1], ok[0], ok[1],
                                    sorted(cons)))
            assert sorted(cons) == ["pair-a", "pair-b"], cons
            assert all(c["pending"] == 0 for c in cons.values()), cons
            assert read[0] > 0 and read[1] > 0, \
                "one instance did all the work: read %r" % read
            assert ok[0] > 0 and ok[1] > 0, ok
            assert ok[0] + ok[1] == n, \
                "sends ok a+b = %d for %d notifications" % (sum(ok), n)


@timeout(200)
def test_redis_restart_mid_run():
    n = 5000
    with Sink() as sink, Env(overrides=conf(sink, "rr-1"),
                             expect_errors=REDIS_ERRORS,
                             fsync="always") as env:
        ids = xadd_notifications(env.redis, n, "r")
        wait_sink(env, sink, n // 3, 60)
        env.redis.kill9()
        at_kill = sink.count()
        assert at_kill < n, "all %d sent before Redis went" % n
        time.sleep(1.0)
        during = sink.count()
        env.redis.start()
        wait_settled(env, sink, 120)
        reqs = sink.requests()
        by, states = check_delivered(env.redis, ids, reqs)
        dups = dup_ids(by)
        print("redis killed at %d of %d sent (%d while down); %d requests; "
              "duplicates: %d; states %r" % (
                  at_kill, n, during - at_kill, len(reqs), len(dups),
                  dict(states)))
        assert len(dups) <= MAX_INFLIGHT, \
            "%d notifications sent more than once, e.g. %s" % (
                len(dups), dups[:10])
        assert env.daemon.alive(), env.daemon.log_tail()


@timeout(150)
def test_dead_consumer_entries_reclaimed():
    n = 50
    with Sink() as sink, Env(overrides=conf(
            sink, "dead-a", claim_idle="1s", claim_interval="250ms",
            max_deliveries="3", webhook_timeout="60s")) as env:
        sink.control(mode="slow", delay_ms=30000)
        ids = xadd_notifications(env.redis, n, "d", customers=10)
        wait_sink(env, sink, n, 60)
        assert len(pending_of(env.redis, "dead-a")) == n
        env.daemon.kill9()
        sink.control(mode="ok")

        # A poison entry: read by a consumer that died every time it
        # tried (delivery count 9 > max_deliveries 3).
        poison = env.redis.cmd(
            "XADD", STREAM, "*", "event", "order.created",
            "email", "poison@crash.example.com",
            "data", json.dumps({"order": "P-1", "amount": "1.00",
                                "currency": "EUR"}),
            "channels", "webhook").decode()
        got = env.redis.cmd("XREADGROUP", "GROUP", GROUP, "ghost",
                            "COUNT", 10, "STREAMS", STREAM, ">")
        assert [e[0].decode() for e in got[0][1]] == [poison], got
        env.redis.cmd("XCLAIM", STREAM, GROUP, "ghost", 0, poison,
                      "IDLE", 60000, "RETRYCOUNT", 9)

        env.conf["notify"]["consumer"] = "dead-b"
        env.write_config()
        env.daemon.start()
        wait_settled(env, sink, 60)
        reqs = sink.requests()
        by, states = check_delivered(env.redis, ids, reqs,
                                     rejected=[poison])
        later = sends_by_ntf([r for r in reqs if r["seq"] > n])
        assert sorted(later) == sorted(by) and \
            all(c == 1 for c in later.values()), \
            "B should send each of the %d once: %r" % (n, later)
        assert pending_of(env.redis, "dead-a") == []
        assert pending_of(env.redis, "ghost") == []
        claimed = metric_sum(metrics(env), "sb_notify_claimed_total")
        assert claimed >= n + 1, "claimed %d" % claimed
        rej = [f for _e, f in env.redis.xrange_all("sb:notify:rejects")]
        assert len(rej) == 1 and rej[0].get("source") == poison and \
            "delivered" in rej[0].get("reason", ""), rej
        print("B re-sent %d, claimed %d; poison entry rejected: %r" % (
            len(later), claimed, rej[0]["reason"]))


@timeout(120)
def test_sigterm_drains_inflight():
    n = 400
    with Sink() as sink, Env(overrides=conf(
            sink, "drain-1", max_inflight="100", batch="50",
            concurrency="20")) as env:
        sink.control(mode="slow", delay_ms=300)
        ids = xadd_notifications(env.redis, n, "s")
        wait_sink(env, sink, 60, 60)
        before = sink.count()
        t0 = time.monotonic()
        env.daemon.signal(signal.SIGTERM)
        rc = env.daemon.reap(10.0)
        took = time.monotonic() - t0
        assert rc is not None, "daemon still running 10s after SIGTERM"
        assert rc == 0, "exit code %s after SIGTERM" % rc
        assert "drain deadline passed" not in env.daemon.log_text()
        at_stop = sink.count()
        assert at_stop < n, "all %d sent before the drain" % n
        assert at_stop > before, "nothing was in hand at SIGTERM"
        reqs = sink.requests()
        by = sends_by_ntf(reqs)
        ntfs = notifications(env.redis)
        unrecorded = [x for x in by if ntfs.get(x, {}).get("state") != "sent"]
        assert not unrecorded, "%d sends the sink answered are not " \
            "recorded as sent, e.g. %r" % (
                len(unrecorded), [(x, ntfs.get(x)) for x in unrecorded[:5]])
        # Left pending for the stopped consumer: only entries it never
        # sent (a read answered while it stopped).
        src = {h["src"]: x for x, h in ntfs.items()}
        left = pending_of(env.redis, "drain-1")
        sent_left = [e for e in left if src.get("stream:" + e) in by]
        assert not sent_left, "entries sent yet left pending: %r" % (
            sent_left[:5])
        print("SIGTERM at %d sends, %d after the drain: exit 0 in %.2fs; "
              "%d entries left pending" % (before, at_stop, took, len(left)))

        # The rest goes out after a restart, and nothing goes out twice.
        sink.control(mode="ok")
        env.daemon.start()
        wait_settled(env, sink, 60)
        reqs = sink.requests()
        by, states = check_delivered(env.redis, ids, reqs)
        dups = dup_ids(by)
        assert not dups, "sent twice across a clean stop: %s" % dups[:10]
        assert len(reqs) == n, len(reqs)
