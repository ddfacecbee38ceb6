-- array_spec.lua -- mpe.array and mpe.value: construction, indexing, conversions
-- and their errors, methods, sharing with child processes and pool workers,
-- closing, and no descriptor or mapping left behind by many create/destroy cycles.
local mpe = require "mpe"

local is54 = _VERSION == "Lua 5.4" and math.type ~= nil

-- Start fn(...) in a child process.
local function spawn(fn, ...)
  local p = mpe.process(fn, ...)
  p:start()
  return p
end

-- Join with a bound, so a broken child fails the test instead of hanging it.
local function finish(p)
  if not p:join(30) then
    p:kill()
    p:join()
    error("process did not finish within 30 s")
  end
  return p
end

local function errmsg(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return tostring(err)
end

local fd_count = require "fdcount" -- pipes aside, the fewest of three looks

local function memfd_maps()
  local n = 0
  for line in io.lines("/proc/self/maps") do
    if line:find("memfd:mpe", 1, true) then n = n + 1 end
  end
  return n
end

describe("mpe.array", function()
  it("makes zero-filled 1-D and 2-D arrays", function()
    local a = mpe.array("int32", 10)
    assert.equal(10, #a)
    assert.same({ 10 }, a.shape)
    assert.equal("int32", a.ctype)
    for i = 1, 10 do assert.equal(0, a[i]) end
    local m = mpe.array("double", 3, 4)
    assert.equal(12, #m)
    assert.same({ 3, 4 }, m.shape)
    assert.equal(0, m:sum())
    assert.equal(0, #mpe.array("uint8", 0))
  end)

  it("copies a table of values", function()
    local a = mpe.array("int16", { 1, -2, 3 })
    assert.same({ 1, -2, 3 }, a:totable())
    assert.same({ 3 }, a.shape)
    local d = mpe.array("d", { 0.5, 1.5 })
    assert.same({ 0.5, 1.5 }, d:totable())
  end)

  it("knows every ctype and Python typecode", function()
    local names = { "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64",
                    "float", "double" }
    for _, name in ipairs(names) do
      local a = mpe.array(name, 2)
      a[2] = 100
      assert.equal(100, a[2])
      assert.equal(name, a.ctype)
    end
    local codes = { b = "int8", B = "uint8", h = "int16", H = "uint16", i = "int32",
                    I = "uint32", l = "int64", L = "uint64", q = "int64", Q = "uint64",
                    f = "float", d = "double" }
    for code, name in pairs(codes) do
      assert.equal(name, mpe.array(code, 1).ctype)
    end
    local l = mpe.array("l", 1)
    l[1] = 2 ^ 40 -- 'l' is 64-bit, as C long is on Linux
    assert.equal(2 ^ 40, l[1])
  end)

  it("rejects bad constructor arguments with clear messages", function()
    assert.equal('mpe: array: argument 1 must be a ctype name (int8, ..., double) or typecode, got "int33"',
      errmsg(mpe.array, "int33", 3))
    assert.equal("mpe: array: argument 1 must be a ctype name (int8, ..., double) or typecode, got no value",
      errmsg(mpe.array))
    assert.truthy(errmsg(mpe.array, "int32", -1):find("argument 2 must be a non-negative integer", 1, true))
    assert.truthy(errmsg(mpe.array, "int32", "x"):find("argument 2", 1, true))
    assert.truthy(errmsg(mpe.array, "int32", 2, -3):find("argument 3", 1, true))
    assert.truthy(errmsg(mpe.array, "int32", { 1, "x" }):find("item 2 must be a number, got string", 1, true))
    assert.equal("mpe: array: item 3: value 256 out of range for uint8 (0..255)",
      errmsg(mpe.array, "uint8", { 1, 2, 256 }))
  end)

  it("indexes 1-based with range checks", function()
    local a = mpe.array("int64", 10)
    for i = 1, 10 do a[i] = i * i end
    assert.equal(100, a[10])
    assert.equal(4, a[2.0])
    assert.equal("mpe: array: index 11 out of range 1..10", errmsg(function() return a[11] end))
    assert.equal("mpe: array: index 0 out of range 1..10", errmsg(function() return a[0] end))
    assert.equal("mpe: array: index 11 out of range 1..10", errmsg(function() a[11] = 1 end))
    assert.truthy(errmsg(function() return a[1.5] end):find("index 1.5 is not an integer", 1, true))
    assert.truthy(errmsg(function() a[true] = 1 end):find("index must be an integer, got boolean", 1, true))
    assert.is_nil(a.nosuchfield)
  end)

  it("checks written values against the element type", function()
    local a = mpe.array("int32", 3)
    a[1] = 7.0 -- integral floats are accepted
    assert.equal(7, a[1])
    assert.equal("mpe: array: value 1.5 is not an integer (array of int32)",
      errmsg(function() a[2] = 1.5 end))
    assert.equal("mpe: array: value must be a number, got string", errmsg(function() a[2] = "3" end))
    assert.equal("mpe: array: value 2147483648 out of range for int32 (-2147483648..2147483647)",
      errmsg(function() a[2] = 2147483648 end))
    local u = mpe.array("uint8", 1)
    assert.equal("mpe: array: value -1 out of range for uint8 (0..255)", errmsg(function() u[1] = -1 end))
    assert.equal(0, a[2]) -- nothing was written by the failures
    local f = mpe.array("float", 1)
    f[1] = 0.5
    assert.equal(0.5, f[1])
    if is54 then
      assert.equal("integer", math.type(a[1]))
      assert.equal("float", math.type(mpe.array("double", { 3 })[1]))
    end
  end)

  it("gets and sets 2-D cells row-major", function()
    local m = mpe.array("int32", 2, 3)
    m:set(2, 1, 5)
    assert.equal(5, m:get(2, 1))
    assert.equal(5, m[4])
    m[6] = 9
    assert.equal(9, m:get(2, 3))
    assert.equal("mpe: array:get: row 3 out of range 1..2", errmsg(m.get, m, 3, 1))
    assert.equal("mpe: array:set: column 4 out of range 1..3", errmsg(m.set, m, 1, 4, 0))
    local a = mpe.array("int32", 3)
    a:set(2, 8)
    assert.equal(8, a:get(2))
  end)

  it("fills, sums, converts to tables and copies in ranges", function()
    local a = mpe.array("int32", 6)
    a:fill(2)
    assert.equal(12, a:sum())
    a:copyfrom({ 10, 20 }, 3)
    assert.same({ 2, 2, 10, 20, 2, 2 }, a:totable())
    assert.equal(30, a:sum(3, 4))
    assert.same({ 10, 20 }, a:totable(3, 4))
    assert.same({}, a:totable(3, 2))
    assert.equal(0, a:sum(4, 3))
    assert.equal("mpe: array:sum: range 0..3 out of bounds 1..6", errmsg(a.sum, a, 0, 3))
    assert.equal("mpe: array:copyfrom: 3 values from index 5 do not fit in 6 elements",
      errmsg(a.copyfrom, a, { 1, 2, 3 }, 5))
    assert.equal("mpe: array:copyfrom: item 2: value 0.5 is not an integer (array of int32)",
      errmsg(a.copyfrom, a, { 1, 0.5 }))
    assert.same({ 2, 2, 10, 20, 2, 2 }, a:totable()) -- a failed copy changes nothing
    local b = mpe.array("double", 6)
    b:copyfrom(a)
    assert.equal(38, b:sum())
    assert.equal("mpe: array:fill: value 0.25 is not an integer (array of int32)", errmsg(a.fill, a, 0.25))
  end)

  it("adds atomically and returns the new value", function()
    local a = mpe.array("int8", 2)
    assert.equal(5, a:add(1, 5))
    assert.equal(3, a:add(1, -2))
    a[2] = 127
    assert.truthy(errmsg(a.add, a, 2, 1):find("value 128 out of range for int8", 1, true))
    assert.equal(127, a[2])
    local d = mpe.array("double", 1)
    assert.equal(0.75, d:add(1, 0.75))
  end)

  it("supports pairs, tostring and equality", function()
    local a = mpe.array("int32", { 4, 5, 6 })
    if is54 then
      local seen = {}
      for i, v in pairs(a) do seen[i] = v end
      assert.same({ 4, 5, 6 }, seen)
    end
    assert.truthy(tostring(a):find("^mpe%.Array%(int32, 3%)"))
    assert.truthy(tostring(mpe.array("double", 2, 5)):find("^mpe%.Array%(double, 2x5%)"))
    assert.equal(a, a)
    assert.are_not.equal(a, mpe.array("int32", { 4, 5, 6 }))
  end)

  it("raises on a closed array", function()
    local a = mpe.array("int32", 3)
    a:close()
    a:close() -- idempotent
    assert.equal("mpe: attempt to use a closed mpe.Array", errmsg(function() return a[1] end))
    assert.equal("mpe: attempt to use a closed mpe.Array", errmsg(function() a[1] = 1 end))
    assert.equal("mpe: attempt to use a closed mpe.Array", errmsg(a.sum, a))
    assert.equal("mpe: attempt to use a closed mpe.Array", errmsg(function() return #a end))
  end)

  it("names the object when called with a dot", function()
    local a = mpe.array("int32", 3)
    assert.equal("mpe: array:fill: self must be an mpe.Array (call methods with a colon), got number",
      errmsg(a.fill, 5))
  end)

  it("is shared with a child process: the child writes, the parent sees", function()
    local a = mpe.array("int32", 1000)
    local p = finish(spawn(function()
      for i = 1, #a do a[i] = i end
      return a:sum()
    end))
    assert.equal(0, p.exitcode)
    assert.equal(500500, a:sum())
    assert.equal(500500, p:result())
  end)

  it("travels by reference to pool workers forked before it existed", function()
    local pool = mpe.pool(2)
    local ok, err = pcall(function()
      local a = mpe.array("int64", 8)
      -- bounded waits: a broken pool fails the test instead of hanging it
      local r = pool:map_async(function(x) return x[1] + x:add(2, 1) end, { a, a, a, a }):get(20)
      assert.equal(4, #r)
      assert.equal(4, a[2])
      a[1] = 100
      assert.equal(100, pool:apply_async(function(x) return x[1] end, { a }):get(20))
      local v = mpe.value("double", 0.5)
      assert.equal(1.5, pool:apply_async(function(x) return x:add(1) end, { v }):get(20))
      assert.equal(1.5, v:get())
    end)
    pool:terminate()
    assert(ok, err)
  end)

  it("cannot go through mpe.encode, which has no descriptor channel", function()
    local msg = errmsg(mpe.encode, { mpe.array("int32", 1) })
    assert.truthy(msg:find("cannot send mpe.Array", 1, true))
    assert.truthy(msg:find("mpe.encode", 1, true))
    assert.truthy(errmsg(mpe.encode, mpe.value("int32", 1)):find("mpe.Value", 1, true))
  end)

  it("leaves no descriptor or mapping behind after 10,000 create/destroy cycles", function()
    local warm = mpe.array("int8", 1) -- the current slab exists before counting
    collectgarbage()
    collectgarbage()
    local fds0, maps0 = fd_count(), memfd_maps()
    for i = 1, 10000 do
      local a = mpe.array(i % 2 == 0 and "double" or "int32", i % 100 == 0 and 50000 or 16)
      a[1] = i
      local v = mpe.value("int64", i)
      v:add(1)
      if i % 100 == 0 then collectgarbage() end
    end
    warm:close() -- its slab may no longer be the current one
    collectgarbage()
    collectgarbage()
    -- No growth. (Fewer is fine: closing warm may release the slab counted at the start.)
    assert.is_true(fd_count() <= fds0, "descriptors: " .. fds0 .. " -> " .. fd_count())
    assert.is_true(memfd_maps() <= maps0, "memfd mappings: " .. maps0 .. " -> " .. memfd_maps())
  end)
end)

describe("mpe.value", function()
  it("gets, sets and adds atomically", function()
    local v = mpe.value("int64", 5)
    assert.equal(5, v:get())
    v:set(7)
    assert.equal(10, v:add(3))
    v:set(1)
    assert.equal(1, v:get())
    assert.equal(0, mpe.value("double"):get())
    assert.truthy(tostring(v):find("^mpe%.Value%(int64%): 1"))
  end)

  it("checks values and arguments", function()
    local v = mpe.value("int32", 0)
    assert.equal("mpe: value:set: value 1.5 is not an integer (value of int32)", errmsg(v.set, v, 1.5))
    assert.equal("mpe: value:add: delta 0.5 is not an integer (value of int32)", errmsg(v.add, v, 0.5))
    assert.equal('mpe: value: argument 1 must be a ctype name (int8, ..., double) or typecode, got "x"',
      errmsg(mpe.value, "x", 1))
    assert.equal('mpe: value: argument 2 must be a number (the initial value), got "1"',
      errmsg(mpe.value, "int32", "1"))
    assert.truthy(errmsg(mpe.value, "uint8", 300):find("value 300 out of range for uint8", 1, true))
    v:close()
    assert.equal("mpe: attempt to use a closed mpe.Value", errmsg(v.get, v))
  end)

  it("counts exactly with add from four processes", function()
    local v = mpe.value("int32", 0)
    local ps = {}
    for i = 1, 4 do
      ps[i] = spawn(function() for _ = 1, 10000 do v:add(1) end end)
    end
    for i = 1, 4 do assert.equal(0, finish(ps[i]).exitcode) end
    assert.equal(40000, v:get())
  end)
end)
