-- out_spec.lua -- option out= of pool:map, starmap, map_async and
-- starmap_async: workers write each item's numeric results straight into a
-- shared mpe.array (element i, or row i of a 2-D array) and the call returns
-- the array. Every result is checked, a result that does not fit fails its
-- item (kind "error", its index), arrays too short and values that are not
-- arrays are refused before any work, and the calls that hand results back
-- one by one (imap, imap_unordered, apply_async) refuse the option. Worker
-- pools and inline pools (workers = 0) alike. Runs under lua5.4 with mpe.so,
-- under `mpe run`, and under LuaJIT.
local mpe = require "mpe"

local function stars(items)
  local t = {}
  for i, v in ipairs(items) do t[i] = { v } end
  return t
end

-- Every entry point that accepts out, as "run f over items into o.out".
local entries = {
  { "map", function(p, f, items, o) return p:map(f, items, o) end },
  { "starmap", function(p, f, items, o) return p:starmap(f, stars(items), o) end },
  { "map_async", function(p, f, items, o) return p:map_async(f, items, o):get() end },
  { "starmap_async", function(p, f, items, o) return p:starmap_async(f, stars(items), o):get() end },
}

local function seq(n)
  local t = {}
  for i = 1, n do t[i] = i end
  return t
end

for _, workers in ipairs({ 2, 0 }) do
  local kind = workers == 0 and "inline pool" or "worker pool"
  describe("option out (" .. kind .. ")", function()
    local pool
    setup(function() pool = mpe.pool(workers) end)
    teardown(function() pool:terminate() end)

    for _, e in ipairs(entries) do
      local name, run = e[1], e[2]

      it(name .. " writes every result into the array and returns it", function()
        local n = 1000
        local a = mpe.array("int64", n)
        local r = run(pool, function(x) return x * x end, seq(n), { out = a })
        assert.equal(a, r)
        for i = 1, n do assert.equal(i * i, a[i]) end
      end)

      it(name .. " leaves elements past the items untouched", function()
        local a = mpe.array("int32", 5)
        a:fill(-1)
        run(pool, function(x) return x + 100 end, { 1, 2, 3 }, { out = a })
        assert.same({ 101, 102, 103, -1, -1 }, a:totable())
      end)

      it(name .. " fills rows of a 2-D array with the function's values", function()
        local a = mpe.array("double", 4, 3)
        run(pool, function(x) return x, x / 2, -x end, { 1, 2, 3, 4 }, { out = a })
        for i = 1, 4 do
          assert.equal(i, a:get(i, 1))
          assert.equal(i / 2, a:get(i, 2))
          assert.equal(-i, a:get(i, 3))
        end
      end)

      it(name .. " fails an item whose result is not a number, naming it", function()
        local a = mpe.array("double", 3)
        local ok, err = pcall(run, pool, function(x)
          if x == 2 then return "two" end
          return x
        end, { 1, 2, 3 }, { out = a })
        assert.is_false(ok)
        assert.equal("error", err.kind)
        assert.equal(2, err.index)
        assert.matches("result 1 of item 2 is a string, not a number", err.message, 1, true)
      end)

      it(name .. " with errors = 'collect' fails each bad item and writes the others", function()
        local a = mpe.array("int32", 6)
        a:fill(7)
        local r, errs = run(pool, function(x)
          if x == 2 then return nil end
          if x == 3 then return 1.5 end
          if x == 4 then return 2 ^ 40 end
          if x == 5 then return {} end
          return x * 10
        end, seq(6), { out = a, errors = "collect" })
        assert.equal(a, r)
        assert.same({ 10, 7, 7, 7, 7, 60 }, a:totable())
        local want = {
          [2] = "result 1 of item 2 is nil, not a number",
          [3] = "result 1 of item 3: value 1.5 is not an integer (array of int32)",
          [4] = "result 1 of item 4: value 1099511627776 out of range for int32",
          [5] = "result 1 of item 5 is a table, not a number",
        }
        local seen = 0
        for i, err in pairs(errs) do
          seen = seen + 1
          assert.equal("error", err.kind)
          assert.equal(i, err.index)
          assert.matches(want[i], err.message, 1, true)
        end
        assert.equal(4, seen)
      end)

      it(name .. " fails an item whose value count differs from the row length", function()
        local a = mpe.array("int64", 2, 2)
        local _, errs = run(pool, function(x)
          if x == 2 then return 1, 2, 3 end
          return x, x
        end, { 1, 2 }, { out = a, errors = "collect" })
        assert.same({ 1, 1, 0, 0 }, a:totable())
        assert.equal(2, errs[2].index)
        assert.matches("item 2 returned 3 values, the out array's rows have 2", errs[2].message, 1, true)
      end)

      it(name .. " raises before any work when the array is too short", function()
        local a = mpe.array("int64", 2)
        local ran = mpe.value("int64", 0)
        local ok, err = pcall(run, pool, function(x) ran:add(1); return x end, { 1, 2, 3 }, { out = a })
        assert.is_false(ok)
        assert.matches("option 'out' has 2 rows or elements, fewer than the 3 items", tostring(err), 1, true)
        assert.equal(0, ran:get())
        assert.same({ 0, 0 }, a:totable())
      end)

      it(name .. " refuses an out that is not an mpe.array", function()
        for _, bad in ipairs({ {}, 3, "x", mpe.value("int64", 0) }) do
          local ok, err = pcall(run, pool, function(x) return x end, { 1 }, { out = bad })
          assert.is_false(ok)
          assert.matches("option 'out' must be an open mpe.array", tostring(err), 1, true)
        end
      end)
    end

    it("map over an mpe.range writes element i for the range's item i", function()
      local a = mpe.array("int64", 100)
      assert.equal(a, pool:map(function(x) return -x end, mpe.range(11, 110), { out = a }))
      for i = 1, 100 do assert.equal(-(i + 10), a[i]) end
      local short = mpe.array("int64", 99)
      assert.has_error(function() pool:map(function(x) return x end, mpe.range(1, 100), { out = short }) end,
                       "mpe: pool:map: option 'out' has 99 rows or elements, fewer than the 100 items")
    end)

    it("map over an iterator writes in pull order and raises when it gives more than the array holds", function()
      local a = mpe.array("float", 3)
      local i = 0
      pool:map(function(x) return x / 4 end, function() i = i + 1; if i <= 3 then return i end end, { out = a })
      assert.same({ 0.25, 0.5, 0.75 }, a:totable())
      i = 0
      local ok, err = pcall(pool.map, pool, function(x) return x end,
                            function() i = i + 1; if i <= 4 then return i end end, { out = a })
      assert.is_false(ok)
      assert.matches("option 'out' has 3 rows or elements, fewer than the items (the iterator gave more)",
                     tostring(err), 1, true)
    end)

    it("checks every element type's range", function()
      local cases = {
        { "uint8", 255, 256 }, { "int8", -128, -129 }, { "uint16", 65535, -1 },
        { "int16", 32767, 32768 }, { "uint32", 4294967295, -1 }, { "int64", math.maxinteger or 2 ^ 53, 2 ^ 63 },
      }
      for _, c in ipairs(cases) do
        local a = mpe.array(c[1], 2)
        local _, errs = pool:map(function(x) return x end, { c[2], c[3] }, { out = a, errors = "collect" })
        assert.equal(c[2], a[1])
        assert.equal(0, a[2])
        assert.matches("out of range for " .. c[1], errs[2].message, 1, true)
        assert.is_nil(errs[1])
      end
      local f = mpe.array("float", 1)
      pool:map(function(x) return x end, { 3 }, { out = f })
      assert.equal(3.0, f[1])
    end)

    it("map_async's callback gets the array", function()
      local a = mpe.array("int64", 3)
      local got
      pool:map_async(function(x) return x + 1 end, { 1, 2, 3 }, { out = a, callback = function(r) got = r end }):wait()
      pool:apply(function() end) -- callbacks run inside the next mpe call
      assert.equal(a, got)
      assert.same({ 2, 3, 4 }, a:totable())
    end)

    for _, m in ipairs({ "imap", "imap_unordered", "apply_async" }) do
      it(m .. " refuses option out", function()
        local a = mpe.array("int64", 3)
        local ok, err
        if m == "apply_async" then
          ok, err = pcall(function() return pool:apply_async(function() return 1 end, {}, { out = a }) end)
        else
          ok, err = pcall(function() return pool[m](pool, function(x) return x end, { 1 }, { out = a }) end)
        end
        assert.is_false(ok)
        assert.matches("pool:" .. m .. ": option 'out' is not accepted here", tostring(err), 1, true)
      end)
    end
  end)
end
