-- mpi_spec.lua -- a pool that spans MPI ranks: run by tests/mpi/spec.sh as
-- `mpirun -n 3 mpe run busted tests/mpi/mpi_spec.lua`; rank 0 runs busted, the
-- other ranks serve. Results equal serial ones, work lands on several ranks,
-- failures come back per item with their rank, shared objects are refused.
local mpe = require "mpe"

local world = mpe.world()

local function serial(f, xs)
  local r = {}
  for i, x in ipairs(xs) do r[i] = f(x) end
  return r
end

local function seq(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

local function spin(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

describe("mpe under mpirun", function()
  it("tells rank and size", function()
    assert.is_true(world.size >= 3)
    assert.are.equal(0, world.rank)
    assert.are.equal(0, mpe.current_process().rank)
  end)

  it("gives a pool every rank's workers by default", function()
    local pool <close> = mpe.pool()
    local ranks = pool:map(function() spin(2e5) return mpe.current_process().rank end,
                           mpe.range(1, 60), {chunksize = 1})
    local seen, n = {}, 0
    for _, r in ipairs(ranks) do
      if not seen[r] then seen[r] = true n = n + 1 end
    end
    assert.is_true(n >= 2, "work ran on " .. n .. " rank(s)")
    assert.is_true(seen[1] or seen[2])
  end)

  it("returns the same results as serial code through every call", function()
    local pool <close> = mpe.pool{workers = 2 * world.size}
    local f = function(x) return x * 3 + 1 end
    local xs = seq(3000)
    local want = serial(f, xs)
    assert.are.same(want, {table.unpack(pool:map(f, xs))})
    assert.are.same(want, {table.unpack(pool:map(f, mpe.range(1, 3000)))})
    assert.are.same(want, {table.unpack(pool:map_async(f, xs):get())})
    local args = {}
    for i = 1, 300 do args[i] = {i, i} end
    local s = pool:starmap(function(a, b) return a * b end, args)
    for i = 1, 300 do assert.are.equal(i * i, s[i]) end
    s = pool:starmap_async(function(a, b) return a + b end, args):get()
    for i = 1, 300 do assert.are.equal(2 * i, s[i]) end
    local got = {}
    for i, r in pool:imap(f, xs) do got[i] = r end
    assert.are.same(want, got)
    got = {}
    for i, r in pool:imap_unordered(f, xs) do got[i] = r end
    assert.are.same(want, got)
    assert.are.same({7, "x"}, {pool:apply(function(a, b) return a + 1, b end, 6, "x")})
    local asyncs = {}
    for i = 1, 200 do asyncs[i] = pool:apply_async(f, {i}) end
    for i = 1, 200 do assert.are.equal(f(i), asyncs[i]:get()) end
    -- tables, strings and closures with upvalues cross ranks by value
    local k = {scale = 10}
    local t = pool:map(function(x) return {x.name .. "!", x.v * k.scale} end,
                       {{name = "a", v = 1}, {name = "b", v = 2}})
    assert.are.same({{"a!", 10}, {"b!", 20}}, {t[1], t[2]})
  end)

  it("pulls a lazy iterator with back-pressure across ranks", function()
    local pool <close> = mpe.pool{workers = world.size}
    local i = 0
    local function gen() i = i + 1 if i <= 5000 then return i end end
    local sum = 0
    for _, r in pool:imap(function(x) return x end, gen) do sum = sum + r end
    assert.are.equal(5000 * 5001 / 2, sum)
  end)

  it("fails a raising item alone, naming index, worker and rank", function()
    local pool <close> = mpe.pool{workers = world.size}
    local r, errs = pool:map(function(x)
      if x % 10 == 0 then error("bad " .. x) end
      return x
    end, mpe.range(1, 100), {errors = "collect", chunksize = 1})
    for i = 1, 100 do
      if i % 10 == 0 then
        assert.is_nil(r[i])
        assert.are.equal("error", errs[i].kind)
        assert.are.equal(i, errs[i].index)
        assert.is_number(errs[i].rank)
        assert.is_number(errs[i].worker)
        assert.truthy(tostring(errs[i]):match("item " .. i .. " failed in worker %d+ %(pid %d+, rank %d%)"))
        assert.truthy(errs[i].message:match("bad " .. i))
      else
        assert.are.equal(i, r[i])
      end
    end
    local ok, e = pcall(pool.map, pool, function(x) if x == 7 then error("seven") end return x end,
                        mpe.range(1, 20))
    assert.is_false(ok)
    assert.truthy(tostring(e):match("item 7 failed"))
    -- the pool goes on
    assert.are.equal(20, #pool:map(function(x) return x end, mpe.range(1, 20)))
  end)

  it("fails an item whose worker crashes on another rank with kind crash, and goes on", function()
    local pool <close> = mpe.pool{workers = world.size}
    local r, errs = pool:map(function(x)
      spin(1e5)
      if mpe.current_process().rank ~= 0 and x % 7 == 0 then os.exit(3) end
      return x
    end, mpe.range(1, 60), {errors = "collect", chunksize = 1})
    local crashes = 0
    for i = 1, 60 do
      if errs and errs[i] then
        crashes = crashes + 1
        assert.are.equal("crash", errs[i].kind)
        assert.are.equal(i, errs[i].index)
        assert.is_true(errs[i].rank > 0)
        assert.truthy(errs[i].message:match("exited with status 3"))
      else
        assert.are.equal(i, r[i])
      end
    end
    assert.is_true(crashes > 0, "no item ran on another rank")
    assert.are.same(seq(30), {table.unpack(pool:map(function(x) return x end, seq(30)))})
  end)

  it("fails crashing and raising items alone through every pool call", function()
    local pool <close> = mpe.pool{workers = world.size}
    local function f(x)
      if x % 7 == 0 then os.exit(5) end
      if x % 5 == 0 then error("five " .. x) end
      return x
    end
    local function check(i, v, e)
      if i % 7 == 0 then
        assert.are.equal("crash", e.kind)
        assert.are.equal(i, e.index)
        assert.is_number(e.rank)
      elseif i % 5 == 0 then
        assert.are.equal("error", e.kind)
        assert.truthy(e.message:match("five " .. i))
        assert.is_number(e.rank)
      else
        assert.are.equal(i, v)
      end
    end
    local xs, args = seq(40), {}
    for i = 1, 40 do args[i] = {i} end
    local calls = {
      function() return pool:map(f, xs, {errors = "collect"}) end,
      function() return pool:starmap(f, args, {errors = "collect"}) end,
      function() return pool:map_async(f, xs, {errors = "collect"}):get() end,
      function() return pool:starmap_async(f, args, {errors = "collect"}):get() end,
    }
    for _, call in ipairs(calls) do
      local r, errs = call()
      for i = 1, 40 do check(i, r[i], errs and errs[i]) end
    end
    for _, it in ipairs{"imap", "imap_unordered"} do
      local seen = 0
      for i, v, e in pool[it](pool, f, xs, {errors = "collect"}) do
        check(i, v, e)
        seen = seen + 1
      end
      assert.are.equal(40, seen)
    end
    for _, x in ipairs{7, 5} do
      local ok, e = pcall(pool.apply, pool, f, x)
      assert.is_false(ok)
      assert.are.equal(x == 7 and "crash" or "error", e.kind)
      ok, e = pcall(function() return pool:apply_async(f, {x}):get() end)
      assert.is_false(ok)
      assert.are.equal(x == 7 and "crash" or "error", e.kind)
      assert.is_number(e.rank)
    end
    assert.are.equal(3, pool:apply(f, 3))
  end)

  it("re-runs an item whose worker died, with retries", function()
    local marker = os.tmpname()
    os.remove(marker)
    local pool <close> = mpe.pool{workers = world.size, retries = 1}
    local r = pool:map(function(x)
      if x == 11 then
        local h = io.open(marker)
        if not h then io.open(marker, "w"):close() os.exit(9) end
        h:close()
      end
      return x
    end, mpe.range(1, 20), {chunksize = 1})
    os.remove(marker)
    assert.are.same(seq(20), {table.unpack(r)})
  end)

  it("draws a progress bar for a map across ranks and returns its results", function()
    local pool <close> = mpe.pool{workers = world.size}
    local r = pool:map(function(x) return -x end, mpe.range(1, 500), {progress = "force"})
    for i = 1, 500 do assert.are.equal(-i, r[i]) end
  end)

  it("kills a task past its timeout on another rank (kind timeout)", function()
    -- The timeout is wall-clock, and here the hanging tasks spin on every
    -- CPU of an oversubscribed machine: 0.5 s once timed out item 1 (a plain
    -- return) of a worker starved that long. 2 s leaves the quick items far
    -- from it; the hanging ones still always reach it.
    local pool <close> = mpe.pool{workers = world.size, timeout = 2}
    local r, errs = pool:map(function(x)
      if x == 2 then while true do end end
      return x
    end, {1, 2, 3}, {errors = "collect", chunksize = 1})
    assert.are.equal(1, r[1])
    assert.are.equal(3, r[3])
    assert.are.equal("timeout", errs[2].kind)
    assert.are.equal(2, errs[2].index)
    -- every item that lands on another rank runs too long there
    local r3, e3 = pool:map(function(x)
      if mpe.current_process().rank ~= 0 then while true do end end
      return x
    end, mpe.range(1, 6), {errors = "collect", chunksize = 1})
    local remote = 0
    for i = 1, 6 do
      if e3 and e3[i] then
        assert.are.equal("timeout", e3[i].kind)
        assert.is_true(e3[i].rank > 0)
        remote = remote + 1
      else
        assert.are.equal(i, r3[i])
      end
    end
    assert.is_true(remote > 0, "no item ran on another rank")
    -- the same through the other calls; the pool goes on after each
    local forever = function(x) if x == 2 then while true do end end return x end
    local r2, e2 = pool:map_async(forever, {1, 2}, {errors = "collect", chunksize = 1}):get()
    assert.are.equal(1, r2[1])
    assert.are.equal("timeout", e2[2].kind)
    local seen = {}
    for i, v, e in pool:imap_unordered(forever, {1, 2, 3}, {errors = "collect", chunksize = 1}) do
      seen[i] = e and e.kind or v
    end
    assert.are.same({1, "timeout", 3}, seen)
    local ok, e = pcall(pool.apply, pool, forever, 2)
    assert.is_false(ok)
    assert.are.equal("timeout", e.kind)
    assert.is_number(e.rank)
    assert.are.equal(5, pool:apply(forever, 5))
  end)

  it("recycles workers on every rank (maxtasksperchild)", function()
    local pool <close> = mpe.pool{workers = world.size, maxtasksperchild = 3}
    local xs = seq(100)
    assert.are.same(xs, {table.unpack(pool:map(function(x) return x end, xs, {chunksize = 1}))})
    assert.is_true(pool.started > world.size)
  end)

  it("runs the initializer on every rank's workers", function()
    local pool <close> = mpe.pool{workers = world.size,
                                  initializer = function(v) _G.BASE = v end, initargs = {100}}
    local r = pool:map(function(x) return _G.BASE + x end, mpe.range(1, 50), {chunksize = 1})
    for i = 1, 50 do assert.are.equal(100 + i, r[i]) end
  end)

  it("refuses shared objects before any work is dispatched, naming object and path", function()
    local pool <close> = mpe.pool{workers = world.size}
    local a = mpe.array("double", 4)
    local ran = mpe.value("int64", 0)
    local ok, e = pcall(pool.map, pool, function(x) return x end, {1, a})
    assert.is_false(ok)
    assert.truthy(tostring(e):match("cannot send mpe%.Array at item"))
    assert.truthy(tostring(e):match("cannot cross MPI ranks"))
    local q = mpe.queue()
    ok, e = pcall(pool.map, pool, function(x) q:put(x) return x end, {1, 2})
    assert.is_false(ok)
    assert.truthy(tostring(e):match("cannot send mpe%.Queue at upvalue 'q'"))
    for _, obj in ipairs{mpe.lock(), mpe.dict(), (mpe.pipe())} do
      ok, e = pcall(pool.apply, pool, function(o) return 1 end, obj)
      assert.is_false(ok)
      assert.truthy(tostring(e):match("cannot cross MPI ranks"))
    end
    assert.are.equal(0, ran:get())
    -- a pool kept on this rank takes them
    local lp <close> = mpe.pool{workers = 2, ranks = "local"}
    lp:map(function(x) ran:add(x) return x end, {1, 2, 3})
    assert.are.equal(6, ran:get())
    local rs = lp:map(function() return mpe.current_process().rank end, mpe.range(1, 8))
    for i = 1, 8 do assert.are.equal(0, rs[i]) end
  end)

  it("sends C functions by name only", function()
    local pool <close> = mpe.pool{workers = world.size}
    local log = math.log
    local r = pool:map(function(x) return log(x) end, {1})
    assert.are.equal(0, r[1])
    local iter = ipairs({})
    local ok, e = pcall(pool.map, pool, function(x) return iter end, {1})
    assert.is_false(ok)
    assert.truthy(tostring(e):match("C function that no name reaches"))
  end)

  it("refuses a shared object returned by a task on another rank, for that item only", function()
    local pool <close> = mpe.pool{workers = world.size}
    local r, errs = pool:map(function(x)
      if mpe.current_process().rank ~= 0 then return mpe.array("int32", 2) end
      return x
    end, mpe.range(1, 30), {errors = "collect", chunksize = 1})
    for i = 1, 30 do
      if errs and errs[i] then
        assert.truthy(errs[i].message:match("cannot cross MPI ranks"))
      else
        assert.are.equal(i, r[i])
      end
    end
  end)

  it("keeps a pool made inside a task on that task's rank", function()
    local pool <close> = mpe.pool{workers = world.size}
    local r = pool:map(function()
      local inner = mpe.pool(1)
      local got = inner:map(function() return mpe.current_process().rank end, {1, 2})
      inner:close() inner:join()
      return {mpe.current_process().rank, got[1], got[2]}
    end, mpe.range(1, 12), {chunksize = 1})
    for i = 1, 12 do
      assert.are.equal(r[i][1], r[i][2])
      assert.are.equal(r[i][1], r[i][3])
    end
  end)

  it("checks the ranks option", function()
    local ok, e = pcall(mpe.pool, {ranks = "some"})
    assert.is_false(ok)
    assert.truthy(tostring(e):match("option 'ranks' must be \"all\" or \"local\", got \"some\""))
    ok, e = pcall(mpe.pool, {ranks = 3})
    assert.truthy(tostring(e):match("option 'ranks' must be \"all\" or \"local\", got 3"))
  end)
end)
