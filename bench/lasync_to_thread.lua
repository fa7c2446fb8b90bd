-- to_thread, lasync: the overhead of async.to_thread with a trivial function (it returns its
-- argument), as calls/s.
--   lasync_to_thread.lua seq    one task makes N calls, one after the other
--   lasync_to_thread.lua conc   64 tasks make N calls in all (async.map, concurrency 64)
-- Works under plain lua5.4 (bench/run.lua's way) and under `build/lasync`.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local MODE = arg[1] or "seq"
local N = B.size(MODE == "seq" and 20000 or 50000)
local CONC = 64

local function trivial(x) return x end

local function main()
  -- warm the pool: its threads and worker states exist before timing, as they would in a
  -- long-running program (asyncio's executor threads are likewise started by a first call)
  local warm = {}
  for i = 1, CONC do warm[i] = i end
  async.map(function(i) return async.to_thread(trivial, i) end, warm)
  local t0 = B.clock()
  local sum = 0
  if MODE == "seq" then
    for i = 1, N do sum = sum + async.to_thread(trivial, i) end
  else
    local items = {}
    for i = 1, N do items[i] = i end
    local r = async.map(function(i) return async.to_thread(trivial, i) end, items,
      { concurrency = CONC })
    for i = 1, N do sum = sum + r[i] end
  end
  local wall = B.clock() - t0
  assert(sum == N * (N + 1) // 2, "wrong results")
  local key = MODE == "seq" and "seq_calls_per_s" or "conc_calls_per_s"
  B.result("to_thread", "lasync", { key, N / wall, MODE .. "_wall_s", wall, MODE .. "_n", N,
    "clock", B.clock_name })
end

if async.current_task() then main() else async.run(main) end
