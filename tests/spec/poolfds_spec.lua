-- poolfds_spec.lua -- shared objects in a pool's items, arguments, upvalues
-- and results at any count (issue 9): the same array in a million items,
-- thousands of tasks in flight each with its own lock, results each with an
-- array of its own; through every entry point, then a following map and
-- close + join.
-- Each case runs in a child process joined with a bound, so a pool that
-- hangs fails its case instead of stalling the suite. No timing is asserted.
local mpe = require "mpe"
local unpack = table.unpack or unpack

local shared = require("poolfail_through")
local ENTRIES, through = shared.ENTRIES, shared.through
local healthy_then_joined, isolated = shared.healthy_then_joined, shared.isolated

describe("pool failure seams", function()
  describe("shared objects", function()
    for _, e in ipairs(ENTRIES) do
      it("travel in 200 items or calls that all carry the same array (" .. e .. ")", function()
        local sum, joined = isolated(function()
          local pool = mpe.pool(2)
          local a = mpe.array("int64", 200)
          local args = {}
          for i = 1, 200 do args[i] = {{arr = a, i = i}} end
          local r = through(pool, e, function(t) t.arr[t.i] = t.i; return t.i end, args)
          local s = 0
          for i = 1, 200 do
            assert(r[i] == i, "result " .. i)
            s = s + a[i]
          end
          return s, healthy_then_joined(pool)
        end)
        assert.are.equal(200 * 201 / 2, sum)
        assert.is_true(joined)
      end)
    end

    it("travel in 300 apply_async in flight, each with its own lock", function()
      local n, joined = isolated(function()
        local pool = mpe.pool(2)
        local as = {}
        for i = 1, 300 do
          local l = mpe.lock()
          as[i] = pool:apply_async(function(lock, k)
            lock:acquire()
            lock:release()
            return k
          end, {l, i})
        end
        local good = 0
        for i = 1, 300 do
          if as[i]:get() == i then good = good + 1 end
        end
        return good, healthy_then_joined(pool)
      end, 180)
      assert.are.equal(300, n)
      assert.is_true(joined)
    end)

    it("travel in 300 items of one map, each with its own array", function()
      local n, joined = isolated(function()
        local pool = mpe.pool(2)
        local items = {}
        for i = 1, 300 do
          local a = mpe.array("int64", 1)
          items[i] = a
        end
        local r = pool:map(function(a) a[1] = 7; return 1 end, items)
        local good = 0
        for i = 1, 300 do
          if r[i] == 1 and items[i][1] == 7 then good = good + 1 end
        end
        return good, healthy_then_joined(pool)
      end, 180)
      assert.are.equal(300, n)
      assert.is_true(joined)
    end)
    it("travel in a million items that all carry the same array", function()
      local n, joined = isolated(function()
        local pool = mpe.pool(2)
        local a = mpe.array("int64", 1)
        local items = {}
        for i = 1, 1e6 do items[i] = a end
        local r = pool:map(function(arr) return arr[1] + 1 end, items)
        local good = 0
        for i = 1, 1e6 do
          if r[i] == 1 then good = good + 1 end
        end
        return good, healthy_then_joined(pool)
      end, 240)
      assert.are.equal(1e6, n)
      assert.is_true(joined)
    end)

    it("travel in 2000 apply_async in flight, each with its own lock, and in 100 functions' upvalues", function()
      local n, joined = isolated(function()
        local pool = mpe.pool(2)
        local as = {}
        for i = 1, 2000 do
          as[i] = pool:apply_async(function(lock, k) lock:acquire(); lock:release(); return k end, {mpe.lock(), i})
        end
        for i = 1, 100 do
          local l = mpe.lock()
          as[2000 + i] = pool:apply_async(function() l:acquire(); l:release(); return 2000 + i end)
        end
        local good = 0
        for i = 1, 2100 do
          if as[i]:get() == i then good = good + 1 end
        end
        return good, healthy_then_joined(pool)
      end, 240)
      assert.are.equal(2100, n)
      assert.is_true(joined)
    end)

    it("come back in results: 200 items each returning an array of its own", function()
      local n, joined = isolated(function()
        local pool = mpe.pool(2)
        local r = pool:map(function(i) local a = mpe.array("int64", 1); a[1] = i; return a end, mpe.range(1, 200),
                           {chunksize = 200})
        local good = 0
        for i = 1, 200 do
          if r[i][1] == i then good = good + 1 end
        end
        return good, healthy_then_joined(pool)
      end, 180)
      assert.are.equal(200, n)
      assert.is_true(joined)
    end)
  end)
end)
