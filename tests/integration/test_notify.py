"""test_notify.py - the sd_notify protocol, without systemd.

The test binds a unix datagram socket in its temp dir and starts the daemon
with NOTIFY_SOCKET pointing at it and WATCHDOG_USEC set (WATCHDOG_PID left
unset: sd_watchdog_enabled then takes the watchdog as meant for any pid).
The daemon starts before Redis, so READY=1 must wait for Redis; WATCHDOG=1
keeps coming; SIGHUP is RELOADING=1 then READY=1; SIGTERM is STOPPING=1 and
exit 0.
"""

import http.client
import os
import signal
import socket
import time

from harness import Client, Env, wait_until

WATCHDOG_USEC = 400000


class Notify:
    """The receiving end of NOTIFY_SOCKET: every datagram, timestamped."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.msgs = []  # (monotonic time, [assignments])

    def close(self):
        self.sock.close()

    def pump(self, duration):
        """Collect datagrams for duration seconds; returns the new ones."""
        new = []
        deadline = time.monotonic() + duration
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self.sock.settimeout(min(left, 0.1))
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            m = (time.monotonic(),
                 [ln for ln in data.decode(errors="replace").split("\n")
                  if ln])
            self.msgs.append(m)
            new.append(m)
        return new

    def wait_for(self, assignment, limit):
        """Pump until a datagram carries assignment; returns the datagrams
        received meanwhile (the last one holds it), or raises."""
        got = []
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            for m in self.pump(0.05):
                got.append(m)
                if assignment in m[1]:
                    return got
        raise AssertionError("no %s within %.1fs; got %r" % (
            assignment, limit, [m[1] for m in got]))


def has(msgs, assignment):
    return [m for m in msgs if assignment in m[1]]


def status(port, path):
    c = Client(port, None, timeout=2.0)
    try:
        return c.get(path).status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        c.close()


def test_notify_ready_after_redis():
    with Env(start_redis=False, start_daemon=False) as env:
        n = Notify(os.path.join(env.tmp, "notify.sock"))
        try:
            env.daemon.extra_env.update({
                "NOTIFY_SOCKET": n.path,
                "WATCHDOG_USEC": str(WATCHDOG_USEC)})
            env.daemon.extra_env.pop("WATCHDOG_PID", None)
            os.environ.pop("WATCHDOG_PID", None)
            env.daemon.start(ready_limit=0)

            # Up without Redis: /healthz 200, /readyz 503, no READY=1.
            wait_until(lambda: status(env.port, "/healthz") == 200, 30,
                       what="/healthz 200 without Redis")
            n.pump(0.05)  # what was queued while we polled /healthz
            early = n.pump(1.5)
            assert env.daemon.alive(), env.daemon.log_tail()
            assert not has(n.msgs, "READY=1"), \
                "READY=1 sent while Redis is down: %r" % [m[1] for m in
                                                          n.msgs]
            c = Client(env.port, None, timeout=5.0)
            r = c.get("/readyz")
            assert r.status == 503, r
            assert r.json.get("error") == "redis unavailable", r
            assert r.header("retry-after"), r.headers
            assert c.get("/healthz").status == 200
            c.close()
            assert not has(n.pump(0.2), "READY=1")

            # The watchdog runs before ready too (every WATCHDOG_USEC/2).
            wd = has(early, "WATCHDOG=1")
            assert len(wd) >= 3, "only %d WATCHDOG=1 in 1.5s before " \
                "ready: %r" % (len(wd), [m[1] for m in early])

            # Redis comes up: READY=1 within a few seconds, /readyz 200.
            t0 = time.monotonic()
            env.redis.start()
            got = n.wait_for("READY=1", 8.0)
            ready_at = got[-1][0]
            wait_until(lambda: status(env.port, "/readyz") == 200, 5,
                       what="/readyz 200 after Redis came up")
            assert ready_at - t0 < 8.0
            # Nothing else said READY=1 before.
            first = [m for m in n.msgs if "READY=1" in m[1]]
            assert first[0][0] == ready_at

            # WATCHDOG=1 keeps coming: >= 3 within a 1 s window.
            t1 = time.monotonic()
            later = n.pump(1.0)
            wd = has(later, "WATCHDOG=1")
            assert len(wd) >= 3, "%d WATCHDOG=1 within 1s (WATCHDOG_USEC=" \
                "%d): %r" % (len(wd), WATCHDOG_USEC, [m[1] for m in later])
            assert time.monotonic() - t1 < 2.0

            # SIGHUP: RELOADING=1, then READY=1.
            env.daemon.signal(signal.SIGHUP)
            got = n.wait_for("READY=1", 10.0)
            lines = [a for m in got for a in m[1]
                     if a in ("RELOADING=1", "READY=1", "STOPPING=1")]
            assert lines[:1] == ["RELOADING=1"] and \
                lines.index("READY=1") > 0, \
                "after SIGHUP want RELOADING=1 then READY=1, got %r" % (
                    [m[1] for m in got])
            assert "STOPPING=1" not in lines, lines
            assert status(env.port, "/readyz") == 200
            assert env.daemon.alive()

            # SIGTERM: STOPPING=1 and exit 0.
            env.daemon.signal(signal.SIGTERM)
            got = n.wait_for("STOPPING=1", 10.0)
            assert not has(got[:-1], "READY=1"), [m[1] for m in got]
            rc = env.daemon.reap(15.0)
            assert rc == 0, "exit %r after SIGTERM:\n%s" % (
                rc, env.daemon.log_tail())
            # Nothing claims readiness after STOPPING=1.
            tail = n.pump(0.2)
            assert not has(tail, "READY=1"), [m[1] for m in tail]
        finally:
            n.close()


def test_notify_absent_is_harmless():
    """Without NOTIFY_SOCKET/WATCHDOG_USEC the daemon runs as before, and a
    NOTIFY_SOCKET nobody listens on does not stop it either."""
    with Env(start_daemon=False) as env:
        env.daemon.extra_env.update({
            "NOTIFY_SOCKET": os.path.join(env.tmp, "nobody.sock"),
            "WATCHDOG_USEC": str(WATCHDOG_USEC)})
        env.daemon.start()
        assert env.client.get("/healthz").status == 200
        time.sleep(1.0)
        assert env.daemon.alive(), env.daemon.log_tail()
        assert env.client.get("/readyz").status == 200
        env.daemon.signal(signal.SIGHUP)
        time.sleep(0.5)
        assert env.daemon.alive(), env.daemon.log_tail()
        assert env.client.get("/readyz").status == 200
        env.daemon.signal(signal.SIGTERM)
        assert env.daemon.reap(15.0) == 0
