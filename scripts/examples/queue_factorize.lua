-- queue_factorize.lua -- P processes each factor a slice of 1..N into tables of
-- prime factors (12 -> {2, 2, 3}) and put {n, factors} on one mpe.queue; the
-- parent takes the N results as they come, merges them and checks every table.
--   mpe run scripts/examples/queue_factorize.lua [N, default 100000] [processes, default all CPUs]
local mpe = require "mpe"

local N = math.floor(tonumber(arg and arg[1]) or 100000)
local P = math.floor(tonumber(arg and arg[2]) or mpe.cpu_count())

-- Trial division by 2 and then by odd numbers up to the square root of what is
-- left (math.floor keeps integers integers in Lua 5.4, and runs under LuaJIT).
local function factorize(n)
  local f = {}
  while n % 2 == 0 and n > 1 do
    f[#f + 1] = 2
    n = math.floor(n / 2)
  end
  local d = 3
  while d * d <= n do
    while n % d == 0 do
      f[#f + 1] = d
      n = math.floor(n / d)
    end
    d = d + 2
  end
  if n > 1 then f[#f + 1] = n end
  return f
end

-- Wall-clock seconds (0.01 s resolution).
local function now()
  local f = io.open("/proc/uptime")
  if not f then return os.time() end
  local t = f:read("n")
  f:close()
  return t
end

local q = mpe.queue(10000) -- bounded: producers wait when the parent lags

-- A producer puts one result per number, in increasing order, then a last
-- {"done", slice} marker so the parent knows the slice is complete.
local function producer(slice, first, last)
  for n = first, last do q:put({ n, factorize(n) }) end
  q:put({ "done", slice })
  return last - first + 1
end

local t0 = now()
local procs, bounds = {}, {}
for s = 1, P do
  local first = math.floor((s - 1) * N / P) + 1
  local last = math.floor(s * N / P)
  bounds[s] = { first, last }
  procs[s] = mpe.process(producer, s, first, last)
  procs[s]:start()
end

-- Merge: results[n] = factors. Each producer's items must come in its own order.
local results, last_seen, done, in_order = {}, {}, 0, true
local function slice_of(n)
  for s = 1, P do
    if n >= bounds[s][1] and n <= bounds[s][2] then return s end
  end
end
while done < P do
  local item = q:get(60)
  if item[1] == "done" then
    done = done + 1
  else
    local n = item[1]
    local s = slice_of(n)
    if last_seen[s] and n ~= last_seen[s] + 1 then in_order = false end
    last_seen[s] = n
    results[n] = item[2]
  end
end
local produced = 0
for s = 1, P do produced = produced + procs[s]:result() end
local elapsed = now() - t0

-- Check every table: it multiplies back to its number, its factors ascend.
local count, factors, ok = 0, 0, true
for n = 1, N do
  local f = results[n]
  if not f then
    ok = false
  else
    count = count + 1
    factors = factors + #f
    local prod = 1
    for i = 1, #f do
      prod = prod * f[i]
      if i > 1 and f[i] < f[i - 1] then ok = false end
    end
    if prod ~= n then ok = false end
  end
end

print(string.format("factorize 1..%d in %d processes, results through one mpe.queue", N, P))
print("factors of " .. N .. ": {" .. table.concat(results[N] or {}, ", ") .. "}")
print(string.format("check: %d tables from %d processes, %d prime factors in all", count, P, factors))
print("check: every table multiplies back to its number: " .. tostring(ok and count == N and produced == N))
print("check: each process's results came in its order: " .. tostring(in_order))
print(string.format("time: %.2f s", elapsed))
