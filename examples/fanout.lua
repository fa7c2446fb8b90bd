-- Bounded fan-out: 50 simulated API calls, at most 8 in flight, each with its own timeout.
-- Run it with the interpreter: build/lasync examples/fanout.lua
local async = require("lasync")

local CALLS, LIMIT, CALL_TIMEOUT = 50, 8, 0.1

-- A stand-in for an HTTP request: most calls take 10-50 ms, every 12th hangs, every 9th fails.
local function api_call(id)
  async.sleep(id % 12 == 0 and 10 or 0.01 * (1 + id % 5))
  if id % 9 == 0 then error({ status = 503, id = id }) end
  return { id = id, body = "item " .. id }
end

-- A counting limiter: at most LIMIT holders; acquire() waits on a Future while it is full.
local active, max_active, waiting = 0, 0, {}

local function release()
  local turn
  repeat turn = table.remove(waiting, 1) until turn == nil or not turn:done()
  if turn then turn:set_result() else active = active - 1 end  -- hand the slot over, or free it
end

local function acquire()
  if active < LIMIT then
    active = active + 1
  else
    local turn = async.Future()
    waiting[#waiting + 1] = turn
    local ok, err = pcall(turn.await, turn)
    if not ok then        -- cancelled while queued: pass on a slot we were handed, or leave
      if turn:done() then release() else turn:cancel() end
      error(err, 0)
    end
  end
  max_active = math.max(max_active, active)
end

local results = { ok = 0, failed = 0, timed_out = 0 }
local start = async.now()

do
  local g <close> = async.TaskGroup()   -- leaving this block waits for all 50 tasks
  for id = 1, CALLS do
    g:spawn(function()
      acquire()
      local ok, res = pcall(async.timeout, CALL_TIMEOUT, api_call, id)
      release()
      -- record the outcome; nothing is raised, so one bad call does not cancel the rest
      if ok then
        results.ok = results.ok + 1
      elseif async.is_timeout(res) then
        results.timed_out = results.timed_out + 1
      else
        results.failed = results.failed + 1
      end
    end)
  end
end

print(("%d calls in %.2f s, at most %d at a time"):format(CALLS, async.now() - start, max_active))
print(("ok: %d, failed: %d, timed out: %d"):format(results.ok, results.failed, results.timed_out))
