-- timers, bare Lua 5.4 coroutines (the memory floor): N coroutines started and parked at a
-- coroutine.yield(), as a sleeping task's coroutine is; nothing wakes them (no timers), so only
-- memory is reported: Lua heap per parked coroutine after a full GC, and peak RSS growth.
local B = assert(loadfile((arg[0]:match("^(.*)/") or ".") .. "/common.lua"))(arg[0])
local N = B.size(100000)

local function sleeper()
  coroutine.yield()
end

local base = B.heap_after_gc()
local hwm0 = B.status_bytes("VmHWM")
local list = {}
for i = 1, N do
  local co = coroutine.create(sleeper)
  coroutine.resume(co)
  list[i] = co
end
local peak = B.heap_after_gc()
local hwm1 = B.status_bytes("VmHWM")
for i = 1, N do assert(coroutine.resume(list[i])) end
B.result("timers", "coro", { "bytes_per_task", (peak - base) / N,
  "rss_bytes_per_task", hwm0 and (hwm1 - hwm0) / N or "n/a", "n", N })
