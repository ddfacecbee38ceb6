-- pool_start_heap.lua -- pool start + close against the size of the parent's
-- heap (issue 13, point 5): a child builds a table of about N MB (small
-- tables of three values, the shape of loaded data), then starts and closes
-- pool(2) R times; the median and best are printed per build and heap size.
-- Each configuration runs in fresh processes, in interleaved rounds.
--   mpe run scripts/bench/pool_start_heap.lua [--mb 0,100,400] [--runs 3] [--reps 20]
-- Configurations: MPE_BIN (default: the mpe running this script) and, when
-- set, MPE_OLD_BIN (another build, for the ratio), each as is and with
-- MPE_HUGEPAGES=0; the old build with GLIBC_TUNABLES=glibc.malloc.hugetlb=1
-- (glibc's own huge pages for malloc); and lua5.4 loading MPE_BIN's mpe.so.
-- Also prints the time to build the table (the huge-page allocator copies
-- big growing blocks instead of remapping them).
-- Child mode (used by the above): pool_start_heap.lua --child MB REPS
-- SPDX-License-Identifier: MIT

local mpe = require "mpe"

local function child(mb, reps)
  local t0 = mpe.now()
  local t = {}
  for i = 1, math.floor(mb * 1e6 / 120) do t[i] = { i, i * 0.5, "x" } end
  local build = mpe.now() - t0
  local times = {}
  for r = 1, reps do
    local s = mpe.now()
    local pool = mpe.pool(2)
    pool:close()
    pool:join()
    times[r] = mpe.now() - s
  end
  table.sort(times)
  local huge = 0
  local f = io.open("/proc/self/smaps_rollup")
  if f then
    huge = tonumber(f:read("a"):match("AnonHugePages:%s*(%d+)")) or 0
    f:close()
  end
  print(string.format("build=%.6f median=%.6f best=%.6f heap_mb=%.0f huge_mb=%.0f #t=%d", build,
    times[reps // 2 + 1], times[1], collectgarbage("count") / 1024, huge / 1024, #t))
end

if arg[1] == "--child" then
  child(tonumber(arg[2]), math.tointeger(tonumber(arg[3])))
  os.exit(0)
end

local opt = { mb = { 0, 100, 400 }, runs = 3, reps = 20 }
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--mb" then
      i = i + 1
      opt.mb = {}
      for x in arg[i]:gmatch("[^,]+") do opt.mb[#opt.mb + 1] = assert(tonumber(x), "--mb: numbers") end
    elseif a == "--runs" then i = i + 1; opt.runs = assert(math.tointeger(tonumber(arg[i])), "--runs: an integer")
    elseif a == "--reps" then i = i + 1; opt.reps = assert(math.tointeger(tonumber(arg[i])), "--reps: an integer")
    else
      io.stderr:write("usage: mpe run pool_start_heap.lua [--mb 0,100,400] [--runs R] [--reps N]\n")
      os.exit(2)
    end
    i = i + 1
  end
end

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
local self = arg[0]
local NEW = os.getenv("MPE_BIN")
if not NEW then
  local k = -1
  while arg[k - 1] do k = k - 1 end
  NEW = arg[k]
end
local OLD = os.getenv("MPE_OLD_BIN")
local newdir = NEW:match("^(.*)/[^/]*$") or "."

local configs = {
  { name = "new", cmd = q(NEW) .. " run " .. q(self) },
  { name = "new, MPE_HUGEPAGES=0", cmd = "MPE_HUGEPAGES=0 " .. q(NEW) .. " run " .. q(self) },
  { name = "lua5.4 + new mpe.so", cmd = "LUA_CPATH=" .. q(newdir .. "/?.so;;") .. " lua5.4 " .. q(self) },
}
if OLD then
  table.insert(configs, 1, { name = "old", cmd = q(OLD) .. " run " .. q(self), old = true })
  configs[#configs + 1] = { name = "old + glibc.malloc.hugetlb=1",
    cmd = "GLIBC_TUNABLES=glibc.malloc.hugetlb=1 " .. q(OLD) .. " run " .. q(self) }
end

print(string.format("pool(2) start + close after building a table of N MB; median of %d runs (each the median of %d starts)", opt.runs, opt.reps))
print("new: " .. NEW .. (OLD and ("; old: " .. OLD) or ""))
local f = io.open("/sys/kernel/mm/transparent_hugepage/enabled")
print("THP: " .. (f and f:read("l") or "?") .. "; load average " .. (io.open("/proc/loadavg"):read("l")))
local function median(xs)
  table.sort(xs)
  return xs[(#xs + 1) // 2]
end
print("")
print(string.format("%-30s %6s %8s %10s %10s %9s %8s %8s", "configuration", "N MB", "heap MB", "start ms", "best ms", "vs old", "huge MB", "build s"))
for _, mb in ipairs(opt.mb) do
  local got = {}
  for _ = 1, opt.runs do
    for _, c in ipairs(configs) do
      local h = io.popen(c.cmd .. " --child " .. mb .. " " .. opt.reps .. " 2>&1")
      local out = h:read("a")
      h:close()
      local b, m, best, heap, huge = out:match("build=(%S+) median=(%S+) best=(%S+) heap_mb=(%S+) huge_mb=(%S+)")
      if not b then error(c.name .. ": " .. out) end
      local g = got[c.name] or { b = {}, m = {}, best = {}, heap = heap, huge = {} }
      got[c.name] = g
      g.b[#g.b + 1], g.m[#g.m + 1], g.best[#g.best + 1], g.huge[#g.huge + 1] = tonumber(b), tonumber(m), tonumber(best), tonumber(huge)
    end
  end
  local oldm = OLD and median(got.old.m)
  for _, c in ipairs(configs) do
    local g = got[c.name]
    local m = median(g.m)
    print(string.format("%-30s %6g %8s %10.2f %10.2f %9s %8.0f %8.3f", c.name, mb, g.heap, m * 1e3,
      math.min(table.unpack(g.best)) * 1e3, oldm and string.format("%.2fx", oldm / m) or "-", median(g.huge), median(g.b)))
  end
end
