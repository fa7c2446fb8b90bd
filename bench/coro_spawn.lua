-- spawn, bare Lua 5.4 coroutines (the floor): create and resume N coroutines that return at once.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local N = B.size(200000)

local function work(i) return i end

collectgarbage("collect")
local create, resume = coroutine.create, coroutine.resume
local t0 = B.clock()
local results = {}
for i = 1, N do
  local _, v = resume(create(work), i)
  results[i] = v
end
local wall = B.clock() - t0
assert(#results == N and results[N] == N)
B.result("spawn", "coro",
  { "tasks_per_s", N / wall, "wall_s", wall, "n", N, "clock", B.clock_name })
