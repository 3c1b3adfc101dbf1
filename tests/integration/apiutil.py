"""apiutil.py - small helpers over the REST API shared by the test files.

Notifications (post, read, wait for a state) and timelines (read whole,
oldest first). Only the Python 3 standard library and harness.py.
"""

import json

from harness import q, wait_until


def admin(env):
    """A client with the "boss" API key (every scope)."""
    return env.new_client(env.key("boss"))


def post_ntf(c, body, want=202):
    r = c.post("/api/v1/notifications", body)
    assert r.status == want, "POST %r -> %r (want %d)" % (body, r, want)
    return r.json


def get_ntf(c, nid):
    r = c.get("/api/v1/notifications/" + q(nid))
    assert r.status == 200, "GET %s -> %r" % (nid, r)
    return r.json


def wait_state(c, nid, states, limit=20.0):
    """Poll until the notification is in one of states; returns it."""
    if isinstance(states, str):
        states = (states,)
    last = [None]

    def pred():
        last[0] = get_ntf(c, nid)
        return last[0]["state"] in states

    try:
        wait_until(pred, limit, 0.05, "%s in %s" % (nid, states))
    except AssertionError as e:
        raise AssertionError("%s; last: %s" % (e, json.dumps(
            last[0], ensure_ascii=False)[:2000]))
    return last[0]


def results(n):
    """The results of a notification's attempts, in order."""
    return [a["result"] for a in n["attempts"]]


def timeline(env, kind, ident, client=None):
    """A customer's ("customers") or conversation's ("conversations")
    whole timeline through the API, oldest first."""
    c = client or env.client
    out, before = [], None
    for _ in range(50):
        path = "/api/v1/%s/%s/timeline?limit=200" % (kind, ident)
        if before:
            path += "&before=" + before
        r = c.get(path)
        assert r.status == 200, r
        out.extend(r.json["entries"])
        before = r.json["next_before"]
        if not before:
            break
    out.reverse()
    return out
