"""test_config.py - --check, --dump-config, --example-config."""

import os
import re
import shutil
import subprocess
import tempfile

import harness
from harness import SAN_ENV, SB_BIN, base_config, render_config, secrets


def run(args, limit=60):
    env = dict(os.environ)
    env.update(SAN_ENV)
    p = subprocess.run([SB_BIN] + args, capture_output=True, timeout=limit,
                       env=env, stdin=subprocess.DEVNULL)
    return p.returncode, p.stdout.decode(errors="replace"), \
        p.stderr.decode(errors="replace")


class Tmp:
    def __enter__(self):
        self.dir = tempfile.mkdtemp(prefix="sb-conf-")
        return self

    def __exit__(self, *a):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, name, text):
        p = os.path.join(self.dir, name)
        with open(p, "w") as f:
            f.write(text)
        return p


def good_text(tmp):
    return render_config(base_config(tmp, 18080,
                                     os.path.join(tmp, "redis.sock")))


def line_of(text, needle):
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    raise AssertionError("%r not in config" % needle)


def test_check_good():
    with Tmp() as t:
        p = t.write("good.conf", good_text(t.dir))
        rc, out, err = run(["-c", p, "--check"])
        assert rc == 0, (rc, out, err)
        assert "config ok" in out + err, (out, err)
        assert "ERROR" not in err and "runtime error" not in err, err


def test_check_bad():
    with Tmp() as t:
        good = good_text(t.dir)
        bads = []
        # An unknown key, on a known line.
        txt = good.replace("drain_timeout = 5s",
                           "drain_timeout = 5s\nno_such_key = 1")
        bads.append(("unknown key", txt, line_of(txt, "no_such_key")))
        txt = good.replace("drain_timeout = 5s", "drain_timeout = forever")
        bads.append(("bad duration", txt, line_of(txt, "drain_timeout")))
        txt = good.replace("max_body = 1M", "max_body = lots")
        bads.append(("bad size", txt, line_of(txt, "max_body")))
        txt = good.replace("log_level = info", "log_level = chatty")
        bads.append(("bad enum", txt, line_of(txt, "log_level")))
        txt = good.replace("port = 18080", "port = 99999")
        bads.append(("port out of range", txt, line_of(txt, "port = 99999")))
        # A value checked by the section's check(): config.h says the
        # loader names the section header's line.
        txt = good.replace("role = agent", "role = emperor", 1)
        bads.append(("bad role", txt, (line_of(txt, "role = emperor"),
                                       line_of(txt, "[user alice]"))))
        txt = good.replace("[auth]", "[auth\n")
        bads.append(("broken section header", txt, line_of(txt, "[auth")))
        txt = good.replace("[auth]", "[nosuchsection]")
        bads.append(("unknown section", txt, line_of(txt, "[nosuchsection]")))
        txt = good.replace("log_level = info", "this is not a key value line")
        bads.append(("garbage line", txt, line_of(txt, "this is not")))
        for what, text, line in bads:
            p = t.write("bad.conf", text)
            rc, out, err = run(["-c", p, "--check"])
            assert rc == 1, "%s: exit %d (%s%s)" % (what, rc, out, err)
            lines = line if isinstance(line, tuple) else (line,)
            want = ["%s:%d:" % (p, n) for n in lines]
            assert any(w in err for w in want), \
                "%s: want %s in stderr, got %r" % (what, " or ".join(want),
                                                   err)
            assert "config ok" not in out, (what, out)
        # A missing file is an error too (exit 1, names the file).
        missing = os.path.join(t.dir, "missing.conf")
        rc, out, err = run(["-c", missing, "--check"])
        assert rc == 1 and missing in err, (rc, err)


def test_dump_config_masks_secrets():
    with Tmp() as t:
        p = t.write("good.conf", good_text(t.dir))
        rc, out, err = run(["-c", p, "--dump-config"])
        assert rc == 0, (rc, err)
        s = secrets()
        for k in s["apikeys"].values():
            assert k["hash"] not in out, "API key hash in dump"
        for u in s["users"].values():
            assert u["hash"] not in out, "password hash in dump"
            assert "$argon2id$" not in out, "argon2 string in dump"
        masked = re.findall(r"^\s*(\w+)\s*=\s*\*{8}\s*$", out, re.M)
        assert "password" in masked and "hash" in masked, masked
        assert "18080" in out and "max_body" in out, out[:2000]
        # The dump is itself a config the daemon accepts once the masked
        # secrets are put back.
        conf = base_config(t.dir, 18080, os.path.join(t.dir, "redis.sock"))
        lines, sec = [], None
        for line in out.splitlines():
            m = re.match(r'^\s*\[\s*(\w+)(?:\s+"?([^"\]]+?)"?)?\s*\]', line)
            if m:
                sec = m.group(1) + (" " + m.group(2) if m.group(2) else "")
            m = re.match(r"^\s*(\w+)\s*=\s*\*{8}\s*$", line)
            if m:
                line = "%s = %s" % (m.group(1), conf[sec][m.group(1)])
            lines.append(line)
        dump = t.write("dump.conf", "\n".join(lines) + "\n")
        rc, out2, err2 = run(["-c", dump, "--check"])
        assert rc == 0, "dump does not --check: %s" % err2


def test_example_config():
    rc, out, err = run(["--example-config"])
    assert rc == 0, (rc, err)
    for sec in ("[core]", "[http]", "[redis]", "[auth]"):
        assert sec in out, "example lacks " + sec
    for key in ("log_level", "drain_timeout", "max_body", "login_fail_max"):
        assert key in out, "example lacks " + key
    # config/switchboard.conf is the documented reference: it must be what
    # the tables say today (regenerate with --example-config).
    ref = os.path.join(os.path.dirname(__file__), "..", "..", "config",
                       "switchboard.conf")
    with open(ref, encoding="utf-8") as f:
        assert f.read() == out, \
            "config/switchboard.conf is stale: run " \
            "build/switchboard --example-config > config/switchboard.conf"


def test_tools():
    """--new-apikey and --hash-password (via the harness cache)."""
    s = secrets()
    k = s["apikeys"]["test"]
    assert re.fullmatch(r"sb_test_[A-Za-z0-9_-]{16,}", k["key"]), k["key"]
    assert re.fullmatch(r"[0-9a-f]{32,}", k["hash"]), k["hash"]
    assert k["hash"] != s["apikeys"]["limited"]["hash"]
    u = s["users"]["alice"]["hash"]
    assert u.startswith("$argon2id$v=19$"), u
    # Same password twice: different salts.
    p = subprocess.run([harness.SB_BIN, "--hash-password"],
                       input=(s["users"]["alice"]["password"] + "\n").encode(),
                       capture_output=True, timeout=60,
                       env=dict(os.environ, **SAN_ENV))
    assert p.returncode == 0 and p.stdout.decode().strip() != u, p
