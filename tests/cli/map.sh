#!/usr/bin/env bash
# tests/cli/map.sh -- `mpe map` against a serial reference (the same function
# applied with io.lines in one process) on the edge cases: no trailing
# newline, CRLF, empty lines, a 1 MB line, many lines, empty input; ordered
# and unordered (compared as sorted multisets), stdin and files, chunk sizes,
# exit statuses 0/1/2, the failing line's file and number, --keep-going,
# --json, and a worker that dies. Never asserts timings.
# SPDX-License-Identifier: MIT
set -u
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
run() { timeout 120 "$MPE" "$@"; }

# ---- inputs ---------------------------------------------------------------------
printf 'alpha\nbeta\ngamma' > "$T/nonl.txt"                  # last line without newline
printf 'one\r\ntwo\r\n\r\nthree\r\nfour' > "$T/crlf.txt"     # CRLF, an empty CRLF line, no final newline
printf '\n\n\nx\n\n\ny\n\n' > "$T/empty_lines.txt"
printf 'a\rb\nmid\rdle\r\n' > "$T/inner_cr.txt"             # a \r inside a line stays
: > "$T/empty.txt"
printf '\n' > "$T/one_empty.txt"
"$MPE" -e '
  local f = assert(io.open(arg[1], "wb"))
  f:write("short\n", string.rep("z", 1048576), "\n", "tail\n", string.rep("q", 1048576 + 7))
  f:close()
  f = assert(io.open(arg[2], "wb"))
  for i = 1, 100000 do f:write(i, (i % 3 == 0) and " x\n" or "\n") end
  f:close()' "$T/long.txt" "$T/many.txt"

# The function under test, and the serial reference: io.lines splits the
# lines (it keeps a last line without newline), a trailing \r is removed.
FN='return function(l) if l == "skip" then return nil end return #l .. ":" .. l:sub(1, 12):upper() end'
reference() { # FILE...
    "$MPE" -e '
      local fn = load(arg[1])()
      for i = 2, #arg do
        for l in io.lines(arg[i]) do
          l = l:gsub("\r$", "")
          local r = fn(l)
          if r ~= nil then io.write(r, "\n") end
        end
      end' "$FN" "$@"
}

FILES="nonl crlf empty_lines inner_cr empty one_empty long many"
for f in $FILES; do
    reference "$T/$f.txt" > "$T/$f.ref" || bad "reference for $f"
done

# ---- ordered, files and stdin, worker counts and chunk sizes ---------------------
for f in $FILES; do
    for opts in "-j 1" "-j 2" "-j 2 --chunk-lines 1" "-j 3 --chunk-lines 7" "--chunk-lines 100000"; do
        # shellcheck disable=SC2086
        run map $opts -e "$FN" "$T/$f.txt" > "$T/out" 2> "$T/err"
        rc=$?
        [ $rc -eq 0 ] || bad "$f ($opts): exit $rc: $(head -c 300 "$T/err")"
        cmp -s "$T/out" "$T/$f.ref" || bad "$f ($opts): output differs from the serial reference"
    done
    run map -j 2 -e "$FN" < "$T/$f.txt" > "$T/out" 2> "$T/err" || bad "$f stdin: exit $?"
    cmp -s "$T/out" "$T/$f.ref" || bad "$f stdin: output differs"
    run map -j 2 -e "$FN" - < "$T/$f.txt" > "$T/out" 2> "$T/err" || bad "$f '-': exit $?"
    cmp -s "$T/out" "$T/$f.ref" || bad "$f '-': output differs"
done

# several inputs in order, stdin among them
cat "$T/nonl.ref" "$T/crlf.ref" "$T/many.ref" > "$T/multi.ref"
run map -j 2 --chunk-lines 5 -e "$FN" "$T/nonl.txt" - "$T/many.txt" < "$T/crlf.txt" > "$T/out" \
    || bad "multi: exit $?"
cmp -s "$T/out" "$T/multi.ref" || bad "multi: output differs"

# identity over the 1 MB lines: the output is the input (a newline added at the end)
run map -e 'return function(l) return l end' "$T/long.txt" > "$T/out" || bad "identity long: exit $?"
{ cat "$T/long.txt"; echo; } | cmp -s - "$T/out" || bad "identity long: output differs"

# ---- unordered: the same lines, as a multiset ------------------------------------
for f in many crlf long; do
    run map -j 2 --unordered --chunk-lines 3 -e "$FN" "$T/$f.txt" > "$T/out" || bad "unordered $f: exit $?"
    cmp -s <(sort "$T/out") <(sort "$T/$f.ref") || bad "unordered $f: lines differ"
done

# ---- -f FILE, results of other types ------------------------------------------------
printf 'local k = 10\nreturn function(l) return tonumber(l) * k end\n' > "$T/fn.lua"
printf '1\n2\n3\n' | run map -f "$T/fn.lua" > "$T/out" || bad "-f: exit $?"
[ "$(cat "$T/out")" = "$(printf '10\n20\n30')" ] || bad "-f: got $(cat "$T/out")"
printf 'a\nb\n' | run map -e 'return function(l) return l == "a" end' > "$T/out" || bad "boolean: exit $?"
[ "$(cat "$T/out")" = "$(printf 'true\nfalse')" ] || bad "boolean: got $(cat "$T/out")"
# the function may hold what cannot travel (a file): it never leaves the process tree by copy
printf 'x\n' | run map -e 'local f = io.stderr return function(l) return tostring(io.type(f)) end' \
    > "$T/out" || bad "upvalue file: exit $?"
[ "$(cat "$T/out")" = "file" ] || bad "upvalue file: got $(cat "$T/out")"

# ---- --json ---------------------------------------------------------------------
printf 'a b\nc\n\n' | run map --json -e 'return function(l)
    local t = {} for w in l:gmatch("%S+") do t[#t + 1] = w end
    if #t == 0 then return nil end
    return { line = l, words = t, n = #t, q = "\"\t" } end' > "$T/out" || bad "json: exit $?"
expected='{"line":"a b","n":2,"q":"\"\t","words":["a","b"]}
{"line":"c","n":1,"q":"\"\t","words":["c"]}'
[ "$(cat "$T/out")" = "$expected" ] || bad "json: got $(cat "$T/out")"
if command -v python3 >/dev/null; then
    python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1])]' "$T/out" || bad "json: not JSON"
fi
printf 'x\n' | run map --json -e 'return function(l) return l end' > "$T/out"
[ "$(cat "$T/out")" = '"x"' ] || bad "json string: got $(cat "$T/out")"
# Issue 10.7: numbers exactly (integers as integers, the shortest float that
# reads back, -0.0 keeps its sign) and bytes that are not UTF-8 replaced by
# U+FFFD, one per byte, so every line is valid JSON.
printf 'x\n' | run map --json -e 'return function() return {math.maxinteger or 2^63, math.mininteger or -2^63, -0.0, 0.1,
    1/3, 1e300, 2^53, 3.0, -7} end' > "$T/out" || bad "json numbers: exit $?"
if [ "$("$MPE" -e 'print(math.type and "5.4" or "jit")')" = 5.4 ]; then
    want='[9223372036854775807,-9223372036854775808,-0.0,0.1,0.3333333333333333,1e+300,9007199254740992,3,-7]'
else # LuaJIT: every number is a double
    want='[9.223372036854776e+18,-9.223372036854776e+18,-0.0,0.1,0.3333333333333333,1e+300,9007199254740992,3,-7]'
fi
[ "$(cat "$T/out")" = "$want" ] || bad "json numbers: got $(cat "$T/out")"
printf 'ok \xff \xc3\xa9 \xe2\x82 \xed\xa0\x80 \xf0\x9f\x98\x80 \xc0\xaf\n' |
    run map --json -e 'return function(l) return {[l] = l} end' > "$T/out" || bad "json utf-8: exit $?"
r=$'\xef\xbf\xbd'
want="ok $r é $r$r $r$r$r 😀 $r$r"
[ "$(cat "$T/out")" = "{\"$want\":\"$want\"}" ] || bad "json utf-8: got $(cat "$T/out")"
if command -v python3 >/dev/null; then
    python3 -c 'import json,sys; [json.loads(l) for l in open(sys.argv[1], encoding="utf-8", errors="strict")]' \
        "$T/out" || bad "json utf-8: not JSON"
fi

# ---- failures: exit 1, the file and line number, output before it ------------------
run map -j 2 --chunk-lines 7 -e 'return function(l) if l == "500" then error("bad line") end return l end' \
    "$T/many.txt" > "$T/out" 2> "$T/err"
rc=$?
[ $rc -eq 1 ] || bad "failure: exit $rc, expected 1"
grep -q "many.txt:500: .*bad line" "$T/err" || bad "failure: message without file:line: $(cat "$T/err")"
[ "$(grep -c . "$T/err")" -eq 1 ] || bad "failure: expected one message: $(cat "$T/err")"
# everything before line 500 was written, in order, and nothing at or after it
"$MPE" -e 'for i = 1, 499 do print((i % 3 == 0) and (i .. " x") or i) end' > "$T/before"
cmp -s "$T/out" "$T/before" || bad "failure: output before the failing line differs"

# a table without --json is an error naming the line
printf 'a\nb\nc\n' | run map -e 'return function(l) if l == "b" then return {} end return l end' \
    > "$T/out" 2> "$T/err"
rc=$?
[ $rc -eq 1 ] || bad "table: exit $rc"
grep -q "(stdin):2: .*table.*--json" "$T/err" || bad "table: message: $(cat "$T/err")"

# --keep-going: every failing line reported, the rest written, exit 1 at the end
run map -j 2 --keep-going --chunk-lines 4 \
    -e 'return function(l) local n = tonumber(l) if n and n % 25000 == 0 then error("no " .. l) end return l end' \
    "$T/many.txt" > "$T/out" 2> "$T/err"
rc=$?
[ $rc -eq 1 ] || bad "keep-going: exit $rc"
# (line 75000 reads "75000 x": not a number, so it passes)
for n in 25000 50000 100000; do
    grep -q "many.txt:$n: .*no $n" "$T/err" || bad "keep-going: line $n not reported: $(cat "$T/err")"
done
[ "$(grep -c . "$T/err")" -eq 3 ] || bad "keep-going: expected 3 messages"
[ "$(wc -l < "$T/out")" -eq 99997 ] || bad "keep-going: expected 99997 lines, got $(wc -l < "$T/out")"
grep -qx 24998 "$T/out" && grep -qx 25001 "$T/out" && grep -qx "75000 x" "$T/out" \
    || bad "keep-going: neighbours of a failing line missing"
! grep -qx 25000 "$T/out" || bad "keep-going: a failing line was written"

# a worker that dies: its lines are reported by range, exit 1
printf '1\n2\n3\n4\n5\n6\n' | run map -j 2 --chunk-lines 2 \
    -e 'return function(l) if l == "4" then os.exit(3) end return l end' > "$T/out" 2> "$T/err"
rc=$?
[ $rc -eq 1 ] || bad "crash: exit $rc"
grep -q "(stdin):3-4: " "$T/err" || bad "crash: message without the line range: $(cat "$T/err")"

# code that does not compile, or does not return a function: exit 1
run map -e 'return function(' < /dev/null > /dev/null 2> "$T/err"
[ $? -eq 1 ] || bad "syntax error: exit status"
grep -q "mpe map: " "$T/err" || bad "syntax error: message"
run map -e 'return 42' < /dev/null > /dev/null 2> "$T/err"
[ $? -eq 1 ] || bad "not a function: exit status"
grep -q "must return a function, got number" "$T/err" || bad "not a function: $(cat "$T/err")"
run map -e 'return function(l) return l end' "$T/does-not-exist" > /dev/null 2> "$T/err"
[ $? -eq 1 ] || bad "missing input: exit status"
grep -q "cannot open" "$T/err" || bad "missing input: message"
run map -e 'return function(l) return l end' "$T" > /dev/null 2> "$T/err"
[ $? -eq 1 ] || bad "directory input: exit status"
grep -q "cannot read $T: Is a directory" "$T/err" || bad "directory input: message: $(cat "$T/err")"

# ---- usage errors: exit 2 ------------------------------------------------------------
for args in "--bogus -e x" "-e x -f y" "" "-j -1 -e x" "-j 1025 -e x" "-j two -e x" "--chunk-lines 0 -e x" "-e"; do
    # shellcheck disable=SC2086
    run map $args < /dev/null > /dev/null 2> "$T/err"
    rc=$?
    [ $rc -eq 2 ] || bad "usage '$args': exit $rc, expected 2"
    grep -q "usage: mpe map" "$T/err" || bad "usage '$args': no usage text"
done
run map --help > "$T/out" 2>&1 || bad "--help: exit $?"
grep -q "usage: mpe map" "$T/out" || bad "--help: no usage text"

# ---- --progress: drawn on stderr when forced, output unchanged -------------------------
MPE_PROGRESS=force run map --progress -j 2 -e "$FN" "$T/many.txt" > "$T/out" 2> "$T/err" \
    || bad "progress: exit $?"
cmp -s "$T/out" "$T/many.ref" || bad "progress: output differs"
grep -q "100,000 lines" "$T/err" || bad "progress: no final count in: $(tr '\r' '\n' < "$T/err" | tail -n 2)"
[ "$(tail -c 1 "$T/err" | od -An -c | tr -d ' ')" = '\n' ] || bad "progress: stderr does not end with a newline"
run map --progress -e "$FN" "$T/many.txt" > "$T/out" 2> "$T/err" || bad "progress off: exit $?"
[ ! -s "$T/err" ] || bad "progress: drawn although stderr is a file"

if [ $fail -ne 0 ]; then exit 1; fi
echo "map: ok"
