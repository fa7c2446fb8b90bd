-- lock / semaphore floor, plain Lua: what `x:acquire(); x:release()` costs when both methods are
-- empty (`return true` / nothing) on a table with a metatable, i.e. the two method calls alone.
-- Any Lock or Semaphore called in that form in Lua 5.4 costs at least this much per pair.
--   lua5.4 bench/lua_calls.lua lock|semaphore   (the name only labels the RESULT line)
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local N = B.size(2000000)
local kind = arg[1] or "lock"

local X = {}
X.__index = X
function X.acquire(_) return true end
function X.release(_) end
local x = setmetatable({}, X)

collectgarbage("collect")
local t0 = B.clock()
for _ = 1, N do
  x:acquire()
  x:release()
end
local wall = B.clock() - t0
B.result(kind, "calls", { "pairs_per_s", N / wall, "ns_per_pair", wall / N * 1e9, "wall_s", wall,
  "n", N, "clock", B.clock_name })
