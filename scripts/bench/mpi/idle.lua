-- idle.lua -- an idle rank's CPU: rank 0 holds a pool spanning the ranks and
-- runs Lua that does not call mpe for 5 s; prints the CPU each process of
-- this run used meanwhile (utime + stime from /proc, in % of one CPU).
--   mpirun -n 2 build/mpe run scripts/bench/mpi/idle.lua
local mpe = require "mpe"
local pool <close> = mpe.pool()
pool:map(function(x) return x end, mpe.range(1, 100))
local function ticks()
  local t = {}
  local p = io.popen("grep -l idle.lua /proc/[0-9]*/cmdline 2>/dev/null")
  for path in p:lines() do
    local pid = path:match("/proc/(%d+)/")
    local f = io.open("/proc/" .. pid .. "/stat")
    if f then
      local s = f:read("a") f:close()
      local rest = s:match("%) (.*)")
      local fields = {}
      for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
      t[pid] = {tonumber(fields[12]) + tonumber(fields[13]), fields[2]} -- utime + stime, ppid
    end
  end
  p:close()
  return t
end
local me = tostring(mpe.current_process().pid)
local a, t0 = ticks(), mpe.now()
local x, stop = 0, os.clock() + 5
while os.clock() < stop do x = x + 1 end
local b, dt = ticks(), mpe.now() - t0
local function comm(pid)
  local f = io.open("/proc/" .. pid .. "/comm")
  if not f then return "?" end
  local c = f:read("l") f:close()
  return c
end
for pid, v in pairs(b) do
  if a[pid] then
    local role = comm(pid)
    if pid == me then role = "rank 0 (busy in Lua)"
    elseif role == "mpe" then role = comm(v[2]) == "mpe" and "a worker" or "another rank" end
    print(string.format("pid %s %-22s %.2f%% of a CPU", pid, role, (v[1] - a[pid][1]) / 100 / dt * 100))
  end
end
