#!/usr/bin/python3
"""valgrind_cycle.py - the plain daemon under valgrind: start, a few
requests of each kind, SIGTERM; fail on any memcheck error or definite leak.

    python3 tests/integration/valgrind_cycle.py [BIN]
    (BIN defaults to build/switchboard)

Prints "valgrind: ok" or "valgrind: FAIL reason"; exit status 0 / 1.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if len(sys.argv) > 1:
    os.environ["SB_BIN"] = sys.argv[1]
else:
    os.environ.setdefault("SB_BIN", "build/switchboard")
sys.path.insert(0, HERE)

import harness  # noqa: E402
from harness import Env  # noqa: E402


KOI8 = ("From: =?koi8-r?B?6dfBzg==?= <vg-mail@example.com>\r\n"
        "To: support@example.test\r\n"
        "Subject: =?koi8-r?B?8NLJ18XU?=\r\n"
        "Message-ID: <vg-1@example.com>\r\n"
        "Content-Type: text/plain; charset=koi8-r\r\n\r\n").encode() + \
    "Привет, где мой заказ?\r\n".encode("koi8-r")


def mail_peers(tmp):
    """A Dovecot and an SMTP sink for the e-mail driver's part of the
    cycle (its SMTP threads, GMime on the worker pool, the IMAP poller),
    or None when either cannot run here."""
    try:
        import dovecot
        import smtpsink
    except ImportError:
        return None
    if dovecot.available():
        return None
    dv = dovecot.Dovecot(tmp, users={"support@example.test": "pw"})
    sink = smtpsink.SmtpSink(os.path.join(tmp, "sink")).start()
    return dv, sink


def cycle():
    env = Env(start_daemon=False, stop_limit=120.0, ready_limit=180.0)
    with env:
        peers = mail_peers(env.tmp)
        if peers:
            dv, sink = peers
            dv.deliver(KOI8)
            harness.merge_config(env.conf, {
                "channels": {"email": "email"},
                "email": {"from": "support@example.test",
                          "unsubscribe_secret": "valgrind-unsub-secret",
                          "smtp_host": "127.0.0.1",
                          "smtp_port": str(sink.port), "smtp_tls": "none"},
                "mailbox support": {"url": dv.url(),
                                    "username": "support@example.test",
                                    "password": "pw", "interval": "500ms",
                                    "starttls": "no"}})
            env.write_config()
        vlog = os.path.join(env.tmp, "valgrind.log")
        env.daemon.wrapper = [
            "valgrind", "--quiet", "--leak-check=full",
            "--errors-for-leak-kinds=definite", "--error-exitcode=99",
            "--show-leak-kinds=definite", "--num-callers=30",
            "--log-file=" + vlog]
        t0 = time.monotonic()
        env.daemon.start(ready_limit=180.0)
        print("valgrind: ready after %.1fs" % (time.monotonic() - t0))
        c = env.new_client(timeout=60.0)
        r = c.get("/healthz")
        assert r.status == 200, r
        r = c.get("/metrics")
        assert r.status == 200, r
        r = c.post("/api/v1/contacts", {
            "channel": "email", "email": "vg@example.com", "name": "Val",
            "subject": "s", "text": "t", "source_id": "vg-1",
            "conversation": "new", "fields": {"a": [1, 2, {"b": None}]}})
        assert r.status == 201, r
        cu = r.json["customer"]
        r = c.post("/api/v1/contacts", {
            "channel": "email", "email": "vg@example.com",
            "source_id": "vg-1"})
        assert r.status == 200 and r.json["duplicate"], r
        r = c.post("/api/v1/contacts", {"channel": "phone",
                                        "phone": "8 (916) 000-11-22",
                                        "email": "vg@example.com"})
        assert r.status == 201, r
        r = c.get("/api/v1/customers?phone=%2B79160001122")
        assert r.status == 200, r
        r = c.put("/api/v1/customers/" + cu, {"name": "V", "tags": ["x"]})
        assert r.status == 200, r
        r = c.get("/api/v1/customers/%s/timeline?limit=2" % cu)
        assert r.status == 200, r
        for bad in (b"{", b"[1]", b'{"a":1,"a":2}', b"\xff"):
            assert c.post("/api/v1/contacts", bad).status == 400
        assert c.get("/nope").status == 404
        assert c.request("DELETE", "/api/v1/contacts").status == 405
        assert c.get("/api/v1/me", token=None).status == 401
        r = c.post("/api/v1/login", {"username": "alice",
                                     "password": env.password("alice")},
                   token=None)
        assert r.status == 200, r
        tok = r.json["token"]
        assert c.get("/api/v1/me", token=tok).status == 200
        assert c.post("/api/v1/logout", token=tok).status == 204
        assert c.post("/api/v1/login", {"username": "alice",
                                        "password": "wrong"},
                      token=None).status == 401
        if peers:
            boss = env.new_client(env.key("boss"), timeout=60.0)
            harness.wait_until(
                lambda: any(e.get("channel") == "email" and
                            e.get("source_id") == "msgid:vg-1@example.com"
                            for e in boss.get("/api/v1/log").json[
                                "entries"]), 120, 0.5, "the mail logged")
            r = boss.post("/api/v1/notifications", {
                "event": "order.paid", "email": "vg-mail@example.com",
                "channels": ["email"], "locale": "ru",
                "data": {"order": "A-1", "amount": "10.00",
                         "currency": "RUB"}})
            assert r.status == 202, r
            harness.wait_until(lambda: len(sink.messages()) >= 1, 120, 0.5,
                               "the notification at the sink")
            print("valgrind: e-mail in and out ok")
        else:
            print("valgrind: no Dovecot or SMTP sink here: e-mail part "
                  "skipped")
        # Leave one keep-alive connection open across the shutdown.
        rc = env.daemon.stop(limit=120.0)
        if peers:
            sink.stop()
            dv.stop()
        text = ""
        try:
            with open(vlog) as f:
                text = f.read()
        except OSError:
            pass
        if rc != 0:
            sys.stderr.write(text[-20000:])
            raise AssertionError("valgrind exit %s%s" % (
                rc, " (errors or definite leaks)" if rc == 99 else ""))
        env.daemon.rcs.clear()


def main():
    if not os.path.exists(harness.SB_BIN):
        print("valgrind: FAIL %s missing" % harness.SB_BIN)
        return 1
    try:
        cycle()
    except AssertionError as e:
        print("valgrind: FAIL %s" % e)
        return 1
    print("valgrind: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
