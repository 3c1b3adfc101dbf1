"""benchlib.py - what the benchmark drivers share (smsbench.py, emailbench.py).

A driver does one run of its stage against a Redis the stage's shell
script started (lib.sh start_redis) and prints "RESULT run=R target=T n=N
done=D secs=S rate=R ..." and "LOG run=R errors=E warnings=W" lines for
the script's table. This module gives it: the paths (ROOT, and
tests/integration on sys.path for harness, kannel, dovecot), setup() (its
name for warn(), SIGTERM -> exit 1), a pipelining RESP client, the
order.shipped XADDs, the daemon on a config of ours (started, waited for,
stopped by PID), CPU accounting from /proc, reading what a file got since
last time, a bounded wait, and the RESULT and LOG lines.
"""

import http.client
import os
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

import dovecot  # noqa: E402
import harness  # noqa: E402
import kannel   # noqa: E402

CARRIER = "CDEK"
NAME = "bench"


def setup(name):
    """The driver's name (warn() says "NAME bench: ..."); SIGTERM (the
    stage's script stopping it) exits 1, through every finally."""
    global NAME
    NAME = name

    def on_term(signum, frame):
        raise SystemExit(1)
    signal.signal(signal.SIGTERM, on_term)


def say(s):
    print(s, flush=True)


def warn(s):
    sys.stderr.write("%s bench: %s\n" % (NAME, s))
    sys.stderr.flush()


# --------------------------------------------------------------------------
# Redis.

class Resp:
    """A pipelining RESP client on the bench's Redis socket."""

    def __init__(self, sock):
        self.c = harness.RespConn(sock, 30.0)

    def cmd(self, *args):
        return self.c.cmd(*args)

    @staticmethod
    def encode(cmds):
        """Commands as one RESP blob: (bytes, how many)."""
        return b"".join(harness.RespConn._enc(a) for a in cmds), len(cmds)

    def send(self, blob, n):
        """blob (n commands) written, the n replies read; raises the first
        error reply."""
        self.c.sock.sendall(blob)
        out = []
        for _ in range(n):
            r = self.c._read()
            if isinstance(r, harness.RedisError):
                raise r
            out.append(r)
        return out

    def pipeline(self, cmds):
        return self.send(*self.encode(cmds))

    def int(self, key):
        v = self.cmd("GET", key)
        return int(v) if v is not None else 0

    def hint(self, key, field):
        v = self.cmd("HGET", key, field)
        return int(v) if v is not None else 0

    def close(self):
        self.c.close()


def shipped(j, field, to, channels):
    """The XADD to sb:notify of order.shipped notification j (order SO-j,
    tracking https://t.example/j) to field (phone, email) = to."""
    data = '{"order":"SO-%d","carrier":"%s",' \
           '"tracking_url":"https://t.example/%d"}' % (j, CARRIER, j)
    return ("XADD", "sb:notify", "*", "event", "order.shipped", field, to,
            "channels", channels, "locale", "en", "data", data)


def chunks(first, count, make, size=1000):
    """make(j) for j = first .. first + count - 1, in lists of size (built
    one list at a time, as they are taken)."""
    end = first + count
    for i in range(first, end, size):
        yield [make(j) for j in range(i, min(end, i + size))]


# --------------------------------------------------------------------------
# The daemon.

class Daemon:
    """The daemon binary sb on DIR/NAME.conf (text written there), cwd DIR,
    its output appended to DIR/switchboard.log (after a "--- NAME.conf"
    line with mark), stopped by PID."""

    def __init__(self, sb, dir, name, text, port, mark=False):
        self.sb = sb
        self.dir = dir
        self.port = port
        self.conf = os.path.join(dir, name + ".conf")
        self.log = os.path.join(dir, "switchboard.log")
        self.mark = mark
        self.proc = None
        with open(self.conf, "w") as f:
            f.write(text)

    def start(self):
        with open(self.log, "ab") as out:
            if self.mark:
                out.write(b"--- %s\n" % os.path.basename(self.conf).encode())
                out.flush()
            self.proc = subprocess.Popen(
                [self.sb, "-c", self.conf], stdin=subprocess.DEVNULL,
                stdout=out, stderr=out, cwd=self.dir,
                preexec_fn=kannel._die_with_parent)
        harness._register(self.proc, "switchboard")
        return self.proc

    def wait_ready(self, limit=30.0, step=0.02):
        """Until GET /readyz answers 200 (True), the daemon exits or limit
        seconds pass (False)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port,
                                               timeout=2)
                c.request("GET", "/readyz")
                ok = c.getresponse().status == 200
                c.close()
                if ok:
                    return True
            except (OSError, http.client.HTTPException):
                pass
            time.sleep(step)
        return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self):
        if self.proc is not None:
            harness.stop_process(self.proc, signal.SIGTERM, 15.0)
            self.proc = None


def daemon_config(port, sock, batch, inflight, www=False, notify=""):
    """The [core], [http], [listener main], [redis] and [notify] sections
    of a bench daemon's config ([http] www_dir with www, lines of notify
    added to [notify]); the stage appends its channels."""
    return """[core]
log_level = warning
drain_timeout = 5s
default_country = RU

[http]
max_body = 1M
public_url = http://127.0.0.1:{port}
{www}
[listener main]
address = 127.0.0.1
port = {port}

[redis]
socket = {sock}
prefix = sb:

[notify]
templates = {root}/config/templates
supersede_window = 0
batch = {batch}
max_inflight = {inflight}
{notify}""".format(port=port, sock=sock, root=ROOT, batch=batch,
                   inflight=inflight, notify=notify,
                   www="www_dir = %s/src/www\n" % ROOT if www else "")


# --------------------------------------------------------------------------
# CPU, waiting, the lines for the table.

def cpu_ticks(pid):
    """utime + stime (+ reaped children's) of a process, in clock ticks."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            st = f.read().rsplit(")", 1)[1].split()
        return int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    except (OSError, IndexError, ValueError):
        return 0


def tree(pid):
    """pid and its descendants (Dovecot's master, imap, login, auth)."""
    return [pid] + dovecot._descendants(pid)


class Cpu:
    """CPU of named processes (or process trees) over an interval, as %
    of one core. pids: {name: [pid, ...]}; trees: {name: root pid}, whose
    descendants are looked up at the start and at the end (a process
    born in between counts from zero)."""

    def __init__(self, pids, trees=None):
        self.pids = {k: list(v) for k, v in pids.items() if v}
        self.trees = dict(trees or {})
        self.hz = os.sysconf("SC_CLK_TCK")
        self.t0 = time.monotonic()
        self.c0 = {}
        for k, v in self.pids.items():
            self.c0[k] = {p: cpu_ticks(p) for p in v}
        for k, root in self.trees.items():
            self.c0[k] = {p: cpu_ticks(p) for p in tree(root)}

    def fields(self):
        """"cpu_NAME=% ..." since the start."""
        dt = max(1e-6, time.monotonic() - self.t0)
        out = []
        for k in list(self.pids) + list(self.trees):
            now = self.pids[k] if k in self.pids else tree(self.trees[k])
            used = sum(max(0, cpu_ticks(p) - self.c0[k].get(p, 0))
                       for p in now) / self.hz
            out.append("cpu_%s=%.0f" % (k, 100.0 * used / dt))
        return " ".join(out)


class Appended:
    """What a growing file (a peer's log or output) got since the last
    read()."""

    def __init__(self, path):
        self.path = path
        self.off = 0

    def read(self):
        try:
            with open(self.path, "rb") as f:
                f.seek(self.off)
                chunk = f.read()
        except OSError:
            return b""
        self.off += len(chunk)
        return chunk


def wait_for(pred, limit, step=0.05):
    """Poll pred() until true or limit seconds; the monotonic time it
    became true, or None."""
    deadline = time.monotonic() + limit
    while True:
        if pred():
            return time.monotonic()
        if time.monotonic() >= deadline:
            return None
        time.sleep(step)


def result(run, target, n, done, t0, t1, tail):
    """Prints "RESULT run=RUN TARGET n=N done=DONE secs=S rate=R TAIL"
    (target: "target=T ...", timed from t0 to t1; secs=-1 rate=0 when t1
    is None). 0, or 1 for a target that did not finish."""
    if t1 is None:
        say("RESULT run=%s %s n=%d done=%d secs=-1 rate=0 %s" % (
            run, target, n, done, tail))
        return 1
    say("RESULT run=%s %s n=%d done=%d secs=%.2f rate=%.0f %s" % (
        run, target, n, done, t1 - t0, n / (t1 - t0), tail))
    return 0


def log_counts(path):
    """(error, warning) lines of a daemon log."""
    errl = warnl = 0
    try:
        with open(path, errors="replace") as f:
            for line in f:
                if line[:3] in ("<0>", "<1>", "<2>", "<3>"):
                    errl += 1
                elif line.startswith("<4>"):
                    warnl += 1
    except OSError:
        pass
    return errl, warnl


def log_result(run, path):
    """The LOG line of a run: its daemon log's error and warning lines."""
    say("LOG run=%s errors=%d warnings=%d" % ((run,) + log_counts(path)))
