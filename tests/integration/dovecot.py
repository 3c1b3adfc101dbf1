"""dovecot.py - a real Dovecot IMAP server for the tests, one per test.

    d = Dovecot(tmpdir, users={"support@example.test": "supportpass"},
                imaps=True)
    try:
        d.url()                     # imap://127.0.0.1:PORT/INBOX
        d.url(tls=True)             # imaps://127.0.0.1:PORTS/INBOX
        d.ca_file                   # the self-signed certificate (PEM)
        d.deliver(raw_bytes)        # into the first user's INBOX
        d.messages()                # [{folder, flags, seen, uid, ...}]
        d.status()                  # {"UIDVALIDITY": .., "UIDNEXT": ..}
        d.stop(); d.start()         # by PID; state kept
        d.reset_uidvalidity()       # the mailbox recreated, same messages
    finally:
        d.stop()

Debian's dovecot-imapd (Dovecot 2.3) runs from a standalone config the
fixture writes into <tmpdir>/dovecot/ (no /etc/dovecot): protocols imap,
every listener on 127.0.0.1 (plain IMAP on a free port; IMAPS with a
certificate made by openssl when imaps=True, and then STARTTLS offered on
the plain port too), users in a passwd-file with {PLAIN} passwords, one
Maildir per user under <tmpdir>/dovecot/mail/<user>/ (folders Maildir++:
".Name" subdirectories), logs in <tmpdir>/dovecot/dovecot.log.

When the tests run as root, every Dovecot process (master, login, auth,
imap) runs as one unprivileged user (run_user, "nobody" by default):
the master is started with that uid/gid, nothing is chrooted, the state
directory is owned by it, and tmpdir gets o+x so that user can reach it
(mkdtemp makes it 0700). A non-root caller runs Dovecot as itself.

The master runs in the foreground (-F) as a child of the test process
(registered with harness._register, SIGKILLed with the test through
PR_SET_PDEATHSIG, in the test's process group), and is stopped by its PID:
SIGTERM, which takes its children (and so every IMAP connection) down.

Delivery writes the raw bytes into the maildir's new/ (tmp/, then a
rename), as an MTA would; it needs no running server, and Dovecot assigns
the UID when a session next syncs the mailbox. mode="lda" runs
dovecot-lda instead (the server must run: LDA looks the user up over the
auth-userdb socket; the UID is assigned at once).

Reading back needs no IMAP: messages() lists the maildir (flags from the
file names, ":2,S" = \\Seen; UIDs and UIDVALIDITY from dovecot-uidlist),
so looking never changes what the daemon under test sees. imap() runs one
command through curl for what only the server knows (STATUS).

Quirks met (Dovecot 2.3.19, curl 7.88 of Debian 12): STATUS of the
mailbox a session has SELECTed answers from that session's view and does
not see mail delivered since (NOOP, or a new SELECT, syncs it); a curl
custom request (-X) returns the server's untagged lines through curl's
header stream, which fails with "Too large response headers" once a
response passes ~130 lines or ~160 KB (its count grows faster than the
bytes), so a FETCH of many or large messages that way cannot succeed.

Only the Python 3 standard library, /usr/sbin/dovecot (the user switch
done by subprocess's user=/group=, not setpriv), openssl and curl are used.
"""

import ctypes
import email
import email.policy
import grp
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time

import harness

DOVECOT = os.environ.get("SB_DOVECOT", "/usr/sbin/dovecot")
DOVECOT_LDA = os.environ.get("SB_DOVECOT_LDA",
                             "/usr/lib/dovecot/dovecot-lda")
DEFAULT_USERS = {"support@example.test": "support-Pass-1"}
_PR_SET_PDEATHSIG = 1
_SEQ = itertools.count(1)
_FLAG_NAMES = {"S": "\\Seen", "R": "\\Answered", "F": "\\Flagged",
               "T": "\\Deleted", "D": "\\Draft"}


def available():
    """None when Dovecot can run here, else the reason it cannot."""
    for path, pkg in ((DOVECOT, "dovecot-imapd"),
                      (DOVECOT_LDA, "dovecot-core")):
        if not os.access(path, os.X_OK):
            return "no %s (apt-get install %s)" % (path, pkg)
    if shutil.which("openssl") is None:
        return "no openssl"
    return None


def _die_with_parent():
    """preexec_fn (runs after the uid switch, so it survives exec)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _port_open(port, limit=1.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(limit)
    try:
        s.connect(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def _check_value(what, v):
    if not v or any(c in v for c in ":\r\n\0 \t{}"):
        raise ValueError("Dovecot %s unusable in a passwd-file: %r"
                         % (what, v))


def parse_flags(name):
    """Maildir file name -> the set of IMAP system flags it carries."""
    _, sep, info = name.rpartition(":2,")
    if not sep:
        return set()
    return {_FLAG_NAMES[c] for c in info if c in _FLAG_NAMES}


def _descendants(pid):
    """PIDs of every process below pid (from /proc)."""
    parent = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parens
        rest = st[st.rfind(")") + 2:].split()
        if len(rest) > 1:
            parent[int(d)] = int(rest[1])
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c, pp in parent.items():
            if pp == p:
                out.append(c)
                todo.append(c)
    return out


class Dovecot:
    """A private Dovecot on loopback; see the module comment.

    users: {login: password} (the first one is the default user);
    imaps: also an IMAPS listener (and STARTTLS) with a self-signed cert;
    run_user: the account Dovecot runs as when we are root;
    start: False writes the config only; limit: start-up wait (s)."""

    def __init__(self, tmpdir, users=None, imaps=False, run_user="nobody",
                 start=True, limit=20.0):
        reason = available()
        if reason:
            raise harness.Skip("Dovecot not installed: " + reason)
        self.tmpdir = tmpdir
        self.dir = os.path.join(tmpdir, "dovecot")
        self.users = dict(users or DEFAULT_USERS)
        for u, p in self.users.items():
            _check_value("user", u)
            _check_value("password", p)
        self.user = next(iter(self.users))
        self.imaps = imaps
        self.limit = limit
        self.proc = None
        self.starts = 0
        if os.getuid() == 0:
            pw = pwd.getpwnam(run_user)
            if pw.pw_uid == 0:
                raise ValueError("Dovecot refuses mail access as root")
            self.uid, self.gid = pw.pw_uid, pw.pw_gid
        else:
            self.uid, self.gid = os.getuid(), os.getgid()
        self.run_user = pwd.getpwuid(self.uid).pw_name
        self.run_group = grp.getgrgid(self.gid).gr_name
        self.imap_port = harness.free_port()
        self.imaps_port = harness.free_port() if imaps else 0
        if imaps and self.imaps_port == self.imap_port:
            raise AssertionError("free_port gave the same port twice")
        self.conf = os.path.join(self.dir, "dovecot.conf")
        self.log_path = os.path.join(self.dir, "dovecot.log")
        self.ca_file = os.path.join(self.dir, "ssl", "cert.pem") \
            if imaps else None
        self._setup()
        if start:
            self.start()

    # ----------------------------------------------------------------------
    # Files.

    def _own(self, path):
        if os.getuid() == 0:
            os.chown(path, self.uid, self.gid)

    def _mkdir(self, path, mode=0o700):
        made = []
        p = path
        while not os.path.isdir(p):
            made.append(p)
            p = os.path.dirname(p)
        for d in reversed(made):
            os.mkdir(d, mode)
            self._own(d)
        return path

    def maildir(self, user=None, folder="INBOX"):
        """The directory of a user's folder (Maildir++: INBOX is the
        root, "Name" is .Name)."""
        root = os.path.join(self.dir, "mail", user or self.user)
        if folder in (None, "", "INBOX"):
            return root
        return os.path.join(root, "." + folder.replace("/", "."))

    def _setup(self):
        if os.getuid() == 0:
            # The run user must be able to search down to self.dir.
            st = os.stat(self.tmpdir)
            os.chmod(self.tmpdir, (st.st_mode & 0o7777) | 0o001)
        self._mkdir(self.dir)
        for sub in ("run", "lib", "home", "mail"):
            self._mkdir(os.path.join(self.dir, sub))
        for u in self.users:
            for sub in ("cur", "new", "tmp"):
                self._mkdir(os.path.join(self.maildir(u), sub))
        self._write_users()
        ssl_lines = "ssl = no\n"
        if self.imaps:
            self._make_cert()
            ssl_lines = ("ssl = yes\nssl_cert = <%s\nssl_key = <%s\n"
                         % (self.ca_file, os.path.join(self.dir, "ssl",
                                                       "key.pem")))
        d = self.dir
        conf = """\
# written by tests/integration/dovecot.py: a standalone Dovecot 2.3
protocols = imap
listen = 127.0.0.1
instance_name = sbtest-dovecot-{port}
base_dir = {d}/run
state_dir = {d}/lib
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log

default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}

auth_mechanisms = plain login
disable_plaintext_auth = no
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/users
  default_fields = uid={uid} gid={gid} home={d}/home/%u
}}
mail_location = maildir:{d}/mail/%u
protocol imap {{
  mail_max_userip_connections = 1000
}}
protocol lda {{
  postmaster_address = postmaster@example.test
}}
{ssl}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {sport}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
service auth-worker {{
  user = {user}
}}
service imap-urlauth-login {{
  chroot =
}}
""".format(d=d, user=self.run_user, group=self.run_group, uid=self.uid,
           gid=self.gid, port=self.imap_port, sport=self.imaps_port,
           ssl=ssl_lines)
        with open(self.conf, "w") as f:
            f.write(conf)
        self._own(self.conf)

    def _write_users(self):
        path = os.path.join(self.dir, "users")
        with open(path, "w") as f:
            for u, p in self.users.items():
                f.write("%s:{PLAIN}%s::::::\n" % (u, p))
        os.chmod(path, 0o600)
        self._own(path)

    def _make_cert(self):
        d = self._mkdir(os.path.join(self.dir, "ssl"))
        key = os.path.join(d, "key.pem")
        p = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
             "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", key, "-out", self.ca_file],
            capture_output=True, timeout=60)
        if p.returncode != 0:
            raise AssertionError("openssl: %s" % p.stderr.decode()[-500:])
        for f in (key, self.ca_file):
            self._own(f)
        os.chmod(self.ca_file, 0o644)

    # ----------------------------------------------------------------------
    # Process.

    def url(self, folder="INBOX", tls=False):
        if tls:
            return "imaps://127.0.0.1:%d/%s" % (self.imaps_port, folder)
        return "imap://127.0.0.1:%d/%s" % (self.imap_port, folder)

    def password(self, user=None):
        return self.users[user or self.user]

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Start the master (foreground) and wait until the listeners
        accept connections."""
        if self.running():
            raise AssertionError("dovecot: already running")
        self.starts += 1
        kw = {}
        if os.getuid() == 0:
            kw = {"user": self.uid, "group": self.gid, "extra_groups": []}
        out = open(os.path.join(self.dir, "dovecot.out"), "ab")
        try:
            self.proc = subprocess.Popen(
                [DOVECOT, "-F", "-c", self.conf], stdin=subprocess.DEVNULL,
                stdout=out, stderr=subprocess.STDOUT, cwd=self.dir,
                preexec_fn=_die_with_parent, **kw)
        finally:
            out.close()
        harness._register(self.proc, "dovecot")
        deadline = time.monotonic() + self.limit
        ports = [self.imap_port] + ([self.imaps_port] if self.imaps else [])
        while True:
            if self.proc.poll() is not None:
                rc = self.proc.returncode
                harness._unregister(self.proc)
                self.proc = None
                raise AssertionError("dovecot exited with %s at start:\n%s"
                                     % (rc, self.log_tail()))
            if all(_port_open(p) for p in ports):
                return
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("dovecot not listening in %.0fs:\n%s"
                                     % (self.limit, self.log_tail()))
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM, limit=10.0):
        """Stop the master by PID and wait until nothing listens on our
        ports any more. Its imap processes are killed too: a stopped
        server drops its clients (left to themselves they may go on
        serving an open session to its end)."""
        if self.proc is None:
            return None
        kids = _descendants(self.proc.pid)
        rc, _ = harness.stop_process(self.proc, sig, limit)
        for pid in kids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self.proc = None
        deadline = time.monotonic() + limit
        while _port_open(self.imap_port, 0.2) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        return rc

    def restart(self, pause=0.0):
        self.stop()
        if pause:
            time.sleep(pause)
        self.start()

    def log_text(self):
        out = []
        for name in ("dovecot.log", "dovecot.out"):
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    out.append(f.read().decode("utf-8", "replace"))
            except OSError:
                pass
        return "".join(out)

    def log_tail(self, n=30):
        return "\n".join(self.log_text().splitlines()[-n:])

    # ----------------------------------------------------------------------
    # Mail in.

    def add_folder(self, folder, user=None):
        """Create a folder (and subscribe nothing: the daemon names it)."""
        md = self.maildir(user, folder)
        for sub in ("cur", "new", "tmp"):
            self._mkdir(os.path.join(md, sub))
        marker = os.path.join(md, "maildirfolder")
        if not os.path.exists(marker):
            open(marker, "w").close()
            self._own(marker)
        return md

    def deliver(self, raw, user=None, folder="INBOX", mode="maildir"):
        """Deliver raw (bytes; LF or CRLF line ends) to a user's folder.
        maildir: tmp/ then rename into new/ (atomic), returns the file
        name; lda: dovecot-lda -e (server must run), returns None."""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        user = user or self.user
        if mode == "lda":
            if folder not in (None, "", "INBOX"):
                raise ValueError("lda mode delivers to INBOX only")
            p = subprocess.run(
                [DOVECOT_LDA, "-c", self.conf, "-e", "-d", user],
                input=raw, capture_output=True, timeout=30)
            if p.returncode != 0:
                raise AssertionError("dovecot-lda exit %d: %s" % (
                    p.returncode, p.stderr.decode(errors="replace")))
            return None
        md = self.maildir(user, folder)
        if not os.path.isdir(os.path.join(md, "new")):
            self.add_folder(folder, user)
        now = time.time()
        name = "%d.M%06dP%dQ%d.sbtest" % (int(now), int(now % 1 * 1e6),
                                          os.getpid(), next(_SEQ))
        tmp = os.path.join(md, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(raw)
        os.chmod(tmp, 0o600)
        self._own(tmp)
        os.rename(tmp, os.path.join(md, "new", name))
        return name

    def deliver_many(self, raws, user=None, folder="INBOX"):
        return [self.deliver(r, user, folder) for r in raws]

    # ----------------------------------------------------------------------
    # Reading back (no IMAP).

    def uidlist(self, user=None, folder="INBOX"):
        """(uidvalidity, next_uid, {basename: uid}) from dovecot-uidlist;
        (None, None, {}) before Dovecot first synced the folder."""
        path = os.path.join(self.maildir(user, folder), "dovecot-uidlist")
        try:
            with open(path, "rb") as f:
                lines = f.read().decode("utf-8", "replace").splitlines()
        except FileNotFoundError:
            return None, None, {}
        if not lines:
            return None, None, {}
        v = n = None
        for tok in lines[0].split()[1:]:
            if tok.startswith("V"):
                v = int(tok[1:])
            elif tok.startswith("N"):
                n = int(tok[1:])
        uids = {}
        for ln in lines[1:]:
            parts = ln.split()
            if not parts or not parts[0].isdigit():
                continue
            base = None
            for tok in parts[1:]:
                if tok.startswith(":"):
                    base = tok[1:]
            if base is None and len(parts) >= 2:
                base = parts[-1]
            if base:
                uids[base] = int(parts[0])
        return v, n, uids

    def folders(self, user=None):
        root = self.maildir(user)
        out = ["INBOX"]
        for n in sorted(os.listdir(root)):
            if n.startswith(".") and n not in (".", "..") and \
                    os.path.isdir(os.path.join(root, n, "cur")):
                out.append(n[1:])
        return out

    def messages(self, user=None, folder=None, parse=True):
        """Every message of a user (of one folder, or of all), as dicts:
        folder, name (file name), where ("new"/"cur"), flags (set of
        IMAP system flags), seen, uid (None until Dovecot listed it),
        raw (bytes), and with parse: message_id (without <>), subject."""
        folders = [folder] if folder else self.folders(user)
        out = []
        for fo in folders:
            md = self.maildir(user, fo)
            for _attempt in range(20):
                try:
                    got = self._read_folder(md, fo, user, parse)
                    break
                except FileNotFoundError:
                    # Dovecot renamed a file (new -> cur, flags) while we
                    # listed: list again.
                    time.sleep(0.01)
            else:
                raise AssertionError("maildir %s kept changing" % md)
            out.extend(got)
        return out

    def _read_folder(self, md, fo, user, parse):
        _v, _n, uids = self.uidlist(user, fo)
        got = []
        for where in ("new", "cur"):
            d = os.path.join(md, where)
            try:
                names = sorted(os.listdir(d))
            except FileNotFoundError:
                continue
            for name in names:
                with open(os.path.join(d, name), "rb") as f:
                    raw = f.read()
                base = name.split(":", 1)[0]
                flags = parse_flags(name)
                m = {"folder": fo, "name": name, "where": where,
                     "flags": flags, "seen": "\\Seen" in flags,
                     "uid": uids.get(base), "raw": raw}
                if parse:
                    hdr = email.message_from_bytes(
                        raw.split(b"\n\n", 1)[0] + b"\n\n",
                        policy=email.policy.compat32)
                    mid = hdr.get("Message-ID") or ""
                    m["message_id"] = str(mid).strip().strip("<>")
                    m["subject"] = str(hdr.get("Subject") or "")
                got.append(m)
        return got

    def by_message_id(self, user=None):
        """{message_id: [message dicts]} over every folder."""
        out = {}
        for m in self.messages(user):
            out.setdefault(m["message_id"], []).append(m)
        return out

    # ----------------------------------------------------------------------
    # The server's view (curl).

    def imap(self, command, user=None, folder="", tls=False, limit=15):
        """Run one IMAP command (curl -X) as user; returns curl's output
        (the untagged responses) as str; AssertionError on failure."""
        user = user or self.user
        args = ["curl", "-sS", "--max-time", str(limit), "-u",
                "%s:%s" % (user, self.users[user]), "--url",
                self.url(folder, tls), "-X", command]
        if tls:
            args[1:1] = ["--cacert", self.ca_file]
        p = subprocess.run(args, capture_output=True, timeout=limit + 5)
        if p.returncode != 0:
            raise AssertionError("curl %s: exit %d: %s" % (
                command, p.returncode, p.stderr.decode(errors="replace")))
        return p.stdout.decode("utf-8", "replace")

    def status(self, user=None, folder="INBOX"):
        """STATUS folder: {"MESSAGES","UIDNEXT","UIDVALIDITY","UNSEEN"}."""
        out = self.imap("STATUS %s (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"
                        % folder, user)
        m = re.search(r"\* STATUS \S+ \(([^)]*)\)", out)
        if not m:
            raise AssertionError("no STATUS answer: %r" % out)
        toks = m.group(1).split()
        return {toks[i]: int(toks[i + 1]) for i in range(0, len(toks) - 1,
                                                         2)}

    def reset_uidvalidity(self, user=None, folder="INBOX", unseen=True):
        """Recreate the folder with the same messages: Dovecot stopped (if
        running), its uidlist and index files removed, the messages kept
        (moved back to new/ without flags when unseen), Dovecot started
        again. Dovecot then gives the folder a new UIDVALIDITY (above the
        old one: it keeps a counter in the mail root) and new UIDs.
        Returns (old, new) UIDVALIDITY."""
        old = self.status(user, folder)["UIDVALIDITY"] if self.running() \
            else self.uidlist(user, folder)[0]
        was = self.running()
        self.stop()
        md = self.maildir(user, folder)
        for n in os.listdir(md):
            if n == "dovecot-uidlist" or n.startswith("dovecot.index") or \
                    n == "dovecot-uidlist.lock":
                os.unlink(os.path.join(md, n))
        if unseen:
            cur = os.path.join(md, "cur")
            for n in os.listdir(cur):
                os.rename(os.path.join(cur, n),
                          os.path.join(md, "new", n.split(":", 1)[0]))
        self.start()
        new = self.status(user, folder)["UIDVALIDITY"]
        if not was:
            self.stop()
        if old is not None and new == old:
            raise AssertionError("UIDVALIDITY unchanged (%d)" % new)
        return old, new
