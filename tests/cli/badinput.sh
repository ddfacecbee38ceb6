#!/usr/bin/env bash
# tests/cli/badinput.sh -- the `mpe` command given bad input, table-driven:
# scripts that are missing, dangling or looping symlinks, under a file, with a
# name too long, directories, unreadable (as another user: root reads
# anything), empty, binary garbage, a corrupt precompiled chunk, syntax
# errors, a missing or failing module; the same for `mpe map` (-f files,
# inputs) and `mpe scale`; unknown flags and missing values. Each row asserts
# the exit status and the first line of stderr (exactly, or the part that
# matters); for `mpe run` the line must also equal the interpreter's (lua5.4,
# or luajit for a LuaJIT build) with its name replaced by "mpe". (tests/cli/run.sh covers -j, -e, arg and os.exit.)
# SPDX-License-Identifier: MIT
set -u
# shellcheck source=lib/check.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lib/check.sh"
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
MPE=$(cd "$(dirname "$MPE")" && pwd)/$(basename "$MPE") # we cd below
LUA=${MPE_LUA_INTERP:-lua5.4} # the interpreter mpe is built against (luajit words errors its own way)
T=$(mktemp -d)
trap 'chmod -R u+rwx "$T" 2>/dev/null; rm -rf "$T"' EXIT
cd "$T" || exit 1
have_lua=0
command -v "$LUA" >/dev/null && have_lua=1
luajit=0
[[ $("$MPE" version) == *LuaJIT* ]] && luajit=1

# ---- inputs -------------------------------------------------------------------------
printf 'error("boom")\n' >boom.lua
: >empty.lua
head -c 300 /dev/urandom | tr -d '\033' | sed '1s/^/\x01/' >garbage.lua # never a valid chunk
printf '\033Lua\x54\x00 not really a chunk' >fakebin.lua
printf 'local x = 1\nlocal y = 2\nx = = 3\n' >syntax3.lua
printf 'local t = {\n' >eof.lua
ln -s nowhere.lua dangling.lua
ln -s loop2.lua loop1.lua
ln -s loop1.lua loop2.lua
printf 'require("mpe_badinput_no_such_module")\n' >needs_missing.lua
mkdir mods adir
printf 'local M = {}\nerror("module broke")\nreturn M\n' >mods/brokenmod.lua
printf 'package.path = "./mods/?.lua;" .. package.path\nrequire("brokenmod")\n' >needs_broken.lua
long=$(printf 'a%.0s' $(seq 300)).lua
printf 'return function(l) return l end\n' >fn.lua
printf 'return function(l\n' >fn_syntax.lua
printf 'return {}\n' >fn_table.lua
printf 'error("load boom")\n' >fn_error.lua
printf 'a\nb\n' >in.txt
cp boom.lua secret.lua
cp fn.lua secret_fn.lua
cp in.txt secret.txt
chmod 000 secret.lua secret_fn.lua secret.txt

# row KIND NAME STATUS EXPECTED ARGS...: runs mpe ARGS (stdin /dev/null),
#   KIND "is":  the first stderr line equals EXPECTED;
#   KIND "has": stderr contains EXPECTED.
row() {
    local kind=$1 name=$2 status=$3 expected=$4
    shift 4
    timeout 120 "$MPE" "$@" </dev/null >out 2>err
    local rc=$? first
    first=$(head -n 1 err)
    if [[ $rc != "$status" ]]; then
        bad "$name: exit status" "expected $status, got $rc" "stderr: $(head -c 300 err)"
    else
        ok
    fi
    if [[ $kind == is && $first != "$expected" ]]; then
        bad "$name: message" "expected: $expected" "actual:   $first"
    elif [[ $kind == has && $(cat err) != *"$expected"* ]]; then
        bad "$name: message" "expected to contain: $expected" "actual: $(head -c 300 err)"
    else
        ok
    fi
}

# as_lua NAME SCRIPT: `mpe run SCRIPT` says what lua5.4 says, with mpe: in front.
as_lua() {
    [[ $have_lua == 1 ]] || return 0
    timeout 60 "$MPE" run "$2" </dev/null >/dev/null 2>err
    local m l
    m=$(head -n 1 err)
    timeout 60 "$LUA" "$2" </dev/null >/dev/null 2>lerr
    l=$(head -n 1 lerr)
    if [[ $m == "mpe:${l#"$LUA":}" ]]; then ok; else bad "$1: as $LUA" "$LUA: $l" "mpe:    $m"; fi
}

# ---- mpe run -------------------------------------------------------------------------
row is "run: missing script" 1 "mpe: cannot open nowhere.lua: No such file or directory" run nowhere.lua
as_lua "run: missing script" nowhere.lua
row is "run: dangling symlink" 1 "mpe: cannot open dangling.lua: No such file or directory" run dangling.lua
as_lua "run: dangling symlink" dangling.lua
row is "run: symlink loop" 1 "mpe: cannot open loop1.lua: Too many levels of symbolic links" run loop1.lua
as_lua "run: symlink loop" loop1.lua
row is "run: path under a file" 1 "mpe: cannot open boom.lua/x.lua: Not a directory" run boom.lua/x.lua
as_lua "run: path under a file" boom.lua/x.lua
row has "run: name too long" 1 "mpe: cannot open $long" run "$long"
as_lua "run: name too long" "$long"
row has "run: a directory" 1 "mpe: cannot open adir" run adir
row is "run: empty script" 0 "" run empty.lua
row has "run: binary garbage" 1 "mpe: garbage.lua:1: " run garbage.lua
as_lua "run: binary garbage" garbage.lua
if [[ $luajit == 0 ]]; then # LuaJIT's bytecode signature differs: it reads this as text
    row is "run: corrupt precompiled chunk" 1 "mpe: fakebin.lua: bad binary format (corrupted chunk)" run fakebin.lua
    as_lua "run: corrupt precompiled chunk" fakebin.lua
fi
row is "run: syntax error on line 3" 1 "mpe: syntax3.lua:3: unexpected symbol near '='" run syntax3.lua
as_lua "run: syntax error on line 3" syntax3.lua
row has "run: unfinished table" 1 "mpe: eof.lua:2: " run eof.lua
as_lua "run: unfinished table" eof.lua
row is "run: missing module" 1 "mpe: needs_missing.lua:1: module 'mpe_badinput_no_such_module' not found:" run needs_missing.lua
as_lua "run: missing module" needs_missing.lua
row is "run: failing module" 1 "mpe: ./mods/brokenmod.lua:2: module broke" run needs_broken.lua
as_lua "run: failing module" needs_broken.lua
if command -v luac5.4 >/dev/null && [[ $luajit == 0 ]]; then
    luac5.4 -o compiled.luac boom.lua
    row is "run: precompiled chunk runs" 1 "mpe: boom.lua:1: boom" run compiled.luac
fi

# ---- mpe map -------------------------------------------------------------------------
row is "map: -f missing" 1 "mpe map: cannot open missing.lua: No such file or directory" map -f missing.lua in.txt
row is "map: -f a directory" 1 "mpe map: cannot read adir: Is a directory" map -f adir in.txt
row has "map: -f syntax error" 1 "mpe map: fn_syntax.lua:2: ')' expected near " map -f fn_syntax.lua in.txt
row is "map: -f returns a table" 1 "mpe map: fn_table.lua must return a function, got table" map -f fn_table.lua in.txt
row is "map: -f raises" 1 "mpe map: fn_error.lua:1: load boom" map -f fn_error.lua in.txt
row is "map: -e returns nothing" 1 "mpe map: -e CODE must return a function, got nil" map -e "x = 1" in.txt
row is "map: missing input" 1 "mpe map: cannot open missing.txt: No such file or directory" map -f fn.lua missing.txt
row is "map: second input missing" 1 "mpe map: cannot open missing.txt: No such file or directory" \
    map -f fn.lua in.txt missing.txt
row is "map: unknown flag" 2 "mpe map: unknown option '--frob'" map --frob -f fn.lua
row is "map: -f without a value" 2 "mpe map: -f needs a value" map -f
row is "map: -j swallowing -f" 2 "mpe map: -j needs a worker count from 0 to 1024, got '-f'" map -j -f fn.lua
row is "map: --chunk-lines x" 2 "mpe map: --chunk-lines needs a line count from 1 to 1048576, got 'x'" \
    map --chunk-lines x -f fn.lua
row is "map: both -e and -f" 2 "mpe map: give one of -e CODE and -f FILE, not both" map -e "return print" -f fn.lua

# ---- mpe scale -----------------------------------------------------------------------
row is "scale: missing script" 1 "mpe scale: cannot open missing.lua: No such file or directory" scale missing.lua
row is "scale: a directory" 1 "mpe scale: cannot read adir: Is a directory" scale -j 1 --repeat 1 adir
row has "scale: syntax error" 1 "mpe: syntax3.lua:3: unexpected symbol near '='" scale -j 1 --repeat 1 syntax3.lua
row is "scale: unknown flag" 2 "mpe scale: unknown option '--frob'" scale --frob boom.lua
row is "scale: empty -j" 2 "mpe scale: -j needs worker counts from 0 to 1024 separated by commas, got ''" \
    scale -j "" empty.lua
row is "scale: --repeat x" 2 "mpe scale: --repeat needs a count from 1 to 1000, got 'x'" scale --repeat x empty.lua
row is "scale: --svg into a missing directory" 1 \
    "mpe scale: cannot write $T/nodir/x.svg: No such file or directory" \
    scale -j 1 --repeat 1 --svg "$T/nodir/x.svg" empty.lua
row is "scale: --csv into a missing directory" 1 \
    "mpe scale: cannot write $T/nodir/x.csv: No such file or directory" \
    scale -j 1 --repeat 1 --csv "$T/nodir/x.csv" empty.lua

# ---- the command line itself ------------------------------------------------------------
row is "no command" 2 "usage: mpe run [-j N] script.lua [args...]   run a script ('-' reads it from stdin)"
row is "unknown command" 2 "mpe: unknown command 'frob'" frob
row is "run without a script" 2 "mpe run: give the script to run (or '-' for stdin)" run
row is "run -j without a count" 2 "mpe run: -j needs a worker count from 0 to 1024" run -j

# ---- unreadable files ---------------------------------------------------------------------
# chmod 000 stops nobody when the tests run as root: run those rows as the
# user nobody (setpriv), or say why they are skipped.
AS=()
can=1
if [[ $(id -u) == 0 ]]; then
    if command -v setpriv >/dev/null && setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null; then
        AS=(setpriv --reuid=65534 --regid=65534 --clear-groups)
        chmod 755 "$T"
        chmod 644 fn.lua in.txt boom.lua
    else
        can=0
        echo "note: unreadable-file rows skipped: running as root without setpriv, and root reads mode-000 files" >&2
    fi
fi
if [[ $can == 1 ]]; then
    unreadable() { # NAME STATUS FIRSTLINE ARGS...
        local name=$1 status=$2 expected=$3
        shift 3
        timeout 120 "${AS[@]}" "$MPE" "$@" </dev/null >out 2>err
        local rc=$?
        if [[ $rc == "$status" ]]; then ok; else bad "$name: exit status" "expected $status, got $rc" "$(head -c 300 err)"; fi
        if [[ $(head -n 1 err) == "$expected" ]]; then ok; else bad "$name: message" "expected: $expected" "actual:   $(head -n 1 err)"; fi
    }
    unreadable "run: unreadable script" 1 "mpe: cannot open secret.lua: Permission denied" run secret.lua
    unreadable "map: unreadable -f" 1 "mpe map: cannot open secret_fn.lua: Permission denied" map -f secret_fn.lua in.txt
    unreadable "map: unreadable input" 1 "mpe map: cannot open secret.txt: Permission denied" map -f fn.lua secret.txt
    unreadable "scale: unreadable script" 1 "mpe scale: cannot open secret.lua: Permission denied" \
        scale -j 1 --repeat 1 secret.lua
fi

echo "cli/badinput.sh: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
