-- poolmem_spec.lua -- the parent running out of memory while it receives a
-- result (issue 9): the job fails with an error of kind "error", the pool
-- stays usable and join returns; through every entry point.
-- Each case runs in a child process joined with a bound, so a pool that
-- hangs fails its case instead of stalling the suite. No timing is asserted.
local mpe = require "mpe"
local unpack = table.unpack or unpack

local ENTRIES = {"map", "starmap", "map_async", "starmap_async", "imap", "imap_unordered",
                 "apply", "apply_async"}


local through = require("poolfail_through")

-- The pool completes a fresh map, then close + join return.
local function healthy_then_joined(pool)
  local r = pool:map(function(x) return x * 3 end, mpe.range(1, 100))
  assert(r.n == 100 and r[1] == 3 and r[100] == 300, "the map after the failure is wrong")
  pool:close()
  pool:join()
  return true
end

-- Run body() in a child process; its return values come back. A child still
-- running after `seconds` is killed and the case fails.
local function isolated(body, seconds)
  local p = mpe.process(body)
  p:start()
  if not p:join(seconds or 90) then
    p:kill()
    p:join()
    error("the case did not finish within " .. (seconds or 90) .. " s (a hang)", 2)
  end
  return p:result()
end

describe("pool failure seams", function()
  -- The parent runs out of memory receiving a 40 MB result: ulimit -v caps
  -- the address space, and the parent fills most of it after the workers
  -- were forked (they do not share that ballast), so the worker can build
  -- and send the result but the parent cannot take it in. Sanitizer builds
  -- reserve terabytes of address space and cannot run under ulimit -v; nor
  -- can LuaJIT's allocator build the ballast there.
  -- The parent runs out of memory receiving a 120 MB result: ulimit -v caps
  -- the address space, and the parent fills most of it after the workers
  -- were forked (they do not share that ballast), so the worker can build
  -- and send the result but the parent cannot take it in. Sanitizer builds
  -- reserve terabytes of address space and cannot run under ulimit -v; nor
  -- can LuaJIT's allocator build the ballast there.
  describe("running out of memory in the parent", function()
    local MPE_BIN = os.getenv("MPE_BIN") or "build/mpe"
    local SANITIZED = os.getenv("MPE_SANITIZE") == "1"
    for _, e in ipairs(ENTRIES) do
      it("fails the job with a clear error, then the pool works and joins (" .. e .. ")", function()
        -- LuaJIT's allocator cannot even build the ballast under ulimit -v
        -- (its own mappings): the case is run by the lua5.4 builds.
        if SANITIZED or jit then return end
        local f = os.tmpname()
        local h = assert(io.open(f, "w"))
        h:write(([[
          package.path = %q .. ";" .. package.path
          local mpe = require "mpe"
          local through = require("poolfail_through")
          local pool = mpe.pool(2)
          local ballast = {string.rep("b", 200 * 1024 * 1024), string.rep("c", 200 * 1024 * 1024)}
          local big = function(x) if x == 2 then return string.rep("x", 120 * 1024 * 1024) end return x end
          local ok, err = pcall(through, pool, %q, big, {{1}, {2}, {3}})
          print("first", ok, type(err) == "table" and err.kind, tostring(err):sub(1, 300))
          ballast = nil
          collectgarbage()
          collectgarbage()
          local r = pool:map(function(x) return x * 3 end, mpe.range(1, 100))
          print("after", r.n == 100 and r[100] == 300)
          pool:close()
          pool:join()
          print("joined")
        ]]):format(os.getenv("MPE_SOURCE_DIR") and (os.getenv("MPE_SOURCE_DIR") .. "/tests/spec/?.lua") or "tests/spec/?.lua", e))
        h:close()
        local p = io.popen("ulimit -v 700000; timeout -s KILL 120 " .. MPE_BIN .. " run " .. f .. " 2>&1")
        local out = p:read("*a")
        p:close()
        os.remove(f)
        assert.matches("first%s+false%s+error%s+mpe: [^\n]*not enough memory", out)
        assert.matches("after%s+true", out)
        assert.matches("joined", out)
      end)
    end
  end)
end)
