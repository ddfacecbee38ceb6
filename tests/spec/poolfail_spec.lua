-- poolfail_spec.lua -- the pool's failure seams (issue 9): an error half-way
-- through a submission, many shared objects in items and arguments, a
-- callback that raises, the unsendable-value message, memory failures in the
-- parent, back-pressure of imap over a range or a table. Each case runs
-- through every entry point (map, starmap, map_async, starmap_async, imap,
-- imap_unordered, apply, apply_async) and then asserts that a following map
-- works and that close + join return.
-- Each case runs in a child process joined with a bound, so a pool that
-- hangs fails its case instead of stalling the suite. No timing is asserted.
local mpe = require "mpe"
local unpack = table.unpack or unpack

local ENTRIES = {"map", "starmap", "map_async", "starmap_async", "imap", "imap_unordered",
                 "apply", "apply_async"}


local through = require("poolfail_through")

-- The pool completes a fresh map, then close + join return.
local function healthy_then_joined(pool)
  local r = pool:map(function(x) return x * 3 end, mpe.range(1, 100))
  assert(r.n == 100 and r[1] == 3 and r[100] == 300, "the map after the failure is wrong")
  pool:close()
  pool:join()
  return true
end

-- Run body() in a child process; its return values come back. A child still
-- running after `seconds` is killed and the case fails.
local function isolated(body, seconds)
  local p = mpe.process(body)
  p:start()
  if not p:join(seconds or 90) then
    p:kill()
    p:join()
    error("the case did not finish within " .. (seconds or 90) .. " s (a hang)", 2)
  end
  return p:result()
end

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
      local pool <close> = mpe.pool(2)
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
  -- The parent runs out of memory receiving a 120 MB result: ulimit -v caps
  -- the address space, and the parent fills most of it after the workers
  -- were forked (they do not share that ballast), so the worker can build
  -- and send the result but the parent cannot take it in. Sanitizer builds
  -- reserve terabytes of address space and cannot run under ulimit -v.
  describe("running out of memory in the parent", function()
    local MPE_BIN = os.getenv("MPE_BIN") or "build/mpe"
    local SANITIZED = os.getenv("MPE_SANITIZE") == "1"
    for _, e in ipairs(ENTRIES) do
      it("fails the job with a clear error, then the pool works and joins (" .. e .. ")", function()
        if SANITIZED then return end
        local f = os.tmpname()
        local h = assert(io.open(f, "w"))
        h:write(([[
          package.path = %q .. ";" .. package.path
          local mpe = require "mpe"
          local through = require("poolfail_through")
          local pool = mpe.pool(2)
          local ballast = {string.rep("b", 200 * 1024 * 1024), string.rep("c", 200 * 1024 * 1024)}
          local big = function(x) if x == 2 then return string.rep("x", 120 * 1024 * 1024) end return x end
          local ok, err = pcall(through, pool, %q, big, {{1}, {2}, {3}})
          print("first", ok, type(err) == "table" and err.kind, tostring(err):sub(1, 300))
          ballast = nil
          collectgarbage()
          collectgarbage()
          local r = pool:map(function(x) return x * 3 end, mpe.range(1, 100))
          print("after", r.n == 100 and r[100] == 300)
          pool:close()
          pool:join()
          print("joined")
        ]]):format(os.getenv("MPE_SOURCE_DIR") and (os.getenv("MPE_SOURCE_DIR") .. "/tests/spec/?.lua") or "tests/spec/?.lua", e))
        h:close()
        local p = io.popen("ulimit -v 700000; timeout -s KILL 120 " .. MPE_BIN .. " run " .. f .. " 2>&1")
        local out = p:read("*a")
        p:close()
        os.remove(f)
        assert.matches("first%s+false%s+error%s+mpe: [^\n]*not enough memory", out)
        assert.matches("after%s+true", out)
        assert.matches("joined", out)
      end)
    end
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
