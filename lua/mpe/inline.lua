-- mpe.inline -- the inline pool: mpe.pool{workers = 0}, mpe.pool(0), MPE_WORKERS=0 and
-- `mpe run -j 0`. Every task runs in the calling process, in submission order,
-- so a script can be debugged with print and a debugger without editing it,
-- and `mpe scale -j 0,...` has a true serial baseline.
-- SPDX-License-Identifier: MIT
--
-- The contract is the worker pool's (lmpe_pool.c, lmpe_async.c): the same
-- methods, results, error objects (kind, index, message, traceback), callbacks,
-- errors = "collect", progress bars and argument checks. Items and results
-- still travel through the codec (encoded and decoded in place, by h.copy), so
-- a task that changes its argument table does not change the caller's, as in
-- a worker. The function itself is only checked (it must be sendable, as for a
-- worker pool), not copied: its upvalues and the globals are the caller's own
-- (in a worker they are copies), so breakpoints and upvalues stay the same.
--
-- When tasks run: map, starmap, apply and the *_async forms run their tasks
-- before returning (an async result is complete when the caller gets it, and
-- its callback has run); imap and imap_unordered run one task per step of the
-- loop, pulling items lazily, in order (imap_unordered's order is input order).
--
-- Options with no meaning in one process: maxtasksperchild (there is no worker
-- to retire), timeout (nothing can kill the caller: a task runs to its end)
-- and retries (a crash ends the caller itself) are checked, kept, and have no
-- effect. The initializer runs once, in the caller, when the pool is created.
-- h is the C side's helper table (lmpe_inline.c): copy, handler, typename,
-- sendable (an encode whose bytes are dropped: the function's check), reset, timeout,
-- Error, now, pid, out_put, and the worker pool's argument checks: check_call, selferror.
local M = {}

local unpack = table.unpack or unpack
local getmt = debug.getmetatable

local h -- set by M.new

local Pool, Async = {}, {}
local PoolMT = { __name = "mpe.Pool" }
local AsyncMT = { __name = "mpe.AsyncResult", __index = Async }

local function tname(v)
  return h.typename(v)
end

local function err(fmt, ...)
  error(string.format(fmt, ...), 3)
end

-- ---- argument checks: the worker pool's own, from C (h.check_call, h.selferror) ---

local function checkpool(self, fname)
  if getmt(self) ~= PoolMT then
    h.selferror(fname, "mpe.Pool", self)
  end
  if self._owner ~= h.pid() then
    err("mpe: %s: this pool belongs to process %d; a forked child cannot use it", fname, self._owner)
  end
  return self
end

local function openpool(self, fname)
  checkpool(self, fname)
  h.reset() -- the copy boxes: whatever an earlier raise left in them
  if self._state ~= "open" then err("mpe: %s: the pool is %s", fname, self._state) end
  if self._broken then error(self._broken, 0) end
  return self
end

local function isint(v)
  return type(v) == "number" and v == math.floor(v) and v > -2^53 and v < 2^53
    and (not math.type or math.type(v) == "integer")
end

-- ---- running one task --------------------------------------------------------------

-- The error object of a failed task, as a worker's failure renders in the
-- parent (make_task_error in lmpe_async.c). e is what h.handler returned: a
-- table { message, traceback, value } or an mpe.Error left untouched.
local function task_error(e, index)
  local tb = e.traceback
  if type(tb) == "string" then
    -- The frames below the task (this file, the caller's script) say nothing
    -- about the task; a worker cuts its inherited frames the same way.
    local cut = tb:find("\n[^\n]*lua/mpe/inline%.lua:") or tb:find("\n%s*%[C%]: in function 'xpcall'")
    if cut then tb = tb:sub(1, cut - 1) end
  end
  return setmetatable({ kind = "error", index = index and index > 0 and index or nil, pid = h.pid(),
                        message = e.message ~= nil and tostring(e.message) or "(error without a message)",
                        traceback = tb, value = e.value }, h.Error)
end

-- A copy through the codec, as a worker receives it; numbers, strings,
-- booleans and nil are values already.
local VALUE = { number = true, string = true, boolean = true, ["nil"] = true }

-- Raise e as the C side raised it: "mpe: cannot send ... at item", without
-- this file's position in front, as from a worker pool.
local function reraise(e)
  error(type(e) == "string" and e:gsub("^[^\n]-:%d+: (mpe: )", "%1") or e, 0)
end

local function copy(v, root)
  if VALUE[type(v)] then return v end
  local ok, r = pcall(h.copy, v, root)
  if not ok then reraise(r) end
  return r
end

-- The function must be sendable, as for a worker pool (which raises at submission).
local function check_fn_sendable(fn)
  local ok, e = pcall(h.sendable, fn, "function")
  if not ok then reraise(e) end
end

local function pack(...)
  return { n = select("#", ...), ... }
end

-- The task and the copy of its results run under one xpcall, as in a worker,
-- so a result that cannot be sent fails its item.
local function call_one(fn, item)
  return copy((fn(item)), "result")
end

local function call_star(fn, args, n)
  return copy((fn(unpack(args, 1, n))), "result")
end

-- Option out: the item's values go into the array (element or row index), as
-- a worker writes them (h.out_put is the worker's own check and write); a
-- 1-D array takes fn's first value, a 2-D one all of them.
local function out_one(fn, item, arr, index, rows2)
  if rows2 then h.out_put(arr, index, fn(item)) else h.out_put(arr, index, (fn(item))) end
end

local function out_star(fn, args, n, arr, index, rows2)
  if rows2 then h.out_put(arr, index, fn(unpack(args, 1, n)))
  else h.out_put(arr, index, (fn(unpack(args, 1, n)))) end
end

local function call_apply(fn, args, n)
  local r = pack(fn(unpack(args, 1, n)))
  for k = 1, r.n do r[k] = copy(r[k], "result") end
  return r
end

-- Run fn on one item (already a copy). mode: "map" (fn(item)), "star" or "apply"
-- (fn(unpack(args, 1, args.n or #args))). Returns true and the result (apply:
-- a table of the values with n) or false and an error object. index is the
-- item's, 0 for apply.
local function run_task(fn, mode, item, index, out)
  local ok, r
  if out and mode == "map" then
    ok, r = xpcall(out_one, h.handler, fn, item, out, index, #out.shape == 2)
  elseif out then
    local n = isint(item.n) and item.n or #item
    ok, r = xpcall(out_star, h.handler, fn, item, n, out, index, #out.shape == 2)
  elseif mode == "map" then
    ok, r = xpcall(call_one, h.handler, fn, item)
  else
    local args = item
    local n = isint(args.n) and args.n or #args
    ok, r = xpcall(mode == "apply" and call_apply or call_star, h.handler, fn, args, n)
  end
  if not ok then return false, task_error(r, index) end
  return true, r
end

-- ---- items -------------------------------------------------------------------------

-- An iterator over the items at src: returns index, item, or nil at the end.
local function items_of(src, mode)
  local i = 0
  if type(src) == "table" then
    local n = rawlen and rawlen(src) or #src
    return function()
      if i >= n then return nil end
      i = i + 1
      return i, rawget(src, i)
    end, n
  elseif type(src) == "function" then
    return function()
      local v = src()
      if v == nil then return nil end
      i = i + 1
      return i, v
    end
  end
  if mode ~= "map" then error("mpe: starmap: items must be tables of arguments, not an mpe.range", 3) end
  local n = #src
  return function()
    if i >= n then return nil end
    i = i + 1
    return i, src[i]
  end, n
end

local function check_star(mode, i, v)
  if mode ~= "map" and type(v) ~= "table" then
    error(string.format("mpe: starmap: item %d must be a table of arguments, got %s", i, tname(v)), 0)
  end
end

-- ---- progress bars -----------------------------------------------------------------

local function progress_new(mode)
  if not mode then return nil end
  return { mode = mode, start = h.now(), next = 0 }
end

local function progress_tick(bar, done, total, final)
  if not bar or bar.off then return end
  local now = h.now()
  if not final and now < bar.next then return end
  bar.next = now + 0.1
  bar.done, bar.total, bar.final, bar.now = done, total, final, now
  local ok, e = pcall(function() require("mpe.progress").update(bar) end)
  if not ok then
    io.stderr:write("\nmpe: progress bar: ", tostring(e), "\n")
    bar.off = true
  end
  if final then bar.off = true end
end

-- ---- async results -----------------------------------------------------------------

local function new_async(what, o)
  return setmetatable({ _what = what, _collect = o.collect, _owner = h.pid() }, AsyncMT)
end

local function checkasync(self, fname)
  if getmt(self) ~= AsyncMT then
    h.selferror(fname, "mpe.AsyncResult", self)
  end
  if self._owner ~= h.pid() then
    err("mpe: %s: this result belongs to process %d; a forked child cannot use it", fname, self._owner)
  end
  return self
end

-- Its values, or raise its error (mpe__async_push_values).
local function push_values(a)
  if a._err then
    if a._what == "apply" and a._collect then return nil, a._err end -- errors = "collect"
    error(a._err, 0)
  end
  if a._what == "apply" then return unpack(a._values, 1, a._values.n) end
  if a._collect then return a._values, a._failures end
  return a._values
end

-- The job is over: run its callback, in the caller, as a worker pool does
-- when the parent next enters mpe.
local function finish(a, o)
  if a._err then
    if o.error_callback then o.error_callback(a._err) end
  elseif o.callback then
    if a._what == "apply" then o.callback(unpack(a._values, 1, a._values.n))
    else o.callback(a._values) end
  end
end

function Async:get(timeout)
  checkasync(self, "async:get")
  h.timeout(timeout, 2, "async:get")
  return push_values(self)
end

function Async:wait(timeout)
  checkasync(self, "async:wait")
  h.timeout(timeout, 2, "async:wait")
  return true
end

function Async:ready()
  checkasync(self, "async:ready")
  return true
end

function Async:successful()
  checkasync(self, "async:successful")
  return self._err == nil
end

-- Every inline task has run by the time its result exists: nothing to cancel.
function Async:cancel()
  checkasync(self, "async:cancel")
  return false
end

AsyncMT.__tostring = function(a) return string.format("mpe.AsyncResult (inline, %s)", tostring(a._values or a._err)) end

-- ---- the map family ----------------------------------------------------------------

-- Run fn over every item; fills a (results, failures or the first error).
-- As a worker pool encodes every item at submission, every item is copied
-- (and so checked) before the first task runs.
local function run_map(a, fn, mode, src, o, fname)
  local nxt, known = items_of(src, mode)
  if o.out and known and known > o.outrows then
    error(string.format("mpe: %s: option 'out' has %d rows or elements, fewer than the %d items",
                        fname, o.outrows, known), 0)
  end
  local copies, count = {}, 0
  while true do
    local i, v = nxt()
    if i == nil then break end
    check_star(mode, i, v)
    if o.out and i > o.outrows then
      error(string.format("mpe: option 'out' has %d rows or elements, fewer than the items (the "
                          .. "iterator gave more)", o.outrows), 0)
    end
    copies[i], count = copy(v, mode == "map" and "item" or "args"), i
  end
  local total = count
  local results, failures = {}, nil
  local bar = progress_new(o.progress)
  for i = 1, count do
    local v = copies[i]
    copies[i] = nil
    local ok, r = run_task(fn, mode, v, i, o.out)
    if ok then
      results[i] = r
    elseif o.collect then
      failures = failures or {}
      failures[i] = r
    else
      progress_tick(bar, i, total, true)
      a._err = r
      return
    end
    progress_tick(bar, i, total, false)
  end
  progress_tick(bar, count, count, true)
  results.n = count
  a._values, a._failures = o.out or results, failures or {}
end

local function submit_map(self, fname, mode, fn, src, opts, allow_cb)
  openpool(self, fname)
  local o = h.check_call(self, fn, src, opts, fname, "items", allow_cb, true)
  check_fn_sendable(fn)
  local a = new_async("map", o)
  run_map(a, fn, mode, src, o, fname)
  finish(a, o)
  return a
end

function Pool:map_async(fn, items, opts)
  return submit_map(self, "pool:map_async", "map", fn, items, opts, true)
end

function Pool:starmap_async(fn, items, opts)
  return submit_map(self, "pool:starmap_async", "star", fn, items, opts, true)
end

function Pool:map(fn, items, opts)
  return push_values(submit_map(self, "pool:map", "map", fn, items, opts, false))
end

function Pool:starmap(fn, items, opts)
  return push_values(submit_map(self, "pool:starmap", "star", fn, items, opts, false))
end

local function run_apply(fn, args, o)
  check_fn_sendable(fn)
  args = copy(args, "args")
  local a = new_async("apply", o)
  local ok, r = run_task(fn, "apply", args, 0)
  if ok then a._values = r else a._err = r end
  finish(a, o)
  return a
end

function Pool:apply_async(fn, args, opts)
  openpool(self, "pool:apply_async")
  local o = h.check_call(self, fn, args, opts, "pool:apply_async", "args", true)
  return run_apply(fn, args or {}, o)
end

function Pool:apply(fn, ...)
  openpool(self, "pool:apply")
  h.check_call(self, fn, nil, nil, "pool:apply", "fn")
  return push_values(run_apply(fn, { n = select("#", ...), ... }, {}))
end

-- ---- imap --------------------------------------------------------------------------

-- One task per step: returns index, value (index, nil, err with errors =
-- "collect"); raises a failure at its item otherwise.
local function imap_common(self, fname, fn, src, opts)
  openpool(self, fname)
  local o = h.check_call(self, fn, src, opts, fname, "items")
  check_fn_sendable(fn)
  local nxt, total = items_of(src, "map")
  local bar = progress_new(o.progress)
  local over = false
  local function step()
    if over then return nil end
    if self._state == "terminated" then error("mpe: the pool was terminated during imap", 0) end
    local i, v = nxt()
    if i == nil then
      over = true
      progress_tick(bar, total or 0, total, true)
      return nil
    end
    local ok, r = run_task(fn, "map", copy(v, "item"), i)
    progress_tick(bar, i, total, false)
    if ok then return i, r end
    if o.collect then return i, nil, r end
    over = true
    progress_tick(bar, i, total, true)
    error(r, 0)
  end
  return step
end

function Pool:imap(fn, items, opts)
  return imap_common(self, "pool:imap", fn, items, opts)
end

function Pool:imap_unordered(fn, items, opts)
  return imap_common(self, "pool:imap_unordered", fn, items, opts)
end

-- ---- lifecycle ---------------------------------------------------------------------

function Pool:close()
  checkpool(self, "pool:close")
  if self._state == "open" then self._state = "closed" end
end

function Pool:terminate()
  checkpool(self, "pool:terminate")
  if self._state ~= "joined" then self._state = "terminated" end
end

function Pool:join()
  checkpool(self, "pool:join")
  if self._state == "open" then error("mpe: pool:join: call pool:close() or pool:terminate() first", 2) end
  self._state = "joined"
end

PoolMT.__index = function(self, k)
  if k == "workers" or k == "started" then return 0 end
  if k == "state" then return rawget(self, "_state") end
  if k == "inline" then return true end
  return Pool[k]
end

PoolMT.__tostring = function(self) return string.format("mpe.Pool (inline, %s)", self._id) end

-- <close>: a normal exit closes and joins; an exit by error terminates.
PoolMT.__close = function(self, e)
  if self._owner ~= h.pid() then return end
  if e ~= nil then
    if self._state ~= "joined" then self._state = "terminated" end
  else
    if self._state == "open" then self._state = "closed" end
    self._state = "joined"
  end
end

-- Called with no arguments at all (pool.join()), a method says "got no
-- value", as the C methods do: a Lua function sees nil otherwise.
for prefix, methods in pairs{ ["pool:"] = Pool, ["async:"] = Async } do
  for name, f in pairs(methods) do
    local what = prefix == "pool:" and "mpe.Pool" or "mpe.AsyncResult"
    methods[name] = function(...)
      if select("#", ...) == 0 then h.selferror(prefix .. name, what) end
      return f(...)
    end
  end
end

-- A new inline pool; opts is mpe.pool's argument 1, already checked by C.
function M.new(opts, helpers)
  h = helpers
  local p = setmetatable({ _state = "open", _owner = h.pid() }, PoolMT)
  p._id = tostring({}):match("0x%x+") or "?"
  if type(opts) == "table" and opts.initializer ~= nil then
    local args = copy(opts.initargs or {}, "initargs")
    local r = { xpcall(opts.initializer, h.handler, unpack(args, 1, rawlen and rawlen(args) or #args)) }
    if not r[1] then
      local e = task_error(r[2], 0)
      e.message = "pool initializer failed: " .. e.message
      p._broken = e
    end
  end
  return p
end

M.async_mt = AsyncMT
M.pool_mt = PoolMT

return M
