-- faults_spec.lua -- fault injection: pool workers that exit, are killed from
-- outside, segfault, abort, run out of memory, die between items, write
-- garbage into their channel, raise odd error values, hang in C, die holding
-- a lock or reading a queue; callbacks and initializers that fail; pools
-- after fork, side by side and nested. Each case asserts the failure's kind
-- and that the pool then completes a fresh map; after each case no child of
-- this process is left (no orphan, no zombie).
-- The cases that need a separate parent process or signals to a whole run are
-- in tests/cli/faults.sh. Needs tests/faultlib.c (build/tests/faultlib.so on
-- LUA_CPATH, as ctest sets it). Every wait is bounded: a regression fails the
-- case instead of hanging the suite. No timing is asserted.
local mpe = require "mpe"
local fl = require "faultlib"

-- Sanitizer builds: ASan's SEGV handler and its allocator turn a segfault and
-- an out-of-memory into "exited with status 1" (still kind "crash").
local SANITIZED = os.getenv("MPE_SANITIZE") == "1"
local SELF = mpe.current_process().pid

-- ---- helpers ----------------------------------------------------------------------

-- The pids of this process's children; a process that exists and is not a zombie.
local pids = require "pids"
local children, running = pids.children, pids.running

-- Poll pred() for up to `seconds` (a generous bound, never a timing
-- assertion: the condition normally holds within milliseconds).
local function eventually(pred, seconds)
  local deadline = mpe.now() + (seconds or 5)
  repeat
    if pred() then return true end
    os.execute("sleep 0.02")
  until mpe.now() > deadline
  return pred()
end

-- Wait for an async result with a bound; on expiry terminate the pool (so
-- nothing keeps running) and fail the case.
local function bounded_get(pool, a, seconds)
  if not a:wait(seconds or 30) then
    pool:terminate()
    error("the work did not complete within " .. (seconds or 30) .. " s", 2)
  end
  return pcall(a.get, a)
end

-- The single failure in an errors table: its index and error object.
local function only_failure(errs)
  local n, idx = 0, nil
  for i in pairs(errs) do
    n = n + 1
    idx = i
  end
  assert.are.equal(1, n, "expected exactly one failure")
  return idx, errs[idx]
end

-- pool:map with a bound: after a fault, a map that never ends must fail
-- the case, not stall the suite until the runner's 270 s SIGINT.
local function map(pool, fn, items, opts)
  local a = pool:map_async(fn, items, opts)
  if not a:wait(60) then
    pool:terminate()
    error("the map did not complete within 60 s", 2)
  end
  return a:get()
end

-- The pool completes a fresh map correctly.
local function fresh_map(pool)
  local r = map(pool, function(x) return x * 3 end, mpe.range(1, 200))
  assert.are.equal(200, r.n)
  for i = 1, 200 do assert.are.equal(3 * i, r[i]) end
end

-- Map fn over 1..n (chunks of 1) collecting failures, bounded.
local function collect(pool, fn, n, seconds)
  local a = pool:map_async(fn, mpe.range(1, n or 6), {errors = "collect", chunksize = 1})
  if not a:wait(seconds or 30) then
    pool:terminate()
    error("the map did not complete within " .. (seconds or 30) .. " s", 2)
  end
  return a:get()
end

-- os.execute's success under Lua 5.4 (true) and LuaJIT (0).
local function sh(cmd)
  local r = os.execute(cmd)
  return r == true or r == 0
end

-- Globals travel as the worker's own (inherited at fork), never encoded:
-- the way to hand a worker an object that cannot be sent.
local setg = load("FAULTS_SPEC_GLOBAL = ...")
local getg = load("return FAULTS_SPEC_GLOBAL")

-- ---- cases ------------------------------------------------------------------------

describe("fault injection:", function()
  local pool
  local before

  before_each(function()
    before = {}
    for _, c in ipairs(children()) do before[c] = true end
    pool = mpe.pool(2)
  end)

  after_each(function()
    if pool then pool:terminate() end
    pool = nil
    collectgarbage()
    collectgarbage()
    -- No child of ours is left: workers of every pool the case made are reaped.
    local left
    local gone = eventually(function()
      left = {}
      for _, c in ipairs(children()) do
        if not before[c] then left[#left + 1] = c end
      end
      return #left == 0
    end, 5)
    assert.is_true(gone, "children left behind: " .. table.concat(left or {}, " "))
  end)

  describe("a worker that dies", function()
    it("by os.exit(n) fails that item with kind crash naming the status", function()
      local r, errs = collect(pool, function(x)
        if x == 4 then os.exit(5) end
        return x
      end)
      local i, e = only_failure(errs)
      assert.are.equal(4, i)
      assert.are.equal("crash", e.kind)
      assert.are.equal(4, e.index)
      assert.are.equal("worker died: exited with status 5", e.message)
      assert.is_true(e.pid > 0 and e.pid ~= SELF)
      assert.is_true(eventually(function() return not running(e.pid) end))
      for _, k in ipairs{1, 2, 3, 5, 6} do assert.are.equal(k, r[k]) end
      fresh_map(pool)
    end)

    it("by os.exit(0, true), closing its Lua state, leaves the inherited pool and shared objects intact", function()
      pool:terminate()
      local arr = mpe.array("int32", 4)
      local lock = mpe.lock()
      local q = mpe.queue()
      local d = mpe.dict()
      pool = mpe.pool(2)
      -- Closing the state runs every __gc in the worker: of its copy of the
      -- pool, the array, the lock, the queue and the dict.
      local r, errs = collect(pool, function(x)
        arr[x] = x
        if x == 2 then os.exit(0, true) end
        return x
      end, 4)
      local i, e = only_failure(errs)
      assert.are.equal(2, i)
      assert.are.equal("crash", e.kind)
      assert.are.equal("worker died: exited with status 0", e.message)
      assert.are.same({1, 2, 3, 4}, arr:totable())
      assert.is_true(lock:acquire(5))
      lock:release()
      q:put("still here")
      assert.are.equal("still here", q:get(5))
      d:set("k", "v")
      assert.are.equal("v", d:get("k"))
      local s = map(pool, function(x) return arr[x] * 10 end, {1, 2, 3, 4})
      assert.are.same({10, 20, 30, 40, n = 4}, s)
      fresh_map(pool)
    end)

    it("by SIGKILL from another process fails its item with kind crash naming SIGKILL", function()
      local pidv = mpe.value("int64", 0)
      local never = mpe.event()
      local a = pool:map_async(function(x)
        if x == 2 then
          pidv:set(mpe.current_process().pid)
          never:wait(60) -- killed while waiting here
        end
        return x
      end, mpe.range(1, 4), {chunksize = 1})
      assert.is_true(eventually(function() return pidv:get() ~= 0 end, 30), "item 2 never started")
      local victim = pidv:get()
      -- `kill` is another process: the parent does not send the signal itself.
      assert.is_true(sh("kill -KILL " .. victim), "kill failed")
      local ok, e = bounded_get(pool, a)
      assert.is_false(ok)
      assert.are.equal("crash", e.kind)
      assert.are.equal(2, e.index)
      assert.are.equal(victim, e.pid)
      assert.are.equal("worker died: killed by signal 9 (SIGKILL)", e.message)
      assert.truthy(tostring(e):find("^mpe: item 2 failed in worker %d+ %(pid " .. victim .. "%)"))
      assert.is_true(eventually(function() return not running(victim) end))
      fresh_map(pool)
    end)

    it("by a segfault in C code fails its item with kind crash", function()
      local r, errs = collect(pool, function(x)
        if x == 3 then fl.segv() end
        return x
      end)
      local i, e = only_failure(errs)
      assert.are.equal(3, i)
      assert.are.equal("crash", e.kind)
      if SANITIZED then -- ASan's handler reports the fault and exits with 1
        assert.are.equal("worker died: exited with status 1", e.message)
      else
        assert.are.equal("worker died: killed by signal 11 (SIGSEGV)", e.message)
      end
      for _, k in ipairs{1, 2, 4, 5, 6} do assert.are.equal(k, r[k]) end
      fresh_map(pool)
    end)

    it("by abort() fails its item with kind crash naming SIGABRT", function()
      local r, errs = collect(pool, function(x)
        if x == 5 then fl.abort() end
        return x
      end)
      local i, e = only_failure(errs)
      assert.are.equal(5, i)
      assert.are.equal("crash", e.kind)
      assert.are.equal("worker died: killed by signal 6 (SIGABRT)", e.message)
      fresh_map(pool)
    end)

    it("out of memory (RLIMIT_AS) fails its item with kind error 'not enough memory'", function()
      -- The worker limits its own address space to what it uses plus 64 MB,
      -- then asks Lua for 256 MB. Lua's allocator gets NULL and raises
      -- LUA_ERRMEM, which is an error, not a crash: the worker lives on.
      -- Under ASan the sanitizer's allocator aborts the worker instead.
      local r, errs = collect(pool, function(x)
        if x == 3 then
          assert(fl.limit_as(fl.vmsize() + 64 * 1024 * 1024))
          local s = string.rep("x", 256 * 1024 * 1024)
          return #s
        end
        return x
      end)
      local i, e = only_failure(errs)
      assert.are.equal(3, i)
      if SANITIZED then
        assert.are.equal("crash", e.kind)
      else
        assert.are.equal("error", e.kind)
        assert.truthy(e.message:find("not enough memory", 1, true), e.message)
      end
      for _, k in ipairs{1, 2, 4, 5, 6} do assert.are.equal(k, r[k]) end
      -- The limited worker goes on with small tasks; lift the limit everywhere.
      map(pool, function() fl.limit_as(nil) end, mpe.range(1, 20), {chunksize = 1})
      fresh_map(pool)
    end)

    it("out of memory while sending its result fails that item with kind error", function()
      -- The result (a 40 MB string) exists; the buffer to send it cannot grow.
      local r, errs = collect(pool, function(x)
        if x == 2 then
          local s = string.rep("y", 40 * 1024 * 1024)
          assert(fl.limit_as(fl.vmsize() + 8 * 1024 * 1024))
          return s
        end
        return x
      end, 4)
      local i, e = only_failure(errs)
      assert.are.equal(2, i)
      if SANITIZED then
        assert.are.equal("crash", e.kind)
      else
        assert.are.equal("error", e.kind)
        assert.truthy(e.message:find("^mpe: not enough memory for a %d+%-byte message"), e.message)
      end
      map(pool, function() fl.limit_as(nil) end, mpe.range(1, 20), {chunksize = 1})
      fresh_map(pool)
    end)

    -- A death that no running item explains: the culprit must fail (re-running
    -- it would kill every replacement the same way, for ever); other items
    -- of that worker come back with their results or as crashes (a finished
    -- item's result may have been lost with the worker), never hang.
    local function culprit_fails(r, errs, culprit, n)
      assert.is_table(errs[culprit], "item " .. culprit .. " did not fail")
      assert.are.equal("crash", errs[culprit].kind)
      for k = 1, n do
        if errs[k] then
          assert.are.equal("crash", errs[k].kind)
        else
          assert.are.equal(k, r[k])
        end
      end
    end

    it("between items (it closes its own channel) fails with kind crash, not the pool", function()
      -- The item returns normally; the worker then cannot send and exits.
      local r, errs = collect(pool, function(x)
        if x == 3 then
          for _, fd in ipairs(fl.sockets()) do fl.close(fd) end
        end
        return x
      end)
      culprit_fails(r, errs, 3, 6)
      fresh_map(pool)
    end)

    it("after writing garbage into its channel is stopped, and fails with kind crash", function()
      local r, errs = collect(pool, function(x)
        if x == 3 then
          for _, fd in ipairs(fl.sockets()) do fl.write(fd, string.rep("\255", 64)) end
        end
        return x
      end)
      culprit_fails(r, errs, 3, 6)
      fresh_map(pool)
    end)

    it("every time is given up after retries and fails with kind crash", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, retries = 2}
      local count = mpe.value("int64", 0)
      local r, errs = collect(pool, function(x)
        if x == 2 then
          count:add(1)
          -- _exit: under ASan, exit() in a replacement worker (forked after
          -- the dispatcher thread started) runs LeakSanitizer, which reports
          -- that thread's buffers and turns the status into 1.
          fl.exit(9)
        end
        return x
      end, 4)
      local i, e = only_failure(errs)
      assert.are.equal(2, i)
      assert.are.equal("crash", e.kind)
      assert.are.equal("worker died: exited with status 9", e.message)
      assert.are.equal(3, count:get()) -- the first run and two retries
      fresh_map(pool)
    end)

    it("with maxtasksperchild set is replaced and the rest of the map goes on", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, maxtasksperchild = 2}
      local r, errs = collect(pool, function(x)
        if x % 5 == 0 then os.exit(1) end
        return mpe.current_process().pid
      end, 20)
      local n = 0
      for k, e in pairs(errs) do
        assert.are.equal(0, k % 5)
        assert.are.equal("crash", e.kind)
        n = n + 1
      end
      assert.are.equal(4, n)
      for k = 1, 20 do
        if k % 5 ~= 0 then assert.is_number(r[k]) end
      end
      fresh_map(pool)
    end)
  end)

  describe("an error value", function()
    it("that is a table arrives as e.value with kind error", function()
      local r, errs = collect(pool, function(x)
        if x == 2 then error({code = 42, detail = {"a", "b"}}) end
        return x
      end, 3)
      local i, e = only_failure(errs)
      assert.are.equal(2, i)
      assert.are.equal("error", e.kind)
      assert.are.same({code = 42, detail = {"a", "b"}}, e.value)
      assert.are.equal("(error object is a table value)", e.message)
      fresh_map(pool)
    end)

    it("with __tostring gives the message; a registered metatable is relinked", function()
      pool:terminate()
      local E = {__tostring = function(self) return "E" .. self.code end}
      E.__index = E
      mpe.register("faults_spec.E", E)
      -- The worker must use its own (inherited, registered) E: a table
      -- captured as an upvalue travels as a copy, which is not registered.
      setg(E)
      pool = mpe.pool(2)
      setg(nil)
      local r, errs = collect(pool, function(x)
        if x == 2 then error(setmetatable({code = 7}, getg())) end
        return x
      end, 3)
      local _, e = only_failure(errs)
      assert.are.equal("error", e.kind)
      assert.are.equal("E7", e.message)
      assert.are.equal(E, getmetatable(e.value))
      assert.are.equal(7, e.value.code)
      local ok, raised = pcall(pool.map, pool, function(x) error(setmetatable({code = x}, getg())) end, {5})
      assert.is_false(ok)
      assert.are.equal(5, raised.value.code)
      assert.truthy(tostring(raised):find("^mpe: item 1 failed in worker %d+ %(pid %d+%): E5"))
      fresh_map(pool)
    end)

    it("that cannot be sent back keeps the failure and its message, without the value", function()
      local r, errs = collect(pool, function(x)
        if x == 2 then error({co = coroutine.create(print)}) end
        return x
      end, 3)
      local _, e = only_failure(errs)
      assert.are.equal("error", e.kind)
      assert.is_nil(e.value)
      assert.are.equal("(error object is a table value)", e.message)
      fresh_map(pool)
    end)

    it("nil or a boolean still fails the item with kind error", function()
      local r, errs = collect(pool, function(x)
        if x == 1 then error() end
        if x == 2 then error(false) end
        return x
      end, 3)
      assert.are.equal("error", errs[1].kind)
      assert.are.equal("(error object is a nil value)", errs[1].message)
      assert.are.equal("error", errs[2].kind)
      assert.are.equal(false, errs[2].value)
      assert.are.equal(3, r[3])
      fresh_map(pool)
    end)

    it("a result that cannot be sent fails that item with kind error naming the path", function()
      local r, errs = collect(pool, function(x)
        if x == 2 then return {ok = true, co = coroutine.create(print)} end
        return x
      end, 3)
      local _, e = only_failure(errs)
      assert.are.equal("error", e.kind)
      assert.truthy(e.message:find("cannot send coroutine at result", 1, true), e.message)
      fresh_map(pool)
    end)
  end)

  describe("an initializer", function()
    it("that raises fails every call with kind error; join raises it; terminate ends the pool", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, initializer = function() error({why = "no config"}) end}
      local ok, e = pcall(pool.map, pool, function(x) return x end, {1, 2})
      assert.is_false(ok)
      assert.are.equal("error", e.kind)
      assert.truthy(e.message:find("pool initializer failed", 1, true))
      local ok2, e2 = pcall(pool.apply, pool, function() return 1 end)
      assert.is_false(ok2)
      assert.are.equal("error", e2.kind)
      pool:close()
      assert.is_false(pcall(pool.join, pool))
      pool:terminate()
      assert.are.equal("terminated", pool.state)
      pool = mpe.pool(2)
      fresh_map(pool)
    end)

    -- Issue 10.7: the failure, once caught by pcall, is not raised again (with
    -- a second traceback) when the pool's <close> scope ends normally.
    it("that raises, caught by pcall in a <close> scope, is not raised again at the scope's end", function()
      if _VERSION ~= "Lua 5.4" then return end -- <close> is Lua 5.4's
      local scope = assert(load([[
        local mpe, call = ...
        local caught
        do
          local pool <close> = mpe.pool{workers = 1, initializer = function() error("init broke") end}
          local ok, e = pcall(call, pool)
          caught = not ok and e.kind == "error" and e.message:find("pool initializer failed", 1, true) ~= nil
        end
        return caught
      ]]))
      local f = function(x) return x end
      for name, call in pairs({
        map = function(p) return p:map(f, {1}) end,
        starmap = function(p) return p:starmap(f, {{1}}) end,
        map_async = function(p) return p:map_async(f, {1}):get(20) end,
        starmap_async = function(p) return p:starmap_async(f, {{1}}):get(20) end,
        apply = function(p) return p:apply(f, 1) end,
        apply_async = function(p) return p:apply_async(f, {1}):get(20) end,
        imap = function(p) for _ in p:imap(f, {1}) do end end,
        imap_unordered = function(p) for _ in p:imap_unordered(f, {1}) do end end,
      }) do
        local ok, caught = pcall(scope, mpe, call)
        assert.is_true(ok, name .. ": the scope's end raised: " .. tostring(caught))
        assert.is_true(caught, name)
      end
    end)

    it("whose worker exits fails the calls with kind crash instead of restarting workers for ever", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, initializer = function() os.exit(4) end}
      local a = pool:map_async(function(x) return x end, {1, 2})
      local ok, e = bounded_get(pool, a, 20)
      local started = pool.started
      pool:terminate()
      assert.is_false(ok)
      assert.are.equal("crash", e.kind)
      assert.truthy(tostring(e):find("initializer", 1, true), tostring(e))
      assert.is_true(started < 100, "workers started: " .. started)
      pool = mpe.pool(2)
      fresh_map(pool)
    end)
  end)

  describe("a callback that raises", function()
    it("raises out of the mpe call that ran it; the result stays available", function()
      local a = pool:apply_async(function(x) return x * 2 end, {21},
        {callback = function(v) error("callback saw " .. v) end})
      local ok, e = pcall(a.wait, a, 30)
      assert.is_false(ok)
      assert.truthy(tostring(e):find("callback saw 42", 1, true))
      assert.are.equal(42, a:get())
      assert.is_true(a:successful())
      fresh_map(pool)
    end)

    it("as error_callback raises its own error; get still raises the task's", function()
      local a = pool:map_async(function(x) error("task " .. x) end, {1},
        {error_callback = function(err) error("handler failed on " .. err.kind) end})
      local ok, e = pcall(a.wait, a, 30)
      assert.is_false(ok)
      assert.truthy(tostring(e):find("handler failed on error", 1, true))
      local ok2, e2 = pcall(a.get, a)
      assert.is_false(ok2)
      assert.are.equal("error", e2.kind)
      assert.truthy(e2.message:find("task 1", 1, true))
      fresh_map(pool)
    end)

    it("raises out of another job's map, which can be run again", function()
      -- One worker: the apply's result comes before the map's, so the map's
      -- wait is the mpe call that runs the callback.
      pool:terminate()
      pool = mpe.pool(1)
      local a = pool:apply_async(function() return 1 end, nil,
        {callback = function() error("stray callback") end})
      local ok, e = pcall(pool.map, pool, function(x) return x end, {1, 2})
      assert.is_false(ok)
      assert.truthy(tostring(e):find("stray callback", 1, true), tostring(e))
      assert.are.equal(1, a:get())
      assert.are.same({1, 2, n = 2}, map(pool, function(x) return x end, {1, 2}))
      fresh_map(pool)
    end)

    it("during join raises out of join; a second join completes", function()
      local got = {}
      pool:apply_async(function() return 1 end, nil, {callback = function() error("at join") end})
      pool:apply_async(function() return 2 end, nil, {callback = function(v) got[#got + 1] = v end})
      pool:close()
      -- Callbacks run at the latest when the pool is joined: join raises.
      local ok, e = pcall(pool.join, pool)
      assert.is_false(ok)
      assert.truthy(tostring(e):find("at join", 1, true), tostring(e))
      pool:join()
      assert.are.equal("joined", pool.state)
      assert.are.same({2}, got)
      pool = mpe.pool(2)
      fresh_map(pool)
    end)
  end)

  describe("a task that never returns", function()
    it("blocked in C with SIGTERM ignored is killed at the timeout: kind timeout", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, timeout = 0.5}
      local pidv = mpe.value("int64", 0)
      local r, errs = collect(pool, function(x)
        if x == 2 then
          pidv:set(mpe.current_process().pid)
          fl.ignore(fl.SIGTERM)
          fl.hang()
        end
        return x
      end, 4)
      local i, e = only_failure(errs)
      assert.are.equal(2, i)
      assert.are.equal("timeout", e.kind)
      assert.truthy(e.message:find("^mpe: timeout"))
      assert.are.equal(pidv:get(), e.pid)
      assert.is_true(eventually(function() return not running(e.pid) end))
      fresh_map(pool)
    end)

    it("in apply_async fails get with kind timeout (the pool's timeout, not get's)", function()
      pool:terminate()
      pool = mpe.pool{workers = 1, timeout = 1}
      local a = pool:apply_async(function() while true do end end, {})
      local ok, e = bounded_get(pool, a)
      assert.is_false(ok)
      assert.are.equal("timeout", e.kind)
      assert.are.equal(7, pool:apply(function(x) return x + 1 end, 6))
      fresh_map(pool)
    end)

    it("is retried after a timeout when retries allow, and succeeds the second time", function()
      pool:terminate()
      pool = mpe.pool{workers = 2, timeout = 0.5, retries = 1}
      local tries = mpe.value("int64", 0)
      local r, errs = collect(pool, function(x)
        if x == 2 and tries:add(1) == 1 then fl.hang() end
        return x * 10
      end, 3)
      assert.is_nil(next(errs))
      assert.are.same({10, 20, 30}, {r[1], r[2], r[3]})
      assert.are.equal(2, tries:get())
      fresh_map(pool)
    end)
  end)

  describe("a process that dies while using a shared object", function()
    it("holding a lock: the next acquire recovers it, raises naming the worker, then works", function()
      local lock = mpe.lock()
      local r, errs = collect(pool, function(x)
        if x == 1 then
          lock:acquire()
          os.exit(2)
        end
        return x
      end, 1)
      local _, e = only_failure(errs)
      assert.are.equal("crash", e.kind)
      local ok, msg = pcall(lock.acquire, lock, 10)
      assert.is_false(ok)
      assert.are.equal("mpe: lock owner died (pid " .. e.pid .. ")", tostring(msg))
      assert.is_true(lock:acquire(10))
      lock:release()
      -- Workers use it again.
      local n = map(pool, function(x) return lock:with(function() return x end) end, mpe.range(1, 50))
      assert.are.equal(50, n[50])
      fresh_map(pool)
    end)

    it("holding an rlock twice inside with(), killed at the pool timeout: recovered", function()
      pool:terminate()
      local rl = mpe.rlock()
      pool = mpe.pool{workers = 1, timeout = 0.5}
      local r, errs = collect(pool, function(x)
        rl:acquire()
        rl:with(function() while true do end end)
      end, 1)
      local _, e = only_failure(errs)
      assert.are.equal("timeout", e.kind)
      local ok, msg = pcall(rl.acquire, rl, 10)
      assert.is_false(ok)
      assert.are.equal("mpe: lock owner died (pid " .. e.pid .. ")", tostring(msg))
      assert.is_true(rl:acquire(10))
      rl:release()
      fresh_map(pool)
    end)

    it("inside dict:update: the update is not applied and the dict goes on", function()
      local d = mpe.dict()
      d:set("k", 1)
      local r, errs = collect(pool, function()
        d:update("k", function() os.exit(3) end)
      end, 1)
      local _, e = only_failure(errs)
      assert.are.equal("crash", e.kind)
      assert.are.equal(1, d:get("k"))
      assert.are.equal(2, d:update("k", function(v) return v + 1 end))
      map(pool, function() d:update("k", function(v) return v + 1 end) end, mpe.range(1, 100))
      assert.are.equal(102, d:get("k"))
      fresh_map(pool)
    end)

    it("reading 1 MB queue items when killed: no item duplicated, at most one lost, no descriptor left", function()
      local q = mpe.queue(4)
      local seen = mpe.array("int32", 400)
      local function fds()
        local h = io.popen("ls /proc/" .. SELF .. "/fd | wc -l")
        local n = tonumber(h:read("*a"))
        h:close()
        return n
      end
      collectgarbage()
      local fds0 = fds()
      local rounds, sent = 0, 0
      while sent < 400 and rounds < 8 do
        rounds = rounds + 1
        local reader = mpe.process(function()
          while true do
            local item = q:get(30)
            assert(#item.blob == 1024 * 1024 and item.blob:sub(1, 8) == string.format("%08d", item.i))
            seen:add(item.i, 1)
          end
        end)
        reader:start()
        -- Feed until the reader has taken some, then kill it at whatever
        -- point it is at: often inside a get of a spilled 1 MB item.
        local goal = sent + 30
        while sent < goal and sent < 400 do
          local i = sent + 1
          -- A full queue for 10 s means the reader died by itself: stop.
          if not pcall(q.put, q, {i = i, blob = string.format("%08d", i) .. string.rep("z", 1024 * 1024 - 8)}, 10) then
            break
          end
          sent = i
        end
        reader:kill()
        reader:join(30)
      end
      -- Drain what is left in the parent: every item whole.
      while true do
        local ok, item = pcall(q.get, q, 0)
        if not ok then break end
        assert.are.equal(1024 * 1024, #item.blob)
        seen:add(item.i, 1)
      end
      local lost, dup = 0, 0
      for i = 1, sent do
        local c = seen[i]
        if c == 0 then lost = lost + 1 elseif c > 1 then dup = dup + 1 end
      end
      assert.are.equal(0, dup)
      assert.is_true(lost <= rounds, lost .. " items lost in " .. rounds .. " kills")
      q:put("after")
      assert.are.equal("after", q:get(5))
      q:close()
      q = nil
      collectgarbage()
      collectgarbage()
      assert.is_true(fds() <= fds0, "descriptors: " .. fds0 .. " before, " .. fds() .. " after")
      fresh_map(pool)
    end)

    it("reading a pipe while the writer is blocked on a full pipe: send raises instead of hanging", function()
      local here, there = mpe.pipe()
      local never = mpe.event()
      local reader = mpe.process(function() never:wait(60) end) -- holds `there`, never reads
      reader:start()
      there:close()
      -- A 16 MB message does not fit the socket buffer: send blocks until the
      -- reader dies, then must raise. The kill comes from another process,
      -- before or during the send: either way the send raises.
      local killer = mpe.process(function()
        os.execute("sleep 0.3")
        os.execute("kill -KILL " .. reader.pid)
      end)
      killer:start()
      local ok, err = pcall(here.send, here, string.rep("p", 16 * 1024 * 1024))
      killer:join(30)
      reader:join(30)
      if ok then
        -- The first message may have gone whole into buffers; the next cannot.
        ok, err = pcall(here.send, here, string.rep("q", 16 * 1024 * 1024))
      end
      assert.is_false(ok)
      assert.truthy(tostring(err):find("other end is closed", 1, true), tostring(err))
      here:close()
      fresh_map(pool)
    end)
  end)

  describe("scheduling under faults", function()
    it("two items that wait for each other run at once on two idle workers (chunksize 1)", function()
      local b = mpe.barrier(2)
      local r, errs = collect(pool, function() return b:wait(10) end, 2)
      assert.is_nil(next(errs), "an item waited alone: " .. tostring(errs[1] or errs[2]))
      assert.are.same({1, 2}, {math.min(r[1], r[2]), math.max(r[1], r[2])})
      fresh_map(pool)
    end)
  end)

  describe("pools and fork", function()
    it("a pool used in a forked child raises 'a forked child cannot use it' for every method", function()
      -- The workers of a pool made after `other` inherit `other` by fork.
      pool:terminate()
      local other = mpe.pool(1)
      setg(other)
      pool = mpe.pool(2)
      setg(nil)
      local r = map(pool, function(name)
        local p = getg()
        local ok, e
        if name == "imap" then
          ok, e = pcall(function() for _ in p:imap(print, {1}) do end end)
        else
          ok, e = pcall(p[name], p, print, {1})
        end
        return tostring(ok) .. " " .. tostring(e)
      end, {"map", "map_async", "starmap", "apply", "apply_async", "imap", "imap_unordered",
            "close", "terminate", "join"})
      for i = 1, r.n do
        assert.truthy(r[i]:find("^false .*a forked child cannot use it"), r[i])
      end
      -- The children's copies were collected with their Lua states; the
      -- parent's pool is unharmed.
      assert.are.same({2, n = 1}, map(other, function(x) return x + 1 end, {1}))
      other:terminate()
      fresh_map(pool)
    end)

    it("an async result used in a forked child raises instead of waiting for ever", function()
      local a = pool:map_async(function(x) local t = os.time() + 1 while os.time() < t do end return x end, {1})
      local p = mpe.process(function()
        local ok, e = pcall(a.get, a)
        return ok, tostring(e)
      end)
      p:start()
      local finished = p:join(20)
      if not finished then p:kill() p:join() end
      assert.is_true(finished, "a:get() in a forked child hung")
      local ok, msg = p:result()
      assert.is_false(ok)
      assert.truthy(msg:find("a forked child cannot use it", 1, true), msg)
      assert.are.same({1, n = 1}, a:get())
      fresh_map(pool)
    end)

    it("two pools at once both work, interleaved", function()
      local other = mpe.pool(2)
      local a1 = pool:map_async(function(x) return x + 1 end, mpe.range(1, 500), {chunksize = 7})
      local b1 = other:map_async(function(x) return x * 2 end, mpe.range(1, 500), {chunksize = 5})
      local seen = 0
      for i, v in other:imap(function(x) return -x end, mpe.range(1, 100)) do
        assert.are.equal(-i, v)
        seen = seen + 1
      end
      local c1 = pool:apply_async(function(x) return x .. "!" end, {"p"})
      local a, b = a1:get(), b1:get()
      for i = 1, 500 do
        assert.are.equal(i + 1, a[i])
        assert.are.equal(i * 2, b[i])
      end
      assert.are.equal(100, seen)
      assert.are.equal("p!", c1:get())
      -- A failure in one pool leaves the other alone.
      local ok = pcall(other.map, other, function() os.exit(1) end, {1})
      assert.is_false(ok)
      fresh_map(pool)
      fresh_map(other)
      other:close()
      other:join()
    end)

    it("a pool inside a worker works, and its workers are gone afterwards", function()
      local r = map(pool, function(x)
        local inner = mpe.pool(2)
        local t = inner:map(function(y) return {y * 10, mpe.current_process().pid} end, {x, x + 1})
        inner:close()
        inner:join()
        return {t[1][1] + t[2][1], t[1][2], t[2][2]}
      end, {1, 2, 3})
      assert.are.same({30, 50, 70}, {r[1][1], r[2][1], r[3][1]})
      for k = 1, 3 do
        assert.is_true(eventually(function() return not running(r[k][2]) and not running(r[k][3]) end))
      end
      -- And its failures come back as the outer item's error.
      local ok, e = pcall(pool.map, pool, function()
        local inner = mpe.pool(1)
        return inner:map(function() error("inner boom") end, {1})
      end, {1})
      assert.is_false(ok)
      assert.are.equal("error", e.kind)
      assert.truthy(e.message:find("inner boom", 1, true))
      fresh_map(pool)
    end)
  end)
end)
