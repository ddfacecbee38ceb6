-- cputime.lua -- one side of one workload of workloads.lua, with the CPU seconds
-- of the parent (main and dispatcher threads) and of its reaped workers, from
-- /proc/self/stat: steadier than wall time on a loaded machine.
--   mpe run scripts/bench/cputime.lua factorize 200000 [mpe|serial]
-- prints: NAME SIDE wall=S parent u=U s=S workers u=U s=S check=C
-- (the parent's figures include pool start and the workload's check; Linux only.)
-- SPDX-License-Identifier: MIT

local dir = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = dir .. "/?.lua;" .. package.path
local workloads = require "workloads"
local mpe = require "mpe"

local name, n, side = arg[1], tonumber(arg[2]), arg[3] or "mpe"
local w = workloads[name]
if not (w and n and type(w[side]) == "function") then
  io.stderr:write("usage: cputime.lua WORKLOAD N [mpe|serial]\n")
  os.exit(2)
end

-- utime, stime, cutime, cstime in seconds (fields 14-17 of /proc/self/stat).
local function stat()
  local f = assert(io.open("/proc/self/stat"))
  local s = f:read("a")
  f:close()
  local t = {}
  for x in s:match("%) (.*)$"):gmatch("%S+") do t[#t + 1] = tonumber(x) or x end
  local hz = 100
  return t[12] / hz, t[13] / hz, t[14] / hz, t[15] / hz
end

local ctx = { workers = 2 }
local t0, t1
function ctx.start() t0 = mpe.now() end
function ctx.stop() t1 = mpe.now() end
local u0, s0 = stat()
local check = w[side](n, ctx)
local u, s, cu, cs = stat()
print(string.format("%s %s wall=%.3f parent u=%.2f s=%.2f workers u=%.2f s=%.2f check=%s",
  name, side, t1 - t0, u - u0, s - s0, cu, cs, check))
