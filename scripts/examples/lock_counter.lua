-- lock_counter.lua -- four processes increment one shared counter (an mpe.value):
-- without a lock (updates may be lost: read and write are separate steps), with
-- an mpe.lock (exact), and with the atomic v:add (exact, no lock needed).
--   mpe run scripts/examples/lock_counter.lua [increments per process, default 10000]
local mpe = require "mpe"

local nprocs = 4
local n = tonumber(arg and arg[1]) or 10000

-- Wall-clock seconds (0.01 s resolution), good for the tenths these runs take.
local function now()
  local f = io.open("/proc/uptime")
  if not f then return os.time() end
  local t = f:read("n")
  f:close()
  return t
end

local counter = mpe.value("int64", 0)
local lock = mpe.lock()

local variants = {
  { "without a lock", function()
      for _ = 1, n do counter:set(counter:get() + 1) end
    end },
  { "with mpe.lock", function()
      for _ = 1, n do
        lock:acquire()
        counter:set(counter:get() + 1)
        lock:release()
      end
    end },
  { "with lock:with", function()
      local function inc() counter:set(counter:get() + 1) end
      for _ = 1, n do lock:with(inc) end
    end },
  { "atomic add", function()
      for _ = 1, n do counter:add(1) end
    end },
}

print(string.format("%d processes x %d increments (expected %d)", nprocs, n, nprocs * n))
for _, v in ipairs(variants) do
  local name, work = v[1], v[2]
  counter:set(0)
  local t0 = now()
  local procs = {}
  for i = 1, nprocs do
    procs[i] = mpe.process(work)
    procs[i]:start()
  end
  for _, p in ipairs(procs) do
    p:result() -- joins; raises if the child failed
  end
  local dt = now() - t0
  print(string.format("%-16s %8d  %.2f s", name, counter:get(), dt))
end
