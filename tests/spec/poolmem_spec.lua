-- poolmem_spec.lua -- the parent running out of memory while it receives a
-- result (issue 9): the job fails with an error of kind "error", the pool
-- stays usable and join returns; through every entry point.
-- Each case runs in a child process joined with a bound, so a pool that
-- hangs fails its case instead of stalling the suite. No timing is asserted.
local mpe = require "mpe"
local unpack = table.unpack or unpack

local shared = require("poolfail_through")
local ENTRIES, through = shared.ENTRIES, shared.through
local healthy_then_joined, isolated = shared.healthy_then_joined, shared.isolated

describe("pool failure seams", function()
  -- The parent runs out of memory receiving an 80 MB result: ulimit -v caps
  -- the address space, and the parent fills most of it after the workers
  -- were forked (they do not share that ballast), so the worker can build
  -- and send the result but the parent cannot take it in. With these sizes
  -- the parent fails part-way through the frame, after the worker was killed
  -- with data still in its channel (the dispatcher once spun on that channel
  -- for ever). Sanitizer builds
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
          local through = require("poolfail_through").through
          local pool = mpe.pool(2)
          local ballast = {string.rep("b", 100 * 1024 * 1024), string.rep("c", 100 * 1024 * 1024)}
          local big = function(x) if x == 2 then return string.rep("x", 80 * 1024 * 1024) end return x end
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
        local p = io.popen("ulimit -v 400000; timeout -s KILL 120 " .. MPE_BIN .. " run " .. f .. " 2>&1")
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
