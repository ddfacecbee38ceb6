-- random_spec.lua -- random streams of forked children: every pool worker and
-- every mpe.process draws its own math.random stream, and a parent that seeds
-- explicitly gets the same streams again (README "Random numbers in workers").
local mpe = require "mpe"

local LUAJIT = type(jit) == "table"

-- A draw wide enough that two equal values mean the same stream.
local function draw()
  if LUAJIT then return math.random() end
  return math.random(0)
end

-- The first draws of n processes started one after another.
local function process_draws(n)
  local ps, out = {}, {}
  for i = 1, n do
    ps[i] = mpe.process(function() return draw(), draw() end):start()
  end
  for i = 1, n do
    local a, b = ps[i]:result()
    out[i] = {a, b}
  end
  return out
end

-- The first draw of each of n pool workers: a barrier holds every task until
-- all n have started, so each runs in a different worker.
local function worker_draws(n)
  local bar = mpe.barrier(n)
  local pool = mpe.pool(n)
  local asyncs = {}
  for i = 1, n do
    asyncs[i] = pool:apply_async(function()
      local x = draw()
      bar:wait(60)
      return mpe.current_process().pid, x
    end, {})
  end
  local out = {}
  for i = 1, n do
    local pid, x = asyncs[i]:get(60)
    out[i] = {pid = pid, x = x}
  end
  pool:close()
  pool:join()
  return out
end

local function all_distinct(values)
  local seen = {}
  for _, v in ipairs(values) do
    if seen[v] then return false end
    seen[v] = true
  end
  return true
end

describe("random streams of forked children", function()
  it("each mpe.process draws its own numbers, not the parent's stream", function()
    math.randomseed(42)
    local parent = {draw(), draw()}
    math.randomseed(42)
    local got = process_draws(3)
    local firsts = {}
    for i, d in ipairs(got) do
      firsts[i] = d[1]
      assert.are_not.same(parent, d) -- without a reseed, a child continues the parent's stream
    end
    assert.is_true(all_distinct(firsts))
  end)

  it("each pool worker draws its own numbers", function()
    math.randomseed(42)
    local got = worker_draws(3)
    local pids, xs = {}, {}
    for i, d in ipairs(got) do pids[i], xs[i] = d.pid, d.x end
    assert.is_true(all_distinct(pids))
    assert.is_true(all_distinct(xs))
  end)

  it("a parent that seeds explicitly gets the same children's streams again", function()
    -- Two copies of one program: each seeds, then starts three processes.
    local function program()
      math.randomseed(7)
      local got = process_draws(3)
      local w = worker_draws(2)
      table.sort(w, function(a, b) return a.x < b.x end)
      return got, {w[1].x, w[2].x}
    end
    local a = mpe.process(program):start()
    local b = mpe.process(program):start()
    local ga, wa = a:result()
    local gb, wb = b:result()
    assert.are.same(ga, gb)
    assert.are.same(wa, wb)
    -- and a different seed gives different streams
    local c = mpe.process(function()
      math.randomseed(8)
      return process_draws(3)
    end):start()
    assert.are_not.same(ga, (c:result()))
  end)

  it("seeding per task gives results independent of the scheduling", function()
    local function sweep(workers)
      local pool = mpe.pool(workers)
      local r = pool:map(function(i)
        math.randomseed(1000 + i)
        local s = 0
        for _ = 1, 10 do s = s + math.random(1, 6) end
        return s
      end, mpe.range(1, 20))
      pool:close()
      pool:join()
      return r
    end
    assert.are.same(sweep(1), sweep(3))
  end)
end)
