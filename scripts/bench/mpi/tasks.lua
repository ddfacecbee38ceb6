-- tasks.lua -- MPI benchmark: trivial apply_async tasks and a map of identity
-- over 10^6 integers, on a pool spanning every rank (one worker each) and, in
-- the same run, on a pool of as many workers kept on rank 0:
--   mpirun -n 4 build/mpe run scripts/bench/mpi/tasks.lua [ntasks]
local mpe = require "mpe"
local n = tonumber(arg[1]) or 100000
local w = mpe.world()
local id = function(x) return x end

local function measure(pool)
  pool:map(id, mpe.range(1, 1000)) -- warm up every worker
  local t = mpe.now()
  local as = {}
  for i = 1, n do as[i] = pool:apply_async(id, {i}) end
  for i = 1, n do assert(as[i]:get() == i) end
  local tasks = n / (mpe.now() - t)
  t = mpe.now()
  local r = pool:map(id, mpe.range(1, 1000000))
  assert(r[1000000] == 1000000)
  return tasks, 1 / (mpe.now() - t)
end

local span <close> = mpe.pool{workers = w.size}
local here <close> = mpe.pool{workers = w.size, ranks = "local"}
local a1, m1 = measure(span)
local a2, m2 = measure(here)
print(string.format("apply_async, %d tasks: %d ranks x 1 worker %.0f tasks/s; rank 0 x %d workers %.0f tasks/s",
                    n, w.size, a1, w.size, a2))
print(string.format("map identity, 10^6 integers: %d ranks %.2f M items/s; rank 0 alone %.2f M items/s",
                    w.size, m1, m2))
