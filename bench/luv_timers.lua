-- timers, hand-written luv scheduler (bench/luv_sched.lua): N tasks each sleeping 0.05 s, each
-- sleep being one uv timer (what a naive user does). Modes and measurements as lasync_timers.lua.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local sched = require("luv_sched")
local N = B.size(100000)
local DELAY = 0.05
local mode = arg[1] or "time"

local woke = 0
local function sleeper()
  sched.sleep(DELAY)
  woke = woke + 1
end

sched.run(function()
  local list = {}
  if mode == "mem" then
    local base = B.heap_after_gc()
    for i = 1, N do list[i] = sched.spawn(sleeper) end
    local peak, early
    local probe = sched.spawn(function()
      early = woke
      peak = B.heap_after_gc()
    end)
    sched.gather(list)
    probe:await()
    assert(woke == N)
    B.result("timers", "luv", { "bytes_per_task", (peak - base) / N, "early", early, "n", N })
  else
    collectgarbage("collect")
    local hwm0 = B.status_bytes("VmHWM")
    local t0 = B.clock()
    for i = 1, N do list[i] = sched.spawn(sleeper) end
    sched.gather(list)
    local wall = B.clock() - t0
    local hwm1 = B.status_bytes("VmHWM")
    assert(woke == N)
    B.result("timers", "luv", { "wall_s", wall,
      "rss_bytes_per_task", hwm0 and (hwm1 - hwm0) / N or "n/a", "n", N, "clock", B.clock_name })
  end
end)
