"""test_signals.py - SIGHUP reloads (broken config kept out, reloadable
values applied); SIGTERM when idle exits 0."""

import os
import re
import signal
import time

from harness import Env, render_config, wait_until

C = "/api/v1/contacts"


def body_of(size, sid):
    return {"channel": "api", "email": "hup@example.com",
            "text": "x" * size, "source_id": sid, "conversation": "none"}


def log_size(env):
    return os.path.getsize(env.daemon.logs[-1])


def log_since(env, off):
    with open(env.daemon.logs[-1], "rb") as f:
        f.seek(off)
        return f.read().decode("utf-8", errors="replace")


def levels(text):
    return [int(m.group(1)) for m in re.finditer(r"^<(\d)>", text, re.M)]


def test_sighup_broken_config():
    with Env() as env:
        env.expect_errors(re.escape(env.conf_path),
                          r"(?i)reload|config")
        n = 0
        good = dict(env.conf)
        # Broken: an unknown key, and a max_body change that must not apply.
        broken = render_config(dict(good, http=dict(good["http"],
                                                    max_body="1k")))
        broken = broken.replace("[core]", "[core]\nno_such_key = 1", 1)
        env.write_config(text=broken)
        off = log_size(env)
        env.daemon.signal(signal.SIGHUP)
        err = wait_until(lambda: [ln for ln in log_since(env, off).splitlines()
                                  if re.match(r"<[0-3]>", ln)], 10,
                         what="an error line for the broken config")
        assert any(env.conf_path in ln for ln in err), \
            "error line does not name the file: %r" % err
        assert env.daemon.alive()
        assert env.client.get("/healthz").status == 200
        for _ in range(3):
            n += 1
            r = env.client.post(C, body_of(4000, "hup-%d" % n))
            assert r.status == 201, "old config not kept: %r" % r
        # A garbage file (not even INI) is refused the same way.
        env.write_config(text="\x00\x01 this is not a config [[[\n")
        off = log_size(env)
        env.daemon.signal(signal.SIGHUP)
        wait_until(lambda: any(re.match(r"<[0-3]>", ln) for ln in
                               log_since(env, off).splitlines()), 10,
                   what="an error line for the garbage config")
        # A missing file too.
        os.unlink(env.conf_path)
        off = log_size(env)
        env.daemon.signal(signal.SIGHUP)
        wait_until(lambda: any(re.match(r"<[0-3]>", ln) for ln in
                               log_since(env, off).splitlines()), 10,
                   what="an error line for the missing config")
        n += 1
        r = env.client.post(C, body_of(4000, "hup-%d" % n))
        assert r.status == 201, r
        assert env.redis.cmd("XLEN", "sb:log") == n
        env.write_config(good)


def test_sighup_reload_applies():
    with Env() as env:
        seq = [0]

        def post(size):
            seq[0] += 1
            return env.client.post(C, body_of(size, "rl-%d" % seq[0])).status

        def reload(conf, check):
            env.conf = conf
            env.write_config()
            off = log_size(env)
            env.daemon.signal(signal.SIGHUP)
            wait_until(check, 10, step=0.1, what="reload applied")
            return off

        assert post(4000) == 201
        # 1: max_body shrinks (log level unchanged: info).
        c1 = dict(env.conf, http=dict(env.conf["http"], max_body="2k"))
        off = reload(c1, lambda: post(4000) == 413)
        assert post(1000) == 201
        time.sleep(0.3)
        seen = levels(log_since(env, off))
        assert any(lv >= 5 for lv in seen), \
            "a reload at log_level=info logged nothing at notice/info"
        # 2: log_level = err, and max_body back up.
        c2 = dict(c1, core=dict(c1["core"], log_level="err"),
                  http=dict(c1["http"], max_body="64k"))
        off = reload(c2, lambda: post(4000) == 201)
        # 3: another reload and some requests, all at level err: quiet.
        c3 = dict(c2, http=dict(c2["http"], max_body="3k"))
        reload(c3, lambda: post(4000) == 413)
        for i in range(5):
            assert post(100) == 201
            assert env.client.get("/api/v1/nope").status == 404
        time.sleep(0.3)
        noisy = [lv for lv in levels(log_since(env, off)) if lv > 3]
        assert not noisy, "log_level=err still logs levels %r:\n%s" % (
            noisy, log_since(env, off)[-2000:])
        # 4: back to debug: reloads are visible again.
        c4 = dict(c3, core=dict(c3["core"], log_level="debug"),
                  http=dict(c3["http"], max_body="1M"))
        off = reload(c4, lambda: post(4000) == 201)
        for i in range(3):
            assert post(100) == 201
        time.sleep(0.3)
        assert any(lv >= 5 for lv in levels(log_since(env, off))), \
            "nothing logged after switching log_level to debug"
        # default_country is reloadable too: a national number now means DE.
        c5 = dict(c4, core=dict(c4["core"], default_country="DE"))

        def de_applied():
            env.client.post(C, {"channel": "phone", "phone": "030 1234567",
                                "source_id": "de-%f" % time.time()})
            r = env.client.get("/api/v1/customers?phone=%2B49301234567")
            return r.status == 200
        reload(c5, de_applied)


def test_sigterm_idle():
    with Env() as env:
        assert env.client.get("/healthz").status == 200
        env.client.close()
        t0 = time.monotonic()
        env.daemon.signal(signal.SIGTERM)
        rc = env.daemon.reap(7.0)
        assert rc == 0, "exit %r after %.1fs" % (rc, time.monotonic() - t0)
        # An idle keep-alive client must not hold up the exit either.
        env.daemon.start()
        c = env.new_client()
        assert c.get("/healthz").status == 200  # connection stays open
        t0 = time.monotonic()
        env.daemon.signal(signal.SIGINT)
        rc = env.daemon.reap(7.0)
        assert rc == 0, "exit %r after %.1fs (SIGINT, idle keep-alive)" % (
            rc, time.monotonic() - t0)
