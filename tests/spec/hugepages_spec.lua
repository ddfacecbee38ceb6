-- hugepages_spec.lua -- the Lua heap on transparent huge pages (alloc.c):
-- mpe wraps the state's allocator; big blocks (a table's array part, long
-- strings) are allocated on advised memory and, when they grow, copied into a
-- new advised block instead of being remapped. Checked here: contents survive
-- every growth, pool workers read the parent's big data whole, and big blocks
-- do land on huge pages when the kernel allows it (THP "always" or
-- "madvise"), under the stock interpreter and `mpe run`. No timing is
-- asserted (docs/BENCHMARKS.md has the figures).
local mpe = require "mpe"

local function thp_mode()
  local f = io.open("/sys/kernel/mm/transparent_hugepage/enabled")
  if not f then return "none" end
  local s = f:read("a")
  f:close()
  return s:match("%[(%w+)%]") or "none"
end

local function anon_huge_kb()
  local f = io.open("/proc/self/smaps_rollup")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return tonumber(s:match("AnonHugePages:%s*(%d+)"))
end

describe("the huge-page allocator", function()
  it("keeps a table's contents through every growth of its array part", function()
    local n = 3000000 -- about 48 MB of array part, grown by doubling
    local t = {}
    for i = 1, n do t[i] = i * 3 end
    assert.are.equal(n, #t)
    local bad
    for i = 1, n do if t[i] ~= i * 3 then bad = i break end end
    assert.is_nil(bad)
  end)

  it("keeps long strings and buffers whole", function()
    local parts = {}
    for i = 1, 64 do parts[i] = string.rep(string.char(64 + i % 26), 65536) end
    local s = table.concat(parts) -- 4 MB
    assert.are.equal(64 * 65536, #s)
    for i = 1, 64 do
      assert.are.equal(parts[i], s:sub((i - 1) * 65536 + 1, i * 65536))
    end
    local big = string.rep("ab", 3 * 1024 * 1024)
    assert.are.equal(6 * 1024 * 1024, #big)
    assert.are.equal("ab", big:sub(-2))
  end)

  it("lets pool workers read the parent's big table whole", function()
    local n = 2000000
    local t = {}
    for i = 1, n do t[i] = i % 1000 end
    local pool = mpe.pool(2)
    local ok, err = pcall(function()
      local parts = pool:map(function(k)
        local s = 0
        for i = k, n, 8 do s = s + t[i] end
        return s
      end, { 1, 2, 3, 4, 5, 6, 7, 8 })
      local total, want = 0, 0
      for _, v in ipairs(parts) do total = total + v end
      for i = 1, n do want = want + i % 1000 end
      assert.are.equal(want, total)
      local a = pool:apply_async(function() return #t, t[n], t[n / 2] end)
      assert.are.same({ n, n % 1000, (n / 2) % 1000 }, { a:get() })
    end)
    pool:close()
    pool:join()
    assert(ok, err)
  end)

  it("puts big blocks on huge pages when the kernel allows madvise", function()
    local mode = thp_mode()
    local before = anon_huge_kb()
    if not before or (mode ~= "always" and mode ~= "madvise") or os.getenv("MPE_HUGEPAGES") == "0" then
      pending("transparent huge pages are off here (" .. mode .. ")")
      return
    end
    -- The earlier cases' garbage is freed first, and the collector waits,
    -- so that no huge page is released while the array grows.
    collectgarbage()
    collectgarbage()
    collectgarbage("stop")
    before = anon_huge_kb()
    local t = {}
    for i = 1, 4000000 do t[i] = i end -- a 64 MB array part
    local after = anon_huge_kb()
    collectgarbage("restart")
    -- At least a few 2 MB pages more (the kernel may fall back to 4 KB pages
    -- for some when memory is fragmented, never for all of 64 MB).
    assert.is_true(after - before >= 8 * 1024,
      ("AnonHugePages %d kB -> %d kB after a 64 MB array"):format(before, after))
    assert.are.equal(4000000, #t)
  end)

  it("leaves the heap on small pages with MPE_HUGEPAGES=0", function()
    -- Only in "madvise" mode can the difference be seen: with "always" the
    -- kernel uses huge pages without being asked.
    local mpe_bin = os.getenv("MPE_BIN")
    if thp_mode() ~= "madvise" or not anon_huge_kb() or not mpe_bin then
      pending("needs THP in madvise mode and MPE_BIN")
      return
    end
    local code = [[
      local function huge()
        local f = io.open("/proc/self/smaps_rollup")
        local kb = tonumber(f:read("a"):match("AnonHugePages:%s*(%d+)"))
        f:close()
        return kb
      end
      collectgarbage("stop")
      local before = huge()
      local t = {}
      for i = 1, 4000000 do t[i] = i end
      print("delta=" .. (huge() - before))
    ]]
    local function delta(env)
      local h = io.popen(env .. " " .. mpe_bin .. " -e '" .. code .. "' 2>&1")
      local out = h:read("a")
      h:close()
      return tonumber(out:match("delta=(%-?%d+)")), out
    end
    local off, out_off = delta("MPE_HUGEPAGES=0")
    local on, out_on = delta("MPE_HUGEPAGES=1")
    assert(off, out_off)
    assert(on, out_on)
    assert.are.equal(0, off)
    assert.is_true(on >= 8 * 1024, "with huge pages: " .. out_on)
  end)
end)
