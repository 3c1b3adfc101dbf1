"""test_kannel_rig.py - the Kannel fixture (kannel.py) against real Kannel.

No switchboard here: these tests prove the fixture the SMS driver tests
build on. Each test starts httpsink.py (the MO post-url and dlr-url
target) and a private Kannel (bearerbox + smsbox + fakesmsc) on free
127.0.0.1 ports in a temp dir, and stops both by PID at the end, failed or
not. Covered: sendsms of ASCII and Cyrillic (charset=UTF-8, coding=2)
reaching fakesmsc intact; MO (ASCII, short and long Cyrillic, UTF-16BE or
recoded UTF-8 body) reaching the sink with from/to/text/coding that decode
to the original; delivery reports with %d on a dlr-url; stop and restart
keeping both directions working and the MT log. Skipped, with the reason,
where the kannel packages are not installed.
"""

import http.client
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse

import harness
import kannel
from harness import timeout, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
FROM = "+79161234567"
SHORT = "4242"
ASCII = "Hello & welcome: 100% + more"
CYR = "Привет, мир! Заказ №5 ёЁ"
CYR70 = ("Длинное сообщение на русском языке: ровно семьдесят символов "
         "тут!! Ок.")


class Sink:
    """httpsink.py on a free loopback port, stopped by PID."""

    def __init__(self):
        self.proc = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "httpsink.py"), "--port",
             "0"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL)
        harness._register(self.proc, "httpsink")
        ready, _, _ = select.select([self.proc.stdout], [], [], 15.0)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.close()
            raise AssertionError("httpsink did not start: %r" % line)
        self.port = int(line)
        self.url = "http://127.0.0.1:%d" % self.port

    def requests(self, path_prefix=""):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            c.request("GET", "/_requests")
            r = c.getresponse()
            body = r.read()
            assert r.status == 200, "httpsink: %d" % r.status
        finally:
            c.close()
        return [x for x in json.loads(body)
                if x["path"].startswith(path_prefix)]

    def close(self):
        harness.stop_process(self.proc, signal.SIGTERM, 5.0)
        self.proc.stdout.close()


class Rig:
    """A temp dir, a sink and a Kannel posting MO to <sink>/mo."""

    def __init__(self, **opts):
        reason = kannel.available()
        if reason:
            raise harness.Skip("Kannel not installed: " + reason)
        self.tmp = tempfile.mkdtemp(prefix="sb-kannel-")
        self.sink = None
        self.k = None
        try:
            self.sink = Sink()
            self.k = kannel.Kannel(self.tmp, self.sink.url + "/mo?k=s1",
                                   **opts)
        except BaseException:
            self.close()
            raise

    def close(self):
        try:
            if self.k is not None:
                self.k.stop()
        finally:
            if self.sink is not None:
                self.sink.close()
            if os.environ.get("SB_KEEP_TMP"):
                print("kept %s" % self.tmp)
            else:
                shutil.rmtree(self.tmp, True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def sendsms(k, frm, to, text, **params):
    """sendsms as the driver will call it; asserts Kannel accepted it."""
    status, body = k.sendsms(frm, to, text, **params)
    assert status == 202 and body.startswith(("0:", "3:")), \
        "sendsms: %d %r" % (status, body)


def wait_mt(k, n, what="MT"):
    return wait_until(lambda: len(k.mt_messages()) >= n and k.mt_messages(),
                      10.0, what="%d %s at fakesmsc (have %d)"
                      % (n, what, len(k.mt_messages())))


def mo_posts(sink, n):
    return wait_until(lambda: len(sink.requests("/mo")) >= n and
                      sink.requests("/mo"), 10.0,
                      what="%d MO POSTs at the sink" % n)


def decode_mo(req):
    """(query dict, text) of one MO POST, text decoded from the body by
    its Content-Type charset."""
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(req["path"]).query,
                                    keep_blank_values=True))
    ctype = req["headers"].get("content-type", "")
    body = req["body"].encode("utf-8", "surrogatepass")
    if "UTF-16BE" in ctype.upper():
        # httpsink stores the body as UTF-8 text (bad bytes replaced):
        # UTF-16BE of Cyrillic is valid "UTF-8" (control chars + ASCII).
        text = body.decode("utf-16-be")
    else:
        text = body.decode("utf-8")
    return q, text


@timeout(60)
def test_mt_ascii_and_cyrillic():
    with Rig() as r:
        k = r.k
        sendsms(k, SHORT, FROM, ASCII)
        sendsms(k, SHORT, FROM, CYR, charset="UTF-8", coding=2)
        sendsms(k, SHORT, "+79160000070", CYR70, charset="UTF-8", coding=2)
        msgs = wait_mt(k, 3)
        assert len(msgs) == 3, msgs
        by_text = {m["text"]: m for m in msgs}
        for text, to, typ in ((ASCII, FROM, "text"), (CYR, FROM, "ucs-2"),
                              (CYR70, "+79160000070", "ucs-2")):
            m = by_text.get(text)
            assert m is not None, "%r not among %r" % (
                text, [x["text"] for x in msgs])
            assert m["from"] == SHORT and m["to"] == to, m
            assert m["type"] == typ, m
        assert by_text[CYR]["raw"] == CYR.encode("utf-16-be")
        # Cyrillic without coding=2 is mangled by Kannel: the driver must
        # set it (this pins the behaviour the fixture documents).
        sendsms(k, SHORT, FROM, "Да", charset="UTF-8", coding=0)
        m = wait_mt(k, 4)[-1]
        assert m["type"] == "text" and m["text"] != "Да", m


@timeout(60)
def test_mo_ascii_and_cyrillic():
    with Rig() as r:
        k, sink = r.k, r.sink
        k.inject_mo(FROM, SHORT, ASCII)
        k.inject_mo("+79160000002", SHORT, CYR)
        k.inject_mo("+79160000003", SHORT, CYR70)  # a long fakesmsc line
        reqs = mo_posts(sink, 3)
        assert len(reqs) == 3, reqs
        got = {}
        for req in reqs:
            assert req["method"] == "POST", req
            q, text = decode_mo(req)
            assert q["k"] == "s1", q  # our own query survives
            assert q["to"] == SHORT and q["smsc"] == "fakemo", q
            assert req["headers"]["x-kannel-from"] == q["from"], req
            assert q["id"] and q["time"] and q["ts"].isdigit(), q
            got[q["from"]] = (q, text)
        q, text = got[FROM]
        assert text == ASCII and q["text"] == ASCII and q["coding"] == "0", q
        assert q["charset"] == "UTF-8", q
        for frm, want in (("+79160000002", CYR), ("+79160000003", CYR70)):
            q, text = got[frm]
            assert text == want, (text, want)
            assert q["coding"] == "2" and q["charset"] == "UTF-16BE", q
            # The query's text is the url-encoded UTF-16BE too.
            req = [x for x in reqs if x["headers"]["x-kannel-from"] == frm]
            qraw = dict(urllib.parse.parse_qsl(
                urllib.parse.urlsplit(req[0]["path"]).query,
                encoding="latin-1"))
            raw = qraw["text"].encode("latin-1")
            assert raw.decode("utf-16-be") == want, raw


@timeout(60)
def test_mo_recode_utf8():
    with Rig(mo_recode=True) as r:
        r.k.inject_mo(FROM, SHORT, CYR)
        req = mo_posts(r.sink, 1)[0]
        q, text = decode_mo(req)
        assert "utf-8" in req["headers"]["content-type"].lower(), req
        assert text == CYR and q["text"] == CYR, (text, q)
        # Recoded, the MO reads like a 7-bit one: coding 0, UTF-8.
        assert q["coding"] == "0" and q["charset"] == "UTF-8", q


@timeout(60)
def test_dlr_url():
    with Rig() as r:
        k, sink = r.k, r.sink
        dlr = (sink.url + "/dlr?attempt=att-42&status=%d&reply=%A&fid=%F"
               "&ts=%T&phone=%p")
        sendsms(k, SHORT, FROM, CYR, charset="UTF-8", coding=2,
                dlr_mask=31, dlr_url=dlr)
        wait_mt(k, 1)

        def states():
            out = []
            for req in sink.requests("/dlr"):
                q = dict(urllib.parse.parse_qsl(
                    urllib.parse.urlsplit(req["path"]).query,
                    keep_blank_values=True))
                out.append(q)
            return out
        got = wait_until(lambda: len(states()) >= 2 and states(), 10.0,
                         what="two DLRs at the sink")
        by = {q["status"]: q for q in got}
        assert set(by) == {"1", "8"}, got
        for q in got:
            assert q["attempt"] == "att-42" and q["phone"] == FROM, q
            assert q["ts"].isdigit(), q
        assert by["8"]["reply"] == "ACK/" and by["8"]["fid"] == "", by
        assert len(by["1"]["fid"]) == 36, by  # a UUID


@timeout(90)
def test_restart_keeps_working():
    with Rig() as r:
        k, sink = r.k, r.sink
        sendsms(k, SHORT, FROM, "before restart")
        k.inject_mo(FROM, SHORT, "mo before")
        wait_mt(k, 1)
        mo_posts(sink, 1)
        old = dict(k.procs)
        k.restart()
        assert k.running() and k.starts == 2
        for name, p in old.items():
            assert p.poll() is not None, "%s %d still running" % (
                name, p.pid)
            assert k.procs[name].pid != p.pid, name
        sendsms(k, SHORT, FROM, CYR + " после", charset="UTF-8", coding=2)
        k.inject_mo(FROM, SHORT, CYR + " после")
        msgs = wait_mt(k, 2)
        assert [m["text"] for m in msgs] == ["before restart",
                                             CYR + " после"], msgs
        reqs = mo_posts(sink, 2)
        assert [decode_mo(x)[1] for x in reqs] == ["mo before",
                                                  CYR + " после"], reqs
        # Queued in bearerbox's store across a restart: an MT while the
        # fakemt link is down, an MO while smsbox is down.
        k.stop_part("fakesmsc-mt")
        wait_until(lambda: not k._link_online(k.admin_status() or "",
                                              "fakemt"), 10.0,
                   what="fakemt offline")
        sendsms(k, SHORT, FROM, "queued MT")
        k.stop_part("smsbox")
        k.inject_mo(FROM, SHORT, "queued MO")
        k.restart()
        msgs = wait_mt(k, 3, "MT incl. the queued one")
        assert msgs[-1]["text"] == "queued MT", msgs
        reqs = mo_posts(sink, 3)
        assert decode_mo(reqs[-1])[1] == "queued MO", reqs
        k.stop()
        assert not k.procs and k.admin_status() is None
