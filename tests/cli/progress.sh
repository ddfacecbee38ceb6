#!/usr/bin/env bash
# tests/cli/progress.sh -- the progress bar of the pool's map family and of
# `mpe map --progress`: forced (progress = "force", env MPE_PROGRESS=force) it
# is drawn on stderr with done/total, "items" and a final newline; with
# progress = true it is drawn through a pseudo-terminal and not when stderr is
# a file; MPE_PROGRESS=off silences it; an error comes on a line of its own.
# Never asserts timings.
# SPDX-License-Identifier: MIT
set -u
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
run() { timeout 120 "$MPE" "$@"; }
ends_with_newline() { [ "$(tail -c 1 "$1" | od -An -c | tr -d ' ')" = '\n' ]; }

cat > "$T/map.lua" <<'EOF'
local mpe = require "mpe"
local mode = arg[1] == "force" and "force" or arg[1] == "true"
local pool = mpe.pool(2)
local r = pool:map(function(x) local s = 0 for k = 1, 3000 do s = s + k % 7 end return x end,
                   mpe.range(1, 2000), { progress = mode })
print(#r, r[2000])
local n = 0
local function src() n = n + 1 if n <= 50 then return n end end
local got = 0
for i, v in pool:imap(function(x) return x * 2 end, src, { progress = mode, window = 4 }) do got = got + 1 end
print("imap", got)
pool:close() pool:join()
EOF

# forced: drawn into a file
run run "$T/map.lua" force > "$T/out" 2> "$T/err" || bad "force: exit $?"
[ "$(head -n 1 "$T/out")" = "$(printf '2000\t2000')" ] || bad "force: results: $(cat "$T/out")"
tr '\r' '\n' < "$T/err" > "$T/lines"
grep -q "2,000/2,000 items" "$T/lines" || bad "force: no final 2,000/2,000 items: $(cat "$T/lines")"
grep -q "items/s" "$T/lines" || bad "force: no rate"
grep -q "100%" "$T/lines" || bad "force: no 100%"
grep -q "50/50 items" "$T/lines" || bad "force: imap: no final 50/50"
# the imap over an iterator starts with a count only: its total is unknown yet
grep -Eq '^0 items ' "$T/lines" || bad "force: imap: no count-only line: $(cat "$T/lines")"
ends_with_newline "$T/err" || bad "force: stderr does not end with a newline"
[ "$(grep -c '' "$T/err")" -eq 2 ] || bad "force: expected two finished bars (two newlines)"

# progress = true, stderr a file: nothing drawn
run run "$T/map.lua" true > "$T/out" 2> "$T/err" || bad "true: exit $?"
[ ! -s "$T/err" ] || bad "true: drawn although stderr is a file: $(cat "$T/err")"
# ... unless MPE_PROGRESS=force; and MPE_PROGRESS=off silences even "force"
MPE_PROGRESS=force run run "$T/map.lua" true > "$T/out" 2> "$T/err" || bad "env force: exit $?"
grep -q "2,000/2,000 items" "$T/err" || bad "env force: not drawn"
MPE_PROGRESS=off run run "$T/map.lua" force > "$T/out" 2> "$T/err" || bad "env off: exit $?"
[ ! -s "$T/err" ] || bad "env off: drawn"

# a failure: the bar's line is ended before the error message
cat > "$T/fail.lua" <<'EOF'
local mpe = require "mpe"
local pool = mpe.pool(2)
pool:map(function(x) if x == 700 then error("boom at 700") end return x end, mpe.range(1, 1000),
         { progress = "force" })
EOF
run run "$T/fail.lua" > /dev/null 2> "$T/err"
[ $? -eq 1 ] || bad "failure: exit status"
grep -q "^mpe: item 700 failed" "$T/err" || bad "failure: error not on a line of its own: $(cat "$T/err")"

# through a pseudo-terminal: progress = true draws when stderr is the terminal,
# not when it is redirected to a file
cat > "$T/ptyrun.py" <<'EOF'
import os, pty, sys, time
pid, fd = pty.fork()
if pid == 0:
    os.execvp("sh", ["sh", "-c", sys.argv[1]])
out = b""
deadline = time.time() + 100
while time.time() < deadline:
    try:
        chunk = os.read(fd, 65536)
    except OSError:
        break
    if not chunk:
        break
    out += chunk
os.waitpid(pid, 0)
sys.stdout.write(out.decode("utf-8", "replace"))
EOF
if command -v python3 > /dev/null; then
    MPE_PROGRESS= python3 "$T/ptyrun.py" "'$MPE' run '$T/map.lua' true" > "$T/tty" || bad "pty: python3 failed"
    grep -q "2,000/2,000 items" "$T/tty" || bad "pty: not drawn on a terminal: $(cat "$T/tty")"
    grep -q "imap	50" "$T/tty" || bad "pty: script output missing"
    MPE_PROGRESS= python3 "$T/ptyrun.py" "'$MPE' run '$T/map.lua' true 2> '$T/err'" > "$T/tty" || bad "pty 2: python3 failed"
    [ ! -s "$T/err" ] || bad "pty: drawn into a file: $(cat "$T/err")"
    grep -q "items/s" "$T/tty" && bad "pty: drawn although stderr was a file"
    seq 1 3000 > "$T/lines.txt"
    MPE_PROGRESS= python3 "$T/ptyrun.py" "'$MPE' map --progress -e 'return function(l) return l end' '$T/lines.txt' > '$T/mapout'" > "$T/tty" \
        || bad "pty map: python3 failed"
    grep -q "3,000 lines" "$T/tty" || bad "pty map: not drawn: $(cat "$T/tty")"
    cmp -s "$T/mapout" "$T/lines.txt" || bad "pty map: output differs"
else
    echo "python3 missing: pseudo-terminal cases not run"
    fail=1
fi

if [ $fail -ne 0 ]; then exit 1; fi
echo "progress: ok"
