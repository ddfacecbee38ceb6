-- workloads.lua -- the benchmark workloads: each entry is one workload measured
-- three ways in one run of scripts/bench/run.lua: mpe's pool, serial Lua 5.4
-- (lua5.4 running the same Lua code), and Python 3 multiprocessing; and, when
-- a LuaJIT build of mpe is given (MPE_JIT_BIN), the same pool code under it
-- against serial `luajit`. So this file and child.lua are written in the
-- Lua that both understand: no `//`, no integer-only functions, and check
-- values formatted so that integers print alike (%.0f, not tostring of a float).
-- SPDX-License-Identifier: MIT
--
-- Adding a workload is adding one entry to the list below (the targets are
-- those of issue 13):
--
--   name      short name (used by --only and by the child runner)
--   title     what the table shows; may use %d for the size
--   size      the problem size n of a full run; quick: the size for --quick
--   workers   pool size of the mpe side and of Python's Pool (default 2)
--   mpe       function(n, ctx) -> check   runs in `mpe run` (require "mpe" works)
--   serial    function(n, ctx) -> check   runs in stock lua5.4, mpe not needed (optional)
--   python    "file.py": scripts/bench/peers/file.py, run as `python3 file.py n workers`,
--             prints "seconds=S check=C" (optional)
--   figure    how the three times become the figure compared with the target:
--               "speedup"  serial time / mpe time
--               "rate"     items per second (n / time); the ratio is mpe's rate / Python's
--               "latency"  ms per operation (time / n); the ratio is Python's / mpe's
--   target    { min = x } (the figure, or the ratio against `against`, must reach x)
--             or { max_ms = x } (latency); against = "serial" | "python"
--   jit       the LuaJIT row: false for none, or { target = ... } (a target of
--             its own; without one the LuaJIT row shows figures only). The
--             LuaJIT row runs the same mpe and serial functions.
--   old       false: no MPE_OLD_BIN row (the workload needs what the old build lacks)
--   variant   rows that measure another form of a workload (for example
--             results written into a shared array with `out =`) are entries of
--             their own; `variant` names the workload they are a form of
--             (--only NAME selects NAME and its variants).
--   note      one line printed under the table (optional)
--
-- ctx.workers is the pool size; ctx.start() and ctx.stop() mark the timed part
-- (without them the whole call is timed). The check values of the three sides
-- must be equal (run.lua reports a mismatch); they are strings or numbers
-- formatted the same way in Lua and in Python.

local W = {}

local function add(entry)
  W[#W + 1] = entry
  W[entry.name] = entry
end

-- ---- log loop: CPU-bound, one float per item ----------------------------------

local LOGS = 1000
local function logwork(i)
  local log, s = math.log, 0.0
  for k = 1, LOGS do s = s + log(i + k) end
  return s
end

local function fsum(t, n)
  local s = 0.0
  for i = 1, n do s = s + t[i] end
  return string.format("%.6f", s)
end

add {
  name = "logloop",
  title = "log loop, %d items x 1000 logs",
  size = 100000, quick = 10000,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local pool = mpe.pool(ctx.workers)
    ctx.start()
    local r = pool:map(logwork, mpe.range(1, n))
    ctx.stop()
    pool:close(); pool:join()
    return fsum(r, n)
  end,
  serial = function(n, ctx)
    ctx.start()
    local r = {}
    for i = 1, n do r[i] = logwork(i) end
    ctx.stop()
    return fsum(r, n)
  end,
  python = "logloop.py",
  figure = "speedup",
  target = { min = 1.9, against = "serial" },
  jit = { target = { min = 1.8, against = "serial" } },
}

-- ---- factorize: CPU-bound, a table of prime factors per item -------------------

-- Integer division is `//` in Lua 5.4, which LuaJIT cannot parse: the
-- function is written once with IDIV(a, b) and compiled for the Lua that runs
-- it (under LuaJIT, numbers are doubles and (a - a % b) / b is exact).
local FACTORIZE = [[
return function(n)
  local f = {}
  while n % 2 == 0 and n > 1 do
    f[#f + 1] = 2
    n = IDIV(n, 2)
  end
  local d = 3
  while d * d <= n do
    while n % d == 0 do
      f[#f + 1] = d
      n = IDIV(n, d)
    end
    d = d + 2
  end
  if n > 1 then f[#f + 1] = n end
  return f
end]]
local factorize = assert(load((FACTORIZE:gsub("IDIV%((%w+), (%w+)%)",
  jit and "(%1 - %1 %% %2) / %2" or "%1 // %2")), "=factorize"))()

-- number of prime factors in all : their sum
local function fcheck(r, n)
  local count, sum = 0, 0
  for i = 1, n do
    local f = r[i]
    count = count + #f
    for k = 1, #f do sum = sum + f[k] end
  end
  return count .. ":" .. sum
end

add {
  name = "factorize",
  title = "factorize 1..%d, collect the factor tables",
  size = 200000, quick = 20000,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local pool = mpe.pool(ctx.workers)
    ctx.start()
    local r = pool:map(factorize, mpe.range(1, n))
    ctx.stop()
    pool:close(); pool:join()
    return fcheck(r, n)
  end,
  serial = function(n, ctx)
    ctx.start()
    local r = {}
    for i = 1, n do r[i] = factorize(i) end
    ctx.stop()
    return fcheck(r, n)
  end,
  python = "factorize.py",
  figure = "speedup",
  target = { min = 1.5, against = "serial" },
  jit = { target = { min = 1.2, against = "serial" } },
}

-- ---- map of identity: the per-item cost of the pool itself -----------------------

local function isum(r, n)
  local s = 0
  for i = 1, n do s = s + r[i] end
  return s
end

add {
  name = "identity",
  title = "map of identity over %d integers",
  size = 1000000, quick = 100000,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local pool = mpe.pool(ctx.workers)
    local items = {}
    for i = 1, n do items[i] = i end
    ctx.start()
    local r = pool:map(function(x) return x end, items)
    ctx.stop()
    pool:close(); pool:join()
    return isum(r, n)
  end,
  python = "identity.py",
  figure = "rate",
  target = { min = 3, against = "python" },
}

-- ---- apply_async round trips: the per-task cost --------------------------------

add {
  name = "apply_async",
  title = "%d apply_async round trips (identity)",
  size = 100000, quick = 10000,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local pool = mpe.pool(ctx.workers)
    local function identity(x) return x end
    ctx.start()
    local asyncs = {}
    for i = 1, n do asyncs[i] = pool:apply_async(identity, { i }) end
    local s = 0
    for i = 1, n do s = s + asyncs[i]:get() end
    ctx.stop()
    pool:close(); pool:join()
    return s
  end,
  python = "apply_async.py",
  figure = "rate",
  target = { min = 10, against = "python" },
}

-- ---- pool start + close ---------------------------------------------------------

add {
  name = "pool_start",
  title = "pool of 2 started and closed, %d times",
  size = 50, quick = 10,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local started = 0
    for _ = 1, n do
      local pool = mpe.pool(ctx.workers)
      pool:close()
      pool:join()
      started = started + pool.started
    end
    return started
  end,
  python = "pool_start.py",
  figure = "latency",
  target = { max_ms = 1 },
}

-- The same after the script has built a table of about 20 * n MB (small
-- tables, the shape of loaded data): fork copies the parent's page tables.
-- scripts/bench/pool_start_heap.lua measures it against the heap size.
add {
  name = "pool_start_heap",
  variant = "pool_start",
  title = "pool of 2 started and closed after a (20 x %d) MB table",
  size = 20, quick = 2,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local data = {}
    for i = 1, math.floor(n * 20e6 / 120) do data[i] = { i, i * 0.5, "x" } end
    local started = 0
    ctx.start()
    for _ = 1, n do
      local pool = mpe.pool(ctx.workers)
      pool:close()
      pool:join()
      started = started + pool.started
    end
    ctx.stop()
    return started .. ":" .. #data
  end,
  figure = "latency",
  target = { max_ms = 3 },
}

-- ---- squares over mpe.range: results moving in bulk ------------------------------

add {
  name = "squares",
  title = "squares of 1..%d over mpe.range, collect",
  size = 10000000, quick = 1000000,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local pool = mpe.pool(ctx.workers)
    ctx.start()
    local r = pool:map(function(x) return x * x end, mpe.range(1, n))
    ctx.stop()
    pool:close(); pool:join()
    return #r .. ":" .. string.format("%.0f", r[n])
  end,
  serial = function(n, ctx)
    ctx.start()
    local r = {}
    for i = 1, n do r[i] = i * i end
    ctx.stop()
    return #r .. ":" .. string.format("%.0f", r[n])
  end,
  python = "squares.py",
  figure = "speedup",
  target = { min = 1.0, against = "serial" },
  note = "squares: target 'no slower than serial Lua' is a speedup of at least 1.0",
}

-- The same squares written by the workers straight into a shared array
-- (option out=): no result crosses to the parent. Serial Lua fills a table.
add {
  name = "squares_out",
  variant = "squares",
  title = "squares of 1..%d over mpe.range, into out",
  size = 10000000, quick = 1000000,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local pool = mpe.pool(ctx.workers)
    local a = mpe.array("int64", n)
    ctx.start()
    pool:map(function(x) return x * x end, mpe.range(1, n), { out = a })
    ctx.stop()
    pool:close(); pool:join()
    return #a .. ":" .. string.format("%.0f", a[n])
  end,
  serial = W.squares.serial,
  figure = "speedup",
  target = { min = 1.7, against = "serial" },
  jit = { target = { min = 1.5, against = "serial" } },
}

-- ---- queues and dicts between processes (ipc) ------------------------------------

-- A producer process puts n small tables on a queue; the parent takes them.
add {
  name = "queue",
  title = "queue: %d small tables from one process to another",
  size = 200000, quick = 20000,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local q = mpe.queue()
    ctx.start()
    local p = mpe.process(function()
      for i = 1, n do q:put({ i, "item", 2.5 }) end
    end)
    p:start()
    local s = 0
    for _ = 1, n do s = s + q:get()[1] end
    p:join()
    ctx.stop()
    return s
  end,
  python = "queue_items.py",
  figure = "rate",
  target = { min = 5, against = "python" },
}

-- Two processes each make n/2 operations on one shared dict, half writes and
-- half reads, on 100 keys of their own; the check sums the final values.
local function dict_check(t)
  local s = 0
  for _, v in pairs(t) do s = s + v end
  return s
end

add {
  name = "dict",
  title = "dict: %d operations from 2 processes (half set, half get)",
  size = 200000, quick = 20000,
  mpe = function(n, ctx)
    local mpe = require "mpe"
    local d = mpe.dict()
    local function work(p, m)
      for i = 1, m do
        local k = p .. ":" .. (i % 100)
        if i % 2 == 0 then d:set(k, i) else local _ = d:get(k) end
      end
    end
    local half = math.floor(n / 2)
    ctx.start()
    local ps = { mpe.process(work, 1, half), mpe.process(work, 2, half) }
    for _, p in ipairs(ps) do p:start() end
    for _, p in ipairs(ps) do p:join() end
    ctx.stop()
    return dict_check(d:totable())
  end,
  python = "dict_ops.py",
  figure = "rate",
  target = { min = 10, against = "python" },
}

-- The scaling run (speedup against the number of workers) uses this workload.
W.scaling = "logloop"

return W
