-- mpe.cli.args -- the one command-line parser of the mpe command: every
-- subcommand (run, -e, map, scale, version, help, completion) describes its
-- options in a table and parses, prints its help and reports usage errors
-- through here, so all behave alike.
-- SPDX-License-Identifier: MIT
--
-- A spec is { name = "map", usage = "mpe map [-j N] ...", help = text,
-- options = { opt, ... }, stop = true|false }; an option is
-- { "-j", "--jobs", value = "N", key = "workers", check = fn, list = true }:
-- a short and/or long name, `value` naming its argument when it takes one
-- (given as `-j N`, `-jN`, `--jobs N` or `--jobs=N`), `check(v)` returning
-- the converted value or nil and a message, `list` collecting repeats in order.
-- -h and --help are every subcommand's. Words that are not options are the
-- positionals; with `stop`, the first one ends the options (the script and
-- its own arguments: `mpe run s.lua -v` gives -v to s.lua); `--` always does.
-- A usage error prints two lines on stderr, what is wrong and the usage with
-- a pointer to the help, and gives exit status 2.
-- Written for Lua 5.4 and LuaJIT alike.
local M = {}

local function key_of(opt)
  if opt.key then return opt.key end
  local long = opt[2] or opt[1]
  return (long:gsub("^%-+", ""):gsub("%-", "_"))
end

-- The hint line of a usage error: the usage, and where the help is.
function M.hint(spec)
  return "usage: " .. spec.usage .. "  (more: mpe help " .. (spec.topic or spec.name) .. ")"
end

-- Report a usage error of spec's subcommand; returns exit status 2.
function M.fail(spec, msg)
  io.stdout:flush()
  io.stderr:write(spec.name == "mpe" and "mpe: " or "mpe " .. spec.name .. ": ", msg, "\n",
                  M.hint(spec), "\n")
  return 2
end

-- The full help of spec's subcommand, on stdout; returns exit status 0.
function M.help(spec)
  io.stdout:write("usage: ", spec.usage, "\n", spec.help, "\n")
  return 0
end

-- Parse args[first..] (first defaults to 1) by spec. Returns a table of the
-- options by key plus `positional` (a list) and `next` (the index after the
-- words parsed: with `stop`, the first positional's); or nil and an exit
-- status after printing the help (0) or a usage error (2).
function M.parse(spec, args, first)
  local byname = { ["-h"] = { "-h", "--help", key = "help" },
                   ["--help"] = { "-h", "--help", key = "help" } }
  for _, opt in ipairs(spec.options) do
    if opt[1] then byname[opt[1]] = opt end
    if opt[2] then byname[opt[2]] = opt end
  end
  local o, pos = { positional = {} }, {}
  local i, n = first or 1, #args
  while i <= n do
    local a = args[i]
    if a == "--" then
      i = i + 1
      if spec.stop then break end
      for j = i, n do pos[#pos + 1] = args[j] end
      i = n + 1
      break
    elseif a:sub(1, 1) ~= "-" or a == "-" then
      if spec.stop then break end
      pos[#pos + 1] = a
    else
      local name, inline = a, nil
      if a:sub(1, 2) == "--" then
        local eq = a:find("=", 3, true)
        if eq then name, inline = a:sub(1, eq - 1), a:sub(eq + 1) end
      elseif not byname[a] and byname[a:sub(1, 2)] and byname[a:sub(1, 2)].value then
        name, inline = a:sub(1, 2), a:sub(3)           -- -j4
      end
      local opt = byname[name]
      if not opt then return nil, M.fail(spec, "unknown option '" .. a .. "'") end
      if opt.key == "help" then return nil, M.help(spec) end
      local k, v = key_of(opt), true
      if opt.value then
        v = inline
        if not v then
          i = i + 1
          v = args[i]
          if v == nil then
            return nil, M.fail(spec, (opt.missing or name .. " needs a value"))
          end
        end
        if opt.check then
          local checked, msg = opt.check(v)
          if checked == nil then return nil, M.fail(spec, msg) end
          v = checked
        end
      elseif inline then
        return nil, M.fail(spec, "option '" .. name .. "' takes no value")
      end
      if opt.list then
        o[k] = o[k] or {}
        o[k][#o[k] + 1] = v
      else
        o[k] = v
      end
    end
    i = i + 1
  end
  if spec.stop then
    for j = i, n do pos[#pos + 1] = args[j] end
  end
  o.positional, o.next = pos, i
  return o
end

-- check for -j N: a worker count from 0 (no workers: the pool runs tasks
-- inline) to 1024.
function M.workers(v)
  local w = tonumber(v)
  if not w or w ~= math.floor(w) or w < 0 or w > 1024 then
    return nil, "-j needs a worker count from 0 to 1024, got '" .. v .. "'"
  end
  return w
end

-- A check for a whole number from lo to hi, named what in the message.
function M.count(flag, what, lo, hi)
  return function(v)
    local c = tonumber(v)
    if not c or c ~= math.floor(c) or c < lo or c > hi then
      return nil, string.format("%s needs %s from %d to %d, got '%s'", flag, what, lo, hi, v)
    end
    return c
  end
end

return M
