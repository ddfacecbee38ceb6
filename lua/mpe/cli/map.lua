-- mpe.cli.map -- `mpe map`: apply a Lua function to every line of the input
-- in a pool of worker processes, and write the results one per line.
-- SPDX-License-Identifier: MIT
--
-- The parent reads the input in large blocks and cuts it into items of up to
-- K lines (and at most MAX_ITEM_BYTES, but always at least one line); each
-- item travels as ONE string, so the per-line cost in the parent is a single
-- string.find. A worker splits its item into lines, applies the function to
-- each and sends back ONE string of output lines. K is --chunk-lines, or by
-- default adapts: it starts at 1 (an expensive function over a short input
-- still spreads over every worker) and follows the measured cost per line so
-- that an item takes about TARGET_ITEM_S. pool:imap (or imap_unordered) pulls
-- items lazily from the reader. The input goes through in segments of
-- SEGMENT_BYTES, one imap each, so the pool's store of sent items is dropped
-- at every segment's end: memory stays bounded whatever the input's size and
-- line length.
-- Line numbers never travel: the parent keeps, per item in flight, its file
-- and first line, and a worker reports a failure by its line within the item.
-- Written for Lua 5.4 and LuaJIT alike (no integer division, no bit
-- operators, no <close>).
local M = {}

local find, sub, byte, concat = string.find, string.sub, string.byte, table.concat
local format = string.format

local BLOCK = 262144           -- bytes read from the input at a time
local MAX_ITEM_BYTES = 262144  -- an item ends after the line that crosses this
local MAX_AUTO_LINES = 4096     -- the adaptive K stays within 1 .. this
local TARGET_ITEM_S = 0.004    -- the adaptive K aims at items of about 4 ms
local SEGMENT_BYTES = 16 * 1048576 -- input per imap call

local args = require "mpe.cli.args"

-- The command line (parsed by mpe.cli.args, as every subcommand's).
M.spec = {
  name = "map",
  usage = "mpe map [-j N] [options] (-e CODE | -f FILE) [INPUT...]",
  help = [[
  CODE (or the file FILE) is Lua code that returns a function; mpe map applies
  it to every line of the inputs (files, or '-' for stdin; stdin when none is
  given), without the line's newline (a trailing \r is removed too), in
  parallel, and writes each result on a line of its own, in input order.
  A nil result writes nothing; strings, numbers and booleans are written as
  text; a table is an error unless --json is given.
options:
  -e CODE            the Lua code that returns the function
  -f FILE            the same, from a file
  -j N, --jobs N     worker processes (default: env MPE_WORKERS, else the CPUs;
                     0: no worker processes, lines run in mpe map itself)
  --unordered        write results as they complete, not in input order
  --chunk-lines K    lines sent to a worker at a time (default: adapts, from
                     1 up to 4096, so that a batch takes about 4 ms)
  --json             write every result as one line of JSON (tables too)
  --keep-going, -k   on a failing line, report it and go on; exit 1 at the end
  --progress         a progress bar on stderr when it is a terminal
                     (env MPE_PROGRESS=force draws it anyway)
  -h, --help         print this help
exit status: 0 ok, 1 a line failed (its file and line number are on stderr),
2 usage]],
  options = {
    { "-e", value = "CODE", key = "code", missing = "-e needs a string of Lua code" },
    { "-f", value = "FILE", key = "file" },
    { "-j", "--jobs", value = "N", key = "workers", check = args.workers },
    { nil, "--unordered" },
    { nil, "--chunk-lines", value = "K", check = args.count("--chunk-lines", "a line count", 1, 1048576) },
    { nil, "--json" },
    { "-k", "--keep-going" },
    { nil, "--progress" },
  },
}

-- ---- a small JSON encoder (results of --json) ------------------------------------

local escapes = { ['"'] = '\\"', ['\\'] = '\\\\', ['\b'] = '\\b', ['\f'] = '\\f',
                  ['\n'] = '\\n', ['\r'] = '\\r', ['\t'] = '\\t' }
local function escape_char(c)
  return escapes[c] or format("\\u%04x", byte(c))
end

local encode_value

-- JSON text is Unicode, a Lua string is bytes: a byte that does not belong to
-- a well-formed UTF-8 sequence (a stray continuation byte, a truncated or
-- overlong sequence, a surrogate, above U+10FFFF) is REPLACED by U+FFFD, one
-- per byte, as Python's errors="replace" does, so that every line is valid
-- JSON; the rest of the string is kept as it is.
local REPLACEMENT = "\239\191\189"
local function utf8_clean(s)
  if not s:find("[\128-\255]") then return s end
  local out, n, i, start = {}, #s, 1, 1
  while i <= n do
    local c = byte(s, i)
    local len = c < 0x80 and 1 or (c >= 0xC2 and c <= 0xDF) and 2 or (c >= 0xE0 and c <= 0xEF) and 3
                or (c >= 0xF0 and c <= 0xF4) and 4 or 0
    local ok = len > 0 and i + len - 1 <= n
    for k = 1, ok and len - 1 or 0 do
      local b = byte(s, i + k)
      if b < 0x80 or b > 0xBF then ok = false break end
    end
    if ok and len > 2 then -- overlong forms, surrogates, beyond U+10FFFF
      local b = byte(s, i + 1)
      ok = not ((c == 0xE0 and b < 0xA0) or (c == 0xED and b > 0x9F) or (c == 0xF0 and b < 0x90)
                or (c == 0xF4 and b > 0x8F))
    end
    if ok then
      i = i + len
    else
      out[#out + 1] = s:sub(start, i - 1)
      out[#out + 1] = REPLACEMENT
      i = i + 1
      start = i
    end
  end
  out[#out + 1] = s:sub(start)
  return concat(out)
end

local function encode_string(s)
  return '"' .. utf8_clean(s):gsub('[%c"\\]', escape_char) .. '"'
end

-- Integers as integers (all 64 bits), floats as the shortest text that reads
-- back as the same float (0.1, not 0.10000000000000001), -0.0 with its sign;
-- a float with an integral value below 2^53 is written as an integer.
local math_type = math.type or function() return "float" end
local function encode_number(x)
  if math_type(x) == "integer" then return format("%d", x) end
  if x ~= x or x == math.huge or x == -math.huge then
    error("cannot write " .. tostring(x) .. " as JSON", 0)
  end
  if x == 0 and 1 / x < 0 then return "-0.0" end
  if x == math.floor(x) and x > -2^53 and x < 2^53 then
    return format("%d", x)
  end
  for digits = 15, 16 do
    local s = format("%." .. digits .. "g", x)
    if tonumber(s) == x then return s end
  end
  return format("%.17g", x)
end

local function encode_table(t, seen, depth)
  if seen[t] then error("cannot write a table that contains itself as JSON", 0) end
  if depth > 200 then error("cannot write tables nested deeper than 200 as JSON", 0) end
  seen[t] = true
  local n, keys, nkeys, array = #t, {}, 0, true
  for k in pairs(t) do
    nkeys = nkeys + 1
    if type(k) ~= "number" or k < 1 or k > n or k ~= math.floor(k) then array = false end
    keys[nkeys] = k
  end
  local out = {}
  if array and nkeys == n then          -- a sequence (and {}) is a JSON array
    for i = 1, n do out[i] = encode_value(t[i], seen, depth + 1) end
    seen[t] = nil
    return "[" .. concat(out, ",") .. "]"
  end
  for i = 1, nkeys do
    local k = keys[i]
    local tk = type(k)
    if tk == "number" then
      keys[i] = encode_number(k)
    elseif tk ~= "string" then
      error("cannot write a table with a " .. tk .. " key as JSON", 0)
    end
    out[i] = { keys[i], t[k] }
  end
  table.sort(out, function(a, b) return a[1] < b[1] end)  -- stable output
  for i = 1, nkeys do
    out[i] = encode_string(out[i][1]) .. ":" .. encode_value(out[i][2], seen, depth + 1)
  end
  seen[t] = nil
  return "{" .. concat(out, ",") .. "}"
end

encode_value = function(v, seen, depth)
  local t = type(v)
  if t == "string" then return encode_string(v) end
  if t == "number" then return encode_number(v) end
  if t == "boolean" then return v and "true" or "false" end
  if t == "nil" then return "null" end
  if t == "table" then return encode_table(v, seen, depth) end
  error("cannot write a " .. t .. " as JSON", 0)
end

-- JSON text of v on one line (strings are quoted; control characters escaped).
function M.json(v)
  return encode_value(v, {}, 0)
end

-- ---- the worker side ---------------------------------------------------------------

-- State the workers inherit by fork: the user's function never travels, so
-- its upvalues may be anything (open files, coroutines, ...).
M.state = {}

-- Apply the function to each line of text (lines each ending in "\n").
-- Returns the output lines as one string, or, if some line failed, a table
-- { output, line, message, line, message, ... } with lines counted within
-- the item. Without --keep-going it stops at the first failure.
-- This function travels to the workers: it reaches the state through the
-- worker's own globals (package.loaded), not through an upvalue. The loop
-- keeps everything in locals but the line counter: after an error, the
-- counter says which line failed and where to go on.
function M.run(text)
  local st = package.loaded["mpe.cli.map"].state
  local fn, json, keep_going = st.fn, st.json, st.keep_going
  local gmatch, sb, bt, tp, ts = string.gmatch, string.sub, string.byte, type, tostring
  local out, ln = {}, 0
  local cr = string.find(text, "\r", 1, true)  -- one scan: most inputs have no \r
  local function loop(rest)
    local fn, out, n, json = fn, out, #out, json
    for line in gmatch(rest, "([^\n]*)\n") do
      ln = ln + 1
      if cr and bt(line, -1) == 13 then line = sb(line, 1, -2) end
      local r = fn(line)
      if r ~= nil then
        if json then
          r = json(r)
        else
          local t = tp(r)
          if t == "boolean" then
            r = ts(r)
          elseif t ~= "string" and t ~= "number" then
            error("the function returned a " .. t ..
                  (t == "table" and " (use --json to write tables as JSON)" or ""), 0)
          end
        end
        n = n + 1
        out[n] = r
      end
    end
  end
  local fails
  local ok, err = pcall(loop, text)
  while not ok do
    fails = fails or {}
    fails[#fails + 1] = ln
    fails[#fails + 1] = ts(err)
    if not keep_going then break end
    local pos = 1                       -- go on after line ln
    for _ = 1, ln do pos = string.find(text, "\n", pos, true) + 1 end
    ok, err = pcall(loop, sb(text, pos))
  end
  if #out > 0 then out[#out + 1] = "" end  -- a newline after the last line too
  local s = table.concat(out, "\n")
  if not fails then return s end
  table.insert(fails, 1, s)
  return fails
end

-- ---- the parent side ---------------------------------------------------------------

-- A reader of items of up to reader.k lines (and about MAX_ITEM_BYTES) from
-- the inputs in order; an item never spans two inputs, and every line in it ends
-- with "\n" (one is added to a last line that lacks it). reader:segment(meta)
-- returns an iterator over the items of the next SEGMENT_BYTES of input,
-- recording in meta[i], for its i-th item, the input, first line, line count
-- and size; reader.done is true once the input is exhausted.
local function reader(inputs, k)
  local fi, f = 0, nil
  local data, pos, lines = "", 1, 0
  local self = { done = false, k = k }

  -- Append a block of input to data. Returns false at the end of the input.
  -- A line longer than a block makes the reads grow with it, so a long line
  -- costs linear time, not quadratic.
  local function fill()
    local want = #data - pos + 1
    if want < BLOCK then want = BLOCK end
    local b, err = f:read(want)
    if not b then
      if err then error("mpe map: cannot read " .. inputs[fi].name .. ": " .. err, 0) end
      return false
    end
    if pos > #data then data = b else data = sub(data, pos) .. b end
    pos = 1
    return true
  end

  -- The next item of the input, and its meta; nil at the end.
  local function item()
    while true do
      if not f then
        fi = fi + 1
        local input = inputs[fi]
        if not input then
          self.done = true
          return nil
        end
        if input.path == "-" then
          f = io.stdin
        else
          local err
          f, err = io.open(input.path, "rb")
          if not f then error("mpe map: cannot open " .. err, 0) end
        end
        data, pos, lines = "", 1, 0
      end
      local count, p, eof = 0, pos, false
      k = self.k
      while count < k and p - pos < MAX_ITEM_BYTES do
        local e = find(data, "\n", p, true)
        if e then
          count = count + 1
          p = e + 1
        else
          local off = p - pos
          if not fill() then eof = true break end
          p = pos + off
        end
      end
      local text
      if eof and p <= #data then        -- a last line without a newline
        text = sub(data, pos) .. "\n"
        count = count + 1
        pos = #data + 1
      elseif count > 0 then
        text = sub(data, pos, p - 1)
        pos = p
      end
      if eof then
        if f ~= io.stdin then f:close() end
        f = nil
      end
      if text then
        local m = { fi, lines + 1, count, #text }
        lines = lines + count
        return text, m
      end
    end
  end

  function self.segment(_, meta)
    local idx, bytes = 0, 0
    return function()
      if bytes >= SEGMENT_BYTES then return nil end
      local text, m = item()
      if not text then return nil end
      idx = idx + 1
      meta[idx] = m
      bytes = bytes + #text
      return text
    end
  end

  return self
end

local function say(msg)
  io.stdout:flush()
  io.stderr:write(msg, "\n")
end

-- Parse the words after `map`. Returns an options table, or nil and the exit
-- status (2 for usage errors, 0 after --help).
local function parse(words)
  local o, status = args.parse(M.spec, words)
  if not o then return nil, status end
  if o.code and o.file then return nil, args.fail(M.spec, "give one of -e CODE and -f FILE, not both") end
  if not o.code and not o.file then
    return nil, args.fail(M.spec, "give the function: -e CODE or -f FILE")
  end
  o.inputs = o.positional
  return o
end

-- Load the user's code and call it for the function.
local function load_function(o)
  local chunk, err
  if o.code then
    chunk, err = load(o.code, "=(command line)")
  else
    chunk, err = loadfile(o.file)
  end
  if not chunk then return nil, err end
  local ok, fn = pcall(chunk)
  if not ok then return nil, tostring(fn) end
  if type(fn) ~= "function" and not (type(fn) == "table" and getmetatable(fn)
                                     and getmetatable(fn).__call) then
    return nil, (o.code and "-e CODE" or o.file) .. " must return a function, got " .. type(fn)
  end
  return fn
end

function M.main(args)
  local o, status = parse(args)
  if not o then return status end
  local mpe = require "mpe"
  local inputs = {}
  if #o.inputs == 0 then o.inputs[1] = "-" end
  for i, path in ipairs(o.inputs) do
    if path ~= "-" then
      local f, err = io.open(path, "rb")
      if not f then
        say("mpe map: cannot open " .. err)
        return 1
      end
      local ok, rerr = f:read(0)          -- a directory opens, but cannot be read
      if not ok and rerr then
        f:close()
        say("mpe map: cannot read " .. path .. ": " .. rerr)
        return 1
      end
      local size = f:seek("end")
      f:close()
      inputs[i] = { path = path, name = path, size = size }
    else
      inputs[i] = { path = "-", name = "(stdin)" }
    end
  end
  local fn, err = load_function(o)
  if not fn then
    say("mpe map: " .. err)
    return 1
  end
  local st = M.state
  st.fn, st.keep_going = fn, o.keep_going
  st.json = o.json and M.json or nil

  -- The pool forks now: the workers inherit the state above.
  local pool = mpe.pool(o.workers)
  local meta -- of the current segment's items
  -- Each item is already a batch of lines, so the pool sends them one at a
  -- time (chunksize = 1; its first chunks of 16 items would put a short input
  -- on one worker). The pool queues about 8 ms of work per worker, up to 256
  -- items: the window must cover that for every worker, or the first worker
  -- takes everything. Memory is bounded by the segments, not by the window.
  local window = 512 * pool.workers
  if window < 1024 then window = 1024 end
  if window > 65536 then window = 65536 end

  local progress, total_bytes, done_bytes, done_lines = nil, 0, 0, 0
  if o.progress then
    local P = require "mpe.progress"
    if P.enabled(true) then
      progress = { mode = true, unit = "lines", start = mpe.now(), done = 0 }
      for _, input in ipairs(inputs) do
        if not input.size then total_bytes = nil break end
        total_bytes = total_bytes + input.size
      end
      progress.update = P.update
    end
  end

  local failed = 0
  local function fail(idx, line_in_item, msg)
    local m = meta[idx]
    local where
    if line_in_item then
      where = format("%s:%d", inputs[m[1]].name, m[2] + line_in_item - 1)
    elseif m[3] == 1 then
      where = format("%s:%d", inputs[m[1]].name, m[2])
    else
      where = format("%s:%d-%d", inputs[m[1]].name, m[2], m[2] + m[3] - 1)
    end
    failed = failed + 1
    say("mpe map: " .. where .. ": " .. msg)
  end

  local out = io.stdout
  local method = o.unordered and pool.imap_unordered or pool.imap
  local opts = { window = window, errors = "collect", chunksize = 1 }
  local rd = reader(inputs, o.chunk_lines or 1)
  local auto, t_start, lines_seen, items_seen = not o.chunk_lines, mpe.now(), 0, 0
  local stop = false
  local function segments()
    while not stop and not rd.done do
      meta = {}
      for idx, res, err in method(pool, M.run, rd:segment(meta), opts) do
        if err then
          -- the whole item failed outside the function (a worker died, ...)
          fail(idx, nil, (tostring(err):gsub("^mpe: ", "")))
          stop = not o.keep_going
        elseif type(res) == "string" then
          out:write(res)
        else
          out:write(res[1])
          for i = 2, #res, 2 do fail(idx, res[i], res[i + 1]) end
          stop = not o.keep_going
        end
        if progress then
          local m = meta[idx]
          done_lines, done_bytes = done_lines + m[3], done_bytes + m[4]
          progress.done = done_lines
          progress.fraction = total_bytes and total_bytes > 0 and done_bytes / total_bytes or nil
          progress.now = mpe.now()
          progress.update(progress)
        end
        if auto then
          -- the cost of a line, from the lines done so far with every worker busy
          lines_seen, items_seen = lines_seen + meta[idx][3], items_seen + 1
          if items_seen % 32 == 0 then
            local per_line = (mpe.now() - t_start) * pool.workers / lines_seen
            local k = math.floor(TARGET_ITEM_S / per_line)
            rd.k = k < 1 and 1 or k > MAX_AUTO_LINES and MAX_AUTO_LINES or k
          end
        end
        meta[idx] = nil
        if stop then break end
      end
      -- The finished job's store is C memory that Lua's collector does not
      -- see; collect now (the Lua heap is small) rather than some segments later.
      collectgarbage()
    end
  end
  -- A read error in the middle of the input ends the run like a failing line.
  local ok, perr = pcall(segments)
  if not ok then
    if type(perr) ~= "string" or perr:sub(1, 9) ~= "mpe map: " then error(perr, 0) end
    say(perr)
    failed, stop = failed + 1, true
  end
  out:flush()
  if stop then
    pool:terminate()
    if progress then progress.final = true progress.update(progress) end
    return 1
  end
  pool:close()
  pool:join()
  if progress then
    progress.final, progress.now, progress.fraction = true, mpe.now(), total_bytes and 1 or nil
    progress.update(progress)
  end
  return failed > 0 and 1 or 0
end

return M
