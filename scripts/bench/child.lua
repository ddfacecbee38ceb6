-- child.lua -- runs one side of one benchmark workload, once, in a fresh process,
-- and prints "seconds=S check=C". Started by run.lua:
--   mpe run scripts/bench/child.lua mpe WORKLOAD N WORKERS
--   lua5.4 scripts/bench/child.lua serial WORKLOAD N WORKERS
-- and the same two under the LuaJIT build of mpe and `luajit`.
-- Under lua5.4 the clock is mpe.now() from mpe.so when LUA_CPATH finds it
-- (a monotonic wall clock), else os.clock() (CPU time), and the line says so.
-- SPDX-License-Identifier: MIT

local dir = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = dir .. "/?.lua;" .. package.path
local workloads = require "workloads"

local side, name = arg[1], arg[2]
-- (No math.tointeger: this also runs under LuaJIT.)
local function count(s)
  local x = tonumber(s)
  return x and x >= 0 and x == math.floor(x) and math.floor(x) or nil
end
local n = count(arg[3])
local workers = count(arg[4]) or 2
local w = workloads[name]
if not (side and w and n and type(w[side]) == "function") then
  io.stderr:write("usage: child.lua mpe|serial WORKLOAD N [WORKERS]\n")
  os.exit(2)
end

local ok, mpe = pcall(require, "mpe")
local now, clockname = os.clock, "cpu"
if ok and type(mpe) == "table" and mpe.now then
  now, clockname = mpe.now, "wall"
end

local ctx = { workers = workers }
local t_start, t_stop
function ctx.start() t_start = now() end
function ctx.stop() t_stop = now() end

collectgarbage()
local t0 = now()
local check = w[side](n, ctx)
local t1 = now()
local seconds = (t_stop or t1) - (t_start or t0)
print(string.format("seconds=%.9f check=%s clock=%s", seconds, tostring(check), clockname))
