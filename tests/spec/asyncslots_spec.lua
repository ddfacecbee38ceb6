-- asyncslots_spec.lua -- the async objects' slots (issue 13 point 3): an
-- mpe.AsyncResult keeps its fields in its pool's field tables at a slot it
-- gives back when collected; a job's messages find their object through that
-- slot; an apply's one value is the field itself, other counts a table; the
-- pool lives while any of its results does. These cases fail if a slot is
-- handed to two live objects, if a collected object's fields stay behind, if a
-- message reaches the wrong object, if return values change shape, or if a
-- result outlives its pool badly (at run time or at exit). Runs under lua5.4
-- with mpe.so, under `mpe run`, and under LuaJIT.
local mpe = require "mpe"
local through = require "poolfail_through"
local script_runner = require "runscript"
local pids = require "pids"
local unpack = table.unpack or unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end

local function gc()
  collectgarbage()
  collectgarbage()
end

-- A task that blocks until ev is set, then returns x * 10.
local function gated(ev)
  return function(x)
    ev:wait(60)
    return x * 10
  end
end

local function times10(x) return x * 10 end

-- The sum of the first values of results as[1..n].
local function total(as, n)
  local s = 0
  for i = 1, n do s = s + as[i]:get(60) end
  return s
end

describe("async slots: reuse", function()
  it("results dropped while others are pending give their slots to new ones, each get its own value", function()
    local p = mpe.pool(2)
    for round = 1, 3 do
      local kept = {}
      for i = 1, 300 do
        local a = p:apply_async(times10, { round * 1000 + i })
        if i % 3 == 0 then kept[i] = a end -- the others are dropped unread
      end
      -- Reading the kept ones completes (and unroutes) every job before them.
      for i = 3, 300, 3 do assert.are.equal((round * 1000 + i) * 10, kept[i]:get(60)) end
      gc() -- the dropped objects go; their slots are free
      local fresh = {}
      for i = 1, 400 do fresh[i] = p:apply_async(times10, { -(round * 1000 + i) }) end
      for i = 3, 300, 3 do assert.are.equal((round * 1000 + i) * 10, kept[i]:get()) end
      for i = 1, 400 do assert.are.equal(-(round * 1000 + i) * 10, fresh[i]:get(60)) end
    end
    p:close()
    p:join()
  end)

  it("a collected result's values and callbacks are not kept by its slot", function()
    local p = mpe.pool(2)
    local held = setmetatable({}, { __mode = "k" })
    local n = 0
    local function submit(i)
      local opts = { callback = function(v) held[v] = true n = n + 1 end }
      held[opts] = true
      return p:apply_async(function(x) return { x } end, { i }, opts)
    end
    local as = {}
    for i = 1, 50 do as[i] = submit(i) end
    for i = 1, 50 do assert.are.equal(i, as[i]:get(60)[1]) end
    assert.are.equal(50, n)
    as = nil
    gc()
    -- Nothing else refers to the values and option tables: the field tables let them go.
    assert.are.same({}, held)
    p:close()
    p:join()
  end)

  it("cancelled work leaves a slot that new work reuses while the pool is held", function()
    -- A one-worker pool held by a task until ev is set, with 300 tasks behind
    -- it, so the work submitted next is certainly not handed out (wait_spec).
    local p = mpe.pool(1)
    local ev = mpe.event()
    local head = p:apply_async(gated(ev), { 1 })
    local fill = {}
    for i = 1, 300 do fill[i] = p:apply_async(times10, { i }) end
    local errs = 0
    for i = 1, 20 do
      local c = p:apply_async(times10, { 1e6 + i }, { error_callback = function() errs = errs + 1 end })
      assert.is_true(c:cancel())
    end
    assert.are.equal(20, errs)
    gc()
    local fresh = {}
    for i = 1, 40 do fresh[i] = p:apply_async(times10, { 2000 + i }) end
    ev:set()
    assert.are.equal(10, head:get(60))
    for i = 1, 300 do assert.are.equal(i * 10, fill[i]:get(60)) end
    for i = 1, 40 do assert.are.equal((2000 + i) * 10, fresh[i]:get(60)) end
    p:close()
    p:join()
  end)

  -- Jobs whose objects are gone while their items still run: a failed
  -- map_async (raise mode: complete at the first failure, its other items
  -- still running) and an imap loop left early. Their late results must not
  -- reach the new objects that took their slots.
  local abandon = {
    { "a failed map_async", function(p, ev)
      local a = p:map_async(function(x)
        if x == 1 then error("first fails") end
        ev:wait(60)
        return -x
      end, { 1, 2, 3, 4, 5, 6 }, { chunksize = 1 })
      local ok, err = pcall(a.get, a, 60)
      assert.is_false(ok)
      assert.are.equal("error", err.kind)
      assert.truthy(err.message:find("first fails", 1, true), err.message)
    end },
    { "an imap loop left early", function(p, ev)
      local function first()
        for i, v in p:imap(function(x)
          if x > 1 then ev:wait(60) end
          return -x
        end, { 1, 2, 3, 4, 5, 6 }, { chunksize = 1 }) do
          return i, v
        end
      end
      local i, v = first()
      assert.are.equal(1, i)
      assert.are.equal(-1, v)
    end },
  }
  for _, case in ipairs(abandon) do
    it(case[1] .. ": its late results do not reach the objects that reuse its slot", function()
      local p = mpe.pool(2)
      local ev = mpe.event()
      case[2](p, ev)
      gc() -- the abandoned object goes, its slot is free, its items still run
      local fresh = {}
      for i = 1, 50 do fresh[i] = p:apply_async(times10, { i }) end
      local m = p:map_async(times10, { 7, 8, 9 })
      ev:set() -- the old items finish and send their results now
      for i = 1, 50 do assert.are.equal(i * 10, fresh[i]:get(60)) end
      assert.are.same({ 70, 80, 90, n = 3 }, m:get(60))
      local again = {}
      for i = 1, 50 do again[i] = p:apply_async(times10, { 100 + i }) end
      for i = 1, 50 do assert.are.equal((100 + i) * 10, again[i]:get(60)) end
      p:close()
      p:join()
    end)
  end
end)

-- The tasks, and what their calls return (n and the values).
local shapes = {
  { "no value", function() end, {}, 0 },
  { "one value", function(x) return x * 10 end, { 30 }, 1 },
  { "nil", function() return nil end, { nil }, 1 },
  { "three values, nil in the middle", function(x) return x, nil, "c" end, { 4, nil, "c" }, 3 },
  { "a table", function(x) return { x, k = "v" } end, { { 5, k = "v" } }, 1 },
}
local args = { {}, { 3 }, {}, { 4 }, { 5 } }

local function check_values(want, n, got, where)
  assert.are.equal(n, got.n, where .. ": number of values")
  for k = 1, n do assert.are.same(want[k], got[k], where .. ": value " .. k) end
end

describe("async slots: return values", function()
  local pool
  setup(function() pool = mpe.pool(2) end)
  teardown(function()
    pool:close()
    pool:join()
  end)

  for s, shape in ipairs(shapes) do
    local name, fn, want, n = shape[1], shape[2], shape[3], shape[4]
    it(name .. ": apply_async get (twice), apply, and the callback get exactly these values", function()
      local a = pool:apply_async(fn, args[s])
      local first = pack(a:get(60))
      check_values(want, n, first, "get")
      local second = pack(a:get())
      check_values(want, n, second, "second get")
      for k = 1, n do assert.are.equal(first[k], second[k]) end -- the same table, if one
      check_values(want, n, pack(pool:apply(fn, unpack(args[s]))), "apply")
      local got
      local c = pool:apply_async(fn, args[s], { callback = function(...) got = pack(...) end })
      c:get(60)
      check_values(want, n, got, "callback")
      -- many at once, of all slots, still each its own
      local many = {}
      for i = 1, 30 do many[i] = pool:apply_async(fn, args[s]) end
      for i = 1, 30 do check_values(want, n, pack(many[i]:get(60)), "apply_async " .. i) end
    end)

    it(name .. ": every other entry point keeps the first value", function()
      local items = { args[s][1] or 0, args[s][1] or 0 }
      for _, e in ipairs(through.ENTRIES) do
        if e ~= "apply" and e ~= "apply_async" then
          local r = through.through(pool, e, fn, { { items[1] }, { items[2] } })
          for i = 1, 2 do assert.are.same(want[1], r[i], e .. " item " .. i) end
          if e == "map" or e == "starmap" or e == "map_async" or e == "starmap_async" then
            assert.are.equal(2, r.n, e .. ": n")
          end
        end
      end
    end)
  end
end)

describe("async slots: errors and state", function()
  local pool
  setup(function() pool = mpe.pool(2) end)
  teardown(function()
    pool:close()
    pool:join()
  end)

  it("apply_async of a raising task: get raises the same error twice, error_callback gets it", function()
    local errs, calls = {}, 0
    local a = pool:apply_async(function(x) error("boom " .. x) end, { 7 },
      { callback = function() calls = calls + 1 end, error_callback = function(e) errs[#errs + 1] = e end })
    assert.is_true(a:wait(60))
    assert.is_true(a:ready())
    assert.is_false(a:successful())
    local ok, err = pcall(a.get, a)
    assert.is_false(ok)
    assert.are.equal("error", err.kind)
    assert.truthy(err.message:find("boom 7", 1, true), err.message)
    local ok2, err2 = pcall(a.get, a)
    assert.is_false(ok2)
    assert.are.equal(err, err2)
    assert.are.equal(1, #errs)
    assert.are.equal(err, errs[1])
    assert.are.equal(0, calls)
    -- the next results, in reused slots, are not failed
    local b = pool:apply_async(times10, { 8 })
    assert.are.equal(80, b:get(60))
    assert.is_true(b:successful())
  end)

  -- The error was lost before: get returned nothing, the callback ran with
  -- no arguments and error_callback never ran.
  it("apply_async with errors = \"collect\": get returns nil and the error, error_callback gets it", function()
    local inline = mpe.pool(0) -- the inline pool must agree
    for _, p in ipairs({ pool, inline }) do
      local calls, errs = {}, {}
      local a = p:apply_async(function() error("collected") end, {},
        { errors = "collect", callback = function(...) calls[#calls + 1] = pack(...) end,
          error_callback = function(e) errs[#errs + 1] = e end })
      assert.is_true(a:wait(60))
      assert.is_false(a:successful())
      for _ = 1, 2 do
        local v = pack(a:get())
        assert.are.equal(2, v.n)
        assert.is_nil(v[1])
        assert.are.equal("error", v[2].kind)
        assert.truthy(v[2].message:find("collected", 1, true), v[2].message)
      end
      assert.are.equal(0, #calls)
      assert.are.equal(1, #errs)
      assert.are.equal(select(2, a:get()), errs[1])
    end
    inline:close(); inline:join()
    local b = pool:apply_async(function(x) return x, x end, { 2 }, { errors = "collect" })
    check_values({ 2, 2 }, 2, pack(b:get(60)), "collect, no failure")
    assert.is_true(b:successful())
  end)

  it("a failure in one result does not show in others that share its slots over time", function()
    local as = {}
    for i = 1, 100 do
      as[i] = pool:apply_async(function(x)
        if x % 10 == 0 then error("tenth " .. x) end
        return x
      end, { i })
    end
    for i = 1, 100 do
      if i % 10 == 0 then
        local ok, err = pcall(as[i].get, as[i], 60)
        assert.is_false(ok)
        assert.truthy(err.message:find("tenth " .. i, 1, true), err.message)
      else
        assert.are.equal(i, as[i]:get(60))
        assert.is_true(as[i]:successful())
      end
    end
    as = nil
    gc()
    local again = {}
    for i = 1, 100 do again[i] = pool:apply_async(times10, { i }) end
    for i = 1, 100 do
      assert.are.equal(i * 10, again[i]:get(60))
      assert.is_true(again[i]:successful())
    end
  end)

  it("a result not yet ready: ready false, wait(0) false, successful raises; then all true", function()
    local ev = mpe.event()
    local hold = mpe.pool(1)
    local a = hold:apply_async(gated(ev), { 6 })
    assert.is_false(a:ready())
    assert.is_false(a:wait(0))
    assert.has_error(function() a:successful() end)
    ev:set()
    assert.is_true(a:wait(60))
    assert.is_true(a:ready())
    assert.is_true(a:successful())
    assert.are.equal(60, a:get())
    hold:close()
    hold:join()
  end)
end)

describe("async slots: lifetimes", function()
  it("a result outlives the last reference to its pool; the pool goes with its last result", function()
    local before = {}
    for _, pid in ipairs(pids.children()) do before[pid] = true end
    local p = mpe.pool(2)
    local ev = mpe.event()
    local a = p:apply_async(gated(ev), { 9 })
    local workers = {}
    for _, pid in ipairs(pids.children()) do
      if not before[pid] then workers[#workers + 1] = pid end
    end
    assert.are.equal(2, #workers)
    local b = p:apply_async(function() return mpe.current_process().pid end, {})
    p = nil
    gc()
    ev:set()
    assert.are.equal(90, a:get(60))
    assert.is_number(b:get(60))
    gc()
    assert.are.equal(90, a:get()) -- still there after more collections
    -- The results were the pool's last references: with them gone, its __gc ends the workers.
    a, b = nil, nil
    gc()
    gc()
    assert.are.same({}, pids.gone(workers))
  end)

  it("mpe.wait and mpe.as_completed over apply_async and map_async results in reused slots", function()
    local p = mpe.pool(2)
    for _ = 1, 3 do
      local list, want = {}, {}
      for i = 1, 20 do
        if i % 2 == 0 then
          list[i] = p:apply_async(times10, { i })
        else
          list[i] = p:map_async(times10, { i, i + 1 })
        end
      end
      local first = mpe.wait(list, { first = true, timeout = 60 })
      assert.is_true(#first >= 1)
      local done, pending = mpe.wait(list, { timeout = 60 })
      assert.are.equal(20, #done)
      assert.are.equal(0, #pending)
      local seen = 0
      for a in mpe.as_completed(list, 60) do
        seen = seen + 1
        want[a] = true
      end
      assert.are.equal(20, seen)
      for i = 1, 20 do
        assert.is_true(want[list[i]])
        if i % 2 == 0 then
          assert.are.equal(i * 10, list[i]:get())
        else
          assert.are.same({ i * 10, (i + 1) * 10, n = 2 }, list[i]:get())
        end
      end
      list = nil
      gc()
    end
    p:close()
    p:join()
  end)

  -- A script that ends with many unread results of a pool it never closed:
  -- the interpreter's close finalizes them and the pool in either order.
  local script = [[
local mpe = require "mpe"
local p = mpe.pool(2)
local pids = p:map(function() return mpe.current_process().pid end, mpe.range(1, 64), { chunksize = 1 })
local seen = {}
for _, pid in ipairs(pids) do if not seen[pid] then seen[pid] = true io.write("worker ", pid, "\n") end end
KEEP = {}
for i = 1, 3000 do KEEP[i] = p:apply_async(function(x) return x, { x } end, { i }) end
KEEP[#KEEP + 1] = p:map_async(function(x) return x end, mpe.range(1, 100))
assert(KEEP[10]:get(60) == 10)
for i = 1, 1000 do local _ = p:apply_async(function(x) return x end, { i }) end
POOL_GONE = p:apply_async(function() return 1 end, {})
p = nil
collectgarbage()
io.write("end\n")
io.stdout:flush()
]]
  local runners = { "mpe" }
  if not script_runner.SANITIZED then runners[2] = "lua" end
  for _, runner in ipairs(runners) do
    it("a script ending with live unread results of an unclosed pool exits cleanly (" .. runner .. ")", function()
      local out, status = script_runner.run(script_runner.command(runner), script, 120)
      assert.are.equal(0, status, out)
      assert.truthy(out:find("\nend\n", 1, true) or out:find("^end\n"), out)
      assert.is_nil(out:find("free()", 1, true), out)
      assert.is_nil(out:find("double free", 1, true), out)
      assert.is_nil(out:find("Sanitizer", 1, true), out)
      assert.is_nil(out:find("runtime error", 1, true), out)
      local workers = {}
      for pid in out:gmatch("worker (%d+)") do workers[#workers + 1] = tonumber(pid) end
      assert.is_true(#workers >= 1, out)
      assert.are.same({}, pids.gone(workers))
    end)
  end
end)

describe("async slots: routing", function()
  it("dropped results with callbacks stay routed: join runs each callback once, with its values", function()
    local p = mpe.pool(2)
    local got, calls = {}, 0
    for i = 1, 200 do
      local _ = p:apply_async(function(x) return x, nil, x * 10 end, { i },
        { callback = function(...)
          calls = calls + 1
          got[i] = pack(...)
        end })
    end
    local maps = {}
    local _ = p:map_async(times10, { 1, 2, 3 }, { callback = function(r) maps[#maps + 1] = r end })
    gc() -- routed objects are held by their pool until their results are in
    p:close()
    p:join()
    assert.are.equal(200, calls)
    for i = 1, 200 do check_values({ i, nil, i * 10 }, 3, got[i], "callback " .. i) end
    assert.are.equal(1, #maps)
    assert.are.same({ 10, 20, 30, n = 3 }, maps[1])
  end)

  it("results still running when join starts: join waits for each and runs its callback once", function()
    -- The first task's callback (run in the parent, inside join) lets the
    -- others go, so join certainly finds them routed and not complete.
    local p = mpe.pool(2)
    local ev = mpe.event()
    local got, calls = {}, 0
    local _ = p:apply_async(function() return "go" end, {}, { callback = function() ev:set() end })
    for i = 1, 20 do
      local _ = p:apply_async(gated(ev), { i }, { callback = function(v)
        calls = calls + 1
        got[i] = v
      end })
    end
    gc()
    p:close()
    p:join()
    assert.is_true(ev:is_set())
    assert.are.equal(20, calls)
    for i = 1, 20 do assert.are.equal(i * 10, got[i]) end
  end)

  it("work pending when the initializer fails: each result raises that failure, each error_callback once", function()
    local ev = mpe.event()
    local p = mpe.pool { workers = 2, initializer = function()
      ev:wait(60)
      error("init broke")
    end }
    local errs, calls = {}, 0
    local opts = { callback = function() calls = calls + 1 end,
                   error_callback = function(e) errs[#errs + 1] = e end }
    local as = {}
    for i = 1, 50 do as[i] = p:apply_async(times10, { i }, opts) end
    as[51] = p:map_async(times10, { 1, 2 }, opts)
    ev:set()
    for i = 1, 51 do
      local ok, err = pcall(as[i].get, as[i], 60)
      assert.is_false(ok)
      assert.truthy(tostring(err.message):find("pool initializer failed", 1, true), tostring(err.message))
      assert.is_false(as[i]:successful())
    end
    assert.are.equal(51, #errs)
    assert.are.equal(0, calls)
    p:terminate()
  end)

  it("a forked process collects the live results it inherited; both sides keep their own", function()
    local p = mpe.pool(2)
    local as = {}
    for i = 1, 100 do as[i] = p:apply_async(times10, { i }) end
    local n, sum = through.isolated(function()
      local count = #as
      as = nil
      gc() -- the copies are finalized in the child only
      local q = mpe.pool(2)
      local bs = {}
      for i = 1, 100 do bs[i] = q:apply_async(function(x) return x * 100 end, { i }) end
      local sum = total(bs, 100)
      q:close()
      q:join()
      return count, sum
    end, 90)
    assert.are.equal(100, n)
    assert.are.equal(505000, sum)
    assert.are.equal(50500, total(as, 100))
    p:close()
    p:join()
  end)
end)

describe("async slots: many live results", function()
  it("20,000 apply_async results alive at once, then every get: the right sum", function()
    local p = mpe.pool(2)
    local n = 20000
    local as = {}
    for i = 1, n do as[i] = p:apply_async(times10, { i }) end
    local sum, want = 0, 0
    for i = n, 1, -1 do
      sum = sum + as[i]:get(120)
      want = want + i * 10
    end
    assert.are.equal(want, sum)
    assert.are.equal(2000100000, sum) -- (10 * n * (n + 1) / 2)
    -- the values are each one's own, not just the right total
    for i = 1, n, 997 do assert.are.equal(i * 10, as[i]:get()) end
    as = nil
    gc()
    local again = {}
    for i = 1, 1000 do again[i] = p:apply_async(times10, { i }) end
    assert.are.equal(5005000, total(again, 1000))
    p:close()
    p:join()
  end)
end)
