-- idle.lua -- an idle rank's CPU: rank 0 holds a pool and runs Lua that does
-- not call mpe for 5 s; prints the CPU seconds each other rank's process used.
--   mpirun -n 2 build/mpe run scripts/bench/mpi/idle.lua
local mpe = require "mpe"
local pool <close> = mpe.pool()
pool:map(function(x) return x end, mpe.range(1, 100))
local function cpu_of_ranks()
  local p = io.popen("ps -o pid=,cputimes=,args= -C mpe") local out = p:read("a") p:close()
  return out
end
local before = cpu_of_ranks()
local t = os.clock() + 5
local x = 0
while os.clock() < t do x = x + 1 end
print("before:\n" .. before .. "after 5 s:\n" .. cpu_of_ranks())
