"""test_queue_metrics.py - queue and agent gauges in /metrics.

The daemon refreshes them from the router's views every fifth routing
tick; the test waits (bounded) until they show a conversation waiting in
the queue and an agent online, then checks promtool still accepts the
exposition.
"""

import re
import shutil
import subprocess

import harness
from harness import Env, wait_until


def gauge(text, name, label, value):
    m = re.search(r'^%s\{%s="%s"\} ([0-9.e+-]+)$' % (name, label, value),
                  text, re.M)
    return float(m.group(1)) if m else None


def test_queue_and_agent_gauges():
    ov = {
        "routing": {"default_queue": "general", "tick": "100ms"},
        "queue general": {"members": "alice, bob", "sla": "1s"},
        "agent alice": {"capacity": "4"},
    }
    with Env(ov) as env:
        r = env.client.post("/api/v1/contacts", {
            "channel": "chat", "email": "gauge@example.com",
            "text": "waiting"})
        assert r.status == 201, r
        tok = env.login("bob")
        r = env.client.put("/api/v1/agents/bob/presence", {"state": "away"},
                           token=tok)
        assert r.status == 200, r

        def scrape():
            return env.client.get("/metrics").body.decode()

        wait_until(lambda: gauge(scrape(), "sb_queue_waiting", "queue",
                                 "general") == 1, 5.0, 0.2,
                   "sb_queue_waiting shows the conversation")
        text = scrape()
        assert gauge(text, "sb_agent_capacity", "agent", "alice") == 4, text
        wait_until(lambda: (gauge(scrape(), "sb_agents", "presence", "away")
                            or 0) >= 1, 5.0, 0.2, "bob counted as away")
        wait_until(lambda: gauge(scrape(), "sb_queue_sla_breaches", "queue",
                                 "general") == 1, 5.0, 0.2,
                   "the 1 s SLA breach shows")
        wait_until(lambda: (gauge(scrape(), "sb_queue_longest_wait_seconds",
                                  "queue", "general") or 0) >= 1.0, 5.0, 0.2,
                   "the longest wait grows")
        if shutil.which("promtool"):
            p = subprocess.run(["promtool", "check", "metrics"],
                               input=scrape().encode(), capture_output=True)
            assert p.returncode == 0 and not p.stdout and not p.stderr, p
