#!/usr/bin/env bash
# tests/cli/faults.sh -- faults that need a separate parent process or signals
# to a whole run: the parent killed (SIGKILL, SIGHUP) mid-map, Ctrl-C sent to
# the process group as a terminal does (exit 130, one line, no orphan, no
# zombie), SIGTERM (143), a second Ctrl-C while the script catches the first,
# Ctrl-C while the parent waits in a queue, a join, a lock or plain Lua, pool
# workers ignoring SIGINT sent to them alone, and a stock interpreter's own
# Ctrl-C ("interrupted!", exit 1). No /dev/shm entry may be left.
#
# Each run goes through watch.py (below), which makes itself a child
# subreaper: whatever the run leaves behind (an orphan still running, or a
# zombie nobody reaped) is reparented to it, so it sees it precisely. Waits
# are generous bounded polls (up to 30 s for readiness, 5 s for processes to
# be gone), never timing assertions.
# SPDX-License-Identifier: MIT
set -u
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
BUILD=${MPE_BUILD_DIR:-$(dirname "$MPE")}
INTERP=${MPE_LUA_INTERP:-lua5.4}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() {
    fail=$((fail + 1))
    echo "FAIL: $1"
    shift
    for line in "$@"; do echo "      ${line:0:600}"; done
}
expect_eq() { # NAME EXPECTED ACTUAL
    if [[ "$2" == "$3" ]]; then ok; else bad "$1" "expected: $(printf %q "$2")" "actual:   $(printf %q "$3")"; fi
}
expect_has() { # NAME NEEDLE HAYSTACK
    if [[ "$3" == *"$2"* ]]; then ok; else bad "$1" "expected to contain: $2" "actual: $3"; fi
}
command -v python3 >/dev/null || { echo "faults.sh: python3 is needed (the subreaper helper)" >&2; exit 1; }

shm_before=$(ls /dev/shm | sort)

# ---- watch.py: run a command in a new session, signal it when ready, report -----------
cat > "$T/watch.py" <<'EOF'
# watch.py OUT ERR READY NREADY SIG TO [SIG2 READY2] -- CMD...
#   Runs CMD in a new session (process group = its pid) as a child subreaper.
#   Waits until file READY has NREADY lines, sends SIG (INT, TERM, KILL, HUP)
#   to the group (TO=group) or the process (TO=proc); with SIG2, waits for
#   file READY2 and sends SIG2 the same way. Then waits for CMD to end and for
#   everything reparented to us to be gone. Prints:
#     rc=<exit status, or -N if killed by signal N> alive=<pids still running>
#     reaped=<zombies we had to reap> pids=<pids listed in READY>
import ctypes, os, signal, subprocess, sys, time

def lines(path):
    try:
        with open(path) as f:
            return [l.split() for l in f if l.strip()]
    except OSError:
        return []

def wait_for(path, n, proc, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if len(lines(path)) >= n:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.02)
    return False

def children():
    me = os.getpid()
    out = []
    for tid in os.listdir("/proc/%d/task" % me):
        try:
            with open("/proc/%d/task/%s/children" % (me, tid)) as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out

def state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None

argv = sys.argv[1:]
sep = argv.index("--")
opts, cmd = argv[:sep], argv[sep + 1:]
out, err, ready, nready, sig, to = opts[:6]
sig2, ready2 = (opts[6], opts[7]) if len(opts) > 6 else (None, None)
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    print("watch.py: prctl(PR_SET_CHILD_SUBREAPER) failed", file=sys.stderr)
    sys.exit(3)
proc = subprocess.Popen(cmd, start_new_session=True, stdin=subprocess.DEVNULL,
                        stdout=open(out, "w"), stderr=open(err, "w"))

def send(name):
    s = getattr(signal, "SIG" + name)
    if to == "group":
        os.killpg(proc.pid, s)
    else:
        os.kill(proc.pid, s)

note = ""
if not wait_for(ready, int(nready), proc):
    note = " notready"
else:
    send(sig)
    if sig2:
        if wait_for(ready2, 1, proc):
            send(sig2)
        else:
            note = " notready2"
try:
    proc.wait(timeout=30)
except subprocess.TimeoutExpired:
    note += " hang"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
# Orphans are reparented to us: running ones must die (PR_SET_PDEATHSIG, or
# the parent's own cleanup) within the bound; zombies we reap and count.
reaped, alive = 0, []
deadline = time.monotonic() + 5
while True:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid = 0
        if pid == 0:
            break
        reaped += 1
    alive = [c for c in children() if state(c) not in (None, "Z", "X")]
    if not alive or time.monotonic() > deadline:
        break
    time.sleep(0.02)
for c in alive:  # leave nothing behind ourselves
    os.kill(c, signal.SIGKILL)
pids = [l[1] for l in lines(ready) if len(l) > 1]
print("rc=%d alive=%s reaped=%d pids=%s%s" % (proc.returncode, ",".join(map(str, alive)) or "none",
      reaped, ",".join(pids), note))
EOF

# ---- the script under test ------------------------------------------------------------
# arg[1]: a file each process appends "<role> <pid>" to once it runs what it
# should be stopped in; arg[2]: the mode.
cat > "$T/victim.lua" <<'EOF'
-- victim.lua READY MODE [GO]: each process appends "<role> <pid>" to READY
-- once it is where the signal should find it: the two pool workers when they
-- start ("worker"), then the task, the child or the parent in MODE. The
-- driver waits for 3 lines. (Which worker runs a task is the scheduler's
-- business: the cases do not depend on it.)
local mpe = require "mpe"
local ready, mode = arg[1], arg[2]
local function note(role)
  local f = assert(io.open(ready, "a"))
  f:write(role, " ", mpe.current_process().pid, "\n")
  f:close()
end
local function spin_forever() while true do end end
-- Shared objects in flight, so that a leak would show in /dev/shm or as a
-- descriptor: an array, a queue holding a spilled 1 MB item, a lock.
local arr = mpe.array("double", 100000)
local q = mpe.queue()
q:put(string.rep("x", 1024 * 1024))
local lock = mpe.lock()
local pool = mpe.pool{workers = 2, initializer = function() note("worker") end}
local items = mpe.range(1, 16)
if mode == "map" then
  pool:map(function() note("task") spin_forever() end, items, {chunksize = 1})
elseif mode == "catch" then
  local ok, e = pcall(pool.map, pool, function() note("task") spin_forever() end, items, {chunksize = 1})
  print("caught: " .. tostring(e))
  io.stdout:flush()
  local f = assert(io.open(ready .. "2", "w")) f:write("caught\n") f:close()
  local again = mpe.pool(2)
  again:map(function() spin_forever() end, items, {chunksize = 1})
elseif mode == "hang" then
  -- tasks stuck in C with SIGTERM ignored: only SIGKILL (PDEATHSIG) ends them
  local fl = require "faultlib"
  pool:map(function() fl.ignore(fl.SIGTERM) note("task") fl.hang() end, items, {chunksize = 1})
elseif mode == "imap" then
  for _ in pool:imap(function(x) note("task") spin_forever() end, items, {chunksize = 1}) do end
elseif mode == "qget" then
  q:get()
  note("parent")
  q:get()
elseif mode == "join" then
  local p = mpe.process(function() note("child") spin_forever() end)
  p:start()
  p:join()
elseif mode == "lock" then
  local held = mpe.event()
  local p = mpe.process(function() lock:acquire() held:set() note("child") spin_forever() end)
  p:start()
  held:wait(30)
  lock:acquire()
elseif mode == "lua" then
  -- LuaJIT runs a compiled loop without hooks, so the first SIGINT cannot
  -- stop it (docs/RELIABILITY.md): interpret this one.
  if jit then jit.off() end
  note("parent")
  spin_forever()
elseif mode == "worker-int" then
  -- SIGINT sent to the workers alone is ignored: the map completes.
  local go = arg[3]
  local r = pool:map(function(x)
    note("task")
    while not io.open(go) do end
    return x * 2
  end, mpe.range(1, 4), {chunksize = 1})
  print("result " .. table.concat(r, " "))
  pool:close()
  pool:join()
  return
end
print("not reached")
EOF

# run_watch NAME NREADY SIG TO [SIG2] -- CMD...: the script's ready file is
# $T/ready.NAME (and $T/ready.NAME2 for SIG2). Sets rc, alive, reaped, note,
# out, err.
run_watch() {
    local name=$1 nready=$2 sig=$3 to=$4
    shift 4
    local extra=()
    if [[ $1 != "--" ]]; then
        extra=("$1" "$T/ready.${name}2")
        shift
    fi
    shift # --
    rm -f "$T/ready.$name" "$T/ready.${name}2"
    local line
    line=$(python3 "$T/watch.py" "$T/out.$name" "$T/err.$name" "$T/ready.$name" "$nready" "$sig" "$to" \
        "${extra[@]}" -- "$@")
    rc=$(sed -n 's/.*rc=\(-\{0,1\}[0-9]*\).*/\1/p' <<<"$line")
    alive=$(sed -n 's/.*alive=\([^ ]*\).*/\1/p' <<<"$line")
    reaped=$(sed -n 's/.*reaped=\([0-9]*\).*/\1/p' <<<"$line")
    note=""
    [[ $line == *notready* ]] && note="the script never got ready"
    [[ $line == *hang* ]] && note="the script did not end within 30 s"
    out=$(cat "$T/out.$name")
    err=$(cat "$T/err.$name")
}

# A run that a signal stops cleanly: the status, exactly one stderr line, no
# orphan alive, no zombie for us to reap (mpe waited for its own children).
expect_clean_stop() { # NAME STATUS MESSAGE
    expect_eq "$1: no timeout or hang" "" "$note"
    expect_eq "$1: exit status" "$2" "$rc"
    expect_eq "$1: one line on stderr" "$3" "$err"
    expect_eq "$1: no process left running" "none" "$alive"
    expect_eq "$1: no zombie left for init" "0" "$reaped"
    expect_eq "$1: nothing printed after the signal" "" "$out"
}

# ---- Ctrl-C and SIGTERM to a run ------------------------------------------------------

name2=int-group
run_watch "$name2" 3 INT group -- "$MPE" run "$T/victim.lua" "$T/ready.$name2" map
expect_clean_stop "SIGINT to the process group mid-map" 130 "mpe: interrupted by SIGINT"

name2=int-proc
run_watch "$name2" 3 INT proc -- "$MPE" run "$T/victim.lua" "$T/ready.$name2" map
expect_clean_stop "SIGINT to mpe alone mid-map" 130 "mpe: interrupted by SIGINT"

name2=term
run_watch "$name2" 3 TERM proc -- "$MPE" run "$T/victim.lua" "$T/ready.$name2" map
expect_clean_stop "SIGTERM mid-map" 143 "mpe: terminated by SIGTERM"

name2=term-group
run_watch "$name2" 3 TERM group -- "$MPE" run "$T/victim.lua" "$T/ready.$name2" map
# The workers get SIGTERM too (they do not ignore it): still one line, 143.
expect_clean_stop "SIGTERM to the process group mid-map" 143 "mpe: terminated by SIGTERM"

for mode in imap qget join lock lua; do
    name2=int-$mode
    run_watch "$name2" 3 INT group -- "$MPE" run "$T/victim.lua" "$T/ready.$name2" "$mode"
    expect_clean_stop "SIGINT while the parent waits ($mode)" 130 "mpe: interrupted by SIGINT"
done

# Ctrl-C while the script wraps the map in pcall: mpe either stops the script
# anyway (the interrupt re-raises at the next instruction: status 130, one
# line) or lets it catch the error, in which case the script runs another
# map and a second Ctrl-C acts at once (the default action: killed by
# SIGINT). Either way the run ends and no process is left.
name2=int-twice
run_watch "$name2" 3 INT group INT -- "$MPE" run "$T/victim.lua" "$T/ready.$name2" catch
if [[ $out == *caught* ]]; then
    expect_has "SIGINT under pcall: caught as the interrupt" "caught: mpe: interrupted by SIGINT" "$out"
    expect_eq "SIGINT under pcall, then a second SIGINT: killed by SIGINT" "-2" "$rc"
else
    expect_eq "SIGINT under pcall: exit status" "130" "$rc"
    expect_eq "SIGINT under pcall: one line on stderr" "mpe: interrupted by SIGINT" "$err"
fi
expect_eq "SIGINT under pcall: no process left running" "none" "$alive"

# ---- the parent killed ----------------------------------------------------------------

for sig in KILL HUP; do
    name2=parent-$sig
    run_watch "$name2" 3 "$sig" proc -- "$MPE" run "$T/victim.lua" "$T/ready.$name2" map
    expect_eq "parent killed by SIG$sig mid-map: no hang" "" "$note"
    expect_eq "parent killed by SIG$sig mid-map: status" "-$(kill -l "$sig")" "$rc"
    expect_eq "parent killed by SIG$sig mid-map: every worker gone" "none" "$alive"
done

if [[ -f $BUILD/tests/faultlib.so ]]; then
    name2=parent-hang
    LUA_CPATH="$BUILD/tests/?.so;;" run_watch "$name2" 3 KILL proc -- \
        "$MPE" run "$T/victim.lua" "$T/ready.$name2" hang
    expect_eq "parent killed while workers hang in C ignoring SIGTERM: status" "-9" "$rc"
    expect_eq "parent killed while workers hang in C ignoring SIGTERM: every worker gone" "none" "$alive"
else
    echo "note: $BUILD/tests/faultlib.so not built: the C-hang case is skipped" >&2
fi

# ---- workers leave SIGINT to the parent ----------------------------------------------------

name2=worker-int
go=$T/go.$name2
rm -f "$go"
(
    # Once both workers started and a task runs, send SIGINT to each worker
    # alone, then let the tasks finish.
    for _ in $(seq 1500); do
        [[ $(cat "$T/ready.$name2" 2>/dev/null | wc -l) -ge 3 ]] && break
        sleep 0.02
    done
    for pid in $(awk '$1 == "worker" {print $2}' "$T/ready.$name2" 2>/dev/null); do kill -INT "$pid"; done
    touch "$go"
) &
helper=$!
# watch.py's own signal goes to nobody: it waits for a READY file that never fills.
run_watch "$name2" 99 INT proc -- "$MPE" run "$T/victim.lua" "$T/ready.$name2" worker-int "$go"
wait "$helper"
expect_eq "SIGINT to workers alone: the map completes" "result 2 4 6 8" "$out"
expect_eq "SIGINT to workers alone: exit 0" "0" "$rc"
expect_eq "SIGINT to workers alone: nothing on stderr" "" "$err"

# ---- a stock interpreter with require "mpe" ------------------------------------------------

if [[ ${MPE_SANITIZE:-0} == 1 ]]; then
    echo "note: sanitizer build: $INTERP cannot load this mpe.so; the stock-interpreter case is skipped" >&2
elif [[ -f $BUILD/mpe.so ]] && command -v "$INTERP" >/dev/null; then
    name2=stock
    LUA_CPATH="$BUILD/?.so;;" run_watch "$name2" 3 INT proc -- "$INTERP" "$T/victim.lua" "$T/ready.$name2" map
    expect_eq "$INTERP, SIGINT mid-map: no hang" "" "$note"
    expect_eq "$INTERP, SIGINT mid-map: exit status 1 (lua.c)" "1" "$rc"
    expect_has "$INTERP, SIGINT mid-map: interrupted!" "interrupted!" "$err"
    expect_eq "$INTERP, SIGINT mid-map: no process left running" "none" "$alive"
else
    echo "note: no $BUILD/mpe.so or $INTERP: the stock-interpreter case is skipped" >&2
fi

# ---- nothing left in /dev/shm ----------------------------------------------------------------

# Entries that are new since the start. Other programs on a shared machine
# come and go meanwhile: Open MPI's shared-memory transport (vader_segment.*,
# an MPI run next to this one) is not ours and is left out.
expect_eq "no /dev/shm entry left" "" \
    "$(comm -13 <(echo "$shm_before") <(ls /dev/shm | sort) | grep -v '^vader_segment\.')"

echo "cli/faults.sh: $pass passed, $fail failed"
[[ $fail -eq 0 ]]
