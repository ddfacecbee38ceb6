-- poolfail_spec.lua -- the pool's failure seams (issue 9): an error half-way
-- through a submission, a callback that raises, the unsendable-value
-- message, back-pressure of imap over a range or a table. Shared objects are
-- in poolfds_spec.lua, memory failures in poolmem_spec.lua. Each case runs
-- through every entry point it can reach (map, starmap, map_async,
-- starmap_async, imap, imap_unordered, apply, apply_async) and then asserts
-- that a following map works and that close + join return.
-- Each case runs in a child process joined with a bound, so a pool that
-- hangs fails its case instead of stalling the suite. No timing is asserted.
local mpe = require "mpe"
local unpack = table.unpack or unpack

local shared = require("poolfail_through")
local ENTRIES, through = shared.ENTRIES, shared.through
local healthy_then_joined, isolated = shared.healthy_then_joined, shared.isolated

describe("pool failure seams", function()
  describe("an error half-way through a submission", function()
    for _, e in ipairs(ENTRIES) do
      it("leaves the pool usable and joinable (" .. e .. ")", function()
        local msg, joined = isolated(function()
          local pool = mpe.pool(2)
          local co = coroutine.create(print)
          local args = {}
          for i = 1, 50 do args[i] = {i} end
          args[30] = {{inner = co}}
          local ok, err = pcall(through, pool, e, function(x) return x end, args)
          assert(not ok, "the submission did not fail")
          return tostring(err), healthy_then_joined(pool)
        end)
        assert.is_true(joined)
        assert.matches("cannot send coroutine", msg)
      end)
    end

    it("also when the iterator raises (map, imap)", function()
      local r = {isolated(function()
        local pool = mpe.pool(2)
        local out = {}
        for _, e in ipairs({"map", "map_async", "starmap", "imap", "imap_unordered"}) do
          local n = 0
          local function src()
            n = n + 1
            if n == 5 then error("source broke") end
            if e == "starmap" then return {n} end
            return n
          end
          local ok, err = pcall(function()
            if e == "map_async" then return pool:map_async(function(x) return x end, src):get() end
            if e == "imap" or e == "imap_unordered" then
              for _ in pool[e](pool, function(x) return x end, src) do end
              return
            end
            return pool[e](pool, function(x) return x end, src)
          end)
          out[#out + 1] = (not ok) and tostring(err):match("source broke") ~= nil
        end
        out[#out + 1] = healthy_then_joined(pool)
        return unpack(out)
      end)}
      for i = 1, 6 do assert.is_true(r[i], "case " .. i) end
    end)
  end)

  describe("the unsendable-value message", function()
    it("names the item (map, starmap, imap)", function()
      local pool = mpe.pool(2) -- (no <close>: LuaJIT runs this spec too)
      local co = coroutine.create(print)
      local items = {1, 2, {inner = co}}
      for _, e in ipairs({"map", "map_async", "imap", "imap_unordered"}) do
        local ok, err = pcall(through, pool, e, function(x) return x end, {{1}, {2}, {{inner = co}}})
        assert.is_false(ok)
        assert.matches("at item 3%.inner", tostring(err), 1, false)
      end
      local ok, err = pcall(pool.starmap, pool, function(x) return x end, {{1}, {{inner = co}}})
      assert.is_false(ok)
      assert.matches("at item 2 args%[1%]%.inner", tostring(err))
      assert.are.equal(3, #items)
      pool:close()
      pool:join()
    end)
  end)

  describe("a callback that raises", function()
    it("does not defer the other finished callbacks (apply_async, map_async, starmap_async)", function()
      local ran, joined = isolated(function()
        local pool = mpe.pool(2)
        local seen = {}
        local as = {}
        as[1] = pool:apply_async(function() return 1 end, {}, {callback = function() error("cb broke") end})
        as[2] = pool:apply_async(function() return 2 end, {}, {callback = function(v) seen[#seen + 1] = v end})
        as[3] = pool:map_async(function(x) return x end, {3}, {callback = function(r) seen[#seen + 1] = r[1] end})
        as[4] = pool:starmap_async(function(x) return x end, {{4}}, {callback = function(r) seen[#seen + 1] = r[1] end})
        -- Let every result arrive before the first pump, so that one pump
        -- finds all four jobs complete (sleeping outside mpe runs no callback).
        os.execute("sleep 1")
        local deadline = mpe.now() + 20
        local errs = 0
        while #seen < 3 and mpe.now() < deadline do
          local ok, err = pcall(function() return as[4]:wait(0.05) end)
          if not ok then
            assert(tostring(err):match("cb broke"), tostring(err))
            errs = errs + 1
          end
        end
        assert(errs <= 1, "the failed callback ran twice")
        table.sort(seen)
        return table.concat(seen, ","), healthy_then_joined(pool)
      end)
      assert.are.equal("2,3,4", ran)
      assert.is_true(joined)
    end)
  end)

  -- A slow consumer: three results, a second apart, then the loop is left.
  -- Without back-pressure the workers fill the parent with results while it
  -- sleeps (hundreds of MB over 10^7 items); with it, a window of results.
  describe("back-pressure of imap over a range or a table", function()
    local function rss_mb()
      local f = io.open("/proc/self/statm")
      local t = f:read("*a")
      f:close()
      return tonumber(t:match("%d+ (%d+)")) * 4096 / 1e6
    end
    for _, e in ipairs({"imap", "imap_unordered"}) do
      for _, input in ipairs({"range", "table"}) do
        it("holds the memory of a slow consumer (" .. e .. " over a " .. input .. ")", function()
          local growth, joined = isolated(function()
            local pool = mpe.pool(2)
            local items
            if input == "range" then
              items = mpe.range(1, 1e7)
            else
              items = {}
              for i = 1, 1e6 do items[i] = i end
            end
            collectgarbage()
            local before = rss_mb()
            local n, most = 0, 0
            for _, v in pool[e](pool, function(x) return x end, items) do
              n = n + 1
              os.execute("sleep 1")
              local now = rss_mb() - before
              if now > most then most = now end
              if n == 3 then break end
            end
            return most, healthy_then_joined(pool)
          end)
          assert.is_true(joined)
          assert.is_true(growth < 40, ("the parent grew by %.0f MB"):format(growth))
        end)
      end
    end
  end)
end)
