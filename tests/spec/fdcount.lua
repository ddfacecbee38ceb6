-- fdcount.lua -- the descriptors a spec's process holds, for the no-leak
-- checks of array, sync, ipc and fdcap specs: one place for the way they count.
-- Pipes are left out (io.popen's own pipe may or may not be open yet in the
-- parent when the listing runs), and the count is the fewest of three looks:
-- a leak stays, while a descriptor something holds for an instant (seen once
-- in CI, gone when counted again) must not fail a no-growth check.
--   local fdcount = require "fdcount"
--   fdcount()                          -- every descriptor but pipes
--   fdcount("! -lname '*mpe-slab*'")   -- with a further find(1) test
-- SPDX-License-Identifier: MIT

local mpe = require "mpe"

return function(filter)
  local least
  for _ = 1, 3 do
    local h = io.popen("find /proc/" .. mpe.current_process().pid .. "/fd -type l ! -lname 'pipe:*' "
                       .. (filter or "") .. " 2>/dev/null | wc -l")
    local n = tonumber(h:read("*a"))
    h:close()
    least = least and math.min(least, n) or n
  end
  return least
end
