-- poolfail_through.lua -- what the pool failure specs (poolfail, poolfds,
-- poolmem) and the scripts they run share: the entry points, one piece of
-- work through any of them, the check that a pool still works and joins,
-- and a bounded child process for each case.
local mpe = require "mpe"
local unpack = table.unpack or unpack

local M = {}

M.ENTRIES = {"map", "starmap", "map_async", "starmap_async", "imap", "imap_unordered",
             "apply", "apply_async"}

-- Run fn over the argument lists in args (args[i] = {a1, a2, ...}) through
-- entry point e of pool; returns the first result of every call, in order.
function M.through(pool, e, fn, args, opts)
  local out = {}
  if e == "map" or e == "map_async" or e == "imap" or e == "imap_unordered" then
    local items = {}
    for i = 1, #args do items[i] = args[i][1] end
    if e == "map" then return pool:map(fn, items, opts) end
    if e == "map_async" then return pool:map_async(fn, items, opts):get() end
    -- In a function of its own: the loop's hidden iterator slots (which hold
    -- the imap object, and through it the job) end with its frame, so a
    -- caller's collectgarbage() can free them.
    local function drain()
      for i, v in pool[e](pool, fn, items, opts) do out[i] = v end
    end
    drain()
    return out
  elseif e == "starmap" then
    return pool:starmap(fn, args, opts)
  elseif e == "starmap_async" then
    return pool:starmap_async(fn, args, opts):get()
  elseif e == "apply" then
    for i = 1, #args do out[i] = pool:apply(fn, unpack(args[i])) end
    return out
  else
    local as = {}
    for i = 1, #args do as[i] = pool:apply_async(fn, args[i], opts) end
    for i = 1, #args do out[i] = as[i]:get() end
    return out
  end
end

-- The pool completes a fresh map, then close + join return.
function M.healthy_then_joined(pool)
  local r = pool:map(function(x) return x * 3 end, mpe.range(1, 100))
  assert(r.n == 100 and r[1] == 3 and r[100] == 300, "the map after the failure is wrong")
  pool:close()
  pool:join()
  return true
end

-- Run body() in a child process; its return values come back. A child still
-- running after `seconds` is killed and the case fails.
function M.isolated(body, seconds)
  local p = mpe.process(body)
  p:start()
  if not p:join(seconds or 90) then
    p:kill()
    p:join()
    error("the case did not finish within " .. (seconds or 90) .. " s (a hang)", 2)
  end
  return p:result()
end

return M
