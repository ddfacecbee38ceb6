#!/bin/bash
# srun.sh -- `srun -n 3 --mpi=pmix mpe run script.lua` on a one-node Slurm
# cluster that this script sets up itself and takes down again: munged,
# slurmctld and slurmd as root, every file (config, state, logs, munge socket)
# in a temporary directory, on ports of their own; nothing in /etc changes.
# Checks: a pool spans the three ranks with results equal to serial, and a
# failing script ends srun with a non-zero status. Exits 77 (skipped, with
# the reason) when Slurm cannot run here: not root, or slurmd, slurmctld,
# srun or munged missing (Debian: apt-get install slurmd slurmctld
# slurm-client munge), or no PMIx plugin in srun.
# Debian's Open MPI 4.1 starts under srun with --mpi=pmix only (pmi2 aborts in
# MPI_Init: Open MPI is built against PMIx, not Slurm's libpmi2).
set -u
MPE_BIN=$(realpath "${MPE_BIN:-build/mpe}")
skip() { echo "skip: $*"; exit 77; }
fail() { echo "FAIL: $*"; for f in "$tmp"/log/*; do echo "== $f"; tail -n 20 "$f"; done; exit 1; }

[ "$(id -u)" = 0 ] || skip "starting slurmctld, slurmd and munged needs root"
for c in srun sinfo slurmctld slurmd munged; do
  command -v "$c" >/dev/null || skip "$c is not installed (apt-get install slurmd slurmctld slurm-client munge)"
done

tmp=$(mktemp -d /tmp/mpe-slurm.XXXXXX)
mkdir -p "$tmp/log" "$tmp/state" "$tmp/spool" "$tmp/munge"
chmod 700 "$tmp/munge"
# Stop exactly the daemons started here (by their pid files), then clean up.
stop() {
  for p in slurmd slurmctld munged; do
    [ -s "$tmp/$p.pid" ] && kill "$(cat "$tmp/$p.pid")" 2>/dev/null
  done
  for _ in $(seq 50); do
    alive=0
    for p in slurmd slurmctld munged; do
      [ -s "$tmp/$p.pid" ] && kill -0 "$(cat "$tmp/$p.pid")" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  rm -rf "$tmp"
}
trap stop EXIT

# munge: a key of our own, its own socket.
head -c 1024 /dev/urandom > "$tmp/munge/key"
chmod 400 "$tmp/munge/key"
munged --force --key-file="$tmp/munge/key" --socket="$tmp/munge/sock" --pid-file="$tmp/munged.pid" \
  --log-file="$tmp/log/munged.log" --seed-file="$tmp/munge/seed" || fail "munged did not start"

port=$((20000 + RANDOM % 20000))
cpus=$(nproc)
cat > "$tmp/slurm.conf" <<EOF
ClusterName=mpe
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$tmp/munge/sock
CredType=cred/munge
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/log/slurmctld.log
SlurmdLogFile=$tmp/log/slurmd.log
SlurmctldPort=$port
SlurmdPort=$((port + 1))
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
NodeName=localhost CPUs=$cpus State=UNKNOWN
PartitionName=mpe Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE
EOF
export SLURM_CONF=$tmp/slurm.conf
slurmctld -f "$SLURM_CONF" || fail "slurmctld did not start"
slurmd -f "$SLURM_CONF" || fail "slurmd did not start"
for _ in $(seq 150); do
  [[ $(sinfo -h -o %t 2>/dev/null) == idle* ]] && break
  sleep 0.2
done
[[ $(sinfo -h -o %t 2>/dev/null) == idle* ]] || fail "the node did not come up: $(sinfo 2>&1)"
srun --mpi=list 2>&1 | grep -q pmix || skip "srun has no PMIx plugin: $(srun --mpi=list 2>&1)"

# 1. A pool across 3 ranks (-O: more tasks than CPUs).
cat > "$tmp/pool.lua" <<'LUA'
local mpe = require "mpe"
local pool = mpe.pool()
local r = pool:map(function(x) return {x * x, mpe.current_process().rank} end, mpe.range(1, 300),
                   {chunksize = 1})
local ranks, n, ok = {}, 0, true
for i, v in ipairs(r) do
  ok = ok and v[1] == i * i
  if not ranks[v[2]] then ranks[v[2]], n = true, n + 1 end
end
print("world", mpe.world().rank, mpe.world().size, "equal", ok, "ranks", n)
LUA
out=$(timeout 120 srun -O -n 3 --mpi=pmix -t 2 "$MPE_BIN" run "$tmp/pool.lua" 2>&1) || fail "srun pool: status $? ($out)"
[[ $out == *"world	0	3	equal	true	ranks	"[23]* ]] || fail "srun pool printed: $out"
echo "ok 1 pool across 3 ranks under srun ($out)"

# 2. A failing script: srun's status is not 0.
printf 'local mpe = require "mpe"\nmpe.pool():map(function(x) return x end, {1, 2, 3})\nerror("script says no")\n' \
  > "$tmp/err.lua"
out=$(timeout 120 srun -O -n 3 --mpi=pmix -t 2 "$MPE_BIN" run "$tmp/err.lua" 2>&1) && fail "failing script: status 0 ($out)"
[[ $out == *"script says no"* ]] || fail "failing script printed: $out"
echo "ok 2 failing script under srun"
