#!/bin/sh
# run-all.sh - everything `make test` checks, after make built build/ (plain)
# and build/asan/ (ASan+UBSan, with the unit tests):
#
#   1. unit tests (build/asan/tests/test_*) via tests/run-unit.sh
#   2. the integration suite (tests/integration/run.py) on build/asan
#   3. the browser tests (tests/browser/run.sh: Debian's chromium driven by
#      playwright-core) on build/asan, when node >= 20 and chromium are there
#   4. the valgrind cycle on the plain build/switchboard
#   5. tests/systemd/check.sh, when present
#   6. a short fuzz smoke run (tests/fuzz/build.sh), when present and clang
#      is installed
#
# Every stage has a time limit; a final summary lists each stage's result.
# Exit status 0 only when no stage failed. Set STAGES="unit integration" to
# run a subset.
cd "$(dirname "$0")/.." || exit 1

PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
: "${STAGES:=unit integration browser valgrind systemd fuzz}"

results=""
failed=0
t_all=$(date +%s)

# stage NAME LIMIT CMD... : run one stage with a time limit, record result.
stage() {
    name=$1
    limit=$2
    shift 2
    echo
    echo "===== $name: $*"
    t0=$(date +%s)
    timeout -k 15 "$limit" "$@"
    rc=$?
    dt=$(( $(date +%s) - t0 ))
    if [ "$rc" -eq 0 ]; then
        res="ok"
    elif [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
        res="FAIL (timed out after ${limit}s)"
        failed=1
    else
        res="FAIL (exit $rc)"
        failed=1
    fi
    results="$results
$(printf '%-12s %-32s %5ss' "$name" "$res" "$dt")"
}

skip() {
    results="$results
$(printf '%-12s %-32s' "$1" "skipped ($2)")"
    echo
    echo "===== $1: skipped ($2)"
}

want() {
    case " $STAGES " in *" $1 "*) return 0 ;; esac
    return 1
}

if want unit; then
    set --
    for f in build/asan/tests/test_*; do
        case "$f" in *.d|*.o) continue ;; esac
        [ -f "$f" ] && set -- "$@" "$f"
    done
    if [ $# -gt 0 ]; then
        stage unit 600 sh tests/run-unit.sh "$@"
    elif ls tests/unit/test_*.c >/dev/null 2>&1; then
        stage unit 5 sh -c 'echo "unit tests not built in build/asan" >&2
            exit 1'
    else
        skip unit "no unit tests"
    fi
fi

if want integration; then
    stage integration 1200 env SB_BIN=build/asan/switchboard \
        "$PY" tests/integration/run.py
fi

if want browser; then
    chromium=${CHROMIUM:-/usr/bin/chromium}
    if ! command -v node >/dev/null 2>&1; then
        skip browser "node not installed (scripts/deps.sh installs it)"
    elif [ ! -x "$chromium" ]; then
        skip browser "$chromium not installed (scripts/deps.sh installs it)"
    elif [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
        skip browser "node $(node --version) is older than 20"
    else
        stage browser 600 env SB_BIN=build/asan/switchboard \
            SB_BROWSER_TIMEOUT=570 sh tests/browser/run.sh
    fi
fi

if want valgrind; then
    if command -v valgrind >/dev/null 2>&1; then
        stage valgrind 600 sh tests/integration/valgrind_cycle.sh \
            build/switchboard
    else
        stage valgrind 5 sh -c 'echo "valgrind not installed" >&2; exit 1'
    fi
fi

if want systemd; then
    if [ -f tests/systemd/check.sh ]; then
        stage systemd 300 sh tests/systemd/check.sh
    else
        skip systemd "tests/systemd/check.sh not present"
    fi
fi

if want fuzz; then
    if [ ! -f tests/fuzz/build.sh ]; then
        skip fuzz "tests/fuzz/build.sh not present"
    elif ! command -v clang >/dev/null 2>&1; then
        skip fuzz "clang not installed"
    else
        stage fuzz 600 env FUZZ_SECONDS=10 sh tests/fuzz/build.sh
    fi
fi

echo
echo "===== summary ($(( $(date +%s) - t_all ))s)"
echo "$results" | sed '/^$/d'
if [ "$failed" -ne 0 ]; then
    echo "run-all: FAILED"
    exit 1
fi
echo "run-all: all passed"
exit 0
