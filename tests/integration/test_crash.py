"""test_crash.py - nothing acknowledged is lost: daemon kill -9, Redis away.

A load of POST /api/v1/contacts (unique source_id each, several keep-alive
threads; a failed request is retried with the same source_id, as a real
client would) runs while the daemon or Redis is killed. Afterwards every
contact that got a 2xx must be in sb:log exactly once.
"""

import signal
import time

from harness import Client, Env, Load, timeout, wait_until

REDIS_ERRORS = [r"(?i)redis"]


@timeout(300)
def test_daemon_kill9_under_load():
    with Env() as env:
        load = Load(env, total=10000, nthreads=4, prefix="k9",
                    time_limit=200).start()
        wait_until(lambda: load.acked_count() >= 3000 or
                   not any(t.is_alive() for t in load.threads), 120,
                   what="3000 acknowledged contacts")
        assert load.acked_count() >= 3000, "load stalled at %d (%r)" % (
            load.acked_count(), load.statuses)
        at_kill = load.acked_count()
        env.daemon.kill9()
        time.sleep(0.3)
        env.daemon.start()
        assert load.join(220), "load threads did not finish"
        assert not load.unexpected, load.unexpected[:5]
        assert len(load.acked) == 10000, \
            "only %d of 10000 acknowledged (statuses %r, errors %d)" % (
                len(load.acked), load.statuses, load.errors)
        by = load.verify_in_log(env.redis)
        assert env.redis.cmd("XLEN", "sb:log") == 10000, \
            env.redis.cmd("XLEN", "sb:log")
        assert len(by) == 10000
        # Retries after the crash were answered as duplicates when the
        # first attempt had been written.
        dups = sum(1 for st, _ in load.acked.values() if st == 200)
        print("acked at kill %d, connection errors %d, duplicates %d, "
              "statuses %r" % (at_kill, load.errors, dups, load.statuses))
        assert load.errors > 0, "the kill did not interrupt the load?"


@timeout(240)
def test_redis_restart():
    with Env(expect_errors=REDIS_ERRORS) as env:
        load = Load(env, total=100000, nthreads=2, prefix="rr",
                    retry_sleep=0.1, time_limit=150).start()
        wait_until(lambda: load.acked_count() >= 300, 60,
                   what="300 acknowledged contacts")
        probe = Client(env.port, env.apikey, timeout=10.0)
        env.redis.kill9()
        t_kill = time.monotonic()

        def not_ready():
            r = probe.get("/readyz")
            return r if r.status == 503 else None
        r = wait_until(not_ready, 10, what="/readyz 503 after redis died")
        assert r.header("retry-after"), r
        assert r.json.get("error") == "redis unavailable", r
        assert probe.get("/healthz").status == 200
        acked_down = load.acked_count()
        # While Redis is away: 503 + Retry-After for API work.
        for path, body in (("/api/v1/contacts",
                            {"channel": "api", "email": "down@example.com",
                             "source_id": "while-down"}),
                           ("/api/v1/customers?email=down%40example.com",
                            None)):
            r = probe.request("POST" if body else "GET", path, body)
            assert r.status == 503, (path, r)
            ra = r.header("retry-after")
            assert ra and ra.isdigit(), (path, r.headers)
            assert "error" in r.json, r
        time.sleep(1.0)
        assert load.acked_count() == acked_down, \
            "contacts acknowledged while Redis was down: %d -> %d" % (
                acked_down, load.acked_count())
        print("redis down for %.1fs; 503s so far: %d" % (
            time.monotonic() - t_kill, load.statuses.get(503, 0)))

        env.redis.start()
        t_up = time.monotonic()
        wait_until(lambda: probe.get("/readyz").status == 200, 10,
                   what="/readyz 200 after redis came back")
        back = time.monotonic() - t_up
        wait_until(lambda: load.acked_count() >= acked_down + 300, 60,
                   what="load resumes")
        load.stop()
        probe.close()
        assert not load.unexpected, load.unexpected[:5]
        assert load.retry_after_missing == 0, \
            "%d 503s without Retry-After" % load.retry_after_missing
        assert load.statuses.get(503, 0) > 0, load.statuses
        load.verify_in_log(env.redis)
        assert env.redis.cmd("HGET", "sb:identity", "email:down@example.com") \
            is None
        print("ready again after %.2fs; acked %d; statuses %r" % (
            back, len(load.acked), load.statuses))


@timeout(180)
def test_sigterm_under_load():
    with Env() as env:
        drain = 5.0  # [core] drain_timeout in the harness config
        load = Load(env, total=100000, nthreads=4, prefix="st",
                    retry_sleep=0.05, time_limit=60).start()
        wait_until(lambda: load.acked_count() >= 500, 60,
                   what="500 acknowledged contacts")
        t0 = time.monotonic()
        env.daemon.signal(signal.SIGTERM)
        rc = env.daemon.reap(drain + 2.0)
        took = time.monotonic() - t0
        load.stop()
        assert rc is not None, "daemon still running %.1fs after SIGTERM" \
            % took
        assert rc == 0, "exit code %s after SIGTERM" % rc
        assert not load.unexpected, load.unexpected[:5]
        load.verify_in_log(env.redis)
        print("exited in %.2fs; acked %d" % (took, len(load.acked)))
