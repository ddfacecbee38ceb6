-- scripts/bench/inline.lua -- what the inline pool (workers = 0) costs over a
-- plain Lua loop calling the same function, for items that are numbers (passed
-- as they are) and small tables (copied through the codec, so a task cannot
-- change the caller's item), and what that copy alone costs.
-- usage: mpe run scripts/bench/inline.lua [N] [R]   (N items, best of R runs)
-- SPDX-License-Identifier: MIT
local mpe = require "mpe"
local N = tonumber(arg and arg[1]) or 200000
local R = tonumber(arg and arg[2]) or 5

-- Best wall time and best CPU time of this process (os.clock) over R runs:
-- on a loaded machine the CPU time is the steadier figure for the lines that
-- run in this process only (all but the worker pool's).
local function best(f)
  local b, c = math.huge, math.huge
  for _ = 1, R do
    collectgarbage()
    local t0, c0 = mpe.now(), os.clock()
    f()
    local t, ct = mpe.now() - t0, os.clock() - c0
    if t < b then b = t end
    if ct < c then c = ct end
  end
  return { b, c }
end

local nums, tabs = {}, {}
for i = 1, N do
  nums[i] = i
  tabs[i] = { id = i, name = "item" .. i, w = i * 0.5 }
end
local fnum = function(x) return x * 2 end
local ftab = function(t) return t.id + t.w end
local pool = mpe.pool(0)

local function loop(f, items)
  return function()
    local r = {}
    for i = 1, #items do r[i] = f(items[i]) end
  end
end

local rows = {
  { "numbers: plain loop", best(loop(fnum, nums)) },
  { "numbers: inline pool:map", best(function() pool:map(fnum, nums) end) },
  { "tables: plain loop", best(loop(ftab, tabs)) },
  { "tables: inline pool:map", best(function() pool:map(ftab, tabs) end) },
  { "tables: worker pool, 1 worker, pool:map", best(function() local p1 = mpe.pool(1) p1:map(ftab, tabs) p1:close() p1:join() end) },
  { "tables: mpe.decode(mpe.encode(t)) loop", best(function()
      for i = 1, #tabs do local c = mpe.decode(mpe.encode(tabs[i])) end
    end) },
}
print(string.format("N = %d items, best of %d runs, %s", N, R, _VERSION))
for _, r in ipairs(rows) do
  print(string.format("%-42s %8.3f s wall %7.2f us/item  %8.3f s CPU %7.2f us/item", r[1], r[2][1],
                      r[2][1] / N * 1e6, r[2][2], r[2][2] / N * 1e6))
end
