-- runscript.lua -- a helper for the specs: run a Lua script in a fresh
-- interpreter (`mpe run`, or the stock one with mpe.so) under a SIGKILL
-- timeout, for what must be seen from outside: exit statuses, signals, limits.
local M = {}

local BUILD = os.getenv("MPE_BUILD_DIR") or "build"
M.MPE_BIN = os.getenv("MPE_BIN") or (BUILD .. "/mpe")
M.LUA_INTERP = os.getenv("MPE_LUA_INTERP") or "lua5.4"
M.SANITIZED = os.getenv("MPE_SANITIZE") == "1"

-- The command line for a runner: "mpe" or "lua" (the stock interpreter).
function M.command(runner)
  if runner == "mpe" then return M.MPE_BIN .. " run" end
  return "env LUA_CPATH='" .. BUILD .. "/?.so;;' " .. M.LUA_INTERP
end

-- Run code with cmd (prefix is shell text put before it, e.g. "ulimit -n 64;");
-- returns the output (stdout and stderr) and the exit status (137: killed
-- by the timeout).
function M.run(cmd, code, seconds, prefix)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(code)
  f:close()
  local h = io.popen((prefix or "") .. "timeout -s KILL " .. (seconds or 60) .. " " .. cmd .. " " ..
                     path .. " 2>&1; echo \"status=$?\"")
  local out = h:read("*a")
  h:close()
  os.remove(path)
  return out, tonumber(out:match("status=(%d+)%s*$"))
end

return M
