-- A tour of lasync. Run it with the interpreter: build/lasync examples/tour.lua
-- The script runs as the main task, so its top level can await.
local async = require("lasync")
local start = async.now()

local function fetch(what, seconds)           -- a stand-in for a network call
  async.sleep(seconds)
  return what
end

-- 1. spawn: a task starts on the next turn of the loop; await returns its results.
local t = async.spawn(fetch, "profile", 0.1)
print("1. spawn + await: " .. t:await())

-- 2. gather: run several things at once; results come back in argument order.
local a, b = async.gather(function() return fetch("orders", 0.2) end,
                          async.spawn(fetch, "invoices", 0.1))
print("2. gather: " .. a .. ", " .. b .. " (both ready after 0.2 s, not 0.3 s)")

-- 3. timeout: the pending sleep is cancelled and a timeout error is raised.
local ok, err = pcall(async.timeout, 0.1, fetch, "slow report", 5)
print("3. timeout: ok=" .. tostring(ok) .. ", " .. tostring(err))

-- 4. cancel: the task's pending await raises Cancelled, so its cleanup code runs.
local worker = async.spawn(function()
  local _, e = pcall(async.sleep, 60)
  print("4. the worker saw: " .. tostring(e))
  error(e, 0)                                 -- let the cancellation continue outward
end)
async.sleep(0.05)
worker:cancel("shutting down")
pcall(worker.await, worker)
print("4. cancel: worker:cancelled() = " .. tostring(worker:cancelled()))

-- 5. TaskGroup: leaving the block waits for every child; a failure cancels the others.
local ok5, err5 = pcall(function()
  local g <close> = async.TaskGroup()
  g:spawn(function() async.sleep(0.1); error("payment service down", 0) end)
  g:spawn(function() fetch("shipping", 10); print("never printed") end)
end)
print("5. TaskGroup: ok=" .. tostring(ok5) .. ", " .. err5)

print(("finished in %.2f s"):format(async.now() - start))
