-- ipc_spec.lua -- mpe.queue, mpe.pipe and mpe.dict: every method, between real
-- processes (mpe.process and pool workers, objects made before and after the
-- pool started), blocking and timeouts, processes killed while using them, and
-- no descriptor or mapping left behind. Every wait is bounded.
local mpe = require "mpe"

local function spawn(fn, ...)
  local p = mpe.process(fn, ...)
  p:start()
  return p
end

local function finish(p)
  if not p:join(30) then
    p:kill()
    p:join()
    error("process did not finish within 30 s")
  end
  return p:result()
end

local function errmsg(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return tostring(err)
end

local function errobj(fn, ...)
  local ok, err = pcall(fn, ...)
  assert(not ok, "expected an error")
  return err
end

-- Open descriptors of this process, pipes aside (io.popen's own) and shm.c's
-- slabs aside (a dict's lock lives in a slab; slabs rotate as they fill, so
-- which ones are open depends on what else lives in them). slab_count()
-- counts those on their own.
local count_fds = require "fdcount" -- pipes aside, the fewest of three looks

local function fd_count()
  return count_fds("! -lname '*mpe-slab*'")
end

local function slab_count()
  return count_fds("-lname '*mpe-slab*'")
end

local function memfd_maps()
  local n = 0
  for line in io.lines("/proc/self/maps") do
    if line:find("memfd:mpe", 1, true) and not line:find("mpe-slab", 1, true) then n = n + 1 end
  end
  return n
end

-- Objects reachable only from finalized ones (a process's target capturing a
-- queue) need a collection per level: collect until nothing is left.
local function full_gc()
  for _ = 1, 5 do collectgarbage() end
end

local function with_pool(n, fn)
  local pool = mpe.pool(n)
  local ok, err = pcall(fn, pool)
  pool:terminate()
  assert(ok, err)
end

describe("mpe.queue", function()
  it("carries values of every kind, in order", function()
    local q = mpe.queue()
    local t = { 1, 2.5, "three", x = { y = true } }
    t.self = t
    local k = 10
    local function add(v) return v + k end
    local vals = { false, true, 0, -7, 1.5, 2 ^ 53, "bin\0ary", t, add }
    for i = 1, #vals do q:put(vals[i]) end
    q:put(nil)
    assert.equal(#vals + 1, q:qsize())
    assert.equal(false, q:get())
    assert.equal(true, q:get())
    assert.equal(0, q:get())
    local i = q:get()
    assert.equal(-7, i)
    if math.type then assert.equal("integer", math.type(i)) end
    local f = q:get()
    assert.equal(1.5, f)
    if math.type then assert.equal("float", math.type(f)) end
    assert.equal(2 ^ 53, q:get())
    assert.equal("bin\0ary", q:get())
    local t2 = q:get()
    assert.equal(t2, t2.self)
    assert.same({ y = true }, t2.x)
    assert.equal(12, q:get()(2))
    assert.is_nil(q:get(1))
    assert.is_true(q:empty())
    assert.equal(0, q:qsize())
  end)

  it("times out on get from an empty queue and put into a full one", function()
    local q = mpe.queue(2)
    local e = errobj(q.get, q, 0)
    assert.equal("timeout", e.kind)
    assert.truthy(tostring(e):find("^mpe: timeout: queue:get"))
    e = errobj(q.get, q, 0.05)
    assert.equal("timeout", e.kind)
    q:put(1)
    q:put(2)
    assert.is_false(q:empty())
    e = errobj(q.put, q, 3, 0.05)
    assert.equal("timeout", e.kind)
    assert.truthy(tostring(e):find("^mpe: timeout: queue:put"))
    assert.equal(2, q:qsize())
    assert.equal(1, q:get())
  end)

  it("blocks a put on a full queue until a process takes an item", function()
    local q = mpe.queue(1)
    q:put("first")
    local p = spawn(function() return q:get(10) end)
    q:put("second", 10) -- goes through once the child has taken "first"
    assert.equal("first", finish(p))
    assert.equal("second", q:get(1))
  end)

  it("blocks a get until a process puts", function()
    local q = mpe.queue()
    local go = mpe.event()
    local p = spawn(function() go:wait(10) q:put({ answer = 42 }) end)
    go:set()
    assert.equal(42, q:get(10).answer)
    finish(p)
  end)

  it("close: put raises everywhere, get drains then raises, sleepers wake", function()
    local q = mpe.queue()
    local started = mpe.event()
    local p = spawn(function()
      started:set()
      return pcall(q.get, q, 20)
    end)
    started:wait(10)
    local q2 = mpe.queue()
    q2:put("left")
    local closer = spawn(function() q2:close() q:close() end)
    finish(closer)
    local ok, err = finish(p)
    assert.is_false(ok)
    assert.equal("mpe: queue is closed", tostring(err))
    assert.equal("mpe: queue is closed", errmsg(q2.put, q2, 1))
    assert.equal("left", q2:get(1))
    assert.equal("mpe: queue is closed", errmsg(q2.get, q2, 1))
    assert.equal("mpe: queue is closed", errmsg(q2.get, q2))
  end)

  -- Issue 10.7: close discards nothing. Items queued before it are drained by
  -- every other handle (processes and pool workers, with and without a
  -- timeout); close returns how many were left, so a closer holding the last
  -- handle knows what it leaves behind.
  it("close: items queued before it are drained by other handles; it returns how many", function()
    local q = mpe.queue()
    for i = 1, 5 do q:put(i) end
    local gate, done = mpe.event(), mpe.event()
    -- A process takes two (without and with a timeout), a pool worker three.
    local p = spawn(function()
      gate:wait(20)
      local got = { q:get(), q:get(20) }
      done:wait(20)
      local ok, err = pcall(q.get, q, 1)
      return got, ok, tostring(err)
    end)
    local pool = mpe.pool(1)
    local w = pool:apply_async(function()
      gate:wait(20)
      local got = { q:get(20), q:get(20), q:get(20) }
      done:set()
      return got
    end, {})
    assert.equal(5, q:close())
    assert.equal(0, q:close()) -- already released
    gate:set()
    local got, ok, err = finish(p)
    local wgot = w:get(30)
    pool:close()
    pool:join()
    assert.is_false(ok)
    assert.equal("mpe: queue is closed", err)
    local all = {}
    for _, v in ipairs(got) do all[#all + 1] = v end
    for _, v in ipairs(wgot) do all[#all + 1] = v end
    table.sort(all)
    assert.same({ 1, 2, 3, 4, 5 }, all)
  end)

  it("raises on a closed handle; close and collection are idempotent", function()
    local q = mpe.queue()
    q:close()
    q:close()
    assert.equal("mpe: attempt to use a closed mpe.Queue", errmsg(q.put, q, 1))
    assert.equal("mpe: attempt to use a closed mpe.Queue", errmsg(q.get, q))
    assert.equal("mpe: attempt to use a closed mpe.Queue", errmsg(q.qsize, q))
    assert.truthy(tostring(q):find("closed", 1, true))
    assert.truthy(errmsg(mpe.encode, q):find("closed mpe.Queue", 1, true) or
                  errmsg(mpe.encode, q):find("mpe.Queue", 1, true))
    collectgarbage()
  end)

  it("checks its arguments", function()
    local q = mpe.queue()
    assert.equal("mpe: queue: argument 1 (maxsize) must be a non-negative integer or an option table, got -1",
                 errmsg(mpe.queue, -1))
    assert.truthy(errmsg(mpe.queue, "x"):find("got \"x\"", 1, true))
    assert.truthy(errmsg(mpe.queue, { maxsize = 1.5 }):find("option maxsize must be a non-negative integer", 1, true))
    assert.equal("mpe: queue: unknown option 'max_size' (options: maxsize, bytes)", errmsg(mpe.queue, { max_size = 10 }))
    assert.equal("mpe: queue:put: self must be an mpe.Queue (call methods with a colon), got number",
                 errmsg(q.put, 5))
    assert.equal("mpe: queue:put: argument 1 (the item) is missing", errmsg(q.put, q))
    assert.truthy(errmsg(q.get, q, "soon"):find("mpe: queue:get: argument 1 (timeout) must be a number", 1, true))
    assert.truthy(errmsg(q.get, q, -1):find("between 0 and 1e9", 1, true))
    assert.truthy(errmsg(q.put, q, coroutine.create(print)):find("cannot send coroutine", 1, true))
    assert.equal(0, q:qsize()) -- a failed encode puts nothing
    assert.truthy(tostring(q):find("^mpe%.Queue: "))
  end)

  it("takes any number of items before anyone reads (the buffer grows, then shrinks)", function()
    local q = mpe.queue { bytes = 4096 }
    for i = 1, 100000 do q:put({ i, "item" }) end
    assert.equal(100000, q:qsize())
    local p = spawn(function()
      local sum = 0
      for _ = 1, 100000 do sum = sum + q:get(10)[1] end
      return sum
    end)
    assert.equal(100000 * 100001 / 2, finish(p))
    assert.is_true(q:empty())
  end)

  it("is FIFO for each producer", function()
    local q = mpe.queue { maxsize = 100, bytes = 4096 }
    local function producer(id)
      return function()
        for i = 1, 2000 do q:put({ id, i }, 20) end
      end
    end
    local p1, p2 = spawn(producer(1)), spawn(producer(2))
    local next = { 1, 1 }
    for _ = 1, 4000 do
      local t = q:get(20)
      assert.equal(next[t[1]], t[2])
      next[t[1]] = t[2] + 1
    end
    finish(p1)
    finish(p2)
    assert.same({ 2001, 2001 }, next)
  end)

  it("carries a 10 MB item between processes", function()
    local q = mpe.queue()
    local p = spawn(function()
      local s = q:get(20)
      q:put(s:reverse())
      return #s
    end)
    local big = string.rep("0123456789", 1024 * 1024) .. "end"
    q:put(big)
    assert.equal(#big, finish(p))
    local back = q:get(20)
    assert.equal(#big, #back)
    assert.equal("dne9876543210", back:sub(1, 13))
  end)

  it("carries shared objects by reference: arrays, locks, queues, pipe ends, dicts", function()
    local q, inner = mpe.queue(), mpe.queue()
    local a, l, d = mpe.array("int64", 4), mpe.lock(), mpe.dict()
    local c1, c2 = mpe.pipe()
    local p = spawn(function()
      local t = q:get(20)
      t.a[2] = 99
      t.l:with(function() t.d:set("from", "child") end)
      t.inner:put("via inner")
      t.c:send("via pipe")
      return t.a[1]
    end)
    a[1] = 5
    q:put({ a = a, l = l, inner = inner, c = c2, d = d })
    assert.equal(5, finish(p))
    assert.equal(99, a[2])
    assert.equal("child", d:get("from"))
    assert.equal("via inner", inner:get(5))
    assert.equal("via pipe", c1:recv(5))
  end)

  it("works in processes: inherited, as an argument, as an upvalue", function()
    local q = mpe.queue()
    local p = spawn(function(arg) arg:put("arg") q:put("upvalue") end, q)
    finish(p)
    assert.equal("arg", q:get(5))
    assert.equal("upvalue", q:get(5))
  end)

  it("works in pool workers, made before and after the pool started", function()
    local before = mpe.queue()
    with_pool(2, function(pool)
      local after = mpe.queue()
      local r = pool:map_async(function(t)
        t.before:put(t.i)
        t.after:put(t.i * 10)
        return t.after:qsize() >= 0
      end, { { before = before, after = after, i = 1 }, { before = before, after = after, i = 2 } }):get(20)
      assert.same({ true, true }, { r[1], r[2] })
      assert.equal(3, before:get(5) + before:get(5))
      assert.equal(30, after:get(5) + after:get(5))
      -- a queue that reaches a worker inside another queue's item
      local nested = mpe.queue()
      after:put({ reply = nested })
      assert.is_true(pool:apply_async(function(q) q:get(5).reply:put("nested") return true end, { after }):get(20))
      assert.equal("nested", nested:get(5))
      -- as upvalues of the pool's function
      assert.is_true(pool:apply_async(function() before:put("up") after:put("up") return true end, {}):get(20))
      assert.equal("up", before:get(5))
      assert.equal("up", after:get(5))
      -- made in a worker and returned
      local made = pool:apply_async(function()
        local q = require("mpe").queue()
        q:put("from a worker")
        return q
      end, {}):get(20)
      assert.equal("from a worker", made:get(5))
    end)
  end)

  it("keeps working after a reader is killed while blocked in get", function()
    local q = mpe.queue()
    local started = mpe.event()
    local p = spawn(function() started:set() q:get(30) end)
    started:wait(10)
    p:kill()
    p:join(10)
    q:put("still works")
    assert.equal("still works", q:get(5))
  end)

  it("keeps working after readers are killed in the middle of taking items", function()
    local q = mpe.queue()
    local taken = mpe.value("int64", 0)
    local stop = mpe.event()
    local producer = spawn(function()
      local i = 0
      while not stop:is_set() do
        -- between readers the queue may fill: retry until stopped
        if pcall(q.put, q, { i + 1, string.rep("x", (i + 1) % 100) }, 0.1) then i = i + 1 end
      end
      return i
    end)
    for _ = 1, 4 do
      local goal = taken:get() + 300
      local reader = spawn(function()
        while true do
          local t = q:get(10)
          assert(#t[2] == t[1] % 100)
          taken:add(1)
        end
      end)
      local deadline = os.time() + 20
      while taken:get() < goal and os.time() < deadline do end
      reader:kill()
      reader:join(10)
    end
    stop:set()
    local produced = finish(producer)
    -- What is left is whole and in order; the queue goes on working.
    local last = 0
    while true do
      local ok, t = pcall(q.get, q, 0)
      if not ok then break end
      assert.is_true(t[1] > last)
      assert.equal(t[1] % 100, #t[2])
      last = t[1]
    end
    assert.is_true(last <= produced)
    assert.is_true(taken:get() >= 1200)
    q:put("ok")
    assert.equal("ok", q:get(1))
    assert.equal(0, q:qsize())
  end)

  it("leaves no descriptor or mapping behind after 10,000 create/destroy cycles", function()
    full_gc()
    local fds0, maps0 = fd_count(), memfd_maps()
    for i = 1, 10000 do
      local q = mpe.queue()
      q:put(i)
      if i % 2 == 0 then q:close() end -- the others are collected
      if i % 500 == 0 then collectgarbage() end
    end
    full_gc()
    assert.is_true(fd_count() <= fds0, "descriptors: " .. fds0 .. " -> " .. fd_count()) -- no growth
    assert.is_true(memfd_maps() <= maps0, "memfd mappings: " .. maps0 .. " -> " .. memfd_maps()) -- no growth
  end)
end)

describe("mpe.pipe", function()
  it("is duplex and carries any value", function()
    local c1, c2 = mpe.pipe()
    assert.is_false(c2:poll())
    c1:send({ 1, "two", { 3 } })
    c2:send("back")
    c1:send(nil)
    assert.is_true(c2:poll(1))
    assert.same({ 1, "two", { 3 } }, c2:recv())
    assert.is_nil(c2:recv(1))
    assert.equal("back", c1:recv(1))
    assert.truthy(tostring(c1):find("^mpe%.Connection: "))
  end)

  it("times out, with a timeout error object", function()
    local c1, c2 = mpe.pipe()
    local e = errobj(c1.recv, c1, 0.05)
    assert.equal("timeout", e.kind)
    assert.truthy(tostring(e):find("^mpe: timeout: connection:recv"))
    assert.is_false(c1:poll(0.05))
    c2:close()
  end)

  it("raises instead of hanging when the other end is gone", function()
    local c1, c2 = mpe.pipe()
    local p = spawn(function() c1:close() c2:send("last words") end)
    c2:close() -- the child's copy was the last one
    finish(p)
    assert.equal("last words", c1:recv(5))
    assert.is_true(c1:poll(0))
    assert.equal("mpe: pipe: the other end is closed", errmsg(c1.recv, c1, 5))
    assert.equal("mpe: pipe: the other end is closed", errmsg(c1.recv, c1))
    assert.equal("mpe: pipe: the other end is closed", errmsg(c1.send, c1, 1))
  end)

  it("raises on a closed end; close is idempotent; arguments are checked", function()
    local c1, c2 = mpe.pipe()
    c1:close()
    c1:close()
    assert.equal("mpe: attempt to use a closed mpe.Connection", errmsg(c1.send, c1, 1))
    assert.equal("mpe: attempt to use a closed mpe.Connection", errmsg(c1.recv, c1))
    assert.equal("mpe: connection:send: argument 1 (the value) is missing", errmsg(c2.send, c2))
    assert.truthy(errmsg(c2.recv, c2, "x"):find("argument 1 (timeout)", 1, true))
    assert.equal("mpe: connection:poll: self must be an mpe.Connection (call methods with a colon), got no value",
                 errmsg(c2.poll))
  end)

  it("carries 10 MB and shared objects between processes", function()
    local c1, c2 = mpe.pipe()
    local a = mpe.array("int32", 3)
    local p = spawn(function()
      local msg = c2:recv(20)
      msg.a[3] = #msg.s
      c2:send(msg.s:upper())
    end)
    c1:send({ s = string.rep("abc", 3500000), a = a })
    local back = c1:recv(20)
    finish(p)
    assert.equal(10500000, #back)
    assert.equal("ABCABC", back:sub(1, 6))
    assert.equal(10500000, a[3])
  end)

  it("works with pool workers, ends made after the pool started", function()
    with_pool(2, function(pool)
      local c1, c2 = mpe.pipe()
      local r = pool:apply_async(function(c) c:send(c:recv(5) * 2) return true end, { c2 })
      c1:send(21)
      assert.is_true(r:get(20)) -- a worker that died would show here, not as a recv timeout
      assert.equal(42, c1:recv(5))
      -- an end as an upvalue of the pool's function
      assert.is_true(pool:apply_async(function() c2:send("up") return true end, {}):get(20))
      assert.equal("up", c1:recv(5))
    end)
  end)

  it("leaves no descriptor behind after 10,000 create/destroy cycles", function()
    full_gc()
    local fds0 = fd_count()
    for i = 1, 10000 do
      local c1, c2 = mpe.pipe()
      c1:send(i)
      assert.equal(i, c2:recv())
      if i % 2 == 0 then c1:close() c2:close() end
      if i % 500 == 0 then collectgarbage() end
    end
    full_gc()
    assert.is_true(fd_count() <= fds0, "descriptors: " .. fds0 .. " -> " .. fd_count()) -- no growth
  end)
end)

describe("mpe.dict", function()
  it("reads and writes with get and set; nil deletes", function()
    local d = mpe.dict()
    d:set("name", "x")
    d:set(1, { 1, 2 })
    d:set(true, false)
    d:set(2.5, "float key")
    assert.equal("x", d:get("name"))
    assert.same({ 1, 2 }, d:get(1))
    assert.equal(false, d:get(true))
    assert.equal("float key", d:get(2.5))
    assert.same({ 1, 2 }, d:get(1.0)) -- 1.0 and 1 are one key, as in a table
    assert.is_nil(d:get("missing"))
    d:set("name", nil)
    assert.is_nil(d:get("name"))
    d:set(1, nil)
    assert.is_nil(d:get(1))
    assert.equal(2, #d) -- true and 2.5
  end)

  -- Issue 10.5: a word count over English text met the word "get".
  it("never shadows a key by a method: indexing gives only methods", function()
    local d = mpe.dict()
    for _, w in ipairs({ "get", "set", "keys", "update", "close", "the", "get" }) do
      d:update(w, function(n) return (n or 0) + 1 end)
    end
    assert.equal(2, d:get("get"))
    assert.equal(1, d:get("keys"))
    assert.equal("function", type(d.get))
    assert.same({ get = 2, set = 1, keys = 1, update = 1, close = 1, the = 1 }, d:totable())
    assert.equal("mpe: dict[]: key \"the\" is not a method: read data with d:get(k) (indexing a "
                 .. "dict gives only its methods)", errmsg(function() return d.the end))
    assert.equal("mpe: dict[]: key 1 is not a method: read data with d:get(k) (indexing a dict "
                 .. "gives only its methods)", errmsg(function() return d[1] end))
    assert.equal("mpe: dict[]=: cannot assign to a dict: write data with d:set(k, v)",
                 errmsg(function() d.the = 5 end))
    assert.equal("mpe: dict[]=: cannot assign to a dict: write data with d:set(k, v)",
                 errmsg(function() d.get = 5 end))
    assert.equal(1, d:get("the"))
  end)

  it("checks keys and values", function()
    local d = mpe.dict()
    assert.equal("mpe: dict:set: the key must be a string, number or boolean, got table",
                 errmsg(d.set, d, {}, 1))
    assert.equal("mpe: dict:get: the key must be a string, number or boolean, got nil",
                 errmsg(d.get, d, nil))
    assert.equal("mpe: dict:get: the key is NaN", errmsg(d.get, d, 0 / 0))
    assert.truthy(errmsg(d.set, d, "a", mpe.lock()):find("a dict cannot hold shared objects", 1, true))
    assert.truthy(errmsg(d.set, d, "co", coroutine.create(print)):find("cannot send coroutine", 1, true))
    assert.equal(0, #d)
    assert.equal("mpe: dict:update: argument 2 must be a function, got 5", errmsg(d.update, d, "k", 5))
    assert.equal("mpe: dict:get: self must be an mpe.Dict (call methods with a colon), got string",
                 errmsg(d.get, "k"))
    -- a value refused half-way through its encoding keeps no descriptor
    local big = mpe.array("double", 1000) -- a segment of its own
    full_gc()
    local fds0 = fd_count()
    for _ = 1, 200 do
      pcall(d.set, d, "x", { big, coroutine.create(print) })
      pcall(d.set, d, "x", { big })
    end
    full_gc()
    assert.is_true(fd_count() <= fds0, "descriptors: " .. fds0 .. " -> " .. fd_count()) -- no growth
  end)

  it("updates atomically, returns the new value, deletes on nil, lets go on errors", function()
    local d = mpe.dict()
    assert.equal(1, d:update("n", function(old) return (old or 0) + 1 end))
    assert.equal(2, d:update("n", function(old) return old + 1 end))
    assert.is_nil(d:update("n", function() return nil end))
    assert.is_nil(d:get("n"))
    assert.truthy(errmsg(d.update, d, "n", function() error("boom") end):find("boom", 1, true))
    -- the lock was let go: another process can take it
    local p = spawn(function() d:set("other", "set by child") end)
    finish(p)
    assert.equal("set by child", d:get("other"))
    -- the function may use the dict itself
    d:update("m", function(old) d:set("side", "effect") return d:get("other") .. "!" end)
    assert.equal("set by child!", d:get("m"))
    assert.equal("effect", d:get("side"))
  end)

  it("counts exactly under 2 processes x 1000 updates", function()
    local d = mpe.dict()
    local function work()
      for _ = 1, 1000 do d:update("count", function(v) return (v or 0) + 1 end) end
    end
    local p1, p2 = spawn(work), spawn(work)
    finish(p1)
    finish(p2)
    assert.equal(2000, d:get("count"))
  end)

  it("lists its contents: totable, keys, d:pairs(), pairs(d), #d", function()
    local d = mpe.dict()
    for i = 1, 100 do d:set(i, i * i) end
    d:set("s", "str")
    local t = d:totable()
    assert.equal(81, t[9])
    assert.equal("str", t.s)
    local keys = d:keys()
    assert.equal(101, #keys)
    local seen = 0
    for k, v in d:pairs() do
      assert.equal(t[k], v)
      seen = seen + 1
    end
    assert.equal(101, seen)
    assert.equal(101, #d)
    if _VERSION == "Lua 5.4" then
      local n = 0
      for k, v in pairs(d) do
        assert.equal(t[k], v)
        n = n + 1
      end
      assert.equal(101, n)
    end
  end)

  it("grows while several processes write to it", function()
    local d = mpe.dict()
    local function writer(id)
      return function()
        for i = 1, 3000 do d:set(id .. ":" .. i, { id = id, i = i, pad = string.rep("p", i % 40) }) end
      end
    end
    local p1, p2 = spawn(writer("a")), spawn(writer("b"))
    finish(p1)
    finish(p2)
    assert.equal(6000, #d)
    assert.equal(2999, d:get("b:2999").i)
    assert.equal("a", d:get("a:1").id)
  end)

  it("works in pool workers, made before and after the pool started", function()
    local before = mpe.dict()
    with_pool(2, function(pool)
      local after = mpe.dict()
      pool:map_async(function(t)
        t.before:set(t.i, "b" .. t.i)
        t.after:update("n", function(v) return (v or 0) + t.i end)
        return true
      end, { { before = before, after = after, i = 1 }, { before = before, after = after, i = 2 } }):get(20)
      assert.equal("b1", before:get(1))
      assert.equal("b2", before:get(2))
      assert.equal(3, after:get("n"))
      -- as upvalues of the pool's function
      assert.equal(4, pool:apply_async(function() before:set("up", true) return after:update("n", function(v) return v + 1 end) end, {}):get(20))
      assert.is_true(before:get("up"))
    end)
  end)

  it("raises on a closed handle; close is idempotent", function()
    local d = mpe.dict()
    d:close()
    d:close()
    assert.equal("mpe: attempt to use a closed mpe.Dict", errmsg(function() return d.x end))
    assert.equal("mpe: attempt to use a closed mpe.Dict", errmsg(d.get, d, "x"))
    assert.equal("mpe: attempt to use a closed mpe.Dict", errmsg(d.set, d, 1, 1))
    assert.truthy(tostring(d):find("closed", 1, true))
  end)

  it("leaves no descriptor or mapping behind after 10,000 create/destroy cycles", function()
    full_gc()
    local fds0, maps0, slabs0 = fd_count(), memfd_maps(), slab_count()
    for i = 1, 10000 do
      local d = mpe.dict()
      d:set(i, i)
      if i % 2 == 0 then d:close() end
      if i % 500 == 0 then collectgarbage() end
    end
    full_gc()
    assert.is_true(fd_count() <= fds0, "descriptors: " .. fds0 .. " -> " .. fd_count()) -- no growth
    assert.is_true(memfd_maps() <= maps0, "memfd mappings: " .. maps0 .. " -> " .. memfd_maps()) -- no growth
    assert.is_true(slab_count() <= slabs0 + 1) -- at most a fresh current slab
  end)
end)

describe("the queue and dict examples", function()
  -- Run with the mpe command when the test environment names it (ctest does).
  local bin = os.getenv("MPE_BIN")
  local src = os.getenv("MPE_SOURCE_DIR") or "."
  local function run(script, args)
    local h = io.popen(string.format("timeout 120 '%s' run '%s/scripts/examples/%s' %s 2>&1; echo \"exit $?\"",
                                     bin, src, script, args or ""))
    local out = h:read("*a")
    h:close()
    return out
  end
  local function has(out, line)
    for l in out:gmatch("[^\n]+") do
      if l == line then return true end
    end
    error("missing line '" .. line .. "' in:\n" .. out)
  end

  it("queue_factorize merges the processes' results and checks them", function()
    if not bin then return end
    local out = run("queue_factorize.lua", "1000 3")
    has(out, "factors of 1000: {2, 2, 2, 5, 5, 5}")
    has(out, "check: 1000 tables from 3 processes, 2877 prime factors in all")
    has(out, "check: every table multiplies back to its number: true")
    has(out, "check: each process's results came in its order: true")
    has(out, "exit 0")
  end)

  it("dict_doubler prints what each process wrote under its pid", function()
    if not bin then return end
    local out = run("dict_doubler.lua")
    for i, n in ipairs({ 5, 10, 15, 20, 25 }) do
      has(out, string.format("Process-%d: %d doubled to %d", i, n, 2 * n))
    end
    has(out, "processes that reported: 5")
    has(out, "entries in the dict: 6 (one per process, and the counter)")
    has(out, "exit 0")
  end)
end)

-- A large send that nobody reads, stopped by a signal to the parent alone
-- (issue 10.3): the send raises the interrupt; the frame it had begun is cut,
-- so this end sends no more and the reader gets an error for the partial
-- message instead of a corrupt stream.
describe("a pipe send stopped by a signal", function()
  local script_runner = require "runscript"
  local script = [[
local mpe = require "mpe"
local a, b = mpe.pipe()
local big = string.rep("x", 64 * 1024 * 1024)
local pid = mpe.current_process().pid
-- SIGINT once this process sleeps in poll (the full pipe), bounded.
os.execute("(for i in $(seq 1 1200); do grep -q poll /proc/" .. pid .. "/wchan && break; "
           .. "sleep 0.05; done; kill -INT " .. pid .. ") &")
local ok, err = pcall(a.send, a, big)
print("send: " .. tostring(ok) .. " " .. tostring(err))
print("again: " .. select(2, pcall(a.send, a, "y")))
print("recv: " .. select(2, pcall(b.recv, b, 1)))
]]
  local function run(runner)
    return script_runner.run(script_runner.command(runner), script, 60)
  end
  -- LuaJIT runs the interrupt's hook at the caller's next instruction, past
  -- the pcall around send: the script ends there, so only the exit is checked.
  local LUAJIT = type(jit) == "table"
  local function check(out)
    if LUAJIT then return end
    assert.matches("again: mpe: connection:send: an earlier send from this end was interrupted in "
                   .. "the middle of a message, so this end can send no more", out, 1, true)
    assert.matches("recv: mpe: connection:recv: the other end stopped in the middle of a message (",
                   out, 1, true)
  end

  it("under mpe run", function()
    local out, status = run("mpe")
    assert.equal(130, status, out)
    assert.matches("mpe: interrupted by SIGINT", out, 1, true)
    check(out)
  end)

  if not script_runner.SANITIZED then
    it("under the stock interpreter", function()
      local out, status = run("lua")
      assert.matches("interrupted!", out, 1, true)
      assert.equal(LUAJIT and 1 or 0, status, out)
      check(out)
    end)
  end
end)
