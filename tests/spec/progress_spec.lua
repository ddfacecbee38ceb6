-- progress_spec.lua -- the progress bar module (lua/mpe/progress.lua): what the
-- line says, when it draws, the final newline; drawn into a fake stream.
-- SPDX-License-Identifier: MIT
local mpe = require "mpe"        -- installs the embedded modules
local P = require "mpe.progress"

local function sink()
  local s = { parts = {} }
  function s.write(self, ...)
    for i = 1, select("#", ...) do self.parts[#self.parts + 1] = select(i, ...) end
    return self
  end
  function s.flush() end
  function s.text(self) return table.concat(self.parts) end
  return s
end

describe("mpe.progress", function()
  it("formats counts, rates and durations", function()
    assert.are.equal("0", P.count(0))
    assert.are.equal("999", P.count(999))
    assert.are.equal("1,000", P.count(1000))
    assert.are.equal("1,234,567", P.count(1234567))
    assert.are.equal("12.5", P.rate(12.5))
    assert.are.equal("950", P.rate(950))
    assert.are.equal("31.2k", P.rate(31234))
    assert.are.equal("2.5M", P.rate(2500000))
    assert.are.equal("42s", P.duration(42))
    assert.are.equal("3:07", P.duration(187))
    assert.are.equal("1:02:03", P.duration(3723))
  end)

  it("shows done/total, a bar, the rate and the ETA when the total is known", function()
    local line = P.line({ done = 500, total = 1000, start = 10, unit = "items" }, 12)
    assert.truthy(line:find("[##########----------]  50%", 1, true), line)
    assert.truthy(line:find("500/1,000 items", 1, true), line)
    assert.truthy(line:find("250 items/s", 1, true), line)
    assert.truthy(line:find("ETA 2s", 1, true), line)
  end)

  it("shows the count only, and the time so far, when the total is unknown", function()
    local line = P.line({ done = 3000, start = 0 }, 2)
    assert.truthy(line:find("^3,000 items"), line)
    assert.falsy(line:find("/", 1, true) and not line:find("items/s", 1, true), line)
    assert.falsy(line:find("ETA", 1, true), line)
    assert.truthy(line:find("1500 items/s", 1, true), line)
  end)

  it("uses a fraction when one is given (mpe map: bytes read)", function()
    local line = P.line({ done = 10, fraction = 0.25, start = 0, unit = "lines" }, 1)
    assert.truthy(line:find("25%", 1, true), line)
    assert.truthy(line:find("10 lines", 1, true), line)
    assert.truthy(line:find("ETA 3s", 1, true), line)
  end)

  it("redraws in place at most every 100 ms and ends the final line with a newline", function()
    local out = sink()
    local st = { mode = "force", out = out, start = 0, total = 10, done = 0, now = 0 }
    P.update(st)
    st.done, st.now = 5, 0.05
    P.update(st)                      -- too soon: not drawn
    st.done, st.now = 6, 0.2
    P.update(st)
    st.done, st.final, st.now = 10, true, 0.21
    P.update(st)                      -- the final line is drawn whatever the time
    local text = out:text()
    local _, draws = text:gsub("\r", "")
    assert.are.equal(3, draws)
    assert.falsy(text:find("5/10", 1, true))
    assert.truthy(text:find("6/10", 1, true))
    assert.truthy(text:find("10/10 items", 1, true))
    assert.are.equal("\n", text:sub(-1))
    local _, newlines = text:gsub("\n", "")
    assert.are.equal(1, newlines)
    P.update(st)                      -- nothing after the final line
    assert.are.equal(text, out:text())
  end)

  it("pads a shorter line over a longer one", function()
    local out = sink()
    local st = { mode = "force", out = out, start = 0, done = 123456789, now = 1 }
    P.update(st)
    st.done, st.now = 5, 2
    P.update(st)
    local first = out.parts[2]
    local second = out.parts[6] .. out.parts[7]
    assert.is_true(#second >= #first)
  end)

  it("draws nothing when not asked or (mode true) when stderr is not a terminal", function()
    assert.is_false(P.enabled(false))
    assert.is_false(P.enabled(nil))
    if os.getenv("MPE_PROGRESS") == nil then
      assert.is_true(P.enabled("force"))
      assert.are.equal(mpe.isatty(2), P.enabled(true))
    end
    local out = sink()
    P.update({ mode = false, out = out, done = 1, final = true })
    assert.are.equal("", out:text())
  end)
end)

describe("pool progress option", function()
  it("accepts true, false and \"force\" and rejects anything else", function()
    local pool = mpe.pool(1)
    local r = pool:map(function(x) return x end, { 1, 2 }, { progress = false })
    assert.are.equal(2, #r)
    local ok, err = pcall(pool.map, pool, function(x) return x end, { 1 }, { progress = "yes" })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("option 'progress' must be true, false or \"force\", got \"yes\"", 1, true), tostring(err))
    ok, err = pcall(pool.imap, pool, function(x) return x end, { 1 }, { window = 0 })
    assert.is_false(ok)
    assert.truthy(tostring(err):find("option 'window' must be an integer", 1, true), tostring(err))
    pool:close()
    pool:join()
  end)
end)
