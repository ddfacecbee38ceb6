-- badinput_spec.lua -- every public function and method called with wrong
-- types, out-of-range values, on closed or terminated objects, and with values
-- that cannot be sent. Table-driven: each row is {what, call, expected}; the
-- call must raise, the message must start with "mpe: " (after the position
-- Lua may put in front) and contain `expected`, which names the function
-- and the argument. A second table checks that optional arguments may be
-- left out. Runs under lua5.4 with mpe.so, under `mpe run`, and under LuaJIT.
local mpe = require "mpe"

local co = coroutine.create(function() end)
local LUA54 = _VERSION == "Lua 5.4" and math.type ~= nil

-- The objects the rows misuse, made once (setup) and ended in teardown.
local P, Pslow, Pclosed, Pterm, Pjoined, A, Aterm, Aslow, Aslow_ev
local Pr, Prstarted, Arr, Arr2, Val, Lk, Rlk, Sem, Ev, Cond, Bar, Q, C1, C2, D
local closed = {}

-- A running task that finishes when Aslow_ev is set (so "not ready yet" is certain).
local function make_objects()
  P = mpe.pool(1)
  A = P:map_async(function(x) return x end, {1})
  A:wait(30)
  Aslow_ev = mpe.event()
  local ev = Aslow_ev
  Pslow = mpe.pool(1) -- its one worker stays busy until teardown
  Aslow = Pslow:apply_async(function() return ev:wait(60) end, {})
  Pclosed = mpe.pool(1)
  Pclosed:close()
  Pterm = mpe.pool(1)
  Aterm = Pterm:map_async(function() local ev2 = mpe.event() ev2:wait(60) end, {1})
  Pterm:terminate()
  Pjoined = mpe.pool(1)
  Pjoined:close()
  Pjoined:join()
  Pr = mpe.process(function() return 1 end)
  Prstarted = mpe.process(function() return 1 end)
  Prstarted:start()
  Prstarted:join(30)
  Arr = mpe.array("int32", 3)
  Arr2 = mpe.array("double", 2, 2)
  Val = mpe.value("int32", 3)
  Lk, Rlk, Sem, Ev, Cond, Bar = mpe.lock(), mpe.rlock(), mpe.semaphore(1), mpe.event(), mpe.condition(), mpe.barrier(2)
  Q, D = mpe.queue(), mpe.dict()
  C1, C2 = mpe.pipe()
  closed.arr = mpe.array("int8", 2)
  closed.val = mpe.value("int8", 1)
  closed.lock = mpe.lock()
  closed.event = mpe.event()
  closed.sem = mpe.semaphore(1)
  closed.queue = mpe.queue()
  closed.dict = mpe.dict()
  closed.conn, closed.peer = mpe.pipe()
  closed.lone, closed.gone = mpe.pipe()
  for _, k in ipairs{"arr", "val", "lock", "event", "sem", "queue", "dict", "conn", "gone"} do
    closed[k]:close()
  end
end

local function deep(n)
  local t = {}
  local c = t
  for _ = 1, n do
    c[1] = {}
    c = c[1]
  end
  return t
end

-- Calls made with the condition's lock held (notify and wait_for need it).
local function holding(fn)
  return function()
    Cond:acquire()
    local ok, err = pcall(fn)
    Cond:release()
    if ok then return end
    error(err, 0)
  end
end

-- Rows with a 4th field show a known engine defect (docs/RELIABILITY.md):
-- pending, naming it, unless MPE_KNOWN_BUGS=1 runs them as real cases.
local KNOWN_BUGS = os.getenv("MPE_KNOWN_BUGS") == "1"

local rows = {
  -- module functions -----------------------------------------------------------------
  {"mpe.range()", function() return mpe.range() end, "mpe: range: argument 1 must be an integer, got no value"},
  {"mpe.range(1)", function() return mpe.range(1) end, "mpe: range: argument 2 must be an integer, got no value"},
  {"mpe.range(1.5, 2)", function() return mpe.range(1.5, 2) end, "mpe: range: argument 1 must be an integer, got 1.5"},
  {"mpe.range(nan, 2)", function() return mpe.range(0 / 0, 2) end, "mpe: range: argument 1 must be an integer, got nan"},
  {"mpe.range(1, 'x')", function() return mpe.range(1, "x") end, "mpe: range: argument 2 must be an integer, got \"x\""},
  {"mpe.range(1, 2, 'x')", function() return mpe.range(1, 2, "x") end, "mpe: range: argument 3 must be an integer, got \"x\""},
  {"mpe.range(1, 5, 0.5)", function() return mpe.range(1, 5, 0.5) end, "mpe: range: argument 3 must be an integer, got 0.5"},
  {"mpe.range(1, 2, 0)", function() return mpe.range(1, 2, 0) end, "mpe: range: argument 3 (step) must not be 0"},
  {"mpe.range(1, math.huge)", function() return mpe.range(1, math.huge) end, "mpe: range: argument 2 must be an integer"},
  {"mpe.isatty()", function() return mpe.isatty() end, "mpe: isatty: argument 1 must be a descriptor number, got no value"},
  {"mpe.isatty('x')", function() return mpe.isatty("x") end, "mpe: isatty: argument 1 must be a descriptor number, got string"},
  {"mpe.isatty(1.5)", function() return mpe.isatty(1.5) end, "mpe: isatty: argument 1 must be a descriptor number, got 1.5"},
  {"mpe.encode()", function() return mpe.encode() end, "mpe: encode: argument 1 is missing (pass nil to encode nil)"},
  {"mpe.encode(coroutine)", function() return mpe.encode(co) end, "mpe: cannot send coroutine at value"},
  {"mpe.encode(io.stdout)", function() return mpe.encode(io.stdout) end, "mpe: cannot send userdata (FILE*) at value"},
  {"mpe.encode({a = {co}})", function() return mpe.encode({a = {co}}) end, "mpe: cannot send coroutine at value.a[1]"},
  {"mpe.encode(closure over co)", function() return mpe.encode(function() return co end) end,
   "mpe: cannot send coroutine at upvalue 'co' of function"},
  {"mpe.encode(300 levels)", function() return mpe.encode(deep(300)) end, "nesting deeper than 200 levels at value[1][1]"},
  {"mpe.encode(array)", function() return mpe.encode(Arr) end,
   "mpe: cannot send mpe.Array at value: shared objects need descriptor passing"},
  {"mpe.decode()", function() return mpe.decode() end, "mpe: decode: argument 1 must be a string, got no value"},
  {"mpe.decode(5)", function() return mpe.decode(5) end, "mpe: decode: argument 1 must be a string, got number"},
  {"mpe.decode('')", function() return mpe.decode("") end, "mpe: decode: empty input at offset 0"},
  {"mpe.decode('xyz')", function() return mpe.decode("xyz") end, "mpe: decode: unknown format version"},
  {"mpe.decode(trailing)", function() return mpe.decode(mpe.encode(1) .. "x") end,
   "mpe: decode: 1 bytes of trailing garbage"},
  {"mpe.decode(truncated)", function() return mpe.decode(mpe.encode("abcdef"):sub(1, -3)) end, "mpe: decode: "},
  {"mpe.register()", function() return mpe.register() end, "mpe: register: argument 1 must be a non-empty string, got no value"},
  {"mpe.register('', {})", function() return mpe.register("", {}) end,
   "mpe: register: argument 1 must be a non-empty string, got an empty string"},
  {"mpe.register('x')", function() return mpe.register("x") end, "mpe: register: argument 2 must be a table, got no value"},
  {"mpe.register('x', 5)", function() return mpe.register("x", 5) end, "mpe: register: argument 2 must be a table, got number"},

  -- mpe.pool -----------------------------------------------------------------------
  {"mpe.pool(-1)", function() return mpe.pool(-1) end, "mpe: pool: argument 1 (workers) must be from 0 to 1024, got -1"},
  {"mpe.pool(2000)", function() return mpe.pool(2000) end, "mpe: pool: argument 1 (workers) must be from 0 to 1024, got 2000"},
  {"mpe.pool(1.5)", function() return mpe.pool(1.5) end,
   "mpe: pool: argument 1 must be a worker count or an options table, got 1.5"},
  {"mpe.pool('x')", function() return mpe.pool("x") end,
   "mpe: pool: argument 1 must be a worker count or an options table, got \"x\""},
  {"mpe.pool{wokers}", function() return mpe.pool{wokers = 2} end, "mpe: pool: unknown option 'wokers'"},
  {"mpe.pool{ranks = 'some'}", function() return mpe.pool{ranks = "some"} end,
   "mpe: pool: option 'ranks' must be \"all\" or \"local\", got \"some\""},
  {"mpe.pool{ranks = 3}", function() return mpe.pool{ranks = 3} end,
   "mpe: pool: option 'ranks' must be \"all\" or \"local\", got 3"},
  {"mpe.pool{[1] = 2}", function() return mpe.pool{2} end, "mpe: pool: unknown option '1'"},
  {"mpe.pool{chunksize}", function() return mpe.pool{chunksize = 2} end, "mpe: pool: unknown option 'chunksize'"},
  {"mpe.pool{workers = '2'}", function() return mpe.pool{workers = "2"} end,
   "mpe: pool: option 'workers' must be an integer from 0 to 1024, got \"2\""},
  {"mpe.pool{workers = -1}", function() return mpe.pool{workers = -1} end,
   "mpe: pool: option 'workers' must be an integer from 0 to 1024, got -1"},
  {"mpe.pool{workers = 0, timeout = 0}", function() return mpe.pool{workers = 0, timeout = 0} end,
   "mpe: pool: option 'timeout' must be a positive number of seconds"},
  {"mpe.pool{workers = 0, maxtasksperchild = 0}", function() return mpe.pool{workers = 0, maxtasksperchild = 0} end,
   "mpe: pool: option 'maxtasksperchild' must be a positive integer, got 0"},
  {"mpe.pool{maxtasksperchild = 0}", function() return mpe.pool{maxtasksperchild = 0} end,
   "mpe: pool: option 'maxtasksperchild' must be a positive integer, got 0"},
  {"mpe.pool{maxtasksperchild = 'x'}", function() return mpe.pool{maxtasksperchild = "x"} end,
   "mpe: pool: option 'maxtasksperchild' must be a positive integer, got \"x\""},
  {"mpe.pool{timeout = -1}", function() return mpe.pool{timeout = -1} end,
   "mpe: pool: option 'timeout' must be a positive number of seconds, got -1"},
  {"mpe.pool{timeout = 0}", function() return mpe.pool{timeout = 0} end,
   "mpe: pool: option 'timeout' must be a positive number of seconds"},
  {"mpe.pool{timeout = nan}", function() return mpe.pool{timeout = 0 / 0} end,
   "mpe: pool: option 'timeout' must be a positive number of seconds"},
  {"mpe.pool{timeout = math.huge}", function() return mpe.pool{timeout = math.huge} end,
   "mpe: pool: option 'timeout' must be a positive number of seconds"},
  {"mpe.pool{timeout = '1'}", function() return mpe.pool{timeout = "1"} end,
   "mpe: pool: option 'timeout' must be a positive number of seconds, got \"1\""},
  {"mpe.pool{retries = -1}", function() return mpe.pool{retries = -1} end,
   "mpe: pool: option 'retries' must be an integer from 0 to 1000, got -1"},
  {"mpe.pool{retries = 1.5}", function() return mpe.pool{retries = 1.5} end,
   "mpe: pool: option 'retries' must be an integer from 0 to 1000"},
  {"mpe.pool{initializer = 1}", function() return mpe.pool{initializer = 1} end,
   "mpe: pool: option 'initializer' must be a function, got 1"},
  {"mpe.pool{initargs = 1}", function() return mpe.pool{initargs = 1} end,
   "mpe: pool: option 'initargs' must be a table, got 1"},

  -- pool methods ---------------------------------------------------------------------
  {"pool:map(nil, {})", function() return P:map(nil, {}) end, "mpe: pool:map: argument 1 must be a function, got nil"},
  {"pool:map(f, 5)", function() return P:map(print, 5) end,
   "mpe: pool:map: argument 2 must be a table, mpe.range or function, got 5"},
  {"pool:map(f, nil)", function() return P:map(print, nil) end,
   "mpe: pool:map: argument 2 must be a table, mpe.range or function, got nil"},
  {"pool:map(f, {}, 5)", function() return P:map(print, {}, 5) end,
   "mpe: pool:map: argument 3 (options) must be a table, got 5"},
  {"pool:map opts foo", function() return P:map(print, {}, {foo = 1}) end, "mpe: pool:map: unknown option 'foo'"},
  {"pool:map opts callback", function() return P:map(print, {}, {callback = print}) end,
   "mpe: pool:map: unknown option 'callback'"},
  {"pool:map chunksize 0", function() return P:map(print, {}, {chunksize = 0}) end,
   "mpe: pool:map: option 'chunksize' must be an integer from 1 to 1048576, got 0"},
  {"pool:map chunksize 1.5", function() return P:map(print, {}, {chunksize = 1.5}) end,
   "mpe: pool:map: option 'chunksize' must be an integer from 1 to 1048576, got 1.5"},
  {"pool:map errors", function() return P:map(print, {}, {errors = "ignore"}) end,
   "mpe: pool:map: option 'errors' must be \"raise\" or \"collect\""},
  {"pool:map progress 1", function() return P:map(print, {}, {progress = 1}) end,
   "mpe: pool:map: option 'progress' must be true, false or \"force\", got 1"},
  {"pool:map out {}", function() return P:map(print, {}, {out = {}}) end,
   "mpe: pool:map: option 'out' must be an open mpe.array, got table"},
  {"pool:starmap out 1", function() return P:starmap(print, {}, {out = 1}) end,
   "mpe: pool:starmap: option 'out' must be an open mpe.array, got 1"},
  {"pool:map out too short", function() return P:map(print, {1, 2}, {out = mpe.array("int8", 1)}) end,
   "mpe: pool:map: option 'out' has 1 rows or elements, fewer than the 2 items"},
  {"pool:map_async out value", function() return P:map_async(print, {}, {out = mpe.value("int8", 0)}) end,
   "mpe: pool:map_async: option 'out' must be an open mpe.array, got mpe.Value"},
  {"pool:imap out", function() return P:imap(print, {}, {out = mpe.array("int8", 1)}) end,
   "mpe: pool:imap: option 'out' is not accepted here"},
  {"pool:apply_async out", function() return P:apply_async(print, {}, {out = mpe.array("int8", 1)}) end,
   "mpe: pool:apply_async: option 'out' is not accepted here"},
  {"pool:map item coroutine", function() return P:map(print, {1, co}) end, "mpe: cannot send coroutine at item"},
  {"pool:map upvalue coroutine", function() return P:map(function() return co end, {1}) end,
   "mpe: cannot send coroutine at upvalue 'co' of function"},
  {"pool.map(nil, ...)", function() return P.map(nil, print, {}) end,
   "mpe: pool:map: self must be an mpe.Pool (call methods with a colon), got nil"},
  {"pool.map({}, ...)", function() return P.map({}, print, {}) end,
   "mpe: pool:map: self must be an mpe.Pool (call methods with a colon), got table"},
  {"pool:starmap(f, {1})", function() return P:starmap(print, {1}) end,
   "mpe: starmap: item 1 must be a table of arguments, got number"},
  {"pool:starmap(f, range)", function() return P:starmap(print, mpe.range(1, 2)) end,
   "mpe: starmap: items must be tables of arguments, not an mpe.range"},
  {"pool:starmap_async(1, {})", function() return P:starmap_async(1, {}) end,
   "mpe: pool:starmap_async: argument 1 must be a function, got 1"},
  {"pool:map_async callback 1", function() return P:map_async(print, {}, {callback = 1}) end,
   "mpe: pool:map_async: option 'callback' must be a function, got 1"},
  {"pool:map_async error_callback 'x'", function() return P:map_async(print, {}, {error_callback = "x"}) end,
   "mpe: pool:map_async: option 'error_callback' must be a function, got \"x\""},
  {"pool:imap(nil, {})", function() return P:imap(nil, {}) end, "mpe: pool:imap: argument 1 must be a function, got nil"},
  {"pool:imap window 0", function() return P:imap(print, {}, {window = 0}) end,
   "mpe: pool:imap: option 'window' must be an integer from 1 to 65536, got 0"},
  {"pool:imap callback", function() return P:imap(print, {}, {callback = print}) end,
   "mpe: pool:imap: unknown option 'callback'"},
  {"pool:imap_unordered(f, 'x')", function() return P:imap_unordered(print, "x") end,
   "mpe: pool:imap_unordered: argument 2 must be a table, mpe.range or function, got \"x\""},
  {"pool:apply(1)", function() return P:apply(1) end, "mpe: pool:apply: argument 1 must be a function, got 1"},
  {"pool:apply(f, co)", function() return P:apply(print, co) end, "mpe: cannot send coroutine at args[1]"},
  {"pool:apply_async(nil)", function() return P:apply_async(nil) end,
   "mpe: pool:apply_async: argument 1 must be a function, got nil"},
  {"pool:apply_async(f, 5)", function() return P:apply_async(print, 5) end,
   "mpe: pool:apply_async: argument 2 (args) must be a table, got 5"},
  {"pool:apply_async(f, {}, 5)", function() return P:apply_async(print, {}, 5) end,
   "mpe: pool:apply_async: argument 3 (options) must be a table, got 5"},
  {"pool:apply_async(f, {co})", function() return P:apply_async(print, {co}) end, "mpe: cannot send coroutine at args[1]"},
  {"pool.close(5)", function() return P.close(5) end,
   "mpe: pool:close: self must be an mpe.Pool (call methods with a colon), got number"},
  {"pool.join()", function() return P.join() end,
   "mpe: pool:join: self must be an mpe.Pool (call methods with a colon), got no value"},
  {"pool.terminate({})", function() return P.terminate({}) end,
   "mpe: pool:terminate: self must be an mpe.Pool (call methods with a colon), got table"},
  {"open pool:join()", function() return P:join() end, "mpe: pool:join: call pool:close() or pool:terminate() first"},
  {"closed pool:map", function() return Pclosed:map(print, {}) end, "mpe: pool:map: the pool is closed"},
  {"closed pool:apply_async", function() return Pclosed:apply_async(print, {}) end,
   "mpe: pool:apply_async: the pool is closed"},
  {"closed pool:imap", function() return Pclosed:imap(print, {}) end, "mpe: pool:imap: the pool is closed"},
  {"terminated pool:map", function() return Pterm:map(print, {}) end, "mpe: pool:map: the pool is terminated"},
  {"terminated pool:apply", function() return Pterm:apply(print) end, "mpe: pool:apply: the pool is terminated"},
  {"terminated pool:starmap_async", function() return Pterm:starmap_async(print, {}) end,
   "mpe: pool:starmap_async: the pool is terminated"},
  {"joined pool:imap", function() return Pjoined:imap(print, {}) end, "mpe: pool:imap: the pool is "},

  -- async results ----------------------------------------------------------------------
  {"async.get(nil)", function() return A.get(nil) end,
   "mpe: async:get: self must be an mpe.AsyncResult (call methods with a colon), got nil"},
  {"async:get('x')", function() return A:get("x") end,
   "mpe: async:get: argument 1 (timeout) must be a number of seconds, got \"x\""},
  {"async:get(-1)", function() return A:get(-1) end,
   "mpe: async:get: argument 1 (timeout) must be between 0 and 1e9 seconds, got -1"},
  {"async:wait({})", function() return A:wait({}) end,
   "mpe: async:wait: argument 1 (timeout) must be a number of seconds, got table"},
  {"async.ready(1)", function() return A.ready(1) end,
   "mpe: async:ready: self must be an mpe.AsyncResult (call methods with a colon), got number"},
  {"async.successful(1)", function() return A.successful(1) end,
   "mpe: async:successful: self must be an mpe.AsyncResult (call methods with a colon), got number"},
  {"async:successful() not ready", function() return Aslow:successful() end,
   "mpe: async:successful: the result is not ready yet"},
  {"async:get() of a terminated pool", function() return Aterm:get() end,
   "mpe: the pool was terminated before this work finished"},
  {"async.cancel(1)", function() return A.cancel(1) end,
   "mpe: async:cancel: self must be an mpe.AsyncResult (call methods with a colon), got number"},
  {"async.cancel()", function() return A.cancel() end,
   "mpe: async:cancel: self must be an mpe.AsyncResult (call methods with a colon), got no value"},

  -- mpe.as_completed / mpe.wait ----------------------------------------------------------
  {"mpe.as_completed()", function() return mpe.as_completed() end,
   "mpe: as_completed: argument 1 must be a table of async results or processes, got no value"},
  {"mpe.as_completed(A)", function() return mpe.as_completed(A) end,
   "mpe: as_completed: argument 1 must be a table of async results or processes, got mpe.AsyncResult"},
  {"mpe.as_completed({1})", function() return mpe.as_completed({1}) end,
   "mpe: as_completed: item 1 of argument 1 must be an mpe.AsyncResult or mpe.Process, got 1"},
  {"mpe.as_completed({A, P})", function() return mpe.as_completed({A, P}) end,
   "mpe: as_completed: item 2 of argument 1 must be an mpe.AsyncResult or mpe.Process, got mpe.Pool"},
  {"mpe.as_completed({unstarted})", function() return mpe.as_completed({Pr}) end,
   "mpe: as_completed: item 1 of argument 1 is a process that was not started"},
  {"mpe.as_completed({A}, 'x')", function() return mpe.as_completed({A}, "x") end,
   "mpe: as_completed: argument 2 (timeout) must be a number of seconds, got \"x\""},
  {"mpe.as_completed({A}, -1)", function() return mpe.as_completed({A}, -1) end,
   "mpe: as_completed: argument 2 (timeout) must be between 0 and 1e9 seconds"},
  {"mpe.as_completed({slow}, 0) expires", function() for _ in mpe.as_completed({Aslow}, 0) do end end,
   "mpe: timeout: as_completed: 1 of 1 still pending"},
  {"mpe.wait()", function() return mpe.wait() end,
   "mpe: wait: argument 1 must be a table of async results or processes, got no value"},
  {"mpe.wait({{}})", function() return mpe.wait({{}}) end,
   "mpe: wait: item 1 of argument 1 must be an mpe.AsyncResult or mpe.Process, got table"},
  {"mpe.wait({unstarted})", function() return mpe.wait({Pr}) end,
   "mpe: wait: item 1 of argument 1 is a process that was not started"},
  {"mpe.wait({A}, 5)", function() return mpe.wait({A}, 5) end, "mpe: wait: argument 2 (options) must be a table, got 5"},
  {"mpe.wait timeout 'x'", function() return mpe.wait({A}, {timeout = "x"}) end,
   "mpe: wait: option 'timeout' must be a number of seconds from 0 to 1e9, got \"x\""},
  {"mpe.wait timeout -1", function() return mpe.wait({A}, {timeout = -1}) end,
   "mpe: wait: option 'timeout' must be a number of seconds from 0 to 1e9, got -1"},
  {"mpe.wait first 1", function() return mpe.wait({A}, {first = 1}) end,
   "mpe: wait: option 'first' must be a boolean, got 1"},
  {"mpe.wait return_when", function() return mpe.wait({A}, {return_when = "first"}) end,
   "mpe: wait: option 'return_when' must be \"FIRST_COMPLETED\", \"FIRST_EXCEPTION\" or \"ALL_COMPLETED\", got \"first\""},
  {"mpe.wait first and return_when", function() return mpe.wait({A}, {first = true, return_when = "ALL_COMPLETED"}) end,
   "mpe: wait: options 'first' and 'return_when' cannot be given together"},
  {"mpe.wait foo", function() return mpe.wait({A}, {foo = 1}) end, "mpe: wait: unknown option 'foo'"},

  -- mpe.process ------------------------------------------------------------------------
  {"mpe.process()", function() return mpe.process() end,
   "mpe: process: argument 1 must be a function or an options table, got no value"},
  {"mpe.process(1)", function() return mpe.process(1) end,
   "mpe: process: argument 1 must be a function or an options table, got 1"},
  {"mpe.process{}", function() return mpe.process{} end, "mpe: process: option 'target' must be a function (or callable), got nil"},
  {"mpe.process{args = 1}", function() return mpe.process{target = print, args = 1} end,
   "mpe: process: option 'args' must be a table, got 1"},
  {"mpe.process{name = 1}", function() return mpe.process{target = print, name = 1} end,
   "mpe: process: option 'name' must be a non-empty string, got 1"},
  {"mpe.process{foo}", function() return mpe.process{target = print, foo = 1} end, "mpe: process: unknown option 'foo'"},
  {"process.start(1)", function() return Pr.start(1) end,
   "mpe: process:start: self must be an mpe.Process (call methods with a colon), got number"},
  {"process.is_alive(1)", function() return Pr.is_alive(1) end,
   "mpe: process:is_alive: self must be an mpe.Process (call methods with a colon), got number"},
  {"process.kill()", function() return Pr.kill() end,
   "mpe: process:kill: self must be an mpe.Process (call methods with a colon), got no value"},
  {"unstarted process:join()", function() return Pr:join() end, "mpe: process:join: Process-"},
  {"unstarted process:join() says why", function() return Pr:join() end, "was not started"},
  {"unstarted process:result()", function() return Pr:result() end, "was not started"},
  {"unstarted process:terminate()", function() return Pr:terminate() end, "was not started"},
  {"started process:start()", function() return Prstarted:start() end, "was already started"},
  {"process:join('x')", function() return Prstarted:join("x") end,
   "mpe: process:join: argument 1 (timeout) must be a number of seconds, got \"x\""},
  {"process:join(-1)", function() return Prstarted:join(-1) end,
   "mpe: process:join: argument 1 (timeout) must be between 0 and 1e9 seconds"},
  {"process.pid = 3", function() Pr.pid = 3 end, "mpe: process: cannot set field 'pid' (only name and daemon)"},
  {"process.name = 1", function() Pr.name = 1 end, "mpe: process: name must be a non-empty string, got number"},
  {"process.daemon = 'x'", function() Pr.daemon = "x" end, "mpe: process: daemon must be a boolean, got string"},

  -- mpe.array / mpe.value ---------------------------------------------------------------
  {"mpe.array()", function() return mpe.array() end,
   "mpe: array: argument 1 must be a ctype name (int8, ..., double) or typecode, got no value"},
  {"mpe.array('int33', 3)", function() return mpe.array("int33", 3) end,
   "mpe: array: argument 1 must be a ctype name (int8, ..., double) or typecode, got \"int33\""},
  {"mpe.array('int32', -1)", function() return mpe.array("int32", -1) end,
   "mpe: array: argument 2 must be a non-negative integer (a length) or a table of numbers, got -1"},
  {"mpe.array('int32', 'x')", function() return mpe.array("int32", "x") end,
   "mpe: array: argument 2 must be a non-negative integer (a length) or a table of numbers, got \"x\""},
  {"mpe.array('int32', 2, -1)", function() return mpe.array("int32", 2, -1) end,
   "mpe: array: argument 3 must be a non-negative integer (columns), got -1"},
  {"mpe.array('int32', {1, 'x'})", function() return mpe.array("int32", {1, "x"}) end,
   "mpe: array: item 2 must be a number, got string"},
  {"mpe.array('int8', {1000})", function() return mpe.array("int8", {1000}) end,
   "mpe: array: item 1: value 1000 out of range for int8 (-128..127)"},
  {"mpe.array('int32', {1.5})", function() return mpe.array("int32", {1.5}) end,
   "mpe: array: item 1: value 1.5 is not an integer (array of int32)"},
  {"a[0]", function() return Arr[0] end, "mpe: array: index 0 out of range 1..3"},
  {"a[4]", function() return Arr[4] end, "mpe: array: index 4 out of range 1..3"},
  {"a[1.5]", function() return Arr[1.5] end, "mpe: array: index 1.5 is not an integer"},
  {"a[true] = 1", function() Arr[true] = 1 end, "mpe: array: index must be an integer, got boolean"},
  {"a[1] = 'x'", function() Arr[1] = "x" end, "mpe: array: value must be a number, got string"},
  {"a[1] = 1.5", function() Arr[1] = 1.5 end, "mpe: array: value 1.5 is not an integer (array of int32)"},
  {"a[1] = 2^40", function() Arr[1] = 2 ^ 40 end, "mpe: array: value 1099511627776 out of range for int32"},
  {"a[9] = 1", function() Arr[9] = 1 end, "mpe: array: index 9 out of range 1..3"},
  {"a.x = 1", function() Arr.x = 1 end, "mpe: array: cannot set field 'x' (only integer indices)"},
  {"a2:get(3, 1)", function() return Arr2:get(3, 1) end, "mpe: array:get: row 3 out of range 1..2"},
  {"a2:get(1, 3)", function() return Arr2:get(1, 3) end, "mpe: array:get: column 3 out of range 1..2"},
  {"a2:get('x', 1)", function() return Arr2:get("x", 1) end,
   "mpe: array:get: row and column must be integers, got \"x\" and 1"},
  {"a2:set(1, 1, 'x')", function() return Arr2:set(1, 1, "x") end, "mpe: array:set: value must be a number, got string"},
  {"a:fill('x')", function() return Arr:fill("x") end, "mpe: array:fill: value must be a number, got string"},
  {"a:sum(0, 2)", function() return Arr:sum(0, 2) end, "mpe: array:sum: range 0..2 out of bounds 1..3"},
  {"a:sum(1.5)", function() return Arr:sum(1.5) end, "mpe: array:sum: argument 1 must be an integer, got 1.5"},
  {"a:totable(1, 9)", function() return Arr:totable(1, 9) end, "mpe: array:totable: range 1..9 out of bounds 1..3"},
  {"a:totable('a')", function() return Arr:totable("a") end, "mpe: array:totable: argument 1 must be an integer, got \"a\""},
  {"a:copyfrom(1)", function() return Arr:copyfrom(1) end,
   "mpe: array:copyfrom: argument 1 must be a table of numbers or an mpe.Array, got number"},
  {"a:copyfrom(4 values)", function() return Arr:copyfrom({1, 2, 3, 4}) end,
   "mpe: array:copyfrom: 4 values from index 1 do not fit in 3 elements"},
  {"a:copyfrom({1, 'a'})", function() return Arr:copyfrom({1, "a"}) end,
   "mpe: array:copyfrom: item 2 must be a number, got string"},
  {"a:add(9, 1)", function() return Arr:add(9, 1) end, "mpe: array:add: index 9 out of range 1..3"},
  {"a:add(1, 'x')", function() return Arr:add(1, "x") end, "mpe: array:add: delta must be a number, got string"},
  {"a.get(1, 1)", function() return Arr.get(1, 1) end,
   "mpe: array:get: self must be an mpe.Array (call methods with a colon), got number"},
  {"closed a[1]", function() return closed.arr[1] end, "mpe: attempt to use a closed mpe.Array"},
  {"closed #a", function() return #closed.arr end, "mpe: attempt to use a closed mpe.Array"},
  {"closed a:sum()", function() return closed.arr:sum() end, "mpe: attempt to use a closed mpe.Array"},
  {"mpe.value()", function() return mpe.value() end,
   "mpe: value: argument 1 must be a ctype name (int8, ..., double) or typecode, got nil"},
  {"mpe.value('x', 1)", function() return mpe.value("x", 1) end,
   "mpe: value: argument 1 must be a ctype name (int8, ..., double) or typecode, got \"x\""},
  {"mpe.value('int32', 'x')", function() return mpe.value("int32", "x") end,
   "mpe: value: argument 2 must be a number (the initial value), got \"x\""},
  {"mpe.value('int8', 128)", function() return mpe.value("int8", 128) end,
   "mpe: value: value 128 out of range for int8 (-128..127)"},
  {"mpe.value('uint32', -1)", function() return mpe.value("uint32", -1) end,
   "mpe: value: value -1 out of range for uint32 (0..4294967295)"},
  {"v:set('x')", function() return Val:set("x") end, "mpe: value:set: value must be a number, got string"},
  {"v:add({})", function() return Val:add({}) end, "mpe: value:add: delta must be a number, got table"},
  {"value('int8', 127):add(1)", function() return mpe.value("int8", 127):add(1) end,
   "mpe: value:add: value 128 out of range for int8 (-128..127)"},
  {"v.get(1)", function() return Val.get(1) end,
   "mpe: value:get: self must be an mpe.Value (call methods with a colon), got number"},
  {"closed v:get()", function() return closed.val:get() end, "mpe: attempt to use a closed mpe.Value"},

  -- locks and other synchronization ---------------------------------------------------------
  {"lock:acquire('x')", function() return Lk:acquire("x") end,
   "mpe: lock:acquire: argument 1 (timeout) must be a number of seconds, got \"x\""},
  {"lock:acquire(-1)", function() return Lk:acquire(-1) end,
   "mpe: lock:acquire: argument 1 (timeout) must be between 0 and 1e9 seconds"},
  {"lock:release() not held", function() return Lk:release() end, "mpe: lock:release: lock is not held by this process"},
  {"lock:with(nil)", function() return Lk:with(nil) end, "mpe: lock:with: argument 1 must be a function, got nil"},
  {"lock.acquire(1)", function() return Lk.acquire(1) end,
   "mpe: lock:acquire: self must be an mpe.Lock or mpe.RLock (call methods with a colon), got number"},
  {"rlock:release() not held", function() return Rlk:release() end, "mpe: rlock:release: lock is not held by this process"},
  {"closed lock:acquire()", function() return closed.lock:acquire() end, "mpe: attempt to use a closed mpe.Lock"},
  {"closed lock:with(f)", function() return closed.lock:with(print) end, "mpe: attempt to use a closed mpe.Lock"},
  {"mpe.semaphore(-1)", function() return mpe.semaphore(-1) end,
   "mpe: semaphore: argument 1 must be a non-negative integer, got -1"},
  {"mpe.semaphore('x')", function() return mpe.semaphore("x") end,
   "mpe: semaphore: argument 1 must be a non-negative integer, got \"x\""},
  {"semaphore:acquire('x')", function() return Sem:acquire("x") end,
   "mpe: semaphore:acquire: argument 1 (timeout) must be a number of seconds, got \"x\""},
  {"semaphore:release(0)", function() return Sem:release(0) end,
   "mpe: semaphore:release: argument 1 must be a positive integer, got 0"},
  {"semaphore:with()", function() return Sem:with() end, "mpe: semaphore:with: argument 1 must be a function, got no value"},
  {"closed semaphore:acquire()", function() return closed.sem:acquire() end, "mpe: attempt to use a closed mpe.Semaphore"},
  {"event:wait('x')", function() return Ev:wait("x") end,
   "mpe: event:wait: argument 1 (timeout) must be a number of seconds, got \"x\""},
  {"event:wait(-1)", function() return Ev:wait(-1) end, "mpe: event:wait: argument 1 (timeout) must be between 0 and 1e9 seconds"},
  {"event:wait(1e10)", function() return Ev:wait(1e10) end,
   "mpe: event:wait: argument 1 (timeout) must be between 0 and 1e9 seconds"},
  {"event.set(1)", function() return Ev.set(1) end,
   "mpe: event:set: self must be an mpe.Event (call methods with a colon), got number"},
  {"closed event:set()", function() return closed.event:set() end, "mpe: attempt to use a closed mpe.Event"},
  {"mpe.condition(1)", function() return mpe.condition(1) end, "mpe: condition: argument 1 must be an mpe.Lock or mpe.RLock, got number"},
  {"mpe.condition(closed lock)", function() return mpe.condition(closed.lock) end,
   "mpe: condition: argument 1 is a closed mpe.Lock"},
  {"condition:wait() not held", function() return Cond:wait(0) end, "mpe: condition:wait: lock is not held by this process"},
  {"condition:notify() not held", function() return Cond:notify() end,
   "mpe: condition:notify: lock is not held by this process"},
  {"condition:notify(-1)", holding(function() return Cond:notify(-1) end),
   "mpe: condition:notify: argument 1 must be a non-negative integer, got -1"},
  {"condition:wait_for(nil)", holding(function() return Cond:wait_for(nil) end),
   "mpe: condition:wait_for: argument 1 must be a function, got nil"},
  {"mpe.barrier(0)", function() return mpe.barrier(0) end,
   "mpe: barrier: argument 1 must be a positive integer (the number of parties), got 0"},
  {"mpe.barrier()", function() return mpe.barrier() end,
   "mpe: barrier: argument 1 must be a positive integer (the number of parties), got no value"},
  {"mpe.barrier(1.5)", function() return mpe.barrier(1.5) end,
   "mpe: barrier: argument 1 must be a positive integer (the number of parties), got 1.5"},
  {"barrier:wait('x')", function() return Bar:wait("x") end,
   "mpe: barrier:wait: argument 1 (timeout) must be a number of seconds, got \"x\""},

  -- queue, pipe, dict ---------------------------------------------------------------
  {"mpe.queue(-1)", function() return mpe.queue(-1) end,
   "mpe: queue: argument 1 (maxsize) must be a non-negative integer or an option table, got -1"},
  {"mpe.queue('x')", function() return mpe.queue("x") end,
   "mpe: queue: argument 1 (maxsize) must be a non-negative integer or an option table, got \"x\""},
  {"mpe.queue(1.5)", function() return mpe.queue(1.5) end,
   "mpe: queue: argument 1 (maxsize) must be a non-negative integer or an option table, got 1.5"},
  {"mpe.queue{maxsize = -1}", function() return mpe.queue{maxsize = -1} end, "mpe: queue: option maxsize"},
  {"mpe.queue{max_size = 10}", function() return mpe.queue{max_size = 10} end, "mpe: queue: unknown option 'max_size'"},
  {"queue:put()", function() return Q:put() end, "mpe: queue:put: argument 1 (the item) is missing"},
  {"queue:put(co)", function() return Q:put(co) end, "mpe: cannot send coroutine at item"},
  {"queue:put({f = closure over co})", function() return Q:put({f = function() return co end}) end,
   "mpe: cannot send coroutine at upvalue 'co' of function"},
  {"queue:put(1, 'x')", function() return Q:put(1, "x") end,
   "mpe: queue:put: argument 2 (timeout) must be a number of seconds, got \"x\""},
  {"queue:get('x')", function() return Q:get("x") end,
   "mpe: queue:get: argument 1 (timeout) must be a number of seconds, got \"x\""},
  {"queue.put(1, 1)", function() return Q.put(1, 1) end,
   "mpe: queue:put: self must be an mpe.Queue (call methods with a colon), got number"},
  {"closed queue:put(1)", function() return closed.queue:put(1) end, "mpe: attempt to use a closed mpe.Queue"},
  {"closed queue:get(0)", function() return closed.queue:get(0) end, "mpe: attempt to use a closed mpe.Queue"},
  {"pipe:send()", function() return C1:send() end, "mpe: connection:send: argument 1 (the value) is missing"},
  {"pipe:send(co)", function() return C1:send(co) end, "mpe: cannot send coroutine at message"},
  {"pipe:poll('x')", function() return C1:poll("x") end,
   "mpe: connection:poll: argument 1 (timeout) must be a number of seconds, got \"x\""},
  {"pipe:recv('x')", function() return C1:recv("x") end,
   "mpe: connection:recv: argument 1 (timeout) must be a number of seconds, got \"x\""},
  {"pipe.send(1, 1)", function() return C1.send(1, 1) end,
   "mpe: connection:send: self must be an mpe.Connection (call methods with a colon), got number"},
  {"closed pipe end:send(1)", function() return closed.conn:send(1) end, "mpe: attempt to use a closed mpe.Connection"},
  {"closed pipe end:recv(0)", function() return closed.conn:recv(0) end, "mpe: attempt to use a closed mpe.Connection"},
  {"pipe:send(1), other end closed", function() return closed.lone:send(1) end, "mpe: pipe: the other end is closed"},
  {"pipe:recv(), other end closed", function() return closed.lone:recv(1) end, "mpe: pipe: the other end is closed"},
  {"dict:set('x', co)", function() D:set("x", co) end, "mpe: cannot send coroutine at value"},
  {"dict:set(nil, 1)", function() D:set(nil, 1) end, "mpe: dict:set: the key must be a string, number or boolean, got nil"},
  {"dict:set(nan, 1)", function() D:set(0 / 0, 1) end, "mpe: dict:set: the key is NaN"},
  {"dict.x = 1", function() D.x = 1 end, "mpe: dict[]=: cannot assign to a dict: write data with d:set(k, v)"},
  {"dict.get = 1", function() D.get = 1 end, "mpe: dict[]=: cannot assign to a dict: write data with d:set(k, v)"},
  {"dict.x", function() return D.x end,
   "mpe: dict[]: key \"x\" is not a method: read data with d:get(k) (indexing a dict gives only its methods)"},
  {"dict:update('k', 1)", function() return D:update("k", 1) end, "mpe: dict:update: argument 2 must be a function, got 1"},
  {"dict:update('k')", function() return D:update("k") end, "mpe: dict:update: argument 2 must be a function, got nil"},
  {"dict:set({}, 1)", function() return D:set({}, 1) end,
   "mpe: dict:set: the key must be a string, number or boolean, got table"},
  {"dict.get(1, 'x')", function() return D.get(1, "x") end,
   "mpe: dict:get: self must be an mpe.Dict (call methods with a colon), got number"},
  {"closed dict.x", function() return closed.dict.x end, "mpe: attempt to use a closed mpe.Dict"},
  {"closed dict:get('x')", function() return closed.dict:get("x") end, "mpe: attempt to use a closed mpe.Dict"},
  {"closed #dict", function() return #closed.dict end, "mpe: attempt to use a closed mpe.Dict"},
  {"closed dict:pairs()", function() for _ in closed.dict:pairs() do end end, "mpe: attempt to use a closed mpe.Dict"},

  -- metamethods called by hand on the wrong value: each type's one checker
  -- (these crashed the interpreter when __gc cast whatever it was given) ---------------
  {"metamethod pool __gc", function() return getmetatable(P).__gc("x") end,
   "mpe: pool:__gc: self must be an mpe.Pool (call methods with a colon), got string"},
  {"metamethod pool __close", function() return getmetatable(P).__close(Arr) end,
   "mpe: pool:__close: self must be an mpe.Pool (call methods with a colon), got mpe.Array"},
  {"metamethod pool __index", function() return getmetatable(P).__index(1, "workers") end,
   "mpe: pool:__index: self must be an mpe.Pool (call methods with a colon), got number"},
  {"metamethod async __gc", function() return getmetatable(A).__gc(P) end,
   "mpe: async:__gc: self must be an mpe.AsyncResult (call methods with a colon), got mpe.Pool"},
  {"metamethod process __gc", function() return getmetatable(Pr).__gc(Q) end,
   "mpe: process:__gc: self must be an mpe.Process (call methods with a colon), got mpe.Queue"},
  {"metamethod process __newindex", function() getmetatable(Pr).__newindex({}, "name", "x") end,
   "mpe: process:__newindex: self must be an mpe.Process (call methods with a colon), got table"},
  {"metamethod array __gc", function() return getmetatable(Arr).__gc(Lk) end,
   "mpe: array:__gc: self must be an mpe.Array or mpe.Value (call methods with a colon), got mpe.Lock"},
  {"metamethod value __tostring", function() return getmetatable(Val).__tostring(Arr) end,
   "mpe: value:__tostring: self must be an mpe.Value (call methods with a colon), got mpe.Array"},
  {"metamethod lock __gc", function() return getmetatable(Lk).__gc(D) end,
   "mpe: sync:__gc: self must be an mpe synchronization object (call methods with a colon), got mpe.Dict"},
  {"metamethod lock __tostring", function() return getmetatable(Lk).__tostring(Ev) end,
   "mpe: lock:__tostring: self must be an mpe.Lock or mpe.RLock (call methods with a colon), got mpe.Event"},
  {"metamethod queue __gc", function() return getmetatable(Q).__gc(C1) end,
   "mpe: queue:close: self must be an mpe.Queue (call methods with a colon), got mpe.Connection"},
  {"metamethod connection __gc", function() return getmetatable(C1).__gc(D) end,
   "mpe: connection:close: self must be an mpe.Connection (call methods with a colon), got mpe.Dict"},
  {"metamethod dict __close", function() return getmetatable(D).__close({}) end,
   "mpe: dict:close: self must be an mpe.Dict (call methods with a colon), got table"},
  {"metamethod range __len", function() return getmetatable(mpe.range(1, 2)).__len("x") end,
   "mpe: range:__len: self must be an mpe.range (call methods with a colon), got string"},
}

if LUA54 then
  -- __pairs: LuaJIT's pairs() does not look at it
  rows[#rows + 1] = {"closed pairs(dict)", function() for _ in pairs(closed.dict) do end end,
    "mpe: attempt to use a closed mpe.Dict"}
  -- integer limits exist only with Lua 5.4's integers
  rows[#rows + 1] = {"mpe.range(mininteger, maxinteger)",
    function() return mpe.range(math.mininteger, math.maxinteger) end, "mpe: range: too many items"}
end

-- Valid calls with every optional argument left out.
local minimal = {
  {"mpe.pool()", function() local p = mpe.pool() local n = p.workers p:terminate() return n >= 1 end},
  {"mpe.pool(0)", function() local p = mpe.pool(0) local n = p.workers p:terminate() return n == 0 end},
  {"mpe.pool{workers = 0}", function() local p = mpe.pool{workers = 0} return p:apply(function() return 1 end) == 1 end},
  {"mpe.as_completed(list)", function() local f = mpe.as_completed({A}) return f() == A and f() == nil end},
  {"mpe.wait(list)", function() local d, p = mpe.wait({A}) return d[1] == A and #p == 0 end},
  {"async:cancel()", function() return A:cancel() == false end},
  {"pool:apply_async(f)", function() return P:apply_async(function() return 7 end):get() == 7 end},
  {"pool:apply_async(f, nil, nil)", function() return P:apply_async(function() return 8 end, nil, nil):get() == 8 end},
  {"pool:map_async(f, items)", function() return P:map_async(function(x) return x end, {3}):get()[1] == 3 end},
  {"pool:apply(f)", function() return P:apply(function() return 9 end) == 9 end},
  {"async:wait()", function() return A:wait() == true end},
  {"mpe.value(ctype)", function() return mpe.value("int32"):get() == 0 end},
  {"mpe.semaphore()", function() return mpe.semaphore():acquire(0) == true end},
  {"mpe.condition()", function() local c = mpe.condition() c:acquire() c:release() return true end},
  {"mpe.queue()", function() local q = mpe.queue() q:put(1) return q:get() == 1 end},
  {"lock:acquire()", function() local l = mpe.lock() local ok = l:acquire() l:release() return ok end},
  {"event:wait(0)", function() return mpe.event():wait(0) == false end},
  {"array:sum()", function() return mpe.array("int8", {1, 2}):sum() == 3 end},
  {"mpe.range(1, 3)", function() return #mpe.range(1, 3) == 3 end},
  {"process:join()", function() local p = mpe.process(function() end) p:start() return p:join() == true end},
}

-- Row runner: the call raises, with a message that starts with "mpe: " and
-- contains the expected text.
local function check_rows(list, accept)
  for _, row in ipairs(list) do
    local what, call, expected, defect = row[1], row[2], row[3], row[4]
    local it = (defect and not KNOWN_BUGS) and function(name) pending(name .. " [known defect: " .. defect .. "]") end or it
    if not accept or accept(what) then
      it(what .. " raises '" .. expected .. "'", function()
        local ok, err = pcall(call)
        assert.is_false(ok, what .. " did not raise")
        local msg = tostring(err)
        -- Lua may put "chunk:line: " in front; what follows starts with "mpe: ".
        local body = msg:gsub("^[^\n]-:%d+: ", "", 1)
        assert.are.equal("mpe: ", body:sub(1, 5), "message does not start with 'mpe: ': " .. msg)
        assert.truthy(msg:find(expected, 1, true), "expected '" .. expected .. "' in: " .. msg)
      end)
    end
  end
end

describe("bad input:", function()
  setup(make_objects)

  teardown(function()
    Aslow_ev:set()
    Aslow:wait(30)
    for _, p in ipairs{P, Pslow, Pclosed, Pterm, Pjoined} do p:terminate() end
    -- A condition rows leave held is released by its row; nothing else holds.
  end)

  check_rows(rows)

  describe("optional arguments", function()
    for _, row in ipairs(minimal) do
      local it = (row[3] and not KNOWN_BUGS) and function(name) pending(name .. " [known defect: " .. row[3] .. "]") end or it
      it("may be left out: " .. row[1], function()
        local ok, r = pcall(row[2])
        assert.is_true(ok, tostring(r))
        assert.is_true(r)
      end)
    end
  end)

  it("leaves every object usable after the errors", function()
    assert.are.same({2, n = 1}, P:map(function(x) return x + 1 end, {1}))
    Arr[1] = 5
    assert.are.equal(5, Arr[1])
    assert.is_true(Lk:acquire(1))
    Lk:release()
    Q:put("ok")
    assert.are.equal("ok", Q:get(1))
    C1:send("ping")
    assert.are.equal("ping", C2:recv(1))
    D:set("k", 1)
    assert.are.equal(1, D:get("k"))
  end)
end)

-- An inline pool (workers = 0) and its results take the same misuse with the
-- same messages: every pool and async row runs again with P, Pclosed, Pterm,
-- Pjoined and A replaced by inline ones (the rows read them when called).
-- Left out: the two rows about work still running or cut off by terminate,
-- which an inline pool never has (its tasks are over when a call returns).
describe("bad input, inline pool:", function()
  setup(function()
    P = mpe.pool(0)
    A = P:map_async(function(x) return x end, {1})
    Pclosed = mpe.pool{workers = 0}
    Pclosed:close()
    Pterm = mpe.pool(0)
    Pterm:terminate()
    Pjoined = mpe.pool(0)
    Pjoined:close()
    Pjoined:join()
  end)

  check_rows(rows, function(what)
    if what == "async:successful() not ready" or what == "async:get() of a terminated pool" then return false end
    return what:match("^pool[:.]") or what:match("^%a+ pool[:.]") or what:match("^async[:.]")
  end)

  it("leaves the inline pool usable after the errors", function()
    assert.are.same({2, n = 1}, P:map(function(x) return x + 1 end, {1}))
  end)
end)
