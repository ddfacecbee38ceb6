-- proc_spec.lua -- mpe.cpu_count() and mpe.current_process() in the main process.
-- (Inside processes and pool workers: process_spec.lua and the pool specs.)
local mpe = require "mpe"

local MPE_BIN = os.getenv("MPE_BIN")

local function command_output(cmd)
  local h = io.popen(cmd)
  local out = h:read("*a")
  h:close()
  return out
end

describe("mpe.cpu_count", function()
  it("is a whole number of CPUs, at least 1", function()
    local n = mpe.cpu_count()
    assert.equal("number", type(n))
    assert.equal(n, math.floor(n))
    assert.is_true(n >= 1)
  end)

  it("counts no more CPUs than the affinity mask allows", function()
    local nproc = tonumber(command_output("nproc"):match("%d+"))
    assert.is_true(mpe.cpu_count() <= nproc)
  end)

  it("follows the affinity mask: taskset -c 0 gives 1", function()
    if not MPE_BIN then return pending("MPE_BIN is not set") end
    local out = command_output("taskset -c 0 " .. MPE_BIN ..
      " -e 'print(require\"mpe\".cpu_count())' 2>&1")
    assert.equal("1\n", out)
  end)

  it("is not what MPE_WORKERS says (that is only the default pool size)", function()
    if not MPE_BIN then return pending("MPE_WORKERS is read by children of MPE_BIN") end
    local out = command_output("MPE_WORKERS=7 taskset -c 0 " .. MPE_BIN ..
      " -e 'print(require\"mpe\".cpu_count())' 2>&1")
    assert.equal("1\n", out)
  end)
end)

describe("mpe.current_process", function()
  it("names the main process MainProcess, with its pid and no worker slot", function()
    local me = mpe.current_process()
    assert.equal("MainProcess", me.name)
    assert.is_nil(me.worker)
    local f = assert(io.open("/proc/self/stat"))
    local pid = tonumber(f:read("*a"):match("^(%d+)"))
    f:close()
    assert.equal(pid, me.pid)
  end)

  it("returns a fresh table each time", function()
    local a, b = mpe.current_process(), mpe.current_process()
    assert.are_not.equal(a, b)
    a.name = "changed"
    assert.equal("MainProcess", mpe.current_process().name)
  end)
end)

describe("mpe.now", function()
  it("is a monotonic clock in seconds that does not go back", function()
    local a = mpe.now()
    assert.equal("number", type(a))
    local t = os.clock() + 0.02
    while os.clock() < t do end
    local b = mpe.now()
    assert.is_true(b >= a + 0.01)
  end)
end)

describe("mpe.world", function()
  it("is rank 0 of 1 without an MPI launcher, and workers say rank 0", function()
    assert.are.same({rank = 0, size = 1}, mpe.world())
    assert.are.equal(0, mpe.current_process().rank)
    local pool = mpe.pool(2)
    local r = pool:map(function() return mpe.current_process().rank end, {1, 2, 3})
    pool:close()
    pool:join()
    assert.are.same({0, 0, 0}, {r[1], r[2], r[3]})
  end)
end)
