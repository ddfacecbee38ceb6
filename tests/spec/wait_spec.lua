-- wait_spec.lua -- waiting on many results (mpe.as_completed, mpe.wait) and
-- cancelling one (async:cancel), for the results of every entry point that
-- returns one (map_async, starmap_async, apply_async; map, starmap, imap,
-- imap_unordered and apply return values, not results), of worker pools and
-- inline pools, and for mpe.process objects. Order is forced with events,
-- never with sleeps. Runs under lua5.4 with mpe.so, under `mpe run`, and under LuaJIT.
local mpe = require "mpe"

-- The async entry points, each submitting one task that returns f(x).
local submitters = {
  { "apply_async", function(p, f, x, o) return p:apply_async(f, { x }, o) end,
    function(a) return a:get() end },
  { "map_async", function(p, f, x, o) return p:map_async(f, { x }, o) end,
    function(a) return a:get()[1] end },
  { "starmap_async", function(p, f, x, o) return p:starmap_async(f, { { x } }, o) end,
    function(a) return a:get()[1] end },
}

local function collect(iter)
  local got = {}
  for a in iter do got[#got + 1] = a end
  return got
end

-- A task that blocks until ev is set, then returns x.
local function gated(ev)
  return function(x)
    ev:wait(60)
    return x
  end
end

-- Blocked tasks go to a pool of their own (hold), so that the other tasks
-- never wait behind them: a worker may have several tasks queued, and which
-- worker gets a task is the dispatcher's choice.
describe("mpe.as_completed", function()
  local pool, hold
  setup(function() pool, hold = mpe.pool(2), mpe.pool(1) end)
  teardown(function() pool:terminate() hold:terminate() end)

  for _, s in ipairs(submitters) do
    local name, submit, value = s[1], s[2], s[3]
    it(name .. ": yields each result once, as it completes", function()
      local ev = mpe.event()
      local slow = submit(hold, gated(ev), 1)
      local fast = submit(pool, function(x) return x end, 2)
      local it = mpe.as_completed({ slow, fast, fast })
      assert.are.equal(fast, it())     -- the slow one cannot finish before ev is set
      ev:set()
      assert.are.equal(slow, it())
      assert.is_nil(it())              -- fast was listed twice, yielded once
      assert.are.equal(1, value(slow))
      assert.are.equal(2, value(fast))
    end)

    it(name .. ": a timeout raises kind \"timeout\" and leaves the work going", function()
      local ev = mpe.event()
      local done = submit(pool, function(x) return x end, 1)
      done:wait(60)
      local slow = submit(hold, gated(ev), 2)
      local it = mpe.as_completed({ done, slow }, 0.05)
      assert.are.equal(done, it())
      local ok, err = pcall(it)
      assert.is_false(ok)
      assert.are.equal("timeout", err.kind)
      assert.are.equal("mpe: timeout", err.message:sub(1, 12))
      assert.truthy(err.message:find("1 of 2 still pending", 1, true), err.message)
      ev:set()
      assert.are.equal(2, value(slow))
    end)

    it(name .. ": a failed result is done too; its get raises", function()
      local a = submit(pool, function() error("bad") end, 1)
      assert.are.same({ a }, collect(mpe.as_completed({ a })))
      assert.is_false(a:successful())
      assert.has_error(function() a:get() end)
    end)

    it(name .. ": inline pool results are done at once, in input order", function()
      local inline = mpe.pool(0)
      local a = submit(inline, function(x) return x end, 1)
      local b = submit(inline, function(x) return x end, 2)
      assert.are.same({ a, b }, collect(mpe.as_completed({ a, b })))
      assert.are.equal(2, value(b))
    end)
  end

  it("results done before the call come first, in input order", function()
    local a = pool:apply_async(function() return 1 end)
    local b = pool:apply_async(function() return 2 end)
    a:wait(60)
    b:wait(60)
    assert.are.same({ b, a }, collect(mpe.as_completed({ b, a })))
  end)

  it("an empty list yields nothing", function()
    assert.are.same({}, collect(mpe.as_completed({})))
  end)

  it("mixes several pools, inline results and processes", function()
    local other = mpe.pool(1)
    local ev = mpe.event()
    local inline = mpe.pool(0):apply_async(function() return "inline" end)
    local a = pool:apply_async(gated(ev), { "a" })
    local b = other:apply_async(function() return "b" end)
    local pr = mpe.process(function() ev:wait(60) return "p" end)
    pr:start()
    local it = mpe.as_completed({ a, inline, pr, b })
    local first2 = { it(), it() }
    -- inline is done from the start; b needs no event; a and pr wait for ev
    assert.are.equal(inline, first2[1])
    assert.are.equal(b, first2[2])
    ev:set()
    local rest = { it(), it() }
    assert.is_nil(it())
    assert.truthy((rest[1] == a and rest[2] == pr) or (rest[1] == pr and rest[2] == a))
    assert.are.equal("p", pr:result())
    assert.are.equal("a", a:get())
    other:close()
    other:join()
  end)

  it("a result whose pool was terminated counts as done; its get raises", function()
    local p = mpe.pool(1)
    local ev = mpe.event()
    local a = p:apply_async(gated(ev), { 1 })
    p:terminate()
    assert.are.same({ a }, collect(mpe.as_completed({ a }, 30)))
    assert.has_error(function() a:get() end, "mpe: the pool was terminated before this work finished")
  end)
end)

describe("mpe.wait", function()
  local pool, hold
  setup(function() pool, hold = mpe.pool(2), mpe.pool(1) end)
  teardown(function() pool:terminate() hold:terminate() end)

  for _, s in ipairs(submitters) do
    local name, submit, value = s[1], s[2], s[3]
    it(name .. ": all completed (default): done in input order, nothing pending", function()
      local as = {}
      for i = 1, 4 do as[i] = submit(pool, function(x) return x end, i) end
      local done, pending = mpe.wait(as)
      assert.are.same(as, done)
      assert.are.same({}, pending)
      assert.are.equal(4, value(as[4]))
    end)

    it(name .. ": first = true returns at the first completed", function()
      local ev = mpe.event()
      local slow = submit(hold, gated(ev), 1)
      local fast = submit(pool, function(x) return x end, 2)
      local done, pending = mpe.wait({ slow, fast }, { first = true })
      assert.are.same({ fast }, done)
      assert.are.same({ slow }, pending)
      ev:set()
      done, pending = mpe.wait({ slow, fast }, { return_when = "FIRST_COMPLETED" })
      assert.are.equal(2, #done + #pending)
      assert.is_true(#done >= 1)
      assert.are.equal(1, value(slow))
    end)

    it(name .. ": FIRST_EXCEPTION returns at the first failure", function()
      local ev = mpe.event()
      local slow = submit(hold, gated(ev), 1)
      local bad = submit(pool, function() error("bad") end, 2)
      local done, pending = mpe.wait({ slow, bad }, { return_when = "FIRST_EXCEPTION" })
      assert.are.same({ bad }, done)
      assert.are.same({ slow }, pending)
      ev:set()
      done, pending = mpe.wait({ slow }, { return_when = "FIRST_EXCEPTION" })
      assert.are.same({ slow }, done) -- no failure: it waits for all
    end)

    it(name .. ": a timeout returns what is done, never raises", function()
      local ev = mpe.event()
      local slow = submit(hold, gated(ev), 1)
      local done, pending = mpe.wait({ slow }, { timeout = 0.05 })
      assert.are.same({}, done)
      assert.are.same({ slow }, pending)
      ev:set()
      done = mpe.wait({ slow }, { timeout = 60 })
      assert.are.same({ slow }, done)
    end)
  end

  it("waits for processes: done when exited; exitcode ~= 0 is a failure", function()
    local ev = mpe.event()
    local ok = mpe.process(function() return 1 end)
    local bad = mpe.process(function() error("fails") end)
    local held = mpe.process(function() ev:wait(60) end)
    ok:start()
    bad:start()
    held:start()
    local done1, pending1 = mpe.wait({ held, ok, bad }, { return_when = "FIRST_EXCEPTION" })
    ev:set() -- before any assertion, so that a failing one leaves no child waiting
    -- bad failed: wait returned with it done; held cannot be done before ev (ok may be either)
    local where = {}
    for _, p in ipairs(done1) do where[p] = "done" end
    for _, p in ipairs(pending1) do where[p] = "pending" end
    assert.are.equal("done", where[bad])
    assert.are.equal("pending", where[held])
    assert.truthy(where[ok])
    local done, pending = mpe.wait({ held, ok, bad })
    assert.are.same({ held, ok, bad }, done)
    assert.are.same({}, pending)
    assert.are_not.equal(0, bad.exitcode)
    assert.has_error(function() bad:result() end)
  end)
end)

describe("async:cancel", function()
  -- A one-worker pool whose worker is held by a task until ev is set, with
  -- 300 more tasks queued behind it: the dispatcher hands a worker at most
  -- MAX_INFLIGHT (256) chunks and about 8 ms of estimated work (1 ms an item
  -- while unknown), so work submitted after them is certainly not handed out
  -- until ev is set.
  local function held_pool()
    local p = mpe.pool(1)
    local ev = mpe.event()
    local head = p:apply_async(gated(ev), { "head" })
    local fill = {}
    for i = 1, 300 do fill[i] = p:apply_async(function(x) return x end, { i }) end
    return p, ev, head, fill
  end

  for _, s in ipairs(submitters) do
    local name, submit, value = s[1], s[2], s[3]
    it(name .. ": withdraws work no worker started; get raises kind \"cancelled\"", function()
      local p, ev, head, fill = held_pool()
      local calls, errs = 0, {}
      local a = submit(p, function(x) return x end, 7,
        { callback = function() calls = calls + 1 end, error_callback = function(e) errs[#errs + 1] = e end })
      assert.is_true(a:cancel())
      assert.is_true(a:ready())
      assert.is_false(a:successful())
      assert.is_true(a:wait(0))
      local ok, err = pcall(a.get, a)
      assert.is_false(ok)
      assert.are.equal("cancelled", err.kind)
      assert.are.equal("mpe: cancelled", err.message:sub(1, 14))
      assert.truthy(tostring(err):find("^mpe: cancelled"))
      -- error_callback ran once, with that error, when cancel returned; callback never
      assert.are.equal(1, #errs)
      assert.are.equal(err, errs[1])
      assert.is_false(a:cancel()) -- once only
      assert.are.same({ a }, collect(mpe.as_completed({ a })))
      ev:set()
      assert.are.equal("head", head:get(60))
      assert.are.equal(300, fill[300]:get(60))
      -- the pool goes on; the cancelled work never ran; join does not wait for it
      assert.are.equal(5, p:apply(function(x) return x end, 5))
      p:close()
      p:join()
      assert.are.equal(0, calls)
      assert.are.equal(1, #errs)
      assert.has_error(function() value(a) end)
    end)

    it(name .. ": returns false once the work started or finished, and changes nothing", function()
      local ev, started = mpe.event(), mpe.event()
      local p = mpe.pool(1)
      local running = submit(p, function(x)
        started:set()
        ev:wait(60)
        return x
      end, 1)
      assert.is_true(started:wait(60))
      assert.is_false(running:cancel())
      ev:set()
      assert.are.equal(1, value(running))
      assert.is_false(running:cancel())
      assert.is_true(running:successful())
      assert.are.equal(1, value(running))
      p:close()
      p:join()
    end)

    it(name .. ": inline results have run already: cancel is false", function()
      local inline = mpe.pool(0)
      local a = submit(inline, function(x) return x end, 3)
      assert.is_false(a:cancel())
      assert.are.equal(3, value(a))
    end)
  end

  it("a result of a terminated pool cannot be cancelled", function()
    local p, ev, head = held_pool()
    local a = p:apply_async(function() return 1 end)
    p:terminate()
    assert.is_false(a:cancel())
    ev:set()
    assert.has_error(function() head:get() end)
  end)
end)
