-- poolfail_through.lua -- for poolfail_spec.lua (and the scripts it runs):
-- one piece of work through any entry point of a pool.
local unpack = table.unpack or unpack

-- Run fn over the argument lists in args (args[i] = {a1, a2, ...}) through
-- entry point e of pool; returns the first result of every call, in order.
local function through(pool, e, fn, args, opts)
  local out = {}
  if e == "map" or e == "map_async" or e == "imap" or e == "imap_unordered" then
    local items = {}
    for i = 1, #args do items[i] = args[i][1] end
    if e == "map" then return pool:map(fn, items, opts) end
    if e == "map_async" then return pool:map_async(fn, items, opts):get() end
    for i, v in pool[e](pool, fn, items, opts) do out[i] = v end
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

return through
