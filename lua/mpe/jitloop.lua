-- jitloop.lua -- a pool worker's chunk loop written in Lua, for LuaJIT builds.
-- SPDX-License-Identifier: MIT
--
-- engine/src/worker_jit.c loads this once per worker and runs through it the
-- chunks whose items are numbers (a range, packed integers or floats) and
-- whose results are wanted as numbers (collected, or into a 1-D int64/double
-- out= array). A C loop calling the user's function item by item stops every
-- trace at the C-to-Lua call; this loop is Lua, so a trace covers the call
-- (the function is inlined into it), and it reaches the chunk's packed input
-- and the packed output through FFI pointers. Collected results that are not
-- numbers are tagged and kept in a table; into an out array, the loop stops
-- at the first item whose result it cannot store (not a number, or not an
-- exact int64 for an int64 array) and hands that result back. Either way the
-- C side records them as the C loop would, so every such case keeps the C
-- loop's semantics. An item that raises unwinds through here to the worker's
-- pcall, which reads the item number from the progress slot written below.
--
-- Arguments of the chunk: ffi, and the address of a C function returning the
-- monotonic clock in ns (for task timeouts). Returns get(kind, okind, timed):
-- the loop for items of kind 1 range / 2 ints / 3 floats, results 0 collected
-- (doubles) / 1 int64 array / 2 double array, with or without a start stamp
-- per item; nil while the JIT is off (the interpreter runs the C loop faster).
local ffi, nowaddr = ...
local cast, typeof = ffi.cast, ffi.typeof
local jit = jit

local I64P, F64P, I32P = typeof("int64_t *"), typeof("double *"), typeof("int32_t *")
local U8P = typeof("uint8_t *")
local now = cast(typeof("int64_t (*)(void)"), nowaddr)

-- One source per variant, so that each gets traces of its own.
local template = [[
local type, floor, tonumber, cast, IT, OT, I32P, I64P, U8P, now = ...
return function(fn, x0, step, inp, out, d, i, j, pitem, pstart, tags, odd)
    inp = inp and cast(IT, inp)
    out = cast(OT, out)
    tags = tags and cast(U8P, tags)
    pitem = cast(I32P, pitem)
    pstart = pstart and cast(I64P, pstart)
    for k = i, j - 1 do
        pitem[0] = k
        $STAMP
        local r = fn($ARG)
        $STORE
    end
    return j
end
]]

local args = { "x0 + k * step", "tonumber(inp[k])", "inp[k]" }
-- Collected, a result that is not a number is kept in odd (tag 1) or is nil
-- (tag 2), for the C side to record; into an array, it stops the batch.
local stores = {
    [0] = [[if type(r) == "number" then out[k + d] = r
        elseif r == nil then tags[k + d] = 2
        else tags[k + d] = 1; odd[k + d + 1] = r end]],
    "if $OK then out[k + d] = r else return k, r end",
    "if $OK then out[k + d] = r else return k, r end",
}
-- int64: exactly what the C side packs without a check (lua_isinteger of
-- compat.c: integral, in range, not -0); anything else goes back to C.
local oks = {
    [0] = 'type(r) == "number"',
    'type(r) == "number" and r == floor(r) and r >= -9223372036854775808 and ' ..
        'r < 9223372036854775808 and (r ~= 0 or 1 / r > 0)',
    'type(r) == "number"',
}
local intypes = { false, I64P, F64P }
local outtypes = { [0] = F64P, I64P, F64P }

local loops = {}

local function get(kind, okind, timed)
    if jit and not jit.status() then
        return nil
    end
    local key = kind * 8 + okind * 2 + (timed and 1 or 0)
    local loop = loops[key]
    if not loop then
        local src = template:gsub("%$(%u+)", {
            STAMP = timed and "pstart[0] = now()" or "",
            ARG = args[kind],
            STORE = stores[okind],
        }):gsub("%$OK", oks[okind])
        -- Without debug information, as the C loop has none: the function
        -- is called unnamed (tracebacks print it as <file:line>), and
        -- error(msg, 2) in it adds no position, as when C called it.
        local load = loadstring or load
        local chunk = assert(load(string.dump(assert(load(src, "=mpe.jitloop")), true), "=mpe.jitloop"))
        loop = chunk(type, math.floor, tonumber, cast, intypes[kind] or I64P, outtypes[okind],
                     I32P, I64P, U8P, now)
        loops[key] = loop
    end
    return loop
end

return get
