#!/usr/bin/env bash
# tests/cli/doubler.sh -- scripts/examples/doubler.lua prints every child's line
# and then the results 10 20 30 40 50 and 4 in order, with the process names.
# SPDX-License-Identifier: MIT
set -u
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
SRC=${MPE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}

out=$(timeout 60 "$MPE" run "$SRC/scripts/examples/doubler.lua" 2>&1)
rc=$?
expected_tail="Process-1: 10
Process-2: 20
Process-3: 30
Process-4: 40
Process-5: 50
Test: 4"
fail=0
[ "$rc" -eq 0 ] || { echo "FAIL: exit status $rc"; fail=1; }
[ "$(printf '%s\n' "$out" | tail -n 6)" = "$expected_tail" ] || { echo "FAIL: results"; fail=1; }
for line in "5 doubled to 10 by: Process-1" "10 doubled to 20 by: Process-2" \
            "15 doubled to 30 by: Process-3" "20 doubled to 40 by: Process-4" \
            "25 doubled to 50 by: Process-5" "2 doubled to 4 by: Test"; do
    printf '%s\n' "$out" | grep -qxF "$line" || { echo "FAIL: missing line '$line'"; fail=1; }
done
[ "$(printf '%s\n' "$out" | wc -l)" -eq 12 ] || { echo "FAIL: expected 12 lines"; fail=1; }
if [ "$fail" -ne 0 ]; then
    printf 'output:\n%s\n' "$out"
    exit 1
fi
echo "doubler: ok"
