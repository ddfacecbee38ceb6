-- scale_logloop.lua -- the log loop of logloop.lua with the pool part only, for
-- `mpe scale`: item i sums log(i + 1) .. log(i + L) and returns one float, so
-- the work is almost all computation and the speedup shows what the pool
-- costs. The pool takes its size from MPE_WORKERS (set by mpe scale), so the
-- script runs unchanged at every worker count; it recomputes a few items
-- serially and fails if they differ.
--   mpe scale -j 1,2 scripts/examples/scale_logloop.lua [items, default 100000] [logs per item, default 1000]
local mpe = require "mpe"

local N = math.floor(tonumber(arg and arg[1]) or 100000)
local L = math.floor(tonumber(arg and arg[2]) or 1000)

local log = math.log
local function work(i)
  local s = 0.0
  for k = 1, L do s = s + log(i + k) end
  return s
end

local pool = mpe.pool()                 -- MPE_WORKERS workers (default: the CPUs)
local results = pool:map(work, mpe.range(1, N))
pool:close()
pool:join()

local total = 0.0
for i = 1, N do total = total + results[i] end
for _, i in ipairs({ 1, 2, math.floor(N / 2), N }) do
  local want = work(i)
  if math.abs(results[i] - want) > 1e-9 * want then
    error(string.format("item %d: %.17g, serial %.17g", i, results[i], want))
  end
end
print(string.format("%d items x %d logs with %d workers: total %.6f", N, L, pool.workers, total))
