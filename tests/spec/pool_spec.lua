-- pool_spec.lua -- mpe.pool: every method and option, results and their order,
-- failures (Lua errors, crashes, timeouts), worker recycling, lazy iterators.
-- Runs under lua5.4 with mpe.so, under `mpe run`, and under LuaJIT.
local mpe = require "mpe"

local MPE_BIN = os.getenv("MPE_BIN") or "build/mpe"

local function tmpname()
  local n = os.tmpname()
  os.remove(n)
  return n
end

-- Run `code` with the mpe binary and return its output and exit status.
local function run_mpe(env, code)
  local f = tmpname() .. ".lua"
  local h = assert(io.open(f, "w"))
  h:write(code)
  h:close()
  local p = io.popen(env .. " " .. MPE_BIN .. " run " .. f .. " 2>&1; echo \"status=$?\"")
  local out = p:read("*a")
  p:close()
  os.remove(f)
  return out
end

local function spin(n)
  local x = 0
  for i = 1, n do x = x + i % 7 end
  return x
end

describe("mpe.pool", function()
  local pool

  before_each(function()
    pool = mpe.pool(2)
  end)

  after_each(function()
    if pool then pool:terminate() end
    pool = nil
  end)

  describe("map", function()
    it("returns results in input order with n set", function()
      local r = pool:map(function(x) return x * 2 end, {1, 2, 3, 4, 5})
      assert.are.same({2, 4, 6, 8, 10, n = 5}, r)
    end)

    it("keeps order under uneven task costs", function()
      local xs = {}
      for i = 1, 60 do xs[i] = i end
      local r = pool:map(function(x)
        spin((x % 5 == 0) and 200000 or 100)
        return x * x
      end, xs, {chunksize = 3})
      for i = 1, 60 do assert.are.equal(i * i, r[i]) end
      assert.are.equal(60, r.n)
    end)

    it("keeps nil results as holes and counts them in n", function()
      local r = pool:map(function(x) if x % 2 == 0 then return nil end return x end, {1, 2, 3, 4})
      assert.are.equal(1, r[1])
      assert.is_nil(r[2])
      assert.are.equal(3, r[3])
      assert.is_nil(r[4])
      assert.are.equal(4, r.n)
    end)

    it("takes the first of several return values", function()
      local r = pool:map(function(x) return x, "second" end, {7, 8})
      assert.are.same({7, 8, n = 2}, r)
    end)

    it("maps over an empty table", function()
      local r = pool:map(function(x) return x end, {})
      assert.are.equal(0, r.n)
      assert.is_nil(r[1])
    end)

    it("maps over mpe.range without materializing it", function()
      local r = pool:map(function(x) return x + 1 end, mpe.range(1, 100000))
      assert.are.equal(100000, r.n)
      assert.are.equal(2, r[1])
      assert.are.equal(100001, r[100000])
      local d = pool:map(function(x) return x end, mpe.range(10, 1, -3))
      assert.are.same({10, 7, 4, 1, n = 4}, d)
    end)

    it("maps over large tables of integers and floats, every result in place", function()
      local n = 300000 -- large enough that the store is published in steps
      local ints, floats = {}, {}
      for i = 1, n do
        ints[i] = i
        floats[i] = i + 0.5
      end
      local r = pool:map(function(x) return x end, ints)
      local f = pool:map(function(x) return x * 2 end, floats)
      assert.are.equal(n, r.n)
      local bad
      for i = 1, n do
        if r[i] ~= i or f[i] ~= 2 * i + 1 then bad = bad or i end
      end
      assert.is_nil(bad, "first wrong result at item " .. tostring(bad))
    end)

    it("maps over an iterator function", function()
      local i = 0
      local r = pool:map(function(x) return x .. "!" end, function()
        i = i + 1
        if i <= 5 then return "w" .. i end
      end)
      assert.are.same({"w1!", "w2!", "w3!", "w4!", "w5!", n = 5}, r)
    end)

    it("moves tables, strings and floats both ways", function()
      local r = pool:map(function(t) return {sum = t[1] + t[2], name = t.name:upper(), half = t[1] / 2} end,
        {{1, 2, name = "a"}, {3, 4, name = "b"}})
      assert.are.same({sum = 3, name = "A", half = 0.5}, r[1])
      assert.are.same({sum = 7, name = "B", half = 1.5}, r[2])
    end)

    it("keeps floats and integers apart in packed results", function()
      local r = pool:map(function(x) return x / 2 end, {2, 4, 6})
      assert.are.same({1.0, 2.0, 3.0, n = 3}, r)
      if math.type then
        assert.are.equal("float", math.type(r[1]))
        local q = pool:map(function(x) return x * 2 end, {1.5, 2.5})
        assert.are.same({3.0, 5.0, n = 2}, q)
      end
    end)

    -- A table of numbers goes packed, checked and copied in one pass; an item
    -- of another kind (found at the start, in the middle or at the end, also
    -- past the first group of 32) sends the whole table item by item instead.
    it("sends tables of numbers of mixed kinds item by item, each as it was", function()
      local function kind(x) return math.type and math.type(x) or type(x) end
      local cases = {
        {1, 2, 3},
        {1.5, 2.5, 3.5},
        {1, 2, 2.5},
        {1.5, 2, 3},
        {1, "2", 3},
      }
      local long = {}
      for i = 1, 100 do long[i] = i end
      long[70] = 70.5
      cases[#cases + 1] = long
      local longf = {}
      for i = 1, 100 do longf[i] = i + 0.25 end
      longf[100] = 7
      cases[#cases + 1] = longf
      for _, items in ipairs(cases) do
        for _, e in ipairs({"map", "map_async", "imap", "imap_unordered"}) do
          local r = {}
          if e == "map" then r = pool:map(function(x) return x end, items)
          elseif e == "map_async" then r = pool:map_async(function(x) return x end, items):get()
          else for i, v in pool[e](pool, function(x) return x end, items) do r[i] = v end end
          for i = 1, #items do
            assert(r[i] == items[i] and kind(r[i]) == kind(items[i]),
              e .. " item " .. i .. ": " .. tostring(r[i]) .. " (" .. kind(r[i]) .. ")")
          end
        end
      end
    end)

    it("delivers every packed number exactly, through every entry point", function()
      -- item i's result: integers at the extremes, then floats (NaN, -0.0,
      -- infinities), then integers again: packed segments of both kinds and
      -- segments that switch kind part-way (written out one by one).
      local big = math.maxinteger or 2^53
      local small = math.mininteger or -2^53
      local function val(i)
        local k = i % 400
        if k < 150 then
          return i % 3 == 0 and big - i or (i % 3 == 1 and small + i or -i)
        elseif k < 250 then
          return i % 4 == 0 and 0/0 or (i % 4 == 1 and -0.0 or (i % 4 == 2 and 1/0 or i + 0.5))
        end
        return i * 7
      end
      local function same(i, v)
        local w = val(i)
        if w ~= w then assert(v ~= v, "item " .. i .. ": not NaN") return end
        assert(v == w and (not math.type or math.type(v) == math.type(w)),
          "item " .. i .. ": " .. tostring(v) .. " ~= " .. tostring(w))
        if w == 0 and 1 / w < 0 then assert(1 / v < 0, "item " .. i .. ": lost -0.0") end
      end
      local n = 3000
      local function check(r) assert.are.equal(n, r.n); for i = 1, n do same(i, r[i]) end end
      local f = val
      check(pool:map(f, mpe.range(1, n)))
      check(pool:map(f, mpe.range(1, n), {chunksize = 7}))
      check(pool:map_async(f, mpe.range(1, n)):get())
      local args = {}
      for i = 1, n do args[i] = {i} end
      check(pool:starmap(f, args))
      check(pool:starmap_async(f, args):get())
      local got = {}
      for i, v in pool:imap(f, mpe.range(1, n)) do same(i, v); got[i] = 1 end
      for i, v in pool:imap_unordered(f, mpe.range(1, n)) do
        same(i, v); assert.are.equal(1, got[i]); got[i] = 2
      end
      for i = 1, n do assert.are.equal(2, got[i]) end
      same(4, pool:apply(f, 4)); same(160, pool:apply(f, 160))
      same(171, pool:apply_async(f, {171}):get())
      -- no results at all, and one
      assert.are.same({n = 0}, pool:map(f, {}))
      local one = pool:map(f, {3}); same(3, one[1])
    end)

    it("honours an explicit chunksize", function()
      local r = pool:map(function(x) return mpe.current_process().pid end, mpe.range(1, 40), {chunksize = 20})
      -- with chunks of 20, items 1..20 ran in one process and 21..40 in one process
      for i = 2, 20 do assert.are.equal(r[1], r[i]) end
      for i = 22, 40 do assert.are.equal(r[21], r[i]) end
    end)

    it("runs functions defined after the pool started, with their upvalues", function()
      local base = {offset = 100}
      local function helper(x) return x + base.offset end
      local log = math.log
      local r = pool:map(function(x) return helper(x) + math.floor(log(1)) end, {1, 2})
      assert.are.same({101, 102, n = 2}, r)
    end)

    -- busted runs specs in a sandbox _ENV; load() chunks see the real globals,
    -- which is what a function's _ENV becomes in a worker.
    local setg = load("MPE_SPEC_GLOBAL = ...")
    local getg = load("return MPE_SPEC_GLOBAL")

    it("sees globals defined before the pool started", function()
      pool:terminate()
      setg(41)
      pool = mpe.pool(2)
      setg(nil) -- the workers keep their copy from the fork
      local r = pool:map(function(x) return getg() + x end, {1})
      assert.are.equal(42, r[1])
    end)

    it("passes different shared objects in different items of one map", function()
      local a, b, c = mpe.array("int64", 4), mpe.array("int64", 4), mpe.array("double", 2)
      a[1], b[1], c[1] = 11, 22, 3.5
      local r = pool:map(function(x) return x[1] end, {a, b, c, b, a})
      assert.are.same({11, 22, 3.5, 22, 11, n = 5}, r)
      local got = pool:map(function(x) x[2] = x[1] * 2 return true end, {a, b})
      assert.are.equal(22, a[2])
      assert.are.equal(44, b[2])
      assert.are.equal(2, got.n)
    end)

    it("passes shared objects captured by the function, and returns them", function()
      local v = mpe.value("int64", 0)
      local lock = mpe.lock()
      pool:map(function() lock:with(function() v:add(1) end) end, mpe.range(1, 200))
      assert.are.equal(200, v:get())
      local arr = pool:apply(function() local x = mpe.array("int32", 3) x[3] = 7 return x end)
      assert.are.equal(7, arr[3])
    end)

    it("runs C functions", function()
      local r = pool:map(math.abs, {-1, -2.5, 3})
      assert.are.same({1, 2.5, 3, n = 3}, r)
      local s = pool:map(string.upper, {"a", "b"})
      assert.are.same({"A", "B", n = 2}, s)
    end)

    it("names workers PoolWorker-K with their slot", function()
      local r = pool:map(function() local c = mpe.current_process() return c.name .. ":" .. c.worker end,
        mpe.range(1, 50), {chunksize = 1})
      for i = 1, 50 do
        local name, slot = r[i]:match("^(PoolWorker%-%d+):(%d+)$")
        assert.is_not_nil(name)
        assert.is_true(tonumber(slot) == 1 or tonumber(slot) == 2)
      end
    end)
  end)

  describe("starmap", function()
    it("unpacks argument lists, nils included", function()
      local r = pool:starmap(function(a, b, c) return tostring(a) .. tostring(b) .. tostring(c) end,
        {{1, 2, 3}, {"x", nil, "z", n = 3}})
      assert.are.same({"123", "xnilz", n = 2}, r)
    end)

    it("starmap_async delivers the same", function()
      local a = pool:starmap_async(function(a, b) return a * b end, {{2, 3}, {4, 5}})
      assert.are.same({6, 20, n = 2}, a:get())
    end)

    it("rejects an item that is not an argument table", function()
      assert.has_error(function() pool:starmap(function() end, {1}) end,
        "mpe: starmap: item 1 must be a table of arguments, got number")
    end)
  end)

  describe("apply", function()
    it("returns every return value", function()
      local a, b, c = pool:apply(function(x, y) return x + y, x * y, nil end, 3, 4)
      assert.are.equal(7, a)
      assert.are.equal(12, b)
      assert.is_nil(c)
    end)

    it("apply_async runs callback in the parent with the values", function()
      local got
      local a = pool:apply_async(function(x) return x, x * 10 end, {5}, {callback = function(p, q) got = {p, q} end})
      assert.are.same({5, 50}, {a:get()})
      assert.are.same({5, 50}, got)
    end)

    it("apply_async runs error_callback with the error object", function()
      local err
      local a = pool:apply_async(function() error("nope") end, nil, {error_callback = function(e) err = e end})
      assert.is_false(a:wait(30) and a:successful())
      assert.are.equal("error", err.kind)
      assert.truthy(err.message:find("nope", 1, true))
      local ok, e = pcall(a.get, a)
      assert.is_false(ok)
      assert.are.equal(err, e)
    end)

    it("handles many apply_async calls in flight", function()
      local as = {}
      for i = 1, 3000 do as[i] = pool:apply_async(function(x) return x + 1 end, {i}) end
      local sum = 0
      for i = 1, 3000 do sum = sum + as[i]:get() end
      assert.are.equal(3000 * 3001 / 2 + 3000, sum)
    end)
  end)

  describe("async results", function()
    it("get with a timeout raises a timeout error and a later get succeeds", function()
      local a = pool:map_async(function(x) spin(3000000) return x end, {1, 2})
      local ok, e = pcall(a.get, a, 0)
      if not ok then
        assert.are.equal("timeout", e.kind)
        assert.truthy(tostring(e):find("^mpe: timeout"))
      end
      assert.are.same({1, 2, n = 2}, a:get(60))
    end)

    it("wait, ready and successful report the state", function()
      local a = pool:map_async(function(x) return x end, {1})
      assert.is_true(a:wait(60))
      assert.is_true(a:ready())
      assert.is_true(a:successful())
      local b = pool:map_async(function(x) spin(5000000) return x end, {1})
      if not b:ready() then
        assert.has_error(function() b:successful() end, "mpe: async:successful: the result is not ready yet")
      end
      b:wait()
    end)

    it("map_async callback receives the results table", function()
      local got
      local a = pool:map_async(function(x) return -x end, {1, 2}, {callback = function(r) got = r end})
      a:get()
      assert.are.same({-1, -2, n = 2}, got)
    end)

    it("makes progress while the parent runs Lua that never calls mpe", function()
      local dir = tmpname()
      os.execute("mkdir -p " .. dir)
      local a = pool:map_async(function(x)
        spin(20000)
        local f = io.open(dir .. "/" .. x, "w")
        f:write("x")
        f:close()
        return x
      end, mpe.range(1, 300), {chunksize = 2})
      -- A long Lua loop with no mpe call: the workers must finish everything.
      local deadline = os.time() + 60
      local seen = 0
      while os.time() < deadline do
        local f = io.open(dir .. "/300")
        local g = io.open(dir .. "/1")
        if f and g then
          f:close()
          g:close()
          seen = 0
          for i = 1, 300 do
            local h = io.open(dir .. "/" .. i)
            if h then seen = seen + 1 h:close() end
          end
          if seen == 300 then break end
        else
          if f then f:close() end
          if g then g:close() end
        end
        spin(100000)
      end
      assert.are.equal(300, seen)
      assert.are.equal(300, a:get().n)
      os.execute("rm -rf " .. dir)
    end)
  end)

  describe("imap", function()
    it("yields index and value in input order", function()
      local got = {}
      for i, v in pool:imap(function(x) spin((6 - x) * 100000) return x * 3 end, {1, 2, 3, 4, 5}, {chunksize = 1}) do
        got[#got + 1] = {i, v}
      end
      assert.are.same({{1, 3}, {2, 6}, {3, 9}, {4, 12}, {5, 15}}, got)
    end)

    it("imap_unordered yields every item once with its input index", function()
      local seen = {}
      local n = 0
      for i, v in pool:imap_unordered(function(x) return x * x end, mpe.range(1, 200)) do
        assert.are.equal(i * i, v)
        assert.is_nil(seen[i])
        seen[i] = true
        n = n + 1
      end
      assert.are.equal(200, n)
    end)

    it("yields nil results", function()
      local got = {}
      for i, v in pool:imap(function(x) if x == 2 then return nil end return x end, {1, 2, 3}) do
        got[i] = v == nil and "nil" or v
      end
      assert.are.same({1, "nil", 3}, got)
    end)

    it("stops cleanly with bounded pulls when an endless iterator is abandoned", function()
      local pulled = 0
      local function endless()
        pulled = pulled + 1
        return pulled
      end
      local count = 0
      for i, v in pool:imap(function(x) return x + 1 end, endless) do
        assert.are.equal(i + 1, v)
        count = count + 1
        if count == 100 then break end
      end
      assert.are.equal(100, count)
      assert.is_true(pulled < 200000, "pulled " .. pulled .. " items")
      -- the pool is still fine
      assert.are.same({2, n = 1}, pool:map(function(x) return x * 2 end, {1}))
    end)

    it("raises a failed item at its position, or yields it with errors = collect", function()
      local seen = {}
      local ok, e = pcall(function()
        for i, v in pool:imap(function(x) if x == 3 then error("three") end return x end, {1, 2, 3, 4}) do
          seen[#seen + 1] = v
        end
      end)
      assert.is_false(ok)
      assert.are.same({1, 2}, seen)
      assert.are.equal(3, e.index)
      local errs = {}
      for i, v, err in pool:imap(function(x) if x == 3 then error("three") end return x end, {1, 2, 3, 4},
        {errors = "collect"}) do
        if err then errs[i] = err.kind end
      end
      assert.are.same({[3] = "error"}, errs)
    end)
  end)

  describe("failures", function()
    it("raises the first failure as an error object with item, worker and traceback", function()
      local ok, e = pcall(pool.map, pool, function(x) if x == 7 then error("boom") end return x end,
        mpe.range(1, 20))
      assert.is_false(ok)
      assert.are.equal("error", e.kind)
      assert.are.equal(7, e.index)
      assert.is_true(e.pid > 0)
      assert.is_true(e.worker == 1 or e.worker == 2)
      assert.truthy(e.message:find("boom", 1, true))
      assert.truthy(e.traceback:find("stack traceback", 1, true))
      assert.truthy(tostring(e):find("^mpe: item 7 failed in worker %d %(pid %d+%): .*boom"))
      -- the pool still works
      assert.are.same({1, n = 1}, pool:map(function(x) return x end, {1}))
    end)

    it("collects failures and partial results with errors = collect", function()
      local r, errs = pool:map(function(x) if x % 5 == 0 then error("five") end return x end,
        mpe.range(1, 20), {errors = "collect"})
      for i = 1, 20 do
        if i % 5 == 0 then
          assert.is_nil(r[i])
          assert.are.equal("error", errs[i].kind)
          assert.are.equal(i, errs[i].index)
        else
          assert.are.equal(i, r[i])
          assert.is_nil(errs[i])
        end
      end
    end)

    it("keeps a table error value", function()
      local _, errs = pool:map(function() error({code = 42}) end, {1}, {errors = "collect"})
      assert.are.same({code = 42}, errs[1].value)
    end)

    it("blames the item whose worker died inside a chunk of 100, and re-runs the rest", function()
      local r, errs = pool:map(function(x) if x == 50 then os.exit(3) end return x end,
        mpe.range(1, 100), {chunksize = 100, errors = "collect"})
      for i = 1, 100 do
        if i ~= 50 then assert.are.equal(i, r[i]) end
      end
      assert.is_nil(r[50])
      assert.are.equal("crash", errs[50].kind)
      assert.are.equal(50, errs[50].index)
      assert.truthy(errs[50].message:find("exited with status 3", 1, true))
      local n = 0
      for _ in pairs(errs) do n = n + 1 end
      assert.are.equal(1, n)
    end)

    it("names the signal when a worker is killed from outside, and replaces it", function()
      local ok, e = pcall(pool.map, pool, function(x)
        if x == 5 then os.execute("kill -9 " .. mpe.current_process().pid) end
        return x
      end, mpe.range(1, 10), {chunksize = 10})
      assert.is_false(ok)
      assert.are.equal("crash", e.kind)
      assert.are.equal(5, e.index)
      assert.truthy(e.message:find("SIGKILL", 1, true))
      assert.are.same({3, n = 1}, pool:map(function(x) return x + 1 end, {2}))
    end)

    it("fails a task that outruns the pool timeout, and goes on", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, timeout = 0.5}
      local r, errs = pool:map(function(x) if x == 3 then while true do end end return x end,
        mpe.range(1, 6), {errors = "collect", chunksize = 1})
      assert.are.equal("timeout", errs[3].kind)
      assert.truthy(errs[3].message:find("^mpe: timeout"))
      for _, i in ipairs{1, 2, 4, 5, 6} do assert.are.equal(i, r[i]) end
    end)

    it("re-runs an item whose worker died, up to retries times", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, retries = 2}
      local marker = tmpname()
      local r = pool:map(function(x)
        if x == 2 then
          local f = io.open(marker)
          if not f then
            io.open(marker, "w"):close()
            os.exit(1)
          end
          f:close()
        end
        return x * 2
      end, mpe.range(1, 4))
      os.remove(marker)
      assert.are.same({2, 4, 6, 8, n = 4}, r)
    end)

    it("fails every call with the initializer's error", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, initializer = function() error("init broke") end}
      local ok, e = pcall(pool.map, pool, function(x) return x end, {1})
      assert.is_false(ok)
      assert.truthy(tostring(e):find("pool initializer failed", 1, true))
      assert.truthy(tostring(e):find("init broke", 1, true))
    end)
  end)

  describe("options", function()
    it("runs the initializer with initargs in every worker", function()
      pool:terminate()
      local set_sum = load("INIT_SUM = ...")
      local get_sum = load("return INIT_SUM")
      pool = mpe.pool{workers = 2, initializer = function(a, b) set_sum(a + b) end, initargs = {40, 2}}
      local r = pool:map(function() return get_sum() end, mpe.range(1, 10), {chunksize = 1})
      for i = 1, 10 do assert.are.equal(42, r[i]) end
    end)

    it("maxtasksperchild = 1 over 2,000 tasks uses a fresh worker per task", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, maxtasksperchild = 1}
      -- Worker names (PoolWorker-K), not pids: the kernel may reuse a pid.
      local r = pool:map(function() return mpe.current_process().name end, mpe.range(1, 2000))
      local seen, n = {}, 0
      for i = 1, 2000 do
        if not seen[r[i]] then seen[r[i]] = true n = n + 1 end
      end
      assert.are.equal(2000, n)
      assert.is_true(pool.started >= 2000 and pool.started <= 2002)
    end)

    it("takes its default size from MPE_WORKERS and from the CPU affinity", function()
      local out = run_mpe("MPE_WORKERS=3", 'local p = require("mpe").pool() print(p.workers) p:close() p:join()')
      assert.truthy(out:find("^3\n"))
      out = run_mpe("taskset -c 0 env -u MPE_WORKERS",
        'local p = require("mpe").pool() print(p.workers) p:close() p:join()')
      assert.truthy(out:find("^1\n"), out)
    end)

    it("rejects bad options with messages that say what and where", function()
      assert.has_error(function() mpe.pool(-1) end, "mpe: pool: argument 1 (workers) must be from 0 to 1024, got -1")
      assert.has_error(function() mpe.pool{wokers = 2} end, "mpe: pool: unknown option 'wokers'")
      assert.has_error(function() mpe.pool("x") end,
        "mpe: pool: argument 1 must be a worker count or an options table, got \"x\"")
      assert.has_error(function() mpe.pool{timeout = -1} end,
        "mpe: pool: option 'timeout' must be a positive number of seconds, got -1")
      assert.has_error(function() pool:map(function() end, nil) end,
        "mpe: pool:map: argument 2 must be a table, mpe.range or function, got nil")
      assert.has_error(function() pool:map(nil, {}) end,
        "mpe: pool:map: argument 1 must be a function, got nil")
      assert.has_error(function() pool:map(function() end, {}, {chunksize = 0}) end,
        "mpe: pool:map: option 'chunksize' must be an integer from 1 to 1048576, got 0")
      assert.has_error(function() pool:map(function() end, {}, {errors = "ignore"}) end,
        'mpe: pool:map: option \'errors\' must be "raise" or "collect"')
      assert.has_error(function() pool.map({}, function() end, {}) end,
        "mpe: pool:map: self must be an mpe.Pool (call methods with a colon), got table")
    end)

    it("says which value cannot be sent", function()
      local co = coroutine.create(function() end)
      local ok, e = pcall(pool.map, pool, function(x) return x end, {1, co})
      assert.is_false(ok)
      assert.truthy(tostring(e):find("cannot send", 1, true))
    end)
  end)

  describe("lifecycle", function()
    -- Function ids were kept in the registry by the pool's address and never
    -- dropped: a pool allocated where a freed one had been took its table, and
    -- the id of the old pool's first function named the new pool's first one,
    -- so f ran g (231 of 240 new pools in a fresh script on the old build).
    it("a new pool at a freed pool's address runs the functions it is given", function()
      local out = run_mpe("LUA_PATH='tests/spec/?.lua;;'", [[
        local mpe = require "mpe"
        local T = require "poolfail_through"
        local function f(x) return "f" .. x end
        local function g(x) return "g" .. x end
        local bad = 0
        for _, e in ipairs(T.ENTRIES) do
          for r = 1, 10 do
            local p1 = mpe.pool(1)
            assert(T.through(p1, e, f, {{1}})[1] == "f1")
            p1:close(); p1:join(); p1 = nil
            collectgarbage(); collectgarbage()
            local p2 = mpe.pool(1)
            local a, b = T.through(p2, e, g, {{1}})[1], T.through(p2, e, f, {{1}})[1]
            if a ~= "g1" or b ~= "f1" then bad = bad + 1; print(e, r, a, b) end
            p2:close(); p2:join(); p2 = nil
            collectgarbage(); collectgarbage()
          end
        end
        print("bad " .. bad)
      ]])
      assert.matches("bad 0\nstatus=0", out)
    end)

    it("forgets a pool's function ids when the pool goes", function()
      local function tables()
        local n, fns = 0, debug.getregistry()["mpe.pool.fns"]
        for _ in pairs(fns or {}) do n = n + 1 end
        return n
      end
      collectgarbage(); collectgarbage()
      local before = tables()
      for _ = 1, 5 do
        local p = mpe.pool(1)
        assert.are.equal(2, p:apply(function(x) return x + 1 end, 1))
        p:close(); p:join()
      end
      collectgarbage(); collectgarbage()
      assert.are.equal(before, tables())
    end)

    it("close then join waits for pending work and its callbacks", function()
      local got
      pool:map_async(function(x) spin(200000) return x end, {1, 2, 3}, {callback = function(r) got = r.n end})
      pool:close()
      assert.has_error(function() pool:map(function() end, {}) end, "mpe: pool:map: the pool is closed")
      pool:join()
      assert.are.equal(3, got)
      pool:join() -- joining again does nothing
      pool:close()
      pool:terminate()
    end)

    it("join before close raises", function()
      assert.has_error(function() pool:join() end, "mpe: pool:join: call pool:close() or pool:terminate() first")
    end)

    it("terminate stops the workers and pending results raise", function()
      local a = pool:map_async(function(x) spin(50000000) return x end, {1, 2})
      pool:terminate()
      assert.has_error(function() a:get() end, "mpe: the pool was terminated before this work finished")
      assert.has_error(function() pool:map(function() end, {}) end, "mpe: pool:map: the pool is terminated")
    end)

    it("leaves no worker process behind after terminate", function()
      local pids = pool:map(function() return mpe.current_process().pid end, mpe.range(1, 20), {chunksize = 1})
      pool:terminate()
      for i = 1, 20 do
        local f = io.open("/proc/" .. pids[i] .. "/status")
        local state = f and f:read("*a"):match("State:%s+(%a)")
        if f then f:close() end
        assert.is_true(state == nil, "worker " .. pids[i] .. " still exists")
      end
    end)

    if _VERSION == "Lua 5.4" then
      it("a <close> scope joins on normal exit and terminates on error", function()
        local chunk = load([[
          local mpe, spin = ...
          local r
          do
            local p <close> = mpe.pool(2)
            r = p:map(function(x) return x + 1 end, {1, 2})
          end
          local ok = pcall(function()
            local p <close> = mpe.pool(2)
            p:map_async(function(x) spin(50000000) return x end, {1})
            error("leave")
          end)
          return r, ok
        ]])
        local r, ok = chunk(mpe, spin)
        assert.are.same({2, 3, n = 2}, r)
        assert.is_false(ok)
      end)
    end

    it("is usable only by the process that created it", function()
      local p = mpe.process(function()
        local ok, e = pcall(pool.map, pool, function(x) return x end, {1})
        return ok, tostring(e)
      end)
      p:start()
      local ok, msg = p:result()
      assert.is_false(ok)
      assert.truthy(msg:find("a forked child cannot use it", 1, true))
    end)
  end)
end)

describe("mpe.range", function()
  it("has a length and 1-based items", function()
    local r = mpe.range(1, 10)
    assert.are.equal(10, #r)
    assert.are.equal(1, r[1])
    assert.are.equal(10, r[10])
    assert.is_nil(r[11])
    assert.are.equal(4, #mpe.range(1, 10, 3))
    assert.are.equal(0, #mpe.range(5, 1))
    assert.are.equal(3, #mpe.range(3, 1, -1))
    assert.are.equal("mpe.range(1, 10, 3)", tostring(mpe.range(1, 10, 3)))
  end)

  it("rejects a zero step and non-integers", function()
    assert.has_error(function() mpe.range(1, 10, 0) end, "mpe: range: argument 3 (step) must not be 0")
    assert.has_error(function() mpe.range(1.5, 10) end, "mpe: range: argument 1 must be an integer, got 1.5")
    assert.has_error(function() mpe.range("a", 10) end, "mpe: range: argument 1 must be an integer, got \"a\"")
  end)
end)
