-- host.lua -- run by tests/embed/host.c, which registered the global C
-- function host_mul(a, b). Raises (so the host exits non-zero) on any mismatch.
local mpe = require "mpe"

local function check(cond, what, ...)
  if not cond then error("host.lua: " .. string.format(what, ...), 2) end
end

-- A process calls the host's function: the child is a fork of this program.
local p = mpe.process(function(a, b) return host_mul(a, b), mpe.current_process().name end, 6, 7)
p:start()
local v, name = p:result()
check(v == 42, "process result %s, expected 42", tostring(v))
check(name == p.name, "child name %s, expected %s", tostring(name), p.name)

-- The host's C function crosses the codec by name, alone and as an upvalue.
local f = mpe.decode(mpe.encode(host_mul))
check(f == host_mul, "decoded host_mul is a different function")
check(f(3, 5) == 15, "decoded host_mul(3, 5) = %s", tostring(f(3, 5)))
local scale = 10
local g = mpe.decode(mpe.encode(function(x) return host_mul(x, scale) end))
check(g(4) == 40, "decoded closure gave %s", tostring(g(4)))

-- A child returns the host's function and a closure over it.
local q = mpe.process(function()
  local k = 3
  return host_mul, function(x) return host_mul(x, k) end
end)
q:start()
local h, triple = q:result()
check(h == host_mul, "host_mul returned by a child is a different function")
check(triple(5) == 15, "closure from a child gave %s", tostring(triple(5)))

-- Left running on purpose: mpe_close must terminate and reap it.
local d = mpe.process{ target = function() while true do end end, daemon = true }
d:start()
print("host.lua: ok")
