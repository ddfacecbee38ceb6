-- fdcap_spec.lua -- more shared objects in ONE value than one sendmsg may
-- carry (the kernel's SCM_MAX_FD is 253): an item, an argument list, a
-- result, a process's arguments and result, a queue item and a pipe message
-- each holding 300 distinct arrays (each array its own segment, so 300
-- descriptors). Through every pool entry point, each followed by a map and
-- close + join; and no descriptor is left behind (issue 9, point 3).
-- Each case runs in a child process joined with a bound, as poolfds_spec
-- does, so a hang fails its case. No timing is asserted.
local mpe = require "mpe"

local shared = require("poolfail_through")
local ENTRIES, through = shared.ENTRIES, shared.through
local healthy_then_joined, isolated = shared.healthy_then_joined, shared.isolated

local N = 300 -- distinct objects in one value: more than one sendmsg's 253
local SIZE = 512 -- int64 elements: 4 KiB, past a slab's objects, a segment of its own

-- Descriptors of this process (pipes aside: io.popen's own; shm.c's slabs
-- aside: a queue's control block lives in one, and the current slab stays
-- open for the next small object, as ipc_spec explains), the fewest of three
-- looks: a leak stays, a descriptor held for an instant does not.
local function fd_count()
  return require("fdcount")("! -lname '*mpe-slab*'")
end

local function arrays()
  local t = {}
  for k = 1, N do t[k] = mpe.array("int64", SIZE) end
  return t
end

-- Every array of t holds k * 10 + i at element i (written by the receiver).
local function check(t, i)
  for k = 1, N do
    if t[k][i] ~= k * 10 + i then return false end
  end
  return true
end

describe("one value with " .. N .. " distinct shared objects", function()
  for _, e in ipairs(ENTRIES) do
    it("travels as a pool item or argument list (" .. e .. ")", function()
      local good, joined, before, after = isolated(function()
        local arrs = arrays()
        local before = fd_count()
        local pool = mpe.pool(2)
        local args = {}
        for i = 1, 3 do args[i] = {{arrs = arrs, i = i}} end
        local r = through(pool, e, function(t)
          local s = 0
          for k = 1, #t.arrs do
            t.arrs[k][t.i] = k * 10 + t.i
            s = s + k
          end
          return s
        end, args)
        local good = 0
        for i = 1, 3 do
          if r[i] == N * (N + 1) / 2 and check(arrs, i) then good = good + 1 end
        end
        local joined = healthy_then_joined(pool)
        pool, r = nil, nil
        collectgarbage()
        collectgarbage()
        return good, joined, before, fd_count()
      end, 180)
      assert.are.equal(3, good)
      assert.is_true(joined)
      assert.is_true(after <= before, "descriptors: " .. before .. " -> " .. after)
    end)
  end

  it("comes back as a pool result", function()
    local good, joined, before, after = isolated(function()
      local before = fd_count()
      local pool = mpe.pool(2)
      local r = pool:map(function(i)
        local t = {}
        for k = 1, 300 do
          t[k] = mpe.array("int64", 512)
          t[k][i] = k * 10 + i
        end
        return t
      end, mpe.range(1, 3))
      local good = 0
      for i = 1, 3 do
        if #r[i] == N and check(r[i], i) then good = good + 1 end
      end
      r = nil
      local joined = healthy_then_joined(pool)
      pool = nil
      collectgarbage()
      collectgarbage()
      return good, joined, before, fd_count()
    end, 180)
    assert.are.equal(3, good)
    assert.is_true(joined)
    assert.is_true(after <= before, "descriptors: " .. before .. " -> " .. after)
  end)

  it("travels as mpe.process arguments and result", function()
    local good, before, after = isolated(function()
      local arrs = arrays()
      local before = fd_count()
      local p = mpe.process(function(t)
        for k = 1, #t do t[k][1] = k * 10 + 1 end
        local mine = {}
        for k = 1, 300 do
          mine[k] = mpe.array("int64", 512)
          mine[k][2] = k * 10 + 2
        end
        return mine
      end, arrs)
      p:start()
      assert(p:join(120), "the process did not finish")
      local back = p:result()
      local good = (check(arrs, 1) and 1 or 0) + (#back == N and check(back, 2) and 1 or 0)
      back, p = nil, nil
      collectgarbage()
      collectgarbage()
      return good, before, fd_count()
    end, 180)
    assert.are.equal(2, good)
    assert.is_true(after <= before, "descriptors: " .. before .. " -> " .. after)
  end)

  -- One value with N arrays sent and received within this process, then from
  -- a child process that makes its own; chan() gives (send, recv) for the
  -- first trip, (send, recv) for the child's and close.
  local function round_trip(chan)
    local good, before, after = isolated(function()
      local arrs = arrays()
      local before = fd_count()
      local send, recv, csend, crecv, close = chan()
      send(arrs)
      local got = recv(10)
      for k = 1, N do got[k][1] = k * 10 + 1 end
      local good = check(arrs, 1) and 1 or 0
      local p = mpe.process(function()
        local mine = {}
        for k = 1, 300 do
          mine[k] = mpe.array("int64", 512)
          mine[k][2] = k * 10 + 2
        end
        csend(mine)
      end)
      p:start()
      local theirs = crecv(60)
      assert(p:join(60), "the process did not finish")
      if #theirs == N and check(theirs, 2) then good = good + 1 end
      got, theirs, p = nil, nil, nil
      close()
      send, recv, csend, crecv, close = nil, nil, nil, nil, nil
      collectgarbage()
      collectgarbage()
      return good, before, fd_count()
    end, 180)
    assert.are.equal(2, good)
    assert.is_true(after <= before, "descriptors: " .. before .. " -> " .. after)
  end

  it("travels through a queue, between processes and within one", function()
    round_trip(function()
      local q = mpe.queue()
      local put, get = function(v) q:put(v) end, function(t) return q:get(t) end
      return put, get, put, get, function() q:close() end
    end)
  end)

  it("travels through a pipe, between processes and within one", function()
    round_trip(function()
      local a, b = mpe.pipe() -- one way, then the other
      return function(v) a:send(v) end, function(t) return b:recv(t) end,
        function(v) b:send(v) end, function(t) return a:recv(t) end,
        function() a:close(); b:close() end
    end)
  end)
end)
