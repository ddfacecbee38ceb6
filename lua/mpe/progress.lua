-- mpe.progress -- a one-line progress bar on stderr, for the pool's map family
-- (option progress = true | "force") and for `mpe map --progress`.
-- SPDX-License-Identifier: MIT
--
-- The C side (lmpe_pool.c) owns the timing: it calls update(state) at most
-- every 100 ms while results arrive, and once more with state.final = true
-- when the job is over. This file only decides whether to draw and what the
-- line says, so the format can change without touching the scheduler.
--
-- state fields, set by the caller:
--   done     items finished so far
--   total    items in all, or nil while unknown (an iterator not yet exhausted)
--   fraction optional: share done in 0..1 when total is not an item count
--            (mpe map over files: bytes read / file sizes)
--   final    true for the last call: the line is drawn and ends with a newline
--   start    clock (mpe.now()) when the work started; now: the clock at this call
--   unit     the word after the counts, default "items"
--   mode     true (draw only when stderr is a terminal) or "force" (always)
-- state fields kept by this module: enabled, width (of the last line), last.
--
-- Whether to draw: mode "force", or env MPE_PROGRESS=force, always draws;
-- otherwise the bar is drawn only when stderr is a terminal. MPE_PROGRESS=off
-- turns every bar off (for logs of scripts that ask for one).
local M = {}

local floor, format = math.floor, string.format

local function clock()
  local ok, mpe = pcall(require, "mpe")
  if ok and type(mpe) == "table" and mpe.now then return mpe.now() end
  return os.clock()
end

-- Whether a bar asked for with mode (true, "force", false/nil) is drawn.
function M.enabled(mode)
  if not mode then return false end
  local env = os.getenv("MPE_PROGRESS")
  if env == "off" or env == "0" then return false end
  if mode == "force" or env == "force" then return true end
  local ok, mpe = pcall(require, "mpe")
  return ok and type(mpe) == "table" and mpe.isatty ~= nil and mpe.isatty(2) or false
end

-- 1234567 -> "1,234,567"
local function count(n)
  local s = format("%d", n)
  local head, digits = s:match("^(-?)(%d+)$")
  if not digits then return s end
  digits = digits:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  if digits:sub(1, 1) == "," then digits = digits:sub(2) end
  return head .. digits
end

-- 31234.5 -> "31.2k"
local function rate(r)
  if r >= 1e9 then return format("%.1fG", r / 1e9) end
  if r >= 1e6 then return format("%.1fM", r / 1e6) end
  if r >= 1e4 then return format("%.1fk", r / 1e3) end
  if r >= 100 then return format("%.0f", r) end
  return format("%.1f", r)
end

-- seconds -> "42s", "3:07", "1:02:03"
local function duration(s)
  if s ~= s or s == math.huge then return "?" end
  s = floor(s + 0.5)
  if s < 60 then return format("%ds", s) end
  if s < 3600 then return format("%d:%02d", floor(s / 60), s % 60) end
  return format("%d:%02d:%02d", floor(s / 3600), floor(s / 60) % 60, s % 60)
end

M.count, M.rate, M.duration = count, rate, duration

-- The text of the bar for state at clock now (without \r or newline).
function M.line(state, now)
  now = now or state.now or clock()
  local elapsed = now - (state.start or now)
  local done = state.done or 0
  local unit = state.unit or "items"
  local r = elapsed > 0 and done / elapsed or 0
  local frac = state.fraction
  if not frac and state.total then
    frac = state.total > 0 and done / state.total or 1
  end
  local parts = {}
  if frac then
    if frac > 1 then frac = 1 elseif frac < 0 then frac = 0 end
    local width = 20
    local full = floor(frac * width + 1e-9)
    local bar = string.rep("#", full) .. string.rep("-", width - full)
    parts[#parts + 1] = format("[%s] %3d%%", bar, floor(frac * 100 + 1e-9))
  end
  if state.total then
    parts[#parts + 1] = format("%s/%s %s", count(done), count(state.total), unit)
  else
    parts[#parts + 1] = format("%s %s", count(done), unit)
  end
  parts[#parts + 1] = format("%s %s/s", (elapsed > 0 and done > 0) and rate(r) or "-", unit)
  if state.final then
    parts[#parts + 1] = "in " .. duration(elapsed)
  elseif frac and frac > 0 and elapsed > 0 then
    parts[#parts + 1] = "ETA " .. duration(elapsed * (1 - frac) / frac)
  elseif frac then
    parts[#parts + 1] = "ETA ?"
  else
    parts[#parts + 1] = duration(elapsed)
  end
  return table.concat(parts, "  ")
end

-- Draw (or redraw) the bar for state; see the fields above.
function M.update(state)
  if state.enabled == nil then
    state.enabled = M.enabled(state.mode == nil and true or state.mode)
    state.width = 0
  end
  if not state.enabled then return end
  local now = state.now or clock()
  if not state.final and state.last and now - state.last < 0.1 then return end
  state.last = now
  local text = M.line(state, now)
  local pad = state.width > #text and string.rep(" ", state.width - #text) or ""
  state.width = #text
  local out = state.out or io.stderr
  out:write("\r", text, pad, state.final and "\n" or "")
  out:flush()
  if state.final then state.enabled = false end
end

return M
