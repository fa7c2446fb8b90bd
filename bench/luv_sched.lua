-- bench/luv_sched.lua: the minimal scheduler a Lua user would hand-write on luv, used as a peer.
--
-- A FIFO ready queue of tasks, one coroutine per task, and the libuv loop polled between rounds:
--   * spawn(fn, ...) creates a coroutine and queues it (it starts on the next round, not eagerly);
--   * sleep(0) requeues the current task; sleep(s > 0) starts one uv timer whose callback closes
--     it and requeues the task (one timer per sleep: what a naive user does);
--   * Task:await() registers the current task as a waiter and yields; a finishing task queues
--     its waiters; gather(list) awaits each task in turn.
-- run(fn) drives it: run every task that was ready at the start of the round, then let libuv
-- poll once (without blocking while tasks are ready), so a task spinning on sleep(0) still lets
-- timers and I/O run. Errors in tasks are raised out of run(): fine for a benchmark.
local uv = require("luv")

local M = {}

local queue, qhead, qtail = {}, 1, 0
local current = nil

local function push(t)
  qtail = qtail + 1
  queue[qtail] = t
end

local Task = {}
Task.__index = Task

local function settle(t, ok, ...)
  if coroutine.status(t.co) ~= "dead" then return end
  if not ok then error(..., 0) end
  t.done = true
  t.results = table.pack(...)
  local w = t.waiters
  if w then
    t.waiters = nil
    for i = 1, #w do push(w[i]) end
  end
end

local function step(t)
  current = t
  local args = t.args
  if args then
    t.args = nil
    settle(t, coroutine.resume(t.co, table.unpack(args, 1, args.n)))
  else
    settle(t, coroutine.resume(t.co))
  end
  current = nil
end

function M.spawn(fn, ...)
  local t = setmetatable({ co = coroutine.create(fn), done = false }, Task)
  if select("#", ...) > 0 then t.args = table.pack(...) end
  push(t)
  return t
end

function Task:await()
  if not self.done then
    local w = self.waiters
    if not w then
      w = {}
      self.waiters = w
    end
    w[#w + 1] = current
    coroutine.yield()
  end
  local r = self.results
  return table.unpack(r, 1, r.n)
end

function M.gather(list)
  local results = { n = #list }
  for i = 1, #list do results[i] = (list[i]:await()) end
  return results
end

function M.sleep(s)
  local me = current
  if s <= 0 then
    push(me)
  else
    local timer = uv.new_timer()
    timer:start(math.floor(s * 1000 + 0.5), 0, function()
      timer:close()
      push(me)
    end)
  end
  coroutine.yield()
end

function M.run(fn, ...)
  local main = M.spawn(fn, ...)
  while true do
    local last = qtail
    while qhead <= last do
      local t = queue[qhead]
      queue[qhead] = nil
      qhead = qhead + 1
      step(t)
    end
    if qhead > qtail then qhead, qtail = 1, 0 end
    if main.done then break end
    if qtail > 0 then
      uv.run("nowait")
    elseif uv.loop_alive() then
      uv.run("once")
    else
      error("luv_sched: main task is blocked and nothing can wake it")
    end
  end
  return table.unpack(main.results, 1, main.results.n)
end

return M
