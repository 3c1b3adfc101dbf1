#!/usr/bin/python3
"""smtpsink.py - a controllable SMTP sink for tests (aiosmtpd, loopback only).

    /usr/bin/python3 tests/integration/smtpsink.py --port P --dir D
        [--auth USER:PASS] [--auth-mechs PLAIN,LOGIN]
        [--tls CERTDIR] [--require-tls]
        [--reply-rcpt SUBSTR=CODE TEXT]...  [--reply-data CODE TEXT]
        [--silent] [--drop-after-rcpt] [--hostname NAME]

Run it with Debian's /usr/bin/python3 (python3-aiosmtpd); a pyenv python3 on
PATH cannot see that package. It listens on 127.0.0.1 only. --port 0 picks
a free port. Once it listens, it writes D/ready (atomically) holding the
port number, so a test started it, waits for that file and reads the port:
no probe connection (which would count as a client) is needed.

What it stores, in D:
  NNNNNNNN.eml       each accepted message, the DATA as received after
                     dot-unstuffing (byte for byte, CRLF line ends)
  index.jsonl        one JSON line per accepted message: n, file, conn
                     (the connection number, 1, 2, ...), mail_from,
                     rcpt_tos, size, tls (bool), auth (login or null),
                     auth_mech, t (epoch seconds)
  connections.jsonl  one JSON line per accepted TCP connection: conn, t

Behaviour switches:
  --auth USER:PASS   offer AUTH (PLAIN and LOGIN unless --auth-mechs limits
                     them) and require it, also without TLS; a wrong
                     password gets 535 5.7.8
  --tls CERTDIR      offer STARTTLS with CERTDIR/cert.pem and key.pem
  --require-tls      refuse MAIL before STARTTLS (530)
  --reply-rcpt S=R   answer RCPT TO addresses containing S with the reply
                     R, e.g. "tempfail=451 4.3.0 try again later";
                     repeatable, first match wins; a 2xx R accepts
  --reply-data R     answer the end of DATA with R instead of 250 (a
                     non-2xx reply stores nothing)
  --silent           accept TCP connections and never answer (no
                     greeting): a client must time out
  --drop-after-rcpt  accept MAIL and RCPT, then close the connection when
                     the client sends DATA

From Python (integration tests):

    from smtpsink import SmtpSink
    sink = SmtpSink(directory, port=0, auth=("u", "p"), tls_dir=None,
                    require_tls=False, reply_rcpt=[("bad", "550 5.1.1 no")],
                    reply_data=None, silent=False, drop_after_rcpt=False)
    sink.start()          # serves from a background thread
    ... sink.port, sink.messages(), sink.connections(), sink.message(1)
    sink.stop()

The command line and the class accept the same options.
"""

import argparse
import asyncio
import itertools
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
import warnings

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

HOST = "127.0.0.1"

# AUTH without TLS is what the tests want; keep aiosmtpd's warnings about it
# (and its per-connection info logging) off stderr.
warnings.filterwarnings("ignore", message=".*AUTH.*TLS.*")
logging.getLogger("mail.log").setLevel(logging.ERROR)


class _Store:
    """Files in the sink's directory; used from the event loop only."""

    def __init__(self, directory):
        self.dir = directory
        os.makedirs(directory, exist_ok=True)
        self.index_path = os.path.join(directory, "index.jsonl")
        self.n = 0
        if os.path.exists(self.index_path):
            with open(self.index_path) as f:
                self.n = sum(1 for _ in f)
        self.index = open(self.index_path, "a", buffering=1)
        self.conns = open(os.path.join(directory, "connections.jsonl"), "a",
                          buffering=1)

    def connection(self, conn):
        self.conns.write(json.dumps({"conn": conn, "t": time.time()}) + "\n")

    def message(self, conn, envelope, session, data):
        self.n += 1
        name = "%08d.eml" % self.n
        with open(os.path.join(self.dir, name), "wb") as f:
            f.write(data)
        auth = session.auth_data
        login = auth.login.decode("utf-8", "replace") \
            if isinstance(auth, LoginPassword) else None
        self.index.write(json.dumps({
            "n": self.n, "file": name, "conn": conn,
            "mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
            "size": len(data), "tls": session.ssl is not None,
            "auth": login, "auth_mech": getattr(session, "sink_mech", None),
            "t": time.time()}) + "\n")
        return self.n

    def close(self):
        self.index.close()
        self.conns.close()


class _Handler:
    def __init__(self, sink, store):
        self.sink = sink
        self.store = store

    async def handle_RCPT(self, server, session, envelope, address,
                          rcpt_options):
        for substr, reply in self.sink.reply_rcpt:
            if substr in address:
                if reply.startswith("2"):
                    envelope.rcpt_tos.append(address)
                return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.sink.reply_data is not None:
            if not self.sink.reply_data.startswith("2"):
                return self.sink.reply_data
        data = envelope.original_content or envelope.content or b""
        n = self.store.message(server.sink_conn, envelope, session, data)
        if self.sink.reply_data is not None:
            return self.sink.reply_data
        return "250 2.0.0 OK sink-%d" % n


class _SinkSMTP(SMTP):
    """One instance per TCP connection: numbers it, drops on request."""

    def __init__(self, sink, *args, **kw):
        super().__init__(*args, **kw)
        self.sink = sink
        self.sink_conn = next(sink.conn_ids)

    def connection_made(self, transport):
        first = self._original_transport is None and self.transport is None
        super().connection_made(transport)
        if first:
            self.sink.store.connection(self.sink_conn)

    async def smtp_DATA(self, arg):
        if self.sink.drop_after_rcpt and self.envelope.rcpt_tos:
            self.transport.close()
            return
        await super().smtp_DATA(arg)


class SmtpSink:
    def __init__(self, directory, port=0, auth=None, auth_mechs=None,
                 tls_dir=None, require_tls=False, reply_rcpt=None,
                 reply_data=None, silent=False, drop_after_rcpt=False,
                 hostname="sink.test"):
        self.dir = directory
        self.port = port
        self.auth = auth
        self.auth_mechs = [m.upper() for m in auth_mechs] if auth_mechs \
            else ["PLAIN", "LOGIN"]
        self.tls_dir = tls_dir
        self.require_tls = require_tls
        self.reply_rcpt = list(reply_rcpt or [])
        self.reply_data = reply_data
        self.silent = silent
        self.drop_after_rcpt = drop_after_rcpt
        self.hostname = hostname
        self.conn_ids = itertools.count(1)
        self.store = None
        self._loop = None
        self._stop = None
        self._thread = None
        self._ready = threading.Event()
        self._error = None

    # ---- server ---------------------------------------------------------

    def _authenticator(self, server, session, envelope, mechanism, data):
        want_user, want_pass = self.auth
        ok = (isinstance(data, LoginPassword)
              and data.login.decode("utf-8", "replace") == want_user
              and data.password.decode("utf-8", "replace") == want_pass)
        if ok:
            session.sink_mech = mechanism
            return AuthResult(success=True, auth_data=data)
        # handled=False: aiosmtpd then answers 535 itself (with its default
        # handled=True the client would wait for a reply forever).
        return AuthResult(success=False, handled=False)

    def _smtp_kwargs(self):
        kw = {"hostname": self.hostname, "decode_data": False,
              "enable_SMTPUTF8": True, "timeout": 60}
        if self.auth:
            exclude = [m for m in ("PLAIN", "LOGIN")
                       if m not in self.auth_mechs]
            kw.update(authenticator=self._authenticator, auth_required=True,
                      auth_require_tls=False, auth_exclude_mechanism=exclude)
        if self.tls_dir:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(os.path.join(self.tls_dir, "cert.pem"),
                                os.path.join(self.tls_dir, "key.pem"))
            kw.update(tls_context=ctx, require_starttls=self.require_tls)
        return kw

    async def _silent_client(self, reader, writer):
        self.store.connection(next(self.conn_ids))
        try:
            while await reader.read(4096):
                pass
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def serve(self, stop):
        """Serve until the asyncio.Event stop is set."""
        self.store = _Store(self.dir)
        loop = asyncio.get_running_loop()
        if self.silent:
            server = await asyncio.start_server(self._silent_client, HOST,
                                                self.port)
        else:
            kw = self._smtp_kwargs()
            handler = _Handler(self, self.store)
            server = await loop.create_server(
                lambda: _SinkSMTP(self, handler, **kw), HOST, self.port)
        self.port = server.sockets[0].getsockname()[1]
        tmp = os.path.join(self.dir, "ready.tmp")
        with open(tmp, "w") as f:
            f.write("%d\n" % self.port)
        os.rename(tmp, os.path.join(self.dir, "ready"))
        self._ready.set()
        try:
            async with server:
                await stop.wait()
        finally:
            self.store.close()

    # ---- background use from Python ---------------------------------------

    def _run(self):
        async def main():
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            await self.serve(self._stop)
        try:
            asyncio.run(main())
        except Exception as e:  # reported by start()
            self._error = e
            self._ready.set()

    def start(self, timeout=10):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error:
            raise RuntimeError("smtpsink did not start: %r" % self._error)
        return self

    def stop(self, timeout=10):
        if self._loop and self._stop:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread:
            self._thread.join(timeout)

    # ---- reading what arrived ------------------------------------------------

    def messages(self):
        path = os.path.join(self.dir, "index.jsonl")
        if not os.path.exists(path):
            return []
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]

    def message(self, n):
        with open(os.path.join(self.dir, "%08d.eml" % n), "rb") as f:
            return f.read()

    def connections(self):
        path = os.path.join(self.dir, "connections.jsonl")
        if not os.path.exists(path):
            return 0
        with open(path) as f:
            return sum(1 for line in f if line.strip())


def _reply(code, text):
    code = code.strip()
    if len(code) != 3 or not code.isdigit():
        raise argparse.ArgumentTypeError("bad reply code %r" % code)
    return ("%s %s" % (code, text.strip())).strip()


def main(argv=None):
    p = argparse.ArgumentParser(description="SMTP sink for tests")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--dir", required=True)
    p.add_argument("--auth", help="USER:PASS")
    p.add_argument("--auth-mechs", default="PLAIN,LOGIN")
    p.add_argument("--tls", metavar="CERTDIR")
    p.add_argument("--require-tls", action="store_true")
    p.add_argument("--reply-rcpt", action="append", default=[],
                   metavar="SUBSTR=CODE TEXT")
    p.add_argument("--reply-data", metavar="CODE TEXT")
    p.add_argument("--silent", action="store_true")
    p.add_argument("--drop-after-rcpt", action="store_true")
    p.add_argument("--hostname", default="sink.test")
    a = p.parse_args(argv)

    reply_rcpt = []
    for spec in a.reply_rcpt:
        substr, sep, reply = spec.partition("=")
        if not sep or not substr:
            p.error("--reply-rcpt wants SUBSTR=CODE TEXT")
        code, _, text = reply.strip().partition(" ")
        reply_rcpt.append((substr, _reply(code, text)))
    reply_data = None
    if a.reply_data:
        code, _, text = a.reply_data.strip().partition(" ")
        reply_data = _reply(code, text)
    auth = None
    if a.auth:
        user, sep, password = a.auth.partition(":")
        if not sep:
            p.error("--auth wants USER:PASS")
        auth = (user, password)

    sink = SmtpSink(a.dir, port=a.port, auth=auth,
                    auth_mechs=a.auth_mechs.split(","), tls_dir=a.tls,
                    require_tls=a.require_tls, reply_rcpt=reply_rcpt,
                    reply_data=reply_data, silent=a.silent,
                    drop_after_rcpt=a.drop_after_rcpt, hostname=a.hostname)

    async def run():
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await sink.serve(stop)

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
