"""test_metrics.py - /metrics is valid Prometheus text and counts requests."""

import re
import shutil
import subprocess

from harness import Env

SAMPLE_RE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)'
                       r'(\s+-?\d+)?$')
LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?')


def parse(text):
    """[(name, {label: value}, float)]"""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE_RE.match(line)
        assert m, "bad metrics line: %r" % line
        labels = {}
        if m.group(3):
            pos = 0
            s = m.group(3)
            while pos < len(s):
                lm = LABEL_RE.match(s, pos)
                assert lm and lm.end() > pos, "bad labels: %r" % line
                labels[lm.group(1)] = lm.group(2)
                pos = lm.end()
        out.append((m.group(1), labels, float(m.group(4))))
    return out


def value(samples, name, **want):
    tot = 0.0
    found = False
    for n, labels, v in samples:
        if n != name:
            continue
        if all(k in labels and (w(labels[k]) if callable(w)
                                else labels[k] == w)
               for k, w in want.items()):
            tot += v
            found = True
    return tot if found else None


def scrape(c):
    r = c.get("/metrics", token=None)
    assert r.status == 200, r
    ct = r.header("content-type") or ""
    assert ct.startswith("text/plain"), ct
    return r.body.decode("utf-8")


def healthz_route(v):
    return "healthz" in v


def test_metrics():
    with Env() as env:
        c = env.client
        before = parse(scrape(c))
        h0 = value(before, "sb_http_requests_total", route=healthz_route,
                   method="GET", status="200") or 0.0
        for _ in range(7):
            assert c.get("/healthz").status == 200
        for i in range(3):
            r = c.post("/api/v1/contacts", {"channel": "email",
                                            "email": "m%d@example.com" % i,
                                            "source_id": "met-%d" % i})
            assert r.status == 201, r
        r = c.post("/api/v1/contacts", {"channel": "sms",
                                        "phone": "+79161112233",
                                        "source_id": "met-sms"})
        assert r.status == 201, r
        assert c.get("/api/v1/nope").status == 404
        text = scrape(c)
        after = parse(text)

        h1 = value(after, "sb_http_requests_total", route=healthz_route,
                   method="GET", status="200")
        assert h1 is not None, "no sb_http_requests_total for /healthz"
        assert h1 - h0 == 7, (h0, h1)
        posts = value(after, "sb_http_requests_total", method="POST",
                      status="201")
        assert posts == 4, posts
        assert value(after, "sb_http_requests_total", status="404") >= 1
        e0 = value(before, "sb_contacts_ingested_total",
                   channel="email") or 0.0
        e1 = value(after, "sb_contacts_ingested_total", channel="email")
        assert e1 is not None and e1 - e0 == 3, (e0, e1)
        assert value(after, "sb_contacts_ingested_total", channel="sms") == 1
        assert value(after, "sb_redis_up") == 1.0, "sb_redis_up != 1"
        cnt = value(after, "sb_http_request_duration_seconds_count")
        assert cnt is not None and cnt >= 12, cnt
        inf = value(after, "sb_http_request_duration_seconds_bucket",
                    le="+Inf")
        assert inf == cnt, (inf, cnt)
        for name in ("sb_redis_roundtrip_seconds_count",
                     "sb_redis_errors_total", "process_cpu_seconds_total",
                     "process_resident_memory_bytes",
                     "process_open_fds", "process_start_time_seconds"):
            assert any(n == name for n, _, _ in after), "missing " + name
        assert "# TYPE sb_http_requests_total counter" in text
        assert "# TYPE sb_http_request_duration_seconds histogram" in text

        promtool = shutil.which("promtool")
        if promtool is None:
            print("promtool missing: lint skipped")
            return
        p = subprocess.run([promtool, "check", "metrics"],
                           input=text.encode(), capture_output=True,
                           timeout=60)
        assert p.returncode == 0, "promtool check metrics: %s%s" % (
            p.stdout.decode(), p.stderr.decode())
