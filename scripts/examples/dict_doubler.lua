-- dict_doubler.lua -- one process per number doubles it and writes its result
-- into a shared mpe.dict under its own pid; the parent then prints what each
-- process wrote. A counter in the same dict is updated atomically by all.
--   mpe run scripts/examples/dict_doubler.lua
local mpe = require "mpe"

local results = mpe.dict()

local function doubler(number)
  local me = mpe.current_process()
  results:set(me.pid, { number = number, doubled = number * 2, name = me.name })
  results:update("reported", function(n) return (n or 0) + 1 end)
end

local numbers = { 5, 10, 15, 20, 25 }
local procs = {}
for i, number in ipairs(numbers) do
  procs[i] = mpe.process(doubler, number)
  procs[i]:start()
end
for _, p in ipairs(procs) do p:join() end

for _, p in ipairs(procs) do
  local r = results:get(p.pid)
  print(string.format("%s: %d doubled to %d", r.name, r.number, r.doubled))
end
print(string.format("processes that reported: %d", results:get("reported")))
print(string.format("entries in the dict: %d (one per process, and the counter)", #results))
