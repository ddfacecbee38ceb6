-- shared_array.lua -- a 100,000 x 3 shared array of doubles; four processes each
-- take a slice of the rows and fill column 3 with column 1 + column 2, in place.
-- Nothing is copied back: the children write into the memory the parent reads.
--   mpe run scripts/examples/shared_array.lua [rows, default 100000]
local mpe = require "mpe"

local rows = tonumber(arg and arg[1]) or 100000
local nprocs = 4

-- Wall-clock seconds (0.01 s resolution).
local function now()
  local f = io.open("/proc/uptime")
  if not f then return os.time() end
  local t = f:read("n")
  f:close()
  return t
end

local a = mpe.array("double", rows, 3)
for r = 1, rows do
  a:set(r, 1, r * 0.5)
  a:set(r, 2, math.sin(r))
end

-- Row r's cells are a[3r-2], a[3r-1], a[3r] (row-major); flat indexing is the
-- fast path (a:get(r, c) is a method call).
local function fill(first, last)
  for r = first, last do
    local base = 3 * (r - 1)
    a[base + 3] = a[base + 1] + a[base + 2]
  end
  return last - first + 1
end

local t0 = now()
local procs, per = {}, math.ceil(rows / nprocs)
for k = 1, nprocs do
  local first, last = (k - 1) * per + 1, math.min(k * per, rows)
  procs[k] = mpe.process(fill, first, last)
  procs[k]:start()
end
local filled = 0
for _, p in ipairs(procs) do
  filled = filled + p:result() -- joins; raises if the child failed
end
local parallel = now() - t0

-- Check against a serial computation, row by row and in total.
local t1 = now()
local bad, want = 0, 0
for r = 1, rows do
  local s = a:get(r, 1) + a:get(r, 2)
  if a:get(r, 3) ~= s then bad = bad + 1 end
  want = want + s
end
local check = now() - t1
local got = 0
for r = 1, rows do got = got + a[3 * r] end
local t2 = now()
fill(1, rows) -- the same work in this one process, for comparison
local serial = now() - t2

print(string.format("%d x 3 doubles: %d processes filled %d rows in %.2f s; one process: %.2f s (check %.2f s)",
  rows, nprocs, filled, parallel, serial, check))
if bad == 0 and filled == rows and got == want then
  print("OK")
else
  print(string.format("MISMATCH: %d bad rows, column 3 sums to %.17g, expected %.17g", bad, got, want))
  os.exit(1)
end
