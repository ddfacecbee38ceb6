#!/usr/bin/env bash
# tests/cli/examples.sh -- the examples factorize, logloop, squares and imap_order
# run with small sizes and print correct results (their "check:" lines and the
# values computed independently below); then the benchmark harness runs once in
# --quick mode on two workloads without Python (under LuaJIT: skipped, exit 77). Timings are printed by the
# scripts but never checked.
# SPDX-License-Identifier: MIT
set -u
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
SRC=${MPE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
EX=$SRC/scripts/examples

# Exit status 77: ctest reports the test as skipped (SKIP_RETURN_CODE in cmake/tests.cmake).
if [ "${MPE_LUA_INTERP:-lua5.4}" = luajit ]; then
    echo "examples: SKIPPED (the examples and the benchmarks are Lua 5.4 scripts: //, <close>)"
    exit 77
fi

fail=0
# expect NAME OUTPUT LINE...: each LINE must appear as a whole line of OUTPUT.
expect() {
    local name=$1 out=$2
    shift 2
    for line in "$@"; do
        if ! printf '%s\n' "$out" | grep -qxF -- "$line"; then
            echo "FAIL: $name: missing line '$line'"
            fail=1
        fi
    done
}
# run NAME ARGS...: run an example under a timeout; sets $out, fails on a bad exit.
run() {
    local name=$1
    shift
    out=$(timeout 120 "$MPE" run "$EX/$name.lua" "$@" 2>&1)
    local rc=$?
    if [ "$rc" -ne 0 ]; then
        echo "FAIL: $name $*: exit status $rc"
        fail=1
    fi
    printf '%s\n' "$out" | sed "s/^/  $name: /"
}

# 1..1000 holds 2877 prime factors counted with multiplicity (sum of Omega(n)).
run factorize 1000 2
expect factorize "$out" \
    "factors of 1000: {2, 2, 2, 5, 5, 5}" \
    "check: 1000 tables, 2877 prime factors in all" \
    "check: every table multiplies back to its number: true" \
    "check: serial and pool:map agree: true"

# sum over i = 1..100 of log(i + 1) + ... + log(i + 10), summed in that order.
run logloop 100 10 2
expect logloop "$out" \
    "sum: 3828.754419" \
    "check: serial and pool:map agree: true"

run squares 1000 2
expect squares "$out" \
    "check: count 1000 (n = 1000), last square 1000000" \
    "check: sample of serial and pool:map agree: true"

# 3 workers so that the result does not depend on an odd or even count of items per worker.
run squares 9999 3
expect squares "$out" \
    "check: count 9999 (n = 9999), last square 99980001" \
    "check: sample of serial and pool:map agree: true"

# Durations scaled to a tenth: about 0.15 s per mode.
run imap_order 0.1
expect imap_order "$out" \
    "check: map results in input order: true" \
    "check: imap yields every index in input order: true" \
    "check: imap_unordered yields every index once: true"
for mode in map imap imap_unordered; do
    printf '%s\n' "$out" | grep -q "^$mode  *order: " || { echo "FAIL: imap_order: no order line for $mode"; fail=1; }
done

# The benchmark harness: one quick run of two workloads, mpe and serial Lua only.
# It must run and the sides must agree (exit status 0); the figures are not checked.
# Not under the sanitizers: its serial side is stock lua5.4 with this build's mpe.so,
# which an uninstrumented interpreter cannot load.
if [ -n "${MPE_SANITIZE:-}" ]; then
    echo "  bench: skipped under the sanitizers (stock lua5.4 cannot load an instrumented mpe.so)"
else
    out=$(cd "$SRC" && timeout 240 "$MPE" run scripts/bench/run.lua --quick --runs 1 --no-python --no-scale \
          --only factorize,pool_start 2>&1)
    rc=$?
    printf '%s\n' "$out" | sed 's/^/  bench: /'
    [ "$rc" -eq 0 ] || { echo "FAIL: bench harness: exit status $rc"; fail=1; }
    printf '%s\n' "$out" | grep -q "check: .* (all sides agree)" || { echo "FAIL: bench harness: no agreeing check"; fail=1; }
fi

if [ "$fail" -ne 0 ]; then
    exit 1
fi
echo "examples: ok"
