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


def cycle():
    env = Env(start_daemon=False, stop_limit=120.0, ready_limit=180.0)
    with env:
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
        # Leave one keep-alive connection open across the shutdown.
        rc = env.daemon.stop(limit=120.0)
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
