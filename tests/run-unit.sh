#!/bin/sh
# run-unit.sh - run cmocka unit-test binaries and summarise.
#
#   sh tests/run-unit.sh build/tests/test_a build/tests/test_b ...
#
# Each binary runs from the repository root (so tests can find fixtures by
# relative path) with a time limit, its output shown in full; the cmocka
# summary lines ("[  PASSED  ]", "[  FAILED  ]") are repeated at the end.
# Exit status: 0 when every binary exited 0, else 1. Sanitizer reports make a
# binary fail even if cmocka itself passed.
orig=$(pwd)
cd "$(dirname "$0")/.." || exit 1

: "${UNIT_TIMEOUT:=300}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}"

if [ $# -eq 0 ]; then
    echo "run-unit: no test binaries given" >&2
    exit 1
fi

tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT INT TERM

pass=0
fail=0
failed=""
summary="$tmp/summary"
: > "$summary"
for bin in "$@"; do
    case "$bin" in
        /*) ;;
        *) bin="$orig/$bin" ;;
    esac
    name=$(basename "$bin")
    case "$name" in
        # A glob like build/asan/tests/test_* also matches make's
        # dependency files: they are not tests.
        *.d|*.o) continue ;;
    esac
    if [ ! -x "$bin" ]; then
        echo "run-unit: $bin: not an executable" >&2
        fail=$((fail + 1))
        failed="$failed $name"
        echo "$name: missing" >> "$summary"
        continue
    fi
    out="$tmp/$name.out"
    echo "=== $name"
    timeout -k 10 "$UNIT_TIMEOUT" "$bin" > "$out" 2>&1
    rc=$?
    cat "$out"
    if grep -q -e "ERROR: AddressSanitizer" -e "runtime error:" \
            -e "LeakSanitizer" "$out"; then
        [ "$rc" -eq 0 ] && rc=98
    fi
    if [ "$rc" -eq 0 ]; then
        pass=$((pass + 1))
        status=ok
    else
        fail=$((fail + 1))
        failed="$failed $name"
        status="FAIL (exit $rc)"
        [ "$rc" -eq 124 ] && status="FAIL (timed out after ${UNIT_TIMEOUT}s)"
    fi
    {
        echo "$name: $status"
        grep -E '^\[ *(PASSED|FAILED|SKIPPED) *\]' "$out" | sed 's/^/    /'
    } >> "$summary"
done

echo
echo "=== unit test summary"
cat "$summary"
echo "unit: $pass passed, $fail failed"
[ -n "$failed" ] && echo "unit: failed:$failed"
[ "$fail" -eq 0 ]
