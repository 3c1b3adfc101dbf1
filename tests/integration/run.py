#!/usr/bin/python3
"""run.py - the integration test runner (Python 3 stdlib only).

    python3 tests/integration/run.py [-k SUBSTR] [-t SECONDS] [NAME ...]

Discovers tests/integration/test_*.py and runs every test_* function in it
(in file order), each in its own process and session with a time limit: a
test that overruns gets an alarm inside (so its Env stops its servers), then
SIGTERM, then SIGKILL of its whole process group. Prints "ok name (1.2s)",
"FAIL name: reason" or "skip name: reason" per test, then the closing line
"N passed, N failed" (", N skipped" when any). Exit status 1 on any failure.

NAME selects tests whose "module.function" name contains it (as does -k).
Environment: SB_BIN (daemon binary, default build/asan/switchboard),
SB_CORPORA (corpus dir), SB_KEEP_TMP=1 (keep temp dirs), SB_VERBOSE=1 (show
each test's output).
"""

import ast
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_TIMEOUT = 120
CURRENT = [None]  # the running test process


def on_runner_signal(signum, frame):
    """Stopped from outside (e.g. timeout(1)): stop the running test and
    everything in its process group, then leave."""
    p = CURRENT[0]
    if p is not None and p.poll() is None:
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=10)
        except Exception:
            pass
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    print("run.py: interrupted by signal %d" % signum, flush=True)
    os._exit(1)


def discover():
    """[(module, function, timeout)] in file order, without importing."""
    tests = []
    for fn in sorted(os.listdir(HERE)):
        if not (fn.startswith("test_") and fn.endswith(".py")):
            continue
        mod = fn[:-3]
        with open(os.path.join(HERE, fn)) as f:
            tree = ast.parse(f.read(), fn)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and \
                    node.name.startswith("test_"):
                limit = DEFAULT_TIMEOUT
                for d in node.decorator_list:
                    if isinstance(d, ast.Call) and d.args and \
                            getattr(d.func, "attr", getattr(d.func, "id",
                                                            "")) == \
                            "timeout" and isinstance(d.args[0], ast.Constant):
                        limit = d.args[0].value
                tests.append((mod, node.name, limit))
    return tests


def child(name, resultfile, limit):
    """Run one test in this process; write {"status","reason"} as JSON."""
    sys.path.insert(0, HERE)
    os.chdir(os.path.dirname(os.path.dirname(HERE)))
    import harness

    def on_alarm(signum, frame):
        raise harness.TestTimeout("timed out after %ds" % limit)

    def on_term(signum, frame):
        raise harness.TestTimeout("terminated by the runner")

    signal.signal(signal.SIGALRM, on_alarm)
    signal.signal(signal.SIGTERM, on_term)
    signal.alarm(int(limit))
    mod, func = name.split(".", 1)
    res = {"status": "ok", "reason": ""}
    try:
        m = importlib.import_module(mod)
        getattr(m, func)()
    except harness.Skip as e:
        res = {"status": "skip", "reason": str(e)}
    except harness.TestTimeout as e:
        traceback.print_exc()
        res = {"status": "fail", "reason": str(e)}
    except AssertionError as e:
        traceback.print_exc()
        msg = str(e).strip() or "assertion failed"
        res = {"status": "fail", "reason": msg}
    except BaseException as e:
        traceback.print_exc()
        res = {"status": "fail", "reason": "%s: %s" % (type(e).__name__, e)}
    finally:
        signal.alarm(0)
        try:
            harness.cleanup_all()
        except BaseException:
            pass
    with open(resultfile, "w") as f:
        json.dump(res, f)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def run_one(name, limit, cache, verbose):
    fd, resultfile = tempfile.mkstemp(prefix="sb-res-")
    os.close(fd)
    out = tempfile.TemporaryFile()
    env = dict(os.environ)
    env["SB_TEST_CACHE"] = cache
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    t0 = time.monotonic()
    p = subprocess.Popen([sys.executable, os.path.abspath(__file__),
                          "--child", name, resultfile, str(limit)],
                         stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, env=env,
                         start_new_session=True)
    CURRENT[0] = p
    hung = False
    try:
        p.wait(timeout=limit + 30)
    except subprocess.TimeoutExpired:
        hung = True
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pass
    # Whatever the test started and left behind is in its process group.
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if p.poll() is None:
        p.wait(timeout=30)
    CURRENT[0] = None
    elapsed = time.monotonic() - t0
    try:
        with open(resultfile) as f:
            res = json.load(f)
    except (OSError, ValueError):
        res = {"status": "fail",
               "reason": "hung past its time limit" if hung else
               "test process died (exit %s)" % p.returncode}
    os.unlink(resultfile)
    out.seek(0)
    text = out.read().decode("utf-8", errors="replace")
    out.close()
    return res, elapsed, text


def main(argv):
    if len(argv) >= 2 and argv[1] == "--child":
        child(argv[2], argv[3], float(argv[4]))
        return 0
    args = argv[1:]
    filters = []
    limit_override = None
    i = 0
    while i < len(args):
        a = args[i]
        if a == "-k" and i + 1 < len(args):
            filters.append(args[i + 1])
            i += 2
            continue
        if a == "-t" and i + 1 < len(args):
            limit_override = float(args[i + 1])
            i += 2
            continue
        if a in ("-h", "--help"):
            print(__doc__)
            return 0
        filters.append(a)
        i += 1
    signal.signal(signal.SIGTERM, on_runner_signal)
    signal.signal(signal.SIGINT, on_runner_signal)
    signal.signal(signal.SIGHUP, on_runner_signal)
    verbose = bool(os.environ.get("SB_VERBOSE"))
    tests = [t for t in discover()
             if not filters or any(f in "%s.%s" % (t[0], t[1])
                                   for f in filters)]
    cache = tempfile.mkdtemp(prefix="sb-it-cache-")
    passed = failed = skipped = 0
    try:
        for mod, func, limit in tests:
            if limit_override:
                limit = limit_override
            name = "%s.%s" % (mod, func)
            res, elapsed, text = run_one(name, limit, cache, verbose)
            if res["status"] == "ok":
                passed += 1
                print("ok %s (%.1fs)" % (name, elapsed), flush=True)
            elif res["status"] == "skip":
                skipped += 1
                print("skip %s: %s" % (name, res["reason"]), flush=True)
            else:
                failed += 1
                reason = res["reason"].replace("\n", "\n    ")
                print("FAIL %s: %s (%.1fs)" % (name, reason, elapsed),
                      flush=True)
            if (res["status"] == "fail" or verbose) and text.strip():
                lines = text.rstrip().splitlines()[-60:]
                print("    | " + "\n    | ".join(lines), flush=True)
    finally:
        import shutil
        shutil.rmtree(cache, ignore_errors=True)
    line = "%d passed, %d failed" % (passed, failed)
    if skipped:
        line += ", %d skipped" % skipped
    print(line, flush=True)
    return 1 if failed or not tests else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
