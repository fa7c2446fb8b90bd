-- switch, lasync: one task (the main task) doing N async.sleep(0).
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local N = B.size(1000000)

local function main()
  local sleep = async.sleep
  collectgarbage("collect")
  local t0 = B.clock()
  for _ = 1, N do sleep(0) end
  local wall = B.clock() - t0
  B.result("switch", "lasync",
    { "ns_per_switch", wall / N * 1e9, "wall_s", wall, "n", N, "clock", B.clock_name })
end

if async.current_task() then main() else async.run(main) end
