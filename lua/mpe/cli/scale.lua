-- mpe.cli.scale -- `mpe scale`: run a workload script at several worker counts
-- and report wall time, speedup and efficiency (a table, and optionally an SVG
-- chart and a CSV of the raw runs).
-- SPDX-License-Identifier: MIT
--
-- Each run is a fresh child process, the mpe executable itself running
-- `mpe run script args...` with env MPE_WORKERS set to the count, so every pool
-- the script creates without an explicit size gets that many workers, and no
-- run inherits warm caches or a grown heap from the one before. The wall time
-- is taken around the whole child on a monotonic clock (mpe.now()): it
-- includes the child's start (about a millisecond), which is what a user
-- waits for. Written for Lua 5.4 and LuaJIT alike.
local M = {}

local format = string.format

local args = require "mpe.cli.args"

-- A check for -j LIST: worker counts (0 to 1024; 0: inline pools, the serial
-- baseline), commas between, each once.
local function worker_list(v)
  local list, seen = {}, {}
  for word in (v .. ","):gmatch("([^,]*),") do
    local w = tonumber(word)
    if not w or w ~= math.floor(w) or w < 0 or w > 1024 then
      return nil, "-j needs worker counts from 0 to 1024 separated by commas, got '" .. v .. "'"
    end
    if not seen[w] then
      seen[w] = true
      list[#list + 1] = w
    end
  end
  return list
end

-- The command line (parsed by mpe.cli.args, as every subcommand's).
M.spec = {
  name = "scale",
  usage = "mpe scale [-j 1,2,4,...] [--repeat R] [--svg FILE] [--csv FILE] script.lua [args...]",
  help = [[
  Runs `mpe run script.lua args...` R times at each worker count, with env
  MPE_WORKERS set to the count (pools created without a size use it; an
  argument written {workers} is replaced by the count as well), and prints
  the median wall time, its min-max, the speedup over the first count and the
  efficiency. Count 0 runs the pools inline (every task in the script's own
  process): -j 0,1,2,... measures against a true serial baseline. The script's
  output is discarded; a failing run stops mpe scale with its error output
  and exit status 1.
options:
  -j LIST, --jobs LIST  worker counts, comma-separated (default 1,2,...,CPUs; at least 1,2)
  --repeat R            runs per worker count (default 3)
  --svg FILE            write a chart of speedup against workers, with the ideal line
  --csv FILE            write the raw runs: workers,run,seconds
  -h, --help            print this help
exit status: 0 ok, 1 a run failed, 2 usage]],
  stop = true,
  options = {
    { "-j", "--jobs", value = "LIST", key = "workers", check = worker_list },
    { nil, "--repeat", value = "R", key = "rep", check = args.count("--repeat", "a count", 1, 1000) },
    { nil, "--svg", value = "FILE" },
    { nil, "--csv", value = "FILE" },
  },
}

local function parse(words)
  local o, status = args.parse(M.spec, words)
  if not o then return nil, status end
  if #o.positional == 0 then return nil, args.fail(M.spec, "give the script to run") end
  o.rep = o.rep or 3
  o.script = o.positional[1]
  o.args = {}
  for j = 2, #o.positional do o.args[#o.args + 1] = o.positional[j] end
  return o
end

local function quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

-- The mpe executable running this code.
local function executable(mpe)
  local self = "/proc/" .. mpe.current_process().pid .. "/exe"
  local p = io.popen("readlink -f " .. self .. " 2>/dev/null")
  local path = p and p:read("l")
  if p then p:close() end
  if path and path ~= "" then return path end
  return self
end

-- os.execute's result under Lua 5.4 (true|nil, "exit"|"signal", n) and
-- LuaJIT without 5.2 compatibility (a wait status): ok, description.
local function status(a, b, c)
  if type(a) == "number" then
    if a == 0 then return true end
    return false, format("status %d", a)
  end
  if a then return true end
  if b == "signal" then return false, format("killed by signal %d", c or 0) end
  return false, format("exit status %d", c or 1)
end

local function median(xs)
  local s = {}
  for i = 1, #xs do s[i] = xs[i] end
  table.sort(s)
  local n = #s
  if n % 2 == 1 then return s[(n + 1) / 2], s[1], s[n] end
  return (s[n / 2] + s[n / 2 + 1]) / 2, s[1], s[n]
end

-- ---- the chart ---------------------------------------------------------------------

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

local function f1(v) return format("%.1f", v) end

-- A step of 1, 2 or 5 times a power of ten giving about n ticks up to top.
local function tick_step(top, n)
  local raw = top / n
  local p = 10 ^ math.floor(math.log(raw, 10))
  for _, m in ipairs({ 1, 2, 5, 10 }) do
    if m * p >= raw then return m * p end
  end
  return 10 * p
end

-- rows: { {workers=, median=, min=, max=, speedup=, smin=, smax=}, ... };
-- cpus: the CPUs the runs could use (a marker when fewer than the counts).
function M.svg(rows, title, subtitle, cpus)
  local W, H = 640, 440
  local left, right, top, bottom = 64, 24, 74, 56
  local pw, ph = W - left - right, H - top - bottom
  local base = rows[1].workers
  local unit = math.max(base, 1) -- an inline (0) baseline is one process: the ideal is x / 1
  local xmax, ymax = unit, 1
  for _, r in ipairs(rows) do
    if r.workers > xmax then xmax = r.workers end
    if r.smax > ymax then ymax = r.smax end
  end
  local ideal_top = xmax / unit
  if ideal_top > ymax then ymax = ideal_top end
  local ystep = tick_step(ymax, 6)
  ymax = math.ceil(ymax / ystep - 1e-9) * ystep
  local xlo = 0
  local xhi = xmax + math.max(0.5, xmax * 0.05)
  local function X(v) return left + (v - xlo) / (xhi - xlo) * pw end
  local function Y(v) return top + ph - v / ymax * ph end

  local o = {}
  local function w(...) o[#o + 1] = format(...) end
  w('<?xml version="1.0" encoding="UTF-8"?>')
  w('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" ' ..
    'font-family="DejaVu Sans, Arial, sans-serif" font-size="12">', W, H, W, H)
  w('<rect x="0" y="0" width="%d" height="%d" fill="white"/>', W, H)
  w('<text x="%d" y="26" font-size="16" font-weight="bold">%s</text>', left - 40, esc(title))
  w('<text x="%d" y="46" font-size="11" fill="#555">%s</text>', left - 40, esc(subtitle))
  -- y grid, ticks and labels
  local v = 0
  while v <= ymax + 1e-9 do
    w('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#e6e6e6"/>', f1(X(xlo)), f1(Y(v)), f1(X(xhi)), f1(Y(v)))
    w('<text x="%s" y="%s" text-anchor="end">%s</text>', f1(X(xlo) - 8), f1(Y(v) + 4),
      format(ystep < 1 and "%.1f" or "%d", v))
    v = v + ystep
  end
  -- x ticks at the worker counts measured (thinned when there are many)
  local every = math.max(1, math.ceil(#rows / 16))
  for i, r in ipairs(rows) do
    if (i - 1) % every == 0 or i == #rows then
      w('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#333"/>', f1(X(r.workers)), f1(Y(0)),
        f1(X(r.workers)), f1(Y(0) + 5))
      w('<text x="%s" y="%s" text-anchor="middle">%d</text>', f1(X(r.workers)), f1(Y(0) + 19), r.workers)
    end
  end
  -- axes and their titles
  w('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#333"/>', f1(X(xlo)), f1(Y(0)), f1(X(xhi)), f1(Y(0)))
  w('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#333"/>', f1(X(xlo)), f1(Y(0)), f1(X(xlo)), f1(Y(ymax)))
  w('<text x="%s" y="%d" text-anchor="middle">workers (MPE_WORKERS)</text>', f1(left + pw / 2), H - 14)
  w('<text x="16" y="%s" text-anchor="middle" transform="rotate(-90 16 %s)">speedup over %s</text>',
    f1(top + ph / 2), f1(top + ph / 2),
    base == 0 and "the inline run" or format("%d worker%s", base, base == 1 and "" or "s"))
  -- ideal: speedup proportional to the workers, 1 at the first count
  w('<line class="ideal" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#999" stroke-width="1.5" ' ..
    'stroke-dasharray="6 4"/>', f1(X(0)), f1(Y(0)), f1(X(xmax)), f1(Y(xmax / unit)))
  -- past the CPUs there are, more workers only share them
  if cpus and cpus >= base and cpus < xmax then
    w('<line class="cpus" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#d08000" stroke-width="1" ' ..
      'stroke-dasharray="2 3"/>', f1(X(cpus)), f1(Y(0)), f1(X(cpus)), f1(Y(ymax)))
    w('<text x="%s" y="%s" font-size="11" fill="#d08000">%d CPUs</text>', f1(X(cpus) + 5),
      f1(Y(ymax) + 12), cpus)
  end
  -- measured: medians joined, min-max of the runs as whiskers
  local pts = {}
  for i, r in ipairs(rows) do pts[i] = f1(X(r.workers)) .. "," .. f1(Y(r.speedup)) end
  w('<polyline class="measured" points="%s" fill="none" stroke="#1f5fbf" stroke-width="2"/>',
    table.concat(pts, " "))
  for _, r in ipairs(rows) do
    local x = X(r.workers)
    w('<line class="range" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#1f5fbf" stroke-width="1"/>',
      f1(x), f1(Y(r.smin)), f1(x), f1(Y(r.smax)))
    w('<circle class="point" cx="%s" cy="%s" r="4.5" fill="#1f5fbf" data-workers="%d" ' ..
      'data-speedup="%.4f" data-median="%.6f" data-efficiency="%.4f"><title>%d workers: ' ..
      'speedup %.2f, median %.3f s</title></circle>', f1(x), f1(Y(r.speedup)), r.workers, r.speedup,
      r.median, r.efficiency, r.workers, r.speedup, r.median)
    w('<text x="%s" y="%s" text-anchor="start" font-size="11" fill="#1f5fbf">%.2f</text>',
      f1(x + 8), f1(Y(r.speedup) + 15), r.speedup)
  end
  -- legend
  local lx, ly = left + 16, top + 8
  w('<rect x="%d" y="%d" width="190" height="46" fill="white" stroke="#ccc"/>', lx - 8, ly - 4)
  w('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#1f5fbf" stroke-width="2"/>', lx, ly + 9, lx + 28, ly + 9)
  w('<circle cx="%d" cy="%d" r="4.5" fill="#1f5fbf"/>', lx + 14, ly + 9)
  w('<text x="%d" y="%d">measured (median, min-max)</text>', lx + 36, ly + 13)
  w('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999" stroke-width="1.5" stroke-dasharray="6 4"/>',
    lx, ly + 29, lx + 28, ly + 29)
  w('<text x="%d" y="%d">ideal (linear)</text>', lx + 36, ly + 33)
  w('</svg>')
  return table.concat(o, "\n") .. "\n"
end

-- ---- running -----------------------------------------------------------------------

local function write_file(path, text)
  local f, err = io.open(path, "w")
  if not f then return nil, err end
  local ok, werr = f:write(text)
  f:close()
  if not ok then return nil, werr end
  return true
end

function M.main(args)
  local o, st = parse(args)
  if not o then return st end
  local mpe = require "mpe"
  -- Say why now, as mpe run would, before any run is timed: a missing or
  -- unreadable file names the system's reason; a directory opens but
  -- cannot be read.
  local f, err = io.open(o.script, "r")
  if not f then
    io.stderr:write("mpe scale: cannot open ", err or o.script, "\n")
    return 1
  end
  local readable, rerr = f:read(0)
  f:close()
  if readable == nil and rerr then
    io.stderr:write("mpe scale: cannot read ", o.script, ": ", rerr, "\n")
    return 1
  end
  if not o.workers then
    o.workers = {}
    local n = mpe.cpu_count()
    if n < 2 then n = 2 end
    for w = 1, n do o.workers[w] = w end
  end
  local exe = executable(mpe)
  local errfile = os.tmpname()
  local rows, runs = {}, {}
  local base
  local name = o.script:match("[^/]*$")
  io.stdout:write(format("mpe scale: %s, %d run%s per worker count, %d CPUs\n", o.script, o.rep,
                         o.rep == 1 and "" or "s", mpe.cpu_count()))
  io.stdout:write(format("%7s  %9s  %-17s  %7s  %10s\n", "workers", "median s", "min-max s",
                         "speedup", "efficiency"))
  io.stdout:flush()
  for _, n in ipairs(o.workers) do
    local words = { "MPE_WORKERS=" .. n, "exec", quote(exe), "run", quote(o.script) }
    for _, a in ipairs(o.args) do
      words[#words + 1] = quote((a:gsub("{workers}", tostring(n))))
    end
    local cmd = table.concat(words, " ") .. " </dev/null >/dev/null 2>" .. quote(errfile)
    local times = {}
    for r = 1, o.rep do
      local t0 = mpe.now()
      local ok, why = status(os.execute(cmd))
      local t = mpe.now() - t0
      if not ok then
        local ef = io.open(errfile, "r")
        local text = ef and ef:read("a") or ""
        if ef then ef:close() end
        os.remove(errfile)
        io.stdout:flush()
        io.stderr:write(format("mpe scale: %s failed with %d worker%s (run %d, %s)%s\n", o.script, n,
                               n == 1 and "" or "s", r, why, text ~= "" and ":" or ""))
        if text ~= "" then io.stderr:write(text, text:sub(-1) == "\n" and "" or "\n") end
        return 1
      end
      times[r] = t
      runs[#runs + 1] = { n, r, t }
    end
    local med, lo, hi = median(times)
    base = base or { workers = n, median = med }
    local row = { workers = n, median = med, min = lo, max = hi, speedup = base.median / med,
                  smin = base.median / hi, smax = base.median / lo }
    -- speedup per process against the baseline's; 0 workers (inline) is one process
    row.efficiency = row.speedup * math.max(base.workers, 1) / math.max(n, 1)
    rows[#rows + 1] = row
    io.stdout:write(format("%7d  %9.3f  %-17s  %7.2f  %9.0f%%\n", n, med, format("%.3f-%.3f", lo, hi),
                           row.speedup, 100 * row.efficiency))
    io.stdout:flush()
  end
  os.remove(errfile)
  if o.csv then
    local lines = { "workers,run,seconds" }
    for _, r in ipairs(runs) do lines[#lines + 1] = format("%d,%d,%.6f", r[1], r[2], r[3]) end
    local ok, err = write_file(o.csv, table.concat(lines, "\n") .. "\n")
    if not ok then
      io.stderr:write("mpe scale: cannot write ", err, "\n")
      return 1
    end
  end
  if o.svg then
    local title = "mpe scale: " .. name .. (#o.args > 0 and (" " .. table.concat(o.args, " ")) or "")
    local subtitle = format("median wall time of %d run%s per count; %d worker%s: %.3f s; %d CPUs",
                            o.rep, o.rep == 1 and "" or "s", base.workers,
                            base.workers == 1 and "" or "s", base.median, mpe.cpu_count())
    local ok, err = write_file(o.svg, M.svg(rows, title, subtitle, mpe.cpu_count()))
    if not ok then
      io.stderr:write("mpe scale: cannot write ", err, "\n")
      return 1
    end
  end
  return 0
end

return M
