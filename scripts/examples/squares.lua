-- squares.lua -- the squares of 1..N (N = 10,000,000 by default): pool:map over
-- mpe.range(1, N) against a serial loop building the same table. Computing a
-- square costs next to nothing, so this measures how fast results come back:
-- the range travels as two numbers per chunk, and integer results travel
-- packed, 8 bytes each, decoded straight into the results table.
--   mpe run scripts/examples/squares.lua [N, default 10000000] [workers]
local mpe = require "mpe"

local N = math.tointeger(tonumber(arg and arg[1])) or 10000000
local workers = math.tointeger(tonumber(arg and arg[2])) or mpe.cpu_count()

print(string.format("squares of 1..%d: serial Lua vs pool:map over mpe.range with %d workers", N, workers))

local pool <close> = mpe.pool(workers) -- started before the big tables exist

local t0 = mpe.now()
local serial = {}
for i = 1, N do serial[i] = i * i end
local t_serial = mpe.now() - t0

t0 = mpe.now()
local parallel = pool:map(function(x) return x * x end, mpe.range(1, N))
local t_pool = mpe.now() - t0

-- Check the count, both ends, and a sample of 1000 positions spread over the table.
local same = parallel[1] == serial[1] and parallel[N] == serial[N]
local step = math.max(1, N // 1000)
for i = 1, N, step do
  if parallel[i] ~= serial[i] or math.type(parallel[i]) ~= "integer" then same = false end
end

print(string.format("serial loop: %8.3f s", t_serial))
print(string.format("pool:map:    %8.3f s  (%.2fx the serial time)", t_pool, t_pool / t_serial))
print(string.format("check: count %d (n = %s), last square %d", #parallel, tostring(parallel.n), parallel[N]))
print("check: sample of serial and pool:map agree: " .. tostring(same))
