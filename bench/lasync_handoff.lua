-- handoff, lasync: a producer task puts N items into async.Queue(1), a consumer task gets them;
-- items per second from the first spawn until gather returns.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local N = B.size(500000)

local function main()
  local q = async.Queue(1)
  local count, sum = 0, 0

  local function producer()
    for i = 1, N do q:put(i) end
  end

  local function consumer()
    local c, s = 0, 0
    for _ = 1, N do
      local v = q:get()
      c = c + 1
      s = s + v
    end
    count, sum = c, s
  end

  collectgarbage("collect")
  local t0 = B.clock()
  async.gather({ async.spawn(producer), async.spawn(consumer) })
  local wall = B.clock() - t0
  assert(count == N and sum == N * (N + 1) // 2, "consumer got wrong items")
  assert(q:empty() and q:size() == 0, "queue not empty at the end")
  B.result("handoff", "lasync", { "items_per_s", N / wall, "ns_per_item", wall / N * 1e9,
    "wall_s", wall, "n", N, "clock", B.clock_name })
end

if async.current_task() then main() else async.run(main) end
