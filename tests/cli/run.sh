#!/usr/bin/env bash
# tests/cli/run.sh -- the `mpe` command's contract: run / run - / -e / version /
# help, `arg` and `...` as lua5.4 sets them (compared with lua5.4's own output),
# error reports, exit statuses (0 ok, 1 script failed, n from os.exit, 2 usage).
# SPDX-License-Identifier: MIT
# Needs env MPE_BIN (ctest sets it) and lua5.4 on PATH.
set -u

MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
LUA=lua5.4
command -v "$LUA" >/dev/null || { echo "run.sh: $LUA not found" >&2; exit 1; }
T=30 # seconds any one command may take
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
pass=0
fail=0
luajit=0
[[ $("$MPE" version) == *LuaJIT* ]] && luajit=1

ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL: $1"
    shift
    for line in "$@"; do echo "      ${line:0:400}"; done
}

# run_mpe ARGS...: runs mpe with stdin from $IN (default /dev/null);
# sets rc, out (stdout), err (stderr).
IN=/dev/null
run_mpe() {
    timeout "$T" "$MPE" "$@" <"$IN" >"$tmp/out" 2>"$tmp/err"
    rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}
run_lua() {
    timeout "$T" "$LUA" "$@" <"$IN" >"$tmp/lout" 2>"$tmp/lerr"
    lrc=$?
    lout=$(cat "$tmp/lout")
    lerr=$(cat "$tmp/lerr")
}

expect_eq() { # NAME EXPECTED ACTUAL
    if [[ "$2" == "$3" ]]; then ok; else bad "$1" "expected: $(printf %q "$2")" "actual:   $(printf %q "$3")"; fi
}
expect_has() { # NAME NEEDLE HAYSTACK
    if [[ "$3" == *"$2"* ]]; then ok; else bad "$1" "expected to contain: $2" "actual: $3"; fi
}
expect_lacks() { # NAME NEEDLE HAYSTACK
    if [[ "$3" != *"$2"* ]]; then ok; else bad "$1" "expected not to contain: $2" "actual: $3"; fi
}
# A bad command line: exit status 2, and on stderr two lines: "mpe run: MESSAGE"
# ("mpe: MESSAGE" outside a subcommand), then the usage with a pointer to the help.
expect_usage() { # NAME MESSAGE ARGS...
    local name=$1 msg=$2 prefix="mpe: " topic=-e
    shift 2
    [[ ${1:-} == run ]] && prefix="mpe run: " topic=run
    run_mpe "$@"
    expect_eq "$name: status" 2 "$rc"
    expect_has "$name: message" "$prefix$msg" "$(head -n 1 <<<"$err")"
    expect_has "$name: usage" "usage: mpe" "$(sed -n 2p <<<"$err")"
    [[ $prefix == "mpe run: " ]] && expect_has "$name: hint" "(more: mpe help $topic)" "$err"
    expect_eq "$name: two lines" 2 "$(wc -l <<<"$err")"
    expect_eq "$name: no stdout" "" "$out"
}

# ---- scripts ------------------------------------------------------------------

# Prints arg[0..#arg] and the main chunk's varargs: identical under lua5.4.
cat >args.lua <<'EOF'
local t = {}
for i = 0, #arg do t[#t + 1] = i .. "=[" .. arg[i] .. "]" end
print("arg", #arg, table.concat(t, " "))
local n, s = select("#", ...), {}
for i = 1, n do s[i] = "[" .. select(i, ...) .. "]" end
print("varargs", n, table.concat(s, " "))
EOF
# Prints the negative indices of arg (the interpreter's own words).
cat >neg.lua <<'EOF'
local t = {}
local i = -1
while arg[i] ~= nil do table.insert(t, 1, i .. "=" .. arg[i]); i = i - 1 end
print(table.concat(t, " "))
EOF
cat >workers.lua <<'EOF'
print(os.getenv("MPE_WORKERS"))
EOF
printf 'error("boom")\n' >boom.lua
printf 'local function f() error("deep") end\nlocal function g() f() end\ng()\n' >deep.lua
printf 'error(setmetatable({}, {__tostring = function() return "custom error object" end}))\n' >tostr.lua
printf 'error({code = 1})\n' >table.lua
printf 'error(nil)\n' >nil.lua
printf 'error(42)\n' >number.lua
printf 'error("no position", 0)\n' >nopos.lua
printf 'x = = 1\n' >syntax.lua
printf 'io.write("partial"); os.exit(%s)\n' 3 >exit3.lua
printf 'os.exit(0)\n' >exit0.lua
printf 'os.exit(255)\n' >exit255.lua
printf 'os.exit(true)\n' >exittrue.lua
printf 'os.exit(false)\n' >exitfalse.lua
printf 'print("before"); error("after")\n' >flush.lua
printf 'return 1, 2, 3\n' >returns.lua
printf '#!/usr/bin/env mpe run\nprint("shebang ok")\n' >shebang.lua
printf 'print(require("mpe").version)\n' >require.lua

# ---- version, help, no arguments ------------------------------------------------

run_mpe version
expect_eq "version: status" 0 "$rc"
expect_eq "version: starts with mpe 0.1.0" "mpe 0.1.0" "${out:0:9}"
run_mpe --version
expect_eq "--version: starts with mpe 0.1.0" "mpe 0.1.0" "${out:0:9}"
run_mpe help
expect_eq "help: status" 0 "$rc"
expect_has "help: usage on stdout" "usage: mpe run [-j N] script.lua" "$out"
expect_eq "help: nothing on stderr" "" "$err"
run_mpe
expect_eq "no arguments: status" 2 "$rc"
expect_has "no arguments: usage" "usage: mpe run" "$err"

# ---- arg and ... compared with lua5.4 -----------------------------------------------

run_lua args.lua a "b c" "" -x --
run_mpe run args.lua a "b c" "" -x --
expect_eq "run: status" 0 "$rc"
expect_eq "run: arg[0..] and ... as lua5.4" "$lout" "$out"
expect_eq "run: arg, literal" $'arg\t5\t0=[args.lua] 1=[a] 2=[b c] 3=[] 4=[-x] 5=[--]\nvarargs\t5\t[a] [b c] [] [-x] [--]' "$out"
run_mpe run neg.lua a
expect_eq "run: negative indices" "-2=$MPE -1=run" "$out"

run_lua args.lua
run_mpe run args.lua
expect_eq "run, no arguments: as lua5.4" "$lout" "$out"

IN=args.lua run_lua - a b
IN=args.lua run_mpe run - a b
expect_eq "run - (stdin): status" 0 "$rc"
expect_eq "run - (stdin): arg and ... as lua5.4" "$lout" "$out"
expect_has "run - (stdin): arg[0] is -" "0=[-]" "$out"
IN=neg.lua run_mpe run - a
expect_eq "run - (stdin): negative indices" "-2=$MPE -1=run" "$out"
IN=/dev/null run_mpe run -
expect_eq "run - with empty stdin: status" 0 "$rc"
printf 'print(1' >"$tmp/bad_stdin.lua"
IN=$tmp/bad_stdin.lua run_mpe run -
expect_eq "run - with a syntax error: status" 1 "$rc"
expect_has "run - with a syntax error: chunk named stdin" "mpe: stdin:1:" "$err"

run_lua -- args.lua p
run_mpe run -- args.lua p
expect_eq "run --: arg and ... as lua5.4" "$lout" "$out"
run_mpe run -- neg.lua
expect_eq "run --: negative indices" "-3=$MPE -2=run -1=--" "$out"

run_mpe run -j 3 neg.lua z
expect_eq "run -j 3: negative indices" "-4=$MPE -3=run -2=-j -1=3" "$out"
run_mpe run -j3 args.lua z
expect_eq "run -j3: arg" $'arg\t1\t0=[args.lua] 1=[z]\nvarargs\t1\t[z]' "$out"

# Many arguments reach the main chunk intact.
many=()
for ((i = 1; i <= 5000; i++)); do many+=("a$i"); done
printf 'print(select("#", ...), #arg, arg[5000], (select(5000, ...)))\n' >many.lua
run_mpe run many.lua "${many[@]}"
expect_eq "run: 5000 arguments" $'5000\t5000\ta5000\ta5000' "$out"

run_mpe run shebang.lua
expect_eq "run: #! line skipped" "shebang ok" "$out"
run_mpe run returns.lua
expect_eq "run: returned values ignored, status 0" 0 "$rc"
run_mpe run require.lua
expect_eq "run: require \"mpe\"" "0.1.0" "$out"

# ---- -j exports MPE_WORKERS ----------------------------------------------------------

run_mpe run -j 3 workers.lua
expect_eq "run -j 3: MPE_WORKERS" "3" "$out"
run_mpe run -j7 workers.lua
expect_eq "run -j7: MPE_WORKERS" "7" "$out"
MPE_WORKERS=5 run_mpe run -j 2 workers.lua
expect_eq "run -j 2 overrides the environment" "2" "$out"
MPE_WORKERS=5 run_mpe run workers.lua
expect_eq "run without -j keeps MPE_WORKERS" "5" "$out"
(unset MPE_WORKERS; run_mpe run workers.lua; echo "$out" >"$tmp/unset")
expect_eq "run without -j: MPE_WORKERS unset" "nil" "$(cat "$tmp/unset")"
run_mpe -j 4 -e 'print(os.getenv("MPE_WORKERS"))'
expect_eq "-j 4 -e: MPE_WORKERS" "4" "$out"
run_mpe run -j 1024 workers.lua
expect_eq "run -j 1024: accepted" "1024" "$out"

# ---- -e ------------------------------------------------------------------------------

run_mpe -e 'print(...)' a "b c"
expect_eq "-e: status" 0 "$rc"
expect_eq "-e: ... are the arguments" $'a\tb c' "$out"
run_mpe -e 'print(#arg, arg[1], arg[2], arg[0], arg[-1], arg[-2] == arg[-2])' x y
expect_eq "-e: arg" $'2\tx\ty\tprint(#arg, arg[1], arg[2], arg[0], arg[-1], arg[-2] == arg[-2])\t-e\ttrue' "$out"
run_mpe -e 'print(#arg, select("#", ...))'
expect_eq "-e without arguments" $'0\t0' "$out"
run_mpe -e 'x = 20' -e 'print(x + 1)'
expect_eq "-e twice: run in order" "21" "$out"
run_mpe -e 'print(require("mpe").version)'
expect_eq "-e: require \"mpe\"" "0.1.0" "$out"
run_mpe -e 'x = = 1'
expect_eq "-e syntax error: status" 1 "$rc"
expect_has "-e syntax error: message" "mpe: (command line):1:" "$err"
run_mpe -e 'error("oops")'
expect_eq "-e error: status" 1 "$rc"
expect_has "-e error: message" "mpe: (command line):1: oops" "$err"
expect_has "-e error: traceback" "stack traceback:" "$err"
run_mpe -e 'os.exit(9)'
expect_eq "-e os.exit(9)" 9 "$rc"
run_mpe -e 'print(1)' -e 'error("second")' -e 'print(3)'
expect_eq "-e: stops at the first failure: status" 1 "$rc"
expect_eq "-e: stops at the first failure: output" "1" "$out"

# ---- script errors: "mpe: <message>", traceback, status 1 -----------------------------

# The first stderr line must be lua5.4's with "lua5.4:" replaced by "mpe:".
compare_error() { # NAME SCRIPT
    run_lua "$2"
    run_mpe run "$2"
    expect_eq "$1: status" 1 "$rc"
    expect_eq "$1: status as lua5.4" "$lrc" "$rc"
    local first=${lerr%%$'\n'*}
    expect_eq "$1: message as lua5.4" "mpe:${first#lua5.4:}" "$(head -n1 <<<"$err")"
}
compare_error "error(string)" boom.lua
expect_eq "error(string): message" "mpe: boom.lua:1: boom" "$(head -n1 <<<"$err")"
expect_has "error(string): traceback" $'stack traceback:\n\t[C]: in function \'error\'\n\tboom.lua:1: in main chunk' "$err"
compare_error "nested error" deep.lua
expect_has "nested error: traceback names the functions" "deep.lua:1: in" "$err"
expect_has "nested error: traceback names the callers" "deep.lua:2: in" "$err"
compare_error "error(table)" table.lua
expect_eq "error(table): message" "mpe: (error object is a table value)" "$(head -n1 <<<"$err")"
compare_error "error(nil)" nil.lua
expect_eq "error(nil): message" "mpe: (error object is a nil value)" "$(head -n1 <<<"$err")"
if [[ $luajit == 0 ]]; then # LuaJIT, as Lua 5.1, adds a position to error(42)
    compare_error "error(42)" number.lua
    expect_eq "error(42): message" "mpe: 42" "$(head -n1 <<<"$err")"
fi
compare_error "error(msg, 0)" nopos.lua
run_mpe run tostr.lua
expect_eq "error with __tostring: status" 1 "$rc"
expect_eq "error with __tostring: its string" "mpe: custom error object" "$(head -n1 <<<"$err")"
run_mpe -e 'error("mpe: already prefixed", 0)'
expect_eq "message starting with mpe: is not prefixed twice" "mpe: already prefixed" "$(head -n1 <<<"$err")"
run_mpe -e 'local p = require("mpe").process(function() error("child boom") end); p:start(); p:result()'
expect_eq "a child's error object: status" 1 "$rc"
expect_has "a child's error object: its string" "mpe: Process-1 (pid " "$(head -n1 <<<"$err")"
expect_has "a child's error object: the child's message" "(command line):1: child boom" "$(head -n1 <<<"$err")"
expect_lacks "a child's error object: no double prefix" "mpe: mpe:" "$err"
compare_error "syntax error" syntax.lua
expect_lacks "syntax error: no traceback" "stack traceback" "$err"

run_mpe run flush.lua
expect_eq "error after print: status" 1 "$rc"
expect_eq "error after print: stdout kept" "before" "$out"
out_and_err=$(timeout "$T" "$MPE" run flush.lua 2>&1 </dev/null)
expect_eq "error after print: stdout comes first" "before" "${out_and_err%%$'\n'*}"

# ---- os.exit ----------------------------------------------------------------------------

run_mpe run exit3.lua
expect_eq "os.exit(3): status" 3 "$rc"
expect_eq "os.exit(3): output flushed" "partial" "$out"
expect_eq "os.exit(3): nothing on stderr" "" "$err"
run_mpe run exit0.lua
expect_eq "os.exit(0)" 0 "$rc"
run_mpe run exit255.lua
expect_eq "os.exit(255)" 255 "$rc"
run_mpe run exittrue.lua
expect_eq "os.exit(true)" 0 "$rc"
run_mpe run exitfalse.lua
expect_eq "os.exit(false)" 1 "$rc"

# ---- missing, unreadable scripts: "cannot open", status 1 --------------------------------

run_lua nonexistent.lua
run_mpe run nonexistent.lua
expect_eq "missing script: status" 1 "$rc"
expect_eq "missing script: message" "mpe: cannot open nonexistent.lua: No such file or directory" "$err"
expect_eq "missing script: as lua5.4" "${lerr/lua5.4:/mpe:}" "$err"
run_mpe run nonexistent.lua a b
expect_eq "missing script with arguments: status" 1 "$rc"
mkdir adir
run_mpe run adir
expect_eq "directory as script: status" 1 "$rc"
expect_has "directory as script: message" "mpe: cannot open adir" "$err"
cp boom.lua secret.lua
chmod 000 secret.lua
if [[ $(id -u) != 0 ]]; then
    run_mpe run secret.lua
    expect_eq "unreadable script: status" 1 "$rc"
    expect_has "unreadable script: message" "mpe: cannot open secret.lua: Permission denied" "$err"
elif command -v setpriv >/dev/null && setpriv --reuid=65534 --regid=65534 --clear-groups true 2>/dev/null; then
    # root reads anything: drop to nobody for this one case.
    chmod 755 "$tmp"
    timeout "$T" setpriv --reuid=65534 --regid=65534 --clear-groups "$MPE" run secret.lua \
        </dev/null >"$tmp/out" 2>"$tmp/err"
    rc=$?
    expect_eq "unreadable script: status" 1 "$rc"
    expect_has "unreadable script: message" "mpe: cannot open secret.lua: Permission denied" "$(cat "$tmp/err")"
else
    echo "note: unreadable-script case skipped (root without setpriv)" >&2
fi

# ---- -j 0: inline pools (every task in the calling process) -----------------------------

cat >inline.lua <<'EOF'
local mpe = require "mpe"
local pool = mpe.pool()
local me = mpe.current_process().pid
local pids = pool:map(function() return mpe.current_process().pid end, {1, 2, 3})
print(pool.workers, pids[1] == me and pids[2] == me and pids[3] == me, os.getenv("MPE_WORKERS"))
EOF
run_mpe run -j 0 inline.lua
expect_eq "-j 0: status" 0 "$rc"
expect_eq "-j 0: an inline pool, tasks in the script's own process" "0	true	0" "$out"
run_mpe run -j0 inline.lua
expect_eq "-j0: an inline pool" "0	true	0" "$out"

# ---- usage errors: status 2 -------------------------------------------------------------

expect_usage "run without a script" "give the script to run" run
expect_usage "run -j 2 without a script" "give the script to run" run -j 2
expect_usage "unknown option" "unknown option '-x'" run -x args.lua
expect_usage "unknown option before -e" "unknown option '-q'" -q -e 'print(1)'
expect_usage "-e given to run" "unknown option '-e'" run -e 'print(1)' args.lua
expect_usage "-j without a number" "-j needs a worker count" run -j
expect_usage "-j with a script, no number" "-j needs a worker count from 0 to 1024, got 'args.lua'" run -j args.lua
expect_usage "-j -1" "-j needs a worker count from 0 to 1024, got '-1'" run -j -1 args.lua
expect_usage "-j abc" "-j needs a worker count from 0 to 1024, got 'abc'" run -j abc args.lua
expect_usage "-j 2x" "-j needs a worker count from 0 to 1024, got '2x'" run -j 2x args.lua
expect_usage "-j 1025" "-j needs a worker count from 0 to 1024, got '1025'" run -j 1025 args.lua
expect_usage "-j ''" "-j needs a worker count from 0 to 1024, got ''" run -j '' args.lua
expect_usage "unknown command" "unknown command 'frob'" frob
expect_usage "a script without run" "unknown command 'args.lua' (to run a script: mpe run args.lua)" args.lua
expect_usage "-e without code" "-e needs a string of Lua code" -e
expect_usage "-j without -e" "nothing to run" -j 2

echo "cli/run.sh: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
