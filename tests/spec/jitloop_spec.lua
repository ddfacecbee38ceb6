-- jitloop_spec.lua -- the worker's chunk loop in Lua (lua/mpe/jitloop.lua,
-- engine/src/worker_jit.c): under LuaJIT, map items that are numbers (a
-- range, a table of integers or floats) with results collected or written
-- into a 1-D int64/double out= array run through it. Every result is
-- checked; items that raise, crash, time out or return what the loop does not
-- store (a string, nil, a fraction into an int64 array) keep the C loop's
-- behaviour; and one case proves the loop ran (the caller of the pool's
-- function is the loop's chunk, "=mpe.jitloop"), so the suite fails if it
-- silently falls back. Under Lua 5.4 the C loop runs (it measured faster,
-- docs/BENCHMARKS.md) and the same cases check it. Runs under lua5.4 with
-- mpe.so, under `mpe run`, and under LuaJIT.
local mpe = require "mpe"

local LUAJIT = type(jit) == "table"

-- What each entry point returns as a results table.
local entries = {
  { "map", function(p, f, items, o) return p:map(f, items, o) end },
  { "map_async", function(p, f, items, o) return p:map_async(f, items, o):get() end },
  { "imap", function(p, f, items)
      local t = {}
      for i, v in p:imap(f, items) do t[i] = v end
      return t
    end },
  { "imap_unordered", function(p, f, items)
      local t = {}
      for i, v in p:imap_unordered(f, items) do t[i] = v end
      return t
    end },
}

local function floats(n)
  local t = {}
  for i = 1, n do t[i] = i + 0.5 end
  return t
end

local function ints(n)
  local t = {}
  for i = 1, n do t[i] = 3 * i end
  return t
end

-- The pool's function ran as a call from the Lua loop.
local function from_loop()
  local info = debug.getinfo(3, "S")
  return info ~= nil and info.source == "=mpe.jitloop"
end

describe("the worker's chunk loop", function()
  local pool
  setup(function() pool = mpe.pool(2) end)
  teardown(function() pool:terminate() end)

  it("is the Lua loop under LuaJIT (and the C loop under Lua 5.4), for ranges, floats, ints and out", function()
    local function probe(x) return from_loop() and x or -x end
    local want = LUAJIT and 1 or -1
    local r = pool:map(probe, mpe.range(1, 2000))
    for i = 1, 2000 do assert.equal(want * i, r[i]) end
    r = pool:map(probe, floats(500))
    for i = 1, 500 do assert.equal(want * (i + 0.5), r[i]) end
    r = pool:map(probe, ints(500))
    for i = 1, 500 do assert.equal(want * 3 * i, r[i]) end
    local a = mpe.array("int64", 300)
    pool:map(probe, mpe.range(1, 300), { out = a })
    for i = 1, 300 do assert.equal(want * i, a[i]) end
    local d = mpe.array("double", 300)
    pool:map(probe, floats(300), { out = d })
    for i = 1, 300 do assert.equal(want * (i + 0.5), d[i]) end
  end)

  it("is not used for starmap or 2-D out, whose items take the C loop", function()
    local r = pool:starmap(function(x) return from_loop() and -x or x end, { { 1 }, { 2 } })
    assert.equal(1, r[1])
    assert.equal(2, r[2])
    local a = mpe.array("double", 3, 2)
    pool:map(function(x) return from_loop() and -x or x, 2 * x end, { 1, 2, 3 }, { out = a })
    for i = 1, 3 do
      assert.equal(i, a:get(i, 1))
      assert.equal(2 * i, a:get(i, 2))
    end
  end)

  for _, e in ipairs(entries) do
    local name, run = e[1], e[2]

    it(name .. ": squares over a range, every result", function()
      local n = 200000
      local r = run(pool, function(x) return x * x end, mpe.range(1, n))
      assert.equal(n, #r)
      for i = 1, n do
        if r[i] ~= i * i then assert.equal(i * i, r[i]) end
      end
    end)

    it(name .. ": squares over a table of floats, and of integers", function()
      local r = run(pool, function(x) return x * x end, floats(20000))
      for i = 1, 20000 do
        if r[i] ~= (i + 0.5) ^ 2 then assert.equal((i + 0.5) ^ 2, r[i]) end
      end
      r = run(pool, function(x) return x * x end, ints(20000))
      for i = 1, 20000 do
        if r[i] ~= 9 * i * i then assert.equal(9 * i * i, r[i]) end
      end
    end)

    it(name .. ": a range with a step, descending", function()
      local r = run(pool, function(x) return x end, mpe.range(1000, 1, -3))
      assert.equal(334, #r)
      for i = 1, 334 do assert.equal(1000 - 3 * (i - 1), r[i]) end
    end)
  end

  it("keeps integers and floats apart, mixed in one chunk", function()
    local r = pool:map(function(x) return x % 3 == 0 and x + 0.25 or x end, mpe.range(1, 3000))
    for i = 1, 3000 do
      assert.equal(i % 3 == 0 and i + 0.25 or i, r[i])
      if i % 3 ~= 0 then assert.equal(math.type and "integer" or "number", math.type and math.type(r[i]) or type(r[i])) end
    end
  end)

  it("records a string, nil or several values on some items as the C loop does", function()
    local r = pool:map(function(x)
      if x % 100 == 7 then return "s" .. x end
      if x % 100 == 9 then return nil end
      if x % 100 == 11 then return x, "second" end
      return x * 2
    end, mpe.range(1, 1000))
    for i = 1, 1000 do
      if i % 100 == 7 then assert.equal("s" .. i, r[i])
      elseif i % 100 == 9 then assert.is_nil(r[i])
      elseif i % 100 == 11 then assert.equal(i, r[i])
      else assert.equal(i * 2, r[i]) end
    end
    local t = pool:map(function(x) if x == 5.5 then return {x} end return x end, floats(10))
    assert.same({5.5}, t[5])
    assert.equal(6.5, t[6])
  end)

  it("fails each item that raises, at its index, and keeps the others' results", function()
    local r, errs = pool:map(function(x)
      if x % 1000 == 7 then error("boom " .. x) end
      return x * x
    end, mpe.range(1, 10000), { errors = "collect" })
    local n = 0
    for i, e in pairs(errs) do
      n = n + 1
      assert.equal(7, i % 1000)
      assert.equal(i, e.index)
      assert.equal("error", e.kind)
      assert.truthy(e.message:find("boom " .. i, 1, true))
      -- the loop's frame is cut, as the C loop's is
      assert.falsy(e.traceback:find("mpe.jitloop", 1, true))
    end
    assert.equal(10, n)
    for i = 1, 10000 do
      if i % 1000 ~= 7 then assert.equal(i * i, r[i]) end
    end
    assert.has_error(function()
      pool:map(function(x) if x == 1234 then error("bad item") end return x end, mpe.range(1, 5000))
    end)
    local ok, err = pcall(pool.map, pool, function(x) if x == 1234 then error("bad item") end return x end,
      mpe.range(1, 5000))
    assert.is_false(ok)
    assert.truthy(tostring(err):find("item 1234", 1, true))
  end)

  it("fails an item whose worker dies, at its index, and re-runs nothing else", function()
    local r, errs = pool:map(function(x)
      if x == 300 then os.exit(5) end
      return x + 1
    end, mpe.range(1, 600), { errors = "collect" })
    assert.equal("crash", errs[300].kind)
    assert.equal(300, errs[300].index)
    for i = 1, 600 do
      if i ~= 300 then assert.equal(i + 1, r[i]) end
    end
  end)

  it("times out an item that runs too long, at its index", function()
    local p = mpe.pool { workers = 2, timeout = 0.5 }
    local r, errs = p:map(function(x) if x == 3 then while true do end end return x end,
      mpe.range(1, 6), { errors = "collect", chunksize = 6 })
    p:terminate()
    assert.equal("timeout", errs[3].kind)
    assert.equal(3, errs[3].index)
    for _, i in ipairs { 1, 2 } do assert.equal(i, r[i]) end
  end)

  describe("with out", function()
    it("writes every square into an int64 array, 1-D", function()
      local n = 100000
      local a = mpe.array("int64", n)
      assert.equal(a, pool:map(function(x) return x * x end, mpe.range(1, n), { out = a }))
      for i = 1, n do
        if a[i] ~= i * i then assert.equal(i * i, a[i]) end
      end
      local b = mpe.array("int64", 1000)
      pool:map_async(function(x) return x * x end, mpe.range(1, 1000), { out = b }):get()
      for i = 1, 1000 do assert.equal(i * i, b[i]) end
    end)

    it("writes floats into a double array, 1-D", function()
      local a = mpe.array("double", 5000)
      pool:map(function(x) return x / 4 end, floats(5000), { out = a })
      for i = 1, 5000 do assert.equal((i + 0.5) / 4, a[i]) end
    end)

    it("writes rows of a 2-D array", function()
      local a = mpe.array("int64", 1000, 2)
      pool:map(function(x) return x, x * x end, mpe.range(1, 1000), { out = a })
      for i = 1, 1000 do
        assert.equal(i, a:get(i, 1))
        assert.equal(i * i, a:get(i, 2))
      end
    end)

    it("fails the items whose result is not a number or not an integer, naming them", function()
      local a = mpe.array("int64", 100)
      local r, errs = pool:map(function(x)
        if x == 10 then return "ten" end
        if x == 20 then return nil end
        if x == 30 then return x + 0.5 end
        return x
      end, mpe.range(1, 100), { out = a, errors = "collect" })
      assert.equal(a, r)
      assert.equal("mpe: out: result 1 of item 10 is a string, not a number", errs[10].message)
      assert.equal("mpe: out: result 1 of item 20 is nil, not a number", errs[20].message)
      assert.truthy(errs[30].message:find("result 1 of item 30", 1, true))
      for _, i in ipairs { 10, 20, 30 } do
        assert.equal("error", errs[i].kind)
        assert.equal(i, errs[i].index)
      end
      for i = 1, 100 do
        if i ~= 10 and i ~= 20 and i ~= 30 then assert.equal(i, a[i]) end
      end
    end)

    it("fits -0.0 and integral floats into an int64 array as the C loop does", function()
      local a = mpe.array("int64", 4)
      pool:map(function(x) return x == 1 and -0.0 or x * 1.0 end, mpe.range(1, 4), { out = a })
      assert.same({ 0, 2, 3, 4 }, a:totable())
    end)

    it("checks other element types (int32) through the C loop", function()
      local a = mpe.array("int32", 10)
      local _, errs = pool:map(function(x) return x == 5 and 2 ^ 40 or x end, mpe.range(1, 10),
        { out = a, errors = "collect" })
      assert.equal(5, errs[5].index)
      for i = 1, 10 do
        if i ~= 5 then assert.equal(i, a[i]) end
      end
    end)

    it("refuses an array too short for the items", function()
      local a = mpe.array("int64", 10)
      assert.has_error(function() pool:map(function(x) return x end, mpe.range(1, 11), { out = a }) end)
    end)

    it("fails the items past the end of the array when an iterator runs long", function()
      local a = mpe.array("double", 3)
      local i = 0
      local ok = pcall(pool.map, pool, function(x) return x end, function()
        i = i + 1
        if i <= 5 then return i end
      end, { out = a })
      assert.is_false(ok)
    end)
  end)
end)
