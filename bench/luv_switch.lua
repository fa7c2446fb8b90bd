-- switch, hand-written luv scheduler (bench/luv_sched.lua): one task doing N sleep(0), each of
-- which yields to the ready queue (and so lets libuv poll once without blocking).
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local sched = require("luv_sched")
local N = B.size(1000000)

collectgarbage("collect")
local wall
sched.run(function()
  local sleep = sched.sleep
  local t0 = B.clock()
  for _ = 1, N do sleep(0) end
  wall = B.clock() - t0
end)
B.result("switch", "luv",
  { "ns_per_switch", wall / N * 1e9, "wall_s", wall, "n", N, "clock", B.clock_name })
