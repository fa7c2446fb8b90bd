-- spawn, hand-written luv scheduler (bench/luv_sched.lua): spawn N tasks that return at once,
-- then gather them.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local sched = require("luv_sched")
local N = B.size(200000)

local function work(i) return i end

collectgarbage("collect")
local wall
sched.run(function()
  local t0 = B.clock()
  local list = {}
  for i = 1, N do list[i] = sched.spawn(work, i) end
  local results = sched.gather(list)
  wall = B.clock() - t0
  assert(results.n == N and results[N] == N)
end)
B.result("spawn", "luv",
  { "tasks_per_s", N / wall, "wall_s", wall, "n", N, "clock", B.clock_name })
