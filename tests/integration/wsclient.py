"""wsclient.py - a small RFC 6455 WebSocket client for the tests (stdlib).

    ws = WsClient.connect(port, "/chat/ws", protocol="switchboard.chat.v1",
                          origin="http://127.0.0.1:8080")
    ws.send_json({"type": "hello"})
    frame = ws.recv_json()          # the next text message, decoded
    code, reason = ws.wait_close()  # the server's close code

What it does: the opening handshake with Sec-WebSocket-Protocol and Origin
(checking the 101, Sec-WebSocket-Accept and the chosen subprotocol); masked
client frames, text or binary, optionally fragmented, or raw bytes for
malformed cases; ping and pong (a ping from the server is answered at once);
reassembly of fragmented server messages; close frames with their code and
reason, and an abrupt end reported as 1006. Every read has a time limit.

A refused upgrade raises HandshakeRefused with the HTTP status (0 when the
server closed the connection without an answer).
"""

import base64
import hashlib
import json
import os
import socket
import struct
import time

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


class HandshakeRefused(Exception):
    def __init__(self, status, head=b""):
        Exception.__init__(self, "upgrade refused: status %s %r"
                           % (status, head[:200]))
        self.status = status
        self.head = head


class Closed(Exception):
    """The connection is closed: code (1006 when no close frame came)."""

    def __init__(self, code, reason=""):
        Exception.__init__(self, "closed %s %r" % (code, reason))
        self.code = code
        self.reason = reason


class WsClient:
    def __init__(self, sock, protocol):
        self.sock = sock
        self.protocol = protocol
        self.buf = b""
        self.closed = None        # (code, reason) once a close frame came
        self.pongs = []           # payloads of pongs received
        self.messages_seen = 0

    # ------------------------------------------------------------------
    # Opening handshake.

    @classmethod
    def connect(cls, port, path="/chat/ws", protocol="switchboard.chat.v1",
                origin=None, host="127.0.0.1", timeout=10.0, headers=None):
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            key = base64.b64encode(os.urandom(16))
            lines = [
                "GET %s HTTP/1.1" % path,
                "Host: %s:%d" % (host, port),
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: %s" % key.decode(),
                "Sec-WebSocket-Version: 13",
            ]
            if protocol:
                lines.append("Sec-WebSocket-Protocol: %s" % protocol)
            if origin:
                lines.append("Origin: %s" % origin)
            for k, v in (headers or {}).items():
                lines.append("%s: %s" % (k, v))
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            head = b""
            deadline = time.monotonic() + timeout
            while b"\r\n\r\n" not in head:
                if time.monotonic() > deadline or len(head) > 65536:
                    raise HandshakeRefused(0, head)
                try:
                    chunk = sock.recv(4096)
                except ConnectionResetError:
                    chunk = b""
                if not chunk:
                    raise HandshakeRefused(cls._status(head), head)
                head += chunk
            head, rest = head.split(b"\r\n\r\n", 1)
            status = cls._status(head)
            if status != 101:
                raise HandshakeRefused(status, head)
            hdrs = {}
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                hdrs[k.strip().lower().decode()] = v.strip().decode()
            want = base64.b64encode(hashlib.sha1(key + GUID).digest())
            if hdrs.get("sec-websocket-accept", "").encode() != want:
                raise AssertionError("bad Sec-WebSocket-Accept: %r" % hdrs)
            if protocol and hdrs.get("sec-websocket-protocol") != protocol:
                raise AssertionError("subprotocol not chosen: %r" % hdrs)
            ws = cls(sock, protocol)
            ws.buf = rest
            ws.headers = hdrs
            return ws
        except BaseException:
            sock.close()
            raise

    @staticmethod
    def _status(head):
        try:
            return int(head.split(b" ", 2)[1])
        except (IndexError, ValueError):
            return 0

    # ------------------------------------------------------------------
    # Sending.

    @staticmethod
    def frame(opcode, payload, fin=True, mask=True, rsv=0):
        """One frame's bytes (masked like a browser's unless mask=False)."""
        b0 = (0x80 if fin else 0) | (rsv << 4) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            head = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            head = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            head = struct.pack("!BBQ", b0, mbit | 127, n)
        if not mask:
            return head + payload
        key = os.urandom(4)
        masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        return head + key + masked

    def send_raw(self, data):
        self.sock.sendall(data)

    def send_text(self, text, fragments=1):
        data = text.encode("utf-8") if isinstance(text, str) else text
        self._send_message(OP_TEXT, data, fragments)

    def send_binary(self, data, fragments=1):
        self._send_message(OP_BINARY, data, fragments)

    def _send_message(self, opcode, data, fragments):
        if fragments <= 1:
            self.sock.sendall(self.frame(opcode, data))
            return
        size = max(1, (len(data) + fragments - 1) // fragments)
        parts = [data[i:i + size] for i in range(0, len(data), size)] or [b""]
        out = []
        for i, p in enumerate(parts):
            out.append(self.frame(opcode if i == 0 else OP_CONT, p,
                                  fin=(i == len(parts) - 1)))
        self.sock.sendall(b"".join(out))

    def send_json(self, obj, fragments=1):
        self.send_text(json.dumps(obj, ensure_ascii=False), fragments)

    def ping(self, payload=b"p"):
        self.sock.sendall(self.frame(OP_PING, payload))

    def close(self, code=1000, reason=b""):
        try:
            self.sock.sendall(self.frame(OP_CLOSE,
                                         struct.pack("!H", code) + reason))
        except OSError:
            pass
        self.shutdown()

    def shutdown(self):
        try:
            self.sock.close()
        except OSError:
            pass

    # ------------------------------------------------------------------
    # Receiving.

    def _fill(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("no frame in time")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                chunk = b""
            if not chunk:
                raise Closed(1006, "connection ended without a close frame")
            self.buf += chunk

    def _take(self, n):
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self, timeout=10.0):
        """(fin, opcode, payload) of the next frame from the server."""
        deadline = time.monotonic() + timeout
        self._fill(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        hl = 2
        if n == 126:
            self._fill(4, deadline)
            n = struct.unpack("!H", self.buf[2:4])[0]
            hl = 4
        elif n == 127:
            self._fill(10, deadline)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            hl = 10
        if b1 & 0x80:
            raise AssertionError("server frame is masked")
        self._fill(hl + n, deadline)
        self._take(hl)
        return bool(b0 & 0x80), b0 & 0x0F, self._take(n)

    def recv(self, timeout=10.0):
        """The next whole data message as (opcode, bytes). Answers pings;
        raises Closed on a close frame (after echoing it) or a dropped
        connection."""
        if self.closed:
            raise Closed(*self.closed)
        deadline = time.monotonic() + timeout
        parts, first = [], None
        while True:
            fin, op, payload = self.recv_frame(
                max(0.01, deadline - time.monotonic()))
            if op == OP_PING:
                self.sock.sendall(self.frame(OP_PONG, payload))
                continue
            if op == OP_PONG:
                self.pongs.append(payload)
                continue
            if op == OP_CLOSE:
                code = struct.unpack("!H", payload[:2])[0] \
                    if len(payload) >= 2 else 1005
                reason = payload[2:].decode("utf-8", errors="replace")
                self.closed = (code, reason)
                try:
                    self.sock.sendall(self.frame(OP_CLOSE, payload[:2]))
                except OSError:
                    pass
                raise Closed(code, reason)
            if op == OP_CONT:
                if first is None:
                    raise AssertionError("continuation without a start")
                parts.append(payload)
            else:
                if first is not None:
                    raise AssertionError("new message inside a fragmented "
                                         "one")
                first = op
                parts = [payload]
            if fin:
                self.messages_seen += 1
                return first, b"".join(parts)

    def recv_json(self, timeout=10.0):
        op, data = self.recv(timeout)
        if op != OP_TEXT:
            raise AssertionError("expected a text message, got opcode %d"
                                 % op)
        return json.loads(data.decode("utf-8"))

    def recv_until(self, pred, timeout=10.0, what="frame"):
        """Read JSON messages until pred(msg); returns (msg, skipped)."""
        deadline = time.monotonic() + timeout
        skipped = []
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no %s within %.1fs; got %r"
                                     % (what, timeout, skipped[-10:]))
            try:
                m = self.recv_json(left)
            except socket.timeout:
                raise AssertionError("no %s within %.1fs; got %r"
                                     % (what, timeout, skipped[-10:]))
            if pred(m):
                return m, skipped
            skipped.append(m)

    def recv_type(self, t, timeout=10.0):
        return self.recv_until(lambda m: m.get("type") == t, timeout,
                               "%r frame" % t)[0]

    def wait_close(self, timeout=10.0):
        """Read (and drop) messages until the server closes; returns
        (code, reason) — 1006 when the connection ended without a close
        frame. AssertionError when it stays open past timeout."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("still open after %.1fs" % timeout)
            try:
                self.recv(left)
            except Closed as e:
                return e.code, e.reason
            except socket.timeout:
                raise AssertionError("still open after %.1fs" % timeout)

    def no_message(self, quiet=0.3):
        """True when nothing arrives (and the socket stays open) for quiet
        seconds."""
        try:
            self.recv(quiet)
        except socket.timeout:
            return True
        return False
