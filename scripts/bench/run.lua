-- run.lua -- the benchmark harness: every workload of workloads.lua measured,
-- in one run, with mpe's pool, serial Lua 5.4 and Python 3 multiprocessing,
-- and, when MPE_JIT_BIN names a LuaJIT build of mpe, that build's pool
-- against serial `luajit`; medians of R runs, each run in a fresh process;
-- one table of figures and ratios against the targets (issue 13); then a
-- scaling run (log loop at 1, 2 and 4 workers) drawn as an SVG chart.
--   mpe run scripts/bench/run.lua [--quick] [--runs R] [--only a,b] [--no-python]
--                                 [--no-jit] [--no-scale] [--wait-idle S] [--svg FILE] [--md FILE]
-- Programs: MPE_BIN (the Lua 5.4 build of mpe; default: the mpe running this
-- script), MPE_BENCH_LUA (default lua5.4), MPE_JIT_BIN (a LuaJIT build of mpe;
-- no LuaJIT rows without it), MPE_BENCH_LUAJIT (default luajit), MPE_OLD_BIN
-- (another Lua 5.4 build, e.g. the one before a change: its own row, measured
-- in the same rounds against the same serial runs), MPE_JIT_OLD_BIN (another
-- LuaJIT build, its row against the LuaJIT row's serial runs),
-- MPE_BENCH_PYTHON (default python3). The serial sides load mpe.so from the
-- directory of their build's mpe (for mpe.now()).
-- --quick: small sizes, a smoke test of the harness (figures mean little).
-- The sides of a workload run in interleaved rounds (mpe, serial, Python, then
-- again), so that a change of load during the run hits them alike. On a shared
-- machine, --wait-idle S waits before each run (at most S seconds) for half a
-- second in which the CPUs are at least 85% idle; the best (minimum) of the R
-- runs is shown next to the median, as it is the figure least disturbed by
-- other jobs.
-- A full run writes docs/bench-speedup.svg unless --svg says otherwise; a quick
-- run writes a chart only when --svg is given. --md FILE writes the results as
-- a Markdown table. The exit status is 1 when a side failed or the sides
-- disagree on a result; timings never decide it.
-- SPDX-License-Identifier: MIT

local mpe = require "mpe"

local dir = (arg[0]:match("^(.*)/[^/]*$") or ".")
package.path = dir .. "/?.lua;" .. package.path
local workloads = require "workloads"
local chart = require "chart"

-- ---- options ---------------------------------------------------------------------

local opt = { runs = 3, python = true, jit = true, scale = true }
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--quick" then opt.quick = true
    elseif a == "--runs" then i = i + 1; opt.runs = math.tointeger(tonumber(arg[i]))
    elseif a == "--only" then i = i + 1; opt.only = arg[i]
    elseif a == "--no-python" then opt.python = false
    elseif a == "--no-jit" then opt.jit = false
    elseif a == "--no-scale" then opt.scale = false
    elseif a == "--svg" then i = i + 1; opt.svg = arg[i]
    elseif a == "--md" then i = i + 1; opt.md = arg[i]
    elseif a == "--wait-idle" then i = i + 1; opt.wait_idle = tonumber(arg[i])
    elseif a == "--help" or a == "-h" then
      print("usage: mpe run scripts/bench/run.lua [--quick] [--runs R] [--only a,b] [--no-python] [--no-jit] [--no-scale] [--wait-idle S] [--svg FILE] [--md FILE]")
      os.exit(0)
    else
      io.stderr:write("run.lua: unknown option '" .. tostring(a) .. "' (try --help)\n")
      os.exit(2)
    end
    i = i + 1
  end
  if not opt.runs or opt.runs < 1 then
    io.stderr:write("run.lua: --runs needs a positive integer\n")
    os.exit(2)
  end
end
local selected = {}
if opt.only then
  for name in opt.only:gmatch("[^,]+") do
    if not workloads[name] then
      io.stderr:write("run.lua: no workload '" .. name .. "'\n")
      os.exit(2)
    end
    selected[name] = true
  end
end

-- ---- the programs ------------------------------------------------------------------

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end

local function readfile(path)
  local f = io.open(path)
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local function command_output(cmd)
  local h = io.popen(cmd .. " 2>&1")
  local out = h:read("a")
  local ok, how, code = h:close()
  return out, ok, how, code
end

-- The mpe binary: $MPE_BIN, else the word that started this script (arg at the
-- most negative index: `build/mpe run run.lua` gives arg[-2] = "build/mpe").
local MPE = os.getenv("MPE_BIN")
if not MPE then
  local k = -1
  while arg[k - 1] do k = k - 1 end
  MPE = arg[k]
end
local bindir = MPE:match("^(.*)/[^/]*$") or "."
local LUA = os.getenv("MPE_BENCH_LUA") or "lua5.4"
local MPE_JIT = os.getenv("MPE_JIT_BIN")
if MPE_JIT == "" or not opt.jit then MPE_JIT = nil end
local jitbindir = MPE_JIT and (MPE_JIT:match("^(.*)/[^/]*$") or ".")
local LUAJIT = os.getenv("MPE_BENCH_LUAJIT") or "luajit"
local MPE_OLD = os.getenv("MPE_OLD_BIN")
if MPE_OLD == "" then MPE_OLD = nil end
local MPE_JIT_OLD = MPE_JIT and os.getenv("MPE_JIT_OLD_BIN")
if MPE_JIT_OLD == "" then MPE_JIT_OLD = nil end
local PYTHON = os.getenv("MPE_BENCH_PYTHON") or "python3"
local CHILD = dir .. "/child.lua"
local PEERS = dir .. "/peers"
local TIMEOUT = "timeout 900 "

local have_python = opt.python and select(2, command_output(PYTHON .. " -c 'import multiprocessing'"))
local have_lua = select(2, command_output(LUA .. " -v"))
local have_luajit = MPE_JIT and select(2, command_output(LUAJIT .. " -v"))

-- The sides: "mpe" and "serial" (Lua 5.4), "old" (MPE_OLD_BIN), "jit" and
-- "serial_jit" (LuaJIT), "jit_old" (MPE_JIT_OLD_BIN), "python".
local function side_command(side, w, n, workers)
  local args = " " .. w.name .. " " .. n .. " " .. workers
  if side == "mpe" or side == "jit" or side == "old" or side == "jit_old" then
    local bin = side == "jit" and MPE_JIT or side == "old" and MPE_OLD or side == "jit_old" and MPE_JIT_OLD or MPE
    return TIMEOUT .. shell_quote(bin) .. " run " .. shell_quote(CHILD) .. " mpe" .. args
  elseif side == "serial" or side == "serial_jit" then
    -- mpe.so on the C path gives the serial side the same monotonic clock.
    local jit = side == "serial_jit"
    return "LUA_CPATH=" .. shell_quote((jit and jitbindir or bindir) .. "/?.so;;") .. " " .. TIMEOUT ..
      (jit and LUAJIT or LUA) .. " " .. shell_quote(CHILD) .. " serial" .. args
  else
    return "cd " .. shell_quote(PEERS) .. " && " .. TIMEOUT .. PYTHON .. " " .. w.python .. " " .. n .. " " .. workers
  end
end

-- ---- measuring -------------------------------------------------------------------------

local function median(xs)
  local s = {}
  for i, x in ipairs(xs) do s[i] = x end
  table.sort(s)
  local m = #s
  if m == 0 then return nil end
  if m % 2 == 1 then return s[(m + 1) // 2] end
  return (s[m // 2] + s[m // 2 + 1]) / 2
end

local function loadavg()
  local s = readfile("/proc/loadavg") or ""
  return s:match("^(%S+ %S+ %S+)") or "?"
end

local failures = 0

-- CPU time counters of the whole machine: busy and total jiffies.
local function cpu_jiffies()
  local line = (readfile("/proc/stat") or ""):match("^cpu%s+([^\n]+)")
  if not line then return nil end
  local v = {}
  for x in line:gmatch("%d+") do v[#v + 1] = tonumber(x) end
  local total = 0
  for _, x in ipairs(v) do total = total + x end
  local idle = (v[4] or 0) + (v[5] or 0)
  return total - idle, total
end

local waited, never_idle = 0, 0
-- Wait (at most opt.wait_idle seconds) for half a second in which the CPUs are
-- at least 85% idle: another job running on the machine would distort the run.
local function wait_idle()
  if not opt.wait_idle or opt.wait_idle <= 0 then return end
  local t0 = mpe.now()
  repeat
    local b0, t0j = cpu_jiffies()
    if not b0 then return end
    os.execute("sleep 0.5")
    local b1, t1j = cpu_jiffies()
    if t1j > t0j and (b1 - b0) / (t1j - t0j) <= 0.15 then
      waited = waited + (mpe.now() - t0)
      return
    end
  until mpe.now() - t0 > opt.wait_idle
  waited = waited + (mpe.now() - t0)
  never_idle = never_idle + 1
end

-- Run each side once per round, R rounds, interleaved. sides: list of
-- { key =, side =, w =, n =, workers = }. Returns key -> { median =, min =,
-- times =, check =, clock = } or { failed = why }.
local function measure_rounds(sides)
  local out = {}
  for _, sd in ipairs(sides) do out[sd.key] = { times = {} } end
  for _ = 1, opt.runs do
    for _, sd in ipairs(sides) do
      local res = out[sd.key]
      if not res.failed then
        wait_idle()
        local txt = command_output(side_command(sd.side, sd.w, sd.n, sd.workers))
        local secs, check, clock = txt:match("seconds=(%S+) check=(%S*) clock=(%S+)")
        if not secs then
          res.failed = (txt:gsub("%s+$", ""))
        elseif res.check and res.check ~= check then
          res.failed = "results differ between runs: " .. res.check .. " and " .. check
        else
          res.times[#res.times + 1] = tonumber(secs)
          res.check, res.clock = check, clock
        end
      end
    end
  end
  for _, res in pairs(out) do
    if not res.failed then
      res.median = median(res.times)
      res.min = math.min(table.unpack(res.times))
    end
  end
  return out
end

local function fmt_time(t)
  if not t then return "-" end
  if t < 0.01 then return string.format("%.2f ms", t * 1000) end
  return string.format("%.3f s", t)
end

local function fmt_rate(r)
  if r >= 1e6 then return string.format("%.2fM/s", r / 1e6) end
  if r >= 1e3 then return string.format("%.1fk/s", r / 1e3) end
  return string.format("%.0f/s", r)
end

local function cpu_model()
  local s = readfile("/proc/cpuinfo") or ""
  return s:match("model name%s*:%s*([^\n]+)") or "?"
end

local nproc = tonumber((command_output("nproc"))) or mpe.cpu_count()

print(string.format("mpe benchmarks%s: medians of %d runs, each in a fresh process", opt.quick and " (--quick: small sizes, a smoke test)" or "", opt.runs))
print(string.format("machine: %d CPUs (%s), mpe.cpu_count() = %d; load average at start: %s",
  nproc, cpu_model(), mpe.cpu_count(), loadavg()))
print(string.format("programs: %s (mpe %s), %s, %s", MPE, mpe.version,
  have_lua and (command_output(LUA .. " -v"):gsub("%s+$", "")) or (LUA .. ": not found"),
  have_python and (command_output(PYTHON .. " --version"):gsub("%s+$", "")) or "Python: not run"))
if MPE_OLD then print("old build rows: " .. MPE_OLD) end
if MPE_JIT_OLD then print("old LuaJIT build rows: " .. MPE_JIT_OLD) end
if MPE_JIT then
  print(string.format("LuaJIT rows: %s (%s), %s", MPE_JIT, (command_output(shell_quote(MPE_JIT) .. " version"):gsub("%s+$", "")),
    have_luajit and (command_output(LUAJIT .. " -v"):gsub("%s+$", "")) or (LUAJIT .. ": not found")))
end
print("")

-- ---- the workloads -------------------------------------------------------------------

-- The builds a workload is measured with, each a row of the table: the pool
-- under that build's mpe against the same code in that build's interpreter.
local BUILDS = {
  { name = "Lua 5.4", mpe = "mpe", serial = "serial", have_serial = have_lua },
  { name = "Lua 5.4 old", mpe = "old", serial = "serial", have_serial = have_lua, old = true },
  { name = "LuaJIT", mpe = "jit", serial = "serial_jit", have_serial = have_luajit, jit = true },
  { name = "LuaJIT old", mpe = "jit_old", serial = "serial_jit", have_serial = have_luajit, jit = true, jitold = true },
}

local SIDE_LABEL = { mpe = "mpe", serial = "lua5.4", old = "mpe-old", jit = "mpe-jit", serial_jit = "luajit",
  jit_old = "jit-old",
  python = "python" }

local rows = {}
-- --only NAME also selects the variants of NAME (workloads.lua, `variant`).
local function wanted(w)
  return not opt.only or selected[w.name] or (w.variant and selected[w.variant]) or false
end

for _, w in ipairs(workloads) do
  if wanted(w) then
    local n = opt.quick and w.quick or w.size
    local workers = w.workers or 2
    local title = string.format(w.title, n)
    print(title .. ":")
    local sides, builds = {}, {}
    for _, b in ipairs(BUILDS) do
      if (b.old and MPE_OLD and w.old ~= false) or
          (b.jit and MPE_JIT and w.jit ~= false and (not b.jitold or MPE_JIT_OLD)) or
          not (b.old or b.jit) then
        builds[#builds + 1] = b
        sides[#sides + 1] = b.mpe
        -- The old builds share the Lua 5.4 / LuaJIT rows' serial runs.
        if w.serial and b.have_serial and not b.old and not b.jitold then sides[#sides + 1] = b.serial end
      end
    end
    if w.python and have_python then sides[#sides + 1] = "python" end
    local plan = {}
    for i, side in ipairs(sides) do plan[i] = { key = side, side = side, w = w, n = n, workers = workers } end
    local got = measure_rounds(plan)
    local res_of = {}
    for _, side in ipairs(sides) do
      local res = got[side]
      if not res.failed then
        res_of[side] = res
        local ts = {}
        for i, t in ipairs(res.times) do ts[i] = fmt_time(t) end
        print(string.format("  %-8s median %-10s best %-10s runs: %s%s", SIDE_LABEL[side], fmt_time(res.median),
          fmt_time(res.min), table.concat(ts, ", "), res.clock == "wall" and "" or " (CPU clock: mpe.so not found)"))
      else
        failures = failures + 1
        print(string.format("  %-8s FAILED: %s", SIDE_LABEL[side], res.failed))
      end
    end
    -- Every side, of every build, must agree on the result.
    local ref, mismatch
    for _, side in ipairs(sides) do
      local res = res_of[side]
      if res then
        if ref and res.check ~= ref.check then
          mismatch = true
          failures = failures + 1
          print(string.format("  CHECK MISMATCH: %s gave %s, %s gave %s", SIDE_LABEL[ref.side], ref.check,
            SIDE_LABEL[side], res.check))
        end
        ref = ref or { side = side, check = res.check }
      end
    end
    if ref and not mismatch then print("  check: " .. ref.check .. (#sides > 1 and " (all sides agree)" or "")) end
    for _, b in ipairs(builds) do
      rows[#rows + 1] = { w = w, n = n, workers = workers, title = title, build = b, mismatch = mismatch,
        mpe = res_of[b.mpe], serial = res_of[b.serial], python = res_of.python,
        target = b.jit and (w.jit and w.jit.target) or (not b.jit and w.target) or nil }
    end
  end
end

-- ---- figures against the targets --------------------------------------------------------

-- The figure of a row from one statistic of the runs ("median" or "min").
local function evaluate(row, stat)
  local w, m, s, p = row.w, row.mpe, row.serial, row.python
  local e = { figure = "-", python = "-", target = "-", ratio = "-", status = "-" }
  if not m then return e end
  local t = row.target or {}
  local serial_name = row.build.jit and "luajit" or "serial"
  if w.figure == "speedup" then
    if s then e.figure = string.format("%.2fx %s", s[stat] / m[stat], serial_name) end
    if p then e.python = fmt_time(p[stat]) end
    local other = t.against == "python" and p or s
    if other then
      e.value = other[stat] / m[stat]
      e.ratio = string.format("%.2fx %s", e.value, t.against == "python" and "Python" or serial_name)
    end
  elseif w.figure == "rate" then
    e.figure = fmt_rate(row.n / m[stat])
    if p then
      e.python = fmt_rate(row.n / p[stat])
      e.value = p[stat] / m[stat]
      e.ratio = string.format("%.2fx Python", e.value)
    end
  elseif w.figure == "latency" then
    local ms = m[stat] / row.n * 1000
    e.figure = string.format("%.2f ms", ms)
    if p then
      e.python = string.format("%.2f ms", p[stat] / row.n * 1000)
      e.ratio = string.format("%.2fx Python", p[stat] / m[stat])
    end
    e.value = ms
  end
  if t.min then
    e.target = string.format(">= %g%s", t.min, t.against == "python" and "x Python" or ("x " .. serial_name))
    if e.value then e.status = e.value >= t.min and "met" or string.format("short: %.0f%%", 100 * e.value / t.min) end
  elseif t.max_ms then
    e.target = string.format("<= %g ms", t.max_ms)
    if e.value then e.status = e.value <= t.max_ms and "met" or string.format("short: %.2fx over", e.value / t.max_ms) end
  end
  if row.mismatch then e.status = "CHECK MISMATCH" end
  return e
end

local function pad(s, n) return s .. string.rep(" ", math.max(0, n - #s)) end

-- "median (best)", or the median alone when both read the same.
local function both(med, best)
  if med == best or best == "-" then return med end
  return med .. " (" .. best .. ")"
end

print("")
print(string.format("load average at end: %s%s", loadavg(),
  opt.wait_idle and string.format("; waited %.0f s for idle CPUs, %d run(s) started without", waited, never_idle) or ""))
-- One table: each cell is the median of the runs and, in parentheses, the best
-- (the figure least disturbed by other jobs); the status is the median's.
local header = { "workload", "build", "mpe", "serial", "Python Pool", "figure", "vs target", "target", "status" }
local lines = {}
for _, row in ipairs(rows) do
  local med, best = evaluate(row, "median"), evaluate(row, "min")
  lines[#lines + 1] = { row.title, row.build.name,
    both(fmt_time(row.mpe and row.mpe.median), fmt_time(row.mpe and row.mpe.min)),
    both(fmt_time(row.serial and row.serial.median), fmt_time(row.serial and row.serial.min)),
    both(med.python, best.python), both(med.figure, best.figure), both(med.ratio, best.ratio), med.target, med.status }
end
local widths = {}
for i, h in ipairs(header) do
  widths[i] = #h
  for _, l in ipairs(lines) do widths[i] = math.max(widths[i], #l[i]) end
end
local function printrow(cells)
  local out = {}
  for i, c in ipairs(cells) do out[i] = pad(c, widths[i]) end
  print((table.concat(out, "  "):gsub("%s+$", "")))
end
local caption = string.format("medians of %d runs (best of %d in parentheses), 2 workers unless the workload says", opt.runs, opt.runs)
print("")
print(caption .. ":")
printrow(header)
for _, l in ipairs(lines) do printrow(l) end
for _, w in ipairs(workloads) do
  if w.note and wanted(w) then print("note: " .. w.note) end
end

if opt.md then
  local f = assert(io.open(opt.md, "w"))
  f:write(caption .. ":\n\n")
  f:write("| " .. table.concat(header, " | ") .. " |\n")
  f:write("|" .. string.rep("---|", #header) .. "\n")
  for _, l in ipairs(lines) do f:write("| " .. table.concat(l, " | ") .. " |\n") end
  f:close()
  print("wrote " .. opt.md)
end

-- ---- the scaling run -----------------------------------------------------------------------

if opt.scale then
  local w = workloads[workloads.scaling]
  local n = opt.quick and w.quick or w.size
  print("")
  print(string.format("scaling: %s, speedup over serial Lua against workers (%d CPUs), serial and 1, 2, 4 workers in interleaved rounds",
    string.format(w.title, n), nproc))
  local plan = {}
  if have_lua then plan[1] = { key = "serial", side = "serial", w = w, n = n, workers = 1 } end
  for _, k in ipairs { 1, 2, 4 } do plan[#plan + 1] = { key = k, side = "mpe", w = w, n = n, workers = k } end
  local got = have_lua and measure_rounds(plan)
  local base = got and got.serial
  if not base or base.failed then
    print("  serial Lua could not be measured: no scaling run" .. (base and (": " .. base.failed) or ""))
    failures = failures + 1
  else
    print(string.format("  serial    median %-10s best %s", fmt_time(base.median), fmt_time(base.min)))
    local points = {}
    for _, k in ipairs { 1, 2, 4 } do
      local res = got[k]
      if not res.failed then
        points[#points + 1] = { x = k, y = base.median / res.median }
        print(string.format("  %d worker%s median %-10s speedup %.2f  efficiency %3.0f%%   best %-10s speedup %.2f", k,
          k == 1 and " " or "s", fmt_time(res.median), base.median / res.median,
          100 * base.median / res.median / math.min(k, nproc), fmt_time(res.min), base.min / res.min))
      else
        failures = failures + 1
        print(string.format("  %d workers FAILED: %s", k, res.failed))
      end
    end
    local svg = opt.svg or (not opt.quick and (dir .. "/../../docs/bench-speedup.svg")) or nil
    if svg and #points > 0 then
      local f = assert(io.open(svg, "w"))
      f:write(chart.speedup_svg {
        title = "mpe pool: " .. string.format(w.title, n),
        subtitle = string.format("%d CPUs (%s); medians of %d runs; load average %s", nproc, cpu_model(), opt.runs, loadavg()),
        points = points, cpus = nproc,
      })
      f:close()
      print("  wrote " .. svg)
    end
  end
end

if failures > 0 then
  print(string.format("\n%d failure(s): see above", failures))
  os.exit(1)
end
