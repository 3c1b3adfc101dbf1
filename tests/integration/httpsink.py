#!/usr/bin/python3
"""httpsink.py - a controllable HTTP/1.1 sink for tests (stdlib only).

    python3 tests/integration/httpsink.py --port 0 [--verify-secret S]
                                          [--max-records N]

Listens on 127.0.0.1 only (never another address) and prints its port on the
first line of stdout, then serves until killed. It stands in for a webhook
receiver or an HTTP provider: every request to a path other than the control
paths below is recorded (method, path, headers, body, time, client port) and
answered according to the current mode. Threaded (one thread per
connection), keep-alive capable, no per-request logging, one write per
response, so it takes a few thousand requests per second.

Control (JSON in and out):

    POST /_control  {"mode": "ok" | "fail500" | "fail400" | "ratelimit" |
                     "slow" | "script",
                     "retry_after": 1,      seconds, for ratelimit (and a
                                            429 taken from a script)
                     "delay_ms": 500,       for slow
                     "script": [503, 200]}  statuses answered in order, then
                                            200 as in "ok"
                    Keys left out keep their values; the answer is the
                    resulting state. GET /_control shows it.
    GET /_requests  the recorded requests, oldest first: [{"seq", "method",
                    "path", "headers" (names lowercased), "body" (UTF-8,
                    bad bytes replaced), "body_len", "time" (epoch seconds),
                    "client_port", "signature_ok" (null without
                    --verify-secret)}]. With ?clear=1 the records, the
                    counters and the connection set are reset after reading.
    GET /_count     {"count": requests recorded, "bad_signatures": n,
                     "connections": distinct client connections seen}

Answers: "ok" is 200 with {"id": "sink-<seq>"} (a provider id); "fail500"
is 500, "fail400" 400, "ratelimit" 429 with Retry-After; "slow" sleeps
delay_ms then answers as "ok"; "script" pops the next status (2xx answer as
"ok", 429 carries Retry-After) and answers "ok" once the list is empty.

--verify-secret S checks every recorded request's X-Switchboard-Signature
("v1=" + hex HMAC-SHA256(S, "<X-Switchboard-Timestamp>.<body>")) and counts
the bad ones (missing headers count as bad); the answer does not change.

--max-records bounds the memory kept for /_requests (the oldest records are
dropped; the counters keep counting).
"""

import argparse
import collections
import hashlib
import hmac
import json
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MODES = ("ok", "fail500", "fail400", "ratelimit", "slow", "script")
MAX_BODY = 64 << 20
REASONS = {200: "OK", 201: "Created", 202: "Accepted", 204: "No Content",
           301: "Moved Permanently", 400: "Bad Request", 404: "Not Found",
           408: "Request Timeout", 425: "Too Early",
           429: "Too Many Requests", 500: "Internal Server Error",
           502: "Bad Gateway", 503: "Service Unavailable"}


class Sink:
    """Mode and records, shared by the handler threads under one lock."""

    def __init__(self, secret, max_records):
        self.lock = threading.Lock()
        self.secret = secret.encode() if secret is not None else None
        self.mode = "ok"
        self.retry_after = 1
        self.delay_ms = 1000
        self.script = collections.deque()
        self.records = collections.deque(maxlen=max_records)
        self.count = 0
        self.bad = 0
        self.ports = set()

    def state(self):
        return {"mode": self.mode, "retry_after": self.retry_after,
                "delay_ms": self.delay_ms, "script": list(self.script)}

    def control(self, req):
        """Apply a /_control object; returns an error string or None."""
        if not isinstance(req, dict):
            return "expected a JSON object"
        mode = req.get("mode", self.mode)
        if mode not in MODES:
            return "unknown mode"
        ra = req.get("retry_after", self.retry_after)
        delay = req.get("delay_ms", self.delay_ms)
        script = req.get("script", None)
        if not isinstance(ra, int) or ra < 0:
            return "retry_after must be a non-negative integer"
        if not isinstance(delay, int) or not 0 <= delay <= 600000:
            return "delay_ms must be an integer in 0..600000"
        if script is not None and (
                not isinstance(script, list) or
                not all(isinstance(s, int) and 100 <= s <= 599
                        for s in script)):
            return "script must be a list of HTTP statuses"
        self.mode, self.retry_after, self.delay_ms = mode, ra, delay
        if script is not None:
            self.script = collections.deque(script)
        return None

    def verify(self, headers, body):
        ts = headers.get("x-switchboard-timestamp")
        sig = headers.get("x-switchboard-signature")
        if ts is None or sig is None or not sig.startswith("v1="):
            return False
        mac = hmac.new(self.secret, ts.encode() + b"." + body,
                       hashlib.sha256).hexdigest()
        return hmac.compare_digest(mac, sig[3:])

    def record(self, method, path, headers, body, port):
        """Record one request; returns (status, extra headers, delay s)."""
        ok = self.verify(headers, body) if self.secret is not None else None
        with self.lock:
            self.count += 1
            seq = self.count
            if ok is False:
                self.bad += 1
            self.ports.add(port)
            self.records.append({
                "seq": seq, "method": method, "path": path,
                "headers": headers,
                "body": body.decode("utf-8", "replace"),
                "body_len": len(body), "time": time.time(),
                "client_port": port, "signature_ok": ok})
            mode = self.mode
            delay = 0.0
            if mode == "ok":
                status = 200
            elif mode == "fail500":
                status = 500
            elif mode == "fail400":
                status = 400
            elif mode == "ratelimit":
                status = 429
            elif mode == "slow":
                status, delay = 200, self.delay_ms / 1000.0
            else:
                status = self.script.popleft() if self.script else 200
            extra = []
            if status == 429:
                extra.append(("Retry-After", str(self.retry_after)))
            return seq, status, extra, delay


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "httpsink"
    sys_version = ""
    disable_nagle_algorithm = True

    def log_message(self, fmt, *args):
        pass

    def handle_one_request(self):
        """Parse one request ourselves: http.server's header parsing (the
        email package) would cost more than everything else together."""
        line = self.rfile.readline(65537)
        if not line:
            self.close_connection = True
            return
        parts = line.split()
        if len(parts) != 3 or len(line) > 65536:
            self.close_connection = True
            return
        self.command, self.path, version = (p.decode("latin-1")
                                            for p in parts)
        hdrs = {}
        for _ in range(200):
            h = self.rfile.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            k, _, v = h.decode("latin-1").partition(":")
            k, v = k.strip().lower(), v.strip()
            hdrs[k] = hdrs[k] + ", " + v if k in hdrs else v
        self.hdrs = hdrs
        conn = hdrs.get("connection", "").lower()
        self.close_connection = conn == "close" or (
            version == "HTTP/1.0" and conn != "keep-alive")
        if hdrs.get("expect", "").lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        self.serve()
        self.wfile.flush()

    def read_body(self):
        if self.hdrs.get("transfer-encoding", "").lower() == "chunked":
            parts, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n",
                                                            b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise ValueError("body too large")
                parts.append(self.rfile.read(size))
                self.rfile.readline(8)
        n = int(self.hdrs.get("content-length", "0") or "0")
        if n < 0 or n > MAX_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(n) if n else b""

    def answer(self, status, body, extra=()):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        lines = ["HTTP/1.1 %d %s" % (status, REASONS.get(status, "Status")),
                 "Content-Type: application/json",
                 "Content-Length: %d" % len(body)]
        lines += ["%s: %s" % kv for kv in extra]
        if self.close_connection:
            lines.append("Connection: close")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self.wfile.write(head + (b"" if self.command == "HEAD" else body))

    def serve(self):
        sink = self.server.sink
        try:
            body = self.read_body()
        except ValueError:
            self.close_connection = True
            self.answer(400, {"error": "bad body"})
            return
        url = urlsplit(self.path)
        if url.path == "/_control":
            with sink.lock:
                err = None
                if self.command == "POST":
                    try:
                        err = sink.control(json.loads(body or b"{}"))
                    except ValueError:
                        err = "invalid JSON"
                state = sink.state()
            if err:
                self.answer(400, {"error": err})
            else:
                self.answer(200, state)
            return
        if url.path == "/_requests":
            clear = parse_qs(url.query).get("clear", ["0"])[0] == "1"
            with sink.lock:
                recs = list(sink.records)
                if clear:
                    sink.records.clear()
                    sink.count = sink.bad = 0
                    sink.ports = set()
            self.answer(200, recs)
            return
        if url.path == "/_count":
            with sink.lock:
                c = {"count": sink.count, "bad_signatures": sink.bad,
                     "connections": len(sink.ports)}
            self.answer(200, c)
            return
        seq, status, extra, delay = sink.record(
            self.command, self.path, self.hdrs, body, self.client_address[1])
        if delay:
            time.sleep(delay)
        if 200 <= status < 300:
            self.answer(status, {"id": "sink-%d" % seq}, extra)
        else:
            self.answer(status, {"error": "http %d" % status}, extra)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024
    address_family = socket.AF_INET

    def handle_error(self, request, client_address):
        pass  # a client that hangs up mid-request is not news


def main():
    ap = argparse.ArgumentParser(description="controllable HTTP sink")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--verify-secret", default=None)
    ap.add_argument("--max-records", type=int, default=100000)
    args = ap.parse_args()
    srv = Server(("127.0.0.1", args.port), Handler)
    srv.sink = Sink(args.verify_secret, max(1, args.max_records))
    print(srv.server_address[1], flush=True)
    try:
        srv.serve_forever(poll_interval=0.5)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
