-- imap_order.lua -- six tasks that sleep for different times, run on 2 workers
-- with map, imap and imap_unordered: when each result reaches the caller, and
-- in which order.
--   map             returns once, when every task is done, all in input order;
--   imap            hands results over in input order, each as soon as it and
--                   all before it are done (a slow first task holds the rest);
--   imap_unordered  hands each result over as soon as it is done (completion order).
-- chunksize = 1 sends the tasks one by one, as Python's imap does by default,
-- so that the two workers share them.
--   mpe run scripts/examples/imap_order.lua [time scale, default 1: about 1.5 s in all]
local mpe = require "mpe"

local scale = tonumber(arg and arg[1]) or 1
local durations = { 0.40, 0.10, 0.25, 0.05, 0.15, 0.10 } -- seconds, times scale

local function task(d)
  -- os.execute("sleep") forks a process that sleeps: no CPU is burnt meanwhile.
  os.execute(string.format("sleep %.3f", d))
  return d
end

local items = {}
for i, d in ipairs(durations) do items[i] = d * scale end

local pool <close> = mpe.pool(2)
local opts = { chunksize = 1 }

local function show(name, order, times, total)
  local parts = {}
  for k = 1, #order do parts[k] = string.format("%d@%.2fs", order[k], times[k]) end
  print(string.format("%-15s order: %s", name, table.concat(order, " ")))
  print(string.format("%-15s arrivals (index@seconds): %s; total %.2f s", "", table.concat(parts, " "), total))
end

-- map: one call, every result at once.
local t0 = mpe.now()
local r = pool:map(task, items, opts)
local t = mpe.now() - t0
local order, times = {}, {}
for i = 1, #r do order[i], times[i] = i, t end
show("map", order, times, t)
local map_ok = #r == #items
for i = 1, #items do map_ok = map_ok and r[i] == items[i] end

-- imap and imap_unordered: one result at a time.
local iter_ok = {}
for _, name in ipairs { "imap", "imap_unordered" } do
  order, times = {}, {}
  local seen = {}
  t0 = mpe.now()
  for i, v in pool[name](pool, task, items, opts) do
    order[#order + 1] = i
    times[#times + 1] = mpe.now() - t0
    seen[i] = v == items[i]
  end
  show(name, order, times, mpe.now() - t0)
  local ok = #order == #items
  for i = 1, #items do ok = ok and seen[i] == true end
  iter_ok[name] = { ok = ok, order = order }
end

-- The order each mode guarantees (timings are only shown, never checked).
local in_order = true
for k, i in ipairs(iter_ok.imap.order) do in_order = in_order and i == k end
print("check: map results in input order: " .. tostring(map_ok))
print("check: imap yields every index in input order: " .. tostring(iter_ok.imap.ok and in_order))
print("check: imap_unordered yields every index once: " .. tostring(iter_ok.imap_unordered.ok))
