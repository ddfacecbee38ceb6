-- inline_spec.lua -- the inline pool (mpe.pool(0), mpe.pool{workers = 0},
-- MPE_WORKERS=0): every task in the calling process, in order, with the same
-- results, error objects, callbacks, errors = "collect", progress and inputs
-- as a worker pool, through every entry point (map, starmap, map_async,
-- starmap_async, imap, imap_unordered, apply, apply_async). Runs under lua5.4
-- with mpe.so, under `mpe run`, and under LuaJIT.
local mpe = require "mpe"

local MPE_BIN = os.getenv("MPE_BIN") or "build/mpe"
local LUA54 = _VERSION == "Lua 5.4" and math.type ~= nil

-- Every entry point as "run f over items, return results by index" (raises
-- the first failure). The star forms get each item as a one-argument table.
local function stars(items)
  local t = {}
  for i, v in ipairs(items) do t[i] = { v } end
  return t
end

local entries = {
  { "map", function(p, f, items, o) return p:map(f, items, o) end },
  { "starmap", function(p, f, items, o) return p:starmap(f, stars(items), o) end },
  { "map_async", function(p, f, items, o) return p:map_async(f, items, o):get() end },
  { "starmap_async", function(p, f, items, o) return p:starmap_async(f, stars(items), o):get() end },
  { "imap", function(p, f, items, o)
      local r = {}
      for i, v in p:imap(f, items, o) do r[i] = v end
      return r
    end },
  { "imap_unordered", function(p, f, items, o)
      local r = {}
      for i, v in p:imap_unordered(f, items, o) do r[i] = v end
      return r
    end },
  { "apply", function(p, f, items)
      local r = {}
      for i, v in ipairs(items) do r[i] = p:apply(f, v) end
      return r
    end },
  { "apply_async", function(p, f, items)
      local as, r = {}, {}
      for i, v in ipairs(items) do as[i] = p:apply_async(f, { v }) end
      for i, a in ipairs(as) do r[i] = a:get() end
      return r
    end },
}

local function failing(x)
  if x == 3 then error("boom at " .. x) end
  return x * 10
end

describe("inline pool", function()
  local real, inline
  setup(function()
    real = mpe.pool(2)
    inline = mpe.pool(0)
  end)
  teardown(function()
    real:terminate()
    inline:terminate()
  end)

  it("is made by mpe.pool(0) and mpe.pool{workers = 0}, and reports 0 workers", function()
    local p = mpe.pool{ workers = 0 }
    assert.are.equal(0, p.workers)
    assert.are.equal(0, inline.workers)
    assert.are.equal(0, p.started)
    assert.are.equal("open", p.state)
    assert.truthy(tostring(p):find("^mpe.Pool"))
    p:close()
    assert.are.equal("closed", p.state)
    p:join()
    assert.are.equal("joined", p.state)
  end)

  it("is what MPE_WORKERS=0 gives a pool created without a size", function()
    local f = os.tmpname()
    local h = assert(io.open(f, "w"))
    h:write([[
      local mpe = require "mpe"
      local p = mpe.pool()
      local me = mpe.current_process().pid
      local r = p:map(function(x) return mpe.current_process().pid end, {1, 2})
      print(p.workers, r[1] == me and r[2] == me, mpe.pool(1).workers)
    ]])
    h:close()
    local pipe = io.popen("MPE_WORKERS=0 " .. MPE_BIN .. " run " .. f .. " 2>&1; echo status=$?")
    local out = pipe:read("*a")
    pipe:close()
    os.remove(f)
    assert.are.equal("0\ttrue\t1\nstatus=0\n", out)
  end)

  for _, e in ipairs(entries) do
    local name, run = e[1], e[2]
    describe(name, function()
      it("gives the worker pool's results", function()
        local f = function(x) return x * x end
        local items = { 1, 2, 3, 4, 5 }
        local want = run(real, f, items)
        local got = run(inline, f, items)
        for i = 1, 5 do assert.are.equal(want[i], got[i]) end
        assert.are.equal(25, got[5])
      end)

      it("runs every task in the caller, in order", function()
        local seen, me = {}, mpe.current_process().pid
        run(inline, function(x)
          seen[#seen + 1] = { x, mpe.current_process().pid }
          return x
        end, { 4, 5, 6, 7 })
        assert.are.equal(4, #seen)
        for i = 1, 4 do
          assert.are.equal(i + 3, seen[i][1])
          assert.are.equal(me, seen[i][2])
        end
      end)

      it("raises the worker pool's error object: kind, index, message, traceback", function()
        local items = { 1, 2, 3, 4 }
        local ok1, want = pcall(run, real, failing, items)
        local ok2, got = pcall(run, inline, failing, items)
        assert.is_false(ok1)
        assert.is_false(ok2)
        assert.are.equal("table", type(got))
        assert.are.equal(want.kind, got.kind)
        assert.are.equal("error", got.kind)
        assert.are.equal(want.index, got.index)
        if name:match("^apply") then assert.is_nil(got.index) else assert.are.equal(3, got.index) end
        assert.are.equal(want.message, got.message)
        assert.truthy(got.message:find("inline_spec.lua:%d+: boom at 3$"), got.message)
        assert.truthy(got.traceback:find("inline_spec.lua"), got.traceback)
        assert.are.equal(mpe.current_process().pid, got.pid)
        assert.truthy(tostring(got):find("^mpe: .*boom at 3"), tostring(got))
        -- the pool stays usable
        assert.are.equal(4, run(inline, function(x) return x * 2 end, { 2 })[1])
      end)

      it("stops at the first failure: later items do not run", function()
        if name == "apply_async" or name == "apply" then
          return -- one task per call: nothing after it belongs to the same call
        end
        local ran = {}
        pcall(run, inline, function(x)
          ran[#ran + 1] = x
          if x == 2 then error("stop") end
          return x
        end, { 1, 2, 3, 4 })
        assert.are.same({ 1, 2 }, ran)
      end)

      it("gives tasks copies: a task that changes its argument leaves the caller's table alone", function()
        local items = { { v = 1 }, { v = 2 } }
        local got = run(inline, function(t)
          t.v = t.v + 100
          return t.v
        end, items)
        assert.are.equal(101, got[1])
        assert.are.equal(102, got[2])
        assert.are.equal(1, items[1].v)
        assert.are.equal(2, items[2].v)
      end)

      it("gives the caller copies of results", function()
        local keep = { v = 1 }
        local got = run(inline, function() return keep end, { 1 })
        got[1].v = 2
        assert.are.equal(1, keep.v)
      end)

      it("raises at a result that cannot be sent, as an item failure", function()
        local ok, err = pcall(run, inline, function() return coroutine.create(print) end, { 1 })
        local ok2, want = pcall(run, real, function() return coroutine.create(print) end, { 1 })
        assert.is_false(ok)
        assert.is_false(ok2)
        assert.are.equal(want.kind, err.kind)
        assert.are.equal(want.message, err.message)
      end)

      it("refuses a function that cannot be sent, with the worker pool's message", function()
        local co = coroutine.create(print)
        local f = function() return co end
        local _, want = pcall(run, real, f, { 1 })
        local _, got = pcall(run, inline, f, { 1 })
        -- the same message; the worker pool's has the caller's position in front
        local body = tostring(want):gsub("^[^\n]-:%d+: (mpe: )", "%1")
        assert.are.equal(body, tostring(got))
        assert.truthy(tostring(got):find("cannot send coroutine at upvalue 'co'", 1, true))
      end)
    end)
  end

  describe("errors = \"collect\"", function()
    it("map, starmap, map_async and starmap_async: nil slots and an index -> error table", function()
      local calls = {
        function(p) return p:map(failing, { 1, 2, 3, 4 }, { errors = "collect" }) end,
        function(p) return p:starmap(failing, stars{ 1, 2, 3, 4 }, { errors = "collect" }) end,
        function(p) return p:map_async(failing, { 1, 2, 3, 4 }, { errors = "collect" }):get() end,
        function(p) return p:starmap_async(failing, stars{ 1, 2, 3, 4 }, { errors = "collect" }):get() end,
      }
      for k, call in ipairs(calls) do
        local r, f = call(inline)
        local wr, wf = call(real)
        assert.are.equal(4, r.n, k)
        assert.are.same({ 10, 20, nil, 40 }, { r[1], r[2], r[3], r[4] })
        assert.are.equal(wr.n, r.n)
        assert.are.equal(wf[3].message, f[3].message)
        assert.are.equal(3, f[3].index)
        assert.is_nil(f[1])
      end
    end)

    it("imap and imap_unordered: index, nil, error at the failed item, and go on", function()
      for _, m in ipairs{ "imap", "imap_unordered" } do
        local got = {}
        for i, v, err in inline[m](inline, failing, { 1, 2, 3, 4 }, { errors = "collect" }) do
          got[#got + 1] = { i, v, err and err.index }
        end
        assert.are.same({ { 1, 10 }, { 2, 20 }, { 3, nil, 3 }, { 4, 40 } }, got)
      end
    end)
  end)

  describe("callbacks", function()
    it("map_async and starmap_async: callback(results) has run when the call returns", function()
      for _, m in ipairs{ "map_async", "starmap_async" } do
        local got
        local items = m == "map_async" and { 1, 2 } or stars{ 1, 2 }
        local a = inline[m](inline, function(x) return x + 1 end, items, { callback = function(r) got = r end })
        assert.are.same({ 2, 3, n = 2 }, got)
        assert.is_true(a:ready())
        assert.is_true(a:successful())
      end
    end)

    it("apply_async: callback(values...) and error_callback(err)", function()
      local vals, errv
      inline:apply_async(function(a, b) return a + b, a * b end, { 3, 4 },
        { callback = function(...) vals = { ... } end })
      assert.are.same({ 7, 12 }, vals)
      local a = inline:apply_async(failing, { 3 }, { error_callback = function(e) errv = e end })
      assert.are.equal("error", errv.kind)
      assert.truthy(errv.message:find("boom at 3"))
      assert.is_true(a:ready())
      assert.is_false(a:successful())
      local ok, err = pcall(a.get, a)
      assert.is_false(ok)
      assert.are.equal(errv, err)
    end)

    it("map_async: error_callback gets the first failure, as from a worker pool", function()
      local got, want
      inline:map_async(failing, { 1, 3 }, { error_callback = function(e) got = e end })
      real:map_async(failing, { 1, 3 }, { error_callback = function(e) want = e end }):wait(60)
      assert.are.equal(want.message, got.message)
      assert.are.equal(want.index, got.index)
    end)
  end)

  describe("inputs", function()
    it("mpe.range and iterator functions, through map, map_async, imap and imap_unordered", function()
      local function it3()
        local k = 0
        return function()
          k = k + 1
          if k <= 3 then return k end
        end
      end
      local sq = function(x) return x * x end
      assert.are.same({ 1, 4, 9, n = 3 }, inline:map(sq, mpe.range(1, 3)))
      assert.are.same({ 1, 4, 9, n = 3 }, inline:map(sq, it3()))
      assert.are.same({ 1, 4, 9, n = 3 }, inline:map_async(sq, mpe.range(1, 3)):get())
      assert.are.same({ 1, 4, 9, n = 3 }, inline:map_async(sq, it3()):get())
      for _, m in ipairs{ "imap", "imap_unordered" } do
        for _, src in ipairs{ mpe.range(1, 3), it3() } do
          local r = {}
          for i, v in inline[m](inline, sq, src) do r[i] = v end
          assert.are.same({ 1, 4, 9 }, r)
        end
      end
    end)

    it("starmap passes argument lists, n included", function()
      local r = inline:starmap(function(a, b, c) return tostring(a) .. tostring(b) .. tostring(c) end,
        { { 1, 2, 3 }, { 1, nil, 3, n = 3 } })
      assert.are.same({ "123", "1nil3", n = 2 }, r)
      local ok, err = pcall(inline.starmap, inline, print, { 1 })
      assert.is_false(ok)
      assert.truthy(tostring(err):find("mpe: starmap: item 1 must be a table of arguments, got number", 1, true))
    end)

    it("imap pulls items lazily: one item, one task per step", function()
      local pulled = 0
      local src = function()
        pulled = pulled + 1
        if pulled <= 100 then return pulled end
      end
      local n = 0
      for i, v in inline:imap(function(x) return x end, src) do
        n = n + 1
        assert.are.equal(n, pulled)
        if n == 3 then break end
      end
      assert.are.equal(3, pulled)
    end)

    it("checks every item before the first task runs (map family), as a worker pool encodes them", function()
      local ran = 0
      local ok, err = pcall(inline.map, inline, function() ran = ran + 1 end, { 1, coroutine.create(print) })
      assert.is_false(ok)
      assert.truthy(tostring(err):find("mpe: cannot send coroutine at item", 1, true))
      assert.are.equal(0, ran)
    end)

    it("an item that cannot be sent half way leaves the next calls working, shared objects included", function()
      local q = mpe.queue()
      local ok = pcall(inline.map, inline, print, { { q = q, bad = coroutine.create(print) } })
      assert.is_false(ok)
      local r = inline:map(function(t) t.q:put(t.v) return t.v end, { { q = q, v = 1 }, { q = q, v = 2 } })
      assert.are.same({ 1, 2, n = 2 }, r)
      assert.are.equal(1, q:get(5))
      assert.are.equal(2, q:get(5))
      -- a task that copies through its own inline pool, inside a copy-using call
      assert.are.same({ { 2, n = 1 }, n = 1 }, inline:map(function(x)
        return mpe.pool(0):map(function(y) return y * 2 end, x)
      end, { { 1 } }))
    end)

    it("empty inputs give empty results and run callbacks", function()
      local got
      assert.are.same({ n = 0 }, inline:map(print, {}))
      inline:map_async(print, {}, { callback = function(r) got = r end })
      assert.are.same({ n = 0 }, got)
      for _ in inline:imap(print, {}) do error("no items") end
    end)
  end)

  describe("progress", function()
    it("calls the bar's update as tasks finish, and once with final = true", function()
      local calls = {}
      local saved = package.loaded["mpe.progress"]
      package.loaded["mpe.progress"] = { update = function(s)
        calls[#calls + 1] = { done = s.done, total = s.total, final = s.final }
      end }
      local ok, err = pcall(function()
        inline:map(function(x) return x end, { 1, 2, 3 }, { progress = "force" })
        inline:map_async(function(x) return x end, { 1, 2 }, { progress = true }):get()
        for _ in inline:imap(function(x) return x end, { 1, 2 }, { progress = "force" }) do end
      end)
      package.loaded["mpe.progress"] = saved
      assert.is_true(ok, tostring(err))
      local finals = {}
      for _, c in ipairs(calls) do
        if c.final then finals[#finals + 1] = c end
      end
      assert.are.equal(3, #finals)
      assert.are.same({ done = 3, total = 3, final = true }, finals[1])
      assert.are.same({ done = 2, total = 2, final = true }, finals[2])
      assert.are.equal(2, finals[3].done)
    end)
  end)

  describe("options", function()
    it("runs the initializer once, in the caller, with initargs", function()
      local count = 0
      local p = mpe.pool{ workers = 0, initializer = function(a, b) count = count + 1 INLINE_SPEC_G = a + b end,
                          initargs = { 2, 3 } }
      assert.are.equal(1, count)
      assert.are.equal(5, p:apply(function() return INLINE_SPEC_G end))
      INLINE_SPEC_G = nil
    end)

    it("a failing initializer breaks the pool: every call raises its error", function()
      local p = mpe.pool{ workers = 0, initializer = function() error("no init") end }
      for _, call in ipairs{
        function() return p:map(print, { 1 }) end,
        function() return p:apply(print) end,
        function() return p:imap(print, { 1 }) end,
      } do
        local ok, err = pcall(call)
        assert.is_false(ok)
        assert.truthy(tostring(err):find("pool initializer failed: .*no init"), tostring(err))
      end
    end)

    it("accepts maxtasksperchild, timeout and retries, which cannot act in one process", function()
      local p = mpe.pool{ workers = 0, maxtasksperchild = 1, timeout = 0.01, retries = 2 }
      -- the timeout cannot stop a task in the caller: it runs to its end
      local r = p:map(function(x)
        local t0 = mpe.now()
        while mpe.now() - t0 < 0.05 do end
        return x
      end, { 1, 2 })
      assert.are.same({ 1, 2, n = 2 }, r)
    end)
  end)

  describe("lifecycle", function()
    it("a closed or terminated pool refuses work; join needs close first", function()
      local p = mpe.pool(0)
      assert.has_error(function() p:join() end, "mpe: pool:join: call pool:close() or pool:terminate() first")
      p:close()
      assert.has_error(function() p:map(print, {}) end, "mpe: pool:map: the pool is closed")
      p:join()
      local q = mpe.pool(0)
      q:terminate()
      assert.has_error(function() q:apply(print) end, "mpe: pool:apply: the pool is terminated")
    end)

    it("terminate during imap ends the loop with an error", function()
      local p = mpe.pool(0)
      local ok, err = pcall(function()
        for i in p:imap(function(x) return x end, { 1, 2, 3 }) do
          if i == 1 then p:terminate() end
        end
      end)
      assert.is_false(ok)
      assert.truthy(tostring(err):find("mpe: the pool was terminated during imap", 1, true))
    end)

    if LUA54 then
      it("<close> closes and joins on a normal exit, terminates on an error", function()
        local code = [[
          local mpe = ...
          local p
          do
            local pool <close> = mpe.pool(0)
            p = pool
          end
          local q
          pcall(function()
            local pool <close> = mpe.pool(0)
            q = pool
            error("x")
          end)
          return p.state, q.state
        ]]
        local a, b = assert(load(code))(mpe)
        assert.are.equal("joined", a)
        assert.are.equal("terminated", b)
      end)
    end

    it("a forked child cannot use its parent's inline pool", function()
      local p = mpe.pool(0)
      local pr = mpe.process(function()
        local ok, err = pcall(p.map, p, print, {})
        return ok, tostring(err)
      end)
      pr:start()
      local ok, msg = pr:result()
      assert.is_false(ok)
      assert.truthy(msg:find("this pool belongs to process", 1, true), msg)
    end)
  end)

  describe("async results", function()
    it("are ready at once; get and wait take a timeout; cancel returns false (the task ran)", function()
      local a = inline:apply_async(function() return 1, 2 end)
      assert.is_true(a:ready())
      assert.is_true(a:wait(0))
      assert.is_true(a:wait())
      assert.are.same({ 1, 2 }, { a:get(0) })
      assert.is_false(a:cancel())
      assert.are.same({ 1, 2 }, { a:get() })
    end)
  end)
end)

-- Used by the docs: the shape of an inline debugging run.
describe("inline pool under mpe run -j 0", function()
  it("runs the same script with its prints in task order", function()
    local f = os.tmpname()
    local h = assert(io.open(f, "w"))
    h:write([[
      local mpe = require "mpe"
      local pool = mpe.pool()
      local r = pool:map(function(x) print("task", x) return x * x end, {1, 2, 3})
      print(table.concat(r, ","))
    ]])
    h:close()
    local pipe = io.popen(MPE_BIN .. " run -j 0 " .. f .. " 2>&1; echo status=$?")
    local out = pipe:read("*a")
    pipe:close()
    os.remove(f)
    assert.are.equal("task\t1\ntask\t2\ntask\t3\n1,4,9\nstatus=0\n", out)
  end)
end)
