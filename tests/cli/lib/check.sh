# tests/cli/lib/check.sh -- sourced by CLI test scripts: check NAME EXPECTED ACTUAL
# counts a pass, or prints the difference and counts a failure ($pass, $fail);
# ok counts a pass; bad NAME [LINE...] counts a failure and prints its lines.
# SPDX-License-Identifier: MIT
pass=0
fail=0
check() { # NAME EXPECTED ACTUAL
    if [[ "$2" == "$3" ]]; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        printf 'FAIL: %s\n  expected: %s\n  actual:   %s\n' "$1" "$2" "$3"
    fi
}

ok() { pass=$((pass + 1)); }
bad() { # NAME [LINE...]
    fail=$((fail + 1))
    echo "FAIL: $1"
    shift
    for line in "$@"; do echo "      ${line:0:400}"; done
}
