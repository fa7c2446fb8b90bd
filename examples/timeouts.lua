-- Timeouts and deadlines. Run it with the interpreter: build/lasync examples/timeouts.lua
local async = require("lasync")

local function work(seconds, result)          -- a stand-in for I/O
  async.sleep(seconds)
  return result
end

local function try(label, fn, ...)
  print(label)
  local ok, res = pcall(fn, ...)
  print(ok and ("  returned: " .. tostring(res)) or ("  raised:   " .. tostring(res)))
end

-- async.timeout(seconds, fn, ...): fn runs in this task, with a deadline around it.
try("timeout, in time:", async.timeout, 0.2, work, 0.01, "fast result")
try("timeout, too slow:", async.timeout, 0.05, work, 1, "never")

-- Nested deadlines: the earliest wins, and the error comes out of the scope that expired.
try("an outer 0.05 s around an inner 1 s:", async.timeout, 0.05, function()
  local _, err = pcall(async.timeout, 1, work, 5)
  print("  the inner scope saw: " .. tostring(err))       -- Cancelled: the inner deadline did not expire
  error(err, 0)
end)
try("an inner 0.05 s expires, the outer goes on:", async.timeout, 1, function()
  local ok = pcall(async.timeout, 0.05, work, 5)
  return "inner ok=" .. tostring(ok) .. ", then " .. work(0.01, "more work")
end)

-- local d <close> = async.deadline(seconds): a deadline for the rest of the block.
try("deadline for a block:", function()
  local _ <close> = async.deadline(0.05)   -- `_`: the variable is never used by name
  local a = work(0.02, "step 1")
  local b = work(0.02, "step 2")
  local c = work(0.02, "step 3")            -- 0.06 s in total: this one is cut short
  return a .. b .. c
end)

-- Cleanup that must await even though the deadline expired: async.shielded.
try("shielded cleanup:", async.timeout, 0.05, function()
  local _, err = pcall(work, 1)
  async.shielded(work, 0.02)                 -- e.g. tell the server we are leaving
  print("  cleanup finished after the deadline")
  error(err, 0)
end)

-- wait_for owns its argument: on expiry the task is cancelled (and awaited) before it raises.
local slow = async.spawn(work, 1, "slow")
try("wait_for a task:", async.wait_for, slow, 0.05)
print("  the task was cancelled: " .. tostring(slow:cancelled()))

-- shield: time out the wait, not the work.
local precious = async.spawn(work, 0.1, "saved")
try("wait_for a shielded task:", async.wait_for, async.shield(precious), 0.02)
print("  the task still finished: " .. precious:await())

-- wait never raises a child's error and cancels nothing: it reports what is done.
local quick, late = async.spawn(work, 0.01, "quick"), async.spawn(work, 1, "late")
local done, pending = async.wait({ quick, late }, { timeout = 0.1 })
print(("wait with a timeout:\n  done %d, pending %d"):format(#done, #pending))
late:cancel()
