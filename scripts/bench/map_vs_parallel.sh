#!/usr/bin/env bash
# map_vs_parallel.sh -- `mpe map` against GNU parallel and xargs -P on the same
# line transform: every line is a number n, and the output line is
#   s = 0; for i = 1, 20 do s = (s * 31 + n + i) % 1000003 end
# computed by Lua 5.4 in every case (mpe's workers; lua5.4 processes started
# by parallel and xargs), so the work is identical and only the way lines are
# moved and processes are used differs. Prints lines/s for each, median of R
# runs, checks every output against a serial run, and the ratios.
#
#   scripts/bench/map_vs_parallel.sh [LINES, default 1000000] [WORKERS, default nproc] [RUNS, default 3]
#   env MPE_BIN (default build/mpe), SAMPLE (lines for the one-process-per-line modes, default 500;
#   those modes run once: a process per line makes them thousands of times slower)
#
# Modes:
#   mpe map            mpe map -j W (batches of 256 lines per worker message, input order kept)
#   parallel --pipe    parallel --keep-order --pipe -j W: 1 MB blocks of lines, one lua5.4 per block
#   xargs -P -n 10000  xargs -P W -n 10000: 10,000 lines per lua5.4 as arguments (order not kept;
#                      lua5.4 -e CODE /dev/null LINE...: /dev/null is the empty script)
#   parallel per line  parallel --keep-order -j W ... :::: FILE: one lua5.4 per line, the line as its
#                      argument (on SAMPLE lines)
#   xargs per line     xargs -P W -n 1: one lua5.4 per line (on SAMPLE lines)
# SPDX-License-Identifier: MIT
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
N=${1:-1000000}
W=${2:-$(nproc)}
R=${3:-3}
SAMPLE=${SAMPLE:-500}
MPE=${MPE_BIN:-build/mpe}
for tool in lua5.4 parallel xargs "$MPE"; do
    command -v "$tool" > /dev/null || { echo "missing: $tool" >&2; exit 1; }
done
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT

BODY='local n = tonumber(l) local s = 0 for i = 1, 20 do s = (s * 31 + n + i) % 1000003 end return s'
FN="return function(l) $BODY end"
STDIN_LOOP="local f = function(l) $BODY end local w = io.write for l in io.lines() do w(f(l), '\n') end"
# xargs -P lets its processes share stdout: each writes its whole output with
# one write(2), so lines of two processes never interleave.
ARGS_LOOP="local f = function(l) $BODY end local t = {} for i = 1, #arg do t[i] = f(arg[i]) end
io.stdout:setvbuf('no') io.write(table.concat(t, '\n') .. '\n')"

seq 1 "$N" > "$T/in"
head -n "$SAMPLE" "$T/in" > "$T/sample"
lua5.4 -e "$STDIN_LOOP" < "$T/in" > "$T/ref"
lua5.4 -e "$STDIN_LOOP" < "$T/sample" > "$T/sample.ref"

# time_runs NAME LINES ORDERED REF RUNS INPUT CMD...: runs CMD (stdin from INPUT,
# stdout to $T/out) RUNS times, checks the output, prints the median lines/s and
# stores it in RATE[NAME].
declare -A RATE
calc() { awk "BEGIN { printf \"%.9g\", $1 }"; } # calc EXPR: floating-point arithmetic
time_runs() {
    local name=$1 lines=$2 ordered=$3 ref=$4 runs=$5 input=$6
    shift 6
    local times=()
    for ((k = 0; k < runs; k++)); do
        local t0=$EPOCHREALTIME
        "$@" < "$input" > "$T/out"
        local t1=$EPOCHREALTIME
        times+=("$(calc "$t1 - $t0")")
        if [[ $ordered == yes ]]; then
            cmp -s "$T/out" "$ref" || { echo "$name: output differs from the serial run" >&2; exit 1; }
        else
            cmp -s <(sort "$T/out") <(sort "$ref") || { echo "$name: output differs (as a multiset)" >&2; exit 1; }
        fi
    done
    local med
    med=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}')
    RATE[$name]=$(calc "$lines / $med")
    printf '%-20s %9d lines  %8.3f s  %11.0f lines/s  (%d run%s)\n' "$name" "$lines" "$med" "${RATE[$name]}" \
        "$runs" "$([[ $runs == 1 ]] || echo s)"
}

echo "line transform over $N lines ($(wc -c < "$T/in") bytes), $W workers, median of $R runs; $(nproc) CPUs, load $(cut -d' ' -f1 /proc/loadavg)"
echo "mpe: $("$MPE" version); $(parallel --version | head -n 1); xargs: $(xargs --version | head -n 1)"
# How much of the machine is ours: one CPU-bound process, then W of them at once.
# (On a shared machine another job's load shows here as fewer than W CPUs.)
SPIN='local s = 0 for i = 1, 30000000 do s = s + i % 3 end'
t0=$EPOCHREALTIME; lua5.4 -e "$SPIN"; t1=$EPOCHREALTIME
for ((k = 0; k < W; k++)); do lua5.4 -e "$SPIN" & done; wait; t2=$EPOCHREALTIME
printf 'CPUs available: %.2f of %d (one spin %.3f s, %d at once %.3f s)\n' \
    "$(calc "$W * ($t1 - $t0) / ($t2 - $t1)")" "$W" "$(calc "$t1 - $t0")" "$W" "$(calc "$t2 - $t1")"
time_runs "serial lua5.4" "$N" yes "$T/ref" "$R" "$T/in" lua5.4 -e "$STDIN_LOOP"
time_runs "mpe map" "$N" yes "$T/ref" "$R" "$T/in" "$MPE" map -j "$W" -e "$FN" "$T/in"
time_runs "parallel --pipe" "$N" yes "$T/ref" "$R" "$T/in" parallel --keep-order --pipe -j "$W" lua5.4 -e "\"$STDIN_LOOP\""
time_runs "xargs -P -n 10000" "$N" no "$T/ref" "$R" "$T/in" xargs -P "$W" -n 10000 lua5.4 -e "$ARGS_LOOP" /dev/null
# (-I @@: the Lua code holds {}, parallel's default replacement string)
time_runs "parallel per line" "$SAMPLE" yes "$T/sample.ref" 1 "$T/sample" parallel --keep-order -j "$W" -I @@ \
    lua5.4 -e "\"$ARGS_LOOP\"" /dev/null @@ :::: -
time_runs "xargs per line" "$SAMPLE" no "$T/sample.ref" 1 "$T/sample" xargs -P "$W" -n 1 lua5.4 -e "$ARGS_LOOP" /dev/null

echo
for other in "serial lua5.4" "parallel --pipe" "xargs -P -n 10000" "parallel per line" "xargs per line"; do
    printf 'mpe map / %-18s %9.2fx\n' "$other" "$(calc "${RATE[mpe map]} / ${RATE[$other]}")"
done
