-- tasks.lua -- MPI benchmark: trivial apply_async tasks, map of identity over
-- 10^6 integers, and an idle rank's CPU. Run as
--   mpirun -n 4 build/mpe run scripts/bench/mpi/tasks.lua [ntasks]
local mpe = require "mpe"
local n = tonumber(arg[1]) or 100000
local w = mpe.world()
local pool <close> = mpe.pool{workers = w.size}
local id = function(x) return x end
pool:map(id, mpe.range(1, 1000)) -- warm up every worker
local t = mpe.now()
local as = {}
for i = 1, n do as[i] = pool:apply_async(id, {i}) end
for i = 1, n do assert(as[i]:get() == i) end
local dt = mpe.now() - t
print(string.format("apply_async: %d tasks on %d ranks x 1 worker: %.0f tasks/s", n, w.size, n / dt))
t = mpe.now()
local r = pool:map(id, mpe.range(1, 1000000))
dt = mpe.now() - t
assert(r[1000000] == 1000000)
print(string.format("map identity: 10^6 integers on %d ranks: %.2f M items/s", w.size, 1 / dt))
