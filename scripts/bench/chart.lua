-- chart.lua -- a small SVG line chart of speedup against worker count, written
-- by hand (no plotting library on the machine): axes with ticks and labels, the
-- ideal linear speedup, the ceiling set by the number of CPUs, and the
-- measured points with their values.
-- SPDX-License-Identifier: MIT

local M = {}

local function esc(s)
  return (tostring(s):gsub("&", "&amp;"):gsub("<", "&lt;"):gsub(">", "&gt;"):gsub('"', "&quot;"))
end

local function num(v)
  return string.format("%.1f", v)
end

-- opts: title, subtitle, points = { {x = workers, y = speedup}, ... }, cpus
function M.speedup_svg(opts)
  local W, H = 600, 400
  local left, right, top, bottom = 70, 170, 70, 60
  local pw, ph = W - left - right, H - top - bottom
  local xmax = 1
  local ymax = 1
  for _, p in ipairs(opts.points) do
    xmax = math.max(xmax, p.x)
    ymax = math.max(ymax, p.y)
  end
  ymax = math.max(math.ceil(ymax), math.min(xmax, 4))
  local x0, x1 = 0, xmax + 0.5
  local function X(v) return left + (v - x0) / (x1 - x0) * pw end
  local function Y(v) return top + ph - v / ymax * ph end

  local o = {}
  local function w(s) o[#o + 1] = s end
  w('<?xml version="1.0" encoding="UTF-8"?>')
  w(string.format('<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">', W, H, W, H))
  w(string.format('<rect x="0" y="0" width="%d" height="%d" fill="white"/>', W, H))
  w(string.format('<text x="%d" y="24" font-size="15" font-weight="bold">%s</text>', left - 50, esc(opts.title)))
  if opts.subtitle then
    w(string.format('<text x="%d" y="44" font-size="11" fill="#555">%s</text>', left - 50, esc(opts.subtitle)))
  end
  -- grid and y ticks
  for v = 0, ymax do
    w(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#e4e4e4"/>', num(X(x0)), num(Y(v)), num(X(x1)), num(Y(v))))
    w(string.format('<text x="%s" y="%s" text-anchor="end">%d</text>', num(X(x0) - 8), num(Y(v) + 4), v))
  end
  -- x ticks
  for v = 1, xmax do
    w(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#333"/>', num(X(v)), num(Y(0)), num(X(v)), num(Y(0) + 5)))
    w(string.format('<text x="%s" y="%s" text-anchor="middle">%d</text>', num(X(v)), num(Y(0) + 20), v))
  end
  -- axes
  w(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#333"/>', num(X(x0)), num(Y(0)), num(X(x1)), num(Y(0))))
  w(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#333"/>', num(X(x0)), num(Y(0)), num(X(x0)), num(Y(ymax))))
  w(string.format('<text x="%s" y="%s" text-anchor="middle">workers</text>', num(left + pw / 2), num(H - 15)))
  w(string.format('<text x="18" y="%s" text-anchor="middle" transform="rotate(-90 18 %s)">speedup over serial Lua 5.4</text>', num(top + ph / 2), num(top + ph / 2)))
  -- ideal: linear speedup, and the ceiling of the CPUs there are
  w(string.format('<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#999" stroke-dasharray="6 4"/>', num(X(0)), num(Y(0)), num(X(math.min(xmax, ymax))), num(Y(math.min(xmax, ymax)))))
  if opts.cpus and opts.cpus < xmax then
    w(string.format('<polyline points="%s,%s %s,%s %s,%s" fill="none" stroke="#d08000" stroke-dasharray="2 3" stroke-width="1.5"/>',
      num(X(0)), num(Y(0)), num(X(opts.cpus)), num(Y(opts.cpus)), num(X(xmax)), num(Y(opts.cpus))))
  end
  -- measured
  local pts = {}
  for i, p in ipairs(opts.points) do pts[i] = num(X(p.x)) .. "," .. num(Y(p.y)) end
  w(string.format('<polyline points="%s" fill="none" stroke="#1f5fbf" stroke-width="2"/>', table.concat(pts, " ")))
  for _, p in ipairs(opts.points) do
    w(string.format('<circle cx="%s" cy="%s" r="4" fill="#1f5fbf"/>', num(X(p.x)), num(Y(p.y))))
    w(string.format('<text x="%s" y="%s" text-anchor="middle" fill="#1f5fbf">%.2f</text>', num(X(p.x)), num(Y(p.y) - 10), p.y))
  end
  -- legend
  local lx, ly = W - right + 15, top + 10
  w(string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#1f5fbf" stroke-width="2"/>', lx, ly, lx + 25, ly))
  w(string.format('<text x="%d" y="%d">measured</text>', lx + 32, ly + 4))
  w(string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#999" stroke-dasharray="6 4"/>', lx, ly + 22, lx + 25, ly + 22))
  w(string.format('<text x="%d" y="%d">ideal (linear)</text>', lx + 32, ly + 26))
  if opts.cpus and opts.cpus < xmax then
    w(string.format('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#d08000" stroke-dasharray="2 3" stroke-width="1.5"/>', lx, ly + 44, lx + 25, ly + 44))
    w(string.format('<text x="%d" y="%d">%d CPUs: ceiling</text>', lx + 32, ly + 48, opts.cpus))
  end
  w('</svg>')
  return table.concat(o, "\n") .. "\n"
end

return M
