"""test_badinput.py - bad requests get clear 4xx JSON errors; daemon stays up.

The JSON corpus (JSONTestSuite, ../shared/corpora/json or $SB_CORPORA/json)
is POSTed as request bodies: every n_ file must give 400 with a JSON error
body; y_ and i_ files must never give 2xx or 5xx (none is a valid contact).
"""

import os

from harness import ROOT, Env, Skip, timeout

C = "/api/v1/contacts"


def corpus_dir():
    base = os.environ.get("SB_CORPORA") or \
        os.path.join(ROOT, "..", "shared", "corpora")
    d = os.path.join(base, "json")
    if not os.path.isdir(d):
        print("corpus: skipped")
        raise Skip("corpus: skipped (%s not found)" % d)
    return d


def assert_json_error(r, status, field=None, what=""):
    assert r.status == status, "%s: want %d, got %r" % (what, status, r)
    ct = r.header("content-type") or ""
    assert "json" in ct, "%s: content-type %r" % (what, ct)
    j = r.json
    assert isinstance(j, dict) and isinstance(j.get("error"), str) and \
        j["error"], "%s: error body %r" % (what, j)
    if field is not None:
        assert j.get("field") == field, "%s: want field %r, got %r" % (
            what, field, j)


@timeout(300)
def test_json_corpus():
    d = corpus_dir()
    names = sorted(n for n in os.listdir(d) if n.endswith(".json"))
    assert len(names) > 300, len(names)
    with Env() as env:
        bad = []
        counts = {"n": 0, "y": 0, "i": 0}
        for n in names:
            with open(os.path.join(d, n), "rb") as f:
                data = f.read()
            try:
                r = env.client.post(C, data)
            except Exception as e:
                bad.append("%s: %s" % (n, e))
                env.client.close()
                if not env.daemon.alive():
                    break
                continue
            kind = n[0]
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "n":
                try:
                    assert_json_error(r, 400, what=n)
                except AssertionError as e:
                    bad.append(str(e))
            elif not (400 <= r.status < 500):
                bad.append("%s: got %r" % (n, r))
        assert env.daemon.alive(), "daemon died:\n" + env.daemon.log_tail()
        assert not bad, "%d bad answers:\n%s" % (len(bad), "\n".join(bad[:20]))
        assert counts["n"] == 188, counts
        r = env.client.get("/healthz")
        assert r.status == 200 and r.json == {"status": "ok"}, r
        # Still serving real work after the corpus.
        r = env.client.post(C, {"channel": "api", "email": "after@example.com",
                                "source_id": "after-corpus"})
        assert r.status == 201, r


def test_bad_json_variants():
    cases = [
        ("duplicate keys",
         b'{"channel":"email","channel":"sms","email":"a@example.com"}'),
        ("top-level array", b'[{"channel":"email","email":"a@example.com"}]'),
        ("top-level string", b'"hello"'),
        ("top-level number", b'42'),
        ("empty body", b''),
        ("truncated", b'{"channel":"email","email":"a@example.com"'),
        ("trailing garbage",
         b'{"channel":"email","email":"a@example.com"} x'),
        ("invalid utf-8",
         b'{"channel":"email","email":"a@example.com","text":"\xff\xfe"}'),
        ("nul byte", b'{"channel":"email","email":"a@example.com"}\x00'),
        ("escaped nul",
         b'{"channel":"email","email":"a@example.com","text":"a\\u0000b"}'),
        ("lone surrogate",
         b'{"channel":"email","email":"a@example.com","text":"\\ud800"}'),
        ("deep nesting", b'{"fields":' + b'[' * 5000 + b']' * 5000 + b'}'),
    ]
    with Env() as env:
        for what, body in cases:
            r = env.client.post(C, body)
            assert_json_error(r, 400, what=what)
        assert env.redis.cmd("XLEN", "sb:log") == 0
        assert env.client.get("/healthz").status == 200


def test_validation_errors():
    with Env() as env:
        base = {"channel": "email", "email": "ok@example.com"}
        cases = [
            ({"email": "not-an-email"}, "email"),
            ({"email": "a@"}, "email"),
            ({"email": "a b@example.com"}, "email"),
            ({"email": "x@@example.com"}, "email"),
            ({"email": "a@example.com, b@example.com"}, "email"),
            ({"email": "a@example.com\r\nBcc: c@example.com"}, "email"),
            ({"email": "x" * 65 + "@example.com"}, "email"),
            ({"email": 42}, "email"),
            ({"phone": "call me maybe"}, "phone"),
            ({"phone": "+1234567890123456789"}, "phone"),
            ({"phone": "８９１６１２３４５６７"}, "phone"),
            ({"phone": "+7 916 123\n45 67"}, "phone"),
            ({"channel": "pigeon"}, "channel"),
            ({"channel": None}, "channel"),
            ({"direction": "sideways"}, "direction"),
            ({"locale": "klingon-xx"}, "locale"),
            ({"conversation": "cv_999999999"}, None),
            ({"fields": "not an object"}, "fields"),
            ({"ts": "yesterday"}, "ts"),
        ]
        for patch, field in cases:
            body = dict(base)
            for k, v in patch.items():
                if v is None:
                    body.pop(k)
                else:
                    body[k] = v
            r = env.client.post(C, body)
            if field is None:
                assert r.status in (400, 404), (patch, r)
                assert "error" in r.json, (patch, r)
            else:
                assert_json_error(r, 400, field, what=repr(patch))
        # No identity at all.
        r = env.client.post(C, {"channel": "email", "text": "who am I"})
        assert_json_error(r, 400, what="no identity")
        r = env.client.post(C, {"channel": "api", "customer": "cu_999999999"})
        assert r.status in (400, 404), r
        assert env.redis.cmd("XLEN", "sb:log") == 0
        # Lookups with a bad identity are 400 too.
        r = env.client.get("/api/v1/customers?email=nope")
        assert_json_error(r, 400, "email", what="lookup bad email")
        r = env.client.get("/api/v1/customers?phone=abc")
        assert_json_error(r, 400, "phone", what="lookup bad phone")


def test_body_limit():
    with Env(overrides={"http": {"max_body": "16k"}}) as env:
        ok = {"channel": "api", "email": "big@example.com",
              "text": "x" * 12000, "source_id": "big-1"}
        r = env.client.post(C, ok)
        assert r.status == 201, r
        big = dict(ok, text="y" * 20000, source_id="big-2")
        r = env.client.post(C, big)
        assert_json_error(r, 413, what="20k body")
        env.client.close()
        # Much bigger, and a lying Content-Length.
        c = env.new_client()
        try:
            r = c.post(C, dict(ok, text="z" * 3000000, source_id="big-3"))
            assert r.status == 413, r
        except (ConnectionError, BrokenPipeError):
            pass  # closing early on an oversized body is fine
        assert env.client.get("/healthz").status == 200
        by = [f.get("source_id") for _, f in env.redis.xrange_all("sb:log")]
        assert by == ["big-1"], by


def test_routes_and_methods():
    with Env() as env:
        c = env.client
        for path in ("/nope", "/api/v1/nope", "/api/v2/contacts",
                     "/api/v1/customers/cu_1/nope", "/api/v1/contacts/x/y"):
            r = c.get(path)
            assert_json_error(r, 404, what="GET " + path)
        for method, path, allow in (
                ("DELETE", "/api/v1/contacts", "POST"),
                ("PATCH", "/api/v1/contacts", "POST"),
                ("GET", "/api/v1/login", "POST"),
                ("POST", "/healthz", "GET"),
                ("DELETE", "/api/v1/customers/cu_1", "GET"),
                ("POST", "/api/v1/customers/cu_1/timeline", "GET")):
            r = c.request(method, path,
                          b"{}" if method in ("POST", "PATCH") else None)
            assert_json_error(r, 405, what="%s %s" % (method, path))
            hdr = r.header("allow") or ""
            assert allow in [x.strip() for x in hdr.split(",")], \
                "%s %s: Allow %r" % (method, path, hdr)
        r = c.get("/healthz")
        assert r.status == 200 and r.json == {"status": "ok"}, r


def test_auth_errors():
    with Env() as env:
        body = {"channel": "api", "email": "auth@example.com"}
        anon = env.new_client(token=None)
        r = anon.post(C, body)
        assert_json_error(r, 401, what="no token")
        for tok in ("sb_test_wrongsecret", "garbage", "sb_nobody_abc",
                    env.apikey + "x", env.apikey[:-1], ""):
            r = anon.post(C, body, token=tok)
            assert_json_error(r, 401, what="token %r" % tok)
        r = anon.post(C, body, headers={"Authorization": "Basic dGVzdDp0ZXN0"})
        assert_json_error(r, 401, what="basic auth")
        r = anon.get("/api/v1/customers?email=auth%40example.com")
        assert_json_error(r, 401, what="lookup without token")
        lim = env.new_client(env.key("limited"))
        r = lim.post(C, body)
        assert_json_error(r, 403, what="scope notify only")
        r = lim.get("/api/v1/customers?email=auth%40example.com")
        assert_json_error(r, 403, what="lookup scope notify only")
        assert env.redis.cmd("XLEN", "sb:log") == 0
        # The probes need no token.
        for p in ("/healthz", "/readyz", "/metrics"):
            assert anon.get(p).status == 200, p
        r = env.client.post(C, body)
        assert r.status == 201, r
