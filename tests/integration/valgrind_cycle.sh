#!/bin/sh
# valgrind_cycle.sh - run the plain daemon under valgrind through start,
# a few requests and SIGTERM; fail on memcheck errors or definite leaks.
#   sh tests/integration/valgrind_cycle.sh [BIN]   (default build/switchboard)
cd "$(dirname "$0")/../.." || exit 1
exec timeout -k 10 600 /usr/bin/python3 tests/integration/valgrind_cycle.py \
    "$@"
