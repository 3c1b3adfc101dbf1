"""test_tls.py - TLS listeners next to plain ones, [listener] config errors,
and a listener whose port is taken.

A throwaway self-signed certificate (CN and subjectAltName 127.0.0.1) is
made with the openssl command in the test's temp dir; the client trusts
exactly that certificate (cafile) and checks the host name.
"""

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import time

from harness import (SAN_ENV, SB_BIN, Env, base_config, free_port,
                     render_config)

C = "/api/v1/contacts"


def make_cert(dir):
    cert = os.path.join(dir, "cert.pem")
    key = os.path.join(dir, "key.pem")
    p = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
         "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", key, "-out", cert],
        stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert p.returncode == 0, "openssl req failed: %s" % p.stderr.decode(
        errors="replace")
    os.chmod(key, 0o600)
    return cert, key


def tls_context(cafile):
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def two_listeners(env, plain_port, tls_port, cert, key):
    """Replace [listener main] with [listener plain] + [listener secure]."""
    env.conf.pop("listener main", None)
    env.conf["listener plain"] = {"address": "127.0.0.1",
                                  "port": str(plain_port)}
    env.conf["listener secure"] = {"address": "127.0.0.1",
                                   "port": str(tls_port),
                                   "tls_cert": cert, "tls_key": key}
    env.port = plain_port  # wait_ready and env.client use the plain one
    env.write_config()


def https(conn, method, path, body=None, token=None):
    hdrs = {}
    if token:
        hdrs["Authorization"] = "Bearer " + token
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=hdrs)
    r = conn.getresponse()
    return r, r.read()


def assert_no_plain_answer(port):
    """A plain HTTP request to a TLS port must get no HTTP answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    got = b""
    try:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Connection: close\r\n\r\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(got) < 4096:
            try:
                chunk = s.recv(4096)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            got += chunk
    finally:
        s.close()
    assert not got.startswith(b"HTTP/") and b"status" not in got, \
        "the TLS listener answered plain HTTP (no TLS at all): %r" % got[:200]


def test_tls_and_plain_listeners():
    with Env(start_daemon=False) as env:
        cert, key = make_cert(env.tmp)
        plain_port = env.port
        tls_port = free_port()
        while tls_port == plain_port:
            tls_port = free_port()
        two_listeners(env, plain_port, tls_port, cert, key)
        env.daemon.start()
        log = env.daemon.log_text()
        assert re.search(r"listener=secure\b.*tls=yes", log), log[-2000:]
        assert re.search(r"listener=plain\b.*tls=no", log), log[-2000:]
        ctx = tls_context(cert)
        assert_no_plain_answer(tls_port)

        # HTTPS /healthz, the certificate checked against our CA file.
        conn = http.client.HTTPSConnection("127.0.0.1", tls_port,
                                           context=ctx, timeout=15)
        try:
            r, data = https(conn, "GET", "/healthz")
            assert r.status == 200, (r.status, data)
            assert json.loads(data) == {"status": "ok"}, data
            assert conn.sock.version() in ("TLSv1.2", "TLSv1.3"), \
                conn.sock.version()
            peer = conn.sock.getpeercert()
            assert peer and ("IP Address", "127.0.0.1") in \
                peer.get("subjectAltName", ()), peer
            r, data = https(conn, "GET", "/readyz")
            assert r.status == 200, (r.status, data)
        finally:
            conn.close()

        # The plain listener answers plain HTTP, on the same process.
        r = env.client.get("/healthz")
        assert r.status == 200 and r.json == {"status": "ok"}, r
        r = env.client.post(C, {"channel": "api", "email": "p@example.com",
                                "source_id": "plain-1",
                                "conversation": "none"})
        assert r.status == 201, r

        # API over TLS, several requests on one keep-alive connection.
        conn = http.client.HTTPSConnection("127.0.0.1", tls_port,
                                           context=ctx, timeout=15)
        try:
            ids = []
            first_sock = None
            for i in range(5):
                r, data = https(conn, "POST", C,
                                {"channel": "api",
                                 "email": "tls%d@example.com" % i,
                                 "subject": "over tls %d" % i,
                                 "source_id": "tls-%d" % i,
                                 "conversation": "none"},
                                token=env.apikey)
                assert r.status == 201, (i, r.status, data)
                assert not r.will_close, \
                    "server closed the TLS connection after request %d" % i
                if first_sock is None:
                    first_sock = conn.sock
                assert conn.sock is first_sock, \
                    "request %d needed a new connection" % i
                ids.append(json.loads(data)["id"])
            # The same source_id again: a duplicate, same connection.
            r, data = https(conn, "POST", C,
                            {"channel": "api", "email": "tls0@example.com",
                             "source_id": "tls-0", "conversation": "none"},
                            token=env.apikey)
            assert r.status == 200, (r.status, data)
            assert json.loads(data)["duplicate"] is True, data
            assert json.loads(data)["id"] == ids[0], (data, ids)
            assert conn.sock is first_sock
            # No token over TLS is still 401.
            r, data = https(conn, "POST", C, {"channel": "api",
                                              "email": "x@example.com"})
            assert r.status == 401, (r.status, data)
        finally:
            conn.close()
        by = {f.get("source_id"): eid
              for eid, f in env.redis.xrange_all("sb:log")}
        for i, cid in enumerate(ids):
            assert by.get("tls-%d" % i) == cid, (i, cid, by)
        assert "plain-1" in by

        # Plain HTTP to the TLS port (again, after the TLS clients).
        assert_no_plain_answer(tls_port)

        # A TLS handshake to the plain port fails too.
        raw = socket.create_connection(("127.0.0.1", plain_port), timeout=5)
        handshake_ok = False
        try:
            ts = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
            handshake_ok = True
            ts.close()
        except OSError:  # ssl.SSLError, reset, timeout
            pass
        finally:
            raw.close()
        assert not handshake_ok, "TLS handshake succeeded on the plain " \
            "listener"

        # Both listeners still serve after the bad clients.
        conn = http.client.HTTPSConnection("127.0.0.1", tls_port,
                                           context=ctx, timeout=15)
        try:
            r, data = https(conn, "GET", "/healthz")
            assert r.status == 200, (r.status, data)
        finally:
            conn.close()
        assert env.client.get("/healthz").status == 200
        # An untrusting client (default CAs) refuses the self-signed cert.
        bad = http.client.HTTPSConnection(
            "127.0.0.1", tls_port, timeout=15,
            context=ssl.create_default_context())
        try:
            try:
                bad.request("GET", "/healthz")
                bad.getresponse().read()
                raise AssertionError("self-signed cert accepted without CA")
            except ssl.SSLCertVerificationError:
                pass
        finally:
            bad.close()
        assert env.client.get("/healthz").status == 200


def check(path):
    env = dict(os.environ)
    env.update(SAN_ENV)
    p = subprocess.run([SB_BIN, "-c", path, "--check"], capture_output=True,
                       timeout=60, env=env, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), \
        p.stderr.decode(errors="replace")


def test_tls_cert_without_key_rejected():
    with Env(start_daemon=False) as env:
        cert, key = make_cert(env.tmp)
        conf = base_config(env.tmp, env.port, env.redis.sock)
        conf["listener secure"] = {"address": "127.0.0.1",
                                   "port": str(free_port()),
                                   "tls_cert": cert, "tls_key": key}
        good = os.path.join(env.tmp, "good.conf")
        with open(good, "w") as f:
            f.write(render_config(conf))
        rc, out, err = check(good)
        assert rc == 0 and "config ok" in out + err, (rc, out, err)

        for missing, present in (("tls_key", "tls_cert"),
                                 ("tls_cert", "tls_key")):
            c = dict(conf)
            c["listener secure"] = {k: v for k, v in
                                    conf["listener secure"].items()
                                    if k != missing}
            text = render_config(c)
            path = os.path.join(env.tmp, "no-%s.conf" % missing)
            with open(path, "w") as f:
                f.write(text)
            lines = text.splitlines()
            sec = lines.index("[listener secure]") + 1
            kl = [i for i, ln in enumerate(lines, 1)
                  if ln.startswith(present + " =")][0]
            rc, out, err = check(path)
            assert rc == 1, "%s without %s: exit %d (%s%s)" % (
                present, missing, rc, out, err)
            want = ["%s:%d:" % (path, n) for n in (sec, kl)]
            assert any(w in err for w in want), \
                "%s without %s: want %s in stderr, got %r" % (
                    present, missing, " or ".join(want), err)
            assert "config ok" not in out, out
            assert "runtime error" not in err and "ERROR:" not in err, err


def test_listener_port_taken():
    with Env(start_daemon=False) as env:
        taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            taken.bind(("127.0.0.1", 0))
            taken.listen(1)
            tport = taken.getsockname()[1]
            env.conf.pop("listener main", None)
            env.conf["listener front"] = {"address": "127.0.0.1",
                                          "port": str(env.port)}
            env.conf["listener busy"] = {"address": "127.0.0.1",
                                         "port": str(tport)}
            env.write_config()
            env.expect_errors(r"listener=busy\b")
            t0 = time.monotonic()
            env.daemon.start(ready_limit=0)
            rc = env.daemon.reap(15.0)
            took = time.monotonic() - t0
            log = env.daemon.log_text()
            assert rc is not None, "daemon still running 15s after start " \
                "with a taken port:\n%s" % env.daemon.log_tail()
            assert rc != 0, "exit 0 with a taken port:\n%s" % log[-2000:]
            assert took < 10, "took %.1fs to give up" % took
            errs = [ln for ln in log.splitlines() if re.match(r"<[0-3]>", ln)]
            assert any(re.search(r"\bbusy\b", ln) for ln in errs), \
                "no error line names the listener 'busy':\n%s" % log[-2000:]
            # Nothing else took over the port we hold.
            assert taken.getsockname()[1] == tport
        finally:
            taken.close()
