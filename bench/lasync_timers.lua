-- timers, lasync: N tasks each doing async.sleep(0.05) concurrently, gathered by the main task.
-- Mode "time" (default): wall time from the first spawn until gather returns, and the process's
--   peak RSS (VmHWM) growth over that span per task.
-- Mode "mem": Lua heap per sleeping task at the peak: a probe task spawned after the N sleepers
--   (so it runs once every sleeper has started and suspended) does a full GC and reads
--   collectgarbage("count"); minus the same reading before the spawns, divided by N. A separate
--   process from "time" so the GC pause does not distort the wall time. `early` counts sleepers
--   that had already woken when the probe ran (0 = the reading is the true peak).
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local N = B.size(100000)
local DELAY = 0.05
local mode = arg[1] or "time"

local woke = 0
local function sleeper()
  async.sleep(DELAY)
  woke = woke + 1
end

local function main()
  local list = {}
  if mode == "mem" then
    local base = B.heap_after_gc()
    for i = 1, N do list[i] = async.spawn(sleeper) end
    local peak, early
    local probe = async.spawn(function()
      early = woke
      peak = B.heap_after_gc()
    end)
    async.gather(list)
    probe:await()
    assert(woke == N, "not every sleeper woke")
    B.result("timers", "lasync", { "bytes_per_task", (peak - base) / N, "early", early, "n", N })
  else
    local clock, clock_name = B.wall_clock(async.now, "loop")
    collectgarbage("collect")
    local hwm0 = B.status_bytes("VmHWM")
    local t0 = clock()
    for i = 1, N do list[i] = async.spawn(sleeper) end
    async.gather(list)
    local wall = clock() - t0
    local hwm1 = B.status_bytes("VmHWM")
    assert(woke == N, "not every sleeper woke")
    assert(wall >= DELAY * 0.99, ("gather returned %.2f ms after the first spawn, before %.0f ms "
      .. "sleeps could have ended (a sleep woke early?)"):format(wall * 1000, DELAY * 1000))
    B.result("timers", "lasync", { "wall_s", wall,
      "rss_bytes_per_task", hwm0 and (hwm1 - hwm0) / N or "n/a", "n", N, "clock", clock_name })
  end
end

if async.current_task() then main() else async.run(main) end
