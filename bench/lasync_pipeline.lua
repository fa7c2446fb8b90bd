-- pipeline, lasync: one producer puts N items into async.Queue(100) and then closes it; 4
-- consumer tasks get items until get() returns nil (closed and drained). Items per second from
-- the first spawn until gather returns. min_share = the fewest items one consumer got.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local N = B.size(1000000)
local MAXSIZE, CONSUMERS = 100, 4

local function main()
  local q = async.Queue(MAXSIZE)
  local count, sum, min_share = 0, 0, math.huge

  local function producer()
    for i = 1, N do q:put(i) end
    q:close()
  end

  local function consumer()
    local c, s = 0, 0
    while true do
      local v = q:get()
      if v == nil then break end
      c = c + 1
      s = s + v
    end
    count, sum = count + c, sum + s
    if c < min_share then min_share = c end
  end

  collectgarbage("collect")
  local t0 = B.clock()
  local tasks = { async.spawn(producer) }
  for i = 1, CONSUMERS do tasks[i + 1] = async.spawn(consumer) end
  async.gather(tasks)
  local wall = B.clock() - t0
  assert(count == N and sum == N * (N + 1) // 2, "consumers got wrong items")
  assert(q:empty(), "queue not empty at the end")
  B.result("pipeline", "lasync", { "items_per_s", N / wall, "ns_per_item", wall / N * 1e9,
    "wall_s", wall, "n", N, "min_share", min_share, "clock", B.clock_name })
end

if async.current_task() then main() else async.run(main) end
