-- logloop.lua -- the log loop (sum of log(i) over chunks) on a pool:
--   mpirun -n 2 build/mpe run scripts/bench/mpi/logloop.lua   (2 ranks x 1 worker)
--   build/mpe run scripts/bench/mpi/logloop.lua               (one machine, 2 workers)
local mpe = require "mpe"
local w = mpe.world()
local pool <close> = mpe.pool{workers = 2}
local log = math.log
local f = function(k) local s = 0 for i = k * 1e5 + 1, (k + 1) * 1e5 do s = s + log(i) end return s end
pool:map(f, mpe.range(0, 3))
local t = mpe.now()
pool:map(f, mpe.range(0, 199))
print(string.format("log loop, 2e7 logs, %d rank(s), 2 workers: %.3f s", w.size, mpe.now() - t))
