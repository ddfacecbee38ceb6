-- pids.lua -- a helper for the specs: this process's children and whether a
-- process still runs, read from /proc (no fork needed to ask), and a bounded
-- wait for processes to end (never a timing assertion: the bound is generous).
local mpe = require "mpe"

local M = {}

-- The pids of this process's children (of its main thread), in an array.
function M.children()
  local pid = mpe.current_process().pid
  local f = io.open("/proc/" .. pid .. "/task/" .. pid .. "/children")
  local t = {}
  if not f then return t end
  for c in f:read("*a"):gmatch("%d+") do t[#t + 1] = tonumber(c) end
  f:close()
  return t
end

-- A process that exists and is not a zombie.
function M.running(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then return false end
  local s = f:read("*a")
  f:close()
  local state = s:match("%) (%a)")
  return state ~= nil and state ~= "Z" and state ~= "X"
end

-- Wait up to `seconds` (default 30) until none of pids runs; returns those
-- still running (empty when all ended).
function M.gone(pids, seconds)
  local left
  for _ = 1, (seconds or 30) * 10 do
    left = {}
    for _, pid in ipairs(pids) do
      if M.running(pid) then left[#left + 1] = pid end
    end
    if #left == 0 then break end
    os.execute("sleep 0.1")
  end
  return left
end

return M
