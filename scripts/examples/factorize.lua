-- factorize.lua -- factor every number of 1..N into its table of prime factors
-- (12 -> {2, 2, 3}; 1 -> {}), serially and with pool:map, check that both
-- agree, and print the timings and the speedup. The results are tables, so
-- the parent decodes N of them: this is the workload where moving results back
-- costs the most next to the work itself.
--   mpe run scripts/examples/factorize.lua [N, default 200000] [workers, default all CPUs]
local mpe = require "mpe"

local N = math.tointeger(tonumber(arg and arg[1])) or 200000
local workers = math.tointeger(tonumber(arg and arg[2])) or mpe.cpu_count()

-- Trial division by 2 and then by odd numbers up to the square root of what is left.
local function factorize(n)
  local f = {}
  while n % 2 == 0 and n > 1 do
    f[#f + 1] = 2
    n = n // 2
  end
  local d = 3
  while d * d <= n do
    while n % d == 0 do
      f[#f + 1] = d
      n = n // d
    end
    d = d + 2
  end
  if n > 1 then f[#f + 1] = n end
  return f
end

local function same(a, b)
  if #a ~= #b then return false end
  for i = 1, #a do
    if a[i] ~= b[i] then return false end
  end
  return true
end

print(string.format("factorize 1..%d: serial Lua vs pool:map with %d workers", N, workers))

-- Start the workers first: forked before the serial results exist, they do
-- not inherit (and their collector never walks) that part of the heap.
local pool <close> = mpe.pool(workers)

local t0 = mpe.now()
local serial = {}
for n = 1, N do serial[n] = factorize(n) end
local t_serial = mpe.now() - t0

t0 = mpe.now()
local parallel = pool:map(factorize, mpe.range(1, N))
local t_pool = mpe.now() - t0

-- Verify: every table multiplies back to its number, is made of primes in
-- ascending order (trial division gives them so), and both runs agree.
local agree, products, factors = true, true, 0
for n = 1, N do
  local f = parallel[n]
  if type(f) ~= "table" or not same(f, serial[n]) then agree = false end
  local p = 1
  for i = 1, #serial[n] do
    p = p * serial[n][i]
    if i > 1 and serial[n][i] < serial[n][i - 1] then products = false end
  end
  if p ~= n then products = false end
  factors = factors + #serial[n]
end

print(string.format("serial:   %8.3f s", t_serial))
print(string.format("pool:map: %8.3f s  (speedup %.2f)", t_pool, t_serial / t_pool))
print(string.format("factors of %d: {%s}", N, table.concat(serial[N], ", ")))
print(string.format("check: %d tables, %d prime factors in all", #parallel, factors))
print("check: every table multiplies back to its number: " .. tostring(products))
print("check: serial and pool:map agree: " .. tostring(agree and #parallel == N))
