-- switch, bare Lua 5.4 coroutines (the floor): N resume/yield round trips into one coroutine.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local N = B.size(1000000)

local yield, resume = coroutine.yield, coroutine.resume
local co = coroutine.create(function()
  for _ = 1, N do yield() end
  return "done"
end)

collectgarbage("collect")
local t0 = B.clock()
for _ = 1, N do resume(co) end
local wall = B.clock() - t0
local _, last = resume(co)
assert(last == "done")
B.result("switch", "coro",
  { "ns_per_switch", wall / N * 1e9, "wall_s", wall, "n", N, "clock", B.clock_name })
