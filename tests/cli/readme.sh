#!/usr/bin/env bash
# tests/cli/readme.sh -- the README stays true: its first example runs and prints
# what its `-->` comments say (under `mpe run`, and under lua5.4 with mpe.so), and
# the test command it gives is the one .ci/run runs.
# SPDX-License-Identifier: MIT
set -u
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
SRC=${MPE_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
BUILD=${MPE_BUILD_DIR:-$(dirname "$MPE")}
README=$SRC/README.md
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# shellcheck source=lib/check.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/check.sh"

# The first ```lua block after "## A first example".
awk '/^## A first example/ { s = 1 } s && /^```lua/ { b = 1; next } b && /^```/ { exit } b' \
    "$README" >"$tmp/first.lua"
check "README has a first example" 1 "$([[ -s $tmp/first.lua ]] && echo 1 || echo 0)"
# What the `-->` comments promise, one line each, blanks squeezed.
sed -n 's/.*--> *//p' "$tmp/first.lua" | tr -s ' \t' ' ' >"$tmp/expected"
check "the example promises some output" 1 "$([[ -s $tmp/expected ]] && echo 1 || echo 0)"

squeeze() { tr -s ' \t' ' '; }
# Under LuaJIT: the README's LuaJIT form of it (the ```lua block after "## Under LuaJIT"),
# which must promise the same output.
awk '/^## Under LuaJIT/ { s = 1 } s && /^```lua/ { b = 1; next } b && /^```/ { exit } b' \
    "$README" >"$tmp/first_luajit.lua"
check "the LuaJIT form promises the same output" "$(cat "$tmp/expected")" \
    "$(sed -n 's/.*--> *//p' "$tmp/first_luajit.lua" | tr -s ' \t' ' ')"
if command -v luajit >/dev/null; then
    check "the LuaJIT form parses under luajit" ok "$(luajit -e "assert(loadfile('$tmp/first_luajit.lua')) print('ok')" 2>&1)"
fi
if [[ ${MPE_LUA_INTERP:-lua5.4} == luajit ]]; then
    out=$(cd "$tmp" && timeout 60 "$MPE" run first_luajit.lua 2>&1 </dev/null)
    check "LuaJIT form under mpe run: status" 0 "$?"
    check "LuaJIT form under mpe run: output" "$(cat "$tmp/expected")" "$(squeeze <<<"$out")"
    if [[ -z ${MPE_SANITIZE:-} ]] && command -v luajit >/dev/null; then
        out=$(cd "$tmp" && LUA_CPATH="$BUILD/?.so;;" timeout 60 luajit first_luajit.lua 2>&1 </dev/null)
        check "LuaJIT form under luajit: status" 0 "$?"
        check "LuaJIT form under luajit: output" "$(cat "$tmp/expected")" "$(squeeze <<<"$out")"
    fi
else
    out=$(cd "$tmp" && timeout 60 "$MPE" run first.lua 2>&1 </dev/null)
    check "first example under mpe run: status" 0 "$?"
    check "first example under mpe run: output" "$(cat "$tmp/expected")" "$(squeeze <<<"$out")"
    if [[ -z ${MPE_SANITIZE:-} ]] && command -v lua5.4 >/dev/null; then
        out=$(cd "$tmp" && LUA_CPATH="$BUILD/?.so;;" timeout 60 lua5.4 first.lua 2>&1 </dev/null)
        check "first example under lua5.4: status" 0 "$?"
        check "first example under lua5.4: output" "$(cat "$tmp/expected")" "$(squeeze <<<"$out")"
    fi
fi

# "Random numbers in workers": the sweep seeded per task prints the same
# figure with 1 and 2 workers; "Shared dicts": the word count prints what its
# `-->` comment says.
section() { awk -v h="$1" '$0 == h { s = 1 } s && /^```lua/ { b = 1; next } b && /^```/ { exit } b' "$README"; }
section "## Random numbers in workers" >"$tmp/sweep.lua"
section "## Shared dicts: data through methods only" >"$tmp/dict.lua"
check "README has the sweep and dict examples" 1 "$([[ -s $tmp/sweep.lua && -s $tmp/dict.lua ]] && echo 1 || echo 0)"
if [[ ${MPE_LUA_INTERP:-lua5.4} != luajit ]]; then
    one=$(cd "$tmp" && timeout 60 "$MPE" run -j 1 sweep.lua 2>&1 </dev/null)
    two=$(cd "$tmp" && timeout 60 "$MPE" run -j 2 sweep.lua 2>&1 </dev/null)
    check "the sweep prints a number" 1 "$([[ $one =~ ^3\.1[0-9]*$ ]] && echo 1 || echo 0)"
    check "the sweep gives the same figure with 1 and 2 workers" "$one" "$two"
    out=$(cd "$tmp" && timeout 60 "$MPE" run dict.lua 2>&1 </dev/null | head -n 1)
    check "the dict example's counts" "$(sed -n 's/.*--> *//p' "$tmp/dict.lua" | squeeze)" "$(squeeze <<<"$out")"
fi

# The test command: the ```sh block after "Run the tests:", run by .ci/run step (a).
cmd=$(awk '/^Run the tests:/ { s = 1 } s && /^```sh/ { b = 1; next } b && /^```/ { exit } b' "$README")
check "README's test command" "ctest --test-dir build --output-on-failure -j2" "$cmd"
ci_args=$(sed -n 's/^run_ctest "(a)[^"]*" //p' "$SRC/.ci/run")
check ".ci/run step (a) runs the README's test command" "$cmd" "ctest $ci_args"

echo "cli/readme.sh: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
