"""harness.py - start a private Redis and the daemon, talk to both, check logs.

Every integration test builds an Env: a temp dir with its own redis-server on
a unix socket, a config written from the outside contract (README / the API
brief), and the daemon (SB_BIN, default build/asan/switchboard) on a free
loopback port with its stderr in a log file. Leaving the Env stops both by
PID (SIGTERM, then SIGKILL after a limit) and scans the daemon log: any
sanitizer report fails the test, and so does any error-level line ("<3>" or
more severe) that the test did not declare with expect_errors.

Only the Python 3 standard library is used. Servers are always stopped: by
the Env's __exit__, and by an atexit hook for anything still registered.
"""

import atexit
import fcntl
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

SB_BIN = os.environ.get("SB_BIN", "build/asan/switchboard")
if not os.path.isabs(SB_BIN):
    SB_BIN = os.path.join(ROOT, SB_BIN)
REDIS_SERVER = os.environ.get("SB_REDIS_SERVER", "redis-server")

SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
    "LSAN_OPTIONS": "",
}

SANITIZER_RE = re.compile(
    r"ERROR: AddressSanitizer|runtime error:|LeakSanitizer|"
    r"ERROR: UndefinedBehaviorSanitizer")
ERRLINE_RE = re.compile(r"^<[0-3]>")

# Processes started through this module and not yet reaped: atexit and the
# runner's SIGTERM/alarm handlers stop them.
_LIVE = {}
_LIVE_LOCK = threading.Lock()


class Skip(Exception):
    """Raised by a test that cannot run here; counted as skipped."""


class TestTimeout(BaseException):
    """Raised in the test process when its time is up."""


def timeout(seconds):
    """Decorator: per-test time limit for the runner (default 120 s)."""
    def deco(fn):
        fn.timeout = seconds
        return fn
    return deco


def _register(proc, what):
    with _LIVE_LOCK:
        _LIVE[proc.pid] = (proc, what)


def _unregister(proc):
    with _LIVE_LOCK:
        _LIVE.pop(proc.pid, None)


def stop_process(proc, sig=signal.SIGTERM, limit=10.0):
    """Send sig to one process we started, wait up to limit seconds, then
    SIGKILL it. Returns (returncode, killed)."""
    killed = False
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            killed = True
            try:
                proc.kill()
            except ProcessLookupError:
                pass
            proc.wait(timeout=30)
    _unregister(proc)
    return proc.returncode, killed


def cleanup_all():
    with _LIVE_LOCK:
        items = list(_LIVE.values())
    for proc, _what in items:
        try:
            stop_process(proc, signal.SIGTERM, 5.0)
        except Exception:
            pass


atexit.register(cleanup_all)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def wait_until(pred, limit, step=0.05, what="condition"):
    """Poll pred() until true; AssertionError after limit seconds."""
    deadline = time.monotonic() + limit
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1fs waiting for %s"
                                 % (limit, what))
        time.sleep(step)


# --------------------------------------------------------------------------
# Redis: a private server and a minimal RESP client.

class RedisError(Exception):
    pass


class RespConn:
    """One RESP2 connection over a unix socket; cmd() returns the reply
    (bytes, int, list, None) or raises RedisError for an error reply."""

    def __init__(self, path, timeout=10.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.rf = self.sock.makefile("rb")

    def close(self):
        try:
            self.rf.close()
            self.sock.close()
        except OSError:
            pass

    @staticmethod
    def _enc(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            if isinstance(a, str):
                a = a.encode()
            elif isinstance(a, int):
                a = str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def _read(self):
        line = self.rf.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("redis: connection closed")
        t, rest = line[:1], line[1:-2]
        if t == b"+":
            return rest
        if t == b"-":
            return RedisError(rest.decode(errors="replace"))
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.rf.read(n + 2)
            return data[:-2]
        if t == b"*":
            n = int(rest)
            if n < 0:
                return None
            return [self._read() for _ in range(n)]
        raise ConnectionError("redis: bad reply type %r" % t)

    def cmd(self, *args):
        self.sock.sendall(self._enc(args))
        r = self._read()
        if isinstance(r, RedisError):
            raise r
        return r


class Redis:
    """A private redis-server on a unix socket in dir (AOF, fsync always
    unless told otherwise)."""

    def __init__(self, dir, fsync="always"):
        self.dir = dir
        self.sock = os.path.join(dir, "redis.sock")
        self.fsync = fsync
        self.proc = None
        self._conn = None
        self.starts = 0

    def start(self, limit=10.0):
        self.starts += 1
        log = os.path.join(self.dir, "redis.log")
        args = [REDIS_SERVER, "--port", "0", "--unixsocket", self.sock,
                "--unixsocketperm", "700", "--appendonly", "yes",
                "--appendfsync", self.fsync, "--save", "", "--dir", self.dir,
                "--daemonize", "no", "--logfile", log,
                "--pidfile", os.path.join(self.dir, "redis.pid")]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        _register(self.proc, "redis-server")
        deadline = time.monotonic() + limit
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("redis-server exited with %s (see %s)"
                                     % (self.proc.returncode, log))
            try:
                c = RespConn(self.sock, 2.0)
                try:
                    if c.cmd("PING") == b"PONG":
                        return
                finally:
                    c.close()
            except (OSError, ConnectionError, RedisError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("redis-server not ready in %.0fs" % limit)
            time.sleep(0.05)

    def kill9(self):
        self._drop()
        if self.proc is not None:
            stop_process(self.proc, signal.SIGKILL, 10.0)

    def stop(self):
        self._drop()
        if self.proc is not None:
            stop_process(self.proc, signal.SIGTERM, 10.0)

    def _drop(self):
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def cmd(self, *args):
        """Run one command on a cached connection (reconnects once)."""
        for attempt in (0, 1):
            if self._conn is None:
                self._conn = RespConn(self.sock)
            try:
                return self._conn.cmd(*args)
            except (OSError, ConnectionError):
                self._drop()
                if attempt:
                    raise

    # Helpers on the documented layout.
    def xrange_all(self, key, batch=2000):
        """Every entry of a stream as [(id, {field: value})], str decoded."""
        out = []
        start = "-"
        for _ in range(100000):
            rows = self.cmd("XRANGE", key, start, "+", "COUNT", batch)
            if not rows:
                break
            for eid, flat in rows:
                fields = {}
                for i in range(0, len(flat), 2):
                    fields[flat[i].decode()] = flat[i + 1].decode(
                        errors="replace")
                out.append((eid.decode(), fields))
            if len(rows) < batch:
                break
            start = "(" + rows[-1][0].decode()
        return out

    def hgetall(self, key):
        flat = self.cmd("HGETALL", key) or []
        return {flat[i].decode(): flat[i + 1].decode(errors="replace")
                for i in range(0, len(flat), 2)}


# --------------------------------------------------------------------------
# Secrets: API keys and password hashes made by the daemon itself, cached
# for the whole run (argon2id is slow, more so under ASan).

API_KEYS = {
    "test": "contacts,customers",
    "limited": "notify",
    "boss": "admin",
}
USERS = {
    "alice": ("agent", "alice-Пароль-1"),
    "bob": ("agent", "bob-password-2"),
    "olga": ("operator", "olga-password-3"),
    "root": ("admin", "root-password-4"),
}


def _cache_path():
    d = os.environ.get("SB_TEST_CACHE")
    if not d:
        d = tempfile.mkdtemp(prefix="sb-cache-")
        os.environ["SB_TEST_CACHE"] = d
        atexit.register(shutil.rmtree, d, True)
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, "secrets.json")


def _run_bin(args, input=None, limit=60):
    env = dict(os.environ)
    env.update(SAN_ENV)
    p = subprocess.run([SB_BIN] + args, input=input, capture_output=True,
                       timeout=limit, env=env)
    if p.returncode != 0:
        raise AssertionError("%s %s: exit %d: %s" % (
            SB_BIN, " ".join(args), p.returncode,
            p.stderr.decode(errors="replace")[-2000:]))
    return p.stdout.decode()


def secrets():
    """{"apikeys": {id: {"key","hash","scopes"}},
        "users": {name: {"role","password","hash"}}}"""
    path = _cache_path()
    with open(path + ".lock", "w") as lk:
        fcntl.flock(lk, fcntl.LOCK_EX)
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get("bin") == SB_BIN:
                return data
        except (OSError, ValueError):
            pass
        data = {"bin": SB_BIN, "apikeys": {}, "users": {}}
        for kid, scopes in API_KEYS.items():
            out = _run_bin(["--new-apikey", kid])
            kv = {}
            for line in out.splitlines():
                if "=" in line:
                    k, v = line.split("=", 1)
                    kv[k.strip()] = v.strip()
            if not kv.get("key", "").startswith("sb_%s_" % kid) or \
                    not kv.get("hash"):
                raise AssertionError("--new-apikey output unexpected: %r"
                                     % out)
            data["apikeys"][kid] = {"key": kv["key"], "hash": kv["hash"],
                                    "scopes": scopes}
        for user, (role, pw) in USERS.items():
            out = _run_bin(["--hash-password"],
                           input=(pw + "\n").encode()).strip()
            if not out.startswith("$argon2id$"):
                raise AssertionError("--hash-password output unexpected: %r"
                                     % out)
            data["users"][user] = {"role": role, "password": pw, "hash": out}
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
        return data


# --------------------------------------------------------------------------
# Config.

def base_config(tmp, port, redis_sock):
    """The config as an ordered {section: {key: value}} dict."""
    s = secrets()
    conf = {
        "core": {"log_level": "info", "drain_timeout": "5s",
                 "default_country": "RU", "worker_queue": "64"},
        "http": {"max_body": "1M",
                 "public_url": "http://127.0.0.1:%d" % port},
        "listener main": {"address": "127.0.0.1", "port": str(port)},
        "redis": {"socket": redis_sock, "prefix": "sb:",
                  "connect_timeout": "2s", "command_timeout": "5s"},
        "auth": {"session_idle": "30m", "session_max": "12h",
                 "login_fail_max": "5", "login_fail_window": "15m",
                 "login_ip_fail_max": "20"},
        "file": {"dir": os.path.join(tmp, "outbox")},
        "notify": {"templates": os.path.join(ROOT, "config", "templates")},
    }
    for kid, k in s["apikeys"].items():
        conf["apikey " + kid] = {"hash": k["hash"], "scopes": k["scopes"]}
    for user, u in s["users"].items():
        conf["user " + user] = {"role": u["role"], "password": u["hash"],
                                "display_name": user.capitalize()}
    return conf


def render_config(conf):
    lines = ["# written by tests/integration/harness.py"]
    for sec, keys in conf.items():
        if keys is None:
            continue
        lines.append("")
        lines.append("[%s]" % sec)
        for k, v in keys.items():
            if v is not None:
                lines.append("%s = %s" % (k, v))
    return "\n".join(lines) + "\n"


def merge_config(conf, overrides):
    """overrides: {section: {key: value|None} | None}; None deletes."""
    for sec, keys in (overrides or {}).items():
        if keys is None:
            conf.pop(sec, None)
            continue
        d = conf.setdefault(sec, {})
        for k, v in keys.items():
            if v is None:
                d.pop(k, None)
            else:
                d[k] = v
    return conf


# --------------------------------------------------------------------------
# HTTP client.

class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers  # lower-case names
        self.body = body
        self._json = None

    @property
    def json(self):
        if self._json is None:
            try:
                self._json = json.loads(self.body.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise AssertionError("response is not JSON (%s): %r"
                                     % (e, self.body[:300]))
        return self._json

    def header(self, name):
        return self.headers.get(name.lower())

    def __repr__(self):
        return "<%d %r>" % (self.status, self.body[:300])


class Client:
    """HTTP/1.1 keep-alive client for the daemon (one connection)."""

    def __init__(self, port, token=None, timeout=15.0):
        self.port = port
        self.token = token
        self.timeout = timeout
        self.conn = None
        self.last_used = 0.0
        self.idle_limit = 2.5

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, token=Ellipsis, headers=None,
                retry=None):
        """body: dict/list (JSON), bytes/str (raw) or None. token: Ellipsis
        = the client's, None = no Authorization. retry: resend once on a
        stale keep-alive connection (default: only for GET/HEAD)."""
        if retry is None:
            retry = method in ("GET", "HEAD")
        hdrs = {}
        if token is Ellipsis:
            token = self.token
        if token is not None:
            hdrs["Authorization"] = "Bearer " + token
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
        if body is not None:
            hdrs.setdefault("Content-Type", "application/json")
        if headers:
            hdrs.update(headers)
        # The daemon closes idle keep-alive connections ([http]
        # keepalive_timeout, 5 s by default): open a new one rather than
        # send a POST into a socket the server may be closing.
        if self.conn is not None and \
                time.monotonic() - self.last_used > self.idle_limit:
            self.close()
        for attempt in (0, 1):
            fresh = self.conn is None
            if fresh:
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=hdrs)
                r = self.conn.getresponse()
                data = r.read()
            except (http.client.HTTPException, ConnectionError,
                    BrokenPipeError, socket.timeout, OSError):
                self.close()
                if attempt or fresh or not retry:
                    raise
                continue
            self.last_used = time.monotonic()
            h = {k.lower(): v for k, v in r.getheaders()}
            if r.will_close:
                self.close()
            return Resp(r.status, h, data)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)


def q(s):
    return urllib.parse.quote(s, safe="")


# --------------------------------------------------------------------------
# The daemon.

class Daemon:
    def __init__(self, env, bin=None, wrapper=None):
        self.env = env
        self.bin = bin or SB_BIN
        self.wrapper = wrapper or []
        self.proc = None
        self.logs = []
        self.rcs = []  # (returncode, how) of every instance that ended
        self.extra_env = {}  # added to the daemon's environment at start

    def start(self, ready_limit=30.0):
        n = len(self.logs) + 1
        logpath = os.path.join(self.env.tmp, "daemon-%d.log" % n)
        self.logs.append(logpath)
        env = dict(os.environ)
        env.update(SAN_ENV)
        env.update(self.extra_env)
        self.logf = open(logpath, "ab")
        self.proc = subprocess.Popen(
            self.wrapper + [self.bin, "-c", self.env.conf_path],
            stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
            env=env, cwd=self.env.tmp)
        self.logf.close()
        _register(self.proc, "switchboard")
        if ready_limit:
            self.wait_ready(ready_limit)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, limit=30.0):
        c = Client(self.env.port, timeout=2.0)
        deadline = time.monotonic() + limit
        try:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(
                        "daemon exited with %s before ready:\n%s"
                        % (self.proc.returncode, self.log_tail()))
                try:
                    r = c.get("/readyz")
                    if r.status == 200:
                        return
                except (OSError, http.client.HTTPException):
                    c.close()
                if time.monotonic() > deadline:
                    raise AssertionError("daemon not ready in %.0fs:\n%s"
                                         % (limit, self.log_tail()))
                time.sleep(0.05)
        finally:
            c.close()

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, limit=None):
        """SIGTERM, wait; SIGKILL after limit. Returns the exit code."""
        if self.proc is None:
            return None
        if limit is None:
            limit = self.env.stop_limit
        rc, killed = stop_process(self.proc, signal.SIGTERM, limit)
        self.rcs.append((rc, "killed after SIGTERM" if killed else "SIGTERM"))
        self.proc = None
        return rc

    def kill9(self):
        rc, _ = stop_process(self.proc, signal.SIGKILL, 10.0)
        self.rcs.append((rc, "SIGKILL"))
        self.proc = None
        return rc

    def reap(self, limit):
        """Wait for an exit caused elsewhere (e.g. a signal the test sent)."""
        try:
            self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            return None
        _unregister(self.proc)
        rc = self.proc.returncode
        self.rcs.append((rc, "exited"))
        self.proc = None
        return rc

    def log_text(self):
        out = []
        for p in self.logs:
            try:
                with open(p, "rb") as f:
                    out.append(f.read().decode("utf-8", errors="replace"))
            except OSError:
                pass
        return "".join(out)

    def log_tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])


class Env:
    """with Env() as env: env.client, env.redis, env.daemon, env.port ...

    overrides: config changes (see merge_config). expect_errors: regexes of
    error-level log lines the test provokes on purpose. start_daemon=False
    leaves the daemon for the test to start; start_redis=False leaves Redis
    too (env.redis.start(); a daemon started first with ready_limit=0).
    daemon_env: extra environment variables for the daemon."""

    def __init__(self, overrides=None, expect_errors=(), start_daemon=True,
                 fsync="always", bin=None, wrapper=None, ready_limit=30.0,
                 stop_limit=15.0, check_exit=True, start_redis=True,
                 daemon_env=None):
        self.overrides = overrides
        self.expect = [re.compile(p) for p in expect_errors]
        self.start_daemon = start_daemon
        self.fsync = fsync
        self.bin = bin
        self.wrapper = wrapper
        self.ready_limit = ready_limit
        self.stop_limit = stop_limit
        self.check_exit = check_exit
        self.start_redis = start_redis
        self.daemon_env = dict(daemon_env or {})
        self.clients = []

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix="sb-it-")
        try:
            self.port = free_port()
            self.redis = Redis(self.tmp, self.fsync)
            if self.start_redis:
                self.redis.start()
            self.conf = merge_config(
                base_config(self.tmp, self.port, self.redis.sock),
                self.overrides)
            self.conf_path = os.path.join(self.tmp, "switchboard.conf")
            self.write_config()
            self.daemon = Daemon(self, self.bin, self.wrapper)
            self.daemon.extra_env.update(self.daemon_env)
            if self.start_daemon:
                self.daemon.start(self.ready_limit)
            self.client = self.new_client()
            return self
        except BaseException:
            self._teardown()
            raise

    def write_config(self, conf=None, text=None):
        if text is None:
            text = render_config(conf if conf is not None else self.conf)
        tmp = self.conf_path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, self.conf_path)

    @property
    def apikey(self):
        return secrets()["apikeys"]["test"]["key"]

    def key(self, kid):
        return secrets()["apikeys"][kid]["key"]

    def password(self, user):
        return secrets()["users"][user]["password"]

    def new_client(self, token=Ellipsis, timeout=15.0):
        if token is Ellipsis:
            token = self.apikey
        c = Client(self.port, token, timeout)
        self.clients.append(c)
        return c

    def login(self, user):
        r = self.client.post("/api/v1/login",
                             {"username": user,
                              "password": self.password(user)}, token=None)
        assert r.status == 200, "login %s: %r" % (user, r)
        return r.json["token"]

    def expect_errors(self, *patterns):
        self.expect.extend(re.compile(p) for p in patterns)

    def _teardown(self):
        for c in getattr(self, "clients", []):
            c.close()
        d = getattr(self, "daemon", None)
        if d is not None and d.proc is not None:
            d.stop()
        r = getattr(self, "redis", None)
        if r is not None:
            r.stop()

    def check_logs(self):
        """Problems found in the daemon's logs and exit codes (a list)."""
        problems = []
        text = self.daemon.log_text()
        for line in text.splitlines():
            if SANITIZER_RE.search(line):
                problems.append("sanitizer: " + line.strip())
            elif ERRLINE_RE.match(line) and \
                    not any(p.search(line) for p in self.expect):
                problems.append("unexpected error line: " + line.strip())
        if self.check_exit:
            for rc, how in self.daemon.rcs:
                if how.startswith("SIGTERM") and rc != 0:
                    problems.append("daemon exit code %s after SIGTERM" % rc)
                elif how.startswith("killed"):
                    problems.append("daemon did not exit within %.0fs of "
                                    "SIGTERM" % self.stop_limit)
        return problems

    def __exit__(self, et, ev, tb):
        keep = et is not None
        try:
            self._teardown()
            problems = self.check_logs() if hasattr(self, "daemon") else []
            if problems and et is None:
                keep = True
                raise AssertionError("daemon log/exit check failed:\n  " +
                                     "\n  ".join(problems[:20]))
            if problems:
                sys.stderr.write("also: " + "\n  ".join(problems[:20]) + "\n")
                san = [p for p in problems if p.startswith("sanitizer")]
                if san and issubclass(et, Exception):
                    # The daemon's crash explains the test's error: say so.
                    raise AssertionError("%s (then the test saw %s: %s)" % (
                        san[0], et.__name__, ev)) from ev
        finally:
            if keep or os.environ.get("SB_KEEP_TMP"):
                sys.stderr.write("kept test dir %s\n" % self.tmp)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        return False


# --------------------------------------------------------------------------
# Helpers shared by tests.

def stream_id(s):
    """"1700000000000-3" -> (1700000000000, 3) for ordering."""
    a, _, b = s.partition("-")
    return (int(a), int(b or 0))


def log_by_source(redis, key="sb:log"):
    """{source_id: [entry ids]} over the whole contact log."""
    out = {}
    for eid, f in redis.xrange_all(key):
        sid = f.get("source_id")
        if sid:
            out.setdefault(sid, []).append(eid)
    return out


class Load:
    """Background POST /api/v1/contacts load: nthreads keep-alive clients
    take source ids from a shared counter (up to total) and retry a contact
    whose request failed (connection error or 503) with the same source_id
    until it gets an answer or stop() is called. Records every answer."""

    def __init__(self, env, total, nthreads=4, prefix="load", channel="api",
                 retry_sleep=0.05, time_limit=120.0):
        self.env = env
        self.total = total
        self.nthreads = nthreads
        self.prefix = prefix
        self.channel = channel
        self.retry_sleep = retry_sleep
        self.time_limit = time_limit
        self.lock = threading.Lock()
        self.next = 0
        self.acked = {}        # source_id -> (status, contact id)
        self.statuses = {}     # status -> count
        self.errors = 0        # connection-level failures
        self.unexpected = []   # (source_id, status, body) not 2xx/503
        self.retry_after_missing = 0
        self.stopping = threading.Event()
        self.threads = []

    def body(self, i):
        return {"channel": self.channel, "direction": "in",
                "email": "%s%d@load.example.com" % (self.prefix, i % 500),
                "subject": "load %d" % i, "text": "contact number %d" % i,
                "source_id": "%s-%d" % (self.prefix, i),
                "conversation": "none"}

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def _take(self):
        with self.lock:
            if self.next >= self.total:
                return None
            i = self.next
            self.next += 1
            return i

    def _worker(self):
        c = Client(self.env.port, self.env.apikey, timeout=10.0)
        deadline = time.monotonic() + self.time_limit
        try:
            while not self.stopping.is_set() and \
                    time.monotonic() < deadline:
                i = self._take()
                if i is None:
                    return
                body = self.body(i)
                sid = body["source_id"]
                while not self.stopping.is_set() and \
                        time.monotonic() < deadline:
                    try:
                        r = c.post("/api/v1/contacts", body, retry=False)
                    except (OSError, http.client.HTTPException):
                        c.close()
                        with self.lock:
                            self.errors += 1
                        time.sleep(self.retry_sleep)
                        continue
                    with self.lock:
                        self.statuses[r.status] = \
                            self.statuses.get(r.status, 0) + 1
                    if 200 <= r.status < 300:
                        try:
                            cid = r.json.get("id")
                        except AssertionError:
                            cid = None
                        with self.lock:
                            self.acked[sid] = (r.status, cid)
                        break
                    if r.status == 503:
                        if not r.header("retry-after"):
                            with self.lock:
                                self.retry_after_missing += 1
                        time.sleep(self.retry_sleep)
                        continue
                    with self.lock:
                        self.unexpected.append((sid, r.status, r.body[:200]))
                    break
        finally:
            c.close()

    def start(self):
        for _ in range(self.nthreads):
            t = threading.Thread(target=self._worker, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def join(self, limit=None):
        deadline = time.monotonic() + (limit or self.time_limit + 15)
        for t in self.threads:
            t.join(max(0.1, deadline - time.monotonic()))
        alive = [t for t in self.threads if t.is_alive()]
        if alive:
            self.stopping.set()
            for t in alive:
                t.join(15)
        return not any(t.is_alive() for t in self.threads)

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(20)

    def verify_in_log(self, redis):
        """Every 2xx-acknowledged contact is in sb:log exactly once, and no
        source id of ours appears twice. Returns the source->ids map."""
        by = log_by_source(redis)
        missing = [s for s in self.acked if s not in by]
        dup = {s: v for s, v in by.items()
               if s.startswith(self.prefix + "-") and len(v) != 1}
        assert not missing, "%d acked contacts missing from sb:log, e.g. %s" \
            % (len(missing), missing[:5])
        assert not dup, "%d source ids logged more than once, e.g. %s" % (
            len(dup), list(dup.items())[:3])
        for s, (_st, cid) in self.acked.items():
            if cid is not None:
                assert by[s][0] == cid, \
                    "source %s acked as %s but logged as %s" % (s, cid, by[s])
        return by
