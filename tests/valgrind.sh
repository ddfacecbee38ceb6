#!/usr/bin/env bash
# tests/valgrind.sh -- valgrind memcheck over the C unit tests (tests/c), the
# embedding host, and short Lua runs (the doubler example, a pool map with
# shared objects, failures and a process, under `mpe run` and under the stock
# interpreter with mpe.so), and a script ending with live unread results of an
# unclosed pool: no memory error and no definite leak.
#   tests/valgrind.sh [BUILD_DIR]     (default: build; not a sanitizer build)
# Forked children (pool workers, processes, the C harness's cases) run under
# memcheck too: valgrind follows fork (--trace-children=no only stops it at
# exec), and each process is checked when it exits. Known false positives are
# in tests/valgrind.supp, each explained. Valgrind 3.19 does not know
# pidfd_open (syscall 434) and says so; mpe then takes its fallback path.
# SPDX-License-Identifier: MIT
set -u
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
BUILD=${1:-build}
INTERP=${MPE_LUA_INTERP:-lua5.4}
command -v valgrind >/dev/null || { echo "valgrind.sh: valgrind is not installed" >&2; exit 1; }
[[ -x $BUILD/mpe ]] || { echo "valgrind.sh: no $BUILD/mpe: build first" >&2; exit 1; }
if grep -q '^MPE_SANITIZE:BOOL=ON' "$BUILD/CMakeCache.txt" 2>/dev/null; then
    echo "valgrind.sh: $BUILD is a sanitizer build; valgrind needs a plain one" >&2
    exit 1
fi
VG=(valgrind -q --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99
    --trace-children=no --keep-debuginfo=yes --suppressions=tests/valgrind.supp)
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
t0=$SECONDS

# check NAME CMD...: runs CMD under memcheck (bounded), shows its memcheck
# reports on failure.
check() {
    local name=$1 rc
    shift
    local s=$SECONDS
    timeout 900 "${VG[@]}" "$@" >"$T/out" 2>"$T/err"
    rc=$?
    if ((rc == 0)); then
        printf 'ok   %-40s %3d s\n' "$name" $((SECONDS - s))
    else
        printf 'FAIL %-40s (exit %d%s)\n' "$name" "$rc" "$( ((rc == 99)) && echo ': memcheck found errors')"
        grep -v -e '^--[0-9]*-- ' "$T/err" | head -n 60
        tail -n 5 "$T/out"
        fail=1
    fi
}

for t in "$BUILD"/test_*; do
    [[ -x $t ]] && check "$(basename "$t")" "$t"
done
if [[ -x $BUILD/embed_host ]]; then
    check embed_host "$BUILD/embed_host" tests/embed/host.lua
fi
check "mpe run doubler.lua" "$BUILD/mpe" run scripts/examples/doubler.lua

cat >"$T/pool.lua" <<'EOF'
-- A short tour: maps (packed and general results), shared array, queue and
-- dict through workers, a Lua error, a worker that dies, apply_async, imap,
-- close/join, a process holding a lock.
local mpe = require "mpe"
local pool = mpe.pool(2)
local r = pool:map(function(x) return x * x end, mpe.range(1, 2000))
assert(r.n == 2000 and r[2000] == 4000000)
local s = pool:map(function(t) return {t.k, #t.s} end, {{k = 1, s = "abc"}, {k = 2, s = string.rep("x", 100000)}})
assert(s[2][2] == 100000)
local arr = mpe.array("double", 1000)
pool:map(function(i) arr[i] = i / 2 end, mpe.range(1, 1000))
assert(arr:sum() == 1000 * 1001 / 4)
local q, d = mpe.queue(), mpe.dict()
pool:map(function(i) q:put(i) d:set(i, i * 3) end, mpe.range(1, 20))
local got = 0
for _ = 1, 20 do got = got + q:get(10) end
assert(got == 210 and d:get(20) == 60)
local ok, e = pcall(pool.map, pool, function(x) if x == 3 then error("boom") end return x end, {1, 2, 3})
assert(not ok and e.index == 3)
local _, errs = pool:map(function(x) if x == 2 then os.exit(3) end return x end, {1, 2, 3},
                         {errors = "collect", chunksize = 1})
assert(errs[2].kind == "crash")
assert(pool:apply_async(function(x) return x + 1 end, {41}):get() == 42)
local n = 0
for _ in pool:imap(function(x) return x end, mpe.range(1, 100)) do n = n + 1 end
assert(n == 100)
pool:close()
pool:join()
local l = mpe.lock()
local p = mpe.process(function() l:with(function() end) return "child" end)
p:start()
assert(p:result() == "child")
print("ok")
EOF
check "mpe run pool.lua" "$BUILD/mpe" run "$T/pool.lua"
if [[ -f $BUILD/mpe.so ]] && command -v "$INTERP" >/dev/null; then
    LUA_CPATH="$BUILD/?.so;;" check "$INTERP pool.lua (mpe.so)" "$INTERP" "$T/pool.lua"
fi

cat >"$T/live.lua" <<'EOF'
-- Ends with live unread results of a pool it never closed (some still
-- running): closing the interpreter finalizes them and the pool, which share
-- the pool's field tables and free list (async objects' slots).
local mpe = require "mpe"
local p = mpe.pool(2)
KEEP = {}
for i = 1, 2000 do KEEP[i] = p:apply_async(function(x) return x, { x } end, { i }) end
KEEP[#KEEP + 1] = p:map_async(function(x) return x end, mpe.range(1, 100))
assert(KEEP[10]:get() == 10)
for i = 1, 500 do local _ = p:apply_async(function(x) return x end, { i }) end
p = nil
collectgarbage()
print("ok")
EOF
check "mpe run live.lua" "$BUILD/mpe" run "$T/live.lua"
if [[ -f $BUILD/mpe.so ]] && command -v "$INTERP" >/dev/null; then
    LUA_CPATH="$BUILD/?.so;;" check "$INTERP live.lua (mpe.so)" "$INTERP" "$T/live.lua"
fi

echo "valgrind.sh: $((SECONDS - t0)) s, $([[ $fail == 0 ]] && echo "no errors" || echo "FAILED")"
exit $fail
