#!/usr/bin/env bash
# tests/cli/scale.sh -- `mpe scale` runs a small script at worker counts 1 and 2:
# each run sees MPE_WORKERS (and {workers} in its arguments), the CSV holds the
# raw runs, the SVG is well-formed XML whose points carry the speedups the CSV
# gives, the table has a row per count; a failing script exits 1 with its
# error, usage errors exit 2. Never asserts timings.
# SPDX-License-Identifier: MIT
set -u
MPE=${MPE_BIN:?set MPE_BIN to the mpe binary}
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
fail=0
bad() { echo "FAIL: $*"; fail=1; }
run() { timeout 120 "$MPE" "$@"; }

# A small workload that records what each run saw.
cat > "$T/small.lua" <<'EOF'
local mpe = require "mpe"
local pool = mpe.pool()
local r = pool:map(function(i) local s = 0 for k = 1, 2000 do s = s + k % 7 end return s + i end, mpe.range(1, 200))
assert(#r == 200)
local f = assert(io.open(arg[1] .. "/seen-" .. os.getenv("MPE_WORKERS") .. "-" .. (arg[2] or "none"), "a"))
f:write(pool.workers, " ", arg[2] or "", "\n")
f:close()
pool:close() pool:join()
print("this output is discarded")
EOF

run scale -j 1,2 --repeat 1 --svg "$T/x.svg" --csv "$T/y.csv" "$T/small.lua" "$T" '{workers}' \
    > "$T/out" 2> "$T/err"
rc=$?
[ $rc -eq 0 ] || bad "exit $rc: $(cat "$T/err")"
# every run saw MPE_WORKERS, its pool had that size, {workers} was replaced
for n in 1 2; do
    [ "$(cat "$T/seen-$n-$n" 2>/dev/null)" = "$n $n" ] || bad "run with $n workers: saw '$(cat "$T/seen-$n-$n" 2>/dev/null)'"
done
grep -q "discarded" "$T/out" && bad "the script's output was not discarded"
# the table: a header and one row per count, speedup 1.00 on the first
grep -q "workers.*median.*speedup.*efficiency" "$T/out" || bad "no table header: $(cat "$T/out")"
grep -Eq '^ +1 +[0-9.]+ +[0-9.]+-[0-9.]+ +1\.00 +100%$' "$T/out" || bad "row for 1 worker: $(cat "$T/out")"
grep -Eq '^ +2 +[0-9.]+ +[0-9.]+-[0-9.]+ +[0-9.]+ +[0-9]+%$' "$T/out" || bad "row for 2 workers: $(cat "$T/out")"
# the CSV: workers,run,seconds
[ "$(head -n 1 "$T/y.csv")" = "workers,run,seconds" ] || bad "csv header: $(head -n 1 "$T/y.csv")"
[ "$(wc -l < "$T/y.csv")" -eq 3 ] || bad "csv: expected 3 lines: $(cat "$T/y.csv")"
grep -Eq '^1,1,[0-9]+\.[0-9]+$' "$T/y.csv" && grep -Eq '^2,1,[0-9]+\.[0-9]+$' "$T/y.csv" || bad "csv rows: $(cat "$T/y.csv")"
# the SVG: well-formed, points carrying the CSV's speedups, ideal line, axes labels, legend
python3 - "$T/x.svg" "$T/y.csv" <<'EOF' || bad "svg check failed"
import csv, sys, xml.etree.ElementTree as ET
ns = {"s": "http://www.w3.org/2000/svg"}
root = ET.parse(sys.argv[1]).getroot()
assert root.tag == "{http://www.w3.org/2000/svg}svg", root.tag
runs = {}
for row in csv.DictReader(open(sys.argv[2])):
    runs.setdefault(int(row["workers"]), []).append(float(row["seconds"]))
med = {w: sorted(v)[len(v) // 2] for w, v in runs.items()}
points = root.findall(".//s:circle[@class='point']", ns)
assert [int(p.get("data-workers")) for p in points] == [1, 2], [p.attrib for p in points]
for p in points:
    w = int(p.get("data-workers"))
    want = med[1] / med[w]
    got = float(p.get("data-speedup"))
    assert abs(got - want) <= 1e-3 * want + 1e-4, (w, got, want)
    assert abs(float(p.get("data-median")) - med[w]) < 1e-5, (w, p.get("data-median"), med[w])
# the points lie on the drawn polyline, in order, higher speedup higher up
poly = root.find(".//s:polyline[@class='measured']", ns).get("points").split()
xy = [tuple(map(float, q.split(","))) for q in poly]
assert [(float(p.get("cx")), float(p.get("cy"))) for p in points] == xy, (poly, points)
s1, s2 = (float(p.get("data-speedup")) for p in points)
assert (xy[1][1] < xy[0][1]) == (s2 > s1) or s1 == s2
assert root.find(".//s:line[@class='ideal']", ns) is not None
texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
for word in ("workers", "speedup", "measured", "ideal", "small.lua"):
    assert word in texts, word
EOF

# -j 0: the inline pool as a serial baseline (speedup 1.00 and 100% on its row,
# the SVG's ideal line from it), then one worker
rm -f "$T"/seen-*
run scale -j 0,1 --repeat 1 --svg "$T/z.svg" "$T/small.lua" "$T" '{workers}' > "$T/out" 2> "$T/err"
rc=$?
[ $rc -eq 0 ] || bad "-j 0,1: exit $rc: $(cat "$T/err")"
[ "$(cat "$T/seen-0-0" 2>/dev/null)" = "0 0" ] || bad "-j 0: the run's pool was not inline: '$(cat "$T/seen-0-0" 2>/dev/null)'"
[ "$(cat "$T/seen-1-1" 2>/dev/null)" = "1 1" ] || bad "-j 0,1: the 1-worker run: '$(cat "$T/seen-1-1" 2>/dev/null)'"
grep -Eq '^ +0 +[0-9.]+ +[0-9.]+-[0-9.]+ +1\.00 +100%$' "$T/out" || bad "row for 0 workers: $(cat "$T/out")"
grep -Eq '^ +1 +[0-9.]+ +[0-9.]+-[0-9.]+ +[0-9.]+ +[0-9]+%$' "$T/out" || bad "row for 1 worker after 0: $(cat "$T/out")"
python3 - "$T/z.svg" <<'EOF' || bad "svg with an inline baseline"
import sys, xml.etree.ElementTree as ET
ns = {"s": "http://www.w3.org/2000/svg"}
root = ET.parse(sys.argv[1]).getroot()
points = root.findall(".//s:circle[@class='point']", ns)
assert [int(p.get("data-workers")) for p in points] == [0, 1], [p.attrib for p in points]
assert float(points[0].get("data-speedup")) == 1.0
texts = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
assert "speedup over the inline run" in texts, texts
EOF

# default counts: 1..CPUs, at least 1 and 2
rm -f "$T"/seen-*
run scale --repeat 1 "$T/small.lua" "$T" > "$T/out" 2> "$T/err" || bad "default -j: exit $?: $(cat "$T/err")"
[ -s "$T/seen-1-none" ] && [ -s "$T/seen-2-none" ] || bad "default -j: counts 1 and 2 not both run"

# a failing script: exit 1, its error shown
printf 'error("scale test failure")\n' > "$T/failing.lua"
run scale -j 1,2 --repeat 1 "$T/failing.lua" > "$T/out" 2> "$T/err"
rc=$?
[ $rc -eq 1 ] || bad "failing script: exit $rc"
grep -q "failing.lua failed with 1 worker" "$T/err" || bad "failing script: message: $(cat "$T/err")"
grep -q "scale test failure" "$T/err" || bad "failing script: its error not shown: $(cat "$T/err")"
run scale --repeat 1 "$T/missing.lua" > /dev/null 2> "$T/err"
[ $? -eq 1 ] || bad "missing script: exit status"

# usage errors: exit 2
for args in "" "--bogus $T/small.lua" "-j -1 $T/small.lua" "-j 1,x $T/small.lua" "--repeat 0 $T/small.lua" "--svg"; do
    # shellcheck disable=SC2086
    run scale $args > /dev/null 2> "$T/err"
    rc=$?
    [ $rc -eq 2 ] || bad "usage '$args': exit $rc, expected 2"
    grep -q "usage: mpe scale" "$T/err" || bad "usage '$args': no usage text"
done

if [ $fail -ne 0 ]; then exit 1; fi
echo "scale: ok"
