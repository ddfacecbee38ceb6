#!/bin/bash
# launch.sh -- `mpirun -n 3 mpe run ...` end to end: clean exit on every rank,
# a failing script's status, a rank killed mid-map ends the run naming it and
# its items (on rank 0's host and on another host), Ctrl-C to mpirun stops
# every rank and worker. Run by ctest when MPI is on.
# The Lua here avoids <close>, so it runs under LuaJIT builds too.
set -u
MPE_BIN=${MPE_BIN:-build/mpe}
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
# Under ASan (an MPE_SANITIZE build) a report in any rank fails the case,
# also where the run's status is non-zero anyway (a killed rank, Ctrl-C).
sane() { [[ $1 != *"Sanitizer"* && $1 != *"runtime error:"* ]] || fail "sanitizer report: $1"; }
# Processes whose command line holds this run's marker (the script path).
left() { pgrep -f "$tmp/" | grep -v "^$$\$" | wc -l; }

# 1. Rank 0 finishes: every rank exits 0, no process is left.
cat > "$tmp/ok.lua" <<'LUA'
local mpe = require "mpe"
local pool = mpe.pool()
local r = pool:map(function(x) return x + 1 end, mpe.range(1, 1000))
print("world", mpe.world().rank, mpe.world().size, r[1000])
LUA
out=$(timeout 120 mpirun -n 3 "$MPE_BIN" run "$tmp/ok.lua" 2>&1) || fail "clean run: status $? ($out)"
[[ $out == *"world	0	3	1001"* ]] || fail "clean run printed: $out"
sane "$out"
sleep 1
[ "$(left)" = 0 ] || fail "processes left after a clean run: $(pgrep -af "$tmp/")"
echo "ok 1 clean run"

# 2. The same script without MPI: size 1.
out=$("$MPE_BIN" run "$tmp/ok.lua" 2>&1) || fail "plain run: $out"
[[ $out == *"world	0	1	1001"* ]] || fail "plain run printed: $out"
echo "ok 2 same script without mpirun"

# 3. A script error: non-zero status, the message, nothing left.
cat > "$tmp/err.lua" <<'LUA'
local mpe = require "mpe"
local pool = mpe.pool()
pool:map(function(x) return x end, mpe.range(1, 10))
error("script says no")
LUA
out=$(timeout 120 mpirun -n 3 "$MPE_BIN" run "$tmp/err.lua" 2>&1) && fail "failing script exited 0"
[[ $out == *"script says no"* ]] || fail "failing script: $out"
sane "$out"
sleep 1
[ "$(left)" = 0 ] || fail "processes left after a failing script"
echo "ok 3 failing script"

# 4. A rank killed with SIGKILL mid-map ends the run, naming the rank and
# the items it held.
cat > "$tmp/kill.lua" <<'LUA'
local mpe = require "mpe"
local pool = mpe.pool{workers = 3}
pool:map(function(x)
  local me = mpe.current_process()
  DONE = (DONE or 0) + 1
  if me.rank == 1 and DONE == 3 then
    local f = io.open("/proc/self/stat"):read("a")
    local ppid = f:match("%) %a (%d+)")
    os.execute("kill -9 " .. ppid)
  end
  local t = mpe.now() + 0.05
  while mpe.now() < t do end
  return x
end, mpe.range(1, 400), {chunksize = 1})
print("finished")
LUA
start=$(date +%s)
out=$(timeout 120 mpirun -n 3 "$MPE_BIN" run "$tmp/kill.lua" 2>&1) && fail "killed rank: status 0 ($out)"
took=$(( $(date +%s) - start ))
[[ $out == *"rank 1"* ]] || fail "killed rank not named: $out"
sane "$out"
# Its worker that killed it was running an item (each takes 50 ms, one a
# chunk): rank 0 names the items its workers held before the launcher ends it.
[[ $out =~ "rank 1 (pid "[0-9]+" on "[^\)]*") died; its pool worker "[0-9]+" held item"s?" "[0-9]+(-[0-9]+)?(, [0-9]+(-[0-9]+)?)*( and [0-9]+(-[0-9]+)?)?" of a map" ]] ||
  fail "the items the killed rank held are not named: $out"
[[ $out != *"finished"* ]] || fail "the map finished after a rank died: $out"
[ "$took" -lt 110 ] || fail "killed rank: the run hung"
sleep 1
[ "$(left)" = 0 ] || fail "processes left after a rank died: $(pgrep -af "$tmp/")"
echo "ok 4 killed rank ($took s)"

# 5. A killed rank on another host is named with its items too. The other
# host is simulated: ranks 1-2 run in a
# UTS namespace of their own with another host name, so rank 0 cannot use a
# pidfd or /proc for them, only what works across hosts.
other_host() {
  if ! unshare -u true 2>/dev/null; then
    echo "skip 5 killed rank elsewhere: 'unshare -u' is not allowed here (needs CAP_SYS_ADMIN)"
    return
  fi
  out=$(timeout 120 mpirun -n 1 "$MPE_BIN" run "$tmp/kill.lua" : -n 2 unshare -u \
        sh -c 'hostname mpe-elsewhere && exec "$0" run "$1"' "$MPE_BIN" "$tmp/kill.lua" 2>&1) &&
    fail "killed rank elsewhere: status 0 ($out)"
  if [[ $out == *"cannot be watched"* ]]; then
    echo "skip 5 killed rank elsewhere: this host has no IPv4 address but loopback ($out)"
    return
  fi
  [[ $out =~ "rank 1 (pid "[0-9]+" on mpe-elsewhere) died; its pool worker "[0-9]+" held item"s?" "[0-9]+ ]] ||
    fail "the items of a killed rank on another host are not named: $out"
  [[ $out != *"finished"* ]] || fail "the map finished after a rank elsewhere died: $out"
  sane "$out"
  sleep 1
  [ "$(left)" = 0 ] || fail "processes left after a rank elsewhere died: $(pgrep -af "$tmp/")"
  echo "ok 5 killed rank on another host"
}
other_host

# 6. Ctrl-C (SIGINT) to mpirun stops every rank and every worker.
cat > "$tmp/long.lua" <<'LUA'
local mpe = require "mpe"
local pool = mpe.pool()
print("started") io.stdout:flush()
pool:map(function(x) local t = mpe.now() + 0.2 while mpe.now() < t do end return x end, mpe.range(1, 100000))
LUA
timeout 120 mpirun -n 3 "$MPE_BIN" run "$tmp/long.lua" > "$tmp/long.out" 2>&1 &
pid=$!
for _ in $(seq 100); do grep -q started "$tmp/long.out" && break; sleep 0.2; done
sleep 1
[ "$(left)" -gt 3 ] || fail "the long run has no workers: $(cat "$tmp/long.out")"
kill -INT $pid
wait $pid && fail "interrupted run exited 0"
sane "$(cat "$tmp/long.out")"
for _ in $(seq 50); do [ "$(left)" = 0 ] && break; sleep 0.2; done
[ "$(left)" = 0 ] || fail "processes left after Ctrl-C: $(pgrep -af "$tmp/")"
echo "ok 6 Ctrl-C"
