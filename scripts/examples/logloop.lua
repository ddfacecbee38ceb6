-- logloop.lua -- a CPU-bound map with scalar results: item i computes
-- log(i + 1) + log(i + 2) + ... + log(i + L) (L = 1000 by default), over
-- 100,000 items, serially and with pool:map; prints the sums and the speedup.
-- Each item returns one float, so results travel packed and the work is
-- almost all computation: the speedup shows what the pool itself costs.
--   mpe run scripts/examples/logloop.lua [items, default 100000] [logs per item, default 1000] [workers]
local mpe = require "mpe"

local N = math.tointeger(tonumber(arg and arg[1])) or 100000
local L = math.tointeger(tonumber(arg and arg[2])) or 1000
local workers = math.tointeger(tonumber(arg and arg[3])) or mpe.cpu_count()

local log = math.log
local function work(i)
  local s = 0.0
  for k = 1, L do s = s + log(i + k) end
  return s
end

local function total(results)
  local s = 0.0
  for i = 1, N do s = s + results[i] end
  return s
end

print(string.format("log loop: %d items x %d logs, serial Lua vs pool:map with %d workers", N, L, workers))

-- Start the workers first: forked before the serial results exist, they do
-- not inherit (and their collector never walks) that part of the heap.
local pool <close> = mpe.pool(workers)

local t0 = mpe.now()
local serial = {}
for i = 1, N do serial[i] = work(i) end
local t_serial = mpe.now() - t0

t0 = mpe.now()
local parallel = pool:map(work, mpe.range(1, N))
local t_pool = mpe.now() - t0

local same = #parallel == N
for i = 1, N do
  if parallel[i] ~= serial[i] then same = false end
end

print(string.format("serial:   %8.3f s", t_serial))
print(string.format("pool:map: %8.3f s  (speedup %.2f)", t_pool, t_serial / t_pool))
print(string.format("sum: %.6f", total(serial)))
print("check: serial and pool:map agree: " .. tostring(same))
