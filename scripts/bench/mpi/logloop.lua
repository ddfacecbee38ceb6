-- logloop.lua -- the log loop (2e7 math.log calls in 200 items) on a pool of 2
-- workers spanning 2 ranks (1 worker each) against a pool of 2 workers kept on
-- rank 0, alternated in one run so that both see the same machine load:
--   mpirun -n 2 build/mpe run scripts/bench/mpi/logloop.lua
local mpe = require "mpe"
local log = math.log
local f = function(k) local s = 0 for i = k * 1e5 + 1, (k + 1) * 1e5 do s = s + log(i) end return s end
local span <close> = mpe.pool{workers = 2}
local here <close> = mpe.pool{workers = 2, ranks = "local"}
local function run(pool)
  local t = mpe.now()
  pool:map(f, mpe.range(0, 199))
  return mpe.now() - t
end
run(span) run(here)
local a, b = {}, {}
for k = 1, 3 do a[k] = run(span) b[k] = run(here) end
table.sort(a) table.sort(b)
print(string.format("log loop, 2e7 logs: 2 ranks x 1 worker %.3f s, one rank x 2 workers %.3f s (medians of 3), ratio %.2f",
                    a[2], b[2], a[2] / b[2]))
