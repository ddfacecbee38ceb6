-- doubler.lua -- one process per number, after the doubler example of Python's
-- multiprocessing docs; unlike Python's Process, each returns its result.
--   mpe run scripts/examples/doubler.lua
local mpe = require "mpe"

local function doubler(number)
  local result = number * 2
  -- Children print in whatever order they run.
  print(string.format("%d doubled to %d by: %s", number, result, mpe.current_process().name))
  return result
end

local numbers = { 5, 10, 15, 20, 25 }
local procs = {}
for i, number in ipairs(numbers) do
  procs[i] = mpe.process(doubler, number)
  procs[i]:start()
end
local test = mpe.process{ target = doubler, args = { 2 }, name = "Test" }
test:start()
procs[#procs + 1] = test

-- Join them all first, so the results below come after every child's line.
for _, p in ipairs(procs) do p:join() end
for _, p in ipairs(procs) do
  print(string.format("%s: %d", p.name, p:result()))
end
