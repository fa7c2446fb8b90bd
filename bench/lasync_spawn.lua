-- spawn, lasync: spawn N tasks that return at once, then gather them (one await per task, by
-- gather). Works under plain lua5.4 (bench/run.lua's way) and under `build/lasync`.
--   lua5.4 bench/lasync_spawn.lua [ctx]
--     ctx: the spawning task has set two ContextVars first (each task shares its context)
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local async = require("lasync")
local N = B.size(200000)

local function work(i) return i end

local mode = arg[1]
local impl = mode == "ctx" and "lasync-ctx" or "lasync"

local function main()
  if mode == "ctx" then
    local a, b = async.ContextVar("a"), async.ContextVar("b")
    a:set("request-1")
    b:set(42)
    local seen = async.spawn(function() return a:get(), b:get() end)
    local va, vb = seen:await()
    assert(va == "request-1" and vb == 42, "the context did not reach the task")
  end
  collectgarbage("collect")
  local t0 = B.clock()
  local list = {}
  for i = 1, N do list[i] = async.spawn(work, i) end
  local results = async.gather(list)
  local wall = B.clock() - t0
  assert(results.n == N and results[1] == 1 and results[N] == N, "gather returned wrong results")
  B.result("spawn", impl,
    { "tasks_per_s", N / wall, "wall_s", wall, "n", N, "clock", B.clock_name })
end

if async.current_task() then main() else async.run(main) end
