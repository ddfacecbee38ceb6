-- codec_spec.lua -- mpe.encode / mpe.decode / mpe.register: what crosses a
-- process boundary, and how what cannot fails. Runs under lua5.4 with mpe.so,
-- under `mpe run`, and under LuaJIT (no integer subtype there).
local mpe = require "mpe"

local HAS_INT = math.type ~= nil
local function isint(x) return type(x) == "number" and (not HAS_INT or math.type(x) == "integer") end
local function isfloat(x) return type(x) == "number" and (not HAS_INT or math.type(x) == "float") end
local function rt(v) return mpe.decode(mpe.encode(v)) end

local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e)
end

describe("mpe.encode/decode", function()
  it("round-trips a closure made at run time with a local table, a local function and math.log", function()
    local function make(scale)
      local weights = { 2, 4, 8 }
      local function square(x) return x * x end
      local log = math.log
      return function(i) return square(weights[i]) * scale + log(weights[i], 2) end
    end
    local f = make(3)
    local g = rt(f)
    assert.are_not.equal(f, g)
    for i = 1, 3 do assert.are.equal(f(i), g(i)) end
    assert.are.equal(4 * 4 * 3 + 2, g(2))
  end)

  it("rebinds _ENV to the receiver's globals", function()
    local G = load("return _G")()
    local f = load("return function() return string.rep('a', 3), _G end")()
    local a, b = rt(f)()
    assert.are.equal("aaa", a)
    assert.are.equal(G, b)
    assert.are.equal(G, rt(G))
    assert.are.equal(G, rt({ G })[1])
    -- this spec's own functions see busted's proxy environment: it travels as
    -- the receiver's globals too
    local g = function() return math.floor(2.5), type(print) end
    local x, y = rt(g)()
    assert.are.equal(2, x)
    assert.are.equal("function", y)
  end)

  it("keeps closures that share an upvalue sharing it, and recursion", function()
    local n = 0
    local function inc() n = n + 1 return n end
    local function get() return n end
    local t = rt({ inc = inc, get = get })
    t.inc(); t.inc(); t.inc()
    assert.are.equal(3, t.get())
    assert.are.equal(0, n)
    local function fib(k) if k < 2 then return k end return fib(k - 1) + fib(k - 2) end
    assert.are.equal(55, rt(fib)(10))
  end)

  it("sends C functions by name", function()
    local t = rt({ math.log, string.format, print, mpe.encode })
    assert.are.equal(math.log, t[1])
    assert.are.equal(string.format, t[2])
    assert.are.equal(print, t[3])
    assert.are.equal(mpe.encode, t[4])
  end)

  it("preserves cycles and shared sub-tables", function()
    local a = { name = "a" }
    local b = { name = "b", a = a }
    a.b, a.self = b, a
    local root = { a, b, x = b, [a] = "key" }
    local r = rt(root)
    assert.are.equal(r[1], r[1].self)
    assert.are.equal(r[2], r[1].b)
    assert.are.equal(r[2], r.x)
    assert.are.equal(r[1], r[2].a)
    assert.are.equal("key", r[r[1]])
    assert.are.equal("b", r.x.name)
  end)

  it("keeps integers and floats distinct", function()
    local t = rt({ 1, 1.0, -0.0, 2 ^ 53, 7, big = 1e300 })
    assert.is_true(isint(t[1]))
    assert.is_true(isfloat(t[2]))
    assert.are.equal(-math.huge, 1 / t[3])
    assert.are.equal(2 ^ 53, t[4])
    assert.are.equal(1e300, t.big)
    if HAS_INT then
      assert.are.equal("integer", math.type(rt(3)))
      assert.are.equal("float", math.type(rt(3.0)))
      assert.are.equal(math.maxinteger, rt(math.maxinteger))
      assert.are.equal(math.mininteger, rt(math.mininteger))
    end
    local ints, floats = {}, {}
    for i = 1, 5000 do ints[i] = i * 3 - 7000; floats[i] = i + 0.25 end
    local i2, f2 = rt(ints), rt(floats)
    for i = 1, 5000 do
      assert(i2[i] == ints[i] and isint(i2[i]))
      assert(f2[i] == floats[i] and isfloat(f2[i]))
    end
    -- a packed array is count + 8 bytes per number
    assert.is_true(#mpe.encode(ints) <= 5000 * 8 + 16)
  end)

  it("sends NaN and the infinities", function()
    local t = rt({ 0 / 0, math.huge, -math.huge })
    assert.is_true(t[1] ~= t[1])
    assert.are.equal(math.huge, t[2])
    assert.are.equal(-math.huge, t[3])
  end)

  it("is binary safe, also for a 10 MB string", function()
    assert.are.equal("a\0b\0\0c", rt("a\0b\0\0c"))
    local big = string.rep("0123456789\0", 1024 * 1024 - 1) .. "x"
    assert.is_true(#big >= 10 * 1024 * 1024)
    local s = mpe.encode(big)
    assert.are.equal(big, mpe.decode(s))
  end)

  it("names the path to what cannot be sent", function()
    local co = coroutine.create(print)
    local e = err_of(mpe.encode, { 1, { co = co } })
    assert.matches("mpe: cannot send coroutine at value%[2%]%.co", e)
    local out = io.stdout
    local function job() return out end
    e = err_of(mpe.encode, { job })
    assert.matches("mpe: cannot send userdata", e)
    assert.matches("at upvalue 'out' of function %(.-codec_spec%.lua:%d+%)", e)
    e = err_of(mpe.encode, { ["x y"] = { [3] = io.stderr } })
    assert.matches('at value%["x y"%]%[3%]', e)
  end)

  it("refuses 10^6 levels of nesting with a clear error", function()
    local t = {}
    for _ = 1, 1000000 do t = { t } end
    local e = err_of(mpe.encode, t)
    assert.matches("mpe: cannot send value: nesting deeper than 200 levels at value%[1%]%[1%]", e)
    assert.is_true(#e < 400)
    -- and the decoder refuses deep input whatever produced it
    local deep = "\1" .. string.rep("\6\1", 100000) .. "\0"
    assert.matches("mpe: decode: nesting deeper than 200 levels", err_of(mpe.decode, deep))
  end)

  it("relinks registered metatables and copies others by value", function()
    local Point = { __index = {} }
    function Point.__index.norm2(p) return p.x * p.x + p.y * p.y end
    assert.are.equal(Point, mpe.register("codec_spec.Point", Point))
    local p = rt(setmetatable({ x = 3, y = 4 }, Point))
    assert.are.equal(Point, getmetatable(p))
    assert.are.equal(25, p:norm2())
    local Other = { __index = { kind = "other" } }
    local o = rt(setmetatable({}, Other))
    assert.are_not.equal(Other, getmetatable(o))
    assert.are.equal("other", o.kind)
  end)

  it("raises cleanly on garbage", function()
    assert.matches("mpe: decode: unknown format version", err_of(mpe.decode, "garbage"))
    assert.matches("mpe: decode: empty input", err_of(mpe.decode, ""))
    assert.matches("mpe: decode: bad tag at offset 1", err_of(mpe.decode, "\1\255"))
    assert.matches("mpe: decode: truncated input", err_of(mpe.decode, "\1\5\10abc"))
    assert.matches("trailing garbage", err_of(mpe.decode, mpe.encode(1) .. "zz"))
    local s = mpe.encode({ 1, "two", { 3 }, f = function() return 4 end })
    for n = 1, #s - 1 do
      assert.matches("^mpe: decode: ", err_of(mpe.decode, s:sub(1, n)))
    end
    -- flipped bytes inside a function's code are caught by its checksum
    local fs = mpe.encode(function() return 1 end)
    local bad = fs:sub(1, 20) .. string.char((fs:byte(21) + 1) % 256) .. fs:sub(22)
    assert.matches("checksum mismatch", err_of(mpe.decode, bad))
    -- random bytes never crash
    math.randomseed(7)
    for _ = 1, 3000 do
      local b = { "\1" }
      for i = 2, math.random(1, 40) do b[i] = string.char(math.random(0, 20)) end
      pcall(mpe.decode, table.concat(b))
    end
  end)

  it("checks its arguments", function()
    assert.matches("mpe: decode: argument 1 must be a string, got nil", err_of(mpe.decode, nil))
    assert.matches("mpe: decode: argument 1 must be a string, got table", err_of(mpe.decode, {}))
    assert.matches("mpe: encode: argument 1 is missing", err_of(mpe.encode))
    assert.matches("mpe: register: argument 1 must be a non%-empty string, got nil",
      err_of(mpe.register, nil, {}))
    assert.matches("mpe: register: argument 1 must be a non%-empty string", err_of(mpe.register, "", {}))
    assert.matches("mpe: register: argument 2 must be a table, got number", err_of(mpe.register, "x", 1))
    local mt = {}
    mpe.register("codec_spec.once", mt)
    assert.are.equal(mt, mpe.register("codec_spec.once", mt))
    assert.matches("already registered", err_of(mpe.register, "codec_spec.once", {}))
  end)
end)
