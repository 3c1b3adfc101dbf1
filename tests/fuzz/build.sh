#!/bin/sh
# build.sh - build every tests/fuzz/fuzz_*.c as a libFuzzer binary, then
# run each one briefly.
#
# The core sources (src/*.c and channels/*/*.c, without src/main.c and
# src/sbctl.c, plus the generated Lua script table) are compiled once with
# clang's fuzzer, ASan and UBSan instrumentation into build/fuzz/libsb.a;
# each target links against that archive, so it pulls in only the objects
# it uses. Targets are found by name: adding tests/fuzz/fuzz_NAME.c is all
# it takes. Seeds are copied into a temporary corpus directory (never into
# the repository): ../shared/corpora/json for fuzz_json, mime/ and
# tests/data/mail/*.eml for targets with "mail" or "mime" in their name,
# and tests/fuzz/seeds/NAME/ if it
# exists.
#
# Environment:
#   FUZZ_SECONDS=30     run time per target (-max_total_time)
#   FUZZ_BUILD_ONLY=1   build, do not run
#   FUZZ_TARGETS="a b"  only these targets (names without .c)
#   FUZZ_MAX_LEN=16384  largest input libFuzzer generates
#   FUZZ_CC=clang       compiler
#   SB_FUZZ_SRC="..."   core sources to compile instead of the default set
#   SB_CORPORA=DIR      seed corpora (default: ../shared/corpora)
#
# Prints "fuzz NAME: ok (N runs)" per target, or the crash and where its
# input was saved; exits non-zero if any target failed to build or crashed.
set -eu

cd "$(dirname "$0")/../.."
root=$(pwd)

cc=${FUZZ_CC:-clang}
seconds=${FUZZ_SECONDS:-30}
max_len=${FUZZ_MAX_LEN:-16384}
corpora=${SB_CORPORA:-$root/../shared/corpora}
out=build/fuzz
pkgs="libuv libwebsockets hiredis libcurl jansson libsodium libsystemd
      gmime-3.0 libesmtp-1.0 openssl"

if ! command -v "$cc" >/dev/null 2>&1; then
    echo "fuzz: $cc not found" >&2
    exit 1
fi
pkg_cflags=$(pkg-config --cflags $pkgs)
pkg_libs=$(pkg-config --libs $pkgs)
flags="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
flags="$flags -fno-omit-frame-pointer -g -O1 -std=c11 -D_GNU_SOURCE"
flags="$flags -Wall -Wextra -Wno-unused-parameter -Isrc -I$out/gen"

mkdir -p "$out/obj" "$out/gen" "$out/artifacts"

# --- the core library ---------------------------------------------------
if [ -n "${SB_FUZZ_SRC:-}" ]; then
    srcs=$SB_FUZZ_SRC
else
    srcs=""
    for f in src/*.c channels/*/*.c; do
        [ -e "$f" ] || continue
        case "$f" in
        src/main.c | src/sbctl.c) ;;
        *) srcs="$srcs $f" ;;
        esac
    done
    if [ -f scripts/embed-lua.sh ] && [ -f src/lua_scripts.h ]; then
        set --
        for f in src/lua/lib/*.lua src/lua/*.lua; do
            [ -e "$f" ] && set -- "$@" "$f"
        done
        sh scripts/embed-lua.sh "$@" >"$out/gen/lua_scripts.c.tmp"
        if ! cmp -s "$out/gen/lua_scripts.c.tmp" "$out/gen/lua_scripts.c"; then
            mv "$out/gen/lua_scripts.c.tmp" "$out/gen/lua_scripts.c"
        else
            rm -f "$out/gen/lua_scripts.c.tmp"
        fi
        srcs="$srcs $out/gen/lua_scripts.c"
    fi
fi

# An object is rebuilt when missing or older than its source or any header.
newest_header=$(ls -t src/*.h channels/*/*.h 2>/dev/null | head -n 1 || true)
objs=""
build_failed=0
for f in $srcs; do
    o="$out/obj/$(echo "$f" | tr '/' '_' | sed 's/\.c$/.o/')"
    objs="$objs $o"
    if [ -f "$o" ] && [ "$o" -nt "$f" ] &&
        { [ -z "$newest_header" ] || [ "$o" -nt "$newest_header" ]; }; then
        continue
    fi
    if ! $cc $flags $pkg_cflags -c -o "$o" "$f" 2>"$out/obj/build.log"; then
        echo "fuzz: cannot compile $f:" >&2
        cat "$out/obj/build.log" >&2
        build_failed=1
    fi
done
if [ "$build_failed" -ne 0 ]; then
    echo "fuzz: core sources do not compile (set SB_FUZZ_SRC to narrow)" >&2
    exit 1
fi
rm -f "$out/libsb.a"
ar rcs "$out/libsb.a" $objs

# --- targets --------------------------------------------------------------
targets=""
if [ -n "${FUZZ_TARGETS:-}" ]; then
    targets=$FUZZ_TARGETS
else
    for f in tests/fuzz/fuzz_*.c; do
        [ -e "$f" ] && targets="$targets $(basename "$f" .c)"
    done
fi
if [ -z "$targets" ]; then
    echo "fuzz: no targets in tests/fuzz/" >&2
    exit 1
fi

status=0
built=""
for t in $targets; do
    if $cc $flags $pkg_cflags -o "$out/$t" "tests/fuzz/$t.c" "$out/libsb.a" \
        $pkg_libs -lm 2>"$out/$t.build.log"; then
        built="$built $t"
        if [ "${FUZZ_BUILD_ONLY:-0}" = "1" ]; then
            echo "fuzz $t: built $out/$t"
        fi
    else
        echo "fuzz $t: build failed"
        sed 's/^/    /' "$out/$t.build.log"
        status=1
    fi
done
if [ "${FUZZ_BUILD_ONLY:-0}" = "1" ]; then
    exit $status
fi

# --- runs -----------------------------------------------------------------
tmp=$(mktemp -d "${TMPDIR:-/tmp}/sb-fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

seed_from() { # dir target-dir: copy the regular files of dir, if any
    [ -d "$1" ] || return 0
    find "$1" -type f ! -name LICENSE -exec cp {} "$2"/ \; 2>/dev/null || true
}

for t in $built; do
    corpus="$tmp/$t.corpus"
    log="$tmp/$t.log"
    mkdir -p "$corpus"
    case "$t" in
    fuzz_json) seed_from "$corpora/json" "$corpus" ;;
    *mail* | *mime*)
        seed_from "$corpora/mime" "$corpus"
        # our own corpus too (the messages test_mime checks)
        for f in tests/data/mail/*.eml; do
            [ -e "$f" ] && cp "$f" "$corpus"/
        done
        ;;
    esac
    seed_from "tests/fuzz/seeds/$t" "$corpus"
    if "./$out/$t" -max_total_time="$seconds" -max_len="$max_len" \
        -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$out/artifacts/$t-" "$corpus" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
            tail -n 1)
        echo "fuzz $t: ok (${runs:-?} runs)"
    else
        echo "fuzz $t: CRASH"
        # the report, and the stack frames outside libFuzzer and libc
        keep='ERROR|SUMMARY|runtime error|Test unit written|^ *#[0-9]+ '
        noise='fuzzer::|__sanitizer|libc\.so|libc[-_]start|_start | in main '
        grep -E "$keep" "$log" | grep -v -E "$noise" | head -n 25 |
            sed 's/^/    /'
        cp "$log" "$out/artifacts/$t.log"
        echo "    full log: $out/artifacts/$t.log"
        status=1
    fi
done
exit $status
